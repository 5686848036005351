//! The assess phase in the call path: the call's signals, its velocity
//! counts, and the decision under the active policy (and the shadow policy
//! beside it). Counts are taken before the decision so that the call itself
//! is counted.

use std::sync::Arc;
use std::time::Instant;

use crate::api::metrics::{Metrics, Phase};
use crate::config::RiskConfig;
use crate::env::Env;
use crate::risk::assess::{self, Decision};
use crate::risk::policy::{Action, Policy};
use crate::risk::signals::Signals;
use crate::sip::message::SipMessage;
use crate::sip::parties::Parties;
use crate::state::{State, WindowEvent};
use crate::stir::verify::Verification;

/// The policies in force. Velocity is counted in the gate's [`State`]
/// (local, or shared with other instances), which outlives reloads.
pub struct RiskPhase {
    pub policy: Arc<Policy>,
    pub shadow: Option<Arc<Policy>>,
    /// Since when this pair of versions is in force, and its decisions.
    pub tally: Arc<PolicyTally>,
}

/// What the operator's `ctl policy` shows of one active/shadow pair:
/// when it was put in force and how often the shadow disagreed. Kept
/// across reloads that leave both versions as they were.
#[derive(Debug)]
pub struct PolicyTally {
    pub loaded_unix_ms: i64,
    pub decisions: std::sync::atomic::AtomicU64,
    pub disagreements: std::sync::atomic::AtomicU64,
}

impl RiskPhase {
    /// `None` when no policy is configured. The tally of `previous` goes
    /// on when neither version changed; `now_ms` dates a new one.
    pub fn from_config(
        cfg: &RiskConfig,
        previous: Option<&RiskPhase>,
        now_ms: i64,
    ) -> Option<RiskPhase> {
        let policy = cfg.policy.clone()?;
        let shadow = cfg.shadow.clone();
        let versions = |p: &Arc<Policy>, s: &Option<Arc<Policy>>| {
            (p.version.clone(), s.as_ref().map(|s| s.version.clone()))
        };
        let tally = match previous {
            Some(prev) if versions(&prev.policy, &prev.shadow) == versions(&policy, &shadow) => {
                prev.tally.clone()
            }
            _ => Arc::new(PolicyTally {
                loaded_unix_ms: now_ms,
                decisions: Default::default(),
                disagreements: Default::default(),
            }),
        };
        Some(RiskPhase {
            policy,
            shadow,
            tally,
        })
    }

    /// Signals, velocity, decision; counted in metrics and logged. Waits
    /// for the shared state store at most its deadline.
    pub async fn run(
        &self,
        msg: &SipMessage,
        parties: &Parties,
        verification: Option<&Verification>,
        state: &State,
        metrics: &Metrics,
        env: &Env,
    ) -> (Decision, Signals) {
        let started = Instant::now();
        let now_ms = env.unix_ms();
        let mut s = assess::signals_of(msg, parties, verification, &self.policy, env.unix_secs());
        let policies: Vec<&Policy> = std::iter::once(self.policy.as_ref())
            .chain(self.shadow.as_deref())
            .collect();
        let requests = assess::velocity_requests(&policies, &s);
        let events: Vec<WindowEvent> = requests
            .iter()
            .map(|r| WindowEvent {
                key: r.key.clone(),
                window: r.window,
            })
            .collect();
        let counts = state
            .count(&events, u64::try_from(now_ms).unwrap_or(0))
            .await;
        s.velocity = requests
            .into_iter()
            .zip(counts)
            .map(|(r, n)| (r.name, Some(n)))
            .collect();
        let d = assess::decide(&self.policy, self.shadow.as_deref(), &s, env.decision_id());
        let action = match d.verdict.action {
            Action::Tag => 0,
            Action::Review => 1,
            Action::Reject(_) => 2,
        };
        metrics.decision(d.verdict.level as usize, action, d.disagrees());
        metrics.decision_reasons(d.verdict.reasons());
        self.tally
            .decisions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if d.disagrees() {
            self.tally
                .disagreements
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        metrics.observe(Phase::Assess, started.elapsed());
        tracing::info!(
            call_id = %String::from_utf8_lossy(msg.call_id().unwrap_or_default()),
            decision = %d.id,
            level = d.verdict.level.as_str(),
            score = d.verdict.score,
            action = d.verdict.action.as_str(),
            reasons = %d.verdict.reasons().collect::<Vec<_>>().join(","),
            policy = %d.verdict.policy_version,
            shadow_disagrees = d.disagrees(),
            "risk decision"
        );
        (d, s)
    }
}
