//! `[dns]`: the servers that resolve host names in `targets`, and the
//! bounds on how long an answer is trusted — validated into
//! [`crate::dns::DnsConfig`]. Read at start (a change takes effect at the
//! next restart; the targets themselves reload).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    servers: Option<Vec<String>>,
    ttl_floor_secs: Option<u64>,
    ttl_ceiling_secs: Option<u64>,
    timeout_ms: Option<u64>,
}

/// Validates `[dns]`.
pub(super) fn dns(raw: RawDns) -> Result<crate::dns::DnsConfig, ConfigError> {
    let mut cfg = crate::dns::DnsConfig::default();
    if let Some(servers) = raw.servers {
        if servers.is_empty() {
            return Err(invalid(
                "dns.servers",
                "is empty: leave it out to use the servers of /etc/resolv.conf",
            ));
        }
        for (i, s) in servers.iter().enumerate() {
            let addr = s
                .parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    invalid(
                        format!("dns.servers[{i}]"),
                        format!("{s:?} is not an IP address or IP:port (e.g. \"192.0.2.53\" or \"[2001:db8::53]:5353\")"),
                    )
                })?;
            cfg.servers.push(addr);
        }
    }
    if let Some(s) = within(
        "dns.ttl_floor_secs",
        raw.ttl_floor_secs,
        1..=3600,
        "seconds",
    )? {
        cfg.ttl_floor = Duration::from_secs(s);
    }
    if let Some(s) = within(
        "dns.ttl_ceiling_secs",
        raw.ttl_ceiling_secs,
        1..=86_400,
        "seconds",
    )? {
        cfg.ttl_ceiling = Duration::from_secs(s);
    }
    if cfg.ttl_ceiling < cfg.ttl_floor {
        return Err(invalid(
            "dns.ttl_ceiling_secs",
            format!(
                "{} is below dns.ttl_floor_secs ({})",
                cfg.ttl_ceiling.as_secs(),
                cfg.ttl_floor.as_secs()
            ),
        ));
    }
    if let Some(ms) = within(
        "dns.timeout_ms",
        raw.timeout_ms,
        10..=30_000,
        "milliseconds",
    )? {
        cfg.timeout = Duration::from_millis(ms);
    }
    Ok(cfg)
}

/// `v` when set and inside `range` (in `unit`), else the error naming `key`.
fn within(
    key: &str,
    v: Option<u64>,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<Option<u64>, ConfigError> {
    match v {
        Some(x) if !range.contains(&x) => Err(invalid(
            key,
            format!("{x} is outside {}..={} {unit}", range.start(), range.end()),
        )),
        v => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawDns {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{toml_text}: {e}"))
    }

    #[test]
    fn dns_keys_have_defaults_and_name_the_key_when_wrong() {
        let d = dns(RawDns::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(d.servers.is_empty(), "default: /etc/resolv.conf");
        assert_eq!(d.ttl_floor, Duration::from_secs(5));
        let d = dns(raw(
            "servers = [\"127.0.0.53\", \"[::1]:5353\"]\nttl_floor_secs = 1",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            d.servers,
            vec![
                SocketAddr::from(([127, 0, 0, 53], 53)),
                "[::1]:5353".parse().unwrap_or_else(|e| panic!("{e}"))
            ]
        );
        for (text, key) in [
            ("servers = []", "dns.servers"),
            ("servers = [\"ns1.example\"]", "dns.servers[0]"),
            ("ttl_floor_secs = 0", "dns.ttl_floor_secs"),
            ("ttl_ceiling_secs = 100000", "dns.ttl_ceiling_secs"),
            (
                "ttl_floor_secs = 60\nttl_ceiling_secs = 30",
                "dns.ttl_ceiling_secs",
            ),
            ("timeout_ms = 1", "dns.timeout_ms"),
        ] {
            let err = dns(raw(text))
                .err()
                .unwrap_or_else(|| panic!("{text} accepted"));
            assert!(err.to_string().starts_with(key), "{text}: {err}");
        }
    }
}
