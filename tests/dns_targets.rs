//! Host names in targets (RFC 3263 §4.2, issue 15): resolved against a
//! real DNS server on loopback (dnsmasq, `apt-get install dnsmasq-base`),
//! with sipp as the PBXs. SRV decides the order (lowest priority first),
//! failover walks the SRV targets, a changed record is picked up after its
//! TTL without a restart, and the last good answer carries calls through a
//! DNS outage. Every wait polls a metric or the admin API with a deadline.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{config, free_port, scenario, Callgate, Ports, Sipp};

/// A dnsmasq in the foreground on 127.0.0.1:`port` answering only the
/// records given (no upstream, no /etc/hosts); killed on drop.
struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    fn start(port: u16, records: &[String], log: &Path) -> Dnsmasq {
        let log = std::fs::File::create(log).expect("dnsmasq log");
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--no-resolv",
                "--no-hosts",
                // Authoritative for .test: NODATA/NXDOMAIN, never REFUSED.
                "--local=/test/",
                "--local-ttl=1",
                "--log-queries",
                "--log-facility=-",
                &format!("--port={port}"),
            ])
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn dnsmasq (apt-get install dnsmasq-base)");
        common::wait_bound(port, false);
        Dnsmasq { child }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// dnsmasq's flags for an SRV record and its target's A record.
fn srv(service: &str, host: &str, port: u16, priority: u16) -> [String; 2] {
    [
        format!("--srv-host={service},{host},{port},{priority},10"),
        format!("--host-record={host},127.0.0.1"),
    ]
}

/// A callgate whose PBX target is `target`, resolved by the DNS server on
/// `dns_port`; the PBX side's `allow` is empty, so the PBX's answers are
/// admitted only because its resolved addresses are.
fn callgate_by_name(target: &str, dns_port: u16) -> Callgate {
    let ports = Ports::new();
    let text = config(
        ports,
        &[target.to_owned()],
        &["sip:127.0.0.1:9;transport=udp".to_owned()],
        &format!(
            "[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\nttl_floor_secs = 1\nttl_ceiling_secs = 2\ntimeout_ms = 300\n"
        ),
    );
    let pbx_acl = format!(
        "[pbx]\nudp = \"127.0.0.1:{p}\"\ntcp = \"127.0.0.1:{p}\"\nallow = [\"127.0.0.0/8\"]",
        p = ports.pbx
    );
    assert!(text.contains(&pbx_acl), "the test config's [pbx] changed");
    let text = text.replace(
        &pbx_acl,
        &format!(
            "[pbx]\nudp = \"127.0.0.1:{p}\"\ntcp = \"127.0.0.1:{p}\"\nallow = []",
            p = ports.pbx
        ),
    );
    Callgate::start(ports, &text)
}

/// Polls `what` with a deadline (the admin API is the event source).
fn await_true(what: &str, cg: &Callgate, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} not seen within 15 s; metrics:\n{}\nlog:\n{}",
        cg.metrics(),
        cg.log()
    );
}

fn calls_through(cg: &Callgate, calls: u32, what: &str) {
    Sipp::uac(
        &scenario("uac-basic.xml"),
        &cg.trunk(),
        calls,
        10,
        "u1",
        &["-d", "100"],
    )
    .assert_all_ok(u64::from(calls), what);
}

#[test]
fn srv_routes_to_the_highest_priority_target_and_fails_over_to_the_next() {
    let (dns_port, a, b) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut records = srv("_sip._udp.pbx.test", "pbx-a.test", a, 10).to_vec();
    records.extend(srv("_sip._udp.pbx.test", "pbx-b.test", b, 20));
    let _dns = Dnsmasq::start(dns_port, &records, &dir.path().join("dnsmasq.log"));
    let calls = 5;
    let first = Sipp::uas(&scenario("uas-basic.xml"), a, calls, "u1", &[]);
    let second = Sipp::uas(&scenario("uas-basic.xml"), b, calls, "u1", &[]);
    let cg = callgate_by_name("sip:pbx.test;transport=udp", dns_port);
    let (status, body) = cg.admin("GET", "/v1/targets");
    assert_eq!(status, 200, "{body}");
    let (at_a, at_b) = (
        body.find(&format!("127.0.0.1:{a}")),
        body.find(&format!("127.0.0.1:{b}")),
    );
    assert!(
        matches!((at_a, at_b), (Some(x), Some(y)) if x < y),
        "both SRV targets, priority 10 first: {body}"
    );
    assert_eq!(
        cg.metric("callgate_dns_target_addresses{side=\"pbx\"}"),
        2.0
    );

    calls_through(&cg, calls, "carrier, SRV priority 10 up");
    first
        .finish()
        .assert_all_ok(u64::from(calls), "the priority-10 PBX took every call");
    assert_eq!(cg.metric("callgate_failovers_total"), 0.0);

    // The priority-10 PBX has stopped (its sipp is done): every call fails
    // over to the priority-20 one after no_response_ms.
    calls_through(&cg, calls, "carrier, SRV priority 10 silent");
    second
        .finish()
        .assert_all_ok(u64::from(calls), "the priority-20 PBX took over");
    assert_eq!(cg.metric("callgate_failovers_total"), f64::from(calls));
}

#[test]
fn a_changed_record_is_picked_up_and_the_last_good_answer_outlives_the_dns() {
    let (dns_port, a, b) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = Dnsmasq::start(
        dns_port,
        &srv("_sip._udp.pbx.test", "pbx-a.test", a, 10),
        &dir.path().join("dnsmasq-1.log"),
    );
    let cg = callgate_by_name("sip:pbx.test;transport=udp", dns_port);
    let first = Sipp::uas(&scenario("uas-basic.xml"), a, 1, "u1", &[]);
    calls_through(&cg, 1, "carrier, resolved by SRV");
    first.finish().assert_all_ok(1, "PBX a");

    // The DNS server stops: lookups fail, the last good answer stays.
    dns.stop();
    let failed = "callgate_dns_lookups_total{result=\"failed\"}";
    await_true("a failed lookup", &cg, || {
        cg.metric(failed) >= 1.0 && cg.metric("callgate_dns_stale_targets{side=\"pbx\"}") == 1.0
    });
    assert!(
        cg.log()
            .contains("DNS lookup failed: keeping the last good answer"),
        "{}",
        cg.log()
    );
    let again = Sipp::uas(&scenario("uas-basic.xml"), a, 1, "u1", &[]);
    calls_through(&cg, 1, "carrier, DNS down");
    again
        .finish()
        .assert_all_ok(1, "PBX a on the last good answer");

    // The record changes (PBX b now), the server is back: picked up after
    // the TTL, without a restart.
    let _dns = Dnsmasq::start(
        dns_port,
        &srv("_sip._udp.pbx.test", "pbx-b.test", b, 10),
        &dir.path().join("dnsmasq-2.log"),
    );
    let moved = format!("127.0.0.1:{b}");
    await_true("the new SRV target", &cg, || {
        let (_, body) = cg.admin("GET", "/v1/targets");
        body.contains(&moved) && !body.contains(&format!("127.0.0.1:{a}\""))
    });
    assert_eq!(
        cg.metric("callgate_dns_stale_targets{side=\"pbx\"}"),
        0.0,
        "fresh again"
    );
    let second = Sipp::uas(&scenario("uas-basic.xml"), b, 1, "u1", &[]);
    calls_through(&cg, 1, "carrier, after the record changed");
    second.finish().assert_all_ok(1, "PBX b");
}

/// TLS to a host-name target proves the name of the URI (RFC 5922 §4.1):
/// the PBX's certificate names `pbx.test` and no IP address, so only a
/// check by name lets the handshake through.
#[test]
fn a_tls_target_by_name_is_checked_against_the_name() {
    use tokio_rustls::rustls;

    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["pbx.test".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let ca_file = dir.path().join("pbx-ca.crt");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server config");
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let pbx_port = listener.local_addr().expect("addr").port();
    let pbx = common::carrier::tls_pbx_once(listener, server);

    let dns_port = free_port();
    let _dns = Dnsmasq::start(
        dns_port,
        &["--host-record=pbx.test,127.0.0.1".to_owned()],
        &dir.path().join("dnsmasq.log"),
    );
    let ports = Ports::new();
    let text = config(
        ports,
        &[format!("sip:pbx.test:{pbx_port};transport=tls")],
        &["sip:127.0.0.1:9;transport=udp".to_owned()],
        &format!("[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n"),
    )
    .replacen(
        "[pbx]\n",
        &format!("[pbx]\ntls_ca = \"{}\"\n", ca_file.display()),
        1,
    );
    let cg = Callgate::start(ports, &text);
    let carrier = std::net::UdpSocket::bind(("127.0.0.1", 0)).expect("bind");
    carrier
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let port = carrier.local_addr().expect("addr").port();
    let options = format!(
        "OPTIONS sip:+15550100@{trunk} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-dns-tls;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15550199@127.0.0.1>;tag=t-dns-tls\r\nTo: <sip:+15550100@127.0.0.1>\r\nCall-ID: dns-tls\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        trunk = cg.trunk()
    );
    carrier
        .send_to(options.as_bytes(), cg.trunk())
        .expect("send");
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    let answered = loop {
        assert!(Instant::now() < deadline, "no answer; log:\n{}", cg.log());
        let n = carrier.recv(&mut buf).expect("an answer within 10 s");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 100") {
            break text;
        }
    };
    assert!(
        answered.starts_with("SIP/2.0 200") && answered.contains("Call-ID: dns-tls"),
        "{answered}\nlog:\n{}",
        cg.log()
    );
    drop(cg);
    let (seen, sni) = pbx.join().expect("pbx thread");
    assert!(seen.starts_with("OPTIONS "), "{seen}");
    assert_eq!(sni.as_deref(), Some("pbx.test"), "the name is sent as SNI");
}
