//! Building responses to requests (RFC 3261 §8.2.6, §16.7 ... §16.8).

use bytes::Bytes;

use crate::sip::message::SipMessage;

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
    let _ = (req, status, reason, to_tag, extra);
    todo!()
}

/// Best effort for bytes that failed [`SipMessage::parse`]: if the start line
/// is a request line and Via, From, To, Call-ID and CSeq lines can be found,
/// returns a response with `status`/`reason` copying them; else `None`
/// (the message is then dropped, RFC 4475 §3.1.2).
pub fn response_to_unparseable(raw: &[u8], status: u16, reason: &str) -> Option<Bytes> {
    let _ = (raw, status, reason);
    todo!()
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
