//! `callgate_decision_reasons_total{reason}`: how often each reason code of
//! the policy appeared in a decision, so a dashboard shows decisions by
//! reason as well as by level (issue 15). The codes are the operator's
//! (`UPPER_SNAKE_CASE`, unique in a policy file, docs/policy.md); a reload
//! may bring new ones, so the label set is bounded: past
//! [`MAX_REASONS`] distinct codes the rest count under `reason="OTHER"`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::RwLock;

use prometheus_client::encoding::DescriptorEncoder;

use crate::exposition::counter;

/// Distinct reason codes counted under their own label.
pub const MAX_REASONS: usize = 256;

/// The label of the codes past [`MAX_REASONS`].
const OTHER: &str = "OTHER";

#[derive(Default)]
pub struct ReasonCounts {
    counts: RwLock<HashMap<Box<str>, AtomicU64>>,
}

impl ReasonCounts {
    /// Counts one decision's reason codes. A code seen before costs a
    /// shared read lock and a relaxed add.
    pub fn count<'a>(&self, reasons: impl Iterator<Item = &'a str>) {
        for reason in reasons {
            {
                let counts = self.counts.read().unwrap_or_else(|p| p.into_inner());
                if let Some(c) = counts.get(reason) {
                    c.fetch_add(1, Relaxed);
                    continue;
                }
            }
            let mut counts = self.counts.write().unwrap_or_else(|p| p.into_inner());
            let key = if counts.len() < MAX_REASONS || counts.contains_key(reason) {
                reason
            } else {
                OTHER
            };
            counts
                .entry(key.into())
                .or_insert_with(|| AtomicU64::new(0))
                .fetch_add(1, Relaxed);
        }
    }

    /// Writes the family, codes in order.
    pub fn encode(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let counts = self.counts.read().unwrap_or_else(|p| p.into_inner());
        let mut codes: Vec<(&str, u64)> = counts
            .iter()
            .map(|(k, v)| (k.as_ref(), v.load(Relaxed)))
            .collect();
        codes.sort_unstable();
        let mut f = counter(
            e,
            "callgate_decision_reasons_total",
            "Reason codes of the risk decisions on inbound calls (a decision with several counts once under each); codes past the 256th distinct one count as OTHER.",
        )?;
        for (reason, n) in codes {
            f.counter(&[("reason", reason)], n)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_past_the_bound_count_as_other() {
        let r = ReasonCounts::default();
        r.count(["BURST_ANI_1M", "DNO"].into_iter());
        r.count(["DNO"].into_iter());
        let names: Vec<String> = (0..MAX_REASONS).map(|i| format!("R{i}")).collect();
        r.count(names.iter().map(String::as_str));
        let counts = r.counts.read().unwrap_or_else(|p| p.into_inner());
        assert_eq!(counts.len(), MAX_REASONS + 1, "256 codes and OTHER");
        assert_eq!(counts.get("DNO").map(|c| c.load(Relaxed)), Some(2));
        assert_eq!(counts.get(OTHER).map(|c| c.load(Relaxed)), Some(2));
    }
}
