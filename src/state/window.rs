//! Event counts over exact sliding windows, per key, in this process and
//! in bounded memory: the embedded state store's velocity counters, the
//! fallback when Redis is unreachable, and what `callgate replay` counts
//! with over a recorded sequence of calls.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Sliding-window event counters kept in this process (bounded).
#[derive(Default)]
pub struct LocalVelocity {
    events: Mutex<HashMap<String, VecDeque<u64>>>,
}

/// Bounds of [`LocalVelocity`]: keys, and events remembered per key (a
/// count saturates there, well above any sensible rule threshold).
const MAX_KEYS: usize = 200_000;
const MAX_EVENTS_PER_KEY: usize = 10_000;

impl LocalVelocity {
    /// Records an event for `key` at `now_ms`; returns the events within
    /// the last `window_ms`, this one included.
    pub fn hit(&self, key: &str, window_ms: u64, now_ms: u64) -> u64 {
        let mut map = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now_ms.saturating_sub(*t) < window_ms)
            });
            if map.len() >= MAX_KEYS {
                // Still full of live keys: forget the quietest.
                if let Some(k) = map
                    .iter()
                    .min_by_key(|(_, q)| q.back().copied().unwrap_or(0))
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&k);
                }
            }
        }
        let q = map.entry(key.to_owned()).or_default();
        while q
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= window_ms)
        {
            q.pop_front();
        }
        if q.len() >= MAX_EVENTS_PER_KEY {
            q.pop_front();
        }
        q.push_back(now_ms);
        q.len() as u64
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
}
