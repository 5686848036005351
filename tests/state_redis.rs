//! Two callgate instances behind one trunk group share state through a
//! real `redis-server` (started here on a loopback port): velocity windows,
//! PASSporT replay detection and fetched certificates. When Redis dies or
//! hangs, calls go on with local state within the deadline, the fallback
//! shows in `/metrics`, and the instances reconnect when it returns.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use common::calls::{call, pair, routed, sharing_instance, token, Pair};
use common::pki::{https_server, pki, Pki};
use common::redis::RedisServer;
use common::{await_metric, await_metric_at_most, free_port, scenario, Callgate, Sipp};

/// One callgate of the pair: STIR, the policy, state on Redis at `redis`.
/// Both instances of one test share the key prefix (named after the Redis
/// port); no two tests share one. The deadline is 500 ms, not the 50 ms
/// default: the assertions that Redis answered (velocity across the pair,
/// the return after a restart) must not turn into fallbacks when a loaded
/// test machine delays a round trip; a hung Redis (3 s) still outlasts it.
fn instance(pki: &Pki, redis: u16, pbx_port: u16) -> Callgate {
    instance_on(
        pki,
        pbx_port,
        &format!(
            "redis = \"redis://127.0.0.1:{redis}\"\ntimeout_ms = 500\nkey_prefix = \"test-{redis}:\"\n"
        ),
    )
}

/// One callgate of a pair with `state` as its `[state]` section.
fn instance_on(pki: &Pki, pbx_port: u16, state: &str) -> Callgate {
    sharing_instance(pki, pbx_port, &format!("[state]\n{state}"))
}

#[test]
fn two_instances_share_velocity_replays_and_certificates_and_survive_redis_loss() {
    let calls = 9;
    let Pair {
        pki,
        x5u,
        redis,
        pbx_port,
        uas,
    } = pair(calls);
    let redis_port = redis.port;
    let a = instance(&pki, redis_port, pbx_port);
    let b = instance(&pki, redis_port, pbx_port);
    for cg in [&a, &b] {
        await_metric(cg, "callgate_state_shared_up", 1.0);
    }
    // The pair keeps the host's name, both of them: each is told that
    // another instance publishes under its name.
    for cg in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while cg.metric("callgate_cluster_name_conflicts_total") < 1.0 {
            assert!(Instant::now() < deadline, "{}", cg.metrics());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            cg.log()
                .contains("another running instance uses this instance's name"),
            "{}",
            cg.log()
        );
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
    // the 500 ms deadline, then local state answers and the call goes on.
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

/// With `a` and `b` both connected to Redis, four calls from `calling`
/// alternate between them (PBX at `pbx_port`): the 4th, counted across
/// both (two per instance), goes to review.
fn the_fourth_call_across_both_is_reviewed(
    pki: &Pki,
    a: &Callgate,
    b: &Callgate,
    pbx_port: u16,
    calling: &str,
) {
    let uas = Sipp::uas(
        &scenario("uas-basic.xml"),
        pbx_port,
        4,
        "u1",
        &["-trace_msg"],
    );
    for cg in [a, b] {
        await_metric(cg, "callgate_state_shared_up", 1.0);
    }
    for i in 0..4 {
        let cg = if i % 2 == 0 { a } else { b };
        call(
            cg,
            pki._dir.path(),
            calling,
            "X-No-Identity: unsigned",
            "none",
            i,
        );
    }
    let got = routed(&uas.finish());
    assert!(
        got.len() == 4 && got[3].0.starts_with("INVITE sip:review@") && got[3].1 == "BURST_ANI_1M",
        "{got:#?}"
    );
}

#[test]
fn rediss_as_an_acl_user_shares_state_and_a_wrong_password_is_reported() {
    // A Redis that speaks TLS only, whose default user is off: callgate
    // logs in as the ACL user `callgate`, allowed only its own keys, and
    // checks the server's certificate against `tls_ca`.
    let pki = pki();
    let _x5u_server = https_server(&pki);
    let tls = common::pki::tls_files(pki._dir.path());
    let port = free_port();
    let prefix = format!("acl-{port}:");
    let pattern = format!("~{prefix}*");
    let (cert, key, ca) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
        tls.ca.display().to_string(),
    );
    let _redis = RedisServer::start_with(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            "callgate",
            "on",
            ">s3cret-pw",
            &pattern,
            // What docs/operations.md tells operators to grant, and no
            // more: scripts' commands are checked too.
            "+eval",
            "+set",
            "+get",
            "+pttl",
            "+ping",
            "+hello",
            "+client",
            "+zremrangebyscore",
            "+zremrangebyrank",
            "+zadd",
            "+zcard",
            "+pexpire",
            // The shared console's (`share_console`, on by default).
            "+zrangebyscore",
            "+rpush",
            "+lrange",
            "+expire",
            "+xadd",
            "+xrange",
            "+xrevrange",
        ],
    );
    let state = |password: &str| {
        format!(
            "redis = \"rediss://callgate:{password}@localhost:{port}\"\ntls_ca = \"{ca}\"\n\
             timeout_ms = 500\nkey_prefix = \"{prefix}\"\n"
        )
    };
    let pbx_port = free_port();
    let named = |name: &str| {
        sharing_instance(
            &pki,
            pbx_port,
            &format!(
                "[instance]\nname = \"{name}\"\n[state]\n{}",
                state("s3cret-pw")
            ),
        )
    };
    let (a, b) = (named("acl-a"), named("acl-b"));
    let wrong = instance_on(&pki, pbx_port, &state("not-the-password"));
    the_fourth_call_across_both_is_reviewed(&pki, &a, &b, pbx_port, "+15550103");
    for cg in [&a, &b] {
        assert_eq!(
            cg.metric("callgate_state_ops_total{op=\"velocity\",answered=\"shared\"}"),
            2.0,
            "{}",
            cg.metrics()
        );
    }
    // The shared console's ticks work with what the ACL grants: each sees
    // the other.
    for cg in [&a, &b] {
        common::await_metric(cg, "callgate_cluster_instances", 2.0);
        assert_eq!(
            cg.metric("callgate_cluster_tick_failures_total"),
            0.0,
            "{}",
            cg.log()
        );
    }
    // The wrong password: refused by Redis, said in the log (never the
    // password itself), and the instance runs on local state.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !wrong
        .log()
        .contains("redis unreachable; using local state and retrying")
    {
        assert!(Instant::now() < deadline, "{}", wrong.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(wrong.metric("callgate_state_shared_up"), 0.0);
    assert!(!wrong.log().contains("not-the-password"), "{}", wrong.log());
}

/// The members of the one velocity window key matching `pattern` on
/// `server` (`:N`).
fn window_size(server: &RedisServer, pattern: &str) -> String {
    server.command(&[
        "EVAL",
        "return redis.call('ZCARD', redis.call('KEYS', ARGV[1])[1])",
        "0",
        pattern,
    ])
}

/// Polls `server` with `args` until the reply's first line is `want`
/// (bounded: 20 s).
fn await_reply(server: &RedisServer, args: &[&str], want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = server.command(args);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{args:?}: {got}, not {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sentinels_name_the_master_callgate_shares_state_through_and_follow_a_failover() {
    // A master, its replica and a Sentinel that watches them: callgate is
    // given only the Sentinel and the master's name, asks it for the
    // master and counts through it; after a failover it asks again and
    // counts through the new master, without a restart.
    let pki = pki();
    let _x5u_server = https_server(&pki);
    let (master_port, replica_port, sentinel_port) = (free_port(), free_port(), free_port());
    // The replica's full sync writes an RDB file: in the test's directory.
    let dir = pki._dir.path().display().to_string();
    let master = RedisServer::start_with(master_port, &["--dir", &dir]);
    let replica = RedisServer::start_with(
        replica_port,
        &[
            "--replicaof",
            "127.0.0.1",
            &master_port.to_string(),
            "--dir",
            &dir,
        ],
    );
    // The replica is in sync before the Sentinel first asks the master.
    await_reply(&master, &["WAIT", "1", "100"], ":1");
    let sentinel = RedisServer::sentinel(sentinel_port, "cgmaster", master_port, pki._dir.path());
    await_reply(&sentinel, &["SENTINEL", "REPLICAS", "cgmaster"], "*1");
    let state = format!(
        "redis = \"redis://cgmaster/0\"\nsentinels = [\"127.0.0.1:{sentinel_port}\"]\n\
         timeout_ms = 500\nkey_prefix = \"sentinel-{master_port}:\"\n"
    );
    let pbx_port = free_port();
    let a = instance_on(&pki, pbx_port, &state);
    let b = instance_on(&pki, pbx_port, &state);
    the_fourth_call_across_both_is_reviewed(&pki, &a, &b, pbx_port, "+15550103");
    // The counts are in the master the Sentinel named.
    let pattern = |n: &str| format!("sentinel-{master_port}:v:ani_1m:*{n}");
    assert_eq!(window_size(&master, &pattern("0103")), ":4");

    // Failover: the replica becomes the master (ROLE's reply has 3
    // elements on a master, 5 on a replica)…
    assert_eq!(
        sentinel.command(&["SENTINEL", "FAILOVER", "cgmaster"]),
        "+OK"
    );
    await_reply(&replica, &["ROLE"], "*3");
    // … and the old master a replica of it, once the Sentinel turned it.
    await_reply(&master, &["ROLE"], "*5");
    // The first write each instance makes after it may still reach the
    // demoted master (READONLY, or its connection closed): that call
    // falls back to local state and the instance asks the Sentinel again.
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, 2, "u1", &[]);
    for (n, cg) in [&a, &b].into_iter().enumerate() {
        call(
            cg,
            pki._dir.path(),
            "+15550199",
            "X-No-Identity: unsigned",
            "none",
            10 + n,
        );
    }
    uas.finish().assert_all_ok(2, "PBX UAS after the failover");
    the_fourth_call_across_both_is_reviewed(&pki, &a, &b, pbx_port, "+15550108");
    assert_eq!(
        window_size(&replica, &pattern("0108")),
        ":4",
        "counted in the new master"
    );
    for cg in [&a, &b] {
        assert!(
            cg.metric("callgate_state_shared_reconnects_total") >= 1.0,
            "{}",
            cg.metrics()
        );
    }
}
