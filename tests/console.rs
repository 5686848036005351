//! The console (issue 16) in a real browser: Debian's Chromium, headless,
//! driven through chromedriver's WebDriver HTTP API (W3C WebDriver) with
//! plain HTTP and JSON. A supervisor logs in, an unsigned call from one of
//! the contact centre's own numbers (the shipped policy: STIR_NONE +
//! OWN_NUMBER_SPOOF, high, routed to review) appears live with its level,
//! the reasons in words and the restrictions; the supervisor opens it from
//! the review queue, marks it fraud and adds the number to the fraud list;
//! the next call from that number scores with KNOWN_FRAUD and is refused.
//! An agent token gets the agent view only, and the API refuses it the
//! supervisor's actions. The supervisor's view follows the decision
//! events (`[events]`, `GET /v1/events`). A screenshot of each view is saved under
//! target/console-screenshots/ (docs/img/ shows them).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::browser::Browser;
use common::pki::{https_server, pki};
use common::roles::{token_file, AGENT, SUPERVISOR};
use common::{config, free_port, repo, scenario, Callgate, Ports, Sipp};
use serde_json::{json, Value};

/// One of the contact centre's own numbers in the shipped policy
/// (`[numbers] own = ["1555010"]`).
const OWN_NUMBER: &str = "+15550107";

/// The shipped policy and its lists, copied into `dir` (the test adds to
/// the copy's fraud list).
fn shipped_policy(dir: &Path) -> PathBuf {
    let lists = dir.join("lists");
    std::fs::create_dir_all(&lists).expect("lists dir");
    for f in ["allow.txt", "dno.txt", "fraud.txt"] {
        std::fs::copy(repo().join("sip-config/lists").join(f), lists.join(f)).expect("copy list");
    }
    let p = dir.join("policy.toml");
    std::fs::copy(repo().join("sip-config/policy.toml"), &p).expect("copy policy");
    p
}

/// One admin request with `token` and a JSON `body`.
fn request(cg: &Callgate, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    common::roles::request(cg, method, path, Some(token), Some(body))
}

/// A CSV for uac-risk*.xml: one unsigned call from `calling`.
fn unsigned_call(dir: &Path, name: &str, calling: &str) -> String {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("SEQUENTIAL\n{calling};+15550100;X-No-Identity: unsigned;none\n"),
    )
    .expect("csv");
    p.display().to_string()
}

/// A callgate for the console: the shipped policy (a copy), STIR with
/// the test PKI, an audit store, `[events]` when `events`, and an agent
/// (`desk-1`) and a supervisor (`floor-lead`) token beside the ops one.
struct Setup {
    dir: tempfile::TempDir,
    _pki: common::pki::Pki,
    _x5u: (
        u16,
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    ),
    cg: Callgate,
    pbx_port: u16,
    /// The console's URL.
    console: String,
}

fn setup(events: bool) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    // The x5u server writes the web CA [stir] x5u_ca names.
    let x5u = https_server(&pki);
    let policy = shipped_policy(dir.path());
    let db = dir.path().join("audit.db");
    let ports = Ports::new();
    let pbx_port = free_port();
    let agent = token_file(dir.path(), "agent.token", AGENT);
    let sup = token_file(dir.path(), "supervisor.token", SUPERVISOR);
    let extra = format!(
        "{}[risk]\npolicy = \"{}\"\n\n[audit]\npath = \"{}\"\n\n{}",
        common::calls::stir_section(&pki),
        policy.display(),
        db.display(),
        if events { "[events]\n" } else { "" }
    );
    let tokens = format!(
        "\n[[admin.tokens]]\nname = \"desk-1\"\nrole = \"agent\"\ntoken_file = \"{}\"\n\
         [[admin.tokens]]\nname = \"floor-lead\"\nrole = \"supervisor\"\ntoken_file = \"{}\"\n",
        agent.display(),
        sup.display()
    );
    let cfg = config(
        ports,
        &[format!("sip:127.0.0.1:{pbx_port}")],
        &["sip:127.0.0.1:9".into()],
        &extra,
    )
    .replacen("\n[log]\n", &format!("{tokens}\n[log]\n"), 1);
    let cg = Callgate::start(ports, &cfg);
    Setup {
        console: format!("http://127.0.0.1:{}/console", ports.admin),
        dir,
        _pki: pki,
        _x5u: x5u,
        cg,
        pbx_port,
    }
}

/// The head of the admin listener's answer to `GET path` (lower case).
fn head_of(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Starts the PBX (answering one call) and a call from `calling` held up
/// for 90 s (unless dropped first).
fn held_call(s: &Setup, calling: &str) -> (Sipp, Sipp) {
    let pbx = Sipp::uas(&scenario("uas-basic.xml"), s.pbx_port, 1, "u1", &[]);
    let held = Sipp::uac_background(
        &scenario("uac-risk-held.xml"),
        &s.cg.trunk(),
        1,
        "u1",
        &[
            "-inf",
            &unsigned_call(s.dir.path(), "held.csv", calling),
            "-d",
            "90000",
        ],
    );
    (pbx, held)
}

#[test]
fn without_the_event_stream_the_supervisor_view_polls() {
    let s = setup(false);
    let _call = held_call(&s, OWN_NUMBER);
    let browser = Browser::start();
    browser.login(&s.console, SUPERVISOR, "supervisor");
    browser.await_text("#feed-status", "polling", |t| t == "updated every 2 s");
    browser.await_text("#review tbody", "the call in the review queue", |t| {
        t.contains("HIGH") && t.contains("OUR numbers")
    });
}

#[test]
fn a_supervisor_works_the_review_queue_in_the_browser_and_the_fraud_list_takes_effect() {
    let s = setup(true);
    let (dir, cg, console) = (&s.dir, &s.cg, &s.console);
    let ports = cg.ports;

    // The page and its files come with the strict policy.
    let (status, page) = common::http(("127.0.0.1", ports.admin), "GET", "/console");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("/console/console.js"), "{page}");
    for path in ["/console", "/console/console.js", "/console/console.css"] {
        let head = head_of(ports.admin, path);
        assert!(
            head.contains("content-security-policy: default-src 'self';")
                && head.contains("x-content-type-options: nosniff"),
            "{path}: {head}"
        );
    }

    // The PBX answers the first call (the second is refused by callgate).
    let (_pbx, held) = held_call(&s, OWN_NUMBER);

    let browser = Browser::start();
    browser.login(console, SUPERVISOR, "supervisor");
    assert!(browser.displayed("#view-supervisor"), "the supervisor view");
    // Updated from the event stream (fetch with the bearer token).
    browser.await_text("#feed-status", "the event stream", |t| t == "live");
    // The call appears live, and in the review queue with its reasons.
    browser.await_text("#calls tbody", "the live call", |t| t.contains("HIGH"));
    let queued = browser.await_text("#review tbody", "the review queue", |t| {
        t.contains("OUR numbers")
    });
    assert!(
        queued.contains("not signed"),
        "STIR_NONE in words: {queued}"
    );
    browser.click("#review tbody tr");
    let detail = browser.await_text("#sup-decision", "the decision", |t| t.contains("High risk"));
    for words in [
        "Caller ID shows one of OUR numbers",
        "No password or PIN reset",
        "No change of phone, email or address",
        "Routed to the review queue",
        "15550107",
    ] {
        assert!(detail.contains(words), "{words:?} in {detail}");
    }
    browser.screenshot("console-supervisor.png");

    // Mark it fraud, add the number to the fraud list.
    browser.type_into("#list-note", "asked for an MFA reset, not the customer");
    browser.click("#sup-actions [data-verdict=suspected_fraud]");
    browser.await_text("#history", "the verdict in the history", |t| {
        t.contains("suspected fraud by floor-lead via floor-lead")
    });
    browser.click("#add-fraud");
    browser.await_text("#sup-result", "the list change", |t| {
        t.contains("Added 15550107 to the fraud list")
    });
    let history = browser.await_text("#history", "the list change in the history", |t| {
        t.contains("added 15550107 to the fraud list, by floor-lead")
    });
    assert!(history.contains("not the customer"), "{history}");
    browser.screenshot("console-supervisor-actions.png");
    let fraud = std::fs::read_to_string(dir.path().join("lists/fraud.txt")).expect("fraud list");
    assert!(
        fraud.lines().any(|l| l.starts_with("15550107 ")),
        "appended to the list file: {fraud}"
    );

    // The agent view of the same call: words, no number, no list actions.
    let (status, calls) = request(cg, "GET", "/v1/calls", SUPERVISOR, "");
    assert_eq!(status, 200, "{calls:#}");
    let call_id = calls["calls"][0]["call_id"]
        .as_str()
        .expect("the live call's Call-ID")
        .to_owned();
    let agent_browser = Browser::start();
    agent_browser.login(&format!("{console}#call={call_id}"), AGENT, "agent");
    let agent_view = agent_browser.await_text("#agent-decision", "the agent's call", |t| {
        t.contains("High risk")
    });
    assert!(
        agent_view.contains("No password or PIN reset"),
        "{agent_view}"
    );
    assert!(
        !agent_view.contains("15550107"),
        "no number for an agent: {agent_view}"
    );
    assert!(agent_browser.displayed("#view-agent"));
    assert!(!agent_browser.displayed("#view-supervisor"));
    assert!(
        !agent_browser.displayed("#tab-supervisor"),
        "no supervisor tab"
    );
    assert!(!agent_browser.displayed("#add-fraud"), "no list actions");
    agent_browser.click("#stepup-done");
    agent_browser.await_text("#agent-decision", "the step-up", |t| {
        t.contains("Step-up done")
    });
    agent_browser.screenshot("console-agent.png");
    drop(agent_browser);
    let body = json!({"number": OWN_NUMBER, "by": "desk-1", "note": ""}).to_string();
    let (status, _) = request(cg, "POST", "/v1/lists/fraud", AGENT, &body);
    assert_eq!(status, 403, "an agent cannot change the lists");
    let (status, _) = request(cg, "GET", "/v1/review", AGENT, "");
    assert_eq!(status, 403, "an agent does not see the review queue");
    let (status, who) = request(cg, "GET", "/v1/whoami", AGENT, "");
    assert_eq!(
        (status, &who),
        (200, &json!({"name": "desk-1", "role": "agent"}))
    );

    // The routes the console added, against docs/admin-api.openapi.yaml.
    let mut answers =
        vec![json!({"method": "GET", "route": "/v1/whoami", "status": status, "body": who})];
    let mut record = |method: &str, path: &str, route: &str, body: &str, want: u16| {
        let (status, v) = request(cg, method, path, SUPERVISOR, body);
        assert_eq!(status, want, "{method} {path}: {v:#}");
        answers
            .push(json!({"method": method, "route": route, "status": status, "body": v.clone()}));
        v
    };
    let again = json!({"number": OWN_NUMBER, "by": "floor-lead", "note": "twice"}).to_string();
    let v = record("POST", "/v1/lists/fraud", "/v1/lists/{list}", &again, 200);
    assert_eq!(v["added"], false, "already on the list: {v:#}");
    record("POST", "/v1/lists/dno", "/v1/lists/{list}", &again, 404);
    let bad = json!({"number": "not a number", "by": "floor-lead"}).to_string();
    record("POST", "/v1/lists/allow", "/v1/lists/{list}", &bad, 422);
    record("POST", "/v1/lists/allow", "/v1/lists/{list}", "{", 400);
    let changes = record("GET", "/v1/lists", "/v1/lists", "", 200);
    let changes = changes["changes"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        changes.len(),
        2,
        "both recorded, newest first: {changes:#?}"
    );
    assert_eq!(
        (&changes[0]["added"], &changes[1]["added"]),
        (&json!(false), &json!(true))
    );
    assert_eq!(changes[1]["token"], "floor-lead");
    assert_eq!(
        changes[1]["note"],
        "asked for an MFA reset, not the customer"
    );
    let routes = ["GET /v1/whoami", "GET /v1/lists", "POST /v1/lists/{list}"];
    common::check_openapi(&json!({"routes": routes, "answers": answers}), dir.path());

    // The next call from the number scores with KNOWN_FRAUD: critical,
    // refused with 608.
    let next = Sipp::uac(
        &scenario("uac-risk-rejected.xml"),
        &cg.trunk(),
        1,
        1,
        "u1",
        &["-inf", &unsigned_call(dir.path(), "next.csv", OWN_NUMBER)],
    );
    next.assert_all_ok(1, "the next call from the fraud-listed number is refused");
    assert_eq!(
        cg.metric("callgate_decision_reasons_total{reason=\"KNOWN_FRAUD\"}"),
        1.0,
        "{}",
        cg.metrics()
    );

    // The ops view draws its charts from /metrics.
    let ops_browser = Browser::start();
    ops_browser.login(console, common::ADMIN_TOKEN, "ops");
    ops_browser.click("#tab-ops");
    ops_browser.await_text("#ops-status", "the charts", |t| t.starts_with("updated"));
    // One high and one critical decision, less than a minute ago: each
    // bar is a rate above zero, the others zero.
    let levels = ops_browser.text("#chart-levels");
    let values: Vec<f64> = levels
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(values.len(), 4, "four bars: {levels}");
    assert!(
        values[0] == 0.0 && values[1] == 0.0 && values[2] > 0.0 && values[3] > 0.0,
        "low, medium, high, critical per minute: {levels}"
    );
    assert!(ops_browser.text("#chart-phases").contains("assess"));
    ops_browser.screenshot("console-ops.png");
    drop(held);
}
