//! Via header value (RFC 3261 §20.42, §18.2.1; rport RFC 3581).

use crate::sip::error::ParseError;
use crate::sip::scan;

fn bad(reason: &'static str) -> ParseError {
    ParseError::BadHeader {
        name: "Via",
        reason,
    }
}

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

/// Takes a token after optional LWS; returns it and the rest.
fn token(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = scan::trim(s);
    let end = s
        .iter()
        .position(|b| !scan::is_token_char(*b))
        .unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], &s[end..]))
}

fn slash(s: &[u8]) -> Option<&[u8]> {
    scan::trim(s).strip_prefix(b"/")
}

/// `via-received` (RFC 3261 §25.1, §18.2.1): `IPv4address / IPv6address`,
/// the IPv6 address without brackets; the bracketed `IPv6reference` some
/// elements write is accepted too (RFC 5118 §4.5: a robust parser takes
/// both).
fn is_received(v: &[u8]) -> bool {
    match v.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")) {
        Some(inner) => scan::is_ipv6(inner),
        None => scan::is_ipv4(v) || scan::is_ipv6(v),
    }
}

impl<'a> Via<'a> {
    /// Parses a single Via value (`SIP/2.0/UDP host:port;params`), tolerant
    /// of LWS around `/`, `:` and `;` (RFC 4475 §3.1.1.1).
    pub fn parse(value: &'a [u8]) -> Result<Via<'a>, ParseError> {
        let (proto, rest) = token(value).ok_or(bad("missing protocol"))?;
        let (version, rest) = slash(rest).and_then(token).ok_or(bad("missing version"))?;
        let (transport, rest) = slash(rest)
            .and_then(token)
            .ok_or(bad("missing transport"))?;
        if !proto.eq_ignore_ascii_case(b"SIP") || version != b"2.0" {
            return Err(bad("not SIP/2.0"));
        }
        if !rest.first().is_some_and(|b| scan::is_lws(*b)) {
            return Err(bad("missing sent-by"));
        }
        let semi = rest.iter().position(|b| *b == b';').unwrap_or(rest.len());
        let (host, port) = scan::host_port(&rest[..semi]).ok_or(bad("bad sent-by"))?;
        let params = rest.get(semi + 1..).unwrap_or_default();
        let mut via = Via {
            transport,
            host,
            port,
            branch: None,
            received: None,
            rport: None,
            params,
        };
        if semi < rest.len() {
            for p in scan::params(params).ok_or(bad("bad parameter"))? {
                if p.name.eq_ignore_ascii_case(b"branch") {
                    via.branch = Some(p.value.ok_or(bad("branch without value"))?);
                } else if p.name.eq_ignore_ascii_case(b"received") {
                    let v = p.value.ok_or(bad("received without value"))?;
                    if !is_received(v) {
                        return Err(bad("received is not an IP address"));
                    }
                    via.received = Some(v);
                } else if p.name.eq_ignore_ascii_case(b"rport") {
                    via.rport = Some(match p.value {
                        None => None,
                        Some(v) => Some(scan::port(v).ok_or(bad("bad rport"))?),
                    });
                }
            }
        }
        Ok(via)
    }

    /// Whether the branch carries the RFC 3261 magic cookie `z9hG4bK` (§8.1.1.7).
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch.is_some_and(|b| b.starts_with(b"z9hG4bK"))
    }

    /// Value of any other parameter (`None` absent, `Some(b"")` valueless).
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        scan::find_param(self.params, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_lws_everywhere() {
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"192.0.2.2");
        assert_eq!(v.branch, Some(&b"390skdjuw"[..]));
        assert!(!v.is_rfc3261_branch());
        let v = Via::parse(
            b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  received  =  192.0.2.2",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.received, Some(&b"192.0.2.2"[..]));
    }

    #[test]
    fn ipv6_rport_and_garbage() {
        let v = Via::parse(
            b"SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3;rport;received=[2001:db8::9:255]",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.host, b"[2001:db8::9:1]");
        assert_eq!(v.port, Some(6050));
        assert_eq!(v.rport, Some(None));
        assert!(v.is_rfc3261_branch());
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP [2001:db8::9::1];branch=z9hG4bKas3").is_err());
        assert!(Via::parse(b"SIP/3.0/UDP host").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP").is_err());
    }

    #[test]
    fn received_is_an_ip_address_with_or_without_brackets() {
        for (value, received) in [
            (
                &b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3"[..],
                &b"2001:db8::9:255"[..],
            ),
            (
                b"SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3",
                b"[2001:db8::9:255]",
            ),
            (
                b"SIP/2.0/TCP [2001:db8::9:255];branch=z9hG4bK451jj;received=192.0.2.200",
                b"192.0.2.200",
            ),
            (
                b"SIP/2.0/UDP h.example.com;received=::ffff:192.0.2.2",
                b"::ffff:192.0.2.2",
            ),
        ] {
            let v = Via::parse(value).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(v.received, Some(received));
        }
        for value in [
            &b"SIP/2.0/UDP 192.0.2.1;received=not-an-ip"[..],
            b"SIP/2.0/UDP 192.0.2.1;received=192.0.2.300",
            b"SIP/2.0/UDP 192.0.2.1;received=2001:db8::9::1",
            b"SIP/2.0/UDP 192.0.2.1;received=[192.0.2.1]",
            b"SIP/2.0/UDP 192.0.2.1;received=[2001:db8::1",
            b"SIP/2.0/UDP 192.0.2.1;received=\"192.0.2.1\"",
        ] {
            assert!(
                Via::parse(value).is_err(),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }
}
