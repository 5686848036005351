//! What the proxy core is given to run with: per side, where callgate
//! listens, how it names itself and whom it admits ([`SideSettings`]); and
//! the tuning of transactions, failover, health probes and overload
//! ([`CoreSettings`]). The core owns these types; the configuration file
//! is one way to fill them in (`crate::config` converts).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::targets::Target;
use crate::sip::message::Limits;
use crate::sip::side::Side;
use crate::sip::transaction::TimerConfig;

/// How the core is tuned.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// Indexed by [`Side::index`]: trunk, PBX.
    pub sides: [SideSettings; 2],
    pub timers: TimerConfig,
    pub limits: Limits,
    pub overload: OverloadConfig,
    pub health: HealthConfig,
    /// A forwarded request that draws no response at all within this time is
    /// treated as a 408 from that target, so failover does not wait for
    /// Timer B (32 s). Like Kamailio's `fr_timer`.
    pub no_response: Duration,
}

/// What the core needs of one side: its listening addresses, the host it
/// writes in Via and Record-Route, the peers it may send to, and its next
/// hops.
#[derive(Debug, Clone)]
pub struct SideSettings {
    pub side: Side,
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    /// Host written in our Via and Record-Route on this side.
    pub advertise: Option<String>,
    /// The side's ACL: the networks of the peers on it.
    pub allow: Vec<IpNet>,
    /// Next hops for initial requests leaving through this side.
    pub targets: Vec<Target>,
}

impl SideSettings {
    /// Whether `ip` is a peer on this side (in its ACL).
    pub fn admits(&self, ip: IpAddr) -> bool {
        admits(&self.allow, ip)
    }
}

/// Whether `ip` lies in one of the networks of `allow`.
pub fn admits(allow: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical_ip(ip);
    allow.iter().any(|net| net.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) compare as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// OPTIONS health probes of the targets.
#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    /// Interval between OPTIONS probes to each target; zero disables probing.
    pub interval: Duration,
    /// A probe with no answer within this time failed.
    pub timeout: Duration,
    /// Consecutive failed probes that take a target out of rotation.
    pub down_after: u32,
}

/// Overload control: when new requests get 503 with Retry-After.
#[derive(Debug, Clone, Copy)]
pub struct OverloadConfig {
    /// INVITEs waiting for a final response beyond which new initial
    /// INVITEs are refused.
    pub max_transactions: usize,
    /// The Retry-After of those 503s (and of 503s while draining), seconds.
    pub retry_after_secs: u32,
    /// Bytes all transactions may hold (`budget.rs`).
    pub max_transaction_bytes: usize,
    /// Bytes the transactions of one source address may hold.
    pub max_transaction_bytes_per_source: usize,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            max_transactions: 20_000,
            retry_after_secs: 5,
            max_transaction_bytes: 1 << 30,
            max_transaction_bytes_per_source: 256 << 20,
        }
    }
}
