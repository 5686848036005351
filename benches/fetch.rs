//! Criterion benchmark of one x5u fetch (`stir::fetch::fetch`) from a
//! loopback HTTPS server: connect, TLS 1.3 handshake, `GET`, a 2 KiB PEM
//! body read under the size limit — the whole cold path a call pays when
//! its certificate is not cached.
//! - `fetch_literal_ip`: `https://127.0.0.1:PORT/x.pem` (no lookup);
//! - `fetch_localhost_name`: `https://localhost:PORT/x.pem` (the name
//!   resolved on the blocking pool and every address checked first);
//! - `tls_handshake_raw`: a bare tokio-rustls connect and handshake to the
//!   same server — the floor under any fetch (the ratio to
//!   `fetch_literal_ip` is what the HTTP client adds).
//!
//! `cargo bench --profile dev --bench fetch` (docs/benchmarks.md)

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use callgate::stir::fetch::{fetch, tls_config, FetchOptions};

/// A loopback HTTPS server answering every request with `body`; returns
/// its port and the CA's PEM.
fn server(rt: &tokio::runtime::Runtime, body: Vec<u8>) -> (u16, String) {
    let ca_key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "bench CA");
    let ca = p.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let der_key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der_key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let body = Arc::new(body);
    rt.spawn(async move {
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
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-pem-file\r\nCache-Control: max-age=3600\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, ca.pem())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let body = b"-----BEGIN CERTIFICATE-----\n"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'A', 2048))
        .collect::<Vec<u8>>();
    let (port, ca_pem) = server(&rt, body.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write ca");
    let tls = tls_config(std::slice::from_ref(&ca_file)).expect("tls config");
    let opts = FetchOptions {
        tls: tls.clone(),
        timeout: Duration::from_secs(2),
        max_bytes: 64 * 1024,
        allow_private: true,
        proxy: None,
    };
    let mut g = c.benchmark_group("fetch");
    for (name, host) in [
        ("fetch_literal_ip", "127.0.0.1"),
        ("fetch_localhost_name", "localhost"),
    ] {
        let url = format!("https://{host}:{port}/x.pem");
        g.bench_function(name, |b| {
            b.iter(|| {
                let got = rt.block_on(fetch(&url, &opts)).expect("fetch");
                assert_eq!(got.body.len(), body.len());
                black_box(got)
            })
        });
    }
    let connector = tokio_rustls::TlsConnector::from(tls);
    g.bench_function("tls_handshake_raw", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                let name = rustls::pki_types::ServerName::IpAddress(
                    std::net::IpAddr::from([127, 0, 0, 1]).into(),
                );
                black_box(connector.connect(name, tcp).await.expect("handshake"))
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
