//! Identity headers of a captured dialog made fresh for a replay
//! (`callgate trace to-sipp --resign KEY --x5u URL`).
//!
//! A PASSporT's `iat` is checked against the verifier's clock
//! (RFC 8224 §6.2.2; callgate's `[stir] freshness_secs`), so a captured
//! Identity header is stale by the time the capture is replayed. Each one
//! is decoded (RFC 8225 §7) and signed again with the tester's key: the
//! claims stay those of the capture (`attest`, `orig`, `dest`, `origid`,
//! and `div` or `rcd` of other PASSporT types, RFC 8588 §4, RFC 8946 §3),
//! only `iat` is the conversion time, and the protected header names the
//! tester's certificate (`x5u`, RFC 8225 §5.1) with the captured `ppt`.

use std::path::Path;

use crate::stir::identity::IdentityHeader;
use crate::stir::keys::SigningKey;
use crate::stir::passport::{Claims, Header, Passport};
use crate::stir::sign::sign_passport;

/// Why a captured Identity header could not be re-signed, or the key not
/// be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ResignError {
    #[error("--resign {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("--x5u {x5u:?}: {reason}")]
    X5u { x5u: String, reason: String },
    #[error("cannot re-sign the Identity header of the captured {method}: {reason}")]
    Header { method: String, reason: String },
}

/// The tester's key, certificate URL and the `iat` every re-signed
/// PASSporT gets.
#[derive(Debug)]
pub struct Resigner {
    key: SigningKey,
    x5u: String,
    iat: i64,
}

impl Resigner {
    /// Reads the P-256 private key (PEM, PKCS#8 or SEC1) at `path` and
    /// checks that it signs with `x5u` (an https URL, RFC 8226 §9). The
    /// caller checks the file is readable by its owner only, as for
    /// `callgate sign` (`config::secret::owner_only`: `config` sits above
    /// this module).
    pub fn load(path: &Path, x5u: &str, iat: i64) -> Result<Resigner, ResignError> {
        let bad = |reason: String| ResignError::Key {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let key = SigningKey::from_pem(&pem).map_err(|e| {
            bad(format!(
                "{e} (it must hold the P-256 private key that signs for {x5u})"
            ))
        })?;
        Resigner::new(key, x5u, iat)
    }

    /// From a loaded key; a trial signature checks `x5u` as signing will.
    pub fn new(key: SigningKey, x5u: &str, iat: i64) -> Result<Resigner, ResignError> {
        let header = Header {
            alg: Some("ES256".into()),
            ppt: Some("shaken".into()),
            typ: Some("passport".into()),
            x5u: Some(x5u.into()),
        };
        sign_passport(&key, &header, &Claims::default()).map_err(|e| ResignError::X5u {
            x5u: x5u.into(),
            reason: e.to_string(),
        })?;
        Ok(Resigner {
            key,
            x5u: x5u.into(),
            iat,
        })
    }

    /// The `iat` of the re-signed PASSporTs.
    pub fn iat(&self) -> i64 {
        self.iat
    }

    /// The certificate URL of the re-signed PASSporTs.
    pub fn x5u(&self) -> &str {
        &self.x5u
    }

    /// `value`, a captured Identity header value of a `method` request,
    /// signed again: same claims but `iat`, same `ppt`, this key's `x5u`.
    pub fn resign(&self, method: &str, value: &[u8]) -> Result<String, ResignError> {
        let bad = |reason: String| ResignError::Header {
            method: method.into(),
            reason,
        };
        let identity = IdentityHeader::parse(value).map_err(|(_, why)| bad(why.into()))?;
        let captured = Passport::decode(identity.token).map_err(|(_, why)| bad(why))?;
        let header = Header {
            alg: Some("ES256".into()),
            ppt: captured
                .header
                .ppt
                .or_else(|| identity.ppt.map(str::to_owned))
                .or_else(|| Some("shaken".into())),
            typ: Some("passport".into()),
            x5u: Some(self.x5u.clone()),
        };
        let claims = Claims {
            iat: Some(self.iat),
            ..captured.claims
        };
        sign_passport(&self.key, &header, &claims).map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stir::keys::PublicKey;
    use crate::stir::sign::{identity_header, SignRequest};

    /// A P-256 key pair and its self-signed certificate, as PEM.
    fn pki() -> (String, String) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap_or_else(|e| panic!("{e}"));
        let cert = rcgen::CertificateParams::new(vec!["sti.test".into()])
            .and_then(|p| p.self_signed(&pair))
            .unwrap_or_else(|e| panic!("{e}"));
        (pair.serialize_pem(), cert.pem())
    }

    fn key(pem: &str) -> SigningKey {
        SigningKey::from_pem(pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    const X5U: &str = "https://127.0.0.1:8443/sti.pem";

    #[test]
    fn a_resigned_header_verifies_with_the_key_s_certificate_and_keeps_the_claims() {
        let (carrier_key, _) = pki();
        let (tester_key, tester_cert) = pki();
        let captured = identity_header(
            &key(&carrier_key),
            &SignRequest {
                orig: "+15550199",
                dest: "+15550100",
                attest: 'B',
                origid: "3a47ccd3-9c34-4cd4-a0b2-2e4a4f6c3d11",
                x5u: "https://cert.carrier.example/sti.pem",
                iat: 1_700_000_000,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let resigner =
            Resigner::new(key(&tester_key), X5U, 1_800_000_000).unwrap_or_else(|e| panic!("{e}"));
        let fresh = resigner
            .resign("INVITE", captured.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let parsed = IdentityHeader::parse(fresh.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((parsed.info, parsed.ppt), (Some(X5U), Some("shaken")));
        let passport = Passport::decode(parsed.token).unwrap_or_else(|e| panic!("{e:?}"));
        let cert = PublicKey::from_pem(tester_cert.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(cert.verifies(passport.signing_input.as_bytes(), &passport.signature));
        // The captured PASSporT does not verify with the tester's certificate.
        let old = Passport::decode(captured.split(';').next().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!cert.verifies(old.signing_input.as_bytes(), &old.signature));
        let c = &passport.claims;
        assert_eq!(c.attest.as_deref(), Some("B"));
        assert_eq!(c.orig.tn.as_deref(), Some("15550199"));
        assert_eq!(c.dest.tn, ["15550100"]);
        assert_eq!(
            c.origid.as_deref(),
            Some("3a47ccd3-9c34-4cd4-a0b2-2e4a4f6c3d11")
        );
        assert_eq!(c.iat, Some(1_800_000_000));
        assert_eq!(passport.header.x5u.as_deref(), Some(X5U));
    }

    #[test]
    fn a_wrong_key_file_or_url_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (_, cert) = pki();
        // The certificate given where the private key belongs.
        let path = dir.path().join("sti.pem");
        std::fs::write(&path, cert).unwrap_or_else(|e| panic!("{e}"));
        let err = Resigner::load(&path, X5U, 0).err();
        let Some(ResignError::Key {
            path: named,
            reason,
        }) = err
        else {
            panic!("{err:?}");
        };
        assert_eq!(named, path.display().to_string());
        assert!(reason.contains("P-256 private key"), "{reason}");
        let missing = dir.path().join("none.pem");
        assert!(matches!(
            Resigner::load(&missing, X5U, 0),
            Err(ResignError::Key { .. })
        ));
        let (tester_key, _) = pki();
        let err = Resigner::new(key(&tester_key), "http://cert.test/sti.pem", 0).err();
        assert!(matches!(err, Some(ResignError::X5u { .. })), "{err:?}");
        let resigner = Resigner::new(key(&tester_key), X5U, 0).unwrap_or_else(|e| panic!("{e}"));
        let err = resigner.resign("INVITE", b"not-a-passport;info=<x>").err();
        assert!(
            matches!(&err, Some(ResignError::Header { method, .. }) if method == "INVITE"),
            "{err:?}"
        );
    }
}
