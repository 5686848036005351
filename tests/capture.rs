//! The capture reader (`callgate::capture`, behind `callgate replay
//! --pcap`) on captures written here with `pcap-file`'s writers and
//! `etherparse`'s headers: a signed INVITE larger than the MTU split into
//! IPv4 fragments (out of order) and IPv6 fragments, pcapng with a
//! nanosecond `if_tsresol`, Linux cooked captures (SLL, SLL2), VLAN tags,
//! a SIP message split across TCP segments that arrive out of order, the
//! bounds on incomplete fragment sets, and damaged or foreign files.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use etherparse::{
    EtherType, Ethernet2Header, IpFragOffset, IpNumber, Ipv4Header, Ipv6FragmentHeader, Ipv6Header,
    SingleVlanHeader, TcpHeader, UdpHeader, VlanId, VlanPcp,
};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::DataLink;

use callgate::capture::{self, CaptureError, Transport};
use callgate::sip::message::Limits;

const CARRIER: [u8; 4] = [127, 0, 0, 10];
const CALLGATE: [u8; 4] = [127, 0, 0, 20];
/// 2026-11-24T00:00:00Z.
const T0: u64 = 1_795_478_400;

/// A SHAKEN-signed INVITE (a real Identity header, RFC 8224) with an SDP
/// offer: over 1,500 bytes, so over an Ethernet MTU.
fn signed_invite(call: &str) -> Vec<u8> {
    use callgate::stir::sign::{identity_header, SignRequest};
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let signing = callgate::stir::keys::SigningKey::from_pem(key.serialize_pem().as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let identity = identity_header(
        &signing,
        &SignRequest {
            orig: "+15550199",
            dest: "+15550100",
            attest: 'A',
            origid: "6a1f3c2e-0000-4000-8000-000000000001",
            x5u: "https://cert.carrier.example/sti/shaken-2026.pem",
            iat: T0 as i64,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut sdp = String::from("v=0\r\no=carrier 1 1 IN IP4 127.0.0.10\r\ns=-\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 8 9 18 101\r\n");
    for (pt, codec) in [
        (0, "PCMU/8000"),
        (8, "PCMA/8000"),
        (9, "G722/8000"),
        (18, "G729/8000"),
        (101, "telephone-event/8000"),
    ] {
        sdp.push_str(&format!("a=rtpmap:{pt} {codec}\r\n"));
    }
    sdp.push_str("a=fmtp:18 annexb=no\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n");
    let mut extra = String::new();
    for i in 0..8 {
        extra.push_str(&format!(
            "X-Carrier-Trace-{i}: route=sbc-{i}.carrier.example;leg=ingress;hop={i}\r\n"
        ));
    }
    format!(
        "INVITE sip:+15550100@127.0.0.20 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK-{call}\r\nMax-Forwards: 70\r\nFrom: <sip:+15550199@carrier.example>;tag=t-{call}\r\nTo: <sip:+15550100@127.0.0.20>\r\nP-Asserted-Identity: <sip:+15550199@carrier.example;user=phone>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:+15550199@127.0.0.10:5060>\r\nIdentity: {identity}\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn udp(data: &[u8]) -> Vec<u8> {
    let mut l4 = UdpHeader {
        source_port: 5060,
        destination_port: 5060,
        length: (8 + data.len()) as u16,
        checksum: 0,
    }
    .to_bytes()
    .to_vec();
    l4.extend_from_slice(data);
    l4
}

/// IPv4 packets carrying `l4` (protocol `proto`), in fragments of at most
/// `mtu` bytes (RFC 791 §3.2).
fn ipv4_fragments(l4: &[u8], proto: IpNumber, id: u16, mtu: usize) -> Vec<Vec<u8>> {
    let chunk = (mtu - 20) / 8 * 8;
    let chunks: Vec<&[u8]> = l4.chunks(chunk).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let mut h = Ipv4Header::new(part.len() as u16, 64, proto, CARRIER, CALLGATE)
                .unwrap_or_else(|e| panic!("{e}"));
            h.identification = id;
            h.more_fragments = i + 1 < chunks.len();
            h.fragment_offset =
                IpFragOffset::try_new((i * chunk / 8) as u16).unwrap_or_else(|e| panic!("{e}"));
            h.header_checksum = h.calc_header_checksum();
            let mut p = h.to_bytes().to_vec();
            p.extend_from_slice(part);
            p
        })
        .collect()
}

/// IPv6 packets carrying UDP `l4` in fragments (RFC 8200 §4.5).
fn ipv6_fragments(l4: &[u8], id: u32, mtu: usize) -> Vec<Vec<u8>> {
    let chunk = (mtu - 48) / 8 * 8;
    let chunks: Vec<&[u8]> = l4.chunks(chunk).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let frag = Ipv6FragmentHeader::new(
                IpNumber::UDP,
                IpFragOffset::try_new((i * chunk / 8) as u16).unwrap_or_else(|e| panic!("{e}")),
                i + 1 < chunks.len(),
                id,
            );
            let h = Ipv6Header {
                traffic_class: 0,
                flow_label: Default::default(),
                payload_length: (8 + part.len()) as u16,
                next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
                hop_limit: 64,
                source: Ipv6Addr::LOCALHOST.octets(),
                destination: Ipv6Addr::LOCALHOST.octets(),
            };
            let mut p = h.to_bytes().to_vec();
            p.extend_from_slice(&frag.to_bytes());
            p.extend_from_slice(part);
            p
        })
        .collect()
}

fn ethernet(ether_type: EtherType, ip: &[u8]) -> Vec<u8> {
    let mut f = Ethernet2Header {
        source: [2, 0, 0, 0, 0, 1],
        destination: [2, 0, 0, 0, 0, 2],
        ether_type,
    }
    .to_bytes()
    .to_vec();
    f.extend_from_slice(ip);
    f
}

fn ethernet_vlan(vlan: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = ethernet(EtherType::VLAN_TAGGED_FRAME, &[]);
    let tag = SingleVlanHeader {
        pcp: VlanPcp::ZERO,
        drop_eligible_indicator: false,
        vlan_id: VlanId::try_new(vlan).unwrap_or_else(|e| panic!("{e}")),
        ether_type: EtherType::IPV4,
    };
    f.extend_from_slice(&tag.to_bytes());
    f.extend_from_slice(ip);
    f
}

/// Linux cooked capture v1 (16 bytes: packet type, ARPHRD, address).
fn sll(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    f.extend_from_slice(ip);
    f
}

/// Linux cooked capture v2 (20 bytes, the protocol first).
fn sll2(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
    ];
    f.extend_from_slice(ip);
    f
}

/// A classic pcap (microseconds) of `frames`, a millisecond apart.
fn pcap(link: DataLink, frames: &[Vec<u8>]) -> Vec<u8> {
    let header = PcapHeader {
        datalink: link,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap_or_else(|e| panic!("{e}"));
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::from_secs(T0) + Duration::from_millis(i as u64);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    w.into_writer()
}

/// A pcapng of `frames` on one interface with nanosecond timestamps
/// (`if_tsresol` = 9).
fn pcapng(link: DataLink, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    w.write_block(&Block::InterfaceDescription(InterfaceDescriptionBlock {
        linktype: link,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    for (i, f) in frames.iter().enumerate() {
        // The writer stores the Duration's nanoseconds as the raw ticks.
        let ts = Duration::from_secs(T0) + Duration::from_millis(i as u64);
        w.write_block(&Block::EnhancedPacket(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: ts,
            original_len: f.len() as u32,
            data: Cow::Borrowed(f),
            options: vec![],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
    }
    w.into_inner()
}

fn read(file: &[u8]) -> capture::Capture {
    capture::read(file).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_signed_invite_in_ipv4_fragments_is_reassembled_in_any_order() {
    let invite = signed_invite("frag-v4");
    assert!(invite.len() > 1500, "{} bytes", invite.len());
    let mut frags = ipv4_fragments(&udp(&invite), IpNumber::UDP, 7, 576);
    assert!(frags.len() >= 3, "{} fragments", frags.len());
    // The last fragment first, as Linux sends them.
    frags.rotate_right(1);
    let frames: Vec<Vec<u8>> = frags.iter().map(|f| ethernet(EtherType::IPV4, f)).collect();
    let c = read(&pcap(DataLink::ETHERNET, &frames));
    assert_eq!(c.payloads.len(), 1, "{:?}", c.stats);
    assert_eq!(c.payloads[0].data, invite);
    assert_eq!(
        c.payloads[0].flow.src.ip(),
        IpAddr::V4(Ipv4Addr::from(CARRIER))
    );
    assert_eq!(c.stats.fragments, frags.len() as u64);
    assert_eq!(c.stats.reassembled, 1);
    // The time is the last fragment's.
    let last_ms = frags.len() as i64 - 1;
    assert_eq!(
        c.payloads[0].time_us,
        T0 as i64 * 1_000_000 + last_ms * 1000
    );
}

#[test]
fn ipv6_fragments_pcapng_nanoseconds_sll_sll2_and_vlans_are_read() {
    let invite = signed_invite("frag-v6");
    let v6: Vec<Vec<u8>> = ipv6_fragments(&udp(&invite), 99, 1280)
        .iter()
        .map(|f| ethernet(EtherType::IPV6, f))
        .collect();
    let c = read(&pcapng(DataLink::ETHERNET, &v6));
    assert_eq!(c.payloads.len(), 1, "{:?}", c.stats);
    assert_eq!(c.payloads[0].data, invite);
    assert_eq!(c.payloads[0].flow.dst.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    // if_tsresol = 9: nanosecond ticks, read back as microseconds.
    assert_eq!(
        c.payloads[0].time_us,
        T0 as i64 * 1_000_000 + (v6.len() as i64 - 1) * 1000
    );

    let frags = ipv4_fragments(&udp(&invite), IpNumber::UDP, 8, 1500);
    for (name, link, frames) in [
        (
            "SLL",
            DataLink::LINUX_SLL,
            frags.iter().map(|f| sll(f)).collect::<Vec<_>>(),
        ),
        (
            "SLL2",
            DataLink::LINUX_SLL2,
            frags.iter().map(|f| sll2(f)).collect(),
        ),
        (
            "VLAN",
            DataLink::ETHERNET,
            frags.iter().map(|f| ethernet_vlan(42, f)).collect(),
        ),
        ("raw IP", DataLink::RAW, frags.clone()),
    ] {
        for file in [pcap(link, &frames), pcapng(link, &frames)] {
            let c = read(&file);
            assert_eq!(c.payloads.len(), 1, "{name}: {:?}", c.stats);
            assert_eq!(c.payloads[0].data, invite, "{name}");
        }
    }
}

#[test]
fn a_sip_message_over_tcp_segments_out_of_order_comes_out_whole() {
    let invite = signed_invite("tcp-1");
    let options = b"OPTIONS sip:127.0.0.20 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.10:5060;branch=z9hG4bK-o\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let mut stream = invite.clone();
    stream.extend_from_slice(options);
    let isn = u32::MAX - 700; // the sequence numbers wrap inside the stream
    let segment = |seq: u32, syn: bool, data: &[u8]| {
        let mut t = TcpHeader::new(5060, 5060, seq, 65535);
        t.syn = syn;
        t.ack = !syn;
        let mut l4 = t.to_bytes().to_vec();
        l4.extend_from_slice(data);
        let mut h = Ipv4Header::new(l4.len() as u16, 64, IpNumber::TCP, CARRIER, CALLGATE)
            .unwrap_or_else(|e| panic!("{e}"));
        h.header_checksum = h.calc_header_checksum();
        let mut p = h.to_bytes().to_vec();
        p.extend_from_slice(&l4);
        ethernet(EtherType::IPV4, &p)
    };
    let parts: Vec<&[u8]> = stream.chunks(600).collect();
    let mut frames = vec![segment(isn, true, &[])];
    let mut seq = isn.wrapping_add(1);
    let mut segs = Vec::new();
    for p in &parts {
        segs.push(segment(seq, false, p));
        seq = seq.wrapping_add(p.len() as u32);
    }
    // The second segment overtakes the first; the first is retransmitted.
    segs.swap(0, 1);
    segs.push(segs[1].clone());
    frames.extend(segs);
    let c = read(&pcap(DataLink::ETHERNET, &frames));
    assert!(c
        .payloads
        .iter()
        .all(|p| p.flow.transport == Transport::Tcp));
    let joined: Vec<u8> = c.payloads.iter().flat_map(|p| p.data.clone()).collect();
    assert_eq!(joined, stream, "in order, the retransmission dropped");
    let msgs = capture::sip::messages(&c.payloads, &Limits::default());
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].data, invite);
    assert_eq!(msgs[1].data, options);
}

#[test]
fn incomplete_fragment_sets_are_bounded_and_counted() {
    let invite = signed_invite("frag-lost");
    // Only the first fragment of many packets: each set stays incomplete.
    let n = capture::defrag::MAX_PENDING + 10;
    let mut frames: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let first = &ipv4_fragments(&udp(&invite), IpNumber::UDP, i as u16, 576)[0];
            ethernet(EtherType::IPV4, first)
        })
        .collect();
    let c = read(&pcap(DataLink::ETHERNET, &frames));
    assert!(c.payloads.is_empty());
    assert_eq!(c.stats.fragments_evicted, 10, "{:?}", c.stats);
    assert_eq!(
        c.stats.fragments_unfinished,
        capture::defrag::MAX_PENDING as u64
    );
    // A complete packet after the timeout: the stale sets expire.
    let late = ipv4_fragments(&udp(&invite), IpNumber::UDP, 60_000, 576);
    let mut file = pcap(DataLink::ETHERNET, &frames);
    let mut w = PcapWriter::with_header(Vec::new(), PcapHeader::default())
        .unwrap_or_else(|e| panic!("{e}"));
    for f in &late {
        let f = ethernet(EtherType::IPV4, f);
        let ts = Duration::from_secs(T0 + 31) + Duration::from_millis(n as u64);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, &f))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Append the records (past the second file's 24-byte header).
    file.extend_from_slice(&w.into_writer()[24..]);
    let c = read(&file);
    assert_eq!(c.payloads.len(), 1, "{:?}", c.stats);
    assert_eq!(c.payloads[0].data, invite);
    assert_eq!(
        c.stats.fragments_expired,
        capture::defrag::MAX_PENDING as u64,
        "{:?}",
        c.stats
    );
    frames.clear();
}

#[test]
fn damaged_and_foreign_files_are_told_apart_and_never_panic() {
    let invite = signed_invite("damage");
    let frames: Vec<Vec<u8>> = ipv4_fragments(&udp(&invite), IpNumber::UDP, 1, 576)
        .iter()
        .chain(std::iter::once(&{
            let mut h = Ipv4Header::new(8 + 5, 64, IpNumber::UDP, CARRIER, CALLGATE)
                .unwrap_or_else(|e| panic!("{e}"));
            h.header_checksum = h.calc_header_checksum();
            let mut p = h.to_bytes().to_vec();
            p.extend_from_slice(&udp(b"hello"));
            p
        }))
        .map(|f| ethernet(EtherType::IPV4, f))
        .collect();
    for file in [
        pcap(DataLink::ETHERNET, &frames),
        pcapng(DataLink::ETHERNET, &frames),
    ] {
        let whole = read(&file);
        assert_eq!(whole.payloads.len(), 2);
        assert_eq!(whole.stats.damage, None);
        // Cut anywhere past the file header: what came before, and where
        // the damage is.
        let mut damaged = 0;
        for cut in 0..file.len() {
            match capture::read(&file[..cut]) {
                Ok(c) => {
                    assert!(c.payloads.len() <= 2);
                    if let Some(d) = &c.stats.damage {
                        assert!(d.contains("damaged at byte"), "{d}");
                        damaged += 1;
                    }
                    let _ = capture::sip::messages(&c.payloads, &Limits::default());
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        assert!(damaged > 0);
        // Flipped bytes: no panic either.
        for at in (0..file.len()).step_by(7) {
            let mut bad = file.clone();
            bad[at] ^= 0xa5;
            let _ = capture::read(&bad);
        }
    }
    assert!(matches!(
        capture::read(b"GIF89a not a capture at all"),
        Err(CaptureError::Format(_))
    ));
    assert!(matches!(capture::read(b"ab"), Err(CaptureError::Short(2))));
    assert!(capture::read(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]).is_err());
}

/// `callgate replay --pcap` on a capture whose only INVITE is signed and
/// IPv4-fragmented: the call is found (the reader before this one dropped
/// every fragment) and `callgate trace to-sipp` converts it, and a damaged
/// or foreign file gets a clear message (tests/trace_live.rs does the same
/// on a capture of a real 1500-byte link).
#[test]
fn replay_finds_the_signed_call_in_a_fragmented_capture() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/sip-config/policy.toml");
    let invite = signed_invite("signed-fragmented-1");
    let frames: Vec<Vec<u8>> = ipv4_fragments(&udp(&invite), IpNumber::UDP, 4242, 1500)
        .iter()
        .map(|f| ethernet(EtherType::IPV4, f))
        .collect();
    assert_eq!(frames.len(), 2, "one INVITE over two fragments");
    let file = pcap(DataLink::ETHERNET, &frames);
    let path = dir.path().join("signed.pcap");
    std::fs::write(&path, &file).unwrap_or_else(|e| panic!("{e}"));
    let replay = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
            .arg("replay")
            .arg("--policy")
            .arg(policy)
            .arg("--pcap")
            .arg(path)
            .arg("--json")
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let out = replay(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    let calls = json["calls"].as_array().cloned().unwrap_or_default();
    assert_eq!(calls.len(), 1, "{text}");
    assert_eq!(calls[0]["call_id"], "signed-fragmented-1", "{text}");

    // `trace to-sipp` converts the same call: the reassembled INVITE,
    // its Identity header whole (kept as captured, on purpose).
    let out = dir.path().join("scenarios");
    let converted = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["trace", "to-sipp"])
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .arg("--keep-identity")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        converted.status.success(),
        "{}",
        String::from_utf8_lossy(&converted.stderr)
    );
    let uac = std::fs::read_to_string(out.join("uac.xml")).unwrap_or_default();
    let sent = String::from_utf8_lossy(&invite).into_owned();
    let identity = sent
        .lines()
        .find(|l| l.starts_with("Identity: "))
        .unwrap_or_else(|| panic!("no Identity in {sent}"));
    assert!(uac.contains(identity.trim_end()), "{uac}");
    assert!(uac.contains("X-Carrier-Trace-7: route=sbc-7"), "{uac}");

    // Cut inside the second fragment: the call is lost, the damage named.
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &file[..file.len() - 100]).unwrap_or_else(|e| panic!("{e}"));
    let out = replay(&cut);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.pcap: damaged at byte") && err.contains("the file ends inside a record"),
        "{err}"
    );
    assert!(err.contains("1 unfinished at the end"), "{err}");
    // Not a capture: exit 2 and the reason.
    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, "INVITE sip:x SIP/2.0\r\n\r\n").unwrap_or_else(|e| panic!("{e}"));
    let out = replay(&foreign);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a pcap or pcapng file"), "{err}");
}
