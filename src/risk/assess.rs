//! The assess phase: a call's signals from its SIP request and
//! verification, the velocity windows to count, and the decision under the
//! active policy (and the shadow policy beside it).

use serde::Serialize;

use super::policy::{Action, Policy, Velocity, VelocityKey, Verdict};
use super::signals::{self, Signals};
use crate::sip::message::SipMessage;
use crate::sip::parties::Parties;
use crate::stir::passport::canonical_tn;
use crate::stir::verify::Verification;

/// Signals from the request and the verification, except velocity (the
/// gate counts those with the state store: see [`velocity_requests`]).
pub fn signals(
    msg: &SipMessage,
    verification: Option<&Verification>,
    policy: &Policy,
    now_secs: i64,
) -> Signals {
    signals_of(msg, &Parties::of(msg), verification, policy, now_secs)
}

/// [`signals`] with the request's parties already read.
pub fn signals_of(
    msg: &SipMessage,
    parties: &Parties,
    verification: Option<&Verification>,
    policy: &Policy,
    now_secs: i64,
) -> Signals {
    let n = &policy.numbers;
    let mut s = Signals::default();
    signals::stir_signals(&mut s, verification, now_secs);
    s.origid = verification.and_then(|v| v.origid.clone());
    s.calling = canonical_tn(&parties.calling);
    s.called = parties
        .called
        .iter()
        .map(|c| canonical_tn(c))
        .find(|c| !c.is_empty())
        .unwrap_or_default();
    s.anonymous = parties.anonymous;
    s.e164_invalid = !signals::e164_plausible(&s.calling);
    s.unassigned = signals::has_prefix(&s.calling, &n.unassigned);
    s.own_number = signals::has_prefix(&s.calling, &n.own);
    s.lists = policy.lists_of(&s.calling);
    let number = |u: &Option<String>| u.as_deref().map(canonical_tn).unwrap_or_default();
    let (from_number, pai_number) = (number(&parties.from_user), number(&parties.pai_user));
    s.from_pai_mismatch =
        !from_number.is_empty() && !pai_number.is_empty() && from_number != pai_number;
    s.diversion_header =
        msg.other("Diversion").next().is_some() || msg.other("History-Info").next().is_some();
    s.user_agent_unexpected = !n.user_agents.is_empty()
        && !msg.other("User-Agent").next().is_some_and(|ua| {
            let ua = String::from_utf8_lossy(ua);
            n.user_agents.iter().any(|p| ua.starts_with(p.as_str()))
        });
    s.pai_foreign_domain = !n.trunk_domains.is_empty()
        && !parties
            .asserted_host
            .as_ref()
            .is_some_and(|h| n.trunk_domains.contains(h));
    (s.hour, s.weekday) = signals::hour_and_weekday(now_secs, n.utc_offset_minutes);
    s
}

/// One velocity window to count for this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VelocityRequest {
    pub name: String,
    /// State-store key: the window's name and the counted value.
    pub key: String,
    pub window: std::time::Duration,
}

/// The velocity windows of the policies (by name; the first definition of
/// a name wins) with this call's keys. A window whose value is missing
/// (no origid, no number) is not counted and stays unavailable.
pub fn velocity_requests(policies: &[&Policy], s: &Signals) -> Vec<VelocityRequest> {
    let mut out: Vec<VelocityRequest> = Vec::new();
    for v in policies.iter().flat_map(|p| p.velocity.iter()) {
        if out.iter().any(|r| r.name == v.name) {
            continue;
        }
        if let Some(value) = key_value(v, s) {
            out.push(VelocityRequest {
                name: v.name.clone(),
                key: format!("v:{}:{value}", v.name),
                window: v.window,
            });
        }
    }
    out
}

fn key_value(v: &Velocity, s: &Signals) -> Option<String> {
    let nonempty = |x: &str| (!x.is_empty()).then(|| x.to_owned());
    match v.key {
        VelocityKey::Calling => nonempty(&s.calling),
        VelocityKey::Called => nonempty(&s.called),
        VelocityKey::Origid => s.origid.clone().filter(|o| !o.is_empty()),
        VelocityKey::CallingPrefix(n) => (s.calling.len() >= n).then(|| s.calling[..n].to_owned()),
    }
}

/// A decision on one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Unique id, shown to the agent and in the audit.
    pub id: String,
    pub verdict: Verdict,
    /// The shadow policy's verdict, when one runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Verdict>,
    /// Where a `review` call goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Decision {
    /// Whether the shadow policy would have treated the call differently
    /// (level or action).
    pub fn disagrees(&self) -> bool {
        self.shadow
            .as_ref()
            .is_some_and(|s| s.level != self.verdict.level || s.action != self.verdict.action)
    }
}

/// Decides under the active policy (and the shadow, if any); `id` is the
/// decision's id (from the pipeline's [`crate::env::Env`]).
pub fn decide(active: &Policy, shadow: Option<&Policy>, s: &Signals, id: String) -> Decision {
    let verdict = active.decide(s);
    let target = (verdict.action == Action::Review)
        .then(|| active.review_uri.clone())
        .flatten();
    Decision {
        id,
        shadow: shadow.map(|p| p.decide(&number_signals_for(p, s))),
        verdict,
        target,
    }
}

/// The signals as `policy` sees them: list membership and the number
/// ranges (unassigned, own numbers) come from that policy's own lists and
/// `[numbers]`, so a shadow policy with lists of its own is judged on
/// them. The other signals do not depend on the policy.
fn number_signals_for(policy: &Policy, s: &Signals) -> Signals {
    let n = &policy.numbers;
    let mut own = s.clone();
    own.lists = policy.lists_of(&s.calling);
    own.unassigned = signals::has_prefix(&s.calling, &n.unassigned);
    own.own_number = signals::has_prefix(&s.calling, &n.own);
    own
}
