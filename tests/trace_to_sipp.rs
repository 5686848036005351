//! `callgate trace to-sipp` end to end: a pcap of a known dialog (a
//! carrier's INVITE with the headers a policy reads, 100/180/200 with
//! SDP, ACK, BYE/200, a retransmitted 200), written here with
//! `pcap-file` and `etherparse`, converted by the binary, and the
//! generated `uac.xml`/`uas.xml` run with sipp through a fresh callgate:
//! the call completes on both sides and the PBX sees the captured
//! headers. A signed capture replays re-signed (`--resign`, verified by
//! callgate against a real HTTPS x5u server) or stale on purpose
//! (`--keep-identity`). Loopback only, bounded by sipp's `-timeout`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, UdpHeader};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

use callgate::stir::sign::{identity_header, SignRequest};
use common::pki::{https_server, pki};
use common::{config, free_port, Callgate, Ports, Sipp};

const CARRIER: ([u8; 4], u16) = ([127, 0, 0, 10], 5060);
const PBX: ([u8; 4], u16) = ([127, 0, 0, 20], 5060);
/// 2026-11-24T00:00:00Z.
const T0: u64 = 1_795_478_400;

/// One Ethernet/IPv4/UDP frame carrying `sip`.
fn frame(src: ([u8; 4], u16), dst: ([u8; 4], u16), sip: &str) -> Vec<u8> {
    datagram(src, dst, sip.replace('\n', "\r\n").into_bytes())
}

/// One Ethernet/IPv4/UDP frame carrying `data`.
fn datagram(src: ([u8; 4], u16), dst: ([u8; 4], u16), data: Vec<u8>) -> Vec<u8> {
    let udp = UdpHeader {
        source_port: src.1,
        destination_port: dst.1,
        length: (8 + data.len()) as u16,
        checksum: 0,
    };
    let ip = Ipv4Header::new((8 + data.len()) as u16, 64, IpNumber::UDP, src.0, dst.0)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut f = Ethernet2Header {
        source: [2, 0, 0, 0, 0, 1],
        destination: [2, 0, 0, 0, 0, 2],
        ether_type: EtherType::IPV4,
    }
    .to_bytes()
    .to_vec();
    f.extend_from_slice(&ip.to_bytes());
    f.extend_from_slice(&udp.to_bytes());
    f.extend_from_slice(&data);
    f
}

fn message(start: &str, headers: &[&str], body: &str) -> String {
    let body = body.replace('\n', "\r\n");
    format!(
        "{start}\n{}\nContent-Length: {}\n\n{}",
        headers.join("\n"),
        body.len(),
        body.replace("\r\n", "\n")
    )
}

const SDP_CARRIER: &str = "v=0\no=carrier 8121 8121 IN IP4 127.0.0.10\ns=-\nc=IN IP4 127.0.0.10\nt=0 0\nm=audio 31000 RTP/AVP 0 8 101\na=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\na=ptime:20\n";
const SDP_PBX: &str = "v=0\no=pbx 77 77 IN IP4 127.0.0.20\ns=-\nc=IN IP4 127.0.0.20\nt=0 0\nm=audio 42000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n";

/// The captured dialog: (milliseconds after T0, sent by the carrier,
/// text); the carrier hangs up, or the PBX does when `pbx_hangs_up`.
fn dialog(pbx_hangs_up: bool, identity: Option<&str>) -> Vec<(u64, bool, String)> {
    let common_h = |to: &str, cseq: &str| -> Vec<String> {
        vec![
            "Via: SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK-cap-1".into(),
            "From: \"Sales\" <sip:+15550199@carrier.example>;tag=car-77".into(),
            format!("To: {to}"),
            "Call-ID: captured-call-1@carrier.example".into(),
            format!("CSeq: {cseq}"),
        ]
    };
    let to = "<sip:+15550100@127.0.0.20>";
    let to_tagged = "<sip:+15550100@127.0.0.20>;tag=pbx-55";
    let invite = {
        let mut h = common_h(to, "1 INVITE");
        h.extend([
            "Max-Forwards: 70".to_owned(),
            "Contact: <sip:+15550199@127.0.0.10:5060>".into(),
            "P-Asserted-Identity: \"Sales\" <sip:+15550199@carrier.example;user=phone>".into(),
            "Diversion: <sip:+15550111@carrier.example>;reason=unconditional;counter=1".into(),
            "History-Info: <sip:+15550111@carrier.example>;index=1".into(),
            "User-Agent: CarrierSBC/4.2".into(),
            "X-Case: replay-from-capture".into(),
            "Content-Type: application/sdp".into(),
        ]);
        h.extend(identity.map(|i| format!("Identity: {i}")));
        let h: Vec<&str> = h.iter().map(String::as_str).collect();
        message("INVITE sip:+15550100@127.0.0.20 SIP/2.0", &h, SDP_CARRIER)
    };
    let response = |status: &str, to: &str, cseq: &str, sdp: &str| {
        let mut h = common_h(to, cseq);
        h.push("Contact: <sip:agent@127.0.0.20:5060>".into());
        h.push("Server: PBX/9".into());
        if !sdp.is_empty() {
            h.push("Content-Type: application/sdp".into());
        }
        let h: Vec<&str> = h.iter().map(String::as_str).collect();
        message(&format!("SIP/2.0 {status}"), &h, sdp)
    };
    let in_dialog = |method: &str, cseq: &str| {
        let mut h = common_h(to_tagged, cseq);
        h.push("Max-Forwards: 70".into());
        let h: Vec<&str> = h.iter().map(String::as_str).collect();
        message(
            &format!("{method} sip:agent@127.0.0.20:5060 SIP/2.0"),
            &h,
            "",
        )
    };
    let pbx_bye = || {
        let h = [
            "Via: SIP/2.0/UDP 127.0.0.20:5060;branch=z9hG4bK-pbx-1",
            "From: <sip:+15550100@127.0.0.20>;tag=pbx-55",
            "To: \"Sales\" <sip:+15550199@carrier.example>;tag=car-77",
            "Call-ID: captured-call-1@carrier.example",
            "CSeq: 1 BYE",
            "Max-Forwards: 70",
        ];
        let bye = message("BYE sip:+15550199@127.0.0.10:5060 SIP/2.0", &h, "");
        let ok = message("SIP/2.0 200 OK", &h[..5], "");
        (bye, ok)
    };
    let hangup = if pbx_hangs_up {
        let (bye, ok) = pbx_bye();
        [(1200, false, bye), (1201, true, ok)]
    } else {
        [
            (1200, true, in_dialog("BYE", "2 BYE")),
            (1201, false, response("200 OK", to_tagged, "2 BYE", "")),
        ]
    };
    let mut captured = vec![
        (0, true, invite),
        (1, false, response("100 Trying", to, "1 INVITE", "")),
        (
            150,
            false,
            response("180 Ringing", to_tagged, "1 INVITE", ""),
        ),
        (
            400,
            false,
            response("200 OK", to_tagged, "1 INVITE", SDP_PBX),
        ),
        (
            900,
            false,
            response("200 OK", to_tagged, "1 INVITE", SDP_PBX),
        ),
        (901, true, in_dialog("ACK", "1 ACK")),
    ];
    captured.extend(hangup);
    captured
}

fn pcap_of(dialog: &[(u64, bool, String)]) -> Vec<u8> {
    pcap_with_rtp(dialog, 0)
}

/// The media addresses of the captured SDPs (`SDP_CARRIER`, `SDP_PBX`).
const CARRIER_RTP: ([u8; 4], u16) = ([127, 0, 0, 10], 31000);
const PBX_RTP: ([u8; 4], u16) = ([127, 0, 0, 20], 42000);

/// The capture of `dialog`, with `rtp` packets of G.711 A-law each way
/// every 20 ms from 10 ms after the ACK (901 ms) on.
fn pcap_with_rtp(dialog: &[(u64, bool, String)], rtp: u16) -> Vec<u8> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut frames: Vec<(Duration, Vec<u8>)> = dialog
        .iter()
        .map(|(ms, from_carrier, text)| {
            let f = if *from_carrier {
                frame(CARRIER, PBX, text)
            } else {
                frame(PBX, CARRIER, text)
            };
            (Duration::from_millis(*ms), f)
        })
        .collect();
    for seq in 0..rtp {
        let at = Duration::from_millis(911 + 20 * u64::from(seq));
        for (ssrc, src, dst) in [(7u8, CARRIER_RTP, PBX_RTP), (9, PBX_RTP, CARRIER_RTP)] {
            let mut data = vec![0x80, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, ssrc];
            data[2..4].copy_from_slice(&seq.to_be_bytes());
            data[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            data.extend_from_slice(&[0xd5; 160]);
            frames.push((at, datagram(src, dst, data)));
        }
    }
    frames.sort_by_key(|(at, _)| *at);
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap_or_else(|e| panic!("{e}"));
    for (at, f) in frames {
        let ts = Duration::from_secs(T0) + at;
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, &f))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    w.into_writer()
}

/// A capture file of `pbx_hangs_up`'s dialog in a new directory, and
/// where its conversion goes.
struct Workdir {
    _dir: tempfile::TempDir,
    cap: PathBuf,
    out: PathBuf,
}

fn workdir(pbx_hangs_up: bool) -> Workdir {
    workdir_signed(pbx_hangs_up, None)
}

/// The same, the captured INVITE carrying `identity`.
fn workdir_signed(pbx_hangs_up: bool, identity: Option<&str>) -> Workdir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cap = dir.path().join("call.pcap");
    std::fs::write(&cap, pcap_of(&dialog(pbx_hangs_up, identity)))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("replay");
    Workdir {
        _dir: dir,
        cap,
        out,
    }
}

/// Runs `callgate trace to-sipp` on the work directory's capture.
fn to_sipp(w: &Workdir, extra: &[&str]) -> std::process::Output {
    common::to_sipp::convert(&w.cap, &w.out, extra)
}

/// Converts the work directory's capture; fails the test if that fails.
fn convert(w: &Workdir) {
    common::to_sipp::converted(&w.cap, &w.out, &[]);
}

/// A fresh callgate whose PBX target is 127.0.0.1:`pbx_port` over `transport`.
fn callgate_to(pbx_port: u16, transport: &str) -> Callgate {
    let ports = Ports::new();
    Callgate::start(
        ports,
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port};transport={transport}")],
            &["sip:127.0.0.1:9;transport=udp".to_owned()],
            "",
        ),
    )
}

/// Converts the capture of `dialog(pbx_hangs_up)` and replays it with
/// sipp through a fresh callgate over `transport` (`udp` or `tcp`; the
/// scenarios name none); returns what the PBX side saw.
fn convert_and_replay(pbx_hangs_up: bool, transport: &str) -> common::SippResult {
    replay(&workdir(pbx_hangs_up), &[], transport, "")
}

/// Converts `w`'s capture with the `extra` options and replays it with
/// sipp through a fresh callgate (configured with `more` too) over
/// `transport`; returns what the PBX side saw.
fn replay(w: &Workdir, extra: &[&str], transport: &str, more: &str) -> common::SippResult {
    let sipp_t = if transport == "tcp" { "t1" } else { "u1" };
    let pbx_port = free_port();
    let ports = Ports::new();
    let cg = Callgate::start(
        ports,
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port};transport={transport}")],
            &["sip:127.0.0.1:9;transport=udp".to_owned()],
            more,
        ),
    );
    let (carrier, pbx) = convert_and_run(w, extra, &cg, pbx_port, sipp_t, &[]);
    carrier.assert_all_ok(1, "generated UAC (carrier)");
    pbx.assert_all_ok(1, "generated UAS (PBX)");
    pbx
}

/// Converts `w`'s capture with the `extra` options and runs the pair
/// through the running `cg`: the UAS (with `uas_extra` sipp options) on
/// `pbx_port`, where `cg` sends calls, the UAC against its trunk over
/// `sipp_t`; returns what the carrier and the PBX sides saw, unchecked.
fn convert_and_run(
    w: &Workdir,
    extra: &[&str],
    cg: &Callgate,
    pbx_port: u16,
    sipp_t: &str,
    uas_extra: &[&str],
) -> (common::SippResult, common::SippResult) {
    common::to_sipp::converted(&w.cap, &w.out, extra);
    let readme = std::fs::read_to_string(w.out.join("README.md")).unwrap_or_default();
    assert!(readme.contains("sipp -sf uas.xml"), "{readme}");
    assert!(readme.contains("-sf uac.xml"), "{readme}");
    common::to_sipp::run_pair(&w.out, &cg.trunk(), pbx_port, sipp_t, uas_extra)
}

#[test]
fn a_captured_dialog_replays_through_callgate_with_sipp() {
    let pbx = convert_and_replay(false, "udp");
    // The PBX got the captured caller's headers, on a fresh Call-ID.
    let invites = pbx.received_requests("INVITE");
    assert_eq!(invites.len(), 1, "{}", pbx.messages);
    for kept in [
        "X-Case: replay-from-capture",
        "User-Agent: CarrierSBC/4.2",
        "Diversion: <sip:+15550111@carrier.example>;reason=unconditional;counter=1",
        "History-Info: <sip:+15550111@carrier.example>;index=1",
        "+15550199@carrier.example",
    ] {
        assert!(invites[0].contains(kept), "lacks {kept:?}:\n{}", invites[0]);
    }
    assert!(
        !invites[0].contains("captured-call-1@carrier.example"),
        "{}",
        invites[0]
    );
    assert_eq!(pbx.received_requests("BYE").len(), 1, "{}", pbx.messages);
}

#[test]
fn a_captured_dialog_the_pbx_hangs_up_replays_too() {
    let pbx = convert_and_replay(true, "udp");
    // sipp's message log: one entry per message, "… message sent" or
    // "… message received", then the message.
    let byes = |how: &str| {
        pbx.messages
            .split("-----------------------------------------------")
            .filter(|e| e.contains(how))
            .filter(|e| e.lines().any(|l| l.starts_with("BYE sip:")))
            .count()
    };
    assert_eq!(byes("message sent"), 1, "{}", pbx.messages);
    assert_eq!(byes("message received"), 0, "{}", pbx.messages);
}

#[test]
fn the_scenarios_of_a_udp_capture_replay_over_tcp_too() {
    let pbx = convert_and_replay(false, "tcp");
    assert_eq!(pbx.received_requests("INVITE").len(), 1, "{}", pbx.messages);
    assert!(
        pbx.messages.contains("TCP message received"),
        "{}",
        pbx.messages
    );
}

/// A call over TLS, as Wireshark exports it once it has decrypted it with
/// the session keys (File → Export PDUs, `tshark -U "OSI layer 7"`): link
/// type 252, each SIP message with its addresses and TCP ports
/// (`src/capture/upper_pdu.rs`). The converter reads it like any other
/// capture, and its pair replays through callgate (over TCP: the replay
/// chooses its transport). Before the exported-PDU reader such a capture
/// held no message callgate could read (exit 1, "no dialog").
#[test]
fn a_tls_call_exported_decrypted_by_wireshark_converts_and_replays() {
    use callgate::capture::{upper_pdu, Flow, Transport};
    let flow = |from_carrier: bool| {
        let carrier = std::net::SocketAddr::from(([127, 0, 0, 10], 40_123));
        let pbx = std::net::SocketAddr::from(([127, 0, 0, 20], 5061));
        let (src, dst) = if from_carrier {
            (carrier, pbx)
        } else {
            (pbx, carrier)
        };
        Flow {
            transport: Transport::Tcp,
            src,
            dst,
        }
    };
    let header = PcapHeader {
        datalink: DataLink::WIRESHARK_UPPER_PDU,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap_or_else(|e| panic!("{e}"));
    for (ms, from_carrier, text) in dialog(false, None) {
        let text = text
            .replace("SIP/2.0/UDP", "SIP/2.0/TLS")
            .replace('\n', "\r\n");
        let record = upper_pdu::record(flow(from_carrier), text.as_bytes());
        let ts = Duration::from_secs(T0) + Duration::from_millis(ms);
        w.write_packet(&PcapPacket::new(ts, record.len() as u32, &record))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let wd = workdir(false);
    std::fs::write(&wd.cap, w.into_writer()).unwrap_or_else(|e| panic!("{e}"));
    let pbx_port = free_port();
    let cg = callgate_to(pbx_port, "tcp");
    let (carrier, pbx) = convert_and_run(&wd, &[], &cg, pbx_port, "t1", &[]);
    carrier.assert_all_ok(1, "generated UAC (carrier)");
    pbx.assert_all_ok(1, "generated UAS (PBX)");
    let uac = std::fs::read_to_string(wd.out.join("uac.xml")).unwrap_or_default();
    assert!(
        uac.contains("X-Case: replay-from-capture"),
        "the decrypted INVITE's headers are kept: {uac}"
    );
}

/// A call the caller cancels while it rings: INVITE, 100, 180, CANCEL,
/// 200 to the CANCEL, 487 to the INVITE, ACK. The generated CANCEL carries
/// its INVITE's branch (sipp's `[branch]` is new for every message: the
/// CANCEL matched no transaction and was answered 481), and the UAS's 487
/// keeps the INVITE's CSeq (`[last_CSeq:]` would copy the CANCEL's). The
/// pair replays through callgate: the PBX side sees the CANCEL and ACKs.
#[test]
fn a_call_cancelled_while_ringing_replays() {
    let h = |to: &str, cseq: &str| -> Vec<String> {
        vec![
            "Via: SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK-cap-9".into(),
            "From: <sip:+15550199@carrier.example>;tag=car-9".into(),
            format!("To: {to}"),
            "Call-ID: cancelled-call@carrier.example".into(),
            format!("CSeq: {cseq}"),
        ]
    };
    let to = "<sip:+15550100@127.0.0.20>";
    let to_tagged = "<sip:+15550100@127.0.0.20>;tag=pbx-9";
    let req = |method: &str, to: &str, cseq: &str, extra: &[&str], body: &str| {
        let mut v = h(to, cseq);
        v.push("Max-Forwards: 70".into());
        v.extend(extra.iter().map(|e| (*e).to_owned()));
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        message(
            &format!("{method} sip:+15550100@127.0.0.20 SIP/2.0"),
            &v,
            body,
        )
    };
    let resp = |status: &str, to: &str, cseq: &str| {
        let v = h(to, cseq);
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        message(&format!("SIP/2.0 {status}"), &v, "")
    };
    let invite_extra = [
        "Contact: <sip:+15550199@127.0.0.10:5060>",
        "Content-Type: application/sdp",
    ];
    let dialog = vec![
        (
            0,
            true,
            req("INVITE", to, "1 INVITE", &invite_extra, SDP_CARRIER),
        ),
        (1, false, resp("100 Trying", to, "1 INVITE")),
        (150, false, resp("180 Ringing", to_tagged, "1 INVITE")),
        (600, true, req("CANCEL", to, "1 CANCEL", &[], "")),
        (601, false, resp("200 OK", to, "1 CANCEL")),
        (
            602,
            false,
            resp("487 Request Terminated", to_tagged, "1 INVITE"),
        ),
        (603, true, req("ACK", to_tagged, "1 ACK", &[], "")),
    ];
    let w = workdir(false);
    std::fs::write(&w.cap, pcap_of(&dialog)).unwrap_or_else(|e| panic!("{e}"));
    let pbx_port = free_port();
    let cg = callgate_to(pbx_port, "udp");
    let (carrier, pbx) = convert_and_run(&w, &[], &cg, pbx_port, "u1", &[]);
    let uac = std::fs::read_to_string(w.out.join("uac.xml")).unwrap_or_default();
    assert_eq!(
        uac.matches("branch=z9hG4bK-[pid]-[call_number]-invite1")
            .count(),
        2,
        "the INVITE and its CANCEL share a branch: {uac}"
    );
    carrier.assert_all_ok(1, "generated UAC (carrier)");
    pbx.assert_all_ok(1, "generated UAS (PBX)");
    assert_eq!(pbx.received_requests("CANCEL").len(), 1, "{}", pbx.messages);
    assert!(
        pbx.messages.contains("CSeq: 1 INVITE") && pbx.messages.contains("487 Request Terminated"),
        "{}",
        pbx.messages
    );
}

#[test]
fn a_missing_call_id_is_named_and_exits_1() {
    let w = workdir(false);
    let r = to_sipp(&w, &["--call-id", "nope"]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("\"nope\"") && err.contains("captured-call-1@carrier.example"),
        "{err}"
    );
    assert!(!w.out.join("uac.xml").exists());
    // Not a capture at all: exit 2, the file named.
    std::fs::write(&w.cap, b"not a capture").unwrap_or_else(|e| panic!("{e}"));
    let r = to_sipp(&w, &[]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("call.pcap"));
}

/// The P-Asserted-Identity line of the one INVITE the PBX side got.
fn forwarded_pai(pbx: &common::SippResult) -> String {
    let invites = pbx.received_requests("INVITE");
    assert_eq!(invites.len(), 1, "{}", pbx.messages);
    invites[0]
        .lines()
        .find(|l| l.starts_with("P-Asserted-Identity:"))
        .unwrap_or_else(|| panic!("no P-Asserted-Identity: {}", invites[0]))
        .to_owned()
}

/// Makes `path` readable by its owner only, as a key file must be.
fn owner_only(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_signed_capture_replays_re_signed_or_stale_on_purpose() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let x5u = format!("https://127.0.0.1:{port}/good.pem");
    // Signed when captured, thirteen days before this test's clock
    // could read it: stale.
    let captured = identity_header(
        &pki.signing,
        &SignRequest {
            orig: "+15550199",
            dest: "+15550100",
            attest: 'A',
            origid: "123e4567-e89b-12d3-a456-426614174000",
            x5u: &x5u,
            iat: T0 as i64,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stir = format!(
        "[stir]\nenabled = true\ntrust_dir = \"{}\"\nx5u_ca = [\"{}\"]\nallow_private_x5u = true\ndeadline_ms = 2000\n",
        pki.trust_dir.display(),
        pki.web_ca.display()
    );

    // Re-signed with the test PKI's key: verified, attestation A kept.
    let w = workdir_signed(false, Some(&captured));
    let key = w.cap.with_file_name("sti-key.pem");
    std::fs::write(&key, &pki.signing_pem).unwrap_or_else(|e| panic!("{e}"));
    owner_only(&key);
    let key = key.display().to_string();
    let pbx = replay(&w, &["--resign", &key, "--x5u", &x5u], "udp", &stir);
    let pai = forwarded_pai(&pbx);
    assert!(pai.contains(";verstat=TN-Validation-Passed-A"), "{pai}");
    let readme = std::fs::read_to_string(w.out.join("README.md")).unwrap_or_default();
    assert!(readme.contains("re-signed at conversion time"), "{readme}");

    // Kept on purpose: the stale PASSporT fails verification.
    let w = workdir_signed(false, Some(&captured));
    let pbx = replay(&w, &["--keep-identity"], "udp", &stir);
    let pai = forwarded_pai(&pbx);
    assert!(pai.contains(";verstat=TN-Validation-Failed"), "{pai}");

    // Neither flag: converted as captured, with a warning on stderr.
    let r = to_sipp(&w, &[]);
    assert!(r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("iat is stale"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

#[test]
fn a_wrong_resign_key_is_named_and_exits_2() {
    let w = workdir(false);
    let x5u = "https://127.0.0.1:8443/sti.pem";
    // The capture itself where the key belongs (owner-only, not a key).
    owner_only(&w.cap);
    let cap = w.cap.display().to_string();
    let r = to_sipp(&w, &["--resign", &cap, "--x5u", x5u]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("--resign") && err.contains("call.pcap"),
        "{err}"
    );
    assert!(err.contains("P-256 private key"), "{err}");
    assert!(!w.out.join("uac.xml").exists());
    // --resign needs --x5u, and excludes --keep-identity.
    let r = to_sipp(&w, &["--resign", &cap]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--x5u"));
    let r = to_sipp(&w, &["--resign", &cap, "--x5u", x5u, "--keep-identity"]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--keep-identity"));
}

/// `test-calls/replay.sh --dir` runs a to-sipp output through a running
/// callgate as a tester would: the generated UAS on the PBX port, the UAC
/// against the trunk, both sides' sipp logs in the `--logs` directory, and
/// sipp options passed through (`-trace_msg`; the UAC's `-p` after `--`).
#[test]
fn replay_sh_runs_a_to_sipp_directory_and_keeps_sipps_logs() {
    let w = workdir(false);
    convert(&w);
    let pbx_port = free_port();
    let cg = callgate_to(pbx_port, "udp");
    let logs = w.out.with_file_name("sipp logs");
    let out = Command::new("bash")
        .arg(common::repo().join("test-calls/replay.sh"))
        .arg("--dir")
        .arg(&w.out)
        .args(["--target", &cg.trunk(), "--local-ip", "127.0.0.1"])
        .args(["--pbx-port", &pbx_port.to_string()])
        .arg("--logs")
        .arg(&logs)
        .args(["-trace_msg", "-trace_err", "--", "-p"])
        .arg(free_port().to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run replay.sh: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "replay.sh: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("sipp logs in {}", logs.display())),
        "{stdout}"
    );
    assert!(stdout.contains("1 successful, 0 failed"), "{stdout}");
    let read = |name: &str| {
        std::fs::read_to_string(logs.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for stats in ["uac_stats.csv", "uas_stats.csv"] {
        assert!(read(stats).contains("SuccessfulCall(C)"), "{stats}");
    }
    // The UAS's message log: the INVITE callgate forwarded, with the
    // captured caller's header.
    let uas = read("uas_messages.log");
    assert!(
        uas.contains("message received") && uas.contains("X-Case: replay-from-capture"),
        "{uas}"
    );
    assert!(read("uac_messages.log").contains("INVITE sip:"));
}

/// The policy of the expectation tests: a number on the fraud list scores
/// `weight` (70: high, review; 10: low, tag; 95: critical, 608).
fn fraud_policy(weight: u32) -> String {
    format!(
        r#"
version = "expect-{weight}"
[levels]
medium = 30
high = 60
critical = 90
[level.high]
action = "review"
[level.critical]
action = "reject"
reject_code = 608
[review]
uri = "sip:review@127.0.0.1"
[lists.fraud]
numbers = ["+15550199"]
[[rule]]
code = "KNOWN_FRAUD"
weight = {weight}
when = {{ list = "fraud" }}
"#
    )
}

/// A callgate verifying with the test PKI and deciding under the policy
/// file `policy`, sending calls to 127.0.0.1:`pbx_port`.
fn callgate_with_policy(
    pki: &common::pki::Pki,
    policy: &std::path::Path,
    pbx_port: u16,
) -> Callgate {
    let more = format!(
        "[stir]\nenabled = true\ntrust_dir = \"{}\"\nx5u_ca = [\"{}\"]\nallow_private_x5u = true\ndeadline_ms = 2000\n\n[risk]\npolicy = \"{}\"\n",
        pki.trust_dir.display(),
        pki.web_ca.display(),
        policy.display()
    );
    let ports = Ports::new();
    Callgate::start(
        ports,
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port};transport=udp")],
            &["sip:127.0.0.1:9;transport=udp".to_owned()],
            &more,
        ),
    )
}

/// A signed capture (stale PASSporT of the test PKI) in a work
/// directory, with the key to re-sign it (owner-only) and its x5u.
fn signed_workdir(pki: &common::pki::Pki, x5u: &str) -> (Workdir, String) {
    let captured = identity_header(
        &pki.signing,
        &SignRequest {
            orig: "+15550199",
            dest: "+15550100",
            attest: 'A',
            origid: "123e4567-e89b-12d3-a456-426614174000",
            x5u,
            iat: T0 as i64,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let w = workdir_signed(false, Some(&captured));
    let key = w.cap.with_file_name("sti-key.pem");
    std::fs::write(&key, &pki.signing_pem).unwrap_or_else(|e| panic!("{e}"));
    owner_only(&key);
    (w, key.display().to_string())
}

/// What the expectation tests start from: the test PKI and its x5u
/// server, a signed capture of a caller on the fraud list (`signed_workdir`)
/// with the key to re-sign it, `fraud_policy(weight)` in a file next to it,
/// and a callgate deciding under that file toward `pbx_port`.
struct FraudCase {
    _pki: common::pki::Pki,
    w: Workdir,
    key: String,
    x5u: String,
    policy: std::path::PathBuf,
    pbx_port: u16,
    cg: Callgate,
}

fn fraud_case(weight: u32) -> FraudCase {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let x5u = format!("https://127.0.0.1:{port}/good.pem");
    let (w, key) = signed_workdir(&pki, &x5u);
    let policy = w.cap.with_file_name("policy.toml");
    std::fs::write(&policy, fraud_policy(weight)).unwrap_or_else(|e| panic!("{e}"));
    let pbx_port = free_port();
    let cg = callgate_with_policy(&pki, &policy, pbx_port);
    FraudCase {
        _pki: pki,
        w,
        key,
        x5u,
        policy,
        pbx_port,
        cg,
    }
}

/// `--expect` turns the replay into a regression test of callgate's
/// decision: the generated UAS checks the level, reasons, verstat and the
/// review queue's Request-URI on the INVITE callgate forwards. It passes
/// under the policy that reviews the call, fails (sipp exits non-zero)
/// once a reload lets the call through to the agents, and passes again
/// with the policy restored.
#[test]
fn an_expectation_fails_the_replay_when_the_policy_lets_the_call_through() {
    let FraudCase {
        _pki,
        w,
        key,
        x5u,
        policy,
        pbx_port,
        cg,
    } = fraud_case(70);
    let expect = "level=high,action=review,review_uri=sip:review@127.0.0.1,\
                  verstat=TN-Validation-Passed-A,reasons=KNOWN_FRAUD";
    let args = ["--resign", &key, "--x5u", &x5u, "--expect", expect];
    let run = || convert_and_run(&w, &args, &cg, pbx_port, "u1", &[]);

    let (carrier, pbx) = run();
    carrier.assert_all_ok(1, "UAC, reviewing policy");
    pbx.assert_all_ok(1, "UAS checking the review, reviewing policy");
    let uas = std::fs::read_to_string(w.out.join("uas.xml")).unwrap_or_default();
    assert!(uas.contains("check_it=\"true\""), "{uas}");

    // The call now goes to the agents, tagged low: the UAS's checks fail.
    std::fs::write(&policy, fraud_policy(10)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cg.admin("POST", "/reload"), (200, "reloaded\n".to_owned()));
    let (_, pbx) = run();
    assert_ne!(
        pbx.code,
        Some(0),
        "the UAS passed a call that was let through"
    );
    assert_eq!(pbx.failed, 1, "{}", pbx.errors);
    assert!(
        pbx.errors.contains("Failed regexp match") && pbx.errors.contains("low;"),
        "{}",
        pbx.errors
    );
    let invites = pbx.received_requests("INVITE");
    assert_eq!(invites.len(), 1, "{}", pbx.messages);
    assert!(
        invites[0].starts_with("INVITE sip:+15550100@"),
        "{}",
        invites[0]
    );

    // Restored: passes again.
    std::fs::write(&policy, fraud_policy(70)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cg.admin("POST", "/reload"), (200, "reloaded\n".to_owned()));
    let (carrier, pbx) = run();
    carrier.assert_all_ok(1, "UAC, policy restored");
    pbx.assert_all_ok(1, "UAS checking the review, policy restored");
}

/// `--expect action=reject`: the UAC passes only when callgate refuses
/// the call with the status (608 under this policy) and it reaches no PBX
/// (none listens: a forwarded call would end in 408 or 503, not 608).
#[test]
fn an_expected_refusal_is_checked_by_the_uac() {
    let FraudCase {
        _pki,
        w,
        key,
        x5u,
        policy,
        pbx_port: _,
        cg,
    } = fraud_case(95);
    let converted = to_sipp(
        &w,
        &[
            "--resign",
            &key,
            "--x5u",
            &x5u,
            "--expect",
            "action=reject,status=608",
        ],
    );
    assert!(
        converted.status.success(),
        "{}",
        String::from_utf8_lossy(&converted.stderr)
    );
    let uac = w.out.join("uac.xml").display().to_string();
    let carrier = Sipp::uac(&uac, &cg.trunk(), 1, 1, "u1", &[]);
    carrier.assert_all_ok(1, "UAC expecting the 608");
    // Under a policy that reviews it, the same UAC fails.
    std::fs::write(&policy, fraud_policy(70)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cg.admin("POST", "/reload"), (200, "reloaded\n".to_owned()));
    let converted = to_sipp(
        &w,
        &[
            "--resign",
            &key,
            "--x5u",
            &x5u,
            "--expect",
            "action=reject,status=608",
        ],
    );
    assert!(converted.status.success());
    let carrier = Sipp::uac(&uac, &cg.trunk(), 1, 1, "u1", &[]);
    assert_ne!(
        carrier.code,
        Some(0),
        "the UAC passed a call that was not refused"
    );
}

/// Without `--expect`, the generated UAS logs what callgate wrote on the
/// INVITE (sipp's `-trace_logs`), for the tester to read.
#[test]
fn without_expectations_the_uas_logs_the_tags_it_saw() {
    let FraudCase {
        _pki,
        w,
        key,
        x5u,
        policy: _,
        pbx_port,
        cg,
    } = fraud_case(70);
    let log = w.cap.with_file_name("uas-actions.log");
    let log_arg = log.display().to_string();
    let (carrier, pbx) = convert_and_run(
        &w,
        &["--resign", &key, "--x5u", &x5u],
        &cg,
        pbx_port,
        "u1",
        &["-trace_logs", "-log_file", &log_arg],
    );
    carrier.assert_all_ok(1, "UAC");
    pbx.assert_all_ok(1, "logging UAS");
    let logged = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    for seen in [
        "callgate forwarded: INVITE sip:review@127.0.0.1",
        "X-Callgate-Risk: high;score=70;policy=expect-70",
        "X-Callgate-Reasons: KNOWN_FRAUD",
        "X-Callgate-Verify: passed;attest=A",
        "verstat=TN-Validation-Passed-A",
    ] {
        assert!(logged.contains(seen), "the log lacks {seen:?}:\n{logged}");
    }
}

/// The captured call's RTP (15 packets each way) is replayed with it:
/// the converter writes each side's stream next to the scenarios, each
/// scenario plays its own from the ACK on (`play_pcap_audio`), and
/// callgate's relay carries all 30 packets, each to the other side's media
/// port (watched there with tcpdump: sipp 3.6 cannot assert RTP it
/// receives).
#[test]
fn the_captured_rtp_is_replayed_through_callgates_relay() {
    let w = workdir(false);
    std::fs::write(&w.cap, pcap_with_rtp(&dialog(false, None), 15))
        .unwrap_or_else(|e| panic!("{e}"));
    let pbx_port = free_port();
    let ports = Ports::new();
    let relay = common::free_ports(20);
    let cg = Callgate::start(
        ports,
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port};transport=udp")],
            &["sip:127.0.0.1:9;transport=udp".to_owned()],
            &format!(
                "[media]\nenabled = true\nport_min = {relay}\nport_max = {}\n",
                relay + 19
            ),
        ),
    );
    convert(&w);
    for (name, packets) in [("uac-rtp.pcap", 15), ("uas-rtp.pcap", 15)] {
        let file = std::fs::read(w.out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let read = callgate::capture::read(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.payloads.len(), packets, "{name}");
    }
    let uac = std::fs::read_to_string(w.out.join("uac.xml")).unwrap_or_default();
    assert!(uac.contains("<exec play_pcap_audio=\""), "{uac}");
    assert!(uac.contains("/uac-rtp.pcap\"/>"), "{uac}");
    let readme = std::fs::read_to_string(w.out.join("README.md")).unwrap_or_default();
    assert!(readme.contains("## Media"), "{readme}");

    // Each side's media port watched on `lo`: what reaches it is what
    // the relay delivered.
    let (uas_media, uac_media, marker) =
        (common::free_ports(4), common::free_ports(4), free_port());
    let cap_path = w.cap.with_file_name("media.pcap");
    let capture = common::live_capture::LiveCapture::tcpdump(
        "lo",
        &format!("udp and (dst port {uas_media} or dst port {uac_media} or port {marker})"),
        &cap_path,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pbx = Sipp::uas(
        &w.out.join("uas.xml").display().to_string(),
        pbx_port,
        1,
        "u1",
        &["-mp", &uas_media.to_string()],
    );
    let carrier = Sipp::uac(
        &w.out.join("uac.xml").display().to_string(),
        &cg.trunk(),
        1,
        1,
        "u1",
        &["-mp", &uac_media.to_string()],
    );
    carrier.assert_all_ok(1, "UAC playing the caller's RTP");
    pbx.finish()
        .assert_all_ok(1, "UAS playing the callee's RTP");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let cap = capture.finish(|m| {
        let _ = sock.send_to(m, ("127.0.0.1", marker));
    });
    let read = callgate::capture::read(&cap).unwrap_or_else(|e| panic!("{e}"));
    let arrived = |port: u16, ssrc: u8| {
        read.payloads
            .iter()
            .filter(|p| p.flow.dst.port() == port && p.data.len() == 172 && p.data[11] == ssrc)
            .count()
    };
    // The callee got the caller's 15 packets, the caller the callee's.
    assert_eq!(arrived(uas_media, 7), 15, "{:?}", read.stats);
    assert_eq!(arrived(uac_media, 9), 15, "{:?}", read.stats);
    common::await_metric(&cg, "callgate_media_packets_total", 30.0);
}
