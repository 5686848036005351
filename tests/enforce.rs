//! The CRM's enforcement API (issue 16) against a running callgate with
//! sipp calls: tokens with roles (an agent token cannot reload or list
//! every call, a wrong token is refused, a supervisor sees every call and
//! the callers' numbers), a call's decision looked up by Call-ID while it
//! is live and after it ended, step-up lifting its restrictions and
//! landing in the audit trail with the agent, the method and the token's
//! name, verdicts feeding `callgate report`'s precision per rule and
//! `callgate replay --labelled`'s catch and touch counts. The answers are
//! checked against docs/admin-api.openapi.yaml.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::roles::{request, token_file, with_role_tokens, AGENT, SUPERVISOR};
use common::{config, scenario, Callgate, Ports, Sipp};
use serde_json::{json, Value};

const POLICY: &str = r#"
version = "VERSION"
[levels]
medium = 30
high = 60
critical = 90
[level.low]
text = "Low risk: follow the usual ID steps."
restrict = ["mfa-change"]
[restrictions]
mfa-change = "No MFA change without step-up."
[level.high]
action = "review"
[review]
uri = "sip:review@127.0.0.1"
[lists.dno]
numbers = ["+18005550100"]
[[rule]]
code = "ANY_CALL"
weight = WEIGHT
when = { not = { list = "dno" } }
description = "Every call gets this."
"#;

/// A policy file `name` of `version` where every call scores `weight`.
fn policy_file(dir: &Path, name: &str, version: &str, weight: u32) -> PathBuf {
    let p = dir.join(name);
    let text = POLICY
        .replace("VERSION", version)
        .replace("WEIGHT", &weight.to_string());
    std::fs::write(&p, text).expect("write policy");
    p
}

/// Polls (bounded) the supervisor's `/v1/calls` until `pred` holds.
fn await_calls(cg: &Callgate, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, v) = request(cg, "GET", "/v1/calls", Some(SUPERVISOR), None);
        assert_eq!(status, 200, "{what}: {v:#}");
        let calls = v["calls"].as_array().cloned().unwrap_or_default();
        if pred(&calls) {
            return calls;
        }
        assert!(Instant::now() < deadline, "{what}: calls now {calls:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `callgate ARGS`: (exit code, stdout, stderr).
fn callgate(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(args)
        .output()
        .expect("run callgate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Call-IDs of the audited decisions, oldest first.
fn audited_call_ids(db: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open audit");
    let mut q = conn
        .prepare("SELECT call_id FROM records ORDER BY id")
        .expect("query");
    let ids = q
        .query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .collect::<Result<Vec<_>, _>>()
        .expect("read");
    ids
}

#[test]
fn roles_step_up_and_verdicts_on_a_live_and_an_ended_call_reach_the_audit_trail_and_the_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy_file(dir.path(), "policy.toml", "v1", 10);
    let db = dir.path().join("audit.db");
    let ports = Ports::new();
    let pbx_port = common::free_port();
    let extra = format!(
        "[risk]\npolicy = \"{}\"\n[audit]\npath = \"{}\"\n",
        policy.display(),
        db.display()
    );
    let cfg = with_role_tokens(
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port}")],
            &["sip:127.0.0.1:9".into()],
            &extra,
        ),
        dir.path(),
    );
    let mut cg = Callgate::start(ports, &cfg);
    let ops = Some(common::ADMIN_TOKEN);
    let (status, _) = request(&cg, "GET", "/v1/policy", ops, None);
    assert_eq!(status, 200, "admin.token_file's token is an ops token");
    let mut answers = Vec::new();
    let mut record = |method: &str, route: &str, (status, body): (u16, Value), want: u16| {
        assert_eq!(status, want, "{method} {route}: {body:#}");
        answers.push(json!({"method": method, "route": route, "status": status, "body": body}));
        body
    };

    // Roles, before any call.
    let (status, _) = request(&cg, "POST", "/v1/reload", Some(AGENT), None);
    assert_eq!(status, 403, "an agent token cannot reload");
    let (status, _) = request(&cg, "GET", "/v1/calls", Some(AGENT), None);
    assert_eq!(status, 403, "an agent token does not list every call");
    let (status, _) = request(&cg, "POST", "/v1/drain", Some(SUPERVISOR), None);
    assert_eq!(status, 403, "a supervisor token cannot drain");
    let wrong = "agent-token-0123456789abcdeX";
    let (status, _) = request(&cg, "GET", "/v1/calls/x/decision", Some(wrong), None);
    assert_eq!(status, 401, "a wrong token is refused");
    let (status, _) = request(&cg, "GET", "/v1/calls/x/decision", None, None);
    assert_eq!(status, 401, "the enforcement API needs a token");
    let (status, _) = request(&cg, "GET", "/v1/calls", None, None);
    assert_eq!(status, 401, "with [[admin.tokens]], the calls need a token");
    let (status, _) = request(&cg, "GET", "/healthz", None, None);
    assert_eq!(status, 200, "probes need no token");
    record(
        "GET",
        "/v1/calls/{id}/decision",
        request(&cg, "GET", "/v1/calls/nothing/decision", Some(AGENT), None),
        404,
    );
    assert!(cg.metric("callgate_admin_refused_total{reason=\"role\"}") >= 3.0);
    assert!(cg.metric("callgate_admin_refused_total{reason=\"token\"}") >= 3.0);

    // A call in progress.
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, 2, "u1", &[]);
    let trunk = cg.trunk();
    let held = Sipp::uac_background(&scenario("uac-hold.xml"), &trunk, 1, "u1", &["-d", "6000"]);
    let calls = await_calls(&cg, "the held call established", |c| {
        c.len() == 1 && c[0]["state"] == "established"
    });
    let call_id = calls[0]["call_id"].as_str().expect("call_id").to_owned();
    let decision_id = calls[0]["decision"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        calls[0]["caller"], "+15550199",
        "the supervisor sees numbers"
    );
    let path = format!("/v1/calls/{call_id}/decision");
    let live = record(
        "GET",
        "/v1/calls/{id}/decision",
        request(&cg, "GET", &path, Some(AGENT), None),
        200,
    );
    assert_eq!(
        (
            &live["state"],
            &live["decision_id"],
            &live["restrict"],
            &live["restrictions_lifted"]
        ),
        (
            &json!("live"),
            &json!(decision_id),
            &json!(["mfa-change"]),
            &json!(false)
        ),
        "{live:#}"
    );
    assert_eq!(
        live["restrict_text"],
        json!([{"code": "mfa-change", "text": "No MFA change without step-up."}])
    );
    assert!(
        live.get("caller").is_none() && live.get("callee").is_none(),
        "an agent gets no numbers: {live:#}"
    );
    let (_, sup_view) = request(&cg, "GET", &path, Some(SUPERVISOR), None);
    assert_eq!(sup_view["caller"], "+15550199", "{sup_view:#}");
    let (_, ops_view) = request(&cg, "GET", &path, ops, None);
    assert_eq!(ops_view["callee"], sup_view["callee"], "{ops_view:#}");

    // Step-up lifts the restrictions, from now on.
    let step_path = format!("/v1/calls/{call_id}/step-up");
    record(
        "POST",
        "/v1/calls/{id}/step-up",
        request(
            &cg,
            "POST",
            &step_path,
            Some(AGENT),
            Some(r#"{"by": "agent 7"}"#),
        ),
        400,
    );
    record(
        "POST",
        "/v1/calls/{id}/step-up",
        request(
            &cg,
            "POST",
            &step_path,
            Some(AGENT),
            Some(r#"{"by": "", "method": "otp-sms"}"#),
        ),
        422,
    );
    let stepped = record(
        "POST",
        "/v1/calls/{id}/step-up",
        request(
            &cg,
            "POST",
            &step_path,
            Some(AGENT),
            Some(r#"{"by": "agent 7", "method": "otp-sms"}"#),
        ),
        200,
    );
    assert_eq!(
        (
            &stepped["restrict"],
            &stepped["restrictions_lifted"],
            &stepped["restricted_by_policy"]
        ),
        (&json!([]), &json!(true), &json!(["mfa-change"])),
        "{stepped:#}"
    );
    assert_eq!(stepped["step_ups"][0]["token"], "desk-1", "{stepped:#}");
    let by_decision = record(
        "GET",
        "/v1/decisions/{id}",
        request(
            &cg,
            "GET",
            &format!("/v1/decisions/{decision_id}"),
            Some(AGENT),
            None,
        ),
        200,
    );
    assert_eq!(by_decision["restrict"], json!([]), "{by_decision:#}");
    assert_eq!(by_decision["call_id"], json!(call_id));
    record(
        "GET",
        "/v1/review",
        request(&cg, "GET", "/v1/review", Some(SUPERVISOR), None),
        200,
    );

    // Ended: answered from the audit store, step-up still in force.
    held.finish().assert_all_ok(1, "the held call");
    await_calls(&cg, "the held call gone", |c| c.is_empty());
    let ended = request(&cg, "GET", &path, Some(AGENT), None).1;
    assert_eq!(
        (
            &ended["state"],
            &ended["restrict"],
            &ended["step_ups"][0]["by"],
            &ended["step_ups"][0]["method"]
        ),
        (
            &json!("ended"),
            &json!([]),
            &json!("agent 7"),
            &json!("otp-sms")
        ),
        "{ended:#}"
    );
    assert_eq!(ended["level_text"], "Low risk: follow the usual ID steps.");
    assert!(ended.get("caller").is_none(), "{ended:#}");

    // Verdicts: the held call was fraud, a second call the customer.
    let verdict_path = format!("/v1/calls/{call_id}/verdict");
    record(
        "POST",
        "/v1/calls/{id}/verdict",
        request(
            &cg,
            "POST",
            &verdict_path,
            Some(AGENT),
            Some(r#"{"verdict": "maybe", "by": "agent 7"}"#),
        ),
        422,
    );
    let fraud = record(
        "POST",
        "/v1/calls/{id}/verdict",
        request(
            &cg,
            "POST",
            &verdict_path,
            Some(AGENT),
            Some(
                r#"{"verdict": "suspected_fraud", "by": "agent 7", "note": "asked for an MFA reset"}"#,
            ),
        ),
        200,
    );
    assert_eq!(fraud["verdicts"][0]["verdict"], "suspected_fraud");
    Sipp::uac(&scenario("uac-basic.xml"), &cg.trunk(), 1, 1, "u1", &[])
        .assert_all_ok(1, "the customer's call");
    uas.finish().assert_all_ok(2, "the PBX");
    let ids = audited_call_ids(&db);
    assert_eq!(ids.len(), 2, "{ids:?}");
    let (status, customer) = request(
        &cg,
        "POST",
        &format!("/v1/calls/{}/verdict", ids[1]),
        Some(SUPERVISOR),
        Some(r#"{"verdict": "confirmed_customer", "by": "supervisor 2"}"#),
    );
    assert_eq!(status, 200, "{customer:#}");
    assert_eq!(customer["verdicts"][0]["token"], "floor");

    // The audit trail holds who did what, through which token.
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open audit");
    let step: (String, String, String, String) = conn
        .query_row(
            "SELECT decision_id, by_whom, method, token FROM step_ups",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("one step-up");
    assert_eq!(
        step,
        (
            decision_id.clone(),
            "agent 7".into(),
            "otp-sms".into(),
            "desk-1".into()
        )
    );
    drop(conn);
    assert!(
        cg.signal_and_wait("TERM", Duration::from_secs(15))
            .is_some(),
        "callgate exits on SIGTERM"
    );

    // The report: ANY_CALL fired on one fraud and one customer call.
    let db_arg = db.to_str().expect("utf-8 path");
    let (code, out, err) = callgate(&["report", "--db", db_arg]);
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).expect("report JSON");
    assert_eq!(
        report["rule_precision"]["ANY_CALL"],
        json!({"fired": 2, "confirmed_fraud": 1, "confirmed_customer": 1, "escalated": 0, "precision": 0.5}),
        "{report:#}"
    );
    let html = dir.path().join("report.html");
    let html_arg = html.to_str().expect("utf-8 path");
    assert_eq!(
        callgate(&["report", "--db", db_arg, "--html", html_arg]).0,
        Some(0)
    );
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(page.contains("Rules against verdicts") && page.contains("50%"));

    // Replay on the labelled calls: a policy that reviews every call
    // catches the fraud and touches the customer.
    let strict = policy_file(dir.path(), "strict.toml", "strict", 70);
    let strict_arg = strict.to_str().expect("utf-8 path");
    let (_, out, err) = callgate(&[
        "replay",
        "--policy",
        strict_arg,
        "--db",
        db_arg,
        "--labelled",
    ]);
    assert!(
        out.contains("would catch 1 of 1 confirmed fraud (100.0%), would touch 1 of 1 confirmed customers (100.0%)"),
        "{out}{err}"
    );
    let (_, out, _) = callgate(&[
        "replay",
        "--policy",
        strict_arg,
        "--db",
        db_arg,
        "--labelled",
        "--json",
    ]);
    let replayed: Value = serde_json::from_str(&out).expect("replay JSON");
    assert_eq!(
        replayed["summary"]["labelled"],
        json!({"fraud": 1, "caught": 1, "customers": 1, "touched": 1, "escalated": 0})
    );

    // The answers match the document.
    let routes = [
        "GET /v1/calls/{id}/decision",
        "GET /v1/decisions/{id}",
        "POST /v1/calls/{id}/step-up",
        "POST /v1/calls/{id}/verdict",
        "GET /v1/review",
    ];
    common::check_openapi(&json!({"routes": routes, "answers": answers}), dir.path());
}

#[test]
fn step_up_without_an_audit_store_is_refused_and_bad_tokens_name_their_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports::new();
    let cfg = with_role_tokens(
        &config(
            ports,
            &["sip:127.0.0.1:9".into()],
            &["sip:127.0.0.1:9".into()],
            "",
        ),
        dir.path(),
    );
    let cfg_path = dir.path().join("ok.toml");
    std::fs::write(&cfg_path, &cfg).expect("write config");
    let cg = Callgate::start(ports, &cfg);
    let (status, body) = request(
        &cg,
        "POST",
        "/v1/calls/anything/step-up",
        Some(AGENT),
        Some(r#"{"by": "agent 7", "method": "otp-sms"}"#),
    );
    assert_eq!(status, 409, "{body:#}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("[audit] path")));
    drop(cg);

    // Configuration errors name the key and the reason.
    let check = |text: &str, key: &str, reason: &str| {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, text).expect("write config");
        let (code, out, err) = callgate(&["check-config", p.to_str().expect("utf-8")]);
        assert_ne!(code, Some(0), "{key}: accepted");
        let said = format!("{out}{err}");
        assert!(
            said.contains(key) && said.contains(reason),
            "{key}/{reason}: {said}"
        );
    };
    check(
        &cfg.replacen("role = \"agent\"", "role = \"boss\"", 1),
        "admin.tokens[0].role",
        "\"boss\"",
    );
    check(
        &cfg.replacen("name = \"floor\"", "name = \"desk-1\"", 1),
        "admin.tokens[1].name",
        "taken",
    );
    let shared = cfg.replacen("supervisor.token", "agent.token", 1);
    check(&shared, "admin.tokens[1].token_file", "same token");
    let open = token_file(dir.path(), "open.token", "x");
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let loose = cfg.replacen(
        &dir.path().join("agent.token").display().to_string(),
        &open.display().to_string(),
        1,
    );
    check(&loose, "admin.tokens[0].token_file", "chmod 600");
}

/// A store of schema 4 reads (for `callgate report` over a store an older
/// instance still writes) and is upgraded to 6 when a callgate opens it.
#[test]
fn a_version_4_store_gains_the_step_up_and_verdict_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v4.db");
    {
        let db = rusqlite::Connection::open(&path).expect("open");
        db.execute_batch(
            "CREATE TABLE records (id INTEGER PRIMARY KEY, decision_id TEXT NOT NULL, time_ms INTEGER NOT NULL,
             call_id TEXT NOT NULL, side TEXT NOT NULL, trunk TEXT NOT NULL, calling TEXT NOT NULL,
             called TEXT NOT NULL, verification TEXT NOT NULL, signals TEXT NOT NULL, rules TEXT NOT NULL,
             score INTEGER NOT NULL, level TEXT NOT NULL, action TEXT NOT NULL, target TEXT,
             restrict_actions TEXT NOT NULL, policy_version TEXT NOT NULL, shadow TEXT,
             instance TEXT NOT NULL DEFAULT '');
             CREATE TABLE outcomes (record INTEGER PRIMARY KEY, outcome TEXT NOT NULL, status INTEGER,
             duration_ms INTEGER);
             CREATE TABLE media (record INTEGER PRIMARY KEY, stats TEXT NOT NULL);
             CREATE TABLE invites (record INTEGER PRIMARY KEY, invite BLOB NOT NULL);
             CREATE VIEW decisions AS SELECT r.*, i.invite, o.outcome, o.status, o.duration_ms,
             m.stats AS media FROM records r LEFT JOIN invites i ON i.record = r.id
             LEFT JOIN outcomes o ON o.record = r.id LEFT JOIN media m ON m.record = r.id;
             INSERT INTO records (decision_id, time_ms, call_id, side, trunk, calling, called, verification,
             signals, rules, score, level, action, restrict_actions, policy_version)
             VALUES ('cg-1', CAST(strftime('%s', 'now') AS INTEGER) * 1000, 'c1', 'trunk', '127.0.0.1', '+1555', '+1800', 'null', '{}', '[]', 0, 'low',
             'tag', '[]', 'v0');
             PRAGMA user_version = 4;",
        )
        .expect("v4 schema");
    }
    // Read as it is (an older callgate still writes it): no verdicts.
    let before = callgate::audit::decisions(&path, None, None).expect("read schema 4");
    assert_eq!((before.len(), before[0].verdict), (1, None));
    let audit = callgate::audit::Audit::open(&callgate::audit::AuditConfig::new(path.clone()))
        .expect("upgraded");
    drop(audit);
    let rows = callgate::audit::decisions(&path, None, None).expect("read");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].verdict, None);
    let db = rusqlite::Connection::open(&path).expect("open");
    let (version, tables): (i64, i64) = db
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM sqlite_master WHERE name IN ('step_ups', 'verdicts'))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("inspect");
    assert_eq!((version, tables), (7, 2));
}
