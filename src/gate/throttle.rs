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
//! budget) and, for a throttled source, each datagram it saw. A source's
//! refusals are counted in its own entry of the admit phase's table
//! ([`Refused`], beside its buckets: one lookup per refused datagram);
//! this table keeps the list of sources counted in the current window.
//! - A source refused at three times its rate or more (so offering at
//!   least four times it) is throttled with share `2 × rate / offered`:
//!   the kernel keeps about twice its rate's worth of datagrams at random
//!   and drops the rest, and the admit phase applies the exact limit to
//!   what is kept, as before (so the source still gets its rate). Checked
//!   every [`EARLY_CHECK_EVERY`] refusals of a source, over the time since
//!   its first refusal, so that a fast flood is in the filter within
//!   milliseconds ([`Throttle::note`]: a flood of 100,000/s against a
//!   2,000/s limit meets the trigger after 320 refusals, 3 ms, where it
//!   fills an 8 MiB queue in about 30), and at each review every
//!   [`REVIEW_EVERY`] for the slower ones. Earlier still, before its first
//!   refusal: a source whose request bucket loses half its burst within
//!   `bucket::FAST_DRAIN` ([`Throttle::flood`]) — the burst a bucket
//!   allows is otherwise admitted and processed whole, as calls, while
//!   the flood queues up behind it. A newly throttled source's share is
//!   measured again after [`FIRST_LOOK`] (its first estimate was taken at
//!   a receive loop the flood was saturating).
//! - a throttled source's offered rate is estimated from what reached
//!   userspace (seen / share); its share follows it when it moves by more
//!   than a quarter;
//! - it is released once it has offered under twice its rate for
//!   [`CALM_FOR`] without a break.
//!
//! Bounds: at most [`MAX_THROTTLED`] sources held, [`MAX_WATCHED`] refused
//! sources counted per window (a spoofed-source flood cannot grow the
//! list; the entries the counts live in are pruned with the admit phase's
//! buckets, `bucket.rs`), IPv4 only (the kernel filter reads IPv4
//! headers).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::sip::transport::kernel_filter::{Throttled, MAX_THROTTLED};

/// A source refused at this many times its rate is throttled.
const TRIGGER: f64 = 3.0;
/// What a throttled source may offer to the admit phase: this many times
/// its rate.
const KEEP: f64 = 2.0;
/// How long a source offers under [`KEEP`] times its rate before it is
/// released.
pub const CALM_FOR: Duration = Duration::from_secs(3);
/// How often the gate reviews (`udp_guard.rs`).
pub const REVIEW_EVERY: Duration = Duration::from_millis(250);
/// The smallest share kept (one datagram in 65,536): the estimate of what
/// a source offers needs some of its datagrams.
const MIN_SHARE: f64 = 1.0 / 65_536.0;
/// Refused sources counted per review window at most.
const MAX_WATCHED: usize = 4096;
/// Windows shorter than this are not reviewed (too few datagrams).
const MIN_WINDOW: Duration = Duration::from_millis(200);
/// A newly throttled source's share is measured again this soon.
const FIRST_LOOK: Duration = Duration::from_millis(20);

/// A refused source's count is checked against the trigger every this
/// many refusals (between reviews, so a flood is throttled within
/// milliseconds rather than at the next review).
const EARLY_CHECK_EVERY: u32 = 64;
/// The shortest time an early check divides by: a burst within the first
/// moments of a window must not read as an enormous rate.
const EARLY_MIN_SPAN: Duration = Duration::from_millis(50);

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

/// A source's refusals in the throttle's current window, kept in the
/// source's entry of the admit phase's table (`admit.rs`) beside its
/// buckets, so that a refused datagram costs that one lookup.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// The window they were counted in ([`Throttle`]'s `window_id`): a
    /// count of an earlier window is stale, none this window.
    window: u64,
    /// Refusals since `first` (0 after the source was throttled: counted
    /// afresh should it be refused again once released).
    n: u32,
    first: Instant,
}

impl Refused {
    /// No refusal yet.
    pub fn new(now: Instant) -> Refused {
        Refused {
            window: 0,
            n: 0,
            first: now,
        }
    }

    /// Refusals counted in `window`.
    fn in_window(&self, window: u64) -> u32 {
        if self.window == window {
            self.n
        } else {
            0
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Held {
    share: f64,
    /// Datagrams that reached the admit phase since `counting`.
    seen: u32,
    counting: Instant,
    /// Since when it has offered under [`KEEP`] times its rate.
    calm_since: Option<Instant>,
    /// Its share has been measured once since it was throttled: until
    /// then it is looked at after [`FIRST_LOOK`], not at the next review
    /// (the share it was throttled with is estimated at a receive loop
    /// the flood was saturating).
    settled: bool,
}

/// The throttle table of one side.
#[derive(Debug)]
pub struct Throttle {
    window: Instant,
    /// The current window's number ([`Refused`] counts carry it; the
    /// first is 1, so a new count is never current).
    window_id: u64,
    /// The sources refused this window, each once, at most
    /// [`MAX_WATCHED`] (their counts are in their [`Refused`]).
    watched: Vec<Ipv4Addr>,
    held: HashMap<Ipv4Addr, Held, ahash::RandomState>,
    /// Throttles started between reviews, for the next one to report.
    early: Vec<Change>,
}

impl Throttle {
    pub fn new(now: Instant) -> Throttle {
        Throttle {
            window: now,
            window_id: 1,
            watched: Vec::new(),
            held: HashMap::with_hasher(crate::sip::proxy::keyed_hasher()),
            early: Vec::new(),
        }
    }

    /// One datagram from `ip` through the admit phase, `refused` over its
    /// rate or byte budget, on a side whose limit is `rate` (0: nothing is
    /// throttled); `count` is the source's refusal count from its entry in
    /// the admit phase's table. Costs nothing for an admitted datagram
    /// while no source is throttled. `true` when this refusal throttled
    /// its source at once (it was refused at [`TRIGGER`] times the rate or
    /// more since the window began): the kernel filter must be rebuilt
    /// now, not at the next review, for a fast flood fills the socket's
    /// queue in tens of milliseconds.
    pub fn note(
        &mut self,
        ip: IpAddr,
        count: &mut Refused,
        refused: bool,
        rate: u32,
        now: Instant,
    ) -> bool {
        let IpAddr::V4(v4) = ip else {
            return false;
        };
        if !self.held.is_empty() {
            if let Some(h) = self.held.get_mut(&v4) {
                h.seen = h.seen.saturating_add(1);
                // Newly throttled: its share measured again at once.
                return !h.settled && now.saturating_duration_since(h.counting) >= FIRST_LOOK;
            }
        }
        if !refused || rate == 0 {
            return false;
        }
        if count.window == self.window_id {
            if count.n == 0 {
                // Throttled earlier this window and released since (still
                // on the list): counted afresh.
                count.first = now;
            }
            count.n = count.n.saturating_add(1);
        } else if self.watched.len() < MAX_WATCHED {
            self.watched.push(v4);
            *count = Refused {
                window: self.window_id,
                n: 1,
                first: now,
            };
        } else {
            return false;
        }
        let (n, first) = (count.n, count.first);
        if n % EARLY_CHECK_EVERY != 0 || self.held.len() >= MAX_THROTTLED {
            return false;
        }
        // Over the time since its first refusal: a flood that began late in
        // the window is measured at its own rate. The trigger divides by at
        // least EARLY_MIN_SPAN (a burst at the start is not a flood); the
        // share, once triggered, by at least a millisecond, so that a flood
        // of 200,000/s is kept at ~1 % from the start, not at the 50 % a
        // floored rate would give (it would fill the queue until the next
        // review corrected it).
        // (n − 1 intervals between the first refusal and this one.)
        let since = now.saturating_duration_since(first);
        let rate = f64::from(rate);
        let intervals = f64::from(n - 1);
        if intervals / since.max(EARLY_MIN_SPAN).as_secs_f64() < TRIGGER * rate {
            return false;
        }
        let refused_rate = intervals / since.max(Duration::from_millis(1)).as_secs_f64();
        count.n = 0;
        let change = self.hold(v4, rate, refused_rate + rate, now);
        self.early.push(change);
        true
    }

    /// A source whose request bucket drains fast (`bucket.rs`,
    /// `Bucket::draining`) at `arrivals` a second, on a side whose limit is
    /// `rate`: throttled at once when that is at least [`TRIGGER`] + 1
    /// times the rate — before its first refusal, while the burst its
    /// bucket allows is still being admitted (that burst, processed whole
    /// as calls, held the receive loop long enough for the queue behind it
    /// to overflow). `true` when it was throttled now. `count` is the
    /// source's refusal count ([`Throttle::note`]).
    pub fn flood(
        &mut self,
        ip: IpAddr,
        count: &mut Refused,
        arrivals: f64,
        rate: u32,
        now: Instant,
    ) -> bool {
        let IpAddr::V4(v4) = ip else {
            return false;
        };
        let rate = f64::from(rate);
        if rate == 0.0
            || arrivals < (TRIGGER + 1.0) * rate
            || self.held.contains_key(&v4)
            || self.held.len() >= MAX_THROTTLED
        {
            return false;
        }
        count.n = 0;
        let change = self.hold(v4, rate, arrivals, now);
        self.early.push(change);
        true
    }

    /// Throttles `source`, which offers `offered` datagrams/s.
    fn hold(&mut self, source: Ipv4Addr, rate: f64, offered: f64, now: Instant) -> Change {
        let share = share_for(rate, offered);
        self.held.insert(
            source,
            Held {
                share,
                seen: 0,
                counting: now,
                calm_since: None,
                settled: false,
            },
        );
        Change::Throttled {
            source,
            offered,
            share,
        }
    }

    /// Turns the window's counts into throttles for a side whose limit is
    /// `rate` requests per second (`0`, or `enabled` false: everything is
    /// released), and reports the throttles started early since the last
    /// review. `refused` gives a source's count from its entry in the admit
    /// phase's table (`None`: it has none). The changes, empty when the
    /// kernel filter need not change.
    pub fn review(
        &mut self,
        rate: u32,
        enabled: bool,
        now: Instant,
        refused: impl Fn(Ipv4Addr) -> Option<Refused>,
    ) -> Vec<Change> {
        let mut changes = std::mem::take(&mut self.early);
        if rate == 0 || !enabled {
            self.next_window(now);
            changes.clear();
            changes.extend(
                self.held
                    .drain()
                    .map(|(source, _)| Change::Released { source }),
            );
            return changes;
        }
        let rate = f64::from(rate);
        self.held.retain(|&source, h| {
            let elapsed = now.saturating_duration_since(h.counting);
            if elapsed < if h.settled { MIN_WINDOW } else { FIRST_LOOK } {
                return true;
            }
            h.settled = true;
            let offered = f64::from(h.seen) / elapsed.as_secs_f64() / h.share;
            h.seen = 0;
            h.counting = now;
            if offered < KEEP * rate {
                let since = *h.calm_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= CALM_FOR {
                    changes.push(Change::Released { source });
                    return false;
                }
            } else {
                h.calm_since = None;
            }
            // Calm, the share goes back to 1 (the kernel keeps everything)
            // at once, not only at the release: a source throttled for a
            // burst keeps its whole rate while the release waits.
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
        let elapsed = now.saturating_duration_since(self.window);
        if elapsed < MIN_WINDOW {
            return changes;
        }
        let secs = elapsed.as_secs_f64();
        let counted = self.window_id;
        let watched = self.next_window(now);
        let mut worst: Vec<(Ipv4Addr, f64)> = watched
            .into_iter()
            .filter_map(|ip| Some((ip, f64::from(refused(ip)?.in_window(counted)) / secs)))
            .filter(|&(_, refused)| refused >= TRIGGER * rate)
            .collect();
        // The heaviest first, should more offend than the table holds.
        worst.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (source, refused) in worst {
            if self.held.len() >= MAX_THROTTLED {
                break;
            }
            changes.push(self.hold(source, rate, refused + rate, now));
        }
        changes
    }

    /// Starts a new window at `now`: the counts of the one that ends go
    /// stale; the sources counted in it.
    fn next_window(&mut self, now: Instant) -> Vec<Ipv4Addr> {
        self.window = now;
        self.window_id += 1;
        std::mem::take(&mut self.watched)
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

    /// The throttle with the admit phase's refusal counts beside it
    /// (`admit.rs` keeps each in its source's entry).
    struct Table {
        t: Throttle,
        counts: HashMap<IpAddr, Refused>,
    }

    impl Table {
        fn new(now: Instant) -> Table {
            Table {
                t: Throttle::new(now),
                counts: HashMap::new(),
            }
        }

        fn note(&mut self, ip: IpAddr, refused: bool, rate: u32, now: Instant) -> bool {
            let count = self.counts.entry(ip).or_insert_with(|| Refused::new(now));
            self.t.note(ip, count, refused, rate, now)
        }

        fn flood(&mut self, ip: IpAddr, arrivals: f64, rate: u32, now: Instant) -> bool {
            let count = self.counts.entry(ip).or_insert_with(|| Refused::new(now));
            self.t.flood(ip, count, arrivals, rate, now)
        }

        fn review(&mut self, rate: u32, enabled: bool, now: Instant) -> Vec<Change> {
            let counts = &self.counts;
            self.t.review(rate, enabled, now, |ip| {
                counts.get(&IpAddr::V4(ip)).copied()
            })
        }
    }

    impl std::ops::Deref for Table {
        type Target = Throttle;
        fn deref(&self) -> &Throttle {
            &self.t
        }
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const RATE: u32 = 100;

    /// `n` datagrams from `ip` spread evenly over the second after `from`,
    /// `admitted` of them within its rate, spread evenly too (as a token
    /// bucket refilling at the rate admits them); when the first note
    /// asked for the filter at once, if one did.
    fn offer(t: &mut Table, ip: &str, n: u32, admitted: u32, from: Instant) -> Option<Duration> {
        let mut early = None;
        for i in 0..n {
            let at = Duration::from_secs(1) * i / n;
            let admit = (i + 1) * admitted / n > i * admitted / n;
            if t.note(IpAddr::V4(v4(ip)), !admit, RATE, from + at) && early.is_none() {
                early = Some(at);
            }
        }
        early
    }

    /// What a throttled source that offers `per_sec` shows to the admit
    /// phase over the second after `from`, at its current share.
    fn offer_throttled(t: &mut Table, ip: &str, per_sec: f64, from: Instant) {
        let share = t.held.get(&v4(ip)).map_or(1.0, |h| h.share);
        let seen = (per_sec * share).round() as u32;
        offer(t, ip, seen, 0, from);
    }

    fn share(t: &Table, ip: &str) -> Option<f64> {
        t.held.get(&v4(ip)).map(|h| h.share)
    }

    #[test]
    fn a_source_far_over_its_rate_is_throttled_at_once_and_the_rest_are_not() {
        let t0 = Instant::now();
        let mut t = Table::new(t0);
        // The flooder offers 10× its rate, a busy carrier 2×.
        let early = offer(&mut t, "10.0.0.2", 1000, RATE, t0);
        assert!(
            early.is_some_and(|at| at < REVIEW_EVERY),
            "throttled before the first review: {early:?}"
        );
        assert_eq!(offer(&mut t, "10.0.0.1", 200, RATE, t0), None);
        // The review reports it (and, as this test keeps every datagram
        // the kernel would have dropped, adjusts its share).
        let changes = t.review(RATE, true, t0 + Duration::from_secs(1));
        assert!(
            matches!(changes.first(), Some(Change::Throttled { source, .. }) if *source == v4("10.0.0.2")),
            "{changes:?}"
        );
        assert!(
            changes.iter().all(|c| !matches!(c, Change::Throttled { source, .. } | Change::Adjusted { source, .. } if *source == v4("10.0.0.1"))),
            "{changes:?}"
        );
        assert_eq!(t.in_force().len(), 1);
        assert!(share(&t, "10.0.0.1").is_none(), "the carrier is left alone");
    }

    #[test]
    fn a_flood_that_starts_late_in_a_window_is_kept_at_its_own_share_at_once() {
        // 200 ms into the window, 100,000 datagrams a second against a
        // limit of 100: all refused. The early check measures from its
        // first refusal, so the share is about 200 / 100,000, not the
        // ~10 % the window's age would suggest.
        let t0 = Instant::now();
        let mut t = Table::new(t0);
        let start = t0 + Duration::from_millis(200);
        let mut throttled_after = None;
        for i in 0..10_000u32 {
            let at = start + Duration::from_micros(u64::from(i) * 10);
            if t.note(IpAddr::V4(v4("10.0.0.9")), true, RATE, at) {
                throttled_after = Some(i + 1);
                break;
            }
        }
        assert!(
            throttled_after.is_some_and(|n| n <= 1024),
            "{throttled_after:?}"
        );
        let got = share(&t, "10.0.0.9").unwrap_or(1.0);
        assert!(got < 0.005, "kept share {got}");
    }

    #[test]
    fn a_fast_draining_bucket_throttles_before_any_refusal_and_is_measured_again_soon() {
        let t0 = Instant::now();
        let mut t = Table::new(t0);
        let ip = IpAddr::V4(v4("10.0.0.7"));
        // Its bucket says 20,000/s against a limit of 100: throttled at
        // once, share 200 / 20,000.
        assert!(
            !t.flood(ip, 3.9 * f64::from(RATE), RATE, t0),
            "under 4× is left alone"
        );
        assert!(t.flood(ip, 20_000.0, RATE, t0));
        assert!(!t.flood(ip, 20_000.0, RATE, t0), "once");
        assert_eq!(share(&t, "10.0.0.7"), Some(0.01));
        // Its datagrams ask for a look after FIRST_LOOK, not the review's
        // 200 ms; the look measures what the kernel let through.
        assert!(!t.note(ip, false, RATE, t0 + Duration::from_millis(5)));
        let later = t0 + FIRST_LOOK;
        assert!(t.note(ip, false, RATE, later));
        for _ in 0..199 {
            t.note(ip, false, RATE, later);
        }
        // 201 seen in 20 ms at share 0.01: ~1,000,000/s offered.
        let changes = t.review(RATE, true, later);
        assert!(
            matches!(changes.as_slice(), [Change::Throttled { .. }, Change::Adjusted { share, .. }] if *share < 0.001),
            "{changes:?}"
        );
        assert!(
            !t.note(ip, false, RATE, later + FIRST_LOOK),
            "settled: the review's pace now"
        );
    }

    #[test]
    fn a_review_throttles_a_source_too_slow_for_the_early_check() {
        // A limit of 5/s: a source refused 20 times in a second (25/s
        // offered) never reaches the early check's 64 refusals; the
        // review throttles it.
        let t0 = Instant::now();
        let mut t = Table::new(t0);
        for i in 0..20u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 50);
            assert!(!t.note(IpAddr::V4(v4("10.0.0.2")), true, 5, at));
        }
        assert_eq!(
            t.review(5, true, t0 + Duration::from_secs(1)),
            vec![Change::Throttled {
                source: v4("10.0.0.2"),
                offered: 25.0,
                share: 0.4
            }]
        );
    }

    #[test]
    fn under_the_trigger_is_left_to_the_admit_phase() {
        let t0 = Instant::now();
        let mut t = Table::new(t0);
        assert_eq!(
            offer(&mut t, "10.0.0.2", RATE + 3 * RATE - 20, RATE, t0),
            None
        );
        assert!(t.review(RATE, true, t0 + Duration::from_secs(1)).is_empty());
        assert!(t.in_force().is_empty());
    }

    #[test]
    fn a_burst_at_the_start_of_a_window_does_not_read_as_a_flood() {
        // 64 refusals within a millisecond of the window's start: over the
        // 50 ms floor that is 1,280/s, above the trigger for a rate of 100,
        // so a rate of 1000 is used to show the floor at work.
        let t0 = Instant::now();
        let mut t = Table::new(t0);
        for i in 0..64u32 {
            let at = t0 + Duration::from_micros(u64::from(i) * 10);
            assert!(!t.note(IpAddr::V4(v4("10.0.0.1")), true, 1000, at));
        }
    }

    #[test]
    fn the_share_follows_the_flood_and_is_released_once_calm() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = Table::new(t0);
        offer(&mut t, "10.0.0.2", 1000, RATE, t0);
        t.review(RATE, true, s(1000));
        // A steady 1000/s at whatever share: the share settles at 0.2.
        offer_throttled(&mut t, "10.0.0.2", 1000.0, s(1000));
        t.review(RATE, true, s(2000));
        let settled = share(&t, "10.0.0.2").unwrap_or_default();
        assert!((settled - 0.2).abs() < 0.01, "{settled}");
        offer_throttled(&mut t, "10.0.0.2", 1000.0, s(2000));
        assert!(t.review(RATE, true, s(3000)).is_empty(), "nothing moves");
        // The flood doubles: the share halves.
        offer_throttled(&mut t, "10.0.0.2", 2000.0, s(3000));
        let changes = t.review(RATE, true, s(4000));
        assert!(
            matches!(changes.as_slice(), [Change::Adjusted { share, .. }] if (share - 0.1).abs() < 0.01),
            "{changes:?}"
        );
        // It stops: calm from the review at 5 s, its share back to 1 at
        // once (the kernel keeps all it sends), held until 3 s of calm.
        let calm = t.review(RATE, true, s(5000));
        assert!(
            matches!(calm.as_slice(), [Change::Adjusted { share, .. }] if *share == 1.0),
            "{calm:?}"
        );
        for k in [6000, 7000] {
            assert!(t.review(RATE, true, s(k)).is_empty(), "review at {k} ms");
            assert_eq!(t.in_force().len(), 1);
        }
        assert_eq!(
            t.review(RATE, true, s(8000)),
            vec![Change::Released {
                source: v4("10.0.0.2")
            }]
        );
        assert!(t.in_force().is_empty());
    }

    #[test]
    fn a_flooding_review_between_calm_ones_starts_the_count_again() {
        let t0 = Instant::now();
        let s = |k: u64| t0 + Duration::from_secs(k);
        let mut t = Table::new(t0);
        offer(&mut t, "10.0.0.2", 1000, RATE, t0);
        t.review(RATE, true, s(1));
        for k in 2..=12 {
            // Calm, calm, then flooding again, over and over: never calm
            // for three seconds.
            if k % 3 == 1 {
                offer_throttled(&mut t, "10.0.0.2", 1000.0, s(k - 1));
            }
            t.review(RATE, true, s(k));
            assert_eq!(t.in_force().len(), 1, "review {k}");
        }
    }

    #[test]
    fn switching_off_or_a_zero_rate_releases_everyone() {
        let t0 = Instant::now();
        let s = |k: u64| t0 + Duration::from_secs(k);
        let mut t = Table::new(t0);
        offer(&mut t, "10.0.0.2", 1000, RATE, t0);
        offer(&mut t, "10.0.0.3", 1000, RATE, t0);
        t.review(RATE, true, s(1));
        assert_eq!(t.in_force().len(), 2);
        let changes = t.review(RATE, false, s(2));
        assert_eq!(changes.len(), 2);
        assert!(t.in_force().is_empty());
        // A zero rate: a flood is not throttled.
        for i in 0..1000u32 {
            let at = s(2) + Duration::from_millis(u64::from(i));
            assert!(!t.note(IpAddr::V4(v4("10.0.0.2")), true, 0, at));
        }
        assert!(t.review(0, true, s(3)).is_empty());
        assert!(t.in_force().is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut t = Table::new(t0);
        for i in 0..MAX_THROTTLED as u32 + 10 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            for k in 0..1000u32 {
                let at = t0 + Duration::from_millis(u64::from(k));
                t.note(ip, true, RATE, at);
            }
        }
        assert_eq!(t.held.len(), MAX_THROTTLED, "no more than the table holds");
        t.review(RATE, true, t0 + Duration::from_secs(1));
        assert_eq!(t.in_force().len(), MAX_THROTTLED);
        // Refused sources are counted up to a bound within a window.
        for i in 0..MAX_WATCHED as u32 * 2 {
            let at = t0 + Duration::from_secs(1);
            t.note(IpAddr::V4(Ipv4Addr::from(0xc000_0000 + i)), true, RATE, at);
        }
        assert_eq!(t.watched.len(), MAX_WATCHED);
    }

    #[test]
    fn ipv6_sources_and_short_windows_change_nothing() {
        let t0 = Instant::now();
        let mut t = Table::new(t0);
        for i in 0..10_000u32 {
            let ip = "2001:db8::1".parse().unwrap_or_else(|e| panic!("{e}"));
            assert!(!t.note(ip, true, RATE, t0 + Duration::from_micros(u64::from(i))));
        }
        // Refused at 3.5× the rate over 100 ms: too few for an early
        // check, and a review of so short a window waits.
        for i in 0..35u32 {
            t.note(
                IpAddr::V4(v4("10.0.0.2")),
                true,
                RATE,
                t0 + Duration::from_millis(u64::from(i) * 3),
            );
        }
        assert!(t
            .review(RATE, true, t0 + Duration::from_millis(100))
            .is_empty());
        assert!(t.in_force().is_empty());
    }
}
