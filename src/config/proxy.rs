//! The sections that tune the SIP proxy core — `[timers]`, `[limits]`,
//! `[health]` and `[overload]` — and the [`CoreSettings`] the core is built
//! with, assembled from a whole [`Config`].

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, positive, Config, ConfigError};
use crate::sip::dialogs::DialogLimits;
use crate::sip::message::Limits;
use crate::sip::proxy::{CoreSettings, HealthConfig, OverloadConfig};
use crate::sip::transaction::TimerConfig;
use crate::sip::transport::connections::ConnectionLimits;

impl CoreSettings {
    /// What the proxy core runs with under `cfg`.
    pub fn from_config(cfg: &Config) -> CoreSettings {
        CoreSettings {
            sides: [cfg.trunk.core(), cfg.pbx.core()],
            timers: cfg.timers,
            limits: cfg.limits,
            overload: cfg.overload,
            health: cfg.health,
            no_response: cfg.no_response,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    interval_secs: Option<u64>,
    timeout_ms: Option<u64>,
    down_after: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverload {
    max_transactions: Option<usize>,
    retry_after_secs: Option<u32>,
    max_transaction_bytes: Option<usize>,
    max_transaction_bytes_per_source: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimers {
    t1_ms: Option<u64>,
    t2_ms: Option<u64>,
    t4_ms: Option<u64>,
    timer_c_secs: Option<u64>,
    no_response_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_message_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_line_bytes: Option<usize>,
    tcp_idle_secs: Option<u64>,
    message_deadline_secs: Option<u64>,
    tls_handshake_secs: Option<u64>,
    max_connections_per_source: Option<usize>,
    max_connections: Option<usize>,
    max_dialogs: Option<usize>,
    dialog_idle_secs: Option<u64>,
}

/// Validates `[health]`.
pub(super) fn health(raw: RawHealth) -> Result<HealthConfig, ConfigError> {
    Ok(HealthConfig {
        interval: Duration::from_secs(raw.interval_secs.unwrap_or(5)),
        timeout: Duration::from_millis(positive(
            "health.timeout_ms",
            raw.timeout_ms.unwrap_or(2000),
        )?),
        down_after: raw.down_after.unwrap_or(2).max(1),
    })
}

/// Validates `[overload]`.
pub(super) fn overload(raw: RawOverload) -> Result<OverloadConfig, ConfigError> {
    let defaults = OverloadConfig::default();
    let overload = OverloadConfig {
        max_transactions: raw.max_transactions.unwrap_or(defaults.max_transactions),
        retry_after_secs: raw.retry_after_secs.unwrap_or(defaults.retry_after_secs),
        max_transaction_bytes: raw
            .max_transaction_bytes
            .unwrap_or(defaults.max_transaction_bytes),
        max_transaction_bytes_per_source: raw
            .max_transaction_bytes_per_source
            .unwrap_or(defaults.max_transaction_bytes_per_source),
    };
    if overload.max_transactions == 0 {
        return Err(invalid("overload.max_transactions", "must be at least 1"));
    }
    if overload.max_transaction_bytes_per_source < 1 << 16 {
        return Err(invalid(
            "overload.max_transaction_bytes_per_source",
            "must be at least 65536",
        ));
    }
    if overload.max_transaction_bytes < overload.max_transaction_bytes_per_source {
        return Err(invalid(
            "overload.max_transaction_bytes",
            "must be at least overload.max_transaction_bytes_per_source",
        ));
    }
    Ok(overload)
}

/// Validates `[timers]`: the RFC 3261 timer values, and the failover
/// timeout (`no_response_ms`).
pub(super) fn timers(raw: RawTimers) -> Result<(TimerConfig, Duration), ConfigError> {
    let timers = TimerConfig {
        t1: Duration::from_millis(positive("timers.t1_ms", raw.t1_ms.unwrap_or(500))?),
        t2: Duration::from_millis(positive("timers.t2_ms", raw.t2_ms.unwrap_or(4000))?),
        t4: Duration::from_millis(positive("timers.t4_ms", raw.t4_ms.unwrap_or(5000))?),
        timer_c: Duration::from_secs(positive(
            "timers.timer_c_secs",
            raw.timer_c_secs.unwrap_or(180),
        )?),
    };
    if timers.t2 < timers.t1 {
        return Err(invalid(
            "timers.t2_ms",
            "must not be smaller than timers.t1_ms",
        ));
    }
    if timers.timer_c < Duration::from_secs(180) {
        // RFC 3261 §16.6 step 11: Timer C MUST be larger than 3 minutes.
        tracing::warn!("timers.timer_c_secs below 180 s deviates from RFC 3261 §16.6");
    }
    let no_response = Duration::from_millis(positive(
        "timers.no_response_ms",
        raw.no_response_ms.unwrap_or(2000),
    )?);
    if no_response > 64 * timers.t1 {
        return Err(invalid(
            "timers.no_response_ms",
            "must not exceed Timer B (64 × t1_ms)",
        ));
    }
    Ok((timers, no_response))
}

/// `[limits]`, validated.
pub(super) struct LimitsSection {
    pub limits: Limits,
    pub tcp_idle: Duration,
    pub message_deadline: Duration,
    pub connections: ConnectionLimits,
    pub dialogs: DialogLimits,
}

/// Validates `[limits]`: message sizes, the stream connections' caps and
/// timers, and the dialog table's bounds.
pub(super) fn limits(raw: RawLimits) -> Result<LimitsSection, ConfigError> {
    let defaults = Limits::default();
    let limits = Limits {
        max_message_bytes: raw.max_message_bytes.unwrap_or(defaults.max_message_bytes),
        max_headers: raw.max_headers.unwrap_or(defaults.max_headers),
        max_line_bytes: raw.max_line_bytes.unwrap_or(defaults.max_line_bytes),
    };
    if !(512..=1 << 20).contains(&limits.max_message_bytes) {
        return Err(invalid(
            "limits.max_message_bytes",
            "must be between 512 and 1048576",
        ));
    }
    if limits.max_headers < 8 {
        return Err(invalid("limits.max_headers", "must be at least 8"));
    }
    if limits.max_line_bytes < 128 {
        return Err(invalid("limits.max_line_bytes", "must be at least 128"));
    }
    let tcp_idle = Duration::from_secs(positive(
        "limits.tcp_idle_secs",
        raw.tcp_idle_secs.unwrap_or(300),
    )?);
    let message_deadline = Duration::from_secs(positive(
        "limits.message_deadline_secs",
        raw.message_deadline_secs.unwrap_or(10),
    )?);
    if message_deadline > tcp_idle {
        return Err(invalid(
            "limits.message_deadline_secs",
            "must not exceed limits.tcp_idle_secs",
        ));
    }
    let connections = connection_limits(&raw)?;
    let defaults = DialogLimits::default();
    let max_dialogs = raw.max_dialogs.unwrap_or(defaults.max_dialogs);
    if max_dialogs < 100 {
        return Err(invalid("limits.max_dialogs", "must be at least 100"));
    }
    let idle = Duration::from_secs(positive(
        "limits.dialog_idle_secs",
        raw.dialog_idle_secs.unwrap_or(defaults.idle.as_secs()),
    )?);
    if idle < Duration::from_secs(60) {
        return Err(invalid(
            "limits.dialog_idle_secs",
            "must be at least 60 (a dialog with no request for this long is forgotten)",
        ));
    }
    let dialogs = DialogLimits {
        max_dialogs,
        max_pending: max_dialogs.div_ceil(2),
        idle,
        ..defaults
    };
    Ok(LimitsSection {
        limits,
        tcp_idle,
        message_deadline,
        connections,
        dialogs,
    })
}

/// The caps on accepted TCP/TLS connections and the TLS handshake time.
fn connection_limits(raw: &RawLimits) -> Result<ConnectionLimits, ConfigError> {
    let defaults = ConnectionLimits::default();
    let per_source = raw
        .max_connections_per_source
        .unwrap_or(defaults.per_source);
    let total = raw.max_connections.unwrap_or(defaults.total);
    if per_source == 0 {
        return Err(invalid(
            "limits.max_connections_per_source",
            "must be at least 1",
        ));
    }
    if total < per_source {
        return Err(invalid(
            "limits.max_connections",
            "must be at least limits.max_connections_per_source",
        ));
    }
    let handshake = raw
        .tls_handshake_secs
        .unwrap_or(defaults.tls_handshake.as_secs());
    if !(1..=60).contains(&handshake) {
        return Err(invalid(
            "limits.tls_handshake_secs",
            "must be between 1 and 60",
        ));
    }
    Ok(ConnectionLimits {
        per_source,
        total,
        tls_handshake: Duration::from_secs(handshake),
    })
}
