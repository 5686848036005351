//! Offer/answer through the relay (RFC 3264): each call's SDP is read, its
//! streams get relay sessions, and the SDP is passed on with the relay's
//! address and ports, so the two sides only ever send media to callgate.
//!
//! Leg A of every stream faces the side that made the first offer (for an
//! inbound call, the carrier), leg B the other side. An offer or answer
//! from one side sets that side's remote address on its leg and is
//! rewritten with the *other* leg's local ports — the ports the receiving
//! side must send to. A later offer (re-INVITE, UPDATE) from either side
//! goes through the same path; when it moves a stream to another address
//! the leg relatches (RFC 3264 §8.3.1). Streams the SDP disables (port 0)
//! are passed through untouched, and a held stream (`c=0.0.0.0`, RFC 3264
//! §8.4) keeps its last remote.
//!
//! This is what the SIP side (INVITE, 183, 200, ACK, re-INVITE, UPDATE,
//! BYE, CANCEL) and the rtpengine-compatible ng control protocol both
//! drive.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use super::relay::{Leg, Relay, RelayError, Remote, Session, SessionStats};
use super::sdp::{Anchor, RewriteError, RewriteOptions, Sdp, SdpError};

/// Why an SDP could not be anchored.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("SDP: {0}")]
    Sdp(#[from] SdpError),
    #[error("SDP rewrite: {0}")]
    Rewrite(#[from] RewriteError),
    #[error("{0}")]
    Relay(#[from] RelayError),
    #[error("unknown call {0:?}")]
    UnknownCall(String),
    #[error("answer for call {0:?} without an offer")]
    NoOffer(String),
}

/// How to rewrite (per request; the ng protocol's flags map onto it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnchorOptions {
    /// Remove ICE attributes from the SDP passed on (a side that does not
    /// do ICE must not see candidates that bypass the relay).
    pub strip_ice: bool,
}

/// One media stream (an m-line index) of a call.
struct Stream {
    session: Session,
    /// The remote each leg's SDP named, to notice moves.
    remotes: [Option<Remote>; 2],
    media_type: String,
    proto: String,
}

/// What the anchor keeps per call.
struct CallMedia {
    /// The tag of the side that made the first offer (leg A).
    offerer_tag: String,
    streams: Vec<Option<Stream>>,
    /// The leg whose offer awaits an answer.
    pending_offer: Option<Leg>,
    /// The other side's tag, once it signalled.
    answerer_tag: Option<String>,
    created: Instant,
}

impl CallMedia {
    fn details(&self) -> Vec<StreamDetail> {
        self.streams
            .iter()
            .flatten()
            .map(|s| StreamDetail {
                media_type: s.media_type.clone(),
                proto: s.proto.clone(),
                ports: s.session.ports,
                remotes: s.remotes,
            })
            .collect()
    }

    fn tags(&self) -> [String; 2] {
        [
            self.offerer_tag.clone(),
            self.answerer_tag.clone().unwrap_or_default(),
        ]
    }
}

/// A call's streams as `query` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallReport {
    pub age_secs: u64,
    /// The tag of the side that made the first offer (leg A), and of the
    /// other side once it answered.
    pub tags: [String; 2],
    /// Per m-line index that has a relay session.
    pub streams: Vec<(usize, SessionStats)>,
    /// Per stream: media type, protocol, local (RTP, RTCP) ports and SDP
    /// remotes of each leg.
    pub details: Vec<StreamDetail>,
}

/// What the anchor knows of one stream, besides its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDetail {
    pub media_type: String,
    pub proto: String,
    pub ports: [(u16, u16); 2],
    pub remotes: [Option<Remote>; 2],
}

/// The media anchor: the relay plus the calls it serves.
pub struct MediaAnchor {
    relay: Relay,
    /// The address written into SDP (where the sides send media).
    advertise: IpAddr,
    calls: Mutex<HashMap<String, CallMedia>>,
}

impl MediaAnchor {
    pub fn new(relay: Relay, advertise: IpAddr) -> MediaAnchor {
        MediaAnchor {
            relay,
            advertise,
            calls: Mutex::new(HashMap::new()),
        }
    }

    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CallMedia>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls with media anchored now.
    pub fn calls(&self) -> usize {
        self.lock().len()
    }

    /// An offer from the side tagged `from_tag`: returns the SDP to pass on.
    pub fn offer(
        &self,
        call_id: &str,
        from_tag: &str,
        body: &[u8],
        opts: AnchorOptions,
    ) -> Result<Vec<u8>, AnchorError> {
        let sdp = Sdp::parse(body)?;
        let mut calls = self.lock();
        let call = calls
            .entry(call_id.to_owned())
            .or_insert_with(|| CallMedia {
                offerer_tag: from_tag.to_owned(),
                streams: Vec::new(),
                pending_offer: None,
                answerer_tag: None,
                created: Instant::now(),
            });
        let from = if call.offerer_tag == from_tag {
            Leg::A
        } else {
            call.answerer_tag = Some(from_tag.to_owned());
            Leg::B
        };
        call.pending_offer = Some(from);
        self.through(call, from, &sdp, opts)
    }

    /// The answer to the pending offer (from the side tagged `tag`, when
    /// known): returns the SDP to pass on.
    pub fn answer(
        &self,
        call_id: &str,
        tag: Option<&str>,
        body: &[u8],
        opts: AnchorOptions,
    ) -> Result<Vec<u8>, AnchorError> {
        let sdp = Sdp::parse(body)?;
        let mut calls = self.lock();
        let call = calls
            .get_mut(call_id)
            .ok_or_else(|| AnchorError::UnknownCall(call_id.to_owned()))?;
        if let Some(t) = tag.filter(|t| *t != call.offerer_tag) {
            call.answerer_tag = Some(t.to_owned());
        }
        // The answer comes from the other side than the offer (an answer
        // repeated, e.g. a 183 then the 200, keeps the same side).
        let offerer = call
            .pending_offer
            .ok_or_else(|| AnchorError::NoOffer(call_id.to_owned()))?;
        self.through(call, offerer.other(), &sdp, opts)
    }

    /// SDP from the side tagged `tag` that may be an offer or an answer (a
    /// response's body): the answer when the other side's offer is pending,
    /// else an offer (a late offer in a 200, RFC 3261 §13.2.1).
    pub fn offer_or_answer(
        &self,
        call_id: &str,
        tag: &str,
        body: &[u8],
        opts: AnchorOptions,
    ) -> Result<Vec<u8>, AnchorError> {
        let answering = {
            let calls = self.lock();
            calls.get(call_id).is_some_and(|c| {
                let sender = if c.offerer_tag == tag { Leg::A } else { Leg::B };
                c.pending_offer.is_some_and(|o| o != sender)
            })
        };
        if answering {
            self.answer(call_id, Some(tag), body, opts)
        } else {
            self.offer(call_id, tag, body, opts)
        }
    }

    /// Whether the call has anchored media.
    pub fn has_call(&self, call_id: &str) -> bool {
        self.lock().contains_key(call_id)
    }

    /// Sets the sender's remotes, creates missing streams and rewrites.
    fn through(
        &self,
        call: &mut CallMedia,
        from: Leg,
        sdp: &Sdp<'_>,
        opts: AnchorOptions,
    ) -> Result<Vec<u8>, AnchorError> {
        let media = sdp.media();
        if call.streams.len() < media.len() {
            call.streams.resize_with(media.len(), || None);
        }
        let mut plan = Vec::with_capacity(media.len());
        for (i, m) in media.iter().enumerate() {
            if m.is_disabled() || m.port_count > 1 {
                plan.push(None);
                continue;
            }
            if call.streams[i].is_none() {
                call.streams[i] = Some(Stream {
                    session: self.relay.create(m.rtcp_mux)?,
                    remotes: [None, None],
                    media_type: m.media_type.to_owned(),
                    proto: m.proto.to_owned(),
                });
            }
            let Some(stream) = call.streams[i].as_mut() else {
                plan.push(None);
                continue;
            };
            // Where this side receives: its c= address and m= port, RTCP at
            // its a=rtcp (RFC 3605) or next to RTP. On hold it keeps the last.
            if let Some(addr) = m.address.filter(|a| !a.is_unspecified()) {
                let remote = Remote {
                    rtp: SocketAddr::new(addr, m.port),
                    rtcp: m
                        .rtcp
                        .map(|r| SocketAddr::new(r.addr.unwrap_or(addr), r.port))
                        .or(m.rtcp_mux.then_some(SocketAddr::new(addr, m.port))),
                };
                let previous = stream.remotes[from as usize];
                if previous != Some(remote) {
                    let moved = previous.is_some_and(|p| p.rtp != remote.rtp);
                    self.relay
                        .set_remote(stream.session.id, from, remote, moved)?;
                    stream.remotes[from as usize] = Some(remote);
                }
            }
            // The receiving side sends to the other leg's ports.
            let (rtp_port, rtcp_port) = stream.session.ports[from.other() as usize];
            plan.push(Some(Anchor {
                addr: self.advertise,
                rtp_port,
                rtcp_port: (rtcp_port != rtp_port).then_some(rtcp_port),
            }));
        }
        let out = sdp.rewrite(
            &plan,
            &RewriteOptions {
                strip_ice: opts.strip_ice,
                origin_version: None,
            },
        )?;
        Ok(out.to_vec())
    }

    /// Ends a call's media: its relay sessions close and their ports are
    /// freed. Returns each stream's final statistics.
    pub fn delete(&self, call_id: &str) -> Result<CallReport, AnchorError> {
        let call = self
            .lock()
            .remove(call_id)
            .ok_or_else(|| AnchorError::UnknownCall(call_id.to_owned()))?;
        let mut streams = Vec::new();
        for (i, s) in call.streams.iter().enumerate() {
            if let Some(s) = s {
                streams.push((i, self.relay.delete(s.session.id)?));
            }
        }
        Ok(CallReport {
            age_secs: call.created.elapsed().as_secs(),
            tags: call.tags(),
            streams,
            details: call.details(),
        })
    }

    /// A call's statistics so far.
    pub fn query(&self, call_id: &str) -> Result<CallReport, AnchorError> {
        let (age, ids, tags, details) = {
            let calls = self.lock();
            let call = calls
                .get(call_id)
                .ok_or_else(|| AnchorError::UnknownCall(call_id.to_owned()))?;
            let ids: Vec<(usize, u64)> = call
                .streams
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i, s.as_ref()?.session.id)))
                .collect();
            (
                call.created.elapsed().as_secs(),
                ids,
                call.tags(),
                call.details(),
            )
        };
        let mut streams = Vec::new();
        for (i, id) in ids {
            streams.push((i, self.relay.stats(id)?));
        }
        Ok(CallReport {
            age_secs: age,
            tags,
            streams,
            details,
        })
    }

    /// The call owning a relay session (for media timeouts).
    pub fn call_of_session(&self, session: u64) -> Option<String> {
        self.lock().iter().find_map(|(id, c)| {
            c.streams
                .iter()
                .flatten()
                .any(|s| s.session.id == session)
                .then(|| id.clone())
        })
    }
}

/// Whether a SIP body is SDP worth anchoring (`application/sdp`).
pub fn is_sdp(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|t| {
        let t = t.split(|b| *b == b';').next().unwrap_or_default();
        t.trim_ascii().eq_ignore_ascii_case(b"application/sdp")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::relay::RelayConfig;
    use std::net::UdpSocket;
    use std::time::Duration;

    fn offer_sdp(port: u16) -> String {
        format!(
            "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
        )
    }

    fn anchor(min: u16) -> MediaAnchor {
        let relay = Relay::start(RelayConfig {
            port_min: min,
            port_max: min + 99,
            ..RelayConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        MediaAnchor::new(relay, IpAddr::from([127, 0, 0, 1]))
    }

    fn port_of(sdp: &[u8]) -> u16 {
        let s = Sdp::parse(sdp).unwrap_or_else(|e| panic!("{e}"));
        s.media()[0].port
    }

    #[test]
    fn offer_and_answer_put_the_relay_between_the_sides() {
        let a = anchor(42_000);
        let carrier = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let pbx = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        for s in [&carrier, &pbx] {
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let cport = carrier.local_addr().map(|a| a.port()).unwrap_or(0);
        let pport = pbx.local_addr().map(|a| a.port()).unwrap_or(0);
        let to_pbx = a
            .offer(
                "call-1",
                "tagA",
                offer_sdp(cport).as_bytes(),
                AnchorOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let to_carrier = a
            .answer(
                "call-1",
                None,
                offer_sdp(pport).as_bytes(),
                AnchorOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let (leg_b, leg_a) = (port_of(&to_pbx), port_of(&to_carrier));
        assert_ne!(leg_b, cport);
        assert!(String::from_utf8_lossy(&to_pbx).contains("a=rtpmap:101 telephone-event/8000\r\n"));
        // The PBX sends to leg B; it reaches the carrier, from leg A.
        pbx.send_to(
            &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
            ("127.0.0.1", leg_b),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 64];
        let (n, from) = carrier
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((n, from.port()), (12, leg_a));
        let report = a.delete("call-1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.streams.len(), 1);
        assert_eq!(report.streams[0].1.b.packets, 1);
        assert_eq!(a.calls(), 0);
        assert!(matches!(
            a.delete("call-1"),
            Err(AnchorError::UnknownCall(_))
        ));
    }

    #[test]
    fn a_reoffer_from_the_answerer_keeps_the_ports_and_disabled_streams_pass() {
        let a = anchor(42_200);
        let first = a
            .offer(
                "c",
                "tagA",
                offer_sdp(5004).as_bytes(),
                AnchorOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let answer = a
            .answer(
                "c",
                None,
                offer_sdp(6004).as_bytes(),
                AnchorOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        // The PBX re-offers (hold, then a new address): same relay ports.
        let hold = offer_sdp(6004).replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        let to_carrier = a
            .offer("c", "tagB", hold.as_bytes(), AnchorOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(port_of(&to_carrier), port_of(&answer));
        assert!(
            String::from_utf8_lossy(&to_carrier).contains("c=IN IP4 0.0.0.0"),
            "hold kept"
        );
        let back = a
            .answer(
                "c",
                None,
                offer_sdp(5004).as_bytes(),
                AnchorOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(port_of(&back), port_of(&first));
        let two = format!("{}m=video 0 RTP/AVP 31\r\n", offer_sdp(5004));
        let out = a
            .offer("c", "tagA", two.as_bytes(), AnchorOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(String::from_utf8_lossy(&out).ends_with("m=video 0 RTP/AVP 31\r\n"));
        assert!(matches!(
            a.answer("nope", None, b"v=0\r\n", AnchorOptions::default()),
            Err(AnchorError::Sdp(_)) | Err(AnchorError::UnknownCall(_))
        ));
    }
}
