//! Loading ES256 keys from PEM: private keys (PKCS#8 or SEC1) for signing,
//! public keys from a certificate or a SubjectPublicKeyInfo for verifying.

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
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
                Item::Pkcs8Key(k) => EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    k.secret_pkcs8_der(),
                    &rng,
                )
                .map_err(|_| KeyError::Unsupported("PKCS#8 key rejected"))?,
                Item::Sec1Key(k) => {
                    let (private, public) = super::der::sec1_key(k.secret_sec1_der())
                        .ok_or(KeyError::Unsupported("malformed SEC1 key"))?;
                    let public =
                        public.ok_or(KeyError::Unsupported("SEC1 key without its public key"))?;
                    EcdsaKeyPair::from_private_key_and_public_key(
                        &ECDSA_P256_SHA256_FIXED_SIGNING,
                        private,
                        public,
                        &rng,
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

/// An ES256 verification key: an uncompressed P-256 point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(pub Vec<u8>);

impl PublicKey {
    /// From PEM: the first `CERTIFICATE` (its SubjectPublicKeyInfo) or
    /// `PUBLIC KEY` block.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, KeyError> {
        for item in items(pem)? {
            let point = match &item {
                Item::X509Certificate(c) => {
                    super::der::certificate_spki(c).and_then(super::der::spki_key)
                }
                Item::SubjectPublicKeyInfo(k) => super::der::spki_key(k),
                _ => continue,
            };
            let point =
                point.ok_or(KeyError::Unsupported("malformed certificate or public key"))?;
            if point.len() != 65 || point[0] != 4 {
                return Err(KeyError::Unsupported("not an uncompressed P-256 point"));
            }
            return Ok(PublicKey(point.to_vec()));
        }
        Err(KeyError::Unsupported(
            "no certificate or public key in the PEM",
        ))
    }

    /// From a DER certificate.
    pub fn from_certificate_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        let point = super::der::certificate_spki(der)
            .and_then(super::der::spki_key)
            .ok_or(KeyError::Unsupported("malformed certificate"))?;
        Ok(PublicKey(point.to_vec()))
    }
}
