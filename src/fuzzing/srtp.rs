//! SRTP/SRTCP (RFC 3711): packets from anyone who can reach a relay port
//! reach `unprotect` before any check but the tag's.

use crate::media::srtp::{CryptoSuite, MasterKey, SrtpContext};

const KEY: [u8; 30] = *b"0123456789abcdef0123456789abcd";

/// The first byte chooses the suite and direction; the rest is the packet.
/// Arbitrary bytes go to `unprotect` (they must be refused, not crash);
/// then the same bytes, sealed by `protect` on a sender context, must be
/// opened by `unprotect` on a receiver context to exactly the original.
pub fn exercise(data: &[u8]) -> usize {
    let Some((&choice, packet)) = data.split_first() else {
        return 0;
    };
    let suite = if choice & 1 == 0 {
        CryptoSuite::parse("AES_CM_128_HMAC_SHA1_80")
    } else {
        CryptoSuite::parse("AES_CM_128_HMAC_SHA1_32")
    };
    let (Some(suite), Some(key)) = (suite, MasterKey::from_concatenated(&KEY)) else {
        return 0;
    };
    let (Ok(mut sender), Ok(mut receiver)) =
        (SrtpContext::new(suite, &key), SrtpContext::new(suite, &key))
    else {
        return 0;
    };
    let rtcp = choice & 2 != 0;
    let mut sum = 0;
    let mut forged = packet.to_vec();
    let opened = if rtcp {
        receiver.unprotect_rtcp(&mut forged)
    } else {
        receiver.unprotect_rtp(&mut forged)
    };
    sum += opened.unwrap_or(0);
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + 64, 0);
    let sealed = if rtcp {
        sender.protect_rtcp(&mut buf, packet.len())
    } else {
        sender.protect_rtp(&mut buf, packet.len())
    };
    if let Ok(n) = sealed {
        let mut fresh = match SrtpContext::new(suite, &key) {
            Ok(c) => c,
            Err(_) => return sum,
        };
        let mut wire = buf[..n].to_vec();
        let opened = if rtcp {
            fresh.unprotect_rtcp(&mut wire)
        } else {
            fresh.unprotect_rtp(&mut wire)
        };
        let len = opened.unwrap_or_else(|e| panic!("a packet we sealed must open: {e}"));
        assert_eq!(&wire[..len], packet, "unprotect(protect(p)) must be p");
        sum += len;
    }
    sum
}
