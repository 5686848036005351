//! The assess phase in the call path: the call's signals, its velocity
//! counts, and the decision under the active policy (and the shadow policy
//! beside it). Counts are taken before the decision so that the call itself
//! is counted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::api::metrics::{Metrics, Phase};
use crate::config::RiskConfig;
use crate::risk::assess::{self, Decision};
use crate::risk::policy::{Action, Policy};
use crate::risk::signals::Signals;
use crate::sip::message::SipMessage;
use crate::stir::verify::Verification;

/// The policies in force and the velocity counters.
pub struct RiskPhase {
    pub policy: Arc<Policy>,
    pub shadow: Option<Arc<Policy>>,
    velocity: Arc<LocalVelocity>,
}

impl RiskPhase {
    /// `None` when no policy is configured. On reload, `previous` hands
    /// over its velocity counters.
    pub fn from_config(cfg: &RiskConfig, previous: Option<&RiskPhase>) -> Option<RiskPhase> {
        let policy = cfg.policy.clone()?;
        Some(RiskPhase {
            policy,
            shadow: cfg.shadow.clone(),
            velocity: previous
                .map(|p| p.velocity.clone())
                .unwrap_or_else(|| Arc::new(LocalVelocity::default())),
        })
    }

    /// Signals, velocity, decision; counted in metrics and logged.
    pub fn run(
        &self,
        msg: &SipMessage,
        verification: Option<&Verification>,
        metrics: &Metrics,
    ) -> (Decision, Signals) {
        let started = Instant::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut s = assess::signals(msg, verification, &self.policy, now.as_secs() as i64);
        let policies: Vec<&Policy> = std::iter::once(self.policy.as_ref())
            .chain(self.shadow.as_deref())
            .collect();
        let now_ms = now.as_millis() as u64;
        s.velocity = assess::velocity_requests(&policies, &s)
            .into_iter()
            .map(|r| {
                let n = self
                    .velocity
                    .hit(&r.key, r.window.as_millis() as u64, now_ms);
                (r.name, Some(n))
            })
            .collect();
        let d = assess::decide(&self.policy, self.shadow.as_deref(), &s);
        let action = match d.verdict.action {
            Action::Tag => 0,
            Action::Review => 1,
            Action::Reject(_) => 2,
        };
        metrics.decision(d.verdict.level as usize, action, d.disagrees());
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

/// Sliding-window event counters kept in this process (bounded).
#[derive(Default)]
pub struct LocalVelocity {
    events: Mutex<HashMap<String, VecDeque<u64>>>,
}

/// Bounds of [`LocalVelocity`]: keys, and events remembered per key (a
/// count saturates there, well above any sensible rule threshold).
const MAX_KEYS: usize = 200_000;
const MAX_EVENTS_PER_KEY: usize = 10_000;

impl LocalVelocity {
    /// Records an event for `key` at `now_ms`; returns the events within
    /// the last `window_ms`, this one included.
    pub fn hit(&self, key: &str, window_ms: u64, now_ms: u64) -> u64 {
        let mut map = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now_ms.saturating_sub(*t) < window_ms)
            });
            if map.len() >= MAX_KEYS {
                // Still full of live keys: forget the quietest.
                if let Some(k) = map
                    .iter()
                    .min_by_key(|(_, q)| q.back().copied().unwrap_or(0))
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&k);
                }
            }
        }
        let q = map.entry(key.to_owned()).or_default();
        while q
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= window_ms)
        {
            q.pop_front();
        }
        if q.len() >= MAX_EVENTS_PER_KEY {
            q.pop_front();
        }
        q.push_back(now_ms);
        q.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_edges() {
        let v = LocalVelocity::default();
        assert_eq!(v.hit("a", 1000, 10_000), 1);
        assert_eq!(v.hit("a", 1000, 10_500), 2);
        assert_eq!(v.hit("a", 1000, 10_999), 3);
        assert_eq!(
            v.hit("a", 1000, 11_000),
            3,
            "the event at 10,000 left the window"
        );
        assert_eq!(v.hit("b", 1000, 11_000), 1);
        assert_eq!(v.hit("a", 1000, 13_000), 1);
    }
}
