//! The relay on real loopback sockets: both directions, RTCP on its own
//! port and multiplexed, latching and the strict source check, statistics,
//! ports freed on delete, media timeout, a backlog drained in batches.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::*;

fn relay(timeout: Duration, min: u16) -> Relay {
    Relay::start(RelayConfig {
        port_min: min,
        port_max: min + 99,
        media_timeout: timeout,
        ..RelayConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().unwrap_or_else(|e| panic!("{e}"))
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

#[track_caller]
fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = match s.recv_from(&mut buf) {
        Ok(r) => r,
        Err(e) => panic!("nothing relayed: {e}"),
    };
    (buf[..n].to_vec(), from)
}

/// Points a session's leg at `peer` (RTP only, no separate RTCP).
fn send_leg_to(r: &Relay, id: u64, leg: Leg, peer: &UdpSocket, relatch: bool) {
    r.set_remote(
        id,
        leg,
        Remote {
            rtp: addr(peer),
            rtcp: None,
        },
        relatch,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

fn to(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn relays_both_ways_latches_and_drops_strangers() {
    let r = relay(Duration::from_secs(60), 41_000);
    let s = r.create(false).unwrap_or_else(|e| panic!("{e}"));
    let (carrier, carrier_rtcp, pbx, stranger) = (peer(), peer(), peer(), peer());
    assert_eq!(s.ports[0].1, s.ports[0].0 + 1, "RTCP on the next port");
    r.set_remote(
        s.id,
        Leg::A,
        Remote {
            rtp: addr(&carrier),
            rtcp: Some(addr(&carrier_rtcp)),
        },
        false,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    send_leg_to(&r, s.id, Leg::B, &pbx, false);

    // Carrier → leg A → out of leg B to the PBX, unchanged.
    carrier
        .send_to(&rtp(1), to(s.ports[0].0))
        .unwrap_or_else(|e| panic!("{e}"));
    let (got, from) = recv(&pbx);
    assert_eq!(got, rtp(1));
    assert_eq!(from, to(s.ports[1].0), "sent from leg B's RTP port");
    // PBX → leg B → the carrier.
    pbx.send_to(&rtp(7), to(s.ports[1].0))
        .unwrap_or_else(|e| panic!("{e}"));
    let (got, from) = recv(&carrier);
    assert_eq!((got, from), (rtp(7), to(s.ports[0].0)));
    // RTCP from the PBX on leg B's RTCP port → the carrier's a=rtcp port.
    let sr = [0x80u8, 200, 0, 1, 0, 0, 0, 9];
    pbx.send_to(&sr, to(s.ports[1].1))
        .unwrap_or_else(|e| panic!("{e}"));
    let (got, from) = recv(&carrier_rtcp);
    assert_eq!((got.as_slice(), from), (&sr[..], to(s.ports[0].1)));

    // Leg A latched to the carrier: a third address is dropped.
    stranger
        .send_to(&rtp(2), to(s.ports[0].0))
        .unwrap_or_else(|e| panic!("{e}"));
    carrier
        .send_to(&rtp(3), to(s.ports[0].0))
        .unwrap_or_else(|e| panic!("{e}"));
    let (got, _) = recv(&pbx);
    assert_eq!(got, rtp(3), "the stranger's packet never arrives");

    let st = r.stats(s.id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((st.a.packets, st.a.dropped_source, st.a.latches), (2, 1, 1));
    assert_eq!(st.a.lost, 1, "sequence 2 never came from the carrier");
    assert_eq!((st.b.packets, st.b.rtcp_packets), (1, 1));
    let live = r.totals();
    assert_eq!(
        (live.packets, live.dropped_source, live.lost),
        (4, 1, 1),
        "a live session counts in the totals before it ends"
    );

    let end = r.delete(s.id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(end.a.packets, 2);
    assert!(matches!(r.stats(s.id), Err(RelayError::UnknownSession(_))));
    // The ports are free again.
    for (rtp_port, rtcp_port) in s.ports {
        UdpSocket::bind(to(rtp_port)).unwrap_or_else(|e| panic!("{rtp_port} still bound: {e}"));
        UdpSocket::bind(to(rtcp_port)).unwrap_or_else(|e| panic!("{rtcp_port} still bound: {e}"));
    }
    assert_eq!(r.sessions(), 0);
    assert_eq!(
        r.totals().packets,
        live.packets,
        "the ended session's packets stay counted, the stranger's is not relayed"
    );
}

#[test]
fn rtcp_mux_and_relatching_after_a_move() {
    let r = relay(Duration::from_secs(60), 41_200);
    let s = r.create(true).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.ports[0].0, s.ports[0].1, "one port per leg with rtcp-mux");
    let (carrier, pbx, moved) = (peer(), peer(), peer());
    send_leg_to(&r, s.id, Leg::A, &carrier, false);
    send_leg_to(&r, s.id, Leg::B, &pbx, false);
    pbx.send_to(&rtp(1), to(s.ports[1].0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recv(&carrier).0, rtp(1));
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 9];
    pbx.send_to(&rr, to(s.ports[1].0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        recv(&carrier).0,
        rr.to_vec(),
        "RTCP demultiplexed (RFC 5761) and relayed"
    );
    // The PBX moves (a re-INVITE gave a new address): relatch.
    send_leg_to(&r, s.id, Leg::B, &moved, true);
    moved
        .send_to(&rtp(2), to(s.ports[1].0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recv(&carrier).0, rtp(2));
    carrier
        .send_to(&rtp(9), to(s.ports[0].0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recv(&moved).0, rtp(9), "towards the new address");
    let st = r.stats(s.id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.b.latches, 2);
}

#[test]
fn silent_sessions_time_out() {
    let r = relay(Duration::from_millis(300), 41_400);
    let quiet = r.create(false).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    while events.is_empty() && Instant::now() < deadline {
        events = r.events();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(events, vec![RelayEvent::MediaTimeout { session: quiet.id }]);
    assert_eq!(r.metrics.media_timeouts.load(Relaxed), 1);
}

#[test]
fn garbage_is_counted_not_relayed_and_the_range_runs_out_cleanly() {
    let r = relay(Duration::from_secs(60), 41_600);
    let s = r.create(false).unwrap_or_else(|e| panic!("{e}"));
    let (carrier, pbx) = (peer(), peer());
    send_leg_to(&r, s.id, Leg::B, &pbx, false);
    carrier
        .send_to(b"hello", to(s.ports[0].0))
        .unwrap_or_else(|e| panic!("{e}"));
    carrier
        .send_to(&rtp(1), to(s.ports[0].0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recv(&pbx).0, rtp(1));
    let st = r.stats(s.id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((st.a.malformed, st.a.packets), (1, 1));
    // 100 ports = 25 sessions of two legs with RTP+RTCP; one is open.
    let mut made = 1;
    while r.create(false).is_ok() {
        made += 1;
        assert!(made <= 25, "more sessions than the range holds");
    }
    assert!(
        made >= 20,
        "only {made} sessions (some ports busy elsewhere?)"
    );
}

#[test]
fn a_backlog_queued_while_the_worker_is_busy_is_all_relayed() {
    use super::worker::BATCH;

    let r = relay(Duration::from_secs(60), 41_800);
    let s = r.create(false).unwrap_or_else(|e| panic!("{e}"));
    let (carrier, pbx) = (peer(), peer());
    send_leg_to(&r, s.id, Leg::B, &pbx, false);
    carrier
        .send_to(&rtp(0), to(s.ports[0].0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recv(&pbx).0, rtp(0), "the session is set up");

    // Hold the worker inside a command: three statistics requests sharing
    // a reply channel of one slot. Once the first reply is taken, the
    // worker has put the second and waits to put the third, so it reads
    // no socket until the second is taken too.
    let (tx, rx) = mpsc::sync_channel(1);
    for _ in 0..3 {
        r.send(
            s.id,
            Command::Stats {
                id: s.id,
                reply: tx.clone(),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let first = rx.recv_timeout(Duration::from_secs(2));
    assert!(matches!(first, Ok(Some(_))), "the worker answers");

    // Several full batches and a short one, all waiting on leg A's socket
    // behind a single readiness edge.
    let count = 3 * BATCH as u16 + 3;
    for seq in 1..=count {
        carrier
            .send_to(&rtp(seq), to(s.ports[0].0))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for _ in 0..2 {
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }

    for seq in 1..=count {
        assert_eq!(recv(&pbx).0, rtp(seq), "packet {seq} of {count}, in order");
    }
    let st = r.stats(s.id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (st.a.packets, st.a.lost, st.a.malformed),
        (u64::from(count) + 1, 0, 0)
    );
}

/// The thread of this process named `name` whose `Cpus_allowed_list` is
/// `cpus`, if any, and its CPU time so far (utime + stime, clock ticks).
fn thread_named(name: &str, cpus: &str) -> Option<(String, u64)> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    tasks.flatten().find_map(|t| {
        let path = t.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        let status = std::fs::read_to_string(path.join("status")).ok()?;
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
            .trim()
            .to_owned();
        (comm.trim() == name && allowed == cpus).then(|| {
            let tid = t.file_name().to_string_lossy().into_owned();
            (tid, thread_ticks(&path).unwrap_or(0))
        })
    })
}

fn thread_ticks(task: &std::path::Path) -> Option<u64> {
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

#[test]
fn a_pinned_busy_polling_worker_relays_and_sleeps_when_idle() {
    let r = Relay::start(RelayConfig {
        port_min: 41_900,
        port_max: 41_999,
        cpus: vec![0],
        busy_poll: Duration::from_micros(200),
        ..RelayConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let s = r.create(true).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (peer(), peer());
    send_leg_to(&r, s.id, Leg::B, &b, false);
    for seq in 1..=20 {
        a.send_to(&rtp(seq), to(s.ports[0].0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(recv(&b).0, rtp(seq));
    }
    // Pinned: the worker's thread may run on core 0 only.
    let (tid, _) = thread_named("media-0", "0").unwrap_or_else(|| panic!("no pinned worker"));
    // Idle: once the window has passed, the worker sleeps in epoll_wait.
    // Over 300 ms of silence it uses (nearly) no CPU; spinning would use
    // all of it (30 ticks at 100 Hz).
    let task = std::path::Path::new("/proc/self/task").join(&tid);
    let before = thread_ticks(&task).unwrap_or_else(|| panic!("stat"));
    std::thread::sleep(Duration::from_millis(300));
    let after = thread_ticks(&task).unwrap_or_else(|| panic!("stat"));
    assert!(after - before <= 3, "{} ticks while idle", after - before);
    let st = r.delete(s.id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.a.packets, 20);
}

#[test]
fn relay_ports_are_taken_from_a_random_place_in_the_range() {
    let (min, max) = (49_500, 49_599);
    let mut pool = PortPool::new(min, max);
    let ip: IpAddr = [127, 0, 0, 1].into();
    let mut held = Vec::new();
    for _ in 0..12 {
        let (rtp, rtcp) = pool.bind_pair(ip, false).unwrap_or_else(|e| panic!("{e}"));
        held.push((rtp, rtcp));
    }
    let ports: Vec<u16> = held
        .iter()
        .map(|(rtp, _)| rtp.local_addr().map(|a| a.port()).unwrap_or(0))
        .collect();
    assert!(
        ports.iter().all(|p| (min..max).contains(p) && p % 2 == 0),
        "{ports:?}"
    );
    // Handed out in order, each would be the previous one + 2; from a
    // random place, that happens by chance, one time in 50 per step.
    let in_order = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
    assert!(in_order < ports.len() - 1, "sequential: {ports:?}");
    let distinct: std::collections::HashSet<_> = ports.iter().collect();
    assert_eq!(
        distinct.len(),
        ports.len(),
        "a port handed out twice: {ports:?}"
    );
}

/// RTP hijack: under latch-to-first a stranger's packet, arriving before
/// the far end's, took over the leg. With an `sdp` policy only the
/// announced address latches; the stranger is dropped and counted as
/// foreign for the leg's side, and the latched leg keeps its source until
/// new SDP re-arms it.
#[test]
fn a_strict_leg_latches_only_to_its_sdp_address_and_moves_only_on_new_sdp() {
    let r = relay(Duration::from_secs(60), 38_000);
    let s = r.create(true).unwrap_or_else(|e| panic!("{e}"));
    let (carrier, pbx, stranger, moved) = (peer(), peer(), peer(), peer());
    let policy = SourcePolicy {
        mode: LatchMode::Sdp,
        allow: vec!["127.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))].into(),
        side: 0,
    };
    r.set_source(s.id, Leg::A, policy)
        .unwrap_or_else(|e| panic!("{e}"));
    send_leg_to(&r, s.id, Leg::A, &carrier, false);
    send_leg_to(&r, s.id, Leg::B, &pbx, false);
    stranger
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok();

    // The stranger sprays first: nothing reaches the PBX from it.
    for seq in 1..=3 {
        stranger
            .send_to(&rtp(seq), to(s.ports[0].0))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    carrier
        .send_to(&rtp(10), to(s.ports[0].0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        recv(&pbx).0,
        rtp(10),
        "the carrier's packet, not the stranger's"
    );
    // The PBX's audio goes to the carrier, never to the stranger.
    pbx.send_to(&rtp(20), to(s.ports[1].0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recv(&carrier).0, rtp(20));
    let mut buf = [0u8; 512];
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "no audio to the stranger"
    );
    assert_eq!(r.metrics.foreign[0].load(Relaxed), 3);

    // New SDP naming another address re-arms the leg: it latches there.
    send_leg_to(&r, s.id, Leg::A, &moved, true);
    carrier
        .send_to(&rtp(11), to(s.ports[0].0))
        .unwrap_or_else(|e| panic!("{e}"));
    moved
        .send_to(&rtp(12), to(s.ports[0].0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recv(&pbx).0, rtp(12), "the old address is foreign now");
    assert_eq!(r.metrics.foreign[0].load(Relaxed), 4);
    let stats = r.delete(s.id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.a.dropped_source, 4);
    assert_eq!(stats.a.latches, 2);
}

/// A silent session is reported once for reclaim (the control plane then
/// ends it), after the media timeout's report.
#[test]
fn a_silent_session_is_reported_for_reclaim() {
    let r = Relay::start(RelayConfig {
        port_min: 38_200,
        port_max: 38_299,
        media_timeout: Duration::from_millis(200),
        reclaim_after: Some(Duration::from_millis(300)),
        ..RelayConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let s = r.create(true).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    while Instant::now() < deadline && !events.contains(&RelayEvent::Silent { session: s.id }) {
        events.extend(r.events());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        events.contains(&RelayEvent::Silent { session: s.id }),
        "{events:?}"
    );
}
