//! The limit on answers callgate forms itself (403 to a stranger, 404 to an
//! unknown number, 405 to a method a carrier may not send, 481 to a stray,
//! 400 to a bad message, 200 to OPTIONS…).
//!
//! Defends against reflection and amplification: on UDP the source address
//! of a request is whatever the sender wrote, so every answer callgate
//! forms goes to an address an attacker chose. A token bucket per source
//! address (`refusals_per_source` a second, burst twice that) bounds what
//! any one victim receives, and one per side (`refusals_total`) bounds the
//! whole, however many addresses are spoofed. Answers over the limit are
//! not sent (counted in `callgate_local_answers_suppressed_total`); the
//! request itself is refused all the same. Relayed responses of real
//! transactions are never limited here.

use std::net::IpAddr;
use std::time::Instant;

use super::bucket::{Bucket, SourceBuckets};
use crate::config::SideConfig;

/// Per-source and per-side buckets for locally formed answers.
#[derive(Debug)]
pub struct Refusals {
    per_source: u32,
    total: u32,
    sources: SourceBuckets,
    side: Bucket,
}

impl Refusals {
    pub fn new(cfg: &SideConfig, now: Instant) -> Refusals {
        Refusals {
            per_source: cfg.refusals_per_source,
            total: cfg.refusals_total,
            sources: SourceBuckets::default(),
            side: Bucket::full(cfg.refusals_total, now),
        }
    }

    /// New rates take effect; buckets keep what they hold.
    pub fn reload(&mut self, cfg: &SideConfig) {
        self.per_source = cfg.refusals_per_source;
        self.total = cfg.refusals_total;
    }

    /// Takes a token for one answer to `ip`: both the source's and the
    /// side's bucket must have one. A source over its own limit does not
    /// spend the side's tokens.
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.sources.take(ip, self.per_source, now) && self.side.take(self.total, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    fn refusals(per_source: u32, total: u32) -> Refusals {
        let mut cfg = Config::embedded()
            .map(|c| c.trunk)
            .unwrap_or_else(|e| panic!("embedded config: {e}"));
        cfg.refusals_per_source = per_source;
        cfg.refusals_total = total;
        Refusals::new(&cfg, Instant::now())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn one_source_gets_its_burst_then_its_rate() {
        let mut r = refusals(5, 1000);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!((0..50).filter(|_| r.take(a, t0)).count(), 10);
        // Another source is not held back by the first.
        assert_eq!((0..50).filter(|_| r.take(ip("192.0.2.2"), t0)).count(), 10);
        let later = t0 + Duration::from_secs(1);
        assert_eq!((0..50).filter(|_| r.take(a, later)).count(), 5);
    }

    #[test]
    fn many_spoofed_sources_share_the_side_cap() {
        let mut r = refusals(5, 20);
        let t0 = Instant::now();
        let sent = (0..1000u32)
            .filter(|i| {
                let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                r.take(src, t0)
            })
            .count();
        assert_eq!(sent, 40, "the side's burst bounds the whole");
    }
}
