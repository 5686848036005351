//! The layers of docs/architecture.md cannot leak (issue 12, "Layers that
//! cannot leak"):
//!
//! * the SIP core (`src/sip/**`: parser, transactions, proxy) names nothing
//!   of a policy layer — `api`, `audit`, `cli`, `commands`, `config`,
//!   `dns`, `gate`, `media`, `risk`, `state`, `stir` — in a `use` or any other
//!   path; what it needs it defines, or receives through a narrow trait
//!   (`sip::proxy::CoreObserver`);
//! * the top-level modules import each other without a cycle.
//!
//! Paths are read from the source with comments and string literals left
//! out; `crate::`, `callgate::`, `super::` and `self::` paths are resolved
//! against the file's module (inline `mod x { .. }` blocks included), so
//! `use super::super::api::X` is caught as surely as `use crate::api::X`,
//! and so is every leaf of a `use crate::{sip::a, gate::b}` group.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules the SIP core must not name.
const POLICY_LAYERS: &[&str] = &[
    "api", "audit", "cli", "commands", "config", "dns", "events", "gate", "media", "risk", "state",
    "stir",
];

#[test]
fn the_sip_core_imports_no_policy_layer() {
    let src = src_dir();
    let files = rust_files(&src.join("sip"));
    assert!(
        files.len() > 20,
        "expected the SIP core's files under {}, found {}",
        src.join("sip").display(),
        files.len()
    );
    let mut leaks = Vec::new();
    for file in &files {
        let text = read(file);
        let rel = file.strip_prefix(&src).unwrap_or(file).display();
        for (line, path) in crate_paths(&text, &module_of(&src, file)) {
            if path
                .first()
                .is_some_and(|top| POLICY_LAYERS.contains(&top.as_str()))
            {
                leaks.push(format!("src/{rel}:{line}: crate::{}", path.join("::")));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "the SIP core names a policy layer; define what it needs in src/sip or take it \
         through a trait:\n{}",
        leaks.join("\n")
    );
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let src = src_dir();
    let tops = top_level_modules(&src);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let module = module_of(&src, &file);
        let Some(from) = module.first() else {
            continue; // lib.rs, main.rs: the roots declare every layer
        };
        for (_, path) in crate_paths(&read(&file), &module) {
            if let Some(to) = path.first() {
                if to != from && tops.contains(to) {
                    graph.entry(from.clone()).or_default().insert(to.clone());
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = graph
            .iter()
            .map(|(m, to)| {
                format!(
                    "  {m} -> {}",
                    to.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        panic!(
            "import cycle between top-level modules: {}\ngraph:\n{}",
            cycle.join(" -> "),
            edges.join("\n")
        );
    }
}

#[test]
fn the_scanner_resolves_every_form_of_path() {
    let module = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
    let tops = |text: &str, m: &str| -> Vec<String> {
        crate_paths(text, &module(m))
            .into_iter()
            .map(|(_, p)| p.join("::"))
            .collect()
    };
    assert_eq!(
        tops(
            "use crate::api::metrics::{Direction, Metrics};",
            "sip::proxy"
        ),
        ["api::metrics::Direction", "api::metrics::Metrics"]
    );
    assert_eq!(
        tops(
            "use super::super::super::gate::Gate;",
            "sip::proxy::request"
        ),
        ["gate::Gate"]
    );
    assert_eq!(
        tops(
            "use crate::{sip::side::Side, config::{self, Config as C}, gate};",
            "sip"
        ),
        ["sip::side::Side", "config", "config::Config", "gate"]
    );
    assert_eq!(
        tops(
            "fn f() { let m = crate::stir::verify::check(); }",
            "sip::uri"
        ),
        ["stir::verify::check"]
    );
    assert_eq!(
        tops("mod tests { use super::super::risk::*; }", "sip"),
        ["risk"],
        "an inline module is one level deeper"
    );
    assert_eq!(
        tops("use callgate::state::State;", "sip::pcap"),
        ["state::State"]
    );
    assert!(
        tops(
            "// use crate::api::X;\n/* crate::gate::Y /* nested */ */\n\
             const S: &str = \"crate::risk::Z\"; const R: &str = r#\"crate::stir\"#;\n\
             fn f<'a>(c: char) -> bool { c == '\"' }",
            "sip::message"
        )
        .is_empty(),
        "comments, strings and char literals are not paths"
    );
    assert_eq!(
        tops(
            "use super::*; use self::inner::X; pub(crate) fn g() {}",
            "sip::proxy::tests"
        ),
        ["sip::proxy", "sip::proxy::tests::inner::X"]
    );
}

// ---- reading the source ----------------------------------------------

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The module a file defines: `src/sip/proxy/request.rs` is
/// `sip::proxy::request`, `src/sip/proxy/mod.rs` is `sip::proxy`, `lib.rs`
/// and `main.rs` are the root.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut module: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if module.last().is_some_and(|l| l == "mod") {
        module.pop();
    }
    if module.len() == 1 && (module[0] == "lib" || module[0] == "main") {
        module.clear();
    }
    module
}

fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let mut tops = BTreeSet::new();
    for entry in std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        if let Some(name) = name {
            if path.is_dir()
                || (path.extension().is_some_and(|x| x == "rs") && name != "lib" && name != "main")
            {
                tops.insert(name);
            }
        }
    }
    tops
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

// ---- paths in Rust source --------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// Tokens with their line numbers; comments, string, byte-string and char
/// literals, lifetimes and numbers are dropped.
fn tokens(text: &str) -> Vec<(usize, Tok)> {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    // Skips a quoted literal whose opening quote is at `i`, honouring `\`.
    let skip_quoted = |mut i: usize, quote: char, line: &mut usize| -> usize {
        i += 1;
        while i < c.len() && c[i] != quote {
            if c[i] == '\\' {
                i += 1;
            }
            if at(i) == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    // Skips a raw string whose `#`s or quote start at `i`.
    let skip_raw = |mut i: usize, line: &mut usize| -> usize {
        let mut hashes = 0;
        while at(i) == '#' {
            hashes += 1;
            i += 1;
        }
        i += 1; // the opening quote
        while i < c.len() {
            if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                return i + 1 + hashes;
            }
            if c[i] == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_quoted(i, '"', &mut line);
        } else if ch == '\'' {
            if at(i + 1) == '\\' || at(i + 2) == '\'' {
                i = skip_quoted(i, '\'', &mut line); // a char literal
            } else {
                i += 1; // a lifetime or label: its name is not a path
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            match (word.as_str(), at(i)) {
                ("r" | "br" | "cr", '"' | '#')
                    if at(i) == '"' || matches!(at(i + 1), '"' | '#') =>
                {
                    i = skip_raw(i, &mut line);
                }
                ("b" | "c", '"') => i = skip_quoted(i, '"', &mut line),
                ("b", '\'') => i = skip_quoted(i, '\'', &mut line),
                ("r", '#') => {} // raw identifier: the name follows
                _ => out.push((line, Tok::Ident(word))),
            }
        } else if ch.is_ascii_digit() {
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((line, Tok::PathSep));
            i += 2;
        } else {
            out.push((line, Tok::Punct(ch)));
            i += 1;
        }
    }
    out
}

/// Every path of `text` that starts at the crate root or climbs to it
/// (`crate::`, `callgate::`, `super::`, `self::`), resolved to an absolute
/// path from the root, with the line it is on. `file_module` is the module
/// the file defines. A path climbing above the root resolves to
/// `["<above the crate root>"]`.
fn crate_paths(text: &str, file_module: &[String]) -> Vec<(usize, Vec<String>)> {
    let toks = tokens(text);
    let mut out = Vec::new();
    // Inline modules open in this file: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < toks.len() {
        let (line, tok) = &toks[i];
        let after_sep = i > 0 && toks[i - 1].1 == Tok::PathSep;
        match tok {
            Tok::Ident(w) if !after_sep && toks.get(i + 1).map(|t| &t.1) == Some(&Tok::PathSep) => {
                let base: Vec<String> = match w.as_str() {
                    "crate" | "callgate" => {
                        i += 2;
                        Vec::new()
                    }
                    "super" | "self" => file_module
                        .iter()
                        .cloned()
                        .chain(inline.iter().map(|(n, _)| n.clone()))
                        .collect(),
                    _ => {
                        i += 1;
                        continue;
                    }
                };
                let mut found = Vec::new();
                use_tree(&toks, &mut i, base, &mut found);
                out.extend(found.into_iter().map(|p| (*line, p)));
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some((_, Tok::Ident(name))), Some((_, Tok::Punct('{')))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// Reads one path or `use` tree at `*i` relative to `base`, pushing every
/// leaf it names, resolved.
fn use_tree(toks: &[(usize, Tok)], i: &mut usize, base: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = base;
    loop {
        match toks.get(*i).map(|t| &t.1) {
            Some(Tok::Ident(w)) if w == "self" => *i += 1,
            Some(Tok::Ident(w)) if w == "super" => {
                *i += 1;
                if path.pop().is_none() {
                    out.push(vec!["<above the crate root>".to_owned()]);
                    return;
                }
            }
            Some(Tok::Ident(w)) => {
                path.push(w.clone());
                *i += 1;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| &t.1) {
                        None => return,
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        // `X as Y`: the new name is not a path.
                        Some(Tok::Ident(w)) if w == "as" => *i += 2,
                        Some(_) => {
                            let before = *i;
                            use_tree(toks, i, path.clone(), out);
                            if *i == before {
                                *i += 1;
                            }
                        }
                    }
                }
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push(path);
                return;
            }
            _ => {
                out.push(path);
                return;
            }
        }
        if toks.get(*i).map(|t| &t.1) == Some(&Tok::PathSep) {
            *i += 1;
        } else {
            out.push(path);
            return;
        }
    }
}
