//! Response processing (RFC 3261 §16.7), timers of the forwarding context
//! (Timer C, §16.6 step 11; no-response failover), and OPTIONS probes.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;

use super::observe::Direction;
use super::request::client_key;
use super::{build, Best, ClientEntry, ClientKind, Outgoing, Peer, ProxyCore};
use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::method::Method;
use crate::sip::side::{Side, Transport};
use crate::sip::splice::Splice;
use crate::sip::transaction::{ClientState, ClientTransaction, TxKind, TxOutput};
use crate::sip::via::Via;

/// A received response with the body the pipeline chose for its copy
/// upstream (SDP through the media relay), if it changed it.
#[derive(Clone, Copy)]
pub(super) struct Received<'a> {
    pub msg: &'a SipMessage,
    pub body: Option<&'a [u8]>,
}

/// The response without our top Via, ready for upstream (§16.7 step 9),
/// with the pipeline's body when it has one.
fn pop_via(r: Received<'_>) -> Option<Bytes> {
    let idx = r.msg.first_index(HeaderName::Via)?;
    let mut sp = Splice::new(r.msg);
    sp.remove_first_value(idx);
    if let Some(b) = r.body {
        sp.set_body(b);
    }
    Some(sp.to_bytes())
}

/// Rank for best-response selection (§16.7 step 6): lower is better.
fn rank(status: u16) -> u16 {
    match status {
        600..=699 => 0,
        // 503 ranks last within 5xx: it only says "try elsewhere".
        503 => 599,
        s => s,
    }
}

impl ProxyCore {
    pub(super) fn handle_response(
        &mut self,
        peer: Peer,
        msg: SipMessage,
        body: Option<Vec<u8>>,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let received = Received {
            msg: &msg,
            body: body.as_deref(),
        };
        let status = msg.status().unwrap_or(0);
        self.observer.response(peer.side, Direction::In, status);
        let Ok(via) = msg.top_via() else { return };
        if !self.is_me(via.host, via.port) {
            tracing::debug!(from = %peer.addr, "response whose top Via is not ours dropped");
            return;
        }
        let Ok(cseq) = msg.cseq() else { return };
        let ckey = client_key(
            via.branch.unwrap_or_default(),
            cseq.method == Method::Cancel,
        );
        let Some(entry) = self.clients.get_mut(&ckey) else {
            self.forward_stateless(peer, received, out);
            return;
        };
        let limits = self.settings.limits;
        let forwarded = entry.tx.request().clone();
        let outputs = entry.tx.on_response(status, now, || {
            let invite = SipMessage::parse(forwarded, &limits).ok()?;
            build::ack_for(&invite, &msg)
        });
        self.client_outputs(&ckey, outputs, Some(received), now, out);
    }

    /// Acts on what a client transaction asked for.
    pub(super) fn client_outputs(
        &mut self,
        ckey: &Bytes,
        outputs: impl IntoIterator<Item = TxOutput>,
        msg: Option<Received<'_>>,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        for o in outputs {
            let Some(entry) = self.clients.get(ckey) else {
                return;
            };
            match o {
                TxOutput::Transmit(b) => {
                    let method = if b.starts_with(b"ACK ") {
                        Method::Ack
                    } else {
                        Method::Invite
                    };
                    let to = entry.to;
                    self.send_request(out, to, b, method, Some(ckey.clone()));
                }
                TxOutput::PassUp => {
                    if let Some(m) = msg {
                        self.pass_up(ckey, m, now, out);
                    }
                }
                TxOutput::Timeout => {
                    self.observer.timeout();
                    self.branch_failed(ckey, 408, now, out);
                }
                TxOutput::AckTimeout => {}
                TxOutput::Terminated => {
                    self.clients.remove(ckey);
                    return;
                }
            }
        }
        self.schedule_client(ckey);
    }

    /// A response passed up by a client transaction (§16.7 steps 4–10).
    fn pass_up(&mut self, ckey: &Bytes, r: Received<'_>, now: Instant, out: &mut Vec<Outgoing>) {
        let status = r.msg.status().unwrap_or(0);
        let Some(entry) = self.clients.get_mut(ckey) else {
            return;
        };
        match entry.kind {
            ClientKind::Cancel => {}
            ClientKind::Probe {
                side,
                addr,
                transport,
            } => {
                entry.probe_deadline = None;
                self.probe_result(side, (addr, transport), status != 503, now);
            }
            ClientKind::Forward => {
                let Some(skey) = entry.server.clone() else {
                    return;
                };
                if status < 200 {
                    entry.got_provisional = true;
                    let canceled = self
                        .servers
                        .get(&skey)
                        .and_then(|s| s.fwd.as_ref())
                        .is_some_and(|f| f.canceled);
                    if let Some(f) = self.servers.get_mut(&skey).and_then(|s| s.fwd.as_mut()) {
                        // Any response stops the no-response failover; a
                        // provisional other than 100 restarts Timer C.
                        f.no_response_at = None;
                        if status > 100 && !f.done {
                            f.timer_c_at = Some(now + self.settings.timers.timer_c);
                        }
                    }
                    if canceled {
                        self.cancel_branch(ckey, now, out);
                    }
                    if status > 100 {
                        if let Some(b) = pop_via(r) {
                            self.send_upstream(&skey, status, b, now, out);
                        }
                    } else {
                        self.schedule_server(&skey);
                    }
                    return;
                }
                if let Some(f) = self.servers.get_mut(&skey).and_then(|s| s.fwd.as_mut()) {
                    f.branches.retain(|b| b != ckey);
                }
                let Some(up) = pop_via(r) else {
                    return;
                };
                if status < 300 {
                    // §16.7 step 5: every 2xx is forwarded at once.
                    self.send_upstream(&skey, status, up, now, out);
                } else {
                    self.branch_final(&skey, status, Some(up), now, out);
                }
            }
        }
    }

    /// A branch ended without a response (timeout, transport error).
    pub(super) fn branch_failed(
        &mut self,
        ckey: &Bytes,
        status: u16,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let Some(entry) = self.clients.get(ckey) else {
            return;
        };
        match entry.kind {
            ClientKind::Cancel => {}
            ClientKind::Probe {
                side,
                addr,
                transport,
            } => self.probe_result(side, (addr, transport), false, now),
            ClientKind::Forward => {
                let Some(skey) = entry.server.clone() else {
                    return;
                };
                tracing::info!(target = %entry.to.addr, status, "no response from target");
                if let Some(f) = self.servers.get_mut(&skey).and_then(|s| s.fwd.as_mut()) {
                    f.branches.retain(|b| b != ckey);
                }
                self.branch_final(&skey, status, None, now, out);
            }
        }
    }

    /// A branch's final non-2xx outcome: fail over on 503/408 when a target
    /// is left and the request was not cancelled, else answer upstream.
    fn branch_final(
        &mut self,
        skey: &Bytes,
        status: u16,
        bytes: Option<Bytes>,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let Some(f) = self.servers.get_mut(skey).and_then(|s| s.fwd.as_mut()) else {
            return;
        };
        if f.done {
            return;
        }
        f.no_response_at = None;
        f.timer_c_at = None;
        if f.best
            .as_ref()
            .is_none_or(|b| rank(status) < rank(b.status))
        {
            f.best = Some(Best { status, bytes });
        }
        let retry = matches!(status, 503 | 408) && !f.canceled;
        if retry {
            self.forward_next(skey, now, out);
        } else {
            self.finish(skey, now, out);
        }
    }

    /// §16.11 / §16.7 step 3: a response with our Via but no transaction (a
    /// retransmitted 2xx after the transaction ended) is forwarded to the
    /// next Via, if the other side admits that address.
    fn forward_stateless(&mut self, peer: Peer, r: Received<'_>, out: &mut Vec<Outgoing>) {
        let msg = r.msg;
        let status = msg.status().unwrap_or(0);
        let mut vias = msg.values(HeaderName::Via);
        let _ours = vias.next();
        let Some(next) = vias.next().and_then(|v| Via::parse(v).ok()) else {
            return;
        };
        let Some(transport) = Transport::from_token(next.transport) else {
            return;
        };
        let host = next.received.unwrap_or(next.host);
        let host = host
            .strip_prefix(b"[")
            .and_then(|h| h.strip_suffix(b"]"))
            .unwrap_or(host);
        let Some(ip) = std::str::from_utf8(host)
            .ok()
            .and_then(|h| h.parse::<IpAddr>().ok())
        else {
            return;
        };
        let port = match next.rport {
            Some(Some(p)) => p,
            _ => next.port.unwrap_or(if transport == Transport::Tls {
                5061
            } else {
                5060
            }),
        };
        let side = peer.side.other();
        if !self.settings.sides[side.index()].admits(ip) {
            return;
        }
        if let Some(b) = pop_via(r) {
            let to = Peer {
                side,
                transport,
                addr: SocketAddr::new(ip, port),
                conn: None,
            };
            self.send_response(out, to, b, status);
        }
    }

    /// Timers of a server transaction and its forwarding context, then
    /// its next deadline (whichever way the handling ended: a request
    /// answered here has no forwarding context, yet its Timer G and H
    /// must go on — RFC 3261 §17.2.1).
    pub(super) fn server_timer(&mut self, key: &Bytes, now: Instant, out: &mut Vec<Outgoing>) {
        self.server_timers_due(key, now, out);
        self.schedule_server(key);
    }

    fn server_timers_due(&mut self, key: &Bytes, now: Instant, out: &mut Vec<Outgoing>) {
        let Some(entry) = self.servers.get_mut(key) else {
            return;
        };
        // Timer-driven events log inside the request's span (its Call-ID),
        // as long as the request is kept (until its final response).
        let call_id = entry
            .request
            .as_ref()
            .and_then(|r| r.call_id())
            .map(|c| String::from_utf8_lossy(c).into_owned());
        let span = call_id
            .map(|c| tracing::info_span!("sip", call_id = %c, side = entry.reply.side.as_str()));
        let _enter = span.as_ref().map(|s| s.enter());
        let reply = entry.reply;
        let status = entry.tx.last_status();
        let mut terminated = false;
        let mut transmits = Vec::new();
        for o in entry.tx.on_timer(now) {
            match o {
                TxOutput::Transmit(b) => transmits.push(b),
                TxOutput::AckTimeout => tracing::info!("no ACK for final response {status}"),
                TxOutput::Terminated => terminated = true,
                _ => {}
            }
        }
        for b in transmits {
            self.send_response(out, reply, b, status);
        }
        if terminated {
            if let Some(e) = self.servers.remove(key) {
                if let Some((source, bytes)) = e.charged {
                    self.bytes.release(source, bytes);
                }
                if e.method == Method::Invite && !e.tx.is_final() {
                    self.pending_invites = self.pending_invites.saturating_sub(1);
                }
            }
            return;
        }
        // Forwarding-context timers.
        let Some(f) = self.servers.get_mut(key).and_then(|e| e.fwd.as_mut()) else {
            return;
        };
        let current = f.branches.last().cloned();
        if f.no_response_at.is_some_and(|t| t <= now) {
            f.no_response_at = None;
            if let Some(ckey) = current {
                // Nothing at all came back: abandon this target (its client
                // transaction is dropped, stopping retransmissions) and fail over.
                let silent = self.clients.get(&ckey).is_some_and(|c| {
                    matches!(c.tx.state(), ClientState::Calling | ClientState::Trying)
                });
                if silent {
                    self.observer.timeout();
                    self.branch_failed(&ckey, 408, now, out);
                    self.clients.remove(&ckey);
                    return;
                }
            }
        }
        let Some(f) = self.servers.get_mut(key).and_then(|e| e.fwd.as_mut()) else {
            return;
        };
        if f.timer_c_at.is_some_and(|t| t <= now) {
            f.timer_c_at = None;
            // Timer C (§16.6 step 11): cancel a ringing branch, or treat a
            // silent one as a 408.
            if let Some(ckey) = f.branches.last().cloned() {
                let ringing = self.clients.get(&ckey).is_some_and(|c| c.got_provisional);
                self.observer.timeout();
                if ringing {
                    if let Some(f) = self.servers.get_mut(key).and_then(|e| e.fwd.as_mut()) {
                        f.canceled = true;
                    }
                    self.cancel_branch(&ckey, now, out);
                } else {
                    self.branch_failed(&ckey, 408, now, out);
                    self.clients.remove(&ckey);
                }
            }
        }
    }

    /// Timers of a client transaction, and the probe deadline.
    pub(super) fn client_timer(&mut self, key: &Bytes, now: Instant, out: &mut Vec<Outgoing>) {
        let Some(entry) = self.clients.get_mut(key) else {
            return;
        };
        if entry.probe_deadline.is_some_and(|t| t <= now) {
            if let ClientKind::Probe {
                side,
                addr,
                transport,
            } = entry.kind
            {
                self.clients.remove(key);
                self.probe_result(side, (addr, transport), false, now);
            }
            return;
        }
        let outputs = entry.tx.on_timer(now);
        self.client_outputs(key, outputs, None, now, out);
    }

    /// Sends one OPTIONS probe to every target and re-arms the probe timer.
    pub(super) fn send_probes(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        let interval = self.settings.health.interval;
        if interval.is_zero() {
            self.next_probe_at = None;
            return;
        }
        for side in [Side::Trunk, Side::Pbx] {
            let targets = self.targets[side.index()].targets.clone();
            for t in &targets {
                self.probe_seq = self.probe_seq.wrapping_add(1);
                let br = self.branches.next(0);
                let (tag, call_id) = (self.branches.token(), self.branches.token());
                let local = &self.local[side.index()];
                let bytes = build::options_probe(
                    local,
                    t.transport,
                    &t.uri,
                    &br,
                    self.probe_seq,
                    &tag,
                    &call_id,
                );
                let to = Peer {
                    side,
                    transport: t.transport,
                    addr: t.addr,
                    conn: None,
                };
                let (tx, first) = ClientTransaction::start(
                    TxKind::NonInvite,
                    bytes,
                    t.transport.is_reliable(),
                    self.settings.timers,
                    now,
                );
                let ckey = client_key(br.as_bytes(), false);
                self.clients.insert(
                    ckey.clone(),
                    ClientEntry {
                        tx,
                        kind: ClientKind::Probe {
                            side,
                            addr: t.addr,
                            transport: t.transport,
                        },
                        server: None,
                        to,
                        got_provisional: false,
                        cancel_sent: false,
                        probe_deadline: Some(now + self.settings.health.timeout),
                        scheduled: None,
                    },
                );
                if let TxOutput::Transmit(b) = first {
                    self.send_request(out, to, b, Method::Options, Some(ckey.clone()));
                }
                self.schedule_client(&ckey);
            }
        }
        let next = now + interval;
        self.next_probe_at = Some(next);
        self.push_timer(next, super::TimerRef::Probes);
    }

    /// A probe of the target at `hop` ended; a target no longer in the
    /// set (its name resolved elsewhere meanwhile) is forgotten.
    fn probe_result(&mut self, side: Side, hop: (SocketAddr, Transport), ok: bool, now: Instant) {
        let set = &mut self.targets[side.index()];
        let Some(index) = set.position(hop.0, hop.1) else {
            return;
        };
        let uri = set
            .targets
            .get(index)
            .map(|t| t.uri.clone())
            .unwrap_or_default();
        let changed = if ok {
            set.probe_ok(index, now)
        } else {
            set.probe_failed(index, now)
        };
        if changed {
            if set.is_up(index) {
                tracing::warn!(side = side.as_str(), target = %uri, "target answers OPTIONS again: back in rotation");
            } else {
                tracing::warn!(side = side.as_str(), target = %uri, "target failed OPTIONS probes: out of rotation");
            }
            self.observer.set_targets_up(side, set.up_count());
        }
    }
}
