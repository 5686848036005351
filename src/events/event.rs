//! What a decision event and a call-end event say (docs/events.schema.json,
//! docs/integration.md): built on the audit writer's thread from the
//! record it stores, never on the call path.
//!
//! The verification path keeps RFC 8588's rule that an attestation is
//! known only when the PASSporT verified: `attestation` is present only
//! for a verified call, an unverified claim is `claimed_attestation`; the
//! signing certificate's subject is the signer's (`signer.subject`) only
//! for a verified call too.

use serde::Serialize;

use crate::audit::outbox::{CallEnd, OutboxEvent};
use crate::audit::AuditRecord;

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A decision on an inbound call.
    Decision,
    /// The end of a call that was decided.
    CallEnd,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Decision => "decision",
            EventKind::CallEnd => "call_end",
        }
    }

    /// The kind named `s` (as in `[[events.webhook]] events`).
    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "decision" => Some(EventKind::Decision),
            "call_end" => Some(EventKind::CallEnd),
            _ => None,
        }
    }
}

/// An event id: the decision id and the kind, so that a decision's event
/// and its call's end are two ids, and a receiver dedupes by it.
pub fn event_id(decision_id: &str, kind: EventKind) -> String {
    format!("{decision_id}:{}", kind.as_str())
}

/// Unix milliseconds as RFC 3339 UTC (`2026-12-07T16:55:59.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::pki::civil::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        ms.rem_euclid(1000)
    )
}

/// What every event starts with.
#[derive(Serialize)]
struct Head<'a> {
    id: &'a str,
    kind: &'static str,
    time: String,
    time_ms: i64,
    instance: &'a str,
    call_id: &'a str,
    decision_id: &'a str,
}

#[derive(Serialize)]
struct Numbers<'a> {
    /// P-Asserted-Identity's user, else From's: the number the policy read.
    calling: &'a str,
    called: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pai: Option<&'a str>,
}

#[derive(Serialize)]
struct Coded<'a> {
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

#[derive(Serialize)]
struct Signer<'a> {
    /// The signing certificate's subject (`O=…, CN=…`), verified calls only.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spc: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5u: Option<&'a str>,
}

#[derive(Serialize)]
struct Cause<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

/// The verification path as the agent's CRM reads it.
#[derive(Serialize)]
struct Path<'a> {
    /// passed | failed | no-validation | none (not verified).
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attestation: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claimed_attestation: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signer: Option<Signer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<Cause<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

#[derive(Serialize)]
struct Route<'a> {
    /// forwarded | review | rejected.
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
}

#[derive(Serialize)]
struct Decision<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    numbers: Numbers<'a>,
    level: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    level_text: Option<&'a str>,
    score: u32,
    reasons: Vec<Coded<'a>>,
    restrictions: Vec<Coded<'a>>,
    verification: Path<'a>,
    route: Route<'a>,
    policy_version: &'a str,
}

#[derive(Serialize)]
struct End {
    /// answered | rejected | abandoned.
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
}

#[derive(Serialize)]
struct CallEnded<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    end: End,
}

fn to_json(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// The decision event of `r`.
pub fn decision(r: &AuditRecord) -> OutboxEvent {
    let id = event_id(&r.decision_id, EventKind::Decision);
    let v = r.verification.value();
    let s = |key: &str| v.get(key).and_then(serde_json::Value::as_str);
    let failure = v.get("failure").filter(|f| !f.is_null());
    let outcome = s("status").unwrap_or("none");
    // The record writes an unverified PASSporT's certificate subject as
    // `unverified_subject`: never the signer's.
    let subject = (outcome == "passed").then(|| s("subject")).flatten();
    let signer = (subject.is_some() || s("spc").is_some() || s("x5u").is_some()).then(|| Signer {
        subject,
        spc: s("spc"),
        x5u: s("x5u"),
    });
    let cause = match failure {
        Some(f) => Some(Cause {
            code: f.get("code").and_then(serde_json::Value::as_u64),
            cause: f.get("cause").and_then(serde_json::Value::as_str),
            text: f.get("text").and_then(serde_json::Value::as_str),
        }),
        None => s("unavailable").map(|u| Cause {
            code: None,
            cause: None,
            text: Some(u),
        }),
    };
    let body = Decision {
        head: Head {
            id: &id,
            kind: EventKind::Decision.as_str(),
            time: rfc3339(r.time_ms),
            time_ms: r.time_ms,
            instance: &r.instance,
            call_id: &r.call_id,
            decision_id: &r.decision_id,
        },
        numbers: Numbers {
            calling: &r.calling,
            called: &r.called,
            from: r.from_user.as_deref(),
            pai: r.pai_user.as_deref(),
        },
        level: &r.level,
        level_text: r.level_text.as_deref(),
        score: r.score,
        reasons: r
            .rules
            .iter()
            .map(|f| Coded {
                code: &f.code,
                weight: Some(f.weight),
                text: f.text.as_deref(),
            })
            .collect(),
        restrictions: r
            .restrict
            .iter()
            .map(|code| Coded {
                code,
                weight: None,
                text: r
                    .restrict_text
                    .iter()
                    .find(|w| &w.action == code)
                    .map(|w| w.text.as_str()),
            })
            .collect(),
        verification: Path {
            outcome,
            // Only a verified PASSporT's attestation is one (the record
            // writes an unverified one as `claimed_attest`).
            attestation: (outcome == "passed").then(|| s("attest")).flatten(),
            claimed_attestation: s("claimed_attest"),
            signer,
            cause,
            text: r.verify_text.as_deref(),
        },
        route: Route {
            outcome: match r.action.as_str() {
                "reject" => "rejected",
                "review" => "review",
                _ => "forwarded",
            },
            target: r.target.as_deref(),
        },
        policy_version: &r.policy_version,
    };
    OutboxEvent {
        body: to_json(&body),
        event_id: id,
        kind: EventKind::Decision.as_str(),
        time_ms: r.time_ms,
    }
}

/// The call-end event of `end`.
pub fn call_end(end: &CallEnd<'_>) -> OutboxEvent {
    let id = event_id(&end.decision_id, EventKind::CallEnd);
    let body = CallEnded {
        head: Head {
            id: &id,
            kind: EventKind::CallEnd.as_str(),
            time: rfc3339(end.time_ms),
            time_ms: end.time_ms,
            instance: &end.instance,
            call_id: end.call_id,
            decision_id: &end.decision_id,
        },
        end: End {
            outcome: end.outcome.name(),
            status: end.outcome.code(),
            duration_ms: end.duration_ms,
        },
    };
    OutboxEvent {
        body: to_json(&body),
        event_id: id,
        kind: EventKind::CallEnd.as_str(),
        time_ms: end.time_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{FiredRule, Json, RestrictWords};

    fn record(verification: serde_json::Value) -> AuditRecord {
        AuditRecord {
            decision_id: "cg-a-00000000000000ff".into(),
            instance: "cg-a".into(),
            time_ms: 1_796_000_000_123,
            call_id: "c1@x".into(),
            side: "trunk".into(),
            trunk: "127.0.0.1".into(),
            calling: "15550199".into(),
            called: "15550100".into(),
            verification: Json::from(verification),
            signals: Json::null(),
            rules: vec![FiredRule {
                code: "OWN_NUMBER_SPOOF".into(),
                weight: 60,
                text: Some("Calls from our own numbers.".into()),
            }],
            score: 60,
            level: "high".into(),
            action: "review".into(),
            target: Some("sip:review@pbx".into()),
            restrict: vec!["credential-reset".into(), "payout".into()],
            policy_version: "p1".into(),
            shadow: None,
            invite: None,
            level_text: Some("High risk.".into()),
            restrict_text: vec![RestrictWords {
                action: "credential-reset".into(),
                text: "No reset.".into(),
            }],
            verify_text: Some("Caller ID signature FAILED.".into()),
            from_user: Some("15550199".into()),
            pai_user: None,
        }
    }

    #[test]
    fn an_unverified_claim_is_never_an_attestation() {
        let e = decision(&record(serde_json::json!({
            "status": "failed", "claimed_attest": "A", "spc": "123A",
            "unverified_subject": "O=Example Telecom",
            "failure": {"code": 438, "cause": "signature", "text": "bad signature"}
        })));
        let v: serde_json::Value = serde_json::from_str(&e.body).expect("json");
        assert_eq!(e.event_id, "cg-a-00000000000000ff:decision");
        assert_eq!(v["verification"]["outcome"], "failed");
        assert!(v["verification"].get("attestation").is_none(), "{v}");
        assert_eq!(v["verification"]["claimed_attestation"], "A");
        assert_eq!(v["verification"]["cause"]["code"], 438);
        assert_eq!(v["verification"]["signer"]["spc"], "123A");
        assert!(
            v["verification"]["signer"].get("subject").is_none() && !e.body.contains("Example"),
            "{v}"
        );
        assert_eq!(v["route"]["outcome"], "review");
        assert_eq!(v["restrictions"][0]["text"], "No reset.");
        assert!(v["restrictions"][1].get("text").is_none(), "{v}");
        assert_eq!(v["time"], "2026-11-30T00:53:20.123Z");
        let passed = decision(&record(serde_json::json!({
            "status": "passed", "attest": "A", "spc": "123A",
            "subject": "O=Example Telecom, CN=SHAKEN 123A"
        })));
        let v: serde_json::Value = serde_json::from_str(&passed.body).expect("json");
        assert_eq!(v["verification"]["attestation"], "A");
        assert_eq!(
            v["verification"]["signer"]["subject"],
            "O=Example Telecom, CN=SHAKEN 123A"
        );
    }
}
