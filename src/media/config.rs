//! `[media]` as the media layer takes it: the relay's settings and how SDP
//! is rewritten. The configuration file's `[media]` section is validated
//! into this (`crate::config`), and the anchor-media phase is built from it.

use super::anchor::Transport;
use super::relay::{LatchMode, RelayConfig};

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
    /// End a call whose media timed out with a BYE to each side (default:
    /// only report it).
    pub timeout_bye: bool,
    /// What each side is offered (index 0 the trunk, 1 the PBX, as the SIP
    /// core's `Side::index`): as offered, RTP or SDES-SRTP. Where they
    /// differ the relay terminates SRTP.
    pub transports: [Transport; 2],
    /// Which sources may latch the legs facing each side (index 0 the
    /// trunk, 1 the PBX): strict-source latching, see
    /// [`super::relay::source`].
    pub latch: [LatchMode; 2],
    /// Most m-lines one SDP may carry (and so streams one call may hold:
    /// at most 4 relay ports each).
    pub max_streams: usize,
    /// Most relay ports the calls offered from one signalling source
    /// address may hold at once.
    pub max_ports_per_source: usize,
}
