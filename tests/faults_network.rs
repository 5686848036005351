//! Issue 14, "Faults": the network around callgate misbehaves, with the
//! real binary and real peers.
//!
//! * A PBX target stops answering under a steady sipp load, then comes
//!   back: as a silent target (its sipp UAS stopped with SIGSTOP: packets
//!   are queued, never answered) and as a refusing one (the process gone:
//!   the port is closed and the kernel answers ICMP port unreachable). The
//!   OPTIONS probes take it out of rotation within the configured time,
//!   every call placed meanwhile completes on the other target, and the
//!   recovered target rejoins and takes the calls again.
//! * The x5u server misbehaves (hangs, drips, garbage, 10 MB, resets):
//!   see `x5u_faults` below.

mod common;

use std::time::{Duration, Instant};

use common::{config, free_port, scenario, Callgate, Ports, Sipp, SippResult};

/// `[health]` of the failover tests: a probe a second, out of rotation
/// after two failed in a row, a probe failed after 500 ms.
const HEALTH: &str = "[health]\ninterval_secs = 1\ntimeout_ms = 500\ndown_after = 2\n";

/// The longest the probes may take to notice a dead target with
/// [`HEALTH`]: `down_after` probes, the first up to one interval after the
/// fault, the last failing at its timeout — plus a second of slack for
/// the debug build on a loaded machine.
const DETECT_WITHIN: Duration = Duration::from_millis(2 * 1000 + 1000 + 500 + 1000);

/// How the first target stops answering.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGSTOP: the socket stays open, requests queue unanswered.
    Silent,
    /// The process is killed: the port is closed (ICMP port unreachable).
    Refusing,
}

/// A sipp PBX that answers calls and OPTIONS probes (`-aa`) until it is
/// dropped, dumping its statistics every second (`-fd 1`).
fn pbx(port: u16) -> Sipp {
    Sipp::uas(
        &scenario("uas-basic.xml"),
        port,
        100_000,
        "u1",
        &["-aa", "-fd", "1"],
    )
}

/// Calls the UAS `sipp` has received so far (its `IncomingCall(C)`, from
/// the statistics it dumps every second).
fn incoming_calls(sipp: &Sipp) -> u64 {
    let stats = std::fs::read_to_string(sipp.dir.path().join("stats.csv")).unwrap_or_default();
    let mut lines = stats.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
    let last: Vec<&str> = lines.last().unwrap_or_default().split(';').collect();
    header
        .iter()
        .position(|h| *h == "IncomingCall(C)")
        .and_then(|i| last.get(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Polls `what` (bounded by `limit`) until it holds; returns how long it
/// took, or panics with `msg`.
fn wait_until(limit: Duration, msg: &str, mut what: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if what() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{msg} (waited {limit:?})");
}

fn signal(pid: Option<u32>, sig: &str) {
    let pid = pid.unwrap_or_else(|| panic!("no pid to send {sig} to"));
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// The steady carrier load: `calls` at `rate`/s, on its own thread.
fn load(cg: &Callgate, calls: u32, rate: u32) -> std::thread::JoinHandle<SippResult> {
    let trunk = cg.trunk();
    std::thread::spawn(move || {
        Sipp::uac(
            &scenario("uac-basic.xml"),
            &trunk,
            calls,
            rate,
            "u1",
            &["-d", "100"],
        )
    })
}

const PBX_UP: &str = "callgate_targets_up{side=\"pbx\"}";
const INVITES_IN: &str =
    "callgate_sip_requests_total{side=\"trunk\",direction=\"in\",method=\"INVITE\"}";

/// The first PBX target fails (`outage`) while 20 calls/s arrive, then
/// comes back; asserts failover, no lost call, and the rejoin.
fn pbx_target_fails_and_comes_back(outage: Outage) {
    let (first_port, second_port) = (free_port(), free_port());
    let mut first = Some(pbx(first_port));
    let second = pbx(second_port);
    let ports = Ports::new();
    let cg = Callgate::start(
        ports,
        &config(
            ports,
            &[
                format!("sip:127.0.0.1:{first_port}"),
                format!("sip:127.0.0.1:{second_port}"),
            ],
            &["sip:127.0.0.1:9".to_owned()],
            HEALTH,
        ),
    );
    wait_until(Duration::from_secs(5), "both targets up", || {
        cg.metric(PBX_UP) == 2.0
    });
    // 20 calls/s for 8 s; the outage starts once 20 calls went through.
    let (calls, rate) = (160, 20);
    let running = load(&cg, calls, rate);
    wait_until(Duration::from_secs(10), "load started", || {
        cg.metric(INVITES_IN) >= 20.0
    });
    let stopped_pid = first.as_ref().and_then(Sipp::pid);
    match outage {
        Outage::Silent => signal(stopped_pid, "STOP"),
        Outage::Refusing => drop(first.take()), // killed: the port is closed
    }
    let detected = wait_until(DETECT_WITHIN, "the failed target left the rotation", || {
        cg.metric(PBX_UP) == 1.0
    });
    eprintln!("{outage:?}: out of rotation {detected:?} after the fault");
    assert!(
        cg.log()
            .contains("target failed OPTIONS probes: out of rotation"),
        "the warning names the event"
    );
    // Calls go on to the second target only (once the INVITEs sent to the
    // first before it left the rotation have failed over, within
    // no_response_ms = 500 ms: a second of calls); then the first comes
    // back.
    let calls_after = |n: f64| {
        let invites = cg.metric(INVITES_IN);
        wait_until(Duration::from_secs(10), "calls while down", || {
            cg.metric(INVITES_IN) >= invites + n
        });
    };
    calls_after(f64::from(rate));
    let failovers_while_down = cg.metric("callgate_failovers_total");
    calls_after(f64::from(rate));
    assert_eq!(
        cg.metric("callgate_failovers_total"),
        failovers_while_down,
        "no failover once the dead target is out of rotation"
    );
    match outage {
        Outage::Silent => signal(stopped_pid, "CONT"),
        Outage::Refusing => first = Some(pbx(first_port)),
    }
    let rejoined = wait_until(
        Duration::from_secs(5),
        "the recovered target rejoined",
        || cg.metric(PBX_UP) == 2.0,
    );
    eprintln!("{outage:?}: back in rotation {rejoined:?} after recovery");
    let result = running
        .join()
        .unwrap_or_else(|_| panic!("load thread panicked"));
    result.assert_all_ok(u64::from(calls), "every call placed during the outage");

    // The recovered target is first in rotation again: a new batch goes
    // to it, without a single failover.
    let first_pbx = first
        .as_ref()
        .unwrap_or_else(|| panic!("the first PBX runs again"));
    let before = incoming_calls(first_pbx);
    let failovers = cg.metric("callgate_failovers_total");
    let batch = 10;
    load(&cg, batch, 10)
        .join()
        .unwrap_or_else(|_| panic!("load thread panicked"))
        .assert_all_ok(u64::from(batch), "calls after the rejoin");
    assert_eq!(
        cg.metric("callgate_failovers_total"),
        failovers,
        "answered by the first target tried"
    );
    wait_until(
        Duration::from_secs(5),
        "the recovered target took the new calls",
        || incoming_calls(first_pbx) >= before + u64::from(batch),
    );
    drop(second);
}

#[test]
fn a_silent_pbx_target_is_failed_over_and_rejoins_when_it_answers_again() {
    pbx_target_fails_and_comes_back(Outage::Silent);
}

#[test]
fn a_refusing_pbx_target_is_failed_over_and_rejoins_when_it_listens_again() {
    pbx_target_fails_and_comes_back(Outage::Refusing);
}
