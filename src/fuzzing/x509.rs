//! The project's own DER reader and X.509 field extraction
//! (`pki::der`, `pki::x509`, `stir::tn_auth`): an `x5u` URL makes
//! callgate parse certificates and CRLs an attacker serves.

use crate::pki::{der, x509};
use crate::stir::certs::Chain;
use crate::stir::tn_auth::TnAuthList;

/// Treats `data` as a certificate, a CRL, an extension value and a
/// certificate body as fetched (PEM or DER), through every reader.
pub fn exercise(data: &[u8]) -> usize {
    let mut sum = 0;
    if let Some((tlv, rest)) = der::read(data) {
        sum += tlv.value.len() + rest.len();
        sum += der::children(tlv.value).map_or(0, |c| c.len());
    }
    sum += der::spki_key(data).map_or(0, <[u8]>::len);
    sum += der::certificate_spki(data).map_or(0, <[u8]>::len);
    sum += der::sec1_key(data).map_or(0, |(k, p)| k.len() + p.map_or(0, <[u8]>::len));
    if let Some(exts) = x509::extensions(data) {
        for e in &exts {
            sum += e.value.len() + usize::from(e.critical);
            sum += x509::dotted(e.oid).map_or(0, |s| s.len());
            sum += x509::policies(e.value).map_or(0, |p| p.len());
            sum += x509::crl_urls(e.value).map_or(0, |u| u.len());
            sum += TnAuthList::parse(e.value).map_or(0, |t| t.ranges.len() + t.numbers.len());
        }
    }
    sum += x509::subject_and_issuer(data).map_or(0, |(s, i)| s.len() + i.len());
    sum += x509::validity(data).map_or(0, |(a, b)| (a ^ b) as usize);
    sum += x509::crl_next_update(data).map_or(0, |t| t as usize);
    sum += x509::dotted(data).map_or(0, |s| s.len());
    sum += x509::policies(data).map_or(0, |p| p.len());
    sum += x509::crl_urls(data).map_or(0, |u| u.len());
    if let Some(t) = TnAuthList::parse(data) {
        sum += usize::from(t.covers("15551234567")) + usize::from(t.is_delegate());
    }
    if let Ok(chain) = Chain::parse(data) {
        sum += chain.crl_urls().len();
    }
    sum
}
