//! What the call pipeline takes from the world: the wall-clock time and
//! randomness, in one value injected at start. Everything a decision
//! carries that is not computed from the message — its id, its timestamp,
//! the proxy core's branch salt and tags — comes from here, so the same
//! inputs under the same [`Env`] give the same bytes: `callgate replay`,
//! what-if runs and tests reproduce a decision exactly (docs/architecture.md).
//!
//! A running callgate uses [`Env::system`]: the system clock and a seed
//! from the operating system's randomness. Tests and replays use
//! [`Env::fixed`]: a clock they set and a seed they choose.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Where the wall-clock time comes from.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn unix_ms(&self) -> i64;
}

/// The system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that says what it is told (tests, replays).
#[derive(Debug, Default)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    pub fn at(unix_ms: i64) -> FixedClock {
        FixedClock(AtomicI64::new(unix_ms))
    }
    pub fn set(&self, unix_ms: i64) {
        self.0.store(unix_ms, Ordering::Relaxed);
    }
}

impl Clock for FixedClock {
    fn unix_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The clock and the random source, shared by the pipeline's phases.
#[derive(Clone)]
pub struct Env {
    clock: Arc<dyn Clock>,
    rng: Arc<Mutex<fastrand::Rng>>,
    /// The instance's name (`[instance] name`), the start of its decision
    /// ids; `None` in replays and tests that make bare ids.
    instance: Option<Arc<str>>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("unix_ms", &self.unix_ms())
            .finish()
    }
}

impl Env {
    /// The system clock and a random seed: what a running callgate uses.
    pub fn system() -> Env {
        Env::new(Arc::new(SystemClock), fastrand::u64(..))
    }

    /// A fixed clock at `unix_ms` and the seed `seed`: the same calls give
    /// the same ids, tags and branches.
    pub fn fixed(unix_ms: i64, seed: u64) -> (Env, Arc<FixedClock>) {
        let clock = Arc::new(FixedClock::at(unix_ms));
        (Env::new(clock.clone(), seed), clock)
    }

    pub fn new(clock: Arc<dyn Clock>, seed: u64) -> Env {
        Env {
            clock,
            rng: Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))),
            instance: None,
        }
    }

    /// This environment, its decision ids starting with `name` (a name
    /// `[instance] name` accepted: `[A-Za-z0-9._-]`, at most 32).
    pub fn with_instance(mut self, name: &str) -> Env {
        self.instance = Some(Arc::from(name));
        self
    }

    /// The instance name its decision ids carry, when it has one.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> i64 {
        self.clock.unix_ms()
    }

    /// Seconds since the Unix epoch.
    pub fn unix_secs(&self) -> i64 {
        self.unix_ms().div_euclid(1000)
    }

    /// The next random number.
    pub fn u64(&self) -> u64 {
        self.rng.lock().unwrap_or_else(|p| p.into_inner()).u64(..)
    }

    /// A decision id: `NAME-` and 16 lower-case hex digits when the
    /// environment has an instance name (`cg-a-3f9c0e12ab45d678`), else
    /// the 16 digits alone. [`decision_instance`] reads the name back.
    pub fn decision_id(&self) -> String {
        match &self.instance {
            Some(name) => format!("{name}-{:016x}", self.u64()),
            None => format!("{:016x}", self.u64()),
        }
    }
}

/// The instance that made a decision, read from its id: what precedes the
/// last `-` when 16 hex digits follow it (the name may itself hold `-`);
/// `None` for ids made without a name (before instance names existed, or
/// by a replay).
pub fn decision_instance(id: &str) -> Option<&str> {
    let (name, digits) = id.rsplit_once('-')?;
    (!name.is_empty() && digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_clock_give_the_same_values() {
        let (a, _) = Env::fixed(1_700_000_000_123, 42);
        let (b, clock) = Env::fixed(1_700_000_000_123, 42);
        assert_eq!(a.decision_id(), b.decision_id());
        assert_eq!(a.u64(), b.u64());
        assert_eq!(a.unix_secs(), 1_700_000_000);
        clock.set(5);
        assert_eq!(b.unix_ms(), 5);
        let (c, _) = Env::fixed(0, 43);
        assert_ne!(a.decision_id(), c.decision_id());
    }

    #[test]
    fn decision_ids_say_which_instance_made_them() {
        let (env, _) = Env::fixed(0, 42);
        let bare = env.decision_id();
        assert_eq!(bare.len(), 16);
        assert_eq!(decision_instance(&bare), None);
        let named = env.with_instance("cg-a.eu");
        let id = named.decision_id();
        assert!(
            id.starts_with("cg-a.eu-") && id.len() == "cg-a.eu-".len() + 16,
            "{id}"
        );
        assert_eq!(decision_instance(&id), Some("cg-a.eu"));
        assert_eq!(named.instance(), Some("cg-a.eu"));
        assert_eq!(decision_instance("d0001"), None);
        assert_eq!(decision_instance("-0123456789abcdef"), None);
        assert_eq!(decision_instance("x-0123456789abcdeg"), None);
    }
}
