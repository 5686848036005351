//! The admit phase: per-side ACL, per-source message rate limits and byte
//! budget, applied before a message is parsed (only its length and first
//! bytes are looked at, to tell requests from responses).

use std::net::IpAddr;
use std::time::Instant;

use super::bucket::SourceBuckets;
use super::refusals::Refusals;
use super::throttle::{Change, Throttle};
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

/// ACL, a token bucket per source address for requests, one for
/// responses and one of bytes for both, the limit on the answers
/// callgate forms itself ([`Refusals`]), and the sources so far over
/// their rate that the kernel throttles them ([`Throttle`]).
#[derive(Debug)]
pub struct Admission {
    cfg: SideConfig,
    requests: SourceBuckets,
    responses: SourceBuckets,
    bytes: SourceBuckets,
    refusals: Refusals,
    throttle: Throttle,
    /// A source was throttled at once by the last check: the kernel filter
    /// must be rebuilt before the next datagram is read.
    throttle_due: bool,
}

impl Admission {
    pub fn new(cfg: SideConfig) -> Self {
        let now = Instant::now();
        Admission {
            refusals: Refusals::new(&cfg, now),
            throttle: Throttle::new(now),
            throttle_due: false,
            cfg,
            requests: SourceBuckets::default(),
            responses: SourceBuckets::default(),
            bytes: SourceBuckets::default(),
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
    /// bytes only.
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
    pub fn check(&mut self, ip: IpAddr, data: &[u8], now: Instant) -> Verdict {
        let ip = canonical_ip(ip);
        if !self.cfg.admits(ip) {
            return Verdict::Denied(self.cfg.on_denied);
        }
        if crate::sip::message::keepalive_prefix(data) == data.len() {
            return Verdict::Admit;
        }
        let (verdict, draining) = self.within_limits(ip, data, now);
        let rate = if self.cfg.kernel_throttle {
            self.cfg.rate_limit
        } else {
            0
        };
        if self.throttle.note(ip, verdict != Verdict::Admit, rate, now) {
            self.throttle_due = true;
        }
        if let Some(arrivals) = draining {
            if self.throttle.flood(ip, arrivals, rate, now) {
                self.throttle_due = true;
            }
        }
        verdict
    }

    /// Whether a check since the last call throttled a source at once
    /// ([`Throttle::note`]): the caller reviews now
    /// ([`Admission::review_throttle`]).
    pub fn take_throttle_due(&mut self) -> bool {
        std::mem::take(&mut self.throttle_due)
    }

    /// Every quarter second (`throttle::REVIEW_EVERY`): which sources the kernel should throttle now
    /// (`kernel_throttle`, see [`Throttle::review`]); the changes, and the
    /// whole list when it changed.
    pub fn review_throttle(&mut self, now: Instant) -> Option<(Vec<Change>, Vec<Throttled>)> {
        let changes = self
            .throttle
            .review(self.cfg.rate_limit, self.cfg.kernel_throttle, now);
        (!changes.is_empty()).then(|| (changes, self.throttle.in_force()))
    }

    /// The rate limit and byte budget of an admitted source; with the
    /// verdict, the source's request arrival rate when its request bucket
    /// is draining fast (a flood before its first refusal).
    fn within_limits(&mut self, ip: IpAddr, data: &[u8], now: Instant) -> (Verdict, Option<f64>) {
        let rate = self.cfg.rate_limit;
        let mut draining = None;
        if rate > 0 {
            let admitted = if data.starts_with(b"SIP/2.0 ") {
                self.responses
                    .take(ip, rate.saturating_mul(RESPONSES_PER_REQUEST), now)
            } else {
                let (admitted, d) = self.requests.take_watching(ip, rate, now);
                draining = d;
                admitted
            };
            if !admitted {
                return (Verdict::RateLimited, draining);
            }
        }
        let bytes = self.cfg.rate_limit_bytes;
        if bytes > 0 && !self.bytes.take_bytes(ip, data.len(), bytes, now) {
            return (Verdict::OverByteBudget, draining);
        }
        (Verdict::Admit, draining)
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
            ),
            Verdict::Admit
        );
        assert_eq!(
            a.check(
                "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}")),
                b"INVITE",
                now
            ),
            Verdict::Denied(Denied::Drop)
        );
        // IPv4-mapped IPv6 from a dual-stack socket is matched as IPv4.
        assert_eq!(
            a.check(
                "::ffff:10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
                b"INVITE",
                now
            ),
            Verdict::Admit
        );
    }

    #[test]
    fn rate_limit_allows_burst_then_refills() {
        let mut a = Admission::new(side(10));
        let ip = "10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        let admitted = (0..25)
            .filter(|_| a.check(ip, b"INVITE", t0) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 20);
        // Responses have their own bucket, four times the rate (burst 80).
        let responses = (0..100)
            .filter(|_| a.check(ip, b"SIP/2.0 200 OK", t0) == Verdict::Admit)
            .count();
        assert_eq!(responses, 80);
        // 1 s later, 10 more tokens.
        let later = t0 + Duration::from_secs(1);
        let admitted = (0..25)
            .filter(|_| a.check(ip, b"INVITE", later) == Verdict::Admit)
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
        let verdicts: Vec<_> = (0..5).map(|_| a.check(ip, &big, t0)).collect();
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
        assert_eq!(a.check(ip, &[b'I'; 15_000], t0), Verdict::Admit);
        assert_eq!(
            a.check(ip, b"SIP/2.0 200 OK\r\n", t0),
            Verdict::Admit,
            "a few bytes left"
        );
        assert_eq!(a.check(ip, &[b'S'; 6_000], t0), Verdict::OverByteBudget);
        // Another source has its own budget; keep-alives cost nothing.
        assert_eq!(a.check(other, &big, t0), Verdict::Admit);
        assert_eq!(a.check(ip, b"\r\n\r\n", t0), Verdict::Admit);
        // One second later, 100,000 bytes more: one more 60 KB message.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(a.check(ip, &big, later), Verdict::Admit);
        assert_eq!(a.check(ip, &big, later), Verdict::OverByteBudget);
    }

    #[test]
    fn a_budget_below_one_datagram_still_admits_the_largest_datagram() {
        let mut cfg = side(0);
        cfg.rate_limit_bytes = 1024;
        let mut a = Admission::new(cfg);
        let ip = "10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        assert_eq!(a.check(ip, &[b'I'; 65_507], t0), Verdict::Admit);
        assert_eq!(a.check(ip, &[b'I'; 100], t0), Verdict::OverByteBudget);
    }
}
