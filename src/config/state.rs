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
    timeout_ms: Option<u64>,
    key_prefix: Option<String>,
}

/// Validates `[state]`.
pub(super) fn state(raw: RawState) -> Result<crate::state::StateConfig, ConfigError> {
    let mut cfg = crate::state::StateConfig::default();
    if let Some(url) = raw.redis.filter(|u| !u.is_empty()) {
        cfg.redis = Some(
            crate::state::redis::RedisAddr::parse(&url)
                // The URL is not echoed: it may hold a password.
                .map_err(|e| invalid("state.redis", e))?,
        );
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
    Ok(cfg)
}
