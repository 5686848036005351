//! The few X.509 certificate fields callgate needs beyond what rustls-webpki
//! checks (RFC 5280 §4.1, §4.2): the validity period (STIR chains and the
//! SIP TLS listeners' own certificates), extensions by OID, certificate
//! policies and CRL distribution points (STIR). Read with the
//! bounds-checked [`der`](super::der) reader; malformed input is `None`.

use super::der::{self, Tlv};

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// id-ce-certificatePolicies, 2.5.29.32 (RFC 5280 §4.2.1.4).
pub const CERTIFICATE_POLICIES: &[u8] = &[0x55, 0x1d, 0x20];
/// id-ce-cRLDistributionPoints, 2.5.29.31 (RFC 5280 §4.2.1.13).
pub const CRL_DISTRIBUTION_POINTS: &[u8] = &[0x55, 0x1d, 0x1f];
/// id-pe-TNAuthList, 1.3.6.1.5.5.7.1.26 (RFC 8226 §9).
pub const TN_AUTH_LIST: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1a];

/// One extension of a certificate.
#[derive(Debug, Clone, Copy)]
pub struct Extension<'a> {
    /// DER contents of the extnID OID.
    pub oid: &'a [u8],
    pub critical: bool,
    /// DER contents of extnValue (the encoded extension).
    pub value: &'a [u8],
}

/// The fields of a TBSCertificate (RFC 5280 §4.1), `version` normalised away.
fn tbs_fields(cert: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let (c, _) = der::read(cert)?;
    if c.tag != SEQUENCE {
        return None;
    }
    let (tbs, _) = der::read(c.value)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let mut fields = der::children(tbs.value)?;
    if fields.first()?.tag == 0xa0 {
        fields.remove(0);
    }
    Some(fields)
}

/// The extensions of a DER certificate (`[3] EXPLICIT Extensions`).
pub fn extensions(cert: &[u8]) -> Option<Vec<Extension<'_>>> {
    let fields = tbs_fields(cert)?;
    let Some(exts) = fields.iter().find(|f| f.tag == 0xa3) else {
        return Some(vec![]);
    };
    let (seq, _) = der::read(exts.value)?;
    der::children(seq.value)?
        .into_iter()
        .map(|ext| {
            let parts = der::children(ext.value)?;
            let oid = parts.first().filter(|t| t.tag == OID)?.value;
            let critical = parts
                .iter()
                .any(|t| t.tag == BOOLEAN && t.value.first().is_some_and(|b| *b != 0));
            let value = parts.iter().rev().find(|t| t.tag == OCTET_STRING)?.value;
            Some(Extension {
                oid,
                critical,
                value,
            })
        })
        .collect()
}

/// The contents of the extension `oid`, if the certificate has it.
pub fn extension<'a>(cert: &'a [u8], oid: &[u8]) -> Option<&'a [u8]> {
    extensions(cert)?
        .into_iter()
        .find(|e| e.oid == oid)
        .map(|e| e.value)
}

/// Raw DER of the subject and issuer names (for self-issued detection).
pub fn subject_and_issuer(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let f = tbs_fields(cert)?;
    // serial, signature, issuer, validity, subject
    Some((f.get(4)?.raw, f.get(2)?.raw))
}

/// notBefore and notAfter as seconds since the Unix epoch (RFC 5280 §4.1.2.5).
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let f = tbs_fields(cert)?;
    let v = f.get(3).filter(|t| t.tag == SEQUENCE)?;
    let times = der::children(v.value)?;
    Some((time(times.first()?)?, time(times.get(1)?)?))
}

/// The nextUpdate of a DER CRL as Unix seconds (RFC 5280 §5.1.2.5).
pub fn crl_next_update(crl: &[u8]) -> Option<i64> {
    let (c, _) = der::read(crl)?;
    let (tbs, _) = der::read(c.value)?;
    let mut fields = der::children(tbs.value)?;
    if fields.first()?.tag == 0x02 {
        fields.remove(0); // version
    }
    // signature, issuer, thisUpdate, nextUpdate
    let next = fields.get(3)?;
    matches!(next.tag, UTC_TIME | GENERALIZED_TIME)
        .then(|| time(next))
        .flatten()
}

/// A UTCTime (YYMMDDHHMMSSZ, years 1950–2049) or GeneralizedTime
/// (YYYYMMDDHHMMSSZ) as Unix seconds.
fn time(t: &Tlv<'_>) -> Option<i64> {
    let s = std::str::from_utf8(t.value).ok()?.strip_suffix('Z')?;
    let (year, rest) = match t.tag {
        UTC_TIME if s.len() == 12 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        GENERALIZED_TIME if s.len() == 14 => (s.get(..4)?.parse().ok()?, &s[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| rest.get(i..i + 2).and_then(|x| x.parse::<i64>().ok());
    let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(super::civil::days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// An OID's contents in dotted form (X.690 §8.19).
pub fn dotted(oid: &[u8]) -> Option<String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for (i, b) in oid.iter().enumerate() {
        acc = acc.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        } else if i + 1 == oid.len() {
            return None;
        }
    }
    (!arcs.is_empty()).then(|| {
        arcs.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    })
}

/// The policy OIDs (dotted) of a certificatePolicies extension value.
pub fn policies(ext: &[u8]) -> Option<Vec<String>> {
    let (seq, _) = der::read(ext)?;
    der::children(seq.value)?
        .iter()
        .map(|info| {
            let parts = der::children(info.value)?;
            dotted(parts.first().filter(|t| t.tag == OID)?.value)
        })
        .collect()
}

/// The URIs (`fullName` GeneralName `[6]`) of a cRLDistributionPoints
/// extension value (RFC 5280 §4.2.1.13).
pub fn crl_urls(ext: &[u8]) -> Option<Vec<String>> {
    let (seq, _) = der::read(ext)?;
    let mut urls = Vec::new();
    for dp in der::children(seq.value)? {
        for field in der::children(dp.value)? {
            // distributionPoint [0] { fullName [0] GeneralNames }
            if field.tag != 0xa0 {
                continue;
            }
            for name in der::children(field.value)? {
                if name.tag != 0xa0 {
                    continue;
                }
                for general in der::children(name.value)? {
                    if general.tag == 0x86 {
                        if let Ok(u) = std::str::from_utf8(general.value) {
                            urls.push(u.to_owned());
                        }
                    }
                }
            }
        }
    }
    Some(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_oids() {
        let utc = Tlv {
            tag: UTC_TIME,
            value: b"250102030405Z",
            raw: b"",
        };
        assert_eq!(time(&utc), Some(1_735_787_045));
        let gen = Tlv {
            tag: GENERALIZED_TIME,
            value: b"19700101000000Z",
            raw: b"",
        };
        assert_eq!(time(&gen), Some(0));
        let bad = Tlv {
            tag: UTC_TIME,
            value: b"251302030405Z",
            raw: b"",
        };
        assert_eq!(time(&bad), None);
        // 2.16.840.1.114569.1.1.3
        let oid = [0x60, 0x86, 0x48, 0x01, 0x86, 0xff, 0x09, 0x01, 0x01, 0x03];
        assert_eq!(dotted(&oid).as_deref(), Some("2.16.840.1.114569.1.1.3"));
        assert_eq!(dotted(TN_AUTH_LIST).as_deref(), Some("1.3.6.1.5.5.7.1.26"));
        assert_eq!(dotted(&[0x86]), None, "truncated arc");
    }
}
