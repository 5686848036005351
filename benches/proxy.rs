//! Criterion benchmark: one whole call through the sans-IO proxy core —
//! INVITE (→ 100 + forward), 180, 200, ACK, BYE, 200 — with realistic
//! messages. This is callgate's signalling CPU per call minus socket I/O.
//!
//! `cargo bench --bench proxy`

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

use callgate::api::metrics::Metrics;
use callgate::config::{Config, Side, Transport};
use callgate::sip::proxy::{CoreSettings, Outgoing, Peer, ProxyCore};

const SDP: &str = "v=0\r\no=carrier 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

fn invite(n: u64) -> String {
    format!(
        "INVITE sip:+15550100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n}-1;rport\r\nMax-Forwards: 70\r\nFrom: \"Caller\" <sip:+15550199@127.0.0.1>;tag=c{n}\r\nTo: <sip:+15550100@127.0.0.1>\r\nCall-ID: bench-{n}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:+15550199@127.0.0.1:5070>\r\nP-Asserted-Identity: <sip:+15550199@127.0.0.1;user=phone>\r\nSupported: timer, 100rel\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK\r\nUser-Agent: carrier-sbc/1.0\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

/// The PBX's response to the forwarded request `fwd`.
fn answer(fwd: &[u8], status: &str, to_tag: bool) -> String {
    let fwd = String::from_utf8_lossy(fwd);
    let mut r = format!("SIP/2.0 {status}\r\n");
    for line in fwd.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let l = line.to_ascii_lowercase();
        if l.starts_with("via:")
            || l.starts_with("from:")
            || l.starts_with("call-id:")
            || l.starts_with("cseq:")
            || l.starts_with("record-route:")
        {
            r.push_str(line);
            r.push_str("\r\n");
        } else if l.starts_with("to:") {
            r.push_str(line);
            r.push_str(if to_tag && !line.contains("tag=") {
                ";tag=pbx\r\n"
            } else {
                "\r\n"
            });
        }
    }
    r.push_str("Contact: <sip:agent@127.0.0.1:5080>\r\nContent-Length: 0\r\n\r\n");
    r
}

fn call(c: &mut Criterion) {
    let mut cfg = Config::embedded().unwrap_or_else(|e| panic!("{e}"));
    cfg.health.interval = std::time::Duration::ZERO;
    let metrics = Arc::new(Metrics::default());
    let mut core = ProxyCore::new(CoreSettings::from_config(&cfg), metrics, Instant::now(), 1);
    let carrier = Peer {
        side: Side::Trunk,
        transport: Transport::Udp,
        addr: ([127, 0, 0, 1], 5070).into(),
        conn: None,
    };
    let pbx = Peer {
        side: Side::Pbx,
        transport: Transport::Udp,
        addr: ([127, 0, 0, 1], 5080).into(),
        conn: None,
    };
    let mut out: Vec<Outgoing> = Vec::with_capacity(8);
    let mut n = 0u64;
    c.bench_function("proxy_core_whole_call", |b| {
        b.iter(|| {
            n += 1;
            let now = Instant::now();
            out.clear();
            core.on_message(carrier, Bytes::from(invite(n)), now, &mut out);
            let fwd = out.last().map(|o| o.bytes.clone()).unwrap_or_default();
            out.clear();
            core.on_message(pbx, Bytes::from(answer(&fwd, "180 Ringing", true)), now, &mut out);
            out.clear();
            core.on_message(pbx, Bytes::from(answer(&fwd, "200 OK", true)), now, &mut out);
            let ack = format!(
                "ACK sip:agent@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n}-2;rport\r\nRoute: <sip:127.0.0.1:5060;transport=udp;lr>, <sip:127.0.0.1:5062;transport=udp;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:+15550199@127.0.0.1>;tag=c{n}\r\nTo: <sip:+15550100@127.0.0.1>;tag=pbx\r\nCall-ID: bench-{n}@127.0.0.1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            );
            out.clear();
            core.on_message(carrier, Bytes::from(ack), now, &mut out);
            let bye = format!(
                "BYE sip:agent@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n}-3;rport\r\nRoute: <sip:127.0.0.1:5060;transport=udp;lr>, <sip:127.0.0.1:5062;transport=udp;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:+15550199@127.0.0.1>;tag=c{n}\r\nTo: <sip:+15550100@127.0.0.1>;tag=pbx\r\nCall-ID: bench-{n}@127.0.0.1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
            );
            out.clear();
            core.on_message(carrier, Bytes::from(bye), now, &mut out);
            let fwd_bye = out.last().map(|o| o.bytes.clone()).unwrap_or_default();
            out.clear();
            core.on_message(pbx, Bytes::from(answer(&fwd_bye, "200 OK", false)), now, &mut out);
            // Let transaction timers lapse so state does not grow.
            core.on_timer(now + std::time::Duration::from_secs(64), &mut out);
            std::hint::black_box(out.len())
        })
    });
}

criterion_group!(benches, call);
criterion_main!(benches);
