//! The DNS targets in `/metrics`:
//!
//! * `callgate_dns_lookups_total{result}` — lookups of target names, `ok`
//!   or `failed`;
//! * `callgate_dns_target_addresses{side}` — addresses the side's targets
//!   resolve to now (IP literals count one each);
//! * `callgate_dns_stale_targets{side}` — host names served from their
//!   last good answer because the latest lookup failed;
//! * `callgate_dns_unresolved_targets{side}` — host names with no answer
//!   at all (never resolved since start): they receive no calls.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::encoding::DescriptorEncoder;

use super::refresh::SideCounts;
use super::TargetResolver;
use crate::exposition::{counter, gauge, Exposed};
use crate::sip::side::Side;

impl Exposed for TargetResolver {
    fn encode(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let mut f = counter(
            e,
            "callgate_dns_lookups_total",
            "DNS lookups of target host names, by result.",
        )?;
        f.counter(&[("result", "ok")], self.lookups_ok.load(Relaxed))?;
        f.counter(&[("result", "failed")], self.lookups_failed.load(Relaxed))?;
        let counts = [self.counts(Side::Trunk), self.counts(Side::Pbx)];
        let by_side = |pick: fn(&SideCounts) -> usize| counts.each_ref().map(|c| pick(c) as i64);
        for (name, help, values) in [
            (
                "callgate_dns_target_addresses",
                "Addresses the side's targets resolve to now (an IP literal counts one).",
                by_side(|c| c.addresses),
            ),
            (
                "callgate_dns_stale_targets",
                "Target host names served from their last good answer because the latest lookup failed.",
                by_side(|c| c.stale),
            ),
            (
                "callgate_dns_unresolved_targets",
                "Target host names without any answer yet: they receive no requests.",
                by_side(|c| c.unresolved),
            ),
        ] {
            let mut f = gauge(e, name, help)?;
            for side in [Side::Trunk, Side::Pbx] {
                f.gauge(&[("side", side.as_str())], values[side.index()])?;
            }
        }
        Ok(())
    }
}
