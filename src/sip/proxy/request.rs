//! Request processing (RFC 3261 §16.3–§16.6, §16.10 CANCEL, §17.2.3 matching).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use smallvec::SmallVec;

use super::branch::{self, BranchGenerator};
use super::build;
use super::observe::{CoreRefusal, Direction};
use super::{
    Best, ClientEntry, ClientKind, Edits, Forwarding, NextHop, Outgoing, Peer, ProxyCore, Routing,
    ServerEntry,
};
use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::method::Method;
use crate::sip::response::{build_response, reason_phrase};
use crate::sip::side::{Side, Transport};
use crate::sip::splice::Splice;
use crate::sip::transaction::{ClientTransaction, ServerState, ServerTransaction, TxKind};
use crate::sip::uri::{NameAddr, Uri};
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
            k.extend_from_slice(msg.from().ok().and_then(|f| f.tag()).unwrap_or_default());
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

/// Splits a header value at top-level commas (§7.3.1), not inside quotes or `<>`.
pub(super) fn split_commas(v: &[u8]) -> SmallVec<[&[u8]; 4]> {
    let mut parts = SmallVec::new();
    let (mut start, mut quoted, mut angle, mut escaped) = (0, false, false, false);
    for (i, &b) in v.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                parts.push(v[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(v[start..].trim_ascii());
    parts.retain(|p: &mut &[u8]| !p.is_empty());
    parts
}

/// Resolves a URI to a next hop: IP literal host, port (5060, 5061 for TLS)
/// and the `transport` parameter (sips implies TLS). No DNS.
fn hop_of(uri: &Uri<'_>) -> Option<(SocketAddr, Transport)> {
    let sips = uri.scheme.eq_ignore_ascii_case(b"sips");
    let transport = match uri.param("transport") {
        Some(t) => Transport::from_token(t)?,
        None if sips => Transport::Tls,
        None => Transport::Udp,
    };
    let host = std::str::from_utf8(uri.host).ok()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let port = uri.port.unwrap_or(if transport == Transport::Tls {
        5061
    } else {
        5060
    });
    Some((SocketAddr::new(ip, port), transport))
}

/// The next hop a URI names (IP literal host, port, `transport`; see
/// [`hop_of`]), for the pipeline's dialog table.
pub fn next_hop(uri: &[u8]) -> Option<(SocketAddr, Transport)> {
    hop_of(&Uri::parse(uri).ok()?)
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

/// The top Via with `received` and a filled-in `rport` (RFC 3261 §18.2.1,
/// RFC 3581 §4), or `None` when nothing needs adding.
fn stamped_via(value: &[u8], via: &Via<'_>, source: SocketAddr) -> Option<Vec<u8>> {
    let ip = source.ip().to_string();
    let bare = via
        .host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(via.host);
    let host_matches = bare == ip.as_bytes();
    let wants_rport = via.rport == Some(None);
    if host_matches && !wants_rport {
        return None;
    }
    let mut outv = Vec::with_capacity(value.len() + 40);
    for (i, part) in value.split(|b| *b == b';').enumerate() {
        let name = part
            .split(|b| *b == b'=')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if i > 0 && (name.eq_ignore_ascii_case(b"received") || name.eq_ignore_ascii_case(b"rport"))
        {
            continue;
        }
        if i > 0 {
            outv.push(b';');
        }
        outv.extend_from_slice(part);
    }
    outv.extend_from_slice(b";received=");
    outv.extend_from_slice(ip.as_bytes());
    if via.rport.is_some() {
        outv.extend_from_slice(format!(";rport={}", source.port()).as_bytes());
    }
    Some(outv)
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
                    let r = build_response(&msg, 400, "Bad Request (Via)", None, &[]);
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
        };
        if method == Method::Invite {
            // §16.2: a stateful proxy answers 100 Trying at once so the
            // upstream stops retransmitting.
            if let Some(req) = &entry.request {
                let trying = build_response(req, 100, "Trying", None, &[]);
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
            self.respond(&key, status, &reason, &[], now, out);
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

    /// Request checks of RFC 3261 §16.3: URI scheme (416), Max-Forwards (483),
    /// loops (482), Proxy-Require (420). Returns the refusal, if any.
    fn check_request(
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

    /// Decides where a new request goes (§16.4 route processing, §16.5
    /// target determination).
    fn plan_route(
        &self,
        in_side: Side,
        key: &Bytes,
        routing: Routing,
    ) -> Result<Forwarding, (u16, &'static str)> {
        let msg = self
            .servers
            .get(key)
            .and_then(|e| e.request.as_deref())
            .ok_or((500, "Server Internal Error"))?;
        let out_side = in_side.other();
        let routes: SmallVec<[&[u8]; 4]> = msg.values(HeaderName::Route).collect();
        let pop = self.own_leading_routes(&routes);
        let initial = routing.is_initial();
        let method = msg.method().unwrap_or(Method::Extension);
        let hop = if let Routing::InDialog(Some(hop)) = routing {
            // The dialog's own next hop (§12.2.1.1), still only to an
            // admitted peer.
            NextHop::Fixed(self.admitted_hop(out_side, hop)?)
        } else if let Some(next) = routes.get(pop) {
            NextHop::Fixed(self.fixed_hop(
                out_side,
                NameAddr::parse(next).map(|na| na.uri).unwrap_or(next),
            )?)
        } else if initial {
            NextHop::Targets(self.targets[out_side.index()].order())
        } else {
            NextHop::Fixed(self.fixed_hop(out_side, msg.request_uri().unwrap_or_default())?)
        };
        let record_route = initial
            && matches!(
                method,
                Method::Invite | Method::Subscribe | Method::Refer | Method::Notify
            );
        Ok(Forwarding {
            out_side,
            hop,
            attempts: 0,
            pop_routes: pop,
            record_route,
            branches: SmallVec::new(),
            best: None,
            canceled: false,
            timer_c_at: None,
            no_response_at: None,
            done: false,
        })
    }

    /// How many Route values at the top of the set name callgate (§16.4:
    /// they are removed before forwarding).
    fn own_leading_routes(&self, routes: &[&[u8]]) -> usize {
        routes
            .iter()
            .take_while(|r| {
                NameAddr::parse(r)
                    .ok()
                    .and_then(|na| Uri::parse(na.uri).ok())
                    .is_some_and(|u| self.is_me(u.host, u.port))
            })
            .count()
    }

    /// A next hop from a URI, only if the outgoing side's ACL admits it.
    fn fixed_hop(&self, out_side: Side, uri: &[u8]) -> Result<Peer, (u16, &'static str)> {
        let uri = Uri::parse(uri).map_err(|_| (400, "Bad Request (unroutable URI)"))?;
        let (addr, transport) =
            hop_of(&uri).ok_or((404, "Not Found (next hop is not an IP address)"))?;
        self.admitted_hop(
            out_side,
            Peer {
                side: out_side,
                transport,
                addr,
                conn: None,
            },
        )
    }

    /// `hop`, only if the outgoing side's ACL admits it (callgate is never
    /// an open relay).
    fn admitted_hop(&self, out_side: Side, hop: Peer) -> Result<Peer, (u16, &'static str)> {
        if !self.settings.sides[out_side.index()].admits(hop.addr.ip()) {
            tracing::info!(addr = %hop.addr, side = out_side.as_str(), "refusing to relay to a destination outside the side's ACL");
            return Err((403, "Forbidden (destination not a configured peer)"));
        }
        Ok(Peer {
            side: out_side,
            ..hop
        })
    }

    /// Forwards the request of server transaction `key` to its next target,
    /// or sends the best final response when none is left (§16.6, §16.7).
    pub(super) fn forward_next(&mut self, key: &Bytes, now: Instant, out: &mut Vec<Outgoing>) {
        let Some(entry) = self.servers.get_mut(key) else {
            return;
        };
        let (Some(fwd), Some(msg)) = (entry.fwd.as_mut(), entry.request.as_deref()) else {
            return;
        };
        let hop = match &fwd.hop {
            NextHop::Targets(order) => order
                .get(fwd.attempts)
                .and_then(|i| self.targets[fwd.out_side.index()].targets.get(*i))
                .map(|t| Peer {
                    side: fwd.out_side,
                    transport: t.transport,
                    addr: t.addr,
                    conn: None,
                }),
            NextHop::Fixed(p) => (fwd.attempts == 0).then_some(*p),
        };
        let Some(hop) = hop else {
            self.finish(key, now, out);
            return;
        };
        fwd.attempts += 1;
        if fwd.attempts > 1 {
            self.observer.failover();
            tracing::info!(target = %hop.addr, attempt = fwd.attempts, "failing over to next target");
        }
        let method = entry.method;
        let in_peer = entry.reply;
        let loop_hash = branch::loop_hash(msg);
        let br = self.branches.next(loop_hash);
        let plan = CopyPlan {
            out_local: &self.local[fwd.out_side.index()],
            in_local: &self.local[in_peer.side.index()],
            out_transport: hop.transport,
            from: in_peer,
            branch: &br,
            pop_routes: fwd.pop_routes,
            record_route: fwd.record_route,
            edits: entry.edits.as_ref(),
        };
        let bytes = match forwarded_copy(msg, &plan) {
            Some(b) => b,
            None => {
                self.respond(key, 400, "Bad Request", &[], now, out);
                return;
            }
        };
        let ckey = client_key(br.as_bytes(), false);
        fwd.branches.push(ckey.clone());
        let kind = if method == Method::Invite {
            TxKind::Invite
        } else {
            TxKind::NonInvite
        };
        // The no-response timer only hurries failover: with no target left
        // to try (the last one, or a fixed in-dialog hop), the transaction's
        // own timers (B/F, RFC 3261 §17.1) decide.
        let another_target =
            matches!(&fwd.hop, NextHop::Targets(order) if fwd.attempts < order.len());
        fwd.no_response_at = another_target.then(|| now + self.settings.no_response);
        if method == Method::Invite {
            fwd.timer_c_at = Some(now + self.settings.timers.timer_c);
        }
        let (tx, first) = ClientTransaction::start(
            kind,
            bytes,
            hop.transport.is_reliable(),
            self.settings.timers,
            now,
        );
        self.clients.insert(
            ckey.clone(),
            ClientEntry {
                tx,
                kind: ClientKind::Forward,
                server: Some(key.clone()),
                to: hop,
                got_provisional: false,
                cancel_sent: false,
                probe_deadline: None,
                scheduled: None,
            },
        );
        if let crate::sip::transaction::TxOutput::Transmit(b) = first {
            self.send_request(out, hop, b, method, Some(ckey.clone()));
        }
        self.schedule_client(&ckey);
        self.schedule_server(key);
    }

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
        let bytes = build_response(req, status, reason, tag, &extra);
        self.send_upstream(key, status, bytes, now, out);
    }

    /// ACK (§16.6, §17.2.1): one for our non-2xx final is absorbed by its
    /// INVITE server transaction; one for a 2xx is a new request forwarded
    /// statelessly along its route set.
    #[allow(clippy::too_many_arguments)]
    fn on_ack(
        &mut self,
        peer: Peer,
        msg: &SipMessage,
        via: &Via<'_>,
        routing: Routing,
        edits: Option<Edits>,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let ikey = server_key(msg, via, b"INVITE");
        if let Some(e) = self.servers.get_mut(&ikey) {
            if e.tx.state() == ServerState::Completed {
                e.tx.on_ack(now);
                self.schedule_server(&ikey);
                return;
            }
        }
        if routing == Routing::LocalOnly || self.check_request(msg, via).is_some() {
            return;
        }
        let out_side = peer.side.other();
        let routes: SmallVec<[&[u8]; 4]> = msg.values(HeaderName::Route).collect();
        let pop = self.own_leading_routes(&routes);
        let hop = match routing {
            Routing::InDialog(Some(hop)) => self.admitted_hop(out_side, hop),
            _ => {
                let next_uri = match routes.get(pop) {
                    Some(r) => NameAddr::parse(r).map(|na| na.uri).unwrap_or(r),
                    None => msg.request_uri().unwrap_or_default(),
                };
                self.fixed_hop(out_side, next_uri)
            }
        };
        let Ok(hop) = hop else {
            tracing::debug!("ACK without a routable next hop dropped");
            return;
        };
        let incoming_branch = via.branch.unwrap_or_default();
        let br = BranchGenerator::stateless(branch::loop_hash(msg), incoming_branch);
        let plan = CopyPlan {
            out_local: &self.local[out_side.index()],
            in_local: &self.local[peer.side.index()],
            out_transport: hop.transport,
            from: peer,
            branch: &br,
            pop_routes: pop,
            record_route: false,
            edits: edits.as_ref(),
        };
        if let Some(bytes) = forwarded_copy(msg, &plan) {
            self.send_request(out, hop, bytes, Method::Ack, None);
        }
    }

    /// CANCEL (§16.10): answered 200 hop by hop; the matching INVITE's
    /// branches are cancelled, and no more targets are tried.
    #[allow(clippy::too_many_arguments)]
    fn on_cancel(
        &mut self,
        peer: Peer,
        msg: SipMessage,
        reply: Peer,
        ikey: Bytes,
        key: Bytes,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let entry = ServerEntry {
            tx: ServerTransaction::new(
                TxKind::NonInvite,
                peer.transport.is_reliable(),
                self.settings.timers,
            ),
            method: Method::Cancel,
            reply,
            request: Some(Box::new(msg)),
            to_tag: self.branches.token(),
            fwd: None,
            edits: None,
            scheduled: None,
        };
        self.servers.insert(key.clone(), entry);
        let Some(invite) = self.servers.get_mut(&ikey) else {
            self.respond(&key, 481, "Call/Transaction Does Not Exist", &[], now, out);
            return;
        };
        let already_final = invite.tx.is_final();
        let mut to_cancel: SmallVec<[Bytes; 2]> = SmallVec::new();
        let mut any_provisional = false;
        if let Some(f) = invite.fwd.as_mut() {
            f.canceled = true;
            for b in &f.branches {
                if let Some(c) = self.clients.get(b) {
                    if c.got_provisional {
                        any_provisional = true;
                        to_cancel.push(b.clone());
                    }
                }
            }
        }
        self.respond(&key, 200, "OK", &[], now, out);
        if already_final {
            return;
        }
        for b in to_cancel {
            self.cancel_branch(&b, now, out);
        }
        if !any_provisional {
            // Nothing downstream has answered yet: a CANCEL may not be sent
            // before a provisional (§9.1); answer 487 now and cancel a branch
            // if it answers later.
            self.respond(&ikey, 487, "Request Terminated", &[], now, out);
        }
    }

    /// Sends CANCEL for a forwarded INVITE branch that has seen a provisional.
    pub(super) fn cancel_branch(&mut self, ckey: &Bytes, now: Instant, out: &mut Vec<Outgoing>) {
        let Some(c) = self.clients.get_mut(ckey) else {
            return;
        };
        if c.cancel_sent || c.tx.final_status().is_some() {
            return;
        }
        c.cancel_sent = true;
        let to = c.to;
        let Ok(fwd_invite) = SipMessage::parse(c.tx.request().clone(), &self.settings.limits)
        else {
            return;
        };
        let Some(cancel) = build::cancel_for(&fwd_invite) else {
            return;
        };
        let Ok(via) = fwd_invite.top_via() else {
            return;
        };
        let key = client_key(via.branch.unwrap_or_default(), true);
        let (tx, first) = ClientTransaction::start(
            TxKind::NonInvite,
            cancel,
            to.transport.is_reliable(),
            self.settings.timers,
            now,
        );
        self.clients.insert(
            key.clone(),
            ClientEntry {
                tx,
                kind: ClientKind::Cancel,
                server: None,
                to,
                got_provisional: false,
                cancel_sent: true,
                probe_deadline: None,
                scheduled: None,
            },
        );
        if let crate::sip::transaction::TxOutput::Transmit(b) = first {
            self.send_request(out, to, b, Method::Cancel, Some(key.clone()));
        }
        self.schedule_client(&key);
    }
}

/// How to make the forwarded copy of a request.
pub(super) struct CopyPlan<'a> {
    pub out_local: &'a super::LocalSide,
    pub in_local: &'a super::LocalSide,
    pub out_transport: Transport,
    /// Where the request came from.
    pub from: Peer,
    pub branch: &'a str,
    /// Leading Route values naming us, removed.
    pub pop_routes: usize,
    pub record_route: bool,
    /// The pipeline's decisions for this request, if any.
    pub edits: Option<&'a Edits>,
}

/// The forwarded copy of a request (RFC 3261 §16.6): our Via on top, the
/// received/rport stamp on the previous top Via, Max-Forwards decremented,
/// our Route entries removed and, for dialog-creating requests, one
/// Record-Route per side so in-dialog requests cross both; then the
/// pipeline's edits (header values, added headers, Request-URI, body).
/// What may not cross callgate was already removed by the pipeline's
/// sanitize phase, before any phase read the message.
pub(super) fn forwarded_copy(msg: &SipMessage, plan: &CopyPlan<'_>) -> Option<Bytes> {
    let (out_local, in_local, out_transport, from) =
        (plan.out_local, plan.in_local, plan.out_transport, plan.from);
    let mut sp = Splice::new(msg);
    if plan.record_route {
        sp.prepend_header(out_local.record_route_line(out_transport).as_bytes());
        sp.prepend_header(in_local.record_route_line(from.transport).as_bytes());
    }
    // Our Via right above the previous top Via, so the Via list reads as
    // one block.
    sp.prepend_header(out_local.via_line(out_transport, plan.branch).as_bytes());
    if let Some(e) = plan.edits {
        for (i, v) in &e.replace_first {
            sp.replace_first_value(*i, v);
        }
        if let Some(body) = &e.body {
            sp.set_body(body);
        }
        for line in &e.append {
            sp.append_header(line.as_bytes());
        }
        if let Some(uri) = &e.request_uri {
            sp.set_request_uri(uri.as_bytes());
        }
    }
    let via_idx = msg.first_index(HeaderName::Via)?;
    let top = msg.value(&msg.headers()[via_idx]);
    let top_first = split_commas(top).first().copied().unwrap_or(top);
    let via = Via::parse(top_first).ok()?;
    let stamped = stamped_via(top_first, &via, from.addr);
    if let Some(v) = &stamped {
        sp.replace_first_value(via_idx, v);
    }
    let mf_text;
    match msg.max_forwards().ok()? {
        Some(n) => {
            mf_text = n.saturating_sub(1).to_string();
            let idx = msg.first_index(HeaderName::MaxForwards)?;
            sp.replace_value(idx, mf_text.as_bytes());
        }
        None => {
            sp.prepend_header(b"Max-Forwards: 70");
        }
    }
    let mut remaining = plan.pop_routes;
    let mut rewritten: SmallVec<[(usize, Vec<u8>); 1]> = SmallVec::new();
    for (i, h) in msg.headers().iter().enumerate() {
        if remaining == 0 {
            break;
        }
        if h.name != HeaderName::Route {
            continue;
        }
        let values = split_commas(msg.value(h));
        if values.len() <= remaining {
            remaining -= values.len();
            sp.remove_header(i);
        } else {
            let rest = values[remaining..].join(&b", "[..]);
            remaining = 0;
            rewritten.push((i, rest));
        }
    }
    for (i, v) in &rewritten {
        sp.replace_value(*i, v);
    }
    Some(sp.to_bytes())
}
