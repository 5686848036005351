//! The admit phase: per-side ACL and per-source rate limit, applied before a
//! message is parsed (only the first bytes are looked at, to tell requests
//! from responses).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::{canonical_ip, Denied, SideConfig};

/// Admission verdict for one datagram or framed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// Source outside the ACL; answer 403 or drop per `on_denied`.
    Denied(Denied),
    /// Source over its rate limit: dropped (answering would feed a flood).
    RateLimited,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// ACL plus a token bucket per source address (burst = 2 s of rate).
#[derive(Debug)]
pub struct Admission {
    cfg: SideConfig,
    buckets: HashMap<IpAddr, Bucket>,
    last_prune: Option<Instant>,
}

/// Buckets idle this long are forgotten, bounding memory under scans.
const IDLE: Duration = Duration::from_secs(60);
const PRUNE_ABOVE: usize = 10_000;

impl Admission {
    pub fn new(cfg: SideConfig) -> Self {
        Admission {
            cfg,
            buckets: HashMap::new(),
            last_prune: None,
        }
    }

    /// Whether the ACL admits `ip` at all (checked when a TCP/TLS
    /// connection is accepted, before any handshake or byte).
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.cfg.admits(canonical_ip(ip))
    }

    pub fn reload(&mut self, cfg: SideConfig) {
        self.cfg = cfg;
    }

    /// Decides on a message from `ip`. Responses are never rate limited
    /// (they belong to transactions we started).
    pub fn check(&mut self, ip: IpAddr, data: &[u8], now: Instant) -> Verdict {
        let ip = canonical_ip(ip);
        if !self.cfg.admits(ip) {
            return Verdict::Denied(self.cfg.on_denied);
        }
        let rate = self.cfg.rate_limit;
        if rate == 0
            || data.starts_with(b"SIP/2.0 ")
            || crate::sip::message::keepalive_prefix(data) == data.len()
        {
            return Verdict::Admit;
        }
        if self.buckets.len() > PRUNE_ABOVE
            && self
                .last_prune
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(1))
        {
            self.buckets
                .retain(|_, b| now.duration_since(b.last) < IDLE);
            self.last_prune = Some(now);
        }
        let burst = f64::from(rate) * 2.0;
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * f64::from(rate)).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Verdict::Admit
        } else {
            Verdict::RateLimited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn side(rate: u32) -> SideConfig {
        let mut cfg = Config::embedded()
            .map(|c| c.trunk)
            .unwrap_or_else(|e| panic!("embedded config: {e}"));
        cfg.rate_limit = rate;
        cfg.allow = vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))];
        cfg
    }

    #[test]
    fn acl_refuses_unlisted_sources() {
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
            Verdict::Denied(Denied::Reject)
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
        // Responses pass regardless.
        assert_eq!(a.check(ip, b"SIP/2.0 200 OK", t0), Verdict::Admit);
        // 1 s later, 10 more tokens.
        let later = t0 + Duration::from_secs(1);
        let admitted = (0..25)
            .filter(|_| a.check(ip, b"INVITE", later) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 10);
    }
}
