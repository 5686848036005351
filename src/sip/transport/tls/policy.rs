//! The TLS protocol policy of every SIP connection, inbound and outbound:
//! which protocol versions and cipher suites callgate offers and accepts.
//!
//! - Versions: TLS 1.3 and TLS 1.2 only. TLS 1.0 and 1.1 are deprecated
//!   (RFC 8996) and SSL is broken; rustls implements none of them, and the
//!   list is written out here so the policy is explicit and tested
//!   (`tests/tls.rs` offers `openssl s_client -tls1_1` and sees it refused).
//! - Suites: the TLS 1.3 AEAD suites, and for TLS 1.2 only ephemeral
//!   elliptic-curve Diffie-Hellman (forward secrecy) with an AEAD cipher
//!   (AES-GCM or ChaCha20-Poly1305), as BCP 195 (RFC 9325 §4.2)
//!   recommends. No CBC suite (Lucky Thirteen, padding oracles), no static
//!   RSA key exchange (no forward secrecy, ROBOT), no SHA-1 MAC.
//!
//! The list is set on the crypto provider itself, so a later rustls whose
//! defaults grow cannot widen it unnoticed.

use std::sync::Arc;

use tokio_rustls::rustls::crypto::aws_lc_rs::{self, cipher_suite as suite};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::{version, SupportedCipherSuite, SupportedProtocolVersion};

/// The protocol versions callgate speaks, newest first.
pub static VERSIONS: &[&SupportedProtocolVersion] = &[&version::TLS13, &version::TLS12];

/// The cipher suites callgate offers and accepts, in preference order.
pub static CIPHER_SUITES: [SupportedCipherSuite; 9] = [
    suite::TLS13_AES_256_GCM_SHA384,
    suite::TLS13_AES_128_GCM_SHA256,
    suite::TLS13_CHACHA20_POLY1305_SHA256,
    suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// aws-lc-rs restricted to [`CIPHER_SUITES`].
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: CIPHER_SUITES.to_vec(),
        ..aws_lc_rs::default_provider()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aead_suites_with_forward_secrecy() {
        for s in provider().cipher_suites.iter() {
            let name = format!("{:?}", s.suite());
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}: TLS 1.2 suites must use ECDHE"
            );
            assert!(
                name.contains("_GCM_") || name.contains("CHACHA20_POLY1305"),
                "{name}: AEAD only"
            );
        }
    }
}
