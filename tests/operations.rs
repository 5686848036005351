//! Operating callgate: admin API, configuration errors, ACLs, TLS, drain on
//! SIGTERM, reload. Real binary, loopback only, bounded waits.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{await_metric, config, free_port, Callgate, Ports, LOOPBACK};

fn request(method: &str, call: &str, from_port: u16, target: &str, transport: &str) -> String {
    format!(
        "{method} sip:+15550100@{target} SIP/2.0\r\nVia: SIP/2.0/{transport} {LOOPBACK}:{from_port};branch=z9hG4bK-{call}-{method};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15550199@{LOOPBACK}>;tag=t-{call}\r\nTo: <sip:+15550100@{LOOPBACK}>\r\nCall-ID: {call}\r\nCSeq: 1 {method}\r\nContact: <sip:+15550199@{LOOPBACK}:{from_port}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A PBX stand-in: answers a received request with `status`.
fn answer(req: &str, status: &str) -> String {
    let mut r = format!("SIP/2.0 {status}\r\n");
    for line in req.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let l = line.to_ascii_lowercase();
        if l.starts_with("via:")
            || l.starts_with("from:")
            || l.starts_with("call-id:")
            || l.starts_with("cseq:")
            || l.starts_with("record-route:")
        {
            r.push_str(line);
            r.push_str("\r\n");
        } else if l.starts_with("to:") {
            r.push_str(line);
            r.push_str(";tag=pbx\r\n");
        }
    }
    r.push_str(&format!(
        "Contact: <sip:agent@{LOOPBACK}>\r\nContent-Length: 0\r\n\r\n"
    ));
    r
}

fn udp() -> UdpSocket {
    let s = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s
}

fn recv(s: &UdpSocket) -> (String, std::net::SocketAddr) {
    let mut buf = vec![0u8; 65_535];
    let (n, from) = s.recv_from(&mut buf).expect("datagram within 5 s");
    (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
}

/// Receives until a message starts with `prefix`.
fn recv_starting(s: &UdpSocket, prefix: &str) -> (String, std::net::SocketAddr) {
    for _ in 0..20 {
        let (m, from) = recv(s);
        if m.starts_with(prefix) {
            return (m, from);
        }
    }
    panic!("no message starting with {prefix:?}");
}

fn start_with_pbx_socket(extra: &str) -> (Callgate, UdpSocket) {
    let pbx = udp();
    let pbx_port = pbx.local_addr().expect("addr").port();
    let ports = Ports::new();
    let cfg = config(
        ports,
        &[format!("sip:127.0.0.1:{pbx_port}")],
        &["sip:127.0.0.1:9".to_owned()],
        extra,
    );
    (Callgate::start(ports, &cfg), pbx)
}

#[test]
fn admin_endpoints_answer() {
    let (cg, _pbx) = start_with_pbx_socket("");
    assert_eq!(cg.admin("GET", "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(cg.admin("GET", "/readyz").0, 200);
    let m = cg.metrics();
    for series in [
        "callgate_up 1",
        "callgate_sip_parse_errors_total{side=\"trunk\"} 0",
        "# TYPE callgate_phase_seconds histogram",
    ] {
        assert!(m.contains(series), "missing {series} in\n{m}");
    }
    assert_eq!(cg.admin("GET", "/nope").0, 404);
}

#[test]
fn check_config_names_the_key_and_reason() {
    let ok = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["check-config", "sip-config/callgate.toml"])
        .current_dir(common::repo())
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("targets = [\"sip:127.0.0.1:5080;transport=udp\"]", "targets = [\"sip:pbx_example.com\"]", "pbx.targets[0]"),
        ("allow = [\"127.0.0.0/8\", \"::1/128\"]\non_denied = \"reject\"\nrate_limit = 2000\ntargets = [\"sip:127.0.0.1:5080", "allow = [\"not-a-net\"]\non_denied = \"reject\"\nrate_limit = 2000\ntargets = [\"sip:127.0.0.1:5080", "pbx.allow[0]"),
        ("t1_ms = 500", "t1_ms = 0", "timers.t1_ms"),
        ("[admin]", "[admin]\nlisten_typo = 1", "listen_typo"),
        ("[admin]", "[media]\nenabled = true\npbx_transport = \"sdes\"\n\n[admin]", "media.pbx_transport"),
        ("[admin]", "[media]\nenabled = true\ncpus = [0, 4096]\n\n[admin]", "media.cpus[1]"),
        ("[admin]", "[media]\nenabled = true\nbusy_poll_us = 5000\n\n[admin]", "media.busy_poll_us"),
        ("[admin]", "[limits]\nmax_dialogs = 10\n\n[admin]", "limits.max_dialogs"),
        ("[admin]", "[limits]\ndialog_idle_secs = 5\n\n[admin]", "limits.dialog_idle_secs"),
        ("[admin]", "[limits]\nmax_connections_per_source = 0\n\n[admin]", "limits.max_connections_per_source"),
        ("[admin]", "[limits]\nmessage_deadline_secs = 600\n\n[admin]", "limits.message_deadline_secs"),
        ("[admin]", "[limits]\ntls_handshake_secs = 0\n\n[admin]", "limits.tls_handshake_secs"),
        ("max_transaction_bytes_per_source = 268435456", "max_transaction_bytes_per_source = 4096", "overload.max_transaction_bytes_per_source"),
    ];
    let example =
        std::fs::read_to_string(common::repo().join("sip-config/callgate.toml")).expect("example");
    for (from, to, key) in cases {
        assert!(example.contains(from), "example config lacks {from:?}");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, example.replacen(from, to, 1)).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .arg("check-config")
            .arg(&path)
            .current_dir(common::repo())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(err.contains(key), "error names {key}: {err}");
    }
}

#[test]
fn sources_outside_the_acl_get_403_and_are_counted() {
    let pbx = udp();
    let pbx_port = pbx.local_addr().expect("addr").port();
    let ports = Ports::new();
    // Only 127.0.0.2 may send on the trunk side; the test sends from 127.0.0.1.
    let cfg = config(
        ports,
        &[format!("sip:127.0.0.1:{pbx_port}")],
        &["sip:127.0.0.1:9".to_owned()],
        "",
    )
    // "reject" (the trunk's default is "drop": no answer to a stranger).
    .replacen(
        "allow = [\"127.0.0.0/8\"]",
        "allow = [\"127.0.0.2/32\"]\non_denied = \"reject\"",
        1,
    );
    let cg = Callgate::start(ports, &cfg);
    let carrier = udp();
    let port = carrier.local_addr().expect("addr").port();
    carrier
        .send_to(
            request("INVITE", "acl-1", port, &cg.trunk(), "UDP").as_bytes(),
            cg.trunk(),
        )
        .expect("send");
    let (resp, _) = recv(&carrier);
    assert!(resp.starts_with("SIP/2.0 403"), "{resp}");
    assert_eq!(
        cg.metric("callgate_admission_refusals_total{side=\"trunk\",reason=\"acl\"}"),
        1.0
    );
}

/// A TLS handshake from `from` to `port`; whether it completed.
fn tls_handshake_from(from: &str, port: u16) -> bool {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: std::net::SocketAddr = format!("{from}:0").parse().expect("addr");
    sock.bind(&local.into()).expect("bind");
    let to: std::net::SocketAddr = format!("{LOOPBACK}:{port}").parse().expect("addr");
    sock.connect(&to.into()).expect("connect");
    tls_handshake(sock.into())
}

/// A TLS handshake (trusting the demo CA) over `tcp`; whether it completed.
fn tls_handshake(tcp: std::net::TcpStream) -> bool {
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut conn = common::carrier::demo_tls_client();
    let mut tcp = tcp;
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return false;
        }
    }
    true
}

#[test]
fn connections_from_outside_the_acl_are_closed_before_the_tls_handshake() {
    let ports = Ports::new();
    // Only 127.0.0.1 may connect on the trunk side.
    let cfg = config(
        ports,
        &["sip:127.0.0.1:9".to_owned()],
        &["sip:127.0.0.1:9".to_owned()],
        "",
    )
    .replacen("allow = [\"127.0.0.0/8\"]", "allow = [\"127.0.0.1/32\"]", 1);
    let cg = Callgate::start(ports, &cfg);
    assert!(
        !tls_handshake_from("127.0.0.2", cg.ports.trunk_tls),
        "a stranger completed a TLS handshake"
    );
    assert_eq!(
        cg.metric("callgate_admission_refusals_total{side=\"trunk\",reason=\"acl\"}"),
        1.0
    );
    assert!(tls_handshake_from("127.0.0.1", cg.ports.trunk_tls));
}

/// The same from real, distinct hosts (network namespaces, needs root): a
/// stranger's connection to the trunk's TLS listener is closed before any
/// handshake, while the carrier, from its own host, completes one.
#[test]
fn a_stranger_host_cannot_complete_a_tls_handshake_but_the_carrier_can() {
    let lab = common::netns::Lab::new(&["carrier", "stranger"]);
    let (carrier, stranger) = (lab.host(0).clone(), lab.host(1).clone());
    let ports = Ports::new();
    let cfg = config(
        ports,
        &["sip:127.0.0.1:9".to_owned()],
        &["sip:127.0.0.1:9".to_owned()],
        "",
    )
    .replacen(
        &format!("tls = \"127.0.0.1:{}\"", ports.trunk_tls),
        &format!("tls = \"{}:{}\"", carrier.gate, ports.trunk_tls),
        1,
    )
    .replacen(
        "allow = [\"127.0.0.0/8\"]",
        &format!("allow = [\"{}/32\"]", carrier.addr),
        1,
    );
    let cg = Callgate::start(ports, &cfg);
    let listener = std::net::SocketAddr::from((carrier.gate, ports.trunk_tls));
    let from_stranger = stranger.tcp(listener).expect("the stranger's TCP connect");
    assert!(
        !tls_handshake(from_stranger),
        "a stranger's host completed a TLS handshake"
    );
    common::await_metric(
        &cg,
        "callgate_admission_refusals_total{side=\"trunk\",reason=\"acl\"}",
        1.0,
    );
    let from_carrier = carrier.tcp(listener).expect("the carrier's TCP connect");
    assert!(
        tls_handshake(from_carrier),
        "the carrier's handshake failed"
    );
}

#[test]
fn drain_on_sigterm_refuses_new_calls_and_finishes_running_ones() {
    let (mut cg, pbx) = start_with_pbx_socket("");
    let carrier = udp();
    let port = carrier.local_addr().expect("addr").port();
    carrier
        .send_to(
            request("INVITE", "drain-1", port, &cg.trunk(), "UDP").as_bytes(),
            cg.trunk(),
        )
        .expect("send");
    assert!(recv(&carrier).0.starts_with("SIP/2.0 100"));
    let (fwd, pbx_peer) = recv_starting(&pbx, "INVITE ");
    // SIGTERM while the call rings.
    let _ = Command::new("kill")
        .args(["-TERM", &cg.pid().to_string()])
        .status();
    // Readiness goes off, new calls get 503 + Retry-After.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cg.admin("GET", "/readyz").0 != 503 {
        assert!(Instant::now() < deadline, "readyz never turned 503");
        std::thread::sleep(Duration::from_millis(10));
    }
    carrier
        .send_to(
            request("INVITE", "drain-2", port, &cg.trunk(), "UDP").as_bytes(),
            cg.trunk(),
        )
        .expect("send");
    let (refused, _) = recv_starting(&carrier, "SIP/2.0 503");
    assert!(
        refused.contains("Call-ID: drain-2") && refused.contains("Retry-After:"),
        "{refused}"
    );
    // The running call still completes, then callgate exits cleanly.
    pbx.send_to(answer(&fwd, "200 OK").as_bytes(), pbx_peer)
        .expect("answer");
    let (ok, _) = recv_starting(&carrier, "SIP/2.0 200");
    assert!(ok.contains("Call-ID: drain-1"), "{ok}");
    let status = cg
        .signal_and_wait("0", Duration::from_secs(10))
        .expect("exited after drain");
    assert!(status.success(), "{status:?}\n{}", cg.log());
}

#[test]
fn message_limits_take_effect_on_reload() {
    let (cg, pbx) = start_with_pbx_socket("");
    let carrier = udp();
    let port = carrier.local_addr().expect("addr").port();
    // An OPTIONS of about 3 KB: under the default limit, over 2048.
    let big = |call: &str| {
        request("OPTIONS", call, port, &cg.trunk(), "UDP").replacen(
            "Content-Length: 0",
            &format!("X-Padding: {}\r\nContent-Length: 0", "p".repeat(3000)),
            1,
        )
    };
    carrier
        .send_to(big("limits-1").as_bytes(), cg.trunk())
        .expect("send");
    let (fwd, _) = recv_starting(&pbx, "OPTIONS ");
    assert!(fwd.contains("Call-ID: limits-1"));
    let text = std::fs::read_to_string(&cg.config_path).expect("config");
    std::fs::write(
        &cg.config_path,
        text.replacen(
            "[admin]",
            "[limits]\nmax_message_bytes = 2048\n\n[admin]",
            1,
        ),
    )
    .expect("rewrite");
    assert_eq!(cg.admin("POST", "/reload"), (200, "reloaded\n".to_owned()));
    carrier
        .send_to(big("limits-2").as_bytes(), cg.trunk())
        .expect("send");
    let (resp, _) = recv_starting(&carrier, "SIP/2.0 ");
    assert!(resp.starts_with("SIP/2.0 400"), "{resp}");
    assert!(resp.contains("Call-ID: limits-2"), "{resp}");
}

#[test]
fn reload_switches_targets_without_a_restart() {
    let (cg, old_pbx) = start_with_pbx_socket("");
    let new_pbx = udp();
    let new_port = new_pbx.local_addr().expect("addr").port();
    let old_port = old_pbx.local_addr().expect("addr").port();
    let text = std::fs::read_to_string(&cg.config_path).expect("config");
    std::fs::write(
        &cg.config_path,
        text.replace(
            &format!("sip:127.0.0.1:{old_port}"),
            &format!("sip:127.0.0.1:{new_port}"),
        ),
    )
    .expect("rewrite");
    assert_eq!(cg.admin("POST", "/reload"), (200, "reloaded\n".to_owned()));
    let carrier = udp();
    let port = carrier.local_addr().expect("addr").port();
    carrier
        .send_to(
            request("OPTIONS", "reload-1", port, &cg.trunk(), "UDP").as_bytes(),
            cg.trunk(),
        )
        .expect("send");
    let (fwd, _) = recv_starting(&new_pbx, "OPTIONS ");
    assert!(fwd.contains("Call-ID: reload-1"));
    // A broken file is refused and the running configuration kept.
    std::fs::write(&cg.config_path, "not toml [").expect("rewrite");
    let (code, body) = cg.admin("POST", "/reload");
    assert_eq!(code, 422, "{body}");
    // SIGHUP reloads too (the counter is the event to await).
    std::fs::write(&cg.config_path, &text).expect("restore");
    let _ = Command::new("kill")
        .args(["-HUP", &cg.pid().to_string()])
        .status();
    await_metric(&cg, "callgate_config_reloads_total", 2.0);
}

#[test]
fn calls_cross_over_tls() {
    use tokio_rustls::rustls;
    let (cg, pbx) = start_with_pbx_socket("");
    let conn = common::carrier::demo_tls_client();
    let tcp =
        std::net::TcpStream::connect((LOOPBACK, cg.ports.trunk_tls)).expect("connect TLS port");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let local = tcp.local_addr().expect("addr").port();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        request(
            "INVITE",
            "tls-1",
            local,
            &format!("127.0.0.1:{}", cg.ports.trunk_tls),
            "TLS",
        )
        .as_bytes(),
    )
    .expect("send over TLS");
    let (fwd, pbx_peer) = recv_starting(&pbx, "INVITE ");
    assert!(
        fwd.contains("Record-Route: <sip:127.0.0.1:") && fwd.contains("transport=tls;lr>"),
        "the trunk-side Record-Route keeps TLS: {fwd}"
    );
    pbx.send_to(answer(&fwd, "200 OK").as_bytes(), pbx_peer)
        .expect("answer");
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("SIP/2.0 200") {
        let n = tls.read(&mut buf).expect("read TLS");
        assert!(n > 0, "TLS connection closed; got {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("SIP/2.0 100 Trying"), "{got}");
    assert!(got.contains("Call-ID: tls-1"));
    let _ = free_port();
}

#[test]
fn tcp_keepalive_ping_gets_a_pong() {
    let (cg, _pbx) = start_with_pbx_socket("");
    let mut tcp = std::net::TcpStream::connect((LOOPBACK, cg.ports.trunk)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok();
    // RFC 5626 §4.4.1: a double-CRLF ping is answered with a single CRLF.
    tcp.write_all(b"\r\n\r\n").expect("ping");
    let mut pong = [0u8; 2];
    tcp.read_exact(&mut pong).expect("pong");
    assert_eq!(&pong, b"\r\n");
}

#[test]
fn ipv6_listener_relays_to_an_ipv4_pbx() {
    let pbx = udp();
    let pbx_port = pbx.local_addr().expect("addr").port();
    let ports = Ports::new();
    let cfg = config(
        ports,
        &[format!("sip:127.0.0.1:{pbx_port}")],
        &["sip:127.0.0.1:9".to_owned()],
        "",
    )
    .replacen(
        &format!("udp = \"127.0.0.1:{}\"", ports.trunk),
        &format!("udp = \"[::1]:{}\"", ports.trunk),
        1,
    )
    .replacen("allow = [\"127.0.0.0/8\"]", "allow = [\"::1/128\"]", 1);
    let cg = Callgate::start(ports, &cfg);
    let carrier = UdpSocket::bind("[::1]:0").expect("bind ::1");
    carrier.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let port = carrier.local_addr().expect("addr").port();
    let msg = request(
        "OPTIONS",
        "v6-1",
        port,
        &format!("[::1]:{}", ports.trunk),
        "UDP",
    )
    .replace(
        &format!("{LOOPBACK}:{port};branch"),
        &format!("[::1]:{port};branch"),
    );
    carrier
        .send_to(msg.as_bytes(), format!("[::1]:{}", ports.trunk))
        .expect("send");
    let (fwd, pbx_peer) = recv_starting(&pbx, "OPTIONS ");
    assert!(
        fwd.contains("Via: SIP/2.0/UDP [::1]:"),
        "the carrier's IPv6 Via is kept: {fwd}"
    );
    pbx.send_to(answer(&fwd, "200 OK").as_bytes(), pbx_peer)
        .expect("answer");
    let (ok, _) = recv_starting(&carrier, "SIP/2.0 200");
    assert!(ok.contains("Call-ID: v6-1"));
    drop(cg);
}

#[test]
fn outbound_tls_to_a_pbx_target() {
    use tokio_rustls::rustls;
    // A TLS PBX stand-in with the demo certificate.
    let pem = |f: &str| std::fs::read(common::repo().join("sip-config/tls").join(f)).expect("pem");
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem("callgate-demo.crt").as_slice())
        .map(|c| c.expect("cert"))
        .collect();
    let key = rustls_pemfile::private_key(&mut pem("callgate-demo.key").as_slice())
        .expect("key")
        .expect("a key");
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let listener = std::net::TcpListener::bind((LOOPBACK, 0)).expect("bind");
    let pbx_port = listener.local_addr().expect("addr").port();
    let pbx = common::carrier::tls_pbx_once(listener, server);
    let ports = Ports::new();
    let ca = common::repo().join("sip-config/tls/callgate-demo-ca.crt");
    let cfg = config(
        ports,
        &[format!("sip:127.0.0.1:{pbx_port};transport=tls")],
        &["sip:127.0.0.1:9".to_owned()],
        "",
    )
    .replacen(
        "[pbx]\n",
        &format!("[pbx]\ntls_ca = \"{}\"\n", ca.display()),
        1,
    );
    let cg = Callgate::start(ports, &cfg);
    let carrier = udp();
    let port = carrier.local_addr().expect("addr").port();
    carrier
        .send_to(
            request("OPTIONS", "tls-out-1", port, &cg.trunk(), "UDP").as_bytes(),
            cg.trunk(),
        )
        .expect("send");
    let (ok, _) = recv_starting(&carrier, "SIP/2.0 200");
    assert!(ok.contains("Call-ID: tls-out-1"), "{ok}");
    drop(cg);
    let (seen, _) = pbx.join().expect("pbx thread");
    assert!(
        seen.starts_with("OPTIONS ") && seen.contains("Via: SIP/2.0/TLS 127.0.0.1:"),
        "{seen}"
    );
}
