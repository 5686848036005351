//! Who a certificate names: its subject's organisation and common name
//! (RFC 5280 §4.1.2.6, attributes of X.520: `id-at-organizationName`
//! 2.5.4.10, `id-at-commonName` 2.5.4.3) as a short display string for
//! people — `O=Example Telecom, CN=SHAKEN 1234`.
//!
//! A signer's certificate is fetched from the network (RFC 8224 §6.2.4),
//! so what it says is cleaned before anyone reads it: decoded from any
//! of the DirectoryString forms (RFC 5280 §4.1.2.4), control and
//! invisible formatting characters (bidirectional overrides, zero-width
//! spaces) turned into spaces, runs of spaces made one, and each
//! attribute cut at [`MAX_CHARS`] characters, marked with `…`.

use super::der;

/// The longest an attribute is shown, in characters.
pub const MAX_CHARS: usize = 64;

const SET: u8 = 0x31;
const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
/// 2.5.4.3, id-at-commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.4.10, id-at-organizationName.
const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// The organisation and common name of a certificate's subject, cleaned
/// and bounded; at least one of them is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub organization: Option<String>,
    pub common_name: Option<String>,
}

impl Subject {
    /// The subject of a DER certificate; `None` when the certificate is
    /// malformed or its subject has neither an organisation nor a common
    /// name with something printable in it. With several of one
    /// attribute, the first is taken.
    pub fn of_certificate(cert: &[u8]) -> Option<Subject> {
        let (subject, _) = super::x509::subject_and_issuer(cert)?;
        Subject::of_name(subject)
    }

    /// The subject of a DER `Name` (RDNSequence, RFC 5280 §4.1.2.4).
    pub fn of_name(name: &[u8]) -> Option<Subject> {
        let (seq, _) = der::read(name)?;
        if seq.tag != SEQUENCE {
            return None;
        }
        let mut subject = Subject {
            organization: None,
            common_name: None,
        };
        for rdn in der::children(seq.value)? {
            if rdn.tag != SET {
                return None;
            }
            for atv in der::children(rdn.value)? {
                let parts = der::children(atv.value)?;
                let (Some(oid), Some(value)) = (parts.first(), parts.get(1)) else {
                    return None;
                };
                if atv.tag != SEQUENCE || oid.tag != OID {
                    return None;
                }
                let slot = match oid.value {
                    ORGANIZATION => &mut subject.organization,
                    COMMON_NAME => &mut subject.common_name,
                    _ => continue,
                };
                if slot.is_none() {
                    *slot = directory_string(value.tag, value.value).and_then(|s| clean(&s));
                }
            }
        }
        (subject.organization.is_some() || subject.common_name.is_some()).then_some(subject)
    }

    /// Who signed, in a word: the organisation, else the common name.
    pub fn name(&self) -> &str {
        self.organization
            .as_deref()
            .or(self.common_name.as_deref())
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Subject {
    /// `O=<organisation>, CN=<common name>`, either part left out when
    /// the certificate has none.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.organization, &self.common_name) {
            (Some(o), Some(cn)) => write!(f, "O={o}, CN={cn}"),
            (Some(o), None) => write!(f, "O={o}"),
            (None, Some(cn)) => write!(f, "CN={cn}"),
            (None, None) => Ok(()),
        }
    }
}

/// A DirectoryString's text (RFC 5280 §4.1.2.4; X.680 §41 for the
/// encodings): UTF8String, PrintableString, IA5String, VisibleString,
/// TeletexString (read as Latin-1, as most software writes it),
/// BMPString (UTF-16BE), UniversalString (UTF-32BE). Invalid sequences
/// become U+FFFD; another tag is `None`.
fn directory_string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 | 0x1a => Some(String::from_utf8_lossy(bytes).into_owned()),
        0x14 => Some(bytes.iter().map(|b| char::from(*b)).collect()),
        0x1e => Some(
            char::decode_utf16(
                bytes
                    .chunks(2)
                    .map(|p| u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)])),
            )
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        ),
        0x1c => Some(
            bytes
                .chunks(4)
                .map(|q| {
                    let mut w = [0u8; 4];
                    w[..q.len()].copy_from_slice(q);
                    char::from_u32(u32::from_be_bytes(w)).unwrap_or(char::REPLACEMENT_CHARACTER)
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Characters that change how text around them shows without showing
/// themselves (Unicode general category Cf as used for spoofing: the
/// soft hyphen, bidirectional marks, embeddings, overrides and isolates,
/// zero-width characters, the BOM, interlinear annotation).
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{61c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

/// The text as shown: no control or invisible character (each becomes a
/// space), single spaces, trimmed, at most [`MAX_CHARS`] characters (a
/// longer text is cut and ends with `…`). `None` when nothing is left.
fn clean(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = 0;
    let mut space = false;
    for c in text.chars() {
        if c.is_control() || c.is_whitespace() || invisible(c) {
            space = !out.is_empty();
            continue;
        }
        let extra = usize::from(space);
        if chars + extra + 1 > MAX_CHARS {
            out.push('…');
            return Some(out);
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        chars += extra + 1;
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER TLV with a short or long length.
    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match value.len() {
            n @ 0..=0x7f => out.push(n as u8),
            n @ 0x80..=0xff => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(value);
        out
    }

    /// One RDN `{ oid = value }` with the value of string type `tag`.
    fn rdn(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(
            SET,
            &tlv(SEQUENCE, &[tlv(OID, oid), tlv(tag, value)].concat()),
        )
    }

    fn name(rdns: &[Vec<u8>]) -> Vec<u8> {
        tlv(SEQUENCE, &rdns.concat())
    }

    const UTF8: u8 = 0x0c;
    const PRINTABLE: u8 = 0x13;
    /// 2.5.4.6, id-at-countryName.
    const COUNTRY: &[u8] = &[0x55, 0x04, 0x06];

    #[test]
    fn organisation_and_common_name_of_any_string_type() {
        let n = name(&[
            rdn(COUNTRY, PRINTABLE, b"US"),
            rdn(ORGANIZATION, PRINTABLE, b"Example Telecom"),
            rdn(COMMON_NAME, UTF8, "SHAKEN 1234 – Zürich".as_bytes()),
        ]);
        let s = Subject::of_name(&n).expect("subject");
        assert_eq!(s.to_string(), "O=Example Telecom, CN=SHAKEN 1234 – Zürich");
        assert_eq!(s.name(), "Example Telecom");
        // BMPString, UniversalString, TeletexString (Latin-1).
        let bmp: Vec<u8> = "Télécom"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let universal: Vec<u8> = "CN ☎"
            .chars()
            .flat_map(|c| (c as u32).to_be_bytes())
            .collect();
        let n = name(&[
            rdn(ORGANIZATION, 0x1e, &bmp),
            rdn(COMMON_NAME, 0x1c, &universal),
        ]);
        assert_eq!(
            Subject::of_name(&n).map(|s| s.to_string()).as_deref(),
            Some("O=Télécom, CN=CN ☎")
        );
        let n = name(&[rdn(ORGANIZATION, 0x14, b"Caf\xe9")]);
        assert_eq!(
            Subject::of_name(&n).map(|s| s.to_string()).as_deref(),
            Some("O=Café")
        );
    }

    #[test]
    fn either_part_may_be_missing_but_not_both() {
        let cn_only =
            Subject::of_name(&name(&[rdn(COMMON_NAME, UTF8, b"SHAKEN 1234")])).expect("cn only");
        assert_eq!(
            (cn_only.to_string().as_str(), cn_only.name()),
            ("CN=SHAKEN 1234", "SHAKEN 1234")
        );
        let o_only = Subject::of_name(&name(&[rdn(ORGANIZATION, UTF8, b"Example Telecom")]))
            .expect("o only");
        assert_eq!(o_only.to_string(), "O=Example Telecom");
        assert_eq!(
            Subject::of_name(&name(&[rdn(COUNTRY, PRINTABLE, b"US")])),
            None
        );
        assert_eq!(Subject::of_name(&name(&[])), None, "empty subject");
        // Only blanks and controls: nothing to show.
        assert_eq!(
            Subject::of_name(&name(&[rdn(COMMON_NAME, UTF8, b" \t\x00\x1b ")])),
            None
        );
        // An unknown string type is not guessed at.
        assert_eq!(
            Subject::of_name(&name(&[rdn(COMMON_NAME, 0x04, b"octets")])),
            None
        );
        // The first of two organisations.
        let two = name(&[
            rdn(ORGANIZATION, UTF8, b"First"),
            rdn(ORGANIZATION, UTF8, b"Second"),
        ]);
        assert_eq!(
            Subject::of_name(&two)
                .map(|s| s.name().to_owned())
                .as_deref(),
            Some("First")
        );
    }

    #[test]
    fn control_and_invisible_characters_never_reach_a_reader() {
        let n = name(&[
            rdn(
                ORGANIZATION,
                UTF8,
                "Evil\r\nX-Callgate-Risk: low\x1b[31m".as_bytes(),
            ),
            rdn(
                COMMON_NAME,
                UTF8,
                "Bank\u{202e}lapyaP\u{200b}  Ltd".as_bytes(),
            ),
        ]);
        let s = Subject::of_name(&n).expect("subject");
        assert_eq!(
            s.to_string(),
            "O=Evil X-Callgate-Risk: low [31m, CN=Bank lapyaP Ltd"
        );
        assert!(!s
            .to_string()
            .chars()
            .any(|c| c.is_control() || invisible(c)));
        // Invalid UTF-8 is replaced, not dropped silently.
        let bad =
            Subject::of_name(&name(&[rdn(COMMON_NAME, UTF8, b"ok\xff\xfe")])).expect("subject");
        assert_eq!(bad.name(), "ok\u{fffd}\u{fffd}");
    }

    #[test]
    fn a_very_long_attribute_is_cut_and_marked() {
        let long = "Example Telecom ".repeat(40);
        let s =
            Subject::of_name(&name(&[rdn(ORGANIZATION, UTF8, long.as_bytes())])).expect("subject");
        let o = s.organization.clone().unwrap_or_default();
        assert!(o.chars().count() <= MAX_CHARS + 1, "{o}");
        assert!(
            o.starts_with("Example Telecom Example") && o.ends_with('…'),
            "{o}"
        );
        let exact = "x".repeat(MAX_CHARS);
        let s =
            Subject::of_name(&name(&[rdn(COMMON_NAME, UTF8, exact.as_bytes())])).expect("subject");
        assert_eq!(s.common_name.as_deref(), Some(exact.as_str()), "not cut");
    }

    #[test]
    fn malformed_names_are_none() {
        assert_eq!(Subject::of_name(b"\x30\x05\x31"), None, "truncated");
        assert_eq!(Subject::of_name(&tlv(SET, &[])), None, "not a SEQUENCE");
        // An attribute without a value.
        let n = tlv(SEQUENCE, &tlv(SET, &tlv(SEQUENCE, &tlv(OID, COMMON_NAME))));
        assert_eq!(Subject::of_name(&n), None);
        assert_eq!(Subject::of_certificate(b"garbage"), None);
    }
}
