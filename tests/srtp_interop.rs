//! callgate's SRTP against libsrtp (the reference implementation, through
//! pylibsrtp; `test-calls/srtp/libsrtp.py`), both ways, both suites: RTP
//! across a sequence-number wrap, and RTCP.

mod common;

use callgate::media::srtp::{CryptoSuite, MasterKey, SrtpContext};
use common::srtp::libsrtp;

/// 40 RTP packets of one SSRC across the sequence-number wrap, payloads of
/// varying length, one with a CSRC and a header extension.
fn rtp_packets() -> Vec<Vec<u8>> {
    (0..40u16)
        .map(|i| {
            let seq = 65_520u16.wrapping_add(i);
            let mut p = vec![0x80, 0x08];
            if i == 5 {
                p[0] = 0x91; // X and one CSRC
            }
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(160 * u32::from(i)).to_be_bytes());
            p.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
            if i == 5 {
                p.extend_from_slice(&0x0a0b_0c0du32.to_be_bytes()); // CSRC
                p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // extension
            }
            p.extend((0..(20 + 7 * usize::from(i))).map(|b| (b as u8) ^ (i as u8)));
            p
        })
        .collect()
}

/// `packets` protected by a new context under `key` (RTP or RTCP).
fn protect_all(
    suite: CryptoSuite,
    key: &MasterKey,
    packets: &[Vec<u8>],
    rtcp: bool,
) -> Vec<Vec<u8>> {
    let mut tx = SrtpContext::new(suite, key).expect("context");
    packets
        .iter()
        .map(|p| {
            let mut buf = p.clone();
            buf.resize(p.len() + 16, 0);
            let n = if rtcp {
                tx.protect_rtcp(&mut buf, p.len())
            } else {
                tx.protect_rtp(&mut buf, p.len())
            }
            .expect("protect");
            buf.truncate(n);
            buf
        })
        .collect()
}

fn rtcp_packets() -> Vec<Vec<u8>> {
    (0..5u8)
        .map(|i| {
            let mut p = vec![0x81, 201, 0, 7];
            p.extend_from_slice(&0x5eed_0002u32.to_be_bytes());
            p.extend((0..24).map(|b| b ^ i));
            p
        })
        .collect()
}

#[test]
fn libsrtp_reads_what_callgate_protects_and_callgate_reads_what_libsrtp_protects() {
    for suite in [
        CryptoSuite::AesCm128HmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32,
    ] {
        let key = MasterKey::random().expect("key");
        let plain = rtp_packets();

        // callgate -> libsrtp
        let protected = protect_all(suite, &key, &plain, false);
        let read = libsrtp(&key, suite, "unprotect", &protected);
        for (i, (r, p)) in read.iter().zip(&plain).enumerate() {
            assert_eq!(
                r.as_ref(),
                Some(p),
                "{} packet {i}: libsrtp read",
                suite.name()
            );
        }

        // libsrtp -> callgate
        let theirs = libsrtp(&key, suite, "protect", &plain);
        let mut rx = SrtpContext::new(suite, &key).expect("context");
        for (i, (t, p)) in theirs.iter().zip(&plain).enumerate() {
            let mut packet = t.clone().expect("libsrtp protected");
            assert_eq!(
                &packet,
                &protected[i],
                "{} packet {i}: same bytes both ways",
                suite.name()
            );
            let n = rx
                .unprotect_rtp(&mut packet)
                .expect("callgate unprotects libsrtp's packet");
            assert_eq!(&packet[..n], &p[..]);
        }

        // RTCP both ways (callgate's first SRTCP index is 0, libsrtp's 1:
        // each side reads the index from the packet).
        let reports = rtcp_packets();
        let ours = protect_all(suite, &key, &reports, true);
        let read = libsrtp(&key, suite, "unprotect_rtcp", &ours);
        assert_eq!(read, reports.iter().cloned().map(Some).collect::<Vec<_>>());
        let theirs = libsrtp(&key, suite, "protect_rtcp", &reports);
        let mut rx = SrtpContext::new(suite, &key).expect("context");
        for (t, p) in theirs.iter().zip(&reports) {
            let mut packet = t.clone().expect("libsrtp protected rtcp");
            let n = rx
                .unprotect_rtcp(&mut packet)
                .expect("callgate unprotects libsrtp's rtcp");
            assert_eq!(&packet[..n], &p[..]);
        }
    }
}

#[test]
fn libsrtp_refuses_a_packet_callgate_protected_with_another_key() {
    let suite = CryptoSuite::AesCm128HmacSha1_80;
    let ours = protect_all(
        suite,
        &MasterKey::random().expect("key"),
        &rtp_packets()[..1],
        false,
    );
    let read = libsrtp(
        &MasterKey::random().expect("key"),
        suite,
        "unprotect",
        &ours,
    );
    assert_eq!(read, vec![None]);
}
