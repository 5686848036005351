//! `callgate ctl` (issue 15) against a running callgate, every verb: the
//! access rule with and without the token (401 without or with a wrong
//! one, 403 when no token file is configured, reads open unless
//! `token_for_reads`); a sipp call in flight listed by `ctl calls` and
//! `ctl call` with its decision and media, gone after its BYE; a target
//! disabled by the operator gets no calls until it is enabled again; a
//! drain answers new INVITEs 503 + Retry-After until `ctl undrain`, which
//! is refused once SIGTERM started the drain for exit; a
//! reload refused for a broken policy exits 1 naming the key, a good one
//! reports the keys and policy versions it changed. The answers seen here
//! are checked against docs/admin-api.openapi.yaml, and every route the
//! server registers must be in it (test-calls/openapi_check.py).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{config, free_ports, repo, scenario, secrets, Callgate, Ports, Sipp, Udp};
use serde_json::Value;

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
mfa-change = "No \"MFA\" change: call back on the number on file."
[level.high]
action = "review"
[level.critical]
action = "reject"
reject_code = 608
[review]
uri = "sip:review@127.0.0.1"
[lists.dno]
numbers = ["+18005550100"]
[[rule]]
code = "DNO"
weight = 100
when = { list = "dno" }
[[rule]]
code = "ANY_CALL"
weight = 10
when = { not = { list = "dno" } }
description = "Every call gets this, to show the words."
"#;

/// The carrier side's next hop (nothing listens: no test calls out).
fn carrier() -> Vec<String> {
    vec!["sip:127.0.0.1:9".into()]
}

/// Which token `ctl` is given.
#[derive(Clone, Copy)]
enum Token<'a> {
    None,
    Right,
    File(&'a Path),
}

/// The outcome of one `callgate ctl` run.
#[derive(Debug)]
struct Ctl {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ctl {
    fn ok(self, what: &str) -> Ctl {
        assert_eq!(self.code, Some(0), "{what}: {self:?}");
        self
    }

    fn refused(self, what: &str, status: &str) -> Ctl {
        assert_eq!(self.code, Some(1), "{what}: {self:?}");
        assert!(self.stderr.contains(status), "{what}: {self:?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// Runs `callgate ctl ARGS` with only the environment variables `env` of
/// its own (`CALLGATE_ADMIN*`).
fn ctl_raw(args: &[&std::ffi::OsStr], env: &[(&str, &std::ffi::OsStr)]) -> Ctl {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("ctl")
        .env_remove("CALLGATE_ADMIN")
        .env_remove("CALLGATE_ADMIN_TOKEN_FILE")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run callgate ctl");
    Ctl {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `callgate ctl --admin <cg's admin> ARGS` with `token`.
fn ctl(cg: &Callgate, token: Token<'_>, args: &[&str]) -> Ctl {
    let admin = format!("127.0.0.1:{}", cg.ports.admin);
    let mut all: Vec<&std::ffi::OsStr> = vec!["--admin".as_ref(), admin.as_ref()];
    match token {
        Token::None => {}
        Token::Right => all.extend(["--token-file".as_ref(), secrets().token_file.as_os_str()]),
        Token::File(f) => all.extend(["--token-file".as_ref(), f.as_os_str()]),
    }
    all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
    ctl_raw(&all, &[])
}

/// A policy file of `version` in `dir`.
fn policy_file(dir: &Path, version: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(&p, POLICY.replace("VERSION", version)).expect("write policy");
    p
}

/// Polls `ctl calls --json` (bounded) until `pred` holds of its calls.
fn await_calls(cg: &Callgate, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let v = ctl(cg, Token::None, &["calls", "--json"])
            .ok("ctl calls --json")
            .json();
        let calls = v["calls"].as_array().cloned().unwrap_or_default();
        if pred(&calls) {
            return calls;
        }
        assert!(Instant::now() < deadline, "{what}: calls now {calls:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_verb_follows_the_access_rule_with_and_without_the_token() {
    let ports = Ports::new();
    let cg = Callgate::start(
        ports,
        &config(ports, &["sip:127.0.0.1:9".into()], &carrier(), ""),
    );
    let wrong = cg.dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-admin-token-0123456789").expect("write");
    // Reads are open (token_for_reads unset).
    ctl(&cg, Token::None, &["targets"]).ok("targets without token");
    ctl(&cg, Token::None, &["calls"]).ok("calls without token");
    ctl(&cg, Token::None, &["policy"]).ok("policy without token");
    ctl(&cg, Token::None, &["call", "no-such-call"]).refused("call unknown", "404");
    // Every state-changing verb needs the token, and a wrong one is refused.
    let verbs: [&[&str]; 6] = [
        &["drain"],
        &["undrain"],
        &["reload"],
        &["target", "disable", "pbx", "127.0.0.1:9"],
        &["target", "enable", "pbx", "127.0.0.1:9"],
        &["target", "disable", "trunk", "127.0.0.1:9"],
    ];
    for v in verbs {
        ctl(&cg, Token::None, v).refused(&format!("{v:?} without token"), "401");
        ctl(&cg, Token::File(&wrong), v).refused(&format!("{v:?} wrong token"), "401");
    }
    assert_eq!(cg.admin("GET", "/readyz").0, 200, "a refused drain drained");
    // With the token they work; the address and token can come from the
    // configuration file.
    let drained = ctl(&cg, Token::Right, &["drain"]).ok("drain");
    assert!(drained.stdout.contains("draining"), "{drained:?}");
    let admin = format!("http://127.0.0.1:{}", cg.ports.admin);
    let by_env = ctl_raw(
        &["drain".as_ref()],
        &[
            ("CALLGATE_ADMIN", admin.as_ref()),
            (
                "CALLGATE_ADMIN_TOKEN_FILE",
                secrets().token_file.as_os_str(),
            ),
        ],
    )
    .ok("drain, address and token from the environment");
    assert!(by_env.stdout.contains("draining"), "{by_env:?}");
    let by_config = ctl_raw(
        &[
            "undrain".as_ref(),
            "--config".as_ref(),
            cg.config_path.as_os_str(),
        ],
        &[("CALLGATE_ADMIN", "127.0.0.1:1".as_ref())],
    )
    .ok("undrain, address and token from --config (over the environment)");
    assert!(by_config.stdout.contains("serving"), "{by_config:?}");
    // Nobody there: exit 2, not 1 (callgate did not refuse anything).
    let unreachable = ctl_raw(
        &["undrain".as_ref()],
        &[("CALLGATE_ADMIN", "127.0.0.1:1".as_ref())],
    );
    assert!(
        unreachable.code == Some(2) && unreachable.stderr.contains("cannot reach"),
        "{unreachable:?}"
    );
    drop(cg);

    // token_for_reads: every read verb needs the token too.
    let ports = Ports::new();
    let cfg = config(ports, &["sip:127.0.0.1:9".into()], &carrier(), "").replacen(
        "[admin]\n",
        "[admin]\ntoken_for_reads = true\n",
        1,
    );
    let cg = Callgate::start(ports, &cfg);
    let reads: [&[&str]; 4] = [&["calls"], &["call", "x"], &["targets"], &["policy"]];
    for v in reads {
        ctl(&cg, Token::None, v).refused(&format!("{v:?} without token"), "401");
    }
    ctl(&cg, Token::Right, &["calls"]).ok("calls with token");
    ctl(&cg, Token::Right, &["targets"]).ok("targets with token");
    ctl(&cg, Token::Right, &["policy"]).ok("policy with token");
    drop(cg);

    // No token file configured: state-changing verbs are refused (403)
    // whatever the client sends.
    let ports = Ports::new();
    let token_line = format!("token_file = \"{}\"\n", secrets().token_file.display());
    let cfg =
        config(ports, &["sip:127.0.0.1:9".into()], &carrier(), "").replacen(&token_line, "", 1);
    let cg = Callgate::start(ports, &cfg);
    let refused = ctl(&cg, Token::Right, &["drain"]).refused("drain, no token file", "403");
    assert!(refused.stderr.contains("admin.token_file"), "{refused:?}");
    ctl(&cg, Token::None, &["targets"]).ok("reads stay open");
}

/// The routes the admin API registers, read from its source (`.route(`
/// calls in src/api/), as `METHOD /path`.
fn registered_routes() -> Vec<String> {
    let mut routes = Vec::new();
    for file in ["src/api/mod.rs", "src/api/v1.rs"] {
        let text = std::fs::read_to_string(repo().join(file)).expect("read api source");
        for chunk in text.split(".route(\"").skip(1) {
            let Some((path, rest)) = chunk.split_once('"') else {
                continue;
            };
            let call = rest.split(".route(").next().unwrap_or(rest);
            let call = call.split(".layer(").next().unwrap_or(call);
            for method in ["get", "post", "put", "delete", "patch"] {
                let used = call
                    .match_indices(&format!("{method}("))
                    .any(|(i, _)| i == 0 || !call.as_bytes()[i - 1].is_ascii_alphanumeric());
                if used {
                    routes.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
    }
    routes
}

/// An admin answer to record for the document check.
fn answer(cg: &Callgate, method: &str, path: &str, route: &str) -> (u16, Value) {
    let (status, body) = cg.admin(method, path);
    let json: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{method} {path} -> {status}: {e}: {body}"));
    (
        status,
        serde_json::json!({"method": method, "route": route, "status": status, "body": json}),
    )
}

#[test]
fn a_call_in_flight_is_listed_with_its_decision_and_media_and_answers_match_the_document() {
    let ports = Ports::new();
    let pbx_port = common::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy_file(dir.path(), "v1");
    let media = free_ports(20);
    let extra = format!(
        "[risk]\npolicy = \"{}\"\n[media]\nenabled = true\nport_min = {media}\nport_max = {}\n",
        policy.display(),
        media + 19
    );
    let cg = Callgate::start(
        ports,
        &config(
            ports,
            &[
                format!("sip:127.0.0.1:{pbx_port}"),
                "sip:127.0.0.1:9".into(),
            ],
            &carrier(),
            &extra,
        ),
    );
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, 1, "u1", &[]);
    let trunk = cg.trunk();
    let uac = Sipp::uac_background(&scenario("uac-hold.xml"), &trunk, 1, "u1", &["-d", "10000"]);
    let calls = await_calls(&cg, "the held call established", |c| {
        c.len() == 1 && c[0]["state"] == "established"
    });
    let call = &calls[0];
    let call_id = call["call_id"].as_str().expect("call_id").to_owned();
    let decision = call["decision"]["id"]
        .as_str()
        .expect("decision id")
        .to_owned();
    assert_eq!(call["direction"], "inbound", "{call:#}");
    assert_eq!(call["caller"], "+15550199", "{call:#}");
    assert_eq!(call["decision"]["policy_version"], "v1", "{call:#}");
    assert_eq!(
        call["decision"]["reasons"],
        serde_json::json!(["ANY_CALL"]),
        "{call:#}"
    );
    // The policy's words beside the codes.
    assert_eq!(
        (
            &call["decision"]["level_text"],
            &call["decision"]["reasons_text"],
            &call["decision"]["restrict"],
            &call["decision"]["restrict_text"],
        ),
        (
            &serde_json::json!("Low risk: follow the usual ID steps."),
            &serde_json::json!([{"code": "ANY_CALL", "text": "Every call gets this, to show the words."}]),
            &serde_json::json!(["mfa-change"]),
            &serde_json::json!([{"code": "mfa-change", "text": "No \"MFA\" change: call back on the number on file."}]),
        ),
        "{call:#}"
    );
    assert_eq!(call["decision"]["route"], "agents", "{call:#}");
    let stream = &call["media"]["streams"][0];
    assert!(
        stream["ports"][0]
            .as_u64()
            .is_some_and(|p| p >= u64::from(media))
            && stream["ports"][1]
                .as_u64()
                .is_some_and(|p| p >= u64::from(media)),
        "relay ports from the media range: {call:#}"
    );
    // The table, and one call by Call-ID and by decision id.
    let table = ctl(&cg, Token::None, &["calls"]).ok("ctl calls");
    assert!(
        table.stdout.contains(&call_id)
            && table.stdout.contains(&decision)
            && table.stdout.contains("established"),
        "{table:?}"
    );
    let by_id = ctl(&cg, Token::None, &["call", &call_id]).ok("ctl call <call-id>");
    assert!(
        by_id.stdout.contains(&decision)
            && by_id
                .stdout
                .contains("ANY_CALL: Every call gets this, to show the words.")
            && by_id
                .stdout
                .contains("Low risk: follow the usual ID steps.")
            && by_id.stdout.contains("mfa-change: No \"MFA\" change"),
        "{by_id:?}"
    );
    let by_decision = ctl(&cg, Token::None, &["call", &decision, "--json"])
        .ok("ctl call <decision-id>")
        .json();
    assert_eq!(by_decision["call_id"], call_id.as_str());

    // Every answer kind, for the document check.
    let mut answers = Vec::new();
    let mut record = |(status, a): (u16, Value), want: u16| {
        assert_eq!(status, want, "{a:#}");
        answers.push(a);
    };
    record(answer(&cg, "GET", "/v1/calls", "/v1/calls"), 200);
    let path = format!("/v1/calls/{decision}");
    record(answer(&cg, "GET", &path, "/v1/calls/{id}"), 200);
    record(
        answer(&cg, "GET", "/v1/calls/nothing", "/v1/calls/{id}"),
        404,
    );
    record(answer(&cg, "GET", "/v1/targets", "/v1/targets"), 200);
    record(answer(&cg, "GET", "/v1/policy", "/v1/policy"), 200);
    record(answer(&cg, "GET", "/v1/drain", "/v1/drain"), 200);
    let disable = "/v1/targets/{side}/{target}/disable";
    let enable = "/v1/targets/{side}/{target}/enable";
    record(
        answer(&cg, "POST", "/v1/targets/pbx/127.0.0.1:9/disable", disable),
        200,
    );
    let last = format!("/v1/targets/pbx/127.0.0.1:{pbx_port}/disable");
    record(answer(&cg, "POST", &last, disable), 409);
    record(
        answer(&cg, "POST", "/v1/targets/pbx/10.9.9.9:1/disable", disable),
        404,
    );
    record(
        answer(&cg, "POST", "/v1/targets/pbx/127.0.0.1:9/enable", enable),
        200,
    );
    record(answer(&cg, "POST", "/v1/drain", "/v1/drain"), 200);
    record(answer(&cg, "POST", "/v1/undrain", "/v1/undrain"), 200);
    record(answer(&cg, "POST", "/v1/reload", "/v1/reload"), 200);
    std::fs::write(
        &policy,
        "version = \"broken\"\n[level.high]\naction = \"explode\"\n",
    )
    .expect("break the policy");
    record(answer(&cg, "POST", "/v1/reload", "/v1/reload"), 422);
    policy_file(dir.path(), "v1");

    // The call ends with its BYE: no longer listed.
    uac.finish().assert_all_ok(1, "the held call");
    uas.finish().assert_all_ok(1, "the PBX");
    await_calls(&cg, "the call gone after its BYE", |c| c.is_empty());

    let cases = serde_json::json!({"routes": registered_routes(), "answers": answers});
    let routes = cases["routes"].as_array().map_or(0, Vec::len);
    assert!(
        routes >= 14,
        "the route reader found only {routes}: {cases:#}"
    );
    common::check_openapi(&cases, dir.path());
}

#[test]
fn a_disabled_target_gets_no_calls_until_it_is_enabled() {
    let ports = Ports::new();
    let (a, b) = (common::free_port(), common::free_port());
    let targets = [format!("sip:127.0.0.1:{a}"), format!("sip:127.0.0.1:{b}")];
    let cg = Callgate::start(ports, &config(ports, &targets, &carrier(), ""));
    let uas_a = Sipp::uas(&scenario("uas-basic.xml"), a, 1, "u1", &[]);
    let uas_b = Sipp::uas(&scenario("uas-basic.xml"), b, 2, "u1", &[]);

    let out = ctl(
        &cg,
        Token::Right,
        &["target", "disable", "pbx", &targets[0]],
    )
    .ok("disable A");
    assert!(out.stdout.contains("out (operator)"), "{out:?}");
    let listed = ctl(&cg, Token::None, &["targets", "--json"])
        .ok("targets")
        .json();
    assert_eq!(listed["pbx"][0]["disabled"], true, "{listed:#}");
    assert_eq!(listed["pbx"][0]["in_rotation"], false, "{listed:#}");
    assert_eq!(listed["pbx"][1]["in_rotation"], true, "{listed:#}");
    // The last target in rotation cannot be taken out.
    let last = ctl(
        &cg,
        Token::Right,
        &["target", "disable", "pbx", &format!("127.0.0.1:{b}")],
    )
    .refused("disable the last", "409");
    assert!(last.stderr.contains("enable another first"), "{last:?}");

    // Both calls go to B, though A is first in failover order.
    Sipp::uac(&scenario("uac-basic.xml"), &cg.trunk(), 2, 10, "u1", &[])
        .assert_all_ok(2, "calls with A disabled");
    uas_b.finish().assert_all_ok(2, "B took both calls");

    ctl(&cg, Token::Right, &["target", "enable", "pbx", &targets[0]]).ok("enable A");
    Sipp::uac(&scenario("uac-basic.xml"), &cg.trunk(), 1, 10, "u1", &[])
        .assert_all_ok(1, "a call with A back");
    uas_a
        .finish()
        .assert_all_ok(1, "A took the call once enabled");
    let listed = ctl(&cg, Token::None, &["targets", "--json"])
        .ok("targets")
        .json();
    assert_eq!(listed["pbx"][0]["in_rotation"], true, "{listed:#}");
}

/// A new INVITE from `carrier` to the trunk.
fn send_invite(cg: &Callgate, carrier: &Udp, call_id: &str) {
    let port = carrier.port();
    let invite = format!(
        "INVITE sip:+15550100@{trunk} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id}\r\n\
         From: <sip:+15550199@127.0.0.1>;tag=c1\r\n\
         To: <sip:+15550100@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
         Contact: <sip:+15550199@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n",
        trunk = cg.trunk()
    );
    carrier.send(&cg.trunk(), invite.as_bytes());
}

/// A new INVITE from `carrier`; returns the first answer that is not
/// 100 Trying.
fn invite_answer(cg: &Callgate, carrier: &Udp, call_id: &str) -> String {
    send_invite(cg, carrier, call_id);
    loop {
        let (d, _) = carrier.recv().expect("an answer within 5 s");
        let text = String::from_utf8_lossy(&d).into_owned();
        if !text.starts_with("SIP/2.0 100") {
            return text;
        }
    }
}

#[test]
fn drain_refuses_new_invites_with_503_until_undrain() {
    let ports = Ports::new();
    let pbx = common::free_port();
    let cg = Callgate::start(
        ports,
        &config(ports, &[format!("sip:127.0.0.1:{pbx}")], &carrier(), ""),
    );
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx, 1, "u1", &[]);
    let out = ctl(&cg, Token::Right, &["drain"]).ok("drain");
    assert!(out.stdout.contains("draining"), "{out:?}");
    let status = ctl(&cg, Token::None, &["calls", "--json"]).ok("calls");
    assert_eq!(status.json()["count"], 0);
    assert_eq!(
        cg.admin("GET", "/readyz").0,
        503,
        "readiness off while drained"
    );
    let carrier = Udp::bind();
    let refused = invite_answer(&cg, &carrier, "ctl-drain-1");
    assert!(
        refused.starts_with("SIP/2.0 503") && refused.contains("Retry-After:"),
        "{refused}"
    );
    let out = ctl(&cg, Token::Right, &["undrain"]).ok("undrain");
    assert!(out.stdout.contains("serving"), "{out:?}");
    assert_eq!(cg.admin("GET", "/readyz").0, 200);
    Sipp::uac(&scenario("uac-basic.xml"), &cg.trunk(), 1, 10, "u1", &[])
        .assert_all_ok(1, "a call after undrain");
    uas.finish().assert_all_ok(1, "the PBX after undrain");
}

#[test]
fn a_refused_reload_exits_1_naming_the_key_and_a_good_one_reports_what_changed() {
    let ports = Ports::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy_file(dir.path(), "v1");
    let extra = format!("[risk]\npolicy = \"{}\"\n", policy.display());
    let cfg = config(ports, &["sip:127.0.0.1:9".into()], &carrier(), &extra);
    let cg = Callgate::start(ports, &cfg);
    let before = ctl(&cg, Token::None, &["policy", "--json"])
        .ok("policy")
        .json();
    assert_eq!(before["active"]["version"], "v1", "{before:#}");
    assert_eq!(before["active"]["rules"], 2, "{before:#}");
    assert!(before["shadow"].is_null(), "{before:#}");

    std::fs::write(
        &policy,
        POLICY
            .replace("VERSION", "v2")
            .replace("\"review\"", "\"explode\""),
    )
    .expect("break the policy");
    let refused = ctl(&cg, Token::Right, &["reload"]).refused("broken policy", "422");
    assert!(refused.stderr.contains("level.high.action"), "{refused:?}");
    let kept = ctl(&cg, Token::None, &["policy", "--json"])
        .ok("policy")
        .json();
    assert_eq!(
        kept["active"]["version"], "v1",
        "a refused reload changed the policy"
    );

    // A good policy and a changed key: both reported.
    policy_file(dir.path(), "v2");
    let cfg = cfg.replacen("[pbx]\n", "[pbx]\nrate_limit = 1234\n", 1);
    std::fs::write(&cg.config_path, cfg).expect("rewrite config");
    let applied = ctl(&cg, Token::Right, &["reload"]).ok("reload");
    assert!(
        applied.stdout.contains("v1 -> v2") && applied.stdout.contains("pbx.rate_limit"),
        "{applied:?}"
    );
    let json = ctl(&cg, Token::Right, &["reload", "--json"])
        .ok("reload again")
        .json();
    assert_eq!(
        json["changed"],
        serde_json::json!([]),
        "nothing changed since: {json:#}"
    );
    assert_eq!(json["policy"]["before"], "v2");
    let after = ctl(&cg, Token::None, &["policy"]).ok("policy table");
    assert!(after.stdout.contains("v2"), "{after:?}");
}

#[test]
fn undrain_is_refused_once_sigterm_started_the_drain_for_exit() {
    let pbx = Udp::bind();
    let ports = Ports::new();
    let mut cg = Callgate::start(
        ports,
        &config(
            ports,
            &[format!("sip:127.0.0.1:{}", pbx.port())],
            &carrier(),
            "",
        ),
    );
    // A call ringing keeps the SIGTERM drain going.
    let caller = Udp::bind();
    send_invite(&cg, &caller, "ctl-ringing");
    let invite = pbx
        .recv_until("INVITE ")
        .pop()
        .expect("the forwarded INVITE");
    pbx.send(
        &cg.pbx(),
        common::carrier::answer(&invite, "180 Ringing").as_bytes(),
    );
    caller.recv_until("SIP/2.0 180");
    let _ = Command::new("kill")
        .args(["-TERM", &cg.pid().to_string()])
        .status();
    common::await_metric(&cg, "callgate_draining", 1.0);
    let refused = ctl(&cg, Token::Right, &["undrain"]).refused("undrain after SIGTERM", "409");
    assert!(refused.stderr.contains("shutting down"), "{refused:?}");
    let (_, body) = cg.admin("GET", "/v1/drain");
    let v: Value = serde_json::from_str(&body).expect("drain JSON");
    assert_eq!(
        (v["draining"].as_bool(), v["shutting_down"].as_bool()),
        (Some(true), Some(true)),
        "{v:#}"
    );
    // The call ends; callgate exits cleanly.
    pbx.send(
        &cg.pbx(),
        common::carrier::answer(&invite, "486 Busy Here").as_bytes(),
    );
    caller.recv_until("SIP/2.0 486");
    let status = cg
        .signal_and_wait("0", Duration::from_secs(10))
        .expect("exited after the drain");
    assert!(status.success(), "{status:?}\n{}", cg.log());
}
