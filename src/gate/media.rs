//! The anchor-media phase in the call path: every SDP body the proxy
//! forwards goes through the relay ([`MediaAnchor`]) and leaves naming
//! callgate's address and ports; a call's relay sessions end with its BYE,
//! or with the final failure of its initial INVITE (a CANCEL's 487
//! included). Offers are requests' bodies (INVITE, re-INVITE, UPDATE);
//! answers are the bodies that come back, including a late offer's answer
//! in the ACK (RFC 3261 §13.2.1, RFC 3264).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Side;
use crate::media::anchor::{is_sdp, AnchorOptions, MediaAnchor};
use crate::media::relay::{Relay, RelayConfig, RelayEvent};
use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::method::Method;
use crate::sip::proxy::MediaHook;

/// `[media]`: the relay and how SDP is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    pub relay: RelayConfig,
    /// The address written into SDP (default: the bind address).
    pub advertise: std::net::IpAddr,
    /// Remove ICE attributes from SDP passed on (default on: candidates
    /// would let the sides bypass the relay).
    pub strip_ice: bool,
    /// Where the rtpengine-compatible ng control protocol listens (UDP);
    /// `None`: not served.
    pub ng_listen: Option<std::net::SocketAddr>,
    /// Sources allowed to send ng commands.
    pub ng_allow: Vec<ipnet::IpNet>,
}

/// The media phase: the anchor, and the calls that were answered (a failed
/// re-INVITE must not end their media).
pub struct MediaPhase {
    pub anchor: Arc<MediaAnchor>,
    /// Where each call's media statistics go when it ends.
    audit: Option<crate::audit::Audit>,
    pub ng_metrics: Arc<crate::media::ng::server::NgMetrics>,
    options: AnchorOptions,
    answered: Mutex<HashSet<String>>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl MediaPhase {
    pub fn start(
        cfg: &MediaConfig,
        audit: Option<crate::audit::Audit>,
    ) -> Result<Arc<MediaPhase>, String> {
        let relay = Relay::start(cfg.relay.clone()).map_err(|e| format!("media: {e}"))?;
        Ok(Arc::new(MediaPhase {
            anchor: Arc::new(MediaAnchor::new(relay, cfg.advertise)),
            audit,
            ng_metrics: Arc::default(),
            options: AnchorOptions {
                strip_ice: cfg.strip_ice,
            },
            answered: Mutex::new(HashSet::new()),
        }))
    }

    fn answered(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.answered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends a call's media, logging what it relayed.
    fn end(&self, call_id: &str, why: &str) {
        self.answered().remove(call_id);
        if !self.anchor.has_call(call_id) {
            return;
        }
        match self.anchor.delete(call_id) {
            Ok(report) => {
                if let Some(audit) = &self.audit {
                    let streams: Vec<serde_json::Value> = report
                        .streams
                        .iter()
                        .map(|(i, s)| serde_json::json!({"stream": i, "a": s.a, "b": s.b}))
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
                        "media ended"
                    );
                }
            }
            Err(e) => tracing::warn!(call_id, error = %e, "media not released"),
        }
    }

    /// The SDP of `msg` through the anchor, or `None` to forward it as is.
    fn rewrite(
        &self,
        msg: &SipMessage,
        call_id: &str,
        tag: &[u8],
        answer: bool,
    ) -> Option<Vec<u8>> {
        let ct = msg
            .first_index(HeaderName::ContentType)
            .and_then(|i| msg.headers().get(i))
            .map(|h| msg.value(h));
        if msg.body().is_empty() || !is_sdp(ct) {
            return None;
        }
        let tag = text(tag);
        let result = if answer {
            self.anchor
                .answer(call_id, Some(&tag), msg.body(), self.options)
        } else {
            self.anchor
                .offer_or_answer(call_id, &tag, msg.body(), self.options)
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
    /// phase is dropped).
    pub fn watch_timeouts(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                for ev in me.anchor.relay().events() {
                    let RelayEvent::MediaTimeout { session } = ev;
                    let call = me.anchor.call_of_session(session).unwrap_or_default();
                    tracing::warn!(call_id = %call, session, "media timeout: no packet in either direction");
                }
            }
        });
    }
}

impl MediaHook for MediaPhase {
    fn request(&self, msg: &SipMessage, _from: Side) -> Option<Vec<u8>> {
        let call_id = text(msg.call_id()?);
        match msg.method()? {
            Method::Bye => {
                self.end(&call_id, "bye");
                None
            }
            // An ACK's or PRACK's body answers the offer in the response.
            m @ (Method::Ack | Method::Prack) => {
                let tag = msg.from().ok()?.tag()?.to_vec();
                self.rewrite(msg, &call_id, &tag, m == Method::Ack || m == Method::Prack)
            }
            _ => {
                let tag = msg.from().ok()?.tag().unwrap_or_default().to_vec();
                self.rewrite(msg, &call_id, &tag, false)
            }
        }
    }

    fn response(&self, msg: &SipMessage, _from: Side) -> Option<Vec<u8>> {
        let call_id = text(msg.call_id()?);
        let status = msg.status()?;
        let cseq = msg.cseq().ok()?;
        if cseq.method == Method::Invite {
            if (200..300).contains(&status) {
                self.answered().insert(call_id.clone());
            } else if status >= 300 {
                if !self.answered().contains(&call_id) {
                    self.end(&call_id, "initial INVITE failed");
                }
                return None;
            }
        }
        let tag = msg.to().ok()?.tag().unwrap_or_default().to_vec();
        self.rewrite(msg, &call_id, &tag, false)
    }
}
