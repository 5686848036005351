//! Criterion benchmarks of the relay's per-packet path and of port
//! allocation, for strict-source latching (issue 13):
//! - `relay/packet_any`, `relay_worker_cpu/packet_any`: one 172-byte RTP packet through a relay session
//!   over loopback, carrier socket → leg A → worker → leg B → PBX socket,
//!   with no source policy (latch to the first packet: the path before
//!   strict-source latching);
//! - `…/packet_strict_sdp` (and `_again`): the same with leg A under the `sdp`
//!   policy and an ACL (latched after the first packet, as in a call);
//! - `latch/admits_sdp`, `latch/admits_network`: the source check alone,
//!   which runs only for packets of a leg not latched yet (spraying);
//! - `anchor/offer_delete`: a call's port allocation — an offer's relay
//!   session (two port pairs bound from a random place in the range) and
//!   its release.
//!
//! The `relay/` benchmarks measure the wall time of a send and the receive
//! at the far end, the worker's work in between included; the
//! `relay_worker_cpu/` ones the relay worker thread's CPU time per packet
//! (its run time from `/proc/self/task/*/schedstat`), which is what
//! strict-source latching could add to and what scheduling noise on a busy
//! machine does not blur. The strict variant runs before and after the
//! other, so that neither always runs second.
//!
//! `cargo bench --bench relay`

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use callgate::media::anchor::{AnchorOptions, MediaAnchor};
use callgate::media::relay::{LatchMode, Leg, Relay, RelayConfig, Remote, SourcePolicy};

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x5e, 0xed, 0, 1];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

fn socket() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("{e}"));
    let a = s.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (s, a)
}

fn strict(side: usize) -> SourcePolicy {
    SourcePolicy {
        mode: LatchMode::Sdp,
        allow: vec!["127.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))].into(),
        side,
    }
}

/// A packet from the carrier through the relay to the PBX, per iteration.
fn packet(c: &mut Criterion, name: &str, min: u16, policy: bool) {
    let relay = Relay::start(RelayConfig {
        port_min: min,
        port_max: min + 99,
        ..RelayConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let s = relay.create(true).unwrap_or_else(|e| panic!("{e}"));
    let ((carrier, carrier_at), (pbx, pbx_at)) = (socket(), socket());
    if policy {
        relay
            .set_source(s.id, Leg::A, strict(0))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for (leg, at) in [(Leg::A, carrier_at), (Leg::B, pbx_at)] {
        let remote = Remote {
            rtp: at,
            rtcp: None,
        };
        relay
            .set_remote(s.id, leg, remote, false)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let leg_a = SocketAddr::from(([127, 0, 0, 1], s.ports[0].0));
    let mut buf = [0u8; 512];
    let mut seq = 0u16;
    let mut one = || {
        seq = seq.wrapping_add(1);
        carrier
            .send_to(&rtp(seq), leg_a)
            .unwrap_or_else(|e| panic!("{e}"));
        black_box(pbx.recv(&mut buf).unwrap_or_else(|e| panic!("{e}")))
    };
    c.bench_function(&format!("relay/{name}"), |b| b.iter(&mut one));
    // The relay worker's own CPU time per packet (its thread's run time
    // from /proc/self/task/*/schedstat), which wall time on a busy
    // machine hides under scheduling noise.
    c.bench_function(&format!("relay_worker_cpu/{name}"), |b| {
        b.iter_custom(|iters| {
            let before = worker_cpu_ns();
            for _ in 0..iters {
                one();
            }
            Duration::from_nanos(worker_cpu_ns().saturating_sub(before))
        })
    });
    let stats = relay.delete(s.id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.a.dropped_source, 0);
}

/// Run time so far of the thread named `media-0` (the one relay worker
/// alive), in ns.
fn worker_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "media-0" {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            return stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

fn packets(c: &mut Criterion) {
    // Alternated, so that neither variant always runs second on a busy
    // machine.
    packet(c, "packet_strict_sdp", 47_200, true);
    packet(c, "packet_any", 47_000, false);
    packet(c, "packet_strict_sdp_again", 47_400, true);
}

fn latch(c: &mut Criterion) {
    let remote = Remote {
        rtp: "127.0.0.1:4000".parse().unwrap_or_else(|e| panic!("{e}")),
        rtcp: None,
    };
    let src: SocketAddr = "127.0.0.1:4001".parse().unwrap_or_else(|e| panic!("{e}"));
    let sdp = strict(0);
    let network = SourcePolicy {
        mode: LatchMode::Network,
        ..strict(0)
    };
    c.bench_function("latch/admits_sdp", |b| {
        b.iter(|| black_box(sdp.admits(black_box(src), Some(&remote))))
    });
    c.bench_function("latch/admits_network", |b| {
        b.iter(|| black_box(network.admits(black_box(src), None)))
    });
}

fn allocation(c: &mut Criterion) {
    let relay = Relay::start(RelayConfig {
        port_min: 47_600,
        port_max: 47_999,
        ..RelayConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let anchor = MediaAnchor::new(relay, [127, 0, 0, 1].into());
    let sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    c.bench_function("anchor/offer_delete", |b| {
        b.iter(|| {
            let out = anchor
                .offer("bench", "tag", sdp, AnchorOptions::default())
                .unwrap_or_else(|e| panic!("{e}"));
            black_box(out);
            anchor.delete("bench").unwrap_or_else(|e| panic!("{e}"))
        })
    });
}

criterion_group!(benches, packets, latch, allocation);
criterion_main!(benches);
