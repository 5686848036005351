//! The TNAuthList certificate extension (RFC 8226 §9): what numbers a
//! certificate may sign for. A service-provider certificate names an SPC;
//! a delegate certificate (RFC 9060, ATIS-1000092) names telephone numbers
//! and ranges, and then `orig` must be one of them.
//!
//! ```text
//! TNAuthorizationList ::= SEQUENCE SIZE (1..MAX) OF TNEntry
//! TNEntry ::= CHOICE {
//!   spc   [0] ServiceProviderCode,     -- IA5String
//!   range [1] TelephoneNumberRange,    -- SEQUENCE { start TelephoneNumber, count INTEGER }
//!   one   [2] TelephoneNumber }        -- IA5String, digits
//! ```
//! Tags are explicit, as issued by the STI-CAs.

use super::passport::canonical_tn;
use crate::pki::der;

const IA5_STRING: u8 = 0x16;
const INTEGER: u8 = 0x02;

/// A decoded TNAuthList.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TnAuthList {
    /// Service Provider Code (the first, if several).
    pub spc: Option<String>,
    /// Number ranges: first number and count.
    pub ranges: Vec<(String, u64)>,
    /// Single numbers.
    pub numbers: Vec<String>,
}

impl TnAuthList {
    /// Decodes the extension value; `None` when it is malformed or empty.
    pub fn parse(ext: &[u8]) -> Option<TnAuthList> {
        let (list, _) = der::read(ext)?;
        let mut out = TnAuthList::default();
        let entries = der::children(list.value)?;
        if entries.is_empty() {
            return None;
        }
        for entry in entries {
            let (inner, _) = der::read(entry.value)?;
            match entry.tag {
                0xa0 => {
                    let spc = std::str::from_utf8(inner.value).ok()?;
                    out.spc.get_or_insert_with(|| spc.to_owned());
                }
                0xa1 => {
                    let parts = der::children(inner.value)?;
                    let start = parts.first().filter(|t| t.tag == IA5_STRING)?;
                    let count = parts.get(1).filter(|t| t.tag == INTEGER)?;
                    if count.value.len() > 8 {
                        return None;
                    }
                    let n = count
                        .value
                        .iter()
                        .fold(0u64, |a, b| (a << 8) | u64::from(*b));
                    out.ranges
                        .push((std::str::from_utf8(start.value).ok()?.to_owned(), n));
                }
                0xa2 if inner.tag == IA5_STRING => {
                    out.numbers
                        .push(std::str::from_utf8(inner.value).ok()?.to_owned());
                }
                _ => return None,
            }
        }
        Some(out)
    }

    /// Whether this is a delegate certificate: it names numbers.
    pub fn is_delegate(&self) -> bool {
        !self.ranges.is_empty() || !self.numbers.is_empty()
    }

    /// Whether the list authorises `tn` (canonical digits compared; a
    /// range covers `count` consecutive numbers of the same length).
    pub fn covers(&self, tn: &str) -> bool {
        let tn = canonical_tn(tn);
        if tn.is_empty() {
            return false;
        }
        if self.numbers.iter().any(|n| canonical_tn(n) == tn) {
            return true;
        }
        self.ranges.iter().any(|(start, count)| {
            let start = canonical_tn(start);
            match (start.parse::<u128>(), tn.parse::<u128>()) {
                (Ok(s), Ok(t)) if start.len() == tn.len() => t >= s && t - s < u128::from(*count),
                _ => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spc_ranges_and_numbers() {
        let spc = [0x30, 0x08, 0xa0, 0x06, 0x16, 0x04, b'1', b'2', b'3', b'4'];
        let l = TnAuthList::parse(&spc).unwrap_or_default();
        assert_eq!(l.spc.as_deref(), Some("1234"));
        assert!(!l.is_delegate());
        // range 15550100 + 100, and one number 15559999
        let mut d = vec![0xa1, 0x0f, 0x30, 0x0d, 0x16, 0x08];
        d.extend_from_slice(b"15550100");
        d.extend_from_slice(&[0x02, 0x01, 100]);
        d.extend_from_slice(&[0xa2, 0x0a, 0x16, 0x08]);
        d.extend_from_slice(b"15559999");
        let mut ext = vec![0x30, d.len() as u8];
        ext.extend_from_slice(&d);
        let l = TnAuthList::parse(&ext).unwrap_or_default();
        assert!(l.is_delegate());
        assert!(l.covers("+1 555 0100"));
        assert!(l.covers("15550199"));
        assert!(!l.covers("15550200"));
        assert!(!l.covers("155501000"), "different length");
        assert!(l.covers("15559999"));
        assert!(!l.covers(""));
        assert_eq!(TnAuthList::parse(&[0x30, 0x00]), None);
    }
}
