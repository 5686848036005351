//! SIP over TLS toward the carrier and the PBX (issue 14): mutual TLS per
//! side, the protocol policy (TLS 1.2/1.3, AEAD suites with ECDHE only),
//! certificates reloaded without a restart while an established
//! connection keeps its call, clear errors for expired or mismatched
//! files, outbound handshakes that fail over with their reason, and sips
//! Request-URIs that only ever leave over TLS.
//!
//! Real parts only: the callgate binary, rustls clients and servers,
//! `openssl s_client`, certificates made with rcgen.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::carrier::{answer, sentinel, Carrier, Pbx, Wire};
use common::{await_metric, config, repo, secrets, Callgate, Ports, LOOPBACK};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio_rustls::rustls;

const READ: Duration = Duration::from_secs(5);

/// A test CA that issues TLS certificates, its files in `dir`.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
    /// The CA certificate as a PEM file.
    pem: PathBuf,
}

/// A certificate and key as PEM files (the key mode 600, as callgate
/// demands).
#[derive(Clone)]
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

/// When a certificate is valid.
#[derive(Clone, Copy)]
enum Validity {
    Now,
    Expired,
    NotYet,
}

fn write_private(path: &Path, data: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let cert = p.self_signed(&key).expect("ca");
        let pem = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&pem, cert.pem()).expect("write ca");
        Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
            pem,
        }
    }

    /// A leaf for `sans` (IP addresses or names), written as
    /// `<file>.crt` / `<file>.key`.
    fn issue(&self, file: &str, sans: &[&str], validity: Validity) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut p =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .expect("params");
        p.distinguished_name.push(DnType::CommonName, file);
        let (from, to) = match validity {
            Validity::Now => ((2024, 1, 1), (2080, 1, 1)),
            Validity::Expired => ((2020, 1, 1), (2021, 6, 30)),
            Validity::NotYet => ((2085, 1, 1), (2089, 1, 1)),
        };
        p.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        p.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("leaf");
        let cert_path = self.dir.join(format!("{file}.crt"));
        let key_path = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        write_private(&key_path, key.serialize_pem().as_bytes());
        Issued {
            cert: cert_path,
            key: key_path,
            der: cert.der().to_vec(),
        }
    }
}

fn sha256_hex(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A test config whose PBX side forwards to `targets` (the carrier side
/// to a discard port).
fn to_pbx(ports: Ports, targets: &[String]) -> String {
    config(ports, targets, &["sip:127.0.0.1:9".to_owned()], "")
}

/// Adds `lines` at the top of the `[trunk]` section of a test config.
fn with_trunk(cfg: &str, lines: &str) -> String {
    cfg.replacen("[trunk]\n", &format!("[trunk]\n{lines}\n"), 1)
}

/// Adds `lines` at the top of the `[pbx]` section of a test config.
fn with_pbx(cfg: &str, lines: &str) -> String {
    cfg.replacen("[pbx]\n", &format!("[pbx]\n{lines}\n"), 1)
}

/// Points the trunk's TLS listener at `cert` / `key` instead of the demo
/// pair.
fn trunk_cert(cfg: &str, cert: &Path, key: &Path) -> String {
    let demo = repo().join("sip-config/tls/callgate-demo.crt");
    cfg.replace(&demo.display().to_string(), &cert.display().to_string())
        .replace(
            &secrets().key.display().to_string(),
            &key.display().to_string(),
        )
}

/// A rustls client config trusting `ca`, presenting `cert` when given.
fn client_config(ca: &Path, cert: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("ca");
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let b = rustls::ClientConfig::builder().with_root_certificates(roots);
    Arc::new(match cert {
        Some(i) => {
            let chain = rustls_pemfile::certs(&mut std::fs::read(&i.cert).expect("c").as_slice())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key =
                rustls_pemfile::private_key(&mut std::fs::read(&i.key).expect("k").as_slice())
                    .expect("key pem")
                    .expect("a key");
            b.with_client_auth_cert(chain, key).expect("client cert")
        }
        None => b.with_no_client_auth(),
    })
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to callgate's trunk listener, handshake done (or its
/// error).
fn tls_connect(port: u16, cfg: Arc<rustls::ClientConfig>) -> Result<TlsStream, String> {
    let tcp = TcpStream::connect((LOOPBACK, port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(READ)).ok();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// Sends `msg` on `s` and reads what comes back: `Err` when the
/// connection fails or closes first (a refused client certificate shows
/// here under TLS 1.3, where the client's handshake ends before the
/// server has checked its certificate).
fn exchange(s: &mut TlsStream, msg: &str) -> Result<String, String> {
    s.write_all(msg.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_535];
    match s.read(&mut buf) {
        Ok(0) => Err("closed".to_owned()),
        Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn options(call_id: &str, port: u16) -> String {
    format!(
        "OPTIONS sip:+15550100@{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/TLS {LOOPBACK}:{port};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\nFrom: <sip:carrier@{LOOPBACK}>;tag=s\r\nTo: <sip:+15550100@{LOOPBACK}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

fn invite(ruri: &str, transport: &str, port: u16, call_id: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/{transport} {LOOPBACK}:{port};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15550111@{LOOPBACK}>;tag=c-{call_id}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:carrier@{LOOPBACK}:{port}>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn inbound(reason: &str) -> String {
    format!(
        "callgate_tls_handshake_failures_total{{side=\"trunk\",direction=\"inbound\",reason=\"{reason}\"}}"
    )
}

fn outbound(reason: &str) -> String {
    format!(
        "callgate_tls_handshake_failures_total{{side=\"pbx\",direction=\"outbound\",reason=\"{reason}\"}}"
    )
}

/// A client presenting `cert` (or none) is refused by callgate's trunk TLS
/// listener, and the refusal is counted under `reason`.
fn assert_client_refused(cg: &Callgate, cert: Option<&Issued>, reason: &str) {
    let demo_ca = repo().join("sip-config/tls/callgate-demo-ca.crt");
    let before = cg.metric(&inbound(reason));
    let refused = tls_connect(cg.ports.trunk_tls, client_config(&demo_ca, cert))
        .and_then(|mut s| exchange(&mut s, &options(&format!("refused-{reason}"), 1)));
    assert!(
        refused.is_err(),
        "{reason}: the client was served: {refused:?}"
    );
    await_metric(cg, &inbound(reason), before + 1.0);
}

/// A client presenting `cert` is served: its OPTIONS reaches the PBX.
fn assert_client_served(cg: &Callgate, cert: &Issued, pbx: &Pbx, call_id: &str) {
    let demo_ca = repo().join("sip-config/tls/callgate-demo-ca.crt");
    let mut s = tls_connect(cg.ports.trunk_tls, client_config(&demo_ca, Some(cert)))
        .expect("handshake with the carrier's certificate");
    let port = s.sock.local_addr().expect("addr").port();
    s.write_all(options(call_id, port).as_bytes())
        .expect("send");
    let got = pbx.until(call_id);
    assert!(got
        .iter()
        .any(|m| m.contains(&format!("Call-ID: {call_id}"))));
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_or_from_another_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let carriers = Ca::new(dir.path(), "carriers");
    let foreign = Ca::new(dir.path(), "foreign");
    let good = carriers.issue("carrier", &["127.0.0.1"], Validity::Now);
    let stranger = foreign.issue("stranger", &["127.0.0.1"], Validity::Now);
    let pbx = Pbx::bind();
    let ports = Ports::new();
    let cfg = to_pbx(ports, &[format!("sip:127.0.0.1:{}", pbx.port())]);
    let cfg = with_trunk(
        &cfg,
        &format!("tls_client_ca = \"{}\"", carriers.pem.display()),
    );
    let cg = Callgate::start(ports, &cfg);
    // No client certificate, one from another CA, one of the right CA but
    // expired: each refused, the metric saying why.
    assert_client_refused(&cg, None, "no_client_cert");
    assert_client_refused(&cg, Some(&stranger), "unknown_ca");
    assert!(
        cg.log().contains("reason=\"unknown_ca\"") || cg.log().contains("reason=unknown_ca"),
        "the log names the reason:\n{}",
        cg.log()
    );
    let stale = carriers.issue("stale", &["127.0.0.1"], Validity::Expired);
    assert_client_refused(&cg, Some(&stale), "cert_expired");
    // The carrier's own certificate: its OPTIONS crosses to the PBX.
    assert_client_served(&cg, &good, &pbx, "mtls-good");

    // openssl s_client agrees: refused without a certificate, served with
    // the carrier's (its OPTIONS answered by the PBX stand-in).
    let (ok, out) = s_client(ports.trunk_tls, &["-tls1_3"], true);
    assert!(!ok, "s_client without a certificate got through:\n{out}");
    let args = [
        "-tls1_3".to_owned(),
        "-cert".to_owned(),
        good.cert.display().to_string(),
        "-key".to_owned(),
        good.key.display().to_string(),
    ];
    let client = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s_client(ports.trunk_tls, &args, true)
    });
    pbx.until("s-client");
    let (ok, out) = client.join().expect("s_client thread");
    assert!(
        ok,
        "s_client with the carrier's certificate refused:\n{out}"
    );
}

/// Runs `openssl s_client` against callgate's trunk TLS port; returns
/// whether the TLS session was established (and, with `talk`, carried a
/// SIP OPTIONS and its answer back) and what it printed. Without `talk`
/// stdin is closed at once, so s_client ends after the handshake.
fn s_client(port: u16, args: &[&str], talk: bool) -> (bool, String) {
    let ca = repo().join("sip-config/tls/callgate-demo-ca.crt");
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("{LOOPBACK}:{port}")])
        .arg("-CAfile")
        .arg(&ca)
        .arg("-verify_return_error")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client (install openssl)");
    let mut stdin = child.stdin.take();
    if talk {
        if let Some(i) = stdin.as_mut() {
            let _ = i.write_all(options("s-client", 1).as_bytes());
        }
    } else {
        drop(stdin.take());
    }
    let (tx, rx) = mpsc::channel::<String>();
    for mut pipe in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0
                    || tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(chunk) => out.push_str(&chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if talk && out.contains("SIP/2.0 ") {
            break;
        }
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    let established =
        out.contains("Verify return code: 0 (ok)") || out.contains("Verification: OK");
    let cipher = out.contains("Cipher is") && !out.contains("Cipher is (NONE)");
    let answered = !talk || out.contains("SIP/2.0 ");
    (established && cipher && answered, out)
}

#[test]
fn only_tls12_and_tls13_with_aead_suites_and_ecdhe_are_accepted() {
    let pbx = Pbx::bind();
    let ports = Ports::new();
    let cfg = to_pbx(ports, &[format!("sip:127.0.0.1:{}", pbx.port())]);
    let cg = Callgate::start(ports, &cfg);
    // The demo certificate is ECDSA: the ECDHE-ECDSA suites are the ones
    // a TLS 1.2 client can negotiate with it.
    for (args, want) in [
        (&["-tls1_3"][..], "TLSv1.3"),
        (&["-tls1_2"][..], "TLSv1.2"),
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"][..],
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"][..],
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ),
    ] {
        let (ok, out) = s_client(ports.trunk_tls, args, false);
        assert!(ok && out.contains(want), "{args:?} refused:\n{out}");
    }
    // TLS 1.1 (the client's own security level lowered so that it really
    // offers it): refused by callgate, counted as a protocol version.
    let (ok, out) = s_client(
        ports.trunk_tls,
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
        false,
    );
    assert!(!ok, "TLS 1.1 accepted:\n{out}");
    await_metric(&cg, &inbound("protocol_version"), 1.0);
    // CBC suites, with and without forward secrecy, and the RSA key
    // exchange: no suite in common.
    for cipher in [
        "AES128-SHA",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384",
    ] {
        let (ok, out) = s_client(
            ports.trunk_tls,
            &["-tls1_2", "-cipher", &format!("{cipher}@SECLEVEL=0")],
            false,
        );
        assert!(!ok, "{cipher} accepted:\n{out}");
    }
    // (With only AES128-SHA offered the client sends no key-exchange
    // groups either, which rustls reports first: "incompatible".)
    let deadline = Instant::now() + READ;
    let refused = || cg.metric(&inbound("no_shared_cipher")) + cg.metric(&inbound("incompatible"));
    while refused() < 3.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(refused(), 3.0, "{}", cg.metrics());
    assert!(cg.metric(&inbound("no_shared_cipher")) >= 2.0);
}

/// `callgate check-config` on `cfg`: (exit code, stderr).
fn check_config(dir: &Path, cfg: &str) -> (i32, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, cfg).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn expired_mismatched_or_empty_tls_files_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path(), "site");
    let expired = ca.issue("expired", &["127.0.0.1"], Validity::Expired);
    let early = ca.issue("early", &["127.0.0.1"], Validity::NotYet);
    let other = ca.issue("other", &["127.0.0.1"], Validity::Now);
    let good = ca.issue("good", &["127.0.0.1"], Validity::Now);
    // A chain whose second certificate has expired (an intermediate the
    // peers would refuse).
    let stale_chain = dir.path().join("stale-chain.crt");
    let chain = [
        std::fs::read_to_string(&good.cert).expect("leaf"),
        std::fs::read_to_string(&expired.cert).expect("expired"),
    ]
    .concat();
    std::fs::write(&stale_chain, chain).expect("write");
    let empty = dir.path().join("empty-ca.pem");
    std::fs::write(&empty, "# no certificate here\n").expect("write");
    let ports = Ports::new();
    let base = to_pbx(ports, &["sip:127.0.0.1:9".to_owned()]);
    let (code, err) = check_config(dir.path(), &trunk_cert(&base, &good.cert, &good.key));
    assert_eq!(code, 0, "a good pair is refused: {err}");
    for (cfg, want) in [
        (
            trunk_cert(&base, &expired.cert, &expired.key),
            "trunk.tls_cert: the certificate expired on 2021-06-30 00:00:00 UTC",
        ),
        (
            trunk_cert(&base, &early.cert, &early.key),
            "trunk.tls_cert: the certificate is not valid before 2085-01-01 00:00:00 UTC",
        ),
        (
            trunk_cert(&base, &stale_chain, &good.key),
            "trunk.tls_cert: chain certificate 2 expired on 2021-06-30",
        ),
        (
            trunk_cert(&base, &good.cert, &other.key),
            "trunk.tls_key: the private key does not match the certificate in trunk.tls_cert",
        ),
        (
            with_pbx(&base, &format!("tls_ca = \"{}\"", empty.display())),
            "pbx.tls_ca: ",
        ),
        (
            with_trunk(&base, &format!("tls_client_ca = \"{}\"", empty.display())),
            "trunk.tls_client_ca: ",
        ),
    ] {
        let (code, err) = check_config(dir.path(), &cfg);
        assert_eq!(code, 2, "accepted, wanted {want:?}");
        assert!(err.contains(want), "wanted {want:?} in {err}");
    }
    let (_, err) = check_config(
        dir.path(),
        &with_pbx(&base, &format!("tls_ca = \"{}\"", empty.display())),
    );
    assert!(err.contains("contains no certificate"), "{err}");
    // The service itself refuses to start on an expired certificate.
    let path = dir.path().join("run.toml");
    std::fs::write(&path, trunk_cert(&base, &expired.cert, &expired.key)).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("trunk.tls_cert: the certificate expired on"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The values of every `name` header line of `msg`, in order.
fn header_lines<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim())
        .collect()
}

/// An in-dialog request from the carrier for the dialog `ok` (a 2xx to its
/// INVITE) established: Request-URI the remote Contact, Route the
/// Record-Route set (RFC 3261 §12.1.2, §12.2.1.1).
fn in_dialog(method: &str, ok: &str, cseq: u32, port: u16) -> String {
    let contact = header_lines(ok, "Contact")
        .first()
        .map(|c| {
            c.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .expect("contact");
    let mut m = format!(
        "{method} {contact} SIP/2.0\r\nVia: SIP/2.0/TLS {LOOPBACK}:{port};branch=z9hG4bK-{method}-{cseq};rport\r\nMax-Forwards: 70\r\n"
    );
    for rr in header_lines(ok, "Record-Route") {
        m.push_str(&format!("Route: {rr}\r\n"));
    }
    for name in ["From", "To", "Call-ID"] {
        m.push_str(&format!("{name}: {}\r\n", header_lines(ok, name)[0]));
    }
    m.push_str(&format!(
        "CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ));
    m
}

/// The SHA-256 of the certificate a new TLS connection to `port` sees.
fn served_fingerprint(port: u16, ca: &Path) -> String {
    let s = tls_connect(port, client_config(ca, None)).expect("handshake");
    let certs = s.conn.peer_certificates().expect("a certificate");
    sha256_hex(certs[0].as_ref())
}

#[test]
fn a_reloaded_certificate_serves_new_connections_while_an_established_call_goes_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let cert = dir.path().join("trunk.crt");
    let key = dir.path().join("trunk.key");
    std::fs::copy(repo().join("sip-config/tls/callgate-demo.crt"), &cert).expect("copy");
    write_private(&key, &std::fs::read(&secrets().key).expect("demo key"));
    let site = Ca::new(dir.path(), "site");
    let next = site.issue("next", &["127.0.0.1"], Validity::Now);
    let expired = site.issue("expired", &["127.0.0.1"], Validity::Expired);
    let stray = site.issue("stray", &["127.0.0.1"], Validity::Now);
    let pbx = Pbx::bind();
    let ports = Ports::new();
    let cfg = to_pbx(ports, &[format!("sip:127.0.0.1:{}", pbx.port())]);
    let mut cg = Callgate::start(ports, &trunk_cert(&cfg, &cert, &key));

    // A call over TLS, set up on a connection opened before the reload.
    let mut carrier = Carrier::connect(&cg, Wire::Tls);
    let id = "tls-reload-call";
    carrier.send(invite("sip:+15550100@127.0.0.1", "TLS", carrier.port, id).as_bytes());
    pbx.until(id);
    let ok = carrier.response(200, id);
    carrier.send(in_dialog("ACK", &ok, 1, carrier.port).as_bytes());
    pbx.until(id);

    // New certificate and key in the same files; SIGHUP.
    std::fs::copy(&next.cert, &cert).expect("new cert");
    write_private(&key, &std::fs::read(&next.key).expect("new key"));
    let _ = cg.signal_and_wait("HUP", Duration::from_millis(0));
    await_metric(&cg, "callgate_config_reloads_total", 1.0);
    assert_eq!(
        served_fingerprint(ports.trunk_tls, &site.pem),
        sha256_hex(&next.der),
        "a new connection sees the new certificate"
    );
    assert!(
        cg.log().contains("TLS certificate reloaded"),
        "{}",
        cg.log()
    );

    // The established connection still carries the call's BYE and its 200.
    carrier.send(in_dialog("BYE", &ok, 2, carrier.port).as_bytes());
    let bye = pbx.until(id);
    assert!(bye.iter().any(|m| m.starts_with("BYE ")), "{bye:#?}");
    let done = carrier.response(200, id);
    assert!(done.contains("CSeq: 2 BYE"), "{done}");

    // A broken pair (the key of another certificate), then an expired
    // certificate: each reload refused with the key and the reason, the
    // certificate in service kept.
    for (pair, want) in [
        (
            (&next.cert, &stray.key),
            "trunk.tls_key: the private key does not match the certificate in trunk.tls_cert",
        ),
        (
            (&expired.cert, &expired.key),
            "trunk.tls_cert: the certificate expired on 2021-06-30",
        ),
    ] {
        std::fs::copy(pair.0, &cert).expect("cert");
        write_private(&key, &std::fs::read(pair.1).expect("key"));
        let (status, body) = cg.admin("POST", "/reload");
        assert_ne!(status, 200, "a broken pair was accepted: {body}");
        assert!(body.contains(want), "wanted {want:?} in {body}");
        assert_eq!(
            served_fingerprint(ports.trunk_tls, &site.pem),
            sha256_hex(&next.der),
            "the certificate in service is kept"
        );
    }
    assert_eq!(cg.metric("callgate_config_reload_failures_total"), 2.0);
}

/// A SIP peer on TLS (a PBX target): answers every request but ACK with
/// 200 and reports each message it reads, or its handshake's failure.
struct TlsPeer {
    port: u16,
    got: mpsc::Receiver<Result<String, String>>,
}

impl TlsPeer {
    /// Serves `id`; with `client_ca`, requires a client certificate from it.
    fn start(id: &Issued, client_ca: Option<&Path>) -> TlsPeer {
        let chain = rustls_pemfile::certs(&mut std::fs::read(&id.cert).expect("c").as_slice())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = rustls_pemfile::private_key(&mut std::fs::read(&id.key).expect("k").as_slice())
            .expect("pem")
            .expect("key");
        let builder = rustls::ServerConfig::builder();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pemfile::certs(&mut std::fs::read(ca).expect("ca").as_slice()) {
                    roots.add(c.expect("pem")).expect("root");
                }
                let v = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .expect("verifier");
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        let cfg = Arc::new(builder.with_single_cert(chain, key).expect("server config"));
        let l = TcpListener::bind((LOOPBACK, 0)).expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (tx, got) = mpsc::channel();
        // Lives as long as the test process: accept blocks, nothing spins.
        std::thread::spawn(move || {
            for tcp in l.incoming().map_while(Result::ok) {
                let (cfg, tx) = (cfg.clone(), tx.clone());
                std::thread::spawn(move || serve_tls_peer(tcp, cfg, tx));
            }
        });
        TlsPeer { port, got }
    }

    /// The next message or handshake failure, within 5 s.
    fn next(&self) -> Result<String, String> {
        self.got
            .recv_timeout(READ)
            .unwrap_or_else(|_| Err("nothing within 5 s".to_owned()))
    }
}

fn serve_tls_peer(
    tcp: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    tx: mpsc::Sender<Result<String, String>>,
) {
    tcp.set_read_timeout(Some(READ)).ok();
    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        if let Err(e) = s.conn.complete_io(&mut s.sock) {
            let _ = tx.send(Err(format!("handshake: {e}")));
            return;
        }
    }
    let mut pending = String::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        while let Some(end) = pending.find("\r\n\r\n") {
            // The requests here carry no body (Content-Length: 0).
            let msg: String = pending.drain(..end + 4).collect();
            let msg = msg.trim_start_matches("\r\n").to_owned();
            if !msg.starts_with("SIP/2.0") && !msg.starts_with("ACK ") && !msg.is_empty() {
                let _ = s.write_all(answer(&msg, "200 OK").as_bytes());
            }
            if !msg.is_empty() && tx.send(Ok(msg)).is_err() {
                return;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

#[test]
fn outbound_tls_to_an_expired_untrusted_or_misnamed_target_fails_over_and_says_why() {
    let dir = tempfile::tempdir().expect("tmp");
    let pbxs = Ca::new(dir.path(), "pbxs");
    let rogue = Ca::new(dir.path(), "rogue");
    let site = Ca::new(dir.path(), "site");
    let expired = TlsPeer::start(
        &pbxs.issue("expired", &["127.0.0.1"], Validity::Expired),
        None,
    );
    let untrusted = TlsPeer::start(
        &rogue.issue("untrusted", &["127.0.0.1"], Validity::Now),
        None,
    );
    let misnamed = TlsPeer::start(
        &pbxs.issue("misnamed", &["127.0.0.9", "pbx.example"], Validity::Now),
        None,
    );
    // The good PBX requires a client certificate from the site CA: the one
    // callgate's [pbx] tls_cert is.
    let good = TlsPeer::start(
        &pbxs.issue("good", &["127.0.0.1"], Validity::Now),
        Some(&site.pem),
    );
    let own = site.issue("callgate-pbx", &["127.0.0.1"], Validity::Now);
    let target = |p: &TlsPeer| format!("sip:127.0.0.1:{};transport=tls", p.port);
    let ports = Ports::new();
    let cfg = to_pbx(
        ports,
        &[
            target(&expired),
            target(&untrusted),
            target(&misnamed),
            target(&good),
        ],
    );
    let cfg = with_pbx(
        &cfg,
        &format!(
            "tls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
            pbxs.pem.display(),
            own.cert.display(),
            own.key.display()
        ),
    );
    let cg = Callgate::start(ports, &cfg);
    let mut carrier = Carrier::connect(&cg, Wire::Udp);
    let id = "tls-outbound-failover";
    carrier.send(invite("sip:+15550100@127.0.0.1", "UDP", carrier.port, id).as_bytes());
    let reached = good.next().expect("the INVITE reaches the good PBX");
    assert!(
        reached.starts_with("INVITE ") && reached.contains(id),
        "{reached}"
    );
    carrier.response(200, id);
    for (peer, reason) in [
        (&expired, "cert_expired"),
        (&untrusted, "unknown_ca"),
        (&misnamed, "name_mismatch"),
    ] {
        await_metric(&cg, &outbound(reason), 1.0);
        assert!(peer.next().is_err(), "{reason}: the target saw a message");
    }
    assert!(
        cg.log()
            .contains("TLS handshake with target failed; failing over"),
        "{}",
        cg.log()
    );
}

#[test]
fn a_sips_request_leaves_over_tls_only_and_is_refused_480_without_a_tls_target() {
    let dir = tempfile::tempdir().expect("tmp");
    let pbxs = Ca::new(dir.path(), "pbxs");
    let tls_pbx = TlsPeer::start(&pbxs.issue("pbx", &["127.0.0.1"], Validity::Now), None);
    let udp_pbx = Pbx::bind();
    let pbx_tls = common::free_port();
    let demo_cert = repo().join("sip-config/tls/callgate-demo.crt");
    let pbx_tls_lines = format!(
        "tls = \"127.0.0.1:{pbx_tls}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"",
        demo_cert.display(),
        secrets().key.display(),
        pbxs.pem.display()
    );

    // UDP first in failover order, TLS second: a sips INVITE skips the UDP
    // target and crosses with sips Record-Route entries and a TLS Via.
    let ports = Ports::new();
    let cfg = to_pbx(
        ports,
        &[
            format!("sip:127.0.0.1:{}", udp_pbx.port()),
            format!("sip:127.0.0.1:{};transport=tls", tls_pbx.port),
        ],
    );
    let cg = Callgate::start(ports, &with_pbx(&cfg, &pbx_tls_lines));
    let mut carrier = Carrier::connect(&cg, Wire::Tls);
    let id = "sips-call";
    carrier.send(invite("sips:+15550100@127.0.0.1", "TLS", carrier.port, id).as_bytes());
    let fwd = tls_pbx.next().expect("the sips INVITE reaches the TLS PBX");
    assert!(fwd.starts_with("INVITE sips:") && fwd.contains(id), "{fwd}");
    assert!(
        fwd.contains(&format!("Via: SIP/2.0/TLS 127.0.0.1:{pbx_tls};")),
        "{fwd}"
    );
    for port in [pbx_tls, ports.trunk_tls] {
        assert!(
            fwd.contains(&format!("Record-Route: <sips:127.0.0.1:{port};lr>")),
            "sips Record-Route on both sides: {fwd}"
        );
    }
    carrier.response(200, id);
    // Nothing reached the UDP target but the sentinel sent after.
    carrier.send(sentinel(&carrier, "sips-after").as_bytes());
    let got = udp_pbx.until("sips-after");
    assert_eq!(got.len(), 1, "the UDP target saw the sips call: {got:#?}");
    drop(carrier);
    drop(cg);

    // The PBX side with UDP targets only: 480, never a downgrade.
    let ports = Ports::new();
    let cfg = to_pbx(ports, &[format!("sip:127.0.0.1:{}", udp_pbx.port())]);
    let cg = Callgate::start(ports, &with_pbx(&cfg, &pbx_tls_lines));
    let mut carrier = Carrier::connect(&cg, Wire::Tls);
    let id = "sips-no-tls";
    carrier.send(invite("sips:+15550100@127.0.0.1", "TLS", carrier.port, id).as_bytes());
    let refused = carrier.response(480, id);
    assert!(refused.contains("sips"), "{refused}");
    carrier.send(sentinel(&carrier, "sips-none").as_bytes());
    let got = udp_pbx.until("sips-none");
    assert_eq!(
        got.len(),
        1,
        "the sips call was downgraded to UDP: {got:#?}"
    );
    assert!(cg.log().contains("never downgraded"), "{}", cg.log());
}

#[test]
fn client_names_pin_which_certificates_of_the_ca_are_accepted() {
    let dir = tempfile::tempdir().expect("tmp");
    let shared = Ca::new(dir.path(), "shared");
    let carrier = shared.issue("carrier", &["sbc.carrier.example"], Validity::Now);
    let other = shared.issue("other", &["sbc.other.example"], Validity::Now);
    let pbx = Pbx::bind();
    let ports = Ports::new();
    let cfg = with_trunk(
        &to_pbx(ports, &[format!("sip:127.0.0.1:{}", pbx.port())]),
        &format!(
            "tls_client_ca = \"{}\"\ntls_client_names = [\"sbc.carrier.example\", \"192.0.2.7\"]",
            shared.pem.display()
        ),
    );
    let cg = Callgate::start(ports, &cfg);
    // Another customer of the same CA: refused for its name; the carrier's
    // name: served.
    assert_client_refused(&cg, Some(&other), "name_mismatch");
    assert_client_served(&cg, &carrier, &pbx, "names-carrier");
    // A name that is neither DNS nor IP is refused at load.
    let (code, err) = check_config(dir.path(), &cfg.replace("192.0.2.7", "not a name!"));
    assert_eq!(code, 2);
    assert!(err.contains("trunk.tls_client_names"), "{err}");
}

/// Answers every request reaching `pbx` (200 OK, ACKs excepted, its own
/// address as Contact) until `stop` is set.
fn answer_all(pbx: Pbx, stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        pbx.sock
            .set_read_timeout(Some(Duration::from_millis(100)))
            .ok();
        let mut buf = vec![0u8; 65_535];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((n, from)) = pbx.sock.recv_from(&mut buf) else {
                continue;
            };
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !m.starts_with("SIP/2.0") && !m.starts_with("ACK ") {
                let ok = answer(&m, "200 OK").replace(
                    "Contact: <sip:agent@127.0.0.1>",
                    &format!("Contact: <sip:agent@127.0.0.1:{}>", pbx.port()),
                );
                let _ = pbx.sock.send_to(ok.as_bytes(), from);
            }
        }
    })
}

/// Reads from `s` until a 200 for `cseq` (e.g. `1 INVITE`) arrives.
fn await_200(s: &mut TlsStream, pending: &mut String, cseq: &str) -> Result<String, String> {
    let deadline = Instant::now() + READ;
    let mut buf = vec![0u8; 65_535];
    loop {
        while let Some(end) = pending.find("\r\n\r\n") {
            let m: String = pending.drain(..end + 4).collect();
            if m.trim_start().starts_with("SIP/2.0 200 ")
                && m.contains(&format!("CSeq: {cseq}\r\n"))
            {
                return Ok(m.trim_start().to_owned());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no 200 for {cseq}"));
        }
        match s.read(&mut buf) {
            Ok(0) => return Err("closed".to_owned()),
            Ok(n) => pending.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// One whole call on `s`: INVITE, 200, ACK, BYE, 200; `hold` runs between
/// the ACK and the BYE.
fn tls_call(s: &mut TlsStream, id: &str, hold: impl FnOnce()) -> Result<(), String> {
    let port = s.sock.local_addr().map_err(|e| e.to_string())?.port();
    let mut pending = String::new();
    s.write_all(invite("sip:+15550100@127.0.0.1", "TLS", port, id).as_bytes())
        .map_err(|e| e.to_string())?;
    let ok = await_200(s, &mut pending, "1 INVITE")?;
    s.write_all(in_dialog("ACK", &ok, 1, port).as_bytes())
        .map_err(|e| e.to_string())?;
    hold();
    s.write_all(in_dialog("BYE", &ok, 2, port).as_bytes())
        .map_err(|e| e.to_string())?;
    await_200(s, &mut pending, "2 BYE").map(|_| ())
}

#[test]
fn calls_over_tls_complete_while_the_certificate_is_reloaded_again_and_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let cert = dir.path().join("trunk.crt");
    let key = dir.path().join("trunk.key");
    let demo_cert = repo().join("sip-config/tls/callgate-demo.crt");
    std::fs::copy(&demo_cert, &cert).expect("copy");
    let demo_key = std::fs::read(&secrets().key).expect("demo key");
    write_private(&key, &demo_key);
    let site = Ca::new(dir.path(), "site");
    let next = site.issue("next", &["127.0.0.1"], Validity::Now);
    // Clients trust both CAs: whichever certificate a handshake meets.
    let both = dir.path().join("both-cas.pem");
    let mut bundle = std::fs::read(repo().join("sip-config/tls/callgate-demo-ca.crt")).expect("ca");
    bundle.extend(std::fs::read(&site.pem).expect("site ca"));
    std::fs::write(&both, bundle).expect("bundle");
    let pbx = Pbx::bind();
    let ports = Ports::new();
    let cfg = to_pbx(ports, &[format!("sip:127.0.0.1:{}", pbx.port())]);
    let cg = Callgate::start(ports, &trunk_cert(&cfg, &cert, &key));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answering = answer_all(pbx, stop.clone());

    // A call that is up across every reload below.
    let mut long = tls_connect(ports.trunk_tls, client_config(&both, None)).expect("connect");
    let demo_fp = sha256_hex(
        rustls_pemfile::certs(&mut std::fs::read(&demo_cert).expect("demo").as_slice())
            .next()
            .expect("a certificate")
            .expect("pem")
            .as_ref(),
    );
    let next_fp = sha256_hex(&next.der);
    const RELOADS: usize = 8;
    const CALLS: usize = 24;
    let mut done = 0;
    let result = tls_call(&mut long, "tls-long-call", || {
        // Reload after every third call, alternating the two certificates,
        // each time writing the files in place.
        for i in 0..CALLS {
            let to_next = (i / (CALLS / RELOADS)) % 2 == 0;
            if i % (CALLS / RELOADS) == 0 {
                let (c, k) = if to_next {
                    (
                        std::fs::read(&next.cert).expect("c"),
                        std::fs::read(&next.key).expect("k"),
                    )
                } else {
                    (std::fs::read(&demo_cert).expect("c"), demo_key.clone())
                };
                std::fs::write(&cert, c).expect("cert");
                write_private(&key, &k);
                let (status, body) = cg.admin("POST", "/reload");
                assert_eq!(status, 200, "reload {i}: {body}");
            }
            // Each call on a new connection: a new handshake after a reload.
            let mut s = tls_connect(ports.trunk_tls, client_config(&both, None))
                .unwrap_or_else(|e| panic!("call {i}: handshake: {e}"));
            let seen = s
                .conn
                .peer_certificates()
                .map(|c| sha256_hex(c[0].as_ref()));
            let want = if to_next { &next_fp } else { &demo_fp };
            assert_eq!(
                seen.as_ref(),
                Some(want),
                "call {i}: the certificate in force"
            );
            tls_call(&mut s, &format!("tls-reload-{i}"), || {})
                .unwrap_or_else(|e| panic!("call {i}: {e}"));
            done += 1;
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = answering.join();
    result.expect("the call up across the reloads ends cleanly");
    assert_eq!(done, CALLS);
    assert_eq!(cg.metric("callgate_config_reloads_total"), RELOADS as f64);
    let failures: f64 = cg
        .metrics()
        .lines()
        .filter(|l| l.starts_with("callgate_tls_handshake_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failures, 0.0, "{}", cg.metrics());
}
