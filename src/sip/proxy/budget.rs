//! The bytes SIP transactions hold, bounded in total and per source.
//!
//! Defends against memory exhaustion by non-INVITE floods: the INVITE
//! count of overload control does not see OPTIONS, MESSAGE, REGISTER or
//! SUBSCRIBE, yet each holds its request (up to `max_message_bytes`, 64 KiB
//! by default) in its server transaction and the forwarded copy in its
//! client transaction for up to 64×T1 (32 s, RFC 3261 §17.1.2.2 Timer F,
//! §17.2.2 Timer J). One admitted source sending 64 KiB requests at its
//! rate limit would otherwise hold gigabytes. Each server transaction is
//! charged [`charge_for`] its request when created and credited when it
//! ends; a request that would take its source or the whole core over its
//! budget is answered 503 with Retry-After, statelessly (RFC 3261 §21.5.4),
//! and holds nothing.

pub use crate::sip::tally::{Over, SourceTally};

/// Bytes a transaction costs beyond its messages: its entries in the
/// tables, the parsed header index, timers and keys (measured at about
/// 1.6 KiB per forwarded request; rounded up).
pub const ENTRY_OVERHEAD: usize = 2048;

/// What a server transaction for a request of `len` bytes is charged: the
/// request as received, the forwarded copy its client transaction keeps
/// for retransmission, and [`ENTRY_OVERHEAD`].
pub fn charge_for(len: usize) -> usize {
    2 * len + ENTRY_OVERHEAD
}

/// Bytes charged now, in total and by source ([`SourceTally`]: `charge` a
/// transaction's bytes, `release` them when it ends).
pub type ByteBudget = SourceTally;
/// Which budget a charge would exceed: the source's own
/// (`overload.max_transaction_bytes_per_source`) or the core's
/// (`overload.max_transaction_bytes`).
pub type OverBudget = Over;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_source_over_its_budget_is_refused_while_another_is_charged() {
        let mut b = ByteBudget::default();
        assert!(b.charge(ip(1), 600, 1000, 1500).is_ok());
        assert_eq!(b.charge(ip(1), 600, 1000, 1500), Err(OverBudget::Source));
        assert!(b.charge(ip(2), 600, 1000, 1500).is_ok());
        assert_eq!(b.charge(ip(3), 600, 1000, 1500), Err(OverBudget::Total));
        assert_eq!(b.total(), 1200, "refused charges hold nothing");
        b.release(ip(1), 600);
        assert!(b.charge(ip(1), 600, 1000, 1500).is_ok(), "credited back");
    }

    #[test]
    fn released_sources_leave_the_map() {
        let mut b = ByteBudget::default();
        for i in 0..100 {
            b.charge(ip(i), 10, 100, 10_000).expect("within budget");
        }
        for i in 0..100 {
            b.release(ip(i), 10);
        }
        assert_eq!((b.total(), b.sources()), (0, 0));
    }
}
