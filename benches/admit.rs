//! Criterion benchmarks of the admit phase (`src/gate/admit.rs`): what
//! one datagram's check costs on the receive buffer, before parsing.
//! - `admit/within_limits`: an admitted source's request within its rate
//!   and byte budget (its entry: request and byte buckets);
//! - `admit/refused_counted`: a request over its rate from one of 1,000
//!   admitted sources cycled through, each refusal counted for the kernel
//!   throttle (`src/gate/throttle.rs`), with the throttle's table full
//!   (64 sources held): the path of an admitted flood before its source
//!   is held, or of sources beyond the table. The issue 14 review moved
//!   the refusal count into the source's entry (one lookup where there
//!   were two).
//!
//! `cargo bench --bench admit` (`--profile dev` where a release build is
//! not allowed: the figures are then only comparable with each other)

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use callgate::config::{Config, SideConfig};
use callgate::gate::admit::Admission;

/// The example trunk side admitting 10.0.0.0/8 at `rate` requests a
/// second, a byte budget of `bytes` a second, the kernel throttle on.
fn side(rate: u32, bytes: u64) -> SideConfig {
    let mut cfg = Config::embedded()
        .map(|c| c.trunk)
        .unwrap_or_else(|e| panic!("embedded config: {e}"));
    cfg.allow = vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))];
    cfg.rate_limit = rate;
    cfg.rate_limit_bytes = bytes;
    cfg.kernel_throttle = true;
    cfg
}

const INVITE: &[u8] = b"INVITE sip:+15550100@callgate SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\r\n";

fn bench(c: &mut Criterion) {
    // The clock stands still: buckets never refill, so the first source
    // stays within its (huge) limits and the others stay over theirs.
    let now = Instant::now();
    let carrier = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let mut within = Admission::new(side(1_000_000_000, 1 << 40));
    c.bench_function("admit/within_limits", |b| {
        b.iter(|| black_box(within.check(black_box(carrier), INVITE, now)))
    });

    let sources: Vec<IpAddr> = (0..1000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i)))
        .collect();
    let mut refused = Admission::new(side(1, 0));
    // Each source's two tokens spent and 64 sources held.
    for _ in 0..100 {
        for &ip in &sources {
            let _ = refused.check(ip, INVITE, now);
        }
    }
    let mut i = 0;
    c.bench_function("admit/refused_counted", |b| {
        b.iter(|| {
            i = (i + 1) % sources.len();
            black_box(refused.check(black_box(sources[i]), INVITE, now))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
