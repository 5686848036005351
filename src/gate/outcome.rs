//! Calls in progress and how they end: the gate opens an entry when a
//! call's initial INVITE is forwarded (with what the call phases decided),
//! watches what it sends — the final response to the caller's INVITE and
//! the BYE that ends an answered call — and closes it; for audited calls
//! it records the outcome and duration on the call's decision. The open
//! entries are the live calls `callgate ctl calls` lists. Cheap for
//! everything else: nothing is parsed while no call is open.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::api::operations::DecisionView;
use crate::audit::{Audit, CallOutcome};
use crate::config::Side;
use crate::sip::message::{Limits, SipMessage};
use crate::sip::method::Method;
use crate::sip::proxy::Outgoing;

/// What the pipeline knows of a call when it forwards its INVITE.
#[derive(Debug, Clone, Default)]
pub struct Opening {
    /// The call phases' decision (inbound calls).
    pub decision: Option<DecisionView>,
    /// A decision record was written: the outcome goes to the audit too.
    pub audited: bool,
}

/// A call in progress, as `ctl calls` shows it.
#[derive(Debug, Clone)]
pub struct LiveCall {
    pub call_id: String,
    /// The side its INVITE came from: its final response goes back there.
    pub side: Side,
    pub caller: String,
    pub callee: String,
    pub started_unix_ms: i64,
    pub answered_unix_ms: Option<i64>,
    pub decision: Option<DecisionView>,
}

/// A call whose end is awaited.
struct Open {
    since: Instant,
    answered: Option<Instant>,
    audited: bool,
    call: Box<LiveCall>,
}

/// Open calls by Call-ID (bounded, and forgotten after a day).
/// The Call-ID is the caller's input: it is kept to its first
/// [`KEY_BYTES`] bytes, so the table holds at most
/// `MAX_OPEN × (KEY_BYTES + overhead)` ≈ 40 MB whatever Call-IDs a flood
/// carries (up to `max_line_bytes` each), and a full table is swept at
/// most once a second rather than on every new call.
#[derive(Default)]
pub struct Tracker {
    calls: HashMap<Vec<u8>, Open>,
    /// The key of each open call that has a decision, by decision id (the
    /// enforcement API looks calls up by either).
    by_decision: HashMap<String, Vec<u8>>,
    last_sweep: Option<Instant>,
}

const MAX_OPEN: usize = 100_000;
const FORGET_AFTER: Duration = Duration::from_secs(86_400);
/// Bytes of a Call-ID the tracker keys on.
const KEY_BYTES: usize = 256;

/// The tracker's key for `call_id`.
fn key(call_id: &[u8]) -> &[u8] {
    &call_id[..call_id.len().min(KEY_BYTES)]
}

/// A message the gate sends that may end a call or settle its INVITE: a
/// final response or a BYE, parsed once for every observer of what is sent
/// (the live-call table here, the media phase's `observe_sent`).
pub struct Ending {
    /// The side it is sent to.
    pub to: Side,
    pub msg: SipMessage,
}

/// The final responses and BYEs among `out`, parsed. Provisional
/// responses and other requests are skipped before parsing.
pub fn endings(out: &[Outgoing]) -> Vec<Ending> {
    out.iter()
        .filter(|o| {
            let b = &o.bytes;
            (b.starts_with(b"SIP/2.0 ") && b.get(8).is_some_and(|d| *d != b'1'))
                || b.starts_with(b"BYE ")
        })
        .filter_map(|o| {
            SipMessage::parse(o.bytes.clone(), &Limits::default())
                .ok()
                .map(|msg| Ending { to: o.to.side, msg })
        })
        .collect()
}

impl Tracker {
    /// The initial INVITE `msg` from `side` is forwarded at `unix_ms`;
    /// the call as listed (`None` when it is not: no Call-ID, or a full
    /// table).
    pub fn open(
        &mut self,
        msg: &SipMessage,
        side: Side,
        opening: Opening,
        unix_ms: i64,
    ) -> Option<&LiveCall> {
        let call_id = msg.call_id()?;
        if self.calls.len() >= MAX_OPEN {
            let now = Instant::now();
            if self
                .last_sweep
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                self.last_sweep = Some(now);
                self.calls
                    .retain(|_, c| now.duration_since(c.since) < FORGET_AFTER);
                let calls = &self.calls;
                self.by_decision.retain(|_, k| calls.contains_key(k));
            }
            if self.calls.len() >= MAX_OPEN {
                return None;
            }
        }
        let key = key(call_id);
        let parties = crate::sip::parties::Parties::of(msg);
        let call = LiveCall {
            call_id: String::from_utf8_lossy(key).into_owned(),
            side,
            caller: parties.calling,
            callee: parties.called.into_iter().next().unwrap_or_default(),
            started_unix_ms: unix_ms,
            answered_unix_ms: None,
            decision: opening.decision,
        };
        let id = call.decision.as_ref().and_then(|d| d.id.clone());
        let replaced = self.calls.insert(
            key.to_vec(),
            Open {
                since: Instant::now(),
                answered: None,
                audited: opening.audited,
                call: Box::new(call),
            },
        );
        // The same Call-ID again: its earlier decision goes with it.
        if let Some(old) = replaced
            .as_ref()
            .and_then(|o| o.call.decision.as_ref()?.id.as_deref())
        {
            self.by_decision.remove(old);
        }
        if let Some(id) = id {
            self.by_decision.insert(id, key.to_vec());
        }
        self.calls.get(key).map(|o| &*o.call)
    }

    /// Calls in progress, in no order: a copy, so that the caller sorts
    /// and renders them without holding the table (the dispatch of every
    /// message waits on it).
    pub fn live(&self) -> Vec<LiveCall> {
        self.calls.values().map(|c| (*c.call).clone()).collect()
    }

    /// The call in progress with this Call-ID or decision id.
    pub fn find(&self, id: &str) -> Option<LiveCall> {
        self.calls
            .get(key(id.as_bytes()))
            .or_else(|| {
                self.by_decision
                    .get(id)
                    .and_then(|k| self.calls.get(k.as_slice()))
            })
            .map(|c| (*c.call).clone())
    }

    /// Forgets the call under `k` and its decision id.
    fn close(&mut self, k: &[u8]) {
        if let Some(open) = self.calls.remove(k) {
            if let Some(id) = open.call.decision.as_ref().and_then(|d| d.id.as_deref()) {
                self.by_decision.remove(id);
            }
        }
    }

    /// Calls in progress.
    pub fn count(&self) -> usize {
        self.calls.len()
    }

    /// No call is open: nothing sent needs parsing for the table.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Looks at what was sent ([`endings`]) for final INVITE responses
    /// towards the side a call came from and BYEs of answered calls.
    pub fn observe(&mut self, sent: &[Ending], audit: Option<&Audit>) {
        if self.calls.is_empty() {
            return;
        }
        for Ending { to, msg } in sent {
            let bye = msg.method() == Some(Method::Bye);
            let Some(call_id) = msg.call_id() else {
                continue;
            };
            let Some(open) = self.calls.get_mut(key(call_id)) else {
                continue;
            };
            let audit = audit.filter(|_| open.audited);
            if bye {
                if let (Some(at), Some(audit)) = (open.answered, audit) {
                    audit.call_ended(
                        &String::from_utf8_lossy(call_id),
                        CallOutcome::Answered,
                        Some(at.elapsed()),
                    );
                }
                self.close(key(call_id));
                continue;
            }
            let status = msg.status().unwrap_or(0);
            let invite = msg.cseq().ok().is_some_and(|c| c.method == Method::Invite);
            if !invite || *to != open.call.side || open.answered.is_some() {
                continue;
            }
            let id = String::from_utf8_lossy(call_id).into_owned();
            let outcome = match status {
                200..=299 => {
                    open.answered = Some(Instant::now());
                    open.call.answered_unix_ms = Some(
                        open.call.started_unix_ms
                            + i64::try_from(open.since.elapsed().as_millis()).unwrap_or(0),
                    );
                    CallOutcome::Answered
                }
                487 => CallOutcome::Abandoned,
                s => CallOutcome::Rejected(s),
            };
            if !matches!(outcome, CallOutcome::Answered) {
                self.close(key(call_id));
            }
            if let Some(audit) = audit {
                audit.call_ended(&id, outcome, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood of calls with 1 kB Call-IDs keeps the table within its
    /// count and each key within [`KEY_BYTES`].
    #[test]
    fn long_call_ids_and_a_full_table_stay_bounded() {
        let mut t = Tracker::default();
        let long = "c".repeat(1000);
        for i in 0..MAX_OPEN + 100 {
            let invite = format!(
                "INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                 From: <sip:2@h>;tag=a\r\nTo: <sip:1@h>\r\nCall-ID: {i}-{long}\r\n\
                 CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            );
            let msg = SipMessage::parse(invite.into(), &Limits::default()).expect("test INVITE");
            t.open(&msg, Side::Trunk, Opening::default(), 0);
        }
        assert_eq!(
            t.calls.len(),
            MAX_OPEN,
            "new calls past the bound untracked"
        );
        assert!(t.calls.keys().all(|k| k.len() <= KEY_BYTES));
        assert!(t.last_sweep.is_some(), "swept once when full");
    }

    fn message(text: &str) -> SipMessage {
        SipMessage::parse(text.replace('\n', "\r\n").into(), &Limits::default())
            .expect("test message")
    }

    #[test]
    fn a_call_is_found_by_its_decision_id_until_it_ends() {
        let mut t = Tracker::default();
        let invite = message(
            "INVITE sip:1@h SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n\
             From: <sip:2@h>;tag=a\nTo: <sip:1@h>\nCall-ID: c1\n\
             CSeq: 1 INVITE\nMax-Forwards: 70\nContent-Length: 0\n\n",
        );
        let decision = DecisionView::plain("cg-a-01");
        let opening = Opening {
            decision: Some(decision),
            audited: false,
        };
        t.open(&invite, Side::Trunk, opening, 0);
        assert_eq!(t.find("cg-a-01").map(|c| c.call_id), Some("c1".into()));
        assert_eq!(t.find("c1").map(|c| c.call_id), Some("c1".into()));
        let refused = message(
            "SIP/2.0 486 Busy Here\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n\
             From: <sip:2@h>;tag=a\nTo: <sip:1@h>;tag=b\nCall-ID: c1\n\
             CSeq: 1 INVITE\nContent-Length: 0\n\n",
        );
        t.observe(
            &[Ending {
                to: Side::Trunk,
                msg: refused,
            }],
            None,
        );
        assert!(t.find("cg-a-01").is_none() && t.find("c1").is_none());
        assert!(t.by_decision.is_empty(), "the index forgets ended calls");
    }
}
