//! STI certificates (RFC 8226, ATIS-1000080): trust anchors, chain
//! validation at the PASSporT's `iat`, and the TNAuthList extension.

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyPurposeIdIter};

use super::der;
use super::keys::PublicKey;
use super::Cause;

/// The STI trust anchors (roots of the STI-PA's approved CAs) and the
/// certificate revocation lists checked along every chain.
#[derive(Debug, Default)]
pub struct TrustStore {
    anchors: Vec<TrustAnchor<'static>>,
    crls: Vec<webpki::CertRevocationList<'static>>,
}

impl TrustStore {
    /// Loads every certificate of every `*.pem`/`*.crt` file in `dir`.
    pub fn from_dir(dir: &Path) -> Result<TrustStore, String> {
        let mut store = TrustStore::default();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if matches!(p.extension().and_then(|x| x.to_str()), Some("pem" | "crt")) {
                let pem = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                store
                    .add_pem(&pem)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
        if store.anchors.is_empty() {
            return Err(format!(
                "{}: no trust anchor certificates (*.pem, *.crt)",
                dir.display()
            ));
        }
        Ok(store)
    }

    /// Adds the certificates of a PEM text.
    pub fn add_pem(&mut self, pem: &[u8]) -> Result<(), String> {
        for c in rustls_pemfile::certs(&mut &pem[..]) {
            let c = c.map_err(|e| e.to_string())?;
            let anchor = webpki::anchor_from_trusted_cert(&c)
                .map_err(|e| format!("not a usable trust anchor: {e}"))?;
            self.anchors.push(anchor.to_owned());
        }
        Ok(())
    }

    /// Adds the CRLs of a PEM (`X509 CRL`) or DER file (RFC 5280 §5).
    pub fn add_crl(&mut self, data: &[u8]) -> Result<(), String> {
        let pems: Vec<_> = rustls_pemfile::crls(&mut &data[..])
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let ders: Vec<Vec<u8>> = if pems.is_empty() {
            vec![data.to_vec()]
        } else {
            pems.iter().map(|c| c.as_ref().to_vec()).collect()
        };
        for der in ders {
            let crl = webpki::OwnedCertRevocationList::from_der(&der)
                .map_err(|e| format!("not a CRL: {e}"))?;
            self.crls.push(webpki::CertRevocationList::Owned(crl));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.anchors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// A certificate chain as served at `x5u`: end entity first (ATIS-1000080 §6.3.2).
#[derive(Debug, Clone)]
pub struct Chain {
    pub certs: Vec<CertificateDer<'static>>,
}

impl Chain {
    /// Parses PEM (the ATIS format) or a single DER certificate.
    pub fn parse(body: &[u8]) -> Result<Chain, String> {
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &body[..])
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if !certs.is_empty() {
            return Ok(Chain { certs });
        }
        if der::read(body).is_some_and(|(t, rest)| t.tag == 0x30 && rest.is_empty()) {
            return Ok(Chain {
                certs: vec![CertificateDer::from(body.to_vec())],
            });
        }
        Err("not a PEM or DER certificate".into())
    }
}

/// What a valid STI certificate contributes to the verification.
#[derive(Debug, Clone)]
pub struct StiCert {
    pub key: PublicKey,
    /// Service Provider Code from TNAuthList (RFC 8226 §9).
    pub spc: Option<String>,
}

/// STI certificates carry no extended key usage requirement.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// id-pe-TNAuthList, 1.3.6.1.5.5.7.1.26 (RFC 8226 §9), DER contents.
const TN_AUTH_LIST: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1a];

/// The DER value of the TNAuthList extension of a certificate, if present.
fn tn_auth_list(cert: &[u8]) -> Option<&[u8]> {
    let (c, _) = der::read(cert)?;
    let (tbs, _) = der::read(c.value)?;
    let fields = der::children(tbs.value)?;
    let exts = fields.iter().find(|f| f.tag == 0xa3)?;
    let (seq, _) = der::read(exts.value)?;
    for ext in der::children(seq.value)? {
        let parts = der::children(ext.value)?;
        if parts
            .first()
            .is_some_and(|oid| oid.tag == 0x06 && oid.value == TN_AUTH_LIST)
        {
            return parts.iter().rev().find(|p| p.tag == 0x04).map(|p| p.value);
        }
    }
    None
}

/// The SPC of a TNAuthList: `TNEntry ::= CHOICE { spc [0] ServiceProviderCode, ... }`.
fn spc_of(tn_auth: &[u8]) -> Option<String> {
    let (list, _) = der::read(tn_auth)?;
    for entry in der::children(list.value)? {
        if entry.tag == 0xa0 {
            let (s, _) = der::read(entry.value)?;
            return std::str::from_utf8(s.value).ok().map(str::to_owned);
        }
    }
    None
}

/// Validates `chain` to `trust` as of `iat` (RFC 8224 §6.2.2: the
/// certificate must have been valid when the PASSporT was signed), and
/// requires a TNAuthList (ATIS-1000080 §5.3). Failures are 437.
pub fn validate(chain: &Chain, trust: &TrustStore, iat: i64) -> Result<StiCert, (Cause, String)> {
    let bad = |why: String| (Cause::UnsupportedCredential, why);
    let ee_der = chain
        .certs
        .first()
        .ok_or_else(|| bad("empty certificate chain".into()))?;
    let ee = EndEntityCert::try_from(ee_der).map_err(|e| bad(format!("certificate: {e}")))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(iat).unwrap_or(0)));
    let algs: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
        webpki::ring::ECDSA_P256_SHA384,
    ];
    // Revocation (RFC 5280 §6.3) against the configured CRLs, along the
    // whole chain; a certificate whose issuer has no CRL is not refused.
    let crl_refs: Vec<&webpki::CertRevocationList<'static>> = trust.crls.iter().collect();
    let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs)
        .ok()
        .map(|b| {
            b.with_depth(webpki::RevocationCheckDepth::Chain)
                .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
                .build()
        });
    ee.verify_for_usage(
        algs,
        &trust.anchors,
        &chain.certs[1..],
        time,
        AnyUsage,
        revocation,
        None,
    )
    .map_err(|e| bad(format!("chain: {e}")))?;
    let tn = tn_auth_list(ee_der).ok_or_else(|| bad("certificate has no TNAuthList".into()))?;
    let key = PublicKey::from_certificate_der(ee_der).map_err(|e| bad(e.to_string()))?;
    Ok(StiCert {
        key,
        spc: spc_of(tn),
    })
}
