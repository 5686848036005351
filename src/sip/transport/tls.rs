//! TLS configuration (rustls, TLS 1.2 and 1.3 only) from PEM files.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::TransportError;

fn read_pem(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|e| TransportError::Tls(format!("{}: {e}", path.display())))
}

/// A server-side acceptor from a certificate chain and private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TransportError> {
    let certs = rustls_pemfile::certs(&mut read_pem(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TransportError::Tls(format!(
            "{}: no certificate found",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut read_pem(key)?.as_slice())
        .map_err(|e| TransportError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| TransportError::Tls(format!("{}: no private key found", key.display())))?;
    let config = rustls::ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TransportError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client-side connector trusting the CA certificates in `ca` (PEM).
pub fn connector(ca: &Path) -> Result<TlsConnector, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut read_pem(ca)?.as_slice()) {
        let c = c.map_err(|e| TransportError::Tls(format!("{}: {e}", ca.display())))?;
        roots
            .add(c)
            .map_err(|e| TransportError::Tls(format!("{}: {e}", ca.display())))?;
    }
    let config = rustls::ClientConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
