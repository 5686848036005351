//! Which sources may latch a leg: strict-source latching.
//!
//! The attack this defends against is RTP hijack: a stranger who sprays the
//! relay's port range with RTP would, under latch-to-first-packet, become a
//! leg's far end, receive the caller's or the agent's audio and inject
//! their own. A leg therefore latches only to a source the signalling
//! allows, chosen per side like rtpengine's `strict-source` / `symmetric`
//! options:
//!
//! * [`LatchMode::Sdp`] — only the address and port the leg's SDP
//!   announced (its `c=`/`m=` RTP address, its RTCP address from `a=rtcp`
//!   (RFC 3605) or RTP port + 1, RFC 3550 §11);
//! * [`LatchMode::Network`] — any address and port in the side's signalling
//!   ACL (`allow`): peers behind NAT, whose SDP names a private address, or
//!   whose media gateways send from ports other than the announced ones;
//! * [`LatchMode::Any`] — the first packet from anywhere (symmetric RTP,
//!   RFC 4961, without any check): lab use only.
//!
//! In the `sdp` and `network` modes the source must also be admitted by the
//! side's signalling ACL: a host refused for SIP cannot latch a leg either.
//! Once latched, a leg keeps its source until a new offer or answer from its
//! side changes the SDP (see `Worker::apply`); packets from anywhere else
//! are dropped and counted as foreign.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use super::Remote;

/// How a leg chooses the source it latches to (`[media] latch_trunk`,
/// `latch_pbx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatchMode {
    /// Only the address and ports the leg's SDP announced.
    #[default]
    Sdp,
    /// Any address and port the side's signalling ACL admits.
    Network,
    /// The first packet from anywhere (no check: lab use).
    Any,
}

impl LatchMode {
    /// The configuration's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            LatchMode::Sdp => "sdp",
            LatchMode::Network => "network",
            LatchMode::Any => "any",
        }
    }
}

/// The side a leg faces, for the per-side foreign-packet counter (index 0
/// the trunk, 1 the PBX, as `config::Side::index`).
pub type SideIndex = usize;

/// What a leg may latch to: the mode, the side's signalling ACL (a
/// snapshot taken when the policy was set) and the side it faces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePolicy {
    pub mode: LatchMode,
    /// The side's `allow` networks; empty: no ACL (the ng protocol).
    pub allow: Arc<[IpNet]>,
    pub side: SideIndex,
}

impl SourcePolicy {
    /// Whether a packet from `src` may latch the leg whose SDP named
    /// `remote` (`None`: not known yet). Runs only for packets of a leg not
    /// yet latched, never on the latched path.
    pub fn admits(&self, src: SocketAddr, remote: Option<&Remote>) -> bool {
        let in_acl =
            || self.allow.is_empty() || crate::sip::proxy::admits(&self.allow, canonical(src.ip()));
        match self.mode {
            LatchMode::Any => true,
            LatchMode::Network => in_acl(),
            LatchMode::Sdp => {
                let Some(r) = remote else { return false };
                let src = SocketAddr::new(canonical(src.ip()), src.port());
                let rtcp = r.rtcp.or_else(|| {
                    let port = r.rtp.port().checked_add(1)?;
                    Some(SocketAddr::new(r.rtp.ip(), port))
                });
                (src == r.rtp || Some(src) == rtcp) && in_acl()
            }
        }
    }

    /// Whether the relay may send the leg's media to `ip`, the address its
    /// SDP announced, before the leg latches: in the `sdp` and `network`
    /// modes only inside the side's ACL, so that an SDP naming a third
    /// party does not make the relay send the other side's audio there.
    pub fn admits_destination(&self, ip: IpAddr) -> bool {
        self.mode == LatchMode::Any
            || self.allow.is_empty()
            || crate::sip::proxy::admits(&self.allow, canonical(ip))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    crate::sip::proxy::canonical_ip(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: LatchMode, allow: &[&str]) -> SourcePolicy {
        SourcePolicy {
            mode,
            allow: allow
                .iter()
                .map(|n| n.parse().unwrap_or_else(|e| panic!("{e}")))
                .collect(),
            side: 0,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sdp_mode_admits_only_the_announced_rtp_and_rtcp_addresses_inside_the_acl() {
        let remote = Remote {
            rtp: addr("192.0.2.10:4000"),
            rtcp: None,
        };
        let p = policy(LatchMode::Sdp, &["192.0.2.0/24"]);
        assert!(p.admits(addr("192.0.2.10:4000"), Some(&remote)));
        assert!(
            p.admits(addr("192.0.2.10:4001"), Some(&remote)),
            "RTCP at +1"
        );
        assert!(!p.admits(addr("192.0.2.10:4002"), Some(&remote)));
        assert!(!p.admits(addr("192.0.2.11:4000"), Some(&remote)));
        assert!(!p.admits(addr("192.0.2.10:4000"), None), "no SDP yet");
        let outside = Remote {
            rtp: addr("198.51.100.1:4000"),
            rtcp: Some(addr("198.51.100.1:5000")),
        };
        assert!(
            !p.admits(addr("198.51.100.1:4000"), Some(&outside)),
            "an SDP address the ACL refuses"
        );
        let open = policy(LatchMode::Sdp, &[]);
        assert!(open.admits(addr("198.51.100.1:5000"), Some(&outside)));
        assert!(!open.admits(addr("198.51.100.1:4001"), Some(&outside)));
    }

    #[test]
    fn network_mode_admits_any_port_in_the_acl_and_any_mode_everything() {
        let p = policy(LatchMode::Network, &["10.0.0.0/8"]);
        assert!(p.admits(addr("10.1.2.3:9"), None));
        assert!(p.admits(addr("[::ffff:10.1.2.3]:9"), None), "v4-mapped");
        assert!(!p.admits(addr("11.1.2.3:9"), None));
        assert!(policy(LatchMode::Any, &["10.0.0.0/8"]).admits(addr("11.1.2.3:9"), None));
    }
}
