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
/// `;rn=`) and RFC 3966 visual separators removed.
fn called_number(msg: &SipMessage) -> Option<Vec<u8>> {
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

/// The signature of a scanning tool the request carries, if any.
pub fn scanner_signature(msg: &SipMessage) -> Option<&'static str> {
    for ua in msg.other("User-Agent") {
        let ua = String::from_utf8_lossy(ua).to_ascii_lowercase();
        if let Some(s) = SCANNERS.iter().find(|s| ua.contains(*s)) {
            return Some(s);
        }
    }
    let from = NameAddr::parse(msg.first(HeaderName::From)?).ok()?;
    let display = from.display.map(|d| {
        String::from_utf8_lossy(d)
            .trim_matches(|c| c == '"' || c == ' ')
            .to_ascii_lowercase()
    });
    if display.as_deref() == Some("sipvicious") {
        return Some("sipvicious From");
    }
    // svwar writes From = To = "<ext>"<sip:<ext>@<domain>>: a caller that
    // calls itself and names itself by its own extension.
    let to = NameAddr::parse(msg.first(HeaderName::To)?).ok()?;
    let user = Uri::parse(from.uri)
        .ok()
        .and_then(|u| u.user)
        .map(|u| String::from_utf8_lossy(u).to_ascii_lowercase());
    if from.uri == to.uri && from.display == to.display && display.is_some() && display == user {
        return Some("svwar From/To");
    }
    None
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
