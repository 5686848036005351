//! The embedded state store: velocity windows and replay claims in this
//! process, in bounded memory. It holds no documents: the certificate
//! cache in `stir::cache` is this process's document store already.

use std::time::Duration;

use super::claims::ClaimTable;
use super::window::LocalVelocity;
use super::{StateStore, StoreFuture, WindowEvent};

/// Bounds on remembered replay claims: expired ones are pruned first, then
/// the oldest is forgotten ([`ClaimTable`]). A claim costs at most about
/// 300 bytes (a 32-byte key, a holder of at most 161 bytes, bookkeeping),
/// so the entry bound is reached first in practice.
pub const MAX_CLAIMS: usize = 200_000;
pub const MAX_CLAIM_BYTES: usize = 64 << 20;

/// Local velocity windows and claims.
pub struct MemoryStore {
    windows: LocalVelocity,
    claims: ClaimTable,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            windows: LocalVelocity::default(),
            claims: ClaimTable::new(MAX_CLAIMS, MAX_CLAIM_BYTES),
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MemoryStore {
    /// [`StateStore::count`], synchronously.
    pub fn count_now(&self, events: &[WindowEvent], now_ms: u64) -> Vec<u64> {
        events
            .iter()
            .map(|e| {
                self.windows
                    .hit(&e.key, e.window.as_millis() as u64, now_ms)
            })
            .collect()
    }

    /// [`StateStore::claim`], synchronously.
    pub fn claim_now(&self, key: &[u8], owner: &[u8], ttl: Duration) -> Option<Vec<u8>> {
        self.claim_at(key, owner, ttl, unix_ms())
    }

    fn claim_at(&self, key: &[u8], owner: &[u8], ttl: Duration, now_ms: u64) -> Option<Vec<u8>> {
        self.claims.claim(key, owner, ttl, now_ms)
    }

    /// Unexpired replay claims forgotten to stay within the bounds.
    pub fn claims_evicted(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.claims.evicted()
    }
}

impl StateStore for MemoryStore {
    fn count<'a>(&'a self, events: &'a [WindowEvent], now_ms: u64) -> StoreFuture<'a, Vec<u64>> {
        let counts = self.count_now(events, now_ms);
        Box::pin(async move { Ok(counts) })
    }

    fn claim<'a>(
        &'a self,
        key: &'a [u8],
        owner: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        let holder = self.claim_now(key, owner, ttl);
        Box::pin(async move { Ok(holder) })
    }

    fn get_doc<'a>(&'a self, _url: &'a str) -> StoreFuture<'a, Option<(Vec<u8>, Duration)>> {
        Box::pin(async { Ok(None) })
    }

    fn put_doc<'a>(
        &'a self,
        _url: &'a str,
        _body: &'a [u8],
        _ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn is_available(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_held_until_it_expires_and_the_holder_may_repeat() {
        let m = MemoryStore::default();
        let ttl = Duration::from_secs(60);
        assert_eq!(m.claim_at(b"sig", b"call-1", ttl, 1_000), None);
        assert_eq!(
            m.claim_at(b"sig", b"call-1", ttl, 2_000),
            None,
            "same call again"
        );
        assert_eq!(
            m.claim_at(b"sig", b"call-2", ttl, 3_000),
            Some(b"call-1".to_vec())
        );
        assert_eq!(
            m.claim_at(b"sig", b"call-2", ttl, 61_000),
            None,
            "expired at 61,000: the new call takes it"
        );
        assert_eq!(
            m.claim_at(b"sig", b"call-1", ttl, 62_000),
            Some(b"call-2".to_vec())
        );
    }

    #[test]
    fn counts_every_window_of_an_event() {
        let m = MemoryStore::default();
        let ev = |k: &str, ms| WindowEvent {
            key: k.to_owned(),
            window: Duration::from_millis(ms),
        };
        let events = [ev("ani:1", 1_000), ev("ani_long:1", 10_000)];
        assert_eq!(m.count_now(&events, 10_000), vec![1, 1]);
        assert_eq!(m.count_now(&events, 10_500), vec![2, 2]);
        assert_eq!(m.count_now(&events, 12_000), vec![1, 3]);
    }
}
