//! A cache of documents fetched by URL — certificate chains at `x5u`, CRLs
//! at distribution points — that never makes a caller wait for more than
//! one fetch: concurrent requests for a URL join the fetch in flight, an
//! expired entry is served stale while it is refreshed in the background
//! and when the refresh fails, and failing URLs are remembered for a while
//! (DESIGN.md: verify never blocks a call on the network).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::fetch::{self, FetchError, FetchOptions};
use super::lru::Lru;

/// The network fetches one INVITE may start, x5u and CRL together (cache
/// hits and joins to a fetch in flight are free): what a caller's choice
/// of URLs can make callgate do is bounded (issue 13).
#[derive(Debug)]
pub struct FetchBudget {
    left: AtomicUsize,
    metrics: FetchMetrics,
}

impl FetchBudget {
    pub fn new(fetches: usize, metrics: &FetchMetrics) -> FetchBudget {
        FetchBudget {
            left: AtomicUsize::new(fetches),
            metrics: metrics.clone(),
        }
    }

    /// Takes one fetch; `false` (counted as refused) when none is left.
    fn take(&self) -> bool {
        let taken = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if !taken {
            self.metrics.refused(Refusal::PerCallLimit);
        }
        taken
    }
}

/// Why no usable document was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// The network did not deliver (timeout, connection, TLS, DNS).
    Unavailable(String),
    /// What the URL served or names is wrong.
    Bad(String),
}

/// What a fetch yields: the document, shared.
pub type Outcome<T> = Result<Arc<T>, FetchFailure>;

/// A parsed document and how long it stays fresh (`None`: the server's
/// `max-age`, clamped to the cache bounds).
pub type Parsed<T> = Result<(T, Option<Duration>), String>;

/// Outcomes of the fetches of one cache, for `/metrics`.
#[derive(Debug, Default)]
pub struct FetchCounters {
    pub ok: AtomicU64,
    /// Network failures (the caller proceeds unvalidated or unchecked).
    pub unavailable: AtomicU64,
    /// Wrong content or status.
    pub bad: AtomicU64,
    /// Refresh failures answered with the cached copy.
    pub stale_served: AtomicU64,
    /// Documents forgotten to make room (least recently used first).
    pub evicted: AtomicU64,
    /// Fetches not made: every address of the host private or reserved.
    pub refused_private: AtomicU64,
}

impl FetchCounters {
    pub fn get(&self) -> [(&'static str, u64); 4] {
        [
            ("ok", self.ok.load(Ordering::Relaxed)),
            ("unavailable", self.unavailable.load(Ordering::Relaxed)),
            ("bad", self.bad.load(Ordering::Relaxed)),
            ("stale-served", self.stale_served.load(Ordering::Relaxed)),
        ]
    }
}

/// Why a fetch was not even tried (`callgate_stir_fetches_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every address the name resolved to is private, loopback, reserved…
    PrivateAddress = 0,
    /// A CRL distribution point of a chain that did not validate.
    UnvalidatedChain = 1,
    /// Beyond the per-INVITE bound on fetches or distribution points.
    PerCallLimit = 2,
}

const REFUSALS: [(Refusal, &str); 3] = [
    (Refusal::PrivateAddress, "private-address"),
    (Refusal::UnvalidatedChain, "unvalidated-chain"),
    (Refusal::PerCallLimit, "per-call-limit"),
];

/// The counters of the verification service, for `/metrics`: fetch
/// outcomes of the certificate and CRL caches, their evictions, fetches
/// refused, and PASSporT replays caught.
#[derive(Debug, Default, Clone)]
pub struct FetchMetrics {
    pub x5u: Arc<FetchCounters>,
    pub crl: Arc<FetchCounters>,
    pub replays: Arc<AtomicU64>,
    refused: Arc<[AtomicU64; 3]>,
}

impl FetchMetrics {
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused_count(&self, why: Refusal) -> u64 {
        let private = match why {
            Refusal::PrivateAddress => [&self.x5u, &self.crl]
                .iter()
                .map(|c| c.refused_private.load(Ordering::Relaxed))
                .sum(),
            _ => 0,
        };
        self.refused[why as usize].load(Ordering::Relaxed) + private
    }

    /// Writes these counters into `/metrics` (see [`crate::exposition`]).
    pub fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use crate::exposition::{counter, one_counter};
        let mut f = counter(
            e,
            "callgate_stir_fetches_total",
            "Certificate (x5u) and CRL fetches by outcome; stale-served counts refresh failures answered from the cache.",
        )?;
        let kinds = [("x5u", &self.x5u), ("crl", &self.crl)];
        for (kind, c) in kinds {
            for (result, n) in c.get() {
                f.counter(&[("kind", kind), ("result", result)], n)?;
            }
        }
        let mut f = counter(
            e,
            "callgate_stir_cache_evictions_total",
            "Documents the certificate (x5u) and CRL caches forgot to stay within their size, least recently used first.",
        )?;
        for (kind, c) in kinds {
            f.counter(&[("kind", kind)], c.evicted.load(Ordering::Relaxed))?;
        }
        let mut f = counter(
            e,
            "callgate_stir_fetches_refused_total",
            "x5u and CRL fetches not made: every address private or reserved, a CRL of a chain that did not validate, or beyond the per-INVITE bound.",
        )?;
        for (why, name) in REFUSALS {
            f.counter(&[("reason", name)], self.refused_count(why))?;
        }
        one_counter(
            e,
            "callgate_stir_replays_total",
            "Verified PASSporTs refused because another call used them within the freshness window.",
            self.replays.load(Ordering::Relaxed),
        )
    }
}

/// Cache settings.
#[derive(Clone)]
pub struct CacheSettings {
    pub fetch: FetchOptions,
    /// Accept `http://` as well as `https://` (CRLs are signed documents,
    /// usually published over plain HTTP; RFC 5280 §4.2.1.13).
    pub allow_http: bool,
    /// Lifetime bounds around the server's or the document's own lifetime.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// How long a failing URL is remembered.
    pub negative_ttl: Duration,
    pub max_entries: usize,
    /// Bytes of documents held at most (as their bodies were served).
    pub max_bytes: usize,
    pub counters: Arc<FetchCounters>,
    /// A state store shared with other instances: asked before the
    /// network, and given every document fetched.
    pub shared: Option<Arc<crate::state::State>>,
}

enum Slot<T> {
    Ready {
        doc: Arc<T>,
        fresh_until: Instant,
    },
    Failed {
        error: FetchFailure,
        until: Instant,
    },
    Pending {
        rx: watch::Receiver<Option<Outcome<T>>>,
        stale: Option<Arc<T>>,
    },
}

/// Bookkeeping charged per cached URL beside the URL and the document.
const SLOT_OVERHEAD: usize = 256;

/// What a document weighs in the cache: about the bytes it was parsed
/// from.
pub trait Weight {
    fn weight(&self) -> usize;
}

/// The cache; `parse` turns a response body into a document. It holds at
/// most `max_entries` URLs and `max_bytes` of documents, and forgets the
/// least recently used first.
pub struct FetchCache<T> {
    settings: CacheSettings,
    parse: fn(&[u8]) -> Parsed<T>,
    slots: Mutex<Lru<Slot<T>>>,
    /// Bumped whenever a document is stored, so users can tell that what
    /// they derived from earlier documents may be out of date.
    generation: AtomicU64,
}

fn classify(e: FetchError) -> FetchFailure {
    match e {
        FetchError::Timeout
        | FetchError::Io(_)
        | FetchError::Tls(_)
        | FetchError::Resolve
        | FetchError::Proxy(_) => FetchFailure::Unavailable(e.to_string()),
        _ => FetchFailure::Bad(e.to_string()),
    }
}

impl<T: Weight + Send + Sync + 'static> FetchCache<T> {
    pub fn new(settings: CacheSettings, parse: fn(&[u8]) -> Parsed<T>) -> Arc<FetchCache<T>> {
        Arc::new(FetchCache {
            slots: Mutex::new(Lru::new(settings.max_entries, settings.max_bytes)),
            settings,
            parse,
            generation: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<Slot<T>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `slot` for `url`, counting an eviction to make room.
    fn store(&self, slots: &mut Lru<Slot<T>>, url: String, slot: Slot<T>) {
        let doc = match &slot {
            Slot::Ready { doc, .. }
            | Slot::Pending {
                stale: Some(doc), ..
            } => doc.weight(),
            _ => 0,
        };
        let weight = url.len() + SLOT_OVERHEAD + doc;
        let evicted = slots.insert(url, slot, weight);
        self.settings
            .counters
            .evicted
            .fetch_add(evicted as u64, Ordering::Relaxed);
    }

    /// Changes each time a document is stored.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// When the entry for `url` stops being fresh, if it is cached.
    pub fn fresh_until(&self, url: &str) -> Option<Instant> {
        match self.lock().peek(url) {
            Some(Slot::Ready { fresh_until, .. }) => Some(*fresh_until),
            _ => None,
        }
    }

    /// The document at `url`: cached, joined to a fetch in flight, or
    /// fetched — a fetch taken from `budget`, and abandoned at `until`
    /// when given (else it runs to the fetch timeout, so that a slow
    /// server's document still serves the next call). An expired entry is
    /// served stale while a refresh runs.
    pub async fn get(
        self: &Arc<Self>,
        url: &str,
        budget: &FetchBudget,
        until: Option<tokio::time::Instant>,
    ) -> Outcome<T> {
        enum Next<T> {
            Join(watch::Receiver<Option<Outcome<T>>>),
            Start(Option<Arc<T>>),
        }
        let now = Instant::now();
        let mut rx = {
            let mut slots = self.lock();
            let next = match slots.get_mut(url) {
                Some(Slot::Ready { doc, fresh_until }) if *fresh_until > now => {
                    return Ok(doc.clone())
                }
                Some(Slot::Failed { error, until }) if *until > now => return Err(error.clone()),
                Some(Slot::Pending { stale: Some(s), .. }) => return Ok(s.clone()),
                Some(Slot::Pending { rx, stale: None }) => Next::Join(rx.clone()),
                Some(Slot::Ready { doc, .. }) => Next::Start(Some(doc.clone())),
                _ => Next::Start(None),
            };
            match next {
                Next::Join(rx) => rx,
                Next::Start(stale) => {
                    if stale.is_none() && !budget.take() {
                        return Err(FetchFailure::Unavailable(
                            "not fetched: the call's fetch limit is reached".into(),
                        ));
                    }
                    let (tx, rx) = watch::channel(None);
                    self.store(
                        &mut slots,
                        url.to_owned(),
                        Slot::Pending {
                            rx: rx.clone(),
                            stale: stale.clone(),
                        },
                    );
                    tokio::spawn(
                        self.clone()
                            .refresh(url.to_owned(), tx, stale.clone(), until),
                    );
                    if let Some(s) = stale {
                        return Ok(s);
                    }
                    rx
                }
            }
        };
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| Err(FetchFailure::Unavailable("fetch abandoned".into())))
    }

    async fn refresh(
        self: Arc<Self>,
        url: String,
        tx: watch::Sender<Option<Outcome<T>>>,
        stale: Option<Arc<T>>,
        until: Option<tokio::time::Instant>,
    ) {
        let s = &self.settings;
        let result = match self.shared_copy(&url).await {
            Some(found) => Ok(found),
            None => {
                let fetched = match until {
                    Some(t) => tokio::time::timeout_at(t, self.fetch(&url))
                        .await
                        .unwrap_or_else(|_| {
                            Err(FetchFailure::Unavailable(
                                "abandoned at the call's deadline".into(),
                            ))
                        }),
                    None => self.fetch(&url).await,
                };
                let counter = match &fetched {
                    Ok(_) => &s.counters.ok,
                    Err(FetchFailure::Unavailable(_)) => &s.counters.unavailable,
                    Err(FetchFailure::Bad(_)) => &s.counters.bad,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                fetched
            }
        };
        let now = Instant::now();
        let outcome: Outcome<T> = {
            let mut slots = self.lock();
            match result {
                Ok((doc, ttl)) => {
                    self.store(
                        &mut slots,
                        url.clone(),
                        Slot::Ready {
                            doc: doc.clone(),
                            fresh_until: now + ttl,
                        },
                    );
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    Ok(doc)
                }
                Err(error) => match stale {
                    // Serve stale on refresh failure; retry after the negative TTL.
                    Some(doc) => {
                        s.counters.stale_served.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%url, ?error, "refresh failed; serving the cached copy");
                        self.store(
                            &mut slots,
                            url.clone(),
                            Slot::Ready {
                                doc: doc.clone(),
                                fresh_until: now + s.negative_ttl,
                            },
                        );
                        Ok(doc)
                    }
                    None => {
                        tracing::info!(%url, ?error, "fetch failed");
                        self.store(
                            &mut slots,
                            url.clone(),
                            Slot::Failed {
                                error: error.clone(),
                                until: now + s.negative_ttl,
                            },
                        );
                        Err(error)
                    }
                },
            }
        };
        let _ = tx.send(Some(outcome));
    }

    /// The document as another instance fetched it, when a shared state
    /// store holds it (its remaining TTL kept). Documents from the store
    /// are checked like fetched ones: parsed here, and chains and CRLs
    /// validated to the trust anchors when used.
    async fn shared_copy(&self, url: &str) -> Option<(Arc<T>, Duration)> {
        let shared = self.settings.shared.as_ref()?;
        let (body, ttl) = shared.document(url).await?;
        match (self.parse)(&body) {
            Ok((doc, _)) => Some((Arc::new(doc), ttl.min(self.settings.max_ttl))),
            Err(e) => {
                tracing::warn!(%url, error = %e, "shared document unusable; fetching it");
                None
            }
        }
    }

    /// Fetches and parses the document; shares it when state is shared.
    async fn fetch(&self, url: &str) -> Result<(Arc<T>, Duration), FetchFailure> {
        let s = &self.settings;
        let fetched = if s.allow_http {
            fetch::fetch_any(url, &s.fetch).await
        } else {
            fetch::fetch(url, &s.fetch).await
        };
        if let Err(FetchError::Private(ip)) = &fetched {
            s.counters.refused_private.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%url, %ip, "fetch refused: no public address");
        }
        let f = fetched.map_err(classify)?;
        let (doc, own_ttl) = (self.parse)(&f.body).map_err(FetchFailure::Bad)?;
        let ttl = own_ttl
            .or(f.max_age)
            .unwrap_or(s.min_ttl)
            .clamp(s.min_ttl, s.max_ttl);
        if let Some(shared) = &s.shared {
            shared.share_document(url, &f.body, ttl);
        }
        Ok((Arc::new(doc), ttl))
    }

    /// Cached entries (for metrics and tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a document as if fetched, fresh for `ttl`.
    pub fn insert(&self, url: String, doc: T, ttl: Duration) {
        let mut slots = self.lock();
        self.store(
            &mut slots,
            url,
            Slot::Ready {
                doc: Arc::new(doc),
                fresh_until: Instant::now() + ttl,
            },
        );
        drop(slots);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The fresh or stale documents held, with their expiry (for handing
    /// over on reload).
    pub fn ready(&self) -> Vec<(String, Arc<T>, Instant)> {
        self.lock()
            .iter()
            .filter_map(|(url, slot)| match slot {
                Slot::Ready { doc, fresh_until } => {
                    Some((url.to_owned(), doc.clone(), *fresh_until))
                }
                _ => None,
            })
            .collect()
    }

    /// Adds documents (from [`ready`](Self::ready) of another cache)
    /// where this cache has none.
    pub fn adopt(&self, docs: Vec<(String, T, Instant)>) {
        let mut slots = self.lock();
        // Most recently used first: adopted oldest first, so that the
        // recency order carries over.
        let docs: Vec<_> = docs.into_iter().take(slots.capacity()).collect();
        for (url, doc, fresh_until) in docs.into_iter().rev() {
            if slots.peek(&url).is_none() {
                self.store(
                    &mut slots,
                    url,
                    Slot::Ready {
                        doc: Arc::new(doc),
                        fresh_until,
                    },
                );
            }
        }
    }
}
