//! A request's entry into the core (RFC 3261 §16.3 request validation,
//! §17.2.3 transaction matching): the transaction keys, retransmissions
//! answered by their server transaction, the 100 Trying of §16.2, and the
//! refusals (the §16.3 checks, the pipeline's reject, drain and overload)
//! before the request is routed (`route.rs`) and forwarded (`forward.rs`).
//! ACK and CANCEL take their own paths (`ack.rs`, `cancel.rs`).

use std::time::Instant;

use bytes::Bytes;

use super::branch;
use super::observe::{CoreRefusal, Direction};
use super::{Edits, Outgoing, Peer, ProxyCore, Routing, ServerEntry};
use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::method::Method;
use crate::sip::response::build_response;
use crate::sip::transaction::{ServerTransaction, TxKind};
use crate::sip::uri::Uri;
use crate::sip::via::Via;

/// Server transaction key (RFC 3261 §17.2.3): branch + sent-by + method for
/// RFC 3261 branches; the RFC 2543 fields otherwise. `method` is the method
/// the request matches (INVITE for an ACK or a CANCEL looking for its INVITE).
pub(super) fn server_key(msg: &SipMessage, via: &Via<'_>, method: &[u8]) -> Bytes {
    let mut k = Vec::with_capacity(96);
    match via.branch.filter(|_| via.is_rfc3261_branch()) {
        Some(b) => {
            k.push(b'B');
            k.extend_from_slice(b);
            k.push(0);
            k.extend_from_slice(via.host);
            k.extend_from_slice(&via.port.unwrap_or(0).to_be_bytes());
        }
        None => {
            // §17.2.3 RFC 2543 matching: Request-URI (not for ACK/CANCEL,
            // whose URI equals the INVITE's anyway), From tag, Call-ID,
            // CSeq number and the top Via.
            k.push(b'L');
            k.extend_from_slice(msg.request_uri().unwrap_or_default());
            k.push(0);
            k.extend_from_slice(msg.from_tag().unwrap_or_default());
            k.push(0);
            k.extend_from_slice(msg.call_id().unwrap_or_default());
            k.push(0);
            k.extend_from_slice(&msg.cseq().map(|c| c.seq).unwrap_or(0).to_be_bytes());
            k.extend_from_slice(via.host);
            k.extend_from_slice(via.branch.unwrap_or_default());
        }
    }
    k.push(0);
    k.extend_from_slice(method);
    Bytes::from(k)
}

/// Client transaction key: our branch, with a suffix for the CANCEL that
/// shares the INVITE's branch (§9.1).
pub(super) fn client_key(branch: &[u8], cancel: bool) -> Bytes {
    let mut k = Vec::with_capacity(branch.len() + 2);
    k.extend_from_slice(branch);
    if cancel {
        k.extend_from_slice(b"/C");
    }
    Bytes::from(k)
}

/// Where responses to a request go: always back to the source address and
/// connection. For stream transports that is RFC 3261 §18.2.2; for UDP it is
/// RFC 3581 symmetric response routing applied whether or not the client
/// asked for `rport` (like Kamailio's `force_rport`), because carriers and
/// PBXs behind NAT or multi-socket SBCs otherwise lose their responses.
/// See docs/decisions/0003-symmetric-responses.md.
fn reply_peer(peer: Peer, _via: &Via<'_>) -> Peer {
    peer
}

impl ProxyCore {
    pub(super) fn handle_request(
        &mut self,
        peer: Peer,
        msg: SipMessage,
        routing: Routing,
        edits: Option<Edits>,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let method = msg.method().unwrap_or(Method::Extension);
        self.observer.request(peer.side, Direction::In, method);
        let via = match msg.top_via() {
            Ok(v) => v,
            Err(_) => {
                if method != Method::Ack {
                    let r =
                        build_response(&msg, 400, "Bad Request (Via)", None, Some(peer.addr), &[]);
                    self.send_response(out, peer, r, 400);
                }
                return;
            }
        };
        if method == Method::Ack {
            self.on_ack(peer, &msg, &via, routing, edits, now, out);
            return;
        }
        if routing == Routing::LocalOnly {
            // Only an ACK may be for the core alone; the pipeline answers
            // other strays itself. Never forwarded.
            return;
        }
        let key = server_key(&msg, &via, msg.method_bytes().unwrap_or_default());
        if let Some(entry) = self.servers.get_mut(&key) {
            // A retransmission: the transaction answers it (§17.2.1, §17.2.2).
            let reply = entry.reply;
            let status = entry.tx.last_status();
            for o in entry.tx.on_request_retransmission() {
                if let crate::sip::transaction::TxOutput::Transmit(b) = o {
                    self.send_response(out, reply, b, status);
                }
            }
            return;
        }
        let reply = reply_peer(peer, &via);
        if method == Method::Cancel {
            let ikey = server_key(&msg, &via, b"INVITE");
            self.on_cancel(peer, msg, reply, ikey, key, now, out);
            return;
        }
        let kind = if method == Method::Invite {
            TxKind::Invite
        } else {
            TxKind::NonInvite
        };
        let initial = routing.is_initial();
        let refusal = self.check_request(&msg, &via);
        let trying_sent = edits.as_ref().is_some_and(|m| m.trying_sent);
        let Some(charged) = self.charge_bytes(peer, &msg, reply, out) else {
            return;
        };
        let to_tag = self.branches.token();
        let mut entry = ServerEntry {
            tx: ServerTransaction::new(kind, peer.transport.is_reliable(), self.settings.timers),
            method,
            reply,
            request: Some(Box::new(msg)),
            to_tag,
            fwd: None,
            edits,
            scheduled: None,
            charged: Some(charged),
        };
        if method == Method::Invite {
            // §16.2: a stateful proxy answers 100 Trying at once so the
            // upstream stops retransmitting.
            if let Some(req) = &entry.request {
                let trying = build_response(req, 100, "Trying", None, Some(reply.addr), &[]);
                for o in entry.tx.send_response(100, trying, now) {
                    if let crate::sip::transaction::TxOutput::Transmit(b) = o {
                        if !trying_sent {
                            self.send_response(out, reply, b, 100);
                        }
                    }
                }
            }
        }
        self.servers.insert(key.clone(), entry);
        if method == Method::Invite {
            self.pending_invites += 1;
        }
        if let Some((status, reason, extra)) = refusal {
            self.respond(&key, status, reason, &[extra.as_bytes()], now, out);
            return;
        }
        // The pipeline refused the call (route phase: RFC 8224 §6.2.2,
        // the policy's reject).
        let reject = self
            .servers
            .get(&key)
            .and_then(|e| e.edits.as_ref())
            .and_then(|m| m.reject.clone());
        if let Some((status, reason)) = reject {
            // Every 503 callgate sends says when to retry (RFC 3261 §21.5.4).
            let retry = format!("Retry-After: {}", self.settings.overload.retry_after_secs);
            let extra: &[&[u8]] = if status == 503 {
                &[retry.as_bytes()]
            } else {
                &[]
            };
            self.respond(&key, status, &reason, extra, now, out);
            return;
        }
        if method == Method::Invite && initial {
            let refusal = if self.draining {
                Some(CoreRefusal::Draining)
            } else if self.pending_invites > self.settings.overload.max_transactions {
                Some(CoreRefusal::Overload)
            } else {
                None
            };
            if let Some(why) = refusal {
                self.observer.refused(peer.side, why);
                let retry = format!("Retry-After: {}", self.settings.overload.retry_after_secs);
                self.respond(
                    &key,
                    503,
                    "Service Unavailable",
                    &[retry.as_bytes()],
                    now,
                    out,
                );
                return;
            }
        }
        match self.plan_route(peer.side, &key, routing) {
            Ok(fwd) => {
                if let Some(e) = self.servers.get_mut(&key) {
                    e.fwd = Some(fwd);
                }
                self.forward_next(&key, now, out);
            }
            Err((status, reason)) => self.respond(&key, status, reason, &[], now, out),
        }
    }

    /// Charges a new server transaction for `msg` to its source's and the
    /// core's byte budgets (`budget.rs`). Over either, the request is
    /// answered 503 with Retry-After at once, statelessly, and `None` is
    /// returned: it holds no memory.
    fn charge_bytes(
        &mut self,
        peer: Peer,
        msg: &SipMessage,
        reply: Peer,
        out: &mut Vec<Outgoing>,
    ) -> Option<(std::net::IpAddr, usize)> {
        let source = super::canonical_ip(peer.addr.ip());
        let bytes = super::budget::charge_for(msg.bytes().len());
        let o = &self.settings.overload;
        match self.bytes.charge(
            source,
            bytes,
            o.max_transaction_bytes_per_source,
            o.max_transaction_bytes,
        ) {
            Ok(()) => Some((source, bytes)),
            Err(over) => {
                self.observer
                    .refused(peer.side, CoreRefusal::TransactionBytes);
                tracing::info!(from = %peer.addr, ?over, bytes, held = self.bytes.total(), "request over the transaction byte budget refused");
                let retry = format!("Retry-After: {}", o.retry_after_secs);
                let r = build_response(
                    msg,
                    503,
                    "Service Unavailable",
                    None,
                    Some(peer.addr),
                    &[retry.as_bytes()],
                );
                self.send_response(out, reply, r, 503);
                None
            }
        }
    }

    /// Request checks of RFC 3261 §16.3: URI scheme (416), Max-Forwards (483),
    /// loops (482), Proxy-Require (420). Returns the refusal, if any.
    pub(super) fn check_request(
        &self,
        msg: &SipMessage,
        _via: &Via<'_>,
    ) -> Option<(u16, &'static str, String)> {
        let ruri = msg.request_uri().unwrap_or_default();
        let scheme_ok =
            Uri::parse(ruri).is_ok_and(|u| u.is_sip() || u.scheme.eq_ignore_ascii_case(b"tel"));
        if !scheme_ok {
            return Some((416, "Unsupported URI Scheme", String::new()));
        }
        if msg.max_forwards().ok().flatten() == Some(0) {
            return Some((483, "Too Many Hops", String::new()));
        }
        let here = branch::loop_hash(msg);
        for v in msg.values(HeaderName::Via) {
            if let Ok(via) = Via::parse(v) {
                if self.is_me(via.host, via.port)
                    && via.branch.and_then(branch::parse_loop_hash) == Some(here)
                {
                    self.observer.loop_detected();
                    return Some((482, "Loop Detected", String::new()));
                }
            }
        }
        let required: Vec<&[u8]> = msg.values(HeaderName::ProxyRequire).collect();
        if !required.is_empty() {
            let list = required
                .iter()
                .map(|r| String::from_utf8_lossy(r))
                .collect::<Vec<_>>()
                .join(", ");
            return Some((420, "Bad Extension", format!("Unsupported: {list}")));
        }
        None
    }
}
