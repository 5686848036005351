//! What the PBX and the agent's screen see (docs/integration.md): the
//! `X-Callgate-*` headers on the INVITE, and History-Info (RFC 7044) when a
//! call is retargeted to the review queue.

use super::assess::Decision;
use crate::stir::verify::{Status, Verification};

/// Whether a header name is one of ours (`X-Callgate-*`): such headers are
/// removed from everything arriving from the trunk before anything reads
/// them, and from everything sent to it.
pub fn is_callgate_header(name: &[u8]) -> bool {
    name.len() > 11 && name[..11].eq_ignore_ascii_case(b"x-callgate-")
}

/// Characters allowed in a tag parameter value taken from the network.
fn token(s: &str) -> Option<&str> {
    (!s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
    .then_some(s)
}

/// The `X-Callgate-*` header lines (no CRLF) for a decision.
pub fn headers(d: &Decision, v: Option<&Verification>) -> Vec<String> {
    let vd = &d.verdict;
    let mut out = vec![format!(
        "X-Callgate-Risk: {};score={};policy={};id={}",
        vd.level.as_str(),
        vd.score,
        vd.policy_version,
        d.id
    )];
    let reasons: Vec<&str> = vd.reasons().collect();
    if !reasons.is_empty() {
        out.push(format!("X-Callgate-Reasons: {}", reasons.join(",")));
    }
    let mut verify = match v.map(|v| v.status) {
        Some(Status::Passed) => "passed".to_owned(),
        Some(Status::Failed) => "failed".to_owned(),
        Some(Status::NoValidation) | None => "none".to_owned(),
    };
    if let Some(v) = v {
        // A claim of a PASSporT that did not verify is never written in
        // the form of a verified one: `claimed-attest`, `claimed-origid`.
        let claimed = if v.status == Status::Passed {
            ""
        } else {
            "claimed-"
        };
        if let Some(a) = v.attest.as_deref().and_then(token) {
            verify.push_str(&format!(";{claimed}attest={a}"));
        }
        if let Some(o) = v.origid.as_deref().and_then(token) {
            verify.push_str(&format!(";{claimed}origid={o}"));
        }
        if let Some(f) = &v.failure {
            verify.push_str(&format!(";cause={}", f.code));
        }
    }
    out.push(format!("X-Callgate-Verify: {verify}"));
    if !vd.restrict.is_empty() {
        out.push(format!("X-Callgate-Restrict: {}", vd.restrict.join(",")));
    }
    // The operator's words beside the codes (docs/policy.md, "Plain
    // language"): only for what has words in the policy.
    let verify_text = v.map(crate::stir::mark::in_words);
    let words = [
        ("X-Callgate-Verify-Text", words(verify_text.as_deref())),
        ("X-Callgate-Risk-Text", words(vd.level_text.as_deref())),
        (
            "X-Callgate-Reasons-Text",
            words(vd.reason_texts().map(|(_, t)| t)),
        ),
        (
            "X-Callgate-Restrict-Text",
            words(vd.restrict_text.iter().map(|r| &*r.text)),
        ),
    ];
    for (name, value) in words {
        if !value.is_empty() {
            out.push(format!("{name}: {value}"));
        }
    }
    out
}

/// Longest value of an `X-Callgate-*-Text` header, in bytes: texts that
/// would carry it past this are left out (their codes are still in the
/// coded header), so no PBX meets a line longer than it expects.
pub const MAX_TEXT_HEADER: usize = 1024;

/// Texts as a header value: each an RFC 3261 §25.1 `quoted-string`
/// (`"` and `\` escaped as quoted-pairs, control characters dropped —
/// the policy refuses them, this is the last guard against CR/LF),
/// separated by `, `, at most [`MAX_TEXT_HEADER`] bytes.
fn words<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for t in texts {
        let mut q = String::with_capacity(t.len() + 2);
        q.push('"');
        for c in t.chars().filter(|c| !c.is_control()) {
            if matches!(c, '"' | '\\') {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        let sep = if out.is_empty() { 0 } else { 2 };
        if out.len() + sep + q.len() > MAX_TEXT_HEADER {
            break;
        }
        if sep > 0 {
            out.push_str(", ");
        }
        out.push_str(&q);
    }
    out
}

/// Escapes a header value for a URI header component (RFC 3261 §25.1).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// History-Info for a call retargeted from `original` (its Request-URI)
/// to the review queue (RFC 7044 §5, §10): the original target with the
/// Reason it was left, then the review queue, marked `rc` (retargeted
/// from the original's entry). When the request arrived with History-Info,
/// the new entries continue its numbering under its last index
/// (`previous`, from [`last_index`]; RFC 7044 §10.3), else they start at 1.
pub fn history_info(
    original: &str,
    review: &str,
    decision: &Decision,
    previous: Option<&str>,
) -> String {
    let reason = format!(
        "SIP;cause=380;text=\"callgate risk review {} {}\"",
        decision.verdict.level.as_str(),
        decision.id
    );
    let index = match previous {
        Some(p) => format!("{p}.1"),
        None => "1".to_owned(),
    };
    format!(
        "History-Info: <{original}?Reason={}>;index={index}, <{review}>;index={index}.1;rc={index}",
        escape(&reason)
    )
}

/// The `index` of the last hi-entry in the request's History-Info header
/// values (RFC 7044 §9.2: dot-separated positive integers), if any is well
/// formed; entries are separated by commas outside `<...>` and quotes.
pub fn last_index<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut last = None;
    for value in values {
        let text = String::from_utf8_lossy(value);
        let (mut depth, mut quoted, mut start) = (0i32, false, 0);
        let mut entries = Vec::new();
        for (i, c) in text.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '<' if !quoted => depth += 1,
                '>' if !quoted => depth -= 1,
                ',' if !quoted && depth == 0 => {
                    entries.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        entries.push(&text[start..]);
        for entry in entries {
            let params = entry.rsplit_once('>').map(|(_, p)| p).unwrap_or("");
            let index = params.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("index").then(|| v.trim())
            });
            if let Some(i) = index.filter(|i| {
                !i.is_empty()
                    && i.split('.')
                        .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            }) {
                last = Some(i.to_owned());
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::risk::policy::{Action, Fired, Level, RestrictText, Verdict};
    use crate::stir::verify::{claiming, Status};
    use std::sync::Arc;

    fn decision(texts: bool) -> Decision {
        let fired = |code: &str, text: &str| Fired {
            code: code.to_owned(),
            weight: 20,
            fail_closed: None,
            text: texts.then(|| Arc::from(text)),
        };
        Decision {
            id: "cg-1".into(),
            verdict: Verdict {
                policy_version: "p1".into(),
                score: 40,
                level: Level::Medium,
                action: Action::Tag,
                fired: vec![
                    fired(
                        "STIR_NONE",
                        "The caller ID is \"unsigned\"\r\n: not proven.",
                    ),
                    fired("ANONYMOUS", "Number withheld."),
                ],
                restrict: vec!["credential-reset".into()],
                level_text: texts.then(|| Arc::from("Some doubt.")),
                restrict_text: if texts {
                    vec![RestrictText {
                        action: Arc::from("credential-reset"),
                        text: Arc::from("No password reset without step-up."),
                    }]
                } else {
                    vec![]
                },
            },
            shadow: None,
            target: None,
        }
    }

    fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    #[test]
    fn an_unverified_attestation_is_never_shown_as_verified() {
        let d = decision(false);
        for status in [Status::Failed, Status::NoValidation] {
            let h = headers(&d, Some(&claiming(status)));
            let v = header(&h, "X-Callgate-Verify").unwrap_or_default();
            assert!(
                v.contains(";claimed-attest=A;claimed-origid=o-1"),
                "{status:?}: {v}"
            );
            assert!(!v.contains(";attest=") && !v.contains(";origid="), "{v}");
            let words = header(&h, "X-Callgate-Verify-Text").unwrap_or_default();
            assert!(
                words.contains("claimed attestation A is unproven"),
                "{words}"
            );
        }
        let h = headers(&d, Some(&claiming(Status::Passed)));
        assert_eq!(
            header(&h, "X-Callgate-Verify"),
            Some("passed;attest=A;origid=o-1")
        );
    }

    #[test]
    fn the_policy_words_go_beside_the_codes_quoted() {
        let h = headers(&decision(true), None);
        assert_eq!(
            header(&h, "X-Callgate-Reasons"),
            Some("STIR_NONE,ANONYMOUS")
        );
        assert_eq!(
            header(&h, "X-Callgate-Reasons-Text"),
            Some(r#""The caller ID is \"unsigned\": not proven.", "Number withheld.""#)
        );
        assert_eq!(header(&h, "X-Callgate-Risk-Text"), Some("\"Some doubt.\""));
        assert_eq!(
            header(&h, "X-Callgate-Restrict-Text"),
            Some("\"No password reset without step-up.\"")
        );
        assert!(h.iter().all(|l| !l.contains(['\r', '\n'])), "{h:?}");
        // Without words in the policy (nor a verification), no text headers.
        let h = headers(&decision(false), None);
        assert!(!h.iter().any(|l| l.contains("-Text:")), "{h:?}");
    }

    #[test]
    fn text_headers_are_bounded() {
        let long = "x".repeat(300);
        let v = words([long.as_str(); 5]);
        assert!(v.len() <= MAX_TEXT_HEADER, "{}", v.len());
        assert_eq!(v.matches('"').count(), 6, "three whole texts fit");
    }

    #[test]
    fn last_index_of_received_history_info() {
        let one: &[u8] = b"<sip:+15550100@carrier.example;user=phone>;index=1, <sip:+15550100@gw.example?Reason=SIP%3Bcause%3D302>;index=1.1;rc=1";
        let two: &[u8] = b"\"A, B\" <sip:x@y>;index=1.1.2";
        assert_eq!(last_index([one].into_iter()).as_deref(), Some("1.1"));
        assert_eq!(last_index([one, two].into_iter()).as_deref(), Some("1.1.2"));
        assert_eq!(
            last_index([b"<sip:x@y>;index=bogus".as_slice()].into_iter()),
            None
        );
        assert_eq!(last_index(std::iter::empty()), None);
    }
}
