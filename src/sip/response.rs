//! Building responses to requests (RFC 3261 §8.2.6, §16.7 ... §16.8).

use std::net::SocketAddr;

use bytes::Bytes;

use crate::sip::header::HeaderName;
use crate::sip::message::SipMessage;
use crate::sip::scan;
use crate::sip::via::Via;

fn status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(format!("SIP/2.0 {status} {reason}\r\n").as_bytes());
}

fn finish(out: &mut Vec<u8>, extra: &[&[u8]]) {
    for e in extra {
        out.extend_from_slice(e);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

/// Builds a response to `req`: copies every Via (in order), From, To,
/// Call-ID and CSeq, adds `extra` header lines (no CRLF) and
/// `Content-Length: 0`.
///
/// * **To tag** (RFC 3261 §8.2.6.2): a response other than 100 Trying to a
///   request whose To has no tag gets one: `to_tag` when the caller holds
///   one (a transaction's), else [`stateless_tag`] of the request, which is
///   the same for every retransmission of it.
/// * **received / rport** (RFC 3261 §18.2.1, RFC 3581 §4): when `source`
///   (the address the request came from) is given, the top Via gets
///   `received=<source ip>` unless its sent-by host already is that address
///   or it already carries one, and an `rport` without value is filled
///   with the source port; the response then reaches a client behind NAT.
pub fn build_response(
    req: &SipMessage,
    status: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
    source: Option<SocketAddr>,
    extra: &[&[u8]],
) -> Bytes {
    let mut out = Vec::with_capacity(512);
    status_line(&mut out, status, reason);
    let derived;
    let tag = match (req.to_tag(), to_tag) {
        (Some(_), _) => None,
        _ if status <= 100 => None,
        (None, Some(tag)) => Some(tag),
        (None, None) => {
            derived = stateless_tag(req);
            Some(derived.as_bytes())
        }
    };
    let mut top_via = true;
    for h in req.headers() {
        match h.name {
            HeaderName::Via if top_via => {
                top_via = false;
                match source.and_then(|s| via_with_source(req.value(h), s)) {
                    Some(v) => {
                        out.extend_from_slice(b"Via: ");
                        out.extend_from_slice(&v);
                        out.extend_from_slice(b"\r\n");
                    }
                    None => out.extend_from_slice(req.slice(&h.line)),
                }
            }
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                out.extend_from_slice(req.slice(&h.line))
            }
            HeaderName::To => match tag {
                Some(tag) => {
                    out.extend_from_slice(b"To: ");
                    out.extend_from_slice(req.value(h));
                    out.extend_from_slice(b";tag=");
                    out.extend_from_slice(tag);
                    out.extend_from_slice(b"\r\n");
                }
                None => out.extend_from_slice(req.slice(&h.line)),
            },
            _ => {}
        }
    }
    finish(&mut out, extra);
    Bytes::from(out)
}

/// The To tag of a response callgate forms without a transaction: a keyed
/// hash of the request's Call-ID, From tag and top Via branch, so every
/// retransmission of one request gets the same tag (RFC 3261 §8.2.6.2) and
/// different requests get different ones. The key is random per process:
/// the tag says nothing about callgate or the request to whoever reads it.
pub fn stateless_tag(req: &SipMessage) -> String {
    use std::hash::{Hash, Hasher};
    static KEY: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    let (k0, k1) = *KEY.get_or_init(|| (fastrand::u64(..), fastrand::u64(..)));
    let branch = req.top_via().ok().and_then(|v| v.branch);
    let mut a = std::collections::hash_map::DefaultHasher::new();
    let mut b = std::collections::hash_map::DefaultHasher::new();
    for (h, k) in [(&mut a, k0), (&mut b, k1)] {
        k.hash(h);
        req.call_id().hash(h);
        req.from_tag().hash(h);
        branch.hash(h);
    }
    format!("cg{:016x}{:08x}", a.finish(), b.finish() as u32)
}

/// The top Via value (`value` is the first Via header's, which may list
/// several) with `received` and `rport` filled from `source`; `None` when
/// nothing needs adding or the value does not parse (then it is copied).
fn via_with_source(value: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
    let parts = scan::split_top(value, b',')?;
    let first = scan::trim(parts.first()?);
    let via = Via::parse(first).ok()?;
    let ip = source.ip().to_canonical();
    let ip_text = ip.to_string();
    let host = via
        .host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(via.host);
    let host_is_source = std::str::from_utf8(host)
        .ok()
        .and_then(|h| h.parse::<std::net::IpAddr>().ok())
        .is_some_and(|h| h.to_canonical() == ip);
    let add_received = via.received.is_none() && (!host_is_source || via.rport.is_some());
    let fill_rport = via.rport == Some(None);
    if !add_received && !fill_rport {
        return None;
    }
    let mut v = Vec::with_capacity(value.len() + 48);
    if fill_rport {
        // Rewrite the parameter section with `rport=<port>` in place of the
        // bare `rport`, keeping every other parameter as written.
        let head = &first[..first.len() - via.params.len()];
        v.extend_from_slice(head.strip_suffix(b";").unwrap_or(head));
        for p in via.params.split(|b| *b == b';').filter(|p| !p.is_empty()) {
            v.push(b';');
            if scan::trim(p).eq_ignore_ascii_case(b"rport") {
                v.extend_from_slice(format!("rport={}", source.port()).as_bytes());
            } else {
                v.extend_from_slice(p);
            }
        }
    } else {
        v.extend_from_slice(first);
    }
    if add_received {
        v.extend_from_slice(b";received=");
        v.extend_from_slice(ip_text.as_bytes());
    }
    for rest in &parts[1..] {
        v.extend_from_slice(b",");
        v.extend_from_slice(rest);
    }
    Some(v)
}

/// Best effort for bytes that failed [`SipMessage::parse`]: if the start line
/// is a request line and Via, From, To, Call-ID and CSeq lines can be found,
/// returns a response with `status`/`reason` copying them; else `None`
/// (the message is then dropped, RFC 4475 §3.1.2).
pub fn response_to_unparseable(raw: &[u8], status: u16, reason: &str) -> Option<Bytes> {
    let raw = &raw[crate::sip::message::keepalive_prefix(raw)..];
    let mut lines = raw
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let method_end = first.iter().position(|b| *b == b' ')?;
    if first.starts_with(b"SIP/")
        || !scan::is_token(&first[..method_end])
        || first.starts_with(b"ACK ")
    {
        return None;
    }
    let mut wanted: [Vec<&[u8]>; 5] = Default::default();
    for line in lines.take(256) {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let slot = match HeaderName::from_bytes(scan::trim(&line[..colon])) {
            HeaderName::Via => 0,
            HeaderName::From => 1,
            HeaderName::To => 2,
            HeaderName::CallId => 3,
            HeaderName::CSeq => 4,
            _ => continue,
        };
        wanted[slot].push(line);
    }
    if wanted.iter().any(Vec::is_empty) {
        return None;
    }
    let mut out = Vec::with_capacity(512);
    status_line(&mut out, status, reason);
    for group in &wanted {
        for line in group {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    finish(&mut out, &[]);
    Some(Bytes::from(out))
}

/// Standard reason phrase for a status code (RFC 3261 §21), "Unknown" else.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        603 => "Decline",
        _ => "Unknown",
    }
}

/// A message that cannot be acted on: why, and the response to send back
/// (with its status) when one can be formed.
#[derive(Debug)]
pub struct Unusable {
    pub error: crate::sip::message::ParseError,
    pub answer: Option<(Bytes, u16)>,
}

/// Parses and validates a received message (RFC 3261 §7, §8.1.1). A
/// request that fails gets 400 (505 for the version) when a response can
/// be formed; a response or an ACK that fails is only dropped.
pub fn parse_valid(
    data: Bytes,
    limits: &crate::sip::message::Limits,
    source: Option<SocketAddr>,
) -> Result<SipMessage, Unusable> {
    let msg = match SipMessage::parse(data.clone(), limits) {
        Ok(m) => m,
        Err(error) => {
            let status = error.status();
            let answer =
                response_to_unparseable(&data, status, reason_phrase(status)).map(|r| (r, status));
            return Err(Unusable { error, answer });
        }
    };
    match msg.validate() {
        Ok(()) => Ok(msg),
        Err(error) => {
            let status = error.status();
            let answer = (msg.is_request()
                && msg.method() != Some(crate::sip::method::Method::Ack))
            .then(|| {
                (
                    build_response(&msg, status, reason_phrase(status), None, source, &[]),
                    status,
                )
            });
            Err(Unusable { error, answer })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(via: &str, to: &str) -> SipMessage {
        let text = format!(
            "OPTIONS sip:+15550100@192.0.2.9 SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP 192.0.2.77;branch=z9hG4bKb\r\nFrom: <sip:a@192.0.2.1>;tag=f1\r\nTo: {to}\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        SipMessage::parse(Bytes::from(text), &Default::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn text(b: &Bytes) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn local_answer_gets_a_to_tag_stable_across_retransmissions() {
        let req = request("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa", "<sip:+15550100@x>");
        let a = text(&build_response(&req, 404, "Not Found", None, None, &[]));
        let b = text(&build_response(&req, 404, "Not Found", None, None, &[]));
        assert!(a.contains("To: <sip:+15550100@x>;tag=cg"), "{a}");
        assert_eq!(a, b, "a retransmission gets the same tag");
        let other = request(
            "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKother",
            "<sip:+15550100@x>",
        );
        let c = text(&build_response(&other, 404, "Not Found", None, None, &[]));
        assert_ne!(a, c, "another request gets another tag");
        // 100 Trying carries none (RFC 3261 §8.2.6.2); a tagged To is kept.
        let t = text(&build_response(&req, 100, "Trying", None, None, &[]));
        assert!(t.contains("To: <sip:+15550100@x>\r\n"), "{t}");
        let tagged = request("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa", "<sip:b@x>;tag=t9");
        let r = text(&build_response(&tagged, 481, "X", None, None, &[]));
        assert!(r.contains("To: <sip:b@x>;tag=t9\r\n"), "{r}");
    }

    #[test]
    fn top_via_gets_received_and_rport() {
        let src: SocketAddr = "198.51.100.7:40123"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let req = request(
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport",
            "<sip:b@x>",
        );
        let r = text(&build_response(
            &req,
            405,
            "Method Not Allowed",
            None,
            Some(src),
            &[],
        ));
        assert!(
            r.contains("Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport=40123;received=198.51.100.7\r\nVia: SIP/2.0/UDP 192.0.2.77;branch=z9hG4bKb\r\n"),
            "{r}"
        );
        // Without rport: received only when sent-by is not the source.
        let req = request("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKa", "<sip:b@x>");
        let r = text(&build_response(
            &req,
            403,
            "Forbidden",
            None,
            Some(src),
            &[],
        ));
        assert!(
            r.contains("branch=z9hG4bKa;received=198.51.100.7\r\n"),
            "{r}"
        );
        let same: SocketAddr = "10.0.0.5:5060".parse().unwrap_or_else(|e| panic!("{e}"));
        let r = text(&build_response(
            &req,
            403,
            "Forbidden",
            None,
            Some(same),
            &[],
        ));
        assert!(
            r.contains("Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKa\r\n"),
            "{r}"
        );
    }
}
