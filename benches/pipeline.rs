//! Criterion benchmark: what the call pipeline adds in front of the proxy
//! core for every message — the sanitize phase on a clean INVITE (the
//! common case: one scan, no copy) and on one carrying forged claims (a
//! rewrite and a second parse), the dialog table learning a call and
//! classifying its in-dialog request, and the live-call table (what
//! `callgate ctl calls` lists) following a call from its INVITE to its BYE.
//!
//! `cargo bench --bench pipeline`

use std::time::Instant;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

use callgate::config::Side;
use callgate::gate::sanitize::sanitize;
use callgate::sip::dialogs::{DialogLimits, DialogTable};
use callgate::sip::message::{Limits, SipMessage};

const SDP: &str = "v=0\r\no=carrier 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

fn invite(from: &str, extra: &str) -> SipMessage {
    let text = format!(
        "INVITE sip:+15550100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: <sip:+15550100@127.0.0.1>\r\nCall-ID: bench-1@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:+15550199@127.0.0.1:5070>\r\nP-Asserted-Identity: <sip:+15550199@127.0.0.1;user=phone>\r\nSupported: timer, 100rel\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK\r\nUser-Agent: carrier-sbc/1.0\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    SipMessage::parse(Bytes::from(text), &Limits::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn parse(text: String) -> SipMessage {
    SipMessage::parse(Bytes::from(text), &Limits::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let clean = invite("\"Caller\" <sip:+15550199@127.0.0.1>;tag=c1", "");
    c.bench_function("pipeline/sanitize_clean_invite", |b| {
        b.iter(|| sanitize(Side::Trunk, black_box(clean.clone()), &limits).is_ok())
    });
    let forged = invite(
        "<sip:+15550199;verstat=TN-Validation-Passed@127.0.0.1;user=phone>;tag=c1",
        "X-Callgate-Risk: low;score=0\r\nReason: STIR;cause=438\r\n",
    );
    c.bench_function("pipeline/sanitize_forged_invite", |b| {
        b.iter(|| sanitize(Side::Trunk, black_box(forged.clone()), &limits).is_ok())
    });

    // From the PBX: an answer naming the PBX (Server, User-Agent) is
    // rewritten without them and parsed again (conceal.rs); the trunk
    // screen on a carrier's INVITE (scanner signatures, method, numbers).
    let pbx_answer = parse(format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.9:5062;branch=z9hG4bK-cg1\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport=5070\r\nRecord-Route: <sip:127.0.0.9:5062;lr>\r\nFrom: <sip:+15550199@127.0.0.1>;tag=c1\r\nTo: <sip:+15550100@127.0.0.1>;tag=pbx1\r\nCall-ID: bench-1@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@127.0.0.1:5080>\r\nServer: Asterisk PBX 20.5.0\r\nUser-Agent: Asterisk PBX 20.5.0\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    ));
    c.bench_function("pipeline/sanitize_pbx_answer_concealed", |b| {
        b.iter(|| sanitize(Side::Pbx, black_box(pbx_answer.clone()), &limits).is_ok())
    });
    let screen_cfg = callgate::config::TrunkScreen {
        numbers: Some(vec![
            callgate::config::NumberPattern {
                digits: "1555012".into(),
                prefix: true,
            },
            callgate::config::NumberPattern {
                digits: "15550100".into(),
                prefix: false,
            },
        ]),
        ..Default::default()
    };
    c.bench_function("pipeline/screen_carrier_invite", |b| {
        b.iter(|| callgate::gate::screen::screen(&screen_cfg, black_box(&clean)))
    });

    // One call learnt (INVITE, 200) and an in-dialog INFO classified, in a table
    // holding 10,000 other dialogs.
    let mut table = DialogTable::new(DialogLimits::default());
    let now = Instant::now();
    let is_me = |rr: &[u8]| rr.windows(9).any(|w| w == b"127.0.0.9");
    let call = |n: u32| {
        let inv = parse(format!("INVITE sip:x@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n}\r\nFrom: <sip:+1555@c>;tag=a{n}\r\nTo: <sip:x@pbx>\r\nCall-ID: c{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:+1555@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"));
        let ok = parse(format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n}\r\nRecord-Route: <sip:127.0.0.9:5062;lr>, <sip:127.0.0.9:5060;lr>\r\nFrom: <sip:+1555@c>;tag=a{n}\r\nTo: <sip:x@pbx>;tag=b{n}\r\nCall-ID: c{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@127.0.0.1:5080>\r\nContent-Length: 0\r\n\r\n"));
        let info = parse(format!("INFO sip:agent@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb{n}\r\nFrom: <sip:+1555@c>;tag=a{n}\r\nTo: <sip:x@pbx>;tag=b{n}\r\nCall-ID: c{n}\r\nCSeq: 2 INFO\r\nContent-Length: 0\r\n\r\n"));
        (inv, ok, info)
    };
    for n in 0..10_000 {
        let (inv, ok, _) = call(n);
        table.initial(&inv, Side::Trunk, now);
        table.response(&ok, Side::Pbx, is_me, now);
    }
    let (inv, ok, info) = call(10_001);
    c.bench_function("pipeline/dialog_learn_and_classify", |b| {
        b.iter(|| {
            table.initial(black_box(&inv), Side::Trunk, now);
            table.response(black_box(&ok), Side::Pbx, is_me, now);
            table.request(black_box(&info), Side::Trunk, now)
        })
    });

    // The live-call table: a call opened at its INVITE, answered by the
    // 200 sent back to the trunk, closed by the BYE sent on, among 10,000
    // calls in progress (each message sent is parsed again for its
    // Call-ID: the whole cost `ctl calls` adds to a call).
    use callgate::gate::outcome::endings;
    let mut live = callgate::gate::outcome::Tracker::default();
    for n in 0..10_000 {
        let (inv, _, _) = call(n);
        live.open(&inv, Side::Trunk, Default::default(), 0);
    }
    let sent = |side, text: String| {
        vec![callgate::sip::proxy::Outgoing {
            to: callgate::sip::proxy::Peer {
                side,
                transport: callgate::config::Transport::Udp,
                addr: ([127, 0, 0, 1], 5070).into(),
                conn: None,
            },
            bytes: Bytes::from(text),
            client: None,
        }]
    };
    let ok_out = sent(Side::Trunk, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:+1555@c>;tag=a10001\r\nTo: <sip:x@pbx>;tag=b1\r\nCall-ID: c10001\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@127.0.0.1:5080>\r\nContent-Length: 0\r\n\r\n".into());
    let bye_out = sent(Side::Pbx, "BYE sip:agent@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5062;branch=z9hG4bKb1\r\nFrom: <sip:+1555@c>;tag=a10001\r\nTo: <sip:x@pbx>;tag=b1\r\nCall-ID: c10001\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n".into());
    c.bench_function("pipeline/live_call_open_answer_bye", |b| {
        b.iter(|| {
            live.open(black_box(&inv), Side::Trunk, Default::default(), 0);
            live.observe(&endings(black_box(&ok_out)), None);
            live.observe(&endings(black_box(&bye_out)), None);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
