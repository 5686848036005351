//! Exhaustion of connections and memory (issue 13), tried as an attacker
//! would against the real callgate binary: many connections from one host,
//! TLS handshakes that never finish, messages dripped a byte at a time,
//! floods of large requests.
//!
//! The tests whose point is the source address (per-source caps) run from
//! distinct hosts in network namespaces (`common::netns`) and **need root**,
//! as in CI.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::netns::{Host, Lab};
use common::{await_metric, config, free_port, scenario, Callgate, Ports, Sipp, LOOPBACK};

/// A callgate whose trunk listens (UDP and TCP) on the carrier's link in
/// `lab` and admits every lab host, toward a PBX on loopback.
fn callgate_in_lab(carrier: &Host, pbx_port: u16, extra: &str) -> (Callgate, SocketAddr) {
    let ports = Ports::new();
    let text = config(
        ports,
        &[format!("sip:{LOOPBACK}:{pbx_port}")],
        &nowhere(),
        extra,
    )
    .replacen(
        &format!(
            "udp = \"127.0.0.1:{}\"\ntcp = \"127.0.0.1:{}\"",
            ports.trunk, ports.trunk
        ),
        &format!(
            "udp = \"{g}:{p}\"\ntcp = \"{g}:{p}\"",
            g = carrier.gate,
            p = ports.trunk
        ),
        1,
    )
    .replacen(
        "allow = [\"127.0.0.0/8\"]",
        "allow = [\"127.0.0.0/8\", \"10.231.0.0/16\"]",
        1,
    );
    assert!(text.contains(&carrier.gate.to_string()), "trunk moved");
    let cg = Callgate::start(ports, &text);
    let trunk = SocketAddr::from((carrier.gate, ports.trunk));
    (cg, trunk)
}

/// A carrier target nobody listens on (these tests send nothing toward
/// the trunk).
fn nowhere() -> Vec<String> {
    vec![format!("sip:{LOOPBACK}:{}", free_port())]
}

/// A callgate on loopback with `extra` configuration.
fn loopback_callgate(extra: &str) -> Callgate {
    let ports = Ports::new();
    let pbx = vec![format!("sip:{LOOPBACK}:{}", free_port())];
    Callgate::start(ports, &config(ports, &pbx, &nowhere(), extra))
}

/// Whether the peer closes `s` within `limit`: a read that ends (EOF or
/// reset) rather than timing out.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).ok();
    let mut buf = [0u8; 512];
    let until = Instant::now() + limit;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {
                if Instant::now() >= until {
                    return false;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// sipp placing `calls` calls over TCP from inside `host` to `trunk`.
fn sipp_call_from(host: &Host, trunk: SocketAddr, calls: u32) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    host.command("sipp")
        .current_dir(dir.path())
        .args([
            &trunk.to_string(),
            "-sf",
            &scenario("uac-basic.xml"),
            "-i",
            &host.addr.to_string(),
            "-p",
            &free_port().to_string(),
            "-m",
            &calls.to_string(),
            "-t",
            "t1",
            "-nostdin",
            "-timeout",
            "30s",
            "-timeout_error",
        ])
        .output()
        .expect("run sipp in the carrier's namespace")
}

/// An attacker host that opens connections until its cap (64 by default)
/// gets every further one closed at once, while the carrier, another host,
/// still connects and places a call. Without the per-source cap the
/// attacker's 65th connection stays open (and it could go on to EMFILE).
#[test]
fn an_attacker_at_its_connection_cap_cannot_starve_the_carrier() {
    let lab = Lab::new(&["carrier", "attacker"]);
    let (carrier, attacker) = (lab.host(0).clone(), lab.host(1).clone());
    let pbx_port = free_port();
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, 1, "u1", &[]);
    let (cg, trunk) = callgate_in_lab(&carrier, pbx_port, "");

    let held: Vec<TcpStream> = (0..64)
        .map(|i| {
            attacker
                .tcp(trunk)
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    await_metric(&cg, "callgate_tcp_connections", 64.0);
    let mut over = attacker.tcp(trunk).expect("the kernel accepts the 65th");
    assert!(
        closed_within(&mut over, Duration::from_secs(5)),
        "the attacker's 65th connection is closed at once"
    );
    await_metric(
        &cg,
        "callgate_connections_closed_total{side=\"trunk\",reason=\"per_source_cap\"}",
        1.0,
    );

    let out = sipp_call_from(&carrier, trunk, 1);
    assert!(
        out.status.success(),
        "the carrier's call over TCP completes while the attacker holds its cap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    uas.finish().assert_all_ok(1, "PBX UAS");
    assert_eq!(
        cg.metric("callgate_connections_closed_total{side=\"trunk\",reason=\"per_source_cap\"}"),
        1.0,
        "only the attacker's connection over its cap was refused"
    );
    drop(held);
}

/// A TLS client that connects and never sends its ClientHello is closed
/// at the handshake deadline (`limits.tls_handshake_secs`), counted.
#[test]
fn a_tls_handshake_that_never_finishes_is_closed_at_its_deadline() {
    let cg = loopback_callgate("[limits]\ntls_handshake_secs = 1\n");
    let mut s = TcpStream::connect((LOOPBACK, cg.ports.trunk_tls)).expect("connect TLS port");
    let started = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(10)),
        "a silent TLS client is closed"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed by the handshake deadline, not at once ({took:?})"
    );
    await_metric(
        &cg,
        "callgate_connections_closed_total{side=\"trunk\",reason=\"handshake_timeout\"}",
        1.0,
    );
}

/// A message dripped one byte per second never completes: the connection is
/// closed at the whole-message deadline (`limits.message_deadline_secs`),
/// although every byte arrives well within the idle timeout. With only an
/// idle timer, reset by each byte, the drip holds the connection forever.
#[test]
fn a_message_dripped_byte_by_byte_is_closed_at_its_deadline() {
    let cg = loopback_callgate("[limits]\nmessage_deadline_secs = 2\ntcp_idle_secs = 300\n");
    let mut s = TcpStream::connect((LOOPBACK, cg.ports.trunk)).expect("connect TCP port");
    s.set_write_timeout(Some(Duration::from_secs(2))).ok();
    let drip = b"OPTIONS sip:pbx@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-drip\r\n";
    let started = Instant::now();
    let mut closed = false;
    // One byte a second for up to 8 s, four times the deadline.
    for b in drip.iter().take(8) {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut s, Duration::from_secs(1)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the dripping connection is closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "closed at the 2 s message deadline ({took:?})"
    );
    await_metric(
        &cg,
        "callgate_connections_closed_total{side=\"trunk\",reason=\"message_deadline\"}",
        1.0,
    );
}

/// A request of `body` bytes of text from `from` (a socket on a lab host):
/// an OPTIONS, which the test config forwards to the PBX (`[trunk] options
/// = "forward"`), so the core keeps a transaction for it.
fn large_message(from: SocketAddr, i: usize, body: usize) -> String {
    format!(
        "OPTIONS sip:+15550100@{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-flood{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:x@{ip}>;tag=f{i}\r\nTo: <sip:+15550100@{LOOPBACK}>\r\nCall-ID: flood-{i}\r\nCSeq: 1 OPTIONS\r\nContent-Type: text/plain\r\nContent-Length: {body}\r\n\r\n{}",
        "x".repeat(body),
        ip = from.ip()
    )
}

/// Statuses of the responses `s` receives until it has `want` or a read
/// times out.
fn statuses(s: &std::net::UdpSocket, want: usize) -> Vec<u16> {
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_535];
    while got.len() < want {
        let Ok(n) = s.recv(&mut buf) else { break };
        let text = String::from_utf8_lossy(&buf[..n]);
        if let Some(code) = text.get(8..11).and_then(|c| c.parse().ok()) {
            got.push(code);
        }
    }
    got
}

/// A flood of large non-INVITE requests from an attacker host gets 503
/// once its transactions hold its byte budget (here 1 MiB: 8 requests of
/// 60 kB), and holds no more; meanwhile the carrier, another host, places
/// a call that the PBX answers. Without the budget every request is
/// forwarded and held for 32 s (overload control counts only INVITEs).
#[test]
fn a_flood_of_large_requests_is_refused_past_its_byte_budget_while_the_carrier_calls() {
    let lab = Lab::new(&["carrier", "attacker"]);
    let (carrier, attacker) = (lab.host(0).clone(), lab.host(1).clone());
    let pbx = common::carrier::Pbx::bind();
    let (cg, trunk) = callgate_in_lab(
        &carrier,
        pbx.port(),
        "[overload]\nmax_transaction_bytes_per_source = 1048576\n",
    );

    let flood = attacker.udp(0);
    let from = flood.local_addr().expect("attacker address");
    let sent = 20;
    for i in 0..sent {
        flood
            .send_to(large_message(from, i, 60_000).as_bytes(), trunk)
            .expect("send");
    }
    let got = statuses(&flood, sent - 8);
    assert_eq!(
        got.iter().filter(|s| **s == 503).count(),
        sent - 8,
        "every request past the 8 that fit is refused with 503: {got:?}"
    );
    await_metric(
        &cg,
        "callgate_admission_refusals_total{side=\"trunk\",reason=\"transaction_bytes\"}",
        (sent - 8) as f64,
    );
    let held = cg.metric("callgate_transaction_bytes");
    assert!(
        held > 0.0 && held <= 1_048_576.0,
        "the attacker's transactions hold at most its budget: {held}"
    );

    let phone = carrier.udp(0);
    let me = phone.local_addr().expect("carrier address");
    let invite = format!(
        "INVITE sip:+15550100@{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-call1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15550199@{ip}>;tag=c1\r\nTo: <sip:+15550100@{LOOPBACK}>\r\nCall-ID: carrier-call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:+15550199@{me}>\r\nContent-Length: 0\r\n\r\n",
        ip = me.ip()
    );
    phone
        .send_to(invite.as_bytes(), trunk)
        .expect("send INVITE");
    let reached = pbx.until("carrier-call-1");
    assert!(
        reached.last().is_some_and(|m| m.starts_with("INVITE ")),
        "the carrier's INVITE reaches the PBX"
    );
    let answers = statuses(&phone, 2);
    assert!(
        answers.contains(&200),
        "the carrier's call is answered: {answers:?}"
    );
}
