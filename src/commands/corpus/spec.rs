//! The corpus file (`test-calls/corpus/corpus.toml`): labelled calls as
//! entries, expanded into the calls `callgate corpus` places, and the
//! list additions it makes to the policy under test.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The corpus shipped in the binary.
pub const SHIPPED: &str = include_str!("../../../test-calls/corpus/corpus.toml");

/// Whether a call is one to catch or one to leave alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Attack,
    Legit,
}

/// How a call's INVITE is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Sign {
    #[serde(rename = "none")]
    None,
    A,
    B,
    C,
    /// An A PASSporT whose signature was altered after signing.
    #[serde(rename = "tampered")]
    Tampered,
    /// The Identity of the last call from the same number, sent again.
    #[serde(rename = "replay")]
    Replay,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorpus {
    #[serde(default)]
    lists: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    call: Vec<Entry>,
}

/// One `[[call]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub label: Label,
    pub kind: String,
    pub caller: String,
    #[serde(default = "one")]
    pub callers: u32,
    #[serde(default = "one")]
    pub calls_each: u32,
    #[serde(default = "one")]
    pub count_from: u32,
    pub sign: Sign,
    #[serde(default)]
    pub headers: Vec<String>,
}

fn one() -> u32 {
    1
}

/// A corpus read and checked.
#[derive(Debug)]
pub struct Corpus {
    /// Numbers added to the policy's lists for the run, by list name.
    pub lists: BTreeMap<String, Vec<String>>,
    pub entries: Vec<Entry>,
}

/// One call to place.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The index of its entry.
    pub entry: usize,
    pub caller: String,
    /// Counted in the rates (not a burst's warm-up call).
    pub counted: bool,
}

/// Calls per entry at most: the corpus is a test set, not a load test.
const MAX_CALLS_PER_ENTRY: u32 = 1000;

/// Reads a corpus; the error names the entry and the key.
pub fn parse(text: &str) -> Result<Corpus, String> {
    let raw: RawCorpus = toml::from_str(text).map_err(|e| e.to_string())?;
    for (i, e) in raw.call.iter().enumerate() {
        let at = |key: &str| format!("call[{i}] ({}): {key}", e.kind);
        if e.callers == 0 || e.calls_each == 0 {
            return Err(format!("{}: must be at least 1", at("callers/calls_each")));
        }
        if e.callers.saturating_mul(e.calls_each) > MAX_CALLS_PER_ENTRY {
            return Err(format!(
                "{}: more than {MAX_CALLS_PER_ENTRY} calls",
                at("callers × calls_each")
            ));
        }
        if e.count_from == 0 || e.count_from > e.calls_each {
            return Err(format!("{}: must be 1 to calls_each", at("count_from")));
        }
        if e.callers > 1 && digits(&e.caller).is_none() {
            return Err(format!(
                "{}: a range of callers needs a number (+ and digits)",
                at("caller")
            ));
        }
        if let Some(h) = e
            .headers
            .iter()
            .find(|h| !h.contains(':') || h.contains(['\r', '\n']))
        {
            return Err(format!("{}: {h:?} is not one header line", at("headers")));
        }
    }
    Ok(Corpus {
        lists: raw.lists,
        entries: raw.call,
    })
}

/// `+15550100` → (`+`, 15550100): a caller number's prefix and value, for
/// ranges.
fn digits(n: &str) -> Option<(&str, u64)> {
    let (plus, rest) = n.strip_prefix('+').map_or(("", n), |r| ("+", r));
    (!rest.is_empty() && rest.len() < 19 && rest.bytes().all(|b| b.is_ascii_digit()))
        .then(|| rest.parse().ok().map(|v| (plus, v)))
        .flatten()
}

impl Corpus {
    /// Every call, in the order they are placed: entry by entry, each
    /// number's calls in a row.
    pub fn plan(&self) -> Vec<Planned> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            for k in 0..u64::from(e.callers) {
                let caller = match digits(&e.caller) {
                    Some((plus, v)) if e.callers > 1 => format!("{plus}{}", v + k),
                    _ => e.caller.clone(),
                };
                for n in 1..=e.calls_each {
                    out.push(Planned {
                        entry: i,
                        caller: caller.clone(),
                        counted: n >= e.count_from,
                    });
                }
            }
        }
        out
    }
}

/// `policy` (a policy file's text, whose relative list files are under
/// `dir`) with the corpus's numbers added to its lists: each
/// `[lists.NAME]` gains them inline (`numbers`), a list the policy lacks
/// is added, and relative `file` paths are made absolute so the copy can
/// live elsewhere.
pub fn with_lists(policy: &str, dir: &Path, add: &BTreeMap<String, Vec<String>>) -> String {
    let quoted = |nums: &[String]| {
        nums.iter()
            .map(|n| format!("\"{}\"", n.replace(['"', '\\'], "")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::with_capacity(policy.len() + 256);
    let mut section: Option<String> = None;
    let mut done: Vec<String> = Vec::new();
    for line in policy.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t
                .strip_prefix("[lists.")
                .and_then(|r| r.strip_suffix(']'))
                .map(|n| n.trim().trim_matches('"').to_owned());
            out.push_str(line);
            out.push('\n');
            if let Some(nums) = section.as_ref().and_then(|n| add.get(n)) {
                let has_numbers = section_has_numbers(policy, line);
                if !has_numbers {
                    out.push_str(&format!("numbers = [{}]\n", quoted(nums)));
                }
                done.extend(section.clone());
            }
            continue;
        }
        let in_added = section.as_ref().and_then(|n| add.get(n));
        if let (Some(nums), true) = (in_added, t.starts_with("numbers")) {
            if let Some(at) = line.find('[') {
                out.push_str(&line[..=at]);
                out.push_str(&quoted(nums));
                out.push_str(", ");
                out.push_str(&line[at + 1..]);
                out.push('\n');
                continue;
            }
        }
        if section.is_some() && t.starts_with("file") {
            if let Some(path) = t.split('"').nth(1) {
                if Path::new(path).is_relative() {
                    let abs = dir.join(path);
                    out.push_str(&format!("file = \"{}\"\n", abs.display()));
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    for (name, nums) in add {
        if !done.contains(name) {
            out.push_str(&format!("\n[lists.{name}]\nnumbers = [{}]\n", quoted(nums)));
        }
    }
    out
}

/// Whether the section starting at `header` has a `numbers` key.
fn section_has_numbers(policy: &str, header: &str) -> bool {
    policy
        .split_once(header)
        .map(|(_, after)| {
            after
                .lines()
                .skip(1)
                .take_while(|l| !l.trim_start().starts_with('['))
                .any(|l| l.trim_start().starts_with("numbers"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_corpus_parses_and_plans_its_calls() {
        let c = parse(SHIPPED).unwrap_or_else(|e| panic!("{e}"));
        let plan = c.plan();
        let count = |l: Label| {
            plan.iter()
                .filter(|p| p.counted && c.entries[p.entry].label == l)
                .count()
        };
        assert_eq!(count(Label::Legit), 225);
        assert!(count(Label::Attack) >= 20, "{}", count(Label::Attack));
        // A range counts up from its first number.
        assert!(plan.iter().any(|p| p.caller == "+15552000099"));
        assert!(!plan.iter().any(|p| p.caller == "+15552000100"));
        // A burst's warm-up calls are placed but not counted.
        let burst: Vec<bool> = plan
            .iter()
            .filter(|p| p.caller == "+15559990001")
            .map(|p| p.counted)
            .collect();
        assert_eq!(burst, [false, false, false, false, true, true, true, true]);
    }

    #[test]
    fn bad_entries_name_the_entry_and_key() {
        for (text, key) in [
            (
                "[[call]]\nlabel = \"legit\"\nkind = \"k\"\ncaller = \"x\"\ncallers = 2\nsign = \"A\"\n",
                "caller",
            ),
            (
                "[[call]]\nlabel = \"legit\"\nkind = \"k\"\ncaller = \"+1\"\ncalls_each = 2\ncount_from = 3\nsign = \"A\"\n",
                "count_from",
            ),
            (
                "[[call]]\nlabel = \"legit\"\nkind = \"k\"\ncaller = \"+1\"\nsign = \"A\"\nheaders = [\"no colon\"]\n",
                "headers",
            ),
            (
                "[[call]]\nlabel = \"maybe\"\nkind = \"k\"\ncaller = \"+1\"\nsign = \"A\"\n",
                "label",
            ),
        ] {
            let err = parse(text).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn lists_gain_the_corpus_numbers_and_files_become_absolute() {
        let policy = "version = \"x\"\n[lists.allow]\nfile = \"lists/allow.txt\"\n\n[lists.fraud]\nnumbers = [\"+1999\"]\n\n[[rule]]\ncode = \"R\"\n";
        let mut add = BTreeMap::new();
        add.insert("allow".to_owned(), vec!["+1555".to_owned()]);
        add.insert("fraud".to_owned(), vec!["+1777".to_owned()]);
        add.insert("vip".to_owned(), vec!["+1888".to_owned()]);
        let out = with_lists(policy, Path::new("/etc/callgate"), &add);
        assert!(
            out.contains(
                "[lists.allow]\nnumbers = [\"+1555\"]\nfile = \"/etc/callgate/lists/allow.txt\""
            ),
            "{out}"
        );
        assert!(out.contains("numbers = [\"+1777\", \"+1999\"]"), "{out}");
        assert!(out.contains("[lists.vip]\nnumbers = [\"+1888\"]"), "{out}");
        assert!(out.contains("[[rule]]\ncode = \"R\""), "{out}");
    }
}
