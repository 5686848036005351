//! Two callgate instances behind one trunk group share state through a
//! real `redis-server` (started here on a loopback port): velocity windows,
//! PASSporT replay detection and fetched certificates. When Redis dies or
//! hangs, calls go on with local state within the deadline, the fallback
//! shows in `/metrics`, and the instances reconnect when it returns.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use callgate::stir::sign::{identity_header, SignRequest};
use common::pki::{https_server, pki, Pki};
use common::redis::RedisServer;
use common::{
    await_metric, await_metric_at_most, config, free_port, scenario, Callgate, Ports, Sipp,
    SippResult,
};

const POLICY: &str = r#"
version = "shared-1"
[levels]
medium = 30
high = 60
critical = 90
[level.high]
action = "review"
restrict = ["credential-reset"]
[review]
uri = "sip:review@127.0.0.1"
[velocity.ani_1m]
key = "calling"
window_secs = 60
[[rule]]
code = "STIR_FAILED"
weight = 70
when = { stir = "failed" }
[[rule]]
code = "BURST_ANI_1M"
weight = 65
when = { velocity = "ani_1m", at_least = 4 }
"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn token(pki: &Pki, x5u: &str, orig: &str) -> String {
    let h = identity_header(
        &pki.signing,
        &SignRequest {
            orig,
            dest: "+15550100",
            attest: 'A',
            origid: "123e4567-e89b-12d3-a456-426655440077",
            x5u,
            iat: now(),
        },
    )
    .expect("sign");
    h.split(';').next().unwrap_or_default().to_owned()
}

/// One callgate of the pair: STIR, the policy, state on Redis at `redis`.
/// Both instances of one test share the key prefix (named after the Redis
/// port); no two tests share one.
fn instance(pki: &Pki, redis: u16, pbx_port: u16) -> Callgate {
    let dir = pki._dir.path();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).expect("policy");
    let ports = Ports::new();
    let extra = format!(
        "[stir]\nenabled = true\ntrust_dir = \"{}\"\nx5u_ca = [\"{}\"]\nallow_private_x5u = true\n\n\
         [risk]\npolicy = \"{}\"\n\n\
         [state]\nredis = \"redis://127.0.0.1:{redis}\"\ntimeout_ms = 50\nkey_prefix = \"test-{redis}:\"\n",
        pki.trust_dir.display(),
        pki.web_ca.display(),
        policy.display(),
    );
    Callgate::start(
        ports,
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port}")],
            &["sip:127.0.0.1:9".to_owned()],
            &extra,
        ),
    )
}

/// Places one call through `cg` from `calling` with `header` (an Identity
/// header line or a harmless one) and checks that it was answered.
fn call(cg: &Callgate, dir: &std::path::Path, calling: &str, header: &str, x5u: &str, n: usize) {
    let path = dir.join(format!("call-{n}.csv"));
    std::fs::write(
        &path,
        format!("SEQUENTIAL\n{calling};+15550100;{header};{x5u}\n"),
    )
    .expect("csv");
    let r = Sipp::uac(
        &scenario("uac-risk.xml"),
        &cg.trunk(),
        1,
        1,
        "u1",
        &["-inf", &path.display().to_string()],
    );
    r.assert_all_ok(1, &format!("call {n} from {calling}"));
}

/// The Request-URI and X-Callgate-Reasons of every INVITE the PBX got.
fn routed(uas: &SippResult) -> Vec<(String, String, String)> {
    uas.received_requests("INVITE")
        .iter()
        .map(|m| {
            let line = |name: &str| {
                m.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            let ruri = m.lines().next().unwrap_or_default().to_owned();
            (
                ruri,
                line("X-Callgate-Reasons:"),
                line("X-Callgate-Verify:"),
            )
        })
        .collect()
}

#[test]
fn two_instances_share_velocity_replays_and_certificates_and_survive_redis_loss() {
    let pki = pki();
    let (https, _) = https_server(&pki);
    let x5u = format!("https://127.0.0.1:{https}/good.pem");
    let redis_port = free_port();
    let redis = RedisServer::start(redis_port);
    let pbx_port = free_port();
    let calls = 9;
    let uas = Sipp::uas(
        &scenario("uas-basic.xml"),
        pbx_port,
        calls,
        "u1",
        &["-trace_msg"],
    );
    let a = instance(&pki, redis_port, pbx_port);
    let b = instance(&pki, redis_port, pbx_port);
    for cg in [&a, &b] {
        await_metric(cg, "callgate_state_shared_up", 1.0);
    }
    let dir = pki._dir.path();
    let unsigned = "X-No-Identity: unsigned";

    // Velocity: two calls through each instance; the 4th crosses the
    // rule's threshold only because B sees A's calls.
    call(&a, dir, "+15550103", unsigned, "none", 1);
    call(&b, dir, "+15550103", unsigned, "none", 2);
    call(&a, dir, "+15550103", unsigned, "none", 3);
    call(&b, dir, "+15550103", unsigned, "none", 4);

    // Replay and certificates: a PASSporT verified by A, presented again to
    // B on another call, is a replay; B took the x5u from Redis, not HTTPS.
    let signed = format!("Identity: {}", token(&pki, &x5u, "+15550104"));
    call(&a, dir, "+15550104", &signed, &x5u, 5);
    await_metric(
        &a,
        "callgate_state_ops_total{op=\"document\",answered=\"shared\"}",
        2.0, // A's look-up (a miss), then its put
    );
    call(&b, dir, "+15550104", &signed, &x5u, 6);
    assert_eq!(
        b.metric("callgate_stir_fetches_total{kind=\"x5u\",result=\"ok\"}"),
        0.0,
        "B must not fetch what A shared:\n{}",
        b.metrics()
    );

    // Redis hangs (DEBUG SLEEP blocks the server): a call waits at most
    // the 50 ms deadline, then local state answers and the call goes on.
    let fallbacks = b.metric("callgate_state_ops_total{op=\"velocity\",answered=\"fallback\"}");
    let sleeper = {
        let port = redis.port;
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$1\r\n3\r\n")
                .expect("write");
            let mut line = String::new();
            let _ = BufReader::new(s).read_line(&mut line);
        })
    };
    // The server is asleep once a PING on another connection goes
    // unanswered (bounded: the sleep lasts 3 s).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        s.write_all(b"*1\r\n$4\r\nPING\r\n").expect("write");
        let mut line = String::new();
        if BufReader::new(s).read_line(&mut line).is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "redis never went to sleep");
    }
    call(&b, dir, "+15550105", unsigned, "none", 7);
    let _ = sleeper.join();
    assert!(
        b.metric("callgate_state_ops_total{op=\"velocity\",answered=\"fallback\"}") > fallbacks,
        "a hung Redis must be answered by local state:\n{}",
        b.metrics()
    );

    // Redis dies: calls go on with local state; shared_up drops to 0.
    drop(redis);
    await_metric_at_most(&a, "callgate_state_shared_up", 0.0);
    call(&a, dir, "+15550106", unsigned, "none", 8);
    assert!(a.metric("callgate_state_ops_total{op=\"velocity\",answered=\"fallback\"}") >= 1.0);

    // Redis returns: the instance reconnects and uses it again.
    let redis = RedisServer::start(redis_port);
    await_metric(&a, "callgate_state_shared_up", 1.0);
    assert!(a.metric("callgate_state_shared_reconnects_total") >= 1.0);
    let shared_before = a.metric("callgate_state_ops_total{op=\"velocity\",answered=\"shared\"}");
    call(&a, dir, "+15550107", unsigned, "none", 9);
    assert_eq!(
        a.metric("callgate_state_ops_total{op=\"velocity\",answered=\"shared\"}"),
        shared_before + 1.0
    );
    assert_eq!(redis.command(&["PING"]), "+PONG");

    let uas = uas.finish();
    uas.assert_all_ok(u64::from(calls), "PBX UAS");
    let got = routed(&uas);
    assert_eq!(got.len(), calls as usize, "{got:#?}");
    for (i, (ruri, reasons, _)) in got.iter().take(3).enumerate() {
        assert!(
            ruri.starts_with("INVITE sip:+15550100@") && reasons.is_empty(),
            "call {} stays with the agents: {ruri} {reasons}",
            i + 1
        );
    }
    let (ruri, reasons, _) = &got[3];
    assert!(
        ruri.starts_with("INVITE sip:review@127.0.0.1") && reasons == "BURST_ANI_1M",
        "the 4th call from one number (2 per instance) goes to review: {ruri} {reasons}"
    );
    let (_, reasons, verify) = &got[4];
    assert!(
        verify.starts_with("passed;attest=A") && reasons.is_empty(),
        "{verify}"
    );
    let (ruri, reasons, verify) = &got[5];
    assert!(
        ruri.starts_with("INVITE sip:review@") && reasons == "STIR_FAILED",
        "{ruri} {reasons}"
    );
    assert!(
        verify.starts_with("failed;") && verify.ends_with("cause=438"),
        "the PASSporT A verified is a replay at B: {verify}"
    );
    assert!(
        b.log().contains("replay: PASSporT already used by call"),
        "{}",
        b.log()
    );
}

#[test]
fn an_unreachable_redis_never_delays_calls_and_is_reported() {
    // Nothing listens on this port: callgate starts, serves calls on local
    // state at once, and says so.
    let pki = pki();
    let _x5u_server = https_server(&pki); // writes the web CA the config names
    let dead = free_port();
    let pbx_port = free_port();
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, 4, "u1", &[]);
    let cg = instance(&pki, dead, pbx_port);
    let dir = pki._dir.path();
    for n in 0..4 {
        call(&cg, dir, "+15550103", "X-No-Identity: unsigned", "none", n);
    }
    uas.finish().assert_all_ok(4, "PBX UAS");
    let m = cg.metrics();
    assert_eq!(
        common::metric_value(&m, "callgate_state_shared_up"),
        0.0,
        "{m}"
    );
    assert_eq!(
        common::metric_value(
            &m,
            "callgate_state_ops_total{op=\"velocity\",answered=\"fallback\"}"
        ),
        4.0,
        "{m}"
    );
    // Local counting still applies the rule: the 4th call went to review.
    assert_eq!(
        common::metric_value(
            &m,
            "callgate_decisions_total{level=\"high\",action=\"review\"}"
        ),
        1.0,
        "{m}"
    );
}
