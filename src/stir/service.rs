//! The verification service as callgate runs it: certificates fetched
//! asynchronously and cached, concurrent requests for one URL coalesced,
//! each call waiting at most a deadline before it proceeds as
//! `No-TN-Validation` (DESIGN.md: verify never blocks a call on the network).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::certs::{self, Chain, TrustStore};
use super::fetch::{self, FetchError, FetchOptions};
use super::passport::Expect;
use super::verify::{self, Verification};
use super::Cause;

/// Settings of the verification service.
#[derive(Clone)]
pub struct VerifierSettings {
    pub fetch: FetchOptions,
    /// How long one call waits for a certificate (default 300 ms).
    pub deadline: Duration,
    pub freshness_secs: i64,
    pub skew_secs: i64,
    /// Cache lifetime bounds around the server's max-age.
    pub min_cache: Duration,
    pub max_cache: Duration,
    /// How long a failing URL is remembered.
    pub negative_ttl: Duration,
    pub max_entries: usize,
}

type Outcome = Result<Arc<Chain>, ChainError>;

/// Why no usable chain was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// The network did not deliver (timeout, connection, TLS, DNS): the call
    /// proceeds unvalidated.
    Unavailable(String),
    /// What the URL served or names is wrong: the verification fails (436).
    Bad(String),
}

enum Slot {
    Ready {
        chain: Arc<Chain>,
        fresh_until: Instant,
    },
    Failed {
        error: ChainError,
        until: Instant,
    },
    Pending {
        rx: watch::Receiver<Option<Outcome>>,
        stale: Option<Arc<Chain>>,
    },
}

/// Verification service: trust anchors, fetch settings and the cache.
pub struct Verifier {
    settings: VerifierSettings,
    trust: TrustStore,
    cache: Mutex<HashMap<String, Slot>>,
}

fn classify(e: FetchError) -> ChainError {
    match e {
        FetchError::Timeout | FetchError::Io(_) | FetchError::Tls(_) | FetchError::Resolve => {
            ChainError::Unavailable(e.to_string())
        }
        _ => ChainError::Bad(e.to_string()),
    }
}

impl Verifier {
    pub fn new(settings: VerifierSettings, trust: TrustStore) -> Arc<Verifier> {
        Arc::new(Verifier {
            settings,
            trust,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies one Identity header value for a call.
    pub async fn verify(
        self: &Arc<Self>,
        identity: &[u8],
        orig: &str,
        dest: &[&str],
        now: i64,
    ) -> Verification {
        let expect = Expect {
            orig,
            dest,
            now,
            freshness_secs: self.settings.freshness_secs,
            skew_secs: self.settings.skew_secs,
        };
        let (passport, checks) = match verify::preflight(identity, &expect) {
            Ok(x) => x,
            Err(done) => return *done,
        };
        let url = passport.header.x5u.clone().unwrap_or_default();
        let iat = passport.claims.iat.unwrap_or(0);
        let chain = match tokio::time::timeout(self.settings.deadline, self.chain(&url)).await {
            Err(_) => {
                return verify::unavailable(
                    passport,
                    checks,
                    format!(
                        "no certificate within {} ms",
                        self.settings.deadline.as_millis()
                    ),
                )
            }
            Ok(Err(ChainError::Unavailable(why))) => {
                return verify::unavailable(passport, checks, why)
            }
            Ok(Err(ChainError::Bad(why))) => {
                return verify::failed_after(
                    passport,
                    checks,
                    "x5u-content",
                    Cause::BadIdentityInfo,
                    why,
                )
            }
            Ok(Ok(chain)) => chain,
        };
        match certs::validate(&chain, &self.trust, iat, orig) {
            Ok(sti) => verify::finish(passport, checks, &sti.key, sti.spc),
            Err((cause, why)) => verify::failed_after(passport, checks, "certificate", cause, why),
        }
    }

    /// The chain at `url`: cached, joined to a fetch in flight, or fetched.
    /// An expired entry is served stale while a refresh runs.
    pub async fn chain(self: &Arc<Self>, url: &str) -> Outcome {
        enum Next {
            Join(watch::Receiver<Option<Outcome>>),
            Start(Option<Arc<Chain>>),
        }
        let now = Instant::now();
        let rx = {
            let mut cache = self.lock();
            let next = match cache.get(url) {
                Some(Slot::Ready { chain, fresh_until }) if *fresh_until > now => {
                    return Ok(chain.clone())
                }
                Some(Slot::Failed { error, until }) if *until > now => return Err(error.clone()),
                Some(Slot::Pending { stale: Some(s), .. }) => return Ok(s.clone()),
                Some(Slot::Pending { rx, stale: None }) => Next::Join(rx.clone()),
                Some(Slot::Ready { chain, .. }) => Next::Start(Some(chain.clone())),
                _ => Next::Start(None),
            };
            match next {
                Next::Join(rx) => rx,
                Next::Start(stale) => {
                    if cache.len() >= self.settings.max_entries {
                        cache.retain(|_, s| matches!(s, Slot::Pending { .. }));
                    }
                    let (tx, rx) = watch::channel(None);
                    cache.insert(
                        url.to_owned(),
                        Slot::Pending {
                            rx: rx.clone(),
                            stale: stale.clone(),
                        },
                    );
                    tokio::spawn(self.clone().refresh(url.to_owned(), tx, stale.clone()));
                    if let Some(s) = stale {
                        return Ok(s);
                    }
                    rx
                }
            }
        };
        let mut rx = rx;
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| Err(ChainError::Unavailable("fetch abandoned".into())))
    }

    async fn refresh(
        self: Arc<Self>,
        url: String,
        tx: watch::Sender<Option<Outcome>>,
        stale: Option<Arc<Chain>>,
    ) {
        let s = &self.settings;
        let result = match fetch::fetch(&url, &s.fetch).await {
            Ok(f) => match Chain::parse(&f.body) {
                Ok(chain) => Ok((
                    Arc::new(chain),
                    f.max_age
                        .unwrap_or(s.min_cache)
                        .clamp(s.min_cache, s.max_cache),
                )),
                Err(e) => Err(ChainError::Bad(format!("certificate response: {e}"))),
            },
            Err(e) => Err(classify(e)),
        };
        let now = Instant::now();
        let outcome: Outcome = {
            let mut cache = self.lock();
            match result {
                Ok((chain, ttl)) => {
                    cache.insert(
                        url.clone(),
                        Slot::Ready {
                            chain: chain.clone(),
                            fresh_until: now + ttl,
                        },
                    );
                    Ok(chain)
                }
                Err(error) => match stale {
                    // Serve stale on refresh failure; retry after the negative TTL.
                    Some(chain) => {
                        tracing::warn!(%url, ?error, "certificate refresh failed; serving the cached copy");
                        cache.insert(
                            url.clone(),
                            Slot::Ready {
                                chain: chain.clone(),
                                fresh_until: now + s.negative_ttl,
                            },
                        );
                        Ok(chain)
                    }
                    None => {
                        tracing::info!(%url, ?error, "certificate fetch failed");
                        cache.insert(
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

    /// Cached entries (for metrics and tests).
    pub fn cached(&self) -> usize {
        self.lock().len()
    }
}
