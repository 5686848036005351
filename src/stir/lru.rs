//! A map bounded in entries and in bytes (each entry's weight, as its
//! owner counts it) that forgets the least recently used entry first, in
//! O(1) per operation (amortised: one insertion may evict several): a hash map to slots of a doubly linked
//! list kept in a vector (no unsafe, no per-entry allocation beyond the
//! key). The certificate and CRL caches use it so that a flood of new
//! URLs pushes out only the coldest documents — never the hot chains and
//! CRLs of the carriers that call all day (issue 13: the cache used to drop
//! every entry when full, and revoked certificates then passed while their
//! CRL could not be fetched again).

use std::collections::HashMap;

const NONE: usize = usize::MAX;

struct Node<V> {
    key: String,
    value: V,
    weight: usize,
    /// Towards the most recently used end.
    newer: usize,
    /// Towards the least recently used end.
    older: usize,
}

/// An LRU map from URL to `V` holding at most `capacity` entries and
/// `max_weight` in all (an entry heavier than that alone is still held).
pub struct Lru<V> {
    map: HashMap<String, usize>,
    nodes: Vec<Option<Node<V>>>,
    free: Vec<usize>,
    /// Most and least recently used.
    newest: usize,
    oldest: usize,
    capacity: usize,
    weight: usize,
    max_weight: usize,
}

impl<V> Lru<V> {
    pub fn new(capacity: usize, max_weight: usize) -> Lru<V> {
        Lru {
            map: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NONE,
            oldest: NONE,
            capacity: capacity.max(1),
            weight: 0,
            max_weight,
        }
    }

    /// The weight of the entries held.
    pub fn weight(&self) -> usize {
        self.weight
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn node(&self, i: usize) -> Option<&Node<V>> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, i: usize) -> Option<&mut Node<V>> {
        self.nodes.get_mut(i).and_then(Option::as_mut)
    }

    fn unlink(&mut self, i: usize) {
        let Some((newer, older)) = self.node(i).map(|n| (n.newer, n.older)) else {
            return;
        };
        match self.node_mut(newer) {
            Some(n) => n.older = older,
            None => self.newest = older,
        }
        match self.node_mut(older) {
            Some(n) => n.newer = newer,
            None => self.oldest = newer,
        }
    }

    fn push_newest(&mut self, i: usize) {
        let old_newest = self.newest;
        if let Some(n) = self.node_mut(i) {
            n.newer = NONE;
            n.older = old_newest;
        }
        match self.node_mut(old_newest) {
            Some(n) => n.newer = i,
            None => self.oldest = i,
        }
        self.newest = i;
    }

    /// The entry for `key`, marked most recently used.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let i = *self.map.get(key)?;
        self.unlink(i);
        self.push_newest(i);
        self.node_mut(i).map(|n| &mut n.value)
    }

    /// The entry for `key`, its recency unchanged.
    pub fn peek(&self, key: &str) -> Option<&V> {
        self.map
            .get(key)
            .and_then(|i| self.node(*i))
            .map(|n| &n.value)
    }

    /// Inserts or replaces `key`'s entry, of `weight`, as the most
    /// recently used; returns how many other entries were forgotten to
    /// make room.
    pub fn insert(&mut self, key: String, value: V, weight: usize) -> usize {
        self.remove(&key);
        let mut evicted = 0;
        while !self.map.is_empty()
            && (self.map.len() >= self.capacity
                || self.weight.saturating_add(weight) > self.max_weight)
        {
            let oldest = self.oldest;
            if self.remove_at(oldest).is_none() {
                break;
            }
            evicted += 1;
        }
        self.weight = self.weight.saturating_add(weight);
        let node = Node {
            key: key.clone(),
            value,
            weight,
            newer: NONE,
            older: NONE,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        self.map.insert(key, i);
        self.push_newest(i);
        evicted
    }

    fn remove_at(&mut self, i: usize) -> Option<V> {
        self.unlink(i);
        let node = self.nodes.get_mut(i)?.take()?;
        self.map.remove(&node.key);
        self.weight = self.weight.saturating_sub(node.weight);
        self.free.push(i);
        Some(node.value)
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = *self.map.get(key)?;
        self.remove_at(i)
    }

    /// Every entry, most recently used first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        let mut at = self.newest;
        std::iter::from_fn(move || {
            let n = self.node(at)?;
            at = n.older;
            Some((n.key.as_str(), &n.value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let mut l = Lru::new(3, usize::MAX);
        for k in ["a", "b", "c"] {
            assert_eq!(l.insert(k.to_owned(), k.len(), 1), 0);
        }
        assert!(l.get_mut("a").is_some(), "a is used again");
        assert_eq!(l.insert("d".to_owned(), 1, 1), 1, "b goes");
        assert!(l.peek("b").is_none());
        let keys: Vec<&str> = l.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["d", "a", "c"]);
        assert_eq!(l.insert("e".to_owned(), 1, 1), 1, "c goes");
        assert_eq!(l.insert("a".to_owned(), 7, 1), 0, "a replaced");
        assert_eq!(l.peek("a"), Some(&7));
        assert_eq!(l.remove("d"), Some(1));
        assert_eq!((l.len(), l.weight()), (2, 2));
        let keys: Vec<&str> = l.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "e"]);
    }

    #[test]
    fn a_hot_entry_survives_a_flood_and_slots_are_reused() {
        let mut l = Lru::new(100, usize::MAX);
        l.insert("hot".to_owned(), 0, 1);
        for i in 0..100_000 {
            l.insert(format!("cold-{i}"), i, 1);
            if i % 50 == 0 {
                assert!(l.get_mut("hot").is_some(), "hot kept at {i}");
            }
        }
        assert_eq!(l.len(), 100);
        assert!(l.nodes.len() <= 101, "slots reused: {}", l.nodes.len());
    }

    #[test]
    fn the_weight_bound_holds_and_evicts_as_many_as_needed() {
        let mut l = Lru::new(1_000, 100);
        for i in 0..10 {
            assert_eq!(l.insert(format!("small-{i}"), i, 10), 0);
        }
        assert_eq!(l.weight(), 100);
        // 45 more: the five oldest go.
        assert_eq!(l.insert("big".to_owned(), 99, 45), 5);
        assert!(l.weight() <= 100);
        assert!(l.peek("small-4").is_none() && l.peek("small-5").is_some());
        // Heavier than the bound alone: everything else goes, it stays.
        l.insert("huge".to_owned(), 0, 500);
        assert_eq!((l.len(), l.weight()), (1, 500));
    }
}
