//! Sans-IO tests of the proxy core: messages in, messages out, time injected.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::sip::side::Transport;

const CARRIER: &str = "192.0.2.10:5060";
const PBX1: &str = "10.0.0.1:5080";
const PBX2: &str = "10.0.0.2:5080";

fn addr(a: &str) -> std::net::SocketAddr {
    a.parse().unwrap_or_else(|e| panic!("{a}: {e}"))
}

fn udp_target(a: &str) -> Target {
    Target {
        uri: format!("sip:{a}"),
        addr: addr(a),
        transport: Transport::Udp,
    }
}

/// The shipped defaults (`sip-config/callgate.toml`) with test addresses:
/// the carrier's network on the trunk, the PBXs' on the PBX side, and no
/// health probes.
fn settings(pbx_targets: &[&str]) -> CoreSettings {
    let side = |side, port: u16, allow: &str, advertise: &str, targets: Vec<Target>| SideSettings {
        side,
        udp: Some(addr(&format!("127.0.0.1:{port}"))),
        tcp: Some(addr(&format!("127.0.0.1:{port}"))),
        tls: (side == Side::Trunk).then(|| addr("127.0.0.1:5061")),
        advertise: Some(advertise.into()),
        allow: vec![allow.parse().unwrap_or_else(|e| panic!("{e}"))],
        targets,
    };
    CoreSettings {
        sides: [
            side(
                Side::Trunk,
                5060,
                "192.0.2.0/24",
                "198.51.100.1",
                vec![udp_target("127.0.0.1:5090")],
            ),
            side(
                Side::Pbx,
                5062,
                "10.0.0.0/8",
                "10.0.0.254",
                pbx_targets.iter().map(|a| udp_target(a)).collect(),
            ),
        ],
        timers: crate::sip::transaction::TimerConfig::default(),
        limits: Limits::default(),
        overload: OverloadConfig {
            max_transactions: 20_000,
            retry_after_secs: 5,
            ..OverloadConfig::default()
        },
        health: HealthConfig {
            interval: Duration::ZERO,
            timeout: Duration::from_millis(2000),
            down_after: 2,
        },
        no_response: Duration::from_millis(2000),
    }
}

/// What the core reported, for the tests that look at its counters.
#[derive(Default)]
struct Counts {
    /// Indexed by [`Side::index`].
    parse_errors: [AtomicU64; 2],
    /// [side][overload, draining]
    refusals: [[AtomicU64; 2]; 2],
    failovers: AtomicU64,
}

impl CoreObserver for Counts {
    fn request(&self, _: Side, _: Direction, _: Method) {}
    fn response(&self, _: Side, _: Direction, _: u16) {}
    fn parse_error(&self, side: Side) {
        self.parse_errors[side.index()].fetch_add(1, Relaxed);
    }
    fn refused(&self, side: Side, why: CoreRefusal) {
        let i = match why {
            CoreRefusal::Overload => 0,
            CoreRefusal::Draining | CoreRefusal::TransactionBytes => 1,
        };
        self.refusals[side.index()][i].fetch_add(1, Relaxed);
    }
    fn transport_error(&self, _: Side) {}
    fn failover(&self) {
        self.failovers.fetch_add(1, Relaxed);
    }
    fn timeout(&self) {}
    fn loop_detected(&self) {}
    fn set_active_transactions(&self, _: usize, _: usize) {}
    fn set_targets_up(&self, _: Side, _: usize) {}
    fn set_draining(&self, _: bool) {}
}

struct Harness {
    core: ProxyCore,
    now: Instant,
    counts: Arc<Counts>,
}

impl Harness {
    fn new(pbx_targets: &[&str]) -> Harness {
        Harness::with(settings(pbx_targets))
    }
    fn with(settings: CoreSettings) -> Harness {
        let counts = Arc::new(Counts::default());
        let now = Instant::now();
        Harness {
            core: ProxyCore::new(settings, counts.clone(), now, 1),
            now,
            counts,
        }
    }
    fn carrier() -> Peer {
        Peer {
            side: Side::Trunk,
            transport: Transport::Udp,
            addr: CARRIER.parse().unwrap_or_else(|e| panic!("{e}")),
            conn: None,
        }
    }
    fn from_pbx(addr: &str) -> Peer {
        Peer {
            side: Side::Pbx,
            transport: Transport::Udp,
            addr: addr.parse().unwrap_or_else(|e| panic!("{e}")),
            conn: None,
        }
    }
    fn feed(&mut self, from: Peer, text: &str) -> Vec<Outgoing> {
        let mut out = Vec::new();
        self.core
            .on_message(from, Bytes::from(text.to_owned()), self.now, &mut out);
        out
    }
    fn advance(&mut self, d: Duration) -> Vec<Outgoing> {
        self.now += d;
        let mut out = Vec::new();
        self.core.on_timer(self.now, &mut out);
        out
    }
}

fn text(o: &Outgoing) -> String {
    String::from_utf8_lossy(&o.bytes).into_owned()
}

fn invite(branch: &str, extra: &str) -> String {
    format!(
        "INVITE sip:+15550100@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15550199@192.0.2.10>;tag=c1\r\nTo: <sip:+15550100@198.51.100.1>\r\nCall-ID: call-{branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:+15550199@192.0.2.10:5060>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// A response from the PBX to a forwarded request (Via copied from it).
fn answer(forwarded: &str, status: u16, reason: &str, to_tag: &str) -> String {
    let mut r = format!("SIP/2.0 {status} {reason}\r\n");
    for line in forwarded
        .split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
    {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("via:")
            || lower.starts_with("from:")
            || lower.starts_with("call-id:")
            || lower.starts_with("cseq:")
            || lower.starts_with("record-route:")
        {
            r.push_str(line);
            r.push_str("\r\n");
        } else if lower.starts_with("to:") {
            r.push_str(line);
            r.push_str(&format!(";tag={to_tag}\r\n"));
        }
    }
    r.push_str("Contact: <sip:agent@10.0.0.1:5080>\r\nContent-Length: 0\r\n\r\n");
    r
}

fn status(o: &Outgoing) -> u16 {
    text(o).get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn invite_is_answered_100_and_forwarded_with_via_record_routes_and_max_forwards() {
    let mut h = Harness::new(&[PBX1]);
    let out = h.feed(Harness::carrier(), &invite("z9hG4bK-a1", ""));
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(status(&out[0]), 100);
    assert_eq!(out[0].to.addr.to_string(), CARRIER);
    let fwd = text(&out[1]);
    assert_eq!(out[1].to.addr.to_string(), PBX1);
    assert_eq!(out[1].to.side, Side::Pbx);
    assert!(
        fwd.starts_with("INVITE sip:+15550100@198.51.100.1 SIP/2.0\r\n"),
        "{fwd}"
    );
    let lines: Vec<&str> = fwd.split("\r\n").collect();
    assert!(
        lines[3].starts_with("Via: SIP/2.0/UDP 10.0.0.254:5062;branch=z9hG4bK-cg"),
        "{fwd}"
    );
    assert!(lines[4].starts_with("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-a1"));
    assert!(fwd.contains("Record-Route: <sip:10.0.0.254:5062;transport=udp;lr>\r\nRecord-Route: <sip:198.51.100.1:5060;transport=udp;lr>"), "{fwd}");
    assert!(fwd.contains("Max-Forwards: 69\r\n"), "{fwd}");
    assert!(
        fwd.contains("branch=z9hG4bK-a1;received=192.0.2.10;rport=5060"),
        "{fwd}"
    );
    assert!(out[1].client.is_some());
}

#[test]
fn responses_are_relayed_upstream_without_our_via_and_2xx_completes() {
    let mut h = Harness::new(&[PBX1]);
    let out = h.feed(Harness::carrier(), &invite("z9hG4bK-a2", ""));
    let fwd = text(&out[1]);
    let ringing = h.feed(Harness::from_pbx(PBX1), &answer(&fwd, 180, "Ringing", "p1"));
    assert_eq!(ringing.len(), 1);
    assert_eq!(status(&ringing[0]), 180);
    assert!(
        !text(&ringing[0]).contains("Via: SIP/2.0/UDP 10.0.0.254"),
        "our Via is removed: {}",
        text(&ringing[0])
    );
    let ok = h.feed(Harness::from_pbx(PBX1), &answer(&fwd, 200, "OK", "p1"));
    assert_eq!(ok.len(), 1);
    assert_eq!(status(&ok[0]), 200);
    assert_eq!(ok[0].to.addr.to_string(), CARRIER);
    assert!(h.core.is_drained());
    // A retransmitted 200 is relayed too (RFC 6026).
    let again = h.feed(Harness::from_pbx(PBX1), &answer(&fwd, 200, "OK", "p1"));
    assert_eq!(again.len(), 1);
}

#[test]
fn retransmitted_invite_gets_the_last_response_and_is_not_forwarded_again() {
    let mut h = Harness::new(&[PBX1]);
    h.feed(Harness::carrier(), &invite("z9hG4bK-a3", ""));
    let again = h.feed(Harness::carrier(), &invite("z9hG4bK-a3", ""));
    assert_eq!(again.len(), 1);
    assert_eq!(status(&again[0]), 100);
}

#[test]
fn failover_on_503_then_best_response() {
    let mut h = Harness::new(&[PBX1, PBX2]);
    let out = h.feed(Harness::carrier(), &invite("z9hG4bK-f1", ""));
    let first = text(&out[1]);
    let next = h.feed(
        Harness::from_pbx(PBX1),
        &answer(&first, 503, "Service Unavailable", "x"),
    );
    // ACK for the 503 to PBX1, then the INVITE to PBX2.
    assert_eq!(next.len(), 2, "{next:#?}");
    assert!(text(&next[0]).starts_with("ACK "));
    assert_eq!(next[0].to.addr.to_string(), PBX1);
    assert!(text(&next[1]).starts_with("INVITE "));
    assert_eq!(next[1].to.addr.to_string(), PBX2);
    let second = text(&next[1]);
    let busy = h.feed(
        Harness::from_pbx(PBX2),
        &answer(&second, 486, "Busy Here", "y"),
    );
    let up: Vec<u16> = busy
        .iter()
        .filter(|o| o.to.side == Side::Trunk)
        .map(status)
        .collect();
    assert_eq!(up, vec![486], "the better 486 beats the 503: {busy:#?}");
}

#[test]
fn all_targets_503_gives_500_upstream() {
    let mut h = Harness::new(&[PBX1]);
    let out = h.feed(Harness::carrier(), &invite("z9hG4bK-f2", ""));
    let r = h.feed(
        Harness::from_pbx(PBX1),
        &answer(&text(&out[1]), 503, "Service Unavailable", "x"),
    );
    let up: Vec<u16> = r
        .iter()
        .filter(|o| o.to.side == Side::Trunk)
        .map(status)
        .collect();
    assert_eq!(up, vec![500]);
}

#[test]
fn silent_target_fails_over_after_no_response_time() {
    let mut h = Harness::new(&[PBX1, PBX2]);
    h.feed(Harness::carrier(), &invite("z9hG4bK-f3", ""));
    // Timer A retransmits at T1 = 500 ms to PBX1.
    let r = h.advance(Duration::from_millis(500));
    assert!(r.iter().all(|o| o.to.addr.to_string() == PBX1));
    let r = h.advance(Duration::from_millis(1500));
    let to_pbx2: Vec<&Outgoing> = r.iter().filter(|o| o.to.addr.to_string() == PBX2).collect();
    assert_eq!(to_pbx2.len(), 1, "{r:#?}");
    assert!(text(to_pbx2[0]).starts_with("INVITE "));
    assert_eq!(h.counts.failovers.load(Relaxed), 1);
}

#[test]
fn cancel_after_ringing_is_forwarded_and_487_relayed() {
    let mut h = Harness::new(&[PBX1]);
    let out = h.feed(Harness::carrier(), &invite("z9hG4bK-c1", ""));
    let fwd = text(&out[1]);
    h.feed(Harness::from_pbx(PBX1), &answer(&fwd, 180, "Ringing", "p"));
    let cancel = invite("z9hG4bK-c1", "")
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let r = h.feed(Harness::carrier(), &cancel);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(status(&r[0]), 200);
    assert_eq!(r[0].to.side, Side::Trunk);
    let down = text(&r[1]);
    assert!(
        down.starts_with("CANCEL sip:+15550100@198.51.100.1 SIP/2.0"),
        "{down}"
    );
    let fwd_branch = fwd
        .split("branch=")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_default();
    assert!(
        down.contains(fwd_branch),
        "CANCEL reuses the INVITE's branch"
    );
    let terminated = h.feed(
        Harness::from_pbx(PBX1),
        &answer(&fwd, 487, "Request Terminated", "p"),
    );
    let up: Vec<u16> = terminated
        .iter()
        .filter(|o| o.to.side == Side::Trunk)
        .map(status)
        .collect();
    assert_eq!(up, vec![487]);
}

/// Timer C on a ringing branch whose target then says nothing more (it
/// died): the CANCEL goes unanswered, and 64*T1 after it the branch ends
/// and the caller gets 408 (RFC 3261 §16.8, §9.1) instead of ringing
/// until its own timers give up.
#[test]
fn a_ringing_branch_whose_target_dies_ends_in_408_after_timer_c() {
    let mut h = Harness::new(&[PBX1]);
    let out = h.feed(Harness::carrier(), &invite("z9hG4bK-tc", ""));
    let fwd = text(&out[1]);
    h.feed(Harness::from_pbx(PBX1), &answer(&fwd, 180, "Ringing", "p"));
    let mut cancelled = false;
    let mut upstream = Vec::new();
    // Past Timer C (180 s), then 64*T1 (32 s) of an unanswered CANCEL.
    for _ in 0..(180 + 40) {
        for o in h.advance(Duration::from_secs(1)) {
            if o.to.side == Side::Pbx && text(&o).starts_with("CANCEL ") {
                cancelled = true;
            }
            if o.to.side == Side::Trunk {
                upstream.push(status(&o));
            }
        }
    }
    assert!(cancelled, "Timer C cancels the ringing branch");
    // 408, retransmitted (Timer G) as long as the carrier sends no ACK.
    assert!(
        !upstream.is_empty() && upstream.iter().all(|s| *s == 408),
        "the caller gets 408: {upstream:?}"
    );
}

#[test]
fn cancel_before_any_provisional_answers_487_at_once() {
    let mut h = Harness::new(&[PBX1]);
    h.feed(Harness::carrier(), &invite("z9hG4bK-c2", ""));
    let cancel = invite("z9hG4bK-c2", "")
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let r = h.feed(Harness::carrier(), &cancel);
    let codes: Vec<u16> = r.iter().map(status).collect();
    assert_eq!(codes, vec![200, 487]);
}

#[test]
fn unknown_cancel_gets_481() {
    let mut h = Harness::new(&[PBX1]);
    let cancel = invite("z9hG4bK-none", "")
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let r = h.feed(Harness::carrier(), &cancel);
    assert_eq!(r.iter().map(status).collect::<Vec<_>>(), vec![481]);
}

#[test]
fn max_forwards_zero_gets_483_and_proxy_require_gets_420() {
    let mut h = Harness::new(&[PBX1]);
    let r = h.feed(
        Harness::carrier(),
        &invite("z9hG4bK-m0", "").replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    let codes: Vec<u16> = r.iter().map(status).collect();
    assert_eq!(codes, vec![100, 483]);
    let r = h.feed(
        Harness::carrier(),
        &invite("z9hG4bK-pr", "Proxy-Require: foo\r\n"),
    );
    let last = r.last().map(text).unwrap_or_default();
    assert!(last.starts_with("SIP/2.0 420"), "{last}");
    assert!(last.contains("Unsupported: foo"), "{last}");
}

#[test]
fn a_request_looping_back_gets_482() {
    let mut h = Harness::new(&[PBX1]);
    let out = h.feed(Harness::carrier(), &invite("z9hG4bK-l1", ""));
    // The PBX sends our forwarded INVITE straight back to the trunk side.
    let mut looped = Harness::carrier();
    looped.addr = "192.0.2.11:5060".parse().unwrap_or_else(|e| panic!("{e}"));
    let back = text(&out[1]).replace("Max-Forwards: 69", "Max-Forwards: 68");
    let back = back.replacen(
        "Via: SIP/2.0/UDP 10.0.0.254",
        "Via: SIP/2.0/UDP 192.0.2.11:5060;branch=z9hG4bK-pbx\r\nVia: SIP/2.0/UDP 10.0.0.254",
        1,
    );
    let r = h.feed(looped, &back);
    assert_eq!(r.iter().map(status).collect::<Vec<_>>(), vec![100, 482]);
}

#[test]
fn in_dialog_request_is_never_relayed_outside_the_acl() {
    let mut h = Harness::new(&[PBX1]);
    // A BYE with a To tag whose Request-URI points at a host the PBX side
    // does not admit.
    let bye = invite("z9hG4bK-b1", "")
        .replace(
            "INVITE sip:+15550100@198.51.100.1",
            "BYE sip:victim@203.0.113.9",
        )
        .replace("CSeq: 1 INVITE", "CSeq: 2 BYE")
        .replace(
            "To: <sip:+15550100@198.51.100.1>",
            "To: <sip:+15550100@198.51.100.1>;tag=p1",
        );
    let r = h.feed(Harness::carrier(), &bye);
    assert_eq!(r.len(), 1);
    assert_eq!(status(&r[0]), 403);
}

#[test]
fn in_dialog_request_follows_the_route_set_through_both_sides() {
    let mut h = Harness::new(&[PBX1]);
    let bye = invite("z9hG4bK-b2", "Route: <sip:198.51.100.1:5060;transport=udp;lr>, <sip:10.0.0.254:5062;transport=udp;lr>\r\n")
        .replace("INVITE sip:+15550100@198.51.100.1", "BYE sip:agent@10.0.0.1:5080")
        .replace("CSeq: 1 INVITE", "CSeq: 2 BYE")
        .replace("To: <sip:+15550100@198.51.100.1>", "To: <sip:+15550100@198.51.100.1>;tag=p1");
    let r = h.feed(Harness::carrier(), &bye);
    assert_eq!(r.len(), 1, "{r:#?}");
    let fwd = text(&r[0]);
    assert_eq!(r[0].to.addr.to_string(), PBX1);
    assert!(
        !fwd.contains("Route:"),
        "both of our Route entries are removed: {fwd}"
    );
    assert!(
        !fwd.contains("Record-Route"),
        "no Record-Route on in-dialog requests"
    );
}

#[test]
fn draining_refuses_new_invites_with_503_but_relays_in_dialog_requests() {
    let mut h = Harness::new(&[PBX1]);
    h.core.start_drain();
    let r = h.feed(Harness::carrier(), &invite("z9hG4bK-d1", ""));
    let last = r.last().map(text).unwrap_or_default();
    assert!(last.starts_with("SIP/2.0 503"), "{last}");
    assert!(last.contains("Retry-After: 5"), "{last}");
    assert!(h.core.is_drained());
}

#[test]
fn garbage_is_counted_and_never_panics() {
    let mut h = Harness::new(&[PBX1]);
    for junk in [
        "",
        "\r\n",
        "INVITE",
        "SIP/2.0 999999 x\r\n\r\n",
        "INVITE sip:a SIP/2.0\r\nVia: x\r\n\r\n",
        "\u{0}\u{1}\u{2}",
    ] {
        let _ = h.feed(Harness::carrier(), junk);
    }
    assert!(h.counts.parse_errors[Side::Trunk.index()].load(Relaxed) >= 4);
}

#[test]
fn overload_refuses_new_invites_with_503_and_retry_after() {
    let mut s = settings(&[PBX1]);
    s.overload.max_transactions = 1;
    let mut h = Harness::with(s);
    let first = h.feed(Harness::carrier(), &invite("z9hG4bK-o1", ""));
    assert!(
        text(&first[1]).starts_with("INVITE "),
        "the first call is forwarded"
    );
    let second = h.feed(Harness::carrier(), &invite("z9hG4bK-o2", ""));
    let last = second.last().map(text).unwrap_or_default();
    assert!(last.starts_with("SIP/2.0 503"), "{last}");
    assert!(last.contains("Retry-After: 5"), "{last}");
    assert!(
        second.iter().all(|o| o.to.side == Side::Trunk),
        "nothing forwarded"
    );
    assert_eq!(
        h.counts.refusals[Side::Trunk.index()][0].load(Relaxed),
        1,
        "one overload refusal on the trunk"
    );
}

#[test]
fn a_slow_last_target_is_not_cut_short_by_the_no_response_timer() {
    let mut h = Harness::new(&[PBX1]);
    let out = h.feed(Harness::carrier(), &invite("z9hG4bK-slow", ""));
    let fwd = text(&out[1]);
    // 3 s of silence (more than no_response), then the PBX answers.
    let r = h.advance(Duration::from_millis(3000));
    assert!(
        r.iter().all(|o| o.to.side == Side::Pbx),
        "no 408 upstream: {r:#?}"
    );
    let ok = h.feed(Harness::from_pbx(PBX1), &answer(&fwd, 200, "OK", "p"));
    assert_eq!(ok.iter().map(status).collect::<Vec<_>>(), vec![200]);
}

/// RFC 3261 §17.2.1: a final non-2xx answered here (no forwarding) is
/// retransmitted on Timer G, doubling up to T2, until an ACK or Timer H
/// (64×T1) ends the transaction — which must then be gone, not kept.
#[test]
fn a_locally_refused_invite_without_ack_is_retransmitted_until_timer_h_then_dropped() {
    let mut h = Harness::new(&[PBX1]);
    let r = h.feed(
        Harness::carrier(),
        &invite("z9hG4bK-noack", "").replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(r.iter().map(status).collect::<Vec<_>>(), vec![100, 483]);
    let mut retransmits = 0;
    for _ in 0..70 {
        let out = h.advance(Duration::from_millis(500));
        retransmits += out.iter().filter(|o| status(o) == 483).count();
    }
    // Timer G at 0.5, 1.5, 3.5, 7.5, 11.5, ... s (T2 = 4 s) within 32 s.
    assert!(retransmits >= 7, "only {retransmits} retransmissions");
    assert_eq!(h.core.transaction_counts().0, 0, "Timer H ended it");
}

/// A MESSAGE of about `body` bytes from `via_host`, not answered by anyone.
fn large_message(branch: &str, via_host: &str, body: usize) -> String {
    format!(
        "MESSAGE sip:+15550100@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via_host}:5060;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:x@{via_host}>;tag=m\r\nTo: <sip:+15550100@198.51.100.1>\r\nCall-ID: m-{branch}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {body}\r\n\r\n{}",
        "x".repeat(body)
    )
}

/// Non-INVITE transactions are bounded in bytes, per source: a flood of
/// large MESSAGEs from one carrier address gets 503 once its transactions
/// hold its budget, while another address's request is still forwarded;
/// the bytes are given back when the transactions end. Without the budget
/// every MESSAGE is forwarded and held for 32 s (overload control counts
/// only INVITEs).
#[test]
fn large_non_invite_requests_are_refused_past_their_source_byte_budget() {
    let mut s = settings(&[PBX1]);
    s.overload.max_transaction_bytes_per_source = 1 << 20;
    let mut h = Harness::with(s);
    let per = budget::charge_for(large_message("z9hG4bK-m0", "192.0.2.10", 60_000).len());
    let fits = (1 << 20) / per;
    let mut refused = 0;
    for i in 0..fits + 5 {
        let out = h.feed(
            Harness::carrier(),
            &large_message(&format!("z9hG4bK-m{i}"), "192.0.2.10", 60_000),
        );
        if out.iter().any(|o| status(o) == 503) {
            assert!(
                out.iter().all(|o| o.to.side == Side::Trunk),
                "a refused request is not forwarded"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 5, "every request past the {fits} that fit");
    assert_eq!(h.core.bytes.total(), fits * per);
    let other = Peer {
        addr: addr("192.0.2.11:5060"),
        ..Harness::carrier()
    };
    let out = h.feed(other, &large_message("z9hG4bK-o", "192.0.2.11", 60_000));
    assert!(
        out.iter().any(|o| text(o).starts_with("MESSAGE ")),
        "another source is forwarded: {out:#?}"
    );
    // Timer F (64×T1) answers 408 upstream; Timer J (64×T1 more on UDP)
    // ends the server transactions.
    for _ in 0..140 {
        h.advance(Duration::from_millis(500));
    }
    assert_eq!(h.core.bytes.total(), 0, "every charge given back");
    assert_eq!(h.core.bytes.sources(), 0);
}

#[test]
fn a_sips_invite_goes_to_tls_targets_only_with_sips_record_routes() {
    let mut set = settings(&[PBX1]);
    set.sides[1].tls = Some(addr("127.0.0.1:5063"));
    set.sides[1].targets.push(Target {
        uri: format!("sips:{PBX2}"),
        addr: addr(PBX2),
        transport: Transport::Tls,
    });
    let mut h = Harness::with(set);
    let sips = invite("z9hG4bK-s1", "").replace("INVITE sip:", "INVITE sips:");
    let out = h.feed(Harness::carrier(), &sips);
    let fwd = out
        .iter()
        .find(|o| text(o).starts_with("INVITE "))
        .unwrap_or_else(|| panic!("not forwarded: {out:#?}"));
    assert_eq!(
        fwd.to.addr.to_string(),
        PBX2,
        "the UDP target first in order is skipped"
    );
    assert_eq!(fwd.to.transport, Transport::Tls);
    let t = text(fwd);
    assert!(t.contains("Via: SIP/2.0/TLS 10.0.0.254:5063;"), "{t}");
    assert!(t.contains("Record-Route: <sips:10.0.0.254:5063;lr>"), "{t}");
    assert!(
        t.contains("Record-Route: <sips:198.51.100.1:5061;lr>"),
        "{t}"
    );
}

#[test]
fn a_sips_request_without_a_tls_hop_gets_480_and_is_never_sent_in_clear() {
    let mut h = Harness::new(&[PBX1]);
    let sips = invite("z9hG4bK-s2", "").replace("INVITE sip:", "INVITE sips:");
    let out = h.feed(Harness::carrier(), &sips);
    assert!(out.iter().all(|o| o.to.side == Side::Trunk), "{out:#?}");
    assert!(out.iter().any(|o| status(o) == 480), "{out:#?}");
    // In dialog: the next hop (the top Route) is UDP, or the sips URI
    // itself asks for UDP.
    for (branch, uri, route) in [
        (
            "z9hG4bK-s3",
            "sips:agent@10.0.0.1:5080",
            "Route: <sip:10.0.0.1:5080;transport=udp;lr>\r\n",
        ),
        ("z9hG4bK-s4", "sips:agent@10.0.0.1:5080;transport=udp", ""),
    ] {
        let bye = invite(branch, route)
            .replace("INVITE sip:+15550100@198.51.100.1", &format!("BYE {uri}"))
            .replace("CSeq: 1 INVITE", "CSeq: 2 BYE")
            .replace(
                "To: <sip:+15550100@198.51.100.1>",
                "To: <sip:+15550100@198.51.100.1>;tag=p1",
            );
        let out = h.feed(Harness::carrier(), &bye);
        assert!(
            out.iter().all(|o| o.to.side == Side::Trunk),
            "{uri}: {out:#?}"
        );
        assert!(out.iter().any(|o| status(o) == 480), "{uri}: {out:#?}");
    }
}

#[test]
fn a_new_target_set_leaves_a_forwarded_request_on_its_own_failover_order() {
    let mut h = Harness::new(&[PBX1, PBX2]);
    let out = h.feed(Harness::carrier(), &invite("z9hG4bK-ts1", ""));
    let first = text(&out[1]);
    assert_eq!(out[1].to.addr.to_string(), PBX1);
    // A host name resolved anew meanwhile: only PBX3 now.
    let allow = h.core.settings.sides[1].allow.clone();
    h.core
        .set_targets(Side::Pbx, vec![udp_target("10.0.0.3:5080")], allow);
    let next = h.feed(
        Harness::from_pbx(PBX1),
        &answer(&first, 503, "Service Unavailable", "x"),
    );
    let invites: Vec<String> = next
        .iter()
        .filter(|o| text(o).starts_with("INVITE "))
        .map(|o| o.to.addr.to_string())
        .collect();
    assert_eq!(invites, vec![PBX2], "the failover planned when it arrived");
    let out = h.feed(Harness::carrier(), &invite("z9hG4bK-ts2", ""));
    assert_eq!(
        out[1].to.addr.to_string(),
        "10.0.0.3:5080",
        "a new call: the new set"
    );
    assert_eq!(h.core.target_statuses(Side::Pbx).len(), 1);
}
