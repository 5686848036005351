//! RFC 4475 / RFC 5118 torture messages sent over UDP to a running callgate.
//!
//! Each message goes to the trunk side from a fresh carrier socket, followed
//! by a valid sentinel OPTIONS. The PBX side forwards to a test socket that
//! answers every request (486 to INVITE, 200 to anything else), so all of a
//! torture message's effects happen before the sentinel's: what reached the
//! PBX socket before the sentinel was forwarded, and the first final
//! response the carrier got before the sentinel's 200 is callgate's answer.
//! No timed waits: the sentinel is the barrier.
//!
//! The corpus runs twice: against a plain proxy, and against the full
//! inbound pipeline (STIR/SHAKEN verify, risk policy, audit), where initial
//! INVITEs from the trunk take every phase before the core forwards them.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::pki::{pki, Pki};
use common::{config, Callgate, Ports, LOOPBACK};

/// What RFC 4475 / RFC 5118 expect of a proxy for one message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Valid: processed normally — forwarded, or answered with anything but 400/505.
    Processed,
    /// Answered with exactly this status and not forwarded.
    Status(u16),
    /// Invalid request: answered 400 (505 for a bad version) or dropped; never forwarded.
    Rejected,
    /// A response: nothing forwarded.
    ResponseDropped,
    /// Valid, but routed by its own Route header elsewhere than the PBX
    /// target (so not observable here): must not be refused.
    NotRefused,
    /// Ambiguous in the RFC: anything but a crash.
    Any,
}

fn expectations() -> Vec<(&'static str, Expect)> {
    use Expect::*;
    vec![
        // RFC 4475 §3.1.1: valid messages.
        ("rfc4475/wsinv.dat", Processed),
        ("rfc4475/intmeth.dat", Processed),
        ("rfc4475/esc01.dat", Processed),
        ("rfc4475/escnull.dat", Processed),
        ("rfc4475/esc02.dat", Processed),
        ("rfc4475/lwsdisp.dat", Processed),
        ("rfc4475/longreq.dat", Processed),
        ("rfc4475/dblreq.dat", Processed),
        ("rfc4475/semiuri.dat", Processed),
        ("rfc4475/transports.dat", Processed),
        // Carries `Route: <sip:127.0.0.1:5080>`: loose-routed there.
        ("rfc4475/mpart01.dat", NotRefused),
        ("rfc4475/unreason.dat", ResponseDropped),
        ("rfc4475/noreason.dat", ResponseDropped),
        // §3.1.2: invalid messages.
        ("rfc4475/badinv01.dat", Rejected),
        ("rfc4475/clerr.dat", Rejected),
        ("rfc4475/ncl.dat", Rejected),
        ("rfc4475/scalar02.dat", Rejected),
        ("rfc4475/scalarlg.dat", Rejected),
        ("rfc4475/quotbal.dat", Rejected),
        ("rfc4475/ltgtruri.dat", Rejected),
        ("rfc4475/lwsruri.dat", Rejected),
        ("rfc4475/lwsstart.dat", Rejected),
        ("rfc4475/trws.dat", Rejected),
        ("rfc4475/escruri.dat", Rejected),
        ("rfc4475/baddate.dat", Rejected),
        ("rfc4475/regbadct.dat", Rejected),
        ("rfc4475/badaspec.dat", Rejected),
        ("rfc4475/baddn.dat", Rejected),
        ("rfc4475/badvers.dat", Rejected),
        ("rfc4475/mismatch01.dat", Rejected),
        ("rfc4475/mismatch02.dat", Rejected),
        ("rfc4475/bigcode.dat", ResponseDropped),
        // §3.2 transaction layer.
        ("rfc4475/badbranch.dat", Processed),
        // §3.3 application layer.
        ("rfc4475/insuf.dat", Status(400)),
        ("rfc4475/unkscm.dat", Status(416)),
        ("rfc4475/novelsc.dat", Status(416)),
        ("rfc4475/unksm2.dat", Processed),
        ("rfc4475/bext01.dat", Status(420)),
        ("rfc4475/invut.dat", Processed),
        ("rfc4475/regaut01.dat", Processed),
        ("rfc4475/multi01.dat", Rejected),
        ("rfc4475/mcl01.dat", Rejected),
        ("rfc4475/bcast.dat", ResponseDropped),
        ("rfc4475/zeromf.dat", Status(483)),
        ("rfc4475/cparam01.dat", Processed),
        ("rfc4475/cparam02.dat", Processed),
        ("rfc4475/regescrt.dat", Processed),
        ("rfc4475/sdp01.dat", Processed),
        // §3.4 backward compatibility.
        ("rfc4475/inv2543.dat", Processed),
        // RFC 5118.
        ("rfc5118/ipv6-good", Processed),
        ("rfc5118/ipv6-bad", Rejected),
        ("rfc5118/port-ambiguous", Processed),
        ("rfc5118/port-unambiguous", Processed),
        ("rfc5118/ipv6-correct-abnf-2-colons", Processed),
        ("rfc5118/ipv6-bug-abnf-3-colons", Any),
        ("rfc5118/via-received-param-with-delim", Processed),
        ("rfc5118/via-received-param-no-delim", Processed),
        ("rfc5118/ipv4-mapped-ipv6", Processed),
        ("rfc5118/mult-ip-in-header", Processed),
        ("rfc5118/mult-ip-in-sdp", Processed),
        ("rfc5118/ipv6-in-sdp", Processed),
    ]
}

/// Messages beyond the corpus: an RFC 5118 message with one address made
/// invalid by RFC 3261 §25.1 (`IPv6reference`, `via-received`), each of
/// which must be refused like `ipv6-bad`. Returned as (name, bytes, expect).
fn variants(corpus: &std::path::Path) -> Vec<(String, Vec<u8>, Expect)> {
    let good = std::fs::read_to_string(corpus.join("rfc5118/ipv6-good")).expect("ipv6-good");
    [
        // Two `::` in one address.
        ("sip:[2001:db8::10]", "sip:[2001:db8::10::1]"),
        // Nine groups.
        (
            "<sip:caller@[2001:db8::1]>",
            "<sip:caller@[1:2:3:4:5:6:7:8:9]>",
        ),
        // An IPv4 address in brackets.
        ("SIP/2.0/UDP [2001:db8::9:1]", "SIP/2.0/UDP [192.0.2.1]"),
        // `received` that is not an address.
        (
            ";branch=z9hG4bKas3-111",
            ";received=2001:db8::9::255;branch=z9hG4bKas3-111",
        ),
    ]
    .into_iter()
    .map(|(from, to)| {
        assert!(good.contains(from), "{from}");
        (
            format!("ipv6-good with {to}"),
            good.replacen(from, to, 1).into_bytes(),
            Expect::Rejected,
        )
    })
    .collect()
}

/// Header value by long or compact name (first occurrence), textually.
fn header<'a>(msg: &'a str, long: &str, compact: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(compact))
                .then_some(value.trim())
        })
}

/// Every Via line of a message, in order (for building a response).
fn via_lines(msg: &str) -> Vec<String> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| {
            l.split_once(':').is_some_and(|(n, _)| {
                n.trim().eq_ignore_ascii_case("via") || n.trim().eq_ignore_ascii_case("v")
            })
        })
        .map(|l| l.to_owned())
        .collect()
}

/// A test UAS's response, built textually (independent of callgate's code).
fn answer(req: &str, status: u16, reason: &str) -> String {
    let mut r = format!("SIP/2.0 {status} {reason}\r\n");
    for v in via_lines(req) {
        r.push_str(&v);
        r.push_str("\r\n");
    }
    for (long, compact) in [("From", "f"), ("To", "t"), ("Call-ID", "i"), ("CSeq", "")] {
        if let Some(v) = header(req, long, compact) {
            let tag = if long == "To" && !v.contains("tag=") {
                ";tag=pbx"
            } else {
                ""
            };
            r.push_str(&format!("{long}: {v}{tag}\r\n"));
        }
    }
    r.push_str("Content-Length: 0\r\n\r\n");
    r
}

fn status_of(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

fn sentinel(carrier_port: u16, n: usize) -> (String, String) {
    let call_id = format!("sentinel-{n}@torture");
    let msg = format!(
        "OPTIONS sip:pbx@{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{carrier_port};branch=z9hG4bK-sentinel-{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:carrier@{LOOPBACK}>;tag=s{n}\r\nTo: <sip:pbx@{LOOPBACK}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    (call_id, msg)
}

/// The configurations the corpus runs against.
#[derive(Debug, Clone, Copy)]
enum Pipeline {
    /// A plain proxy: no `[stir]`, no `[risk]`.
    Plain,
    /// Every inbound phase on: STIR/SHAKEN verification against the test
    /// PKI (as in tests/stir_calls.rs), the example risk policy of
    /// sip-config/policy.toml and the audit log.
    Full,
}

/// The `extra` config text of a pipeline; the audit database lives in the
/// PKI's directory.
fn extra(pipeline: Pipeline, pki: &Pki) -> String {
    match pipeline {
        Pipeline::Plain => String::new(),
        Pipeline::Full => format!(
            "[stir]\nenabled = true\ntrust_dir = \"{}\"\ndeadline_ms = 500\n\n[risk]\npolicy = \"{}\"\n\n[audit]\npath = \"{}\"\n",
            pki.trust_dir.display(),
            common::repo().join("sip-config/policy.toml").display(),
            pki._dir.path().join("audit.db").display()
        ),
    }
}

/// Sends the whole corpus and the [`variants`] to callgate configured as
/// `pipeline`; returns the messages that missed their RFC treatment.
fn run_corpus(pipeline: Pipeline, pki: &Pki) -> Vec<String> {
    let pbx = UdpSocket::bind((LOOPBACK, 0)).expect("pbx socket");
    pbx.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let pbx_port = pbx.local_addr().expect("addr").port();
    let corpus = common::repo().join("tests/sip-torture");
    let cases: Vec<(String, Vec<u8>, Expect)> = expectations()
        .into_iter()
        .map(|(file, expect)| {
            let data = std::fs::read(corpus.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            (file.to_owned(), data, expect)
        })
        .chain(variants(&corpus))
        .collect();
    let extra = extra(pipeline, pki);
    let mut failures = Vec::new();
    let mut parse_errors = 0.0;

    for (n, (file, data, expect)) in cases.iter().enumerate() {
        // A fresh callgate per message: several corpus messages share branch
        // and sent-by, which RFC 3261 §17.2.3 rightly matches as
        // retransmissions of one transaction.
        let ports = Ports::new();
        let target = [format!("sip:127.0.0.1:{pbx_port}")];
        let cfg = config(
            ports,
            &target,
            &["sip:127.0.0.1:9;transport=udp".to_owned()],
            &extra,
        );
        let callgate = Callgate::start(ports, &cfg);
        let carrier = UdpSocket::bind((LOOPBACK, 0)).expect("carrier socket");
        carrier.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let carrier_port = carrier.local_addr().expect("addr").port();
        carrier
            .send_to(data, callgate.trunk())
            .expect("send torture");
        let (sentinel_id, s) = sentinel(carrier_port, n);
        carrier
            .send_to(s.as_bytes(), callgate.trunk())
            .expect("send sentinel");

        // PBX side: everything before the sentinel was forwarded from the
        // torture message; answer each request so its transaction ends now.
        let mut forwarded = 0;
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((len, from)) = pbx.recv_from(&mut buf) else {
                panic!(
                    "{pipeline:?} {file}: sentinel never reached the PBX side — callgate stopped serving?\n{}",
                    callgate.log()
                );
            };
            let msg = String::from_utf8_lossy(&buf[..len]).into_owned();
            if msg.starts_with("ACK ") || msg.starts_with("SIP/2.0") {
                continue;
            }
            let is_sentinel = msg.contains(&sentinel_id);
            // The full pipeline really ran: an initial INVITE reaches the
            // PBX only tagged by the assess phase.
            let initial_invite = msg.starts_with("INVITE ")
                && !header(&msg, "To", "t").is_some_and(|t| t.contains("tag="));
            if matches!(pipeline, Pipeline::Full)
                && initial_invite
                && header(&msg, "X-Callgate-Risk", "").is_none()
            {
                failures.push(format!(
                    "{pipeline:?} {file}: an initial INVITE reached the PBX untagged"
                ));
            }
            let reply = if msg.starts_with("INVITE ") {
                answer(&msg, 486, "Busy Here")
            } else {
                answer(&msg, 200, "OK")
            };
            pbx.send_to(reply.as_bytes(), from).expect("pbx reply");
            if is_sentinel {
                break;
            }
            forwarded += 1;
        }
        // Carrier side: the first final response before the sentinel's 200.
        let mut answered = None;
        loop {
            let Ok((len, _)) = carrier.recv_from(&mut buf) else {
                panic!(
                    "{pipeline:?} {file}: no answer to the sentinel\n{}",
                    callgate.log()
                );
            };
            let msg = String::from_utf8_lossy(&buf[..len]).into_owned();
            if msg.contains(&sentinel_id) {
                break;
            }
            if let Some(st) = status_of(&msg).filter(|s| *s >= 200) {
                answered.get_or_insert(st);
            }
        }
        let ok = match *expect {
            Expect::Processed => {
                !matches!(answered, Some(400 | 505)) && (forwarded > 0 || answered.is_some())
            }
            Expect::Status(code) => answered == Some(code) && forwarded == 0,
            Expect::Rejected => forwarded == 0 && matches!(answered, None | Some(400) | Some(505)),
            Expect::ResponseDropped => forwarded == 0 && answered.is_none(),
            Expect::NotRefused => !matches!(answered, Some(400 | 403 | 505)),
            Expect::Any => true,
        };
        if file.ends_with("badvers.dat") && answered != Some(505) {
            failures.push(format!(
                "{pipeline:?} {file}: a bad SIP version is answered 505, got {answered:?}"
            ));
        }
        if !ok {
            failures.push(format!(
                "{pipeline:?} {file}: expected {expect:?}, got forwarded={forwarded} answered={answered:?}"
            ));
        }
        parse_errors += callgate.metric("callgate_sip_parse_errors_total{side=\"trunk\"}");
    }
    // Every invalid message was counted as a parse error.
    let invalid = cases
        .iter()
        .filter(|(_, _, e)| matches!(e, Expect::Rejected))
        .count();
    if parse_errors < invalid as f64 {
        failures.push(format!(
            "{pipeline:?}: {parse_errors} parse errors counted for {invalid} invalid messages"
        ));
    }
    failures
}

#[test]
fn torture_messages_get_their_rfc_treatment_and_the_proxy_keeps_serving() {
    let pki = pki();
    let failures: Vec<String> = [Pipeline::Plain, Pipeline::Full]
        .into_iter()
        .flat_map(|p| run_corpus(p, &pki))
        .collect();
    assert!(
        failures.is_empty(),
        "torture failures:\n{}",
        failures.join("\n")
    );
}
