//! STI certificates (RFC 8226, ATIS-1000080): trust anchors, chain
//! validation at the PASSporT's `iat`, the SHAKEN certificate policy, the
//! TNAuthList extension, and a per-chain memo of the validation so that a
//! warm cache costs one signature check per call.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyPurposeIdIter};

use super::keys::PublicKey;
use super::tn_auth::TnAuthList;
use super::Cause;
use crate::pki::name::Subject;
use crate::pki::{der, x509};

/// The SHAKEN certificate policies accepted by default: the arc of the US
/// SHAKEN Certificate Policy (2.16.840.1.114569.1.1.x, every version).
pub const DEFAULT_POLICIES: &[&str] = &["2.16.840.1.114569.1.1.*"];

/// The STI trust anchors (roots of the STI-PA's approved CAs), the
/// certificate revocation lists checked along every chain, and the
/// certificate policies an STI certificate must carry.
#[derive(Debug)]
pub struct TrustStore {
    anchors: Vec<TrustAnchor<'static>>,
    crls: Vec<webpki::CertRevocationList<'static>>,
    /// Accepted policy OIDs (dotted; a trailing `.*` accepts the arc).
    /// Empty: the policy is not checked.
    policies: Vec<String>,
}

impl Default for TrustStore {
    fn default() -> TrustStore {
        TrustStore {
            anchors: vec![],
            crls: vec![],
            policies: DEFAULT_POLICIES.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
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

    /// Sets the accepted certificate policies (ATIS-1000080 §6.4.1);
    /// an empty list disables the check.
    pub fn set_policies(&mut self, policies: Vec<String>) {
        self.policies = policies;
    }

    fn policy_accepted(&self, oid: &str) -> bool {
        self.policies.iter().any(|p| match p.strip_suffix('*') {
            Some(arc) => oid.starts_with(arc),
            None => oid == p,
        })
    }

    pub fn len(&self) -> usize {
        self.anchors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// A certificate chain as served at `x5u`: end entity first (ATIS-1000080 §6.3.2).
#[derive(Debug)]
pub struct Chain {
    pub certs: Vec<CertificateDer<'static>>,
    /// The last successful validation and the `iat` interval it holds for.
    memo: Mutex<Option<Memo>>,
    /// CRL distribution points of the certificates, read once.
    crl_urls: std::sync::OnceLock<Vec<String>>,
}

/// A validated chain: valid for any `iat` in `[from, until]` under the
/// same trust store (the memo lives and dies with the cached chain, and a
/// reload builds new chains).
#[derive(Debug, Clone)]
struct Memo {
    from: i64,
    until: i64,
    /// The generation of the fetched CRLs it was checked against.
    crl_generation: u64,
    cert: StiCert,
}

impl Chain {
    pub fn new(certs: Vec<CertificateDer<'static>>) -> Chain {
        Chain {
            certs,
            memo: Mutex::new(None),
            crl_urls: std::sync::OnceLock::new(),
        }
    }

    /// The http(s) CRL distribution points of the end entity and the
    /// intermediates (RFC 5280 §4.2.1.13), without duplicates.
    pub fn crl_urls(&self) -> &[String] {
        self.crl_urls.get_or_init(|| {
            let mut urls: Vec<String> = Vec::new();
            for c in &self.certs {
                let found = x509::extension(c, x509::CRL_DISTRIBUTION_POINTS)
                    .and_then(x509::crl_urls)
                    .unwrap_or_default();
                for u in found {
                    if (u.starts_with("http://") || u.starts_with("https://")) && !urls.contains(&u)
                    {
                        urls.push(u);
                    }
                }
            }
            urls
        })
    }

    /// Parses PEM (the ATIS format) or a single DER certificate.
    pub fn parse(body: &[u8]) -> Result<Chain, String> {
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &body[..])
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if !certs.is_empty() {
            return Ok(Chain::new(certs));
        }
        if der::read(body).is_some_and(|(t, rest)| t.tag == 0x30 && rest.is_empty()) {
            return Ok(Chain::new(vec![CertificateDer::from(body.to_vec())]));
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
    /// The whole TNAuthList (numbers of a delegate certificate).
    pub tn_auth: TnAuthList,
    /// The end entity's subject, for people (who signed).
    pub subject: Option<Subject>,
}

/// STI certificates carry no extended key usage requirement.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// A CRL fetched from a distribution point, and the size of its DER.
#[derive(Debug)]
pub struct Crl(webpki::CertRevocationList<'static>, usize);

impl super::cache::Weight for Crl {
    fn weight(&self) -> usize {
        self.1
    }
}

impl super::cache::Weight for Chain {
    fn weight(&self) -> usize {
        self.certs.iter().map(|c| c.len()).sum()
    }
}

/// Parses a fetched CRL (DER or PEM); it stays fresh until its nextUpdate.
pub fn parse_crl(body: &[u8]) -> Result<(Crl, Option<Duration>), String> {
    let pem: Vec<_> = rustls_pemfile::crls(&mut &body[..])
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let der: &[u8] = pem.first().map(|c| c.as_ref()).unwrap_or(body);
    let crl =
        webpki::OwnedCertRevocationList::from_der(der).map_err(|e| format!("not a CRL: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let ttl = x509::crl_next_update(der)
        .and_then(|n| u64::try_from(n - now).ok())
        .map(Duration::from_secs);
    Ok((Crl(webpki::CertRevocationList::Owned(crl), der.len()), ttl))
}

/// CRLs fetched for one validation, and the generation of the cache they
/// came from (a change invalidates remembered validations).
#[derive(Default)]
pub struct FetchedCrls {
    pub crls: Vec<std::sync::Arc<Crl>>,
    pub generation: u64,
}

impl FetchedCrls {
    /// No fetched CRL yet: the validation that decides whether the chain's
    /// distribution points may be fetched at all. Its result is
    /// remembered under a generation no CRL cache reaches, so it is never
    /// taken for a validation against fetched CRLs.
    pub fn unfetched() -> FetchedCrls {
        FetchedCrls {
            crls: Vec::new(),
            generation: u64::MAX,
        }
    }
}

/// Whether `chain` is remembered as valid at `iat` against the fetched
/// CRLs of `generation` (then [`validate`] with them costs no chain
/// validation, and no CRL fetch decision is pending).
pub fn remembered(chain: &Chain, iat: i64, generation: u64) -> bool {
    chain
        .memo
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|m| m.from <= iat && iat <= m.until && m.crl_generation == generation)
}

/// Validates `chain` to `trust` as of `iat` (RFC 8224 §6.2.2: the
/// certificate must have been valid when the PASSporT was signed), checks
/// revocation against the configured and `fetched` CRLs, the SHAKEN
/// certificate policy (ATIS-1000080 §6.4.1), and requires a TNAuthList
/// (RFC 8226 §9); for a delegate certificate, `orig` must be one of its
/// numbers (RFC 9060 §4). Failures are 437 Unsupported Credential.
pub fn validate(
    chain: &Chain,
    trust: &TrustStore,
    iat: i64,
    orig: &str,
    fetched: &FetchedCrls,
) -> Result<StiCert, (Cause, String)> {
    let cached = {
        let memo = chain.memo.lock().unwrap_or_else(|p| p.into_inner());
        memo.as_ref()
            .filter(|m| m.from <= iat && iat <= m.until && m.crl_generation == fetched.generation)
            .map(|m| m.cert.clone())
    };
    let cert = match cached {
        Some(c) => c,
        None => {
            let (cert, from, until) = validate_chain(chain, trust, iat, &fetched.crls)?;
            *chain.memo.lock().unwrap_or_else(|p| p.into_inner()) = Some(Memo {
                from,
                until,
                crl_generation: fetched.generation,
                cert: cert.clone(),
            });
            cert
        }
    };
    if cert.tn_auth.is_delegate() && !cert.tn_auth.covers(orig) {
        return Err((
            Cause::UnsupportedCredential,
            format!("delegate certificate does not cover the calling number {orig}"),
        ));
    }
    Ok(cert)
}

/// The full validation; returns the certificate and the `iat` interval in
/// which every certificate of the chain is valid.
fn validate_chain(
    chain: &Chain,
    trust: &TrustStore,
    iat: i64,
    fetched: &[std::sync::Arc<Crl>],
) -> Result<(StiCert, i64, i64), (Cause, String)> {
    let bad = |why: String| (Cause::UnsupportedCredential, why);
    let ee_der = chain
        .certs
        .first()
        .ok_or_else(|| bad("empty certificate chain".into()))?;
    let ee = EndEntityCert::try_from(ee_der).map_err(|e| bad(format!("certificate: {e}")))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(iat).unwrap_or(0)));
    let algs: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
        webpki::aws_lc_rs::ECDSA_P256_SHA256,
        webpki::aws_lc_rs::ECDSA_P384_SHA384,
        webpki::aws_lc_rs::ECDSA_P256_SHA384,
    ];
    // Revocation (RFC 5280 §6.3) against the configured and fetched CRLs
    // (each CRL's signature is verified with its issuer's key), along the
    // whole chain; a certificate whose issuer has no CRL is not refused.
    // The first CRL of the issuer is used: fetched ones (fresher) first.
    let crl_refs: Vec<&webpki::CertRevocationList<'static>> = fetched
        .iter()
        .map(|c| &c.0)
        .chain(trust.crls.iter())
        .collect();
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
    // The SHAKEN policy on the end entity and on every intermediate served
    // (a self-issued root in the chain is exempt).
    if !trust.policies.is_empty() {
        for (i, c) in chain.certs.iter().enumerate() {
            let self_issued = x509::subject_and_issuer(c).is_some_and(|(s, i)| s == i);
            if i > 0 && self_issued {
                continue;
            }
            let found = x509::extension(c, x509::CERTIFICATE_POLICIES)
                .and_then(x509::policies)
                .unwrap_or_default();
            if !found.iter().any(|oid| trust.policy_accepted(oid)) {
                let which = if i == 0 {
                    "certificate"
                } else {
                    "intermediate"
                };
                return Err(bad(format!(
                    "{which} lacks the SHAKEN certificate policy (has {})",
                    if found.is_empty() {
                        "none".to_owned()
                    } else {
                        found.join(",")
                    }
                )));
            }
        }
    }
    let tn_auth = x509::extension(ee_der, x509::TN_AUTH_LIST)
        .ok_or_else(|| bad("certificate has no TNAuthList".into()))?;
    let tn_auth = TnAuthList::parse(tn_auth)
        .ok_or_else(|| bad("certificate TNAuthList is malformed".into()))?;
    let key = PublicKey::from_certificate_der(ee_der).map_err(|e| bad(e.to_string()))?;
    let (mut from, mut until) = (i64::MIN, i64::MAX);
    for c in chain.certs.iter() {
        if let Some((nb, na)) = x509::validity(c) {
            from = from.max(nb);
            until = until.min(na);
        } else {
            // Unknown validity: do not remember this result.
            (from, until) = (i64::MAX, i64::MIN);
        }
    }
    Ok((
        StiCert {
            key,
            spc: tn_auth.spc.clone(),
            tn_auth,
            subject: Subject::of_certificate(ee_der),
        },
        from,
        until,
    ))
}
