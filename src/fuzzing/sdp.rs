//! SDP (RFC 8866) parse and the anchoring rewrite (RFC 3264 offer/answer
//! through the relay): an attacker on either side controls every byte of
//! a body that callgate parses and rewrites.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::media::sdp::rewrite::{Anchor, Keying, RewriteOptions};
use crate::media::sdp::{Limits, Sdp};

/// The first byte chooses the plan (address family, RTCP mux, keying,
/// ICE stripping); the rest is the body. Every plan the rewrite accepts
/// must yield a body that parses again with one m-line per original one.
pub fn exercise(data: &[u8]) -> usize {
    let Some((&choice, body)) = data.split_first() else {
        return 0;
    };
    let Ok(sdp) = Sdp::parse_with(body, &Limits::default()) else {
        return 0;
    };
    let mut sum = sdp.lines().len() + sdp.media().len();
    sum += usize::from(sdp.connection().is_some()) + usize::from(sdp.has_ice());
    for m in sdp.media() {
        sum += m.formats().count() + usize::from(m.is_on_hold());
    }
    let addr = if choice & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    } else {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    };
    let keying = match (choice >> 1) & 3 {
        0 => Keying::AsIs,
        1 => Keying::Plain,
        _ => Keying::Sdes(vec![
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz".into(),
        ]),
    };
    let plan: Vec<Option<Anchor>> = sdp
        .media()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (choice & 0x10 == 0 || i % 2 == 0).then(|| Anchor {
                addr,
                rtp_port: if m.is_disabled() {
                    0
                } else {
                    30_000 + 2 * i as u16
                },
                rtcp_port: (choice & 0x08 == 0 && !m.is_disabled())
                    .then_some(30_001 + 2 * i as u16),
                keying: keying.clone(),
            })
        })
        .collect();
    let options = RewriteOptions {
        strip_ice: choice & 0x20 != 0,
        origin_version: (choice & 0x40 != 0).then_some(7),
    };
    if let Ok(rewrite) = sdp.rewrite(&plan, &options) {
        let out = rewrite.to_vec();
        assert_eq!(
            out.len(),
            rewrite.len(),
            "Rewrite::len must predict the body"
        );
        sum += out.len();
        if let Ok(again) = Sdp::parse(&out) {
            assert_eq!(
                again.media().len(),
                sdp.media().len(),
                "the rewrite must keep every m-line"
            );
        }
    }
    sum
}
