//! How audited calls end: the gate watches what it sends towards the
//! trunk (the final response to the caller's INVITE) and the BYE that ends
//! an answered call, and records the outcome and duration on the call's
//! decision. Cheap for everything else: nothing is parsed while no audited
//! call is open.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::audit::{Audit, CallOutcome};
use crate::config::Side;
use crate::sip::message::{Limits, SipMessage};
use crate::sip::method::Method;
use crate::sip::proxy::Outgoing;

/// A call whose outcome is awaited.
struct Open {
    since: Instant,
    answered: Option<Instant>,
}

/// Open audited calls by Call-ID (bounded, and forgotten after a day).
/// The Call-ID is the caller's input: it is kept to its first
/// [`KEY_BYTES`] bytes, so the table holds at most
/// `MAX_OPEN × (KEY_BYTES + overhead)` ≈ 40 MB whatever Call-IDs a flood
/// carries (up to `max_line_bytes` each), and a full table is swept at
/// most once a second rather than on every new call.
#[derive(Default)]
pub struct Tracker {
    calls: HashMap<Vec<u8>, Open>,
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

impl Tracker {
    /// A decision was recorded for this call.
    pub fn open(&mut self, call_id: &[u8]) {
        if self.calls.len() >= MAX_OPEN {
            let now = Instant::now();
            if self
                .last_sweep
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                self.last_sweep = Some(now);
                self.calls
                    .retain(|_, c| now.duration_since(c.since) < FORGET_AFTER);
            }
            if self.calls.len() >= MAX_OPEN {
                return;
            }
        }
        self.calls.insert(
            key(call_id).to_vec(),
            Open {
                since: Instant::now(),
                answered: None,
            },
        );
    }

    /// Looks at outgoing messages for final INVITE responses towards the
    /// trunk and BYEs of answered calls.
    pub fn observe(&mut self, out: &[Outgoing], audit: &Audit) {
        if self.calls.is_empty() {
            return;
        }
        for o in out {
            let b = &o.bytes;
            // Provisional responses say nothing about the outcome: skipped
            // before parsing.
            let response_to_trunk = o.to.side == Side::Trunk
                && b.starts_with(b"SIP/2.0 ")
                && b.get(8).is_some_and(|d| *d != b'1');
            let bye = b.starts_with(b"BYE ");
            if !response_to_trunk && !bye {
                continue;
            }
            let Ok(msg) = SipMessage::parse(b.clone(), &Limits::default()) else {
                continue;
            };
            let Some(call_id) = msg.call_id() else {
                continue;
            };
            let Some(open) = self.calls.get_mut(key(call_id)) else {
                continue;
            };
            if bye {
                if let Some(at) = open.answered {
                    audit.call_ended(
                        &String::from_utf8_lossy(call_id),
                        CallOutcome::Answered,
                        Some(at.elapsed()),
                    );
                }
                self.calls.remove(key(call_id));
                continue;
            }
            let status = msg.status().unwrap_or(0);
            let invite = msg.cseq().ok().is_some_and(|c| c.method == Method::Invite);
            if status < 200 || !invite || open.answered.is_some() {
                continue;
            }
            let id = String::from_utf8_lossy(call_id).into_owned();
            match status {
                200..=299 => {
                    open.answered = Some(Instant::now());
                    audit.call_ended(&id, CallOutcome::Answered, None);
                }
                487 => {
                    audit.call_ended(&id, CallOutcome::Abandoned, None);
                    self.calls.remove(key(call_id));
                }
                s => {
                    audit.call_ended(&id, CallOutcome::Rejected(s), None);
                    self.calls.remove(key(call_id));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood of calls with 8 kB Call-IDs keeps the table within its
    /// count and each key within [`KEY_BYTES`].
    #[test]
    fn long_call_ids_and_a_full_table_stay_bounded() {
        let mut t = Tracker::default();
        let long = "c".repeat(8000);
        for i in 0..MAX_OPEN + 100 {
            t.open(format!("{i}-{long}").as_bytes());
        }
        assert_eq!(
            t.calls.len(),
            MAX_OPEN,
            "new calls past the bound untracked"
        );
        assert!(t.calls.keys().all(|k| k.len() <= KEY_BYTES));
        assert!(t.last_sweep.is_some(), "swept once when full");
    }
}
