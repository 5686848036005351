//! Building responses to requests (RFC 3261 §8.2.6, §16.7 ... §16.8).

use bytes::Bytes;

use crate::sip::header::HeaderName;
use crate::sip::message::SipMessage;
use crate::sip::scan;

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

/// Builds a response to `req`: copies every Via (in order), From, To (adding
/// `;tag=to_tag` when given and the To has no tag), Call-ID and CSeq, adds
/// `extra` header lines (no CRLF) and `Content-Length: 0`.
pub fn build_response(
    req: &SipMessage,
    status: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
    extra: &[&[u8]],
) -> Bytes {
    let mut out = Vec::with_capacity(512);
    status_line(&mut out, status, reason);
    let has_tag = req.to_tag().is_some();
    for h in req.headers() {
        match h.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                out.extend_from_slice(req.slice(&h.line))
            }
            HeaderName::To => match to_tag {
                Some(tag) if !has_tag => {
                    out.extend_from_slice(b"To: ");
                    out.extend_from_slice(req.value(h));
                    out.extend_from_slice(b";tag=");
                    out.extend_from_slice(tag);
                    out.extend_from_slice(b"\r\n");
                }
                _ => out.extend_from_slice(req.slice(&h.line)),
            },
            _ => {}
        }
    }
    finish(&mut out, extra);
    Bytes::from(out)
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
                    build_response(&msg, status, reason_phrase(status), None, &[]),
                    status,
                )
            });
            Err(Unusable { error, answer })
        }
    }
}
