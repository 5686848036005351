//! The inbound call path as named phases (DESIGN.md): an initial INVITE
//! from the trunk is **verified** (STIR/SHAKEN), **assessed** (signals and
//! the policy's decision), **routed** (to the PBX, the review queue, or
//! refused) and **tagged** (`verstat`, `X-Callgate-*`) before the proxy core
//! forwards it. The caller gets 100 Trying at once and its retransmissions
//! are absorbed while the phases run; the call waits at most the
//! certificate deadline (verify never blocks a call on the network).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::assess::RiskPhase;
use super::verify::VerifyPhase;
use crate::risk::assess::Decision;
use crate::risk::policy::Action;
use crate::risk::tags;
use crate::sip::message::SipMessage;
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
                m.headers.push(tags::history_info(&original, target, d));
                m.request_uri = Some(target.clone());
            }
        }
        Action::Tag => {}
    }
    m.headers.extend(tags::headers(d, verify.map(|(_, v)| v)));
    m
}

impl super::Gate {
    /// Takes an initial trunk INVITE into the inbound phases. Returns
    /// `false` when the message should go straight to the core instead.
    pub(super) fn inbound(
        self: &Arc<Self>,
        phases: Inbound,
        peer: Peer,
        data: Bytes,
        msg: SipMessage,
    ) -> bool {
        if super::lock(&self.core).knows(&msg) {
            return false; // a retransmission of a call already through
        }
        let key = pending_key(&msg);
        if !super::lock(&self.inbound_pending).insert(key.clone()) {
            return true; // retransmitted while in the phases: absorbed
        }
        // 100 Trying now stops the caller's retransmissions (RFC 3261 §16.2).
        let trying = build_response(&msg, 100, "Trying", None, &[]);
        self.dispatch(vec![Outgoing {
            to: peer,
            bytes: trying,
            client: None,
        }]);
        let me = self.clone();
        tokio::spawn(async move {
            // verify
            let verification = match &phases.verify {
                Some(phase) => Some(phase.run(&msg, &me.metrics).await),
                None => None,
            };
            // assess
            let decision = phases
                .risk
                .as_ref()
                .map(|r| r.run(&msg, verification.as_ref(), &me.metrics).0);
            // route + tag
            let marking = marking(
                &msg,
                phases.verify.as_deref().zip(verification.as_ref()),
                decision.as_ref(),
            );
            // forward
            let mut out = Vec::new();
            let next = {
                let mut core = super::lock(&me.core);
                core.on_message_marked(peer, data, Instant::now(), &mut out, Some(marking));
                core.next_deadline()
            };
            super::lock(&me.inbound_pending).remove(&key);
            me.dispatch(out);
            me.rearm(next);
        });
        true
    }
}
