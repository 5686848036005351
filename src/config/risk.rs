//! `[risk]`: the operator's policy and an optional shadow policy, loaded
//! and compiled at load.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{invalid, resolve, ConfigError};

/// The risk engine's policies (`[risk]`); off when no policy is set.
#[derive(Debug, Clone, Default)]
pub struct RiskConfig {
    /// The active policy, compiled.
    pub policy: Option<std::sync::Arc<crate::risk::policy::Policy>>,
    /// A candidate evaluated beside it; disagreements are counted.
    pub shadow: Option<std::sync::Arc<crate::risk::policy::Policy>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRisk {
    policy: Option<PathBuf>,
    shadow_policy: Option<PathBuf>,
}

/// Loads `[risk]` policies: relative paths are under `base` (the config
/// file's directory); a policy's list files are under the policy's.
pub(super) fn risk(raw: RawRisk, base: &Path) -> Result<RiskConfig, ConfigError> {
    let load = |key: &str,
                p: &PathBuf|
     -> Result<std::sync::Arc<crate::risk::policy::Policy>, ConfigError> {
        let path = resolve(p, base)
            .map_err(|at| invalid(key, format!("file {} not found", at.display())))?;
        crate::risk::policy::Policy::load(&path)
            .map(std::sync::Arc::new)
            .map_err(|e| invalid(key, e.to_string()))
    };
    let policy = raw
        .policy
        .as_ref()
        .map(|p| load("risk.policy", p))
        .transpose()?;
    let shadow = raw
        .shadow_policy
        .as_ref()
        .map(|p| load("risk.shadow_policy", p))
        .transpose()?;
    if shadow.is_some() && policy.is_none() {
        return Err(invalid(
            "risk.shadow_policy",
            "needs risk.policy (the active policy)",
        ));
    }
    Ok(RiskConfig { policy, shadow })
}
