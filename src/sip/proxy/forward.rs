//! Forwarding a request (RFC 3261 §16.6): one client transaction per
//! attempt, over the planned hop or the targets in failover order, with
//! Timer C and the no-response timer set; and the forwarded copy itself.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use smallvec::SmallVec;

use super::branch;
use super::request::client_key;
use super::{ClientEntry, ClientKind, Edits, NextHop, Outgoing, Peer, ProxyCore};
use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::method::Method;
use crate::sip::side::Transport;
use crate::sip::splice::Splice;
use crate::sip::transaction::{ClientTransaction, TxKind};
use crate::sip::via::Via;

impl ProxyCore {
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
            NextHop::Targets(order) => order.get(fwd.attempts).map(|(addr, transport)| Peer {
                side: fwd.out_side,
                transport: *transport,
                addr: *addr,
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
            secure: fwd.secure,
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
    /// A sips request: Record-Route entries are sips URIs (RFC 3261 §16.6
    /// step 4).
    pub secure: bool,
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
        sp.prepend_header(
            out_local
                .record_route_line(out_transport, plan.secure)
                .as_bytes(),
        );
        sp.prepend_header(
            in_local
                .record_route_line(from.transport, plan.secure)
                .as_bytes(),
        );
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
