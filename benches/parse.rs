//! Criterion benchmarks of the SIP message layer on a realistic ~1.2 KB
//! INVITE with SDP and an Identity header:
//! - `parse`: framing + header index (no typed views);
//! - `parse_and_splice`: parse and the forwarding splice below, without the
//!   semantic validation pass;
//! - `parse_and_forward`: parse, validation, the typed views a proxy reads, and the
//!   splice a proxy makes (Via and two Record-Routes prepended, the previous
//!   top Via stamped, Max-Forwards decremented, the top Route removed)
//!   written into a reused buffer.
//!
//! `cargo bench --bench parse`

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use callgate::sip::message::{HeaderName, Limits, SipMessage};
use callgate::sip::splice::Splice;

pub const INVITE: &str = concat!(
    "INVITE sip:+15550100@pbx.example.com;user=phone SIP/2.0\r\n",
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---4b1ce0e4c8d6;rport\r\n",
    "Max-Forwards: 70\r\n",
    "Route: <sip:198.51.100.1:5060;transport=udp;lr>, <sip:10.0.0.254:5062;lr>\r\n",
    "From: \"Caller Name\" <sip:+15550199@carrier.example.net;user=phone>;tag=a73kszlfl\r\n",
    "To: <sip:+15550100@pbx.example.com;user=phone>\r\n",
    "Call-ID: 1j9FpLxk3uxtm8tn@carrier.example.net\r\n",
    "CSeq: 1 INVITE\r\n",
    "Contact: <sip:+15550199@192.0.2.10:5060;transport=udp>\r\n",
    "P-Asserted-Identity: <sip:+15550199@carrier.example.net;user=phone>\r\n",
    "Identity: eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3Bhc3Nwb3J0LmNlciJ9.eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxNTU1MDEwMCJdfSwiaWF0IjoxNzAwMDAwMDAwLCJvcmlnIjp7InRuIjoiMTU1NTAxOTkifSwib3JpZ2lkIjoiMTIzZTQ1NjctZTg5Yi0xMmQzLWE0NTYtNDI2NjU1NDQwMDAwIn0.vjd8fc3oNkgg2xlSoCV3kd8G-WtVxBBGdbhR4dO4Tc1UWzTb0Ffs3zvNfnhQmrZqb2W8XOYhYaD5vS7HmOzKMw;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken\r\n",
    "Supported: timer, 100rel, replaces\r\n",
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, INFO\r\n",
    "User-Agent: carrier-sbc/4.2\r\n",
    "Content-Type: application/sdp\r\n",
    "Content-Length: 226\r\n",
    "\r\n",
    "v=0\r\n",
    "o=carrier 2890844526 2890844526 IN IP4 192.0.2.10\r\n",
    "s=-\r\n",
    "c=IN IP4 192.0.2.10\r\n",
    "t=0 0\r\n",
    "m=audio 49170 RTP/AVP 0 8 101\r\n",
    "a=rtpmap:0 PCMU/8000\r\n",
    "a=rtpmap:8 PCMA/8000\r\n",
    "a=rtpmap:101 telephone-event/8000\r\n",
    "a=fmtp:101 0-15\r\n",
    "a=ptime:20\r\n",
    "a=sendrecv\r\n",
);

fn bench(c: &mut Criterion) {
    let data = Bytes::from_static(INVITE.as_bytes());
    let limits = Limits::default();
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| SipMessage::parse(black_box(data.clone()), &limits).map(|m| m.headers().len()))
    });
    let mut out = Vec::with_capacity(2048);
    g.bench_function("parse_and_forward", |b| {
        b.iter(|| {
            let Ok(m) = SipMessage::parse(black_box(data.clone()), &limits) else { return 0 };
            if m.validate().is_err() {
                return 0;
            }
            let via = m.top_via().map(|v| v.branch.map_or(0, <[u8]>::len)).unwrap_or(0);
            let mf = m.max_forwards().ok().flatten().unwrap_or(70);
            let (Some(via_idx), Some(mf_idx), Some(route_idx)) = (m.first_index(HeaderName::Via), m.first_index(HeaderName::MaxForwards), m.first_index(HeaderName::Route)) else {
                return 0;
            };
            let mut sp = Splice::new(&m);
            sp.prepend_header(b"Record-Route: <sip:10.0.0.254:5062;transport=udp;lr>")
                .prepend_header(b"Record-Route: <sip:198.51.100.1:5060;transport=udp;lr>")
                .prepend_header(b"Via: SIP/2.0/UDP 10.0.0.254:5062;branch=z9hG4bK-cg0badc0de-1f2e3d4c5;rport")
                .replace_first_value(via_idx, b"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---4b1ce0e4c8d6;received=192.0.2.10;rport=5060")
                .replace_value(mf_idx, if mf == 70 { b"69" } else { b"0" })
                .remove_first_value(route_idx);
            out.clear();
            sp.write(&mut out);
            out.len() + via
        })
    });
    g.bench_function("parse_and_splice", |b| {
        b.iter(|| {
            let Ok(m) = SipMessage::parse(black_box(data.clone()), &limits) else { return 0 };
            let (Some(via_idx), Some(mf_idx), Some(route_idx)) = (m.first_index(HeaderName::Via), m.first_index(HeaderName::MaxForwards), m.first_index(HeaderName::Route)) else {
                return 0;
            };
            let mut sp = Splice::new(&m);
            sp.prepend_header(b"Record-Route: <sip:10.0.0.254:5062;transport=udp;lr>")
                .prepend_header(b"Record-Route: <sip:198.51.100.1:5060;transport=udp;lr>")
                .prepend_header(b"Via: SIP/2.0/UDP 10.0.0.254:5062;branch=z9hG4bK-cg0badc0de-1f2e3d4c5;rport")
                .replace_first_value(via_idx, b"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---4b1ce0e4c8d6;received=192.0.2.10;rport=5060")
                .replace_value(mf_idx, b"69")
                .remove_first_value(route_idx);
            out.clear();
            sp.write(&mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
