//! libsrtp (through pylibsrtp, `test-calls/srtp/libsrtp.py`) as the
//! independent SRTP peer of the tests.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine as _;
use callgate::media::srtp::{CryptoSuite, MasterKey};

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Runs libsrtp's `op` over `packets`; `None` where libsrtp refused one.
pub fn libsrtp(
    key: &MasterKey,
    suite: CryptoSuite,
    op: &str,
    packets: &[Vec<u8>],
) -> Vec<Option<Vec<u8>>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/test-calls/srtp/libsrtp.py");
    let req = serde_json::json!({
        "key": base64::engine::general_purpose::STANDARD.encode(key.concatenated()),
        "suite": suite.name(),
        "op": op,
        "packets": packets.iter().map(|p| hex(p)).collect::<Vec<_>>(),
    });
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (CI installs pylibsrtp)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(req.to_string().as_bytes())
        .expect("write request");
    let out = child.wait_with_output().expect("libsrtp.py");
    assert!(
        out.status.success(),
        "libsrtp.py failed (is pylibsrtp installed?)"
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    reply["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| p.as_str().map(unhex))
        .collect()
}
