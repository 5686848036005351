//! Values from the environment: `${NAME}` and `${NAME:-default}` in the
//! string values of a configuration, so one file serves every host of a
//! fleet. On Kubernetes the node's address comes from the downward API
//! (`advertise = "${NODE_IP}"`); under systemd a key handed over with
//! `LoadCredential=` is named `"${CREDENTIALS_DIRECTORY}/tls.key"`.
//!
//! Only string values are expanded (never keys, numbers or comments), after
//! the TOML is parsed, so an expanded value cannot change the file's
//! structure. `$${` stands for a literal `${`. A variable that is not set
//! and has no default is a load error naming the key and the variable; a
//! variable set to the empty string expands to it, `${NAME:-default}`
//! takes the default then too (as in the shell).

use std::path::Path;

use serde::de::DeserializeOwned;

use super::ConfigError;

/// Parses `text` as TOML and deserializes it, expanding `${...}` in
/// string values first when there is any (a file without one takes the
/// direct path, whose errors carry the line and column).
pub(super) fn deserialize<T: DeserializeOwned>(
    text: &str,
    origin: &Path,
) -> Result<T, ConfigError> {
    let syntax = |message: String| ConfigError::Syntax {
        path: origin.to_owned(),
        message: message.trim_end().to_owned(),
    };
    if !text.contains("${") {
        return toml::from_str(text).map_err(|e| syntax(e.to_string()));
    }
    let mut table: toml::Table = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
    expand_table(&mut table, &|name| std::env::var(name).ok()).map_err(|(key, var)| {
        ConfigError::UnsetVariable {
            path: origin.to_owned(),
            key,
            var,
        }
    })?;
    T::deserialize(toml::Value::Table(table)).map_err(|e| syntax(e.to_string()))
}

/// The key (`trunk.advertise`, `trunk.targets[1]`) and the variable of an
/// expansion that failed.
type Unset = (String, String);

/// Expands every string of a parsed configuration.
fn expand_table(
    table: &mut toml::Table,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Unset> {
    for (key, value) in table.iter_mut() {
        expand_value(value, key, lookup)?;
    }
    Ok(())
}

/// Expands every string inside `value`, whose key is `key`.
fn expand_value(
    value: &mut toml::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Unset> {
    match value {
        toml::Value::String(s) => {
            *s = expand(s, lookup).map_err(|var| (key.to_owned(), var))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{key}[{i}]"), lookup)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                expand_value(v, &format!("{key}.{k}"), lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands `${NAME}` and `${NAME:-default}` in `s`; `Err` names the first
/// variable that is unset with no default. An unterminated `${` or one
/// that is not a variable name is left as written.
fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some((inner, after)) = tail
            .strip_prefix("${")
            .and_then(|t| t.find('}').map(|end| (&t[..end], &t[end + 1..])))
        else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if !is_name(name) {
            out.push_str(&tail[..tail.len() - after.len()]);
            rest = after;
            continue;
        }
        match (lookup(name), default) {
            (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(name.to_owned()),
        }
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// A shell variable name: a letter or `_`, then letters, digits or `_`.
fn is_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "NODE_IP" => Some("10.1.2.3".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_and_defaults_expand() {
        assert_eq!(expand("${NODE_IP}", &env).as_deref(), Ok("10.1.2.3"));
        assert_eq!(
            expand("${NODE_IP}:5060", &env).as_deref(),
            Ok("10.1.2.3:5060")
        );
        assert_eq!(
            expand("${UNSET:-127.0.0.1}", &env).as_deref(),
            Ok("127.0.0.1")
        );
        assert_eq!(expand("${NODE_IP:-x}", &env).as_deref(), Ok("10.1.2.3"));
        assert_eq!(expand("${EMPTY:-d}", &env).as_deref(), Ok("d"));
        assert_eq!(expand("a${EMPTY}b", &env).as_deref(), Ok("ab"));
        assert_eq!(expand("${UNSET:-}", &env).as_deref(), Ok(""));
    }

    #[test]
    fn literals_stay_as_written() {
        for s in [
            "plain",
            "$",
            "a$b",
            "${",
            "${unterminated",
            "${1X}",
            "$ {X}",
        ] {
            assert_eq!(expand(s, &env).as_deref(), Ok(s), "{s}");
        }
        assert_eq!(expand("$${NODE_IP}", &env).as_deref(), Ok("${NODE_IP}"));
    }

    #[test]
    fn an_unset_variable_without_default_is_named() {
        assert_eq!(expand("x ${NOPE} ${NODE_IP}", &env), Err("NOPE".to_owned()));
    }

    #[test]
    fn nested_values_are_expanded_with_their_key() {
        let mut t: toml::Table = toml::from_str(
            "[trunk]\nadvertise = \"${NODE_IP}\"\ntargets = [\"sip:a\", \"sip:${NOPE}\"]\n",
        )
        .expect("toml");
        let err = expand_table(&mut t, &env).expect_err("unset");
        assert_eq!(err, ("trunk.targets[1]".to_owned(), "NOPE".to_owned()));
        let mut ok: toml::Table =
            toml::from_str("[trunk]\nadvertise = \"${NODE_IP}\"\nn = 3\n").expect("toml");
        expand_table(&mut ok, &env).expect("expands");
        assert_eq!(ok["trunk"]["advertise"].as_str(), Some("10.1.2.3"));
        assert_eq!(ok["trunk"]["n"].as_integer(), Some(3));
    }
}
