//! A minimal DER reader (X.690 §8, definite lengths only), enough to reach
//! the SubjectPublicKeyInfo of a certificate and the fields of SEC1 and
//! SPKI keys. Every read is bounds-checked; malformed input is `None`.

/// One TLV element.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u8,
    /// Contents octets.
    pub value: &'a [u8],
    /// The whole element, tag and length included.
    pub raw: &'a [u8],
}

/// Reads the TLV at the start of `input`; returns it and the rest.
pub fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *input.first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers are not used in what we read
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
            2 + n,
        )
    };
    let end = header.checked_add(len)?;
    let value = input.get(header..end)?;
    Some((
        Tlv {
            tag,
            value,
            raw: &input[..end],
        },
        &input[end..],
    ))
}

/// The elements inside a constructed element's contents.
pub fn children(mut contents: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !contents.is_empty() {
        let (t, rest) = read(contents)?;
        out.push(t);
        contents = rest;
    }
    Some(out)
}

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;

/// The public key bytes (an uncompressed EC point for P-256) of a DER
/// SubjectPublicKeyInfo (RFC 5280 §4.1.2.7).
pub fn spki_key(spki: &[u8]) -> Option<&[u8]> {
    let (seq, _) = read(spki)?;
    if seq.tag != SEQUENCE {
        return None;
    }
    let parts = children(seq.value)?;
    let bits = parts.get(1).filter(|t| t.tag == BIT_STRING)?;
    // The first contents octet counts unused bits; it must be 0 for a key.
    match bits.value.split_first()? {
        (0, key) => Some(key),
        _ => None,
    }
}

/// The DER SubjectPublicKeyInfo of a DER certificate (RFC 5280 §4.1).
pub fn certificate_spki(cert: &[u8]) -> Option<&[u8]> {
    let (c, _) = read(cert)?;
    let (tbs, _) = read(c.value)?;
    if c.tag != SEQUENCE || tbs.tag != SEQUENCE {
        return None;
    }
    let fields = children(tbs.value)?;
    // version [0] EXPLICIT is optional; then serial, signature, issuer,
    // validity, subject, subjectPublicKeyInfo.
    let skip = usize::from(fields.first()?.tag == 0xa0);
    fields
        .get(skip + 5)
        .filter(|t| t.tag == SEQUENCE)
        .map(|t| t.raw)
}

/// (private scalar, public point) of a DER SEC1 ECPrivateKey (RFC 5915 §3).
pub fn sec1_key(der: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (seq, _) = read(der)?;
    let parts = children(seq.value)?;
    let private = parts.get(1).filter(|t| t.tag == OCTET_STRING)?.value;
    let public = parts
        .iter()
        .find(|t| t.tag == 0xa1)
        .and_then(|t| read(t.value))
        .and_then(|(bits, _)| match bits.value.split_first() {
            Some((0, key)) if bits.tag == BIT_STRING => Some(key),
            _ => None,
        });
    Some((private, public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_bounds() {
        assert!(read(&[0x30, 0x03, 0x02, 0x01]).is_none(), "truncated");
        let (t, rest) = read(&[0x04, 0x01, 0xaa, 0xff]).unwrap_or_else(|| panic!("tlv"));
        assert_eq!((t.tag, t.value, rest), (0x04, &[0xaa][..], &[0xff][..]));
        let long = [&[0x04, 0x81, 0x80][..], &[7u8; 128]].concat();
        assert_eq!(read(&long).map(|(t, _)| t.value.len()), Some(128));
        assert!(read(&[0x04, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(spki_key(&[0x30, 0x00]).is_none());
        assert!(certificate_spki(b"garbage").is_none());
    }
}
