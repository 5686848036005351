//! The admin API and the secrets callgate holds (issue 13): state changes
//! need the bearer token, a `Host` that is not the listener is refused
//! (DNS rebinding), a cross-site browser request is refused (CSRF), and a
//! private key or token file that group or others can read is refused at
//! load with the key, the path and the fix. Real binary, loopback only.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{await_metric, config, http_with, Callgate, Ports, ADMIN_TOKEN};

fn callgate() -> Callgate {
    let ports = Ports::new();
    Callgate::start(
        ports,
        &config(
            ports,
            &["sip:127.0.0.1:9".to_owned()],
            &["sip:127.0.0.1:9".to_owned()],
            "",
        ),
    )
}

/// An admin request with exactly these headers (Host added unless given).
fn request(cg: &Callgate, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    http_with(("127.0.0.1", cg.ports.admin), method, path, headers)
}

#[test]
fn reload_needs_the_admin_token() {
    let cg = callgate();
    assert_eq!(request(&cg, "POST", "/reload", &[]).0, 401, "no token");
    let wrong = format!("Bearer {}x", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
    assert_eq!(
        request(&cg, "POST", "/reload", &[("Authorization", &wrong)]).0,
        401,
        "a token of the right length but wrong"
    );
    assert_eq!(
        cg.metric("callgate_config_reloads_total"),
        0.0,
        "nothing reloaded"
    );
    await_metric(&cg, "callgate_admin_refused_total{reason=\"token\"}", 2.0);
    let right = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(
        request(&cg, "POST", "/reload", &[("Authorization", &right)]),
        (200, "reloaded\n".to_owned())
    );
    assert_eq!(cg.metric("callgate_config_reloads_total"), 1.0);
    // Reads stay open by default (monitoring needs no secret).
    assert_eq!(request(&cg, "GET", "/metrics", &[]).0, 200);
}

#[test]
fn without_a_token_file_nothing_changes_state() {
    let ports = Ports::new();
    let text = config(
        ports,
        &["sip:127.0.0.1:9".to_owned()],
        &["sip:127.0.0.1:9".to_owned()],
        "",
    );
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("token_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let cg = Callgate::start(ports, &text);
    let right = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(
        request(&cg, "POST", "/reload", &[("Authorization", &right)]).0,
        403
    );
    assert_eq!(request(&cg, "POST", "/reload", &[]).0, 403);
    assert_eq!(cg.metric("callgate_config_reloads_total"), 0.0);
    assert_eq!(
        cg.metric("callgate_admin_refused_total{reason=\"no_token\"}"),
        2.0
    );
}

#[test]
fn a_host_that_is_not_the_listener_is_refused() {
    let cg = callgate();
    let right = format!("Bearer {ADMIN_TOKEN}");
    let port = cg.ports.admin;
    // DNS rebinding: the attacker's name now resolves to 127.0.0.1.
    for host in [
        format!("rebind.attacker.example:{port}"),
        "10.1.2.3".to_owned(),
        String::new(),
    ] {
        assert_eq!(
            request(&cg, "GET", "/metrics", &[("Host", &host)]).0,
            403,
            "Host {host:?}"
        );
        assert_eq!(
            request(
                &cg,
                "POST",
                "/reload",
                &[("Host", &host), ("Authorization", &right)]
            )
            .0,
            403,
            "Host {host:?} with the token"
        );
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "127.0.0.1".to_owned(),
    ] {
        assert_eq!(
            request(&cg, "GET", "/healthz", &[("Host", &host)]).0,
            200,
            "Host {host:?}"
        );
    }
    assert_eq!(cg.metric("callgate_config_reloads_total"), 0.0);
    assert_eq!(
        cg.metric("callgate_admin_refused_total{reason=\"host\"}"),
        6.0
    );
}

#[test]
fn a_cross_site_browser_request_is_refused() {
    let cg = callgate();
    let right = format!("Bearer {ADMIN_TOKEN}");
    // A page on another site POSTs to the loopback API (the browser adds
    // Origin; a token leaked to it would not help).
    let evil = [
        ("Origin", "https://attacker.example"),
        ("Authorization", right.as_str()),
    ];
    assert_eq!(request(&cg, "POST", "/reload", &evil).0, 403);
    assert_eq!(
        request(&cg, "GET", "/metrics", &[("Origin", "null")]).0,
        403
    );
    assert_eq!(
        request(&cg, "GET", "/metrics", &[("Sec-Fetch-Site", "cross-site")]).0,
        403
    );
    assert_eq!(cg.metric("callgate_config_reloads_total"), 0.0);
    assert_eq!(
        cg.metric("callgate_admin_refused_total{reason=\"origin\"}"),
        3.0
    );
}

/// `callgate check-config` on `text` written to `dir`: (exit code, stderr).
fn check_config(dir: &Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("callgate.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn with_mode(dir: &Path, name: &str, data: &[u8], mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

#[test]
fn a_tls_key_others_can_read_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = std::fs::read(common::repo().join("sip-config/tls/callgate-demo.key")).expect("key");
    let ports = Ports::new();
    let base = config(
        ports,
        &["sip:127.0.0.1:9".to_owned()],
        &["sip:127.0.0.1:9".to_owned()],
        "",
    );
    let private = common::secrets().key.display().to_string();
    for mode in [0o644, 0o640, 0o604] {
        let key = with_mode(dir.path(), "tls.key", &demo, mode);
        let (code, err) = check_config(
            dir.path(),
            &base.replace(&private, &key.display().to_string()),
        );
        assert_eq!(code, Some(2), "mode {mode:o} accepted: {err}");
        assert!(err.contains("trunk.tls_key"), "names the key: {err}");
        assert!(
            err.contains(&key.display().to_string()),
            "names the path: {err}"
        );
        assert!(err.contains("chmod 600"), "says the fix: {err}");
    }
    let key = with_mode(dir.path(), "tls.key", &demo, 0o600);
    let (code, err) = check_config(
        dir.path(),
        &base.replace(&private, &key.display().to_string()),
    );
    assert_eq!(code, Some(0), "0600 refused: {err}");
}

#[test]
fn a_signing_key_or_token_others_can_read_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports::new();
    let pem = rcgen::KeyPair::generate().expect("key").serialize_pem();
    let base = config(
        ports,
        &["sip:127.0.0.1:9".to_owned()],
        &["sip:127.0.0.1:9".to_owned()],
        "",
    );
    for (mode, ok) in [(0o644, false), (0o600, true), (0o400, true)] {
        let key = with_mode(dir.path(), "sign.pem", pem.as_bytes(), mode);
        let stir = format!(
            "[stir]\nsign = true\nsign_key = \"{}\"\nsign_x5u = \"https://cert.example/sti.pem\"\n",
            key.display()
        );
        let (code, err) = check_config(dir.path(), &format!("{base}\n{stir}"));
        if ok {
            assert_eq!(code, Some(0), "mode {mode:o} refused: {err}");
        } else {
            assert_eq!(code, Some(2), "mode {mode:o} accepted: {err}");
            assert!(
                err.contains("stir.sign_key") && err.contains("chmod 600"),
                "{err}"
            );
        }
        // The offline signer refuses it too.
        let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args([
                "sign", "--orig", "15550199", "--dest", "15550100", "--attest", "A",
            ])
            .args(["--x5u", "https://cert.example/sti.pem", "--key"])
            .arg(&key)
            .output()
            .expect("run sign");
        assert_eq!(
            out.status.success(),
            ok,
            "sign with mode {mode:o}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = with_mode(dir.path(), "admin.token", ADMIN_TOKEN.as_bytes(), 0o644);
    let text = base.replace(
        &common::secrets().token_file.display().to_string(),
        &token.display().to_string(),
    );
    let (code, err) = check_config(dir.path(), &text);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("admin.token_file") && err.contains("chmod 600"),
        "{err}"
    );
    let short = with_mode(dir.path(), "short.token", b"secret\n", 0o600);
    let text = base.replace(
        &common::secrets().token_file.display().to_string(),
        &short.display().to_string(),
    );
    let (code, err) = check_config(dir.path(), &text);
    assert_eq!(code, Some(2), "a 6-character token accepted: {err}");
    assert!(err.contains("admin.token_file"), "{err}");
}

#[test]
fn running_on_the_public_demo_key_is_logged_loudly() {
    let cg = callgate();
    assert!(
        cg.log().contains("PUBLIC demo key"),
        "no warning in the log:\n{}",
        cg.log()
    );
}
