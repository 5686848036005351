//! Why a TLS handshake failed, in words an operator can act on: the label
//! of `callgate_tls_handshake_failures_total{side,direction,reason}` and of
//! the log line. A handshake refused for a missing client certificate
//! (mutual TLS), a certificate from another CA, an expired certificate, a
//! certificate for another name (outbound), an old protocol version or no
//! common cipher suite each has its own reason.

use tokio_rustls::rustls::{CertificateError, Error, PeerIncompatible};

/// The reason a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Mutual TLS: the client sent no certificate.
    NoClientCert,
    /// The peer's certificate does not chain to a trusted CA.
    UnknownCa,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The peer's certificate is not for the address callgate connected to.
    NameMismatch,
    /// The peer's certificate was refused for another reason (revoked,
    /// wrong key usage, bad signature, malformed).
    BadCertificate,
    /// The peer offered only protocol versions callgate refuses (below
    /// TLS 1.2).
    ProtocolVersion,
    /// No cipher suite in common (the peer offered only CBC, RSA key
    /// exchange or other suites outside the policy).
    NoSharedCipher,
    /// Another incompatibility (no common key-exchange group or signature
    /// scheme, a missing extension).
    Incompatible,
    /// The peer refused the handshake with an alert: it rejected
    /// callgate's certificate, or lacks one callgate needs.
    PeerAlert,
    /// Bytes that are not a TLS handshake (a plain SIP client on the TLS
    /// port, a scanner).
    Malformed,
    /// The connection failed or closed during the handshake.
    Io,
}

/// Every reason, with its metric label.
pub const REASONS: [(HandshakeFailure, &str); 12] = [
    (HandshakeFailure::NoClientCert, "no_client_cert"),
    (HandshakeFailure::UnknownCa, "unknown_ca"),
    (HandshakeFailure::Expired, "cert_expired"),
    (HandshakeFailure::NotYetValid, "cert_not_yet_valid"),
    (HandshakeFailure::NameMismatch, "name_mismatch"),
    (HandshakeFailure::BadCertificate, "bad_cert"),
    (HandshakeFailure::ProtocolVersion, "protocol_version"),
    (HandshakeFailure::NoSharedCipher, "no_shared_cipher"),
    (HandshakeFailure::Incompatible, "incompatible"),
    (HandshakeFailure::PeerAlert, "peer_alert"),
    (HandshakeFailure::Malformed, "malformed"),
    (HandshakeFailure::Io, "io"),
];

impl HandshakeFailure {
    /// The reason of a failed handshake, from the I/O error tokio-rustls
    /// returns (it carries the rustls error inside).
    pub fn of(e: &std::io::Error) -> HandshakeFailure {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
            Some(tls) => HandshakeFailure::of_tls(tls),
            None => HandshakeFailure::Io,
        }
    }

    fn of_tls(e: &Error) -> HandshakeFailure {
        use HandshakeFailure as F;
        match e {
            Error::NoCertificatesPresented => F::NoClientCert,
            Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => F::UnknownCa,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => F::Expired,
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    F::NotYetValid
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => F::NameMismatch,
                _ => F::BadCertificate,
            },
            Error::PeerIncompatible(p) => match p {
                PeerIncompatible::NoCipherSuitesInCommon => F::NoSharedCipher,
                // A TLS 1.0/1.1 ClientHello lacks signature_algorithms
                // (new in TLS 1.2, RFC 5246 §7.4.1.4.1), and rustls checks
                // that before the version.
                PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::SignatureAlgorithmsExtensionRequired
                | PeerIncompatible::ServerDoesNotSupportTls12Or13
                | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
                | PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled => F::ProtocolVersion,
                _ => F::Incompatible,
            },
            Error::AlertReceived(_) => F::PeerAlert,
            Error::InvalidMessage(_)
            | Error::InappropriateMessage { .. }
            | Error::InappropriateHandshakeMessage { .. } => F::Malformed,
            _ => F::Incompatible,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        REASONS
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("io", |(_, name)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rustls_error_inside_an_io_error_gives_the_reason() {
        let wrap = |e: Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            HandshakeFailure::of(&wrap(Error::NoCertificatesPresented)),
            HandshakeFailure::NoClientCert
        );
        assert_eq!(
            HandshakeFailure::of(&wrap(Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))),
            HandshakeFailure::UnknownCa
        );
        assert_eq!(
            HandshakeFailure::of(&std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            HandshakeFailure::Io
        );
        assert_eq!(
            HandshakeFailure::NoSharedCipher.as_str(),
            "no_shared_cipher"
        );
    }
}
