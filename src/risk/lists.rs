//! Operator number lists (allow, block, Do-Not-Originate, known fraud,
//! customers on file, ...): exact numbers and prefixes, inline in the
//! policy or in files of one entry per line. A number added while the
//! service runs (the console's "add to fraud list") goes into the running
//! list ([`NumberList::insert`]) and is appended to the list's file
//! ([`append_to_file`]), so the next reload reads it back.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::stir::passport::canonical_tn;

/// One named list.
#[derive(Debug, Clone, Default)]
pub struct NumberList {
    pub name: String,
    exact: HashSet<String>,
    /// Prefixes (entries written `1555*`), longest first.
    prefixes: Vec<String>,
    /// The file the entries were read from (`file = "..."`), resolved.
    pub file: Option<PathBuf>,
}

/// Why a number could not be added to a list's file.
#[derive(Debug, thiserror::Error)]
pub enum ListFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl NumberList {
    /// From `{ numbers = [...], file = "path" }` (either or both). A file
    /// has one number or `prefix*` per line; `#` starts a comment.
    pub fn from_spec(name: &str, spec: &toml::Value, base: &Path) -> Result<NumberList, String> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err("list names are lower_case (e.g. dno, fraud, customers)".into());
        }
        let t = spec
            .as_table()
            .ok_or("expected { numbers = [...] } and/or { file = \"path\" }")?;
        let mut list = NumberList {
            name: name.to_owned(),
            ..NumberList::default()
        };
        for k in t.keys() {
            if k != "numbers" && k != "file" {
                return Err(format!("{k}: unknown key (numbers, file)"));
            }
        }
        if let Some(n) = t.get("numbers") {
            let items = n.as_array().ok_or("numbers: expected a list")?;
            for (i, item) in items.iter().enumerate() {
                let s = item
                    .as_str()
                    .ok_or(format!("numbers[{i}]: expected a string"))?;
                list.add(s).map_err(|e| format!("numbers[{i}]: {e}"))?;
            }
        }
        if let Some(f) = t.get("file") {
            let f = f.as_str().ok_or("file: expected a path")?;
            let path = base.join(f);
            list.file = Some(path.clone());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("file: {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if !line.is_empty() {
                    list.add(line)
                        .map_err(|e| format!("file: {}:{}: {e}", path.display(), n + 1))?;
                }
            }
        }
        list.prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        Ok(list)
    }

    /// Adds one exact number (not a prefix) to the running list: its
    /// canonical digits, `Ok(false)` when it was already on it exactly.
    pub fn insert(&mut self, number: &str) -> Result<(String, bool), String> {
        let digits = canonical_tn(number);
        if digits.is_empty()
            || number.ends_with('*')
            || number.chars().any(|c| c.is_ascii_alphabetic())
        {
            return Err(format!("{number:?} is not a telephone number"));
        }
        let new = self.exact.insert(digits.clone());
        Ok((digits, new))
    }

    fn add(&mut self, entry: &str) -> Result<(), String> {
        let (body, prefix) = match entry.strip_suffix('*') {
            Some(b) => (b, true),
            None => (entry, false),
        };
        let digits = canonical_tn(body);
        if digits.is_empty() || body.chars().any(|c| c.is_ascii_alphabetic()) {
            return Err(format!("{entry:?} is not a number or prefix*"));
        }
        if prefix {
            self.prefixes.push(digits);
        } else {
            self.exact.insert(digits);
        }
        Ok(())
    }

    /// Whether the list holds `digits` (canonical) exactly or by prefix.
    pub fn contains(&self, digits: &str) -> bool {
        !digits.is_empty()
            && (self.exact.contains(digits)
                || self.prefixes.iter().any(|p| digits.starts_with(p.as_str())))
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Appends `line` (a number, then `# comment` on the same line) to the
/// list file `path`, atomically: the file's text with the line added is
/// written to a temporary file beside it, synced, and renamed over it, so
/// a reader (a reload, a crash) sees the old file or the new one, never
/// half a line.
pub fn append_to_file(path: &Path, line: &str) -> Result<(), ListFileError> {
    let io = |source| ListFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_file_entries() {
        let dir = std::env::temp_dir().join(format!("callgate-lists-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            dir.join("dno.txt"),
            "# IRS\n+1 202 555 0100\n1800*  # toll free\n\n",
        );
        let spec: toml::Value = toml::from_str("numbers = [\"15550199\"]\nfile = \"dno.txt\"")
            .unwrap_or_else(|e| panic!("{e}"));
        let l = NumberList::from_spec("dno", &spec, &dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(l.contains("12025550100") && l.contains("18005551234") && l.contains("15550199"));
        assert!(!l.contains("15550198") && !l.contains(""));
        let bad: toml::Value =
            toml::from_str("numbers = [\"abc\"]").unwrap_or_else(|e| panic!("{e}"));
        assert!(NumberList::from_spec("x", &bad, &dir).is_err());
        assert!(NumberList::from_spec("Bad Name", &spec, &dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_number_added_at_run_time_is_on_the_list_and_in_its_file() {
        let dir = tempfile_dir("added");
        let _ = std::fs::write(dir.join("fraud.txt"), "+15550111");
        let spec: toml::Value =
            toml::from_str("file = \"fraud.txt\"").unwrap_or_else(|e| panic!("{e}"));
        let mut l = NumberList::from_spec("fraud", &spec, &dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(!l.contains("15550122"));
        assert_eq!(l.insert("+1 555 0122"), Ok(("15550122".into(), true)));
        assert_eq!(l.insert("+15550122"), Ok(("15550122".into(), false)));
        assert!(l.contains("15550122"));
        assert!(l.insert("1555*").is_err() && l.insert("abc").is_err());
        let file = l.file.clone().unwrap_or_else(|| panic!("the list's file"));
        append_to_file(&file, "15550122  # by floor").unwrap_or_else(|e| panic!("{e}"));
        let again = NumberList::from_spec("fraud", &spec, &dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(again.contains("15550111") && again.contains("15550122"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir(what: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("callgate-lists-{what}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    }
}
