//! Attacks on the media relay, from real, distinct hosts (issue 13): a
//! carrier, an attacker and a PBX, each in a network namespace of its own
//! (tests/common/netns.rs), callgate listening on each host's link. The
//! carrier and the PBX are hand-made UAs over real sockets (every byte of
//! SIP and RTP visible to the test); callgate is the real binary.
//!
//! **Needs root** (network namespaces), as CI has.
//!
//! * RTP spraying of the relay's port range gets the attacker no audio and
//!   puts none of its packets on the other leg (strict-source latching);
//! * a latched leg is not moved by a new source, only by new SDP;
//! * a BYE with the call's Call-ID but not its dialog's tags leaves the
//!   media alone;
//! * no free ports: 503 with Retry-After, nothing reaches the PBX; a late
//!   offer in a 200 goes on without its SDP rather than unanchored;
//! * an INVITE reusing an anchored call's Call-ID cannot take its legs;
//! * caps per call (m-lines) and per signalling source (ports);
//! * a silent call is reclaimed: BYE to both sides, ports freed;
//! * a source the trunk ACL refuses cannot latch a leg, even where the SDP
//!   names it.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::netns::{Host, Lab};
use common::{await_metric, Callgate, Ports};

/// The SIP port of the carrier and PBX stand-ins on their hosts.
const SIP: u16 = 5060;

/// A test network: carrier, attacker and PBX hosts and callgate between.
struct Net {
    _lab: Lab,
    carrier: Host,
    attacker: Host,
    pbx: Host,
    cg: Callgate,
    /// callgate's trunk-side SIP address (on the carrier's link).
    trunk: SocketAddr,
    /// The relay's port range.
    media: (u16, u16),
    carrier_sip: UdpSocket,
    pbx_sip: UdpSocket,
}

/// Builds the hosts and starts callgate: trunk on the carrier's link
/// admitting only the carrier, PBX side on the PBX's link admitting only
/// the PBX, the relay on the carrier's link (every host routes to it) with
/// `ports` ports from `min`; `media` adds keys to `[media]`.
fn net(min: u16, ports: u16, media: &str) -> Net {
    let lab = Lab::new(&["carrier", "attacker", "pbx"]);
    let (carrier, attacker, pbx) = (
        lab.host(0).clone(),
        lab.host(1).clone(),
        lab.host(2).clone(),
    );
    let p = Ports::new();
    let max = min + ports - 1;
    let config = format!(
        r#"
[trunk]
udp = "{cgate}:{trunk}"
allow = ["{carrier}/32"]
targets = ["sip:{carrier}:{SIP}"]

[pbx]
udp = "{pgate}:{pbxp}"
allow = ["{pbx}/32"]
targets = ["sip:{pbx}:{SIP}"]

[health]
interval_secs = 0

[admin]
listen = "127.0.0.1:{admin}"

[media]
enabled = true
bind = "{cgate}"
port_min = {min}
port_max = {max}
{media}
"#,
        cgate = carrier.gate,
        pgate = pbx.gate,
        carrier = carrier.addr,
        pbx = pbx.addr,
        trunk = p.trunk,
        pbxp = p.pbx,
        admin = p.admin,
    );
    let cg = Callgate::start(p, &config);
    let carrier_sip = carrier.udp(SIP);
    let pbx_sip = pbx.udp(SIP);
    Net {
        trunk: SocketAddr::from((carrier.gate, p.trunk)),
        media: (min, max),
        carrier,
        attacker,
        pbx,
        cg,
        _lab: lab,
        carrier_sip,
        pbx_sip,
    }
}

/// An SDP offer or answer: `streams` audio m-lines from `port` up.
fn sdp(ip: Ipv4Addr, port: u16, streams: u16) -> String {
    let mut s = format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n");
    for i in 0..streams {
        s.push_str(&format!(
            "m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            port + 2 * i
        ));
    }
    s
}

/// The `m=audio` port of the first stream of a message's SDP.
fn media_port(msg: &str) -> u16 {
    msg.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in {msg}"))
}

fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
        .map(str::trim)
        .collect()
}

fn first<'a>(msg: &'a str, name: &str) -> &'a str {
    headers(msg, name).first().copied().unwrap_or_default()
}

/// Receives on `sock` until a datagram starts with `start` (5 s per read);
/// returns it and where it came from.
#[track_caller]
fn recv_start(sock: &UdpSocket, start: &str) -> (String, SocketAddr) {
    let mut buf = vec![0u8; 65_535];
    let mut seen = Vec::new();
    for _ in 0..20 {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            break;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with(start) {
            return (text, from);
        }
        seen.push(text);
    }
    panic!("nothing starting {start:?}; got {seen:#?}");
}

/// Whether anything starting `start` arrives within `wait`.
fn arrives(sock: &UdpSocket, start: &str, wait: Duration) -> bool {
    sock.set_read_timeout(Some(wait)).ok();
    let mut buf = vec![0u8; 65_535];
    let mut got = false;
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        if buf[..n].starts_with(start.as_bytes()) {
            got = true;
            break;
        }
    }
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
    got
}

/// A response to `req` with `status`, its To tagged `tag` (unless it has
/// one), Record-Route copied (RFC 3261 §12.1.1), and `sdp` when not empty.
fn response(req: &str, status: &str, tag: &str, contact: &str, sdp: &str) -> String {
    let mut r = format!("SIP/2.0 {status}\r\n");
    for via in headers(req, "Via") {
        r.push_str(&format!("Via: {via}\r\n"));
    }
    for rr in headers(req, "Record-Route") {
        r.push_str(&format!("Record-Route: {rr}\r\n"));
    }
    let to = first(req, "To");
    let to = if to.contains("tag=") {
        to.to_owned()
    } else {
        format!("{to};tag={tag}")
    };
    r.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <{contact}>\r\n",
        first(req, "From"),
        first(req, "Call-ID"),
        first(req, "CSeq"),
    ));
    if sdp.is_empty() {
        r.push_str("Content-Length: 0\r\n\r\n");
    } else {
        r.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ));
    }
    r
}

/// One call's dialog as the carrier sees it.
struct Call {
    call_id: String,
    from_tag: String,
    /// The To header of the 200 (with the PBX's tag).
    to: String,
    routes: String,
    /// The PBX's Contact: the in-dialog Request-URI.
    target: String,
    /// The relay ports the carrier and the PBX were told to send to.
    leg_a: u16,
    leg_b: u16,
    /// The INVITE as the PBX received it.
    pbx_invite: String,
}

impl Net {
    fn send(&self, sock: &UdpSocket, to: SocketAddr, msg: &str) {
        sock.send_to(msg.as_bytes(), to)
            .unwrap_or_else(|e| panic!("send to {to}: {e}"));
    }

    fn carrier_invite(&self, call_id: &str, from_tag: &str, body: &str) -> String {
        let (me, trunk) = (self.carrier.addr, self.trunk);
        format!(
            "INVITE sip:+15550100@{trunk} SIP/2.0\r\nVia: SIP/2.0/UDP {me}:{SIP};branch=z9hG4bK-{call_id}-1\r\nMax-Forwards: 70\r\nFrom: <sip:+15550199@{me}>;tag={from_tag}\r\nTo: <sip:+15550100@{trunk}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:+15550199@{me}:{SIP}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// The carrier calls the PBX through callgate with SDP naming its media
    /// at `carrier_media` (an address on its host); the PBX answers with
    /// its media at `pbx_media`. Returns the established call.
    fn call(&self, call_id: &str, carrier_media: SocketAddr, pbx_media: u16) -> Call {
        let ip = |a: SocketAddr| match a.ip() {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(_) => panic!("IPv4 only"),
        };
        let offer = sdp(ip(carrier_media), carrier_media.port(), 1);
        let from_tag = format!("{call_id}-c");
        self.send(
            &self.carrier_sip,
            self.trunk,
            &self.carrier_invite(call_id, &from_tag, &offer),
        );
        let (invite, from) = recv_start(&self.pbx_sip, "INVITE ");
        let leg_b = media_port(&invite);
        let contact = format!("sip:agent@{}:{SIP}", self.pbx.addr);
        let ok = response(
            &invite,
            "200 OK",
            &format!("{call_id}-p"),
            &contact,
            &sdp(self.pbx.addr, pbx_media, 1),
        );
        self.send(&self.pbx_sip, from, &ok);
        let (ok, _) = recv_start(&self.carrier_sip, "SIP/2.0 200 OK");
        let call = Call {
            call_id: call_id.to_owned(),
            from_tag,
            to: first(&ok, "To").to_owned(),
            routes: headers(&ok, "Record-Route")
                .iter()
                .map(|r| format!("Route: {r}\r\n"))
                .collect(),
            target: contact,
            leg_a: media_port(&ok),
            leg_b,
            pbx_invite: invite,
        };
        self.send(
            &self.carrier_sip,
            self.trunk,
            &self.in_dialog(&call, "ACK", 1, ""),
        );
        recv_start(&self.pbx_sip, "ACK ");
        call
    }

    /// A call with the carrier's media on its host's port 7000 and the
    /// PBX's on port 8000: those two sockets and the call.
    fn talking(&self, call_id: &str) -> (UdpSocket, UdpSocket, Call) {
        let carrier_media = self.carrier.udp(7000);
        let pbx_media = self.pbx.udp(8000);
        let call = self.call(call_id, SocketAddr::from((self.carrier.addr, 7000)), 8000);
        (carrier_media, pbx_media, call)
    }

    /// The carrier's re-INVITE (CSeq 2, SDP version 2) offering `streams`
    /// streams from `port` on its host.
    fn reinvite(&self, call: &Call, port: u16, streams: u16) {
        let offer = sdp(self.carrier.addr, port, streams).replace("o=- 1 1", "o=- 1 2");
        self.send(
            &self.carrier_sip,
            self.trunk,
            &self.in_dialog(call, "INVITE", 2, &offer),
        );
    }

    /// An in-dialog request from the carrier (`body`: SDP, or empty).
    fn in_dialog(&self, call: &Call, method: &str, cseq: u32, body: &str) -> String {
        let me = self.carrier.addr;
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me}:{SIP};branch=z9hG4bK-{id}-{method}-{cseq}\r\nMax-Forwards: 70\r\n{routes}From: <sip:+15550199@{me}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:+15550199@{me}:{SIP}>\r\n{ctype}Content-Length: {len}\r\n\r\n{body}",
            target = call.target,
            routes = call.routes,
            tag = call.from_tag,
            to = call.to,
            id = call.call_id,
            len = body.len(),
        )
    }

    /// Binds the relay's ports in `ports` here, as something else using
    /// them would: the relay skips them.
    fn hold(&self, ports: std::ops::Range<u16>) -> Vec<UdpSocket> {
        ports
            .map(|p| UdpSocket::bind(self.relay(p)).unwrap_or_else(|e| panic!("hold {p}: {e}")))
            .collect()
    }

    /// The relay's address and `port`.
    fn relay(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.carrier.gate, port))
    }
}

/// An RTP packet whose payload is `mark` repeated (who sent it).
fn rtp(seq: u16, mark: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x0b, 0x0c, mark];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&[mark; 160]);
    p
}

/// The mark of every RTP packet arriving on `sock` within `wait`.
fn marks(sock: &UdpSocket, wait: Duration) -> Vec<u8> {
    sock.set_read_timeout(Some(wait)).ok();
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        if n > 12 {
            got.push(buf[12]);
        }
    }
    got
}

const CARRIER: u8 = 0xc1;
const PBX: u8 = 0xb2;
const ATTACKER: u8 = 0xa7;

/// (a) RTP hijack by spraying: the attacker sends RTP to every port of the
/// relay's range before and while the call's legs talk. Under
/// latch-to-first-packet its first packets latched both legs: it got the
/// caller's and the agent's audio and its own reached them. Now it gets
/// nothing, none of its packets reach either side, and the legitimate
/// audio flows both ways.
#[test]
fn an_attacker_spraying_the_port_range_gets_no_audio_and_injects_none() {
    let n = net(31_000, 16, "");
    let attacker = n.attacker.udp(0);
    let (carrier_media, pbx_media, call) = n.talking("spray-1");
    let spray = |seq: u16| {
        for port in n.media.0..=n.media.1 {
            let _ = attacker.send_to(&rtp(seq, ATTACKER), n.relay(port));
        }
    };
    // The attacker is first on every port: nothing has latched yet.
    spray(1);
    for seq in 2..=6 {
        carrier_media
            .send_to(&rtp(seq, CARRIER), n.relay(call.leg_a))
            .unwrap_or_else(|e| panic!("{e}"));
        pbx_media
            .send_to(&rtp(seq, PBX), n.relay(call.leg_b))
            .unwrap_or_else(|e| panic!("{e}"));
        spray(seq);
    }
    let at_pbx = marks(&pbx_media, Duration::from_millis(500));
    let at_carrier = marks(&carrier_media, Duration::from_millis(200));
    let at_attacker = marks(&attacker, Duration::from_millis(200));
    assert_eq!(at_pbx, vec![CARRIER; 5], "the PBX hears the carrier only");
    assert_eq!(at_carrier, vec![PBX; 5], "the carrier hears the PBX only");
    assert!(
        at_attacker.is_empty(),
        "the attacker heard {at_attacker:x?}"
    );
    // Its packets on the call's legs are counted, per side the leg faces.
    assert!(n.cg.metric("callgate_media_foreign_packets_total{side=\"trunk\"}") >= 6.0);
    assert!(n.cg.metric("callgate_media_foreign_packets_total{side=\"pbx\"}") >= 6.0);
}

/// (b) A latched leg is not moved by packets from a new source (even the
/// carrier's own host, another port); a re-INVITE with new SDP re-arms it
/// and it latches to the new address.
#[test]
fn a_latched_leg_moves_only_with_new_sdp() {
    let n = net(31_100, 16, "");
    let (old, new) = (n.carrier.udp(7000), n.carrier.udp(7002));
    let pbx_media = n.pbx.udp(8000);
    let call = n.call("move-1", SocketAddr::from((n.carrier.addr, 7000)), 8000);
    old.send_to(&rtp(1, CARRIER), n.relay(call.leg_a))
        .unwrap_or_else(|e| panic!("{e}"));
    new.send_to(&rtp(2, ATTACKER), n.relay(call.leg_a))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(marks(&pbx_media, Duration::from_millis(400)), vec![CARRIER]);
    pbx_media
        .send_to(&rtp(3, PBX), n.relay(call.leg_b))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(marks(&old, Duration::from_millis(400)), vec![PBX]);
    assert!(marks(&new, Duration::from_millis(100)).is_empty());

    // The carrier moves to port 7002 with a re-INVITE.
    n.reinvite(&call, 7002, 1);
    let (reinvite, from) = recv_start(&n.pbx_sip, "INVITE ");
    let ok = response(
        &reinvite,
        "200 OK",
        "",
        &call.target,
        &sdp(n.pbx.addr, 8000, 1).replace("o=- 1 1", "o=- 1 2"),
    );
    n.send(&n.pbx_sip, from, &ok);
    recv_start(&n.carrier_sip, "SIP/2.0 200 OK");
    n.send(&n.carrier_sip, n.trunk, &n.in_dialog(&call, "ACK", 2, ""));
    new.send_to(&rtp(4, CARRIER), n.relay(call.leg_a))
        .unwrap_or_else(|e| panic!("{e}"));
    old.send_to(&rtp(5, ATTACKER), n.relay(call.leg_a))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        marks(&pbx_media, Duration::from_millis(400)),
        vec![CARRIER],
        "the new address latched, the old one is foreign"
    );
    pbx_media
        .send_to(&rtp(6, PBX), n.relay(call.leg_b))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(marks(&new, Duration::from_millis(400)), vec![PBX]);
}

/// (c) Media is keyed by dialog: a BYE with the call's Call-ID but other
/// tags — from the trunk (a stranger) or from the PBX side (a forked leg,
/// a stale dialog) — does not tear the relay session down; the dialog's
/// own BYE does.
#[test]
fn a_bye_with_the_call_id_but_not_the_dialogs_tags_keeps_the_media() {
    let n = net(31_200, 16, "");
    let (carrier_media, pbx_media, call) = n.talking("tags-1");
    assert_eq!(n.cg.metric("callgate_media_sessions"), 1.0);

    // From the trunk: the dialog table refuses it (481).
    let stranger = Call {
        from_tag: "not-the-caller".to_owned(),
        ..clone_call(&call)
    };
    n.send(
        &n.carrier_sip,
        n.trunk,
        &n.in_dialog(&stranger, "BYE", 5, ""),
    );
    recv_start(&n.carrier_sip, "SIP/2.0 481");
    // From the PBX side: a BYE of another leg of the same Call-ID.
    let pbx_gate = SocketAddr::from((n.pbx.gate, n.cg.ports.pbx));
    let bye = format!(
        "BYE sip:+15550199@{c}:{SIP} SIP/2.0\r\nVia: SIP/2.0/UDP {p}:{SIP};branch=z9hG4bK-forked-bye\r\nMax-Forwards: 70\r\nFrom: <sip:+15550100@{p}>;tag=forked-leg\r\nTo: <sip:+15550199@{c}>;tag={tag}\r\nCall-ID: {id}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
        c = n.carrier.addr,
        p = n.pbx.addr,
        tag = call.from_tag,
        id = call.call_id,
    );
    n.send(&n.pbx_sip, pbx_gate, &bye);
    // Whatever became of that BYE, the call's audio still flows.
    let _ = arrives(&n.carrier_sip, "BYE ", Duration::from_millis(500));
    carrier_media
        .send_to(&rtp(1, CARRIER), n.relay(call.leg_a))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(marks(&pbx_media, Duration::from_millis(500)), vec![CARRIER]);
    assert_eq!(n.cg.metric("callgate_media_sessions"), 1.0);

    // The dialog's own BYE ends it.
    n.send(&n.carrier_sip, n.trunk, &n.in_dialog(&call, "BYE", 2, ""));
    let (bye, from) = recv_start(&n.pbx_sip, "BYE ");
    n.send(
        &n.pbx_sip,
        from,
        &response(&bye, "200 OK", "", &call.target, ""),
    );
    recv_start(&n.carrier_sip, "SIP/2.0 200 OK");
    assert_eq!(n.cg.metric("callgate_media_sessions"), 0.0);
}

fn clone_call(c: &Call) -> Call {
    Call {
        call_id: c.call_id.clone(),
        from_tag: c.from_tag.clone(),
        to: c.to.clone(),
        routes: c.routes.clone(),
        target: c.target.clone(),
        leg_a: c.leg_a,
        leg_b: c.leg_b,
        pbx_invite: c.pbx_invite.clone(),
    }
}

/// (d) Fail closed: with the port range used up, a new call gets 503 with
/// Retry-After from callgate, never an INVITE to the PBX with the
/// carrier's own SDP (media around the relay); the exhaustion is counted.
#[test]
fn no_free_ports_answers_503_and_nothing_goes_unanchored() {
    // Eight ports, four of them held by something else: room for one call
    // (two legs, RTP and RTCP each). The source cap is not what refuses.
    let n = net(31_300, 8, "max_ports_per_source = 8");
    let _held = n.hold(31_300..31_304);
    let first = n.call("full-1", SocketAddr::from((n.carrier.addr, 7000)), 8000);
    assert_ne!(first.leg_a, 7000);
    let offer = sdp(n.carrier.addr, 7002, 1);
    n.send(
        &n.carrier_sip,
        n.trunk,
        &n.carrier_invite("full-2", "full-2-c", &offer),
    );
    let (refused, _) = recv_start(&n.carrier_sip, "SIP/2.0 503");
    assert!(refused.contains("\r\nRetry-After: "), "{refused}");
    assert!(
        !arrives(&n.pbx_sip, "INVITE ", Duration::from_millis(500)),
        "the PBX got an INVITE it should not have"
    );
    assert_eq!(n.cg.metric("callgate_media_ports_exhausted_total"), 1.0);
    assert_eq!(
        n.cg.metric("callgate_media_offers_refused_total{reason=\"ports\"}"),
        1.0
    );
    assert_eq!(n.cg.metric("callgate_media_sessions"), 1.0);
}

/// (e) Caps: an SDP with more m-lines than `max_streams` is refused (488)
/// before it takes any port; the calls of one signalling source hold at
/// most `max_ports_per_source` ports (503 beyond), while another source —
/// the PBX calling out — still gets its calls anchored.
#[test]
fn caps_per_call_and_per_source_leave_ports_for_others() {
    let n = net(31_400, 16, "max_streams = 2\nmax_ports_per_source = 4");
    let wide = sdp(n.carrier.addr, 7000, 3);
    n.send(
        &n.carrier_sip,
        n.trunk,
        &n.carrier_invite("cap-wide", "cap-wide-c", &wide),
    );
    recv_start(&n.carrier_sip, "SIP/2.0 488");
    assert_eq!(
        n.cg.metric("callgate_media_offers_refused_total{reason=\"streams\"}"),
        1.0
    );
    assert_eq!(n.cg.metric("callgate_media_sessions"), 0.0);

    // The carrier's first call takes its four ports; its second is refused.
    n.call("cap-1", SocketAddr::from((n.carrier.addr, 7000)), 8000);
    n.send(
        &n.carrier_sip,
        n.trunk,
        &n.carrier_invite("cap-2", "cap-2-c", &sdp(n.carrier.addr, 7002, 1)),
    );
    let (refused, _) = recv_start(&n.carrier_sip, "SIP/2.0 503");
    assert!(refused.contains("\r\nRetry-After: "), "{refused}");
    assert!(!arrives(&n.pbx_sip, "INVITE ", Duration::from_millis(300)));
    assert_eq!(
        n.cg.metric("callgate_media_offers_refused_total{reason=\"source_cap\"}"),
        1.0
    );
    assert_eq!(n.cg.metric("callgate_media_ports_exhausted_total"), 0.0);

    // The PBX's outbound call is anchored from its own share.
    let pbx_side = SocketAddr::from((n.pbx.gate, n.cg.ports.pbx));
    let (me, body) = (n.pbx.addr, sdp(n.pbx.addr, 8002, 1));
    let invite = format!(
        "INVITE sip:+15550123@{pbx_side} SIP/2.0\r\nVia: SIP/2.0/UDP {me}:{SIP};branch=z9hG4bK-out-1\r\nMax-Forwards: 70\r\nFrom: <sip:agent@{me}>;tag=out-1\r\nTo: <sip:+15550123@{pbx_side}>\r\nCall-ID: out-1\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@{me}:{SIP}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    n.send(&n.pbx_sip, pbx_side, &invite);
    let (out, _) = recv_start(&n.carrier_sip, "INVITE ");
    assert!(
        out.contains(&format!("c=IN IP4 {}", n.carrier.gate)),
        "anchored at the relay: {out}"
    );
    assert_ne!(media_port(&out), 8002);
    assert_eq!(n.cg.metric("callgate_media_sessions"), 2.0);
}

/// (f) Silent-call reclaim: a call whose media carried no packet for
/// `reclaim_after_secs` is ended (a BYE to each side) and its ports freed.
#[test]
fn a_silent_call_is_reclaimed_and_its_ports_freed() {
    let n = net(31_500, 16, "reclaim_after_secs = 2");
    let call = n.call("silent-1", SocketAddr::from((n.carrier.addr, 7000)), 8000);
    assert_eq!(n.cg.metric("callgate_media_sessions"), 1.0);
    await_metric(&n.cg, "callgate_media_reclaimed_total", 1.0);
    let (bye, _) = recv_start(&n.carrier_sip, "BYE ");
    assert!(bye.contains("media reclaimed"), "{bye}");
    let (bye, _) = recv_start(&n.pbx_sip, "BYE ");
    assert!(bye.contains(&call.call_id), "{bye}");
    assert_eq!(n.cg.metric("callgate_media_sessions"), 0.0);
    // The ports are free again.
    UdpSocket::bind(n.relay(call.leg_a)).unwrap_or_else(|e| panic!("leg A still held: {e}"));
}

/// (g) The trunk's ACL bounds media too: a carrier SDP naming an address
/// outside the trunk's `allow` (the attacker's, as a spoofed or forged
/// media gateway) lets nobody latch there, in `sdp` mode (the announced
/// address and port) as in `network` mode (any port in the ACL).
#[test]
fn a_source_the_trunk_acl_refuses_cannot_latch() {
    for (i, mode) in ["sdp", "network"].iter().enumerate() {
        let n = net(
            31_600 + 100 * i as u16,
            16,
            &format!("latch_trunk = \"{mode}\""),
        );
        let attacker_media = n.attacker.udp(7000);
        let pbx_media = n.pbx.udp(8000);
        let call = n.call(
            &format!("acl-{mode}"),
            SocketAddr::from((n.attacker.addr, 7000)),
            8000,
        );
        for seq in 1..=3 {
            attacker_media
                .send_to(&rtp(seq, ATTACKER), n.relay(call.leg_a))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        pbx_media
            .send_to(&rtp(9, PBX), n.relay(call.leg_b))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            marks(&pbx_media, Duration::from_millis(400)).is_empty(),
            "{mode}: the attacker's packets reached the PBX"
        );
        assert!(
            marks(&attacker_media, Duration::from_millis(200)).is_empty(),
            "{mode}: the PBX's audio went to the address the SDP named"
        );
        assert_eq!(
            n.cg.metric("callgate_media_foreign_packets_total{side=\"trunk\"}"),
            3.0,
            "{mode}"
        );
        if *mode == "network" {
            // The carrier itself, from any port, is in the ACL: it latches.
            let carrier_media = n.carrier.udp(7100);
            carrier_media
                .send_to(&rtp(10, CARRIER), n.relay(call.leg_a))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(marks(&pbx_media, Duration::from_millis(400)), vec![CARRIER]);
        }
    }
}

/// An admitted trunk source resends an initial INVITE with an anchored
/// call's Call-ID, a new From tag and SDP naming another host: under media
/// keyed by Call-ID alone its SDP became the call's other leg and the
/// caller's audio went to that host. It is refused (400) and the call's
/// audio keeps flowing to the PBX only.
#[test]
fn an_invite_reusing_an_anchored_call_id_cannot_take_over_its_legs() {
    let n = net(31_800, 16, "");
    let attacker_media = n.attacker.udp(7000);
    let (carrier_media, pbx_media, call) = n.talking("reuse-1");
    carrier_media
        .send_to(&rtp(1, CARRIER), n.relay(call.leg_a))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(marks(&pbx_media, Duration::from_millis(400)), vec![CARRIER]);

    let hijack = n
        .carrier_invite(&call.call_id, "another-tag", &sdp(n.attacker.addr, 7000, 1))
        .replace("z9hG4bK-reuse-1-1", "z9hG4bK-reuse-1-hijack");
    n.send(&n.carrier_sip, n.trunk, &hijack);
    recv_start(&n.carrier_sip, "SIP/2.0 400");
    assert!(!arrives(&n.pbx_sip, "INVITE ", Duration::from_millis(300)));
    carrier_media
        .send_to(&rtp(2, CARRIER), n.relay(call.leg_a))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(marks(&pbx_media, Duration::from_millis(400)), vec![CARRIER]);
    assert!(marks(&attacker_media, Duration::from_millis(200)).is_empty());
    assert_eq!(n.cg.metric("callgate_media_sessions"), 1.0);
}

/// The answer direction fails closed too: a late offer (an INVITE without
/// SDP, the offer in the PBX's 200) that finds no free ports cannot be
/// refused any more, so the 200 reaches the carrier without its SDP —
/// never with the PBX's own address and ports (media around the relay).
#[test]
fn a_late_offer_that_finds_no_ports_goes_on_without_sdp_not_unanchored() {
    let n = net(31_900, 8, "max_ports_per_source = 8");
    let _held = n.hold(31_900..31_908);
    let invite = n
        .carrier_invite("late-1", "late-1-c", "")
        .replace("Content-Type: application/sdp\r\n", "");
    n.send(&n.carrier_sip, n.trunk, &invite);
    let (invite, from) = recv_start(&n.pbx_sip, "INVITE ");
    let contact = format!("sip:agent@{}:{SIP}", n.pbx.addr);
    let offer = sdp(n.pbx.addr, 8000, 1);
    n.send(
        &n.pbx_sip,
        from,
        &response(&invite, "200 OK", "late-1-p", &contact, &offer),
    );
    let (ok, _) = recv_start(&n.carrier_sip, "SIP/2.0 200 OK");
    assert!(
        !ok.contains("m=audio"),
        "the PBX's SDP went on unanchored: {ok}"
    );
    assert!(ok.contains("\r\nContent-Length: 0\r\n"), "{ok}");
    assert_eq!(n.cg.metric("callgate_media_ports_exhausted_total"), 1.0);
}

/// A re-INVITE whose new stream finds no free ports is refused with 503
/// (RFC 3261 §14.2: the session stays as it was) and never reaches the
/// PBX with the carrier's own address; the call's audio goes on.
#[test]
fn a_reinvite_that_finds_no_ports_is_refused_and_the_call_goes_on() {
    let n = net(32_000, 8, "max_ports_per_source = 8");
    let _held = n.hold(32_000..32_004);
    let (carrier_media, pbx_media, call) = n.talking("more-1");
    n.reinvite(&call, 7000, 2);
    let (refused, _) = recv_start(&n.carrier_sip, "SIP/2.0 503");
    assert!(refused.contains("\r\nRetry-After: "), "{refused}");
    assert!(!arrives(&n.pbx_sip, "INVITE ", Duration::from_millis(300)));
    carrier_media
        .send_to(&rtp(1, CARRIER), n.relay(call.leg_a))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(marks(&pbx_media, Duration::from_millis(400)), vec![CARRIER]);
    assert_eq!(n.cg.metric("callgate_media_ports_exhausted_total"), 1.0);
}
