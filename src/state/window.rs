//! Event counts over exact sliding windows, per key, in this process and
//! in bounded memory: the embedded state store's velocity counters, the
//! fallback when Redis is unreachable, and what `callgate replay` counts
//! with over a recorded sequence of calls.
//!
//! Keys come from the calls (the calling number, the carrier), so a flood
//! of calls with fresh numbers is a flood of new keys. The table is bounded
//! in bytes ([`MAX_BYTES`]: keys, remembered events and per-key overhead)
//! and in keys ([`MAX_KEYS`]); past either, the key hit least recently is
//! forgotten. Finding it costs O(1) amortised: every hit appends the key
//! to a time-ordered queue with a generation number, and eviction pops the
//! queue's front, skipping entries that a later hit superseded. The queue
//! is rebuilt from the table (O(keys)) once it holds twice as many entries
//! as keys, which happens at most once per that many hits. A full scan
//! per new key (as before) let a flood of new numbers turn each call into
//! a walk over 200,000 entries under the lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Sliding-window event counters kept in this process (bounded).
#[derive(Default)]
pub struct LocalVelocity {
    table: Mutex<Table>,
}

/// Most keys remembered.
pub const MAX_KEYS: usize = 200_000;
/// Events remembered per key: a count saturates here, well above any
/// sensible rule threshold.
pub const MAX_EVENTS_PER_KEY: usize = 10_000;
/// Most bytes the table holds (keys, events at 8 bytes, [`KEY_OVERHEAD`]
/// per key): 64 MiB.
pub const MAX_BYTES: usize = 64 << 20;
/// Bytes a key costs besides its text and events: its map entry, its
/// event queue's header, its places in the eviction queue.
pub const KEY_OVERHEAD: usize = 128;

#[derive(Default)]
struct Table {
    slots: HashMap<Arc<str>, Slot>,
    /// Keys in the order they were hit, with the generation of that hit;
    /// an entry is current when its generation is the slot's.
    order: VecDeque<(u64, Arc<str>)>,
    next_gen: u64,
    bytes: usize,
    evicted: u64,
    /// The longest window any hit has asked for: a key with no event
    /// within it counts 0 under every window, and is forgotten.
    horizon_ms: u64,
}

struct Slot {
    events: VecDeque<u64>,
    generation: u64,
}

fn cost(key: &str, events: usize) -> usize {
    key.len() + KEY_OVERHEAD + 8 * events
}

impl Table {
    /// Forgets the key hit least recently; false when none is left.
    fn evict_oldest(&mut self) -> bool {
        while let Some((generation, key)) = self.order.pop_front() {
            let current = self
                .slots
                .get(&key)
                .is_some_and(|s| s.generation == generation);
            if current {
                if let Some(slot) = self.slots.remove(&key) {
                    self.bytes = self.bytes.saturating_sub(cost(&key, slot.events.len()));
                    self.evicted += 1;
                }
                return true;
            }
        }
        false
    }

    /// Forgets the keys whose every event has left the longest window
    /// counted so far ([`Table::horizon_ms`]): they would count 0 again.
    /// Walks the queue from its front (the key hit least recently), so a
    /// hit costs O(1) amortised. Without it a steady stream of calls from
    /// ever new numbers — each call from another number, as in a soak or
    /// a flood — kept every number until the key or byte cap, long after
    /// its window: the table then sat at its caps for good.
    fn expire(&mut self, now_ms: u64) {
        while let Some((generation, key)) = self.order.front() {
            let last_hit = match self.slots.get(key) {
                Some(slot) if slot.generation == *generation => slot.events.back().copied(),
                // A superseded entry: the key's current one is further on.
                _ => {
                    self.order.pop_front();
                    continue;
                }
            };
            if last_hit.is_some_and(|at| now_ms.saturating_sub(at) < self.horizon_ms) {
                return;
            }
            let key = key.clone();
            self.order.pop_front();
            if let Some(slot) = self.slots.remove(&key) {
                self.bytes = self.bytes.saturating_sub(cost(&key, slot.events.len()));
            }
        }
    }

    /// Rebuilds the eviction queue from the table when stale entries make
    /// up more than half of it (amortised O(1) per hit).
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.slots.len() + 64 {
            return;
        }
        let mut live: Vec<(u64, Arc<str>)> = self
            .slots
            .iter()
            .map(|(k, s)| (s.generation, k.clone()))
            .collect();
        live.sort_unstable_by_key(|(g, _)| *g);
        self.order = live.into();
    }
}

impl LocalVelocity {
    /// Records an event for `key` at `now_ms`; returns the events within
    /// the last `window_ms`, this one included.
    pub fn hit(&self, key: &str, window_ms: u64, now_ms: u64) -> u64 {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let t = &mut *t;
        if !t.slots.contains_key(key) {
            while t.slots.len() >= MAX_KEYS || t.bytes + cost(key, 1) > MAX_BYTES {
                if !t.evict_oldest() {
                    break;
                }
            }
            t.slots.insert(
                Arc::from(key),
                Slot {
                    events: VecDeque::new(),
                    generation: 0,
                },
            );
            t.bytes += cost(key, 0);
        }
        t.horizon_ms = t.horizon_ms.max(window_ms);
        t.next_gen += 1;
        let generation = t.next_gen;
        let Some(name) = t.slots.get_key_value(key).map(|(k, _)| k.clone()) else {
            return 0;
        };
        let Some(slot) = t.slots.get_mut(key) else {
            return 0;
        };
        let before = slot.events.len();
        while slot
            .events
            .front()
            .is_some_and(|at| now_ms.saturating_sub(*at) >= window_ms)
        {
            slot.events.pop_front();
        }
        if slot.events.len() >= MAX_EVENTS_PER_KEY {
            slot.events.pop_front();
        }
        slot.events.push_back(now_ms);
        slot.generation = generation;
        let after = slot.events.len();
        t.bytes = t.bytes + 8 * after - 8 * before;
        t.order.push_back((generation, name));
        t.expire(now_ms);
        t.compact();
        after as u64
    }

    /// (keys, bytes, keys forgotten so far) — for tests and metrics.
    pub fn usage(&self) -> (usize, usize, u64) {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        (t.slots.len(), t.bytes, t.evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_edges() {
        let v = LocalVelocity::default();
        assert_eq!(v.hit("a", 1000, 10_000), 1);
        assert_eq!(v.hit("a", 1000, 10_500), 2);
        assert_eq!(v.hit("a", 1000, 10_999), 3);
        assert_eq!(
            v.hit("a", 1000, 11_000),
            3,
            "the event at 10,000 left the window"
        );
        assert_eq!(v.hit("b", 1000, 11_000), 1);
        assert_eq!(v.hit("a", 1000, 13_000), 1);
    }

    /// A flood of calls from ever new numbers keeps the table within its
    /// key and byte bounds, forgetting the numbers hit least recently; a
    /// number hit meanwhile keeps its count. (Eviction is O(1) amortised:
    /// the test would take minutes with a scan per new key.)
    #[test]
    fn a_flood_of_new_keys_stays_bounded_and_forgets_the_least_recent() {
        let v = LocalVelocity::default();
        let hour = 3_600_000;
        for i in 0..MAX_KEYS + 50_000 {
            v.hit(&format!("ani:{i}"), hour, 1_000 + i as u64);
            if i % 1000 == 0 {
                v.hit("ani:regular", hour, 1_000 + i as u64);
            }
        }
        let (keys, bytes, evicted) = v.usage();
        assert_eq!(keys, MAX_KEYS, "bounded in keys");
        assert!(bytes <= MAX_BYTES, "bounded in bytes: {bytes}");
        assert!(evicted >= 50_000, "{evicted} forgotten");
        assert_eq!(
            v.hit("ani:regular", hour, 1_000 + (MAX_KEYS + 50_000) as u64),
            251,
            "a key hit all along is kept with its count"
        );
        assert_eq!(
            v.hit("ani:0", hour, 1_000 + (MAX_KEYS + 50_000) as u64),
            1,
            "the first numbers were forgotten"
        );
        let t = v.table.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            t.order.len() <= 2 * t.slots.len() + 64,
            "the eviction queue stays compact: {}",
            t.order.len()
        );
    }

    /// Every call from a new number, at 100 calls/s for 20 minutes of
    /// simulated time, under a 60 s and a 600 s window: the table holds
    /// the numbers of the last 600 s, not every number since the start
    /// (before, it grew to its key cap and stayed there).
    #[test]
    fn keys_whose_events_all_left_the_longest_window_are_forgotten() {
        let v = LocalVelocity::default();
        let (short, long) = (60_000, 600_000);
        for i in 0..120_000u64 {
            let now = 1_000 + i * 10;
            v.hit(&format!("origid:{i}"), short, now);
            v.hit(&format!("ani:{i}"), long, now);
        }
        let (keys, _, evicted) = v.usage();
        assert!(
            keys <= 2 * 60_001,
            "{keys} keys: only the last 600 s of numbers are kept"
        );
        assert!(
            keys >= 60_000,
            "{keys} keys: the ani window is still in use"
        );
        assert_eq!(evicted, 0, "expired keys are not counted as evictions");
        // A number hit within the window keeps its count.
        let now = 1_000 + 120_000 * 10;
        assert_eq!(v.hit("ani:119999", long, now), 2);
        assert_eq!(v.hit("ani:0", long, now), 1, "forgotten, counts afresh");
    }

    #[test]
    fn long_keys_are_bounded_by_bytes_before_keys() {
        let v = LocalVelocity::default();
        let long = "x".repeat(8000);
        for i in 0..20_000 {
            v.hit(&format!("{long}{i}"), 60_000, i as u64);
        }
        let (keys, bytes, evicted) = v.usage();
        assert!(bytes <= MAX_BYTES, "{bytes}");
        assert!(
            keys < 20_000 && evicted > 0,
            "{keys} keys, {evicted} evicted"
        );
    }
}
