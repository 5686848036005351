//! Who a request is from and for, as numbers: the calling party
//! (P-Asserted-Identity, else From — ATIS-1000074 §5.3.1) and the called
//! party (To and the Request-URI), from the user parts of their URIs.

use super::header::HeaderName;
use super::message::SipMessage;
use super::uri::{NameAddr, Uri};

/// The user part of a URI (a number, usually), without user parameters.
pub fn user_of(uri: &[u8]) -> Option<String> {
    let u = Uri::parse(uri).ok()?;
    let user = u.user?;
    let user = user.split(|b| *b == b';').next().unwrap_or(user);
    Some(String::from_utf8_lossy(user).into_owned())
}

/// The host of a URI, lower-cased.
pub fn host_of(uri: &[u8]) -> Option<String> {
    let u = Uri::parse(uri).ok()?;
    Some(String::from_utf8_lossy(u.host).to_ascii_lowercase())
}

/// The first P-Asserted-Identity's URI, if any.
pub fn pai_uri(msg: &SipMessage) -> Option<&[u8]> {
    msg.values(HeaderName::PAssertedIdentity)
        .next()
        .and_then(|v| NameAddr::parse(v).ok())
        .map(|n| n.uri)
}

/// The From URI.
pub fn from_uri(msg: &SipMessage) -> Option<&[u8]> {
    msg.from().ok().map(|f| f.uri)
}

/// Calling number: P-Asserted-Identity (first value) else From.
pub fn calling(msg: &SipMessage) -> String {
    pai_uri(msg)
        .and_then(user_of)
        .or_else(|| from_uri(msg).and_then(user_of))
        .unwrap_or_default()
}

/// Called numbers: To and the Request-URI.
pub fn called(msg: &SipMessage) -> Vec<String> {
    [
        msg.to().ok().and_then(|t| user_of(t.uri)),
        msg.request_uri().and_then(user_of),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// An anonymous caller (RFC 3323 §4.1.1.3, RFC 3325): the `anonymous`
/// user or display name, `Privacy: id` or `user`, or no number at all.
pub fn anonymous(msg: &SipMessage) -> bool {
    let from_anon = msg.from().ok().is_some_and(|f| {
        f.display.is_some_and(|d| {
            String::from_utf8_lossy(d)
                .to_ascii_lowercase()
                .contains("anonymous")
        }) || user_of(f.uri).is_some_and(|u| u.eq_ignore_ascii_case("anonymous"))
    });
    let privacy = msg.other("Privacy").any(|v| {
        String::from_utf8_lossy(v)
            .split(';')
            .any(|t| matches!(t.trim().to_ascii_lowercase().as_str(), "id" | "user"))
    });
    from_anon || privacy || calling(msg).is_empty()
}
