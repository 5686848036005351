//! `[media]` as the media layer takes it: the relay's settings and how SDP
//! is rewritten. The configuration file's `[media]` section is validated
//! into this (`crate::config`), and the anchor-media phase is built from it.

use super::anchor::Transport;
use super::relay::RelayConfig;

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
}
