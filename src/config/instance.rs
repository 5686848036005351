//! `[instance]`: the name of this callgate among the instances behind one
//! trunk group. It starts every decision id (`NAME-<16 hex digits>`), is
//! stored with every audit record, labels `callgate_build_info` and the
//! signalling thread's log lines, so a decision found anywhere — an agent's
//! screen, a report merged from several audit stores, a log search — says
//! which instance made it.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// Longest instance name accepted (bytes): it travels in every
/// `X-Callgate-Risk` header and audit row.
pub const MAX_NAME_LEN: usize = 32;

/// The name when neither the file nor the host gives a usable one.
const FALLBACK_NAME: &str = "callgate";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInstance {
    name: Option<String>,
}

/// Whether `name` may name an instance: 1 to [`MAX_NAME_LEN`] characters
/// from `A-Z a-z 0-9 . _ -` (an RFC 3261 §25.1 token, safe in a header
/// parameter, a metric label and a file name).
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Validates `[instance]`; without `name`, the host name ([`from_host`]).
pub(super) fn instance(raw: RawInstance) -> Result<String, ConfigError> {
    match raw.name {
        Some(name) if valid_name(&name) => Ok(name),
        Some(name) if name.is_empty() => Err(invalid(
            "instance.name",
            "must not be empty (leave the key out to use the host name)",
        )),
        Some(name) if name.len() > MAX_NAME_LEN => Err(invalid(
            "instance.name",
            format!(
                "{} characters is too long (at most {MAX_NAME_LEN}): it starts every decision id",
                name.len()
            ),
        )),
        Some(name) => Err(invalid(
            "instance.name",
            format!("{name:?} may hold only A-Z a-z 0-9 . _ -"),
        )),
        None => Ok(from_host(
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .as_deref()
                .unwrap_or_default(),
        )),
    }
}

/// The default name from a host name: its first label (`cg-a` of
/// `cg-a.example.net`), other characters replaced by `-`, cut to
/// [`MAX_NAME_LEN`]; `callgate` when nothing is left.
pub fn from_host(host: &str) -> String {
    let label = host.split('.').next().unwrap_or_default();
    let name: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NAME_LEN)
        .collect();
    if name.is_empty() {
        FALLBACK_NAME.to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_tokens() {
        assert!(valid_name("cg-a.eu_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a;b"));
        assert!(!valid_name(&"x".repeat(MAX_NAME_LEN + 1)));
        let raw = |n: &str| RawInstance {
            name: Some(n.to_owned()),
        };
        assert_eq!(instance(raw("cg-a")).ok().as_deref(), Some("cg-a"));
        for bad in ["", "a b", "é", &"x".repeat(40)] {
            let e = instance(raw(bad)).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.starts_with("instance.name: ")),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn the_host_name_gives_the_default() {
        assert_eq!(from_host("cg-a.example.net"), "cg-a");
        assert_eq!(from_host("weird host"), "weird-host");
        assert_eq!(from_host(""), "callgate");
        assert_eq!(from_host(&"h".repeat(70)).len(), MAX_NAME_LEN);
        assert!(valid_name(
            &instance(RawInstance::default()).unwrap_or_default()
        ));
    }
}
