//! CANCEL (RFC 3261 §16.10, §9.1): answered 200 hop by hop; the matching
//! INVITE's branches that have seen a provisional response are cancelled,
//! and no more targets are tried.

use std::time::Instant;

use bytes::Bytes;
use smallvec::SmallVec;

use super::build;
use super::request::client_key;
use super::{ClientEntry, ClientKind, Outgoing, Peer, ProxyCore, ServerEntry};
use crate::sip::message::SipMessage;
use crate::sip::method::Method;
use crate::sip::transaction::{ClientTransaction, ServerTransaction, TxKind};

impl ProxyCore {
    /// CANCEL (§16.10): answered 200 hop by hop; the matching INVITE's
    /// branches are cancelled, and no more targets are tried.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_cancel(
        &mut self,
        peer: Peer,
        msg: SipMessage,
        reply: Peer,
        ikey: Bytes,
        key: Bytes,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let entry = ServerEntry {
            tx: ServerTransaction::new(
                TxKind::NonInvite,
                peer.transport.is_reliable(),
                self.settings.timers,
            ),
            method: Method::Cancel,
            reply,
            request: Some(Box::new(msg)),
            to_tag: self.branches.token(),
            fwd: None,
            edits: None,
            scheduled: None,
            charged: None,
        };
        self.servers.insert(key.clone(), entry);
        let Some(invite) = self.servers.get_mut(&ikey) else {
            self.respond(&key, 481, "Call/Transaction Does Not Exist", &[], now, out);
            return;
        };
        let already_final = invite.tx.is_final();
        let mut to_cancel: SmallVec<[Bytes; 2]> = SmallVec::new();
        let mut any_provisional = false;
        if let Some(f) = invite.fwd.as_mut() {
            f.canceled = true;
            for b in &f.branches {
                if let Some(c) = self.clients.get(b) {
                    if c.got_provisional {
                        any_provisional = true;
                        to_cancel.push(b.clone());
                    }
                }
            }
        }
        self.respond(&key, 200, "OK", &[], now, out);
        if already_final {
            return;
        }
        for b in to_cancel {
            self.cancel_branch(&b, now, out);
        }
        if !any_provisional {
            // Nothing downstream has answered yet: a CANCEL may not be sent
            // before a provisional (§9.1); answer 487 now and cancel a branch
            // if it answers later.
            self.respond(&ikey, 487, "Request Terminated", &[], now, out);
        }
    }

    /// Sends CANCEL for a forwarded INVITE branch that has seen a provisional.
    pub(super) fn cancel_branch(&mut self, ckey: &Bytes, now: Instant, out: &mut Vec<Outgoing>) {
        let Some(c) = self.clients.get_mut(ckey) else {
            return;
        };
        if c.cancel_sent || c.tx.final_status().is_some() {
            return;
        }
        c.cancel_sent = true;
        // §9.1: no final response within 64*T1 of the CANCEL ends the
        // branch (a 408), whatever became of the target.
        c.tx.cancel_sent(now);
        let to = c.to;
        let Ok(fwd_invite) = SipMessage::parse(c.tx.request().clone(), &self.settings.limits)
        else {
            return;
        };
        let Some(cancel) = build::cancel_for(&fwd_invite) else {
            return;
        };
        let Ok(via) = fwd_invite.top_via() else {
            return;
        };
        let key = client_key(via.branch.unwrap_or_default(), true);
        let (tx, first) = ClientTransaction::start(
            TxKind::NonInvite,
            cancel,
            to.transport.is_reliable(),
            self.settings.timers,
            now,
        );
        self.clients.insert(
            key.clone(),
            ClientEntry {
                tx,
                kind: ClientKind::Cancel,
                server: None,
                to,
                got_provisional: false,
                cancel_sent: true,
                probe_deadline: None,
                scheduled: None,
            },
        );
        if let crate::sip::transaction::TxOutput::Transmit(b) = first {
            self.send_request(out, to, b, Method::Cancel, Some(key.clone()));
        }
        self.schedule_client(&key);
        self.schedule_client(ckey);
    }
}
