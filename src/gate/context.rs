//! The per-call context of the call phases: one inbound INVITE and what
//! each phase found, carried from verify to audit (`call.rs`).

use super::route::Route;
use crate::risk::assess::Decision;
use crate::risk::signals::Signals;
use crate::sip::message::SipMessage;
use crate::sip::parties::Parties;
use crate::sip::proxy::{Edits, Peer};
use crate::stir::mark::Marking;
use crate::stir::verify::Verification;

/// One inbound call as it goes through the phases: each phase reads what
/// the earlier ones wrote and adds its own result.
pub struct CallContext {
    /// Where the INVITE came from.
    pub peer: Peer,
    /// The INVITE, sanitized.
    pub msg: SipMessage,
    /// The INVITE as received (the audit trail keeps what arrived).
    pub received: bytes::Bytes,
    /// Calling and called numbers, read once (parse phase's typed view).
    pub parties: Parties,
    /// verify: the STIR/SHAKEN result, when verification is on.
    pub verification: Option<Verification>,
    /// verify: what the result means for the call (verstat, Reason, refusal).
    pub stir: Marking,
    /// assess: the decision and the signals it was made on.
    pub assessed: Option<(Decision, Signals)>,
    /// route: where the call goes.
    pub route: Route,
    /// tag: what the forwarded INVITE carries.
    pub edits: Edits,
}

impl CallContext {
    pub fn new(peer: Peer, msg: SipMessage, received: bytes::Bytes) -> CallContext {
        let parties = Parties::of(&msg);
        CallContext {
            peer,
            msg,
            received,
            parties,
            verification: None,
            stir: Marking::default(),
            assessed: None,
            route: Route::Agents,
            edits: Edits::default(),
        }
    }
}
