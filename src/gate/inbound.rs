//! The inbound call path as named phases (DESIGN.md): an initial INVITE
//! from the trunk is **verified** (STIR/SHAKEN), **assessed** (signals and
//! the policy's decision), **routed** (to the PBX, the review queue, or
//! refused) and **tagged** (`verstat`, `X-Callgate-*`) before the proxy core
//! forwards it. The caller gets 100 Trying with the forwarded INVITE, or at
//! once when a phase has to wait, and its retransmissions are absorbed
//! while the phases run; the call waits at most the
//! certificate deadline (verify never blocks a call on the network).

use std::sync::Arc;
use std::time::Instant;

use super::assess::RiskPhase;
use super::verify::VerifyPhase;
use crate::audit::{AuditRecord, FiredRule, Json};
use crate::risk::assess::Decision;
use crate::risk::policy::Action;
use crate::risk::signals::Signals;
use crate::risk::tags;
use crate::sip::message::SipMessage;
use crate::sip::parties::Parties;
use crate::sip::proxy::{Outgoing, Peer};
use crate::sip::response::build_response;
use crate::stir::mark::{self, Marking};
use crate::stir::verify::Verification;

/// The phases an inbound INVITE goes through, as configured when it arrived.
#[derive(Clone)]
pub struct Inbound {
    pub verify: Option<Arc<VerifyPhase>>,
    pub risk: Option<Arc<RiskPhase>>,
}

/// Key of an INVITE in flight through the phases: Call-ID + top branch.
fn pending_key(msg: &SipMessage) -> Vec<u8> {
    let mut k = msg.call_id().unwrap_or_default().to_vec();
    k.push(0);
    k.extend_from_slice(
        msg.top_via()
            .ok()
            .and_then(|v| v.branch)
            .unwrap_or_default(),
    );
    k
}

/// The route and tag phases: what the proxy core does with the INVITE.
/// A STIR rejection (`on_failure = "reject"`) comes first; then the risk
/// action: reject (603/608), review (retarget with History-Info) or tag.
pub fn marking(
    msg: &SipMessage,
    verify: Option<(&VerifyPhase, &Verification)>,
    decision: Option<&Decision>,
) -> Marking {
    let mut m = match verify {
        Some((phase, v)) => mark::marking(v, phase.attest_suffix, phase.reject),
        None => Marking::default(),
    };
    if m.reject.is_some() {
        return m;
    }
    let Some(d) = decision else { return m };
    match d.verdict.action {
        Action::Reject(code) => {
            let phrase = if code == 608 { "Rejected" } else { "Decline" };
            m.reject = Some((code, phrase.to_owned()));
        }
        Action::Review => {
            if let Some(target) = &d.target {
                let original =
                    String::from_utf8_lossy(msg.request_uri().unwrap_or_default()).into_owned();
                let previous = tags::last_index(msg.other("History-Info"));
                m.headers.push(tags::history_info(
                    &original,
                    target,
                    d,
                    previous.as_deref(),
                ));
                m.request_uri = Some(target.clone());
            }
        }
        Action::Tag => {}
    }
    m.headers.extend(tags::headers(d, verify.map(|(_, v)| v)));
    m
}

/// Runs the phases at once on this thread when nothing in them has to
/// wait (no Identity header, or certificates cached, and local state or a
/// quick answer): most calls then cost no task spawn and no thread wake-up,
/// and `then` gets `waited = false`. Only when a phase waits (a certificate
/// fetch, the shared state store) does the rest continue as a task:
/// `on_wait` runs first, here, and `then` later with `waited = true`.
/// Legitimate by the `Future` contract: after the first poll (with a no-op
/// waker), the task's polls register the waker that counts, and a spawned
/// task is polled at once.
fn run_inline_or_spawn<T: Send + 'static>(
    phases: impl std::future::Future<Output = T> + Send + 'static,
    on_wait: impl FnOnce(),
    then: impl FnOnce(T, bool) + Send + 'static,
) {
    let mut phases = Box::pin(phases);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match phases.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(done) => then(done, false),
        std::task::Poll::Pending => {
            on_wait();
            tokio::spawn(async move { then(phases.await, true) });
        }
    }
}

/// The audit record of an inbound decision.
fn audit_record(
    msg: &SipMessage,
    parties: Parties,
    peer: Peer,
    v: Option<&Verification>,
    assessed: Option<&(Decision, Signals)>,
    marking: &Marking,
) -> AuditRecord {
    let (decision, signals) = match assessed {
        Some((d, s)) => (Some(d), Some(s)),
        None => (None, None),
    };
    let verdict = decision.map(|d| &d.verdict);
    let action = match (&marking.reject, verdict.map(|v| v.action)) {
        (Some(_), _) => "reject",
        (None, Some(a)) => a.as_str(),
        (None, None) => "tag",
    };
    AuditRecord {
        decision_id: decision
            .map(|d| d.id.clone())
            .unwrap_or_else(crate::risk::assess::decision_id),
        time_ms: crate::audit::store_now_ms(),
        call_id: String::from_utf8_lossy(msg.call_id().unwrap_or_default()).into_owned(),
        side: peer.side.as_str().to_owned(),
        trunk: peer.addr.ip().to_string(),
        calling: parties.calling,
        called: parties.called.into_iter().next().unwrap_or_default(),
        verification: v.map(Json::of).unwrap_or_else(Json::null),
        signals: signals.map(Json::of).unwrap_or_else(Json::null),
        rules: verdict
            .map(|v| {
                v.fired
                    .iter()
                    .map(|f| FiredRule {
                        code: f.code.clone(),
                        weight: f.weight,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        score: verdict.map(|v| v.score).unwrap_or(0),
        level: verdict
            .map(|v| v.level.as_str().to_owned())
            .unwrap_or_default(),
        action: action.to_owned(),
        target: marking.request_uri.clone(),
        restrict: verdict.map(|v| v.restrict.clone()).unwrap_or_default(),
        policy_version: verdict
            .map(|v| v.policy_version.clone())
            .unwrap_or_default(),
        shadow: decision.and_then(|d| d.shadow.as_ref()).map(Json::of),
        // Stored from the received bytes by the audit writer (see
        // `Audit::record_with_invite`).
        invite: None,
    }
}

impl super::Gate {
    /// Takes an initial trunk INVITE into the inbound phases. Returns
    /// `false` when the message should go straight to the core instead.
    pub(super) fn inbound(self: &Arc<Self>, phases: Inbound, peer: Peer, msg: SipMessage) -> bool {
        if super::lock(&self.core).knows(&msg) {
            return false; // a retransmission of a call already through
        }
        let key = pending_key(&msg);
        if !super::lock(&self.inbound_pending).insert(key.clone()) {
            return true; // retransmitted while in the phases: absorbed
        }
        // 100 Trying stops the caller's retransmissions (RFC 3261 §16.2):
        // it leaves with the forward (one dispatch, as the plain proxy
        // does), or at once if a phase has to wait.
        let trying = Outgoing {
            to: peer,
            bytes: build_response(&msg, 100, "Trying", None, &[]),
            client: None,
        };
        let me = self.clone();
        let phases_done = async move {
            let parties = Parties::of(&msg);
            // verify
            let verification = match &phases.verify {
                Some(phase) => Some(phase.run(&msg, &parties, &me.state, &me.metrics).await),
                None => None,
            };
            // assess
            let assessed = match &phases.risk {
                Some(r) => Some(
                    r.run(
                        &msg,
                        &parties,
                        verification.as_ref(),
                        &me.state,
                        &me.metrics,
                    )
                    .await,
                ),
                None => None,
            };
            let decision = assessed.as_ref().map(|(d, _)| d);
            // route + tag
            let mut marking = marking(
                &msg,
                phases.verify.as_deref().zip(verification.as_ref()),
                decision,
            );
            marking.trying_sent = true;
            // audit (queued: the call does not wait for the disk)
            if let Some(audit) = &me.audit {
                let rec = audit_record(
                    &msg,
                    parties,
                    peer,
                    verification.as_ref(),
                    assessed.as_ref(),
                    &marking,
                );
                if audit.store_invite {
                    audit.record_with_invite(rec, msg.bytes().clone());
                } else {
                    audit.record(rec);
                }
                if let Some(id) = msg.call_id() {
                    super::lock(&me.outcomes).open(id);
                }
            }
            (msg, marking)
        };
        let trying_now = trying.clone();
        let me = self.clone();
        let forward = move |(msg, marking): (SipMessage, Marking), waited: bool| {
            let mut out = if waited { Vec::new() } else { vec![trying] };
            let next = {
                let mut core = super::lock(&me.core);
                let _span = tracing::info_span!(
                    "sip",
                    call_id = %String::from_utf8_lossy(msg.call_id().unwrap_or_default()),
                    side = peer.side.as_str()
                )
                .entered();
                core.on_valid_message(peer, msg, Instant::now(), &mut out, Some(marking));
                core.next_deadline()
            };
            super::lock(&me.inbound_pending).remove(&key);
            me.dispatch(out);
            me.rearm(next);
        };
        run_inline_or_spawn(phases_done, || self.dispatch(vec![trying_now]), forward);
        true
    }
}
