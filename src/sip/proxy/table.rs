//! The transaction tables: a hash map split into shards so that it never
//! stops the proxy to grow.
//!
//! A transaction outlives its final response by up to 64×T1 (32 s: Timers
//! D, J, L, M of RFC 3261 §17 and RFC 6026), so at 10,000 calls/s the
//! proxy holds several hundred thousand entries. One `HashMap` of that size
//! doubles by rehashing every entry at once — 40–105 ms on the proxy's
//! thread in the benchmark, long enough for the kernel to drop datagrams
//! and for callers to retransmit. Split into [`SHARDS`] maps chosen by the
//! key's hash, each growth step moves 1/64 of the entries, and the shards
//! reach their thresholds at different moments, so the work is spread over
//! many calls instead of landing on one. Entries are boxed: a server
//! entry (the request with its header index, the forwarding context, the
//! marking) is over a kilobyte, and a growth step should move pointers,
//! not kilobytes.

use ahash::RandomState;
use std::collections::HashMap;

/// A keyed aHash state with random seeds for this process.
pub fn keyed() -> RandomState {
    RandomState::with_seeds(
        fastrand::u64(..),
        fastrand::u64(..),
        fastrand::u64(..),
        fastrand::u64(..),
    )
}

use bytes::Bytes;

/// Number of shards (a power of two).
const SHARDS: usize = 64;

/// A map from transaction key to entry that grows one shard at a time.
pub(super) struct TransactionTable<V> {
    /// Picks the shard; keyed with random seeds per process (aHash, several
    /// times cheaper than SipHash on these short keys and still keyed), so
    /// keys chosen by a peer cannot pile into one shard or bucket.
    hasher: RandomState,
    shards: Box<[HashMap<Bytes, Box<V>, RandomState>]>,
    len: usize,
}

impl<V> TransactionTable<V> {
    pub(super) fn new() -> TransactionTable<V> {
        TransactionTable {
            hasher: keyed(),
            shards: (0..SHARDS).map(|_| HashMap::with_hasher(keyed())).collect(),
            len: 0,
        }
    }

    fn shard(&self, key: &[u8]) -> usize {
        // The top bits: `HashMap` uses the low bits of its own (differently
        // seeded) hash for buckets, so the two choices are independent.
        (self.hasher.hash_one(key) >> (64 - SHARDS.trailing_zeros())) as usize
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, key: &Bytes) -> Option<&V> {
        self.shards[self.shard(key)].get(key).map(|v| &**v)
    }

    pub(super) fn get_mut(&mut self, key: &Bytes) -> Option<&mut V> {
        let i = self.shard(key);
        self.shards[i].get_mut(key).map(|v| &mut **v)
    }

    pub(super) fn contains_key(&self, key: &Bytes) -> bool {
        self.shards[self.shard(key)].contains_key(key)
    }

    /// Inserts or replaces; returns the replaced entry.
    pub(super) fn insert(&mut self, key: Bytes, value: V) -> Option<V> {
        let i = self.shard(&key);
        let old = self.shards[i].insert(key, Box::new(value));
        if old.is_none() {
            self.len += 1;
        }
        old.map(|v| *v)
    }

    pub(super) fn remove(&mut self, key: &Bytes) -> Option<V> {
        let i = self.shard(key);
        let old = self.shards[i].remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old.map(|v| *v)
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for TransactionTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionTable")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Bytes {
        Bytes::from(format!("z9hG4bK-{i}\u{0}INVITE"))
    }

    #[test]
    fn behaves_as_a_map() {
        let mut t = TransactionTable::new();
        assert_eq!(t.len(), 0);
        assert!(t.insert(key(1), 10).is_none());
        assert!(t.insert(key(2), 20).is_none());
        assert_eq!(t.insert(key(1), 11), Some(10), "replaced, not added");
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(&key(1)), Some(&11));
        assert!(t.contains_key(&key(2)));
        assert!(!t.contains_key(&key(3)));
        if let Some(v) = t.get_mut(&key(2)) {
            *v += 1;
        }
        assert_eq!(t.get(&key(2)), Some(&21));
        assert_eq!(t.remove(&key(2)), Some(21));
        assert_eq!(t.remove(&key(2)), None, "already gone");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn many_keys_spread_over_every_shard_and_all_come_back() {
        let mut t = TransactionTable::new();
        let n = 20_000;
        for i in 0..n {
            t.insert(key(i), i);
        }
        assert_eq!(t.len(), n);
        let sizes: Vec<usize> = t.shards.iter().map(HashMap::len).collect();
        let (min, max) = (
            sizes.iter().copied().min().unwrap_or(0),
            sizes.iter().copied().max().unwrap_or(0),
        );
        // 312 per shard on average; a fair hash keeps every shard near it.
        assert!(min > 200 && max < 450, "uneven shards: {min}..{max}");
        for i in 0..n {
            assert_eq!(t.get(&key(i)), Some(&i), "key {i}");
        }
        for i in (0..n).step_by(2) {
            assert_eq!(t.remove(&key(i)), Some(i));
        }
        assert_eq!(t.len(), n / 2);
        assert!(t.get(&key(0)).is_none() && t.get(&key(1)) == Some(&1));
    }
}
