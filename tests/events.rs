//! Decision events for CTI, end to end with real parts: sipp calls through
//! callgate (the shipped policy, the audit store), a webhook receiver — a
//! small HTTP or HTTPS (rustls, a test CA) server in this test on
//! 127.0.0.1 — and the live stream
//! (`GET /v1/events`) read over a plain TCP connection. Every event is
//! checked against docs/events.schema.json by python3-jsonschema.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{config, free_port, repo, scenario, Callgate, Ports, Sipp};

const SECRET: &[u8] = b"events-test-secret-0123456789abcdef";

/// One POST the receiver took.
#[derive(Debug, Clone)]
struct Delivery {
    headers: BTreeMap<String, String>,
    body: String,
}

/// A webhook receiver on 127.0.0.1:`port`: answers every POST 200 and
/// hands it to the test; stops (and frees the port) when dropped.
struct Receiver {
    stop: Arc<AtomicBool>,
    port: u16,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, got: mpsc::Sender<Delivery>) -> Receiver {
        Receiver::serve(port, got, None)
    }

    /// An HTTPS receiver: its certificate for 127.0.0.1 from a fresh CA,
    /// whose PEM file is returned for the webhook's `ca_file`.
    fn start_tls(port: u16, got: mpsc::Sender<Delivery>, dir: &Path) -> (Receiver, PathBuf) {
        use tokio_rustls::rustls;
        let files = common::pki::tls_files(dir);
        let certs = rustls_pemfile::certs(&mut &std::fs::read(&files.cert).expect("cert")[..])
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = rustls_pemfile::private_key(&mut &std::fs::read(&files.key).expect("key")[..])
            .expect("key pem")
            .expect("a key");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        (Receiver::serve(port, got, Some(Arc::new(config))), files.ca)
    }

    fn serve(
        port: u16,
        got: mpsc::Sender<Delivery>,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let delivery = match &tls {
                    None => read_post(conn),
                    Some(config) => {
                        let Ok(server) =
                            tokio_rustls::rustls::ServerConnection::new(config.clone())
                        else {
                            continue;
                        };
                        read_post(tokio_rustls::rustls::StreamOwned::new(server, conn))
                    }
                };
                if let Some(d) = delivery {
                    let _ = got.send(d);
                }
            }
        });
        Receiver {
            stop,
            port,
            thread: Some(thread),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 request and answers 200.
fn read_post(mut conn: impl Read + Write) -> Option<Delivery> {
    let mut reader = BufReader::new(&mut conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    drop(reader);
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    conn.flush().ok()?;
    Some(Delivery {
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// The shipped policy (words for levels and restrictions), unsigned calls.
fn callgate(ports: Ports, pbx_port: u16, audit: &Path, events: &str) -> Callgate {
    let policy = repo().join("sip-config/policy.toml");
    let extra = format!(
        "[risk]\npolicy = \"{}\"\n\n[audit]\npath = \"{}\"\nbatch_ms = 10\n\n{events}",
        policy.display(),
        audit.display()
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

/// `[events]` with one webhook to http://127.0.0.1:`port` (its key file
/// in `dir`).
fn webhook_section(dir: &Path, port: u16) -> String {
    webhook_to(dir, &format!("http://127.0.0.1:{port}/hooks/callgate"), "")
}

/// `[events]` with one webhook to `url`, `extra` keys added.
fn webhook_to(dir: &Path, url: &str, extra: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("crm.key");
    std::fs::write(&key, SECRET).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    format!(
        "[events]\n\n[[events.webhook]]\nname = \"crm\"\nurl = \"{url}\"\nsecret_file = \"{}\"\ntimeout_ms = 2000\nmax_backoff_ms = 300\n{extra}",
        key.display()
    )
}

/// Places `calls` basic calls through `cg` (answered, then hung up).
fn place_calls(cg: &Callgate, pbx_port: u16, calls: u32) {
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, calls, "u1", &[]);
    let uac = Sipp::uac(
        &scenario("uac-basic.xml"),
        &cg.trunk(),
        calls,
        10,
        "u1",
        &[],
    );
    uac.assert_all_ok(calls as u64, "calls through callgate");
    uas.finish().assert_all_ok(calls as u64, "calls at the PBX");
}

/// Deliveries until `done` holds of them (bounded: 30 s).
fn collect(got: &mpsc::Receiver<Delivery>, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = Vec::new();
    while !done(&all) {
        let left = deadline.saturating_duration_since(Instant::now());
        match got.recv_timeout(left) {
            Ok(d) => all.push(d),
            Err(_) => panic!("webhook deliveries incomplete after 30 s: {all:#?}"),
        }
    }
    all
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("event is not JSON ({e}): {body}"))
}

/// The distinct event ids of each kind among `all`.
fn ids_by_kind(all: &[Delivery]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in all {
        let v = json(&d.body);
        out.entry(v["kind"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .insert(v["id"].as_str().unwrap_or("?").to_owned());
    }
    out
}

/// Every decision and call end of `calls` calls arrived.
fn all_arrived(calls: usize) -> impl Fn(&[Delivery]) -> bool {
    move |all| {
        let ids = ids_by_kind(all);
        ids.get("decision").map_or(0, BTreeSet::len) >= calls
            && ids.get("call_end").map_or(0, BTreeSet::len) >= calls
    }
}

/// Checks the HMAC-SHA256 signature of `d` as a receiver does.
fn assert_signed(d: &Delivery) {
    use aws_lc_rs::hmac;
    let ts = d
        .headers
        .get("x-callgate-timestamp")
        .unwrap_or_else(|| panic!("no timestamp: {d:?}"));
    let sig = d
        .headers
        .get("x-callgate-signature")
        .and_then(|s| s.strip_prefix("sha256="))
        .unwrap_or_else(|| panic!("no sha256 signature: {d:?}"));
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
    let tag = hex(&[ts.as_bytes(), b".", d.body.as_bytes()].concat(), &key);
    assert_eq!(sig, tag, "signature of {d:?}");
    // A replay window as a receiver keeps it: the timestamp is recent.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ts: u64 = ts.parse().expect("numeric timestamp");
    assert!(now.abs_diff(ts) < 300, "timestamp {ts} far from now {now}");
    assert_eq!(
        d.headers.get("x-callgate-event-id").map(String::as_str),
        json(&d.body)["id"].as_str(),
        "the id header names the body's event"
    );
    assert_eq!(
        d.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
}

fn hex(msg: &[u8], key: &aws_lc_rs::hmac::Key) -> String {
    aws_lc_rs::hmac::sign(key, msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Validates each event against docs/events.schema.json (python3-jsonschema).
fn assert_schema_valid(bodies: &[String]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.json");
    let list: Vec<serde_json::Value> = bodies.iter().map(|b| json(b)).collect();
    std::fs::write(&events, serde_json::to_vec(&list).expect("json")).expect("write");
    let schema: PathBuf = repo().join("docs/events.schema.json");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, jsonschema\n\
             schema = json.load(open(sys.argv[1]))\n\
             jsonschema.Draft202012Validator.check_schema(schema)\n\
             v = jsonschema.Draft202012Validator(schema)\n\
             bad = [(i, e.message) for i, ev in enumerate(json.load(open(sys.argv[2]))) for e in v.iter_errors(ev)]\n\
             print(bad)\n\
             sys.exit(1 if bad else 0)",
        ])
        .arg(&schema)
        .arg(&events)
        .output()
        .expect("python3 (apt-get install python3-jsonschema)");
    assert!(
        out.status.success(),
        "events not valid against {}: {}{}",
        schema.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_call_sends_a_signed_decision_and_its_end_to_an_https_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook_port = free_port();
    let (tx, got) = mpsc::channel();
    let (_receiver, ca) = Receiver::start_tls(hook_port, tx, dir.path());
    let pbx_port = free_port();
    let audit = dir.path().join("audit.db");
    let section = webhook_to(
        dir.path(),
        &format!("https://127.0.0.1:{hook_port}/hooks/callgate"),
        &format!("ca_file = \"{}\"\n", ca.display()),
    );
    let cg = callgate(Ports::new(), pbx_port, &audit, &section);
    place_calls(&cg, pbx_port, 3);
    let all = collect(&got, all_arrived(3));
    for d in &all {
        assert_signed(d);
    }
    // Exactly once each while the receiver is up: three calls, two events each.
    let ids = ids_by_kind(&all);
    assert_eq!(all.len(), 6, "{all:#?}");
    assert_eq!(ids["decision"].len(), 3);
    let decisions: Vec<serde_json::Value> = all
        .iter()
        .map(|d| json(&d.body))
        .filter(|v| v["kind"] == "decision")
        .collect();
    let call_ids: BTreeSet<&str> = decisions
        .iter()
        .filter_map(|v| v["call_id"].as_str())
        .collect();
    assert_eq!(call_ids.len(), 3, "one decision per Call-ID");
    for v in &decisions {
        let decision_id = v["decision_id"].as_str().expect("decision id");
        assert_eq!(v["id"], format!("{decision_id}:decision"));
        assert_eq!(v["numbers"]["calling"], "+15550199");
        // Unsigned: no attestation stated, the path in words.
        assert_eq!(v["verification"]["outcome"], "none");
        assert!(v["verification"].get("attestation").is_none(), "{v}");
        assert_eq!(v["route"]["outcome"], "forwarded");
        assert!(v["level"].as_str().is_some_and(|l| !l.is_empty()), "{v}");
    }
    let ends: Vec<serde_json::Value> = all
        .iter()
        .map(|d| json(&d.body))
        .filter(|v| v["kind"] == "call_end")
        .collect();
    for v in &ends {
        assert_eq!(v["end"]["outcome"], "answered", "{v}");
        assert!(v["end"]["duration_ms"].as_u64().is_some(), "{v}");
    }
    assert_schema_valid(&all.iter().map(|d| d.body.clone()).collect::<Vec<_>>());
    common::await_metric(
        &cg,
        "callgate_events_webhook_delivered_total{webhook=\"crm\"}",
        6.0,
    );
}

#[test]
fn events_wait_for_a_receiver_that_was_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook_port = free_port(); // nothing listens there yet
    let pbx_port = free_port();
    let cg = callgate(
        Ports::new(),
        pbx_port,
        &dir.path().join("audit.db"),
        &webhook_section(dir.path(), hook_port),
    );
    place_calls(&cg, pbx_port, 3);
    // The receiver is down: attempts fail and are retried.
    common::await_metric(
        &cg,
        "callgate_events_webhook_retried_total{webhook=\"crm\"}",
        2.0,
    );
    assert_eq!(
        cg.metric("callgate_events_webhook_delivered_total{webhook=\"crm\"}"),
        0.0
    );
    let (tx, got) = mpsc::channel();
    let _receiver = Receiver::start(hook_port, tx);
    let all = collect(&got, all_arrived(3));
    for d in &all {
        assert_signed(d);
    }
    let ids = ids_by_kind(&all);
    assert_eq!(
        (ids["decision"].len(), ids["call_end"].len()),
        (3, 3),
        "every event arrived once the receiver came back: {all:#?}"
    );
    common::await_metric_at_most(
        &cg,
        "callgate_events_webhook_outbox_depth{webhook=\"crm\"}",
        0.0,
    );
}

#[test]
fn events_committed_before_a_kill_are_delivered_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook_port = free_port();
    let pbx_port = free_port();
    let audit = dir.path().join("audit.db");
    let section = webhook_section(dir.path(), hook_port);
    let mut first = callgate(Ports::new(), pbx_port, &audit, &section);
    place_calls(&first, pbx_port, 3);
    // Committed (the outbox's depth counts committed events only), not
    // delivered: the receiver is down.
    common::await_metric(
        &first,
        "callgate_events_webhook_outbox_depth{webhook=\"crm\"}",
        6.0,
    );
    assert_eq!(
        first.metric("callgate_events_webhook_delivered_total{webhook=\"crm\"}"),
        0.0
    );
    assert!(
        first
            .signal_and_wait("KILL", Duration::from_secs(10))
            .is_some(),
        "callgate killed"
    );
    let (tx, got) = mpsc::channel();
    let _receiver = Receiver::start(hook_port, tx);
    let second = callgate(Ports::new(), pbx_port, &audit, &section);
    let all = collect(&got, all_arrived(3));
    for d in &all {
        assert_signed(d);
    }
    let ids = ids_by_kind(&all);
    assert_eq!((ids["decision"].len(), ids["call_end"].len()), (3, 3));
    common::await_metric(
        &second,
        "callgate_events_webhook_delivered_total{webhook=\"crm\"}",
        6.0,
    );
}

/// A really signed call (the test STI PKI, its certificate fetched over
/// HTTPS on loopback) names who signed (issue 16): the certificate's
/// organisation and SPC in `X-Callgate-Verify-Text` at the PBX and in the
/// event's verification text, its subject in `verification.signer`. A
/// call whose signature was altered (the same valid certificate) names
/// nobody; its record keeps the subject as `unverified_subject`.
#[test]
fn a_signed_call_names_its_signer_to_the_pbx_and_in_its_event() {
    let pki = common::pki::pki();
    let (x5u_port, _) = common::pki::https_server(&pki);
    let x5u = format!("https://127.0.0.1:{x5u_port}/good.pem");
    let dir = pki._dir.path();
    let hook_port = free_port();
    let (tx, got) = mpsc::channel();
    let _receiver = Receiver::start(hook_port, tx);
    let pbx_port = free_port();
    let uas = Sipp::uas(
        &scenario("uas-basic.xml"),
        pbx_port,
        2,
        "u1",
        &["-trace_msg"],
    );
    let sections = format!(
        "{}{}",
        common::calls::stir_section(&pki),
        webhook_section(dir, hook_port)
    );
    let cg = callgate(Ports::new(), pbx_port, &dir.join("audit.db"), &sections);
    let identity = format!(
        "Identity: {}",
        common::calls::token(&pki, &x5u, "+15550123")
    );
    common::calls::call(&cg, dir, "+15550123", &identity, &x5u, 1);
    // One character of the signature changed: the chain still validates,
    // the ES256 check fails.
    let token = common::calls::token(&pki, &x5u, "+15550124");
    let at = token.len() - 20;
    let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
    let altered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
    common::calls::call(
        &cg,
        dir,
        "+15550124",
        &format!("Identity: {altered}"),
        &x5u,
        2,
    );
    let uas = uas.finish();
    uas.assert_all_ok(2, "the signed calls at the PBX");

    let by = "signed by Example Telecom (SPC 1234). Attestation A:";
    let words_from = |calling: &str| {
        let invite = uas
            .received_requests("INVITE")
            .into_iter()
            .find(|m| m.contains(&format!("From: <sip:{calling}@")))
            .unwrap_or_else(|| panic!("no INVITE from {calling}"));
        invite
            .lines()
            .find_map(|l| l.strip_prefix("X-Callgate-Verify-Text:"))
            .map(|w| w.trim().to_owned())
            .unwrap_or_else(|| panic!("no X-Callgate-Verify-Text in\n{invite}"))
    };
    let words = words_from("+15550123");
    assert!(
        words.starts_with(&format!("\"Caller ID signature verified, {by}")),
        "{words}"
    );
    let words = words_from("+15550124");
    assert!(
        words.starts_with("\"Caller ID signature FAILED") && !words.contains("Example Telecom"),
        "{words}"
    );

    let all = collect(&got, all_arrived(2));
    let decision_of = |calling: &str| {
        all.iter()
            .map(|d| json(&d.body))
            .find(|v| v["kind"] == "decision" && v["numbers"]["calling"] == calling)
            .unwrap_or_else(|| panic!("no decision event for {calling}"))
    };
    let failed = decision_of("+15550124");
    assert_eq!(failed["verification"]["outcome"], "failed", "{failed}");
    assert_eq!(failed["verification"]["signer"]["spc"], "1234", "{failed}");
    assert!(
        failed["verification"]["signer"].get("subject").is_none()
            && !failed.to_string().contains("Example Telecom"),
        "{failed}"
    );
    let stored: String = rusqlite::Connection::open(dir.join("audit.db"))
        .and_then(|db| {
            db.query_row(
                "SELECT verification FROM decisions WHERE calling = '+15550124'",
                [],
                |row| row.get(0),
            )
        })
        .expect("the failed call's record");
    let stored = json(&stored);
    assert_eq!(
        (&stored["unverified_subject"], stored.get("subject")),
        (&"O=Example Telecom, CN=SHAKEN 1234".into(), None),
        "{stored}"
    );

    let decision = decision_of("+15550123");
    let path = &decision["verification"];
    assert_eq!(path["outcome"], "passed", "{decision}");
    assert_eq!(path["attestation"], "A", "{decision}");
    assert_eq!(
        path["signer"]["subject"], "O=Example Telecom, CN=SHAKEN 1234",
        "{decision}"
    );
    assert_eq!(path["signer"]["spc"], "1234", "{decision}");
    assert_eq!(path["signer"]["x5u"], x5u.as_str(), "{decision}");
    assert!(
        path["text"].as_str().is_some_and(|t| t.contains(by)),
        "{decision}"
    );
    assert_schema_valid(&all.iter().map(|d| d.body.clone()).collect::<Vec<_>>());
}

#[test]
fn a_stream_client_sees_the_decision_of_a_call_placed_after_it_connected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pbx_port = free_port();
    let ports = Ports::new();
    let cg = callgate(
        ports,
        pbx_port,
        &dir.path().join("audit.db"),
        "[events]\nstream_clients = 2\n",
    );
    let mut stream = common::sse::open_stream(ports.admin, None);
    common::await_metric(&cg, "callgate_events_stream_clients", 1.0);
    place_calls(&cg, pbx_port, 1);
    let (id, kind, data) = common::sse::next_event(&mut stream);
    assert_eq!(kind, "decision");
    let v = json(&data);
    assert_eq!(v["id"], id.as_str(), "id: is the event id");
    assert_eq!(v["kind"], "decision");
    let (end_id, end_kind, end_data) = common::sse::next_event(&mut stream);
    assert_eq!(end_kind, "call_end");
    assert_eq!(json(&end_data)["decision_id"], v["decision_id"]);
    assert_schema_valid(&[data, end_data.clone()]);
    // A client that reconnects with the decision's id gets what followed
    // it from the outbox.
    let mut again = common::sse::open_stream(ports.admin, Some(&id));
    let (replayed, _, replayed_data) = common::sse::next_event(&mut again);
    assert_eq!((replayed, replayed_data), (end_id, end_data));
    // Two clients is all it takes here: a third is refused, not queued.
    let (status, body) = cg.admin("GET", "/v1/events");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("stream_clients"), "{body}");
}

#[test]
fn without_events_the_stream_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cg = callgate(Ports::new(), free_port(), &dir.path().join("audit.db"), "");
    let (status, body) = cg.admin("GET", "/v1/events");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("[events]"), "{body}");
}

/// The outbox is bounded in rows: past `outbox_max_events` the oldest
/// events go, counted; each decision has its event, written with it.
#[test]
fn the_outbox_keeps_at_most_its_cap_and_counts_what_it_removed() {
    use callgate::audit::{Audit, AuditConfig, AuditRecord, Json, Outbox};
    use callgate::events::{Events, EventsConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let cfg = EventsConfig {
        outbox_max_events: 1000,
        ..EventsConfig::default()
    };
    let events = Events::new(&cfg, &path).expect("events");
    let audit = Audit::open_with_outbox(&AuditConfig::new(path.clone()), Some(events.outbox()))
        .expect("open");
    for i in 0..1200 {
        audit.record(AuditRecord {
            decision_id: format!("cg-t-{i:016x}"),
            instance: "cg-t".into(),
            time_ms: 1_796_000_000_000 + i,
            call_id: format!("call-{i}"),
            side: "trunk".into(),
            trunk: "127.0.0.1".into(),
            calling: "15550199".into(),
            called: "15550100".into(),
            verification: Json::null(),
            signals: Json::null(),
            rules: vec![],
            score: 0,
            level: "low".into(),
            action: "tag".into(),
            target: None,
            restrict: vec![],
            policy_version: "p".into(),
            shadow: None,
            invite: None,
            level_text: None,
            restrict_text: vec![],
            verify_text: None,
            from_user: None,
            pai_user: None,
        });
    }
    assert!(audit.flush(Duration::from_secs(20)), "committed");
    let outbox = Outbox::open(&path).expect("outbox");
    assert_eq!(outbox.depth().expect("depth"), 1000);
    assert_eq!(outbox.last_seq().expect("last"), 1200);
    assert_eq!(
        events
            .metrics()
            .evicted
            .load(std::sync::atomic::Ordering::Relaxed),
        200
    );
    // The oldest went; the newest is the last decision's event.
    let kept = outbox.after(0, 1).expect("read");
    assert_eq!(kept[0].seq, 201);
    assert_eq!(kept[0].event_id, format!("cg-t-{:016x}:decision", 200));
    assert_eq!(
        outbox
            .seq_of(&format!("cg-t-{:016x}:decision", 1199))
            .expect("seq"),
        Some(1200)
    );
    assert_eq!(
        outbox
            .seq_of("cg-t-0000000000000000:decision")
            .expect("seq"),
        None
    );
}
