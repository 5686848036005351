//! Hiding the PBX from the trunk. Everything the PBX sends goes toward the
//! carrier, and a scanner on the carrier's side reads it: svmap fingerprints
//! the PBX by its `Server`/`User-Agent`, svwar tells existing extensions
//! from missing ones by the PBX's 401/407 challenge, and svcrack needs that
//! challenge to guess a password. So, for every message from the PBX:
//!
//! * `Server`, `User-Agent`, `Warning` (RFC 3261 §20.43: it names the
//!   warning's host and often the product) and `Organization` are removed
//!   (in the sanitize phase's single rewrite, `sanitize.rs`);
//! * a 401 or 407 response — a challenge a carrier never answers, since a
//!   carrier does not authenticate to the centre — is replaced by
//!   `404 Not Found` without `WWW-Authenticate`/`Proxy-Authenticate`: the
//!   answer callgate gives to any number it does not serve
//!   (`[trunk] numbers`), so an extension that exists and challenges looks
//!   like one that does not exist.
//!
//! What cannot be hidden by a record-routing proxy: the PBX's `Contact`
//! (the remote target of the dialog, RFC 3261 §12.1.2: the carrier sends
//! in-dialog requests to it, through callgate's Record-Route) and the
//! `Record-Route`/`Via` entries the PBX adds, and the To tag it chooses.
//! Replacing those needs a B2BUA (two dialogs joined); docs/operations.md
//! says so.

use crate::sip::header::HeaderName;
use crate::sip::message::{Limits, ParseError, SipMessage};

/// Headers that tell a reader what the PBX is (product, version, host).
const REVEALING: [&[u8]; 4] = [b"Server", b"User-Agent", b"Warning", b"Organization"];

/// Whether a header of this name is removed from what the PBX sends.
pub fn is_revealing(name: &[u8]) -> bool {
    REVEALING.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// Whether `msg` is a challenge (401/407) that must not reach the trunk.
pub fn is_challenge(msg: &SipMessage) -> bool {
    matches!(msg.status(), Some(401 | 407))
}

/// The challenge `msg` as the uniform `404 Not Found`: the same headers but
/// for the challenges themselves, no body.
pub fn uniform_refusal(msg: &SipMessage, limits: &Limits) -> Result<SipMessage, ParseError> {
    let mut out = Vec::with_capacity(msg.as_slice().len());
    out.extend_from_slice(b"SIP/2.0 404 Not Found\r\n");
    for h in msg.headers() {
        let name = msg.slice(&h.name_range);
        let challenge = name.eq_ignore_ascii_case(b"WWW-Authenticate")
            || name.eq_ignore_ascii_case(b"Proxy-Authenticate");
        if challenge || h.name == HeaderName::ContentLength || h.name == HeaderName::ContentType {
            continue;
        }
        out.extend_from_slice(msg.slice(&h.line));
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    SipMessage::parse(bytes::Bytes::from(out), limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_becomes_the_uniform_404() {
        let challenge = "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\nFrom: <sip:a@b>;tag=f\r\nTo: <sip:201@c>;tag=p\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nWWW-Authenticate: Digest realm=\"pbx\", nonce=\"n\"\r\nProxy-Authenticate: Digest realm=\"pbx\", nonce=\"n\"\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
        let msg = SipMessage::parse(bytes::Bytes::from(challenge), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(is_challenge(&msg));
        let out = uniform_refusal(&msg, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(out.as_slice()).into_owned();
        assert_eq!(
            text,
            "SIP/2.0 404 Not Found\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\nFrom: <sip:a@b>;tag=f\r\nTo: <sip:201@c>;tag=p\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(
            is_revealing(b"server") && is_revealing(b"User-Agent") && !is_revealing(b"Contact")
        );
    }
}
