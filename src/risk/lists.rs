//! Operator number lists (allow, block, Do-Not-Originate, known fraud,
//! customers on file, ...): exact numbers and prefixes, inline in the
//! policy or in files of one entry per line.

use std::collections::HashSet;
use std::path::Path;

use crate::stir::passport::canonical_tn;

/// One named list.
#[derive(Debug, Clone, Default)]
pub struct NumberList {
    pub name: String,
    exact: HashSet<String>,
    /// Prefixes (entries written `1555*`), longest first.
    prefixes: Vec<String>,
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
}
