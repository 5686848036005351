//! `callgate demo` (the README's first command) runs on a fresh machine and
//! every call in it has its expected outcome, risk tags and routing
//! included; its signed calls are signed with the demo's own PKI and
//! verified with a real x5u fetch (issue 16: the tour).

use std::process::Command;

#[test]
fn demo_places_every_call_with_its_expected_outcome() {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("demo")
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("14 of 14 calls as expected"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let replay = stdout
        .lines()
        .find(|l| l.contains("PASSporT replayed"))
        .unwrap_or_default();
    assert!(
        replay.contains("608 from callgate's risk policy"),
        "a replayed PASSporT is refused: {replay:?}"
    );
    for line in [
        "fails over",
        "486 from the PBX",
        "200 to CANCEL, 487 to INVITE",
        "483 from callgate",
        "400 from callgate",
        "agent's outbound call",
        "608 from callgate's risk policy",
        "the PBX saw: low, score 15, reasons STIR_NONE",
        "reasons STIR_NONE,OWN_NUMBER_SPOOF, step-up for credential-reset",
        "routed to the review queue",
        // The signed tour: the demo's own PKI, fetched over HTTPS.
        "low, score 0, verstat TN-Validation-Passed-A",
        "reasons ATTEST_B, verstat TN-Validation-Passed-B",
        "reasons ATTEST_C, verstat TN-Validation-Passed-C",
        "BURST_ANI_10M, step-up for credential-reset,mfa-change",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}

/// An installed binary runs the demo on its embedded defaults in any
/// directory, with no file of the checkout beside it (issue 15: it used to
/// need `sip-config/tls/` under the working directory).
#[test]
fn an_installed_binary_runs_the_demo_from_an_empty_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("callgate");
    std::fs::copy(env!("CARGO_BIN_EXE_callgate"), &bin).expect("install the binary");
    let out = Command::new(&bin)
        .arg("demo")
        .current_dir(dir.path())
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed outside the checkout:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("14 of 14 calls as expected"), "{stdout}");
}
