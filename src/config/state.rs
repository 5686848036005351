//! `[state]`: where velocity, replay and certificate state live — this
//! process's memory, or Redis shared by several instances — validated into
//! [`crate::state::StateConfig`].

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    redis: Option<String>,
    tls_ca: Option<std::path::PathBuf>,
    sentinels: Option<Vec<String>>,
    timeout_ms: Option<u64>,
    key_prefix: Option<String>,
    share_console: Option<bool>,
}

/// Validates `[state]`; a relative `tls_ca` is under `base` (the config
/// file's directory).
pub(super) fn state(
    raw: RawState,
    base: &std::path::Path,
) -> Result<crate::state::StateConfig, ConfigError> {
    let mut cfg = crate::state::StateConfig::default();
    let sentinels = raw.sentinels.unwrap_or_default();
    if let Some(url) = raw.redis.filter(|u| !u.is_empty()) {
        // The URL is not echoed: it may hold a password.
        let mut addr =
            crate::state::redis::RedisAddr::parse(&url).map_err(|e| invalid("state.redis", e))?;
        if let Some(ca) = &raw.tls_ca {
            if !addr.tls {
                return Err(invalid(
                    "state.tls_ca",
                    "needs a rediss:// URL in state.redis (TLS)",
                ));
            }
            addr = addr
                .with_ca(&super::locate(ca, base))
                .map_err(|e| invalid("state.tls_ca", e))?;
        }
        for (i, s) in sentinels.iter().enumerate() {
            let key = format!("state.sentinels[{i}]");
            let (host, port) = s
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .filter(|(h, p)| !h.is_empty() && *p != 0)
                .ok_or_else(|| {
                    invalid(
                        &key,
                        format!("{s:?} is not host:port (e.g. \"10.0.0.7:26379\")"),
                    )
                })?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            addr.sentinels.push((host.to_owned(), port));
        }
        cfg.redis = Some(addr);
    } else if raw.tls_ca.is_some() {
        return Err(invalid("state.tls_ca", "needs state.redis"));
    } else if !sentinels.is_empty() {
        return Err(invalid(
            "state.sentinels",
            "needs state.redis, whose host names the master (redis://:password@mymaster/0)",
        ));
    }
    if let Some(ms) = raw.timeout_ms {
        if !(1..=5_000).contains(&ms) {
            return Err(invalid(
                "state.timeout_ms",
                format!("{ms} is outside 1..=5000 (a call waits this long for Redis)"),
            ));
        }
        cfg.timeout = Duration::from_millis(ms);
    }
    if let Some(prefix) = raw.key_prefix {
        if prefix
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(invalid(
                "state.key_prefix",
                "must not contain spaces or control characters",
            ));
        }
        cfg.key_prefix = prefix;
    }
    if let Some(share) = raw.share_console {
        cfg.share_console = share;
    }
    Ok(cfg)
}
