//! Test harness: runs the real `callgate` binary on free loopback ports and
//! real sipp peers against it. Every wait is bounded; every child process is
//! killed when its guard drops.
#![allow(dead_code)]

pub mod browser;
pub mod calls;
pub mod carrier;
pub mod live_capture;
pub mod netns;
pub mod pki;
pub mod redis;
pub mod roles;
pub mod srtp;
pub mod sse;
pub mod to_sipp;
pub mod volume;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const LOOPBACK: &str = "127.0.0.1";

/// A loopback port free for both UDP and TCP right now, never handed out
/// twice by this process, and taken from below the kernel's ephemeral range
/// (32768–60999) so that no client socket of a sipp peer, an HTTP fetch or an
/// outbound TCP connection can grab it between this call and callgate's bind.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive loopback ports, all free for UDP and TCP
/// now and reserved together (never handed out again by this process): for
/// a peer that binds several ports from one, like sipp's `-mp` (RTP, RTCP,
/// video RTP, video RTCP).
pub fn free_ports(n: u32) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each test binary starts at its own offset (by pid) so that binaries run
    // one after another do not walk the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let first = NEXT.fetch_add(n, Ordering::SeqCst) % SPAN;
        if first + n > SPAN {
            continue; // a block never wraps around the range
        }
        let all_free = (first..first + n).all(|p| {
            let port = (LOW + p) as u16;
            UdpSocket::bind((LOOPBACK, port)).is_ok() && TcpListener::bind((LOOPBACK, port)).is_ok()
        });
        if all_free {
            return (LOW + first) as u16;
        }
    }
    panic!("no {n} free consecutive loopback ports");
}

/// Repository root (for scenario files and the demo TLS certificate).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn scenario(name: &str) -> String {
    repo()
        .join("test-calls/scenarios")
        .join(name)
        .display()
        .to_string()
}

/// Ports of one callgate under test.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub trunk: u16,
    pub trunk_tls: u16,
    pub pbx: u16,
    pub admin: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            trunk: free_port(),
            trunk_tls: free_port(),
            pbx: free_port(),
            admin: free_port(),
        }
    }
}

/// A config for tests: both sides on loopback, UDP+TCP (+TLS on the trunk),
/// the given targets, fast failover, no health probes unless asked.
pub fn config(
    ports: Ports,
    pbx_targets: &[String],
    carrier_targets: &[String],
    extra: &str,
) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cert = repo().join("sip-config/tls/callgate-demo.crt");
    let key = secrets().key.clone();
    let has_health = extra.contains("[health]");
    let has_timers = extra.contains("[timers]");
    format!(
        r#"
[trunk]
udp = "127.0.0.1:{trunk}"
tcp = "127.0.0.1:{trunk}"
tls = "127.0.0.1:{tls}"
tls_cert = "{cert}"
tls_key = "{key}"
allow = ["127.0.0.0/8"]
targets = [{carrier}]
# The tests' sentinel OPTIONS is a barrier that must reach the PBX stand-in
# (the default, "local", answers it in callgate).
options = "forward"

[pbx]
udp = "127.0.0.1:{pbx}"
tcp = "127.0.0.1:{pbx}"
allow = ["127.0.0.0/8"]
targets = [{pbxt}]

{health}
{timers}
[admin]
listen = "127.0.0.1:{admin}"
token_file = "{token}"

[log]
level = "info"

[shutdown]
drain_secs = 5

{extra}
"#,
        trunk = ports.trunk,
        tls = ports.trunk_tls,
        pbx = ports.pbx,
        admin = ports.admin,
        cert = cert.display(),
        key = key.display(),
        token = secrets().token_file.display(),
        carrier = list(carrier_targets),
        pbxt = list(pbx_targets),
        health = if has_health {
            ""
        } else {
            "[health]\ninterval_secs = 0\n"
        },
        timers = if has_timers {
            ""
        } else {
            "[timers]\nno_response_ms = 500\n"
        },
    )
}

/// The admin token every test configuration sets (`admin.token_file`).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// Secret files as callgate demands them (mode 600): the demo TLS key
/// (git checks it out 644, which callgate refuses) and the admin token.
pub struct Secrets {
    pub key: PathBuf,
    pub token_file: PathBuf,
}

/// Writes the secret files once per test process, in a private directory
/// kept until the process exits.
pub fn secrets() -> &'static Secrets {
    static SECRETS: std::sync::OnceLock<Secrets> = std::sync::OnceLock::new();
    SECRETS.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let private = |name: &str, data: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, data).expect("write secret");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 600");
            p
        };
        let demo =
            std::fs::read(repo().join("sip-config/tls/callgate-demo.key")).expect("demo key");
        Secrets {
            key: private("callgate-demo.key", &demo),
            token_file: private("admin.token", ADMIN_TOKEN.as_bytes()),
        }
    })
}

/// A running callgate; SIGTERM + wait on drop.
pub struct Callgate {
    child: Child,
    pub ports: Ports,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    stderr_log: PathBuf,
}

impl Callgate {
    /// Writes `config_text`, starts callgate and waits (bounded) for its
    /// "callgate ready" line.
    pub fn start(ports: Ports, config_text: &str) -> Callgate {
        Callgate::start_with_env(ports, config_text, &[])
    }

    /// [`Callgate::start`] with extra environment variables (fault
    /// injection in debug builds, e.g. `media::relay::fault`).
    pub fn start_with_env(ports: Ports, config_text: &str, env: &[(&str, &Path)]) -> Callgate {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("callgate.toml");
        std::fs::write(&config_path, config_text).expect("write config");
        let stderr_log = dir.path().join("callgate.log");
        let log = std::fs::File::create(&stderr_log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(["run", "--config"])
            .arg(&config_path)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn callgate");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("callgate ready") => break,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                    panic!("callgate did not become ready; log:\n{log}");
                }
            }
        }
        Callgate {
            child,
            ports,
            dir,
            config_path,
            stderr_log,
        }
    }

    pub fn trunk(&self) -> String {
        format!("{LOOPBACK}:{}", self.ports.trunk)
    }
    pub fn pbx(&self) -> String {
        format!("{LOOPBACK}:{}", self.ports.pbx)
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// An admin request as an operator's tool sends it (the admin token,
    /// the listener's address as Host); returns (status, body).
    pub fn admin(&self, method: &str, path: &str) -> (u16, String) {
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        http_with(
            ("127.0.0.1", self.ports.admin),
            method,
            path,
            &[("Authorization", &bearer)],
        )
    }

    pub fn metrics(&self) -> String {
        self.admin("GET", "/metrics").1
    }

    /// Value of one metric line (exact name with labels), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    /// Sends a signal and waits (bounded) for exit; returns the exit status.
    pub fn signal_and_wait(
        &mut self,
        sig: &str,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Callgate {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls a metric until it reaches `want` (the admin API is the event source).
pub fn await_metric(cg: &Callgate, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cg.metric(series) >= want {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{series} did not reach {want}; metrics:\n{}", cg.metrics());
}

/// Polls a metric until it drops to at most `want` (bounded, as
/// [`await_metric`]).
pub fn await_metric_at_most(cg: &Callgate, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cg.metric(series) <= want {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{series} did not drop to {want}; metrics:\n{}",
        cg.metrics()
    );
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Minimal HTTP/1.1 client for the admin API (Host: the address).
pub fn http(addr: (&str, u16), method: &str, path: &str) -> (u16, String) {
    http_with(addr, method, path, &[])
}

/// [`http`] with extra headers; a `Host` among them replaces the default.
pub fn http_with(
    addr: (&str, u16),
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    http_body(addr, method, path, headers, "")
}

/// [`http_with`] with a request body (sent as JSON when not empty).
pub fn http_body(
    addr: (&str, u16),
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head += &format!("Host: {}:{}\r\n", addr.0, addr.1);
    }
    for (n, v) in headers {
        head += &format!("{n}: {v}\r\n");
    }
    if !body.is_empty() {
        head += "Content-Type: application/json\r\n";
    }
    write!(
        s,
        "{head}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Checks `cases` (`{"routes": [...], "answers": [...]}`: what the server
/// registers and what it answered) against docs/admin-api.openapi.yaml
/// with test-calls/openapi_check.py; `dir` holds the cases file.
pub fn check_openapi(cases: &serde_json::Value, dir: &Path) {
    let cases_path = dir.join("cases.json");
    std::fs::write(&cases_path, cases.to_string()).expect("write cases");
    let check = Command::new("python3")
        .arg(repo().join("test-calls/openapi_check.py"))
        .arg(repo().join("docs/admin-api.openapi.yaml"))
        .arg(&cases_path)
        .output()
        .expect("python3 (test-calls/run-tests.sh installs openapi-spec-validator)");
    assert!(
        check.status.success(),
        "docs/admin-api.openapi.yaml disagrees with the server:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A sipp process; killed on drop.
pub struct Sipp {
    child: Option<Child>,
    pub name: String,
    pub dir: tempfile::TempDir,
}

/// Common sipp arguments: loopback, bounded, quiet.
fn sipp_command(dir: &Path, args: &[String]) -> Command {
    let mut c = Command::new("sipp");
    c.current_dir(dir)
        .args([
            "-i",
            LOOPBACK,
            "-nostdin",
            "-trace_err",
            "-trace_stat",
            "-stf",
            "stats.csv",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

impl Sipp {
    /// Starts a sipp UAS on `port` and waits (bounded) until it listens.
    pub fn uas(
        scenario_file: &str,
        port: u16,
        calls: u32,
        transport: &str,
        extra: &[&str],
    ) -> Sipp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args: Vec<String> = vec![
            "-sf".into(),
            scenario_file.into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            calls.to_string(),
            "-t".into(),
            transport.into(),
            "-timeout".into(),
            "60s".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let sipp = Sipp::spawned(scenario_file, &args, dir);
        wait_bound(port, transport == "t1");
        sipp
    }

    /// A sipp process started with `args` in `dir`.
    fn spawned(scenario_file: &str, args: &[String], dir: tempfile::TempDir) -> Sipp {
        let child = sipp_command(dir.path(), args)
            .spawn()
            .expect("spawn sipp (apt-get install sip-tester)");
        Sipp {
            child: Some(child),
            name: scenario_file
                .rsplit('/')
                .next()
                .unwrap_or(scenario_file)
                .to_owned(),
            dir,
        }
    }

    /// A UAC's arguments: `calls` at `rate` per second to `target`, the
    /// whole run bounded by `timeout`, then `extra`.
    fn uac_args(
        scenario_file: &str,
        target: &str,
        (calls, rate): (u32, u32),
        transport: &str,
        timeout: &str,
        extra: &[&str],
    ) -> Vec<String> {
        let mut args: Vec<String> = vec![
            target.into(),
            "-sf".into(),
            scenario_file.into(),
            "-p".into(),
            free_port().to_string(),
            "-m".into(),
            calls.to_string(),
            "-r".into(),
            rate.to_string(),
            "-l".into(),
            (rate.max(1) * 4).to_string(),
            "-t".into(),
            transport.into(),
            "-timeout".into(),
            timeout.into(),
            "-timeout_error".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Runs a sipp UAC to completion (bounded by `-timeout`).
    pub fn uac(
        scenario_file: &str,
        target: &str,
        calls: u32,
        rate: u32,
        transport: &str,
        extra: &[&str],
    ) -> SippResult {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = Sipp::uac_args(
            scenario_file,
            target,
            (calls, rate),
            transport,
            "60s",
            extra,
        );
        let out = sipp_command(dir.path(), &args).output().expect("run sipp");
        SippResult::from(out, dir)
    }

    /// Starts a sipp UAC in the background (a call held while the test
    /// works on it); killed on drop, or [`Sipp::finish`]ed.
    pub fn uac_background(
        scenario_file: &str,
        target: &str,
        calls: u32,
        transport: &str,
        extra: &[&str],
    ) -> Sipp {
        let args = Sipp::uac_args(scenario_file, target, (calls, 1), transport, "120s", extra);
        Sipp::spawned(scenario_file, &args, tempfile::tempdir().expect("tempdir"))
    }

    /// The sipp process's id (for signals: SIGSTOP makes a silent peer).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits (bounded) for the UAS to finish its calls.
    pub fn finish(mut self) -> SippResult {
        let mut child = self.child.take().expect("child");
        let deadline = Instant::now() + Duration::from_secs(70);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = child.kill();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let out = child.wait_with_output().expect("sipp output");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        SippResult::from(out, dir)
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Outcome of a sipp run: exit code and the last line of its statistics.
#[derive(Debug)]
pub struct SippResult {
    pub code: Option<i32>,
    pub stderr: String,
    pub successful: u64,
    pub failed: u64,
    pub errors: String,
    /// The messages sipp sent and received, when run with `-trace_msg`.
    pub messages: String,
}

impl SippResult {
    pub fn from(out: Output, dir: tempfile::TempDir) -> SippResult {
        let stats = std::fs::read_to_string(dir.path().join("stats.csv")).unwrap_or_default();
        let mut lines = stats.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
        let last: Vec<&str> = lines.last().unwrap_or_default().split(';').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| last.get(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let mut errors = String::new();
        let mut messages = String::new();
        if let Ok(rd) = std::fs::read_dir(dir.path()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with("_errors.log") {
                    errors.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                } else if name.ends_with("_messages.log") {
                    messages.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        SippResult {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            successful: col("SuccessfulCall(C)"),
            failed: col("FailedCall(C)"),
            errors,
            messages,
        }
    }

    /// The requests sipp received, each as its text, in order.
    pub fn received_requests(&self, method: &str) -> Vec<String> {
        self.messages
            .split("message received")
            .skip(1)
            .filter_map(|chunk| {
                let start = chunk.find(&format!("{method} "))?;
                let msg = &chunk[start..];
                (msg.lines().next().is_some_and(|l| l.ends_with("SIP/2.0")))
                    .then(|| msg.split("\n\n\n").next().unwrap_or(msg).to_owned())
            })
            .collect()
    }

    pub fn assert_all_ok(&self, calls: u64, what: &str) {
        assert!(
            self.code == Some(0) && self.successful == calls && self.failed == 0,
            "{what}: exit {:?}, {} successful, {} failed (expected {calls})\nstderr: {}\nerrors: {}",
            self.code,
            self.successful,
            self.failed,
            self.stderr,
            self.errors.chars().take(4000).collect::<String>()
        );
    }
}

/// Waits (bounded) until something listens on the loopback port: a UDP
/// bind that fails, or a TCP connect that succeeds, means it is bound.
pub fn wait_bound(port: u16, tcp: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let bound = if tcp {
            std::net::TcpStream::connect((LOOPBACK, port)).is_ok()
        } else {
            UdpSocket::bind((LOOPBACK, port)).is_err()
        };
        if bound {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listening on port {port} after 10 s");
}

/// A plain UDP endpoint for hand-made messages.
pub struct Udp {
    pub sock: UdpSocket,
}

impl Udp {
    pub fn bind() -> Udp {
        let sock = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
        Udp { sock }
    }
    pub fn port(&self) -> u16 {
        self.sock.local_addr().map(|a| a.port()).unwrap_or(0)
    }
    pub fn send(&self, to: &str, data: &[u8]) {
        self.sock.send_to(data, to).expect("send");
    }
    /// Next datagram, within 5 s.
    pub fn recv(&self) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 65_535];
        let (n, from) = self.sock.recv_from(&mut buf).ok()?;
        buf.truncate(n);
        Some((buf, from))
    }
    /// Receives until a datagram contains `needle`; returns all received.
    pub fn recv_until(&self, needle: &str) -> Vec<String> {
        let mut got = Vec::new();
        while let Some((d, _)) = self.recv() {
            let s = String::from_utf8_lossy(&d).into_owned();
            let done = s.contains(needle);
            got.push(s);
            if done {
                return got;
            }
        }
        panic!("no datagram containing {needle:?}; got {got:#?}");
    }
}
