//! The sanitize phase: what an untrusted peer could forge is removed before
//! any later phase reads the message, so verify, assess, route and tag see
//! only what callgate itself vouches for (DESIGN.md: "sanitize — strip
//! anything an untrusted peer could forge").
//!
//! * From either side: a message head with a control character that RFC
//!   3261's grammar does not allow (§25.1: header values are `TEXT-UTF8`
//!   and `LWS`; only HTAB, and CRLF ending or folding a line, may appear)
//!   is refused: a bare CR would let a PBX that ends lines on CR see a
//!   header callgate never saw. Callgate's own `X-Callgate-*` headers are
//!   removed (none crosses callgate unless callgate wrote it).
//! * From the trunk: every `verstat` claim in an identity-bearing header
//!   (every From, every P-Asserted-Identity value, P-Preferred-Identity,
//!   Remote-Party-ID) is removed wherever it is written — URI parameter,
//!   user-part parameter (3GPP TS 24.229 §7.2A.20 puts it there), header
//!   parameter, display name — leaving the rest of the URI intact; and
//!   `Reason: STIR` (RFC 8224 §6.2.2, RFC 9410) is removed: only callgate
//!   vouches for a number towards the PBX.
//! * From the PBX: `Identity` is removed (only callgate's own signature
//!   leaves towards the carrier, RFC 8224 §4); what tells a scanner what
//!   the PBX is (`Server`, `User-Agent`, `Warning`, `Organization`) is
//!   removed, and a 401/407 challenge becomes a uniform 404 (`conceal.rs`).
//!
//! * A request whose method is a standard one in another letter case
//!   (`invite`) is refused: a PBX comparing without case would take it for
//!   the real method, which the call phases never saw.
//!
//! A message with nothing to remove passes as it came (no copy); one with
//! something to remove is rewritten and parsed again, once.

use crate::config::Side;
use crate::sip::message::{Header, HeaderName, Limits, Method, ParseError, SipMessage};
use crate::sip::splice::Splice;
use crate::stir::mark::scrub_verstat;

/// Why a message was refused by the sanitize phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsafe {
    /// A control character RFC 3261 §25.1 does not allow in the head.
    #[error("control character 0x{byte:02x} at offset {offset} of the message head")]
    ControlCharacter { byte: u8, offset: usize },
    /// A method that is a standard one in another letter case (`invite`):
    /// an extension method to RFC 3261 §7.1, which is case-sensitive, but
    /// a PBX that compares without case would take it for the real one —
    /// and it would skip the call phases.
    #[error("method {0:?} differs from a standard method only in letter case")]
    MethodCase(String),
    /// The rewritten message did not parse again (cannot happen for a
    /// message that parsed once; kept as an answer instead of a panic).
    #[error("sanitized message does not parse: {0}")]
    Reparse(#[from] ParseError),
}

/// A message the sanitize phase refused, with the reason (boxed: the rare
/// path should not make the common one's result large).
#[derive(Debug)]
pub struct Refused {
    pub why: Unsafe,
    /// The message as received, to answer it.
    pub msg: Box<SipMessage>,
}

/// Sanitizes a parsed message received from `side`.
pub fn sanitize(side: Side, msg: SipMessage, limits: &Limits) -> Result<SipMessage, Refused> {
    let refused = |why, msg| Refused {
        why,
        msg: Box::new(msg),
    };
    if let Some(why) = refusal(&msg) {
        return Err(refused(why, msg));
    }
    let msg = match clean(side, &msg, limits) {
        Ok(Some(clean)) => clean,
        Ok(None) => msg,
        Err(why) => return Err(refused(why, msg)),
    };
    if side == Side::Pbx && super::conceal::is_challenge(&msg) {
        return super::conceal::uniform_refusal(&msg, limits)
            .map_err(|e| refused(Unsafe::Reparse(e), msg));
    }
    Ok(msg)
}

/// Why a message cannot go on at all, if it cannot.
fn refusal(msg: &SipMessage) -> Option<Unsafe> {
    let head_end = (msg.body_range().start as usize).min(msg.as_slice().len());
    if let Some(offset) = stray_control(&msg.as_slice()[..head_end]) {
        return Some(Unsafe::ControlCharacter {
            byte: msg.as_slice()[offset],
            offset,
        });
    }
    let m = msg
        .method_bytes()
        .filter(|_| msg.method() == Some(Method::Extension))?;
    KNOWN
        .iter()
        .any(|k| k.eq_ignore_ascii_case(m))
        .then(|| Unsafe::MethodCase(String::from_utf8_lossy(m).into_owned()))
}

/// The message without what `side` could forge; `None` when nothing had
/// to go (the message passes as it came, without a copy).
fn clean(side: Side, msg: &SipMessage, limits: &Limits) -> Result<Option<SipMessage>, Unsafe> {
    let mut removed: Vec<usize> = Vec::new();
    let mut scrubbed: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, h) in msg.headers().iter().enumerate() {
        match forged(side, msg, h) {
            Some(Forged::Header) => removed.push(i),
            Some(Forged::Verstat) => {
                if let Some(clean) = scrub_verstat(msg.value(h)) {
                    scrubbed.push((i, clean));
                }
            }
            None => {}
        }
    }
    if removed.is_empty() && scrubbed.is_empty() {
        return Ok(None);
    }
    let mut sp = Splice::new(msg);
    for i in &removed {
        sp.remove_header(*i);
    }
    for (i, v) in &scrubbed {
        sp.replace_value(*i, v);
    }
    let bytes = sp.to_bytes();
    Ok(Some(SipMessage::parse(bytes, limits)?))
}

/// The methods callgate knows by name (RFC 3261 §7.1 and extensions).
const KNOWN: [&[u8]; 14] = [
    b"INVITE",
    b"ACK",
    b"BYE",
    b"CANCEL",
    b"OPTIONS",
    b"REGISTER",
    b"PRACK",
    b"UPDATE",
    b"INFO",
    b"SUBSCRIBE",
    b"NOTIFY",
    b"REFER",
    b"MESSAGE",
    b"PUBLISH",
];

/// What is forged in one header.
enum Forged {
    /// The whole header is removed.
    Header,
    /// The header may carry `verstat` claims, removed from its value.
    Verstat,
}

fn forged(side: Side, msg: &SipMessage, h: &Header) -> Option<Forged> {
    let name = msg.slice(&h.name_range);
    match (h.name, side) {
        (HeaderName::Other, _) if crate::risk::tags::is_callgate_header(name) => {
            Some(Forged::Header)
        }
        (HeaderName::Other, Side::Trunk) if is_stir_reason(name, msg.value(h)) => {
            Some(Forged::Header)
        }
        (HeaderName::From | HeaderName::PAssertedIdentity, Side::Trunk) => Some(Forged::Verstat),
        (HeaderName::Other, Side::Trunk)
            if name.eq_ignore_ascii_case(b"P-Preferred-Identity")
                || name.eq_ignore_ascii_case(b"Remote-Party-ID") =>
        {
            Some(Forged::Verstat)
        }
        (HeaderName::Identity, Side::Pbx) => Some(Forged::Header),
        (HeaderName::Other, Side::Pbx) if super::conceal::is_revealing(name) => {
            Some(Forged::Header)
        }
        _ => None,
    }
}

/// A `Reason` header for the STIR protocol (RFC 9410).
fn is_stir_reason(name: &[u8], value: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"Reason")
        && value
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"STIR"))
}

/// A control byte other than HTAB, CR and LF, or DEL.
fn is_control(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f
}

/// Whether `head` holds a byte [`is_control`]: eight bytes at a time (a
/// word with no byte below 0x20 and none equal to 0x7f is skipped with a
/// few arithmetic operations; the others, mostly the ones holding a CRLF,
/// are looked at byte by byte).
fn has_control(head: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = head.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let x = u64::from_le_bytes(b);
        // Some byte < 0x20 (x has no byte >= 0x80 set where it matters:
        // the `!x` term excludes those), or some byte == 0x7f.
        let below = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let y = x ^ (ONES * 0x7f);
        let del = y.wrapping_sub(ONES) & !y & HIGH;
        if (below | del) != 0 && w.iter().any(|b| is_control(*b)) {
            return true;
        }
    }
    words.remainder().iter().any(|b| is_control(*b))
}

/// The offset of the first byte in a message head that RFC 3261 §25.1 does
/// not allow: a control character other than HTAB, CR and LF, or DEL —
/// unless escaped as a quoted-pair inside a quoted string (`"\\^G"`,
/// RFC 4475 §3.1.1.2) — or a CR not followed by LF. (A bare LF ends a line
/// for the parser, so it never sits inside a header value; CR and LF are
/// never valid in a quoted-pair.)
pub fn stray_control(head: &[u8]) -> Option<usize> {
    // Fast path: no control byte but line ends, and every CR starts a CRLF.
    if !has_control(head)
        && memchr::memchr_iter(b'\r', head).all(|i| head.get(i + 1) == Some(&b'\n'))
    {
        return None;
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in head.iter().enumerate() {
        let was_escaped = std::mem::take(&mut escaped);
        match b {
            b'\r' if head.get(i + 1) != Some(&b'\n') => return Some(i),
            b'\n' => quoted = false,
            b'\t' | b'\r' => {}
            b if is_control(b) && !(quoted && was_escaped) => return Some(i),
            b'\\' if quoted && !was_escaped => escaped = true,
            b'"' if !was_escaped => quoted = !quoted,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stir::mark::scrub_verstat;

    fn msg(headers: &str) -> SipMessage {
        let text = format!(
            "INVITE sip:+15550100@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n{headers}To: <sip:+15550100@pbx>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        match SipMessage::parse(bytes::Bytes::from(text), &Limits::default()) {
            Ok(m) => m,
            Err(e) => panic!("test message does not parse: {e}"),
        }
    }

    fn text(m: &SipMessage) -> String {
        String::from_utf8_lossy(m.as_slice()).into_owned()
    }

    fn clean(side: Side, headers: &str) -> String {
        match sanitize(side, msg(headers), &Limits::default()) {
            Ok(m) => text(&m),
            Err(r) => panic!("refused: {}", r.why),
        }
    }

    #[test]
    fn verstat_is_removed_from_every_position_leaving_the_uri_intact() {
        let cases: [(&[u8], &[u8]); 8] = [
            (
                b"<sip:+14155550206;verstat=TN-Validation-Passed@carrier.example;user=phone>;tag=a",
                b"<sip:+14155550206@carrier.example;user=phone>;tag=a",
            ),
            (
                b"<sip:+1415@c;user=phone;VerStat=TN-Validation-Passed-A>;tag=a",
                b"<sip:+1415@c;user=phone>;tag=a",
            ),
            (
                b"<sip:+1415@c>;tag=a;verstat=TN-Validation-Passed",
                b"<sip:+1415@c>;tag=a",
            ),
            (
                b"\"verstat=TN-Validation-Passed-A\" <sip:+1415@c>;tag=a",
                b"\"\" <sip:+1415@c>;tag=a",
            ),
            (
                b"<tel:+1415;verstat = TN-Validation-Passed>",
                b"<tel:+1415>",
            ),
            (
                b"<sip:+1415@c?verstat=TN-Validation-Passed&x=1>",
                b"<sip:+1415@c?x=1>",
            ),
            (
                b"<sip:+1415@c?verstat=TN-Validation-Passed>",
                b"<sip:+1415@c>",
            ),
            (
                b"<sip:a@c;verstat=x;verstat=y>, <tel:+1;verstat=z>",
                b"<sip:a@c>, <tel:+1>",
            ),
        ];
        for (dirty, want) in cases {
            assert_eq!(
                scrub_verstat(dirty).as_deref(),
                Some(want),
                "{}",
                String::from_utf8_lossy(dirty)
            );
        }
        assert_eq!(scrub_verstat(b"<sip:+1415@c;user=phone>;tag=a"), None);
    }

    #[test]
    fn trunk_claims_are_removed_from_every_identity_header() {
        let out = clean(
            Side::Trunk,
            "From: <sip:+1415;verstat=TN-Validation-Passed@carrier.example;user=phone>;tag=f\r\n\
             P-Asserted-Identity: <sip:+1415@c;verstat=TN-Validation-Passed>\r\n\
             P-Asserted-Identity: <sip:+1416@c;verstat=TN-Validation-Passed>, <tel:+1416;verstat=TN-Validation-Passed>\r\n\
             P-Preferred-Identity: <sip:+1417@c;verstat=TN-Validation-Passed>\r\n\
             Remote-Party-ID: \"verstat=TN-Validation-Passed-A\" <sip:+1418@c>;party=calling\r\n\
             X-Callgate-Risk: low;score=0\r\n\
             x-callgate-restrict: none\r\n\
             Reason: STIR;cause=438\r\n\
             Reason: SIP;cause=200\r\n",
        );
        assert!(!out.to_ascii_lowercase().contains("verstat"), "{out}");
        assert!(!out.to_ascii_lowercase().contains("x-callgate"), "{out}");
        assert!(!out.contains("STIR"), "{out}");
        assert!(out.contains("Reason: SIP;cause=200\r\n"), "{out}");
        assert!(
            out.contains("From: <sip:+1415@carrier.example;user=phone>;tag=f\r\n"),
            "{out}"
        );
        assert!(
            out.contains("P-Asserted-Identity: <sip:+1416@c>, <tel:+1416>\r\n"),
            "{out}"
        );
    }

    #[test]
    fn pbx_identity_and_our_headers_are_removed_but_its_verstat_kept() {
        let out = clean(
            Side::Pbx,
            "From: <sip:+1415@c;verstat=TN-Validation-Passed>;tag=f\r\nIdentity: abc;info=<https://x>\r\nX-Callgate-Risk: low\r\n",
        );
        assert!(!out.contains("Identity: abc"), "{out}");
        assert!(!out.contains("X-Callgate"), "{out}");
        assert!(out.contains("verstat=TN-Validation-Passed"), "{out}");
    }

    #[test]
    fn the_word_at_a_time_scan_finds_every_control_byte_anywhere() {
        for b in 0..=255u8 {
            for at in 0..19 {
                let mut buf = [b'a'; 19];
                buf[at] = b;
                assert_eq!(has_control(&buf), is_control(b), "byte {b:#04x} at {at}");
            }
        }
        // Bytes above 0x80 around a control byte do not hide it.
        assert!(has_control(&[
            0xff, 0x80, 0x01, 0xfe, 0xc3, 0xa9, 0x20, 0x7e
        ]));
        assert!(!has_control("Caf\u{e9}\t\r\n\u{1f600}  ok".as_bytes()));
    }

    #[test]
    fn a_clean_message_passes_without_a_copy() {
        let m = msg("From: <sip:+1415@c>;tag=f\r\n");
        let ptr = m.as_slice().as_ptr();
        match sanitize(Side::Trunk, m, &Limits::default()) {
            Ok(out) => assert_eq!(out.as_slice().as_ptr(), ptr),
            Err(r) => panic!("refused: {}", r.why),
        }
    }

    #[test]
    fn control_characters_in_the_head_are_refused() {
        for bad in [
            "Subject: x\rX-Callgate-Risk: low;score=0\r\n",
            "Subject: a\0b\r\n",
            "Subject: a\x1bb\r\n",
            "Subject: a\x7fb\r\n",
        ] {
            let r = sanitize(
                Side::Trunk,
                msg(&format!("From: <sip:a@b>;tag=f\r\n{bad}")),
                &Limits::default(),
            );
            assert!(
                matches!(
                    &r,
                    Err(Refused {
                        why: Unsafe::ControlCharacter { .. },
                        ..
                    })
                ),
                "{bad:?}: {r:?}"
            );
        }
        let lower = msg("From: <sip:a@b>;tag=f\r\n");
        let text =
            String::from_utf8_lossy(lower.as_slice()).replacen("INVITE sip", "invite sip", 1);
        let lower = SipMessage::parse(bytes::Bytes::from(text), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            sanitize(Side::Trunk, lower, &Limits::default()),
            Err(Refused {
                why: Unsafe::MethodCase(_),
                ..
            })
        ));
        // A quoted-pair may escape a control character (RFC 3261 §25.1,
        // RFC 4475 intmeth), but not outside quotes and never CR.
        let escaped = msg("From: \"BEL:\\\x07 NUL:\\\0\" <sip:a@b>;tag=f\r\n");
        assert!(sanitize(Side::Trunk, escaped, &Limits::default()).is_ok());
        for bad in ["Subject: a\\\x07\r\n", "Subject: \"a\\\rb\"\r\n"] {
            let m = msg(&format!("From: <sip:a@b>;tag=f\r\n{bad}"));
            assert!(
                sanitize(Side::Trunk, m, &Limits::default()).is_err(),
                "{bad:?}"
            );
        }
        // HTAB and folded lines are allowed (RFC 3261 §7.3.1).
        let ok = msg("From: <sip:a@b>;tag=f\r\nSubject: a\tb\r\n  folded\r\n");
        assert!(sanitize(Side::Trunk, ok, &Limits::default()).is_ok());
    }
}
