//! The order of a service's SRV records (RFC 2782, "Usage rules"): lowest
//! priority first; within one priority, a weighted random draw — each
//! record's chance of coming next is its weight over the remaining
//! records' total, and records of weight 0 come first in the running sum
//! so they are picked only rarely when others have weight. A record whose
//! target is `.` means the service is not offered there and is dropped.

/// One SRV record, as far as ordering needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, without the trailing dot.
    pub target: String,
}

/// `records` in the order a client tries them (RFC 2782), drawing the
/// weighted choices from `rng`.
pub fn order(mut records: Vec<SrvRecord>, rng: &mut fastrand::Rng) -> Vec<SrvRecord> {
    records.retain(|r| !r.target.is_empty() && r.target != ".");
    // Zero weights first within each priority: the running sum of the
    // draw below then walks them first, as the RFC asks.
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records[0].priority;
        let group = records
            .iter()
            .take_while(|r| r.priority == priority)
            .count();
        let mut rest: Vec<SrvRecord> = records.drain(..group).collect();
        while !rest.is_empty() {
            let total: u32 = rest.iter().map(|r| u32::from(r.weight)).sum();
            let pick = rng.u32(0..=total);
            let mut running = 0u32;
            let i = rest
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(rest.remove(i));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    fn names(v: &[SrvRecord]) -> Vec<&str> {
        v.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn lower_priority_first_and_dot_dropped() {
        let mut rng = fastrand::Rng::with_seed(7);
        let got = order(
            vec![
                rec(20, 0, "c"),
                rec(10, 5, "a"),
                rec(30, 1, "."),
                rec(15, 0, "b"),
            ],
            &mut rng,
        );
        assert_eq!(names(&got), ["a", "b", "c"]);
    }

    #[test]
    fn weights_share_the_first_place_in_proportion() {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut first_heavy = 0;
        let rounds = 4000;
        for _ in 0..rounds {
            let got = order(vec![rec(10, 10, "light"), rec(10, 30, "heavy")], &mut rng);
            assert_eq!(got.len(), 2);
            if got[0].target == "heavy" {
                first_heavy += 1;
            }
        }
        // Expected 3/4 of the draws; the bounds are five standard
        // deviations wide for a fixed seed, so the test never flickers.
        assert!(
            (2850..=3150).contains(&first_heavy),
            "heavy first {first_heavy} of {rounds}"
        );
        // A weight-0 record among weighted ones is drawn first only when
        // the draw is exactly 0.
        let mut zero_first = 0;
        for _ in 0..rounds {
            let got = order(vec![rec(1, 100, "w"), rec(1, 0, "z")], &mut rng);
            if got[0].target == "z" {
                zero_first += 1;
            }
        }
        assert!(zero_first < rounds / 20, "zero weight first {zero_first}");
    }
}
