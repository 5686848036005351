//! `[events]` and `[[events.webhook]]`: decision events for CTI (webhooks
//! and the live stream, docs/integration.md), validated into
//! [`crate::events::EventsConfig`]. Read at start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, positive, ConfigError};
use crate::events::{EventKind, EventsConfig, WebhookConfig};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    outbox_max_events: Option<u64>,
    stream_buffer: Option<usize>,
    stream_clients: Option<usize>,
    #[serde(default)]
    webhook: Vec<RawWebhook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: Option<String>,
    url: Option<String>,
    secret_file: Option<PathBuf>,
    timeout_ms: Option<u64>,
    events: Option<Vec<String>>,
    max_backoff_ms: Option<u64>,
    ca_file: Option<PathBuf>,
}

/// Shortest webhook secret, in bytes: HMAC-SHA256's security rests on it.
const MIN_SECRET: usize = 16;

/// Validates `[events]`; `None` when the section is absent (no events).
/// The outbox lives in the audit store, so `has_audit` must hold.
pub(super) fn events(
    raw: Option<RawEvents>,
    has_audit: bool,
    base: &Path,
) -> Result<Option<EventsConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if !has_audit {
        return Err(invalid(
            "events",
            "needs the audit store ([audit] path): the events outbox lives in it",
        ));
    }
    let d = EventsConfig::default();
    let outbox_max_events = raw.outbox_max_events.unwrap_or(d.outbox_max_events);
    if outbox_max_events < 1000 {
        return Err(invalid("events.outbox_max_events", "must be at least 1000"));
    }
    let stream_buffer = positive(
        "events.stream_buffer",
        raw.stream_buffer.unwrap_or(d.stream_buffer) as u64,
    )? as usize;
    let stream_clients = positive(
        "events.stream_clients",
        raw.stream_clients.unwrap_or(d.stream_clients) as u64,
    )? as usize;
    let mut webhooks: Vec<WebhookConfig> = Vec::new();
    for (i, w) in raw.webhook.into_iter().enumerate() {
        let hook = webhook(i, w, base)?;
        if webhooks.iter().any(|h| h.name == hook.name) {
            return Err(invalid(
                format!("events.webhook[{i}].name"),
                format!("{:?} is already the name of another webhook", hook.name),
            ));
        }
        webhooks.push(hook);
    }
    Ok(Some(EventsConfig {
        outbox_max_events,
        stream_buffer,
        stream_clients,
        webhooks,
    }))
}

fn webhook(i: usize, w: RawWebhook, base: &Path) -> Result<WebhookConfig, ConfigError> {
    let key = |k: &str| format!("events.webhook[{i}].{k}");
    let name = w.name.unwrap_or_else(|| format!("webhook{}", i + 1));
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            key("name"),
            format!("{name:?}: 1 to 64 letters, digits, '-' or '_'"),
        ));
    }
    let url = w
        .url
        .ok_or_else(|| invalid(key("url"), "is required (http:// or https:// URL)"))?;
    check_url(&url).map_err(|reason| invalid(key("url"), format!("{url:?} {reason}")))?;
    let secret_path = w
        .secret_file
        .ok_or_else(|| invalid(key("secret_file"), "is required (the HMAC-SHA256 key)"))?;
    let secret_key = key("secret_file");
    let path = super::resolve(&secret_path, base)
        .map_err(|p| invalid(&secret_key, format!("{}: no such file", p.display())))?;
    super::secret::owner_only(&secret_key, &path)?;
    let secret = std::fs::read(&path)
        .map_err(|e| invalid(&secret_key, format!("{}: {e}", path.display())))?;
    // A trailing line break is the editor's, not the key's.
    let secret = secret.trim_ascii_end().to_vec();
    if secret.len() < MIN_SECRET {
        return Err(invalid(
            &secret_key,
            format!(
                "{} holds {} bytes; the key must be at least {MIN_SECRET} (e.g. openssl rand -hex 32)",
                path.display(),
                secret.len()
            ),
        ));
    }
    let timeout_ms = w.timeout_ms.unwrap_or(5000);
    if !(1..=60_000).contains(&timeout_ms) {
        return Err(invalid(key("timeout_ms"), "must be 1 to 60000"));
    }
    let max_backoff_ms = w.max_backoff_ms.unwrap_or(60_000);
    if !(100..=3_600_000).contains(&max_backoff_ms) {
        return Err(invalid(key("max_backoff_ms"), "must be 100 to 3600000"));
    }
    let kinds = match w.events {
        None => vec![EventKind::Decision, EventKind::CallEnd],
        Some(list) if list.is_empty() => {
            return Err(invalid(
                key("events"),
                "must name at least one kind (\"decision\", \"call_end\"); remove the webhook to send none",
            ))
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(j, k)| {
                EventKind::parse(k).ok_or_else(|| {
                    invalid(
                        format!("events.webhook[{i}].events[{j}]"),
                        format!("{k:?} is not an event kind (\"decision\", \"call_end\")"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let ca_file = match w.ca_file {
        None => None,
        Some(p) => {
            let ca_key = key("ca_file");
            let path = super::resolve(&p, base)
                .map_err(|p| invalid(&ca_key, format!("{}: no such file", p.display())))?;
            crate::stir::fetch::tls_config(std::slice::from_ref(&path))
                .map_err(|e| invalid(&ca_key, format!("not a PEM CA certificate file: {e}")))?;
            Some(path)
        }
    };
    Ok(WebhookConfig {
        name,
        url,
        ca_file,
        secret,
        timeout: Duration::from_millis(timeout_ms),
        max_backoff: Duration::from_millis(max_backoff_ms),
        kinds,
    })
}

/// `http://` or `https://`, a host, no user info, nothing a request line
/// cannot carry.
fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err("has no host");
    }
    if authority.contains('@') {
        return Err("must not carry user information (use secret_file)");
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("must not contain spaces or control characters");
    }
    if url.contains('#') {
        return Err("must not have a fragment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, dir: &Path) -> Result<Option<EventsConfig>, ConfigError> {
        let raw: Option<RawEvents> = toml::from_str::<toml::Table>(text)
            .ok()
            .and_then(|t| t.get("events").cloned())
            .map(|v| v.try_into().expect("raw events"));
        events(raw, true, dir)
    }

    fn key_file(dir: &Path, mode: u32, bytes: &[u8]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("hook.key");
        std::fs::write(&p, bytes).expect("write key");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[test]
    fn a_webhook_is_read_with_its_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        key_file(dir.path(), 0o600, b"0123456789abcdef0123\n");
        let cfg = parse(
            "[[events.webhook]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = \"hook.key\"\n",
            dir.path(),
        )
        .expect("valid")
        .expect("events on");
        let w = &cfg.webhooks[0];
        assert_eq!(w.name, "webhook1");
        assert_eq!(w.secret, b"0123456789abcdef0123");
        assert_eq!(w.timeout, Duration::from_secs(5));
        assert_eq!(w.kinds, [EventKind::Decision, EventKind::CallEnd]);
        assert_eq!(cfg.outbox_max_events, 100_000);
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        key_file(dir.path(), 0o600, b"0123456789abcdef0123");
        let hook = |extra: &str| {
            format!("[[events.webhook]]\nsecret_file = \"hook.key\"\nurl = \"http://127.0.0.1:9/\"\n{extra}")
        };
        for (text, key, reason) in [
            (
                "[[events.webhook]]\nsecret_file = \"hook.key\"\n".to_owned(),
                "events.webhook[0].url",
                "is required",
            ),
            (
                "[[events.webhook]]\nsecret_file = \"hook.key\"\nurl = \"ftp://x/\"\n".to_owned(),
                "events.webhook[0].url",
                "http://",
            ),
            (
                hook("timeout_ms = 0"),
                "events.webhook[0].timeout_ms",
                "1 to 60000",
            ),
            (
                hook("events = [\"decision\", \"hangup\"]"),
                "events.webhook[0].events[1]",
                "not an event kind",
            ),
            (hook("name = \"a b\""), "events.webhook[0].name", "letters"),
            (
                hook("ca_file = \"missing.pem\""),
                "events.webhook[0].ca_file",
                "no such file",
            ),
            (
                format!("{}{}", hook(""), hook("name = \"webhook1\"")),
                "events.webhook[1].name",
                "already",
            ),
            (
                "[events]\noutbox_max_events = 5\n".to_owned(),
                "events.outbox_max_events",
                "at least 1000",
            ),
        ] {
            match parse(&text, dir.path()) {
                Err(ConfigError::Invalid { key: k, reason: r }) => {
                    assert_eq!(k, key, "{text}");
                    assert!(r.contains(reason), "{text}: {r}");
                }
                other => panic!("{text}: {:?}", other.map(|_| ())),
            }
        }
        // A short key, and one others may read.
        key_file(dir.path(), 0o600, b"short");
        let err = parse(&hook(""), dir.path()).expect_err("short key");
        assert!(err.to_string().contains("at least 16"), "{err}");
        key_file(dir.path(), 0o644, b"0123456789abcdef0123");
        let err = parse(&hook(""), dir.path()).expect_err("readable key");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        // Events without an audit store.
        let err = events(Some(RawEvents::default()), false, dir.path()).expect_err("no audit");
        assert!(
            err.to_string().starts_with("events: needs the audit store"),
            "{err}"
        );
    }
}
