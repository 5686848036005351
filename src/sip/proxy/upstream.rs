//! Responses sent upstream through a request's server transaction: the
//! best final response once no branch is left (RFC 3261 §16.7 step 6),
//! forwarded responses (§16.7 step 9), and responses the core writes
//! itself (§8.2.6); a final one releases the request and, for an INVITE,
//! its place in the drain and overload count.

use std::time::Instant;

use bytes::Bytes;
use smallvec::SmallVec;

use super::{Best, Outgoing, ProxyCore};
use crate::sip::method::Method;
use crate::sip::response::{build_response, reason_phrase};

impl ProxyCore {
    /// Sends the best final response upstream once no branch is left
    /// (§16.7 step 6: 6xx first, else the lowest class; a 503 becomes 500).
    pub(super) fn finish(&mut self, key: &Bytes, now: Instant, out: &mut Vec<Outgoing>) {
        let Some(entry) = self.servers.get_mut(key) else {
            return;
        };
        let Some(fwd) = entry.fwd.as_mut() else {
            return;
        };
        if fwd.done {
            return;
        }
        fwd.done = true;
        fwd.timer_c_at = None;
        fwd.no_response_at = None;
        match fwd.best.take() {
            Some(Best { status: 503, .. }) => self.respond(
                key,
                500,
                "Server Internal Error (no target available)",
                &[],
                now,
                out,
            ),
            Some(Best {
                status,
                bytes: Some(b),
            }) => self.send_upstream(key, status, b, now, out),
            Some(Best {
                status,
                bytes: None,
            }) => self.respond(key, status, reason_phrase(status), &[], now, out),
            None => self.respond(key, 408, "Request Timeout", &[], now, out),
        }
    }

    /// Sends a response upstream through the server transaction.
    pub(super) fn send_upstream(
        &mut self,
        key: &Bytes,
        status: u16,
        bytes: Bytes,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let Some(entry) = self.servers.get_mut(key) else {
            return;
        };
        let was_final = entry.tx.is_final();
        let reply = entry.reply;
        let outputs = entry.tx.send_response(status, bytes, now);
        let now_final = entry.tx.is_final();
        if now_final && !was_final {
            entry.request = None;
            if let Some(f) = entry.fwd.as_mut() {
                f.done = true;
                f.timer_c_at = None;
                f.no_response_at = None;
            }
            if entry.method == Method::Invite {
                self.pending_invites = self.pending_invites.saturating_sub(1);
            }
        }
        for o in outputs {
            if let crate::sip::transaction::TxOutput::Transmit(b) = o {
                self.send_response(out, reply, b, status);
            }
        }
        self.schedule_server(key);
    }

    /// Answers a request ourselves with `status`.
    pub(super) fn respond(
        &mut self,
        key: &Bytes,
        status: u16,
        reason: &str,
        extra: &[&[u8]],
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let Some(entry) = self.servers.get(key) else {
            return;
        };
        let Some(req) = entry.request.as_deref() else {
            return;
        };
        let extra: SmallVec<[&[u8]; 2]> = extra.iter().copied().filter(|e| !e.is_empty()).collect();
        let tag = (status > 100).then_some(entry.to_tag.as_bytes());
        let bytes = build_response(req, status, reason, tag, Some(entry.reply.addr), &extra);
        self.send_upstream(key, status, bytes, now, out);
    }
}
