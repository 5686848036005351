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
        if let Some(a) = v.attest.as_deref().and_then(token) {
            verify.push_str(&format!(";attest={a}"));
        }
        if let Some(o) = v.origid.as_deref().and_then(token) {
            verify.push_str(&format!(";origid={o}"));
        }
        if let Some(f) = &v.failure {
            verify.push_str(&format!(";cause={}", f.code));
        }
    }
    out.push(format!("X-Callgate-Verify: {verify}"));
    if !vd.restrict.is_empty() {
        out.push(format!("X-Callgate-Restrict: {}", vd.restrict.join(",")));
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
/// from index 1).
pub fn history_info(original: &str, review: &str, decision: &Decision) -> String {
    let reason = format!(
        "SIP;cause=380;text=\"callgate risk review {} {}\"",
        decision.verdict.level.as_str(),
        decision.id
    );
    format!(
        "History-Info: <{original}?Reason={}>;index=1, <{review}>;index=1.1;rc=1",
        escape(&reason)
    )
}
