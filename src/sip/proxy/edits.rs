//! What the call pipeline hands the proxy core with a message: how it was
//! classified ([`Routing`]) and what its phases decided for the copy the
//! core forwards ([`Edits`]). The core applies them without knowing why:
//! verification, policy and media live outside it.

use super::Peer;

/// How the pipeline classified a request; it decides where the core may
/// send it (RFC 3261 §16.4–§16.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Outside any dialog: to the outgoing side's targets in failover
    /// order, or along its own Route set when that names an admitted peer.
    Initial,
    /// Within a dialog the pipeline knows: to `Some(hop)`, the dialog's next
    /// hop on the outgoing side (its route set or remote target, RFC 3261
    /// §12.2.1.1), or along the request's own Route / Request-URI when
    /// `None`. Always only to peers the outgoing side's ACL admits.
    InDialog(Option<Peer>),
    /// Only for the core's own transactions (the ACK of a non-2xx final
    /// response, §17.2.1): absorbed when it matches one, never forwarded.
    LocalOnly,
}

impl Routing {
    /// The classification a message's own To tag suggests (RFC 3261
    /// §12.2: a request with a To tag belongs to a dialog). For callers
    /// without a dialog table (the core's own tests, benchmarks).
    pub fn by_to_tag(msg: &crate::sip::message::SipMessage) -> Routing {
        if msg.to_tag().is_some() {
            Routing::InDialog(None)
        } else {
            Routing::Initial
        }
    }

    pub fn is_initial(self) -> bool {
        self == Routing::Initial
    }
}

/// The pipeline's decisions for one message, applied to the copy the core
/// forwards (requests: all fields; responses: `body` only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// Header values whose first value is replaced: (index in the message's
    /// header index, new first value).
    pub replace_first: Vec<(usize, Vec<u8>)>,
    /// Header lines to add (no CRLF).
    pub append: Vec<String>,
    /// Send to this Request-URI instead (the review queue).
    pub request_uri: Option<String>,
    /// Answer with this status and reason phrase instead of forwarding.
    pub reject: Option<(u16, String)>,
    /// The body to forward instead of the received one (SDP through the
    /// media relay); Content-Length follows.
    pub body: Option<Vec<u8>>,
    /// 100 Trying already went to the caller: the INVITE server
    /// transaction records it, to answer retransmissions, but does not
    /// send it again.
    pub trying_sent: bool,
}
