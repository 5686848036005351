//! Token buckets per source address: the admit phase's message rate
//! limits and byte budget and the refusal limit ([`super::refusals`]) all
//! count with these, in a table of one entry per source.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One token bucket: `rate` tokens a second, at most `2 × rate` saved up
/// (a burst of two seconds' worth). A token is a message, or a byte for
/// the byte budget ([`Bucket::take_bytes`]).
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
    /// When the bucket was last full.
    full_at: Instant,
}

impl Bucket {
    /// A full bucket for `rate` per second.
    pub fn full(rate: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: burst(rate),
            last: now,
            full_at: now,
        }
    }

    /// A full bucket of bytes for `rate` bytes per second.
    pub fn full_of_bytes(rate: u64, now: Instant) -> Bucket {
        Bucket {
            tokens: byte_burst(rate),
            last: now,
            full_at: now,
        }
    }

    /// Takes one token if there is one (refilling for the time since the
    /// last call first).
    pub fn take(&mut self, rate: u32, now: Instant) -> bool {
        self.take_n(1.0, f64::from(rate), burst(rate), now)
    }

    /// The rate a source is sending at, when it has spent more than half
    /// of a full bucket of `rate` per second within [`FAST_DRAIN`]: its
    /// arrivals per second (what it spent over the time since the bucket
    /// was full, plus the refill). `None` otherwise. A flood's first
    /// moments, before any refusal: the burst a bucket allows is admitted
    /// and processed whole, and a flood of 100,000/s spends 2 s of a
    /// 1,000/s limit in 20 ms.
    pub fn draining(&self, rate: u32, now: Instant) -> Option<f64> {
        let full = burst(rate);
        let since = now.saturating_duration_since(self.full_at);
        if rate == 0 || self.tokens > full / 2.0 || since > FAST_DRAIN || since.is_zero() {
            return None;
        }
        Some((full - self.tokens) / since.as_secs_f64() + f64::from(rate))
    }

    /// Takes `bytes` tokens of a byte budget of `rate` bytes per second if
    /// the bucket holds that many; a message is admitted whole or not at
    /// all, and a refused one takes nothing.
    pub fn take_bytes(&mut self, bytes: usize, rate: u64, now: Instant) -> bool {
        self.take_n(bytes as f64, rate as f64, byte_burst(rate), now)
    }

    fn take_n(&mut self, n: f64, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        if self.tokens >= burst {
            self.full_at = now;
        }
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// How fast a bucket must lose half its burst for [`Bucket::draining`] to
/// tell: at least ten times its rate.
pub const FAST_DRAIN: std::time::Duration = std::time::Duration::from_millis(100);

fn burst(rate: u32) -> f64 {
    f64::from(rate) * 2.0
}

/// The largest UDP datagram: a byte budget's burst is never smaller, so
/// any one datagram passes a full bucket however low the budget is set.
const LARGEST_DATAGRAM: f64 = 65_535.0;

/// Two seconds' worth of bytes, at least [`LARGEST_DATAGRAM`].
fn byte_burst(rate: u64) -> f64 {
    (rate as f64 * 2.0).max(LARGEST_DATAGRAM)
}

/// What a [`SourceBuckets`] table keeps per source address: one bucket
/// (the refusal limit's), or an entry of several (the admit phase's holds
/// its request, response and byte buckets and its refusal count,
/// `admit.rs`, so that a datagram costs one lookup).
pub trait PerSource {
    /// When the source last spent from it: an entry idle for [`IDLE`] is
    /// forgotten.
    fn last_used(&self) -> Instant;
}

impl PerSource for Bucket {
    fn last_used(&self) -> Instant {
        self.last
    }
}

/// An entry per source address, the idle ones forgotten so that a scan of
/// many addresses cannot grow the table without bound.
#[derive(Debug)]
pub struct SourceBuckets<E = Bucket> {
    /// Keyed hash: a peer chooses its address, not the bucket (and this
    /// map is read for every admitted message).
    buckets: HashMap<IpAddr, E, ahash::RandomState>,
    last_prune: Option<Instant>,
}

impl<E> Default for SourceBuckets<E> {
    fn default() -> Self {
        SourceBuckets {
            buckets: HashMap::with_hasher(crate::sip::proxy::keyed_hasher()),
            last_prune: None,
        }
    }
}

/// Entries idle this long are forgotten (a full bucket again: no loss).
const IDLE: Duration = Duration::from_secs(60);
/// Pruning starts above this many sources, at most once a second.
const PRUNE_ABOVE: usize = 10_000;

impl SourceBuckets<Bucket> {
    /// Takes one token from `ip`'s bucket at `rate` per second.
    pub fn take(&mut self, ip: IpAddr, rate: u32, now: Instant) -> bool {
        self.entry(ip, now, || Bucket::full(rate, now))
            .take(rate, now)
    }
}

impl<E: PerSource> SourceBuckets<E> {
    /// `ip`'s entry (`new` when it has none), idle ones pruned first.
    pub fn entry(&mut self, ip: IpAddr, now: Instant, new: impl FnOnce() -> E) -> &mut E {
        if self.buckets.len() > PRUNE_ABOVE
            && self
                .last_prune
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(1))
        {
            self.buckets
                .retain(|_, e| now.duration_since(e.last_used()) < IDLE);
            self.last_prune = Some(now);
        }
        self.buckets.entry(ip).or_insert_with(new)
    }

    /// `ip`'s entry, if it has one (nothing created, nothing pruned).
    pub fn get(&self, ip: IpAddr) -> Option<&E> {
        self.buckets.get(&ip)
    }
}

#[cfg(test)]
mod drain_tests {
    use super::*;

    #[test]
    fn a_bucket_half_spent_within_a_tenth_of_a_second_tells_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(100, t0);
        // 101 of its 200 tokens in 10 ms: ~10,000/s.
        for i in 0..=100u64 {
            assert!(b.take(100, t0 + Duration::from_micros(i * 100)));
        }
        let at = t0 + Duration::from_millis(10);
        let r = b.draining(100, at).unwrap_or_default();
        assert!((9_500.0..10_500.0).contains(&r), "{r}");
        // Half spent over a whole second is a busy peer, not a flood.
        let mut slow = Bucket::full(100, t0);
        for i in 0..201u64 {
            slow.take(100, t0 + Duration::from_millis(i * 5));
        }
        assert_eq!(slow.draining(100, t0 + Duration::from_millis(1005)), None);
        // Less than half spent: nothing to tell.
        let mut little = Bucket::full(100, t0);
        for i in 0..50u64 {
            little.take(100, t0 + Duration::from_micros(i * 100));
        }
        assert_eq!(little.draining(100, at), None);
    }
}
