//! The local table of claims — which call first used a PASSporT (RFC 8224
//! §12.1 replay detection) — bounded in entries and bytes and evicted in
//! O(1).
//!
//! Claims live in a map for lookup and in a queue in the order they were
//! made. With one TTL for every claim (the PASSporT freshness window) the
//! queue is also expiry order, so expired claims are pruned from its front
//! and, when the table is full, the oldest claim is the one forgotten. A
//! flood therefore costs a constant amount of work per claim, never a scan
//! of the table (issue 13: the previous eviction scanned all 200,000
//! entries on every insert once full). A claim forgotten before it expired
//! shortens the replay window and is counted
//! (`callgate_state_replay_claims_evicted_total`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bookkeeping charged per claim beside its key and holder (map slot,
/// queue slot, allocation headers), so that the byte bound is honest.
const OVERHEAD: usize = 96;

/// A claim's holder and until when it holds (Unix ms). `seq` tells a
/// queue entry of this claim from one of an earlier claim of the same key.
struct Claim {
    holder: Box<[u8]>,
    until: u64,
    seq: u64,
}

#[derive(Default)]
struct Table {
    map: HashMap<Arc<[u8]>, Claim>,
    /// Every claim made, oldest first: (seq, key).
    queue: VecDeque<(u64, Arc<[u8]>)>,
    bytes: usize,
    next_seq: u64,
}

impl Table {
    fn cost(key: &[u8], holder: &[u8]) -> usize {
        key.len() + holder.len() + OVERHEAD
    }

    /// Drops the oldest queue entry, and its claim when the entry is the
    /// claim's own (not a stale entry of a key claimed again since).
    /// Returns whether a live, unexpired claim was dropped.
    fn pop_oldest(&mut self, now_ms: u64) -> bool {
        let Some((seq, key)) = self.queue.pop_front() else {
            return false;
        };
        let current = self.map.get(&key).is_some_and(|c| c.seq == seq);
        if !current {
            return false;
        }
        match self.map.remove(&key) {
            Some(c) => {
                self.bytes = self.bytes.saturating_sub(Table::cost(&key, &c.holder));
                c.until > now_ms
            }
            None => false,
        }
    }

    /// Prunes expired claims (and stale queue entries) from the front.
    fn prune(&mut self, now_ms: u64) {
        while let Some((seq, key)) = self.queue.front() {
            let live = self
                .map
                .get(key)
                .is_some_and(|c| c.seq == *seq && c.until > now_ms);
            if live {
                break;
            }
            self.pop_oldest(now_ms);
        }
    }
}

/// Replay claims in this process.
pub struct ClaimTable {
    table: Mutex<Table>,
    max_entries: usize,
    max_bytes: usize,
    evicted: Arc<AtomicU64>,
}

impl ClaimTable {
    /// A table holding at most `max_entries` claims and about `max_bytes`.
    pub fn new(max_entries: usize, max_bytes: usize) -> ClaimTable {
        ClaimTable {
            table: Mutex::new(Table::default()),
            max_entries: max_entries.max(1),
            max_bytes,
            evicted: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Unexpired claims forgotten to stay within the bounds (shared with
    /// the metrics).
    pub fn evicted(&self) -> Arc<AtomicU64> {
        self.evicted.clone()
    }

    /// Claims held now (expired ones not yet pruned included).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged for the claims held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `key` for `owner` until `now_ms + ttl` unless another owner
    /// holds it; returns that holder. The holder itself may claim again
    /// (its claim is not extended).
    pub fn claim(&self, key: &[u8], owner: &[u8], ttl: Duration, now_ms: u64) -> Option<Vec<u8>> {
        let mut t = self.lock();
        if let Some(c) = t.map.get(key) {
            if c.until > now_ms {
                return (&*c.holder != owner).then(|| c.holder.to_vec());
            }
        }
        t.prune(now_ms);
        let cost = Table::cost(key, owner);
        while !t.queue.is_empty()
            && (t.queue.len() >= self.max_entries || t.bytes + cost > self.max_bytes)
        {
            if t.pop_oldest(now_ms) {
                self.evicted.fetch_add(1, Relaxed);
            }
        }
        let key: Arc<[u8]> = Arc::from(key);
        let seq = t.next_seq;
        t.next_seq += 1;
        let until = now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        if let Some(old) = t.map.insert(
            key.clone(),
            Claim {
                holder: owner.into(),
                until,
                seq,
            },
        ) {
            t.bytes = t.bytes.saturating_sub(Table::cost(&key, &old.holder));
        }
        t.bytes += cost;
        t.queue.push_back((seq, key));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_claim_is_held_until_it_expires_and_the_holder_may_repeat() {
        let t = ClaimTable::new(10, 1 << 20);
        assert_eq!(t.claim(b"sig", b"call-1", TTL, 1_000), None);
        assert_eq!(t.claim(b"sig", b"call-1", TTL, 2_000), None, "same call");
        assert_eq!(
            t.claim(b"sig", b"call-2", TTL, 3_000),
            Some(b"call-1".to_vec())
        );
        assert_eq!(t.claim(b"sig", b"call-2", TTL, 61_000), None, "expired");
        assert_eq!(
            t.claim(b"sig", b"call-1", TTL, 62_000),
            Some(b"call-2".to_vec())
        );
    }

    #[test]
    fn a_full_table_forgets_the_oldest_claim_and_counts_it() {
        let t = ClaimTable::new(3, 1 << 20);
        for k in [b"a", b"b", b"c", b"d"] {
            assert_eq!(t.claim(k, b"x", TTL, 1_000), None);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.evicted().load(Relaxed), 1);
        // "a" was forgotten, "b".."d" are still held.
        assert_eq!(t.claim(b"a", b"y", TTL, 1_000), None);
        assert_eq!(t.claim(b"d", b"y", TTL, 1_000), Some(b"x".to_vec()));
    }

    #[test]
    fn the_byte_bound_holds_whatever_the_holders_size() {
        let max = 10 * 1024;
        let t = ClaimTable::new(1_000_000, max);
        let holder = vec![b'h'; 900];
        for i in 0u32..1_000 {
            t.claim(&i.to_be_bytes(), &holder, TTL, 1_000);
            assert!(t.bytes() <= max, "{} bytes after {i}", t.bytes());
        }
        assert!(t.len() >= 9, "the table still holds claims: {}", t.len());
    }

    #[test]
    fn expired_claims_are_pruned_and_reclaims_leave_no_stale_entry_behind() {
        let t = ClaimTable::new(4, 1 << 20);
        for i in 0u64..1_000 {
            // Each key is claimed again after the previous claim expired:
            // the stale queue entry of the old claim must not evict the new.
            let now = i * 100;
            t.claim(
                &(i % 3).to_be_bytes(),
                b"x",
                Duration::from_millis(150),
                now,
            );
        }
        assert!(t.len() <= 4);
        assert_eq!(t.evicted().load(Relaxed), 0, "only expired claims went");
        let held = t.lock().queue.len();
        assert!(held <= 4, "queue {held}");
    }
}
