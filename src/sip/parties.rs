//! Who a request is from and for, as numbers: the calling party
//! (P-Asserted-Identity, else From — ATIS-1000074 §5.3.1) and the called
//! party (To and the Request-URI), from the user parts of their URIs.

use super::header::HeaderName;
use super::message::SipMessage;
use super::uri::{NameAddr, Uri};

/// The user part of a URI (a number, usually), without user parameters.
pub fn user_of(uri: &[u8]) -> Option<String> {
    user_part(&Uri::parse(uri).ok()?)
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

/// A request's parties, each header parsed once (the inbound phases —
/// verify, assess, audit — all read them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parties {
    /// The calling number as written: P-Asserted-Identity's user (first
    /// value), else From's (ATIS-1000074 §5.3.1).
    pub calling: String,
    /// The called numbers as written: To's user, then the Request-URI's.
    pub called: Vec<String>,
    /// The user parts of From and of the first P-Asserted-Identity.
    pub from_user: Option<String>,
    pub pai_user: Option<String>,
    /// The host of the first P-Asserted-Identity's URI, or of From's when
    /// there is no P-Asserted-Identity; lower-cased.
    pub asserted_host: Option<String>,
    /// An anonymous caller (RFC 3323 §4.1.1.3, RFC 3325): the `anonymous`
    /// user or display name, `Privacy: id` or `user`, or no number at all.
    pub anonymous: bool,
}

impl Parties {
    pub fn of(msg: &SipMessage) -> Parties {
        let pai_raw = pai_uri(msg);
        let pai = pai_raw.and_then(|u| Uri::parse(u).ok());
        let from = msg.from().ok();
        let from_uri = from.as_ref().and_then(|f| Uri::parse(f.uri).ok());
        let pai_user = pai.as_ref().and_then(user_part);
        let from_user = from_uri.as_ref().and_then(user_part);
        let calling = pai_user
            .clone()
            .or_else(|| from_user.clone())
            .unwrap_or_default();
        let asserted = if pai_raw.is_some() {
            pai.as_ref()
        } else {
            from_uri.as_ref()
        };
        let asserted_host = asserted.map(|u| String::from_utf8_lossy(u.host).to_ascii_lowercase());
        let from_anon = from.as_ref().is_some_and(|f| {
            f.display.is_some_and(|d| {
                String::from_utf8_lossy(d)
                    .to_ascii_lowercase()
                    .contains("anonymous")
            })
        }) || from_user
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case("anonymous"));
        let privacy = msg.other("Privacy").any(|v| {
            String::from_utf8_lossy(v)
                .split(';')
                .any(|t| matches!(t.trim().to_ascii_lowercase().as_str(), "id" | "user"))
        });
        let anonymous = from_anon || privacy || calling.is_empty();
        Parties {
            calling,
            called: called(msg),
            from_user,
            pai_user,
            asserted_host,
            anonymous,
        }
    }
}

/// The user part of a parsed URI, without user parameters.
fn user_part(u: &Uri<'_>) -> Option<String> {
    let user = u.user?;
    let user = user.split(|b| *b == b';').next().unwrap_or(user);
    Some(String::from_utf8_lossy(user).into_owned())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Limits;

    fn invite(headers: &str) -> SipMessage {
        let text = format!(
            "INVITE sip:+15550100;npdi@pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\
             To: <sip:5550100@pbx.example.com>\r\nCall-ID: p1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        SipMessage::parse(bytes::Bytes::from(text), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parties_prefer_the_asserted_identity_and_read_each_header_once() {
        let msg = invite(
            "From: \"Caller\" <sip:+12025550199@Carrier.Example.NET>;tag=a\r\n\
             P-Asserted-Identity: <sip:+12025550100;cpc=x@sbc.example.net>\r\n",
        );
        let p = Parties::of(&msg);
        assert_eq!(p.calling, "+12025550100");
        assert_eq!(p.calling, calling(&msg));
        assert_eq!(p.called, vec!["5550100".to_owned(), "+15550100".to_owned()]);
        assert_eq!(p.called, called(&msg));
        assert_eq!(p.from_user.as_deref(), Some("+12025550199"));
        assert_eq!(p.asserted_host.as_deref(), Some("sbc.example.net"));
        assert!(!p.anonymous);
    }

    #[test]
    fn parties_fall_back_to_from_and_see_anonymity() {
        let plain = Parties::of(&invite(
            "From: <sip:+12025550199@Carrier.Example.NET>;tag=a\r\n",
        ));
        assert_eq!(plain.calling, "+12025550199");
        assert_eq!(plain.pai_user, None);
        assert_eq!(plain.asserted_host.as_deref(), Some("carrier.example.net"));
        for (headers, why) in [
            (
                "From: \"Anonymous\" <sip:+12025550199@c.example>;tag=a\r\n",
                "display name",
            ),
            ("From: <sip:anonymous@anonymous.invalid>;tag=a\r\n", "user"),
            (
                "From: <sip:+12025550199@c.example>;tag=a\r\nPrivacy: id\r\n",
                "Privacy: id",
            ),
            ("From: <sip:c.example>;tag=a\r\n", "no number"),
        ] {
            assert!(Parties::of(&invite(headers)).anonymous, "{why}");
        }
        // An asserted identity without a user: the number comes from From,
        // the host from the asserted identity.
        let p = Parties::of(&invite(
            "From: <sip:+12025550199@c.example>;tag=a\r\nP-Asserted-Identity: <sip:sbc.example.net>\r\n",
        ));
        assert_eq!(p.calling, "+12025550199");
        assert_eq!(p.asserted_host.as_deref(), Some("sbc.example.net"));
    }
}
