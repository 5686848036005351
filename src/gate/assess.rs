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
}

impl RiskPhase {
    /// `None` when no policy is configured.
    pub fn from_config(cfg: &RiskConfig) -> Option<RiskPhase> {
        let policy = cfg.policy.clone()?;
        Some(RiskPhase {
            policy,
            shadow: cfg.shadow.clone(),
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
