//! Where a request goes next (RFC 3261 §16.4 route information
//! preprocessing, §16.5 determining request targets): past the leading
//! Route entries that name callgate, along the dialog's hop, the next Route
//! entry or the Request-URI (an IP address, no DNS), or to the outgoing
//! side's targets in failover order — and only to a peer the outgoing
//! side's ACL admits.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use smallvec::SmallVec;

use super::{Forwarding, NextHop, Peer, ProxyCore, Routing};
use crate::sip::message::HeaderName;
use crate::sip::method::Method;
use crate::sip::side::{Side, Transport};
use crate::sip::uri::{NameAddr, Uri};

/// Resolves a URI to a next hop: IP literal host, port (5060, 5061 for TLS)
/// and the `transport` parameter. A sips URI is always TLS: its
/// `transport=tcp` means TLS over TCP (RFC 5630 deprecates
/// `transport=tls`), and `transport=udp` cannot carry it (TLS needs a
/// stream), so it has no hop. No DNS.
fn hop_of(uri: &Uri<'_>) -> Option<(SocketAddr, Transport)> {
    let sips = is_sips(uri);
    let transport = match uri.param("transport") {
        Some(t) => Transport::from_token(t)?,
        None if sips => Transport::Tls,
        None => Transport::Udp,
    };
    let transport = match (sips, transport) {
        (false, t) => t,
        (true, Transport::Tcp | Transport::Tls) => Transport::Tls,
        (true, Transport::Udp) => return None,
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

/// Whether a URI is a sips URI (RFC 3261 §19.1): every hop to it must be
/// TLS.
fn is_sips(uri: &Uri<'_>) -> bool {
    uri.scheme.eq_ignore_ascii_case(b"sips")
}

/// The next hop a URI names (IP literal host, port, `transport`; see
/// [`hop_of`]), for the pipeline's dialog table.
pub fn next_hop(uri: &[u8]) -> Option<(SocketAddr, Transport)> {
    hop_of(&Uri::parse(uri).ok()?)
}

/// The answer to a sips request that callgate cannot forward over TLS.
///
/// 480 rather than 416: callgate understands the sips scheme (416 says the
/// scheme is unknown, which invites the sender to retry with `sip:`, the
/// downgrade RFC 5630 forbids); what is missing is a TLS path to the next
/// hop, a condition of this deployment that may change, which 480
/// (Temporarily Unavailable, RFC 3261 §21.4.18) says. RFC 3261 §26.2.2:
/// a request to a sips URI must not be forwarded over a non-TLS hop.
pub const NO_SECURE_HOP: (u16, &str) = (480, "Temporarily Unavailable (no TLS hop for a sips URI)");

impl ProxyCore {
    /// Decides where a new request goes (§16.4 route processing, §16.5
    /// target determination).
    pub(super) fn plan_route(
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
        // A sips Request-URI must reach its target over TLS on every hop
        // (RFC 3261 §26.2.2): never downgraded to UDP or TCP here.
        let secure = msg
            .request_uri()
            .and_then(|u| Uri::parse(u).ok())
            .is_some_and(|u| is_sips(&u));
        let hop = if let Routing::InDialog(Some(hop)) = routing {
            // The dialog's own next hop (§12.2.1.1), still only to an
            // admitted peer.
            NextHop::Fixed(self.admitted_hop(out_side, hop)?)
        } else if let Some(next) = routes.get(pop) {
            NextHop::Fixed(self.fixed_hop(
                out_side,
                NameAddr::parse(next).map(|na| na.uri).unwrap_or(next),
            )?)
        } else if initial && secure {
            let order = self.targets[out_side.index()].secure_order();
            if order.is_empty() {
                tracing::warn!(
                    side = out_side.as_str(),
                    "sips request but the side has no TLS target: refused (never downgraded)"
                );
                return Err(NO_SECURE_HOP);
            }
            NextHop::Targets(self.targets[out_side.index()].hops(&order))
        } else if initial {
            let set = &self.targets[out_side.index()];
            NextHop::Targets(set.hops(&set.order()))
        } else {
            NextHop::Fixed(self.fixed_hop(out_side, msg.request_uri().unwrap_or_default())?)
        };
        if let NextHop::Fixed(p) = &hop {
            if secure && p.transport != Transport::Tls {
                tracing::warn!(to = %p.addr, transport = ?p.transport, "sips request whose next hop is not TLS: refused (never downgraded)");
                return Err(NO_SECURE_HOP);
            }
        }
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
            secure,
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
    pub(super) fn own_leading_routes(&self, routes: &[&[u8]]) -> usize {
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
    pub(super) fn fixed_hop(
        &self,
        out_side: Side,
        uri: &[u8],
    ) -> Result<Peer, (u16, &'static str)> {
        let uri = Uri::parse(uri).map_err(|_| (400, "Bad Request (unroutable URI)"))?;
        if is_sips(&uri)
            && uri.param("transport").and_then(Transport::from_token) == Some(Transport::Udp)
        {
            return Err(NO_SECURE_HOP);
        }
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
    pub(super) fn admitted_hop(
        &self,
        out_side: Side,
        hop: Peer,
    ) -> Result<Peer, (u16, &'static str)> {
        if !self.settings.sides[out_side.index()].admits(hop.addr.ip()) {
            tracing::info!(addr = %hop.addr, side = out_side.as_str(), "refusing to relay to a destination outside the side's ACL");
            return Err((403, "Forbidden (destination not a configured peer)"));
        }
        Ok(Peer {
            side: out_side,
            ..hop
        })
    }
}
