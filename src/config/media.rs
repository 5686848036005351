//! `[media]`: media anchoring — the relay's addresses, ports, workers and
//! the transport (RTP or SRTP) each side gets — validated into
//! [`MediaConfig`], the media layer's own type.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::media::config::MediaConfig;
use crate::media::relay::LatchMode;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMedia {
    enabled: Option<bool>,
    bind: Option<String>,
    advertise: Option<String>,
    port_min: Option<u16>,
    port_max: Option<u16>,
    workers: Option<usize>,
    media_timeout_secs: Option<u64>,
    strip_ice: Option<bool>,
    ng_listen: Option<String>,
    #[serde(default)]
    ng_allow: Vec<String>,
    timeout_bye: Option<bool>,
    trunk_transport: Option<String>,
    pbx_transport: Option<String>,
    #[serde(default)]
    cpus: Vec<usize>,
    busy_poll_us: Option<u64>,
    latch_trunk: Option<String>,
    latch_pbx: Option<String>,
    max_streams: Option<usize>,
    max_ports_per_source: Option<usize>,
    reclaim_after_secs: Option<u64>,
}

/// The online CPU cores (`/sys/devices/system/cpu/online`, e.g. `0-3,6`),
/// whatever this process's affinity; `None` when unreadable.
fn online_cpus() -> Option<Vec<usize>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let mut cores = Vec::new();
    for range in text.trim().split(',') {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        cores.extend(lo.parse::<usize>().ok()?..=hi.parse::<usize>().ok()?);
    }
    Some(cores)
}

/// Validates `[media]`.
pub(super) fn media(raw: RawMedia) -> Result<Option<MediaConfig>, ConfigError> {
    if !raw.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let ip = |key: &str, v: &str| -> Result<std::net::IpAddr, ConfigError> {
        v.parse()
            .map_err(|_| invalid(key, format!("{v:?} is not an IP address")))
    };
    let bind = ip("media.bind", raw.bind.as_deref().unwrap_or("127.0.0.1"))?;
    let advertise = match raw.advertise.as_deref() {
        Some(a) => ip("media.advertise", a)?,
        None if bind.is_unspecified() => {
            return Err(invalid(
                "media.advertise",
                "required when media.bind is a wildcard address (what goes into the SDP?)",
            ))
        }
        None => bind,
    };
    let defaults = crate::media::relay::RelayConfig::default();
    let port_min = raw.port_min.unwrap_or(defaults.port_min);
    let port_max = raw.port_max.unwrap_or(defaults.port_max);
    if port_min < 1024 || port_max < port_min.saturating_add(3) {
        return Err(invalid(
            "media.port_min",
            format!("the range {port_min}-{port_max} must start at 1024 or above and hold at least two port pairs"),
        ));
    }
    let workers = raw.workers.unwrap_or(1);
    if !(1..=64).contains(&workers) {
        return Err(invalid(
            "media.workers",
            format!("{workers} is outside 1..=64"),
        ));
    }
    let timeout = raw.media_timeout_secs.unwrap_or(60);
    if timeout == 0 {
        return Err(invalid("media.media_timeout_secs", "must be at least 1"));
    }
    let cores = online_cpus();
    if let Some((i, cpu)) = raw
        .cpus
        .iter()
        .enumerate()
        .find(|(_, c)| cores.as_ref().is_some_and(|on| !on.contains(c)))
    {
        return Err(invalid(
            format!("media.cpus[{i}]"),
            format!("core {cpu} is not online"),
        ));
    }
    let busy_poll_us = raw.busy_poll_us.unwrap_or(0);
    if busy_poll_us > 1000 {
        return Err(invalid(
            "media.busy_poll_us",
            format!("{busy_poll_us} is above 1000 (a longer window is a spinning core)"),
        ));
    }
    let transport = |key: &str, v: Option<&str>| {
        use crate::media::anchor::Transport;
        match v.unwrap_or("as-offered") {
            "as-offered" => Ok(Transport::AsOffered),
            "rtp" => Ok(Transport::Rtp),
            "srtp" => Ok(Transport::Srtp),
            other => Err(invalid(
                key,
                format!("{other:?} is not one of \"as-offered\", \"rtp\", \"srtp\""),
            )),
        }
    };
    let transports = [
        transport("media.trunk_transport", raw.trunk_transport.as_deref())?,
        transport("media.pbx_transport", raw.pbx_transport.as_deref())?,
    ];
    let latch = |key: &str, v: Option<&str>, default: LatchMode| match v {
        None => Ok(default),
        Some("sdp") => Ok(LatchMode::Sdp),
        Some("network") => Ok(LatchMode::Network),
        Some("any") => Ok(LatchMode::Any),
        Some(other) => Err(invalid(
            key,
            format!("{other:?} is not one of \"sdp\", \"network\", \"any\""),
        )),
    };
    let latch = [
        latch(
            "media.latch_trunk",
            raw.latch_trunk.as_deref(),
            LatchMode::Sdp,
        )?,
        latch(
            "media.latch_pbx",
            raw.latch_pbx.as_deref(),
            LatchMode::Network,
        )?,
    ];
    let max_streams = raw.max_streams.unwrap_or(4);
    if !(1..=32).contains(&max_streams) {
        return Err(invalid(
            "media.max_streams",
            format!("{max_streams} is outside 1..=32"),
        ));
    }
    // Each stream takes two legs of at most two ports (RTP, RTCP).
    let range_ports = usize::from(port_max - port_min) + 1;
    let max_ports_per_source = raw.max_ports_per_source.unwrap_or((range_ports / 2).max(4));
    if !(4..=range_ports).contains(&max_ports_per_source) {
        return Err(invalid(
            "media.max_ports_per_source",
            format!("{max_ports_per_source} is outside 4..={range_ports} (one stream's 4 ports up to the whole range {port_min}-{port_max})"),
        ));
    }
    let reclaim_after_secs = raw.reclaim_after_secs.unwrap_or(120);
    if reclaim_after_secs > 86_400 {
        return Err(invalid(
            "media.reclaim_after_secs",
            format!("{reclaim_after_secs} is above 86400 (0 turns reclaim off)"),
        ));
    }
    Ok(Some(MediaConfig {
        latch,
        max_streams,
        max_ports_per_source,
        relay: crate::media::relay::RelayConfig {
            bind,
            port_min,
            port_max,
            workers,
            media_timeout: Duration::from_secs(timeout),
            reclaim_after: (reclaim_after_secs > 0)
                .then(|| Duration::from_secs(reclaim_after_secs)),
            cpus: raw.cpus,
            busy_poll: Duration::from_micros(busy_poll_us),
        },
        advertise,
        strip_ice: raw.strip_ice.unwrap_or(true),
        timeout_bye: raw.timeout_bye.unwrap_or(false),
        transports,
        ng_listen: raw
            .ng_listen
            .map(|a| {
                a.parse().map_err(|_| {
                    invalid("media.ng_listen", format!("{a:?} is not an address:port"))
                })
            })
            .transpose()?,
        ng_allow: if raw.ng_allow.is_empty() {
            vec!["127.0.0.0/8"
                .parse()
                .map_err(|_| invalid("media.ng_allow", "default"))?]
        } else {
            raw.ng_allow
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    c.parse::<ipnet::IpNet>()
                        .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            invalid(
                                format!("media.ng_allow[{i}]"),
                                format!("{c:?} is not a CIDR"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<Option<MediaConfig>, ConfigError> {
        let raw: RawMedia =
            toml::from_str(&format!("enabled = true\n{extra}")).unwrap_or_else(|e| panic!("{e}"));
        media(raw)
    }

    fn refused_key(extra: &str) -> String {
        match parse(extra) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{extra}: {other:?}"),
        }
    }

    #[test]
    fn strict_defaults_toward_the_trunk_and_caps_on() {
        let m = parse("")
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no config"));
        assert_eq!(m.latch, [LatchMode::Sdp, LatchMode::Network]);
        assert_eq!(m.max_streams, 4);
        assert_eq!(m.max_ports_per_source, 5_000, "half of 30000-39999");
        assert_eq!(m.relay.reclaim_after, Some(Duration::from_secs(120)));
        let off = parse("reclaim_after_secs = 0\nlatch_pbx = \"any\"")
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no config"));
        assert_eq!(off.relay.reclaim_after, None);
        assert_eq!(off.latch[1], LatchMode::Any);
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(refused_key("latch_trunk = \"first\""), "media.latch_trunk");
        assert_eq!(refused_key("latch_pbx = \"strict\""), "media.latch_pbx");
        assert_eq!(refused_key("max_streams = 0"), "media.max_streams");
        assert_eq!(refused_key("max_streams = 33"), "media.max_streams");
        assert_eq!(
            refused_key("port_min = 40000\nport_max = 40099\nmax_ports_per_source = 101"),
            "media.max_ports_per_source"
        );
        assert_eq!(
            refused_key("max_ports_per_source = 3"),
            "media.max_ports_per_source"
        );
        assert_eq!(
            refused_key("reclaim_after_secs = 86401"),
            "media.reclaim_after_secs"
        );
    }
}
