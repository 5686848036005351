//! A target as configured, and how RFC 3263 §4.2 turns it into addresses:
//! a numeric IP is used as written; a host name with an explicit port is
//! looked up in A and AAAA; a host name without a port is looked up in SRV
//! for the target's transport (`_sip._udp`, `_sip._tcp`, `_sips._tcp`),
//! falling back to A and AAAA on the name itself at the transport's
//! default port when it has no SRV record. NAPTR (§4.1) is not used: the
//! transport is always known from the URI (its `transport` parameter or
//! scheme), so the SRV query is the one §4.1 prescribes for "a transport
//! specified explicitly".

use std::net::{IpAddr, SocketAddr};

use crate::sip::proxy::Target;
use crate::sip::side::Transport;

/// The host part of a configured target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name, lower case, without a trailing dot.
    Name(String),
}

/// One entry of a side's `targets`, before resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetSpec {
    /// The URI as configured: the Request-URI of health probes, and the
    /// name the operator and the metrics know the target by.
    pub uri: String,
    pub host: Host,
    /// The port written in the URI, if any.
    pub port: Option<u16>,
    pub transport: Transport,
}

/// What to ask the DNS for one [`TargetSpec`] (RFC 3263 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A numeric IP: no lookup.
    Fixed(SocketAddr),
    /// A and AAAA of `name`, every address at `port`.
    Addresses { name: String, port: u16 },
    /// SRV of `service` (`_sip._udp.example.com`), else A and AAAA of
    /// `name` at `default_port`.
    Srv {
        service: String,
        name: String,
        default_port: u16,
    },
}

impl TargetSpec {
    /// The transport's default port (RFC 3261 §19.1.2): 5061 for TLS,
    /// 5060 otherwise.
    pub fn default_port(&self) -> u16 {
        if self.transport == Transport::Tls {
            5061
        } else {
            5060
        }
    }

    /// The lookups this target needs (RFC 3263 §4.2).
    pub fn plan(&self) -> Plan {
        match (&self.host, self.port) {
            (Host::Ip(ip), port) => Plan::Fixed(SocketAddr::new(
                *ip,
                port.unwrap_or_else(|| self.default_port()),
            )),
            (Host::Name(name), Some(port)) => Plan::Addresses {
                name: name.clone(),
                port,
            },
            (Host::Name(name), None) => Plan::Srv {
                service: format!("{}.{name}", srv_prefix(self.transport)),
                name: name.clone(),
                default_port: self.default_port(),
            },
        }
    }

    /// The target itself when it needs no lookup (a numeric IP).
    pub fn literal(&self) -> Option<Target> {
        match self.plan() {
            Plan::Fixed(addr) => Some(self.at(addr)),
            _ => None,
        }
    }

    /// This target reached at `addr` (one resolved address).
    pub fn at(&self, addr: SocketAddr) -> Target {
        Target {
            uri: self.uri.clone(),
            addr,
            transport: self.transport,
        }
    }

    /// Whether the host is a name the DNS must resolve.
    pub fn is_name(&self) -> bool {
        matches!(self.host, Host::Name(_))
    }
}

/// The SRV service and protocol labels of a transport (RFC 3263 §4.2,
/// RFC 2782): `_sips._tcp` for TLS, `_sip._tcp` for TCP, `_sip._udp` for
/// UDP.
pub fn srv_prefix(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "_sip._udp",
        Transport::Tcp => "_sip._tcp",
        Transport::Tls => "_sips._tcp",
    }
}

/// Whether `host` is a DNS name a target may use (RFC 1035 §2.3.1 with
/// digits first allowed, RFC 1123 §2.1): labels of letters, digits and
/// hyphens, 1–63 bytes each, 253 in all, not starting or ending with a
/// hyphen.
pub fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host: Host, port: Option<u16>, transport: Transport) -> TargetSpec {
        TargetSpec {
            uri: "sip:x".into(),
            host,
            port,
            transport,
        }
    }

    #[test]
    fn rfc_3263_picks_the_lookup_by_host_and_port() {
        let name = || Host::Name("pbx.example.com".into());
        assert_eq!(
            spec(Host::Ip([192, 0, 2, 1].into()), None, Transport::Tls).plan(),
            Plan::Fixed(([192, 0, 2, 1], 5061).into())
        );
        assert_eq!(
            spec(name(), Some(5080), Transport::Udp).plan(),
            Plan::Addresses {
                name: "pbx.example.com".into(),
                port: 5080
            }
        );
        for (transport, service, port) in [
            (Transport::Udp, "_sip._udp.pbx.example.com", 5060),
            (Transport::Tcp, "_sip._tcp.pbx.example.com", 5060),
            (Transport::Tls, "_sips._tcp.pbx.example.com", 5061),
        ] {
            assert_eq!(
                spec(name(), None, transport).plan(),
                Plan::Srv {
                    service: service.into(),
                    name: "pbx.example.com".into(),
                    default_port: port
                }
            );
        }
        assert!(spec(name(), None, Transport::Udp).literal().is_none());
    }

    #[test]
    fn host_names_follow_rfc_1123() {
        for ok in ["pbx", "pbx-1.example.com", "1pbx.example.com.", "a.b"] {
            assert!(is_host_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-pbx.example",
            "pbx-.example",
            "a..b",
            "pbx_1.example",
            "ä.example",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
        assert!(!is_host_name(&"a".repeat(64)));
    }
}
