//! ACK (RFC 3261 §16.6, §17.2.1): absorbed by its INVITE server
//! transaction after a non-2xx final response, or, after a 2xx, forwarded
//! statelessly along its route set.

use std::time::Instant;

use smallvec::SmallVec;

use super::branch::{self, BranchGenerator};
use super::forward::{forwarded_copy, CopyPlan};
use super::request::server_key;
use super::{Edits, Outgoing, Peer, ProxyCore, Routing};
use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::method::Method;
use crate::sip::transaction::ServerState;
use crate::sip::uri::NameAddr;
use crate::sip::via::Via;

impl ProxyCore {
    /// ACK (§16.6, §17.2.1): one for our non-2xx final is absorbed by its
    /// INVITE server transaction; one for a 2xx is a new request forwarded
    /// statelessly along its route set.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_ack(
        &mut self,
        peer: Peer,
        msg: &SipMessage,
        via: &Via<'_>,
        routing: Routing,
        edits: Option<Edits>,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let ikey = server_key(msg, via, b"INVITE");
        if let Some(e) = self.servers.get_mut(&ikey) {
            if e.tx.state() == ServerState::Completed {
                e.tx.on_ack(now);
                self.schedule_server(&ikey);
                return;
            }
        }
        if routing == Routing::LocalOnly || self.check_request(msg, via).is_some() {
            return;
        }
        let out_side = peer.side.other();
        let routes: SmallVec<[&[u8]; 4]> = msg.values(HeaderName::Route).collect();
        let pop = self.own_leading_routes(&routes);
        let hop = match routing {
            Routing::InDialog(Some(hop)) => self.admitted_hop(out_side, hop),
            _ => {
                let next_uri = match routes.get(pop) {
                    Some(r) => NameAddr::parse(r).map(|na| na.uri).unwrap_or(r),
                    None => msg.request_uri().unwrap_or_default(),
                };
                self.fixed_hop(out_side, next_uri)
            }
        };
        let Ok(hop) = hop else {
            tracing::debug!("ACK without a routable next hop dropped");
            return;
        };
        let incoming_branch = via.branch.unwrap_or_default();
        let br = BranchGenerator::stateless(branch::loop_hash(msg), incoming_branch);
        let plan = CopyPlan {
            out_local: &self.local[out_side.index()],
            in_local: &self.local[peer.side.index()],
            out_transport: hop.transport,
            from: peer,
            branch: &br,
            pop_routes: pop,
            record_route: false,
            secure: false,
            edits: edits.as_ref(),
        };
        if let Some(bytes) = forwarded_copy(msg, &plan) {
            self.send_request(out, hop, bytes, Method::Ack, None);
        }
    }
}
