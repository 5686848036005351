//! `[trunk]` and `[pbx]`: one side's listeners, TLS files, ACL, rate limit
//! and next hops, validated into a [`SideConfig`]; and the part of it the
//! SIP core runs with ([`SideSettings`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::{invalid, resolve, socket_addr, ConfigError};
use crate::sip::proxy::{SideSettings, Target};
use crate::sip::side::{Side, Transport};
use crate::sip::uri::Uri;

/// What to do with a request from a source the side's ACL does not admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Answer 403 Forbidden.
    Reject,
    /// Stay silent (hides callgate from scanners).
    Drop,
}

/// One side's listeners, ACL and next hops.
#[derive(Debug, Clone)]
pub struct SideConfig {
    pub side: Side,
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) trusted when callgate connects to TLS targets.
    pub tls_ca: Option<PathBuf>,
    /// Host written in our Via and Record-Route on this side.
    pub advertise: Option<String>,
    pub allow: Vec<IpNet>,
    pub on_denied: Denied,
    /// Requests per second per source address; 0 disables the limit.
    pub rate_limit: u32,
    pub targets: Vec<Target>,
}

impl SideConfig {
    /// Whether `ip` may send to this side.
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        crate::sip::proxy::admits(&self.allow, ip)
    }

    /// What the SIP core needs of this side.
    pub fn core(&self) -> SideSettings {
        SideSettings {
            side: self.side,
            udp: self.udp,
            tcp: self.tcp,
            tls: self.tls,
            advertise: self.advertise.clone(),
            allow: self.allow.clone(),
            targets: self.targets.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSide {
    udp: Option<String>,
    tcp: Option<String>,
    tls: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    advertise: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    on_denied: Option<String>,
    #[serde(default)]
    rate_limit: Option<u32>,
    #[serde(default)]
    targets: Vec<String>,
}

pub(super) fn side(
    which: Side,
    raw: Option<RawSide>,
    base: Option<&Path>,
) -> Result<SideConfig, ConfigError> {
    let name = which.as_str();
    let raw = raw.ok_or_else(|| invalid(name, "section is missing"))?;
    let key = |k: &str| format!("{name}.{k}");
    let addr = |k: &str, v: &Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
        v.as_deref().map(|s| socket_addr(&key(k), s)).transpose()
    };
    let udp = addr("udp", &raw.udp)?;
    let tcp = addr("tcp", &raw.tcp)?;
    let tls = addr("tls", &raw.tls)?;
    if udp.is_none() && tcp.is_none() && tls.is_none() {
        return Err(invalid(name, "needs at least one of udp, tcp or tls"));
    }
    let file = |k: &str, p: &Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = p else { return Ok(None) };
        resolve(p, base)
            .map(Some)
            .ok_or_else(|| invalid(key(k), format!("file {} not found", p.display())))
    };
    let tls_cert = file("tls_cert", &raw.tls_cert)?;
    let tls_key = file("tls_key", &raw.tls_key)?;
    if let Some(k) = &tls_key {
        super::secret::owner_only(&key("tls_key"), k)?;
    }
    let tls_ca = file("tls_ca", &raw.tls_ca)?;
    if tls.is_some() && (tls_cert.is_none() || tls_key.is_none()) {
        return Err(invalid(key("tls"), "needs tls_cert and tls_key"));
    }
    let mut allow = Vec::with_capacity(raw.allow.len());
    for (i, s) in raw.allow.iter().enumerate() {
        let net = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                invalid(
                    format!("{name}.allow[{i}]"),
                    format!("{s:?} is not a CIDR or IP address"),
                )
            })?;
        allow.push(net);
    }
    if allow.is_empty() {
        return Err(invalid(
            key("allow"),
            "is empty: no peer could send on this side (callgate is never an open relay; list the peers' CIDRs)",
        ));
    }
    let on_denied = match raw.on_denied.as_deref().unwrap_or("reject") {
        "reject" => Denied::Reject,
        "drop" => Denied::Drop,
        other => {
            return Err(invalid(
                key("on_denied"),
                format!("must be \"reject\" or \"drop\", not {other:?}"),
            ))
        }
    };
    if raw.targets.is_empty() {
        return Err(invalid(
            key("targets"),
            "needs at least one next-hop SIP URI",
        ));
    }
    let mut targets = Vec::with_capacity(raw.targets.len());
    for (i, t) in raw.targets.iter().enumerate() {
        targets.push(target(&format!("{name}.targets[{i}]"), t)?);
    }
    if let Some(adv) = &raw.advertise {
        if adv.is_empty()
            || adv
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b';' || b == b',')
        {
            return Err(invalid(
                key("advertise"),
                "must be a host name or IP address",
            ));
        }
    }
    Ok(SideConfig {
        side: which,
        udp,
        tcp,
        tls,
        tls_cert,
        tls_key,
        tls_ca,
        advertise: raw.advertise,
        allow,
        on_denied,
        rate_limit: raw.rate_limit.unwrap_or(0),
        targets,
    })
}

/// Parses a target URI such as `sip:192.0.2.10:5060;transport=tcp`. Host
/// names are not resolved at load: targets are IP literals.
fn target(key: &str, s: &str) -> Result<Target, ConfigError> {
    let uri = Uri::parse(s.as_bytes())
        .map_err(|e| invalid(key, format!("{s:?} is not a SIP URI: {e}")))?;
    if !uri.is_sip() {
        return Err(invalid(key, format!("{s:?}: scheme must be sip or sips")));
    }
    let sips = uri.scheme.eq_ignore_ascii_case(b"sips");
    let transport = match uri.param("transport") {
        Some(t) => Transport::from_token(t)
            .ok_or_else(|| invalid(key, format!("{s:?}: transport must be udp, tcp or tls")))?,
        None if sips => Transport::Tls,
        None => Transport::Udp,
    };
    let host = std::str::from_utf8(uri.host).map_err(|_| invalid(key, "host is not UTF-8"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().map_err(|_| {
        invalid(
            key,
            format!("{s:?}: host must be an IP address (DNS targets are not supported yet)"),
        )
    })?;
    let port = uri.port.unwrap_or(if transport == Transport::Tls {
        5061
    } else {
        5060
    });
    Ok(Target {
        uri: s.to_owned(),
        addr: SocketAddr::new(ip, port),
        transport,
    })
}
