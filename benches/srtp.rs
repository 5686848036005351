//! Criterion benchmarks of SRTP termination's per-packet work on a
//! 172-byte RTP packet (160 bytes of G.711, the media benchmark's size):
//! - `unprotect_rtp_172`: check the tag and decrypt (what a leg sent);
//! - `protect_rtp_172`: encrypt and tag (for the other leg);
//! - `reencrypt_rtp_172`: both — the relay's added cost per packet when it
//!   terminates SRTP on both legs.
//!
//! `cargo bench --bench srtp`

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use callgate::media::srtp::{CryptoSuite, MasterKey, SrtpContext};

fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(160 * u32::from(seq)).to_be_bytes());
    p.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5, 160));
    p
}

/// Protected packets of one stream under `key`, seq 1, 2, ... (so a
/// receiver that sees them all in order never refuses one).
fn source(suite: CryptoSuite, key: &MasterKey) -> impl FnMut() -> Vec<u8> {
    let mut tx = SrtpContext::new(suite, key).ok();
    let mut seq = 0u16;
    move || {
        seq = seq.wrapping_add(1);
        let p = packet(seq);
        let mut buf = p.clone();
        buf.resize(200, 0);
        let n = tx
            .as_mut()
            .and_then(|t| t.protect_rtp(&mut buf, p.len()).ok())
            .unwrap_or(0);
        buf.truncate(n);
        buf
    }
}

fn bench(c: &mut Criterion) {
    let suite = CryptoSuite::AesCm128HmacSha1_80;
    let (Ok(a), Ok(b)) = (MasterKey::random(), MasterKey::random()) else {
        return;
    };
    let (Ok(mut rx), Ok(mut rx2), Ok(mut out), Ok(mut ctx)) = (
        SrtpContext::new(suite, &a),
        SrtpContext::new(suite, &a),
        SrtpContext::new(suite, &b),
        SrtpContext::new(suite, &b),
    ) else {
        return;
    };
    let mut buf = [0u8; 200];
    let p = packet(1);
    let mut seq = 0u16;
    c.bench_function("protect_rtp_172", |bench| {
        bench.iter(|| {
            // Each packet a new index: one is never sealed twice.
            seq = seq.wrapping_add(1);
            buf[..172].copy_from_slice(&p);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            let n = ctx.protect_rtp(&mut buf, 172);
            assert!(n.is_ok(), "protect failed: {n:?}");
            black_box(n)
        })
    });
    let mut next = source(suite, &a);
    c.bench_function("unprotect_rtp_172", |bench| {
        bench.iter_batched(
            &mut next,
            |mut p| {
                let n = rx.unprotect_rtp(&mut p);
                assert!(n.is_ok(), "unprotect failed: {n:?}");
                black_box(n)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut next = source(suite, &a);
    c.bench_function("reencrypt_rtp_172", |bench| {
        bench.iter_batched(
            &mut next,
            |mut p| {
                let n = rx2.unprotect_rtp(&mut p).unwrap_or(0);
                assert!(n == 172, "unprotect failed");
                p.resize(n + 10, 0);
                black_box(out.protect_rtp(&mut p, n).ok())
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
