//! The risk engine end to end with sipp peers: a signed, allow-listed call
//! reaches the PBX tagged low; a Do-Not-Originate number is refused with
//! 608; a failed verification and a burst from one number land in the
//! review queue with History-Info; forged X-Callgate-* headers never reach
//! the PBX; an attestation whose certificate could not be fetched reaches
//! the PBX only as a claim; the policy's words go beside the codes; a
//! policy reload under load loses no call.

mod common;

use std::io::Write;

use callgate::stir::sign::{identity_header, SignRequest};
use common::pki::{https_server, pki, Pki};
use common::{config, free_port, scenario, Callgate, Ports, Sipp, SippResult};

const POLICY: &str = r#"
version = "VERSION"
[levels]
medium = 30
high = 60
critical = 90
[level.medium]
action = "tag"
restrict = ["credential-reset"]
[level.high]
action = "review"
restrict = ["credential-reset", "contact-change"]
text = "High risk: the caller ID may be faked. Escalate."
[restrictions]
credential-reset = "No password reset: call back on the number on file."
[level.critical]
action = "reject"
reject_code = 608
[review]
uri = "sip:review@127.0.0.1"
[lists.allow]
numbers = ["+15550101"]
[lists.dno]
numbers = ["+18005550100"]
[velocity.ani_1m]
key = "calling"
window_secs = 60
[[rule]]
code = "ALLOWLISTED"
weight = -50
when = { list = "allow", stir = "passed" }
[[rule]]
code = "STIR_FAILED"
weight = 70
when = { stir = "failed" }
description = "The caller ID signature failed: the \"number\" may be faked."
[[rule]]
code = "UNCHECKED_CLAIM"
weight = 35
when = { stir = "none", attest = "A" }
description = "Signed, but the signature could not be checked: the number is unproven."
[[rule]]
code = "DNO"
weight = 100
when = { list = "dno", not = { stir = "passed" } }
[[rule]]
code = "BURST_ANI_1M"
weight = 65
when = { velocity = "ani_1m", at_least = 4 }
"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn token(pki: &Pki, x5u: &str, orig: &str, origid: &str) -> String {
    let h = identity_header(
        &pki.signing,
        &SignRequest {
            orig,
            dest: "+15550100",
            attest: 'A',
            origid,
            x5u,
            iat: now(),
        },
    )
    .expect("sign");
    h.split(';').next().unwrap_or_default().to_owned()
}

/// Writes a sipp -inf CSV (SEQUENTIAL) and returns its path.
fn csv(dir: &std::path::Path, name: &str, lines: &[String]) -> String {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("csv");
    writeln!(f, "SEQUENTIAL").expect("write");
    for l in lines {
        writeln!(f, "{l}").expect("write");
    }
    path.display().to_string()
}

fn start(pki: &Pki, policy_version: &str, pbx_port: u16) -> Callgate {
    let dir = pki._dir.path();
    let policy = dir.join(format!("policy-{policy_version}.toml"));
    std::fs::write(&policy, POLICY.replace("VERSION", policy_version)).expect("policy");
    let ports = Ports::new();
    let extra = format!(
        "[stir]\nenabled = true\ntrust_dir = \"{}\"\nx5u_ca = [\"{}\"]\nallow_private_x5u = true\n\n[risk]\npolicy = \"{}\"\n\n[audit]\npath = \"{}\"\n",
        pki.trust_dir.display(),
        pki.web_ca.display(),
        policy.display(),
        dir.join(format!("audit-{policy_version}.db")).display()
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

/// The INVITE the PBX received from `calling`, the `nth` one.
fn invite_from(uas: &SippResult, calling: &str, nth: usize) -> String {
    let all: Vec<String> = uas
        .received_requests("INVITE")
        .into_iter()
        .filter(|m| m.contains(&format!("From: <sip:{calling}@")))
        .collect();
    match all.get(nth) {
        Some(m) => m.clone(),
        None => panic!(
            "no INVITE #{nth} from {calling}; received:\n{}",
            uas.messages
        ),
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .map(|l| l[name.len() + 1..].trim())
}

#[test]
fn calls_are_tagged_reviewed_or_refused_by_policy() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let x5u = format!("https://127.0.0.1:{port}/good.pem");
    let pbx_port = free_port();
    let answered = 7;
    let uas = Sipp::uas(
        &scenario("uas-basic.xml"),
        pbx_port,
        answered,
        "u1",
        &["-trace_msg"],
    );
    let cg = start(&pki, "test-1", pbx_port);
    let dir = pki._dir.path();
    let good = token(
        &pki,
        &x5u,
        "+15550101",
        "123e4567-e89b-12d3-a456-426655440001",
    );
    let tampered = token(
        &pki,
        &x5u,
        "+15550102",
        "123e4567-e89b-12d3-a456-426655440002",
    )
    .replacen('.', ".e", 1);
    // Signed A, but its certificate is on a port nothing listens on: the
    // fetch is refused, the verification is `none`, the attestation an
    // unchecked claim.
    let dead_x5u = format!("https://127.0.0.1:{}/good.pem", free_port());
    let unfetched = token(
        &pki,
        &dead_x5u,
        "+15550104",
        "123e4567-e89b-12d3-a456-426655440004",
    );
    let unsigned = |n: &str| format!("{n};+15550100;X-No-Identity: unsigned;none");
    let lines = vec![
        format!("+15550101;+15550100;Identity: {good};{x5u}"),
        format!("+15550102;+15550100;Identity: {tampered};{x5u}"),
        format!("+15550104;+15550100;Identity: {unfetched};{dead_x5u}"),
        unsigned("+15550103"),
        unsigned("+15550103"),
        unsigned("+15550103"),
        unsigned("+15550103"),
    ];
    let calls = csv(dir, "calls.csv", &lines);
    let uac = Sipp::uac(
        &scenario("uac-risk.xml"),
        &cg.trunk(),
        answered,
        10,
        "u1",
        &["-inf", &calls, "-l", "1"],
    );
    uac.assert_all_ok(u64::from(answered), "carrier UAC");
    let rejected = csv(dir, "dno.csv", &[unsigned("+18005550100")]);
    let dno = Sipp::uac(
        &scenario("uac-risk-rejected.xml"),
        &cg.trunk(),
        1,
        1,
        "u1",
        &["-inf", &rejected],
    );
    dno.assert_all_ok(1, "DNO call refused with 608");
    let uas = uas.finish();
    uas.assert_all_ok(u64::from(answered), "PBX UAS");

    // Allow-listed, A-attested: low, no restrictions, forged tags gone.
    let low = &invite_from(&uas, "+15550101", 0);
    let risk = header(low, "X-Callgate-Risk").unwrap_or_default();
    assert!(risk.starts_with("low;score=0;policy=test-1;id="), "{low}");
    assert_eq!(low.matches("X-Callgate-Risk:").count(), 1, "{low}");
    assert!(
        !low.contains("X-Callgate-Forged") && !low.contains("X-Callgate-Restrict"),
        "{low}"
    );
    assert!(low.contains("verstat=TN-Validation-Passed-A"), "{low}");
    assert!(
        header(low, "X-Callgate-Verify")
            .is_some_and(|v| v.starts_with("passed;attest=A;origid=123e4567")),
        "{low}"
    );
    assert_eq!(header(low, "X-Callgate-Reasons"), Some("ALLOWLISTED"));

    // Failed verification: the review queue, with History-Info.
    let review = &invite_from(&uas, "+15550102", 0);
    assert!(
        review.starts_with("INVITE sip:review@127.0.0.1 SIP/2.0"),
        "{review}"
    );
    let hi = header(review, "History-Info").unwrap_or_default();
    assert!(
        hi.starts_with("<sip:+15550100@127.0.0.1:")
            && hi.contains("Reason=SIP%3Bcause%3D380")
            && hi.ends_with("<sip:review@127.0.0.1>;index=1.1;rc=1"),
        "{hi}"
    );
    assert!(
        header(review, "X-Callgate-Risk").is_some_and(|r| r.starts_with("high;score=70;")),
        "{review}"
    );
    assert_eq!(header(review, "X-Callgate-Reasons"), Some("STIR_FAILED"));
    assert_eq!(
        header(review, "X-Callgate-Restrict"),
        Some("credential-reset,contact-change")
    );
    // The policy's words beside the codes, quoted (RFC 3261 §25.1).
    assert_eq!(
        header(review, "X-Callgate-Reasons-Text"),
        Some(r#""The caller ID signature failed: the \"number\" may be faked.""#)
    );
    assert_eq!(
        header(review, "X-Callgate-Risk-Text"),
        Some(r#""High risk: the caller ID may be faked. Escalate.""#)
    );
    assert_eq!(
        header(review, "X-Callgate-Restrict-Text"),
        Some(r#""No password reset: call back on the number on file.""#)
    );
    // A low call has no words in this policy: no text headers but the
    // verification's own.
    for h in ["Risk", "Reasons", "Restrict"] {
        assert!(!low.contains(&format!("X-Callgate-{h}-Text:")), "{low}");
    }
    assert!(
        header(low, "X-Callgate-Verify-Text").is_some_and(|t| t.starts_with(
            "\"Caller ID signature verified, signed by Example Telecom (SPC 1234). Attestation A:"
        )),
        "{low}"
    );
    assert!(
        header(review, "X-Callgate-Verify")
            .is_some_and(|v| v.starts_with("failed;") && v.ends_with("cause=438")),
        "{review}"
    );

    // Nothing unverified looks verified: the certificate could not be
    // fetched, so the PASSporT's "A" is shown as a claim, and verstat
    // carries no attestation.
    let unchecked = &invite_from(&uas, "+15550104", 0);
    let verify = header(unchecked, "X-Callgate-Verify").unwrap_or_default();
    assert!(
        verify.starts_with(
            "none;claimed-attest=A;claimed-origid=123e4567-e89b-12d3-a456-426655440004"
        ),
        "{unchecked}"
    );
    assert!(
        !verify.contains(";attest=") && !verify.contains(";origid="),
        "{verify}"
    );
    assert!(
        unchecked.contains("verstat=No-TN-Validation") && !unchecked.contains("Passed"),
        "{unchecked}"
    );
    // Tagged (medium) with the policy's words beside the codes.
    assert!(
        unchecked.starts_with("INVITE sip:+15550100@")
            && header(unchecked, "X-Callgate-Risk")
                .is_some_and(|r| r.starts_with("medium;score=35;")),
        "{unchecked}"
    );
    assert_eq!(
        header(unchecked, "X-Callgate-Reasons"),
        Some("UNCHECKED_CLAIM")
    );
    assert_eq!(
        header(unchecked, "X-Callgate-Reasons-Text"),
        Some(r#""Signed, but the signature could not be checked: the number is unproven.""#)
    );
    assert_eq!(
        header(unchecked, "X-Callgate-Restrict-Text"),
        Some(r#""No password reset: call back on the number on file.""#)
    );
    assert!(
        !unchecked.contains("X-Callgate-Risk-Text:"),
        "medium has no text here: {unchecked}"
    );
    let words = header(unchecked, "X-Callgate-Verify-Text").unwrap_or_default();
    assert!(
        words.starts_with("\"Caller ID signature could not be checked (certificate unavailable")
            && words.ends_with("Its claimed attestation A is unproven.\""),
        "{words}"
    );

    // A burst from one number crosses into review at the 4th call.
    for nth in 0..3 {
        let m = &invite_from(&uas, "+15550103", nth);
        assert!(m.starts_with("INVITE sip:+15550100@"), "call {nth}: {m}");
        assert!(
            header(m, "X-Callgate-Risk").is_some_and(|r| r.starts_with("low;score=0")),
            "{m}"
        );
    }
    let burst = &invite_from(&uas, "+15550103", 3);
    assert!(
        burst.starts_with("INVITE sip:review@127.0.0.1 SIP/2.0"),
        "{burst}"
    );
    assert_eq!(header(burst, "X-Callgate-Reasons"), Some("BURST_ANI_1M"));

    let m = cg.metrics();
    for (level, action, n) in [
        ("low", "tag", 4.0),
        ("medium", "tag", 1.0),
        ("high", "review", 2.0),
        ("critical", "reject", 1.0),
    ] {
        assert_eq!(
            common::metric_value(
                &m,
                &format!("callgate_decisions_total{{level=\"{level}\",action=\"{action}\"}}")
            ),
            n,
            "{level}/{action}\n{m}"
        );
    }
    assert_eq!(
        common::metric_value(&m, "callgate_policy_info{version=\"test-1\",shadow=\"\"}"),
        1.0,
        "{m}"
    );

    // Every call has its audit record with the verification path; SIGTERM
    // flushes what was recorded before callgate exits.
    let mut cg = cg;
    let status = cg.signal_and_wait("TERM", std::time::Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        cg.log()
    );
    let rows =
        callgate::audit::decisions(&dir.join("audit-test-1.db"), None, None).expect("audit db");
    assert_eq!(rows.len(), 8, "{rows:#?}");
    let by_calling = |n: &str| {
        rows.iter()
            .filter(|r| r.record.calling == n)
            .collect::<Vec<_>>()
    };
    let low = by_calling("+15550101")[0];
    assert_eq!(
        (low.record.level.as_str(), low.record.action.as_str()),
        ("low", "tag")
    );
    let verification = low.record.verification.value();
    assert_eq!(verification["status"], "passed");
    let checks = verification["checks"].as_array().expect("checks");
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "signature" && c["ok"] == true && c["micros"].is_u64()),
        "{checks:?}"
    );
    assert_eq!(low.outcome.as_deref(), Some("answered"));
    assert!(
        low.duration_ms.is_some_and(|d| d >= 40),
        "answered, then BYE after the 50 ms pause: {low:?}"
    );
    let review = by_calling("+15550102")[0];
    assert_eq!(
        review.record.target.as_deref(),
        Some("sip:review@127.0.0.1")
    );
    assert_eq!(
        review.record.rules.first().map(|r| r.code.as_str()),
        Some("STIR_FAILED")
    );
    assert_eq!(
        review.record.rules.first().and_then(|r| r.text.as_deref()),
        Some("The caller ID signature failed: the \"number\" may be faked.")
    );
    // The audit names the unchecked attestation a claim.
    let unchecked = by_calling("+15550104")[0].record.verification.value();
    assert_eq!(
        (&unchecked["status"], &unchecked["claimed_attest"]),
        (&"no-validation".into(), &"A".into()),
        "{unchecked}"
    );
    assert!(unchecked.get("attest").is_none(), "{unchecked}");
    let dno = by_calling("+18005550100")[0];
    assert_eq!(
        (
            dno.record.action.as_str(),
            dno.outcome.as_deref(),
            dno.status
        ),
        ("reject", Some("rejected"), Some(608))
    );
    assert!(dno
        .record
        .invite
        .as_deref()
        .is_some_and(|i| i.starts_with("INVITE sip:+15550100@")));
    assert_eq!(by_calling("+15550103").len(), 4);

    // What-if: the same policy replayed over the audit decides the same
    // (signals, lists and velocity rebuilt from the recorded calls)...
    let db = dir.join("audit-test-1.db");
    let same = replay(&dir.join("policy-test-1.toml"), &db);
    assert_eq!(same.0, Some(0), "{}", same.1);
    assert!(
        same.1
            .contains("8 calls replayed under test-1, 8 compared, 0 would be decided differently"),
        "{}",
        same.1
    );
    // ...and a stricter candidate shows exactly the calls it would change.
    let strict = dir.join("policy-strict.toml");
    std::fs::write(
        &strict,
        POLICY.replace("VERSION", "strict-2").replace(
            "weight = 70\nwhen = { stir = \"failed\" }",
            "weight = 95\nwhen = { stir = \"failed\" }",
        ),
    )
    .expect("write candidate");
    let (code, text) = replay(&strict, &db);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("high/review [STIR_FAILED]  ->  critical/reject [STIR_FAILED]"),
        "{text}"
    );
    assert!(
        text.contains("1 would be decided differently")
            && text.contains("1  high/review -> critical/reject"),
        "{text}"
    );
}

fn replay(policy: &std::path::Path, db: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("replay")
        .arg("--policy")
        .arg(policy)
        .arg("--db")
        .arg(db)
        .output()
        .expect("run callgate replay");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_policy_reload_under_load_loses_no_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY.replace("VERSION", "load-1")).expect("policy");
    let db = dir.path().join("audit.db");
    let pbx_port = free_port();
    let calls: u32 = 300;
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, calls, "u1", &[]);
    let ports = Ports::new();
    let cg = Callgate::start(
        ports,
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port}")],
            &["sip:127.0.0.1:9".to_owned()],
            &format!(
                "[risk]\npolicy = \"{}\"\n\n[audit]\npath = \"{}\"\n",
                policy.display(),
                db.display()
            ),
        ),
    );
    let trunk = cg.trunk();
    let uac = std::thread::spawn(move || {
        Sipp::uac(&scenario("uac-basic.xml"), &trunk, calls, 100, "u1", &[])
    });
    // Reload a new policy version each time another 60 calls were decided
    // and forwarded, while calls keep arriving (the counter is the event).
    let decided = "callgate_sip_requests_total{side=\"pbx\",direction=\"out\",method=\"INVITE\"}";
    for (i, at) in [60.0, 120.0, 180.0, 240.0].into_iter().enumerate() {
        common::await_metric(&cg, decided, at);
        std::fs::write(
            &policy,
            POLICY.replace("VERSION", &format!("load-{}", i + 2)),
        )
        .expect("policy");
        assert_eq!(cg.admin("POST", "/reload"), (200, "reloaded\n".to_owned()));
    }
    let uac = uac.join().expect("uac thread");
    uac.assert_all_ok(u64::from(calls), "carrier UAC across reloads");
    uas.finish()
        .assert_all_ok(u64::from(calls), "PBX UAS across reloads");
    assert_eq!(cg.metric("callgate_config_reloads_total"), 4.0);
    assert_eq!(
        cg.metric("callgate_policy_info{version=\"load-5\",shadow=\"\"}"),
        1.0
    );

    // Every call was decided under exactly one version, recorded on its
    // audit record, and each version decided some calls.
    let mut cg = cg;
    let status = cg.signal_and_wait("TERM", std::time::Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let rows = callgate::audit::decisions(&db, None, None).expect("audit db");
    assert_eq!(rows.len(), calls as usize);
    let versions: Vec<u32> = rows
        .iter()
        .map(|r| {
            r.record
                .policy_version
                .strip_prefix("load-")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("version {:?}", r.record.policy_version))
        })
        .collect();
    let mut used = versions.clone();
    used.sort_unstable();
    used.dedup();
    assert_eq!(used, vec![1, 2, 3, 4, 5], "every version decided calls");
    assert_eq!(versions.first(), Some(&1));
    assert_eq!(versions.last(), Some(&5));
}
