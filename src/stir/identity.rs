//! The SIP Identity header (RFC 8224 §4): `token;info=<uri>;alg=ES256;ppt=shaken`.

use super::Cause;

/// One Identity header value, borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader<'a> {
    /// The PASSporT in JWS compact serialization (`header.payload.signature`).
    pub token: &'a str,
    /// `info` parameter, without its angle brackets.
    pub info: Option<&'a str>,
    pub alg: Option<&'a str>,
    /// `ppt` parameter, quotes removed (RFC 8224 allows `ppt="shaken"`).
    pub ppt: Option<&'a str>,
}

impl<'a> IdentityHeader<'a> {
    /// Parses one header value. Errors carry the RFC 8224 cause (438).
    pub fn parse(value: &'a [u8]) -> Result<IdentityHeader<'a>, (Cause, &'static str)> {
        let bad = |why| (Cause::InvalidIdentityHeader, why);
        let value = std::str::from_utf8(value)
            .map_err(|_| bad("Identity header is not UTF-8"))?
            .trim();
        let mut parts = value.split(';');
        let token = parts.next().unwrap_or_default().trim();
        if token.split('.').count() != 3
            || token
                .bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
        {
            return Err(bad("token is not a JWS compact serialization"));
        }
        let mut h = IdentityHeader {
            token,
            info: None,
            alg: None,
            ppt: None,
        };
        for p in parts {
            let (name, val) = p
                .split_once('=')
                .map_or((p.trim(), ""), |(n, v)| (n.trim(), v.trim()));
            if name.eq_ignore_ascii_case("info") {
                let uri = val
                    .strip_prefix('<')
                    .and_then(|v| v.strip_suffix('>'))
                    .ok_or(bad("info must be <URI>"))?;
                h.info = Some(uri);
            } else if name.eq_ignore_ascii_case("alg") {
                h.alg = Some(val);
            } else if name.eq_ignore_ascii_case("ppt") {
                h.ppt = Some(val.trim_matches('"'));
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_form_with_quoted_ppt() {
        let h = IdentityHeader::parse(
            b"aa.bb.cc;info=<https://x.example/c.pem>;alg=ES256;ppt=\"shaken\"",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(h.token, "aa.bb.cc");
        assert_eq!(h.info, Some("https://x.example/c.pem"));
        assert_eq!(h.ppt, Some("shaken"));
        assert!(IdentityHeader::parse(b"not-a-jws;info=<x>").is_err());
        assert!(IdentityHeader::parse(b"a.b.c;info=https://no-brackets").is_err());
    }
}
