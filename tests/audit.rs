//! The audit store: records read back with every field, outcomes, flush
//! semantics, durability of acknowledged records across a SIGKILL,
//! retention, and a database that refuses writes for a while.

use std::process::{Command, Stdio};
use std::time::Duration;

use callgate::audit::{decisions, Audit, AuditConfig, AuditRecord, CallOutcome, FiredRule};

fn record(i: usize, time_ms: i64) -> AuditRecord {
    AuditRecord {
        decision_id: format!("d{i:04}"),
        instance: "cg-a".into(),
        time_ms,
        call_id: format!("call-{i}"),
        side: "trunk".into(),
        trunk: "198.51.100.7".into(),
        calling: "15550199".into(),
        called: "15550100".into(),
        verification: serde_json::json!({"status": "passed", "checks": [{"name": "signature", "ok": true, "micros": 63}]}).into(),
        signals: serde_json::json!({"attest": "A", "lists": ["allow"]}).into(),
        rules: vec![FiredRule {
            code: "ALLOWLISTED".into(),
            weight: -50,
            text: Some("A known customer's number, verified: \"allow\" list.".into()),
        }],
        score: 0,
        level: "low".into(),
        action: "tag".into(),
        target: None,
        restrict: vec!["credential-reset".into()],
        policy_version: "p-1".into(),
        shadow: Some(serde_json::json!({"level": "medium"}).into()),
        invite: Some("INVITE sip:+15550100@pbx SIP/2.0\r\n".into()),
        level_text: Some("Some doubt: verify the caller.".into()),
        restrict_text: vec![callgate::audit::RestrictWords {
            action: "credential-reset".into(),
            text: "No password reset without step-up.".into(),
        }],
        verify_text: Some("Caller ID signature verified.".into()),
        from_user: None,
        pai_user: None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn records_and_outcomes_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub/audit.db");
    let audit = Audit::open(&AuditConfig::new(path.clone())).expect("open");
    let t = now_ms();
    for i in 0..300 {
        audit.record(record(i, t + i as i64));
    }
    audit.call_ended(
        "call-7",
        CallOutcome::Answered,
        Some(Duration::from_millis(1234)),
    );
    audit.call_ended("call-8", CallOutcome::Rejected(608), None);
    // A later outcome of a call replaces its earlier one (answered, then
    // ended with its duration), in the same batch or not.
    audit.call_ended("call-299", CallOutcome::Answered, None);
    audit.call_ended(
        "call-299",
        CallOutcome::Answered,
        Some(Duration::from_millis(42)),
    );
    audit.call_ended("call-298", CallOutcome::Abandoned, None);
    assert!(audit.flush(Duration::from_secs(10)), "flush acknowledged");
    let rows = decisions(&path, None, None).expect("read");
    assert_eq!(rows.len(), 300);
    assert_eq!(rows[0].record, record(0, t));
    assert_eq!(
        (rows[7].outcome.as_deref(), rows[7].duration_ms),
        (Some("answered"), Some(1234))
    );
    assert_eq!(
        (rows[8].outcome.as_deref(), rows[8].status),
        (Some("rejected"), Some(608))
    );
    assert_eq!(rows[9].outcome, None);
    assert_eq!(
        (rows[299].outcome.as_deref(), rows[299].duration_ms),
        (Some("answered"), Some(42))
    );
    assert_eq!(rows[298].outcome.as_deref(), Some("abandoned"));
    let window = decisions(&path, Some(t + 10), Some(t + 19)).expect("read");
    assert_eq!(window.len(), 10);
    let m = audit.metrics();
    assert_eq!(m.written.load(std::sync::atomic::Ordering::Relaxed), 300);
    assert!(
        m.batches.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "batches of at most 256"
    );
}

/// Run as a child by `acknowledged_records_survive_sigkill`: writes, flushes,
/// says "acked", then waits to be killed.
#[test]
fn child_writes_then_waits_to_be_killed() {
    let Ok(path) = std::env::var("CALLGATE_AUDIT_CHILD") else {
        return; // only meaningful as the child
    };
    let audit = Audit::open(&AuditConfig::new(path.into())).expect("open");
    for i in 0..500 {
        audit.record(record(i, now_ms()));
    }
    assert!(audit.flush(Duration::from_secs(10)));
    println!("acked");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(30));
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "child_writes_then_waits_to_be_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CALLGATE_AUDIT_CHILD", &path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("acked") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("child acknowledged");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let rows = decisions(&path, None, None).expect("read after crash");
    assert_eq!(rows.len(), 500, "every acknowledged record survived");
}

#[test]
fn retention_removes_old_decisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    {
        let audit = Audit::open(&AuditConfig::new(path.clone())).expect("open");
        audit.record(record(1, now_ms() - 3 * 86_400_000));
        audit.record(record(2, now_ms()));
        audit.call_ended("call-1", CallOutcome::Abandoned, None);
        audit.call_ended("call-2", CallOutcome::Rejected(603), None);
        assert!(audit.flush(Duration::from_secs(10)));
    }
    let mut cfg = AuditConfig::new(path.clone());
    cfg.retention_days = 1;
    let audit = Audit::open(&cfg).expect("reopen");
    assert!(audit.flush(Duration::from_secs(10)));
    let rows = decisions(&path, None, None).expect("read");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record.decision_id, "d0002");
    // The old decision's INVITE and outcome went with it.
    let db = rusqlite::Connection::open(&path).expect("open");
    let count = |table: &str| -> i64 {
        db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!((count("invites"), count("outcomes")), (1, 1));
}

#[test]
fn a_locked_database_delays_records_without_losing_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let audit = Audit::open(&AuditConfig::new(path.clone())).expect("open");
    // Another process-like connection takes the write lock.
    let blocker = rusqlite_blocker(&path);
    audit.record(record(1, now_ms()));
    audit.call_ended("call-1", CallOutcome::Rejected(486), None);
    assert!(
        !audit.flush(Duration::from_secs(5)),
        "not acknowledged while the database refuses"
    );
    assert!(
        audit
            .metrics()
            .write_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    drop(blocker);
    assert!(
        audit.flush(Duration::from_secs(20)),
        "written once the lock is gone"
    );
    let rows = decisions(&path, None, None).expect("read");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].outcome.as_deref(), rows[0].status),
        (Some("rejected"), Some(486)),
        "the retried batch keeps the outcome with its record"
    );
    assert_eq!(
        audit
            .metrics()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// Holds an exclusive write transaction on the database until dropped.
fn rusqlite_blocker(path: &std::path::Path) -> impl Drop {
    struct Blocker(Option<std::process::Child>);
    impl Drop for Blocker {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    // sqlite3 may not be installed; use python's sqlite3 module, which is.
    let mut child = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys,time\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked',flush=True)\ntime.sleep(60)")
        .arg(path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    use std::io::BufRead;
    let _ = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    assert_eq!(line.trim(), "locked");
    Blocker(Some(child))
}

#[test]
fn report_counts_rules_levels_inconsistencies_and_shadow_disagreements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let audit = Audit::open(&AuditConfig::new(path.clone())).expect("open");
    // 2026-11-24T09:00:00Z and 10:00Z.
    let nine = 1_795_510_800_000;
    let mut a = record(1, nine);
    a.calling = "15550111".into();
    let mut b = record(2, nine + 3_600_000);
    b.calling = "15550111".into();
    b.level = "high".into();
    b.action = "review".into();
    b.rules = vec![FiredRule {
        code: "STIR_FAILED".into(),
        weight: 70,
        text: None,
    }];
    b.shadow = Some(serde_json::json!({"level": "high", "action": "review"}).into());
    let mut c = record(3, nine + 3_600_000);
    c.calling = "15550222".into();
    c.trunk = "198.51.100.8".into();
    c.shadow = None;
    for r in [a, b, c] {
        audit.record(r);
    }
    audit.call_ended("call-2", CallOutcome::Rejected(486), None);
    assert!(audit.flush(Duration::from_secs(10)));
    let json = dir.path().join("r.json");
    let html = dir.path().join("r.html");
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["report", "--db"])
        .arg(&path)
        .args(["--since", "2026-11-24T08:00Z", "--json"])
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .expect("run callgate report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    assert_eq!(r["decisions"], 3);
    assert_eq!(r["by_rule"]["ALLOWLISTED"], 2);
    assert_eq!(r["by_rule"]["STIR_FAILED"], 1);
    assert_eq!(r["by_level"]["low"], 2);
    assert_eq!(r["by_level"]["high"], 1);
    assert_eq!(r["by_trunk"]["198.51.100.7"], 2);
    assert_eq!(r["by_hour"][9], 1);
    assert_eq!(r["by_hour"][10], 2);
    assert!((r["review_rate"].as_f64().unwrap_or(0.0) - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(r["outcomes"]["rejected"], 1);
    let inconsistent = r["inconsistent_callers"].as_array().expect("list");
    assert_eq!(inconsistent.len(), 1);
    assert_eq!(inconsistent[0]["calling"], "15550111");
    // Record 1's shadow said medium where the active policy said low.
    assert_eq!(r["shadow_evaluated"], 2);
    assert_eq!(r["shadow_disagreements"], 1);
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(
        page.starts_with("<!DOCTYPE html>") && page.matches("<svg class=\"chart\"").count() >= 5
    );
    assert!(page.contains("15550111") && !page.contains("<script"));
    // A time window that excludes everything.
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["report", "--db"])
        .arg(&path)
        .args(["--since", "2030-01-01"])
        .output()
        .expect("run callgate report");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout json");
    assert_eq!(r["decisions"], 0);
}

/// Writes `records` to a new audit store at `path`.
fn store_with(path: &std::path::Path, records: Vec<AuditRecord>) {
    let audit = Audit::open(&AuditConfig::new(path.to_owned())).expect("open");
    for r in records {
        audit.record(r);
    }
    assert!(audit.flush(Duration::from_secs(10)));
}

#[test]
fn report_merges_the_stores_of_several_instances_with_figures_per_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_db, b_db) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let nine = 1_795_510_800_000;
    // Instance A reviews its caller; instance B, still on an older policy,
    // lets the same caller through.
    let mut a1 = record(1, nine);
    a1.decision_id = "cg-a-00000000000000a1".into();
    a1.calling = "15550333".into();
    a1.level = "high".into();
    a1.action = "review".into();
    a1.policy_version = "p-2".into();
    let mut a2 = record(2, nine + 2_000);
    a2.decision_id = "cg-a-00000000000000a2".into();
    a2.policy_version = "p-2".into();
    store_with(&a_db, vec![a1, a2]);
    let mut b1 = record(3, nine + 1_000);
    b1.instance = "cg-b".into();
    b1.decision_id = "cg-b-00000000000000b1".into();
    b1.calling = "15550333".into();
    b1.policy_version = "p-1".into();
    // A row stored before instance names existed: its id names it.
    let mut b2 = record(4, nine + 3_000);
    b2.instance = String::new();
    b2.decision_id = "cg-b-00000000000000b2".into();
    b2.policy_version = "p-1".into();
    store_with(&b_db, vec![b1, b2]);

    // `--db` twice, and B's store a second time: its rows count once.
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["report", "--db"])
        .arg(&a_db)
        .arg("--db")
        .arg(&b_db)
        .arg(&b_db)
        .arg("--html")
        .arg(dir.path().join("r.html"))
        .arg("--json")
        .arg(dir.path().join("r.json"))
        .output()
        .expect("run callgate report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).expect("json"))
            .expect("parse");
    assert_eq!(r["decisions"], 4, "{r:#}");
    assert_eq!(r["duplicates_skipped"], 2);
    let a = &r["by_instance"]["cg-a"];
    let b = &r["by_instance"]["cg-b"];
    assert_eq!(
        (a["decisions"].as_u64(), b["decisions"].as_u64()),
        (Some(2), Some(2)),
        "{r:#}"
    );
    assert_eq!(a["review_rate"].as_f64(), Some(0.5));
    assert_eq!(b["review_rate"].as_f64(), Some(0.0));
    assert_eq!(a["latest_policy_version"], "p-2");
    assert_eq!(b["latest_policy_version"], "p-1");
    assert_eq!(b["policy_versions"]["p-1"], 2);
    assert_eq!(r["instances_on_different_policies"], true);
    // The caller treated differently by the two instances, in time order.
    let inconsistent = r["inconsistent_callers"].as_array().expect("list");
    assert_eq!(inconsistent.len(), 1, "{r:#}");
    let calls = inconsistent[0]["calls"].as_array().expect("calls");
    let who: Vec<(&str, &str, &str)> = calls
        .iter()
        .map(|c| {
            (
                c["instance"].as_str().unwrap_or_default(),
                c["level"].as_str().unwrap_or_default(),
                c["policy_version"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(who, [("cg-a", "high", "p-2"), ("cg-b", "low", "p-1")]);
    let page = std::fs::read_to_string(dir.path().join("r.html")).expect("html");
    assert!(page.contains("<h2>By instance</h2>") && page.contains("different policy versions"));
    assert!(
        page.contains("<td>cg-b</td><td>2</td><td>0.0%</td>"),
        "{page}"
    );

    // One store alone: one instance, nothing to compare.
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["report", "--db"])
        .arg(&a_db)
        .output()
        .expect("run callgate report");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout json");
    assert_eq!(r["by_instance"].as_object().map(|o| o.len()), Some(1));
    assert_eq!(r["instances_on_different_policies"], false);
    // A store that is not there names itself.
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["report", "--db"])
        .arg(&a_db)
        .arg(dir.path().join("missing.db"))
        .output()
        .expect("run callgate report");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.db"));
}

#[test]
fn a_version_1_store_is_upgraded_in_place_with_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    let t = now_ms();
    {
        let db = rusqlite::Connection::open(&path).expect("open");
        db.execute_batch(
            "CREATE TABLE decisions (id INTEGER PRIMARY KEY, decision_id TEXT NOT NULL, time_ms INTEGER NOT NULL,
             call_id TEXT NOT NULL, side TEXT NOT NULL, trunk TEXT NOT NULL, calling TEXT NOT NULL, called TEXT NOT NULL,
             verification TEXT NOT NULL, signals TEXT NOT NULL, rules TEXT NOT NULL, score INTEGER NOT NULL,
             level TEXT NOT NULL, action TEXT NOT NULL, target TEXT, restrict_actions TEXT NOT NULL,
             policy_version TEXT NOT NULL, shadow TEXT, invite TEXT, outcome TEXT, status INTEGER, duration_ms INTEGER);
             CREATE INDEX decisions_time ON decisions(time_ms);
             CREATE INDEX decisions_call ON decisions(call_id);
             CREATE INDEX decisions_calling ON decisions(calling);
             PRAGMA user_version = 1;",
        )
        .expect("v1 schema");
        db.execute(
            "INSERT INTO decisions (decision_id, time_ms, call_id, side, trunk, calling, called,
             verification, signals, rules, score, level, action, restrict_actions, policy_version,
             invite, outcome, status, duration_ms)
             VALUES ('old1', ?1, 'call-old', 'trunk', '198.51.100.7', '15550199', '15550100', 'null',
             'null', '[]', 40, 'medium', 'review', '[]', 'p-0', 'INVITE sip:old SIP/2.0', 'rejected', 486, NULL)",
            [t - 1],
        )
        .expect("v1 row");
    }
    let audit = Audit::open(&AuditConfig::new(path.clone())).expect("open v1");
    audit.record(record(1, t));
    audit.media_ended(
        "call-1",
        &serde_json::json!([{"stream": 0, "a": {"packets": 3}}]),
    );
    assert!(audit.flush(Duration::from_secs(10)));
    let rows = decisions(&path, None, None).expect("read");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[0].record.decision_id.as_str(),
            rows[0].record.invite.as_deref(),
            rows[0].outcome.as_deref(),
            rows[0].status
        ),
        (
            "old1",
            Some("INVITE sip:old SIP/2.0"),
            Some("rejected"),
            Some(486)
        )
    );
    assert_eq!(rows[1].record, record(1, t));
    assert_eq!(
        rows[1].media.as_ref().map(|m| m[0]["a"]["packets"].clone()),
        Some(serde_json::json!(3))
    );
    let db = rusqlite::Connection::open(&path).expect("open");
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 6, "upgraded through 4 to the current schema");
    assert_eq!(
        rows[0].record.instance, "",
        "rows from before instance names"
    );
}

#[test]
fn a_version_3_store_gains_the_instance_column_and_keeps_its_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v3.db");
    let t = now_ms();
    {
        // Schema 3 as callgate wrote it: records without `instance`, the
        // side tables and the view over `r.*`.
        let db = rusqlite::Connection::open(&path).expect("open");
        db.execute_batch(
            "CREATE TABLE records (id INTEGER PRIMARY KEY, decision_id TEXT NOT NULL, time_ms INTEGER NOT NULL,
             call_id TEXT NOT NULL, side TEXT NOT NULL, trunk TEXT NOT NULL, calling TEXT NOT NULL, called TEXT NOT NULL,
             verification TEXT NOT NULL, signals TEXT NOT NULL, rules TEXT NOT NULL, score INTEGER NOT NULL,
             level TEXT NOT NULL, action TEXT NOT NULL, target TEXT, restrict_actions TEXT NOT NULL,
             policy_version TEXT NOT NULL, shadow TEXT);
             CREATE TABLE outcomes (record INTEGER PRIMARY KEY, outcome TEXT NOT NULL, status INTEGER, duration_ms INTEGER);
             CREATE TABLE media (record INTEGER PRIMARY KEY, stats TEXT NOT NULL);
             CREATE TABLE invites (record INTEGER PRIMARY KEY, invite BLOB NOT NULL);
             CREATE VIEW decisions AS SELECT r.*, i.invite, o.outcome, o.status, o.duration_ms, m.stats AS media
             FROM records r LEFT JOIN invites i ON i.record = r.id LEFT JOIN outcomes o ON o.record = r.id
             LEFT JOIN media m ON m.record = r.id;
             PRAGMA user_version = 3;",
        )
        .expect("v3 schema");
        db.execute(
            "INSERT INTO records (decision_id, time_ms, call_id, side, trunk, calling, called,
             verification, signals, rules, score, level, action, restrict_actions, policy_version)
             VALUES ('00000000000000a3', ?1, 'call-v3', 'trunk', '198.51.100.7', '15550199', '15550100',
             'null', 'null', '[]', 0, 'low', 'tag', '[]', 'p-0')",
            [t - 1],
        )
        .expect("v3 row");
    }
    let audit = Audit::open(&AuditConfig::new(path.clone())).expect("open v3");
    audit.record(record(1, t));
    assert!(audit.flush(Duration::from_secs(10)));
    let rows = decisions(&path, None, None).expect("read");
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|d| (d.record.decision_id.as_str(), d.record.instance.as_str()))
        .collect();
    assert_eq!(got, [("00000000000000a3", ""), ("d0001", "cg-a")]);
    let db = rusqlite::Connection::open(&path).expect("open");
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 6, "upgraded through 4 to the current schema");
}

#[test]
fn a_version_4_store_gains_the_words_and_the_outbox_in_one_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v4.db");
    let t = now_ms();
    {
        // Schema 4 as callgate wrote it: records with `instance` and
        // without the words, the side tables, the view over `r.*`.
        let db = rusqlite::Connection::open(&path).expect("open");
        db.execute_batch(
            "CREATE TABLE records (id INTEGER PRIMARY KEY, decision_id TEXT NOT NULL, time_ms INTEGER NOT NULL,
             call_id TEXT NOT NULL, side TEXT NOT NULL, trunk TEXT NOT NULL, calling TEXT NOT NULL, called TEXT NOT NULL,
             verification TEXT NOT NULL, signals TEXT NOT NULL, rules TEXT NOT NULL, score INTEGER NOT NULL,
             level TEXT NOT NULL, action TEXT NOT NULL, target TEXT, restrict_actions TEXT NOT NULL,
             policy_version TEXT NOT NULL, shadow TEXT, instance TEXT NOT NULL DEFAULT '');
             CREATE TABLE outcomes (record INTEGER PRIMARY KEY, outcome TEXT NOT NULL, status INTEGER, duration_ms INTEGER);
             CREATE TABLE media (record INTEGER PRIMARY KEY, stats TEXT NOT NULL);
             CREATE TABLE invites (record INTEGER PRIMARY KEY, invite BLOB NOT NULL);
             CREATE VIEW decisions AS SELECT r.*, i.invite, o.outcome, o.status, o.duration_ms, m.stats AS media
             FROM records r LEFT JOIN invites i ON i.record = r.id LEFT JOIN outcomes o ON o.record = r.id
             LEFT JOIN media m ON m.record = r.id;
             PRAGMA user_version = 4;",
        )
        .expect("v4 schema");
        db.execute(
            "INSERT INTO records (decision_id, time_ms, call_id, side, trunk, calling, called,
             verification, signals, rules, score, level, action, restrict_actions, policy_version, instance)
             VALUES ('cg-a-00000000000000a4', ?1, 'call-v4', 'trunk', '198.51.100.7', '15550199', '15550100',
             'null', 'null', '[]', 40, 'medium', 'tag', '[\"credential-reset\"]', 'p-0', 'cg-a')",
            [t - 1],
        )
        .expect("v4 row");
    }
    let audit = Audit::open(&AuditConfig::new(path.clone())).expect("open v4");
    audit.record(record(1, t));
    assert!(audit.flush(Duration::from_secs(10)));
    let rows = decisions(&path, None, None).expect("read");
    assert_eq!(rows.len(), 2);
    // The old row keeps its codes and has no words; the new one has both.
    assert_eq!(rows[0].record.restrict, ["credential-reset"]);
    assert_eq!(
        (
            rows[0].record.level_text.as_deref(),
            rows[0].record.restrict_text.len(),
            rows[0].record.verify_text.as_deref()
        ),
        (None, 0, None)
    );
    assert_eq!(rows[1].record, record(1, t));
    let db = rusqlite::Connection::open(&path).expect("open");
    let (version, outbox): (i64, i64) = db
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM sqlite_master WHERE name IN ('outbox', 'outbox_cursors'))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("inspect");
    assert_eq!(
        (version, outbox),
        (6, 2),
        "through 5 (words, outbox) to the current schema"
    );
}

/// Waits (bounded) until `done` holds.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 20 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_full_batch_is_written_without_waiting_for_its_window() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let mut cfg = AuditConfig::new(path.clone());
    cfg.batch_max = 10;
    cfg.batch = Duration::from_secs(600); // far beyond this test's bound
    let audit = Audit::open(&cfg).expect("open");
    // The first record starts a batch: the writer takes it and parks for
    // the window.
    audit.record(record(0, now_ms()));
    wait_for("the writer takes the first record", || {
        audit.metrics().queue_depth.load(Relaxed) == 0
    });
    // A full batch waiting in the queue unparks it: ten records commit now,
    // not 600 s from now; the eleventh waits for the next batch.
    for i in 1..=10 {
        audit.record(record(i, now_ms()));
    }
    wait_for("a full batch commits", || {
        audit.metrics().written.load(Relaxed) >= 10
    });
    assert_eq!(audit.metrics().written.load(Relaxed), 10);
    assert_eq!(decisions(&path, None, None).expect("read").len(), 10);
    assert!(
        audit.flush(Duration::from_secs(10)),
        "a flush unparks it too"
    );
    assert_eq!(decisions(&path, None, None).expect("read").len(), 11);
}

#[test]
fn a_failed_upgrade_leaves_the_old_store_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.db");
    {
        let db = rusqlite::Connection::open(&path).expect("open");
        // Says version 2 but has no `media` column: moving it must fail.
        db.execute_batch(
            "CREATE TABLE decisions (id INTEGER PRIMARY KEY, decision_id TEXT NOT NULL, time_ms INTEGER NOT NULL,
             call_id TEXT NOT NULL, invite TEXT, outcome TEXT, status INTEGER, duration_ms INTEGER);
             INSERT INTO decisions (decision_id, time_ms, call_id, outcome) VALUES ('old1', 1, 'c', 'answered');
             PRAGMA user_version = 2;",
        )
        .expect("broken v2");
    }
    let err = Audit::open(&AuditConfig::new(path.clone()))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("upgrading schema 2 to 4"), "{err}");
    let db = rusqlite::Connection::open(&path).expect("open");
    let (version, rows, tables): (i64, i64, i64) = db
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM decisions WHERE outcome = 'answered'),
                    (SELECT count(*) FROM sqlite_master WHERE name IN ('records', 'outcomes'))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("inspect");
    assert_eq!((version, rows, tables), (2, 1, 0));
}

/// Outcomes and media statistics go to the latest record of their call:
/// one the writer just wrote, one of an earlier batch, one it only finds
/// in the table (after a restart); and a second decision for the same
/// Call-ID takes what comes after it.
#[test]
fn later_rows_of_a_call_go_to_its_latest_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let t = now_ms();
    let mut second = record(2, t + 1);
    second.call_id = "call-1".into();
    {
        let audit = Audit::open(&AuditConfig::new(path.clone())).expect("open");
        audit.record(record(1, t));
        assert!(audit.flush(Duration::from_secs(10)));
        audit.call_ended("call-1", CallOutcome::Answered, None);
        assert!(audit.flush(Duration::from_secs(10)));
        audit.record(second);
        audit.media_ended("call-1", &serde_json::json!([{"stream": 0}]));
        assert!(audit.flush(Duration::from_secs(10)));
        audit.call_ended(
            "call-1",
            CallOutcome::Answered,
            Some(Duration::from_millis(5000)),
        );
        assert!(audit.flush(Duration::from_secs(10)));
    }
    let audit = Audit::open(&AuditConfig::new(path.clone())).expect("reopen");
    audit.media_ended("call-1", &serde_json::json!([{"stream": 1}]));
    assert!(audit.flush(Duration::from_secs(10)));
    let rows = decisions(&path, None, None).expect("read");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].outcome.as_deref(), rows[0].duration_ms),
        (Some("answered"), None),
        "the first decision keeps the outcome it had"
    );
    assert_eq!(rows[0].media, None);
    assert_eq!(
        (rows[1].outcome.as_deref(), rows[1].duration_ms),
        (Some("answered"), Some(5000))
    );
    assert_eq!(
        rows[1].media,
        Some(serde_json::json!([{"stream": 1}])),
        "found in the table after the restart, and replaced"
    );
}

fn metric(audit: &Audit, series: &str) -> f64 {
    let text = callgate::exposition::text_of(audit.metrics().clone());
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

/// An INVITE of `len` bytes (a head and a large body).
fn big_invite(len: usize) -> bytes::Bytes {
    let head = "INVITE sip:+15550100@pbx SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    let mut v = head.as_bytes().to_vec();
    v.resize(len.max(head.len()), b'x');
    bytes::Bytes::from(v)
}

/// An audit store in a new directory, with its byte limits set by `set`.
fn audit_with(
    set: impl FnOnce(&mut callgate::audit::budget::AuditLimits),
) -> (tempfile::TempDir, Audit) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = AuditConfig::new(dir.path().join("audit.db"));
    set(&mut cfg.limits);
    let audit = Audit::open(&cfg).expect("open");
    (dir, audit)
}

/// Records `n` decisions from the usual trunk, each with an INVITE of
/// `len` bytes as received.
fn record_invites(audit: &Audit, n: usize, len: usize) {
    for i in 0..n {
        let mut r = record(i, now_ms());
        r.invite = None;
        audit.record_with_invite(r, big_invite(len));
    }
}

/// While the disk refuses writes, a flood of records with large INVITEs
/// stays within `max_queue_bytes` (queue and backlog together): records
/// with INVITEs fill half of it (8 of 60 kB in 512 KiB), past that the
/// INVITEs are left out, counted, and every decision is still written once
/// the disk accepts again. Bounded only in entries, the 65,536 queued and
/// 100,000 held records could hold ≈10 GiB of INVITEs.
#[test]
fn the_audit_queue_and_backlog_are_bounded_in_bytes() {
    let (dir, audit) = audit_with(|l| {
        l.max_queue_bytes = 1 << 20;
        l.max_invite_bytes = 64 << 10;
    });
    let path = dir.path().join("audit.db");
    let blocker = rusqlite_blocker(&path);
    let n = 200;
    record_invites(&audit, n, 60_000);
    let held = metric(&audit, "callgate_audit_queue_bytes");
    assert!(
        held > 0.0 && held <= f64::from(1u32 << 20),
        "queue and backlog within 1 MiB: {held}"
    );
    let left_out = metric(
        &audit,
        "callgate_audit_invites_reduced_total{reason=\"queue_bytes\"}",
    );
    assert!(
        left_out >= (n - 9) as f64,
        "INVITEs past the bound left out: {left_out}"
    );
    drop(blocker);
    assert!(
        audit.flush(Duration::from_secs(30)),
        "written after the lock"
    );
    let rows = decisions(&path, None, None).expect("read");
    assert_eq!(rows.len(), n, "every decision kept");
    let with_invite = rows.iter().filter(|r| r.record.invite.is_some()).count();
    assert!(
        (1..=9).contains(&with_invite),
        "{with_invite} INVITEs stored"
    );
    assert_eq!(metric(&audit, "callgate_audit_queue_bytes"), 0.0);
    assert_eq!(metric(&audit, "callgate_audit_dropped_total"), 0.0);
}

/// One source's INVITEs are cut to `max_invite_bytes` and stored only up
/// to its bytes per minute, so a flood of large INVITEs cannot fill the
/// disk; another source's INVITE is still stored; every decision is.
#[test]
fn stored_invites_are_cut_and_bounded_per_source_and_minute() {
    let (dir, audit) = audit_with(|l| {
        l.max_invite_bytes = 16 << 10;
        l.invite_bytes_per_source_minute = 64 << 10;
    });
    let path = dir.path().join("audit.db");
    record_invites(&audit, 10, 60_000);
    let mut other = record(10, now_ms());
    other.invite = None;
    other.trunk = "198.51.100.8".into();
    audit.record_with_invite(other, big_invite(2_000));
    assert!(audit.flush(Duration::from_secs(20)));
    let rows = decisions(&path, None, None).expect("read");
    assert_eq!(rows.len(), 11, "every decision kept");
    let stored: Vec<usize> = rows
        .iter()
        .filter(|r| r.record.trunk == "198.51.100.7")
        .filter_map(|r| r.record.invite.as_ref().map(String::len))
        .collect();
    assert_eq!(stored, vec![16 << 10; 4], "four cut INVITEs fit 64 KiB");
    assert!(
        rows.iter()
            .any(|r| r.record.trunk == "198.51.100.8" && r.record.invite.is_some()),
        "another source's INVITE is stored"
    );
    assert_eq!(
        metric(
            &audit,
            "callgate_audit_invites_reduced_total{reason=\"truncated\"}"
        ),
        10.0
    );
    assert_eq!(
        metric(
            &audit,
            "callgate_audit_invites_reduced_total{reason=\"source_budget\"}"
        ),
        6.0
    );
}
