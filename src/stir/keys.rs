//! Loading ES256 keys from PEM: private keys (PKCS#8 or SEC1) for signing,
//! public keys from a certificate or a SubjectPublicKeyInfo for verifying.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, ParsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use rustls_pemfile::Item;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no PEM block found")]
    NoPem,
    #[error("PEM: {0}")]
    Pem(String),
    #[error("not a P-256 key usable for ES256: {0}")]
    Unsupported(&'static str),
}

/// An ES256 signing key.
pub struct SigningKey {
    pub(crate) pair: EcdsaKeyPair,
    pub(crate) rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(ES256)")
    }
}

fn items(pem: &[u8]) -> Result<Vec<Item>, KeyError> {
    let items: Vec<Item> = rustls_pemfile::read_all(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| KeyError::Pem(e.to_string()))?;
    if items.is_empty() {
        return Err(KeyError::NoPem);
    }
    Ok(items)
}

impl SigningKey {
    /// From a PEM `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY` (SEC1) block.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, KeyError> {
        let rng = SystemRandom::new();
        for item in items(pem)? {
            let pair = match item {
                Item::Pkcs8Key(k) => {
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, k.secret_pkcs8_der())
                        .map_err(|_| KeyError::Unsupported("PKCS#8 key rejected"))?
                }
                Item::Sec1Key(k) => {
                    let (private, public) = crate::pki::der::sec1_key(k.secret_sec1_der())
                        .ok_or(KeyError::Unsupported("malformed SEC1 key"))?;
                    let public =
                        public.ok_or(KeyError::Unsupported("SEC1 key without its public key"))?;
                    EcdsaKeyPair::from_private_key_and_public_key(
                        &ECDSA_P256_SHA256_FIXED_SIGNING,
                        private,
                        public,
                    )
                    .map_err(|_| KeyError::Unsupported("SEC1 key rejected"))?
                }
                _ => continue,
            };
            return Ok(SigningKey { pair, rng });
        }
        Err(KeyError::Unsupported("no private key in the PEM"))
    }
}

/// An ES256 verification key: an uncompressed P-256 point, parsed once
/// (DESIGN.md: cache parsed public keys) so a warm verification pays for
/// the signature check only.
#[derive(Clone)]
pub struct PublicKey {
    point: Vec<u8>,
    parsed: std::sync::Arc<ParsedPublicKey>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey(P-256, {} bytes)", self.point.len())
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.point == other.point
    }
}

impl Eq for PublicKey {}

impl PublicKey {
    /// From an uncompressed P-256 point (SEC 1 §2.3.3, 65 bytes).
    pub fn from_point(point: &[u8]) -> Result<PublicKey, KeyError> {
        if point.len() != 65 || point[0] != 4 {
            return Err(KeyError::Unsupported("not an uncompressed P-256 point"));
        }
        let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            .map_err(|_| KeyError::Unsupported("not a point on P-256"))?;
        Ok(PublicKey {
            point: point.to_vec(),
            parsed: std::sync::Arc::new(parsed),
        })
    }

    /// The uncompressed point.
    pub fn point(&self) -> &[u8] {
        &self.point
    }

    /// Whether `signature` (r||s, 64 bytes) is a valid ES256 signature of
    /// `message` under this key (RFC 7518 §3.4).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        signature.len() == 64 && self.parsed.verify_sig(message, signature).is_ok()
    }

    /// From PEM: the first `CERTIFICATE` (its SubjectPublicKeyInfo) or
    /// `PUBLIC KEY` block.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, KeyError> {
        for item in items(pem)? {
            let point = match &item {
                Item::X509Certificate(c) => {
                    crate::pki::der::certificate_spki(c).and_then(crate::pki::der::spki_key)
                }
                Item::SubjectPublicKeyInfo(k) => crate::pki::der::spki_key(k),
                _ => continue,
            };
            let point =
                point.ok_or(KeyError::Unsupported("malformed certificate or public key"))?;
            return PublicKey::from_point(point);
        }
        Err(KeyError::Unsupported(
            "no certificate or public key in the PEM",
        ))
    }

    /// From a DER certificate.
    pub fn from_certificate_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        let point = crate::pki::der::certificate_spki(der)
            .and_then(crate::pki::der::spki_key)
            .ok_or(KeyError::Unsupported("malformed certificate"))?;
        PublicKey::from_point(point)
    }
}
