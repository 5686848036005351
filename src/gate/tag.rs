//! The tag phase: what the PBX and the agent's screen read on the INVITE
//! (docs/integration.md). `verstat` on the caller's P-Asserted-Identity,
//! else From (3GPP TS 24.229 §7.2A.20, ATIS-1000074 §5.3.3); `Reason: STIR`
//! for a call that goes on after a failed verification (RFC 8224 §6.2.2);
//! the `X-Callgate-*` headers of the decision; and for a call retargeted to
//! the review queue, its Request-URI and History-Info (RFC 7044). It writes
//! only what the verification and the decision hold; the message was
//! sanitized first, so no one else's claim is left beside them.

use super::route::Route;
use crate::risk::assess::Decision;
use crate::risk::tags;
use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::proxy::Edits;
use crate::stir::mark::{with_verstat, Marking};
use crate::stir::verify::Verification;

/// The edits that tag the forwarded INVITE.
pub fn tag(
    msg: &SipMessage,
    stir: &Marking,
    verification: Option<&Verification>,
    decision: Option<&Decision>,
    route: &Route,
) -> Edits {
    let mut e = Edits::default();
    if let Route::Reject { status, reason } = route {
        e.reject = Some((*status, reason.clone()));
        return e;
    }
    if !stir.verstat.is_empty() {
        let idx = msg
            .first_index(HeaderName::PAssertedIdentity)
            .or_else(|| msg.first_index(HeaderName::From));
        if let Some(i) = idx {
            let value = msg.value(&msg.headers()[i]);
            let first = crate::sip::scan::split_top(value, b',')
                .and_then(|v| v.first().map(|f| crate::sip::scan::trim(f)))
                .unwrap_or(value);
            e.replace_first
                .push((i, with_verstat(first, &stir.verstat)));
        }
    }
    e.append.extend(stir.headers.iter().cloned());
    if let (Route::Review { target }, Some(d)) = (route, decision) {
        let original = String::from_utf8_lossy(msg.request_uri().unwrap_or_default()).into_owned();
        let previous = tags::last_index(msg.other("History-Info"));
        e.append.push(tags::history_info(
            &original,
            target,
            d,
            previous.as_deref(),
        ));
        e.request_uri = Some(target.clone());
    }
    if let Some(d) = decision {
        e.append.extend(tags::headers(d, verification));
    }
    e
}
