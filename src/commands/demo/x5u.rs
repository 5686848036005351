//! The demo's certificate repository: an HTTPS server on loopback that
//! serves the SHAKEN certificate chain at `/sti.pem`, where the demo's
//! PASSporTs' `x5u` points (RFC 8225 §5.1.1, RFC 8224 §6.2.4). One
//! request per connection; it lives as long as the demo's runtime.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use super::pki::DemoPki;

/// Starts the server; the x5u URL of the chain.
pub async fn serve(pki: &DemoPki) -> Result<String, String> {
    let key = rustls::pki_types::PrivateKeyDer::try_from(pki.web_key_der.clone())
        .map_err(|e| format!("x5u server key: {e}"))?;
    let cert = rustls::pki_types::CertificateDer::from(pki.web_cert_der.clone());
    let config = rustls::ServerConfig::builder_with_provider(
        callgate::sip::transport::tls::policy::provider(),
    )
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("x5u server: {e}"))?
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .map_err(|e| format!("x5u server: {e}"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("x5u server: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("x5u server: {e}"))?
        .port();
    let body: Arc<[u8]> = pki.chain_pem.as_bytes().into();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = if head.starts_with(b"GET /sti.pem ") {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/pem-certificate-chain\r\nContent-Length: {}\r\nCache-Control: max-age=3600\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec()
                };
                let _ = tls.write_all(&response).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok(format!("https://127.0.0.1:{port}/sti.pem"))
}
