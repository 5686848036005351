//! Byte-level scanning helpers shared by the parsers (RFC 3261 §25.1 basic rules).

/// `token` characters (RFC 3261 §25.1): alphanum and `-.!%*_+`'~`.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|b| is_token_char(*b))
}

/// Linear white space, including the CRLF of a folded line (§7.3.1).
pub fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trims LWS on both sides.
pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_lws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_lws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Splits at `sep` outside quoted strings and `<...>` (§7.3.1, §25.1).
/// Returns `None` when a quote or angle bracket is left open. Jumps from one
/// interesting byte to the next with `memchr3`.
pub fn split_top(v: &[u8], sep: u8) -> Option<smallvec::SmallVec<[&[u8]; 4]>> {
    let mut parts = smallvec::SmallVec::new();
    let (mut start, mut i) = (0, 0);
    while let Some(off) = memchr::memchr3(sep, b'"', b'<', &v[i..]) {
        let j = i + off;
        match v[j] {
            b'"' => i = j + quoted_len(&v[j..])?,
            b'<' => i = j + memchr::memchr(b'>', &v[j..])? + 1,
            _ => {
                parts.push(&v[start..j]);
                start = j + 1;
                i = j + 1;
            }
        }
    }
    parts.push(&v[start..]);
    Some(parts)
}

/// Length of the quoted string at the start of `s` (including both quotes),
/// honouring `\` escapes (§25.1 quoted-pair); `None` if unterminated.
pub fn quoted_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// One `;name[=value]` parameter, LWS trimmed around name, `=` and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Parses a parameter section that starts right after the first `;`
/// (`a=1;b;c="x;y"`). Every name must be a non-empty token; a value is a
/// quoted string or printable characters (IPv6 references in brackets
/// included, `received=[::1]`, RFC 5118 §4.5).
pub fn params(section: &[u8]) -> Option<smallvec::SmallVec<[Param<'_>; 6]>> {
    let mut out = smallvec::SmallVec::new();
    if trim(section).is_empty() {
        return Some(out);
    }
    for part in split_top(section, b';')? {
        let (name, value) = match part.iter().position(|b| *b == b'=') {
            Some(eq) => (trim(&part[..eq]), Some(trim(&part[eq + 1..]))),
            None => (trim(part), None),
        };
        if !is_token(name) {
            return None;
        }
        if let Some(v) = value {
            let ok = if v.first() == Some(&b'"') {
                quoted_len(v) == Some(v.len())
            } else {
                !v.is_empty()
                    && v.iter().all(|b| {
                        b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b',')
                            || *b >= 0x80
                    })
            };
            if !ok {
                return None;
            }
        }
        out.push(Param { name, value });
    }
    Some(out)
}

/// Finds a parameter by case-insensitive name.
pub fn find_param<'a>(section: &'a [u8], name: &str) -> Option<&'a [u8]> {
    params(section)?
        .into_iter()
        .find(|p| p.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|p| p.value.unwrap_or_default())
}

/// Parses a decimal port (1–65535 not enforced beyond u16).
pub fn port(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// `IPv4address` (RFC 3261 §25.1): four dot-separated decimal octets of one
/// to three digits, each at most 255 (leading zeros tolerated).
pub fn is_ipv4(s: &[u8]) -> bool {
    let mut octets = 0;
    for octet in s.split(|b| *b == b'.') {
        octets += 1;
        if octets > 4
            || octet.is_empty()
            || octet.len() > 3
            || !octet.iter().all(u8::is_ascii_digit)
            || octet.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0')) > 255
        {
            return false;
        }
    }
    octets == 4
}

/// `IPv6address` of RFC 3261 §25.1 as RFC 5954 corrects it (to RFC 3986
/// §3.2.2's rule, the RFC 4291 §2.2 text form): groups of one to four hex
/// digits separated by `:`, eight of them, or fewer with one `::` standing
/// for one or more zero groups; the last two groups may be written as an
/// `IPv4address`. So `2001:db8::192.0.2.1` is valid, while
/// `2001:db8::10::1` (two `::`), `1:2:3:4:5:6:7:8:9`, `12345::1` and
/// `2001:db8:::192.0.2.1` (the form RFC 3261's ABNF wrongly allowed,
/// RFC 5118 §4.10) are not.
pub fn is_ipv6(s: &[u8]) -> bool {
    let mut groups = 0usize;
    let mut compressed = s.starts_with(b"::");
    let mut i = if compressed { 2 } else { 0 };
    while i < s.len() {
        let start = i;
        while i < s.len() && s[i].is_ascii_hexdigit() {
            i += 1;
        }
        if s.get(i) == Some(&b'.') {
            // The IPv4 form of the last 32 bits ends the address.
            let fits = if compressed { groups <= 5 } else { groups == 6 };
            return fits && is_ipv4(&s[start..]);
        }
        if !(1..=4).contains(&(i - start)) {
            return false;
        }
        groups += 1;
        match s.get(i) {
            None => break,
            Some(b':') => i += 1,
            Some(_) => return false,
        }
        if s.get(i) == Some(&b':') {
            if compressed {
                return false;
            }
            compressed = true;
            i += 1;
        } else if i == s.len() {
            return false; // a single trailing `:`
        }
    }
    if compressed {
        groups <= 7
    } else {
        groups == 8
    }
}

/// Splits `host[:port]`, with IPv6 references in brackets (RFC 5118 §4.1);
/// the address inside the brackets must be an `IPv6address` ([`is_ipv6`],
/// RFC 3261 §25.1 `IPv6reference`).
pub fn host_port(s: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let s = trim(s);
    if s.first() == Some(&b'[') {
        let close = s.iter().position(|b| *b == b']')?;
        let host = &s[..=close];
        if !is_ipv6(&host[1..host.len() - 1]) {
            return None;
        }
        let rest = trim(&s[close + 1..]);
        if rest.is_empty() {
            return Some((host, None));
        }
        let p = trim(rest.strip_prefix(b":")?);
        return Some((host, Some(port(p)?)));
    }
    let (host, p) = match s.iter().position(|b| *b == b':') {
        Some(i) => (trim(&s[..i]), Some(port(trim(&s[i + 1..]))?)),
        None => (s, None),
    };
    if host.is_empty()
        || !host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return None;
    }
    Some((host, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_angles() {
        let v = br#""a, b" <sip:x;a=1,2>, <sip:y>"#;
        let parts = split_top(v, b',').unwrap_or_default();
        assert_eq!(parts.len(), 2);
        assert!(split_top(br#""open"#, b',').is_none());
    }

    #[test]
    fn params_trim_lws_and_reject_empty_names() {
        let p = params(b" tag = 98asjd8 ;lr; x=\"a;b\"").unwrap_or_default();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].value, Some(&b"98asjd8"[..]));
        assert_eq!(p[1].value, None);
        assert!(params(b";;,;,,").is_none());
    }

    #[test]
    fn host_port_handles_ipv6_and_rejects_unbracketed() {
        assert_eq!(
            host_port(b"[2001:db8::10]:5070"),
            Some((&b"[2001:db8::10]"[..], Some(5070)))
        );
        assert_eq!(host_port(b"example.com"), Some((&b"example.com"[..], None)));
        assert!(host_port(b"2001:db8::10").is_none());
        assert!(host_port(b"host:99999").is_none());
    }

    /// Asserts `holds` of every case, naming the first that fails.
    fn assert_each(cases: &[&[u8]], holds: impl Fn(&[u8]) -> bool) {
        for c in cases {
            assert!(holds(c), "{}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn ipv6_references_hold_an_ipv6_address() {
        let valid: &[&[u8]] = &[
            b"[2001:db8::10]",
            b"[2001:db8::10:5070]",
            b"[2001:db8::192.0.2.1]",
            b"[::ffff:192.0.2.10]",
            b"[::]",
            b"[::1]",
            b"[1::]",
            b"[2001:db8:0:0:0:0:0:1]",
            b"[1:2:3:4:5:6:7::]",
            b"[1:2:3:4:5:6:192.0.2.1]",
            b"[FE80::aB:1]",
        ];
        assert_each(valid, |h| host_port(h).is_some());
        let invalid: &[&[u8]] = &[
            b"[2001:db8::10::1]",
            b"[:::::]",
            b"[:::]",
            b"[1.2.3.4]",
            b"[12345::1]",
            b"[1:2:3:4:5:6:7:8:9]",
            b"[1:2:3:4:5:6:7:8::]",
            b"[1:2:3:4:5:6:7]",
            b"[2001:db8:]",
            b"[:2001:db8::1]",
            b"[2001:db8:::192.0.2.1]",
            b"[::192.0.2.256]",
            b"[::1.2.3]",
            b"[1:2:3:4:5:6:7:1.2.3.4]",
            b"[::1%eth0]",
            b"[]",
        ];
        assert_each(invalid, |h| host_port(h).is_none());
    }

    #[test]
    fn ipv4_addresses() {
        assert_each(&[b"192.0.2.1", b"010.0.0.255"], is_ipv4);
        let invalid: &[&[u8]] = &[
            b"192.0.2",
            b"192.0.2.1.5",
            b"192.0.2.256",
            b"1..2.3",
            b"1.2.3.a",
            b"1234.1.1.1",
            b"",
        ];
        assert_each(invalid, |a| !is_ipv4(a));
    }
}
