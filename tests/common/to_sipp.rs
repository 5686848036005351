//! `callgate trace to-sipp` as a tester runs it: convert a capture, then
//! run the generated pair through a callgate (tests/trace_to_sipp.rs on
//! generated captures, tests/trace_live.rs on live ones).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use super::{Sipp, SippResult};

/// Runs `callgate trace to-sipp CAPTURE --out OUT EXTRA…`.
pub fn convert(capture: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["trace", "to-sipp"])
        .arg(capture)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("run callgate: {e}"))
}

/// Converts like [`convert`] and fails the test when that fails.
pub fn converted(capture: &Path, out: &Path, extra: &[&str]) {
    let r = convert(capture, out, extra);
    assert!(
        r.status.success(),
        "to-sipp failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
}

/// Runs the pair written in `out` through a callgate: the UAS (with
/// `uas_extra` sipp options and `-trace_msg`) on `pbx_port`, where the
/// callgate sends calls, then the UAC against `trunk`, both over
/// `sipp_t`; returns what the carrier and the PBX sides saw, unchecked.
pub fn run_pair(
    out: &Path,
    trunk: &str,
    pbx_port: u16,
    sipp_t: &str,
    uas_extra: &[&str],
) -> (SippResult, SippResult) {
    let uac = out.join("uac.xml").display().to_string();
    let uas = out.join("uas.xml").display().to_string();
    let mut uas_args = vec!["-trace_msg"];
    uas_args.extend_from_slice(uas_extra);
    let pbx = Sipp::uas(&uas, pbx_port, 1, sipp_t, &uas_args);
    let carrier = Sipp::uac(&uac, trunk, 1, 1, sipp_t, &[]);
    (carrier, pbx.finish())
}
