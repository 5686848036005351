//! The proxy core's timers: a hashed timing wheel in front of an exact
//! queue, so that holding hundreds of thousands of timers never stops the
//! proxy.
//!
//! Every transaction keeps timers for up to 64×T1 (32 s) after its final
//! response, and Timer C runs 3 minutes (RFC 3261 §16.6 step 11), so at
//! 10,000 calls/s several million deadlines are pending. Kept in one binary
//! heap they live in one `Vec`, and each time it doubles the whole of it is
//! copied — tens of milliseconds on the proxy's thread. Here a deadline
//! waits in the slot of its 4 ms tick (one small `Vec` each, reused after
//! its turn, so a steady load allocates nothing), and only when its tick
//! comes up does it move into `near`, a small heap that hands deadlines
//! out in exact order. Deadlines beyond the wheel's span (4.4 minutes)
//! wait in `far` and move into the wheel as it turns.

use std::cell::Cell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Width of one slot.
const TICK: Duration = Duration::from_millis(4);
/// Number of slots (a power of two): 65,536 × 4 ms ≈ 262 s, more than
/// Timer C's default 180 s.
const SLOTS: usize = 1 << 16;
const WORDS: usize = SLOTS / 64;

struct Entry<T> {
    at: Instant,
    seq: u64,
    what: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Deadlines with a payload, handed out in (deadline, insertion) order.
pub(super) struct TimerWheel<T> {
    origin: Instant,
    /// The next tick whose slot has not been moved into `near`. Slot
    /// `t % SLOTS` holds exactly the deadlines of tick `t`, for `t` in
    /// `cursor .. cursor + SLOTS`.
    cursor: u64,
    slots: Box<[Vec<Entry<T>>]>,
    /// One bit per non-empty slot.
    occupied: Box<[u64]>,
    /// Deadlines of ticks before `cursor`, in exact order.
    near: BinaryHeap<Reverse<Entry<T>>>,
    /// Deadlines of ticks at or after `cursor + SLOTS`.
    far: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
    /// The earliest deadline, while known (`None` = to be computed).
    earliest: Cell<Option<Option<Instant>>>,
}

impl<T> TimerWheel<T> {
    pub(super) fn new(origin: Instant) -> TimerWheel<T> {
        TimerWheel {
            origin,
            cursor: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: vec![0; WORDS].into_boxed_slice(),
            near: BinaryHeap::new(),
            far: BinaryHeap::new(),
            seq: 0,
            earliest: Cell::new(Some(None)),
        }
    }

    /// Pending deadlines (counted, for tests: nothing on the hot path
    /// keeps a count).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.near.len() + self.far.len() + self.slots.iter().map(Vec::len).sum::<usize>()
    }

    /// The tick a deadline belongs to: the first tick boundary at or after
    /// it, so a slot is loaded no earlier than its deadlines need.
    fn tick_of(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        d.as_nanos().div_ceil(TICK.as_nanos()) as u64
    }

    pub(super) fn push(&mut self, at: Instant, what: T) {
        self.seq += 1;
        // A known earliest deadline stays known: the new one or the old.
        if let Some(known) = self.earliest.get() {
            self.earliest
                .set(Some(Some(known.map_or(at, |e| e.min(at)))));
        }
        self.place(Entry {
            at,
            seq: self.seq,
            what,
        });
    }

    fn place(&mut self, e: Entry<T>) {
        let tick = self.tick_of(e.at);
        if tick < self.cursor {
            self.near.push(Reverse(e));
        } else if tick < self.cursor + SLOTS as u64 {
            let i = (tick % SLOTS as u64) as usize;
            self.slots[i].push(e);
            self.occupied[i / 64] |= 1 << (i % 64);
        } else {
            self.far.push(Reverse(e));
        }
    }

    /// The earliest pending deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        if let Some(known) = self.earliest.get() {
            return known;
        }
        let mut best = self.near.peek().map(|Reverse(e)| e.at);
        if let Some(i) = self.first_occupied() {
            let slot_min = self.slots[i].iter().map(|e| e.at).min();
            best = best.into_iter().chain(slot_min).min();
        } else if let Some(Reverse(e)) = self.far.peek() {
            best = Some(best.map_or(e.at, |b| b.min(e.at)));
        }
        self.earliest.set(Some(best));
        best
    }

    /// The first non-empty slot from the cursor on, in wheel order.
    fn first_occupied(&self) -> Option<usize> {
        let start = (self.cursor % SLOTS as u64) as usize;
        let (w0, b0) = (start / 64, start % 64);
        // The first word from the start bit, then whole words around the
        // ring, then the first word's bits before the start.
        let head = self.occupied[w0] & (!0u64 << b0);
        if head != 0 {
            return Some(w0 * 64 + head.trailing_zeros() as usize);
        }
        for k in 1..WORDS {
            let w = (w0 + k) % WORDS;
            if self.occupied[w] != 0 {
                return Some(w * 64 + self.occupied[w].trailing_zeros() as usize);
            }
        }
        let tail = self.occupied[w0] & !(!0u64 << b0);
        (tail != 0).then(|| w0 * 64 + tail.trailing_zeros() as usize)
    }

    /// Removes and returns the earliest deadline at or before `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        loop {
            if self.near.peek().is_some_and(|Reverse(e)| e.at <= now) {
                let Reverse(e) = self.near.pop()?;
                self.earliest.set(None);
                return Some((e.at, e.what));
            }
            // Slots up to the tick that contains `now` (its deadlines may
            // lie on either side of `now`; `near` sorts them out).
            if !self.advance(self.tick_of(now)) {
                return None;
            }
        }
    }

    /// Moves the next non-empty slot up to tick `until` (inclusive) into
    /// `near`, turning the wheel to it; false when there is none.
    fn advance(&mut self, until: u64) -> bool {
        if self.cursor > until {
            return false;
        }
        let Some(i) = self.first_occupied() else {
            // Nothing in the wheel: turn it to `until` at once, bringing in
            // what `far` now reaches.
            self.turn_to(until + 1);
            return false;
        };
        let start = (self.cursor % SLOTS as u64) as usize;
        let tick = self.cursor + ((i + SLOTS - start) % SLOTS) as u64;
        if tick > until {
            self.turn_to(until + 1);
            return false;
        }
        let mut entries = std::mem::take(&mut self.slots[i]);
        self.occupied[i / 64] &= !(1 << (i % 64));
        self.near.extend(entries.drain(..).map(Reverse));
        // Keep the slot's allocation for its next turn.
        self.slots[i] = entries;
        self.turn_to(tick + 1);
        true
    }

    /// Sets the cursor to `tick` (never backwards) and moves the deadlines
    /// of `far` that the wheel now spans into their slots.
    fn turn_to(&mut self, tick: u64) {
        if tick <= self.cursor {
            return;
        }
        self.cursor = tick;
        let horizon = self.cursor + SLOTS as u64;
        while self
            .far
            .peek()
            .is_some_and(|Reverse(e)| self.tick_of(e.at) < horizon)
        {
            if let Some(Reverse(e)) = self.far.pop() {
                self.place(e);
            }
        }
    }
}

impl<T> std::fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerWheel")
            .field("near", &self.near.len())
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Pops everything due at `now`.
    fn due(w: &mut TimerWheel<u32>, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| w.pop_due(now).map(|(_, v)| v)).collect()
    }

    #[test]
    fn fires_in_deadline_then_insertion_order_and_not_before() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.push(t0 + ms(500), 1);
        w.push(t0 + ms(10), 2);
        w.push(t0 + ms(10), 3);
        w.push(t0 + Duration::from_micros(10_001), 4);
        w.push(t0 + ms(9), 5);
        assert_eq!(w.len(), 5);
        assert_eq!(w.next_deadline(), Some(t0 + ms(9)));
        assert_eq!(due(&mut w, t0 + ms(8)), Vec::<u32>::new());
        assert_eq!(due(&mut w, t0 + ms(10)), vec![5, 2, 3], "exact, same tick");
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_micros(10_001)));
        assert_eq!(due(&mut w, t0 + ms(499)), vec![4]);
        assert_eq!(w.next_deadline(), Some(t0 + ms(500)));
        assert_eq!(due(&mut w, t0 + ms(500)), vec![1]);
        assert_eq!(w.next_deadline(), None);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn past_and_origin_deadlines_fire_at_once() {
        let t0 = Instant::now() + ms(100);
        let mut w = TimerWheel::new(t0);
        assert_eq!(due(&mut w, t0 + ms(50)), Vec::<u32>::new());
        // Behind the cursor now, and before the origin.
        w.push(t0 + ms(10), 1);
        w.push(t0 - ms(50), 2);
        assert_eq!(w.next_deadline(), Some(t0 - ms(50)));
        assert_eq!(due(&mut w, t0 + ms(50)), vec![2, 1]);
    }

    #[test]
    fn far_deadlines_come_in_as_the_wheel_turns() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let span = TICK * SLOTS as u32;
        w.push(t0 + span * 3 + ms(7), 1);
        w.push(t0 + span + ms(1), 2);
        w.push(t0 + ms(1), 3);
        assert_eq!(w.next_deadline(), Some(t0 + ms(1)));
        assert_eq!(due(&mut w, t0 + ms(1)), vec![3]);
        assert_eq!(w.next_deadline(), Some(t0 + span + ms(1)));
        assert_eq!(due(&mut w, t0 + span), Vec::<u32>::new());
        assert_eq!(due(&mut w, t0 + span + ms(1)), vec![2]);
        assert_eq!(w.next_deadline(), Some(t0 + span * 3 + ms(7)));
        assert_eq!(due(&mut w, t0 + span * 3 + ms(6)), Vec::<u32>::new());
        assert_eq!(due(&mut w, t0 + span * 3 + ms(7)), vec![1]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn wraps_around_the_ring_many_times() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut now = t0;
        let mut next = 0u32;
        let mut fired = Vec::new();
        // A deadline 100 s ahead every 333 ms for 20 minutes: the cursor
        // passes the ring's end several times.
        for _ in 0..3_600 {
            w.push(now + Duration::from_secs(100), next);
            next += 1;
            now += ms(333);
            fired.extend(due(&mut w, now));
        }
        now += Duration::from_secs(101);
        fired.extend(due(&mut w, now));
        assert_eq!(fired, (0..next).collect::<Vec<_>>());
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn matches_a_plain_heap_on_random_deadlines() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut reference: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut now = t0;
        let mut seq = 0u64;
        for _ in 0..20_000 {
            for _ in 0..rng.usize(0..4) {
                // Mostly SIP-like durations, some far beyond the span.
                let d = match rng.u8(0..10) {
                    0 => Duration::from_secs(600),
                    1 => Duration::from_secs(180),
                    2..=4 => Duration::from_secs(32),
                    _ => Duration::from_micros(rng.u64(0..5_000_000)),
                };
                seq += 1;
                w.push(now + d, seq as u32);
                reference.push(Reverse((now + d, seq)));
            }
            assert_eq!(
                w.next_deadline(),
                reference.peek().map(|Reverse((at, _))| *at)
            );
            now += Duration::from_micros(rng.u64(0..200_000));
            while let Some(Reverse((at, s))) = reference.peek().copied() {
                if at > now {
                    break;
                }
                reference.pop();
                assert_eq!(w.pop_due(now), Some((at, s as u32)));
            }
            assert_eq!(w.pop_due(now), None);
            assert_eq!(w.len(), reference.len());
        }
    }
}
