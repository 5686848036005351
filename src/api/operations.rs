//! What the operator's API (`/v1/…`, `callgate ctl`) asks of the running
//! service, and the answers it gets, in the API's own words: plain values
//! that serialize to the JSON docs/admin-api.openapi.yaml describes. The
//! gate fills them from where the data lives (the proxy core's targets,
//! the live-call table, the media anchor, the policies in force); the API
//! layer depends on no layer above it.

use serde::Serialize;

/// The operator's verbs and views of the running service.
pub trait Operations: Send + Sync + 'static {
    /// Calls in progress (INVITE forwarded, no final failure or BYE yet),
    /// oldest first.
    fn calls(&self) -> Vec<CallView>;
    /// The calls in progress on the other instances sharing a state store
    /// (`crate::cluster`), as last read; none without one.
    fn other_instances_calls(&self) -> Vec<CallView> {
        Vec::new()
    }
    /// One call, by its Call-ID or its decision id.
    fn call(&self, id: &str) -> Option<CallView>;
    /// Each side's targets with their health and the operator's override.
    fn targets(&self) -> TargetsView;
    /// Takes a target of `side` (`trunk` or `pbx`; named by URI or
    /// address) out of rotation (`disabled`), or puts it back.
    fn set_target_disabled(
        &self,
        side: &str,
        target: &str,
        disabled: bool,
    ) -> Result<TargetView, OperationError>;
    /// Whether new INVITEs are refused (503 + Retry-After).
    fn drain_status(&self) -> DrainView;
    /// Refuses new INVITEs from now on, keeps established calls; the
    /// process keeps running.
    fn drain(&self) -> DrainView;
    /// Takes new INVITEs again after [`Operations::drain`]; refused while
    /// the process is shutting down.
    fn undrain(&self) -> Result<DrainView, OperationError>;
    /// Re-reads the configuration (as SIGHUP) and says what changed, or why
    /// nothing did. Blocking: the API calls it off the runtime.
    fn reload_report(&self) -> Result<ReloadView, OperationError>;
    /// The active and shadow policies in force.
    fn policy(&self) -> PolicyView;
}

/// Why an operation was refused: the HTTP status it maps to and the
/// reason the operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    /// No such side, target or call (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the service's state (409).
    #[error("{0}")]
    Conflict(String),
    /// A reload that changed nothing: the configuration does not load; or
    /// a request whose content is refused (422).
    #[error("{0}")]
    Refused(String),
    /// Not done now, may be done later: the audit store did not commit
    /// in time (503).
    #[error("{0}")]
    Unavailable(String),
}

/// A call in progress.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallView {
    pub call_id: String,
    /// The instance the call goes through (`[instance] name`): with
    /// several instances sharing a state store, `/v1/calls` lists every
    /// instance's calls (`crate::cluster`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// `inbound` (from the trunk) or `outbound` (from the PBX).
    pub direction: &'static str,
    /// `proceeding` until a 2xx, then `established`.
    pub state: &'static str,
    /// Calling and called numbers as written in the INVITE.
    pub caller: String,
    pub callee: String,
    /// When the INVITE was taken and, once answered, when the 2xx went
    /// back (Unix milliseconds).
    pub started_unix_ms: i64,
    pub answered_unix_ms: Option<i64>,
    /// The decision on an inbound call, when a policy or verification ran.
    pub decision: Option<DecisionView>,
    /// The call's media through the relay, when anchored.
    pub media: Option<MediaView>,
}

/// What the call phases decided for an inbound call.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DecisionView {
    /// The decision id (also in `X-Callgate-Decision` and the audit).
    pub id: Option<String>,
    /// STIR/SHAKEN: `verstat` value given to the PBX, when verified.
    pub verstat: Option<String>,
    /// The verification in words (as in `X-Callgate-Verify-Text`), when
    /// verification ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_text: Option<String>,
    pub level: Option<String>,
    pub score: Option<u32>,
    /// Reason codes of the rules that fired, in rule order.
    pub reasons: Vec<String>,
    /// The level in the policy's words, when it has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_text: Option<String>,
    /// The fired rules' descriptions (those that have one), in rule order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons_text: Vec<Worded>,
    /// The actions the agent must not take without step-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrict: Vec<String>,
    /// Those actions in the policy's words (those that have them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrict_text: Vec<Worded>,
    /// `tag`, `review` or `reject`.
    pub action: String,
    /// Where the call went: `agents`, `review` or `reject`.
    pub route: String,
    /// The review queue's URI, or the refusal's status.
    pub target: Option<String>,
    pub policy_version: Option<String>,
}

#[cfg(test)]
impl DecisionView {
    /// A low-risk decision `id` with no reason, restriction or words
    /// (tests of the layers that carry decisions).
    pub fn plain(id: &str) -> DecisionView {
        DecisionView {
            id: Some(id.to_owned()),
            verstat: None,
            verify_text: None,
            level: Some("low".into()),
            score: Some(0),
            reasons: vec![],
            level_text: None,
            reasons_text: vec![],
            restrict: vec![],
            restrict_text: vec![],
            action: "tag".into(),
            route: "agents".into(),
            target: None,
            policy_version: None,
        }
    }
}

/// A code (reason or restricted action) with the words the policy gives it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Worded {
    pub code: String,
    pub text: String,
}

/// A call's media through the relay.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MediaView {
    pub age_secs: u64,
    pub streams: Vec<StreamView>,
}

/// One m-line relayed: its ports and what each leg received.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamView {
    pub index: usize,
    pub media_type: String,
    pub proto: String,
    /// Relay ports (RTP) facing the offerer (leg a) and the answerer (b).
    pub ports: [u16; 2],
    /// Milliseconds since the last packet on either leg.
    pub idle_ms: Option<u64>,
    pub legs: [LegView; 2],
}

/// What one leg of a stream received (RFC 3550 counters).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LegView {
    /// The address packets come from (latched), or the SDP's, if known.
    pub remote: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    /// Packets expected but not received (RFC 3550 A.3).
    pub lost: u64,
    /// Interarrival jitter, RTP timestamp units (RFC 3550 §6.4.1).
    pub jitter: u32,
}

/// Both sides' targets. `pbx`: where calls from the trunk go (the PBX
/// nodes); `trunk`: where the agents' outbound calls go.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TargetsView {
    pub trunk: Vec<TargetView>,
    pub pbx: Vec<TargetView>,
}

/// One target.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TargetView {
    pub side: &'static str,
    pub uri: String,
    pub address: String,
    pub transport: &'static str,
    /// `up` while it answers OPTIONS (or is not probed), else `down`.
    pub health: &'static str,
    /// Probes failed in a row.
    pub consecutive_failures: u32,
    /// The last probe: when it ended (Unix ms) and whether it answered.
    pub last_probe: Option<ProbeView>,
    /// Taken out of rotation by the operator (`ctl target disable`).
    pub disabled: bool,
    /// New calls go to it: up and not disabled.
    pub in_rotation: bool,
}

/// A health probe's result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProbeView {
    pub unix_ms: i64,
    pub answered: bool,
}

/// Whether the service takes new calls.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DrainView {
    /// New INVITEs are answered 503 + Retry-After.
    pub draining: bool,
    /// Draining for exit (SIGTERM): undrain is refused.
    pub shutting_down: bool,
    /// Calls in progress.
    pub calls: usize,
}

/// A reload that was applied.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReloadView {
    pub reloaded: bool,
    /// The configuration keys whose values changed (`section.key`), in
    /// file order; files they name (policy, certificates) are re-read
    /// whether or not their path changed.
    pub changed: Vec<String>,
    /// Keys that changed but take effect only at the next restart.
    pub restart_needed: Vec<String>,
    pub policy: VersionChange,
    pub shadow: VersionChange,
}

/// A policy's version before and after a reload (`null`: none).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VersionChange {
    pub before: Option<String>,
    pub after: Option<String>,
}

/// The policies in force.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolicyView {
    pub active: Option<PolicyInfo>,
    pub shadow: Option<PolicyInfo>,
    /// Calls decided since this active/shadow pair was loaded, and how
    /// many of them the shadow policy would have treated differently
    /// (level or action).
    pub decisions: u64,
    pub shadow_disagreements: u64,
}

/// One compiled policy.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolicyInfo {
    pub version: String,
    /// When this version was put in force (Unix ms).
    pub loaded_unix_ms: i64,
    pub rules: usize,
    pub review_uri: Option<String>,
}
