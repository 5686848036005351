//! What instances tell each other through the shared store, and under
//! which keys (docs/operations.md, "Several instances: one console").
//!
//! | key (after `[state] key_prefix`) | type | holds |
//! |---|---|---|
//! | `cluster:instances` | sorted set | each instance's name, scored by its last tick (Unix ms) |
//! | `cluster:calls:{instance}` | string, expires | the instance's calls in progress ([`SharedCall`], JSON array) |
//! | `cluster:version:{instance}` | string, expires | a counter bumped when those calls change |
//! | `cluster:owner:{instance}` | string, expires | the process publishing under that name (two with one name are told) |
//! | `cluster:decision:{decision id}` | string, a day | the decision as the enforcement API answers it |
//! | `cluster:call:{call-id}` | string, a day | the latest decision id on that call |
//! | `cluster:labels:{decision id}` | list, a day | step-ups and verdicts ([`SharedLabel`]) |
//! | `cluster:cursor:{instance}` | string, 30 days | how far the instance read the log |
//! | `cluster:log` | stream, capped | labels and list additions, for the instance that owns them |
//! | `cluster:events` | stream, capped | decision events, relayed to the other instances' live streams |

use serde::{Deserialize, Serialize};

use crate::api::operations::{CallView, DecisionView};
use crate::audit::verdicts::Label;
use crate::audit::{StepUp, Verdict};

/// How long a shared decision and its labels are kept (a day: the
/// enforcement API answers for calls of the day from any instance; the
/// audit trail of the instance that decided keeps them for its retention).
pub const DECISION_TTL_SECS: u64 = 86_400;

/// Entries the log keeps (approximately: `MAXLEN ~`).
pub const LOG_MAX: u64 = 100_000;

/// Entries the events stream keeps (it is read live).
pub const EVENTS_MAX: u64 = 10_000;

/// The keys of one deployment (`[state] key_prefix`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: format!("{prefix}cluster:"),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    pub fn instances(&self) -> String {
        self.key("instances")
    }
    pub fn calls(&self, instance: &str) -> String {
        self.key(&format!("calls:{instance}"))
    }
    pub fn owner(&self, instance: &str) -> String {
        self.key(&format!("owner:{instance}"))
    }
    pub fn version(&self, instance: &str) -> String {
        self.key(&format!("version:{instance}"))
    }
    pub fn decision(&self, decision_id: &str) -> String {
        self.key(&format!("decision:{decision_id}"))
    }
    pub fn call(&self, call_id: &str) -> String {
        self.key(&format!("call:{call_id}"))
    }
    pub fn labels(&self, decision_id: &str) -> String {
        self.key(&format!("labels:{decision_id}"))
    }
    pub fn cursor(&self, instance: &str) -> String {
        self.key(&format!("cursor:{instance}"))
    }
    pub fn log(&self) -> String {
        self.key("log")
    }
    pub fn events(&self) -> String {
        self.key("events")
    }
}

/// A call in progress as another instance lists it (a [`CallView`]
/// without its media counters, which stay with the relay that has them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharedCall {
    pub call_id: String,
    pub direction: String,
    pub state: String,
    pub caller: String,
    pub callee: String,
    pub started_unix_ms: i64,
    pub answered_unix_ms: Option<i64>,
    pub decision: Option<DecisionView>,
}

impl SharedCall {
    /// The call as the other instances list it: its decision without the
    /// words the lists do not show (the level's and restrictions' texts,
    /// the verification text; the reasons' words kept for calls in the
    /// review queue, whose table shows them). The whole decision is one
    /// lookup away (`cluster:decision:<id>`). A third of the bytes.
    pub fn of(c: &CallView) -> SharedCall {
        let decision = c.decision.as_ref().map(|d| DecisionView {
            id: d.id.clone(),
            verstat: d.verstat.clone(),
            verify_text: None,
            level: d.level.clone(),
            score: d.score,
            reasons: d.reasons.clone(),
            level_text: None,
            reasons_text: if d.route == "review" {
                d.reasons_text.clone()
            } else {
                Vec::new()
            },
            restrict: d.restrict.clone(),
            restrict_text: Vec::new(),
            action: d.action.clone(),
            route: d.route.clone(),
            target: d.target.clone(),
            policy_version: d.policy_version.clone(),
        });
        SharedCall {
            call_id: c.call_id.clone(),
            direction: c.direction.to_owned(),
            state: c.state.to_owned(),
            caller: c.caller.clone(),
            callee: c.callee.clone(),
            started_unix_ms: c.started_unix_ms,
            answered_unix_ms: c.answered_unix_ms,
            decision,
        }
    }

    /// The view the API lists, marked with the instance it runs on.
    pub fn view(self, instance: &str) -> CallView {
        CallView {
            call_id: self.call_id,
            instance: Some(instance.to_owned()),
            direction: if self.direction == "outbound" {
                "outbound"
            } else {
                "inbound"
            },
            state: if self.state == "established" {
                "established"
            } else {
                "proceeding"
            },
            caller: self.caller,
            callee: self.callee,
            started_unix_ms: self.started_unix_ms,
            answered_unix_ms: self.answered_unix_ms,
            decision: self.decision,
            media: None,
        }
    }
}

/// What a step-up or verdict says, as shared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LabelKind {
    StepUp { method: String },
    Verdict { verdict: String, note: String },
}

/// A step-up or verdict given on one instance, shared with the others.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharedLabel {
    pub decision_id: String,
    pub call_id: String,
    /// The instance it was given on.
    pub instance: String,
    pub unix_ms: i64,
    pub by: String,
    /// The admin token's name.
    pub token: String,
    #[serde(flatten)]
    pub what: LabelKind,
}

/// A shared label as the audit trail records it (`token` is
/// `name@instance`: the token it came through, on the instance it was
/// given on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    StepUp(StepUp),
    Verdict(Verdict),
}

impl SharedLabel {
    /// The label as recorded; `None` for a verdict this version does not
    /// know (a newer instance's).
    pub fn recorded(&self) -> Option<Recorded> {
        let token = format!("{}@{}", self.token, self.instance);
        Some(match &self.what {
            LabelKind::StepUp { method } => Recorded::StepUp(StepUp {
                decision_id: self.decision_id.clone(),
                call_id: self.call_id.clone(),
                time_ms: self.unix_ms,
                by: self.by.clone(),
                method: method.clone(),
                token,
            }),
            LabelKind::Verdict { verdict, note } => Recorded::Verdict(Verdict {
                decision_id: self.decision_id.clone(),
                call_id: self.call_id.clone(),
                time_ms: self.unix_ms,
                verdict: Label::parse(verdict)?,
                by: self.by.clone(),
                note: note.clone(),
                token,
            }),
        })
    }
}

/// A number added to a list on one instance, for the others to add.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharedListChange {
    pub list: String,
    /// Canonical digits.
    pub number: String,
    pub by: String,
    pub note: String,
    pub token: String,
    pub unix_ms: i64,
    /// The instance it was made on.
    pub instance: String,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    Label(SharedLabel),
    List(SharedListChange),
}

impl LogEntry {
    pub fn kind(&self) -> &'static str {
        match self {
            LogEntry::Label(_) => "label",
            LogEntry::List(_) => "list",
        }
    }

    pub fn from_instance(&self) -> &str {
        match self {
            LogEntry::Label(l) => &l.instance,
            LogEntry::List(c) => &c.instance,
        }
    }

    pub fn body(&self) -> String {
        match self {
            LogEntry::Label(l) => serde_json::to_string(l),
            LogEntry::List(c) => serde_json::to_string(c),
        }
        .unwrap_or_default()
    }

    /// The entry a log record's `kind` and `body` fields make; `None` for
    /// a kind this version does not know (a newer instance's) or a body
    /// that does not parse.
    pub fn parse(kind: &[u8], body: &[u8]) -> Option<LogEntry> {
        match kind {
            b"label" => serde_json::from_slice(body).ok().map(LogEntry::Label),
            b"list" => serde_json::from_slice(body).ok().map(LogEntry::List),
            _ => None,
        }
    }
}

/// Whether `decision_id` was made by `instance` (decision ids are the
/// instance's name, `-`, and 16 hex digits: `[instance] name`).
pub fn decided_by(decision_id: &str, instance: &str) -> bool {
    decision_id
        .rsplit_once('-')
        .is_some_and(|(name, _)| name == instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_list_keeps_only_the_words_its_tables_show() {
        let worded = |code: &str| crate::api::operations::Worded {
            code: code.into(),
            text: format!("{code} in words"),
        };
        let mut d = DecisionView::plain("a-01");
        d.verify_text = Some("not verified".into());
        d.level_text = Some("high risk".into());
        d.reasons = vec!["R".into()];
        d.reasons_text = vec![worded("R")];
        d.restrict = vec!["mfa-change".into()];
        d.restrict_text = vec![worded("mfa-change")];
        let call = |d: DecisionView| CallView {
            call_id: "c1".into(),
            instance: None,
            direction: "inbound",
            state: "proceeding",
            caller: "+1555".into(),
            callee: "100".into(),
            started_unix_ms: 1,
            answered_unix_ms: None,
            decision: Some(d),
            media: None,
        };
        let agents = SharedCall::of(&call(d.clone()))
            .decision
            .unwrap_or_else(|| d.clone());
        assert_eq!(
            (
                agents.verify_text,
                agents.level_text,
                agents.reasons_text.len(),
                agents.restrict_text.len()
            ),
            (None, None, 0, 0)
        );
        assert_eq!(
            (agents.reasons, agents.restrict),
            (d.reasons.clone(), d.restrict.clone())
        );
        d.route = "review".into();
        let review = SharedCall::of(&call(d.clone()))
            .decision
            .unwrap_or_else(|| d.clone());
        assert_eq!(
            review.reasons_text,
            vec![worded("R")],
            "the review table shows them"
        );
    }

    #[test]
    fn a_decision_id_names_its_instance() {
        assert!(decided_by("cg-a-9f2c4e01a7b3d566", "cg-a"));
        assert!(!decided_by("cg-a-9f2c4e01a7b3d566", "cg"));
        assert!(!decided_by("cg-ab-9f2c4e01a7b3d566", "cg-a"));
        assert!(!decided_by("9f2c4e01a7b3d566", "cg-a"));
    }

    #[test]
    fn log_entries_round_trip_and_unknown_kinds_are_skipped() {
        let label = LogEntry::Label(SharedLabel {
            decision_id: "b-00".into(),
            call_id: "c1".into(),
            instance: "a".into(),
            unix_ms: 5,
            by: "lead".into(),
            token: "sup".into(),
            what: LabelKind::Verdict {
                verdict: "suspected_fraud".into(),
                note: "".into(),
            },
        });
        let body = label.body();
        assert!(body.contains("\"kind\":\"verdict\""), "{body}");
        assert_eq!(
            LogEntry::parse(label.kind().as_bytes(), body.as_bytes()),
            Some(label)
        );
        assert_eq!(LogEntry::parse(b"future", b"{}"), None);
        assert_eq!(LogEntry::parse(b"list", b"not json"), None);
    }

    #[test]
    fn a_shared_call_is_listed_with_its_instance_and_without_media() {
        let shared = SharedCall {
            call_id: "c1".into(),
            direction: "inbound".into(),
            state: "established".into(),
            caller: "+1555".into(),
            callee: "100".into(),
            started_unix_ms: 1,
            answered_unix_ms: Some(2),
            // Empty lists and absent words are left out of the JSON.
            decision: Some(DecisionView::plain("b-00")),
        };
        let json = serde_json::to_string(&shared).unwrap_or_default();
        assert!(!json.contains("restrict"), "{json}");
        let back: SharedCall = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, shared);
        let view = back.view("b");
        assert_eq!(
            (view.instance.as_deref(), view.direction, view.state),
            (Some("b"), "inbound", "established")
        );
        assert!(view.media.is_none());
    }
}
