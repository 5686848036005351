//! rtpengine's "ng" control protocol, so Kamailio's and OpenSIPS's
//! `rtpengine` modules (and one benchmark harness) can drive callgate's relay.
//!
//! The protocol is specified in rtpengine's `docs/ng_control_protocol.md`
//! (<https://github.com/sipwise/rtpengine/blob/master/docs/ng_control_protocol.md>)
//! and implemented in its `daemon/control_ng.c`. Each UDP datagram is a
//! message cookie, one space, and a [bencoded](bencode) dictionary; the reply
//! carries the same cookie. A request names its `command`; a reply has a
//! `result` of `ok`, `pong` (to `ping`) or `error` with an `error-reason`.
//!
//! ```text
//! 5323_1 d7:command4:pinge         →  5323_1 d6:result4:ponge
//! ```
//!
//! This module speaks the subset callgate's anchoring needs: `ping`,
//! `offer`, `answer`, `delete` and `query`, with the options that matter to
//! an anchoring relay ([`OfferFlags`]: `replace`, `ICE`, `direction`,
//! `received-from`, the symmetric/strict-source flags, `via-branch`, ...).
//! Other rtpengine commands get an error reply. The layers:
//!
//! - [`bencode`]: the value type, a bounded decoder and the canonical encoder;
//! - [`command`]: datagram → cookie + typed [`Request`], and [`Response`] →
//!   datagram, with rtpengine's key names and error texts;
//! - [`server`]: the UDP loop with rtpengine's retransmission handling (a
//!   reply cache keyed by cookie, so a resent `offer` is answered without
//!   being applied twice), and request counters for `/metrics`;
//! - [`MediaControl`]: what the relay's session logic implements.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use bytes::Bytes;

pub mod bencode;
pub mod command;
pub mod server;

pub use command::{parse_datagram, Command, Request, RequestError, Response};
pub use server::{serve, serve_with, Handler, NgMetrics, ServerConfig};

/// The relay's side of the protocol: one method per command. Calls are
/// synchronous and made from the server's receive loop, so they must be
/// quick and in-memory (allocate ports, rewrite SDP, update tables); the
/// loop handles one request at a time, which also orders the requests of a
/// call as they arrived.
pub trait MediaControl: Send + Sync + 'static {
    /// An SDP offer from the `from_tag` side: allocate (or reuse, for a
    /// re-offer) the relay ports and return the rewritten SDP.
    fn offer(&self, req: &OfferRequest) -> Result<Bytes, NgError>;

    /// The SDP answer from the `to_tag` side (`req.to_tag` is set): complete
    /// the anchoring and return the rewritten SDP.
    fn answer(&self, req: &OfferRequest) -> Result<Bytes, NgError>;

    /// Tear down the call, or the branch the tags name, and release its
    /// ports. Returns the call's final statistics if there are any, which go
    /// into the reply as in `query`. [`NgError::UnknownCall`] is answered
    /// `ok` with a warning unless the request has the `fatal` flag.
    fn delete(&self, req: &DeleteRequest) -> Result<Option<QueryReport>, NgError>;

    /// The state and counters of a call.
    fn query(&self, req: &QueryRequest) -> Result<QueryReport, NgError>;
}

/// Why the relay refused a request; becomes the reply's `error-reason`. The
/// texts of the first variants are rtpengine's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NgError {
    /// No call (or no branch matching the tags) with this Call-ID.
    #[error("Unknown call-id")]
    UnknownCall,
    /// The SDP could not be parsed or anchored.
    #[error("Failed to parse SDP: {0}")]
    BadSdp(String),
    /// The port range is exhausted.
    #[error("Ran out of ports")]
    OutOfPorts,
    /// A session limit was reached.
    #[error("Parallel session limit reached")]
    SessionLimit,
    /// Anything else, as a human-readable reason.
    #[error("{0}")]
    Other(String),
}

/// An `offer` or `answer` (the reply of both is the rewritten SDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferRequest {
    /// `call-id`: the SIP Call-ID.
    pub call_id: String,
    /// `from-tag`: the SIP From tag.
    pub from_tag: String,
    /// `to-tag`: mandatory in an `answer`; Kamailio also sends it in the
    /// offer of a re-INVITE.
    pub to_tag: Option<String>,
    /// `sdp`: the complete body, as bytes.
    pub sdp: Bytes,
    pub flags: OfferFlags,
}

/// The options of an `offer`/`answer` that bear on anchoring (see the
/// "Optionally included keys", "flags" and "replace-flags" sections of
/// `ng_control_protocol.md`). Flag strings are matched with spaces and
/// hyphens treated alike, as rtpengine does ("Spaces in each string may be
/// replaced by hyphens").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferFlags {
    /// `replace`: which parts of the SDP to rewrite besides `c=`/`m=`.
    pub replace: Replace,
    /// `ICE`: what to do with ICE attributes; `None` is rtpengine's
    /// `default`.
    pub ice: Option<Ice>,
    /// `direction`: the logical interfaces of the sender and the receiver of
    /// this message, e.g. `["priv", "pub"]`.
    pub direction: Option<[String; 2]>,
    /// `received-from` (or `received from`): the SIP message's source.
    pub received_from: Option<IpAddr>,
    /// `media-address` (or `media address`): overrides the SDP addresses.
    pub media_address: Option<IpAddr>,
    /// `address-family` (or `address family`): the family to offer.
    pub address_family: Option<AddressFamily>,
    /// `transport-protocol` (or `transport protocol`), e.g. `RTP/AVP`.
    pub transport_protocol: Option<String>,
    /// `rtcp-mux`: the list of rtcp-mux behaviours.
    pub rtcp_mux: RtcpMux,
    /// `via-branch`: the SIP Via branch, refines branch matching.
    pub via_branch: Option<String>,
    /// `label` (or `from-label`): a free-form name for this endpoint.
    pub label: Option<String>,
    /// Flag `trust address`: use the SDP addresses (rtpengine's default).
    pub trust_address: bool,
    /// Flag `SIP source address`: use `received-from` instead of the SDP.
    pub sip_source_address: bool,
    /// Flag `symmetric` (rtpproxy `w`): learn the endpoint from its packets.
    pub symmetric: bool,
    /// Flag `asymmetric` (rtpproxy `a`): do not learn endpoint addresses.
    pub asymmetric: bool,
    /// Flag `strict source`: after learning, drop packets from elsewhere.
    pub strict_source: bool,
    /// Flag `media handover`: after learning, follow a moved endpoint.
    pub media_handover: bool,
    /// Flag `port latching`: keep local ports when the remote port changes.
    pub port_latching: bool,
    /// Flag `no rtcp attribute`: omit `a=rtcp`.
    pub no_rtcp_attribute: bool,
    /// Flag `full rtcp attribute`: `a=rtcp` with the address.
    pub full_rtcp_attribute: bool,
    /// Flag `loop protect`: mark the SDP and leave a marked one alone.
    pub loop_protect: bool,
    /// Flag `original sendrecv`: keep the direction attributes as received.
    pub original_sendrecv: bool,
    /// Flag `reject ICE`: refuse offered ICE (like `ICE=remove` in the
    /// answer).
    pub reject_ice: bool,
    /// Options seen but not acted on (unknown flags and replace-flags,
    /// unknown `ICE` values), for the session layer to log.
    pub unrecognized: Vec<String>,
}

/// The `replace` list (rtpengine's "replace-flags"). `c=` and `m=` of the
/// media are always rewritten; these name what else is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replace {
    /// `origin`: the address in `o=` (rtpproxy `o`).
    pub origin: bool,
    /// `session-connection` / `session connection`: the session-level `c=`
    /// (rtpproxy `c`).
    pub session_connection: bool,
    /// `SDP-version`: increase `o=`'s version only when the SDP changes.
    pub sdp_version: bool,
    /// `force-increment-sdp-ver`: increase it even when it does not.
    pub force_increment_sdp_ver: bool,
    /// `username`: keep `o=`'s username stable towards an endpoint.
    pub username: bool,
    /// `session-name`: keep `s=` stable towards an endpoint.
    pub session_name: bool,
    /// `zero-address`: replace a zero (hold) address with a real one.
    pub zero_address: bool,
}

/// The `ICE` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ice {
    /// `remove`: strip ICE attributes.
    Remove,
    /// `force`: strip them and offer the relay as the only candidate.
    Force,
    /// `default`: like `force` if the SDP had ICE, else leave it out.
    Default,
    /// `force-relay`: keep candidates but add the relay as a `relay` one.
    ForceRelay,
    /// `optional`: add the relay as a low-priority candidate.
    Optional,
}

/// An SDP address family, `IP4` or `IP6` in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    Ip4,
    Ip6,
}

/// The `rtcp-mux` list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpMux {
    pub offer: bool,
    pub require: bool,
    pub demux: bool,
    pub accept: bool,
    pub reject: bool,
}

/// A `delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub call_id: String,
    /// Absent: the whole call (current rtpengine needs only `call-id`; the
    /// protocol document still lists `from-tag` as required).
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
    pub via_branch: Option<String>,
    /// Flag `fatal`: an unknown call is an error rather than a warning.
    pub fatal: bool,
    /// `delete-delay` (or `delete delay`), seconds; 0 deletes at once.
    pub delete_delay: Option<u32>,
}

/// A `query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRequest {
    pub call_id: String,
    /// With a tag, rtpengine reports that participant and its peers only.
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
}

/// A call's state and counters, encoded as rtpengine's `query` reply
/// (`ng_call_stats()`): `created`, `created_us`, `last signal`, `tags`
/// (per participant: `tag`, `label`, `created`, `in dialogue with`,
/// `medias` → `streams`) and `totals` (`RTP` and `RTCP`, each with
/// `packets`, `bytes`, `errors`), which are summed from the streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryReport {
    /// When the relay created the call.
    pub created: SystemTime,
    /// The last offer/answer/other signalling event.
    pub last_signal: SystemTime,
    /// One entry per participant (SIP tag).
    pub legs: Vec<LegReport>,
}

/// One participant of a call (rtpengine's "monologue").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegReport {
    /// The SIP tag; empty for a side that has not signalled one yet.
    pub tag: String,
    pub label: Option<String>,
    pub created: SystemTime,
    /// The tag of the other side of the dialogue, once known.
    pub in_dialogue_with: Option<String>,
    pub medias: Vec<MediaReport>,
}

/// One SDP media section of a participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaReport {
    /// 1-based position of the `m=` line.
    pub index: u32,
    /// `audio`, `video`, ...
    pub media_type: String,
    /// `RTP/AVP`, `RTP/SAVP`, ...
    pub protocol: String,
    pub streams: Vec<StreamReport>,
}

/// One packet stream (RTP or RTCP) of a media section: what the relay
/// received on one local port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    pub kind: StreamKind,
    /// The relay's port; `None` for an inactive stream.
    pub local_port: Option<u16>,
    /// Where packets are forwarded to (learnt or signalled).
    pub endpoint: Option<SocketAddr>,
    /// The address the participant's SDP advertised.
    pub advertised_endpoint: Option<SocketAddr>,
    /// When the last packet arrived.
    pub last_packet: Option<SystemTime>,
    pub stats: Counters,
}

/// Whether a stream carries RTP or RTCP (with rtcp-mux, the RTP stream
/// carries both and is reported as RTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Rtp,
    Rtcp,
}

/// rtpengine's `stats` dictionary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    /// Packets dropped: bad source, malformed, failed to send.
    pub errors: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.errors = self.errors.saturating_add(other.errors);
    }
}

impl QueryReport {
    /// The `totals` of the reply: the RTP and the RTCP streams of all legs
    /// summed.
    pub fn totals(&self) -> (Counters, Counters) {
        let (mut rtp, mut rtcp) = (Counters::default(), Counters::default());
        for s in self
            .legs
            .iter()
            .flat_map(|l| &l.medias)
            .flat_map(|m| &m.streams)
        {
            match s.kind {
                StreamKind::Rtp => rtp.add(&s.stats),
                StreamKind::Rtcp => rtcp.add(&s.stats),
            }
        }
        (rtp, rtcp)
    }
}
