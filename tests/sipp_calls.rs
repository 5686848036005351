//! End-to-end calls through a running callgate with real sipp peers: sipp
//! UAC as the carrier on the trunk side, sipp UAS as the PBX. Bounded in
//! count and time; loopback only.

mod common;

use common::{config, free_port, scenario, Callgate, Ports, Sipp};

fn pbx_target(port: u16, transport: &str) -> String {
    format!("sip:127.0.0.1:{port};transport={transport}")
}

/// Starts callgate forwarding trunk calls to the given PBX ports.
fn callgate_to(pbx_ports: &[(u16, &str)], extra: &str) -> Callgate {
    let ports = Ports::new();
    let targets: Vec<String> = pbx_ports.iter().map(|(p, t)| pbx_target(*p, t)).collect();
    Callgate::start(
        ports,
        &config(
            ports,
            &targets,
            &["sip:127.0.0.1:9;transport=udp".to_owned()],
            extra,
        ),
    )
}

#[test]
fn a_few_hundred_calls_all_complete_over_udp() {
    let calls = 300;
    let pbx_port = free_port();
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, calls, "u1", &[]);
    let cg = callgate_to(&[(pbx_port, "udp")], "");
    let uac = Sipp::uac(
        &scenario("uac-basic.xml"),
        &cg.trunk(),
        calls,
        100,
        "u1",
        &["-d", "100"],
    );
    uac.assert_all_ok(u64::from(calls), "carrier UAC");
    uas.finish().assert_all_ok(u64::from(calls), "PBX UAS");
    // Every INVITE and BYE crossed both sides.
    let m = cg.metrics();
    assert_eq!(
        common::metric_value(
            &m,
            "callgate_sip_requests_total{side=\"trunk\",direction=\"in\",method=\"INVITE\"}"
        ),
        f64::from(calls)
    );
    assert_eq!(
        common::metric_value(
            &m,
            "callgate_sip_requests_total{side=\"pbx\",direction=\"out\",method=\"BYE\"}"
        ),
        f64::from(calls)
    );
    assert_eq!(
        common::metric_value(&m, "callgate_sip_parse_errors_total{side=\"trunk\"}"),
        0.0
    );
}

#[test]
fn calls_complete_over_tcp() {
    let calls = 50;
    let pbx_port = free_port();
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, calls, "t1", &[]);
    let cg = callgate_to(&[(pbx_port, "tcp")], "");
    let uac = Sipp::uac(
        &scenario("uac-basic.xml"),
        &cg.trunk(),
        calls,
        25,
        "t1",
        &["-d", "100"],
    );
    uac.assert_all_ok(u64::from(calls), "carrier UAC over TCP");
    uas.finish()
        .assert_all_ok(u64::from(calls), "PBX UAS over TCP");
    // One connection from the carrier, one to the PBX (reused for every call).
    assert_eq!(cg.metric("callgate_tcp_connections_opened_total"), 2.0);
}

#[test]
fn cancel_before_answer_gets_487() {
    let calls = 10;
    let pbx_port = free_port();
    let uas = Sipp::uas(&scenario("uas-ring-cancel.xml"), pbx_port, calls, "u1", &[]);
    let cg = callgate_to(&[(pbx_port, "udp")], "");
    let uac = Sipp::uac(
        &scenario("uac-cancel.xml"),
        &cg.trunk(),
        calls,
        10,
        "u1",
        &[],
    );
    uac.assert_all_ok(u64::from(calls), "cancelling carrier");
    uas.finish().assert_all_ok(u64::from(calls), "ringing PBX");
    assert_eq!(
        cg.metric("callgate_sip_requests_total{side=\"pbx\",direction=\"out\",method=\"CANCEL\"}"),
        f64::from(calls)
    );
}

#[test]
fn bye_from_the_pbx_side_reaches_the_carrier() {
    let calls = 10;
    let pbx_port = free_port();
    let uas = Sipp::uas(&scenario("uas-bye.xml"), pbx_port, calls, "u1", &[]);
    let cg = callgate_to(&[(pbx_port, "udp")], "");
    let uac = Sipp::uac(
        &scenario("uac-wait-bye.xml"),
        &cg.trunk(),
        calls,
        10,
        "u1",
        &[],
    );
    uac.assert_all_ok(u64::from(calls), "carrier receiving BYE");
    uas.finish()
        .assert_all_ok(u64::from(calls), "PBX sending BYE");
    assert_eq!(
        cg.metric("callgate_sip_requests_total{side=\"pbx\",direction=\"in\",method=\"BYE\"}"),
        f64::from(calls)
    );
}

#[test]
fn re_invite_mid_call_is_relayed() {
    let calls = 10;
    let pbx_port = free_port();
    let uas = Sipp::uas(&scenario("uas-reinvite.xml"), pbx_port, calls, "u1", &[]);
    let cg = callgate_to(&[(pbx_port, "udp")], "");
    let uac = Sipp::uac(
        &scenario("uac-reinvite.xml"),
        &cg.trunk(),
        calls,
        10,
        "u1",
        &[],
    );
    uac.assert_all_ok(u64::from(calls), "carrier re-INVITE");
    uas.finish()
        .assert_all_ok(u64::from(calls), "PBX accepting re-INVITE");
    assert_eq!(
        cg.metric("callgate_sip_requests_total{side=\"trunk\",direction=\"in\",method=\"INVITE\"}"),
        f64::from(2 * calls)
    );
}

#[test]
fn failover_to_the_next_pbx_when_the_first_answers_503() {
    let calls = 10;
    let (busy, good) = (free_port(), free_port());
    let refusing = Sipp::uas(&scenario("uas-503.xml"), busy, calls, "u1", &[]);
    let uas = Sipp::uas(&scenario("uas-basic.xml"), good, calls, "u1", &[]);
    let cg = callgate_to(&[(busy, "udp"), (good, "udp")], "");
    let uac = Sipp::uac(
        &scenario("uac-basic.xml"),
        &cg.trunk(),
        calls,
        10,
        "u1",
        &["-d", "100"],
    );
    uac.assert_all_ok(u64::from(calls), "carrier");
    uas.finish().assert_all_ok(u64::from(calls), "second PBX");
    refusing.finish().assert_all_ok(u64::from(calls), "503 PBX");
    assert_eq!(cg.metric("callgate_failovers_total"), f64::from(calls));
}

#[test]
fn failover_when_the_first_pbx_is_down_and_health_checks_take_it_out() {
    let calls = 20;
    let (down, good) = (free_port(), free_port());
    // -aa: the UAS answers the OPTIONS health probes with 200. sipp counts
    // those against -m, so no call limit here: the guard stops it.
    let _uas = Sipp::uas(&scenario("uas-basic.xml"), good, 100_000, "u1", &["-aa"]);
    // Nothing listens on `down`: the first calls fail over after
    // no_response_ms; OPTIONS probes then take it out of rotation.
    let cg = callgate_to(
        &[(down, "udp"), (good, "udp")],
        "[health]\ninterval_secs = 1\ntimeout_ms = 1000\ndown_after = 1\n",
    );
    let uac = Sipp::uac(
        &scenario("uac-basic.xml"),
        &cg.trunk(),
        calls,
        10,
        "u1",
        &["-d", "100"],
    );
    uac.assert_all_ok(u64::from(calls), "carrier");
    assert_eq!(
        cg.metric("callgate_targets_up{side=\"pbx\"}"),
        1.0,
        "the dead PBX is out of rotation"
    );
    let failovers = cg.metric("callgate_failovers_total");
    assert!(
        failovers < f64::from(calls),
        "health checks stopped failovers early ({failovers} of {calls})"
    );
    let one_more = Sipp::uac(
        &scenario("uac-basic.xml"),
        &cg.trunk(),
        1,
        1,
        "u1",
        &["-d", "100"],
    );
    one_more.assert_all_ok(1, "carrier after the target left rotation");
    assert_eq!(
        cg.metric("callgate_failovers_total"),
        failovers,
        "no failover once the dead target is out"
    );
}
