//! The route phase: where the call goes, from the verification's marking
//! and the policy's decision — the PBX's agents, the review queue, or a
//! refusal. A STIR refusal (`stir.on_failure = "reject"`, RFC 8224 §6.2.2)
//! comes first; then the policy's action: reject (403/603/608 with RFC
//! 8224/8688 semantics), review (retarget to the queue) or tag. Pure: it
//! never changes the decision, only carries it out.

use crate::risk::assess::Decision;
use crate::risk::policy::Action;
use crate::stir::mark::Marking;

/// Where an inbound call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To the PBX (its configured targets): the agents.
    Agents,
    /// Retargeted to the review queue at this Request-URI.
    Review { target: String },
    /// Refused with this status and reason phrase.
    Reject { status: u16, reason: String },
}

/// Decides the route. A review without a configured queue stays with the
/// agents (tagged), as the policy reference documents.
pub fn route(stir: &Marking, decision: Option<&Decision>) -> Route {
    if let Some((status, reason)) = &stir.reject {
        return Route::Reject {
            status: *status,
            reason: reason.clone(),
        };
    }
    let Some(d) = decision else {
        return Route::Agents;
    };
    match d.verdict.action {
        Action::Reject(status) => Route::Reject {
            status,
            reason: if status == 608 { "Rejected" } else { "Decline" }.to_owned(),
        },
        Action::Review => match &d.target {
            Some(target) => Route::Review {
                target: target.clone(),
            },
            None => Route::Agents,
        },
        Action::Tag => Route::Agents,
    }
}
