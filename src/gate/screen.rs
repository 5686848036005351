//! The screen phase: what a carrier may ask outside a dialog. A trunk is a
//! carrier, not phones; scanning and toll-fraud tools (sipvicious's svmap,
//! svwar and svcrack, sipcli, …) probe a PBX through its SBC by sending what
//! a carrier never sends and reading how the answers differ. Each rule
//! below takes one of those probes away; every answer is one callgate forms
//! itself, so nothing of the PBX shows.
//!
//! In order, for each request from the trunk outside a dialog (after
//! sanitize, on the parsed message):
//!
//! 1. **Scanner signatures** (`[trunk] scanners`, default `drop`): a
//!    User-Agent of a known tool, or the From/To shapes sipvicious writes
//!    (From display name `sipvicious`; From equal to To with the display name
//!    equal to the user, svwar's probe): no answer at all, or 403.
//! 2. **Methods** (`[trunk] methods`): any other method gets 405 Method Not
//!    Allowed with `Allow` (RFC 3261 §8.2.1). REGISTER is refused here, so
//!    svcrack's digest guesses and svwar's REGISTER probe never reach the
//!    PBX.
//! 3. **OPTIONS** (`[trunk] options`, default `local`): answered by callgate
//!    with 200, `Allow`, `Accept` and `Supported` (RFC 3261 §11.2) — the same
//!    for every Request-URI, so svwar's OPTIONS probe learns nothing and
//!    svmap reads no PBX `Server`.
//! 4. **Numbers** (`[trunk] numbers`, when set): a Request-URI whose user
//!    part is not one of the centre's numbers gets 404 Not Found formed by
//!    callgate: the same answer for every extension, existing or not.

use crate::api::metrics::Refusal;
use crate::config::{OptionsAnswer, Scanners, TrunkScreen};
use crate::sip::message::{HeaderName, Method, SipMessage};
use crate::sip::uri::{NameAddr, Uri};

/// User-Agent substrings of scanning and toll-fraud tools (compared without
/// letter case). Sources: the tools' own defaults (sipvicious
/// `friendly-scanner`, sipcli, sip-scan, SIPVicious) and the agents seen in
/// honeypot reports of SIP scanning campaigns.
pub const SCANNERS: [&str; 14] = [
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak",
    "vaxsipuseragent",
    "vaxipuseragent",
    "pplsip",
    "iwar",
    "sivus",
    "sundayddr",
    "smap",
    "siparmyknife",
    "gulp",
];

/// What the screen decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// Goes on through the pipeline.
    Pass,
    /// Refused without any answer.
    Drop(Refusal),
    /// Refused with this answer (formed by callgate).
    Refuse {
        why: Refusal,
        status: u16,
        reason: &'static str,
        extra: Vec<Vec<u8>>,
    },
    /// OPTIONS answered by callgate itself (200).
    AnswerOptions { extra: Vec<Vec<u8>> },
}

/// Screens a request from the trunk that is outside any dialog.
pub fn screen(cfg: &TrunkScreen, msg: &SipMessage) -> Screened {
    if cfg.scanners != Scanners::Pass {
        if let Some(sig) = scanner_signature(msg) {
            tracing::info!(signature = sig, "scanner signature refused");
            return match cfg.scanners {
                Scanners::Reject => Screened::Refuse {
                    why: Refusal::Scanner,
                    status: 403,
                    reason: "Forbidden",
                    extra: Vec::new(),
                },
                _ => Screened::Drop(Refusal::Scanner),
            };
        }
    }
    let method = msg.method_bytes().unwrap_or_default();
    if !cfg.methods.iter().any(|m| m.as_bytes() == method) {
        return Screened::Refuse {
            why: Refusal::Method,
            status: 405,
            reason: "Method Not Allowed",
            extra: vec![allow(cfg)],
        };
    }
    if msg.method() == Some(Method::Options) && cfg.options == OptionsAnswer::Local {
        return Screened::AnswerOptions {
            extra: vec![
                allow(cfg),
                b"Accept: application/sdp".to_vec(),
                b"Supported: ".to_vec(),
            ],
        };
    }
    // A CANCEL or an ACK follows its INVITE, which was screened already
    // (same Request-URI); they never get a 404 of their own.
    let follows_invite = matches!(msg.method(), Some(Method::Cancel | Method::Ack));
    if let (Some(numbers), false) = (&cfg.numbers, follows_invite) {
        let known = called_number(msg).is_some_and(|n| numbers.iter().any(|p| p.matches(&n)));
        if !known {
            return Screened::Refuse {
                why: Refusal::Number,
                status: 404,
                reason: "Not Found",
                extra: Vec::new(),
            };
        }
    }
    Screened::Pass
}

/// `Allow` with the configured methods (RFC 3261 §20.5).
fn allow(cfg: &TrunkScreen) -> Vec<u8> {
    format!("Allow: {}", cfg.methods.join(", ")).into_bytes()
}

/// The Request-URI's user part as a number: URI user parameters (`;npdi`,
/// `;rn=`) and RFC 3966 visual separators removed (on a stack buffer: E.164
/// numbers have at most 15 digits; a longer user part is no number).
fn called_number(msg: &SipMessage) -> Option<smallvec::SmallVec<[u8; 24]>> {
    let uri = Uri::parse(msg.request_uri()?).ok()?;
    let user = uri.user?;
    let user = user.split(|b| *b == b';').next().unwrap_or(user);
    Some(
        user.iter()
            .copied()
            .filter(|b| !matches!(b, b'-' | b'.' | b'(' | b')'))
            .collect(),
    )
}

/// The signature of a scanning tool the request carries, if any. Cheap on
/// a carrier's request: no allocation, and the From/To shapes are parsed
/// only when the From has a quoted display name.
pub fn scanner_signature(msg: &SipMessage) -> Option<&'static str> {
    for ua in msg.other("User-Agent") {
        if let Some(s) = SCANNERS
            .iter()
            .find(|s| contains_ignore_case(ua, s.as_bytes()))
        {
            return Some(s);
        }
    }
    let from_raw = msg.first(HeaderName::From)?;
    if !crate::sip::scan::trim(from_raw).starts_with(b"\"") {
        return None;
    }
    let from = NameAddr::parse(from_raw).ok()?;
    let display = from.display.map(|d| {
        let d = d.trim_ascii();
        let d = d.strip_prefix(b"\"").unwrap_or(d);
        d.strip_suffix(b"\"").unwrap_or(d).trim_ascii()
    })?;
    if display.eq_ignore_ascii_case(b"sipvicious") {
        return Some("sipvicious From");
    }
    // svwar writes From = To = "<ext>"<sip:<ext>@<domain>>: a caller that
    // calls itself and names itself by its own extension.
    let user = Uri::parse(from.uri).ok()?.user?;
    if display != user {
        return None;
    }
    let to = NameAddr::parse(msg.first(HeaderName::To)?).ok()?;
    (from.uri == to.uri && from.display == to.display).then_some("svwar From/To")
}

/// Whether `hay` holds `needle` (ASCII letters compared without case).
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NumberPattern;

    fn msg(method: &str, ruri: &str, from: &str, to: &str, ua: &str) -> SipMessage {
        let ua = if ua.is_empty() {
            String::new()
        } else {
            format!("User-Agent: {ua}\r\n")
        };
        let text = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\nFrom: {from};tag=f\r\nTo: {to}\r\nCall-ID: c\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{ua}Content-Length: 0\r\n\r\n"
        );
        SipMessage::parse(bytes::Bytes::from(text), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn carrier(method: &str, ruri: &str) -> SipMessage {
        msg(
            method,
            ruri,
            "<sip:+15551230000@carrier>",
            "<sip:+15550100@gate>",
            "",
        )
    }

    fn status(s: &Screened) -> Option<u16> {
        match s {
            Screened::Refuse { status, .. } => Some(*status),
            Screened::AnswerOptions { .. } => Some(200),
            _ => None,
        }
    }

    #[test]
    fn methods_options_and_numbers() {
        let mut cfg = TrunkScreen::default();
        assert_eq!(
            screen(&cfg, &carrier("INVITE", "sip:100@gate")),
            Screened::Pass
        );
        for m in [
            "REGISTER",
            "SUBSCRIBE",
            "MESSAGE",
            "PUBLISH",
            "REFER",
            "NOTIFY",
        ] {
            let s = screen(&cfg, &carrier(m, "sip:100@gate"));
            assert_eq!(status(&s), Some(405), "{m}");
            let Screened::Refuse { extra, .. } = s else {
                unreachable!()
            };
            assert_eq!(
                extra[0],
                b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO".to_vec()
            );
        }
        assert_eq!(
            status(&screen(&cfg, &carrier("OPTIONS", "sip:100@gate"))),
            Some(200)
        );
        cfg.numbers = Some(vec![
            NumberPattern {
                digits: "15550100".into(),
                prefix: false,
            },
            NumberPattern {
                digits: "1555012".into(),
                prefix: true,
            },
        ]);
        for ok in [
            "sip:+15550100@gate",
            "sip:15550100@gate;user=phone",
            "tel:+1-555-0100",
            "sip:+15550123;npdi@gate",
        ] {
            assert_eq!(screen(&cfg, &carrier("INVITE", ok)), Screened::Pass, "{ok}");
        }
        for no in [
            "sip:100@gate",
            "sip:gate",
            "sip:+155501000@gate",
            "sip:+1555013@gate",
        ] {
            assert_eq!(
                status(&screen(&cfg, &carrier("INVITE", no))),
                Some(404),
                "{no}"
            );
        }
        // OPTIONS is the same 200 whatever the number.
        assert_eq!(
            status(&screen(&cfg, &carrier("OPTIONS", "sip:100@gate"))),
            Some(200)
        );
    }

    #[test]
    fn scanner_signatures() {
        let cfg = TrunkScreen::default();
        let svmap = msg(
            "OPTIONS",
            "sip:100@gate",
            "\"sipvicious\"<sip:100@1.1.1.1>",
            "\"sipvicious\"<sip:100@1.1.1.1>",
            "",
        );
        assert_eq!(screen(&cfg, &svmap), Screened::Drop(Refusal::Scanner));
        let svwar = msg(
            "INVITE",
            "sip:100@gate",
            "\"100\"<sip:100@gate>",
            "\"100\"<sip:100@gate>",
            "",
        );
        assert_eq!(screen(&cfg, &svwar), Screened::Drop(Refusal::Scanner));
        let ua = msg(
            "INVITE",
            "sip:100@gate",
            "<sip:a@b>",
            "<sip:100@gate>",
            "Friendly-Scanner",
        );
        assert_eq!(screen(&cfg, &ua), Screened::Drop(Refusal::Scanner));
        let reject = TrunkScreen {
            scanners: Scanners::Reject,
            ..TrunkScreen::default()
        };
        assert_eq!(status(&screen(&reject, &ua)), Some(403));
        let pass = TrunkScreen {
            scanners: Scanners::Pass,
            ..TrunkScreen::default()
        };
        assert_eq!(screen(&pass, &ua), Screened::Pass);
        // A carrier's call is not a scanner.
        let call = msg(
            "INVITE",
            "sip:+15550100@gate",
            "\"ACME\"<sip:+15551230000@carrier>",
            "<sip:+15550100@gate>",
            "Carrier-SBC/4.2",
        );
        assert_eq!(screen(&cfg, &call), Screened::Pass);
    }
}
