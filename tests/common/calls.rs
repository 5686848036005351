//! Calls through callgate instances that share state: the risk policy
//! they run (a velocity rule, a STIR rule), signed PASSporTs, one call
//! placed by sipp from a CSV line, and what the PBX received
//! (tests/state_redis.rs, tests/instances.rs).

use callgate::stir::sign::{identity_header, SignRequest};

use super::pki::{https_server, pki, Pki};
use super::redis::RedisServer;
use super::{config, free_port, scenario, Callgate, Ports, Sipp, SippResult};

pub const POLICY: &str = r#"
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

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn token(pki: &Pki, x5u: &str, orig: &str) -> String {
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

/// Places one call through `cg` from `calling` with `header` (an Identity
/// header line or a harmless one) and checks that it was answered.
pub fn call(
    cg: &Callgate,
    dir: &std::path::Path,
    calling: &str,
    header: &str,
    x5u: &str,
    n: usize,
) {
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
pub fn routed(uas: &SippResult) -> Vec<(String, String, String)> {
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

/// The decision id in `X-Callgate-Risk` of every INVITE the PBX got.
pub fn decision_ids(uas: &SippResult) -> Vec<String> {
    uas.received_requests("INVITE")
        .iter()
        .map(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("X-Callgate-Risk:"))
                .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("id=")))
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// `[stir]` verifying with the test PKI (x5u on loopback).
pub fn stir_section(pki: &Pki) -> String {
    format!(
        "[stir]\nenabled = true\ntrust_dir = \"{}\"\nx5u_ca = [\"{}\"]\nallow_private_x5u = true\n\n",
        pki.trust_dir.display(),
        pki.web_ca.display(),
    )
}

/// A callgate that verifies STIR (the test PKI, x5u on loopback) and runs
/// [`POLICY`], PBX at `pbx_port`, with `sections` (`[state]`, and any
/// other) added: one instance of a group sharing state.
pub fn sharing_instance(pki: &Pki, pbx_port: u16, sections: &str) -> Callgate {
    let dir = pki._dir.path();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).expect("policy");
    let ports = Ports::new();
    let extra = format!(
        "{}[risk]\npolicy = \"{}\"\n\n{sections}",
        stir_section(pki),
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

/// What a test of two instances on one Redis starts from: the test PKI
/// with its x5u server (`x5u`), a `redis-server` on a free port, and the
/// PBX: a sipp UAS on `pbx_port` answering `calls` calls, tracing them.
pub struct Pair {
    pub pki: Pki,
    pub x5u: String,
    pub redis: RedisServer,
    pub pbx_port: u16,
    pub uas: Sipp,
}

/// Starts a [`Pair`]'s peers for `calls` calls.
pub fn pair(calls: u32) -> Pair {
    let pki = pki();
    let (https, _) = https_server(&pki);
    let x5u = format!("https://127.0.0.1:{https}/good.pem");
    let redis = RedisServer::start(free_port());
    let pbx_port = free_port();
    let uas = Sipp::uas(
        &scenario("uas-basic.xml"),
        pbx_port,
        calls,
        "u1",
        &["-trace_msg"],
    );
    Pair {
        pki,
        x5u,
        redis,
        pbx_port,
        uas,
    }
}

/// A policy that reviews high-risk calls at `sip:review@127.0.0.1`, with
/// `+15550101` on the allow list: verified A from it scores −50 (low,
/// `ALLOWLISTED`), a failed verification 70 (high, review), an unsigned
/// call 15 (`STIR_NONE`). The tag-checking scenarios and the live-capture
/// replays run under it.
pub const ALLOW_OR_REVIEW_POLICY: &str = r#"
version = "allow-or-review-1"
[levels]
medium = 30
high = 60
critical = 90
[level.high]
action = "review"
[review]
uri = "sip:review@127.0.0.1"
[lists.allow]
numbers = ["+15550101"]
[[rule]]
code = "ALLOWLISTED"
weight = -50
when = { list = "allow", stir = "passed" }
[[rule]]
code = "STIR_FAILED"
weight = 70
when = { stir = "failed" }
[[rule]]
code = "STIR_NONE"
weight = 15
when = { stir = "none" }
"#;
