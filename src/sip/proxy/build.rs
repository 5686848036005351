//! Requests and header lines the proxy writes itself: its Via and
//! Record-Route, CANCEL (RFC 3261 §9.1), the ACK for a non-2xx final
//! response (§17.1.1.3), and OPTIONS health probes.

use std::fmt::Write;
use std::net::SocketAddr;

use bytes::Bytes;

use super::SideSettings;
use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::side::{Side, Transport};

/// How callgate names itself on one side: the host written in Via and
/// Record-Route and the listening port per transport.
#[derive(Debug, Clone)]
pub struct LocalSide {
    pub side: Side,
    /// Host as written in headers (IPv6 in brackets).
    pub host: String,
    pub udp: Option<u16>,
    pub tcp: Option<u16>,
    pub tls: Option<u16>,
}

impl LocalSide {
    /// How callgate names itself on the side `cfg` describes.
    pub fn from_config(cfg: &SideSettings) -> LocalSide {
        let first = cfg.udp.or(cfg.tcp).or(cfg.tls);
        let host = match (&cfg.advertise, first) {
            (Some(a), _) => a.clone(),
            (None, Some(SocketAddr::V6(v6))) => format!("[{}]", v6.ip()),
            (None, Some(a)) => a.ip().to_string(),
            (None, None) => "127.0.0.1".to_owned(),
        };
        LocalSide {
            side: cfg.side,
            host,
            udp: cfg.udp.map(|a| a.port()),
            tcp: cfg.tcp.map(|a| a.port()),
            tls: cfg.tls.map(|a| a.port()),
        }
    }

    /// Listening port for a transport, falling back to any listener.
    pub fn port(&self, t: Transport) -> u16 {
        let own = match t {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls,
        };
        own.or(self.udp).or(self.tcp).or(self.tls).unwrap_or(5060)
    }

    /// Whether `host:port` names this side.
    pub fn is_me(&self, host: &[u8], port: Option<u16>) -> bool {
        if !host.eq_ignore_ascii_case(self.host.as_bytes()) {
            return false;
        }
        let port = port.unwrap_or(5060);
        [self.udp, self.tcp, self.tls].contains(&Some(port)) || (port == 5061 && self.tls.is_some())
    }

    /// Our Via value for a request leaving this side (RFC 3261 §16.6 step 8),
    /// asking for rport (RFC 3581 §3).
    pub fn via_line(&self, t: Transport, branch: &str) -> String {
        format!(
            "Via: SIP/2.0/{} {}:{};branch={branch};rport",
            t.via_token(),
            self.host,
            self.port(t)
        )
    }

    /// Our Record-Route entry on this side (§16.6 step 4), loose routing.
    /// For a sips request (`secure`) it is a sips URI on the side's TLS
    /// port, as §16.6 step 4 requires, when the side listens on TLS; a
    /// side without a TLS listener can only name its own transport.
    pub fn record_route_line(&self, t: Transport, secure: bool) -> String {
        if let (true, Some(port)) = (secure, self.tls) {
            return format!("Record-Route: <sips:{}:{port};lr>", self.host);
        }
        format!(
            "Record-Route: <sip:{}:{};transport={};lr>",
            self.host,
            self.port(t),
            t.param()
        )
    }
}

/// Copies the lines of a request that a hop-by-hop request of the same
/// transaction reuses (§9.1, §17.1.1.3): Request-URI, top Via, Route set,
/// From, Call-ID, CSeq number. `to` replaces the To value when given.
fn in_transaction_request(req: &SipMessage, method: &str, to: Option<&[u8]>) -> Option<Bytes> {
    let ruri = req.request_uri()?;
    let via_idx = req.first_index(HeaderName::Via)?;
    let top_via = req.values(HeaderName::Via).next()?;
    let cseq = req.cseq().ok()?;
    let mut s = Vec::with_capacity(512);
    s.extend_from_slice(method.as_bytes());
    s.push(b' ');
    s.extend_from_slice(ruri);
    s.extend_from_slice(b" SIP/2.0\r\nVia: ");
    s.extend_from_slice(top_via);
    s.extend_from_slice(b"\r\nMax-Forwards: 70\r\n");
    for (i, h) in req.headers().iter().enumerate() {
        let copy = match h.name {
            HeaderName::Route | HeaderName::From | HeaderName::CallId => true,
            HeaderName::To => to.is_none(),
            _ => false,
        };
        if copy && i != via_idx {
            s.extend_from_slice(req.slice(&h.line));
        }
    }
    if let Some(to) = to {
        s.extend_from_slice(b"To: ");
        s.extend_from_slice(to);
        s.extend_from_slice(b"\r\n");
    }
    let mut tail = String::with_capacity(48);
    let _ = write!(
        tail,
        "CSeq: {} {method}\r\nContent-Length: 0\r\n\r\n",
        cseq.seq
    );
    s.extend_from_slice(tail.as_bytes());
    Some(Bytes::from(s))
}

/// CANCEL for a forwarded INVITE (RFC 3261 §9.1): same Request-URI, top Via
/// (so the same branch), Route set, From, To, Call-ID and CSeq number.
pub fn cancel_for(forwarded_invite: &SipMessage) -> Option<Bytes> {
    in_transaction_request(forwarded_invite, "CANCEL", None)
}

/// ACK for a non-2xx final response to a forwarded INVITE (§17.1.1.3): the
/// To of the response (with its tag), the rest from the INVITE.
pub fn ack_for(forwarded_invite: &SipMessage, response: &SipMessage) -> Option<Bytes> {
    in_transaction_request(forwarded_invite, "ACK", response.first(HeaderName::To))
}

/// An OPTIONS health probe to a target (RFC 3261 §11).
pub fn options_probe(
    local: &LocalSide,
    t: Transport,
    target_uri: &str,
    branch: &str,
    seq: u32,
    tag: &str,
    call_id: &str,
) -> Bytes {
    let uri = target_uri.split(';').next().unwrap_or(target_uri);
    let s = format!(
        "OPTIONS {uri} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\nFrom: <sip:callgate@{host}>;tag={tag}\r\nTo: <{uri}>\r\nCall-ID: {call_id}@callgate\r\nCSeq: {seq} OPTIONS\r\nUser-Agent: callgate\r\nContent-Length: 0\r\n\r\n",
        via = local.via_line(t, branch),
        host = local.host,
    );
    Bytes::from(s)
}
