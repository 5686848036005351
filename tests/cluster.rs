//! Two instances behind one trunk supervised as one (issue 16): `cg-a`
//! and `cg-b`, each with its own audit store, policy and fraud-list file,
//! sharing one real `redis-server`. A call held through `cg-b` shows in
//! `cg-a`'s review queue, in `cg-a`'s console (headless Chromium, a
//! screenshot for docs/) and on `cg-a`'s live event stream; `cg-a`
//! answers its decision; a verdict given on `cg-a` is known to `cg-b`
//! (its answer and its own audit trail); a step-up on `cg-b` lifts the
//! restrictions `cg-a` reports; a number added to the fraud list on
//! `cg-a` reaches `cg-b`'s list file and running policy, so `cg-b`
//! refuses the next call from it, and `cg-a` answers for that refused
//! call too (it ended before any tick saw it in progress). With Redis gone, `cg-a` refuses
//! to answer for the other's call with 503 (it cannot know its state).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::redis::RedisServer;
use common::roles::{request, with_role_tokens, AGENT, SUPERVISOR};
use common::{config, free_port, scenario, Callgate, Ports, Sipp};
use serde_json::{json, Value};

const POLICY: &str = r#"
version = "cluster-1"
[levels]
medium = 30
high = 60
critical = 90
[level.high]
action = "review"
restrict = ["mfa-change"]
[level.critical]
action = "reject"
reject_code = 608
[restrictions]
mfa-change = "No MFA change without step-up."
[review]
uri = "sip:review@127.0.0.1"
[lists.fraud]
file = "fraud.txt"
[lists.dno]
numbers = ["+18005550100"]
[[rule]]
code = "ANY_CALL"
weight = 70
when = { not = { list = "dno" } }
description = "Every call gets this."
[[rule]]
code = "KNOWN_FRAUD"
weight = 25
when = { list = "fraud" }
description = "The number is on the fraud list."
"#;

/// The caller of `uac-hold.xml`.
const CALLER: &str = "+15550199";

/// The instance `name` in its own directory under `root`: policy, an
/// empty fraud list, audit store, events on, state on Redis at `redis`.
fn instance(root: &Path, name: &str, redis: u16, pbx_port: u16) -> (Callgate, PathBuf) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("instance dir");
    std::fs::write(dir.join("policy.toml"), POLICY).expect("policy");
    std::fs::write(dir.join("fraud.txt"), "").expect("fraud list");
    let ports = Ports::new();
    let extra = format!(
        "[instance]\nname = \"{name}\"\n[risk]\npolicy = \"{policy}\"\n[audit]\npath = \"{db}\"\n\
         [events]\n[state]\nredis = \"redis://127.0.0.1:{redis}\"\ntimeout_ms = 500\n\
         key_prefix = \"cluster-{redis}:\"\n",
        policy = dir.join("policy.toml").display(),
        db = dir.join("audit.db").display(),
    );
    let cfg = with_role_tokens(
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port}")],
            &["sip:127.0.0.1:9".into()],
            &extra,
        ),
        &dir,
    );
    (Callgate::start(ports, &cfg), dir)
}

/// Polls (bounded) `what` until it returns `Some`.
fn await_some<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One row of `sql` in the audit store at `db` as strings, if any.
fn audit_row(db: &Path, sql: &str, arg: &str) -> Option<Vec<String>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row(sql, [arg], |r| {
        (0..r.as_ref().column_count())
            .map(|i| r.get::<_, String>(i))
            .collect::<Result<Vec<_>, _>>()
    })
    .ok()
}

#[test]
fn a_supervisor_on_one_instance_sees_and_answers_the_calls_of_another() {
    let root = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(free_port());
    let pbx_port = free_port();
    let (a, _a_dir) = instance(root.path(), "cg-a", redis.port, pbx_port);
    let (b, b_dir) = instance(root.path(), "cg-b", redis.port, pbx_port);
    let mut a_events = common::sse::open_stream(a.ports.admin, None);

    // A call held through cg-b, routed to review there.
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, 1, "u1", &[]);
    let held = Sipp::uac_background(
        &scenario("uac-hold.xml"),
        &b.trunk(),
        1,
        "u1",
        &["-d", "15000"],
    );
    let queued = await_some("cg-b's call in cg-a's review queue", || {
        let (status, v) = request(&a, "GET", "/v1/review", Some(SUPERVISOR), None);
        assert_eq!(status, 200, "{v:#}");
        v["calls"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["instance"] == "cg-b").cloned())
    });
    let call_id = queued["call_id"].as_str().expect("call_id").to_owned();
    let decision_id = queued["decision"]["id"]
        .as_str()
        .expect("decision id")
        .to_owned();
    assert!(decision_id.starts_with("cg-b-"), "{queued:#}");
    assert_eq!(queued["caller"], CALLER, "{queued:#}");
    let (_, calls) = request(&a, "GET", "/v1/calls?instances=all", Some(SUPERVISOR), None);
    assert!(
        calls["calls"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["call_id"] == call_id.as_str())),
        "cg-a lists cg-b's call among every instance's: {calls:#}"
    );
    // Its own calls alone, as `ctl calls` and a drain read them: none.
    let (_, own) = request(&a, "GET", "/v1/calls", Some(SUPERVISOR), None);
    assert_eq!(own["count"], 0, "{own:#}");
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(["ctl", "--admin", &format!("127.0.0.1:{}", a.ports.admin)])
            .arg("--token-file")
            .arg(&common::secrets().token_file)
            .args(args)
            .output()
            .expect("callgate ctl");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        ctl(&["calls"]).contains("0 call(s)"),
        "ctl calls: cg-a's own"
    );
    let all = ctl(&["calls", "--all"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with("cg-b") && l.contains(&call_id)),
        "ctl calls --all: {all}"
    );

    // cg-a's live stream carries cg-b's decision event (without an id).
    let relayed = (0..20)
        .map(|_| common::sse::next_event(&mut a_events))
        .find(|(_, kind, data)| kind == "decision" && data.contains(&decision_id))
        .expect("cg-b's decision event on cg-a's stream");
    assert_eq!(relayed.0, "", "a relayed event has no id: {relayed:?}");
    let event: Value = serde_json::from_str(&relayed.2).expect("event JSON");
    assert_eq!(event["instance"], "cg-b", "{event:#}");

    // One console URL: cg-a's console shows cg-b's call in its queue and
    // opens its decision.
    let browser = Browser::start();
    let console = format!("http://127.0.0.1:{}/console", a.ports.admin);
    browser.login(&console, SUPERVISOR, "supervisor");
    browser.await_text("#review tbody", "cg-b's call in cg-a's console", |t| {
        t.contains(CALLER) && t.contains("cg-b")
    });
    browser.click("#review tbody tr");
    browser.await_text("#sup-decision", "the decision of cg-b's call", |t| {
        t.contains(&format!("{decision_id} by cg-b"))
    });
    browser.screenshot("console-supervisor-two-instances.png");
    drop(browser);

    // cg-a answers for cg-b's call; a verdict given there is known to cg-b.
    let path = format!("/v1/calls/{call_id}/decision");
    let (status, on_a) = request(&a, "GET", &path, Some(AGENT), None);
    assert_eq!(status, 200, "{on_a:#}");
    assert_eq!(
        (&on_a["instance"], &on_a["state"], &on_a["restrict"]),
        (&json!("cg-b"), &json!("live"), &json!(["mfa-change"])),
        "{on_a:#}"
    );
    let (status, judged) = request(
        &a,
        "POST",
        &format!("/v1/calls/{call_id}/verdict"),
        Some(SUPERVISOR),
        Some(
            r#"{"verdict": "suspected_fraud", "by": "floor lead", "note": "asked for an MFA reset"}"#,
        ),
    );
    assert_eq!(status, 200, "{judged:#}");
    assert_eq!(judged["verdicts"][0]["verdict"], "suspected_fraud");
    let (_, on_b) = request(&b, "GET", &path, Some(AGENT), None);
    assert_eq!(
        (
            &on_b["verdicts"][0]["verdict"],
            &on_b["verdicts"][0]["token"]
        ),
        (&json!("suspected_fraud"), &json!("floor@cg-a")),
        "cg-b knows cg-a's verdict: {on_b:#}"
    );
    assert_eq!(
        on_b["verdicts"].as_array().map(Vec::len),
        Some(1),
        "{on_b:#}"
    );
    let b_db = b_dir.join("audit.db");
    let stored = await_some("the verdict in cg-b's audit trail", || {
        audit_row(
            &b_db,
            "SELECT verdict, token, by_whom FROM verdicts WHERE decision_id = ?1",
            &decision_id,
        )
    });
    assert_eq!(stored, ["suspected_fraud", "floor@cg-a", "floor lead"]);
    let a_db = root.path().join("cg-a/audit.db");
    assert_eq!(
        audit_row(
            &a_db,
            "SELECT token FROM verdicts WHERE decision_id = ?1",
            &decision_id
        ),
        Some(vec!["floor".to_owned()]),
        "cg-a's trail says who gave it there"
    );

    // A step-up on cg-b lifts the restrictions cg-a reports.
    let (status, stepped) = request(
        &b,
        "POST",
        &format!("/v1/calls/{call_id}/step-up"),
        Some(AGENT),
        Some(r#"{"by": "agent 7", "method": "callback-on-file"}"#),
    );
    assert_eq!(status, 200, "{stepped:#}");
    let (_, on_a) = request(&a, "GET", &path, Some(AGENT), None);
    assert_eq!(
        (&on_a["restrict"], &on_a["restrictions_lifted"]),
        (&json!([]), &json!(true)),
        "{on_a:#}"
    );
    assert_eq!(on_a["step_ups"][0]["token"], "desk-1@cg-b", "{on_a:#}");

    // The fraud list: added on cg-a, taken by cg-b.
    let (status, added) = request(
        &a,
        "POST",
        "/v1/lists/fraud",
        Some(SUPERVISOR),
        Some(&format!(r#"{{"number": "{CALLER}", "by": "floor lead"}}"#)),
    );
    assert_eq!((status, &added["added"]), (200, &json!(true)), "{added:#}");
    let digits = CALLER.trim_start_matches('+');
    await_some("the number in cg-b's list file", || {
        std::fs::read_to_string(b_dir.join("fraud.txt"))
            .ok()
            .filter(|t| t.contains(digits))
    });
    // Written on a blocking thread, the line still names the instance.
    await_some("cg-b's log line of the addition, with its instance", || {
        b.log()
            .lines()
            .any(|l| {
                l.contains("callgate{instance=cg-b}")
                    && l.contains("number added to the list on another instance: added here")
            })
            .then_some(())
    });
    let (_, changes) = request(&b, "GET", "/v1/lists", Some(SUPERVISOR), None);
    assert_eq!(changes["changes"][0]["token"], "floor@cg-a", "{changes:#}");
    held.finish().assert_all_ok(1, "the held call");
    uas.finish();
    let csv = root.path().join("next.csv");
    std::fs::write(
        &csv,
        format!("SEQUENTIAL\n{CALLER};+15550100;X-No-Identity: unsigned;none\n"),
    )
    .expect("csv");
    Sipp::uac(
        &scenario("uac-risk-rejected.xml"),
        &b.trunk(),
        1,
        1,
        "u1",
        &["-inf", &csv.display().to_string()],
    )
    .assert_all_ok(1, "cg-b refuses the next call from the fraud-listed number");
    let next = await_some("the refused call in cg-b's audit", || {
        audit_row(
            &b_db,
            "SELECT call_id, rules FROM records WHERE decision_id != ?1 ORDER BY id DESC LIMIT 1",
            &decision_id,
        )
    });
    assert!(next[1].contains("KNOWN_FRAUD"), "{next:?}");
    let refused = await_some("cg-a answers for cg-b's refused call", || {
        let (status, v) = request(
            &a,
            "GET",
            &format!("/v1/calls/{}/decision", next[0]),
            Some(SUPERVISOR),
            None,
        );
        (status == 200).then_some(v)
    });
    assert_eq!(
        (&refused["instance"], &refused["state"], &refused["action"]),
        (&json!("cg-b"), &json!("ended"), &json!("reject")),
        "{refused:#}"
    );
    assert_eq!(a.metric("callgate_cluster_instances"), 2.0);
    assert!(b.metric("callgate_cluster_imported_total{kind=\"label\"}") >= 1.0);
    assert!(b.metric("callgate_cluster_imported_total{kind=\"list\"}") >= 1.0);

    // Redis gone: cg-a cannot answer for cg-b's call.
    drop(redis);
    let (status, refused) = request(&a, "GET", &path, Some(AGENT), None);
    assert_eq!(status, 503, "{refused:#}");
}
