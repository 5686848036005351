//! The README's first steps from an installed binary: `cargo install
//! --path .` into a temporary root, then `callgate demo` and `callgate
//! run` with no configuration, in an empty directory outside the checkout
//! (issue 15: the demo used to need `sip-config/tls/` beside it).
//!
//! Installed with `--debug` into this build's target directory, so cargo
//! reuses the binary the tests already built (about 2 s warm instead of a
//! release build); what is installed and how it runs is the same.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::repo;

/// `cargo install --path <repo> --root <root>`; returns the binary.
fn cargo_install(root: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let out = Command::new(env!("CARGO"))
        .args(["install", "--locked", "--offline", "--debug", "--path"])
        .arg(repo())
        .arg("--root")
        .arg(root)
        .arg("--target-dir")
        .arg(target)
        .output()
        .expect("run cargo install");
    assert!(
        out.status.success(),
        "cargo install failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = root.join("bin/callgate");
    assert!(bin.is_file(), "no {}", bin.display());
    bin
}

#[test]
fn an_installed_binary_runs_demo_and_run_in_an_empty_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    let bin = cargo_install(root.path());
    let empty = tempfile::tempdir().expect("tempdir");
    let tmp = tempfile::tempdir().expect("tempdir");

    let out = Command::new(&bin)
        .arg("demo")
        .current_dir(empty.path())
        .env_remove("CARGO_MANIFEST_DIR")
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "installed demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("14 of 14 calls as expected"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // Its scratch directory (policy, lists, trust anchor) is gone, and
    // nothing was written beside the working directory.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .flatten()
        .collect();
    assert!(left.is_empty(), "demo left {left:?} in TMPDIR");
    let beside: Vec<_> = std::fs::read_dir(empty.path())
        .expect("cwd")
        .flatten()
        .collect();
    assert!(
        beside.is_empty(),
        "demo wrote {beside:?} in its working directory"
    );

    // `run` without --config: the embedded configuration. Its listeners
    // are the fixed loopback ports of the example (5060, 5062, 9060);
    // on a host where they are taken it fails to bind, which says so.
    let mut child = Command::new(&bin)
        .arg("run")
        .current_dir(empty.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.starts_with("callgate ready") => break Some(line),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    match ready {
        Some(line) => assert!(line.contains("trunk udp=127.0.0.1:5060"), "{line}"),
        None => assert!(
            stderr.contains("Address already in use"),
            "run on the embedded configuration neither became ready nor failed to bind:\n{stderr}"
        ),
    }
    assert!(
        !stderr.contains("not found"),
        "run on the embedded configuration looked for a file:\n{stderr}"
    );
}
