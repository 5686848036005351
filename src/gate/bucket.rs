//! Token buckets per source address: the admit phase's request rate limit
//! and the refusal limit ([`super::refusals`]) both count with these.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One token bucket: `rate` tokens a second, at most `2 × rate` saved up
/// (a burst of two seconds' worth).
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket for `rate` per second.
    pub fn full(rate: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: burst(rate),
            last: now,
        }
    }

    /// Takes one token if there is one (refilling for the time since the
    /// last call first).
    pub fn take(&mut self, rate: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(burst(rate));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn burst(rate: u32) -> f64 {
    f64::from(rate) * 2.0
}

/// A bucket per source address, the idle ones forgotten so that a scan of
/// many addresses cannot grow the table without bound.
#[derive(Debug)]
pub struct SourceBuckets {
    /// Keyed hash: a peer chooses its address, not the bucket (and this
    /// map is read for every admitted message).
    buckets: HashMap<IpAddr, Bucket, ahash::RandomState>,
    last_prune: Option<Instant>,
}

impl Default for SourceBuckets {
    fn default() -> Self {
        SourceBuckets {
            buckets: HashMap::with_hasher(crate::sip::proxy::keyed_hasher()),
            last_prune: None,
        }
    }
}

/// Buckets idle this long are forgotten (a full bucket again: no loss).
const IDLE: Duration = Duration::from_secs(60);
/// Pruning starts above this many sources, at most once a second.
const PRUNE_ABOVE: usize = 10_000;

impl SourceBuckets {
    /// Takes one token from `ip`'s bucket at `rate` per second.
    pub fn take(&mut self, ip: IpAddr, rate: u32, now: Instant) -> bool {
        if self.buckets.len() > PRUNE_ABOVE
            && self
                .last_prune
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(1))
        {
            self.buckets
                .retain(|_, b| now.duration_since(b.last) < IDLE);
            self.last_prune = Some(now);
        }
        self.buckets
            .entry(ip)
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, now)
    }
}
