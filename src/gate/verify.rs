//! The verify phase in the call path: initial INVITEs from the trunk are
//! verified (STIR/SHAKEN) before the proxy core forwards them. The caller
//! gets 100 Trying at once; the call waits at most the certificate deadline
//! (DESIGN.md: verify never blocks a call on the network), then goes on
//! marked with `verstat` — or is refused, when configured.

use std::sync::Arc;
use std::time::Instant;

use crate::api::metrics::{Metrics, Phase};
use crate::config::{StirConfig, StirFailure};
use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::parties::Parties;
use crate::state::State;
use crate::stir::cache::FetchMetrics;
use crate::stir::certs::TrustStore;
use crate::stir::fetch::{self, FetchOptions};
use crate::stir::replay::CallInstance;
use crate::stir::service::{Verifier, VerifierSettings};
use crate::stir::verify::{Status, Verification};

/// The verify phase's state in the gate.
pub struct VerifyPhase {
    pub verifier: Arc<Verifier>,
    pub attest_suffix: bool,
    pub reject: bool,
    /// How long a PASSporT signature is remembered for replay detection:
    /// the freshness window plus the allowed skew.
    freshness: std::time::Duration,
}

impl VerifyPhase {
    /// Builds the phase from `[stir]`; `None` when disabled. On reload,
    /// `previous` hands over its certificate cache, so nothing fetched is
    /// lost (the PASSporTs seen live in the gate's [`State`]). With a
    /// shared state store, fetched certificates are shared with the other
    /// instances.
    pub fn from_config(
        cfg: &StirConfig,
        previous: Option<&VerifyPhase>,
        counters: &FetchMetrics,
        state: &Arc<State>,
        offload: Option<&Arc<crate::stir::offload::SignatureOffload>>,
    ) -> Result<Option<VerifyPhase>, String> {
        if !cfg.enabled {
            return Ok(None);
        }
        let dir = cfg
            .trust_dir
            .as_ref()
            .ok_or("stir.trust_dir: required when stir.enabled = true")?;
        let mut trust = TrustStore::from_dir(dir).map_err(|e| format!("stir.trust_dir: {e}"))?;
        for (i, f) in cfg.crl_files.iter().enumerate() {
            let data = std::fs::read(f)
                .map_err(|e| format!("stir.crl_files[{i}]: {}: {e}", f.display()))?;
            trust
                .add_crl(&data)
                .map_err(|e| format!("stir.crl_files[{i}]: {}: {e}", f.display()))?;
        }
        trust.set_policies(cfg.certificate_policies.clone());
        let tls = fetch::tls_config(&cfg.x5u_ca).map_err(|e| format!("stir.x5u_ca: {e}"))?;
        let settings = VerifierSettings {
            fetch: FetchOptions {
                tls,
                timeout: cfg.deadline.max(std::time::Duration::from_secs(2)),
                max_bytes: 64 * 1024,
                allow_private: cfg.allow_private_x5u,
                proxy: cfg.fetch_proxy.clone(),
            },
            deadline: cfg.deadline,
            freshness_secs: cfg.freshness_secs,
            skew_secs: 5,
            min_cache: std::time::Duration::from_secs(300),
            max_cache: std::time::Duration::from_secs(86_400),
            negative_ttl: std::time::Duration::from_secs(30),
            max_entries: cfg.cache_entries,
            max_cache_bytes: cfg.cache_mib << 20,
            crl_fetch: cfg.crl_fetch,
            max_fetches_per_call: cfg.max_fetches_per_call,
            max_crl_dps: cfg.max_crl_dps,
            counters: counters.clone(),
            shared: state.is_shared().then(|| state.clone()),
            offload: offload.cloned(),
        };
        let verifier = Verifier::new(settings, trust);
        if let Some(old) = previous {
            verifier.adopt_cache(&old.verifier);
        }
        if let Some(dir) = &cfg.preload_dir {
            let n = verifier
                .preload(dir)
                .map_err(|e| format!("stir.preload_dir: {e}"))?;
            tracing::info!(dir = %dir.display(), chains = n, "certificates pre-loaded");
        }
        Ok(Some(VerifyPhase {
            verifier,
            attest_suffix: cfg.attest_suffix,
            reject: cfg.on_failure == StirFailure::Reject,
            freshness: std::time::Duration::from_secs(
                u64::try_from(cfg.freshness_secs).unwrap_or(60) + 5,
            ),
        }))
    }

    /// Records that the call `msg` starts uses the verified PASSporT of
    /// `identity` ([`crate::stir::replay`]: keyed on its signed content,
    /// owned by Call-ID, From tag and Via branch); returns the Call-ID of
    /// the other call that already used it within the window, if any (on
    /// any instance, when state is shared).
    async fn replay_of(&self, identity: &[u8], msg: &SipMessage, state: &State) -> Option<String> {
        let token = crate::stir::identity::IdentityHeader::parse(identity)
            .ok()?
            .token;
        let key = crate::stir::replay::passport_key(token)?;
        let branch = msg
            .top_via()
            .ok()
            .and_then(|v| v.branch)
            .unwrap_or_default();
        let call = CallInstance::new(
            msg.call_id().unwrap_or_default(),
            msg.from_tag().unwrap_or_default(),
            branch,
        );
        let holder = state
            .replay_of(&key, call.as_bytes(), self.freshness)
            .await?;
        Some(CallInstance::call_id_of(holder.as_bytes()))
    }
}

/// Every Identity header value of the request (RFC 8224 §4: one per
/// PASSporT; `shaken`, `div`, `rcd`), in order.
fn identities(msg: &SipMessage) -> Vec<Vec<u8>> {
    msg.headers()
        .iter()
        .filter(|h| h.name == HeaderName::Identity)
        .map(|h| msg.value(h).to_vec())
        .collect()
}

/// The SHAKEN one of them (`ppt=shaken` or no `ppt`), for replay detection.
fn shaken(ids: &[Vec<u8>]) -> Option<&[u8]> {
    ids.iter().map(Vec::as_slice).find(|v| {
        matches!(
            crate::stir::passport::ppt_of(v).as_deref(),
            Some("shaken") | None
        )
    })
}

impl VerifyPhase {
    /// Verifies the Identity headers of an initial INVITE (with replay
    /// detection), counts and logs the result.
    pub async fn run(
        &self,
        msg: &SipMessage,
        parties: &Parties,
        state: &State,
        metrics: &Metrics,
        env: &crate::env::Env,
    ) -> Verification {
        let started = Instant::now();
        let ids = identities(msg);
        let v = match shaken(&ids) {
            Some(id) => {
                let dest: Vec<&str> = parties.called.iter().map(String::as_str).collect();
                let all: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
                let v = self
                    .verifier
                    .verify_call(&all, &parties.calling, &dest, env.unix_secs())
                    .await;
                // Only a verified PASSporT is claimed: a failing one proves
                // nothing and must not fill the table (issue 13).
                if v.status != Status::Passed {
                    v
                } else if let Some(other) = self.replay_of(id, msg, state).await {
                    metrics
                        .stir_fetch
                        .replays
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        call_id = %String::from_utf8_lossy(msg.call_id().unwrap_or_default()),
                        first_call = %other,
                        "PASSporT replayed"
                    );
                    crate::stir::verify::replayed(v, &other)
                } else {
                    v
                }
            }
            None => Verification::absent(),
        };
        metrics.stir_result(match v.status {
            Status::Passed => 0,
            Status::Failed => 1,
            Status::NoValidation => 2,
        });
        if let Some(failure) = &v.failure {
            metrics.stir_failure(failure.cause);
        }
        metrics.observe(Phase::Verify, started.elapsed());
        // An attestation is logged as one only when it verified; else as
        // the claim it is.
        let (attest, claimed_attest) = match (v.status, v.attest.as_deref()) {
            (Status::Passed, a) => (a.unwrap_or("-"), "-"),
            (_, a) => ("-", a.unwrap_or("-")),
        };
        tracing::info!(
            call_id = %String::from_utf8_lossy(msg.call_id().unwrap_or_default()),
            status = ?v.status,
            attest,
            claimed_attest,
            cause = v.failure.as_ref().map(|f| f.text.as_str()).or(v.unavailable.as_deref()).unwrap_or("-"),
            "STIR verification"
        );
        v
    }
}
