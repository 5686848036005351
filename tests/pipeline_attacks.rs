//! An attacker on the trunk against the one call pipeline, through the real
//! binary over UDP, TCP and TLS (issue 12's five cases). Each case is sent
//! on one carrier connection followed by a sentinel OPTIONS on the same
//! connection; what reached the PBX before the sentinel is what callgate
//! let through. Callgate runs with verification (no Identity here, so every
//! call is marked `No-TN-Validation`) and a policy that tags every call.

mod common;

use common::carrier::{pipeline_callgate, sentinel, Carrier, Pbx, Wire, WIRES};
use common::pki::pki;
use common::{config, Callgate, Ports, LOOPBACK};

struct Rig {
    cg: Callgate,
    pbx: Pbx,
    _pki: common::pki::Pki,
}

fn rig() -> Rig {
    let pki = pki();
    let pbx = Pbx::bind();
    Rig {
        cg: pipeline_callgate(&pki, &pbx, "attacks-1", ""),
        pbx,
        _pki: pki,
    }
}

/// An INVITE from the carrier on `c`, with `headers` (CRLF-terminated
/// lines) in place of the default From, and `to_tag` on To when given.
fn invite(
    c: &Carrier,
    call_id: &str,
    ruri: &str,
    from: &str,
    headers: &str,
    to_tag: &str,
) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {LOOPBACK}:{p};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: <sip:+15550100@{LOOPBACK}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:+14155550206@{LOOPBACK}:{p}>\r\n{headers}Content-Length: 0\r\n\r\n",
        t = c.wire.token(),
        p = c.port,
    )
}

const CALLER: &str = "<sip:+14155550206@carrier.example;user=phone>;tag=c1";

/// Sends `msg` then a sentinel on a new connection over `wire`; returns
/// what reached the PBX before the sentinel, and the carrier.
fn through(
    r: &Rig,
    wire: Wire,
    call_id: &str,
    build: impl Fn(&Carrier) -> String,
) -> (Vec<String>, Carrier) {
    let mut c = Carrier::connect(&r.cg, wire);
    let msg = build(&c);
    c.send(msg.as_bytes());
    let s = format!("{call_id}-sentinel");
    c.send(sentinel(&c, &s).as_bytes());
    let mut got = r.pbx.until(&s);
    got.pop();
    (got, c)
}

/// The INVITEs among `got`.
fn invites(got: &[String]) -> Vec<&String> {
    got.iter().filter(|m| m.starts_with("INVITE ")).collect()
}

fn count(hay: &str, needle: &str) -> usize {
    hay.to_ascii_lowercase()
        .matches(&needle.to_ascii_lowercase())
        .count()
}

/// Every call phase ran on it: exactly one risk tag and callgate's verstat.
fn assert_through_every_phase(fwd: &str, wire: Wire) {
    assert_eq!(count(fwd, "\nX-Callgate-Risk:"), 1, "{wire:?}: {fwd}");
    assert_eq!(count(fwd, "verstat"), 1, "{wire:?}: {fwd}");
    assert_eq!(
        count(fwd, ";verstat=No-TN-Validation"),
        1,
        "{wire:?}: {fwd}"
    );
}

#[test]
fn an_invite_after_leading_crlfs_takes_every_phase() {
    let r = rig();
    for wire in WIRES {
        let id = format!("crlf-{wire:?}");
        let (got, mut c) = through(&r, wire, &id, |c| {
            format!(
                "\r\n\r\n{}",
                invite(c, &id, &format!("sip:+15550100@{LOOPBACK}"), CALLER, "", "")
            )
        });
        let inv = invites(&got);
        assert_eq!(inv.len(), 1, "{wire:?}: {got:#?}");
        assert_through_every_phase(inv[0], wire);
        c.response(200, &id);
    }
    assert!(r.cg.metric("callgate_decisions_total{level=\"low\",action=\"tag\"}") >= 3.0);
    // Each answered call is a dialog callgate knows.
    assert_eq!(r.cg.metric("callgate_dialogs"), 3.0, "{}", r.cg.metrics());
}

#[test]
fn an_invite_with_a_to_tag_for_no_dialog_gets_481_and_never_reaches_the_pbx() {
    let r = rig();
    for wire in WIRES {
        let id = format!("totag-{wire:?}");
        // The Request-URI names the PBX itself, an address the PBX side admits.
        let ruri = format!("sip:+15550100@{LOOPBACK}:{}", r.pbx.port());
        let (got, mut c) = through(&r, wire, &id, |c| {
            invite(c, &id, &ruri, CALLER, "", ";tag=forged")
        });
        assert!(invites(&got).is_empty(), "{wire:?}: {got:#?}");
        c.response(481, &id);
        // An in-dialog BYE for no dialog is refused the same way.
        let bye_id = format!("bye-{wire:?}");
        let (got, mut c) = through(&r, wire, &bye_id, |c| {
            invite(c, &bye_id, &ruri, CALLER, "", ";tag=forged")
                .replacen("INVITE ", "BYE ", 1)
                .replace("CSeq: 1 INVITE", "CSeq: 2 BYE")
        });
        assert!(got.is_empty(), "{wire:?}: {got:#?}");
        c.response(481, &bye_id);
    }
    assert!(
        r.cg.metric("callgate_admission_refusals_total{side=\"trunk\",reason=\"no_dialog\"}")
            >= 6.0
    );
}

#[test]
fn an_in_dialog_request_goes_along_its_dialog_whatever_its_request_uri() {
    let r = rig();
    let ruri = format!("sip:+15550100@{LOOPBACK}");
    for wire in WIRES {
        let id = format!("route-{wire:?}");
        let (got, mut c) = through(&r, wire, &id, |c| invite(c, &id, &ruri, CALLER, "", ""));
        assert_eq!(invites(&got).len(), 1, "{wire:?}: {got:#?}");
        c.response(200, &id);
        // A BYE of that dialog (the PBX stand-in's To tag is `pbx`) whose
        // Request-URI names another address the PBX side admits: it goes
        // to the dialog's remote target, the PBX, all the same.
        let (got, mut c) = through(&r, wire, &id, |c| {
            invite(c, &id, "sip:elsewhere@127.0.0.1:9", CALLER, "", ";tag=pbx")
                .replacen("INVITE ", "BYE ", 1)
                .replace("CSeq: 1 INVITE", "CSeq: 2 BYE")
                .replace(
                    &format!("branch=z9hG4bK-{id};"),
                    &format!("branch=z9hG4bK-{id}-bye;"),
                )
        });
        assert!(
            got.iter()
                .any(|m| m.starts_with("BYE ") && m.contains(&format!("Call-ID: {id}\r\n"))),
            "{wire:?}: the BYE did not reach the PBX: {got:#?}"
        );
        c.response(200, &id);
    }
}

#[test]
fn forged_verstat_is_removed_from_every_identity_header() {
    let r = rig();
    let cases = [
        // In From, when a P-Asserted-Identity is present.
        (
            "<sip:+14155550206@carrier.example;user=phone;verstat=TN-Validation-Passed>;tag=c1",
            "P-Asserted-Identity: <sip:+14155550206@carrier.example;user=phone>\r\n",
        ),
        // In a second P-Asserted-Identity header, and in a second value.
        (
            CALLER,
            "P-Asserted-Identity: <sip:+14155550206@carrier.example;user=phone>\r\nP-Asserted-Identity: <tel:+14155550206;verstat=TN-Validation-Passed>\r\n",
        ),
        (
            CALLER,
            "P-Asserted-Identity: <sip:+14155550206@carrier.example;user=phone>, <tel:+14155550206;verstat=TN-Validation-Passed>\r\n",
        ),
        // Inside a display name, which the FreeSWITCH regex would read.
        (
            "\"verstat=TN-Validation-Passed-A\" <sip:+14155550206@carrier.example;user=phone>;tag=c1",
            "",
        ),
        // P-Preferred-Identity and Remote-Party-ID.
        (
            CALLER,
            "P-Preferred-Identity: <sip:+14155550206@carrier.example;verstat=TN-Validation-Passed>\r\nRemote-Party-ID: <sip:+14155550206@carrier.example;verstat=TN-Validation-Passed>;party=calling\r\n",
        ),
    ];
    for wire in WIRES {
        for (i, (from, headers)) in cases.iter().enumerate() {
            let id = format!("claim-{i}-{wire:?}");
            let (got, mut c) = through(&r, wire, &id, |c| {
                invite(
                    c,
                    &id,
                    &format!("sip:+15550100@{LOOPBACK}"),
                    from,
                    headers,
                    "",
                )
            });
            let inv = invites(&got);
            assert_eq!(inv.len(), 1, "{wire:?} case {i}: {got:#?}");
            assert_through_every_phase(inv[0], wire);
            c.response(200, &id);
        }
    }
}

#[test]
fn verstat_in_the_user_part_is_removed_and_the_call_completes() {
    let r = rig();
    for wire in WIRES {
        let id = format!("userpart-{wire:?}");
        let from =
            "<sip:+14155550206;verstat=TN-Validation-Passed@carrier.example;user=phone>;tag=c1";
        let (got, mut c) = through(&r, wire, &id, |c| {
            invite(c, &id, &format!("sip:+15550100@{LOOPBACK}"), from, "", "")
        });
        let inv = invites(&got);
        assert_eq!(inv.len(), 1, "{wire:?}: {got:#?}");
        assert_through_every_phase(inv[0], wire);
        assert!(
            inv[0].contains("From: <sip:+14155550206@carrier.example;user=phone;verstat=No-TN-Validation>;tag=c1\r\n"),
            "{wire:?}: the From callgate writes keeps its host: {}",
            inv[0]
        );
        // The PBX's 200 repeats that From; it must reach the carrier.
        c.response(200, &id);
    }
}

#[test]
fn a_bare_cr_inside_a_header_value_gets_400_and_never_reaches_the_pbx() {
    let r = rig();
    for wire in WIRES {
        let id = format!("cr-{wire:?}");
        let (got, mut c) = through(&r, wire, &id, |c| {
            invite(
                c,
                &id,
                &format!("sip:+15550100@{LOOPBACK}"),
                CALLER,
                "Subject: x\rX-Callgate-Risk: low;score=0\r\n",
                "",
            )
        });
        assert!(got.is_empty(), "{wire:?}: {got:#?}");
        c.response(400, &id);
    }
    assert!(
        r.cg.metric("callgate_admission_refusals_total{side=\"trunk\",reason=\"unsafe\"}") >= 3.0
    );
}

const SDP: &str = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

/// `msg` with an SDP body (its Content-Length replaced).
fn with_sdp(msg: &str) -> String {
    msg.replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        ),
    )
}

#[test]
fn only_calls_the_pipeline_let_in_get_relay_ports() {
    let pbx = Pbx::bind();
    let ports = Ports::new();
    let media_min = 48_000 + (std::process::id() % 50) as u16 * 20;
    let cfg = config(
        ports,
        &[format!("sip:127.0.0.1:{}", pbx.port())],
        &["sip:127.0.0.1:9".to_owned()],
        &format!(
            "[media]\nenabled = true\nport_min = {media_min}\nport_max = {}\n",
            media_min + 19
        ),
    );
    let cg = Callgate::start(ports, &cfg);
    let mut c = Carrier::connect(&cg, Wire::Udp);
    let ruri = format!("sip:+15550100@{LOOPBACK}");
    // OPTIONS and MESSAGE with SDP, a To-tagged INVITE of no dialog (481),
    // and a response to nothing callgate sent: none is a call.
    let options = with_sdp(
        &invite(&c, "p-options", &ruri, CALLER, "", "")
            .replacen("INVITE ", "OPTIONS ", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS"),
    );
    let message = with_sdp(
        &invite(&c, "p-message", &ruri, CALLER, "", "")
            .replacen("INVITE ", "MESSAGE ", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 MESSAGE"),
    );
    let stray = with_sdp(&invite(&c, "p-stray", &ruri, CALLER, "", ";tag=forged"));
    let response = with_sdp(&format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-cg-none\r\nFrom: {CALLER}\r\nTo: <sip:+15550100@{LOOPBACK}>;tag=x\r\nCall-ID: p-response\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        cg.ports.trunk
    ));
    // An INVITE the core refuses itself (Max-Forwards: 0 → 483) after the
    // pipeline anchored it: its media must end with the refusal.
    let refused = with_sdp(
        &invite(&c, "p-refused", &ruri, CALLER, "", "")
            .replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    for m in [&options, &message, &stray, &response, &refused] {
        c.send(m.as_bytes());
    }
    c.send(sentinel(&c, "p-sentinel").as_bytes());
    let got = pbx.until("p-sentinel");
    c.response(481, "p-stray");
    c.response(483, "p-refused");
    // Neither the stray nor the refused INVITE reached the PBX.
    assert!(got.iter().all(|m| !m.starts_with("INVITE ")), "{got:#?}");
    assert_eq!(
        cg.metric("callgate_media_sessions"),
        0.0,
        "{}",
        cg.metrics()
    );
    // Only the refused INVITE was a call the pipeline let in.
    assert!(
        cg.metric("callgate_media_sessions_created_total") <= 1.0,
        "{}",
        cg.metrics()
    );
    // A call does get its relay (so the counters above can move).
    let call = with_sdp(&invite(&c, "p-call", &ruri, CALLER, "", ""));
    c.send(call.as_bytes());
    c.send(sentinel(&c, "p-sentinel-2").as_bytes());
    let got = pbx.until("p-sentinel-2");
    let fwd = got
        .iter()
        .find(|m| m.starts_with("INVITE "))
        .expect("the call's INVITE");
    assert!(!fwd.contains("m=audio 40000 "), "SDP not anchored: {fwd}");
    assert!(
        cg.metric("callgate_media_sessions") >= 1.0,
        "{}",
        cg.metrics()
    );
}
