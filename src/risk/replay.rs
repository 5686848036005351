//! What-if before rollout (`callgate replay`): a candidate policy decides
//! on recorded calls — decisions from the audit store, or the INVITEs of a
//! packet capture — and the calls where it differs are listed.
//!
//! Signals come from the recorded INVITE (or the audited signals when the
//! INVITE was not kept), with the candidate's own lists and number ranges;
//! STIR results are the recorded ones (a capture has none: STIR is then
//! unavailable and the candidate's fail mode applies); velocity is counted
//! afresh over the replayed calls in time order with the candidate's windows.
//!
//! Calls that agents or supervisors labelled (`crate::audit::verdicts`)
//! measure the candidate: of the calls confirmed as fraud, how many it
//! would have **caught** (sent to review or rejected); of the confirmed
//! customers, how many it would have **touched** (the same, for a
//! legitimate caller).

use bytes::Bytes;
use serde::Serialize;

use super::assess::{self, velocity_requests};
use super::policy::{Policy, Verdict};
use super::signals::{self, Signals};
use crate::audit::{Label, StoredDecision};
use crate::capture::Payload;
use crate::sip::message::{Limits, SipMessage};
use crate::state::window::LocalVelocity;
use crate::stir::passport::canonical_tn;

/// A recorded decision, reduced to what is compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    pub level: String,
    pub action: String,
    pub reasons: Vec<String>,
    pub policy_version: String,
}

/// One replayed call.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub call_id: String,
    pub calling: String,
    pub time_ms: i64,
    /// What was decided then (audit), or by the baseline policy (capture).
    pub before: Option<Recorded>,
    pub candidate: Verdict,
    /// The latest verdict given on the call (audit store only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
}

impl Replayed {
    /// Whether the candidate sends the call to review or rejects it.
    pub fn stopped(&self) -> bool {
        matches!(
            self.candidate.action,
            super::policy::Action::Review | super::policy::Action::Reject(_)
        )
    }

    /// Whether the candidate decides differently (level or action).
    pub fn differs(&self) -> bool {
        self.before.as_ref().is_some_and(|b| {
            b.level != self.candidate.level.as_str() || b.action != self.candidate.action.as_str()
        })
    }
}

fn recorded(v: &Verdict) -> Recorded {
    Recorded {
        level: v.level.as_str().to_owned(),
        action: v.action.as_str().to_owned(),
        reasons: v.reasons().map(str::to_owned).collect(),
        policy_version: v.policy_version.clone(),
    }
}

/// Counts the candidate's velocity windows for this call.
fn count(velocity: &LocalVelocity, candidate: &Policy, s: &mut Signals, time_ms: i64) {
    s.velocity = velocity_requests(&[candidate], s)
        .into_iter()
        .map(|r| {
            let n = velocity.hit(&r.key, r.window.as_millis() as u64, time_ms.max(0) as u64);
            (r.name, Some(n))
        })
        .collect();
}

/// Replays audited decisions through `candidate`.
pub fn audited(rows: &[StoredDecision], candidate: &Policy) -> Vec<Replayed> {
    let velocity = LocalVelocity::default();
    let mut out = Vec::new();
    for row in rows {
        let rec = &row.record;
        let stored: Signals = serde_json::from_str(rec.signals.get()).unwrap_or_default();
        let invite = rec.invite.as_ref().and_then(|t| {
            SipMessage::parse(Bytes::from(t.clone().into_bytes()), &Limits::default()).ok()
        });
        let mut s = match &invite {
            Some(msg) => {
                let mut s = assess::signals(msg, None, candidate, rec.time_ms / 1000);
                s.stir = stored.stir;
                s.attest = stored.attest;
                s.stir_cause = stored.stir_cause;
                s.iat_age_secs = stored.iat_age_secs;
                s.diverted = stored.diverted;
                s.replayed = stored.replayed;
                s.rcd = stored.rcd;
                s.origid = stored.origid.clone();
                s
            }
            None => {
                let mut s = stored;
                let n = &candidate.numbers;
                s.lists = candidate.lists_of(&s.calling);
                s.own_number = signals::has_prefix(&s.calling, &n.own);
                s.unassigned = signals::has_prefix(&s.calling, &n.unassigned);
                (s.hour, s.weekday) =
                    signals::hour_and_weekday(rec.time_ms / 1000, n.utc_offset_minutes);
                s
            }
        };
        count(&velocity, candidate, &mut s, rec.time_ms);
        out.push(Replayed {
            call_id: rec.call_id.clone(),
            calling: rec.calling.clone(),
            time_ms: rec.time_ms,
            before: (!rec.level.is_empty()).then(|| Recorded {
                level: rec.level.clone(),
                action: rec.action.clone(),
                reasons: rec.rules.iter().map(|r| r.code.clone()).collect(),
                policy_version: rec.policy_version.clone(),
            }),
            candidate: candidate.decide(&s),
            label: row.verdict,
        });
    }
    out
}

/// Replays the initial INVITEs of a capture (retransmissions once)
/// through `candidate`, compared with `baseline` when given.
pub fn captured(
    packets: &[Payload],
    candidate: &Policy,
    baseline: Option<&Policy>,
) -> Vec<Replayed> {
    let (vc, vb) = (LocalVelocity::default(), LocalVelocity::default());
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in packets {
        if !p.data.starts_with(b"INVITE ") {
            continue;
        }
        let Ok(msg) = SipMessage::parse(Bytes::from(p.data.clone()), &Limits::default()) else {
            continue;
        };
        if msg.to_tag().is_some() {
            continue; // re-INVITE
        }
        let call_id = String::from_utf8_lossy(msg.call_id().unwrap_or_default()).into_owned();
        if !seen.insert(call_id.clone()) {
            continue;
        }
        let time_ms = p.time_us / 1000;
        let parties = crate::sip::parties::Parties::of(&msg);
        let decide = |policy: &Policy, velocity: &LocalVelocity| {
            let mut s = assess::signals_of(&msg, &parties, None, policy, time_ms / 1000);
            count(velocity, policy, &mut s, time_ms);
            policy.decide(&s)
        };
        out.push(Replayed {
            calling: canonical_tn(&parties.calling),
            call_id,
            time_ms,
            before: baseline.map(|b| recorded(&decide(b, &vb))),
            candidate: decide(candidate, &vc),
            label: None,
        });
    }
    out
}

/// Summary of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub calls: usize,
    pub compared: usize,
    pub differ: usize,
    /// "before -> after" (level/action) → count.
    pub changes: std::collections::BTreeMap<String, usize>,
    /// The candidate on the labelled calls.
    pub labelled: Labelled,
}

/// What a candidate policy does to the calls people labelled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Labelled {
    /// Calls labelled `suspected_fraud`, and how many of them the
    /// candidate sends to review or rejects.
    pub fraud: usize,
    pub caught: usize,
    /// Calls labelled `confirmed_customer`, and how many of them the
    /// candidate sends to review or rejects.
    pub customers: usize,
    pub touched: usize,
    /// Calls labelled `escalate` (counted, not measured).
    pub escalated: usize,
}

impl Labelled {
    fn of(calls: &[Replayed]) -> Labelled {
        let mut l = Labelled::default();
        for c in calls {
            match c.label {
                Some(Label::SuspectedFraud) => {
                    l.fraud += 1;
                    l.caught += usize::from(c.stopped());
                }
                Some(Label::ConfirmedCustomer) => {
                    l.customers += 1;
                    l.touched += usize::from(c.stopped());
                }
                Some(Label::Escalate) => l.escalated += 1,
                None => {}
            }
        }
        l
    }
}

pub fn summary(calls: &[Replayed]) -> Summary {
    let mut changes = std::collections::BTreeMap::new();
    for c in calls.iter().filter(|c| c.differs()) {
        if let Some(b) = &c.before {
            *changes
                .entry(format!(
                    "{}/{} -> {}/{}",
                    b.level,
                    b.action,
                    c.candidate.level.as_str(),
                    c.candidate.action.as_str()
                ))
                .or_default() += 1;
        }
    }
    Summary {
        calls: calls.len(),
        compared: calls.iter().filter(|c| c.before.is_some()).count(),
        differ: calls.iter().filter(|c| c.differs()).count(),
        changes,
        labelled: Labelled::of(calls),
    }
}
