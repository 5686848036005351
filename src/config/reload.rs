//! `[reload]`: reloading when the configuration's files change on disk,
//! for a Kubernetes ConfigMap (the kubelet replaces the mounted files in
//! place, and no signal reaches the process) or any deployment tool that
//! writes files without sending SIGHUP.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReload {
    watch_secs: Option<u64>,
}

/// Validates `[reload]`: how often the files are compared, `None` (the
/// default, 0) for never.
pub(super) fn reload(raw: RawReload) -> Result<Option<Duration>, ConfigError> {
    match raw.watch_secs.unwrap_or(0) {
        0 => Ok(None),
        s @ 1..=3600 => Ok(Some(Duration::from_secs(s))),
        s => Err(invalid(
            "reload.watch_secs",
            format!("must be 0 (off) to 3600, not {s}"),
        )),
    }
}
