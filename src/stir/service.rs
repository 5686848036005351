//! The verification service as callgate runs it: certificates fetched
//! asynchronously and cached, concurrent requests for one URL coalesced,
//! each call waiting at most a deadline before it proceeds as
//! `No-TN-Validation` (DESIGN.md: verify never blocks a call on the network).

use std::sync::Arc;
use std::time::Duration;

use super::cache::{
    CacheSettings, FetchBudget, FetchCache, FetchCounters, FetchFailure, FetchMetrics, Outcome,
    Parsed, Refusal,
};
use super::certs::{self, Chain, Crl, FetchedCrls, TrustStore};
use super::divert;
use super::fetch::FetchOptions;
use super::identity::IdentityHeader;
use super::passport::{self, canonical_tn, check_companion, Check, Expect, Passport};
use super::rcd::{self, RcdSource};
use super::verify::{self, DivHop, Status, Verification};
use super::Cause;

/// Identity headers looked at per call (one SHAKEN, `div`s, `rcd`).
const MAX_IDENTITIES: usize = 8;

/// A decoded `div` or `rcd` PASSporT.
struct Companion<'a> {
    header: IdentityHeader<'a>,
    passport: Passport,
}

impl<'a> Companion<'a> {
    fn decode(value: &'a [u8]) -> Option<Companion<'a>> {
        let header = IdentityHeader::parse(value).ok()?;
        let passport = Passport::decode(header.token).ok()?;
        Some(Companion { header, passport })
    }
}

/// Why a companion PASSporT did not verify.
enum CompanionError {
    Failed(Cause, String),
    Unavailable(String),
}

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
    /// Bytes of documents each cache holds at most.
    pub max_cache_bytes: usize,
    /// Fetch CRLs from the certificates' distribution points (of chains
    /// that validate to a trust anchor only).
    pub crl_fetch: bool,
    /// Network fetches (x5u and CRL together) one INVITE may start.
    pub max_fetches_per_call: usize,
    /// CRL distribution points looked at per chain; the others are not
    /// fetched (revocation by them is not checked, recorded as a check).
    pub max_crl_dps: usize,
    /// Where fetch outcomes are counted.
    pub counters: FetchMetrics,
    /// A state store shared with other instances: certificates and CRLs
    /// one instance fetched are used by the others (`None`: not shared).
    pub shared: Option<Arc<crate::state::State>>,
    /// Worker threads for signature checks while signalling is busy
    /// ([`super::offload`]; `None`: always inline).
    pub offload: Option<Arc<super::offload::SignatureOffload>>,
}

/// Verification service: trust anchors, settings, the certificate cache
/// and, when CRL fetching is on, the CRL cache.
pub struct Verifier {
    settings: VerifierSettings,
    trust: TrustStore,
    chains: Arc<FetchCache<Chain>>,
    crls: Option<Arc<FetchCache<Crl>>>,
}

fn parse_chain(body: &[u8]) -> Parsed<Chain> {
    Chain::parse(body)
        .map(|c| (c, None))
        .map_err(|e| format!("certificate response: {e}"))
}

impl Verifier {
    pub fn new(settings: VerifierSettings, trust: TrustStore) -> Arc<Verifier> {
        let cache = |allow_http, counters: &Arc<FetchCounters>| CacheSettings {
            counters: counters.clone(),
            fetch: settings.fetch.clone(),
            allow_http,
            min_ttl: settings.min_cache,
            max_ttl: settings.max_cache,
            negative_ttl: settings.negative_ttl,
            max_entries: settings.max_entries,
            max_bytes: settings.max_cache_bytes,
            shared: settings.shared.clone(),
        };
        Arc::new(Verifier {
            chains: FetchCache::new(cache(false, &settings.counters.x5u), parse_chain),
            crls: settings
                .crl_fetch
                .then(|| FetchCache::new(cache(true, &settings.counters.crl), certs::parse_crl)),
            settings,
            trust,
        })
    }

    /// Verifies one Identity header value for a call.
    pub async fn verify(
        self: &Arc<Self>,
        identity: &[u8],
        orig: &str,
        dest: &[&str],
        now: i64,
    ) -> Verification {
        self.verify_call(&[identity], orig, dest, now).await
    }

    /// Verifies the Identity header values of one call (RFC 8224 §6.2):
    /// the SHAKEN PASSporT, the `div` PASSporTs that lead from its `dest`
    /// to the request's called number (RFC 8946 §6), and an `rcd`
    /// PASSporT (RFC 9795 §8), whose claims are kept when it verifies. All
    /// certificate fetches of the call share one deadline.
    pub async fn verify_call(
        self: &Arc<Self>,
        identities: &[&[u8]],
        orig: &str,
        dest: &[&str],
        now: i64,
    ) -> Verification {
        let until = tokio::time::Instant::now() + self.settings.deadline;
        let budget = FetchBudget::new(self.settings.max_fetches_per_call, &self.settings.counters);
        let (mut shaken, mut divs, mut rcds) = (None, Vec::new(), Vec::new());
        let mut malformed = Vec::new();
        for value in identities.iter().take(MAX_IDENTITIES) {
            let ppt = passport::ppt_of(value);
            match ppt.as_deref() {
                Some(kind @ ("div" | "rcd")) => match Companion::decode(value) {
                    Some(c) if kind == "div" => divs.push(c),
                    Some(c) => rcds.push(c),
                    None => malformed.push(Check::new(
                        if kind == "div" { "div" } else { "rcd" },
                        false,
                        "malformed PASSporT, not used",
                    )),
                },
                Some("shaken") | None if shaken.is_none() => shaken = Some(*value),
                _ => {} // other PASSporT types are not for this verifier
            }
        }
        let Some(shaken) = shaken else {
            return Verification::absent();
        };
        let div_passports: Vec<&Passport> = divs.iter().map(|d| &d.passport).collect();
        // The SHAKEN `dest` may name the number the call was for before it
        // was diverted.
        let widened = divert::reachable(dest, &div_passports);
        let widened: Vec<&str> = widened.iter().map(String::as_str).collect();
        let mut v = self
            .verify_shaken(shaken, orig, &widened, now, until, &budget)
            .await;
        v.checks.extend(malformed);
        if divert::over_bounds(&div_passports) {
            v.checks.push(Check::new(
                "div",
                false,
                format!(
                    "more than {} div PASSporTs, or one naming more than {} numbers: those are not followed",
                    divert::MAX_DIV_PASSPORTS,
                    divert::MAX_DIV_DEST_TNS
                ),
            ));
        }
        if v.status != Status::Passed {
            return v;
        }
        let Some(hops) = divert::path(&v.dest, dest, &div_passports) else {
            return v.fail_companion(
                "div",
                Cause::InvalidIdentityHeader,
                "no chain of div PASSporTs leads to the called number".into(),
            );
        };
        let expect = self.expect(orig, dest, now);
        for i in hops {
            let d = &divs[i];
            let from = d
                .passport
                .claims
                .div
                .as_ref()
                .and_then(|x| x.tn.clone())
                .unwrap_or_default();
            match self
                .companion(d, "div", &expect, &from, until, &budget)
                .await
            {
                Ok(()) => v.diversion.push(DivHop {
                    from,
                    to: d.passport.claims.dest.tn.clone(),
                    x5u: d.passport.header.x5u.clone(),
                }),
                Err(CompanionError::Failed(cause, why)) => {
                    return v.fail_companion("div", cause, why)
                }
                Err(CompanionError::Unavailable(why)) => {
                    return v.companion_unavailable("div", why)
                }
            }
        }
        if let Some(r) = rcds.first() {
            let same_dest = r
                .passport
                .claims
                .dest
                .tn
                .iter()
                .any(|t| v.dest.iter().any(|d| canonical_tn(d) == canonical_tn(t)));
            let outcome = if !same_dest {
                Err("dest differs from the SHAKEN PASSporT's".to_owned())
            } else if r.passport.claims.rcd.is_none() {
                Err("no rcd claim".to_owned())
            } else {
                match self
                    .companion(r, "rcd", &expect, orig, until, &budget)
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(CompanionError::Failed(_, why) | CompanionError::Unavailable(why)) => {
                        Err(why)
                    }
                }
            };
            // A failed rcd PASSporT does not fail the call: its claims are
            // simply not used (RFC 9795 §8).
            match outcome {
                Ok(()) => {
                    v.rcd = rcd::from_claims(&r.passport.claims, RcdSource::Rcd);
                    v.checks
                        .push(Check::new("rcd", true, "rcd PASSporT verifies"));
                }
                Err(why) => v.checks.push(Check::new("rcd", false, why)),
            }
        }
        v
    }

    fn expect<'a>(&self, orig: &'a str, dest: &'a [&'a str], now: i64) -> Expect<'a> {
        Expect {
            orig,
            dest,
            now,
            freshness_secs: self.settings.freshness_secs,
            skew_secs: self.settings.skew_secs,
        }
    }

    /// Verifies a companion PASSporT: shared checks, certificate (covering
    /// `cover_tn` if it is a delegate certificate) and signature.
    async fn companion(
        self: &Arc<Self>,
        c: &Companion<'_>,
        ppt: &str,
        expect: &Expect<'_>,
        cover_tn: &str,
        until: tokio::time::Instant,
        budget: &FetchBudget,
    ) -> Result<(), CompanionError> {
        let (_, first) = check_companion(&c.header, &c.passport, ppt, expect);
        if let Some((cause, why)) = first {
            return Err(CompanionError::Failed(cause, why));
        }
        let url = c.passport.header.x5u.clone().unwrap_or_default();
        let chain = match tokio::time::timeout_at(until, self.chain(&url, budget)).await {
            Err(_) => return Err(CompanionError::Unavailable("deadline passed".into())),
            Ok(Err(FetchFailure::Unavailable(why))) => {
                return Err(CompanionError::Unavailable(why))
            }
            Ok(Err(FetchFailure::Bad(why))) => {
                return Err(CompanionError::Failed(Cause::BadIdentityInfo, why))
            }
            Ok(Ok(chain)) => chain,
        };
        let iat = c.passport.claims.iat.unwrap_or(0);
        let sti = self
            .validated(&chain, iat, cover_tn, until, budget, &mut Vec::new())
            .await
            .map_err(|(cause, why)| CompanionError::Failed(cause, format!("certificate: {why}")))?;
        verify::signature_ok(&c.passport, &sti.key)
            .map_err(|why| CompanionError::Failed(Cause::InvalidIdentityHeader, why))
    }

    /// Verifies the SHAKEN PASSporT, fetching its certificate by `until`.
    async fn verify_shaken(
        self: &Arc<Self>,
        identity: &[u8],
        orig: &str,
        dest: &[&str],
        now: i64,
        until: tokio::time::Instant,
        budget: &FetchBudget,
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
        let started = std::time::Instant::now();
        let chain = match tokio::time::timeout_at(until, self.chain(&url, budget)).await {
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
            Ok(Err(FetchFailure::Unavailable(why))) => {
                return verify::unavailable(passport, checks, why)
            }
            Ok(Err(FetchFailure::Bad(why))) => {
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
        let mut checks = checks;
        match self
            .validated(&chain, iat, orig, until, budget, &mut checks)
            .await
        {
            Ok(sti) => {
                let detail = match (&sti.spc, sti.tn_auth.is_delegate()) {
                    (_, true) => "chain valid at iat; delegate certificate covers orig".to_owned(),
                    (Some(spc), false) => format!("chain valid at iat; SPC {spc}"),
                    (None, false) => "chain valid at iat".to_owned(),
                };
                checks.push(Check::new("certificate", true, detail).timed(started.elapsed()));
                let mut passport = passport;
                let sig = self.check_signature(&mut passport, sti.key).await;
                let signer = verify::Signer {
                    spc: sti.spc,
                    subject: sti.subject,
                };
                verify::finish_checked(passport, checks, sig, signer)
            }
            Err((cause, why)) => verify::failed_after(passport, checks, "certificate", cause, why),
        }
    }

    /// The chain at `url`: cached, joined to a fetch in flight, or fetched
    /// (from the call's `budget`). The fetch is not tied to the call's
    /// deadline: a slow server's chain serves the next call.
    pub async fn chain(self: &Arc<Self>, url: &str, budget: &FetchBudget) -> Outcome<Chain> {
        self.chains.get(url, budget, None).await
    }

    /// Validates `chain` (for `cover_tn`, at `iat`), with revocation by
    /// the CRLs of its distribution points when CRL fetching is on. Those
    /// are fetched only for a chain that validates to a trust anchor
    /// without them (RFC 5280 §6.3 applies to a certification path, and
    /// the distribution points of a chain nobody vouches for are an
    /// attacker's list of URLs — issue 13); then validated again with them.
    async fn validated(
        self: &Arc<Self>,
        chain: &Chain,
        iat: i64,
        cover_tn: &str,
        until: tokio::time::Instant,
        budget: &FetchBudget,
        checks: &mut Vec<Check>,
    ) -> Result<certs::StiCert, (Cause, String)> {
        let Some(cache) = &self.crls else {
            return certs::validate(chain, &self.trust, iat, cover_tn, &FetchedCrls::default());
        };
        if !certs::remembered(chain, iat, cache.generation()) {
            let first = FetchedCrls::unfetched();
            if let Err(e) = certs::validate(chain, &self.trust, iat, cover_tn, &first) {
                if !chain.crl_urls().is_empty() {
                    self.settings.counters.refused(Refusal::UnvalidatedChain);
                }
                return Err(e);
            }
        }
        let crls = self.fetched_crls(cache, chain, until, budget, checks).await;
        certs::validate(chain, &self.trust, iat, cover_tn, &crls)
    }

    /// The CRLs of the chain's first `max_crl_dps` distribution points:
    /// cached, or fetched by `until` (abandoned then) from the call's
    /// `budget`. A CRL that cannot be had in time is left out — revocation
    /// by it is not checked (soft fail, logged and recorded as a check) —
    /// so a CRL server never holds calls.
    async fn fetched_crls(
        &self,
        cache: &Arc<FetchCache<Crl>>,
        chain: &Chain,
        until: tokio::time::Instant,
        budget: &FetchBudget,
        checks: &mut Vec<Check>,
    ) -> FetchedCrls {
        let mut out = FetchedCrls::default();
        let urls = chain.crl_urls();
        let limit = self.settings.max_crl_dps;
        if urls.len() > limit {
            for _ in limit..urls.len() {
                self.settings.counters.refused(Refusal::PerCallLimit);
            }
            checks.push(Check::new(
                "crl",
                false,
                format!(
                    "{} distribution points, {limit} looked at; revocation by the others not checked",
                    urls.len()
                ),
            ));
        }
        for url in urls.iter().take(limit) {
            match tokio::time::timeout_at(until, cache.get(url, budget, Some(until))).await {
                Ok(Ok(crl)) => out.crls.push(crl),
                Ok(Err(FetchFailure::Unavailable(why) | FetchFailure::Bad(why))) => {
                    checks.push(Check::new(
                        "crl",
                        false,
                        format!("{url}: {why}; revocation not checked"),
                    ))
                }
                Err(_) => checks.push(Check::new(
                    "crl",
                    false,
                    format!("{url}: not fetched in time; revocation not checked"),
                )),
            }
        }
        out.generation = cache.generation();
        out
    }

    /// The ES256 check of the SHAKEN PASSporT: on a worker thread while
    /// the offload pool is on (the signing input and signature travel
    /// there and back), else here.
    async fn check_signature(
        &self,
        passport: &mut Passport,
        key: super::keys::PublicKey,
    ) -> verify::SignatureCheck {
        let Some(pool) = self.settings.offload.as_ref().filter(|p| p.is_active()) else {
            return verify::check_signature(
                passport.signing_input.as_bytes(),
                &passport.signature,
                &key,
            );
        };
        let input = std::mem::take(&mut passport.signing_input);
        let signature = std::mem::take(&mut passport.signature);
        let done = pool
            .run(move || {
                let check = verify::check_signature(input.as_bytes(), &signature, &key);
                (check, input, signature)
            })
            .await;
        match done {
            Some((check, input, signature)) => {
                passport.signing_input = input;
                passport.signature = signature;
                check
            }
            // A check that panicked never passes.
            None => verify::SignatureCheck {
                result: Err("the signature check did not complete".to_owned()),
                took: Duration::ZERO,
            },
        }
    }

    /// Cached certificate chains (for metrics and tests).
    pub fn cached(&self) -> usize {
        self.chains.len()
    }

    /// Takes over the certificate chains another verifier fetched (on
    /// reload), so that a new trust configuration does not cost a fetch
    /// per signer. Each chain is validated afresh under the new trust store.
    pub fn adopt_cache(&self, old: &Verifier) {
        self.chains.adopt(
            old.chains
                .ready()
                .into_iter()
                .map(|(url, chain, until)| (url, Chain::new(chain.certs.clone()), until))
                .collect(),
        );
    }

    /// Loads certificate chains from `dir` into the cache, as if fetched:
    /// each `*.pem` file holds a chain (end entity first) and names the
    /// `x5u` it is served at on a line `x5u: https://...` before the first
    /// PEM block. They stay fresh for the maximum cache lifetime, are then
    /// refreshed from the network, and served stale if that fails.
    /// Returns how many chains were loaded; an error names the file.
    pub fn preload(&self, dir: &std::path::Path) -> Result<usize, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut loaded = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("pem") {
                continue;
            }
            let body = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let text = String::from_utf8_lossy(&body);
            let url = text
                .lines()
                .take_while(|l| !l.starts_with("-----BEGIN"))
                .find_map(|l| l.trim().trim_start_matches('#').trim().strip_prefix("x5u:"))
                .map(|u| u.trim().to_owned())
                .filter(|u| u.starts_with("https://"))
                .ok_or_else(|| {
                    format!(
                        "{}: no \"x5u: https://...\" line before the certificates",
                        p.display()
                    )
                })?;
            let chain = Chain::parse(&body).map_err(|e| format!("{}: {e}", p.display()))?;
            loaded.push((url, chain));
        }
        let n = loaded.len();
        for (url, chain) in loaded {
            self.chains.insert(url, chain, self.settings.max_cache);
        }
        Ok(n)
    }
}
