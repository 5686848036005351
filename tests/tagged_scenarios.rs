//! The suite's own tag-checking and RTP-carrying sipp scenarios through
//! callgate: `uas-risk-tags.xml` checks the `X-Callgate-Risk` level, the
//! `X-Callgate-Reasons` codes and `verstat` of each INVITE the PBX gets
//! from the risk scenarios (`uac-risk.xml`, `uac-csv.xml`) against its own
//! CSV, and fails the call when one differs; `uac-rtp.xml` plays a G.711
//! recording through callgate's relay to `uas-rtp.xml`, which echoes it
//! (`-rtp_echo`). Loopback only, bounded by sipp's `-timeout`.

mod common;

use callgate::stir::sign::{identity_header, SignRequest};
use common::pki::{https_server, pki, Pki};
use common::{await_metric, config, free_port, free_ports, scenario, Callgate, Ports, Sipp};

use common::calls::ALLOW_OR_REVIEW_POLICY as POLICY;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fresh PASSporT for `orig` (its own `origid`, so no two calls of the
/// test share one: that would be a replay).
fn token(pki: &Pki, x5u: &str, orig: &str, n: u32) -> String {
    let origid = format!("123e4567-e89b-12d3-a456-4266554400{n:02}");
    let h = identity_header(
        &pki.signing,
        &SignRequest {
            orig,
            dest: "+15550100",
            attest: 'A',
            origid: &origid,
            x5u,
            iat: now(),
        },
    )
    .unwrap_or_else(|e| panic!("sign: {e}"));
    h.split(';').next().unwrap_or_default().to_owned()
}

/// A sipp CSV file (`SEQUENTIAL`, one line per call) in `dir`.
fn csv(dir: &std::path::Path, name: &str, lines: &[String]) -> String {
    let path = dir.join(name);
    let mut text = String::from("SEQUENTIAL\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{name}: {e}"));
    path.display().to_string()
}

/// Four calls of a risk scenario, from `n`'s fresh PASSporTs: signed and
/// allow-listed (low), tampered (failed verification: high, reviewed),
/// unsigned (low, STIR_NONE), signed by a caller no rule names (low, no
/// reasons); and the tags the PBX must see on each.
fn calls(pki: &Pki, x5u: &str, n: u32) -> (Vec<String>, Vec<String>) {
    let good = token(pki, x5u, "+15550101", n);
    let tampered = token(pki, x5u, "+15550102", n + 1).replacen('.', ".e", 1);
    let plain = token(pki, x5u, "+15550104", n + 2);
    let callers = vec![
        format!("+15550101;+15550100;Identity: {good};{x5u}"),
        format!("+15550102;+15550100;Identity: {tampered};{x5u}"),
        "+15550103;+15550100;X-No-Identity: unsigned;none".to_owned(),
        format!("+15550104;+15550100;Identity: {plain};{x5u}"),
    ];
    let expected = vec![
        "low;ALLOWLISTED;TN-Validation-Passed-A".to_owned(),
        "high;STIR_FAILED;TN-Validation-Failed".to_owned(),
        "low;STIR_NONE;No-TN-Validation".to_owned(),
        "low;;TN-Validation-Passed-A".to_owned(),
    ];
    (callers, expected)
}

/// Runs `uac` (a risk scenario) with `callers` through `cg` to a
/// `uas-risk-tags.xml` PBX on `pbx_port` expecting `expected`, one call
/// at a time so they reach the PBX in the CSV's order; returns the PBX's
/// result after checking the carrier's.
fn run(
    cg: &Callgate,
    dir: &std::path::Path,
    uac: &str,
    pbx_port: u16,
    callers: &[String],
    expected: &[String],
) -> common::SippResult {
    let want = csv(dir, &format!("{uac}-expected.csv"), expected);
    let uas = Sipp::uas(
        &scenario("uas-risk-tags.xml"),
        pbx_port,
        expected.len() as u32,
        "u1",
        &["-inf", &want, "-trace_msg"],
    );
    let calls = csv(dir, &format!("{uac}-calls.csv"), callers);
    let carrier = Sipp::uac(
        &scenario(uac),
        &cg.trunk(),
        callers.len() as u32,
        10,
        "u1",
        &["-inf", &calls, "-l", "1"],
    );
    carrier.assert_all_ok(callers.len() as u64, uac);
    uas.finish()
}

#[test]
fn the_tag_checking_uas_passes_right_tags_and_fails_a_wrong_one() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let x5u = format!("https://127.0.0.1:{port}/good.pem");
    let dir = pki._dir.path();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap_or_else(|e| panic!("{e}"));
    let pbx_port = free_port();
    let ports = Ports::new();
    let cg = Callgate::start(
        ports,
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port}")],
            &["sip:127.0.0.1:9".to_owned()],
            &format!(
                "[stir]\nenabled = true\ntrust_dir = \"{}\"\nx5u_ca = [\"{}\"]\nallow_private_x5u = true\n\n[risk]\npolicy = \"{}\"\n",
                pki.trust_dir.display(),
                pki.web_ca.display(),
                policy.display()
            ),
        ),
    );

    for (n, uac) in [(10, "uac-risk.xml"), (20, "uac-csv.xml")] {
        let (callers, expected) = calls(&pki, &x5u, n);
        let pbx = run(&cg, dir, uac, pbx_port, &callers, &expected);
        pbx.assert_all_ok(4, &format!("uas-risk-tags.xml behind {uac}"));
        // The checks ran: each call's INVITE carried the tags compared.
        let invites = pbx.received_requests("INVITE");
        assert_eq!(invites.len(), 4, "{}", pbx.messages);
        assert!(
            !invites[3].contains("X-Callgate-Reasons:"),
            "{}",
            invites[3]
        );
        assert!(
            invites[1].contains("X-Callgate-Reasons: STIR_FAILED"),
            "{}",
            invites[1]
        );
    }

    // One wrong expectation (the failed call is high, not medium): that
    // call fails at the PBX, which exits 1 and names the comparison.
    let (callers, mut expected) = calls(&pki, &x5u, 30);
    expected[1] = "medium;STIR_FAILED;TN-Validation-Failed".to_owned();
    let pbx = run(&cg, dir, "uac-risk.xml", pbx_port, &callers, &expected);
    assert_eq!(pbx.code, Some(1), "{}", pbx.errors);
    assert_eq!((pbx.successful, pbx.failed), (3, 1), "{}", pbx.errors);
    assert!(pbx.errors.contains("strcmp"), "{}", pbx.errors);
    // And a wrong reason code, the same.
    let (callers, mut expected) = calls(&pki, &x5u, 40);
    expected[2] = "low;;No-TN-Validation".to_owned();
    let pbx = run(&cg, dir, "uac-csv.xml", pbx_port, &callers, &expected);
    assert_eq!((pbx.successful, pbx.failed), (3, 1), "{}", pbx.errors);
}

#[test]
fn the_rtp_pair_carries_audio_through_the_relay_both_ways() {
    let pbx_port = free_port();
    let ports = Ports::new();
    let relay = free_ports(20);
    let cg = Callgate::start(
        ports,
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port}")],
            &["sip:127.0.0.1:9".to_owned()],
            &format!(
                "[media]\nenabled = true\nport_min = {relay}\nport_max = {}\n",
                relay + 19
            ),
        ),
    );
    let uas = Sipp::uas(
        &scenario("uas-rtp.xml"),
        pbx_port,
        1,
        "u1",
        &["-mp", &free_ports(4).to_string(), "-rtp_echo"],
    );
    let carrier = Sipp::uac(
        &scenario("uac-rtp.xml"),
        &cg.trunk(),
        1,
        1,
        "u1",
        &["-mp", &free_ports(4).to_string()],
    );
    carrier.assert_all_ok(1, "uac-rtp.xml");
    uas.finish().assert_all_ok(1, "uas-rtp.xml (-rtp_echo)");
    // The recording's 236 packets went caller → relay → PBX, and the
    // PBX's echo of each came back PBX → relay → caller.
    await_metric(&cg, "callgate_media_packets_total", 472.0);
}
