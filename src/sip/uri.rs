//! SIP/SIPS/TEL URIs (RFC 3261 §19.1, RFC 3966) and name-addr (§20.10, §25.1).

use crate::sip::error::ParseError;
use crate::sip::scan;

fn bad(reason: &'static str) -> ParseError {
    ParseError::BadHeader {
        name: "URI",
        reason,
    }
}

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
        if raw.is_empty() || raw.iter().any(|b| scan::is_lws(*b)) {
            return Err(bad("empty or contains whitespace"));
        }
        let colon = raw
            .iter()
            .position(|b| *b == b':')
            .ok_or(bad("no scheme"))?;
        let scheme = &raw[..colon];
        let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(bad("bad scheme"));
        }
        let rest = &raw[colon + 1..];
        let mut uri = Uri {
            scheme,
            user: None,
            host: b"",
            port: None,
            params: b"",
            headers: b"",
        };
        if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
            // userinfo may hold `;` `?` `,` (RFC 4475 §3.1.1.2, §3.1.1.9), so
            // the host part starts after the first `@`.
            let hostpart = match rest.iter().position(|b| *b == b'@') {
                Some(at) => {
                    if at == 0 {
                        return Err(bad("empty user"));
                    }
                    uri.user = Some(&rest[..at]);
                    &rest[at + 1..]
                }
                None => rest,
            };
            let end_hp = hostpart
                .iter()
                .position(|b| *b == b';' || *b == b'?')
                .unwrap_or(hostpart.len());
            let (host, port) =
                scan::host_port(&hostpart[..end_hp]).ok_or(bad("bad host or port"))?;
            uri.host = host;
            uri.port = port;
            let tail = &hostpart[end_hp..];
            let q = tail.iter().position(|b| *b == b'?').unwrap_or(tail.len());
            uri.params = tail.get(1..q).unwrap_or_default();
            uri.headers = tail.get(q + 1..).unwrap_or_default();
            if !uri.params.is_empty() && scan::params(uri.params).is_none() {
                return Err(bad("bad URI parameter"));
            }
        } else if scheme.eq_ignore_ascii_case(b"tel") {
            let semi = rest.iter().position(|b| *b == b';').unwrap_or(rest.len());
            if semi == 0 {
                return Err(bad("empty tel number"));
            }
            uri.user = Some(&rest[..semi]);
            uri.params = rest.get(semi + 1..).unwrap_or_default();
        } else if rest.is_empty() {
            return Err(bad("empty absolute URI"));
        }
        Ok(uri)
    }

    /// URI parameter lookup, case-insensitive name (`None` absent, `Some(b"")` valueless).
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        scan::find_param(self.params, name)
    }
    /// Loose-routing marker `lr` (RFC 3261 §19.1.1).
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
    /// Parses `"Display" <uri>;params`, `token token <uri>;params` or
    /// `uri;params` (§25.1). Rejects unbalanced quotes (RFC 4475 §3.1.2.7),
    /// unquoted non-token display names (§3.1.2.17), whitespace inside `<>`
    /// (§3.1.2.16), and an addr-spec holding `?` or `,` (§3.1.2.14).
    pub fn parse(raw: &'a [u8]) -> Result<NameAddr<'a>, ParseError> {
        let s = scan::trim(raw);
        let (display, rest) = if s.first() == Some(&b'"') {
            let q = scan::quoted_len(s).ok_or(bad("unterminated quoted string"))?;
            (Some(&s[..q]), scan::trim(&s[q..]))
        } else if let Some(lt) = s.iter().position(|b| *b == b'<') {
            let d = scan::trim(&s[..lt]);
            if !d
                .iter()
                .all(|b| scan::is_token_char(*b) || scan::is_lws(*b))
            {
                return Err(bad("display name must be quoted"));
            }
            ((!d.is_empty()).then_some(d), &s[lt..])
        } else {
            let semi = s.iter().position(|b| *b == b';').unwrap_or(s.len());
            let uri = scan::trim(&s[..semi]);
            if uri.iter().any(|b| matches!(b, b'?' | b',' | b'"' | b'>')) {
                return Err(bad("addr-spec with reserved characters must be in <>"));
            }
            if uri != b"*" {
                Uri::parse(uri)?;
            }
            let params = s.get(semi + 1..).unwrap_or_default();
            if semi < s.len() && scan::params(params).is_none() {
                return Err(bad("bad header parameter"));
            }
            return Ok(NameAddr {
                display: None,
                uri,
                params,
            });
        };
        let inner = rest.strip_prefix(b"<").ok_or(bad("expected <"))?;
        let gt = inner
            .iter()
            .position(|b| *b == b'>')
            .ok_or(bad("missing >"))?;
        let uri = &inner[..gt];
        Uri::parse(uri)?;
        let after = scan::trim(&inner[gt + 1..]);
        let params = if after.is_empty() {
            &after[..0]
        } else {
            let p = after.strip_prefix(b";").ok_or(bad("junk after >"))?;
            if scan::params(p).is_none() {
                return Err(bad("bad header parameter"));
            }
            p
        };
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }
    /// Header parameter lookup, case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        scan::find_param(self.params, name)
    }
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.param("tag").filter(|t| !t.is_empty())
    }
}

/// The `tag` header parameter of a From or To value (RFC 3261 §19.3,
/// §20.20, §20.39) without parsing the URI: the header parameters start
/// after the name-addr's `>` (a quoted display name skipped), or at an
/// addr-spec's first `;`. For a message that passed
/// [`crate::sip::message::SipMessage::validate`], which parsed the value
/// whole, this finds the same tag as [`NameAddr::tag`] at a fraction of
/// the cost; `None` when there is none or the value is malformed.
pub fn header_tag(value: &[u8]) -> Option<&[u8]> {
    let s = scan::trim(value);
    let start = if s.first() == Some(&b'"') {
        scan::quoted_len(s)?
    } else {
        0
    };
    let rest = &s[start..];
    let params = match memchr::memchr(b'<', rest) {
        Some(lt) => {
            let gt = lt + memchr::memchr(b'>', &rest[lt..])?;
            let after = scan::trim(&rest[gt + 1..]);
            after.strip_prefix(b";")?
        }
        None => {
            let semi = memchr::memchr(b';', rest)?;
            &rest[semi + 1..]
        }
    };
    // Header parameters are `;`-separated tokens (a quoted value cannot
    // hold the tag); the tag is a token too (§25.1).
    params.split(|b| *b == b';').find_map(|p| {
        let p = scan::trim(p);
        let rest = p
            .get(..3)
            .filter(|n| n.eq_ignore_ascii_case(b"tag"))
            .map(|_| scan::trim(&p[3..]))?;
        let value = scan::trim(rest.strip_prefix(b"=")?);
        (!value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tag_finds_what_name_addr_finds() {
        for v in [
            &b"<sip:a@b;tag=uri-param>;tag=hdr"[..],
            b"\"Bob <x>;tag=no\" <sip:a@b>;tag=t1",
            b"sip:a@b;tag=t2",
            b"Bob <sip:a@b;user=phone>;x=1;TAG=t3;y",
            b"<sip:a@b>",
            b"sip:a@b",
            b"<sip:a@b>;tag=",
        ] {
            let want = NameAddr::parse(v).ok().and_then(|na| na.tag());
            assert_eq!(header_tag(v), want, "{}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn sip_uri_with_odd_userinfo_ipv6_and_params() {
        let u = Uri::parse(b"sip:user;par=u%40example.net@example.com")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, b"example.com");
        let u = Uri::parse(b"sip:[2001:db8::10]:5070;transport=tcp;lr")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.host, b"[2001:db8::10]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("TRANSPORT"), Some(&b"tcp"[..]));
        assert!(u.is_loose_route());
        assert!(Uri::parse(b"sip:2001:db8::10").is_err());
        let u = Uri::parse(b"sip:user@example.com?Route=%3Csip:example.com%3E")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.headers, b"Route=%3Csip:example.com%3E");
        assert_eq!(
            Uri::parse(b"tel:+15550100;phone-context=x").map(|u| u.user),
            Ok(Some(&b"+15550100"[..]))
        );
        assert!(Uri::parse(b"soap.beep://192.0.2.103:3002").is_ok());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.uri, b"sip:jdrosen@example.com");
        assert_eq!(n.tag(), Some(&b"98asjd8"[..]));
        let n = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.display, Some(&b"caller"[..]));
        let n = NameAddr::parse(b" sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.tag(), Some(&b"1918181833n"[..]));
        assert!(NameAddr::parse(b"\"Mr. J. User <sip:j.user@example.com>").is_err());
        assert!(NameAddr::parse(b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43").is_err());
        assert!(NameAddr::parse(b"\"Watson, Thomas\" < sip:t.watson@example.org >").is_err());
        assert!(NameAddr::parse(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
        assert!(NameAddr::parse(b"isbn:2983792873").is_ok());
    }
}
