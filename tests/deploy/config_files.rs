//! A configuration's relative paths resolve against its own directory, and
//! its string values take `${NAME}` from the environment.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use callgate::config::Config;

use crate::common::repo;

/// `callgate check-config FILE` run from `cwd`, with `env` added.
fn check_config(file: &Path, cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callgate"));
    cmd.args(["check-config"]).arg(file).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run check-config")
}

/// A configuration directory laid out as on a host: `callgate.toml` with
/// its TLS pair in `tls/`, the admin token and the policy beside it, all
/// named by relative paths.
fn config_dir(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("tls")).expect("mkdir tls");
    std::fs::create_dir_all(d.join("lists")).expect("mkdir lists");
    let tls = repo().join("sip-config/tls");
    std::fs::copy(tls.join("callgate-demo.crt"), d.join("tls/c.pem")).expect("cert");
    std::fs::copy(tls.join("callgate-demo.key"), d.join("tls/k.pem")).expect("key");
    std::fs::write(d.join("token"), crate::common::ADMIN_TOKEN).expect("token");
    for f in ["tls/k.pem", "token"] {
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600");
    }
    std::fs::copy(repo().join("sip-config/policy.toml"), d.join("policy.toml")).expect("policy");
    for l in ["allow.txt", "dno.txt", "fraud.txt"] {
        std::fs::copy(
            repo().join("sip-config/lists").join(l),
            d.join("lists").join(l),
        )
        .expect("list");
    }
    let text = format!(
        "[trunk]\nudp = \"127.0.0.1:0\"\ntls = \"127.0.0.1:0\"\ntls_cert = \"tls/c.pem\"\n\
         tls_key = \"tls/k.pem\"\nallow = [\"127.0.0.0/8\"]\ntargets = [\"sip:127.0.0.1:5090\"]\n\
         [pbx]\nudp = \"127.0.0.1:0\"\nallow = [\"127.0.0.0/8\"]\ntargets = [\"sip:127.0.0.1:5080\"]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n\
         [risk]\npolicy = \"policy.toml\"\n\
         [audit]\npath = \"state/audit.db\"\n{extra}"
    );
    std::fs::write(d.join("callgate.toml"), text).expect("config");
    dir
}

/// Issue 15: `tls/k.pem` in `X/callgate.toml` means `X/tls/k.pem`; it used
/// to mean `tls/k.pem` under the working directory, else under X's parent,
/// and `[audit] path` was relative to the working directory.
#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let dir = config_dir("");
    let d = dir.path();
    let cfg = Config::load(&d.join("callgate.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.trunk.tls_cert.as_deref(),
        Some(d.join("tls/c.pem").as_path())
    );
    assert_eq!(
        cfg.trunk.tls_key.as_deref(),
        Some(d.join("tls/k.pem").as_path())
    );
    assert!(cfg.admin.token.is_some(), "token read from {}", d.display());
    assert!(
        cfg.risk.policy.is_some(),
        "policy read from {}",
        d.display()
    );
    let audit = cfg.audit.expect("audit configured");
    assert_eq!(audit.path, d.join("state/audit.db"));

    // The real binary, from an unrelated working directory.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let out = check_config(&d.join("callgate.toml"), elsewhere.path(), &[]);
    assert!(
        out.status.success(),
        "check-config from another directory: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A missing file is reported at the path it was looked for, under the
/// config's directory, naming the key.
#[test]
fn a_missing_relative_file_names_the_key_and_where_it_was_looked_for() {
    let dir = config_dir("");
    let d = dir.path();
    std::fs::remove_file(d.join("tls/c.pem")).expect("rm");
    let err = Config::load(&d.join("callgate.toml")).expect_err("cert missing");
    let want = format!(
        "trunk.tls_cert: file {} not found",
        d.join("tls/c.pem").display()
    );
    assert_eq!(err.to_string(), want);
}

/// `${NAME}` and `${NAME:-default}` take values from the environment; an
/// unset variable without a default is refused naming the key and the
/// variable.
#[test]
fn string_values_take_environment_variables() {
    let dir = config_dir("");
    let d = dir.path();
    let file = d.join("callgate.toml");
    let text = std::fs::read_to_string(&file)
        .expect("read")
        .replace(
            "[trunk]\n",
            "[trunk]\nadvertise = \"${CALLGATE_TEST_NODE_IP}\"\n",
        )
        .replace("\"tls/k.pem\"", "\"${CALLGATE_TEST_KEYS}/k.pem\"")
        .replace(
            "\"state/audit.db\"",
            "\"${CALLGATE_TEST_STATE:-state}/audit.db\"",
        );
    std::fs::write(&file, text).expect("write");
    let keys = d.join("tls").display().to_string();
    let cwd = tempfile::tempdir().expect("tempdir");

    let ok = check_config(
        &file,
        cwd.path(),
        &[
            ("CALLGATE_TEST_NODE_IP", "192.0.2.10"),
            ("CALLGATE_TEST_KEYS", &keys),
        ],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let empty = check_config(
        &file,
        cwd.path(),
        &[("CALLGATE_TEST_NODE_IP", ""), ("CALLGATE_TEST_KEYS", &keys)],
    );
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert_eq!(empty.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("trunk.advertise"), "{stderr}");

    let unset = check_config(&file, cwd.path(), &[("CALLGATE_TEST_KEYS", &keys)]);
    let stderr = String::from_utf8_lossy(&unset.stderr);
    assert_eq!(unset.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("trunk.advertise: environment variable CALLGATE_TEST_NODE_IP is not set"),
        "{stderr}"
    );
}
