//! `[audit]`: the durable decision store — its file, batching, retention
//! and durability — validated into [`crate::audit::AuditConfig`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, positive, ConfigError};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    path: Option<PathBuf>,
    batch_max: Option<usize>,
    batch_ms: Option<u64>,
    retention_days: Option<u32>,
    synchronous: Option<String>,
    store_invite: Option<bool>,
}

/// Validates `[audit]`; `None` when no `path` is set (no store).
pub(super) fn audit(raw: RawAudit) -> Result<Option<crate::audit::AuditConfig>, ConfigError> {
    let Some(path) = raw.path else {
        return Ok(None);
    };
    let mut a = crate::audit::AuditConfig::new(path);
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
    Ok(Some(a))
}
