//! The anchor-media phase of the call pipeline: the SDP of every call the
//! pipeline let in goes through the relay ([`MediaAnchor`]) and leaves
//! naming callgate's address and ports; a call's relay sessions end with
//! its dialog's BYE, or with the final failure of its initial INVITE (a
//! CANCEL's 487 and the core's own refusals included), or when its media
//! has been silent for the reclaim time. Media is keyed by dialog: a BYE
//! or failure whose tags are not the dialog's (a stranger's, a forked
//! leg's) leaves it alone. An offer the relay cannot anchor (no ports, the
//! source's share used up, too many m-lines, SDP it cannot read) is
//! refused, never passed on unanchored. Offers are requests' bodies
//! (INVITE, re-INVITE, UPDATE); answers are the bodies that come back,
//! including a late offer's answer in the ACK (RFC 3261 §13.2.1, RFC 3264).
//! The pipeline calls it before handing a message to the proxy core, so
//! relay sockets are never set up under the core's lock; messages outside
//! the calls it knows (OPTIONS, MESSAGE, strays) get no relay ports.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;

use crate::media::anchor::{
    is_sdp, AnchorError, AnchorLimits, AnchorOptions, MediaAnchor, Transport,
};
use crate::media::config::MediaConfig;
use crate::media::relay::{LatchMode, Relay, RelayEvent, SourcePolicy};
use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::method::Method;
use crate::sip::proxy::{LocalSide, Outgoing, Peer};
use crate::sip::uri::NameAddr;

/// What an SDP body is in the offer/answer exchange (RFC 3264, RFC 3261
/// §13.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SdpRole {
    /// A request's body (INVITE, re-INVITE, UPDATE): always an offer.
    Offer,
    /// An ACK's or PRACK's body: the answer to the offer in a response.
    Answer,
    /// A response's body: the answer to the request's offer, or an offer
    /// when the request had none.
    Either,
}

/// One side of a dialog, as callgate saw it: where its messages came from,
/// its Contact, and its From (caller) or To (callee) header with the tag.
#[derive(Debug, Clone)]
struct Party {
    peer: Peer,
    contact: String,
    header: String,
}

/// What the media phase knows of a call's dialog: enough to end it with a
/// BYE to each side on a media timeout, and whether it was answered (a
/// failed re-INVITE must not end its media).
#[derive(Debug, Clone, Default)]
struct Dialog {
    answered: bool,
    /// The caller's From tag (initial INVITE) and the callee's To tag
    /// (its first 2xx): the dialog's identity with the Call-ID (RFC 3261
    /// §12). Only requests and responses carrying them end its media.
    caller_tag: String,
    callee_tag: Option<String>,
    caller: Option<Party>,
    callee: Option<Party>,
    /// Highest CSeq each side used in its requests.
    caller_cseq: u32,
    callee_cseq: u32,
}

/// The media phase: the anchor and the dialogs of calls with media.
pub struct MediaPhase {
    pub anchor: Arc<MediaAnchor>,
    /// Where each call's media statistics go when it ends.
    audit: Option<crate::audit::Audit>,
    pub ng_metrics: Arc<crate::media::ng::server::NgMetrics>,
    strip_ice: bool,
    transports: [Transport; 2],
    dialogs: Mutex<HashMap<String, Dialog>>,
    /// End a call whose media timed out with a BYE to each side.
    timeout_bye: bool,
    /// How callgate names itself on each side (Via of its own BYEs).
    locals: [LocalSide; 2],
    /// Per side (trunk, PBX): which sources may latch its legs.
    latch: [LatchMode; 2],
    /// Per side: its signalling ACL (`allow`), refreshed on reload; a
    /// source refused for SIP cannot latch a leg either.
    acls: Mutex<[Arc<[IpNet]>; 2]>,
}

/// Why the media phase refused an offer: the status callgate answers with
/// instead of passing the SDP on unanchored (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaRefusal {
    pub status: u16,
    pub reason: &'static str,
}

impl MediaRefusal {
    fn of(e: &AnchorError) -> MediaRefusal {
        if e.is_capacity() || matches!(e, AnchorError::Relay(_) | AnchorError::Srtp(_)) {
            // The core adds Retry-After to its 503s.
            MediaRefusal {
                status: 503,
                reason: "Service Unavailable (no media ports)",
            }
        } else {
            MediaRefusal {
                status: 488,
                reason: "Not Acceptable Here",
            }
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl MediaPhase {
    /// Starts the relay. `acls`: each side's signalling ACL (trunk, PBX).
    pub fn start(
        cfg: &MediaConfig,
        audit: Option<crate::audit::Audit>,
        locals: [LocalSide; 2],
        acls: [Vec<IpNet>; 2],
    ) -> Result<Arc<MediaPhase>, String> {
        let relay = Relay::start(cfg.relay.clone()).map_err(|e| format!("media: {e}"))?;
        let limits = AnchorLimits {
            max_streams: cfg.max_streams,
            max_ports_per_source: cfg.max_ports_per_source,
        };
        let [trunk, pbx] = acls;
        Ok(Arc::new(MediaPhase {
            latch: cfg.latch,
            acls: Mutex::new([trunk.into(), pbx.into()]),
            anchor: Arc::new(MediaAnchor::with_limits(relay, cfg.advertise, limits)),
            audit,
            ng_metrics: Arc::default(),
            strip_ice: cfg.strip_ice,
            transports: cfg.transports,
            dialogs: Mutex::new(HashMap::new()),
            timeout_bye: cfg.timeout_bye,
            locals,
        }))
    }

    /// A reload's new signalling ACLs (trunk, PBX): streams created from
    /// now on latch only to sources they admit.
    pub fn set_acls(&self, acls: [Vec<IpNet>; 2]) {
        let [trunk, pbx] = acls;
        *self.acls.lock().unwrap_or_else(|p| p.into_inner()) = [trunk.into(), pbx.into()];
    }

    /// Who may latch the legs facing `side` (index as `Side::index`).
    fn source_policy(&self, side: usize) -> SourcePolicy {
        let acls = self.acls.lock().unwrap_or_else(|p| p.into_inner());
        SourcePolicy {
            mode: self.latch[side],
            allow: acls[side].clone(),
            side,
        }
    }

    fn dialogs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Dialog>> {
        self.dialogs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the caller's side of a dialog (initial INVITE) and each side's
    /// highest CSeq.
    fn note_request(&self, msg: &SipMessage, call_id: &str, method: Method, from: Peer) {
        let Ok(cseq) = msg.cseq() else { return };
        let mut dialogs = self.dialogs();
        let initial =
            method == Method::Invite && msg.to_tag().is_none() && !dialogs.contains_key(call_id);
        if initial {
            let party = party(msg, HeaderName::From, from);
            dialogs.insert(
                call_id.to_owned(),
                Dialog {
                    caller_tag: msg.from_tag().map(text).unwrap_or_default(),
                    caller: party,
                    caller_cseq: cseq.seq,
                    ..Dialog::default()
                },
            );
            return;
        }
        let Some(d) = dialogs.get_mut(call_id) else {
            return;
        };
        let from_caller = d.caller.as_ref().is_some_and(|c| c.peer.side == from.side);
        let seq = if from_caller {
            &mut d.caller_cseq
        } else {
            &mut d.callee_cseq
        };
        *seq = (*seq).max(cseq.seq);
    }

    /// Keeps the callee's side from the 2xx to the INVITE.
    fn note_answer(&self, msg: &SipMessage, call_id: &str, from: Peer) {
        let mut dialogs = self.dialogs();
        let d = dialogs.entry(call_id.to_owned()).or_default();
        d.answered = true;
        if d.callee.is_none() {
            d.callee = party(msg, HeaderName::To, from);
            d.callee_tag = msg.to_tag().map(text);
        }
    }

    /// Whether `msg` (a request, or with `response` a response) carries
    /// the tags of the call's dialog: the caller's tag on the caller's
    /// end, the callee's (once known) on the other, in either direction.
    /// A BYE or failure from a stranger, or from a forked leg whose 2xx
    /// was not the one that made the dialog, does not match.
    fn in_dialog(&self, msg: &SipMessage, call_id: &str, response: bool) -> bool {
        let Some(d) = self.dialogs().get(call_id).cloned() else {
            return false;
        };
        let (from, to) = (
            msg.from_tag().map(text).unwrap_or_default(),
            msg.to_tag().map(text),
        );
        if response {
            // A response to the caller's request: From is the caller's.
            return from == d.caller_tag
                && (d.callee_tag.is_none() || to.is_none() || to == d.callee_tag);
        }
        match &d.callee_tag {
            Some(callee) => {
                (from == d.caller_tag && to.as_deref() == Some(callee.as_str()))
                    || (&from == callee && to.as_deref() == Some(d.caller_tag.as_str()))
            }
            // An early dialog: the caller's tag on one end.
            None => from == d.caller_tag || to.as_deref() == Some(d.caller_tag.as_str()),
        }
    }

    /// BYEs that end a dialog from within (RFC 3261 §15.1.1): to the callee
    /// as if from the caller, and to the caller as if from the callee, with
    /// `Reason` saying why (RFC 3326). Each sent once, over the transport
    /// the side used; the 200s come back to callgate and are absorbed.
    fn byes(&self, call_id: &str, reason: &str) -> Vec<Outgoing> {
        let Some(d) = self.dialogs().get(call_id).cloned() else {
            return Vec::new();
        };
        let (Some(caller), Some(callee)) = (d.caller, d.callee) else {
            return Vec::new();
        };
        let bye = |to: &Party, from: &Party, cseq: u32| {
            let local = &self.locals[to.peer.side.index()];
            let via = local.via_line(
                to.peer.transport,
                &format!("z9hG4bK{}", crate::sip::proxy::branch::token()),
            );
            let text = format!(
                "BYE {contact} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\nFrom: {from_h}\r\nTo: {to_h}\r\nCall-ID: {call_id}\r\nCSeq: {seq} BYE\r\nReason: SIP;cause=408;text=\"{reason}\"\r\nContent-Length: 0\r\n\r\n",
                contact = to.contact,
                from_h = from.header,
                to_h = to.header,
                seq = cseq.saturating_add(1),
            );
            Outgoing {
                to: to.peer,
                bytes: bytes::Bytes::from(text),
                client: None,
            }
        };
        vec![
            bye(&callee, &caller, d.caller_cseq),
            bye(&caller, &callee, d.callee_cseq),
        ]
    }

    /// Ends a call's media, logging what it relayed.
    fn end(&self, call_id: &str, why: &str) {
        self.dialogs().remove(call_id);
        if !self.anchor.has_call(call_id) {
            return;
        }
        match self.anchor.delete(call_id) {
            Ok(report) => {
                if let Some(audit) = &self.audit {
                    let streams: Vec<serde_json::Value> = report
                        .streams
                        .iter()
                        .map(|(i, s)| {
                            serde_json::json!({
                                "stream": i,
                                "ended": why,
                                "timeouts": s.timeouts,
                                "a": s.a,
                                "b": s.b,
                            })
                        })
                        .collect();
                    audit.media_ended(call_id, &streams);
                }
                for (i, s) in &report.streams {
                    tracing::info!(
                        call_id,
                        stream = i,
                        why,
                        a_packets = s.a.packets,
                        a_lost = s.a.lost,
                        a_jitter = s.a.jitter,
                        b_packets = s.b.packets,
                        b_lost = s.b.lost,
                        b_jitter = s.b.jitter,
                        dropped_source = s.a.dropped_source + s.b.dropped_source,
                        srtp_failed = s.a.srtp_failed + s.b.srtp_failed,
                        "media ended"
                    );
                }
            }
            Err(e) => tracing::warn!(call_id, error = %e, "media not released"),
        }
    }

    /// The SDP of `msg`, arriving from `from` and passed to the other
    /// side, through the anchor: `Ok(None)` when it carries no SDP, the
    /// error when the relay cannot anchor it (the caller refuses it or
    /// strips it; it never goes on unanchored).
    fn rewrite(
        &self,
        msg: &SipMessage,
        call_id: &str,
        from: Peer,
        tag: &[u8],
        role: SdpRole,
    ) -> Result<Option<Vec<u8>>, AnchorError> {
        let ct = msg
            .first_index(HeaderName::ContentType)
            .and_then(|i| msg.headers().get(i))
            .map(|h| msg.value(h));
        if msg.body().is_empty() || !is_sdp(ct) {
            return Ok(None);
        }
        let tag = text(tag);
        let side = from.side.index();
        let options = AnchorOptions {
            strip_ice: self.strip_ice,
            transport: self.transports[from.side.other().index()],
            sources: Some([self.source_policy(side), self.source_policy(1 - side)]),
            charge: Some(crate::sip::proxy::canonical_ip(from.addr.ip())),
        };
        let result = match role {
            SdpRole::Offer => self.anchor.offer(call_id, &tag, msg.body(), options),
            SdpRole::Answer => self.anchor.answer(call_id, Some(&tag), msg.body(), options),
            SdpRole::Either => self
                .anchor
                .offer_or_answer(call_id, &tag, msg.body(), options),
        };
        match result {
            Ok(body) => Ok(Some(body)),
            Err(e) => {
                let metrics = &self.anchor.relay().metrics;
                metrics.offers_refused[e.refusal() as usize].fetch_add(1, Relaxed);
                if e.is_capacity() {
                    tracing::warn!(call_id, from = %from.addr, error = %e, "media ports exhausted: SDP refused, not passed on unanchored");
                } else {
                    tracing::warn!(call_id, from = %from.addr, error = %e, "SDP not anchored: refused, not passed on unanchored");
                }
                Err(e)
            }
        }
    }

    /// Serves the ng control protocol on `listen` (until the process ends).
    pub async fn serve_ng(
        self: &Arc<Self>,
        listen: std::net::SocketAddr,
        allow: Vec<ipnet::IpNet>,
    ) -> std::io::Result<std::net::SocketAddr> {
        let socket = tokio::net::UdpSocket::bind(listen).await?;
        let bound = socket.local_addr()?;
        let config = crate::media::ng::server::ServerConfig {
            allow,
            ..Default::default()
        };
        let control: Arc<dyn crate::media::ng::MediaControl> = self.anchor.clone();
        tokio::spawn(crate::media::ng::server::serve_with(
            socket,
            control,
            config,
            self.ng_metrics.clone(),
            std::future::pending::<()>(),
        ));
        tracing::info!(%bound, "media ng control listening");
        Ok(bound)
    }

    /// Reports media timeouts from the relay (every second, until the
    /// phase is dropped); with `timeout_bye`, ends those calls with a BYE
    /// to each side, handed to `send`.
    pub fn watch_timeouts(self: &Arc<Self>, send: impl Fn(Vec<Outgoing>) + Send + 'static) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                for ev in me.anchor.relay().events() {
                    let (session, reclaim) = match ev {
                        RelayEvent::MediaTimeout { session } => (session, false),
                        RelayEvent::Silent { session } => (session, true),
                        RelayEvent::WorkerFailed { worker, sessions } => {
                            let byes = me.end_failed_sessions(worker, &sessions);
                            if !byes.is_empty() {
                                send(byes);
                            }
                            continue;
                        }
                    };
                    let Some(call) = me.anchor.call_of_session(session) else {
                        continue;
                    };
                    if reclaim {
                        // Silent for the reclaim time: nothing flows, so
                        // the call is over in all but name; its ports go
                        // back to the pool (and each side gets a BYE).
                        tracing::warn!(call_id = %call, session, "media silent for the reclaim time: call ended, ports freed");
                        let byes = me.byes(&call, "media reclaimed");
                        if !byes.is_empty() {
                            send(byes);
                        }
                        me.anchor.relay().metrics.reclaimed.fetch_add(1, Relaxed);
                        me.end(&call, "media reclaimed");
                        continue;
                    }
                    tracing::warn!(call_id = %call, session, teardown = me.timeout_bye, "media timeout: no packet in either direction");
                    if me.timeout_bye {
                        let byes = me.byes(&call, "media timeout");
                        if !byes.is_empty() {
                            send(byes);
                        }
                        me.end(&call, "media timeout");
                    }
                }
            }
        });
    }

    /// A relay worker panicked and failed `sessions` (see
    /// `media::relay::worker`): their calls have no media path any more,
    /// so each is ended like a reclaimed one — a BYE to each side (the
    /// returned messages), its media released — rather than left as a
    /// silent call the agent hangs up on. Sessions of no call (the ng
    /// protocol's) are only released. One error line names the Call-IDs.
    fn end_failed_sessions(&self, worker: usize, sessions: &[u64]) -> Vec<Outgoing> {
        let (calls, orphans) = self.anchor.calls_of_sessions(sessions);
        for session in orphans {
            let _ = self.anchor.relay().delete(session);
        }
        tracing::error!(
            worker,
            call_ids = ?calls,
            "media relay worker failed: these calls lost their media and are ended (BYE to each side)"
        );
        let mut byes = Vec::new();
        for call in &calls {
            byes.extend(self.byes(call, "media relay failure"));
            self.end(call, "media worker failed");
        }
        byes
    }
}

/// A dialog party from a request's From or a response's To.
fn party(msg: &SipMessage, header: HeaderName, peer: Peer) -> Option<Party> {
    let value = msg
        .first_index(header)
        .and_then(|i| msg.headers().get(i))
        .map(|h| text(msg.value(h)))?;
    let contact = msg
        .values(HeaderName::Contact)
        .next()
        .and_then(|c| NameAddr::parse(c).ok().map(|na| text(na.uri)))?;
    Some(Party {
        peer,
        contact,
        header: value,
    })
}

impl MediaPhase {
    /// Whether the phase anchors this call's media (its initial INVITE
    /// came through the pipeline).
    fn knows_call(&self, call_id: &str) -> bool {
        self.dialogs().contains_key(call_id)
    }

    /// Some call's media is anchored: what is sent may end one.
    pub fn anchors_calls(&self) -> bool {
        !self.dialogs().is_empty()
    }

    /// The body to forward instead of `msg`'s (a request received from
    /// `from`), its SDP through the relay; `Ok(None)` to forward it as is.
    /// `initial`: the pipeline let this initial INVITE in; any other
    /// request is anchored only in a call the phase already knows. An
    /// offer the relay cannot anchor is refused (the status to answer);
    /// a refused initial INVITE's media ends at once.
    pub fn anchor_request(
        &self,
        msg: &SipMessage,
        from: Peer,
        initial: bool,
    ) -> Result<Option<Vec<u8>>, MediaRefusal> {
        let Some(call_id) = msg.call_id().map(text) else {
            return Ok(None);
        };
        if !initial && !self.knows_call(&call_id) {
            return Ok(None);
        }
        let Some(method) = msg.method() else {
            return Ok(None);
        };
        let from_tag = msg.from_tag().unwrap_or_default().to_vec();
        let caller_tag = self.dialogs().get(&call_id).map(|d| d.caller_tag.clone());
        if initial && caller_tag.is_some_and(|t| t.as_bytes() != from_tag.as_slice()) {
            // Another dialog's Call-ID with a new From tag: its SDP would
            // take over the legs of the call already anchored.
            tracing::warn!(call_id, from = %from.addr, "initial INVITE reusing the Call-ID of an anchored call refused");
            return Err(MediaRefusal {
                status: 400,
                reason: "Bad Request (Call-ID of another call)",
            });
        }
        if !initial && !self.in_dialog(msg, &call_id, false) {
            if method == Method::Bye {
                tracing::info!(call_id, from = %from.addr, "BYE with tags not of the call's dialog: media kept");
            }
            return Ok(None);
        }
        self.note_request(msg, &call_id, method, from);
        match method {
            // Only the dialog's own BYE ends its media (checked above).
            Method::Bye => {
                self.end(&call_id, "bye");
                Ok(None)
            }
            // An ACK's or PRACK's body answers the offer in the response:
            // it cannot be refused; one the relay cannot take loses its
            // body rather than pass unanchored.
            Method::Ack | Method::Prack => Ok(self
                .rewrite(msg, &call_id, from, &from_tag, SdpRole::Answer)
                .unwrap_or_else(|_| Some(Vec::new()))),
            // A re-INVITE without a body asks for an offer in its 2xx
            // (RFC 3261 §14.1): the earlier offer is settled.
            Method::Invite if msg.body().is_empty() => {
                self.anchor.expect_offer(&call_id);
                Ok(None)
            }
            _ => match self.rewrite(msg, &call_id, from, &from_tag, SdpRole::Offer) {
                Ok(body) => Ok(body),
                Err(e) => {
                    if initial {
                        self.end(&call_id, "media refused");
                    }
                    Err(MediaRefusal::of(&e))
                }
            },
        }
    }

    /// The body to forward instead of a response's, in a call the phase
    /// knows; a final failure of the dialog's initial INVITE ends the
    /// call's media. SDP the relay cannot anchor (a late offer in a 2xx
    /// when ports ran out) is removed, never passed on unanchored.
    pub fn anchor_response(&self, msg: &SipMessage, from: Peer) -> Option<Vec<u8>> {
        let call_id = text(msg.call_id()?);
        if !self.knows_call(&call_id) {
            return None;
        }
        let status = msg.status()?;
        let cseq = msg.cseq().ok()?;
        if cseq.method == Method::Invite {
            if (200..300).contains(&status) {
                self.note_answer(msg, &call_id, from);
            } else if status >= 300 {
                let answered = self.dialogs().get(&call_id).is_some_and(|d| d.answered);
                if !answered && self.in_dialog(msg, &call_id, true) {
                    self.end(&call_id, "initial INVITE failed");
                }
                return None;
            }
        }
        let tag = msg.to_tag().unwrap_or_default().to_vec();
        self.rewrite(msg, &call_id, from, &tag, SdpRole::Either)
            .unwrap_or_else(|_| Some(Vec::new()))
    }

    /// Looks at what the gate sends ([`super::outcome::endings`]) for final
    /// failures of initial INVITEs that no received response carried (the
    /// core's own 408, 483, 500, 503…): their calls' media ends too. Only
    /// while calls are anchored.
    pub fn observe_sent(&self, sent: &[super::outcome::Ending]) {
        for super::outcome::Ending { msg, .. } in sent {
            if msg.status().is_none_or(|s| s < 300) || !self.anchors_calls() {
                continue;
            }
            let (Some(call_id), Ok(cseq)) = (msg.call_id(), msg.cseq()) else {
                continue;
            };
            if cseq.method != Method::Invite {
                continue;
            }
            let call_id = text(call_id);
            let answered = self.dialogs().get(&call_id).map(|d| d.answered);
            if answered == Some(false) {
                self.end(&call_id, "initial INVITE failed");
            }
        }
    }
}
