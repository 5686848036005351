//! TLS for SIP (RFC 3261 §26.2.1, §26.3.2.2; RFC 5630): each side's server
//! configuration (its certificate, and with `tls_client_ca` a required,
//! verified client certificate: mutual TLS) and client configuration (the
//! CAs trusted for TLS targets, and the side's certificate presented when
//! a target asks for one), built from the side's PEM files under the
//! protocol policy of [`policy`].
//!
//! A [`SideTls`] is built when the configuration loads (so `check-config`,
//! start and reload all see the same errors, naming the key) and swapped
//! whole on reload: new handshakes use the new one, established
//! connections keep the session they negotiated.

pub mod client_names;
pub mod failure;
pub mod files;
pub mod policy;

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::{self, pki_types::CertificateDer, server::WebPkiClientVerifier};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use client_names::NamedClientVerifier;
pub use failure::HandshakeFailure;
pub use files::TlsFileError;
use files::{check_validity, error};

/// The TLS files of one side, as its configuration section names them.
#[derive(Debug, Clone, Copy)]
pub struct TlsFiles<'a> {
    /// `trunk` or `pbx`, for the keys in error messages.
    pub section: &'a str,
    /// `tls_cert`: the side's certificate chain, leaf first.
    pub cert: Option<&'a Path>,
    /// `tls_key`: its private key.
    pub key: Option<&'a Path>,
    /// `tls_ca`: CAs trusted for the side's TLS targets.
    pub ca: Option<&'a Path>,
    /// `tls_client_ca`: CAs a client certificate on the side's listener
    /// must chain to (mutual TLS).
    pub client_ca: Option<&'a Path>,
    /// `tls_client_names`: with `client_ca`, the names (DNS or IP) a client
    /// certificate must carry one of; empty accepts any name.
    pub client_names: &'a [String],
}

/// One side's TLS, ready to accept and connect.
#[derive(Clone)]
pub struct SideTls {
    /// For the side's TLS listener (`tls_cert` and `tls_key` set).
    pub acceptor: Option<TlsAcceptor>,
    /// For the side's TLS targets (`tls_ca` set).
    pub connector: Option<TlsConnector>,
    /// Whether the listener requires a client certificate.
    pub mutual: bool,
    /// Whether the connector presents the side's certificate when asked.
    pub presents_cert: bool,
    /// notAfter of the side's certificate (Unix seconds).
    pub not_after: Option<i64>,
    /// SHA-256 of the side's leaf certificate (hex), for the reload log.
    pub fingerprint: Option<String>,
}

impl std::fmt::Debug for SideTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideTls")
            .field("acceptor", &self.acceptor.is_some())
            .field("connector", &self.connector.is_some())
            .field("mutual", &self.mutual)
            .field("presents_cert", &self.presents_cert)
            .field("not_after", &self.not_after)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl SideTls {
    /// Reads and checks the side's files at `now` (Unix seconds) and builds
    /// its configurations. Every error names the key of the file at fault.
    pub fn load(files: &TlsFiles<'_>, now: i64) -> Result<SideTls, TlsFileError> {
        let key = |k: &str| format!("{}.{k}", files.section);
        let provider = policy::provider();
        let own = match (files.cert, files.key) {
            (Some(cert), Some(private)) => {
                let chain = files::certificates(&key("tls_cert"), cert)?;
                let not_after =
                    check_validity(&key("tls_cert"), "the certificate", &chain[0], now)?;
                // An expired intermediate fails every peer's chain check
                // just as surely as an expired leaf.
                for (i, c) in chain.iter().enumerate().skip(1) {
                    let which = format!("chain certificate {}", i + 1);
                    check_validity(&key("tls_cert"), &which, c, now)?;
                }
                let private = files::private_key(&key("tls_key"), private)?;
                Some((chain, private, not_after))
            }
            (None, None) => None,
            (Some(_), None) => return Err(error(&key("tls_cert"), "needs tls_key as well")),
            (None, Some(_)) => return Err(error(&key("tls_key"), "needs tls_cert as well")),
        };
        let acceptor = match &own {
            Some((chain, private, _)) => {
                let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(policy::VERSIONS)
                    .map_err(|e| error(&key("tls_cert"), e.to_string()))?;
                let builder = match files.client_ca {
                    Some(path) => {
                        let k = key("tls_client_ca");
                        let roots = roots(&k, path, now)?;
                        let verifier = WebPkiClientVerifier::builder_with_provider(
                            Arc::new(roots),
                            provider.clone(),
                        )
                        .build()
                        .map_err(|e| error(&k, e.to_string()))?;
                        if files.client_names.is_empty() {
                            builder.with_client_cert_verifier(verifier)
                        } else {
                            let named = NamedClientVerifier::new(verifier, files.client_names)
                                .map_err(|bad| {
                                    error(
                                        &key("tls_client_names"),
                                        format!("{:?} is not a DNS name or an IP address", bad.0),
                                    )
                                })?;
                            builder.with_client_cert_verifier(Arc::new(named))
                        }
                    }
                    None => builder.with_no_client_auth(),
                };
                let config = builder
                    .with_single_cert(chain.clone(), private.clone_key())
                    .map_err(|e| key_error(&key("tls_key"), &key("tls_cert"), e))?;
                Some(TlsAcceptor::from(Arc::new(config)))
            }
            None if files.client_ca.is_some() => return Err(error(
                &key("tls_client_ca"),
                "needs tls_cert and tls_key (it checks the clients of this side's TLS listener)",
            )),
            None => None,
        };
        if files.client_ca.is_none() && !files.client_names.is_empty() {
            return Err(error(
                &key("tls_client_names"),
                "needs tls_client_ca (the names are checked on certificates that CA issued)",
            ));
        }
        let connector = match files.ca {
            Some(path) => {
                let roots = roots(&key("tls_ca"), path, now)?;
                let builder = rustls::ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(policy::VERSIONS)
                    .map_err(|e| error(&key("tls_ca"), e.to_string()))?
                    .with_root_certificates(roots);
                let config = match &own {
                    Some((chain, private, _)) => builder
                        .with_client_auth_cert(chain.clone(), private.clone_key())
                        .map_err(|e| key_error(&key("tls_key"), &key("tls_cert"), e))?,
                    None => builder.with_no_client_auth(),
                };
                Some(TlsConnector::from(Arc::new(config)))
            }
            None => None,
        };
        Ok(SideTls {
            mutual: acceptor.is_some() && files.client_ca.is_some(),
            presents_cert: connector.is_some() && own.is_some(),
            acceptor,
            connector,
            not_after: own.as_ref().map(|(_, _, n)| *n),
            fingerprint: own.as_ref().map(|(chain, _, _)| fingerprint(&chain[0])),
        })
    }
}

/// The error of building a configuration from a certificate and key: a
/// key that does not match the certificate names `tls_key`.
fn key_error(key_key: &str, cert_key: &str, e: rustls::Error) -> TlsFileError {
    match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => error(
            key_key,
            format!("the private key does not match the certificate in {cert_key}"),
        ),
        other => error(key_key, format!("unusable with {cert_key}: {other}")),
    }
}

/// The CA certificates of a PEM file as trust anchors; each must be valid
/// now (an expired CA fails every handshake it should admit).
fn roots(key: &str, path: &Path, now: i64) -> Result<rustls::RootCertStore, TlsFileError> {
    let mut store = rustls::RootCertStore::empty();
    for (i, c) in files::certificates(key, path)?.into_iter().enumerate() {
        check_validity(key, &format!("CA certificate {}", i + 1), &c, now)?;
        store
            .add(c)
            .map_err(|e| error(key, format!("CA certificate {}: {e}", i + 1)))?;
    }
    Ok(store)
}

/// SHA-256 of a DER certificate, lower-case hex (as `openssl x509
/// -fingerprint -sha256` prints it, without the colons).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
