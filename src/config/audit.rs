//! `[audit]`: the durable decision store — its file, batching, retention
//! and durability — validated into [`crate::audit::AuditConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, positive, ConfigError};
use crate::audit::budget::AuditLimits;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    path: Option<PathBuf>,
    batch_max: Option<usize>,
    batch_ms: Option<u64>,
    retention_days: Option<u32>,
    synchronous: Option<String>,
    store_invite: Option<bool>,
    max_queue_bytes: Option<usize>,
    max_invite_bytes: Option<usize>,
    invite_bytes_per_source_minute: Option<usize>,
}

/// Validates `[audit]`; `None` when no `path` is set (no store). A
/// relative `path` is under `base` (the config file's directory), like
/// every other path of the configuration, not the working directory.
pub(super) fn audit(
    raw: RawAudit,
    base: &Path,
) -> Result<Option<crate::audit::AuditConfig>, ConfigError> {
    let Some(path) = raw.path.as_deref() else {
        return Ok(None);
    };
    let mut a = crate::audit::AuditConfig::new(super::locate(path, base));
    a.batch_max = positive("audit.batch_max", raw.batch_max.unwrap_or(256) as u64)? as usize;
    a.batch = Duration::from_millis(positive("audit.batch_ms", raw.batch_ms.unwrap_or(50))?);
    a.retention_days = raw.retention_days.unwrap_or(90);
    a.synchronous_full = match raw.synchronous.as_deref().unwrap_or("normal") {
        "normal" => false,
        "full" => true,
        other => {
            return Err(invalid(
                "audit.synchronous",
                format!("must be \"normal\" or \"full\", not {other:?}"),
            ))
        }
    };
    a.store_invite = raw.store_invite.unwrap_or(true);
    a.limits = limits(&raw)?;
    Ok(Some(a))
}

/// The byte bounds of the audit queue and of stored INVITEs.
fn limits(raw: &RawAudit) -> Result<AuditLimits, ConfigError> {
    let d = AuditLimits::default();
    let l = AuditLimits {
        max_queue_bytes: raw.max_queue_bytes.unwrap_or(d.max_queue_bytes),
        max_invite_bytes: raw.max_invite_bytes.unwrap_or(d.max_invite_bytes),
        invite_bytes_per_source_minute: raw
            .invite_bytes_per_source_minute
            .unwrap_or(d.invite_bytes_per_source_minute),
    };
    if l.max_queue_bytes < 1 << 20 {
        return Err(invalid("audit.max_queue_bytes", "must be at least 1048576"));
    }
    if l.max_invite_bytes < 1024 {
        return Err(invalid("audit.max_invite_bytes", "must be at least 1024"));
    }
    if l.invite_bytes_per_source_minute < l.max_invite_bytes {
        return Err(invalid(
            "audit.invite_bytes_per_source_minute",
            "must be at least audit.max_invite_bytes",
        ));
    }
    Ok(l)
}
