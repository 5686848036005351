//! Via header value (RFC 3261 §20.42, §18.2.1; rport RFC 3581).

use crate::sip::message::ParseError;

/// One Via value, borrowed from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    /// Transport token as written (`UDP`, `TCP`, `TLS`, `SCTP`, ...).
    pub transport: &'a [u8],
    /// sent-by host; IPv6 references keep their brackets (RFC 5118 §4.5).
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// `branch` parameter value.
    pub branch: Option<&'a [u8]>,
    /// `received` parameter value.
    pub received: Option<&'a [u8]>,
    /// `rport` parameter: `None` absent, `Some(None)` present without value.
    pub rport: Option<Option<u16>>,
    /// The whole parameter section (after sent-by, starting at the first `;`).
    pub params: &'a [u8],
}

impl<'a> Via<'a> {
    /// Parses a single Via value (`SIP/2.0/UDP host:port;params`), tolerant
    /// of LWS around `/`, `:` and `;` (RFC 4475 §3.1.1.1).
    pub fn parse(value: &'a [u8]) -> Result<Via<'a>, ParseError> {
        let _ = value;
        todo!()
    }

    /// Whether the branch carries the RFC 3261 magic cookie `z9hG4bK` (§8.1.1.7).
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch.is_some_and(|b| b.starts_with(b"z9hG4bK"))
    }

    /// Value of any other parameter (`None` absent, `Some(b"")` valueless).
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        let _ = name;
        todo!()
    }
}
