//! Which admitted sources the kernel throttles, and how hard: the policy
//! half of the side's kernel filter (`sip/transport/kernel_filter.rs` is
//! the mechanism).
//!
//! The failure it handles (issue 14, `rate` flood): an admitted source
//! sending far beyond its `rate_limit` is cut to its rate by the admit
//! phase, but only after each of its datagrams took space in the socket's
//! receive queue and a read. On a small host the sender can outrun the
//! reader, the queue overflows, and the kernel drops whatever comes next —
//! legitimate INVITEs from the carrier among them, each costing its caller
//! a retransmission (T1 = 500 ms, RFC 3261 §17.1.1.2). Carriers' SBCs
//! answer such a source by demoting it; callgate keeps it admitted at its
//! rate but moves the refusal of the excess into the kernel, before the
//! queue.
//!
//! How: the admit phase tells this table each refusal (rate or byte
//! budget) and, for a throttled source, each datagram it saw. Once a second
//! [`Throttle::review`] turns the counts into offered rates:
//! - a source refused at three times its rate or more (so offering at
//!   least four times it) is throttled with share `2 × rate / offered`:
//!   the kernel keeps about twice its rate's worth of datagrams at random
//!   and drops the rest, and the admit phase applies the exact limit to
//!   what is kept, as before (so the source still gets its rate);
//! - a throttled source's offered rate is estimated from what reached
//!   userspace (seen / share); its share follows it when it moves by more
//!   than a quarter;
//! - it is released after [`CALM_REVIEWS`] reviews in a row offering under
//!   twice its rate.
//!
//! Bounds: at most [`MAX_THROTTLED`] sources held, [`MAX_WATCHED`] refused
//! sources counted per window (a spoofed-source flood cannot grow the
//! table), IPv4 only (the kernel filter reads IPv4 headers).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::sip::transport::kernel_filter::{Throttled, MAX_THROTTLED};

/// A source refused at this many times its rate is throttled.
const TRIGGER: f64 = 3.0;
/// What a throttled source may offer to the admit phase: this many times
/// its rate.
const KEEP: f64 = 2.0;
/// Reviews in a row under [`KEEP`] times its rate before a source is
/// released.
pub const CALM_REVIEWS: u8 = 3;
/// The smallest share kept (one datagram in 65,536): the estimate of what
/// a source offers needs some of its datagrams.
const MIN_SHARE: f64 = 1.0 / 65_536.0;
/// Refused sources counted per review window at most.
const MAX_WATCHED: usize = 4096;
/// Windows shorter than this are not reviewed (too few datagrams).
const MIN_WINDOW: Duration = Duration::from_millis(250);

/// What a review changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Newly throttled: what it offered (datagrams/s) and the share kept.
    Throttled {
        source: Ipv4Addr,
        offered: f64,
        share: f64,
    },
    /// A throttled source's share moved with what it offers.
    Adjusted {
        source: Ipv4Addr,
        offered: f64,
        share: f64,
    },
    /// Released: it offered under twice its rate for long enough, or
    /// throttling was switched off.
    Released { source: Ipv4Addr },
}

#[derive(Debug, Clone, Copy)]
struct Held {
    share: f64,
    /// Datagrams that reached the admit phase this window.
    seen: u32,
    calm: u8,
}

/// The throttle table of one side.
#[derive(Debug)]
pub struct Throttle {
    window: Instant,
    refused: HashMap<Ipv4Addr, u32, ahash::RandomState>,
    held: HashMap<Ipv4Addr, Held, ahash::RandomState>,
}

impl Throttle {
    pub fn new(now: Instant) -> Throttle {
        Throttle {
            window: now,
            refused: HashMap::with_hasher(crate::sip::proxy::keyed_hasher()),
            held: HashMap::with_hasher(crate::sip::proxy::keyed_hasher()),
        }
    }

    /// One datagram from `ip` through the admit phase, `refused` over its
    /// rate or byte budget. Costs nothing for an admitted datagram while no
    /// source is throttled.
    pub fn note(&mut self, ip: IpAddr, refused: bool) {
        let IpAddr::V4(v4) = ip else {
            return;
        };
        if !self.held.is_empty() {
            if let Some(h) = self.held.get_mut(&v4) {
                h.seen = h.seen.saturating_add(1);
                return;
            }
        }
        if refused {
            let watched = self.refused.len();
            match self.refused.get_mut(&v4) {
                Some(n) => *n = n.saturating_add(1),
                None if watched < MAX_WATCHED => {
                    self.refused.insert(v4, 1);
                }
                None => {}
            }
        }
    }

    /// Turns the window's counts into throttles for a side whose limit is
    /// `rate` requests per second (`0`, or `enabled` false: everything is
    /// released). The changes, empty when the kernel filter need not
    /// change.
    pub fn review(&mut self, rate: u32, enabled: bool, now: Instant) -> Vec<Change> {
        let elapsed = now.saturating_duration_since(self.window);
        if elapsed < MIN_WINDOW {
            return Vec::new();
        }
        let secs = elapsed.as_secs_f64();
        self.window = now;
        let mut changes = Vec::new();
        if rate == 0 || !enabled {
            self.refused.clear();
            changes.extend(
                self.held
                    .drain()
                    .map(|(source, _)| Change::Released { source }),
            );
            return changes;
        }
        let rate = f64::from(rate);
        self.held.retain(|&source, h| {
            let offered = f64::from(h.seen) / secs / h.share;
            h.seen = 0;
            if offered < KEEP * rate {
                h.calm += 1;
                if h.calm >= CALM_REVIEWS {
                    changes.push(Change::Released { source });
                    return false;
                }
                return true;
            }
            h.calm = 0;
            let share = share_for(rate, offered);
            if (share - h.share).abs() > h.share / 4.0 {
                h.share = share;
                changes.push(Change::Adjusted {
                    source,
                    offered,
                    share,
                });
            }
            true
        });
        let mut worst: Vec<(Ipv4Addr, f64)> = self
            .refused
            .drain()
            .map(|(ip, n)| (ip, f64::from(n) / secs))
            .filter(|&(_, refused)| refused >= TRIGGER * rate)
            .collect();
        // The heaviest first, should more offend than the table holds.
        worst.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (source, refused) in worst {
            if self.held.len() >= MAX_THROTTLED {
                break;
            }
            let offered = refused + rate;
            let share = share_for(rate, offered);
            self.held.insert(
                source,
                Held {
                    share,
                    seen: 0,
                    calm: 0,
                },
            );
            changes.push(Change::Throttled {
                source,
                offered,
                share,
            });
        }
        changes
    }

    /// The throttled sources as the kernel filter takes them.
    pub fn in_force(&self) -> Vec<Throttled> {
        let mut list: Vec<Throttled> = self
            .held
            .iter()
            .map(|(&source, h)| Throttled::new(source, h.share))
            .collect();
        list.sort_by_key(|t| t.source);
        list
    }
}

/// The share of `offered` datagrams/s that leaves [`KEEP`] × `rate`.
fn share_for(rate: f64, offered: f64) -> f64 {
    if offered <= 0.0 {
        return 1.0;
    }
    (KEEP * rate / offered).clamp(MIN_SHARE, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// `n` datagrams from `ip`, the first `admitted` within its rate.
    fn offer(t: &mut Throttle, ip: &str, n: u32, admitted: u32) {
        for i in 0..n {
            t.note(IpAddr::V4(v4(ip)), i >= admitted);
        }
    }

    const RATE: u32 = 100;

    #[test]
    fn a_source_far_over_its_rate_is_throttled_and_the_rest_are_not() {
        let t0 = Instant::now();
        let mut t = Throttle::new(t0);
        // One second: the flooder offers 10× its rate, a busy carrier 2×.
        offer(&mut t, "10.0.0.2", 1000, RATE);
        offer(&mut t, "10.0.0.1", 200, RATE);
        let changes = t.review(RATE, true, t0 + Duration::from_secs(1));
        assert_eq!(
            changes,
            vec![Change::Throttled {
                source: v4("10.0.0.2"),
                offered: 1000.0,
                share: 0.2
            }]
        );
        assert_eq!(t.in_force(), vec![Throttled::new(v4("10.0.0.2"), 0.2)]);
    }

    #[test]
    fn just_under_the_trigger_is_left_to_the_admit_phase() {
        let t0 = Instant::now();
        let mut t = Throttle::new(t0);
        offer(&mut t, "10.0.0.2", RATE + 3 * RATE - 1, RATE);
        assert!(t.review(RATE, true, t0 + Duration::from_secs(1)).is_empty());
        assert!(t.in_force().is_empty());
    }

    #[test]
    fn the_share_follows_the_flood_and_is_released_once_calm() {
        let t0 = Instant::now();
        let mut t = Throttle::new(t0);
        offer(&mut t, "10.0.0.2", 1000, RATE);
        let s = |k: u64| t0 + Duration::from_secs(k);
        assert_eq!(t.review(RATE, true, s(1)).len(), 1);
        // At share 0.2 a steady 1000/s shows as 200 seen: nothing moves.
        offer(&mut t, "10.0.0.2", 200, RATE);
        assert!(t.review(RATE, true, s(2)).is_empty());
        // The flood doubles: 400 seen at 0.2 is 2000/s offered.
        offer(&mut t, "10.0.0.2", 400, RATE);
        assert_eq!(
            t.review(RATE, true, s(3)),
            vec![Change::Adjusted {
                source: v4("10.0.0.2"),
                offered: 2000.0,
                share: 0.1
            }]
        );
        // It stops: two calm reviews keep it, the third releases it.
        for k in 4..=5 {
            assert!(t.review(RATE, true, s(k)).is_empty(), "review {k}");
            assert_eq!(t.in_force().len(), 1);
        }
        assert_eq!(
            t.review(RATE, true, s(6)),
            vec![Change::Released {
                source: v4("10.0.0.2")
            }]
        );
        assert!(t.in_force().is_empty());
    }

    #[test]
    fn a_calm_review_between_floods_starts_the_count_again() {
        let t0 = Instant::now();
        let s = |k: u64| t0 + Duration::from_secs(k);
        let mut t = Throttle::new(t0);
        offer(&mut t, "10.0.0.2", 1000, RATE);
        t.review(RATE, true, s(1));
        for k in 2..=10 {
            // Calm, calm, then flooding again, over and over: never three
            // calm reviews in a row.
            if k % 3 == 1 {
                offer(&mut t, "10.0.0.2", 200, RATE);
            }
            t.review(RATE, true, s(k));
            assert_eq!(t.in_force().len(), 1, "review {k}");
        }
    }

    #[test]
    fn switching_off_or_a_zero_rate_releases_everyone() {
        let t0 = Instant::now();
        let s = |k: u64| t0 + Duration::from_secs(k);
        let mut t = Throttle::new(t0);
        offer(&mut t, "10.0.0.2", 1000, RATE);
        offer(&mut t, "10.0.0.3", 1000, RATE);
        t.review(RATE, true, s(1));
        assert_eq!(t.in_force().len(), 2);
        let changes = t.review(RATE, false, s(2));
        assert_eq!(changes.len(), 2);
        assert!(t.in_force().is_empty());
        // Off: a flood is not throttled.
        offer(&mut t, "10.0.0.2", 1000, RATE);
        assert!(t.review(0, true, s(3)).is_empty());
        assert!(t.in_force().is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_keeps_the_heaviest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(t0);
        for i in 0..MAX_THROTTLED as u32 + 10 {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            for _ in 0..(1000 + i) {
                t.note(IpAddr::V4(ip), true);
            }
        }
        t.review(RATE, true, t0 + Duration::from_secs(1));
        let held = t.in_force();
        assert_eq!(held.len(), MAX_THROTTLED);
        assert!(
            !held.iter().any(|h| h.source == Ipv4Addr::from(0x0a00_0000)),
            "the lightest offenders were left out"
        );
        // Refused sources are counted up to a bound within a window.
        for i in 0..MAX_WATCHED as u32 * 2 {
            t.note(IpAddr::V4(Ipv4Addr::from(0xc000_0000 + i)), true);
        }
        assert_eq!(t.refused.len(), MAX_WATCHED);
    }

    #[test]
    fn ipv6_sources_and_short_windows_change_nothing() {
        let t0 = Instant::now();
        let mut t = Throttle::new(t0);
        for _ in 0..10_000 {
            t.note(
                "2001:db8::1".parse().unwrap_or_else(|e| panic!("{e}")),
                true,
            );
        }
        offer(&mut t, "10.0.0.2", 1000, RATE);
        assert!(t
            .review(RATE, true, t0 + Duration::from_millis(100))
            .is_empty());
        let changes = t.review(RATE, true, t0 + Duration::from_secs(1));
        assert_eq!(changes.len(), 1, "only the IPv4 flooder: {changes:?}");
    }
}
