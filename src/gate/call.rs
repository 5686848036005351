//! The call phases of an initial INVITE from the trunk, in order: **verify**
//! (STIR/SHAKEN), **assess** (signals and the policy's decision), **route**
//! (the agents, the review queue, or a refusal), **tag** (`verstat`,
//! `X-Callgate-*`), then **audit** (the decision record, queued) — all on
//! one [`CallContext`] — before the pipeline anchors its media and hands it
//! to the proxy core. The caller gets 100 Trying with the forwarded INVITE,
//! or at once when a phase has to wait; its retransmissions are absorbed
//! meanwhile; the call waits at most the certificate deadline (verify never
//! blocks a call on the network).

use std::sync::Arc;

use super::assess::RiskPhase;
use super::context::CallContext;
use super::route::route;
use super::verify::VerifyPhase;
use crate::sip::message::SipMessage;
use crate::sip::proxy::{Outgoing, Peer};
use crate::sip::response::build_response;
use crate::stir::mark;

/// The call phases as configured when the INVITE arrived (a reload never
/// changes the rules under a call).
#[derive(Clone)]
pub struct CallPhases {
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

impl super::Gate {
    /// Takes an initial trunk INVITE through the call phases, then on to
    /// [`Self::forward_call`]. A retransmission while the phases run is
    /// absorbed (100 Trying was, or will be, sent).
    pub(super) fn call(
        self: &Arc<Self>,
        phases: CallPhases,
        peer: Peer,
        msg: SipMessage,
        received: bytes::Bytes,
    ) {
        let key = pending_key(&msg);
        if !super::lock(&self.inbound_pending).insert(key.clone()) {
            return;
        }
        // 100 Trying stops the caller's retransmissions (RFC 3261 §16.2):
        // it leaves with the forward (one dispatch, as the plain proxy
        // does), or at once if a phase has to wait.
        let trying = Outgoing {
            to: peer,
            bytes: build_response(&msg, 100, "Trying", None, Some(peer.addr), &[]),
            client: None,
        };
        let me = self.clone();
        let phases_done = async move {
            let mut ctx = CallContext::new(peer, msg, received);
            me.verify(&phases, &mut ctx).await;
            me.assess(&phases, &mut ctx).await;
            ctx.route = route(&ctx.stir, ctx.assessed.as_ref().map(|(d, _)| d));
            ctx.edits = super::tag::tag(
                &ctx.msg,
                &ctx.stir,
                ctx.verification.as_ref(),
                ctx.assessed.as_ref().map(|(d, _)| d),
                &ctx.route,
            );
            ctx.edits.trying_sent = true;
            me.audit(&ctx);
            ctx
        };
        let trying_now = trying.clone();
        let me = self.clone();
        let forward = move |ctx: CallContext, waited: bool| {
            let first = if waited { Vec::new() } else { vec![trying] };
            let opening = super::outcome::Opening {
                decision: Some(super::live::decision_view(&ctx)),
                audited: me.audit.is_some(),
            };
            me.forward_call(ctx.peer, ctx.msg, ctx.edits, first, opening);
            super::lock(&me.inbound_pending).remove(&key);
        };
        run_inline_or_spawn(phases_done, || self.dispatch(vec![trying_now]), forward);
    }

    /// verify: the STIR/SHAKEN verification service (RFC 8224 §6.2,
    /// RFC 8588, ATIS-1000074), with replay detection. Reads the Identity
    /// headers and the parties; writes `verification` and `stir`. Never
    /// fails the call: an unreachable certificate server gives
    /// `No-TN-Validation` with a cause at the deadline.
    async fn verify(&self, phases: &CallPhases, ctx: &mut CallContext) {
        let Some(phase) = &phases.verify else { return };
        let v = phase
            .run(
                &ctx.msg,
                &ctx.parties,
                &self.state,
                &self.metrics,
                &self.env,
            )
            .await;
        ctx.stir = mark::marking(&v, phase.attest_suffix, phase.reject);
        ctx.verification = Some(v);
    }

    /// assess: signals, velocity counts and the decision under the active
    /// policy (and the shadow policy beside it). Reads the message, the
    /// parties and the verification; writes `assessed`. Waits for a shared
    /// state store at most its deadline, then decides on what it has.
    async fn assess(&self, phases: &CallPhases, ctx: &mut CallContext) {
        let Some(r) = &phases.risk else { return };
        ctx.assessed = Some(
            r.run(
                &ctx.msg,
                &ctx.parties,
                ctx.verification.as_ref(),
                &self.state,
                &self.metrics,
                &self.env,
            )
            .await,
        );
    }

    /// audit: queues the decision record (the call never waits for the
    /// disk); its outcome follows when the call ends (`outcome.rs`).
    /// Without an audit store, nothing.
    fn audit(&self, ctx: &CallContext) {
        let Some(audit) = &self.audit else { return };
        let rec = super::record::audit_record(ctx, &self.env);
        if audit.store_invite {
            audit.record_with_invite(rec, ctx.received.clone());
        } else {
            audit.record(rec);
        }
    }
}
