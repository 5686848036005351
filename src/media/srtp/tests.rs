//! RFC 3711 test vectors, round trips, forgery, replay, rollover, and the
//! SDES attribute.

use super::keys::{aes_cm, aes_ctr_key, SessionKeys};
use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn rfc_master() -> MasterKey {
    MasterKey::from_concatenated(&hex(
        "E1F97A0D3E018BE0D64FA32C06DE4139 0EC675AD498AFEEBB6960B3AABE6",
    ))
    .expect("30 bytes")
}

fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// `packet` protected by `ctx`, in a buffer with room for the tag.
fn protect(ctx: &mut SrtpContext, packet: &[u8]) -> Vec<u8> {
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + 16, 0);
    let n = ctx.protect_rtp(&mut buf, packet.len()).expect("protect");
    buf.truncate(n);
    buf
}

/// RFC 3711 Appendix B.3 (the SRTCP ones agree with pion/srtp's tests).
#[test]
fn session_keys_match_rfc_3711_appendix_b3() {
    let m = aes_ctr_key(&rfc_master().key).expect("key");
    let salt = rfc_master().salt;
    let mut k_e = [0u8; 16];
    let mut k_a = [0u8; 20];
    let mut k_s = [0u8; 14];
    keys::derive(&m, &salt, keys::Label::RtpEncryption, &mut k_e).expect("derive");
    keys::derive(&m, &salt, keys::Label::RtpAuthentication, &mut k_a).expect("derive");
    keys::derive(&m, &salt, keys::Label::RtpSalt, &mut k_s).expect("derive");
    assert_eq!(k_e.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
    assert_eq!(
        k_a.to_vec(),
        hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    );
    assert_eq!(k_s.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    keys::derive(&m, &salt, keys::Label::RtcpEncryption, &mut k_e).expect("derive");
    keys::derive(&m, &salt, keys::Label::RtcpSalt, &mut k_s).expect("derive");
    assert_eq!(k_e.to_vec(), hex("4C1AA45A81F73D61C800BBB00FBB1EAA"));
    assert_eq!(k_s.to_vec(), hex("9581C7AD87B3E530BF3E4454A8B3"));
}

/// RFC 3711 Appendix B.2: the AES-CM keystream of session key
/// 2B7E1516… and salt F0F1…FD for SSRC 0 and index 0.
#[test]
fn keystream_matches_rfc_3711_appendix_b2() {
    let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C")
        .try_into()
        .expect("16");
    let cipher = aes_ctr_key(&key).expect("key");
    let keys = SessionKeys {
        cipher,
        auth: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[0; 20]),
        salt: hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().expect("14"),
    };
    let iv = keys.iv(0, 0);
    assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
    let mut stream = [0u8; 48];
    aes_cm(&keys.cipher, iv, &mut stream).expect("keystream");
    assert_eq!(
        stream.to_vec(),
        hex(
            "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0"
        )
    );
}

#[test]
fn rtp_round_trips_and_the_header_stays_readable() {
    for suite in [
        CryptoSuite::AesCm128HmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32,
    ] {
        let mut tx = SrtpContext::new(suite, &rfc_master()).expect("ctx");
        let mut rx = SrtpContext::new(suite, &rfc_master()).expect("ctx");
        for seq in [100u16, 101, 103, 102] {
            let plain = rtp(seq, 0xdead_beef, &[seq as u8; 160]);
            let mut srtp = protect(&mut tx, &plain);
            assert_eq!(srtp.len(), plain.len() + suite.rtp_tag_len());
            assert_eq!(srtp[..12], plain[..12], "header in the clear");
            assert_ne!(srtp[12..172], plain[12..], "payload encrypted");
            let n = rx.unprotect_rtp(&mut srtp).expect("unprotect");
            assert_eq!(&srtp[..n], &plain[..]);
        }
    }
}

#[test]
fn a_forged_or_replayed_packet_is_refused_and_changes_nothing() {
    let mut tx = SrtpContext::new(CryptoSuite::AesCm128HmacSha1_80, &rfc_master()).expect("ctx");
    let mut rx = SrtpContext::new(CryptoSuite::AesCm128HmacSha1_80, &rfc_master()).expect("ctx");
    let good = protect(&mut tx, &rtp(7, 1, b"hello"));
    for i in 0..good.len() {
        let mut forged = good.clone();
        forged[i] ^= 0x01;
        assert!(rx.unprotect_rtp(&mut forged).is_err(), "bit flip at {i}");
    }
    let mut first = good.clone();
    assert!(rx.unprotect_rtp(&mut first).is_ok());
    let mut again = good.clone();
    assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replay(7)));
    // Far behind the window.
    let mut rx2 = SrtpContext::new(CryptoSuite::AesCm128HmacSha1_80, &rfc_master()).expect("ctx");
    let mut tx2 = SrtpContext::new(CryptoSuite::AesCm128HmacSha1_80, &rfc_master()).expect("ctx");
    let old = protect(&mut tx2, &rtp(1000, 2, b"a"));
    let mut newer = protect(&mut tx2, &rtp(1100, 2, b"b"));
    assert!(rx2.unprotect_rtp(&mut newer).is_ok());
    let mut late = old;
    assert_eq!(rx2.unprotect_rtp(&mut late), Err(SrtpError::TooOld(1000)));
    // From before the stream's first packet across a wrap (ROC would be
    // -1): too old, not a guessed index.
    let mut rx3 = SrtpContext::new(CryptoSuite::AesCm128HmacSha1_80, &rfc_master()).expect("ctx");
    let mut tx3 = SrtpContext::new(CryptoSuite::AesCm128HmacSha1_80, &rfc_master()).expect("ctx");
    let before = protect(&mut tx3, &rtp(65_530, 3, b"c"));
    let mut first = protect(&mut tx3, &rtp(10, 3, b"d"));
    let mut tx4 = SrtpContext::new(CryptoSuite::AesCm128HmacSha1_80, &rfc_master()).expect("ctx");
    let mut first_alone = protect(&mut tx4, &rtp(10, 3, b"d"));
    assert!(rx3.unprotect_rtp(&mut first_alone).is_ok());
    let mut before = before;
    assert_eq!(
        rx3.unprotect_rtp(&mut before),
        Err(SrtpError::TooOld(65_530))
    );
    assert!(
        rx3.unprotect_rtp(&mut first).is_err(),
        "the sender's ROC 1 is not the receiver's 0"
    );
    // Wrong key.
    let mut other = SrtpContext::new(
        CryptoSuite::AesCm128HmacSha1_80,
        &MasterKey::random().expect("random"),
    )
    .expect("ctx");
    let mut p = protect(&mut tx, &rtp(8, 1, b"x"));
    assert_eq!(other.unprotect_rtp(&mut p), Err(SrtpError::Auth));
}

#[test]
fn the_rollover_counter_follows_sequence_wrap_both_ways() {
    let suite = CryptoSuite::AesCm128HmacSha1_80;
    let mut tx = SrtpContext::new(suite, &rfc_master()).expect("ctx");
    let mut rx = SrtpContext::new(suite, &rfc_master()).expect("ctx");
    // 65530 .. 65535, 0 .. 5: the ROC becomes 1 on both sides; a late
    // 65534 after the wrap still decrypts (ROC 0) without a replay error.
    let seqs: Vec<u16> = (65530..=65535).chain(0..6).collect();
    let mut late = None;
    for &s in &seqs {
        let p = protect(&mut tx, &rtp(s, 9, &[s as u8; 20]));
        if s == 65534 {
            late = Some(p.clone());
            continue;
        }
        let mut q = p;
        let n = rx.unprotect_rtp(&mut q).expect("in order");
        assert_eq!(q[..n], rtp(s, 9, &[s as u8; 20])[..]);
    }
    let mut q = late.expect("kept");
    let n = rx.unprotect_rtp(&mut q).expect("late but in the window");
    assert_eq!(q[..n], rtp(65534, 9, &[254; 20])[..]);
}

#[test]
fn rtcp_round_trips_with_an_index_and_refuses_replays() {
    let suite = CryptoSuite::AesCm128HmacSha1_32;
    let mut tx = SrtpContext::new(suite, &rfc_master()).expect("ctx");
    let mut rx = SrtpContext::new(suite, &rfc_master()).expect("ctx");
    // A receiver report with one block.
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    rr.extend_from_slice(&[0x55; 24]);
    for expected_index in 0u32..3 {
        let mut buf = rr.clone();
        buf.resize(rr.len() + 14, 0);
        let n = tx.protect_rtcp(&mut buf, rr.len()).expect("protect");
        assert_eq!(n, rr.len() + 4 + 10, "E||index and an 80-bit tag");
        assert_eq!(buf[..8], rr[..8]);
        assert_eq!(
            buf[rr.len()..rr.len() + 4],
            (0x8000_0000 | expected_index).to_be_bytes()
        );
        let mut packet = buf[..n].to_vec();
        let replay = packet.clone();
        let m = rx.unprotect_rtcp(&mut packet).expect("unprotect");
        assert_eq!(packet[..m], rr[..]);
        let mut replay = replay;
        assert!(matches!(
            rx.unprotect_rtcp(&mut replay),
            Err(SrtpError::Replay(_))
        ));
    }
}

#[test]
fn short_and_malformed_packets_are_errors_not_panics() {
    let mut ctx = SrtpContext::new(CryptoSuite::AesCm128HmacSha1_80, &rfc_master()).expect("ctx");
    for len in 0..40 {
        let mut b = vec![0x80u8; len];
        let _ = ctx.unprotect_rtp(&mut b);
        let _ = ctx.unprotect_rtcp(&mut b);
        let mut room = vec![0x90u8; len + 14];
        let _ = ctx.protect_rtp(&mut room, len);
        let _ = ctx.protect_rtcp(&mut room, len);
    }
    let mut no_room = rtp(1, 1, b"abc");
    let n = no_room.len();
    assert_eq!(ctx.protect_rtp(&mut no_room, n), Err(SrtpError::NoRoom(10)));
    // A header extension longer than the packet.
    let mut ext = rtp(1, 1, &[0, 0, 0, 9]);
    ext[0] |= 0x10;
    assert_eq!(
        ctx.unprotect_rtp(&mut [ext, vec![0; 10]].concat()),
        Err(SrtpError::Short("RTP"))
    );
}

#[test]
fn the_sdes_attribute_parses_and_prints() {
    let a = CryptoAttribute::parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31",
    )
    .expect("RFC 4568 §4 example key");
    assert_eq!((a.tag, a.suite), (1, CryptoSuite::AesCm128HmacSha1_80));
    assert_eq!(
        a.to_value(),
        "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
    );
    assert_eq!(CryptoAttribute::parse(&a.to_value()), Ok(a));
    for bad in [
        "",
        "x AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        "1 F8_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
        "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20",
        "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz KDR=1",
        "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=",
        "1 AES_CM_128_HMAC_SHA1_80 key:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    ] {
        assert!(CryptoAttribute::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn an_index_is_never_sealed_twice() {
    let suite = CryptoSuite::AesCm128HmacSha1_80;
    let mut ctx = SrtpContext::new(suite, &rfc_master()).unwrap_or_else(|e| panic!("{e}"));
    let seal = |ctx: &mut SrtpContext, p: Vec<u8>| {
        let len = p.len();
        let mut buf = p;
        buf.resize(len + 10, 0);
        ctx.protect_rtp(&mut buf, len)
    };
    assert!(seal(&mut ctx, rtp(100, 1, b"first")).is_ok());
    // The same sequence number again (a restarted sender on the plain
    // side): sealing it would reuse the keystream (RFC 3711 §9.1).
    assert_eq!(
        seal(&mut ctx, rtp(100, 1, b"other")),
        Err(SrtpError::Replay(100))
    );
    // A late packet not sealed before is fine.
    assert!(seal(&mut ctx, rtp(101, 1, b"x")).is_ok());
    assert!(seal(&mut ctx, rtp(99, 1, b"late")).is_ok());
    // A sealing context never forgets a stream: beyond its table, new
    // SSRCs are refused, known ones go on.
    for ssrc in 2..=16 {
        assert!(seal(&mut ctx, rtp(1, ssrc, b"s")).is_ok(), "ssrc {ssrc}");
    }
    assert_eq!(
        seal(&mut ctx, rtp(1, 17, b"s")),
        Err(SrtpError::TooManyStreams(16))
    );
    assert!(seal(&mut ctx, rtp(102, 1, b"y")).is_ok());
    let mut sr = vec![0x80, 200, 0, 1, 0, 0, 0, 17];
    sr.resize(8 + 14, 0);
    assert!(
        ctx.protect_rtcp(&mut sr, 8).is_ok(),
        "RTCP has its own table"
    );
}
