//! Tests from live captures: real calls made by sipp through callgate,
//! captured by `tcpdump` as a tester would capture them, converted with
//! `callgate trace to-sipp` (re-signed, with expectations), and replayed
//! against a fresh callgate, which must treat them as the first one did.
//!
//! - on loopback: a signed, allow-listed call, captured on `lo` by
//!   tcpdump and by sngrep (both of callgate's legs: the converter takes
//!   the carrier's);
//! - across a real 1500-byte MTU: the carrier in a network namespace
//!   behind a veth pair (tests/common/netns.rs, needs root: skipped with
//!   a message otherwise) sends a signed INVITE larger than the MTU, so
//!   the kernel splits it into IP fragments; the capture of that link is
//!   read by `callgate replay --pcap` (which finds the signed call) and
//!   converted and replayed like the other.
//!
//! Bounded by sipp's `-timeout` and the capture's sentinel wait.

mod common;

use std::path::Path;

use callgate::stir::sign::{identity_header, SignRequest};
use common::live_capture::LiveCapture;
use common::pki::{https_server, pki, Pki};
use common::{config, free_port, scenario, Callgate, Ports, Sipp};

use common::calls::ALLOW_OR_REVIEW_POLICY as POLICY;

/// What the replays of the captured call expect callgate to do.
const EXPECT: &str = "level=low,action=tag,verstat=TN-Validation-Passed-A,reasons=ALLOWLISTED";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The Identity token of a fresh PASSporT from +15550101.
fn token(pki: &Pki, x5u: &str) -> String {
    let h = identity_header(
        &pki.signing,
        &SignRequest {
            orig: "+15550101",
            dest: "+15550100",
            attest: 'A',
            origid: "123e4567-e89b-12d3-a456-426655440101",
            x5u,
            iat: now(),
        },
    )
    .unwrap_or_else(|e| panic!("sign: {e}"));
    h.split(';').next().unwrap_or_default().to_owned()
}

/// The `[stir]` and `[risk]` sections: the test PKI trusted, [`POLICY`].
fn sections(pki: &Pki, dir: &Path) -> String {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap_or_else(|e| panic!("{e}"));
    format!(
        "[stir]\nenabled = true\ntrust_dir = \"{}\"\nx5u_ca = [\"{}\"]\nallow_private_x5u = true\n\n[risk]\npolicy = \"{}\"\n",
        pki.trust_dir.display(),
        pki.web_ca.display(),
        policy.display()
    )
}

/// A callgate with the PKI and policy of [`sections`], its PBX target
/// 127.0.0.1:`pbx_port`; `edit` may change its configuration text.
fn start(ports: Ports, pbx_port: u16, sections: &str, edit: impl Fn(String) -> String) -> Callgate {
    let text = config(
        ports,
        &[format!("sip:127.0.0.1:{pbx_port}")],
        &["sip:127.0.0.1:9".to_owned()],
        sections,
    );
    Callgate::start(ports, &edit(text))
}

/// Converts the capture `cap` (re-signed with the test PKI's key, with
/// [`EXPECT`]) and replays it against a fresh callgate; both sides must
/// pass. Returns the INVITE the replay's PBX got.
fn convert_and_replay(pki: &Pki, x5u: &str, dir: &Path, cap: &Path, call_id: &str) -> String {
    let key = dir.join("sti-key.pem");
    std::fs::write(&key, &pki.signing_pem).unwrap_or_else(|e| panic!("{e}"));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = dir.join("replay");
    let key = key.display().to_string();
    common::to_sipp::converted(
        cap,
        &out,
        &[
            "--call-id",
            call_id,
            "--resign",
            &key,
            "--x5u",
            x5u,
            "--expect",
            EXPECT,
        ],
    );
    let pbx_port = free_port();
    let cg = start(Ports::new(), pbx_port, &sections(pki, dir), |t| t);
    let (carrier, pbx) = common::to_sipp::run_pair(&out, &cg.trunk(), pbx_port, "u1", &[]);
    carrier.assert_all_ok(1, "UAC converted from the live capture");
    pbx.assert_all_ok(1, "UAS converted from the live capture, with expectations");
    let invites = pbx.received_requests("INVITE");
    assert_eq!(invites.len(), 1, "{}", pbx.messages);
    invites[0].clone()
}

/// The Call-ID of the first INVITE in `cap` (as callgate's reader sees it).
fn first_call_id(cap: &[u8]) -> String {
    let read = callgate::capture::read(cap).unwrap_or_else(|e| panic!("{e}"));
    let limits = callgate::sip::message::Limits::default();
    let messages = callgate::capture::sip::messages(&read.payloads, &limits);
    let dialogs = callgate::capture::to_sipp::dialogs(&messages, &limits);
    dialogs
        .iter()
        .find(|d| d.method.as_deref() == Some("INVITE"))
        .map(|d| d.call_id.clone())
        .unwrap_or_else(|| panic!("no INVITE in the capture: {dialogs:?}"))
}

/// The capture tools a tester uses.
#[derive(Clone, Copy)]
enum Tool {
    Tcpdump,
    Sngrep,
}

/// A signed, allow-listed call made by sipp through callgate, captured
/// on `lo` by `tool` (both of callgate's legs), converted, and replayed
/// against a fresh callgate.
fn capture_convert_replay_on_loopback(tool: Tool) {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let x5u = format!("https://127.0.0.1:{port}/good.pem");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pbx_port = free_port();
    let ports = Ports::new();
    let cg = start(ports, pbx_port, &sections(&pki, dir.path()), |t| t);
    let marker_port = free_port();
    let cap_path = dir.path().join("live.pcap");
    let filter = format!(
        "udp and (port {} or port {pbx_port} or port {marker_port})",
        ports.trunk
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let send = |m: &[u8]| {
        let _ = sock.send_to(m, ("127.0.0.1", marker_port));
    };
    let capture = match tool {
        Tool::Tcpdump => LiveCapture::tcpdump("lo", &filter, &cap_path),
        Tool::Sngrep => LiveCapture::sngrep("lo", &filter, &cap_path, send),
    }
    .unwrap_or_else(|e| panic!("{e} (test-calls/run-tests.sh installs it; the tests run as root)"));

    // The call, as the suite makes it: sipp carrier, sipp PBX.
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, 1, "u1", &[]);
    let csv = dir.path().join("call.csv");
    std::fs::write(
        &csv,
        format!(
            "SEQUENTIAL\n+15550101;+15550100;Identity: {};{x5u}\n",
            token(&pki, &x5u)
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let csv = csv.display().to_string();
    Sipp::uac(
        &scenario("uac-risk.xml"),
        &cg.trunk(),
        1,
        1,
        "u1",
        &["-inf", &csv],
    )
    .assert_all_ok(1, "live carrier");
    uas.finish().assert_all_ok(1, "live PBX");
    let cap = capture.finish(send);
    drop(cg);

    let call_id = first_call_id(&cap);
    let invite = convert_and_replay(&pki, &x5u, dir.path(), &cap_path, &call_id);
    // The replay is a new dialog with the captured caller.
    assert!(!invite.contains(&call_id), "{invite}");
    assert!(invite.contains("sip:+15550101@"), "{invite}");
    // And the capture holds both legs: the converter kept the carrier's.
    let readme = std::fs::read_to_string(dir.path().join("replay/README.md")).unwrap_or_default();
    assert!(
        readme.contains(&format!("127.0.0.1:{} (the UAS", ports.trunk)),
        "{readme}"
    );
}

#[test]
fn a_call_captured_by_tcpdump_replays_through_a_fresh_callgate() {
    capture_convert_replay_on_loopback(Tool::Tcpdump);
}

#[test]
fn a_call_captured_by_sngrep_replays_through_a_fresh_callgate() {
    capture_convert_replay_on_loopback(Tool::Sngrep);
}

/// Whether this process runs as root (network namespaces need it).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[test]
fn a_signed_invite_fragmented_on_a_1500_byte_link_is_found_converted_and_replayed() {
    if !is_root() {
        eprintln!(
            "SKIPPED: this test builds a network namespace and a veth pair (ip netns), which \
             needs root, as in CI"
        );
        return;
    }
    let lab = common::netns::Lab::new(&["carrier"]);
    let carrier = lab.host(0).clone();
    let pki = pki();
    let (port, _) = https_server(&pki);
    let x5u = format!("https://127.0.0.1:{port}/good.pem");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pbx_port = free_port();
    let ports = Ports::new();
    // The trunk on the carrier link's address, admitting the carrier.
    let gate = carrier.gate;
    let cg = start(ports, pbx_port, &sections(&pki, dir.path()), |t| {
        t.replacen(
            &format!("udp = \"127.0.0.1:{}\"", ports.trunk),
            &format!("udp = \"{gate}:{}\"", ports.trunk),
            1,
        )
        .replacen(
            "allow = [\"127.0.0.0/8\"]",
            &format!("allow = [\"127.0.0.0/8\", \"{}/32\"]", carrier.addr),
            1,
        )
    });
    let cap_path = dir.path().join("link.pcap");
    // Every packet to or from the carrier: the fragments after the first
    // carry no UDP header, so a port filter would miss them.
    let capture = LiveCapture::tcpdump(&carrier.link, &format!("host {}", carrier.addr), &cap_path)
        .unwrap_or_else(|e| panic!("{e}"));

    // The carrier's INVITE: uac-risk.xml with a route header a carrier
    // might add, which takes it past the link's 1500 bytes.
    let big = std::fs::read_to_string(scenario("uac-risk.xml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replacen(
            "X-Callgate-Forged: yes",
            &format!(
                "X-Callgate-Forged: yes\n      X-Carrier-Route: {}",
                "hop.transit.carrier.example;".repeat(40)
            ),
            1,
        );
    let big_path = dir.path().join("uac-big.xml");
    std::fs::write(&big_path, big).unwrap_or_else(|e| panic!("{e}"));
    let csv = dir.path().join("call.csv");
    std::fs::write(
        &csv,
        format!(
            "SEQUENTIAL\n+15550101;+15550100;Identity: {};{x5u}\n",
            token(&pki, &x5u)
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let uas = Sipp::uas(&scenario("uas-basic.xml"), pbx_port, 1, "u1", &[]);
    let sipp_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = carrier
        .command("sipp")
        .current_dir(sipp_dir.path())
        .arg(format!("{gate}:{}", ports.trunk))
        .arg("-sf")
        .arg(&big_path)
        .arg("-inf")
        .arg(&csv)
        .args([
            "-i",
            &carrier.addr.to_string(),
            "-p",
            &free_port().to_string(),
        ])
        .args([
            "-m",
            "1",
            "-t",
            "u1",
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
        ])
        .output()
        .unwrap_or_else(|e| panic!("sipp in the carrier's namespace: {e}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "carrier sipp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    uas.finish()
        .assert_all_ok(1, "PBX behind the fragmented trunk");
    let sock = carrier.udp(0);
    let to = std::net::SocketAddr::from((gate, free_port()));
    let cap = capture.finish(|m| {
        let _ = sock.send_to(m, to);
    });
    drop(cg);

    // The kernel fragmented the INVITE, and the reader put it together.
    let read = callgate::capture::read(&cap).unwrap_or_else(|e| panic!("{e}"));
    assert!(read.stats.fragments >= 2, "{:?}", read.stats);
    assert!(read.stats.reassembled >= 1, "{:?}", read.stats);
    let call_id = first_call_id(&cap);

    // `callgate replay --pcap` finds the signed call.
    let policy = dir.path().join("policy.toml");
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("replay")
        .arg("--policy")
        .arg(&policy)
        .arg("--pcap")
        .arg(&cap_path)
        .arg("--json")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&replay.stdout);
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&replay.stderr)));
    let calls = json["calls"].as_array().cloned().unwrap_or_default();
    assert!(
        calls
            .iter()
            .any(|c| c["call_id"] == call_id.as_str() && c["calling"] == "15550101"),
        "{text}"
    );

    // And `trace to-sipp` turns it into a replay that passes.
    let invite = convert_and_replay(&pki, &x5u, dir.path(), &cap_path, &call_id);
    assert!(invite.contains("X-Carrier-Route: hop.transit"), "{invite}");
    assert!(invite.len() > 1500, "{}", invite.len());
}
