//! Call state that outlives one call: velocity windows, PASSporT replay
//! detection and fetched certificate documents (DESIGN.md, "State").
//!
//! Every store sits behind one trait, [`StateStore`]: the embedded
//! [`memory::MemoryStore`] (the default, bounded) and
//! [`redis_store::RedisStore`], which lets several callgate instances
//! behind one trunk group share what they saw. [`State`] is what the call
//! path uses: it always keeps the local store up to date, asks the shared
//! store under a deadline, and falls back to the local answer — at once
//! while the shared store is known to be down, after the deadline when it
//! hangs — counting each fallback in `/metrics`. It never fails a call.
//!
//! * [`window`] — exact sliding-window counters in this process;
//! * [`memory`] — the embedded store;
//! * [`redis`] — the connection to Redis (the `redis` crate's, kept and
//!   remade by one task);
//! * [`redis_store`] — the Redis store.

pub mod claims;
pub mod memory;
pub mod redis;
pub mod redis_store;
pub mod window;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use memory::MemoryStore;

/// Why a store did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store answered unexpectedly: {0}")]
    Protocol(String),
}

/// What a store operation returns, boxed so that [`StateStore`] can be
/// used as a trait object.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StateError>> + Send + 'a>>;

/// One event counted in a sliding window: the key (window name and the
/// counted value, e.g. `ani_10m:+15551234567`) and the window's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowEvent {
    pub key: String,
    pub window: Duration,
}

/// A store of call state.
pub trait StateStore: Send + Sync {
    /// Records one event per window at `now_ms` (Unix milliseconds) and
    /// returns, per window, the events within it, this one included.
    fn count<'a>(&'a self, events: &'a [WindowEvent], now_ms: u64) -> StoreFuture<'a, Vec<u64>>;

    /// Claims `key` for `owner` for `ttl` unless it is held; returns the
    /// holder when it is another owner (the PASSporT replay check: key =
    /// signature, owner = Call-ID).
    fn claim<'a>(
        &'a self,
        key: &'a [u8],
        owner: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// A document stored under `url` (a certificate chain or CRL as it was
    /// fetched) with the time it stays fresh.
    fn get_doc<'a>(&'a self, url: &'a str) -> StoreFuture<'a, Option<(Vec<u8>, Duration)>>;

    /// Stores a fetched document for `ttl`.
    fn put_doc<'a>(&'a self, url: &'a str, body: &'a [u8], ttl: Duration) -> StoreFuture<'a, ()>;

    /// Whether the store can answer now (a shared store that is down is
    /// not asked at all).
    fn is_available(&self) -> bool;

    /// Called when an answer missed the deadline (e.g. drop a hung
    /// connection and reconnect).
    fn deadline_missed(&self) {}
}

/// The operations [`State`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Velocity = 0,
    Replay = 1,
    Document = 2,
}

const OPS: [(Op, &str); 3] = [
    (Op::Velocity, "velocity"),
    (Op::Replay, "replay"),
    (Op::Document, "document"),
];

/// Counters of the state layer, for `/metrics`.
#[derive(Default)]
pub struct StateMetrics {
    /// Answered by the shared store, per [`Op`].
    shared: [AtomicU64; 3],
    /// Answered locally because the shared store was down, slow or wrong.
    fallback: [AtomicU64; 3],
    /// Unexpired local replay claims forgotten to stay within the bounds.
    claims_evicted: Arc<AtomicU64>,
    /// Shared-store reconnects and whether it is up (`None`: none configured).
    shared_up: Option<Box<dyn Fn() -> (bool, u64) + Send + Sync>>,
}

impl StateMetrics {
    pub fn fallbacks(&self, op: Op) -> u64 {
        self.fallback[op as usize].load(Relaxed)
    }

    pub fn shared_answers(&self, op: Op) -> u64 {
        self.shared[op as usize].load(Relaxed)
    }

    /// Writes these metrics into `/metrics` (see [`crate::exposition`]).
    pub fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use crate::exposition::{counter, one_counter, one_gauge};
        let mut f = counter(
            e,
            "callgate_state_ops_total",
            "State operations (velocity, replay, document) by who answered: the shared store, or local state as a fallback.",
        )?;
        for (op, name) in OPS {
            for (by, c) in [("shared", &self.shared), ("fallback", &self.fallback)] {
                f.counter(
                    &[("op", name), ("answered", by)],
                    c[op as usize].load(Relaxed),
                )?;
            }
        }
        one_counter(
            e,
            "callgate_state_replay_claims_evicted_total",
            "PASSporT replay claims forgotten before they expired because the local table was full (its replay window shrank).",
            self.claims_evicted.load(Relaxed),
        )?;
        if let Some(f) = &self.shared_up {
            let (up, reconnects) = f();
            one_gauge(
                e,
                "callgate_state_shared_up",
                "1 while the shared state store (Redis) is connected.",
                i64::from(up),
            )?;
            one_counter(
                e,
                "callgate_state_shared_reconnects_total",
                "Reconnections to the shared state store after it was lost.",
                reconnects,
            )?;
        }
        Ok(())
    }
}

/// State settings (`[state]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The shared store (`redis://` or `rediss://`, a server or the master
    /// Sentinels name); `None`: local state only.
    pub redis: Option<redis::RedisAddr>,
    /// How long a call waits for the shared store before using local state.
    pub timeout: Duration,
    /// Prefix of every key callgate writes to the shared store.
    pub key_prefix: String,
    /// With a shared store: share the calls in progress, decisions,
    /// step-ups, verdicts, list additions and decision events with the
    /// other instances (`crate::cluster`).
    pub share_console: bool,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            redis: None,
            timeout: Duration::from_millis(50),
            key_prefix: "callgate:".to_owned(),
            share_console: true,
        }
    }
}

/// The call path's view of state: local always, shared when configured.
pub struct State {
    local: MemoryStore,
    shared: Option<Arc<dyn StateStore>>,
    timeout: Duration,
    metrics: Arc<StateMetrics>,
    /// The Redis connection, when configured: other layers that share
    /// through the same store use it too ([`State::redis`]).
    redis: Option<Arc<redis::Redis>>,
}

impl Default for State {
    fn default() -> Self {
        State::local_only()
    }
}

impl State {
    /// Local state only (the embedded default).
    pub fn local_only() -> State {
        let local = MemoryStore::default();
        let metrics = StateMetrics {
            claims_evicted: local.claims_evicted(),
            ..StateMetrics::default()
        };
        State {
            local,
            shared: None,
            timeout: Duration::from_millis(50),
            metrics: Arc::new(metrics),
            redis: None,
        }
    }

    /// From `[state]`; starts the Redis connection when one is configured
    /// (must run inside a tokio runtime). Returns at once: the connection
    /// is made in the background and calls use local state until it is up.
    pub fn from_config(cfg: &StateConfig) -> State {
        let Some(addr) = &cfg.redis else {
            return State::local_only();
        };
        let client = redis::Redis::start(addr.clone());
        let probe = client.clone();
        let local = MemoryStore::default();
        let metrics = StateMetrics {
            claims_evicted: local.claims_evicted(),
            shared_up: Some(Box::new(move || {
                (probe.is_up(), probe.reconnects.load(Relaxed))
            })),
            ..StateMetrics::default()
        };
        State {
            local,
            shared: Some(Arc::new(redis_store::RedisStore::new(
                client.clone(),
                cfg.key_prefix.clone(),
            ))),
            timeout: cfg.timeout,
            metrics: Arc::new(metrics),
            redis: Some(client),
        }
    }

    pub fn metrics(&self) -> &StateMetrics {
        &self.metrics
    }

    /// The shared store's connection, when one is configured.
    pub fn redis(&self) -> Option<Arc<redis::Redis>> {
        self.redis.clone()
    }

    /// Whether a shared store is configured.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Asks the shared store under the deadline; `None` (counted as a
    /// fallback) when it is down, slow or fails.
    async fn shared<'a, T>(
        &'a self,
        op: Op,
        ask: impl FnOnce(&'a dyn StateStore) -> StoreFuture<'a, T>,
    ) -> Option<T> {
        let store = self.shared.as_deref()?;
        let result = if store.is_available() {
            match tokio::time::timeout(self.timeout, ask(store)).await {
                Ok(r) => r,
                Err(_) => {
                    store.deadline_missed();
                    Err(StateError::Unavailable(format!(
                        "no answer within {} ms",
                        self.timeout.as_millis()
                    )))
                }
            }
        } else {
            Err(StateError::Unavailable("down".to_owned()))
        };
        match result {
            Ok(v) => {
                self.metrics.shared[op as usize].fetch_add(1, Relaxed);
                Some(v)
            }
            Err(e) => {
                self.metrics.fallback[op as usize].fetch_add(1, Relaxed);
                tracing::debug!(op = ?op, error = %e, "shared state not used; local state answers");
                None
            }
        }
    }

    /// Counts one event in each window; the counts include it. Local
    /// counts (this instance's calls only) answer when the shared store
    /// cannot.
    pub async fn count(&self, events: &[WindowEvent], now_ms: u64) -> Vec<u64> {
        let local = self.local.count_now(events, now_ms);
        match self.shared(Op::Velocity, |s| s.count(events, now_ms)).await {
            Some(shared) if shared.len() == events.len() => shared,
            _ => local,
        }
    }

    /// Records that `owner` (a call, [`crate::stir::replay::CallInstance`])
    /// uses `key` (a verified PASSporT, [`crate::stir::replay::passport_key`])
    /// for `ttl`; returns the owner that used it first, if another — seen
    /// by this instance or, when shared, by any instance.
    pub async fn replay_of(&self, key: &[u8], owner: &[u8], ttl: Duration) -> Option<String> {
        let local = self.local.claim_now(key, owner, ttl);
        let shared = self.shared(Op::Replay, |s| s.claim(key, owner, ttl)).await;
        shared
            .flatten()
            .or(local)
            .map(|o| String::from_utf8_lossy(&o).into_owned())
    }

    /// A document another instance fetched, when a shared store has it.
    pub async fn document(&self, url: &str) -> Option<(Vec<u8>, Duration)> {
        self.shared.as_ref()?;
        self.shared(Op::Document, |s| s.get_doc(url))
            .await
            .flatten()
    }

    /// Offers a fetched document to the other instances (in the
    /// background; nobody waits for it).
    pub fn share_document(self: &Arc<Self>, url: &str, body: &[u8], ttl: Duration) {
        if self.shared.is_none() {
            return;
        }
        let me = self.clone();
        let (url, body) = (url.to_owned(), body.to_vec());
        tokio::spawn(async move {
            me.shared(Op::Document, |s| s.put_doc(&url, &body, ttl))
                .await;
        });
    }
}
