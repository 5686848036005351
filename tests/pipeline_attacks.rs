//! An attacker on the trunk against the one call pipeline, through the real
//! binary over UDP, TCP and TLS (issue 12's five cases). Each case is sent
//! on one carrier connection followed by a sentinel OPTIONS on the same
//! connection; what reached the PBX before the sentinel is what callgate
//! let through. Callgate runs with verification (no Identity here, so every
//! call is marked `No-TN-Validation`) and a policy that tags every call.

mod common;

use common::carrier::{sentinel, Carrier, Pbx, Wire, WIRES};
use common::pki::pki;
use common::{config, Callgate, Ports, LOOPBACK};

const POLICY: &str = r#"
version = "attacks-1"
[levels]
medium = 30
high = 60
critical = 90
[[rule]]
code = "UNSIGNED"
weight = 10
when = { stir = "none" }
"#;

struct Rig {
    cg: Callgate,
    pbx: Pbx,
    _pki: common::pki::Pki,
}

fn rig() -> Rig {
    let pki = pki();
    let pbx = Pbx::bind();
    let policy = pki._dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).expect("policy");
    let extra = format!(
        "[stir]\nenabled = true\ntrust_dir = \"{}\"\n\n[risk]\npolicy = \"{}\"\n",
        pki.trust_dir.display(),
        policy.display(),
    );
    let ports = Ports::new();
    let cfg = config(
        ports,
        &[format!("sip:127.0.0.1:{}", pbx.port())],
        &["sip:127.0.0.1:9".to_owned()],
        &extra,
    );
    Rig {
        cg: Callgate::start(ports, &cfg),
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
