//! Next-hop target sets with failover order, OPTIONS health state and
//! the operator's override (a target taken out of rotation by hand, e.g.
//! for maintenance of one PBX node, stays out whatever its probes say
//! until the operator puts it back).

use std::net::SocketAddr;
use std::time::Instant;

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
    /// When each target's last probe ended, and whether it answered.
    last_probe: Vec<Option<(Instant, bool)>>,
    /// Taken out of rotation by the operator ([`TargetSet::set_disabled`]).
    disabled: Vec<bool>,
    down_after: u32,
}

/// One target's state, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    pub target: Target,
    /// Answering its OPTIONS probes (or not probed yet).
    pub up: bool,
    /// Probes failed in a row.
    pub failures: u32,
    /// When its last probe ended, and whether it answered.
    pub last_probe: Option<(Instant, bool)>,
    /// Taken out of rotation by the operator.
    pub disabled: bool,
}

/// Why the operator's override of a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    #[error("no target {0:?} on this side (give its URI or its address)")]
    Unknown(String),
    #[error(
        "{0} is the last target of this side the operator left in rotation: enable another first"
    )]
    LastInRotation(String),
}

impl TargetSet {
    pub fn new(targets: Vec<Target>, down_after: u32) -> Self {
        let n = targets.len();
        TargetSet {
            targets,
            up: vec![true; n],
            failures: vec![0; n],
            last_probe: vec![None; n],
            disabled: vec![false; n],
            down_after: down_after.max(1),
        }
    }

    /// A new set for `targets` (a reload, or a host name resolved to new
    /// addresses) that keeps the state of the targets it still has: their
    /// health (a target out of rotation stays out until its probes
    /// answer) and the operator's override (a reload must not put a node
    /// back into rotation that the operator took out). A new address of a
    /// name the operator took out entirely is out too.
    pub fn reconfigured(&self, targets: Vec<Target>, down_after: u32) -> Self {
        let mut next = TargetSet::new(targets, down_after);
        for (i, t) in next.targets.iter().enumerate() {
            if let Some(j) = self.targets.iter().position(|o| o == t) {
                next.disabled[i] = self.disabled[j];
                next.up[i] = self.up[j];
                next.failures[i] = self.failures[j];
                next.last_probe[i] = self.last_probe[j];
            } else {
                let mut same_name =
                    (0..self.targets.len()).filter(|j| self.targets[*j].uri == t.uri);
                next.disabled[i] =
                    same_name.clone().next().is_some() && same_name.all(|j| self.disabled[j]);
            }
        }
        if next.disabled.iter().all(|d| *d) {
            // Every target left is one the operator disabled: calls must
            // still go somewhere.
            next.disabled.fill(false);
        }
        next
    }

    /// Failover order for a new request: targets in rotation (not taken
    /// out by the operator, answering probes) in configured order; when
    /// none answers, every target the operator left in (a stale health
    /// view must never turn into refused calls).
    pub fn order(&self) -> Vec<usize> {
        self.order_of(|_| true)
    }

    /// Failover order for a request that must leave over TLS (a `sips`
    /// Request-URI, RFC 3261 §26.2.2): the TLS targets in rotation, else
    /// every enabled TLS target; empty when the side has none.
    pub fn secure_order(&self) -> Vec<usize> {
        self.order_of(|t| t.transport == Transport::Tls)
    }

    /// The targets `eligible` admits: those in rotation, else those the
    /// operator left in, else all of them.
    fn order_of(&self, eligible: impl Fn(&Target) -> bool) -> Vec<usize> {
        let all = (0..self.targets.len()).filter(|i| eligible(&self.targets[*i]));
        let enabled: Vec<usize> = all.clone().filter(|i| !self.disabled[*i]).collect();
        let up: Vec<usize> = enabled.iter().copied().filter(|i| self.up[*i]).collect();
        match (up.is_empty(), enabled.is_empty()) {
            (false, _) => up,
            (true, false) => enabled,
            (true, true) => all.collect(),
        }
    }

    /// Targets in rotation: answering probes and not taken out by the
    /// operator.
    pub fn up_count(&self) -> usize {
        (0..self.targets.len())
            .filter(|i| self.up[*i] && !self.disabled[*i])
            .count()
    }

    /// Every target's state, in configured order.
    pub fn statuses(&self) -> Vec<TargetStatus> {
        (0..self.targets.len())
            .map(|i| TargetStatus {
                target: self.targets[i].clone(),
                up: self.up[i],
                failures: self.failures[i],
                last_probe: self.last_probe[i],
                disabled: self.disabled[i],
            })
            .collect()
    }

    /// The indices of the targets named by their configured URI (every
    /// address a host name resolved to) or by one address (`ip:port`).
    pub fn find(&self, name: &str) -> Vec<usize> {
        (0..self.targets.len())
            .filter(|i| {
                let t = &self.targets[*i];
                t.uri == name || t.addr.to_string() == name
            })
            .collect()
    }

    /// The index of the target reached at `addr` over `transport`.
    pub fn position(&self, addr: SocketAddr, transport: Transport) -> Option<usize> {
        self.targets
            .iter()
            .position(|t| t.addr == addr && t.transport == transport)
    }

    /// The operator takes the target `name` out of rotation (`disabled`)
    /// or puts it back; probes go on but do not undo it. A host name's URI
    /// names all its addresses, `ip:port` one of them. Refused when no
    /// target of the side would be left enabled: the operator would
    /// otherwise turn every call away. Returns whether the state changed.
    pub fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<bool, OverrideError> {
        let found = self.find(name);
        let Some(first) = found.first() else {
            return Err(OverrideError::Unknown(name.to_owned()));
        };
        if disabled {
            let others = (0..self.targets.len()).any(|j| !found.contains(&j) && !self.disabled[j]);
            if !others && found.iter().any(|i| !self.disabled[*i]) {
                return Err(OverrideError::LastInRotation(
                    self.targets[*first].uri.clone(),
                ));
            }
        }
        let changed = found.iter().any(|i| self.disabled[*i] != disabled);
        for i in found {
            self.disabled[i] = disabled;
        }
        Ok(changed)
    }

    /// Where attempt `n` of `order` goes: its address and transport,
    /// fixed when the request arrived (a later change of the set does not
    /// move a request's failover under it).
    pub fn hops(&self, order: &[usize]) -> Vec<(SocketAddr, Transport)> {
        order
            .iter()
            .filter_map(|i| self.targets.get(*i))
            .map(|t| (t.addr, t.transport))
            .collect()
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.up.get(i).copied().unwrap_or(false)
    }

    /// A probe answered at `now`: back in rotation. Returns true if the
    /// state changed.
    pub fn probe_ok(&mut self, i: usize, now: Instant) -> bool {
        let Some(up) = self.up.get_mut(i) else {
            return false;
        };
        if let Some(p) = self.last_probe.get_mut(i) {
            *p = Some((now, true));
        }
        if let Some(f) = self.failures.get_mut(i) {
            *f = 0;
        }
        let changed = !*up;
        *up = true;
        changed
    }

    /// A probe failed at `now`: out of rotation after `down_after`
    /// failures in a row. Returns true if the state changed.
    pub fn probe_failed(&mut self, i: usize, now: Instant) -> bool {
        if let Some(p) = self.last_probe.get_mut(i) {
            *p = Some((now, false));
        }
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

    fn now() -> Instant {
        Instant::now()
    }

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
        assert!(!s.probe_failed(0, now()));
        assert!(s.probe_failed(0, now()));
        assert_eq!(s.order(), vec![1]);
        assert!(s.probe_ok(0, now()));
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
        s.probe_failed(1, now());
        assert_eq!(s.secure_order(), vec![2]);
        s.probe_failed(2, now());
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
            s.probe_failed(0, now());
            s.probe_failed(1, now());
        }
        assert_eq!(s.up_count(), 0);
        assert_eq!(s.order(), vec![0, 1]);
    }

    #[test]
    fn an_operator_override_outlasts_probes_and_reloads() {
        let mut s = set();
        assert_eq!(s.set_disabled("127.0.0.1:1", true), Ok(true));
        assert_eq!(s.order(), vec![1]);
        assert_eq!(s.up_count(), 1);
        assert!(!s.probe_ok(0, now()), "a probe does not undo it");
        assert_eq!(s.order(), vec![1]);
        s.probe_failed(1, now());
        s.probe_failed(1, now());
        assert_eq!(
            s.order(),
            vec![1],
            "the only enabled target down: still not the disabled one"
        );
        assert_eq!(
            s.set_disabled("sip:127.0.0.1:2", true),
            Err(OverrideError::LastInRotation("sip:127.0.0.1:2".into()))
        );
        assert!(matches!(
            s.set_disabled("sip:10.0.0.1", true),
            Err(OverrideError::Unknown(_))
        ));
        let reloaded = s.reconfigured(s.targets.clone(), 2);
        assert!(reloaded.statuses()[0].disabled, "kept across a reload");
        assert_eq!(s.set_disabled("sip:127.0.0.1:1", false), Ok(true));
        assert_eq!(s.order(), vec![0], "back, and the only one up");
        let st = &s.statuses()[1];
        assert_eq!((st.up, st.failures, st.disabled), (false, 2, false));
        assert_eq!(st.last_probe.map(|p| p.1), Some(false));
    }

    #[test]
    fn a_host_name_is_all_its_addresses_and_its_state_outlives_a_new_answer() {
        let named = |p: u16| Target {
            uri: "sip:pbx.example.com".into(),
            addr: ([192, 0, 2, 1], p).into(),
            transport: Transport::Udp,
        };
        let other = Target {
            uri: "sip:192.0.2.9".into(),
            addr: ([192, 0, 2, 9], 5060).into(),
            transport: Transport::Udp,
        };
        let mut s = TargetSet::new(vec![named(1), named(2), other.clone()], 1);
        assert_eq!(s.find("sip:pbx.example.com"), vec![0, 1]);
        assert_eq!(s.find("192.0.2.1:2"), vec![1]);
        s.probe_failed(1, now());
        assert_eq!(s.order(), vec![0, 2]);
        // The name resolves anew: address 1 gone, 2 kept (still down), 3 new.
        let next = s.reconfigured(vec![named(2), named(3), other.clone()], 1);
        assert_eq!(next.order(), vec![1, 2], "2 stays down, 3 comes in");
        assert_eq!(next.statuses()[0].failures, 1);
        // The operator takes the whole name out: every address, and one
        // the next answer brings.
        assert_eq!(s.set_disabled("sip:pbx.example.com", true), Ok(true));
        assert_eq!(s.order(), vec![2]);
        let next = s.reconfigured(vec![named(4), other.clone()], 1);
        assert!(
            next.statuses()[0].disabled,
            "a new address of a name taken out"
        );
        assert_eq!(
            s.set_disabled("sip:192.0.2.9", true),
            Err(OverrideError::LastInRotation("sip:192.0.2.9".into()))
        );
        assert_eq!(s.set_disabled("192.0.2.1:1", false), Ok(true));
        assert_eq!(s.order(), vec![0, 2]);
        assert_eq!(
            s.hops(&[2, 0]),
            vec![
                (other.addr, Transport::Udp),
                (named(1).addr, Transport::Udp)
            ]
        );
    }
}
