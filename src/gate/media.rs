//! The anchor-media phase of the call pipeline: the SDP of every call the
//! pipeline let in goes through the relay ([`MediaAnchor`]) and leaves
//! naming callgate's address and ports; a call's relay sessions end with
//! its BYE, or with the final failure of its initial INVITE (a CANCEL's 487
//! and the core's own refusals included). Offers are requests' bodies
//! (INVITE, re-INVITE, UPDATE); answers are the bodies that come back,
//! including a late offer's answer in the ACK (RFC 3261 §13.2.1, RFC 3264).
//! The pipeline calls it before handing a message to the proxy core, so
//! relay sockets are never set up under the core's lock; messages outside
//! the calls it knows (OPTIONS, MESSAGE, strays) get no relay ports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::media::anchor::{is_sdp, AnchorOptions, MediaAnchor, Transport};
use crate::media::config::MediaConfig;
use crate::media::relay::{Relay, RelayEvent};
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
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl MediaPhase {
    pub fn start(
        cfg: &MediaConfig,
        audit: Option<crate::audit::Audit>,
        locals: [LocalSide; 2],
    ) -> Result<Arc<MediaPhase>, String> {
        let relay = Relay::start(cfg.relay.clone()).map_err(|e| format!("media: {e}"))?;
        Ok(Arc::new(MediaPhase {
            anchor: Arc::new(MediaAnchor::new(relay, cfg.advertise)),
            audit,
            ng_metrics: Arc::default(),
            strip_ice: cfg.strip_ice,
            transports: cfg.transports,
            dialogs: Mutex::new(HashMap::new()),
            timeout_bye: cfg.timeout_bye,
            locals,
        }))
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
    /// side, through the anchor; `None` to forward it as is.
    fn rewrite(
        &self,
        msg: &SipMessage,
        call_id: &str,
        from: Peer,
        tag: &[u8],
        role: SdpRole,
    ) -> Option<Vec<u8>> {
        let ct = msg
            .first_index(HeaderName::ContentType)
            .and_then(|i| msg.headers().get(i))
            .map(|h| msg.value(h));
        if msg.body().is_empty() || !is_sdp(ct) {
            return None;
        }
        let tag = text(tag);
        let options = AnchorOptions {
            strip_ice: self.strip_ice,
            transport: self.transports[from.side.other().index()],
        };
        let result = match role {
            SdpRole::Offer => self.anchor.offer(call_id, &tag, msg.body(), options),
            SdpRole::Answer => self.anchor.answer(call_id, Some(&tag), msg.body(), options),
            SdpRole::Either => self
                .anchor
                .offer_or_answer(call_id, &tag, msg.body(), options),
        };
        match result {
            Ok(body) => Some(body),
            Err(e) => {
                // The body goes on unchanged: media then bypasses the relay,
                // which is logged, rather than failing the call.
                tracing::warn!(call_id, error = %e, "SDP not anchored; forwarded unchanged");
                None
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
                    let RelayEvent::MediaTimeout { session } = ev;
                    let Some(call) = me.anchor.call_of_session(session) else {
                        continue;
                    };
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

    /// The body to forward instead of `msg`'s (a request received from
    /// `from`), its SDP through the relay; `None` to forward it as is.
    /// `initial`: the pipeline let this initial INVITE in; any other
    /// request is anchored only in a call the phase already knows.
    pub fn anchor_request(&self, msg: &SipMessage, from: Peer, initial: bool) -> Option<Vec<u8>> {
        let call_id = text(msg.call_id()?);
        if !initial && !self.knows_call(&call_id) {
            return None;
        }
        let method = msg.method()?;
        self.note_request(msg, &call_id, method, from);
        match method {
            Method::Bye => {
                self.end(&call_id, "bye");
                None
            }
            // An ACK's or PRACK's body answers the offer in the response.
            Method::Ack | Method::Prack => {
                let tag = msg.from().ok()?.tag()?.to_vec();
                self.rewrite(msg, &call_id, from, &tag, SdpRole::Answer)
            }
            // A re-INVITE without a body asks for an offer in its 2xx
            // (RFC 3261 §14.1): the earlier offer is settled.
            Method::Invite if msg.body().is_empty() => {
                self.anchor.expect_offer(&call_id);
                None
            }
            _ => {
                let tag = msg.from().ok()?.tag().unwrap_or_default().to_vec();
                self.rewrite(msg, &call_id, from, &tag, SdpRole::Offer)
            }
        }
    }

    /// The body to forward instead of a response's, in a call the phase
    /// knows; a final failure of the initial INVITE ends the call's media.
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
                if !answered {
                    self.end(&call_id, "initial INVITE failed");
                }
                return None;
            }
        }
        let tag = msg.to().ok()?.tag().unwrap_or_default().to_vec();
        self.rewrite(msg, &call_id, from, &tag, SdpRole::Either)
    }

    /// Looks at what the gate sends for final failures of initial INVITEs
    /// that no received response carried (the core's own 408, 483, 500,
    /// 503…): their calls' media ends too. Parses only final responses of
    /// class 3–6, and only while calls are anchored.
    pub fn observe_sent(&self, out: &[Outgoing]) {
        for o in out {
            let b = &o.bytes;
            let failure = b.starts_with(b"SIP/2.0 ") && b.get(8).is_some_and(|d| *d >= b'3');
            if !failure || self.dialogs().is_empty() {
                continue;
            }
            let Ok(msg) = SipMessage::parse(b.clone(), &Default::default()) else {
                continue;
            };
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
