//! Media anchoring end to end: a carrier UA (this test, over UDP) calls
//! through callgate to a sipp PBX that echoes RTP (`-rtp_echo`). The SDP
//! in both directions names callgate's relay; RTP flows carrier → relay →
//! PBX → relay → carrier; a packet from a third address is dropped; the
//! silent call is reported by the media timeout; BYE frees the ports.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{
    await_metric, await_metric_at_most, config, free_port, scenario, Callgate, Ports, Sipp, Udp,
};

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
        .map(str::trim)
        .collect()
}

/// The `m=audio` port and `c=` address of an SDP body in a SIP message.
fn sdp_target(msg: &str) -> (String, u16) {
    let c = msg
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap_or_else(|| panic!("no c= in {msg}"));
    let port = msg
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in {msg}"));
    (c.trim().to_owned(), port)
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&[0xff; 160]);
    p
}

/// An initial INVITE from the carrier (this test's UA at `me`) with `sdp`.
fn carrier_invite(
    trunk: &str,
    me: &str,
    call_id: &str,
    from_tag: &str,
    cseq: u32,
    sdp: &str,
) -> String {
    format!(
        "INVITE sip:+15550100@{trunk} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}-{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:+15550199@{me}>;tag={from_tag}\r\nTo: <sip:+15550100@{trunk}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:+15550199@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
        len = sdp.len()
    )
}

/// The carrier's side of an established dialog: in-dialog requests go
/// through the route set callgate recorded (RFC 3261 §12.2).
struct CarrierDialog {
    me: String,
    pbx_port: u16,
    call_id: String,
    from_tag: String,
    routes: String,
    to: String,
}

impl CarrierDialog {
    /// The dialog the 200 OK to the carrier's INVITE set up.
    fn from_ok(ok: &str, me: &str, pbx_port: u16, call_id: &str, from_tag: &str) -> CarrierDialog {
        CarrierDialog {
            me: me.to_owned(),
            pbx_port,
            call_id: call_id.to_owned(),
            from_tag: from_tag.to_owned(),
            routes: header(ok, "Record-Route")
                .iter()
                .map(|r| format!("Route: {r}\r\n"))
                .collect(),
            to: header(ok, "To")
                .first()
                .copied()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// An in-dialog request, with an SDP body unless `sdp` is empty.
    fn request(&self, method: &str, cseq: u32, sdp: &str) -> String {
        let CarrierDialog {
            me,
            pbx_port,
            call_id,
            from_tag,
            routes,
            to,
        } = self;
        let ctype = if sdp.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:agent@127.0.0.1:{pbx_port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}-{method}-{cseq}\r\nMax-Forwards: 70\r\n{routes}From: <sip:+15550199@{me}>;tag={from_tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:+15550199@{me}>\r\n{ctype}Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    }
}

/// Starts callgate with `[media]` on a 20-port range starting at `base`
/// (offset per process), forwarding trunk calls to `pbx` (0: nowhere);
/// `media` adds keys to `[media]`, `extra` adds sections.
fn media_callgate(base: u16, pbx: u16, media: &str, extra: &str) -> (Callgate, u16) {
    media_callgate_env(base, pbx, media, extra, &[])
}

/// [`media_callgate`] with extra environment variables for callgate.
fn media_callgate_env(
    base: u16,
    pbx: u16,
    media: &str,
    extra: &str,
    env: &[(&str, &std::path::Path)],
) -> (Callgate, u16) {
    let ports = Ports::new();
    let media_min = base + (std::process::id() % 50) as u16 * 20;
    let pbx = if pbx == 0 { 9 } else { pbx };
    let cg = Callgate::start_with_env(
        ports,
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx}")],
            &["sip:127.0.0.1:9".to_owned()],
            &format!(
                "[media]\nenabled = true\nport_min = {media_min}\nport_max = {}\n{media}\n{extra}",
                media_min + 19
            ),
        ),
        env,
    );
    (cg, media_min)
}

/// A sipp PBX (`uas-basic.xml`) on `pbx_port` that answers one call and
/// echoes its RTP (`-rtp_echo`), tracing the messages it received.
fn echoing_pbx(pbx_port: u16) -> Sipp {
    let pbx_media = common::free_ports(4); // sipp binds RTP, RTCP and video ports from -mp
    Sipp::uas(
        &scenario("uas-basic.xml"),
        pbx_port,
        1,
        "u1",
        &["-mp", &pbx_media.to_string(), "-rtp_echo", "-trace_msg"],
    )
}

/// A loopback media socket (reads time out after 3 s) and its port.
fn media_socket() -> (UdpSocket, u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap_or_else(|e| panic!("{e}"));
    let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
    (s, port)
}

/// The carrier's side of a call through `cg`: the INVITE with `sdp`
/// (CSeq `cseq`), its 200 OK, the ACK. Returns the 200 and the dialog.
fn carrier_call(
    cg: &Callgate,
    carrier: &Udp,
    pbx_port: u16,
    (call_id, from_tag, cseq): (&str, &str, u32),
    sdp: &str,
) -> (String, CarrierDialog) {
    let me = format!("127.0.0.1:{}", carrier.port());
    let invite = carrier_invite(&cg.trunk(), &me, call_id, from_tag, cseq, sdp);
    carrier.send(&cg.trunk(), invite.as_bytes());
    let ok = carrier
        .recv_until("SIP/2.0 200 OK")
        .pop()
        .unwrap_or_default();
    let dialog = CarrierDialog::from_ok(&ok, &me, pbx_port, call_id, from_tag);
    carrier.send(&cg.trunk(), dialog.request("ACK", cseq, "").as_bytes());
    (ok, dialog)
}

#[test]
fn rtp_flows_through_the_relay_both_ways_and_ports_are_freed() {
    let pbx_port = free_port();
    let uas = echoing_pbx(pbx_port);
    let audit_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (cg, media_min) = media_callgate(
        43_000,
        pbx_port,
        "bind = \"127.0.0.1\"\nmedia_timeout_secs = 1",
        &format!(
            "[risk]\npolicy = \"{}\"\n\n[audit]\npath = \"{}\"\n",
            common::repo().join("sip-config/policy.toml").display(),
            audit_dir.path().join("audit.db").display()
        ),
    );
    let carrier = Udp::bind();
    let (media, my_media) = media_socket();
    let sdp = format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {my_media} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=candidate:1 1 UDP 2130706431 10.9.9.9 {my_media} typ host\r\na=ptime:20\r\n"
    );
    let (ok, dialog) = carrier_call(
        &cg,
        &carrier,
        pbx_port,
        ("media-call-1", "carrier-1", 1),
        &sdp,
    );
    let (relay_ip, leg_a) = sdp_target(&ok);
    assert_eq!(relay_ip, "127.0.0.1");
    assert!(
        (media_min..media_min + 20).contains(&leg_a),
        "the 200's SDP names the relay: {ok}"
    );

    // RTP: carrier → relay leg A → PBX (echo) → relay leg B → carrier.
    assert_echoes(&media, leg_a, 1..=5);
    // A third address is not the latched carrier: dropped, nothing echoes.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    stranger
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap_or_else(|e| panic!("{e}"));
    stranger
        .send_to(&rtp(99), ("127.0.0.1", leg_a))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 512];
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "no reply to a stranger"
    );
    assert_eq!(cg.metric("callgate_media_sessions"), 1.0);

    // Media stops: the timeout (1 s) reports it; the call stays up.
    await_metric(&cg, "callgate_media_timeouts_total", 1.0);

    carrier.send(&cg.trunk(), dialog.request("BYE", 2, "").as_bytes());
    carrier.recv_until("SIP/2.0 200 OK");
    let uas = uas.finish();
    uas.assert_all_ok(1, "PBX UAS");
    // The PBX saw the relay in the offer, not the carrier's port, and no
    // ICE candidate that would bypass it.
    let offer = uas
        .received_requests("INVITE")
        .into_iter()
        .next()
        .unwrap_or_default();
    let (_, leg_b) = sdp_target(&offer);
    assert!((media_min..media_min + 20).contains(&leg_b), "{offer}");
    assert_ne!(leg_b, my_media);
    assert!(!offer.contains("a=candidate"), "{offer}");
    assert!(
        offer.contains("a=rtpmap:101 telephone-event/8000"),
        "{offer}"
    );
    // BYE released the session and its ports; what it relayed is counted.
    assert_eq!(cg.metric("callgate_media_sessions"), 0.0);
    assert!(cg.metric("callgate_media_packets_total") >= 10.0);
    assert_eq!(cg.metric("callgate_media_dropped_source_total"), 1.0);
    for p in [leg_a, leg_b] {
        UdpSocket::bind(("127.0.0.1", p)).unwrap_or_else(|e| panic!("port {p} still held: {e}"));
    }
    // The call's audit record holds what the relay counted.
    let mut cg = cg;
    let status = cg.signal_and_wait("TERM", Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let rows = callgate::audit::decisions(&audit_dir.path().join("audit.db"), None, None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 1);
    let media = rows[0].media.clone().unwrap_or_default();
    assert_eq!(media[0]["a"]["packets"], 5, "{media}");
    assert_eq!(media[0]["a"]["dropped_source"], 1, "{media}");
    assert_eq!(media[0]["b"]["packets"], 5, "{media}");
    assert_eq!(media[0]["a"]["lost"], 0, "{media}");
    assert_eq!(media[0]["timeouts"], 1, "the silence is on record: {media}");
    assert_eq!(media[0]["ended"], "bye", "{media}");
}

/// A bencoded byte string.
fn b(s: &str) -> String {
    format!("{}:{s}", s.len())
}

/// Sends one ng command and returns the reply after the cookie.
fn ng(sock: &UdpSocket, to: u16, cookie: &str, dict: &str) -> String {
    sock.send_to(format!("{cookie} d{dict}e").as_bytes(), ("127.0.0.1", to))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 4096];
    let (n, _) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no ng reply to {cookie}: {e}"));
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    reply
        .strip_prefix(&format!("{cookie} "))
        .unwrap_or_else(|| panic!("reply without the cookie: {reply}"))
        .to_owned()
}

/// The port of `m=audio` in an SDP inside an ng reply.
fn ng_sdp_port(reply: &str) -> u16 {
    reply
        .split("m=audio ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no SDP port in {reply}"))
}

#[test]
fn the_relay_answers_rtpengines_ng_protocol() {
    let ng_port = free_port();
    let (cg, _) = media_callgate(
        44_000,
        0,
        &format!("ng_listen = \"127.0.0.1:{ng_port}\""),
        "",
    );
    let ctl = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    ctl.set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ng(
            &ctl,
            ng_port,
            "1_ping",
            &format!("{}{}", b("command"), b("ping"))
        ),
        format!("d{}{}e", b("result"), b("pong"))
    );
    let (a, bsock) = (
        UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")),
        UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")),
    );
    for s in [&a, &bsock] {
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let sdp = |port: u16| {
        format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n")
    };
    let port = |s: &UdpSocket| s.local_addr().map(|x| x.port()).unwrap_or(0);
    // Keys in the order Kamailio sends them (not sorted).
    let offer = format!(
        "{}{}{}{}{}{}{}{}",
        b("sdp"),
        b(&sdp(port(&a))),
        b("call-id"),
        b("ng-call-1"),
        b("from-tag"),
        b("ta"),
        b("command"),
        b("offer")
    );
    let reply = ng(&ctl, ng_port, "2_offer", &offer);
    assert!(reply.contains(&b("ok")), "{reply}");
    let to_b = ng_sdp_port(&reply);
    // A retransmitted offer (same cookie) gets the same reply, not a new session.
    assert_eq!(ng(&ctl, ng_port, "2_offer", &offer), reply);
    let answer = format!(
        "{}{}{}{}{}{}{}{}{}{}",
        b("command"),
        b("answer"),
        b("call-id"),
        b("ng-call-1"),
        b("from-tag"),
        b("ta"),
        b("to-tag"),
        b("tb"),
        b("sdp"),
        b(&sdp(port(&bsock)))
    );
    let reply = ng(&ctl, ng_port, "3_answer", &answer);
    let to_a = ng_sdp_port(&reply);
    bsock
        .send_to(&rtp(1), ("127.0.0.1", to_b))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 512];
    let (n, _) = a.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], rtp(1).as_slice());
    a.send_to(&rtp(2), ("127.0.0.1", to_a))
        .unwrap_or_else(|e| panic!("{e}"));
    let (n, _) = bsock.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], rtp(2).as_slice());
    let query = ng(
        &ctl,
        ng_port,
        "4_query",
        &format!(
            "{}{}{}{}",
            b("command"),
            b("query"),
            b("call-id"),
            b("ng-call-1")
        ),
    );
    // totals: two RTP packets of 172 bytes relayed, no errors.
    assert!(
        query.contains("3:RTPd5:bytesi344e6:errorsi0e7:packetsi2ee"),
        "{query}"
    );
    let del = ng(
        &ctl,
        ng_port,
        "5_delete",
        &format!(
            "{}{}{}{}",
            b("call-id"),
            b("ng-call-1"),
            b("command"),
            b("delete")
        ),
    );
    assert!(del.contains(&b("ok")), "{del}");
    assert_eq!(cg.metric("callgate_media_sessions"), 0.0);
    assert_eq!(
        cg.metric("callgate_media_ng_requests_total{command=\"offer\",result=\"ok\"}"),
        1.0
    );
}

#[test]
fn silent_media_ends_the_call_with_a_bye_to_each_side() {
    let pbx_port = free_port();
    let uas = Sipp::uas(
        &scenario("uas-basic.xml"),
        pbx_port,
        1,
        "u1",
        &["-mp", &common::free_ports(4).to_string(), "-trace_msg"],
    );
    let (cg, _) = media_callgate(
        45_000,
        pbx_port,
        "media_timeout_secs = 1\ntimeout_bye = true",
        "",
    );
    let carrier = Udp::bind();
    let me = format!("127.0.0.1:{}", carrier.port());
    let sdp = "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    carrier_call(
        &cg,
        &carrier,
        pbx_port,
        ("silent-call-1", "carrier-9", 7),
        sdp,
    );
    // No RTP at all: after the timeout callgate ends the call on both sides.
    let bye = carrier.recv_until("BYE ").pop().unwrap_or_default();
    assert!(
        bye.starts_with(&format!("BYE sip:+15550199@{me} SIP/2.0")),
        "{bye}"
    );
    assert!(
        bye.contains("\r\nFrom: <sip:+15550100@"),
        "from the callee: {bye}"
    );
    assert!(bye.contains(";tag="), "{bye}");
    assert!(
        bye.contains("\r\nTo: <sip:+15550199@") && bye.contains("tag=carrier-9"),
        "{bye}"
    );
    assert!(
        bye.contains("Reason: SIP;cause=408;text=\"media timeout\""),
        "{bye}"
    );
    let uas = uas.finish();
    uas.assert_all_ok(1, "the PBX got its BYE and answered it");
    let pbx_bye = uas.received_requests("BYE").pop().unwrap_or_default();
    assert!(
        pbx_bye.contains("CSeq: 8 BYE"),
        "after the caller's CSeq 7: {pbx_bye}"
    );
    assert!(pbx_bye.contains("tag=carrier-9"), "{pbx_bye}");
    await_metric(&cg, "callgate_media_timeouts_total", 1.0);
    assert_eq!(cg.metric("callgate_media_sessions"), 0.0);
}

/// RFC 3264 §8.3.1: a re-INVITE whose offer names a new address moves the
/// stream. The relay keeps its ports (the answer names the same leg), sends
/// to the new address, relatches to it, and drops the old one.
#[test]
fn a_reinvite_that_moves_the_carrier_moves_the_stream() {
    let pbx_port = free_port();
    let pbx_media = common::free_ports(4);
    let uas = Sipp::uas(
        &scenario("uas-reinvite.xml"),
        pbx_port,
        1,
        "u1",
        &["-mp", &pbx_media.to_string(), "-rtp_echo"],
    );
    let (cg, media_min) = media_callgate(46_000, pbx_port, "bind = \"127.0.0.1\"", "");
    let carrier = Udp::bind();
    let (old, old_port) = media_socket();
    let (new, new_port) = media_socket();
    let sdp = |version: u32, port: u16| {
        format!(
            "v=0\r\no=carrier 7 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
    };
    let (ok, dialog) = carrier_call(
        &cg,
        &carrier,
        pbx_port,
        ("media-move-1", "carrier-move", 1),
        &sdp(1, old_port),
    );
    let (_, leg_a) = sdp_target(&ok);
    assert!((media_min..media_min + 20).contains(&leg_a), "{ok}");
    let echo = |s: &UdpSocket, seq: u16| -> Option<u16> {
        s.send_to(&rtp(seq), ("127.0.0.1", leg_a))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 512];
        s.recv_from(&mut buf).ok().map(|(_, from)| from.port())
    };
    assert_eq!(echo(&old, 1), Some(leg_a), "media flows before the move");

    // The carrier moves its media to another port (a new o= version).
    let moved = sdp(2, new_port);
    carrier.send(&cg.trunk(), dialog.request("INVITE", 2, &moved).as_bytes());
    let ok2 = carrier
        .recv_until("SIP/2.0 200 OK")
        .last()
        .cloned()
        .unwrap_or_default();
    assert!(ok2.contains("CSeq: 2 INVITE"), "{ok2}");
    assert_eq!(sdp_target(&ok2).1, leg_a, "the relay keeps its port: {ok2}");
    carrier.send(&cg.trunk(), dialog.request("ACK", 2, "").as_bytes());

    // From the new address the stream flows both ways again...
    for seq in 2..=4 {
        assert_eq!(echo(&new, seq), Some(leg_a), "packet {seq} after the move");
    }
    // ...and the old address is now a stranger: dropped, nothing comes back.
    old.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(echo(&old, 5), None, "the old address no longer latched");

    carrier.send(&cg.trunk(), dialog.request("BYE", 3, "").as_bytes());
    carrier.recv_until("SIP/2.0 200 OK");
    uas.finish().assert_all_ok(1, "PBX UAS");
    // The session's counters are folded in when it ends (BYE): the old
    // address's packet was dropped at the relay, not relayed and lost.
    assert_eq!(cg.metric("callgate_media_sessions"), 0.0);
    assert_eq!(cg.metric("callgate_media_dropped_source_total"), 1.0);
}

/// SDES-SRTP termination (`pbx_transport = "rtp"`): the carrier offers
/// SRTP, the PBX (sipp, echoing RTP) is offered and speaks plain RTP. The
/// carrier's packets are made by libsrtp; what comes back through the
/// relay is opened by libsrtp with the key of callgate's answer.
#[test]
fn srtp_from_the_carrier_is_terminated_for_a_plain_pbx() {
    use base64::Engine as _;
    use callgate::media::srtp::{CryptoAttribute, CryptoSuite, MasterKey};
    use common::srtp::libsrtp;

    let pbx_port = free_port();
    let uas = echoing_pbx(pbx_port);
    let (cg, media_min) = media_callgate(
        47_000,
        pbx_port,
        "bind = \"127.0.0.1\"\npbx_transport = \"rtp\"",
        "",
    );
    let carrier = Udp::bind();
    let (media, my_media) = media_socket();
    let suite = CryptoSuite::AesCm128HmacSha1_80;
    let key = MasterKey::from_concatenated(&[0x5a; 30]).unwrap_or_else(|| panic!("key"));
    let line = base64::engine::general_purpose::STANDARD.encode(key.concatenated());
    let sdp = format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {my_media} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{line}\r\na=ptime:20\r\n"
    );
    let (ok, dialog) = carrier_call(
        &cg,
        &carrier,
        pbx_port,
        ("srtp-call-1", "carrier-s", 1),
        &sdp,
    );
    let (_, leg_a) = sdp_target(&ok);
    assert!((media_min..media_min + 20).contains(&leg_a), "{ok}");
    assert!(ok.contains("m=audio") && ok.contains(" RTP/SAVP 0"), "{ok}");
    let ours = ok
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| CryptoAttribute::parse(v.trim()).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|| panic!("no a=crypto in the 200: {ok}"));
    assert_eq!((ours.tag, ours.suite), (1, suite));

    // Eight packets protected by libsrtp; the sixth is then forged.
    let plain: Vec<Vec<u8>> = (1..=8u16).map(rtp).collect();
    let mut srtp: Vec<Vec<u8>> = libsrtp(&key, suite, "protect", &plain)
        .into_iter()
        .map(|p| p.unwrap_or_else(|| panic!("libsrtp protect")))
        .collect();
    srtp[5][30] ^= 0x40;
    let mut echoed = Vec::new();
    for (i, p) in srtp.iter().enumerate() {
        media
            .send_to(p, ("127.0.0.1", leg_a))
            .unwrap_or_else(|e| panic!("{e}"));
        if i == 5 {
            continue; // dropped: the next echo is the seventh packet's
        }
        let mut buf = [0u8; 512];
        let (n, from) = media
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("echo of packet {} did not come back: {e}", i + 1));
        assert_eq!(from.port(), leg_a);
        echoed.push(buf[..n].to_vec());
    }
    let opened = libsrtp(&ours.key, suite, "unprotect", &echoed);
    let want: Vec<Option<Vec<u8>>> = [0, 1, 2, 3, 4, 6, 7]
        .iter()
        .map(|&i| Some(plain[i].clone()))
        .collect();
    assert_eq!(opened, want, "libsrtp opens every echo to the original");

    carrier.send(&cg.trunk(), dialog.request("BYE", 2, "").as_bytes());
    carrier.recv_until("SIP/2.0 200 OK");
    let uas = uas.finish();
    uas.assert_all_ok(1, "PBX UAS");
    let offer = uas
        .received_requests("INVITE")
        .into_iter()
        .next()
        .unwrap_or_default();
    assert!(
        offer.contains(" RTP/AVP 0"),
        "the PBX is offered RTP: {offer}"
    );
    assert!(
        !offer.contains("a=crypto"),
        "no key reaches the PBX: {offer}"
    );
    assert_eq!(cg.metric("callgate_media_srtp_failed_total"), 1.0);
    assert_eq!(cg.metric("callgate_media_sessions"), 0.0);
}

/// Sends RTP from `media` to the relay's `leg_a` and asserts each packet
/// comes back (the PBX echoes it) through the relay.
fn assert_echoes(media: &UdpSocket, leg_a: u16, seqs: std::ops::RangeInclusive<u16>) {
    for seq in seqs {
        media
            .send_to(&rtp(seq), ("127.0.0.1", leg_a))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 512];
        let (n, from) = media
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("echo {seq} did not come back through the relay: {e}"));
        assert_eq!(&buf[..n], rtp(seq).as_slice());
        assert_eq!(from.port(), leg_a, "the echo comes from the relay's leg A");
    }
}

/// Issue 14, "the relay's host loses a worker thread": a panic in a
/// media worker (injected through `media::relay::fault`, debug builds
/// only) fails that worker's calls cleanly — a BYE to each side naming the
/// failure, the ports freed, a metric and an error line with the Call-ID
/// — leaves the other worker's call alone, and both workers serve the next
/// calls. Without the supervision the thread dies with its sessions: no
/// BYE comes (the carrier's wait for one fails) and the calls placed on
/// that worker afterwards have no media.
#[test]
fn a_panicking_media_worker_ends_its_calls_cleanly_and_serves_new_ones() {
    let pbx_port = free_port();
    let uas = Sipp::uas(
        &scenario("uas-basic.xml"),
        pbx_port,
        4,
        "u1",
        &[
            "-mp",
            &common::free_ports(4).to_string(),
            "-rtp_echo",
            "-trace_msg",
        ],
    );
    let trigger_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let trigger = trigger_dir.path().join("panic-now");
    // Two workers: sessions are dealt to them by id, one call each.
    let (cg, media_min) = media_callgate_env(
        46_000,
        pbx_port,
        "workers = 2",
        "",
        &[(callgate::media::relay::fault::PANIC_FILE_VAR, &trigger)],
    );
    let carrier = Udp::bind();
    let call = |n: u32| {
        let (media, my_media) = media_socket();
        let sdp = format!(
            "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {my_media} RTP/AVP 0\r\n"
        );
        let (id, tag) = (format!("worker-panic-{n}"), format!("carrier-{n}"));
        let (ok, dialog) = carrier_call(&cg, &carrier, pbx_port, (&id, &tag, 1), &sdp);
        let (_, leg_a) = sdp_target(&ok);
        assert!((media_min..media_min + 20).contains(&leg_a), "{ok}");
        assert_echoes(&media, leg_a, 1..=3);
        (id, media, leg_a, dialog)
    };
    let first = [call(1), call(2)];

    // One worker panics at its next idle scan: one call ends.
    std::fs::write(&trigger, b"").unwrap_or_else(|e| panic!("{e}"));
    let bye = carrier.recv_until("BYE ").pop().unwrap_or_default();
    assert!(
        bye.contains("Reason: SIP;cause=408;text=\"media relay failure\""),
        "{bye}"
    );
    let (failed, kept): (Vec<_>, Vec<_>) = first
        .into_iter()
        .partition(|(id, ..)| bye.contains(&format!("Call-ID: {id}\r\n")));
    let [(failed_id, _, failed_leg, _)] = &failed[..] else {
        panic!("the BYE names one of the calls: {bye}");
    };
    await_metric(&cg, "callgate_media_worker_panics_total", 1.0);
    assert_eq!(cg.metric("callgate_media_sessions_failed_total"), 1.0);
    assert_eq!(cg.metric("callgate_media_sessions"), 1.0);
    let log = cg.log();
    assert!(
        log.lines()
            .any(|l| l.contains("media relay worker failed") && l.contains(failed_id.as_str())),
        "an error line names the call:\n{log}"
    );
    // The failed call's ports are free again.
    UdpSocket::bind(("127.0.0.1", *failed_leg))
        .unwrap_or_else(|e| panic!("port {failed_leg} still held: {e}"));
    // The other worker's call is untouched.
    let [(_, kept_media, kept_leg, kept_dialog)] = &kept[..] else {
        panic!("one call kept");
    };
    assert_echoes(kept_media, *kept_leg, 20..=22);
    let bye_ok = |dialog: &CarrierDialog| {
        carrier.send(&cg.trunk(), dialog.request("BYE", 2, "").as_bytes());
        carrier.recv_until("SIP/2.0 200 OK");
    };
    bye_ok(kept_dialog);

    // Both workers serve the next calls (one each; one at a time, within
    // the source's share of the 20-port range).
    for n in [3, 4] {
        bye_ok(&call(n).3);
    }
    let uas = uas.finish();
    uas.assert_all_ok(4, "the PBX got a BYE for every call");
    let pbx_bye = uas.received_requests("BYE");
    assert!(
        pbx_bye
            .iter()
            .any(|b| b.contains(failed_id.as_str()) && b.contains("media relay failure")),
        "{pbx_bye:#?}"
    );
    assert_eq!(cg.metric("callgate_media_sessions"), 0.0);
}

/// An initial INVITE the PBX never answers is failed by callgate itself
/// (Timer B, RFC 3261 §17.1.1.2: a 408 toward the carrier that no received
/// response carried); the call's relay session ends with it, so its ports
/// go back to the pool instead of waiting for the media timeout.
#[test]
fn a_call_callgate_itself_fails_frees_its_media() {
    // PBX target 127.0.0.1:9: nothing answers. T1 = 50 ms: Timer B 3.2 s.
    let (cg, _) = media_callgate(
        43_500,
        0,
        "bind = \"127.0.0.1\"\nmedia_timeout_secs = 3600",
        "[timers]\nt1_ms = 50\n",
    );
    let carrier = Udp::bind();
    let (_media, my_media) = media_socket();
    let me = format!("127.0.0.1:{}", carrier.port());
    let sdp = format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {my_media} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    let invite = carrier_invite(&cg.trunk(), &me, "media-unanswered-1", "carrier-u", 1, &sdp);
    carrier.send(&cg.trunk(), invite.as_bytes());
    await_metric(&cg, "callgate_media_sessions", 1.0);
    let failure = carrier.recv_until("SIP/2.0 408").pop().unwrap_or_default();
    assert!(failure.contains("media-unanswered-1"), "{failure}");
    await_metric_at_most(&cg, "callgate_media_sessions", 0.0);
}
