//! Two `callgate run` processes, `cg-a` and `cg-b`, behind one trunk on
//! one real `redis-server` (deploy/two-instances/): the calls of one
//! caller spread over both trip a velocity rule neither would alone, a
//! PASSporT verified by one is a replay at the other, each decision says
//! which instance made it (decision id, audit record, `callgate report`
//! over both stores), and when one instance is killed (SIGKILL) the other
//! keeps serving calls and sharing state.

mod common;

use std::process::Command;
use std::time::Duration;

use common::calls::{call, decision_ids, pair, routed, sharing_instance, token, Pair};
use common::pki::Pki;
use common::{await_metric, Callgate};

/// The instance `name`: STIR, the policy, state on Redis at `redis`
/// (both instances under one key prefix), its own audit store.
fn instance(pki: &Pki, name: &str, redis: u16, pbx_port: u16) -> Callgate {
    let db = pki._dir.path().join(format!("{name}.db"));
    sharing_instance(
        pki,
        pbx_port,
        &format!(
            "[instance]\nname = \"{name}\"\n\n[audit]\npath = \"{}\"\n\n\
             [state]\nredis = \"redis://127.0.0.1:{redis}\"\ntimeout_ms = 500\nkey_prefix = \"pair-{redis}:\"\n",
            db.display()
        ),
    )
}

#[test]
fn two_instances_on_one_redis_share_velocity_and_replays_and_survive_a_killed_peer() {
    let calls = 9;
    let Pair {
        pki,
        x5u,
        redis,
        pbx_port,
        uas,
    } = pair(calls);
    let redis_port = redis.port;
    let mut a = instance(&pki, "cg-a", redis_port, pbx_port);
    let b = instance(&pki, "cg-b", redis_port, pbx_port);
    for cg in [&a, &b] {
        await_metric(cg, "callgate_state_shared_up", 1.0);
    }
    let dir = pki._dir.path();
    let unsigned = "X-No-Identity: unsigned";

    // 1-4: one caller, two calls through each instance. The policy reviews
    // the 4th call in a minute: only the shared count reaches it.
    for n in 0..4 {
        let cg = if n % 2 == 0 { &a } else { &b };
        call(cg, dir, "+15550103", unsigned, "none", n);
    }
    // 5-6: a PASSporT verified by A, presented again to B on another call.
    let signed = format!("Identity: {}", token(&pki, &x5u, "+15550104"));
    call(&a, dir, "+15550104", &signed, &x5u, 4);
    call(&b, dir, "+15550104", &signed, &x5u, 5);

    // A dies without a word (no drain, no flush); B goes on, on Redis.
    let status = a.signal_and_wait("KILL", Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| !s.success()),
        "cg-a did not die on SIGKILL: {status:?}"
    );
    for n in 6..9 {
        call(&b, dir, "+15550105", unsigned, "none", n);
    }
    assert_eq!(b.metric("callgate_state_shared_up"), 1.0, "{}", b.metrics());
    assert_eq!(
        b.metric("callgate_state_ops_total{op=\"velocity\",answered=\"fallback\"}"),
        0.0,
        "B never fell back to local state:\n{}",
        b.metrics()
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
    assert!(
        got[3].0.starts_with("INVITE sip:review@127.0.0.1") && got[3].1 == "BURST_ANI_1M",
        "the 4th call from one number, 2 per instance, goes to review: {:?}",
        got[3]
    );
    assert!(got[4].2.starts_with("passed;attest=A"), "{:?}", got[4]);
    assert!(
        got[5].1 == "STIR_FAILED"
            && got[5].2.starts_with("failed;")
            && got[5].2.ends_with("cause=438"),
        "the PASSporT A verified is a replay at B: {:?}",
        got[5]
    );
    for (i, (ruri, reasons, _)) in got.iter().enumerate().skip(6) {
        assert!(
            ruri.starts_with("INVITE sip:+15550100@") && reasons.is_empty(),
            "call {} through B after A died: {ruri} {reasons}",
            i + 1
        );
    }

    // Each decision id names the instance that made it.
    let ids = decision_ids(&uas);
    let named: Vec<&str> = ids
        .iter()
        .map(|id| callgate::env::decision_instance(id).unwrap_or("?"))
        .collect();
    assert_eq!(
        named,
        ["cg-a", "cg-b", "cg-a", "cg-b", "cg-a", "cg-b", "cg-b", "cg-b", "cg-b"],
        "{ids:?}"
    );
    assert!(
        b.log().contains("callgate{instance=cg-b}") && !b.log().contains("instance=cg-a"),
        "the log lines carry the instance's name:\n{}",
        b.log()
    );
    assert!(
        b.metrics().contains("instance_name=\"cg-b\""),
        "callgate_build_info names the instance:\n{}",
        b.metrics()
    );

    // The report over both audit stores: B's six decisions, and the ones A
    // had committed before it was killed (acknowledged records survive a
    // SIGKILL; the last may not have been), each under its instance.
    drop(b);
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["report", "--db"])
        .arg(dir.join("cg-a.db"))
        .arg(dir.join("cg-b.db"))
        .output()
        .expect("run callgate report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report json");
    assert_eq!(r["by_instance"]["cg-b"]["decisions"], 6, "{r:#}");
    assert_eq!(r["by_instance"]["cg-b"]["by_action"]["review"], 2, "{r:#}");
    assert!(
        r["by_instance"]["cg-a"]["decisions"].as_u64().unwrap_or(0) <= 3,
        "{r:#}"
    );
}
