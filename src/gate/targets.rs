//! The sides' targets at the edge: host names resolved by `crate::dns`
//! (RFC 3263, refreshed by TTL in the background) put into force. Each
//! change of a side's addresses — at start, at a reload, or when an
//! answer changes — reaches every place that knows the side's peers: the
//! proxy core's next hops (`ProxyCore::set_targets`, health and
//! overrides kept for the addresses still there), and the side's ACL,
//! widened by the resolved addresses (the PBX's answers come from them):
//! the admit phase, the kernel filter on the UDP socket and the media
//! relay's strict-source latching.

use std::sync::Arc;

use ipnet::IpNet;

use super::{lock, Gate};
use crate::config::{Config, Side, SideConfig};
use crate::dns::TargetResolver;
use crate::sip::proxy::{SideSettings, Target};

/// The side as configured, and what was last put in force for it.
pub(super) struct SideTargets {
    /// Each side's configuration as last loaded (targets as written).
    configured: [SideConfig; 2],
    /// Each side's ACL in force: `allow` and the resolved addresses.
    acls: [Vec<IpNet>; 2],
}

impl SideTargets {
    /// `cfg`'s sides, with `acls` in force.
    pub(super) fn new(cfg: &Config, acls: [Vec<IpNet>; 2]) -> SideTargets {
        SideTargets {
            configured: [cfg.trunk.clone(), cfg.pbx.clone()],
            acls,
        }
    }
}

/// The specs of both sides' targets, as the resolver takes them.
pub(super) fn specs(cfg: &Config) -> [Vec<crate::dns::TargetSpec>; 2] {
    [cfg.trunk.targets.clone(), cfg.pbx.targets.clone()]
}

/// `cfg` with `targets` (its host names resolved): the core's settings of
/// the side, and the side's configuration with the ACL widened.
pub(super) fn resolved(cfg: &SideConfig, targets: Vec<Target>) -> (SideSettings, SideConfig) {
    let core = cfg.core_with(targets);
    let mut effective = cfg.clone();
    effective.allow = core.allow.clone();
    (core, effective)
}

/// Resolves the host names of `resolver` once, before the gate serves
/// (bounded by `[dns] timeout_ms` per query): calls go to resolved
/// addresses from the first INVITE. A name that does not resolve is
/// logged and retried in the background.
pub(super) async fn resolve_at_start(resolver: &TargetResolver) {
    if resolver.has_names() {
        resolver.resolve_due(&mut fastrand::Rng::new()).await;
    }
}

impl Gate {
    /// Runs the background refresh of the targets' host names: each
    /// change of a side's addresses is put in force
    /// ([`Gate::apply_targets`]).
    pub(super) fn refresh_targets(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.dns.spawn(move |side, targets| {
            if let Some(g) = weak.upgrade() {
                g.apply_targets(side, targets);
            }
        });
    }

    /// Puts `side`'s resolved `targets` in force: the core's next hops and
    /// every copy of the side's ACL.
    pub(super) fn apply_targets(&self, side: Side, targets: Vec<Target>) {
        let (core, effective, acls) = {
            let mut st = lock(&self.side_targets);
            let (core, effective) = resolved(&st.configured[side.index()], targets);
            st.acls[side.index()] = effective.allow.clone();
            (core, effective, st.acls.clone())
        };
        self.put_side_in_force(&effective, acls);
        lock(&self.core).set_targets(side, core.targets, core.allow);
    }

    /// A reload's sides: the new configuration becomes the base the
    /// resolver's answers widen, and its targets are handed to the
    /// resolver (answers kept for names still configured, new names
    /// resolved at once in the background). Returns each side's core
    /// settings with the targets resolved so far.
    pub(super) fn reload_sides(&self, cfg: &Config) -> [SideSettings; 2] {
        self.dns.set_specs(specs(cfg));
        let pairs =
            [Side::Trunk, Side::Pbx].map(|side| resolved(cfg.side(side), self.dns.targets(side)));
        let acls = {
            let mut st = lock(&self.side_targets);
            st.configured = [cfg.trunk.clone(), cfg.pbx.clone()];
            for (i, (_, eff)) in pairs.iter().enumerate() {
                st.acls[i] = eff.allow.clone();
            }
            st.acls.clone()
        };
        for (_, eff) in &pairs {
            self.put_side_in_force(eff, acls.clone());
        }
        pairs.map(|(core, _)| core)
    }

    /// The side's admission (ACL, rate limits), its UDP socket's kernel
    /// filter and the media relay's ACLs, from `effective`.
    fn put_side_in_force(&self, effective: &SideConfig, acls: [Vec<IpNet>; 2]) {
        lock(&self.admission[effective.side.index()]).reload(effective.clone());
        self.guard_udp(effective);
        if let Some(m) = &self.media {
            m.set_acls(acls);
        }
    }
}
