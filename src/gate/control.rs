//! The operator's verbs on the running service (`/v1/…`, `callgate ctl`;
//! [`crate::api::operations::Operations`]): list calls, take a target out
//! of rotation and back, drain without exiting and undrain, reload with a
//! report of what changed, and the policies in force. The views are built
//! in `live.rs`; drain and reload themselves are in `lifecycle.rs`.

use std::sync::atomic::Ordering::Relaxed;

use super::{lock, Gate};
use crate::api::operations::{
    CallView, DrainView, OperationError, Operations, PolicyInfo, PolicyView, ReloadView,
    TargetView, TargetsView, VersionChange,
};
use crate::config::Side;
use crate::risk::policy::Policy;

/// What a reload is compared against: the configuration file's keys and
/// the policy versions in force.
#[derive(Debug, Clone, Default)]
pub(super) struct Snapshot {
    pub(super) toml: Option<toml::Table>,
    policy: Option<String>,
    shadow: Option<String>,
}

/// Keys that a reload reads but only a restart applies (`lifecycle.rs`):
/// the listeners, `[instance]`, `[state]`, `[media]`, `[admin]`, `[log]`
/// and the signature worker threads.
fn needs_restart(key: &str) -> bool {
    let listener = ["trunk.", "pbx."].iter().any(|s| {
        ["udp", "tcp", "tls"]
            .iter()
            .any(|t| key == format!("{s}{t}"))
    });
    listener
        || ["instance", "state", "media", "admin", "log", "dns"]
            .iter()
            .any(|s| key == *s || key.starts_with(&format!("{s}.")))
        || key == "stir.verify_threads"
}

/// The dotted keys whose values differ between `old` and `new` (tables
/// compared key by key, anything else as a whole): changed and added
/// keys in key order, then the keys `new` dropped.
fn changed_keys(old: &toml::Table, new: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    let name = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    for (k, v) in new {
        match (old.get(k), v) {
            (Some(toml::Value::Table(o)), toml::Value::Table(n)) => {
                changed_keys(o, n, &name(k), out)
            }
            (Some(o), n) if o == n => {}
            _ => out.push(name(k)),
        }
    }
    out.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| name(k)),
    );
}

impl Gate {
    /// The configuration file's keys (unparsed values) and the policy
    /// versions now in force.
    pub(super) fn snapshot(&self) -> Snapshot {
        let version = |p: Option<&std::sync::Arc<Policy>>| p.map(|p| p.version.clone());
        let phases = self.phases();
        let risk = phases.risk.as_deref();
        Snapshot {
            toml: self
                .config_path
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| t.parse::<toml::Table>().ok()),
            policy: version(risk.map(|r| &r.policy)),
            shadow: version(risk.and_then(|r| r.shadow.as_ref())),
        }
    }

    /// What a reload from `before` to `after` changed.
    pub(super) fn report(before: &Snapshot, after: &Snapshot) -> ReloadView {
        let mut changed = Vec::new();
        if let (Some(old), Some(new)) = (&before.toml, &after.toml) {
            changed_keys(old, new, "", &mut changed);
        }
        let restart_needed = changed
            .iter()
            .filter(|k| needs_restart(k))
            .cloned()
            .collect();
        ReloadView {
            reloaded: true,
            changed,
            restart_needed,
            policy: VersionChange {
                before: before.policy.clone(),
                after: after.policy.clone(),
            },
            shadow: VersionChange {
                before: before.shadow.clone(),
                after: after.shadow.clone(),
            },
        }
    }

    /// Whether the process is draining for exit (SIGTERM).
    fn shutting_down(&self) -> bool {
        self.shutting_down.load(Relaxed)
    }
}

/// `trunk` or `pbx`.
fn side_named(side: &str) -> Result<Side, OperationError> {
    match side {
        "trunk" => Ok(Side::Trunk),
        "pbx" => Ok(Side::Pbx),
        _ => Err(OperationError::NotFound(format!(
            "no side {side:?}: trunk or pbx"
        ))),
    }
}

impl Operations for Gate {
    fn calls(&self) -> Vec<CallView> {
        let mut live = lock(&self.outcomes).live();
        live.sort_by_key(|c| c.started_unix_ms);
        live.into_iter().map(|c| self.call_view(c)).collect()
    }

    fn other_instances_calls(&self) -> Vec<CallView> {
        self.cluster
            .as_ref()
            .map(|c| c.remote_calls())
            .unwrap_or_default()
    }

    fn call(&self, id: &str) -> Option<CallView> {
        let found = lock(&self.outcomes).find(id);
        match found {
            Some(c) => Some(self.call_view(c)),
            None => self.cluster.as_ref().and_then(|cluster| {
                cluster.remote_calls().into_iter().find(|c| {
                    c.call_id == id
                        || c.decision
                            .as_ref()
                            .is_some_and(|d| d.id.as_deref() == Some(id))
                })
            }),
        }
    }

    fn targets(&self) -> TargetsView {
        let [trunk, pbx] = {
            let core = lock(&self.core);
            [Side::Trunk, Side::Pbx].map(|s| core.target_statuses(s))
        };
        TargetsView {
            trunk: trunk
                .into_iter()
                .map(|t| self.target_view(Side::Trunk, t))
                .collect(),
            pbx: pbx
                .into_iter()
                .map(|t| self.target_view(Side::Pbx, t))
                .collect(),
        }
    }

    fn set_target_disabled(
        &self,
        side: &str,
        target: &str,
        disabled: bool,
    ) -> Result<TargetView, OperationError> {
        let side = side_named(side)?;
        let status = {
            let mut core = lock(&self.core);
            let changed =
                core.set_target_disabled(side, target, disabled)
                    .map_err(|e| match e {
                        crate::sip::proxy::OverrideError::Unknown(_) => {
                            OperationError::NotFound(format!("{}: {e}", side.as_str()))
                        }
                        crate::sip::proxy::OverrideError::LastInRotation(_) => {
                            OperationError::Conflict(format!("{}: {e}", side.as_str()))
                        }
                    })?;
            let status = core
                .target_statuses(side)
                .into_iter()
                .find(|t| t.target.uri == target || t.target.addr.to_string() == target);
            (changed, status)
        };
        let (changed, Some(status)) = status else {
            return Err(OperationError::NotFound(format!(
                "{}: no target {target:?}",
                side.as_str()
            )));
        };
        if changed {
            tracing::warn!(
                side = side.as_str(),
                target = %status.target.uri,
                "target {} by the operator",
                if disabled { "taken out of rotation" } else { "put back in rotation" }
            );
        }
        Ok(self.target_view(side, status))
    }

    fn drain_status(&self) -> DrainView {
        DrainView {
            draining: !self.is_ready(),
            shutting_down: self.shutting_down(),
            calls: lock(&self.outcomes).count(),
        }
    }

    fn drain(&self) -> DrainView {
        if self.is_ready() {
            tracing::warn!("draining by the operator: new INVITEs get 503 until undrained");
        }
        self.drain_by_operator();
        self.drain_status()
    }

    fn undrain(&self) -> Result<DrainView, OperationError> {
        if self.shutting_down() {
            return Err(OperationError::Conflict(
                "shutting down (SIGTERM): the drain cannot be undone".to_owned(),
            ));
        }
        if !self.is_ready() {
            tracing::warn!("undrained by the operator: new INVITEs are taken again");
        }
        self.undrain_by_operator();
        Ok(self.drain_status())
    }

    fn reload_report(&self) -> Result<ReloadView, OperationError> {
        self.reload_and_report().map_err(OperationError::Refused)
    }

    fn policy(&self) -> PolicyView {
        let phases = self.phases();
        let Some(risk) = phases.risk.as_deref() else {
            return PolicyView {
                active: None,
                shadow: None,
                decisions: 0,
                shadow_disagreements: 0,
            };
        };
        let info = |p: &Policy| PolicyInfo {
            version: p.version.clone(),
            loaded_unix_ms: risk.tally.loaded_unix_ms,
            rules: p.rules.len(),
            review_uri: p.review_uri.clone(),
        };
        PolicyView {
            active: Some(info(&risk.policy)),
            shadow: risk.shadow.as_deref().map(info),
            decisions: risk.tally.decisions.load(Relaxed),
            shadow_disagreements: risk.tally.disagreements.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().expect("test TOML")
    }

    #[test]
    fn changed_keys_name_each_changed_added_and_removed_key() {
        let old = table("[pbx]\ntargets = [\"sip:a\"]\nrate_limit = 5\n[risk]\npolicy = \"p\"\n[log]\nlevel = \"info\"");
        let new = table("[pbx]\ntargets = [\"sip:b\"]\nrate_limit = 5\nudp = \"127.0.0.1:5062\"\n[risk]\npolicy = \"p\"");
        let mut out = Vec::new();
        changed_keys(&old, &new, "", &mut out);
        assert_eq!(out, vec!["pbx.targets", "pbx.udp", "log"]);
        assert!(needs_restart("pbx.udp") && needs_restart("log"));
        assert!(needs_restart("instance.name"));
        assert!(!needs_restart("pbx.targets") && !needs_restart("pbx.udp_x"));
    }
}
