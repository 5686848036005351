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
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::pki::{https_server, pki};
use common::{config, free_port, repo, scenario, Callgate, Ports, Sipp};
use serde_json::{json, Value};

const AGENT: &str = "agent-token-0123456789abcdef";
const SUPERVISOR: &str = "supervisor-token-0123456789abcdef";
/// One of the contact centre's own numbers in the shipped policy
/// (`[numbers] own = ["1555010"]`).
const OWN_NUMBER: &str = "+15550107";
/// The W3C WebDriver element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One HTTP/1.1 exchange with chromedriver: (status, JSON body).
/// Chromium starts slowly on a busy machine: a generous read bound.
fn wd_http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect chromedriver");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    // chromedriver keeps the connection open whatever the request says:
    // read the head, then the body by its Content-Length (or chunks).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).expect("read chromedriver");
        assert!(
            n > 0,
            "chromedriver closed before its answer to {method} {path}"
        );
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &raw[head_end..];
        let complete = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = s.read(&mut buf).expect("read chromedriver");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let rest = String::from_utf8_lossy(&raw[head_end..]).into_owned();
    let payload = if chunked { dechunk(&rest) } else { rest };
    (
        status,
        serde_json::from_str(&payload).unwrap_or(Value::Null),
    )
}

/// A chunked body's data.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A chromedriver process and one headless Chromium session.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver (apt-get install chromium chromium-driver)");
        common::wait_bound(port, true);
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let (status, v) = wd_http(port, "POST", "/session", Some(&caps));
        assert_eq!(status, 200, "new session: {v:#}");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        Browser {
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = wd_http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        );
        assert_eq!(status, 200, "{method} {path}: {v:#}");
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The element `css` selects, if any.
    fn find(&self, css: &str) -> Option<String> {
        let (status, v) = wd_http(
            self.port,
            "POST",
            &format!("/session/{}/element", self.session),
            Some(&json!({"using": "css selector", "value": css})),
        );
        (status == 200).then(|| v["value"][ELEMENT].as_str().map(str::to_owned))?
    }

    /// The visible text of `css` (empty when hidden or absent).
    fn text(&self, css: &str) -> String {
        self.find(css)
            .map(|e| {
                self.cmd("GET", &format!("/element/{e}/text"), None)
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default()
    }

    fn displayed(&self, css: &str) -> bool {
        self.find(css).is_some_and(|e| {
            self.cmd("GET", &format!("/element/{e}/displayed"), None)
                .as_bool()
                .unwrap_or(false)
        })
    }

    /// Waits (bounded) until `css`'s text satisfies `pred`; its text.
    fn await_text(&self, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t = self.text(css);
            if pred(&t) {
                return t;
            }
            if Instant::now() > deadline {
                let page = self.cmd("GET", "/source", None);
                let page: String = page
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(6000)
                    .collect();
                let status = self.text(".status:not(:empty)");
                panic!("{what}: {css} shows {t:?}; status {status:?}; the page: {page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn click(&self, css: &str) {
        let e = self.find(css).unwrap_or_else(|| panic!("no {css}"));
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).unwrap_or_else(|| panic!("no {css}"));
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Logs in with `token` on the console at `url` and waits for the role.
    fn login(&self, url: &str, token: &str, role: &str) {
        self.go(url);
        self.await_text("#login h2", "the login form", |t| t == "Log in");
        self.type_into("#token", token);
        self.click("#login-submit");
        self.await_text("#who-role", "the role after login", |t| t == role);
    }

    /// Saves a screenshot as target/console-screenshots/`name`.
    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("screenshot base64");
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let dir = repo().join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = wd_http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A token file (mode 600).
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, token).expect("write token");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

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

/// An admin request with a bearer token: (status, JSON or string).
fn request(cg: &Callgate, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let (status, text) = common::http_body(
        ("127.0.0.1", cg.ports.admin),
        method,
        path,
        &[("Authorization", &bearer)],
        body,
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
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
