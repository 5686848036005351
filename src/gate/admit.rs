//! The admit phase: per-side ACL, per-source message rate limits and byte
//! budget, applied before a message is parsed (only its length and first
//! bytes are looked at, to tell requests from responses).

use std::net::IpAddr;
use std::time::Instant;

use super::bucket::{Bucket, PerSource, SourceBuckets};
use super::refusals::Refusals;
use super::throttle::{Change, Refused, Throttle};
use crate::config::{canonical_ip, Denied, SideConfig, TrunkScreen};
use crate::sip::transport::kernel_filter::Throttled;

/// Responses a source may send per request it may send (`rate_limit`):
/// 100 Trying, 180/183, the final response and its retransmissions to
/// the requests callgate sends that peer, with room to spare.
pub const RESPONSES_PER_REQUEST: u32 = 4;

/// Admission verdict for one datagram or framed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// Source outside the ACL; answer 403 or drop per `on_denied`.
    Denied(Denied),
    /// Source over its rate limit: dropped (answering would feed a flood).
    RateLimited,
    /// Source over its byte budget (`rate_limit_bytes`): dropped, as over
    /// its rate.
    OverByteBudget,
}

/// The admit phase's answer on one message: its verdict, and whether the
/// kernel throttle must be reviewed now ([`Admission::review_throttle`]),
/// before the next datagram is read — a source was just throttled
/// ([`Throttle::note`], [`Throttle::flood`]) or a newly throttled one is
/// due its first look. One value, so that no caller takes the verdict
/// and forgets the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a due throttle review puts a flood in the kernel filter before the next datagram is read"]
pub struct Checked {
    pub verdict: Verdict,
    pub throttle_due: bool,
}

impl Checked {
    /// `verdict`, no review due.
    fn only(verdict: Verdict) -> Checked {
        Checked {
            verdict,
            throttle_due: false,
        }
    }
}

/// What the admit phase keeps per source address, in one entry (one
/// lookup per datagram): its request, response and byte buckets, each
/// made full at its first use, and its refusals counted for the kernel
/// throttle.
#[derive(Debug)]
struct Source {
    requests: Option<Bucket>,
    responses: Option<Bucket>,
    bytes: Option<Bucket>,
    refused: Refused,
    last: Instant,
}

impl Source {
    fn new(now: Instant) -> Source {
        Source {
            requests: None,
            responses: None,
            bytes: None,
            refused: Refused::new(now),
            last: now,
        }
    }
}

impl PerSource for Source {
    fn last_used(&self) -> Instant {
        self.last
    }
}

/// ACL, per source address a token bucket for requests, one for
/// responses and one of bytes for both and its refusal count ([`Source`]),
/// the limit on the answers callgate forms itself ([`Refusals`]), and the
/// sources so far over their rate that the kernel throttles them
/// ([`Throttle`]).
#[derive(Debug)]
pub struct Admission {
    cfg: SideConfig,
    sources: SourceBuckets<Source>,
    refusals: Refusals,
    throttle: Throttle,
}

impl Admission {
    pub fn new(cfg: SideConfig) -> Self {
        let now = Instant::now();
        Admission {
            refusals: Refusals::new(&cfg, now),
            throttle: Throttle::new(now),
            cfg,
            sources: SourceBuckets::default(),
        }
    }

    /// Whether the ACL admits `ip` at all (checked when a TCP/TLS
    /// connection is accepted, before any handshake or byte).
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.cfg.admits(canonical_ip(ip))
    }

    pub fn reload(&mut self, cfg: SideConfig) {
        self.refusals.reload(&cfg);
        self.cfg = cfg;
    }

    /// The trunk's out-of-dialog screen (`None` on the PBX side).
    pub fn screen(&self) -> Option<&TrunkScreen> {
        self.cfg.screen.as_ref()
    }

    /// Whether callgate may send one more answer it formed itself to `ip`
    /// now (see [`Refusals`]).
    pub fn may_answer(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.refusals.take(canonical_ip(ip), now)
    }

    /// Decides on a message from `ip`, on its source, length and first
    /// bytes only; with the verdict, whether the kernel throttle is due a
    /// review now ([`Checked`]).
    ///
    /// Responses have a bucket of their own, [`RESPONSES_PER_REQUEST`] times
    /// the request rate: a peer answers callgate's requests (provisional,
    /// final and retransmitted responses: a few per request), so it needs
    /// room for several responses per request callgate may send it, but a
    /// flood of stray responses from an admitted source (each one parsed
    /// and matched against the transactions otherwise) is cut before
    /// parsing like a flood of requests (issue 14).
    ///
    /// A message within its rate then spends its length from the source's
    /// byte budget (`rate_limit_bytes`, requests and responses together):
    /// the rate limit counts messages, and 60 KB INVITEs at an admitted
    /// rate were each parsed, forwarded and held by a transaction — 60 MB/s
    /// from one source in `flood.sh`'s `oversized` run, legitimate calls'
    /// p99 0.4–1.9 s. A real signed INVITE is 2–5 KB.
    pub fn check(&mut self, ip: IpAddr, data: &[u8], now: Instant) -> Checked {
        let ip = canonical_ip(ip);
        if !self.cfg.admits(ip) {
            return Checked::only(Verdict::Denied(self.cfg.on_denied));
        }
        if crate::sip::message::keepalive_prefix(data) == data.len() {
            return Checked::only(Verdict::Admit);
        }
        self.within_limits(ip, data, now)
    }

    /// Every quarter second (`throttle::REVIEW_EVERY`): which sources the kernel should throttle now
    /// (`kernel_throttle`, see [`Throttle::review`]); the changes, and the
    /// whole list when it changed.
    pub fn review_throttle(&mut self, now: Instant) -> Option<(Vec<Change>, Vec<Throttled>)> {
        let sources = &self.sources;
        let changes =
            self.throttle
                .review(self.cfg.rate_limit, self.cfg.kernel_throttle, now, |ip| {
                    sources.get(IpAddr::V4(ip)).map(|s| s.refused)
                });
        (!changes.is_empty()).then(|| (changes, self.throttle.in_force()))
    }

    /// The rate limit and byte budget of an admitted source, from its
    /// entry (one lookup), and the refusal or, when its request bucket is
    /// draining fast (a flood before its first refusal), its arrival rate
    /// told to the throttle.
    fn within_limits(&mut self, ip: IpAddr, data: &[u8], now: Instant) -> Checked {
        let (rate, bytes) = (self.cfg.rate_limit, self.cfg.rate_limit_bytes);
        let throttle_rate = if self.cfg.kernel_throttle { rate } else { 0 };
        if rate == 0 && bytes == 0 {
            // Nothing to count: no entry. A source still throttled from
            // before a reload lifted the limits is seen all the same (the
            // next review releases it).
            let due = self
                .throttle
                .note(ip, &mut Refused::new(now), false, 0, now);
            return Checked {
                verdict: Verdict::Admit,
                throttle_due: due,
            };
        }
        let source = self.sources.entry(ip, now, || Source::new(now));
        source.last = now;
        let mut verdict = Verdict::Admit;
        let mut draining = None;
        if rate > 0 {
            let admitted = if data.starts_with(b"SIP/2.0 ") {
                let rate = rate.saturating_mul(RESPONSES_PER_REQUEST);
                source
                    .responses
                    .get_or_insert_with(|| Bucket::full(rate, now))
                    .take(rate, now)
            } else {
                let b = source
                    .requests
                    .get_or_insert_with(|| Bucket::full(rate, now));
                let admitted = b.take(rate, now);
                draining = b.draining(rate, now);
                admitted
            };
            if !admitted {
                verdict = Verdict::RateLimited;
            }
        }
        if verdict == Verdict::Admit
            && bytes > 0
            && !source
                .bytes
                .get_or_insert_with(|| Bucket::full_of_bytes(bytes, now))
                .take_bytes(data.len(), bytes, now)
        {
            verdict = Verdict::OverByteBudget;
        }
        let refused = verdict != Verdict::Admit;
        let mut due = self
            .throttle
            .note(ip, &mut source.refused, refused, throttle_rate, now);
        if let Some(arrivals) = draining {
            due |= self
                .throttle
                .flood(ip, &mut source.refused, arrivals, throttle_rate, now);
        }
        Checked {
            verdict,
            throttle_due: due,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    fn side(rate: u32) -> SideConfig {
        let mut cfg = Config::embedded()
            .map(|c| c.trunk)
            .unwrap_or_else(|e| panic!("embedded config: {e}"));
        cfg.rate_limit = rate;
        cfg.rate_limit_bytes = 0;
        cfg.allow = vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))];
        cfg
    }

    #[test]
    fn acl_refuses_unlisted_sources() {
        // The trunk's default toward strangers is silence (no reflection).
        let mut a = Admission::new(side(0));
        let now = Instant::now();
        assert_eq!(
            a.check(
                "10.1.2.3".parse().unwrap_or_else(|e| panic!("{e}")),
                b"INVITE",
                now
            )
            .verdict,
            Verdict::Admit
        );
        assert_eq!(
            a.check(
                "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}")),
                b"INVITE",
                now
            )
            .verdict,
            Verdict::Denied(Denied::Drop)
        );
        // IPv4-mapped IPv6 from a dual-stack socket is matched as IPv4.
        assert_eq!(
            a.check(
                "::ffff:10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
                b"INVITE",
                now
            )
            .verdict,
            Verdict::Admit
        );
    }

    #[test]
    fn rate_limit_allows_burst_then_refills() {
        let mut a = Admission::new(side(10));
        let ip = "10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        let admitted = (0..25)
            .filter(|_| a.check(ip, b"INVITE", t0).verdict == Verdict::Admit)
            .count();
        assert_eq!(admitted, 20);
        // Responses have their own bucket, four times the rate (burst 80).
        let responses = (0..100)
            .filter(|_| a.check(ip, b"SIP/2.0 200 OK", t0).verdict == Verdict::Admit)
            .count();
        assert_eq!(responses, 80);
        // 1 s later, 10 more tokens.
        let later = t0 + Duration::from_secs(1);
        let admitted = (0..25)
            .filter(|_| a.check(ip, b"INVITE", later).verdict == Verdict::Admit)
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn the_byte_budget_refuses_large_messages_within_the_rate() {
        let mut cfg = side(1000);
        cfg.rate_limit_bytes = 100_000; // burst 200,000 bytes
        let mut a = Admission::new(cfg);
        let ip = "10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let other = "10.0.0.2".parse().unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        let big = vec![b'I'; 60_000];
        let verdicts: Vec<_> = (0..5).map(|_| a.check(ip, &big, t0).verdict).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Admit,
                Verdict::Admit,
                Verdict::Admit,
                Verdict::OverByteBudget,
                Verdict::OverByteBudget
            ],
            "three 60 KB messages fit the 200 KB burst, well within 1000/s"
        );
        // 20,000 bytes left: small messages still pass, and a response
        // spends the same budget.
        assert_eq!(a.check(ip, &[b'I'; 15_000], t0).verdict, Verdict::Admit);
        assert_eq!(
            a.check(ip, b"SIP/2.0 200 OK\r\n", t0).verdict,
            Verdict::Admit,
            "a few bytes left"
        );
        assert_eq!(
            a.check(ip, &[b'S'; 6_000], t0).verdict,
            Verdict::OverByteBudget
        );
        // Another source has its own budget; keep-alives cost nothing.
        assert_eq!(a.check(other, &big, t0).verdict, Verdict::Admit);
        assert_eq!(a.check(ip, b"\r\n\r\n", t0).verdict, Verdict::Admit);
        // One second later, 100,000 bytes more: one more 60 KB message.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(a.check(ip, &big, later).verdict, Verdict::Admit);
        assert_eq!(a.check(ip, &big, later).verdict, Verdict::OverByteBudget);
    }

    #[test]
    fn a_budget_below_one_datagram_still_admits_the_largest_datagram() {
        let mut cfg = side(0);
        cfg.rate_limit_bytes = 1024;
        let mut a = Admission::new(cfg);
        let ip = "10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        assert_eq!(a.check(ip, &[b'I'; 65_507], t0).verdict, Verdict::Admit);
        assert_eq!(
            a.check(ip, &[b'I'; 100], t0).verdict,
            Verdict::OverByteBudget
        );
    }

    /// `n` requests from `ip`, `every` apart from `t0`: each check.
    fn requests(
        a: &mut Admission,
        ip: IpAddr,
        n: u32,
        every: Duration,
        t0: Instant,
    ) -> Vec<Checked> {
        (0..n)
            .map(|i| a.check(ip, b"INVITE", t0 + every * i))
            .collect()
    }

    /// The throttle's review at `at`, which must change the filter: what
    /// changed, and the sources the filter then holds.
    fn review(a: &mut Admission, at: Instant) -> (Vec<Change>, Vec<Throttled>) {
        a.review_throttle(at)
            .unwrap_or_else(|| panic!("the review changes nothing"))
    }

    #[test]
    fn a_flood_is_due_a_throttle_review_with_its_verdict() {
        // 10,000 requests a second against a limit of 100: the source's
        // bucket loses half its burst within 10 ms, and the check that
        // sees it says the throttle is due, while its verdict still
        // admits (before any refusal).
        let flooder: IpAddr = "10.0.0.9".parse().unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        let mut a = Admission::new(side(100));
        let checked = requests(&mut a, flooder, 150, Duration::from_micros(100), t0);
        let first = checked.iter().position(|c| c.throttle_due);
        assert!(
            first.is_some_and(|i| checked[i].verdict == Verdict::Admit && i < 120),
            "{first:?}"
        );
        let (changes, list) = review(&mut a, t0 + Duration::from_millis(15));
        assert!(
            matches!(changes.as_slice(), [Change::Throttled { source, .. }] if IpAddr::V4(*source) == flooder),
            "{changes:?}"
        );
        assert_eq!(list.len(), 1);
        // The carrier within its rate is never due one.
        let carrier = "10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let calm = requests(&mut a, carrier, 50, Duration::from_millis(20), t0);
        assert!(calm
            .iter()
            .all(|c| !c.throttle_due && c.verdict == Verdict::Admit));
        // `kernel_throttle = false`: the same flood is refused, never due.
        let mut cfg = side(100);
        cfg.kernel_throttle = false;
        let mut off = Admission::new(cfg);
        let checked = requests(&mut off, flooder, 1000, Duration::from_micros(100), t0);
        assert!(checked.iter().all(|c| !c.throttle_due));
        assert!(checked.iter().any(|c| c.verdict == Verdict::RateLimited));
        assert_eq!(off.review_throttle(t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn refusals_counted_in_the_sources_entry_reach_the_review() {
        // 40 requests a second against a limit of 5: too slow for the
        // bucket's fast-drain check and for the early check (64 refusals),
        // refused at about 25 a second, five times the rate: the review
        // reads the count from the source's entry and throttles it.
        let ip: IpAddr = "10.0.0.2".parse().unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        let mut a = Admission::new(side(5));
        let checked = requests(&mut a, ip, 40, Duration::from_millis(25), t0);
        let refused = checked
            .iter()
            .filter(|c| c.verdict == Verdict::RateLimited)
            .count();
        assert!((20..=30).contains(&refused), "{refused}");
        assert!(checked.iter().all(|c| !c.throttle_due));
        let later = t0 + Duration::from_secs(1);
        let (changes, list) = review(&mut a, later);
        assert!(
            matches!(changes.as_slice(), [Change::Throttled { source, offered, .. }]
                if IpAddr::V4(*source) == ip && (25.0..=35.0).contains(offered)),
            "{changes:?}"
        );
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn a_source_in_use_keeps_its_entry_when_idle_ones_are_swept() {
        // More than 10,000 sources seen at t0, one of them busy again at
        // 59.8 s, when it spends most of its byte budget (burst 65,535,
        // 1,024 a second). At 60.9 s a new source's check sweeps the
        // entries idle for 60 s: the busy one stays, its budget still
        // spent; had it been swept, a full budget would admit it.
        let mut cfg = side(0);
        cfg.rate_limit_bytes = 1024;
        let mut a = Admission::new(cfg);
        let t0 = Instant::now();
        let busy: IpAddr = "10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        for i in 0..10_001u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a01_0000 + i));
            let _ = a.check(ip, b"INVITE", t0);
        }
        let _ = a.check(busy, b"INVITE", t0);
        let big = vec![b'I'; 60_000];
        let busy_again = t0 + Duration::from_millis(59_800);
        assert_eq!(a.check(busy, &big, busy_again).verdict, Verdict::Admit);
        let sweep = t0 + Duration::from_millis(60_900);
        let newcomer = "10.2.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let _ = a.check(newcomer, b"INVITE", sweep);
        assert_eq!(
            a.check(busy, &big, sweep).verdict,
            Verdict::OverByteBudget,
            "the busy source's entry survived the sweep"
        );
    }
}
