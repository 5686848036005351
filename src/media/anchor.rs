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

use super::relay::{Leg, Relay, RelayError, Remote, Session, SessionStats, SourcePolicy, SrtpRole};
use super::sdp::{
    plain_proto, secure_proto, Anchor, Keying, Media, RewriteError, RewriteOptions, Sdp, SdpError,
};
use super::srtp::{CryptoAttribute, CryptoSuite, MasterKey, SrtpContext, SrtpError};

/// Why an SDP could not be anchored.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("SDP: {0}")]
    Sdp(#[from] SdpError),
    #[error("SDP rewrite: {0}")]
    Rewrite(#[from] RewriteError),
    #[error("{0}")]
    Relay(#[from] RelayError),
    #[error("SRTP: {0}")]
    Srtp(#[from] SrtpError),
    #[error("unknown call {0:?}")]
    UnknownCall(String),
    #[error("answer for call {0:?} without an offer")]
    NoOffer(String),
    /// More m-lines than `[media] max_streams` (a call with many streams
    /// takes many relay ports).
    #[error("SDP with {count} m-lines; at most {max} are anchored")]
    TooManyStreams { count: usize, max: usize },
    /// The calls from one signalling source hold `[media]
    /// max_ports_per_source` relay ports already: one admitted source
    /// cannot take the whole range.
    #[error("signalling source {source_ip} holds {held} relay ports; the cap is {max}")]
    SourceCap {
        source_ip: IpAddr,
        held: usize,
        max: usize,
    },
}

impl AnchorError {
    /// The reason counted in `callgate_media_offers_refused_total`.
    pub fn refusal(&self) -> super::relay::OfferRefusal {
        use super::relay::OfferRefusal;
        match self {
            AnchorError::Relay(RelayError::NoPorts { .. }) => OfferRefusal::Ports,
            AnchorError::SourceCap { .. } => OfferRefusal::SourceCap,
            AnchorError::TooManyStreams { .. } => OfferRefusal::Streams,
            _ => OfferRefusal::Sdp,
        }
    }

    /// Whether the relay lacks room (ports, or the source's share of them)
    /// rather than the SDP being unacceptable.
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            AnchorError::Relay(RelayError::NoPorts { .. }) | AnchorError::SourceCap { .. }
        )
    }
}

/// How to rewrite (per request; the ng protocol's flags map onto it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnchorOptions {
    /// Remove ICE attributes from the SDP passed on (a side that does not
    /// do ICE must not see candidates that bypass the relay).
    pub strip_ice: bool,
    /// What an offer passed on asks the receiving side to use.
    pub transport: Transport,
    /// Who may latch the legs of streams this SDP creates: the sending
    /// side's leg, then the receiving side's. `None`: any source (the ng
    /// protocol, whose caller decides).
    pub sources: Option<[SourcePolicy; 2]>,
    /// The signalling source address a new call's relay ports are counted
    /// against (`max_ports_per_source`); `None`: not counted.
    pub charge: Option<IpAddr>,
}

/// The media transport a side is offered (`[media] trunk_transport`,
/// `pbx_transport`; the ng protocol's `transport-protocol`).
///
/// When the two sides' transports differ, the relay terminates SDES-SRTP
/// (RFC 4568, RFC 3711) on the SRTP side and relays plain RTP to the
/// other: it decrypts what that side sends with the key its SDP
/// announced and encrypts what it sends there with a key of its own,
/// announced in the SDP it passes to that side. Otherwise the streams pass
/// as they are — SRTP with the sides' own keys, end to end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// What the other side offered (no conversion).
    #[default]
    AsOffered,
    /// Plain RTP (`RTP/AVP`, `RTP/AVPF`): SDES-SRTP from the other side is
    /// terminated at the relay.
    Rtp,
    /// SDES-SRTP (`RTP/SAVP`, `RTP/SAVPF`): plain RTP from the other side
    /// is encrypted at the relay.
    Srtp,
}

/// The SDES keys of one leg while the relay terminates SRTP on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LegKeys {
    /// The key the far end sends with (from its SDP): decrypts.
    theirs: Option<CryptoAttribute>,
    /// The key the relay sends with (in the SDP it gave the far end).
    ours: Option<CryptoAttribute>,
}

/// One media stream (an m-line index) of a call.
struct Stream {
    session: Session,
    /// The remote each leg's SDP named, to notice moves.
    remotes: [Option<Remote>; 2],
    media_type: String,
    proto: String,
    /// The leg on which the relay terminates SRTP (the other leg is plain
    /// RTP); `None`: the stream passes as it is.
    srtp_leg: Option<Leg>,
    /// Per leg, the keys wanted and the keys the relay was last given.
    keys: [LegKeys; 2],
    applied: [LegKeys; 2],
    /// Per leg, whether the relay was told the leg must speak SRTP.
    required: [bool; 2],
}

/// The stream's `a=crypto` key when its proto is SDES-SRTP's (RTP/SAVP,
/// RTP/SAVPF) and one of its lines has a suite the relay supports; the
/// first such line, as RFC 4568 §7.1.1 orders them by preference.
fn sdes_key(m: &Media<'_>) -> Option<CryptoAttribute> {
    if secure_proto(m.proto) != Some(m.proto) {
        return None;
    }
    m.crypto
        .iter()
        .find_map(|c| CryptoAttribute::parse(c.value).ok())
}

fn is_plain_rtp(proto: &str) -> bool {
    plain_proto(proto) == Some(proto)
}

impl Stream {
    /// Decides the stream's keying for SDP passing from leg `from` to the
    /// other leg (RFC 4568 §7: an offer's `a=crypto` lines, an answer's
    /// one line with the chosen tag) and records the keys wanted.
    fn keying(
        &mut self,
        from: Leg,
        m: &Media<'_>,
        offer: bool,
        transport: Transport,
    ) -> Result<Keying, SrtpError> {
        let to = from.other();
        if !offer {
            return Ok(match self.srtp_leg {
                // We offered the answerer SRTP: its answer carries its key.
                Some(l) if l == from => match sdes_key(m) {
                    Some(theirs) => {
                        self.keys[from as usize].theirs = Some(theirs);
                        Keying::Plain
                    }
                    // It answered plain RTP after all: no conversion.
                    None => self.pass(),
                },
                // The offerer speaks SRTP: answer it with the relay's key.
                Some(l) if l == to => match &self.keys[to as usize].ours {
                    Some(ours) if is_plain_rtp(m.proto) => Keying::Sdes(vec![ours.to_value()]),
                    _ => self.pass(),
                },
                _ => Keying::AsIs,
            });
        }
        // A leg that already converts keeps its transport (a re-offer).
        let want = match self.srtp_leg {
            Some(l) if l == to => Transport::Srtp,
            Some(_) => Transport::Rtp,
            None => transport,
        };
        match (want, sdes_key(m)) {
            (Transport::Srtp, None) if is_plain_rtp(m.proto) => {
                let ours = self.our_key(to, CryptoSuite::AesCm128HmacSha1_80, 1)?;
                self.keys[from as usize] = LegKeys::default();
                self.srtp_leg = Some(to);
                Ok(Keying::Sdes(vec![ours.to_value()]))
            }
            (Transport::Rtp, Some(theirs)) => {
                self.our_key(from, theirs.suite, theirs.tag)?;
                self.keys[from as usize].theirs = Some(theirs);
                self.keys[to as usize] = LegKeys::default();
                self.srtp_leg = Some(from);
                Ok(Keying::Plain)
            }
            _ => Ok(self.pass()),
        }
    }

    /// No conversion: both legs relay packets as they are.
    fn pass(&mut self) -> Keying {
        self.srtp_leg = None;
        self.keys = Default::default();
        Keying::AsIs
    }

    /// The relay's key for `leg`: the one it already announced when the
    /// suite is the same (a re-offer keeps the stream's rollover state),
    /// else a fresh random one; `tag` is the offer's line the answer picks.
    fn our_key(
        &mut self,
        leg: Leg,
        suite: CryptoSuite,
        tag: u32,
    ) -> Result<CryptoAttribute, SrtpError> {
        let slot = &mut self.keys[leg as usize].ours;
        let key = match slot.take() {
            Some(k) if k.suite == suite => k.key,
            _ => MasterKey::random()?,
        };
        let ours = CryptoAttribute { tag, suite, key };
        *slot = Some(ours.clone());
        Ok(ours)
    }

    /// Gives the relay each key that changed (an unchanged key — the same
    /// suite and key, whatever the tag — keeps its context's rollover and
    /// replay state).
    fn apply_keys(&mut self, relay: &Relay) -> Result<(), AnchorError> {
        for leg in [Leg::A, Leg::B] {
            let required = self.srtp_leg == Some(leg);
            if self.required[leg as usize] != required {
                relay.require_srtp(self.session.id, leg, required)?;
                self.required[leg as usize] = required;
            }
            let (want, had) = (&self.keys[leg as usize], &mut self.applied[leg as usize]);
            for (role, key, applied) in [
                (SrtpRole::Decrypt, &want.theirs, &mut had.theirs),
                (SrtpRole::Encrypt, &want.ours, &mut had.ours),
            ] {
                let suite_and_key = |k: &Option<CryptoAttribute>| {
                    k.as_ref().map(|k| (k.suite, k.key.concatenated()))
                };
                if suite_and_key(key) == suite_and_key(applied) {
                    continue;
                }
                let context = key
                    .as_ref()
                    .map(|k| SrtpContext::new(k.suite, &k.key))
                    .transpose()?;
                relay.set_srtp(self.session.id, leg, role, context)?;
                applied.clone_from(key);
            }
        }
        Ok(())
    }
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
    /// The signalling source its relay ports are counted against, and how
    /// many it holds.
    charged: Option<IpAddr>,
    ports: usize,
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
    /// Relay ports held per signalling source (locked inside `calls`).
    held: Mutex<HashMap<IpAddr, usize>>,
    limits: AnchorLimits,
}

/// Caps on what offers may take from the relay (`[media] max_streams`,
/// `max_ports_per_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorLimits {
    /// Most m-lines an SDP may carry.
    pub max_streams: usize,
    /// Most relay ports the calls charged to one source may hold.
    pub max_ports_per_source: usize,
}

impl Default for AnchorLimits {
    fn default() -> Self {
        AnchorLimits {
            max_streams: 32,
            max_ports_per_source: usize::MAX,
        }
    }
}

impl MediaAnchor {
    pub fn new(relay: Relay, advertise: IpAddr) -> MediaAnchor {
        MediaAnchor::with_limits(relay, advertise, AnchorLimits::default())
    }

    pub fn with_limits(relay: Relay, advertise: IpAddr, limits: AnchorLimits) -> MediaAnchor {
        MediaAnchor {
            relay,
            advertise,
            calls: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            limits,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Relay ports held by the calls charged to `source`.
    pub fn ports_held_by(&self, source: IpAddr) -> usize {
        self.held().get(&source).copied().unwrap_or(0)
    }

    /// Returns a call's ports to its source's share.
    fn release(&self, call: &CallMedia) {
        let Some(ip) = call.charged else { return };
        let mut held = self.held();
        if let Some(n) = held.get_mut(&ip) {
            *n = n.saturating_sub(call.ports);
            if *n == 0 {
                held.remove(&ip);
            }
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
                charged: opts.charge,
                ports: 0,
            });
        let from = if call.offerer_tag == from_tag {
            Leg::A
        } else {
            call.answerer_tag = Some(from_tag.to_owned());
            Leg::B
        };
        call.pending_offer = Some(from);
        self.through(call, from, &sdp, opts, true)
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
        self.through(call, offerer.other(), &sdp, opts, false)
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

    /// A new offer/answer exchange starts without an offer (a re-INVITE
    /// without SDP, RFC 3261 §14.1): SDP in its response is an offer, not
    /// an answer to the last one.
    pub fn expect_offer(&self, call_id: &str) {
        if let Some(call) = self.lock().get_mut(call_id) {
            call.pending_offer = None;
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
        offer: bool,
    ) -> Result<Vec<u8>, AnchorError> {
        let media = sdp.media();
        if media.len() > self.limits.max_streams {
            return Err(AnchorError::TooManyStreams {
                count: media.len(),
                max: self.limits.max_streams,
            });
        }
        if call.streams.len() < media.len() {
            call.streams.resize_with(media.len(), || None);
        }
        let mut plan = Vec::with_capacity(media.len());
        for (i, m) in media.iter().enumerate() {
            if m.is_disabled() || m.port_count > 1 {
                // A disabled stream of a converting call still goes to each
                // side in its transport: the plain side gets no key.
                let converting = call
                    .streams
                    .get(i)
                    .and_then(Option::as_ref)
                    .and_then(|s| s.srtp_leg);
                plan.push(
                    converting
                        .filter(|_| m.is_disabled())
                        .map(|srtp_leg| Anchor {
                            addr: self.advertise,
                            rtp_port: 0,
                            rtcp_port: None,
                            keying: if srtp_leg == from.other() {
                                Keying::Sdes(Vec::new())
                            } else {
                                Keying::Plain
                            },
                        }),
                );
                continue;
            }
            if call.streams[i].is_none() {
                let ports = if m.rtcp_mux { 2 } else { 4 };
                if let Some(ip) = call.charged {
                    let mut held = self.held();
                    let n = held.get(&ip).copied().unwrap_or(0);
                    if n + ports > self.limits.max_ports_per_source {
                        return Err(AnchorError::SourceCap {
                            source_ip: ip,
                            held: n,
                            max: self.limits.max_ports_per_source,
                        });
                    }
                    held.insert(ip, n + ports);
                }
                let session = match self.relay.create(m.rtcp_mux) {
                    Ok(s) => s,
                    Err(e) => {
                        if let Some(ip) = call.charged {
                            if let Some(n) = self.held().get_mut(&ip) {
                                *n = n.saturating_sub(ports);
                            }
                        }
                        return Err(e.into());
                    }
                };
                call.ports += ports;
                if let Some([sender, receiver]) = &opts.sources {
                    self.relay.set_source(session.id, from, sender.clone())?;
                    self.relay
                        .set_source(session.id, from.other(), receiver.clone())?;
                }
                call.streams[i] = Some(Stream {
                    session,
                    remotes: [None, None],
                    media_type: m.media_type.to_owned(),
                    proto: m.proto.to_owned(),
                    srtp_leg: None,
                    keys: Default::default(),
                    applied: Default::default(),
                    required: [false; 2],
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
                    // New SDP for a latched leg re-arms it (the only way a
                    // leg ever moves to a new source).
                    let moved = previous.is_some();
                    self.relay
                        .set_remote(stream.session.id, from, remote, moved)?;
                    stream.remotes[from as usize] = Some(remote);
                }
            }
            let keying = stream.keying(from, m, offer, opts.transport)?;
            stream.apply_keys(&self.relay)?;
            // The receiving side sends to the other leg's ports.
            let (rtp_port, rtcp_port) = stream.session.ports[from.other() as usize];
            plan.push(Some(Anchor {
                addr: self.advertise,
                rtp_port,
                rtcp_port: (rtcp_port != rtp_port).then_some(rtcp_port),
                keying,
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
        self.release(&call);
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

    /// The calls owning any of `sessions` (each named once) and the
    /// sessions no call owns, in one pass over the calls (a failed relay
    /// worker hands over all its sessions at once).
    pub fn calls_of_sessions(&self, sessions: &[u64]) -> (Vec<String>, Vec<u64>) {
        let wanted: std::collections::HashSet<u64> = sessions.iter().copied().collect();
        let mut owned = std::collections::HashSet::new();
        let mut calls = Vec::new();
        for (id, c) in self.lock().iter() {
            let mut mine = false;
            for s in c.streams.iter().flatten() {
                if wanted.contains(&s.session.id) {
                    owned.insert(s.session.id);
                    mine = true;
                }
            }
            if mine {
                calls.push(id.clone());
            }
        }
        let orphans = sessions
            .iter()
            .copied()
            .filter(|s| !owned.contains(s))
            .collect();
        (calls, orphans)
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
    use crate::media::srtp::{CryptoSuite, MasterKey, SrtpContext};
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

    fn savp_sdp(port: u16, crypto: &[String]) -> String {
        let mut sdp = offer_sdp(port).replace("RTP/AVP", "RTP/SAVP");
        for c in crypto {
            sdp.push_str(&format!("a=crypto:{c}\r\n"));
        }
        sdp
    }

    fn crypto_of(sdp: &[u8]) -> Vec<CryptoAttribute> {
        let s = Sdp::parse(sdp).unwrap_or_else(|e| panic!("{e}"));
        s.media()[0]
            .crypto
            .iter()
            .map(|c| CryptoAttribute::parse(c.value).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    fn udp() -> (UdpSocket, u16) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{e}"));
        let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
        (s, port)
    }

    fn send(from: &UdpSocket, port: u16, pkt: &[u8]) {
        from.send_to(pkt, ("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn recv(on: &UdpSocket) -> Vec<u8> {
        let mut buf = [0u8; 512];
        let (n, _) = on.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        buf[..n].to_vec()
    }

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..160).map(|i| i as u8 ^ seq as u8));
        p
    }

    fn ctx(suite: CryptoSuite, key: &MasterKey) -> SrtpContext {
        SrtpContext::new(suite, key).unwrap_or_else(|e| panic!("{e}"))
    }

    fn offered(a: &MediaAnchor, call: &str, tag: &str, sdp: &[u8], t: Transport) -> Vec<u8> {
        a.offer(call, tag, sdp, opts(t))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn answered(
        a: &MediaAnchor,
        call: &str,
        tag: Option<&str>,
        sdp: &[u8],
        t: Transport,
    ) -> Vec<u8> {
        a.answer(call, tag, sdp, opts(t))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `pkt` sealed by `ctx`.
    fn seal(ctx: &mut SrtpContext, mut pkt: Vec<u8>) -> Vec<u8> {
        let len = pkt.len();
        pkt.resize(len + 16, 0);
        let n = ctx
            .protect_rtp(&mut pkt, len)
            .unwrap_or_else(|e| panic!("{e}"));
        pkt.truncate(n);
        pkt
    }

    fn opts(transport: Transport) -> AnchorOptions {
        AnchorOptions {
            strip_ice: false,
            transport,
            ..AnchorOptions::default()
        }
    }

    #[test]
    fn srtp_from_the_carrier_is_terminated_for_a_plain_pbx() {
        let a = anchor(42_400);
        let ((carrier, cport), (pbx, pport)) = (udp(), udp());
        let key = MasterKey::random().unwrap_or_else(|e| panic!("{e}"));
        let suite = CryptoSuite::AesCm128HmacSha1_32;
        let theirs = CryptoAttribute {
            tag: 2,
            suite,
            key: key.clone(),
        };
        // The first line's suite is one the relay does not support: the
        // second is used, and the answer names its tag.
        let offer = savp_sdp(
            cport,
            &[
                "1 AEAD_AES_256_GCM inline:AAAA".to_owned(),
                theirs.to_value(),
            ],
        );
        let to_pbx = offered(&a, "s1", "tagA", offer.as_bytes(), Transport::Rtp);
        let text = String::from_utf8_lossy(&to_pbx).into_owned();
        assert!(
            text.contains(" RTP/AVP 0 101\r\n") && !text.contains("a=crypto"),
            "{text}"
        );
        let to_carrier = answered(
            &a,
            "s1",
            None,
            offer_sdp(pport).as_bytes(),
            Transport::AsOffered,
        );
        assert!(String::from_utf8_lossy(&to_carrier).contains(" RTP/SAVP 0 101\r\n"));
        let [ours] = &crypto_of(&to_carrier)[..] else {
            panic!("one a=crypto in the answer")
        };
        assert_eq!((ours.tag, ours.suite), (2, suite));
        assert_ne!(ours.key, key, "the relay sends with a key of its own");
        let (leg_b, leg_a) = (port_of(&to_pbx), port_of(&to_carrier));

        // Carrier → PBX: decrypted. A forged packet and a replay are
        // dropped (the next good packet is the next to arrive).
        let mut carrier_out = ctx(suite, &key);
        let mut protect = |seq| {
            let mut buf = rtp(seq, 7);
            let len = buf.len();
            buf.resize(len + 16, 0);
            let n = carrier_out
                .protect_rtp(&mut buf, len)
                .unwrap_or_else(|e| panic!("{e}"));
            buf.truncate(n);
            buf
        };
        let first = protect(1);
        send(&carrier, leg_a, &first);
        assert_eq!(recv(&pbx), rtp(1, 7));
        let mut forged = protect(2);
        forged[20] ^= 1;
        send(&carrier, leg_a, &forged);
        send(&carrier, leg_a, &first);
        send(&carrier, leg_a, &protect(3));
        assert_eq!(recv(&pbx), rtp(3, 7));

        // A re-offer repeating the key keeps the context: the replay is
        // still refused. A new key takes over at once.
        let reoffer = |key: &MasterKey| {
            let line = CryptoAttribute {
                tag: 2,
                suite,
                key: key.clone(),
            };
            let sdp = savp_sdp(cport, &[line.to_value()]);
            offered(&a, "s1", "tagA", sdp.as_bytes(), Transport::Rtp);
            answered(
                &a,
                "s1",
                None,
                offer_sdp(pport).as_bytes(),
                Transport::AsOffered,
            )
        };
        assert_eq!(crypto_of(&reoffer(&key)), vec![ours.clone()]);
        send(&carrier, leg_a, &first);
        send(&carrier, leg_a, &protect(4));
        assert_eq!(recv(&pbx), rtp(4, 7));
        // A new key: the old one still opens packets (the carrier may send
        // with it until it has the answer, or for good if the re-offer
        // fails) until one comes under the new key.
        let key2 = MasterKey::random().unwrap_or_else(|e| panic!("{e}"));
        reoffer(&key2);
        send(&carrier, leg_a, &protect(5));
        assert_eq!(recv(&pbx), rtp(5, 7), "the old key until the switch");
        send(&carrier, leg_a, &seal(&mut ctx(suite, &key2), rtp(6, 7)));
        assert_eq!(recv(&pbx), rtp(6, 7));
        send(&carrier, leg_a, &protect(7)); // the old key, after the switch
        send(&carrier, leg_a, &seal(&mut ctx(suite, &key2), rtp(8, 7)));
        assert_eq!(recv(&pbx), rtp(8, 7), "the old key is gone");

        // PBX → carrier: encrypted with the key of the answer.
        let mut carrier_in = ctx(ours.suite, &ours.key);
        for seq in [10, 11] {
            send(&pbx, leg_b, &rtp(seq, 9));
            let mut got = recv(&carrier);
            let n = carrier_in
                .unprotect_rtp(&mut got)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&got[..n], rtp(seq, 9).as_slice());
        }
        let report = a.delete("s1").unwrap_or_else(|e| panic!("{e}"));
        let stats = &report.streams[0].1;
        assert_eq!((stats.a.packets, stats.a.srtp_failed), (6, 4));
        assert_eq!((stats.b.packets, stats.b.srtp_failed), (2, 0));
    }

    #[test]
    fn plain_rtp_from_the_carrier_is_encrypted_for_an_srtp_pbx() {
        let a = anchor(42_600);
        let ((carrier, cport), (pbx, pport)) = (udp(), udp());
        let to_pbx = offered(
            &a,
            "s2",
            "tagA",
            offer_sdp(cport).as_bytes(),
            Transport::Srtp,
        );
        assert!(String::from_utf8_lossy(&to_pbx).contains(" RTP/SAVP 0 101\r\n"));
        let [ours] = &crypto_of(&to_pbx)[..] else {
            panic!("one a=crypto in the offer")
        };
        assert_eq!(ours.suite, CryptoSuite::AesCm128HmacSha1_80);
        // Before the PBX's answer names its key, its packets are dropped,
        // not relayed unchecked (nor latched).
        send(&pbx, port_of(&to_pbx), &rtp(30, 6));
        let pbx_key = MasterKey::random().unwrap_or_else(|e| panic!("{e}"));
        let answer = savp_sdp(
            pport,
            &[CryptoAttribute {
                tag: ours.tag,
                suite: ours.suite,
                key: pbx_key.clone(),
            }
            .to_value()],
        );
        let to_carrier = answered(
            &a,
            "s2",
            Some("tagB"),
            answer.as_bytes(),
            Transport::AsOffered,
        );
        let text = String::from_utf8_lossy(&to_carrier).into_owned();
        assert!(
            text.contains(" RTP/AVP 0 101\r\n") && !text.contains("a=crypto"),
            "{text}"
        );
        let (leg_b, leg_a) = (port_of(&to_pbx), port_of(&to_carrier));

        send(&carrier, leg_a, &rtp(1, 5));
        let mut got = recv(&pbx);
        let n = ctx(ours.suite, &ours.key)
            .unprotect_rtp(&mut got)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&got[..n], rtp(1, 5).as_slice());
        send(
            &pbx,
            leg_b,
            &seal(&mut ctx(ours.suite, &pbx_key), rtp(40, 6)),
        );
        assert_eq!(recv(&carrier), rtp(40, 6));

        // The PBX re-offers (a re-INVITE): the carrier still gets plain
        // RTP, and a carrier re-offer keeps the relay's key towards the PBX
        // (its rollover state goes on).
        let back = offered(&a, "s2", "tagB", answer.as_bytes(), Transport::AsOffered);
        assert!(!String::from_utf8_lossy(&back).contains("a=crypto"));
        answered(
            &a,
            "s2",
            Some("tagA"),
            offer_sdp(cport).as_bytes(),
            Transport::Srtp,
        );
        let again = offered(
            &a,
            "s2",
            "tagA",
            offer_sdp(cport).as_bytes(),
            Transport::Srtp,
        );
        assert_eq!(crypto_of(&again), vec![ours.clone()]);
    }

    #[test]
    fn srtp_passes_through_unless_the_sides_differ() {
        let a = anchor(42_800);
        let key = MasterKey::random().unwrap_or_else(|e| panic!("{e}"));
        let line = CryptoAttribute {
            tag: 1,
            suite: CryptoSuite::AesCm128HmacSha1_80,
            key,
        };
        let offer = savp_sdp(5004, &[line.to_value()]);
        for (call, transport) in [("p1", Transport::AsOffered), ("p2", Transport::Srtp)] {
            let out = a
                .offer(call, "tagA", offer.as_bytes(), opts(transport))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(crypto_of(&out), vec![line.clone()], "{transport:?}");
        }
        // DTLS-SRTP is not SDES: it passes even when RTP is asked for.
        let dtls = offer_sdp(5004).replace("RTP/AVP", "UDP/TLS/RTP/SAVP");
        let out = offered(&a, "p3", "tagA", dtls.as_bytes(), Transport::Rtp);
        assert!(String::from_utf8_lossy(&out).contains("UDP/TLS/RTP/SAVP"));
    }

    #[test]
    fn srtcp_is_terminated_on_its_own_port_both_ways() {
        let a = anchor(42_900);
        let ((carrier, cport), (pbx, pport)) = (udp(), udp());
        let ((carrier_rtcp, crtcp), (pbx_rtcp, prtcp)) = (udp(), udp());
        let key = MasterKey::random().unwrap_or_else(|e| panic!("{e}"));
        let suite = CryptoSuite::AesCm128HmacSha1_80;
        let line = CryptoAttribute {
            tag: 1,
            suite,
            key: key.clone(),
        };
        let offer = format!("{}a=rtcp:{crtcp}\r\n", savp_sdp(cport, &[line.to_value()]));
        let to_pbx = offered(&a, "r1", "tagA", offer.as_bytes(), Transport::Rtp);
        let answer = format!("{}a=rtcp:{prtcp}\r\n", offer_sdp(pport));
        let to_carrier = answered(&a, "r1", None, answer.as_bytes(), Transport::AsOffered);
        let [ours] = &crypto_of(&to_carrier)[..] else {
            panic!("one a=crypto in the answer")
        };
        let rtcp_port = |sdp: &[u8]| {
            let s = Sdp::parse(sdp).unwrap_or_else(|e| panic!("{e}"));
            s.media()[0].rtcp.map(|r| r.port).unwrap_or(0)
        };
        let (leg_b, leg_a) = (rtcp_port(&to_pbx), rtcp_port(&to_carrier));
        // A sender report: V=2, PT=200, length 6 words, SSRC, 20 bytes.
        let sr = |ssrc: u32| {
            let mut p = vec![0x80, 200, 0, 6];
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend((0..20).map(|i| i as u8));
            p
        };
        let mut buf = sr(7);
        let len = buf.len();
        buf.resize(len + 14, 0);
        let n = ctx(suite, &key)
            .protect_rtcp(&mut buf, len)
            .unwrap_or_else(|e| panic!("{e}"));
        send(&carrier_rtcp, leg_a, &buf[..n]);
        assert_eq!(recv(&pbx_rtcp), sr(7), "SRTCP opened for the PBX");
        send(&pbx_rtcp, leg_b, &sr(9));
        let mut got = recv(&carrier_rtcp);
        let n = ctx(ours.suite, &ours.key)
            .unprotect_rtcp(&mut got)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&got[..n], sr(9).as_slice(), "RTCP sealed for the carrier");
        drop((carrier, pbx));
        let st = a.delete("r1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                st.streams[0].1.a.rtcp_packets,
                st.streams[0].1.b.rtcp_packets
            ),
            (1, 1)
        );
    }

    #[test]
    fn a_disabled_stream_of_a_converting_call_carries_no_key_to_the_plain_side() {
        let a = anchor(40_900);
        let line = CryptoAttribute {
            tag: 1,
            suite: CryptoSuite::AesCm128HmacSha1_80,
            key: MasterKey::random().unwrap_or_else(|e| panic!("{e}")),
        }
        .to_value();
        let offer = savp_sdp(5004, std::slice::from_ref(&line));
        offered(&a, "d1", "tagA", offer.as_bytes(), Transport::Rtp);
        answered(
            &a,
            "d1",
            None,
            offer_sdp(6004).as_bytes(),
            Transport::AsOffered,
        );
        // The carrier disables the stream in a re-offer: the PBX sees it
        // disabled and plain, without the carrier's key.
        let off = savp_sdp(0, &[line]);
        let to_pbx = offered(&a, "d1", "tagA", off.as_bytes(), Transport::Rtp);
        let text = String::from_utf8_lossy(&to_pbx).into_owned();
        assert!(text.contains("m=audio 0 RTP/AVP 0 101\r\n"), "{text}");
        assert!(!text.contains("a=crypto"), "{text}");
        // The PBX's answer goes back to the carrier in its transport.
        let back = answered(
            &a,
            "d1",
            None,
            offer_sdp(0).replace("127.0.0.1", "198.51.100.9").as_bytes(),
            Transport::AsOffered,
        );
        let text = String::from_utf8_lossy(&back).into_owned();
        assert!(text.contains("m=audio 0 RTP/SAVP 0 101\r\n"), "{text}");
        // Only its keying changed: no address is rewritten to the relay's.
        assert!(text.contains("c=IN IP4 198.51.100.9"), "{text}");
    }

    /// A re-INVITE without SDP (RFC 3261 §14.1): the SDP of its 2xx is an
    /// offer, the ACK's the answer — not an answer to the settled offer.
    #[test]
    fn after_expect_offer_a_response_offers_and_the_ack_answers() {
        let a = anchor(40_800);
        let to_pbx = offered(
            &a,
            "e1",
            "tagA",
            offer_sdp(5004).as_bytes(),
            Transport::AsOffered,
        );
        let to_carrier = answered(
            &a,
            "e1",
            Some("tagB"),
            offer_sdp(6004).as_bytes(),
            Transport::AsOffered,
        );
        let (leg_b, leg_a) = (port_of(&to_pbx), port_of(&to_carrier));
        a.expect_offer("e1");
        // The PBX's 2xx offers: it goes to the carrier naming leg A.
        let out = a
            .offer_or_answer(
                "e1",
                "tagB",
                offer_sdp(6006).as_bytes(),
                opts(Transport::AsOffered),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(port_of(&out), leg_a);
        // The carrier's ACK answers it: it goes to the PBX naming leg B.
        let ack = answered(
            &a,
            "e1",
            Some("tagA"),
            offer_sdp(5006).as_bytes(),
            Transport::AsOffered,
        );
        assert_eq!(port_of(&ack), leg_b);
    }
}
