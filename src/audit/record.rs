//! What the audit trail keeps per decision, and how a call ended.

use serde::{Deserialize, Serialize};

/// A JSON document kept as text: serialized once, on the call path, from
/// the value it records (no intermediate `serde_json::Value` tree), and
/// written to the store as is. Readers parse it with [`Json::value`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json(String);

impl Json {
    /// The JSON text of `v` (`null` if it cannot be serialized).
    pub fn of<T: Serialize + ?Sized>(v: &T) -> Json {
        Json(serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned()))
    }

    /// JSON `null`.
    pub fn null() -> Json {
        Json("null".to_owned())
    }

    /// Stored text, trusted to be JSON (from the audit store).
    pub fn from_stored(text: String) -> Json {
        Json(text)
    }

    /// The text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// The parsed value (`Null` if the text is not JSON).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for Json {
    fn from(v: serde_json::Value) -> Json {
        Json::of(&v)
    }
}

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        serde_json::Value::deserialize(d).map(Json::from)
    }
}

/// One rule that fired, with its weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiredRule {
    pub code: String,
    pub weight: i32,
    /// The rule's `description` in the policy that decided (absent in
    /// records stored before descriptions were kept, and for rules
    /// without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One decision on one call, with its full verification path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unique per decision (shown to the agent in `X-Callgate-Risk`):
    /// `<instance>-<16 hex digits>` (`crate::env::decision_instance`).
    pub decision_id: String,
    /// The instance that made the decision (`[instance] name`); empty in
    /// records stored before instance names existed.
    #[serde(default)]
    pub instance: String,
    /// Unix milliseconds.
    pub time_ms: i64,
    pub call_id: String,
    /// Side the call arrived on: `trunk` or `pbx`.
    pub side: String,
    /// Source address of the carrier SBC (the trunk).
    pub trunk: String,
    pub calling: String,
    pub called: String,
    /// The verification: status, attestation, every check with its outcome
    /// and timing (`Verification` as JSON); null when not verified.
    pub verification: Json,
    /// The named signals the policy read.
    pub signals: Json,
    pub rules: Vec<FiredRule>,
    pub score: u32,
    /// low | medium | high | critical (empty when no policy ran).
    pub level: String,
    /// tag | review | reject.
    pub action: String,
    /// Where a reviewed call was sent.
    pub target: Option<String>,
    /// Restricted actions shown to the agent.
    pub restrict: Vec<String>,
    /// The policy's words for the level (`[level.NAME] text`), when it
    /// has them (schema 5; absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_text: Option<String>,
    /// The policy's words for each restricted action that has them
    /// (`[restrictions]`), in `restrict` order (schema 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrict_text: Vec<RestrictWords>,
    /// The verification path in words, as the agent reads it
    /// (`X-Callgate-Verify-Text`; schema 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_text: Option<String>,
    pub policy_version: String,
    /// The shadow policy's verdict, when one ran.
    pub shadow: Option<Json>,
    /// The INVITE as received, for `callgate replay`.
    pub invite: Option<String>,
    /// The user parts of From and of the first P-Asserted-Identity: not
    /// stored with the record, carried into its decision event
    /// (`crate::events`).
    #[serde(skip)]
    pub from_user: Option<String>,
    #[serde(skip)]
    pub pai_user: Option<String>,
}

/// What an agent is told about one restricted action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestrictWords {
    pub action: String,
    pub text: String,
}

/// How a call ended, recorded when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallOutcome {
    /// A 2xx reached the caller.
    Answered,
    /// A final non-2xx reached the caller (refused, busy, failed).
    Rejected(u16),
    /// The caller cancelled before an answer.
    Abandoned,
}

impl CallOutcome {
    pub fn name(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Rejected(_) => "rejected",
            CallOutcome::Abandoned => "abandoned",
        }
    }

    pub fn code(self) -> Option<u16> {
        match self {
            CallOutcome::Rejected(c) => Some(c),
            _ => None,
        }
    }
}

/// A decision as read back from the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredDecision {
    #[serde(flatten)]
    pub record: AuditRecord,
    pub outcome: Option<String>,
    pub status: Option<u16>,
    /// From answer to BYE, when the call was answered and ended.
    pub duration_ms: Option<i64>,
    /// What the media relay counted, per stream and leg (packets, loss,
    /// jitter, latching, drops), when media was anchored and has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<serde_json::Value>,
    /// The latest verdict an agent or supervisor gave (schema 6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<super::verdicts::Label>,
}
