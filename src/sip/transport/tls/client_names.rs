//! `tls_client_names`: mutual TLS that also pins who the client is. A
//! client certificate must chain to `tls_client_ca` (the wrapped
//! verifier) **and** name one of the configured DNS names or IP addresses
//! in its subjectAltName (RFC 5280 §4.2.1.6; the subject's CN is not
//! read). Without it any certificate the CA issued is accepted, which is
//! too wide when the CA is a public or shared one.

use std::sync::Arc;

use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
};

/// A client verifier that checks the chain with `inner`, then the names.
#[derive(Debug)]
pub struct NamedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<ServerName<'static>>,
}

/// A name of `tls_client_names` that is neither a DNS name nor an IP
/// address.
#[derive(Debug)]
pub struct BadName(pub String);

impl NamedClientVerifier {
    pub fn new(
        inner: Arc<dyn ClientCertVerifier>,
        names: &[String],
    ) -> Result<NamedClientVerifier, BadName> {
        let names = names
            .iter()
            .map(|n| {
                ServerName::try_from(n.as_str())
                    .map(|s| s.to_owned())
                    .map_err(|_| BadName(n.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NamedClientVerifier { inner, names })
    }

    /// Whether the certificate names one of the accepted names.
    fn names_one(&self, cert: &CertificateDer<'_>) -> bool {
        let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
            return false;
        };
        self.names
            .iter()
            .any(|n| ee.verify_is_valid_for_subject_name(n).is_ok())
    }
}

impl ClientCertVerifier for NamedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.names_one(end_entity) {
            Ok(verified)
        } else {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
