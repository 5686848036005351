//! Parse and rewrite tests on realistic carrier, PBX and WebRTC bodies; every
//! rewrite is checked byte for byte.

use std::net::IpAddr;

use super::*;

/// Joins lines, each ended with CRLF.
fn crlf(lines: &[&str]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| [l.as_bytes(), b"\r\n"])
        .flatten()
        .copied()
        .collect()
}

/// Joins lines, each ended with a bare LF.
fn lf(lines: &[&str]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| [l.as_bytes(), b"\n"])
        .flatten()
        .copied()
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn anchor(addr: &str, rtp_port: u16, rtcp_port: Option<u16>) -> Option<Anchor> {
    Some(Anchor {
        addr: ip(addr),
        rtp_port,
        rtcp_port,
        keying: Keying::AsIs,
    })
}

fn keyed(keying: Keying) -> Option<Anchor> {
    Some(Anchor {
        keying,
        ..anchor("192.0.2.1", 30002, Some(30003))?
    })
}

const NO_OPTIONS: RewriteOptions = RewriteOptions {
    strip_ice: false,
    origin_version: None,
};

/// Rewrites, checks `len()` against the bytes and that the result parses.
fn rewrite(body: &[u8], plan: &[Option<Anchor>], options: RewriteOptions) -> Vec<u8> {
    let sdp = Sdp::parse(body).unwrap();
    let rw = sdp.rewrite(plan, &options).unwrap();
    let out = rw.to_vec();
    assert_eq!(rw.len(), out.len());
    Sdp::parse(&out).unwrap_or_else(|e| panic!("rewrite does not parse: {e}"));
    out
}

#[track_caller]
fn assert_body(got: &[u8], want: &[u8]) {
    assert_eq!(String::from_utf8_lossy(got), String::from_utf8_lossy(want));
}

fn carrier_offer() -> Vec<u8> {
    crlf(&[
        "v=0",
        "o=CarrierSBC 1712345678 1712345678 IN IP4 203.0.113.10",
        "s=SIP Call",
        "c=IN IP4 203.0.113.10",
        "t=0 0",
        "m=audio 20000 RTP/AVP 0 8 101",
        "b=AS:80",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=maxptime:40",
        "a=sendrecv",
        "a=X-carrier-tag: keep me ",
    ])
}

// ---------------------------------------------------------------- parsing

#[test]
fn parses_carrier_offer() {
    let body = carrier_offer();
    let sdp = Sdp::parse(&body).unwrap();
    let o = sdp.origin();
    assert_eq!(
        (
            o.username,
            o.sess_id,
            o.sess_version,
            o.nettype,
            o.addrtype,
            o.address
        ),
        (
            "CarrierSBC",
            "1712345678",
            1712345678,
            "IN",
            "IP4",
            "203.0.113.10"
        )
    );
    assert_eq!(sdp.connection().map(|c| c.addr), Some(ip("203.0.113.10")));
    assert_eq!(sdp.lines().len(), 15);
    assert!(sdp
        .lines()
        .iter()
        .all(|l| &body[l.value_end..l.end] == b"\r\n"));
    let [m] = sdp.media() else { panic!() };
    assert_eq!(
        (m.media_type, m.port, m.port_count, m.proto),
        ("audio", 20000, 1, "RTP/AVP")
    );
    assert_eq!(m.formats().collect::<Vec<_>>(), ["0", "8", "101"]);
    assert_eq!(m.connection, None);
    assert_eq!(m.address, Some(ip("203.0.113.10")));
    assert_eq!(m.ptime, Some(20));
    assert_eq!(m.direction, Direction::SendRecv);
    assert!(!m.rtcp_mux && m.rtcp.is_none() && !m.has_ice && !m.has_crypto);
    assert!(!m.is_on_hold() && !m.is_disabled());
}

#[test]
fn parses_ipv6_rtcp_with_address_and_port_count() {
    let body = crlf(&[
        "v=0",
        "o=- 25678 753849 IN IP6 2001:db8::10",
        "s=-",
        "t=0 0",
        "m=audio 49170/2 RTP/AVP 0",
        "c=IN IP6 2001:db8::10",
        "a=rtcp:53020 IN IP6 2001:db8::11",
        "m=video 51372 RTP/AVPF 99",
        "c=IN IP4 192.0.2.7",
        "a=rtcp:53021",
        "a=rtpmap:99 h264/90000",
    ]);
    let sdp = Sdp::parse(&body).unwrap();
    assert_eq!(sdp.connection(), None);
    let [a, v] = sdp.media() else { panic!() };
    assert_eq!((a.port, a.port_count), (49170, 2));
    assert_eq!(a.address, Some(ip("2001:db8::10")));
    let rtcp = a.rtcp.unwrap();
    assert_eq!((rtcp.port, rtcp.addr), (53020, Some(ip("2001:db8::11"))));
    assert_eq!((v.proto, v.address), ("RTP/AVPF", Some(ip("192.0.2.7"))));
    assert_eq!(v.rtcp.map(|r| (r.port, r.addr)), Some((53021, None)));
}

#[test]
fn parses_directions_with_media_level_overriding_session_level() {
    let body = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "a=inactive",
        "m=audio 4000 RTP/AVP 0",
        "m=audio 4002 RTP/AVP 0",
        "a=sendrecv",
        "m=audio 4004 RTP/AVP 0",
        "a=recvonly",
        "m=audio 4006 RTP/AVP 0",
        "a=sendonly",
    ]);
    let sdp = Sdp::parse(&body).unwrap();
    assert_eq!(sdp.session_direction(), Some(Direction::Inactive));
    let dirs: Vec<_> = sdp
        .media()
        .iter()
        .map(|m| (m.direction, m.is_on_hold()))
        .collect();
    assert_eq!(
        dirs,
        [
            (Direction::Inactive, true),
            (Direction::SendRecv, false),
            (Direction::RecvOnly, false),
            (Direction::SendOnly, true),
        ]
    );
}

#[test]
fn unspecified_address_is_hold_only_without_ice() {
    let hold = crlf(&[
        "v=0",
        "o=- 1 2 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "m=audio 4002 RTP/AVP 0",
        "c=IN IP6 ::",
    ]);
    let sdp = Sdp::parse(&hold).unwrap();
    assert!(sdp
        .media()
        .iter()
        .all(|m| m.is_on_hold() && m.direction == Direction::SendRecv));

    let trickle = crlf(&[
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
    ]);
    assert!(!Sdp::parse(&trickle).unwrap().media()[0].is_on_hold());
}

#[test]
fn parses_crypto_ice_mux_and_ptime_variants() {
    let body = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "a=ice-lite",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 4000 RTP/SAVP 0",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
        "a=ptime:20.5",
        "a=rtcp-mux",
        "m=audio 4002 RTP/AVP 0",
        "a=ptime:soon",
        "a=candidate:1 1 UDP 2130706431 192.0.2.1 4002 typ host",
    ]);
    let sdp = Sdp::parse(&body).unwrap();
    assert!(sdp.session_has_ice() && sdp.has_ice());
    let [a, b] = sdp.media() else { panic!() };
    assert!(a.has_crypto && a.rtcp_mux && !a.has_ice);
    assert_eq!(a.ptime, Some(20));
    assert!(!b.has_crypto && !b.rtcp_mux && b.has_ice);
    assert_eq!(b.ptime, None);
}

#[test]
fn tolerates_bare_lf_missing_final_ending_empty_lines_and_extra_spaces() {
    let mut body = lf(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN  IP4 192.0.2.1",
        "t=0 0",
        "m=audio  4000 RTP/AVP 0 ",
        "",
    ]);
    body.extend_from_slice(b"a=sendonly");
    let sdp = Sdp::parse(&body).unwrap();
    let m = &sdp.media()[0];
    assert_eq!(
        (m.port, m.format_list, m.direction),
        (4000, "0", Direction::SendOnly)
    );
    let last = sdp.lines().last().unwrap();
    assert_eq!((last.value_end, last.end), (body.len(), body.len()));
    assert_eq!(&body[sdp.lines()[0].value_end..sdp.lines()[0].end], b"\n");
}

#[test]
fn disabled_stream_needs_no_connection() {
    let body = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "t=0 0",
        "m=video 0 RTP/AVP 31",
    ]);
    let sdp = Sdp::parse(&body).unwrap();
    assert!(sdp.media()[0].is_disabled());
    assert_eq!(sdp.media()[0].address, None);
}

#[test]
fn rejects_malformed_input_with_typed_errors() {
    let base = [
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
    ];
    let with = |extra: &[&str]| {
        let mut lines = base.to_vec();
        lines.extend_from_slice(extra);
        Sdp::parse(&crlf(&lines)).unwrap_err()
    };
    let bad = |line, field, reason| SdpError::BadField {
        line,
        field,
        reason,
    };

    assert_eq!(Sdp::parse(b""), Err(SdpError::MissingVersion));
    assert_eq!(Sdp::parse(b"\r\n\r\n"), Err(SdpError::MissingVersion));
    assert_eq!(Sdp::parse(&crlf(&base[1..])), Err(SdpError::MissingVersion));
    assert_eq!(
        Sdp::parse(b"v=1\r\n"),
        Err(bad(1, "v=", "version is not 0"))
    );
    assert_eq!(Sdp::parse(b"v=0\r\ns=-\r\n"), Err(SdpError::MissingOrigin));
    assert_eq!(
        Sdp::parse(b"v=0\r\nm=audio 1 RTP/AVP 0\r\n"),
        Err(SdpError::MissingOrigin)
    );
    assert_eq!(
        Sdp::parse(b"hello world"),
        Err(SdpError::MalformedLine { line: 1 })
    );
    assert_eq!(with(&["garbage"]), SdpError::MalformedLine { line: 6 });
    assert_eq!(with(&[" a=x"]), SdpError::MalformedLine { line: 6 });
    assert_eq!(with(&["1=x"]), SdpError::MalformedLine { line: 6 });
    assert_eq!(
        with(&["v=0"]),
        SdpError::Misplaced {
            line: 6,
            field: "v="
        }
    );
    assert_eq!(
        with(&["o=- 1 1 IN IP4 192.0.2.1"]),
        SdpError::Misplaced {
            line: 6,
            field: "o="
        }
    );
    assert_eq!(
        with(&["c=IN IP4 192.0.2.2"]),
        SdpError::Misplaced {
            line: 6,
            field: "c="
        }
    );
    assert_eq!(
        Sdp::parse(b"v=0\r\no=- 1 IN IP4 192.0.2.1\r\n"),
        Err(bad(2, "o=", "expected 6 fields"))
    );
    assert_eq!(
        Sdp::parse(b"v=0\r\no=- 1 x IN IP4 192.0.2.1\r\n"),
        Err(bad(2, "o=", "sess-version is not a number"))
    );
    assert_eq!(
        Sdp::parse(b"v=0\r\no=- 1 99999999999999999999 IN IP4 h\r\n"),
        Err(bad(2, "o=", "sess-version is not a number"))
    );
    for port in ["x", "-1", "+5", "65536", "", "4000/0", "4000/", "4000/x"] {
        let line = format!("m=audio {port} RTP/AVP 0");
        assert!(
            matches!(
                with(&[&line]),
                SdpError::BadField {
                    line: 6,
                    field: "m=",
                    ..
                }
            ),
            "{line}"
        );
    }
    assert!(matches!(
        with(&["m=audio 4000"]),
        SdpError::BadField { field: "m=", .. }
    ));
    for c in [
        "c=IN IP4 999.1.1.1",
        "c=IN IP4 2001:db8::1",
        "c=IN IP6 192.0.2.1",
        "c=IN IP4 host.example.com",
        "c=IN IP4 224.2.1.1/127",
        "c=IN IP6 fe80::1%eth0",
        "c=ATM NSAP 47.0005",
        "c=IN IPX 1.2.3.4",
        "c=IN IP4",
        "c=IN IP4 192.0.2.1 extra",
    ] {
        let err = with(&["m=audio 4000 RTP/AVP 0", c]);
        assert!(
            matches!(
                err,
                SdpError::BadField {
                    line: 7,
                    field: "c=",
                    ..
                }
            ),
            "{c}: {err}"
        );
    }
    for rtcp in [
        "a=rtcp:",
        "a=rtcp",
        "a=rtcp:70000",
        "a=rtcp:1 IN IP4",
        "a=rtcp:1 IN IP4 nope",
    ] {
        let err = with(&["m=audio 4000 RTP/AVP 0", rtcp]);
        assert!(
            matches!(
                err,
                SdpError::BadField {
                    line: 7,
                    field: "a=rtcp",
                    ..
                }
            ),
            "{rtcp}: {err}"
        );
    }
    assert_eq!(
        with(&["m=audio 4000 RTP/AVP 0", "a=rtcp:1", "a=rtcp:2"]),
        SdpError::Misplaced {
            line: 8,
            field: "a=rtcp"
        }
    );
    assert_eq!(
        Sdp::parse(b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\n"),
        Err(SdpError::MissingConnection { media: 0 })
    );
    assert!(matches!(
        Sdp::parse(b"v=0\r\no=- 1 1 IN IP4 \xff\r\n"),
        Err(SdpError::BadField {
            field: "o=",
            reason: "not UTF-8",
            ..
        })
    ));
}

#[test]
fn enforces_limits() {
    let limits = Limits::default();
    let big = vec![b'a'; limits.max_bytes + 1];
    assert_eq!(Sdp::parse(&big), Err(SdpError::TooLarge(limits.max_bytes)));

    let mut many_lines = carrier_offer();
    many_lines.extend(b"a=x\r\n".repeat(limits.max_lines));
    assert_eq!(Sdp::parse(&many_lines), Err(SdpError::TooManyLines(512)));
    let empty_lines = [b"v=0".as_slice(), &b"\n".repeat(600)].concat();
    assert_eq!(Sdp::parse(&empty_lines), Err(SdpError::TooManyLines(512)));

    let mut many_media = carrier_offer();
    many_media.extend(b"m=audio 0 RTP/AVP 0\r\n".repeat(32));
    assert_eq!(Sdp::parse(&many_media), Err(SdpError::TooManyMedia(32)));

    let small = Limits {
        max_bytes: 1000,
        max_lines: 20,
        max_media: 1,
    };
    assert!(Sdp::parse_with(&carrier_offer(), &small).is_ok());
    let two = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 h",
        "m=audio 0 RTP/AVP 0",
        "m=audio 0 RTP/AVP 0",
    ]);
    assert_eq!(
        Sdp::parse_with(&two, &small),
        Err(SdpError::TooManyMedia(1))
    );
}

// ---------------------------------------------------------------- rewriting

#[test]
fn carrier_offer_rewrites_session_connection_port_and_version_only() {
    let out = rewrite(
        &carrier_offer(),
        &[anchor("192.0.2.1", 30000, Some(30001))],
        RewriteOptions {
            strip_ice: false,
            origin_version: Some(1712345679),
        },
    );
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=CarrierSBC 1712345678 1712345679 IN IP4 203.0.113.10",
            "s=SIP Call",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0 8 101",
            "b=AS:80",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
            "a=maxptime:40",
            "a=sendrecv",
            "a=X-carrier-tag: keep me ",
        ]),
    );
}

#[test]
fn empty_plan_entries_and_no_options_leave_body_identical() {
    let body = carrier_offer();
    let sdp = Sdp::parse(&body).unwrap();
    let rw = sdp.rewrite(&[None], &RewriteOptions::default()).unwrap();
    assert_eq!(rw.to_vec(), body);
    assert_eq!(rw.len(), body.len());
    assert!(!rw.is_empty());
    let mut out = b"prefix\r\n\r\n".to_vec();
    rw.write_to(&mut out);
    assert!(out.ends_with(&body));
}

#[test]
fn ipv6_offer_with_media_connection_and_rtcp_address() {
    let body = crlf(&[
        "v=0",
        "o=pbx 25678 753849 IN IP6 2001:db8::10",
        "s=-",
        "t=0 0",
        "m=audio 49170 RTP/AVP 0 101",
        "c=IN IP6 2001:db8::10",
        "a=rtcp:49171 IN IP6 2001:db8::10",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    let out = rewrite(
        &body,
        &[anchor("2001:db8:ffff::1", 40000, Some(40001))],
        NO_OPTIONS,
    );
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=pbx 25678 753849 IN IP6 2001:db8::10",
            "s=-",
            "t=0 0",
            "m=audio 40000 RTP/AVP 0 101",
            "c=IN IP6 2001:db8:ffff::1",
            "a=rtcp:40001 IN IP6 2001:db8:ffff::1",
            "a=rtpmap:101 telephone-event/8000",
        ]),
    );
    // Anchoring an IPv6 leg on an IPv4 relay address switches the family.
    let out = rewrite(
        &body,
        &[anchor("192.0.2.1", 40000, Some(40001))],
        NO_OPTIONS,
    );
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=pbx 25678 753849 IN IP6 2001:db8::10",
            "s=-",
            "t=0 0",
            "m=audio 40000 RTP/AVP 0 101",
            "c=IN IP4 192.0.2.1",
            "a=rtcp:40001 IN IP4 192.0.2.1",
            "a=rtpmap:101 telephone-event/8000",
        ]),
    );
}

#[test]
fn ipv4_session_connection_becomes_ipv6() {
    let out = rewrite(
        &carrier_offer(),
        &[anchor("2001:db8::99", 30000, None)],
        NO_OPTIONS,
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\r\nc=IN IP6 2001:db8::99\r\n"), "{text}");
    assert!(!text.contains("203.0.113.10\r\nt="));
}

#[test]
fn rejected_video_stream_stays_untouched() {
    let body = crlf(&[
        "v=0",
        "o=- 3 4 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 198.51.100.7",
        "t=0 0",
        "m=audio 49170 RTP/AVP 0 8",
        "a=rtcp:49171",
        "m=video 0 RTP/AVP 31",
        "a=rtpmap:31 H261/90000",
    ]);
    let out = rewrite(
        &body,
        &[anchor("192.0.2.1", 30000, Some(30001)), None],
        RewriteOptions {
            strip_ice: true,
            origin_version: Some(5),
        },
    );
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=- 3 5 IN IP4 198.51.100.7",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0 8",
            "a=rtcp:30001",
            "m=video 0 RTP/AVP 31",
            "a=rtpmap:31 H261/90000",
        ]),
    );
}

#[test]
fn rtcp_mux_points_rtcp_at_the_rtp_port() {
    let body = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.50",
        "s=-",
        "t=0 0",
        "m=audio 5004 RTP/AVPF 0",
        "c=IN IP4 192.0.2.50",
        "a=rtcp:5004 IN IP4 192.0.2.50",
        "a=rtcp-mux",
    ]);
    let out = rewrite(&body, &[anchor("192.0.2.1", 30000, None)], NO_OPTIONS);
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.50",
            "s=-",
            "t=0 0",
            "m=audio 30000 RTP/AVPF 0",
            "c=IN IP4 192.0.2.1",
            "a=rtcp:30000 IN IP4 192.0.2.1",
            "a=rtcp-mux",
        ]),
    );
}

#[test]
fn srtp_sdes_offer_keeps_crypto_lines() {
    let body = crlf(&[
        "v=0",
        "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
        "s=SDP Seminar",
        "c=IN IP4 168.2.17.12",
        "t=2873397496 2873404696",
        "m=audio 49170 RTP/SAVP 0",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
        "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32",
    ]);
    let sdp = Sdp::parse(&body).unwrap();
    assert!(sdp.media()[0].has_crypto);
    let out = rewrite(
        &body,
        &[anchor("192.0.2.1", 30002, Some(30003))],
        NO_OPTIONS,
    );
    let want = String::from_utf8(body)
        .unwrap()
        .replace("c=IN IP4 168.2.17.12", "c=IN IP4 192.0.2.1")
        .replace("m=audio 49170", "m=audio 30002");
    assert_body(&out, want.as_bytes());
}

// ------------------------------------------------------ SRTP termination

const SDES_OFFER: [&str; 9] = [
    "v=0",
    "o=- 1 1 IN IP4 203.0.113.5",
    "s=-",
    "c=IN IP4 203.0.113.5",
    "t=0 0",
    "m=audio 49170 RTP/SAVP 0 101",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
    "a=rtpmap:101 telephone-event/8000",
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj",
];

#[test]
fn plain_keying_turns_savp_into_avp_without_crypto() {
    let body = crlf(&SDES_OFFER);
    let sdp = Sdp::parse(&body).unwrap();
    let values: Vec<&str> = sdp.media()[0].crypto.iter().map(|c| c.value).collect();
    assert_eq!(values.len(), 2);
    assert!(values[1].starts_with("2 AES_CM_128_HMAC_SHA1_32 inline:"));
    let out = rewrite(&body, &[keyed(Keying::Plain)], NO_OPTIONS);
    let want = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 203.0.113.5",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 30002 RTP/AVP 0 101",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    assert_body(&out, &want);
}

#[test]
fn a_disabled_stream_only_changes_its_keying() {
    let mut lines = SDES_OFFER;
    lines[5] = "m=audio 0 RTP/SAVP 0 101";
    let body = crlf(&lines);
    let plain = Some(Anchor {
        addr: ip("192.0.2.1"),
        rtp_port: 0,
        rtcp_port: None,
        keying: Keying::Plain,
    });
    let out = rewrite(&body, &[plain], NO_OPTIONS);
    // No address or port moves (the session c= stays: nothing uses it).
    let want = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 203.0.113.5",
        "s=-",
        "c=IN IP4 203.0.113.5",
        "t=0 0",
        "m=audio 0 RTP/AVP 0 101",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    assert_body(&out, &want);
    let sdp = Sdp::parse(&body).unwrap();
    assert_eq!(
        sdp.rewrite(&[keyed(Keying::Plain)], &NO_OPTIONS),
        Err(RewriteError::Disabled { media: 0 }),
        "a port for a disabled stream is still refused"
    );
}

#[test]
fn sdes_keying_replaces_the_crypto_lines_in_place() {
    let body = crlf(&SDES_OFFER);
    let ours = Keying::Sdes(vec!["2 AES_CM_128_HMAC_SHA1_32 inline:ours".into()]);
    let out = rewrite(&body, &[keyed(ours)], NO_OPTIONS);
    let want = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 203.0.113.5",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 30002 RTP/SAVP 0 101",
        "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:ours",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    assert_body(&out, &want);
}

#[test]
fn sdes_keying_adds_crypto_to_a_plain_stream() {
    let ours = || Keying::Sdes(vec!["1 A inline:k1".into(), "2 B inline:k2".into()]);
    // Terminated lines: after the stream's last line, before the next m=.
    let body = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 198.51.100.7",
        "t=0 0",
        "m=audio 4000 RTP/AVPF 0",
        "a=rtcp-fb:* nack",
        "m=video 0 RTP/AVP 31",
    ]);
    let out = rewrite(&body, &[keyed(ours()), None], NO_OPTIONS);
    let want = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 30002 RTP/SAVPF 0",
        "a=rtcp-fb:* nack",
        "a=crypto:1 A inline:k1",
        "a=crypto:2 B inline:k2",
        "m=video 0 RTP/AVP 31",
    ]);
    assert_body(&out, &want);
    // An unterminated last line that the ICE strip removes: the new lines
    // go before it, with the body's line ending.
    let body = b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=ice-ufrag:abcd";
    let options = RewriteOptions {
        strip_ice: true,
        origin_version: None,
    };
    let out = rewrite(body, &[keyed(ours())], options);
    assert_body(
        &out,
        b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 30002 RTP/SAVP 0\r\na=crypto:1 A inline:k1\r\na=crypto:2 B inline:k2\r\n",
    );
    // DTLS-SRTP's proto is left alone (SDES keys do not apply to it).
    assert_eq!(secure_proto("UDP/TLS/RTP/SAVPF"), None);
    assert_eq!(plain_proto("UDP/TLS/RTP/SAVPF"), None);
}

#[test]
fn hold_by_direction_rewrites_the_address() {
    for dir in ["a=sendonly", "a=inactive"] {
        let body = crlf(&[
            "v=0",
            "o=- 1 2 IN IP4 198.51.100.7",
            "s=-",
            "t=0 0",
            "m=audio 49170 RTP/AVP 0",
            "c=IN IP4 198.51.100.7",
            dir,
        ]);
        assert!(Sdp::parse(&body).unwrap().media()[0].is_on_hold());
        let out = rewrite(
            &body,
            &[anchor("192.0.2.1", 30000, Some(30001))],
            NO_OPTIONS,
        );
        assert_body(
            &out,
            &crlf(&[
                "v=0",
                "o=- 1 2 IN IP4 198.51.100.7",
                "s=-",
                "t=0 0",
                "m=audio 30000 RTP/AVP 0",
                "c=IN IP4 192.0.2.1",
                dir,
            ]),
        );
    }
}

#[test]
fn hold_by_zero_address_stays_held() {
    let body = crlf(&[
        "v=0",
        "o=- 1 3 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "m=audio 49170 RTP/AVP 0",
        "a=rtcp:49171 IN IP4 0.0.0.0",
        "m=audio 49172 RTP/AVP 0",
        "c=IN IP6 ::",
    ]);
    let out = rewrite(
        &body,
        &[
            anchor("2001:db8::1", 30000, Some(30001)),
            anchor("192.0.2.1", 30002, Some(30003)),
        ],
        RewriteOptions {
            strip_ice: false,
            origin_version: Some(4),
        },
    );
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=- 1 4 IN IP4 198.51.100.7",
            "s=-",
            "c=IN IP4 0.0.0.0",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
            "a=rtcp:30001 IN IP4 0.0.0.0",
            "m=audio 30002 RTP/AVP 0",
            "c=IN IP6 ::",
        ]),
    );
    assert!(Sdp::parse(&out)
        .unwrap()
        .media()
        .iter()
        .all(|m| m.is_on_hold()));
}

fn webrtc_offer() -> Vec<u8> {
    crlf(&[
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=ice-options:trickle",
        "a=msid-semantic: WMS",
        "m=audio 54321 UDP/TLS/RTP/SAVPF 111 0 126",
        "c=IN IP4 198.51.100.20",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host generation 0",
        "a=candidate:2 1 udp 1686052607 198.51.100.20 54321 typ srflx raddr 192.168.1.5 rport 54321",
        "a=end-of-candidates",
        "a=ice-ufrag:F7gI",
        "a=ice-pwd:x9cml/YzichV2+XlhiMu8g",
        "a=fingerprint:sha-256 49:66:12:17:0D:1C:91:AE:57:4C:C6:36:DD:D5:97:D2:7D:62:C9:9A:7F:B9:A3:F4:70:03:E7:43:91:73:23:5E",
        "a=setup:actpass",
        "a=mid:0",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:126 telephone-event/8000",
    ])
}

#[test]
fn webrtc_offer_loses_ice_and_gets_the_relay() {
    let body = webrtc_offer();
    let sdp = Sdp::parse(&body).unwrap();
    assert!(sdp.session_has_ice() && sdp.media()[0].has_ice && sdp.media()[0].rtcp_mux);
    let out = rewrite(
        &body,
        &[anchor("192.0.2.1", 30000, None)],
        RewriteOptions {
            strip_ice: true,
            origin_version: Some(3),
        },
    );
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=- 4611731400430051336 3 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            "a=msid-semantic: WMS",
            "m=audio 30000 UDP/TLS/RTP/SAVPF 111 0 126",
            "c=IN IP4 192.0.2.1",
            "a=rtcp:30000 IN IP4 192.0.2.1",
            "a=fingerprint:sha-256 49:66:12:17:0D:1C:91:AE:57:4C:C6:36:DD:D5:97:D2:7D:62:C9:9A:7F:B9:A3:F4:70:03:E7:43:91:73:23:5E",
            "a=setup:actpass",
            "a=mid:0",
            "a=sendrecv",
            "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
            "a=rtpmap:126 telephone-event/8000",
        ]),
    );
    assert!(!Sdp::parse(&out).unwrap().has_ice());
}

#[test]
fn trickle_placeholder_address_is_replaced_not_kept_as_hold() {
    let body = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:F7gI",
        "a=ice-pwd:x9cml/YzichV2+XlhiMu8g",
    ]);
    let out = rewrite(&body, &[anchor("192.0.2.1", 30000, None)], NO_OPTIONS);
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "m=audio 30000 UDP/TLS/RTP/SAVPF 111",
            "c=IN IP4 192.0.2.1",
            "a=rtcp:30000 IN IP4 192.0.2.1",
            "a=ice-ufrag:F7gI",
            "a=ice-pwd:x9cml/YzichV2+XlhiMu8g",
        ]),
    );
}

#[test]
fn session_level_placeholder_with_ice_is_replaced() {
    let body = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=ice-ufrag:F7gI",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    ]);
    assert!(!Sdp::parse(&body).unwrap().media()[0].is_on_hold());
    let out = rewrite(&body, &[anchor("192.0.2.1", 30000, None)], NO_OPTIONS);
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "a=ice-ufrag:F7gI",
            "m=audio 30000 UDP/TLS/RTP/SAVPF 111",
        ]),
    );
}

#[test]
fn bare_lf_and_mixed_endings_are_preserved() {
    let body = lf(&[
        "v=0",
        "o=- 7 7 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 198.51.100.7",
        "t=0 0",
        "m=audio 49170 RTP/AVP 0",
        "a=candidate:1 1 udp 1 198.51.100.7 49170 typ host",
        "a=rtcp:49171",
        "a=ptime:20",
    ]);
    let out = rewrite(
        &body,
        &[anchor("192.0.2.1", 30000, Some(30001))],
        RewriteOptions {
            strip_ice: true,
            origin_version: Some(8),
        },
    );
    assert_body(
        &out,
        &lf(&[
            "v=0",
            "o=- 7 8 IN IP4 198.51.100.7",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
            "a=rtcp:30001",
            "a=ptime:20",
        ]),
    );

    // Mixed: an inserted c= takes the ending of the line it follows.
    let body = b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\ns=-\r\nc=IN IP4 198.51.100.7\nt=0 0\r\nm=audio 4000 RTP/AVP 0\nm=audio 4002 RTP/AVP 8\r\na=ptime:30\n";
    let out = rewrite(body, &[None, anchor("192.0.2.1", 30000, None)], NO_OPTIONS);
    assert_body(
        &out,
        b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\ns=-\r\nc=IN IP4 198.51.100.7\nt=0 0\r\nm=audio 4000 RTP/AVP 0\nm=audio 30000 RTP/AVP 8\r\nc=IN IP4 192.0.2.1\r\na=ptime:30\n",
    );
}

fn two_streams_on_session_connection() -> Vec<u8> {
    crlf(&[
        "v=0",
        "o=- 10 10 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 198.51.100.7",
        "t=0 0",
        "m=audio 49170 RTP/AVP 0",
        "i=main audio",
        "a=rtcp:49171",
        "m=video 51372 RTP/AVP 99",
        "b=AS:512",
        "a=rtpmap:99 h263-1998/90000",
    ])
}

#[test]
fn session_connection_shared_by_two_streams_on_one_relay_address() {
    let out = rewrite(
        &two_streams_on_session_connection(),
        &[
            anchor("192.0.2.1", 30000, Some(30001)),
            anchor("192.0.2.1", 30002, Some(30003)),
        ],
        NO_OPTIONS,
    );
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=- 10 10 IN IP4 198.51.100.7",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
            "i=main audio",
            "a=rtcp:30001",
            "m=video 30002 RTP/AVP 99",
            "b=AS:512",
            "a=rtpmap:99 h263-1998/90000",
        ]),
    );
}

#[test]
fn session_connection_shared_by_streams_on_two_relay_addresses() {
    let out = rewrite(
        &two_streams_on_session_connection(),
        &[
            anchor("192.0.2.1", 30000, Some(30001)),
            anchor("192.0.2.2", 30002, Some(30003)),
        ],
        NO_OPTIONS,
    );
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=- 10 10 IN IP4 198.51.100.7",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
            "i=main audio",
            "a=rtcp:30001",
            "m=video 30002 RTP/AVP 99",
            "c=IN IP4 192.0.2.2",
            "b=AS:512",
            "a=rtpmap:99 h263-1998/90000",
        ]),
    );
}

#[test]
fn session_connection_kept_for_a_stream_left_alone() {
    let out = rewrite(
        &two_streams_on_session_connection(),
        &[anchor("192.0.2.1", 30000, Some(30001)), None],
        NO_OPTIONS,
    );
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=- 10 10 IN IP4 198.51.100.7",
            "s=-",
            "c=IN IP4 198.51.100.7",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
            "i=main audio",
            "c=IN IP4 192.0.2.1",
            "a=rtcp:30001",
            "m=video 51372 RTP/AVP 99",
            "b=AS:512",
            "a=rtpmap:99 h263-1998/90000",
        ]),
    );
}

#[test]
fn unused_session_connection_is_hidden_too() {
    let body = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 198.51.100.7",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "c=IN IP4 198.51.100.8",
    ]);
    let out = rewrite(&body, &[anchor("192.0.2.1", 30000, None)], NO_OPTIONS);
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=- 1 1 IN IP4 198.51.100.7",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
            "c=IN IP4 192.0.2.1",
        ]),
    );
}

#[test]
fn inserted_connection_after_an_unterminated_last_line() {
    let mut body = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 198.51.100.7",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
    ]);
    body.extend_from_slice(b"m=audio 4002 RTP/AVP 0");
    let out = rewrite(&body, &[None, anchor("192.0.2.1", 30000, None)], NO_OPTIONS);
    let mut want = body.clone();
    want.truncate(want.len() - b"4002 RTP/AVP 0".len());
    want.extend_from_slice(b"30000 RTP/AVP 0\r\nc=IN IP4 192.0.2.1");
    assert_body(&out, &want);
}

#[test]
fn session_level_ice_is_stripped() {
    let body = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.9",
        "s=-",
        "a=ice-lite",
        "a=ice-ufrag:8hhY",
        "a=ice-pwd:asd88fgpdd777uzjYhagZg",
        "c=IN IP4 192.0.2.9",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "a=candidate:1 1 UDP 2130706431 192.0.2.9 4000 typ host",
        "a=remote-candidates:1 192.0.2.3 45664",
        "a=ice-mismatch",
        "m=audio 0 RTP/AVP 0",
        "a=candidate:1 1 UDP 2130706431 192.0.2.9 4002 typ host",
    ]);
    let out = rewrite(
        &body,
        &[anchor("192.0.2.1", 30000, None), None],
        RewriteOptions {
            strip_ice: true,
            origin_version: None,
        },
    );
    assert_body(
        &out,
        &crlf(&[
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.9",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
            "m=audio 0 RTP/AVP 0",
        ]),
    );
}

#[test]
fn rejects_plans_that_do_not_fit() {
    let body = crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.9",
        "s=-",
        "c=IN IP4 192.0.2.9",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "m=audio 0 RTP/AVP 0",
        "m=audio 5000/2 RTP/AVP 0",
    ]);
    let sdp = Sdp::parse(&body).unwrap();
    let ok = anchor("192.0.2.1", 30000, None);
    let err = |plan: &[Option<Anchor>]| sdp.rewrite(plan, &RewriteOptions::default()).unwrap_err();
    assert_eq!(
        err(std::slice::from_ref(&ok)),
        RewriteError::PlanLength {
            expected: 3,
            got: 1
        }
    );
    assert_eq!(
        err(&[ok.clone(), ok.clone(), None]),
        RewriteError::Disabled { media: 1 }
    );
    assert_eq!(
        err(&[ok.clone(), None, ok.clone()]),
        RewriteError::PortCount { media: 2, count: 2 }
    );
    assert_eq!(
        err(&[anchor("192.0.2.1", 0, None), None, None]),
        RewriteError::ZeroPort { media: 0 }
    );
    assert_eq!(
        err(&[anchor("192.0.2.1", 30000, Some(0)), None, None]),
        RewriteError::ZeroPort { media: 0 }
    );
    assert!(sdp
        .rewrite(&[ok, None, None], &RewriteOptions::default())
        .is_ok());
}

// ------------------------------------------------------------ robustness

fn corpus() -> Vec<Vec<u8>> {
    vec![
        carrier_offer(),
        webrtc_offer(),
        two_streams_on_session_connection(),
        lf(&[
            "v=0",
            "o=- 1 1 IN IP6 2001:db8::1",
            "s=-",
            "t=0 0",
            "m=audio 49170 RTP/SAVP 0",
            "c=IN IP6 2001:db8::1",
            "a=rtcp:49171 IN IP6 2001:db8::1",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "m=video 0 RTP/AVP 31",
        ]),
    ]
}

/// Parses; when that succeeds, anchors every enabled single-port stream,
/// checks the result parses again with the anchor's ports, and returns true.
fn parse_and_anchor(body: &[u8]) -> bool {
    let Ok(sdp) = Sdp::parse(body) else {
        return false;
    };
    // Each stream's keying varies with its index and the body's length.
    let keyings = [
        Keying::AsIs,
        Keying::Plain,
        Keying::Sdes(vec!["1 AES_CM_128_HMAC_SHA1_80 inline:x".into()]),
        Keying::Sdes(vec!["1 a".into(), "2 b".into()]),
    ];
    let plan: Vec<_> = sdp
        .media()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (!m.is_disabled() && m.port_count == 1).then(|| Anchor {
                addr: ip("192.0.2.1"),
                rtp_port: 30000 + 2 * i as u16,
                rtcp_port: Some(30001 + 2 * i as u16),
                keying: keyings[(i + body.len()) % keyings.len()].clone(),
            })
        })
        .collect();
    let options = RewriteOptions {
        strip_ice: true,
        origin_version: Some(sdp.origin().sess_version.wrapping_add(1)),
    };
    let rw = sdp.rewrite(&plan, &options).unwrap();
    let out = rw.to_vec();
    assert_eq!(out.len(), rw.len());
    let again = Sdp::parse(&out).unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n=>\n{}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&out)
        )
    });
    assert!(!again.has_ice());
    for (m, a) in again.media().iter().zip(&plan) {
        if let Some(a) = a {
            assert_eq!(m.port, a.rtp_port);
            match &a.keying {
                Keying::AsIs => {}
                Keying::Plain => assert!(m.crypto.is_empty()),
                Keying::Sdes(v) => {
                    let got: Vec<&str> = m.crypto.iter().map(|c| c.value).collect();
                    assert_eq!(
                        got,
                        *v,
                        "{:?}\n=>\n{:?}",
                        String::from_utf8_lossy(body),
                        String::from_utf8_lossy(&out)
                    );
                }
            }
        }
    }
    true
}

#[test]
fn every_prefix_parses_or_errors_without_panic() {
    for body in corpus() {
        let parsed = (0..=body.len())
            .filter(|end| parse_and_anchor(&body[..*end]))
            .count();
        // Cut inside the last line, most prefixes still parse.
        assert!(parsed > body.len() / 3, "{parsed} of {}", body.len());
    }
}

#[test]
fn random_mutations_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x5d9);
    let alphabet = b"=\r\n :/0123456789.acmov IP46IN";
    let mut parsed = 0;
    for body in corpus() {
        for _ in 0..3000 {
            let mut b = body.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..b.len());
                match rng.u8(..4) {
                    0 => b[i] = alphabet[rng.usize(..alphabet.len())],
                    1 => b[i] = rng.u8(..),
                    2 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, alphabet[rng.usize(..alphabet.len())]),
                }
            }
            parsed += usize::from(parse_and_anchor(&b));
        }
    }
    // Both paths are exercised: many mutants parse, many do not.
    assert!((2000..10_000).contains(&parsed), "{parsed} of 12000 parsed");
}
