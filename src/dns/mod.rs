//! DNS targets (RFC 3263 §4.1–4.2): a side's `targets` may name a host
//! instead of an IP address. This layer sits at the edge, beside the
//! transports: it resolves the names (SRV ordered by RFC 2782, A and
//! AAAA) with hickory-resolver, keeps the answers fresh by their TTL in
//! the background, keeps the last good answer through a DNS outage, and
//! hands the gate each side's resolved target set, which the gate puts
//! into the sans-IO proxy core (`ProxyCore::update_side`) and the side's
//! ACL. The SIP core never resolves anything.
//!
//! | file | concept |
//! |---|---|
//! | `spec.rs` | a target as configured, and which lookups it needs (§4.2) |
//! | `srv.rs` | the order of SRV records (RFC 2782) |
//! | `lookup.rs` | the queries, over hickory-resolver |
//! | `refresh.rs` | the answers per target, refreshed by TTL, last good kept |
//! | `metrics.rs` | `callgate_dns_*` in `/metrics` |

mod lookup;
mod metrics;
mod refresh;
pub mod spec;
pub mod srv;

use std::net::SocketAddr;
use std::time::Duration;

pub use lookup::{Answer, Lookup};
pub use refresh::TargetResolver;
pub use spec::{Host, Plan, TargetSpec};

/// `[dns]`: where host names in `targets` are resolved, and how long an
/// answer is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The servers asked (UDP, then TCP for a truncated answer); empty:
    /// those of /etc/resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// An answer is trusted at least this long, whatever its TTL (a TTL of
    /// 0 would otherwise mean a lookup per call); also the retry interval
    /// after a failed lookup.
    pub ttl_floor: Duration,
    /// An answer is trusted at most this long, whatever its TTL.
    pub ttl_ceiling: Duration,
    /// How long one query waits for a server.
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            ttl_floor: Duration::from_secs(5),
            ttl_ceiling: Duration::from_secs(3600),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Why a target could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The resolver could not be set up.
    #[error("{key}: {reason}")]
    Setup { key: &'static str, reason: String },
    /// A query failed (timeout, SERVFAIL, refused, no such name).
    #[error("DNS lookup of {query} failed: {reason}")]
    Lookup { query: String, reason: String },
    /// The answer held no usable address.
    #[error("DNS lookup of {query} returned no address")]
    Empty { query: String },
}
