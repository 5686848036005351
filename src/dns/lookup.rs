//! The DNS queries behind one target (RFC 3263 §4.2), over
//! hickory-resolver on the tokio runtime: SRV ordered by RFC 2782, A and
//! AAAA of each SRV target (or of the name itself), and the smallest TTL
//! of every record the answer rests on.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::spec::{Plan, TargetSpec};
use super::srv::{self, SrvRecord};
use super::{DnsConfig, DnsError};

/// What a target resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Every address, in the order calls fail over through them: SRV
    /// order (RFC 2782), then the order of each name's A/AAAA records.
    pub addrs: Vec<SocketAddr>,
    /// The smallest TTL of the records used (before the floor and the
    /// ceiling).
    pub ttl: Duration,
    /// Whether SRV records were found (else A/AAAA of the name).
    pub srv: bool,
}

/// The resolver: the configured servers, or those of /etc/resolv.conf.
pub struct Lookup {
    resolver: TokioResolver,
}

impl Lookup {
    /// A resolver for `cfg`. It keeps no cache of its own: the refresh
    /// schedule (`refresh.rs`) asks again when a TTL runs out, and each
    /// question goes to the servers.
    pub fn new(cfg: &DnsConfig) -> Result<Lookup, DnsError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = if cfg.servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| DnsError::Setup {
                key: "dns.servers",
                reason: format!(
                    "unset, and the system configuration (/etc/resolv.conf) cannot be read: {e}"
                ),
            })?
        } else {
            let mut group = NameServerConfigGroup::with_capacity(cfg.servers.len() * 2);
            for addr in &cfg.servers {
                group.push(NameServerConfig::new(*addr, Protocol::Udp));
                group.push(NameServerConfig::new(*addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], group),
                provider,
            )
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.cache_size = 0;
        opts.timeout = cfg.timeout;
        opts.attempts = 2;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(Lookup {
            resolver: builder.build(),
        })
    }

    /// Resolves `spec` (a host name; a numeric IP answers at once).
    pub async fn resolve(
        &self,
        spec: &TargetSpec,
        rng: &mut fastrand::Rng,
    ) -> Result<Answer, DnsError> {
        match spec.plan() {
            Plan::Fixed(addr) => Ok(Answer {
                addrs: vec![addr],
                ttl: Duration::MAX,
                srv: false,
            }),
            Plan::Addresses { name, port } => self.addresses(&name, port).await,
            Plan::Srv {
                service,
                name,
                default_port,
            } => match self.srv(&service, rng).await {
                Ok(Some(answer)) => Ok(answer),
                // No SRV record: A/AAAA of the name at the default port
                // (RFC 3263 §4.2).
                Ok(None) => self.addresses(&name, default_port).await,
                Err(e) => Err(e),
            },
        }
    }

    /// A and AAAA records of `name`, each address at `port`.
    async fn addresses(&self, name: &str, port: u16) -> Result<Answer, DnsError> {
        let found = self
            .resolver
            .lookup_ip(name)
            .await
            .map_err(|e| failed(name, "A/AAAA", &e))?;
        let ttl = min_ttl(found.as_lookup().records().iter().map(|r| r.ttl()));
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for ip in found.iter() {
            let a = SocketAddr::new(ip, port);
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        if addrs.is_empty() {
            return Err(DnsError::Empty {
                query: format!("{name} A/AAAA"),
            });
        }
        Ok(Answer {
            addrs,
            ttl,
            srv: false,
        })
    }

    /// SRV records of `service` in RFC 2782 order, each target's
    /// addresses at its port; `None` when the name has no SRV record.
    async fn srv(
        &self,
        service: &str,
        rng: &mut fastrand::Rng,
    ) -> Result<Option<Answer>, DnsError> {
        let found = match self.resolver.srv_lookup(service).await {
            Ok(found) => found,
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Ok(None),
            Err(e) => return Err(failed(service, "SRV", &e)),
        };
        let mut ttl = min_ttl(found.as_lookup().records().iter().map(|r| r.ttl()));
        let records: Vec<SrvRecord> = found
            .iter()
            .map(|r| SrvRecord {
                priority: r.priority(),
                weight: r.weight(),
                port: r.port(),
                target: r.target().to_utf8().trim_end_matches('.').to_owned(),
            })
            .collect();
        if records.is_empty() {
            return Ok(None);
        }
        let mut addrs = Vec::new();
        let mut last_error = None;
        for r in srv::order(records, rng) {
            // One SRV target that does not resolve leaves the others.
            match self.addresses(&r.target, r.port).await {
                Ok(a) => {
                    ttl = ttl.min(a.ttl);
                    for addr in a.addrs {
                        if !addrs.contains(&addr) {
                            addrs.push(addr);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(service, target = %r.target, error = %e, "SRV target does not resolve; the others are used");
                    last_error = Some(e);
                }
            }
        }
        match (addrs.is_empty(), last_error) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(DnsError::Empty {
                query: format!("{service} SRV"),
            }),
            (false, _) => Ok(Some(Answer {
                addrs,
                ttl,
                srv: true,
            })),
        }
    }
}

fn min_ttl(ttls: impl Iterator<Item = u32>) -> Duration {
    Duration::from_secs(u64::from(ttls.min().unwrap_or(0)))
}

fn failed(query: &str, kind: &str, e: &ResolveError) -> DnsError {
    DnsError::Lookup {
        query: format!("{query} {kind}"),
        reason: e.to_string(),
    }
}
