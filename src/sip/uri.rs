//! SIP/SIPS/TEL URIs (RFC 3261 §19.1, RFC 3966) and name-addr (§20.10, §25.1).

use crate::sip::message::ParseError;

/// A URI, borrowed from the message. Only what routing needs is split out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    /// Scheme, as written (`sip`, `sips`, `tel`, or anything else for
    /// absoluteURI, RFC 4475 §3.3.1).
    pub scheme: &'a [u8],
    /// userinfo user part (still %-escaped), if any; the subscriber for `tel`.
    pub user: Option<&'a [u8]>,
    /// Host; IPv6 references keep their brackets. Empty for non-SIP schemes.
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// URI parameters section starting after the first `;` (empty if none).
    pub params: &'a [u8],
    /// Header section after `?` (empty if none).
    pub headers: &'a [u8],
}

impl<'a> Uri<'a> {
    pub fn parse(raw: &'a [u8]) -> Result<Uri<'a>, ParseError> {
        let _ = raw;
        todo!()
    }
    /// URI parameter lookup, case-insensitive name (`None` absent, `Some(b"")` valueless).
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        let _ = name;
        todo!()
    }
    /// Loose-routing marker `lr` (RFC 3261 §16.12.1.1... §19.1.1).
    pub fn is_loose_route(&self) -> bool {
        self.param("lr").is_some()
    }
    pub fn is_sip(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"sip") || self.scheme.eq_ignore_ascii_case(b"sips")
    }
}

/// `name-addr` or `addr-spec` with header parameters, as in From, To,
/// Contact, Route, Record-Route, P-Asserted-Identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name, quotes kept, if any.
    pub display: Option<&'a [u8]>,
    /// The URI between `<` `>`, or the bare addr-spec.
    pub uri: &'a [u8],
    /// Header parameters after the URI (after `>` or, for addr-spec, after
    /// the first `;`), starting after the first `;`; empty if none.
    pub params: &'a [u8],
}

impl<'a> NameAddr<'a> {
    pub fn parse(raw: &'a [u8]) -> Result<NameAddr<'a>, ParseError> {
        let _ = raw;
        todo!()
    }
    /// Header parameter lookup, case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        let _ = name;
        todo!()
    }
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.param("tag")
    }
}
