//! The systemd unit (`deploy/callgate.service`) and what it relies on:
//! sd_notify readiness after the listeners are bound, RELOADING=1/READY=1
//! around a reload, and `callgate reload --pid` (the unit's ExecReload=)
//! failing when the reload is refused, so `systemctl reload` does.
//!
//! systemd is not PID 1 on this machine (nor in CI), so the unit cannot be
//! booted here: it is checked with `systemd-analyze verify` and
//! `systemd-analyze security --offline=yes`, the protocol it depends on is
//! exercised against the real binary with a real notify socket, and its
//! seeding of the lists the console edits (an `ExecStartPre=` shell line)
//! is run as systemd would run it, before and after a restart.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, Ports};

/// The unit as shipped, with the binary's path pointed at the one built
/// here (verify checks that ExecStart= and friends are executable).
fn unit_for_this_build(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(common::repo().join("deploy/callgate.service"))
        .expect("read deploy/callgate.service");
    let path = dir.join("callgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/callgate", env!("CARGO_BIN_EXE_callgate")),
    )
    .expect("write unit");
    path
}

fn systemd_analyze(dir: &Path, args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("systemd-analyze (Debian package systemd; test-calls/run-tests.sh installs it)")
}

/// `verify` prints a warning for every directive it does not understand
/// (a typo, `Type=notify-reload` before systemd 253, an unknown system
/// call group) and still exits 0, so its output must be empty.
#[test]
fn the_unit_passes_systemd_analyze_verify_and_security() {
    let dir = tempfile::tempdir().expect("tempdir");
    unit_for_this_build(dir.path());
    let out = systemd_analyze(dir.path(), &["verify", "./callgate.service"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "verify:\n{said}"
    );

    // The exposure score (0 best, 10 worst; --threshold counts tenths)
    // must stay at 2.0 or below: dropping hardening directives raises it
    // past that.
    let out = systemd_analyze(
        dir.path(),
        &[
            "security",
            "--offline=yes",
            "--threshold=20",
            "./callgate.service",
        ],
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "security exposure too high:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "Overall exposure level for callgate.service: 1.",
        "✓ SystemCallFilter=~@",
        "✓ UMask=",
    ] {
        assert!(report.contains(line), "missing {line:?} in\n{report}");
    }
}

/// The unit's contract with callgate: what it names must exist.
#[test]
fn the_unit_names_what_callgate_provides() {
    let unit =
        std::fs::read_to_string(common::repo().join("deploy/callgate.service")).expect("read unit");
    for line in [
        "Type=notify\n",
        "ExecReload=/usr/local/bin/callgate reload --pid $MAINPID\n",
        "StateDirectory=callgate\n",
        "RuntimeDirectory=callgate\n",
        "LoadCredential=callgate:/etc/callgate/credentials\n",
        "SystemCallFilter=@system-service\n",
        "UMask=0077\n",
    ] {
        assert!(unit.contains(line), "unit lacks {line:?}");
    }
}

/// A notify socket as systemd binds it, and the datagrams it receives.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket { sock, path }
    }

    /// Datagrams until one contains `want`, for at most 20 s.
    fn until(&self, want: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {want:?} from callgate; got {seen:?}");
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let done = msg.contains(want);
                    seen.push(msg);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!("no {want:?} from callgate ({e}); got {seen:?}"),
            }
        }
    }
}

/// `callgate reload --pid PID` with the runtime directory systemd gives.
fn reload_oneshot(pid: u32, runtime: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["reload", "--pid", &pid.to_string(), "--timeout-secs", "20"])
        .env("RUNTIME_DIRECTORY", runtime)
        .output()
        .expect("run callgate reload")
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sd_notify_ready_after_binding_and_reload_outcomes_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).expect("runtime dir");
    let notify = NotifySocket::bind(dir.path());
    let ports = Ports::new();
    let text = common::config(
        ports,
        &["sip:127.0.0.1:9".to_owned()],
        &["sip:127.0.0.1:9".to_owned()],
        "",
    );
    let config = dir.path().join("callgate.toml");
    std::fs::write(&config, &text).expect("config");
    let log = std::fs::File::create(dir.path().join("log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("RUNTIME_DIRECTORY", &runtime)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn callgate");
    let mut service = Service(child);
    let pid = service.0.id();

    // READY=1, and at that instant (no retry) every listener answers.
    let seen = notify.until("READY=1");
    assert_eq!(seen.len(), 1, "READY=1 must be the first message: {seen:?}");
    assert!(seen[0].contains("STATUS=serving"), "{seen:?}");
    for port in [ports.trunk, ports.pbx, ports.trunk_tls, ports.admin] {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("READY=1 sent before port {port} was bound: {e}"));
    }
    assert_eq!(
        common::http(("127.0.0.1", ports.admin), "GET", "/healthz").0,
        200
    );

    // A valid reload: the one-shot exits 0; RELOADING=1 with the
    // monotonic time, then READY=1.
    std::fs::write(&config, text.replace("drain_secs = 5", "drain_secs = 4")).expect("edit");
    let ok = reload_oneshot(pid, &runtime);
    assert!(
        ok.status.success(),
        "reload of a valid config: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration reloaded"));
    let seen = notify.until("READY=1");
    assert!(
        seen[0].starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{seen:?}"
    );
    let usec: u64 = seen[0]
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(usec > 0, "{seen:?}");
    assert!(
        seen.last()
            .is_some_and(|m| m.contains("STATUS=configuration reloaded")),
        "{seen:?}"
    );

    // A refused reload: the one-shot exits 1 with the reason; callgate
    // goes back to READY=1 with the reason in STATUS=, and still serves.
    std::fs::write(
        &config,
        text.replace("no_response_ms = 500", "no_response_ms = 500\nt1_ms = 0"),
    )
    .expect("break");
    let refused = reload_oneshot(pid, &runtime);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "refused reload: {stderr}");
    assert!(
        stderr.contains("reload refused") && stderr.contains("timers.t1_ms"),
        "{stderr}"
    );
    let seen = notify.until("READY=1");
    assert!(seen[0].starts_with("RELOADING=1"), "{seen:?}");
    let last = seen.last().cloned().unwrap_or_default();
    assert!(
        last.contains("STATUS=reload refused: ") && last.contains("timers.t1_ms"),
        "{seen:?}"
    );
    assert_eq!(
        common::http(("127.0.0.1", ports.admin), "GET", "/healthz").0,
        200
    );

    // SIGTERM: STOPPING=1 before the drain.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    notify.until("STOPPING=1");
    let _ = service.0.wait();
    let _ = std::io::stderr().flush();
}

/// Without a runtime directory the outcome cannot be read: the one-shot
/// says so and exits 2 rather than reporting a success it cannot know.
#[test]
fn the_reload_oneshot_needs_the_runtime_directory() {
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["reload", "--pid", "1"])
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RUNTIME_DIRECTORY"));
}

/// The unit's list seeding (the `ExecStartPre=` that runs `/bin/sh`) as
/// the shell receives it from systemd: the one quoted argument, `$$`
/// turned into `$`. Checked to hold nothing else systemd would rewrite
/// (a lone `$`, a `%` specifier, a backslash escape) and to run before
/// `check-config`, which reads the lists it seeds.
fn seed_script() -> String {
    let unit =
        std::fs::read_to_string(common::repo().join("deploy/callgate.service")).expect("read unit");
    let at = |needle: &str| {
        unit.find(needle)
            .unwrap_or_else(|| panic!("unit lacks {needle:?}"))
    };
    assert!(
        at("ExecStartPre=/bin/sh -ec '") < at("ExecStartPre=/usr/local/bin/callgate check-config"),
        "the lists must be seeded before check-config reads the policy"
    );
    let body = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre=/bin/sh -ec '"))
        .and_then(|rest| rest.strip_suffix('\''))
        .expect("ExecStartPre=/bin/sh -ec '<script>'");
    assert!(
        !body.contains(['\'', '%', '\\']) && !body.replace("$$", "").contains('$'),
        "systemd would rewrite part of {body:?}"
    );
    body.replace("$$", "$")
}

/// Runs the seeding as systemd would before a start: `STATE_DIRECTORY`
/// set (systemd creates it), `/etc/callgate` standing for `etc`.
fn seed(script: &str, etc: &Path, state: &Path) {
    let out = Command::new("/bin/sh")
        .arg("-ec")
        .arg(script.replace("/etc/callgate", &etc.display().to_string()))
        .env("STATE_DIRECTORY", state)
        .output()
        .expect("run /bin/sh");
    assert!(
        out.status.success(),
        "seeding failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Adds `number` to the fraud list through the admin API; the answer.
fn add_to_fraud_list(cg: &common::Callgate, number: &str) -> serde_json::Value {
    let body =
        format!(r#"{{"number": "{number}", "by": "floor-lead", "note": "confirmed fraud"}}"#);
    let bearer = format!("Bearer {}", common::ADMIN_TOKEN);
    let (status, text) = common::http_body(
        ("127.0.0.1", cg.ports.admin),
        "POST",
        "/v1/lists/fraud",
        &[("Authorization", &bearer)],
        &body,
    );
    assert_eq!(status, 200, "POST /v1/lists/fraud: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The console's "add to fraud list" under the shipped unit, whose
/// /etc/callgate is read-only (systemd is not PID 1 here, so the unit's
/// steps are run as it would run them): the installed policy names the
/// fraud and allow lists in the state directory; the unit seeds them from
/// /etc/callgate/lists on the first start; an addition through the admin
/// API is written there (the installed file unchanged); after a restart
/// (seeding again, which must not overwrite, then callgate again) the
/// number is still on the running list.
#[test]
fn a_list_addition_lands_in_the_state_directory_and_survives_a_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let etc = root.path().join("etc/callgate");
    let state = root.path().join("var/lib/callgate");
    // The documented install (docs/operations.md, "systemd").
    std::fs::create_dir_all(etc.join("lists")).expect("etc");
    std::fs::create_dir_all(&state).expect("StateDirectory=");
    let shipped = common::repo().join("sip-config");
    for l in ["allow.txt", "dno.txt", "fraud.txt"] {
        std::fs::copy(shipped.join("lists").join(l), etc.join("lists").join(l)).expect("list");
    }
    // The policy as the documented `sed` line installs it (the guide's
    // command, run with this test's directories for /etc and /var/lib).
    let guide = std::fs::read_to_string(common::repo().join("docs/operations.md")).expect("guide");
    let start = guide
        .find("sed -e 's#^file = \"lists/")
        .expect("the guide's sed line installing the policy");
    let command: String = guide[start..]
        .split_inclusive('\n')
        .take(2)
        .collect::<String>()
        .replace("\\\n", " ")
        .replace("/var/lib/callgate", &state.display().to_string())
        .replace("/etc/callgate", &etc.display().to_string());
    let installed = Command::new("sh")
        .args(["-ec", &command])
        .current_dir(common::repo())
        .status()
        .expect("sh");
    assert!(installed.success(), "{command}");
    let policy = std::fs::read_to_string(etc.join("policy.toml")).expect("policy");
    for l in ["fraud", "allow"] {
        let named = format!("file = \"{}/lists/{l}.txt\"", state.display());
        assert!(policy.contains(&named), "{command}\n{policy}");
    }
    assert!(
        policy.contains("file = \"lists/dno.txt\""),
        "dno stays beside the policy"
    );
    let ports = Ports::new();
    let config = common::config(
        ports,
        &["sip:127.0.0.1:9".to_owned()],
        &["sip:127.0.0.1:9".to_owned()],
        &format!(
            "[risk]\npolicy = \"{}\"\n\n[audit]\npath = \"{}\"\n",
            etc.join("policy.toml").display(),
            state.join("audit.db").display()
        ),
    );
    std::fs::write(etc.join("callgate.toml"), &config).expect("config");

    // First start: seeded from the installed lists; check-config passes.
    let script = seed_script();
    seed(&script, &etc, &state);
    let installed_fraud = std::fs::read_to_string(etc.join("lists/fraud.txt")).expect("fraud");
    for l in ["fraud.txt", "allow.txt"] {
        assert_eq!(
            std::fs::read(state.join("lists").join(l)).expect("seeded"),
            std::fs::read(etc.join("lists").join(l)).expect("installed"),
            "{l} seeded from /etc/callgate/lists"
        );
    }
    assert!(!state.join("lists/dno.txt").exists(), "dno stays in /etc");
    let check = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("check-config")
        .arg(etc.join("callgate.toml"))
        .output()
        .expect("check-config");
    assert!(
        check.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let number = "+15557654321";
    let mut cg = common::Callgate::start(ports, &config);
    let added = add_to_fraud_list(&cg, number);
    assert_eq!(added["added"], true, "{added}");
    let kept = std::fs::read_to_string(state.join("lists/fraud.txt")).expect("state fraud");
    assert!(
        kept.starts_with(&installed_fraud) && kept.contains("15557654321"),
        "{kept}"
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("lists/fraud.txt")).expect("etc fraud"),
        installed_fraud,
        "/etc/callgate is never written"
    );
    assert!(
        cg.signal_and_wait("TERM", Duration::from_secs(20))
            .is_some(),
        "callgate did not stop on SIGTERM"
    );
    drop(cg);

    // A restart: the seeding runs again and keeps the state's list.
    seed(&script, &etc, &state);
    assert_eq!(
        std::fs::read_to_string(state.join("lists/fraud.txt")).expect("state fraud"),
        kept,
        "a restart never overwrites the state's lists"
    );
    let cg = common::Callgate::start(ports, &config);
    let again = add_to_fraud_list(&cg, number);
    assert_eq!(
        again["added"], false,
        "the restarted callgate read the number back: {again}"
    );

    // Without installed lists, the editable ones start empty.
    let bare_etc = root.path().join("bare-etc");
    let bare_state = root.path().join("bare-state");
    std::fs::create_dir_all(&bare_etc).expect("bare etc");
    std::fs::create_dir_all(&bare_state).expect("bare state");
    seed(&script, &bare_etc, &bare_state);
    for l in ["fraud.txt", "allow.txt"] {
        let meta = std::fs::metadata(bare_state.join("lists").join(l)).expect("created");
        assert_eq!(meta.len(), 0, "{l}");
    }
}
