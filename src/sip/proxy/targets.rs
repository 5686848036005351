//! Next-hop target sets with failover order and OPTIONS health state.

use std::net::SocketAddr;

use crate::sip::side::Transport;

/// A next hop: where requests leaving a side are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URI as configured, used in logs and metrics.
    pub uri: String,
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// The configured targets of one side and whether each is in rotation.
#[derive(Debug)]
pub struct TargetSet {
    pub targets: Vec<Target>,
    up: Vec<bool>,
    failures: Vec<u32>,
    down_after: u32,
}

impl TargetSet {
    pub fn new(targets: Vec<Target>, down_after: u32) -> Self {
        let n = targets.len();
        TargetSet {
            targets,
            up: vec![true; n],
            failures: vec![0; n],
            down_after: down_after.max(1),
        }
    }

    /// Failover order for a new request: targets in rotation in configured
    /// order; when none is, every target (a stale health view must never
    /// turn into refused calls).
    pub fn order(&self) -> Vec<usize> {
        let up: Vec<usize> = (0..self.targets.len()).filter(|i| self.up[*i]).collect();
        if up.is_empty() {
            (0..self.targets.len()).collect()
        } else {
            up
        }
    }

    /// Failover order for a request that must leave over TLS (a `sips`
    /// Request-URI, RFC 3261 §26.2.2): the TLS targets in rotation, else
    /// every TLS target; empty when the side has none.
    pub fn secure_order(&self) -> Vec<usize> {
        let tls = |i: &usize| self.targets[*i].transport == Transport::Tls;
        let up: Vec<usize> = (0..self.targets.len())
            .filter(|i| self.up[*i] && tls(i))
            .collect();
        if up.is_empty() {
            (0..self.targets.len()).filter(tls).collect()
        } else {
            up
        }
    }

    pub fn up_count(&self) -> usize {
        self.up.iter().filter(|u| **u).count()
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.up.get(i).copied().unwrap_or(false)
    }

    /// A probe answered: back in rotation. Returns true if the state changed.
    pub fn probe_ok(&mut self, i: usize) -> bool {
        let Some(up) = self.up.get_mut(i) else {
            return false;
        };
        if let Some(f) = self.failures.get_mut(i) {
            *f = 0;
        }
        let changed = !*up;
        *up = true;
        changed
    }

    /// A probe failed: out of rotation after `down_after` failures in a row.
    /// Returns true if the state changed.
    pub fn probe_failed(&mut self, i: usize) -> bool {
        let (Some(up), Some(f)) = (self.up.get_mut(i), self.failures.get_mut(i)) else {
            return false;
        };
        *f = f.saturating_add(1);
        if *up && *f >= self.down_after {
            *up = false;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> TargetSet {
        let t = |p: u16| Target {
            uri: format!("sip:127.0.0.1:{p}"),
            addr: ([127, 0, 0, 1], p).into(),
            transport: Transport::Udp,
        };
        TargetSet::new(vec![t(1), t(2)], 2)
    }

    #[test]
    fn down_after_consecutive_failures_and_back_on_success() {
        let mut s = set();
        assert_eq!(s.order(), vec![0, 1]);
        assert!(!s.probe_failed(0));
        assert!(s.probe_failed(0));
        assert_eq!(s.order(), vec![1]);
        assert!(s.probe_ok(0));
        assert_eq!(s.order(), vec![0, 1]);
    }

    #[test]
    fn a_secure_order_holds_tls_targets_only() {
        let t = |p: u16, transport| Target {
            uri: format!("sip:127.0.0.1:{p}"),
            addr: ([127, 0, 0, 1], p).into(),
            transport,
        };
        let mut s = TargetSet::new(
            vec![
                t(1, Transport::Udp),
                t(2, Transport::Tls),
                t(3, Transport::Tls),
            ],
            1,
        );
        assert_eq!(s.secure_order(), vec![1, 2]);
        s.probe_failed(1);
        assert_eq!(s.secure_order(), vec![2]);
        s.probe_failed(2);
        assert_eq!(
            s.secure_order(),
            vec![1, 2],
            "all TLS targets down: try them all"
        );
        assert!(set().secure_order().is_empty(), "no TLS target at all");
    }

    #[test]
    fn all_down_still_tries_everything() {
        let mut s = set();
        for _ in 0..2 {
            s.probe_failed(0);
            s.probe_failed(1);
        }
        assert_eq!(s.up_count(), 0);
        assert_eq!(s.order(), vec![0, 1]);
    }
}
