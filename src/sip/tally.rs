//! A count held per source address, bounded per source and in total: the
//! one mechanism behind the limits that one peer must not be able to take
//! from all the others (connections per listener, transaction bytes).
//!
//! Only sources holding something have an entry, so the map is bounded by
//! what is held; it hashes with the process's keyed hasher (a peer chooses
//! its address, not the bucket).

use std::collections::HashMap;
use std::net::IpAddr;

/// Which bound an addition would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The source's own bound.
    Source,
    /// The bound on all sources together.
    Total,
}

/// See the module documentation.
#[derive(Debug)]
pub struct SourceTally {
    total: usize,
    by_source: HashMap<IpAddr, usize, ahash::RandomState>,
}

impl Default for SourceTally {
    fn default() -> Self {
        SourceTally {
            total: 0,
            by_source: HashMap::with_hasher(crate::sip::proxy::keyed_hasher()),
        }
    }
}

impl SourceTally {
    /// Adds `n` to `source` unless that takes it over `per_source` or all
    /// sources over `total_cap`; nothing changes when it would.
    pub fn charge(
        &mut self,
        source: IpAddr,
        n: usize,
        per_source: usize,
        total_cap: usize,
    ) -> Result<(), Over> {
        if self.total.saturating_add(n) > total_cap {
            return Err(Over::Total);
        }
        let held = self.by_source.entry(source).or_insert(0);
        if held.saturating_add(n) > per_source {
            if *held == 0 {
                self.by_source.remove(&source);
            }
            return Err(Over::Source);
        }
        *held += n;
        self.total += n;
        Ok(())
    }

    /// Gives back `n` added by [`charge`](Self::charge) for `source`.
    pub fn release(&mut self, source: IpAddr, n: usize) {
        self.total = self.total.saturating_sub(n);
        if let Some(held) = self.by_source.get_mut(&source) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                self.by_source.remove(&source);
            }
        }
    }

    /// Held now, all sources together.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Sources holding something now.
    pub fn sources(&self) -> usize {
        self.by_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_addition_leaves_no_entry_and_no_charge() {
        let mut t = SourceTally::default();
        let a = IpAddr::from([10, 0, 0, 1]);
        assert_eq!(t.charge(a, 5, 4, 100), Err(Over::Source));
        assert_eq!((t.total(), t.sources()), (0, 0));
        assert_eq!(t.charge(a, 4, 4, 100), Ok(()));
        assert_eq!(
            t.charge(IpAddr::from([10, 0, 0, 2]), 97, 200, 100),
            Err(Over::Total)
        );
        t.release(a, 4);
        assert_eq!((t.total(), t.sources()), (0, 0));
    }
}
