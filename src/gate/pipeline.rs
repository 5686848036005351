//! The call pipeline: every message from either side goes through these
//! phases, in this order, and nothing reaches the other side without them.
//! This file is the map; each phase is a named function below (or in the
//! file named beside it), with its contract.
//!
//! | # | phase | reads | may change | on failure |
//! |---|---|---|---|---|
//! | 1 | [admit](Gate::admit) (`admit.rs`) | source address, length, first bytes | rate and byte buckets | 403 or drop (ACL), drop (rate, bytes) |
//! | 2 | [parse](Gate::parse) | the bytes | — | 400/505, or drop when no response can be formed |
//! | 3 | [sanitize](Gate::sanitize) (`sanitize.rs`) | every header | removes what a peer could forge | 400 (control character) |
//! | 4 | [classify](Gate::classify) | method, To tag, the core's transactions, the dialog table | — | a stray from the trunk: 481 |
//! | 4a | [screen](Gate::screen) (`screen.rs`) | from the trunk, outside a dialog: method, Request-URI, User-Agent | — | 405, 404, 200 (OPTIONS) or drop (scanner) |
//! | 5 | verify (`call.rs`, `verify.rs`) | Identity, parties | the call context | never fails the call |
//! | 6 | assess (`call.rs`, `assess.rs`) | signals, verification | the call context | decides on what it has |
//! | 7 | route (`route.rs`) | marking, decision | — | — |
//! | 8 | tag (`tag.rs`) | marking, decision, route | the forwarded copy's edits | — |
//! | 9 | audit (`call.rs`, `record.rs`) | the call context | queues a record | never blocks the call |
//! | 10 | sign (`sign.rs`) | an agent's outbound INVITE | adds Identity | sent unsigned, logged |
//! | 11 | [anchor media](Gate::anchor_request) (`media.rs`) | SDP | the forwarded body | 503 + Retry-After (no ports), 488 (SDP it cannot take); never forwarded unanchored |
//! | 12 | [forward](Gate::forward_request) (the proxy core) | the message and edits | transactions | the core's answers (4xx–5xx) |
//!
//! Phases 5–9 run for every initial INVITE from the trunk (when
//! verification or a policy is on) and only for those; phase 10 for every
//! initial INVITE from the PBX (when signing is on). Decisions are made on
//! the parsed, sanitized message, never on bytes; the limits and phases in
//! force are read once per message, after any reload.

use std::time::Instant;

use bytes::Bytes;

use super::admit::{Checked, Verdict};
use super::screen::Screened;
use super::{lock, Gate, Phases};
use crate::api::metrics::{Direction, Refusal};
use crate::config::{Denied, Side};
use crate::sip::dialogs::{creates_dialog, Membership};
use crate::sip::message::{Limits, SipMessage};
use crate::sip::method::Method;
use crate::sip::proxy::{Edits, Outgoing, Peer, Routing};
use crate::sip::response::build_response;
use crate::sip::transport::Sink;

/// What the classify phase found a message to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request the core already has a transaction for: it answers the
    /// retransmission (RFC 3261 §17.2).
    Retransmission,
    /// An initial INVITE: a new call.
    InitialInvite,
    /// Another request outside any dialog (OPTIONS, MESSAGE, REGISTER,
    /// SUBSCRIBE, CANCEL, …).
    OtherInitial,
    /// A request of a dialog callgate knows, with the dialog's next hop.
    InDialog(Option<Peer>),
    /// A request with a To tag that matches no dialog (from the trunk), or
    /// an ACK without one: refused (481; an ACK is only for the core's own
    /// transactions).
    Stray,
    /// A response whose top Via names callgate.
    Response,
    /// A response not addressed to callgate: dropped.
    ForeignResponse,
}

impl Sink for Gate {
    fn on_message(&self, peer: Peer, data: Bytes) {
        let started = Instant::now();
        if self.admit(peer, &data, started) {
            self.pipeline(peer, data, started);
        }
        self.observe_busy(started);
    }

    /// The admit phase runs on the receive buffer: a datagram from a
    /// source outside the ACL or over its rate is refused before it is
    /// copied (a flood of 60 KB datagrams over the rate limit was copied
    /// whole, each, only to be dropped).
    fn on_datagram(&self, peer: Peer, data: &[u8]) {
        let started = Instant::now();
        if self.admit(peer, data, started) {
            self.pipeline(peer, Bytes::copy_from_slice(data), started);
        }
        self.observe_busy(started);
    }
}

fn call_id_text(msg: &SipMessage) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(msg.call_id().unwrap_or_default())
}

impl Gate {
    /// One received message through the phases after admit (see the
    /// module table; admit runs first, in [`Sink::on_message`] or, for a
    /// datagram, on the receive buffer in [`Sink::on_datagram`]).
    fn pipeline(&self, peer: Peer, data: Bytes, now: Instant) {
        let phases = self.phases();
        let Some(msg) = self.parse(peer, data.clone(), &phases.limits) else {
            return;
        };
        let span =
            tracing::info_span!("sip", call_id = %call_id_text(&msg), side = peer.side.as_str());
        let _enter = span.enter();
        let Some(msg) = self.sanitize(peer, msg, &phases.limits) else {
            return;
        };
        let class = self.classify(peer, &msg, now);
        if matches!(class, Class::InitialInvite | Class::OtherInitial) && !self.screen(peer, &msg) {
            return;
        }
        match class {
            Class::Response => self.forward_response(peer, msg, now),
            Class::ForeignResponse => {
                tracing::debug!(from = %peer.addr, "response whose top Via is not ours dropped");
            }
            // The core answers it from its transaction; should that have
            // ended meanwhile, it is dropped, never forwarded unclassified.
            Class::Retransmission => {
                self.forward_request(peer, msg, Routing::LocalOnly, None, Vec::new())
            }
            Class::InitialInvite => self.initial_invite(&phases, peer, msg, data),
            Class::OtherInitial => {
                if msg.method().is_some_and(creates_dialog) {
                    lock(&self.dialogs).initial(&msg, peer.side, now);
                }
                self.forward_request(peer, msg, Routing::Initial, None, Vec::new());
            }
            Class::InDialog(hop) => {
                // An offer the relay cannot anchor is refused (the dialog
                // keeps its media, RFC 3261 §14.2), never passed on bare.
                let edits = match self.anchor_request(&msg, peer, false) {
                    Ok(body) => body.map(|body| Edits {
                        body: Some(body),
                        ..Edits::default()
                    }),
                    Err(refusal) => Some(Edits {
                        reject: Some((refusal.status, refusal.reason.to_owned())),
                        ..Edits::default()
                    }),
                };
                self.forward_request(peer, msg, Routing::InDialog(hop), edits, Vec::new());
            }
            Class::Stray => self.refuse_stray(peer, msg),
        }
    }

    /// admit: only the side's configured peers, within their rate and
    /// byte budget (`admit.rs`). Looks at the source address, the length
    /// and whether the bytes start a response; parses nothing. A source
    /// outside the ACL is answered 403 (or dropped, per `on_denied`); one
    /// over its rate or bytes is dropped (answering would feed a flood).
    pub(super) fn admit(&self, peer: Peer, data: &[u8], now: Instant) -> bool {
        // The admission lock is released before any answer (which takes
        // it again for the refusal limit).
        let Checked {
            verdict,
            throttle_due,
        } = lock(&self.admission[peer.side.index()]).check(peer.addr.ip(), data, now);
        if throttle_due {
            // A flood was just recognised: into the kernel filter before
            // the next datagram is read (`throttle.rs`).
            self.review_throttle(peer.side, now);
        }
        match verdict {
            Verdict::Admit => true,
            Verdict::Denied(how) => {
                self.metrics.refused(peer.side, Refusal::Acl);
                tracing::debug!(side = peer.side.as_str(), from = %peer.addr, "source not in ACL");
                // The refusal limit first: over it, a stranger's datagram
                // is neither copied nor parsed (a flood then costs no more
                // than the ACL check).
                if how == Denied::Reject && self.may_answer(peer, 403) {
                    self.forbid(peer, Bytes::copy_from_slice(data));
                }
                false
            }
            Verdict::RateLimited => {
                self.metrics.refused(peer.side, Refusal::RateLimit);
                false
            }
            Verdict::OverByteBudget => {
                self.metrics.refused(peer.side, Refusal::ByteRate);
                false
            }
        }
    }

    /// parse: frames the message and builds its header index (RFC 3261
    /// §7, leading CRLFs ignored per §7.5), then validates it (§8.1.1
    /// mandatory headers, CSeq, Content-Length, …). A request that fails
    /// gets 400 (505 for the version) when a response can be formed; a
    /// response or an ACK that fails is dropped. Counted in
    /// `callgate_sip_parse_errors_total`.
    pub(super) fn parse(&self, peer: Peer, data: Bytes, limits: &Limits) -> Option<SipMessage> {
        match crate::sip::response::parse_valid(data, limits, Some(peer.addr)) {
            Ok(msg) => Some(msg),
            Err(e) => {
                self.metrics.parse_error(peer.side);
                tracing::debug!(side = peer.side.as_str(), from = %peer.addr, error = %e.error, answered = ?e.answer.as_ref().map(|a| a.1), "message refused by parse");
                if let Some((resp, status)) = e.answer {
                    self.answer(peer, resp, status);
                }
                None
            }
        }
    }

    /// sanitize: removes what the sending side could forge before any
    /// later phase reads the message (`sanitize.rs`): `X-Callgate-*`;
    /// from the trunk every `verstat` claim and `Reason: STIR`; from the
    /// PBX `Identity`. A head with a control character RFC 3261 §25.1 does
    /// not allow is refused: 400 to a request, a response dropped.
    pub(super) fn sanitize(
        &self,
        peer: Peer,
        msg: SipMessage,
        limits: &Limits,
    ) -> Option<SipMessage> {
        let challenge = peer.side == Side::Pbx && super::conceal::is_challenge(&msg);
        match super::sanitize::sanitize(peer.side, msg, limits) {
            Ok(clean) => {
                if challenge {
                    self.metrics.refused(peer.side, Refusal::Challenge);
                    tracing::info!(from = %peer.addr, "PBX challenge toward the trunk replaced by 404");
                }
                Some(clean)
            }
            Err(super::sanitize::Refused { why: e, msg }) => {
                self.metrics.refused(peer.side, Refusal::Unsafe);
                tracing::info!(from = %peer.addr, error = %e, "message refused by sanitize");
                if msg.is_request() && msg.method() != Some(Method::Ack) {
                    let r = build_response(
                        &msg,
                        400,
                        "Bad Request (control character in header)",
                        None,
                        Some(peer.addr),
                        &[],
                    );
                    self.answer(peer, r, 400);
                }
                None
            }
        }
    }

    /// screen: from the trunk, what a carrier may ask outside a dialog
    /// (`screen.rs`): a scanner's signature is dropped (or 403), a method
    /// outside `[trunk] methods` gets 405 + Allow, OPTIONS is answered here
    /// (200), a number outside `[trunk] numbers` gets 404; all formed by
    /// callgate, never reaching the PBX. Whether the request goes on.
    pub(super) fn screen(&self, peer: Peer, msg: &SipMessage) -> bool {
        let verdict = {
            let admission = lock(&self.admission[peer.side.index()]);
            match admission.screen() {
                Some(cfg) => super::screen::screen(cfg, msg),
                None => return true,
            }
        };
        let (status, reason, extra) = match verdict {
            Screened::Pass => return true,
            Screened::Drop(why) => {
                self.metrics.refused(peer.side, why);
                return false;
            }
            Screened::Refuse {
                why,
                status,
                reason,
                extra,
            } => {
                self.metrics.refused(peer.side, why);
                tracing::info!(from = %peer.addr, method = ?msg.method(), status, "request refused by the trunk screen");
                (status, reason, extra)
            }
            Screened::AnswerOptions { extra } => (200, "OK", extra),
        };
        let extra: Vec<&[u8]> = extra.iter().map(Vec::as_slice).collect();
        let r = build_response(msg, status, reason, None, Some(peer.addr), &extra);
        self.answer(peer, r, status);
        false
    }

    /// classify: on the parsed message only — the request line's method,
    /// the To tag, the core's transactions and the dialog table. A request
    /// with a To tag from the trunk belongs to a dialog only if callgate
    /// record-routed one with that Call-ID and both tags (`src/sip/dialogs.rs`);
    /// from the PBX, which callgate trusts to route its own dialogs, one
    /// unknown (e.g. made before a restart) goes by its own Route /
    /// Request-URI, still only to admitted peers.
    pub(super) fn classify(&self, peer: Peer, msg: &SipMessage, now: Instant) -> Class {
        if !msg.is_request() {
            return if lock(&self.core).is_own_response(msg) {
                Class::Response
            } else {
                Class::ForeignResponse
            };
        }
        let method = msg.method().unwrap_or(Method::Extension);
        let to_tag = msg.to_tag().is_some();
        // A retransmission must not run the call phases or offer its SDP
        // again; any other the core answers from its transaction itself.
        let may_repeat_work = (method == Method::Invite && !to_tag) || !msg.body().is_empty();
        if may_repeat_work && method != Method::Ack && lock(&self.core).knows(msg) {
            return Class::Retransmission;
        }
        if !to_tag {
            return match method {
                Method::Invite => Class::InitialInvite,
                // An ACK always answers a final response that carried a To
                // tag (RFC 3261 §17.1.1.3): without one it acks nothing.
                Method::Ack => Class::Stray,
                _ => Class::OtherInitial,
            };
        }
        match lock(&self.dialogs).request(msg, peer.side, now) {
            Membership::Known(hop) => Class::InDialog(hop),
            Membership::Stray if peer.side == Side::Pbx => Class::InDialog(None),
            Membership::Stray => Class::Stray,
        }
    }

    /// An initial INVITE: from the trunk, the call phases (verify, assess,
    /// route, tag, audit) when any is on; from the PBX, the sign phase.
    /// Then media and forward ([`Self::forward_call`]).
    fn initial_invite(&self, phases: &Phases, peer: Peer, msg: SipMessage, received: Bytes) {
        match peer.side {
            Side::Trunk => match (phases.call(), self.me.upgrade()) {
                (Some(call), Some(me)) => me.call(call, peer, msg, received),
                // The gate is going away: nothing is forwarded untagged.
                (Some(_), None) => {}
                (None, _) => {
                    self.forward_call(peer, msg, Edits::default(), Vec::new(), Default::default())
                }
            },
            Side::Pbx => {
                let mut edits = Edits::default();
                if let Some(signer) = &phases.sign {
                    edits.append.extend(signer.identity_line(&msg));
                }
                self.forward_call(peer, msg, edits, Vec::new(), Default::default());
            }
        }
    }

    /// The end of an initial INVITE's phases: unless refused, its media is
    /// anchored and its dialog awaited; then the core forwards it. `first`
    /// goes out in the same dispatch (the 100 Trying of the call phases).
    /// The call is listed as in progress (`outcome.rs`, with `opening`'s
    /// decision) until its final failure or BYE.
    pub(super) fn forward_call(
        &self,
        peer: Peer,
        msg: SipMessage,
        mut edits: Edits,
        first: Vec<Outgoing>,
        opening: super::outcome::Opening,
    ) {
        if edits.reject.is_none() {
            match self.anchor_request(&msg, peer, true) {
                Ok(body) => {
                    edits.body = body;
                    lock(&self.dialogs).initial(&msg, peer.side, Instant::now());
                }
                // Fail closed: no ports (503 + Retry-After), SDP the relay
                // cannot take (488); the call never reaches the far side
                // unanchored.
                Err(refusal) => {
                    edits.reject = Some((refusal.status, refusal.reason.to_owned()));
                }
            }
        }
        // A refused call is listed only when its outcome is audited.
        if edits.reject.is_none() || opening.audited {
            let opened = lock(&self.outcomes)
                .open(&msg, peer.side, opening, self.env.unix_ms())
                // With other instances, the decision is shared at their
                // next tick even if the call ends before it.
                .filter(|_| self.cluster.is_some())
                .cloned();
            if let (Some(cluster), Some(d)) = (
                &self.cluster,
                opened.and_then(|call| self.live_decision(call)),
            ) {
                cluster.offer(d);
            }
        }
        self.forward_request(peer, msg, Routing::Initial, Some(edits), first);
    }

    /// anchor media: the SDP of a request passed through the relay
    /// (`media.rs`): the body of the forwarded copy. Only for calls the
    /// pipeline let in (`initial`) or whose media it already anchors; never
    /// for strays, retransmissions or requests outside calls. An offer the
    /// relay cannot anchor is refused with the status to answer (fail
    /// closed: never forwarded unanchored).
    pub(super) fn anchor_request(
        &self,
        msg: &SipMessage,
        from: Peer,
        initial: bool,
    ) -> Result<Option<Vec<u8>>, super::media::MediaRefusal> {
        match &self.media {
            Some(m) => m.anchor_request(msg, from, initial),
            None => Ok(None),
        }
    }

    /// forward (requests): the proxy core's RFC 3261 §16 processing with
    /// the pipeline's classification and edits; what it sends goes out
    /// with `first`.
    pub(super) fn forward_request(
        &self,
        peer: Peer,
        msg: SipMessage,
        routing: Routing,
        edits: Option<Edits>,
        mut out: Vec<Outgoing>,
    ) {
        let next = {
            let mut core = lock(&self.core);
            core.on_request(peer, msg, routing, edits, Instant::now(), &mut out);
            core.next_deadline()
        };
        self.dispatch(out);
        self.rearm(next);
    }

    /// forward (responses): the dialog table learns from it (a To tag to a
    /// record-routed initial request makes a dialog; a failure ends early
    /// ones), the media phase anchors its SDP (calls it knows only), and
    /// the core passes it upstream.
    fn forward_response(&self, peer: Peer, msg: SipMessage, now: Instant) {
        {
            let core = lock(&self.core);
            let mut dialogs = lock(&self.dialogs);
            dialogs.response(&msg, peer.side, |rr| core.names_me(rr), now);
            self.metrics.set_dialogs(dialogs.len(), dialogs.evicted());
        }
        let body = self
            .media
            .as_ref()
            .and_then(|m| m.anchor_response(&msg, peer));
        let mut out = Vec::new();
        let next = {
            let mut core = lock(&self.core);
            core.on_response(peer, msg, body, Instant::now(), &mut out);
            core.next_deadline()
        };
        self.dispatch(out);
        self.rearm(next);
    }

    /// A stray from the trunk: 481 Call/Transaction Does Not Exist (RFC
    /// 3261 §12.2.2), statelessly; it never reaches the PBX. An ACK gets no
    /// answer: the core takes it only if it acks one of its own final
    /// responses (§17.2.1).
    fn refuse_stray(&self, peer: Peer, msg: SipMessage) {
        if msg.method() == Some(Method::Ack) {
            self.forward_request(peer, msg, Routing::LocalOnly, None, Vec::new());
            return;
        }
        self.metrics.refused(peer.side, Refusal::NoDialog);
        tracing::info!(from = %peer.addr, method = ?msg.method(), "request for no known dialog answered 481");
        let r = build_response(
            &msg,
            481,
            "Call/Transaction Does Not Exist",
            None,
            Some(peer.addr),
            &[],
        );
        self.answer(peer, r, 481);
    }

    /// Sends a response the pipeline formed itself (no transaction), within
    /// the refusal limit (`refusals.rs`): over it, nothing is sent.
    pub(super) fn answer(&self, peer: Peer, bytes: Bytes, status: u16) {
        if self.may_answer(peer, status) {
            self.send_answer(peer, bytes, status);
        }
    }

    /// Takes a token of the refusal limit for one answer to `peer`; over
    /// the limit, counts the suppressed answer and says no.
    pub(super) fn may_answer(&self, peer: Peer, status: u16) -> bool {
        if lock(&self.admission[peer.side.index()]).may_answer(peer.addr.ip(), Instant::now()) {
            return true;
        }
        self.metrics.answer_suppressed(peer.side);
        tracing::debug!(to = %peer.addr, status, "answer over the refusal limit not sent");
        false
    }

    /// Sends an answer callgate formed, its refusal token already taken.
    pub(super) fn send_answer(&self, peer: Peer, bytes: Bytes, status: u16) {
        self.metrics.response(peer.side, Direction::Out, status);
        self.dispatch(vec![Outgoing {
            to: peer,
            bytes,
            client: None,
        }]);
    }
}
