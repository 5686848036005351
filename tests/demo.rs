//! `callgate demo` (the README's first command) runs on a fresh machine and
//! every call in it has its expected outcome, risk tags and routing
//! included; its signed calls are signed with the demo's own PKI and
//! verified with a real x5u fetch (issue 16: the tour).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
        // Who signed, from the certificate's subject and SPC.
        "low, score 0, verstat TN-Validation-Passed-A, signed by Demo Telecom (SPC DEMO)",
        "reasons ATTEST_B, verstat TN-Validation-Passed-B, signed by Demo Telecom (SPC DEMO)",
        "reasons ATTEST_C, verstat TN-Validation-Passed-C, signed by Demo Telecom (SPC DEMO)",
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

/// `callgate demo --keep` prints the console's URL and a token before the
/// tour, serves the console during it and after it, and stops on Ctrl-C
/// (SIGINT): the page answers, the token logs in (`/v1/whoami`: ops), and
/// the tour's decisions are there for it (`/v1/calls` answers with the
/// token).
#[test]
fn demo_keep_serves_the_console_until_interrupted() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["demo", "--keep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run demo --keep");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut console: Option<(u16, String)> = None;
    let mut toured = false;
    while !toured {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("demo --keep: no tour within 60 s"));
        if let Some(rest) = line.trim().strip_prefix("console: http://127.0.0.1:") {
            let port = rest.split('/').next().and_then(|p| p.parse().ok());
            let token = rest
                .split("token: ")
                .nth(1)
                .and_then(|t| t.split(';').next())
                .map(str::to_owned);
            console = port.zip(token);
        }
        toured = line.contains("calls as expected");
    }
    let (port, token) = console.expect("the console's URL and token printed before the tour");
    let (status, page) = common::http(("127.0.0.1", port), "GET", "/console");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("callgate"), "{page}");
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let (status, who) = common::http_with(("127.0.0.1", port), "GET", "/v1/whoami", &auth);
    assert_eq!(status, 200, "{who}");
    assert!(who.contains("ops"), "{who}");
    let (status, _) = common::http_with(("127.0.0.1", port), "GET", "/v1/calls", &auth);
    assert_eq!(status, 200);
    // Still running after the tour; Ctrl-C stops it.
    assert!(child.try_wait().ok().flatten().is_none(), "kept running");
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let stop = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "exit after Ctrl-C: {status}");
            break;
        }
        assert!(Instant::now() < stop, "demo --keep did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}
