//! A test STI PKI made with rcgen (root → intermediate → leaves with and
//! without TNAuthList, expired, under an unknown root) and a real HTTPS
//! server on loopback that serves the chains, garbage, oversized bodies, a
//! redirect, and a path that hangs. Bounded: the server stops after 60 s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callgate::stir::keys::SigningKey;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// TNAuthList with SPC "1234": SEQUENCE { [0] EXPLICIT IA5String "1234" }.
const TN_AUTH_LIST: [u8; 10] = [0x30, 0x08, 0xa0, 0x06, 0x16, 0x04, b'1', b'2', b'3', b'4'];

/// The US SHAKEN Certificate Policy v1.3 (2.16.840.1.114569.1.1.3) as a
/// certificatePolicies value: SEQUENCE { SEQUENCE { OID } }.
const SHAKEN_POLICY: [u8; 16] = [
    0x30, 0x0e, 0x30, 0x0c, 0x06, 0x0a, 0x60, 0x86, 0x48, 0x01, 0x86, 0xff, 0x09, 0x01, 0x01, 0x03,
];

fn policy_extension() -> CustomExtension {
    CustomExtension::from_oid_content(&[2, 5, 29, 32], SHAKEN_POLICY.to_vec())
}

/// A delegate certificate's TNAuthList: the range 15550190 + 20 and the
/// number 15557777 (RFC 8226 §9, RFC 9060).
pub const DELEGATE_TN_AUTH: [u8; 31] = [
    0x30, 0x1d, // TNAuthorizationList
    0xa1, 0x0f, 0x30, 0x0d, // range [1] { start, count }
    0x16, 0x08, b'1', b'5', b'5', b'5', b'0', b'1', b'9', b'0', 0x02, 0x01, 20, //
    0xa2, 0x0a, 0x16, 0x08, b'1', b'5', b'5', b'5', b'7', b'7', b'7', b'7', // one [2]
];

fn ca(
    name: &str,
    issuer: Option<(&rcgen::Certificate, &KeyPair)>,
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(DnType::CommonName, name);
    p.custom_extensions = vec![policy_extension()];
    let cert = match issuer {
        Some((i, ik)) => p.signed_by(&key, i, ik),
        None => p.self_signed(&key),
    }
    .expect("ca cert");
    (cert, key)
}

/// What is special about a test leaf certificate.
#[derive(Default, Clone, Copy)]
struct Leaf {
    no_tn_auth: bool,
    /// TNAuthList contents instead of SPC "1234".
    tn_auth: Option<&'static [u8]>,
    no_policy: bool,
    expired: bool,
    /// An unknown critical extension.
    critical_unknown: bool,
    serial: Option<u64>,
    /// A CRL distribution point URL.
    crl_dp: Option<&'static str>,
    /// Distribution points, one each (beside `crl_dp`).
    crl_dps: &'static [String],
}

/// The serial number of the leaf the test CRL revokes.
pub const REVOKED_SERIAL: u64 = 0x0bad;
/// Revoked only in the CRL served at the distribution point.
pub const DP_REVOKED_SERIAL: u64 = 0xd0d0;

fn leaf(
    issuer: &rcgen::Certificate,
    issuer_key: &KeyPair,
    spec: Leaf,
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("key");
    (leaf_for(&key, issuer, issuer_key, spec), key)
}

fn leaf_for(
    key: &KeyPair,
    issuer: &rcgen::Certificate,
    issuer_key: &KeyPair,
    spec: Leaf,
) -> rcgen::Certificate {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    if let Some(n) = spec.serial {
        p.serial_number = Some(rcgen::SerialNumber::from(n));
    }
    p.distinguished_name
        .push(DnType::OrganizationName, "Example Telecom");
    p.distinguished_name.push(DnType::CommonName, "SHAKEN 1234");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if !spec.no_tn_auth {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 5, 5, 7, 1, 26],
            spec.tn_auth.unwrap_or(&TN_AUTH_LIST).to_vec(),
        ));
    }
    if !spec.no_policy {
        p.custom_extensions.push(policy_extension());
    }
    if spec.critical_unknown {
        let mut ext =
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
    }
    if let Some(url) = spec.crl_dp {
        p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
            uris: vec![url.to_owned()],
        }];
    }
    for url in spec.crl_dps {
        p.crl_distribution_points.push(rcgen::CrlDistributionPoint {
            uris: vec![url.clone()],
        });
    }
    if spec.expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    p.signed_by(key, issuer, issuer_key).expect("leaf")
}

/// The CRL of the intermediate, revoking `serials`.
fn crl_of(
    inter: &rcgen::Certificate,
    inter_key: &KeyPair,
    number: u64,
    serials: &[u64],
) -> rcgen::CertificateRevocationList {
    rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2100, 1, 1),
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(*s),
                revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(inter, inter_key)
    .expect("crl")
}

pub struct Pki {
    /// Keeps the trust and CA files alive for the test.
    pub _dir: tempfile::TempDir,
    pub trust_dir: PathBuf,
    /// A CRL of the intermediate revoking [`REVOKED_SERIAL`].
    pub crl: PathBuf,
    /// A CRL naming the intermediate as issuer but signed with another key.
    pub forged_crl: PathBuf,
    pub web_ca: PathBuf,
    pub signing: SigningKey,
    /// The same key as PKCS#8 PEM, for commands that read a key file.
    pub signing_pem: String,
    pub routes: HashMap<&'static str, Vec<u8>>,
    /// A plain-HTTP listener for the CRL distribution point, bound before
    /// the certificates naming it were made; served by [`crl_server`].
    pub crl_listener: Option<std::net::TcpListener>,
    /// The DER CRL served there (revokes both test serials).
    pub dp_crl: Vec<u8>,
    /// A plain-HTTP listener named by [`MANY_DPS`] distribution points
    /// (`/dp-N.crl`) of `/many-dps.pem` (a valid chain) and
    /// `/stranger-dps.pem` (a chain to an unknown root).
    pub many_dps_listener: Option<std::net::TcpListener>,
}

/// Distribution points of `/many-dps.pem` and `/stranger-dps.pem`.
pub const MANY_DPS: usize = 20;

pub fn pki() -> Pki {
    let (root, root_key) = ca("STI root", None);
    let (inter, inter_key) = ca("STI intermediate", Some((&root, &root_key)));
    let (good, good_key) = leaf(&inter, &inter_key, Leaf::default());
    let no = |spec| leaf(&inter, &inter_key, spec).0;
    let no_tn = no(Leaf {
        no_tn_auth: true,
        ..Leaf::default()
    });
    let no_policy = no(Leaf {
        no_policy: true,
        ..Leaf::default()
    });
    let expired = no(Leaf {
        expired: true,
        ..Leaf::default()
    });
    let critical = no(Leaf {
        critical_unknown: true,
        ..Leaf::default()
    });
    let revoked = no(Leaf {
        serial: Some(REVOKED_SERIAL),
        ..Leaf::default()
    });
    // A delegate certificate for the good key, covering 15550190-15550209.
    let delegate = leaf_for(
        &good_key,
        &inter,
        &inter_key,
        Leaf {
            tn_auth: Some(&DELEGATE_TN_AUTH),
            ..Leaf::default()
        },
    );
    let crl = crl_of(&inter, &inter_key, 1, &[REVOKED_SERIAL]);
    let (impostor, impostor_key) = ca("STI intermediate", Some((&root, &root_key)));
    let forged = crl_of(&impostor, &impostor_key, 3, &[]);
    let dp_crl = crl_of(&inter, &inter_key, 2, &[REVOKED_SERIAL, DP_REVOKED_SERIAL]);
    let crl_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind crl");
    let dp: &'static str = Box::leak(
        format!(
            "http://127.0.0.1:{}/inter.crl",
            crl_listener.local_addr().expect("addr").port()
        )
        .into_boxed_str(),
    );
    let dp_good = leaf_for(
        &good_key,
        &inter,
        &inter_key,
        Leaf {
            crl_dp: Some(dp),
            ..Leaf::default()
        },
    );
    let dp_revoked = no(Leaf {
        crl_dp: Some(dp),
        serial: Some(DP_REVOKED_SERIAL),
        ..Leaf::default()
    });
    let (other_root, other_key) = ca("Unknown root", None);
    let (stranger, _) = leaf(&other_root, &other_key, Leaf::default());
    let many_dps_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind dps");
    let dps_port = many_dps_listener.local_addr().expect("addr").port();
    let dps: &'static [String] = Box::leak(
        (0..MANY_DPS)
            .map(|i| format!("http://127.0.0.1:{dps_port}/dp-{i}.crl"))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let many_dps = leaf_for(
        &good_key,
        &inter,
        &inter_key,
        Leaf {
            crl_dps: dps,
            ..Leaf::default()
        },
    );
    let stranger_dps = leaf_for(
        &good_key,
        &other_root,
        &other_key,
        Leaf {
            crl_dps: dps,
            ..Leaf::default()
        },
    );
    let chain = |c: &rcgen::Certificate| format!("{}{}", c.pem(), inter.pem()).into_bytes();
    let mut routes = HashMap::new();
    routes.insert("/good.pem", chain(&good));
    routes.insert("/no-tn.pem", chain(&no_tn));
    routes.insert("/expired.pem", chain(&expired));
    routes.insert("/critical.pem", chain(&critical));
    routes.insert("/revoked.pem", chain(&revoked));
    routes.insert("/no-policy.pem", chain(&no_policy));
    routes.insert("/dp-good.pem", chain(&dp_good));
    routes.insert("/dp-revoked.pem", chain(&dp_revoked));
    routes.insert("/delegate.pem", chain(&delegate));
    routes.insert("/many-dps.pem", chain(&many_dps));
    routes.insert(
        "/stranger-dps.pem",
        format!("{}{}", stranger_dps.pem(), other_root.pem()).into_bytes(),
    );
    routes.insert(
        "/stranger.pem",
        format!("{}{}", stranger.pem(), other_root.pem()).into_bytes(),
    );
    routes.insert("/garbage.pem", b"hello, this is not a certificate".to_vec());
    routes.insert("/big.pem", vec![b'A'; 200_000]);
    let dir = tempfile::tempdir().expect("tempdir");
    let trust_dir = dir.path().join("trust");
    std::fs::create_dir(&trust_dir).expect("mkdir");
    std::fs::write(trust_dir.join("root.pem"), root.pem()).expect("write root");
    let forged_crl = dir.path().join("forged.crl.pem");
    std::fs::write(&forged_crl, forged.pem().expect("crl pem")).expect("write crl");
    let crl_file = dir.path().join("intermediate.crl.pem");
    std::fs::write(&crl_file, crl.pem().expect("crl pem")).expect("write crl");
    // Every PASSporT is signed with the good leaf's key: the faults under
    // test are in the certificates, found before any signature check.
    Pki {
        web_ca: dir.path().join("web-ca.pem"),
        signing: SigningKey::from_pem(good_key.serialize_pem().as_bytes()).expect("signing key"),
        signing_pem: good_key.serialize_pem(),
        _dir: dir,
        trust_dir,
        crl: crl_file,
        forged_crl,
        routes,
        crl_listener: Some(crl_listener),
        dp_crl: dp_crl.der().to_vec(),
        many_dps_listener: Some(many_dps_listener),
    }
}

/// The TLS side of an x5u server at 127.0.0.1: a server certificate from
/// a fresh web CA, which is written to `pki.web_ca` (callgate's `x5u_ca`).
pub fn web_acceptor(pki: &Pki) -> tokio_rustls::TlsAcceptor {
    let (web_ca, web_ca_key) = ca("web CA", None);
    std::fs::write(&pki.web_ca, web_ca.pem()).expect("write web ca");
    let key = KeyPair::generate().expect("key");
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &web_ca, &web_ca_key)
        .expect("server cert");
    let certs = vec![server_cert.der().clone()];
    let der_key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, der_key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Reads an HTTP request's head from `stream`; its path (`None` if the
/// client went away first).
pub async fn request_path<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    Some(
        String::from_utf8_lossy(&req)
            .split(' ')
            .nth(1)
            .unwrap_or("/")
            .to_owned(),
    )
}

/// A loopback HTTPS server; returns its port and per-path request counts.
pub fn https_server(pki: &Pki) -> (u16, Arc<Mutex<HashMap<String, usize>>>) {
    let acceptor = web_acceptor(pki);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let routes = Arc::new(pki.routes.clone());
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let seen = counts.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            // Bounded: the server stops by itself after a minute.
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    let (acceptor, routes, seen) = (acceptor.clone(), routes.clone(), seen.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                        let Some(path) = request_path(&mut tls).await else { return };
                        *seen.lock().unwrap_or_else(|p| p.into_inner()).entry(path.clone()).or_insert(0) += 1;
                        let resp = match path.as_str() {
                            "/hang.pem" => {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                return;
                            }
                            "/redirect.pem" => b"HTTP/1.1 302 Found\r\nLocation: /good.pem\r\nContent-Length: 0\r\n\r\n".to_vec(),
                            p => match routes.get(p) {
                                Some(body) => [format!("HTTP/1.1 200 OK\r\nContent-Type: application/x-pem-file\r\nContent-Length: {}\r\nCache-Control: max-age=3600\r\n\r\n", body.len()).into_bytes(), body.clone()].concat(),
                                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                            },
                        };
                        let _ = tls.write_all(&resp).await;
                        let _ = tls.shutdown().await;
                    });
                }
            })
            .await;
        });
    });
    (port, counts)
}

/// Serves the distribution-point CRL over plain HTTP (the CRL is signed);
/// returns how many times it was fetched. Stops after 60 s.
pub fn crl_server(pki: &mut Pki) -> Arc<Mutex<usize>> {
    let listener = pki.crl_listener.take().expect("crl listener");
    let body = pki.dp_crl.clone();
    let count = Arc::new(Mutex::new(0));
    let seen = count.clone();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    let Ok((mut tcp, _)) = listener.accept().await else { continue };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = tcp.write_all(&[head.into_bytes(), body.clone()].concat()).await;
                    let _ = tcp.shutdown().await;
                }
            })
            .await;
        });
    });
    count
}

/// PEM files of a TLS server at `localhost` / 127.0.0.1 and the CA that
/// signed it (a Redis over TLS).
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a fresh CA and a server certificate for `localhost` and
/// 127.0.0.1 into `dir`.
pub fn tls_files(dir: &std::path::Path) -> TlsFiles {
    let (ca_cert, ca_key) = ca("test server CA", None);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("server cert");
    let files = TlsFiles {
        ca: dir.join("server-ca.pem"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).expect("write ca");
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}
