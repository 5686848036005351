//! Typed configuration (`sip-config/callgate.toml`), validated at load.
//!
//! Every key is documented in `docs/configuration.md`. Errors name the key
//! (`trunk.targets[1]`) and the reason, so an operator can fix the file
//! without reading code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::sip::message::Limits;
use crate::sip::uri::Uri;

/// A configuration error: the key it concerns and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration, after validation.
#[derive(Debug, Clone)]
pub struct Config {
    pub trunk: SideConfig,
    pub pbx: SideConfig,
    pub health: HealthConfig,
    pub overload: OverloadConfig,
    pub timers: TimerConfig,
    /// A forwarded request with no response at all within this time fails
    /// over to the next target (`timers.no_response_ms`).
    pub no_response: Duration,
    pub limits: Limits,
    /// Stream connections idle this long are closed (`limits.tcp_idle_secs`).
    pub tcp_idle: Duration,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub stir: StirConfig,
    pub risk: RiskConfig,
    /// The audit store; `None` when `[audit] path` is not set.
    pub audit: Option<crate::audit::AuditConfig>,
    /// Velocity, replay and certificate state: local, or shared on Redis.
    pub state: crate::state::StateConfig,
    /// Media anchoring (`[media] enabled = true`); `None`: SDP untouched.
    pub media: Option<crate::gate::media::MediaConfig>,
}

/// The risk engine's policies (`[risk]`); off when no policy is set.
#[derive(Debug, Clone, Default)]
pub struct RiskConfig {
    /// The active policy, compiled.
    pub policy: Option<std::sync::Arc<crate::risk::policy::Policy>>,
    /// A candidate evaluated beside it; disagreements are counted.
    pub shadow: Option<std::sync::Arc<crate::risk::policy::Policy>>,
}

/// What to do with a call whose STIR verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StirFailure {
    /// Forward it marked `TN-Validation-Failed` with a `Reason: STIR` header.
    Mark,
    /// Answer with the RFC 8224 response (403, 428, 436, 437, 438).
    Reject,
}

/// STIR/SHAKEN verification of inbound calls (`[stir]`).
#[derive(Debug, Clone)]
pub struct StirConfig {
    pub enabled: bool,
    /// Directory of PEM STI trust anchors.
    pub trust_dir: Option<PathBuf>,
    /// Extra CAs for the HTTPS fetch of x5u.
    pub x5u_ca: Vec<PathBuf>,
    /// CRL files (PEM or DER) checked along every chain.
    pub crl_files: Vec<PathBuf>,
    /// Accepted SHAKEN certificate policy OIDs (ATIS-1000080 §6.4.1);
    /// empty: not checked.
    pub certificate_policies: Vec<String>,
    /// Certificates loaded into the cache at startup and on reload.
    pub preload_dir: Option<PathBuf>,
    /// Fetch CRLs from the certificates' distribution points.
    pub crl_fetch: bool,
    pub allow_private_x5u: bool,
    pub deadline: Duration,
    pub freshness_secs: i64,
    /// `TN-Validation-Passed-A` (true) or the bare 3GPP value (false).
    pub attest_suffix: bool,
    pub on_failure: StirFailure,
    /// Worker threads for signature checks while the signalling thread is
    /// busy; 0: always inline. Read at start.
    pub verify_threads: usize,
    /// Signing of agents' outbound calls (authentication service), if on.
    pub sign: Option<SignConfig>,
}

/// The authentication service for calls from the PBX (`[stir] sign_*`).
#[derive(Debug, Clone)]
pub struct SignConfig {
    /// PEM private key (P-256).
    pub key: PathBuf,
    /// https URL where verifiers fetch our certificate.
    pub x5u: String,
    /// Calling numbers (digit prefixes) the contact centre owns: full
    /// attestation A (ATIS-1000074 §5.2.3).
    pub full_attestation_prefixes: Vec<String>,
    /// Attestation for other calling numbers: B or C.
    pub other_attestation: char,
}

/// Which side of callgate a message arrived on or leaves through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Facing the carrier's SIP trunk.
    Trunk,
    /// Facing the contact centre's PBX.
    Pbx,
}

impl Side {
    pub fn as_str(&self) -> &'static str {
        match self {
            Side::Trunk => "trunk",
            Side::Pbx => "pbx",
        }
    }
    /// The side a request arriving on `self` leaves through.
    pub fn other(&self) -> Side {
        match self {
            Side::Trunk => Side::Pbx,
            Side::Pbx => Side::Trunk,
        }
    }
    pub fn index(&self) -> usize {
        match self {
            Side::Trunk => 0,
            Side::Pbx => 1,
        }
    }
}

/// SIP transport protocols (RFC 3261 §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Token used in Via (RFC 3261 §20.42).
    pub fn via_token(&self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
    /// Value of the `transport` URI parameter.
    pub fn param(&self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
    /// Reliable transports carry no retransmissions (RFC 3261 §17.1.1.2).
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Transport::Udp)
    }
    pub fn from_token(token: &[u8]) -> Option<Transport> {
        if token.eq_ignore_ascii_case(b"udp") {
            Some(Transport::Udp)
        } else if token.eq_ignore_ascii_case(b"tcp") {
            Some(Transport::Tcp)
        } else if token.eq_ignore_ascii_case(b"tls") {
            Some(Transport::Tls)
        } else {
            None
        }
    }
}

/// What to do with a request from a source the side's ACL does not admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Answer 403 Forbidden.
    Reject,
    /// Stay silent (hides callgate from scanners).
    Drop,
}

/// A next hop: where requests leaving a side are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URI as configured, used in logs and metrics.
    pub uri: String,
    pub addr: SocketAddr,
    pub transport: Transport,
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
        let ip = canonical_ip(ip);
        self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) compare as IPv4.
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    /// Interval between OPTIONS probes to each target; zero disables probing.
    pub interval: Duration,
    pub timeout: Duration,
    pub down_after: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct OverloadConfig {
    pub max_transactions: usize,
    pub retry_after_secs: u32,
}

/// RFC 3261 §17 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    pub timer_c: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_millis(4000),
            t4: Duration::from_millis(5000),
            timer_c: Duration::from_secs(180),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy)]
pub struct ShutdownConfig {
    pub drain: Duration,
}

// ---- raw TOML shape ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trunk: Option<RawSide>,
    pbx: Option<RawSide>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    overload: RawOverload,
    #[serde(default)]
    timers: RawTimers,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    shutdown: RawShutdown,
    #[serde(default)]
    stir: RawStir,
    #[serde(default)]
    risk: RawRisk,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    media: RawMedia,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMedia {
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    redis: Option<String>,
    timeout_ms: Option<u64>,
    key_prefix: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: Option<PathBuf>,
    batch_max: Option<usize>,
    batch_ms: Option<u64>,
    retention_days: Option<u32>,
    synchronous: Option<String>,
    store_invite: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRisk {
    policy: Option<PathBuf>,
    shadow_policy: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStir {
    enabled: Option<bool>,
    trust_dir: Option<PathBuf>,
    #[serde(default)]
    x5u_ca: Vec<PathBuf>,
    #[serde(default)]
    crl_files: Vec<PathBuf>,
    certificate_policies: Option<Vec<String>>,
    preload_dir: Option<PathBuf>,
    crl_fetch: Option<bool>,
    allow_private_x5u: Option<bool>,
    deadline_ms: Option<u64>,
    freshness_secs: Option<i64>,
    verstat_attest_suffix: Option<bool>,
    on_failure: Option<String>,
    verify_threads: Option<usize>,
    sign: Option<bool>,
    sign_key: Option<PathBuf>,
    sign_x5u: Option<String>,
    #[serde(default)]
    sign_full_attestation_prefixes: Vec<String>,
    sign_other_attestation: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSide {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval_secs: Option<u64>,
    timeout_ms: Option<u64>,
    down_after: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOverload {
    max_transactions: Option<usize>,
    retry_after_secs: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimers {
    t1_ms: Option<u64>,
    t2_ms: Option<u64>,
    t4_ms: Option<u64>,
    timer_c_secs: Option<u64>,
    no_response_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_line_bytes: Option<usize>,
    tcp_idle_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    format: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    drain_secs: Option<u64>,
}

/// The configuration compiled into the binary: `sip-config/callgate.toml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../sip-config/callgate.toml");

impl Config {
    /// Reads and validates a configuration file. Relative paths inside it
    /// (TLS files) are resolved against the current directory, then against
    /// the file's directory's parent (so `sip-config/...` works from either).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let base = origin
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        let trunk = side(Side::Trunk, raw.trunk, base.as_deref())?;
        let pbx = side(Side::Pbx, raw.pbx, base.as_deref())?;
        let health = HealthConfig {
            interval: Duration::from_secs(raw.health.interval_secs.unwrap_or(5)),
            timeout: Duration::from_millis(positive(
                "health.timeout_ms",
                raw.health.timeout_ms.unwrap_or(2000),
            )?),
            down_after: raw.health.down_after.unwrap_or(2).max(1),
        };
        let overload = OverloadConfig {
            max_transactions: raw.overload.max_transactions.unwrap_or(20_000),
            retry_after_secs: raw.overload.retry_after_secs.unwrap_or(5),
        };
        if overload.max_transactions == 0 {
            return Err(invalid("overload.max_transactions", "must be at least 1"));
        }
        let timers = TimerConfig {
            t1: Duration::from_millis(positive("timers.t1_ms", raw.timers.t1_ms.unwrap_or(500))?),
            t2: Duration::from_millis(positive("timers.t2_ms", raw.timers.t2_ms.unwrap_or(4000))?),
            t4: Duration::from_millis(positive("timers.t4_ms", raw.timers.t4_ms.unwrap_or(5000))?),
            timer_c: Duration::from_secs(positive(
                "timers.timer_c_secs",
                raw.timers.timer_c_secs.unwrap_or(180),
            )?),
        };
        if timers.t2 < timers.t1 {
            return Err(invalid(
                "timers.t2_ms",
                "must not be smaller than timers.t1_ms",
            ));
        }
        if timers.timer_c < Duration::from_secs(180) {
            // RFC 3261 §16.6 step 11: Timer C MUST be larger than 3 minutes.
            tracing::warn!("timers.timer_c_secs below 180 s deviates from RFC 3261 §16.6");
        }
        let no_response = Duration::from_millis(positive(
            "timers.no_response_ms",
            raw.timers.no_response_ms.unwrap_or(2000),
        )?);
        if no_response > 64 * timers.t1 {
            return Err(invalid(
                "timers.no_response_ms",
                "must not exceed Timer B (64 × t1_ms)",
            ));
        }
        let defaults = Limits::default();
        let limits = Limits {
            max_message_bytes: raw
                .limits
                .max_message_bytes
                .unwrap_or(defaults.max_message_bytes),
            max_headers: raw.limits.max_headers.unwrap_or(defaults.max_headers),
            max_line_bytes: raw.limits.max_line_bytes.unwrap_or(defaults.max_line_bytes),
        };
        if !(512..=1 << 20).contains(&limits.max_message_bytes) {
            return Err(invalid(
                "limits.max_message_bytes",
                "must be between 512 and 1048576",
            ));
        }
        if limits.max_headers < 8 {
            return Err(invalid("limits.max_headers", "must be at least 8"));
        }
        if limits.max_line_bytes < 128 {
            return Err(invalid("limits.max_line_bytes", "must be at least 128"));
        }
        let tcp_idle = Duration::from_secs(positive(
            "limits.tcp_idle_secs",
            raw.limits.tcp_idle_secs.unwrap_or(300),
        )?);
        let admin = AdminConfig {
            listen: match raw.admin.listen.as_deref() {
                None | Some("") => None,
                Some(s) => Some(socket_addr("admin.listen", s)?),
            },
        };
        let format = match raw.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("must be \"text\" or \"json\", not {other:?}"),
                ))
            }
        };
        let level = raw.log.level.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(invalid(
                "log.level",
                format!("{level:?} is not a valid filter"),
            ));
        }
        let shutdown = ShutdownConfig {
            drain: Duration::from_secs(raw.shutdown.drain_secs.unwrap_or(10)),
        };
        let stir = stir(raw.stir, origin)?;
        let risk = risk(raw.risk, origin)?;
        let audit = match raw.audit.path {
            None => None,
            Some(path) => {
                let mut a = crate::audit::AuditConfig::new(path);
                a.batch_max =
                    positive("audit.batch_max", raw.audit.batch_max.unwrap_or(256) as u64)?
                        as usize;
                a.batch = Duration::from_millis(positive(
                    "audit.batch_ms",
                    raw.audit.batch_ms.unwrap_or(50),
                )?);
                a.retention_days = raw.audit.retention_days.unwrap_or(90);
                a.synchronous_full = match raw.audit.synchronous.as_deref().unwrap_or("normal") {
                    "normal" => false,
                    "full" => true,
                    other => {
                        return Err(invalid(
                            "audit.synchronous",
                            format!("must be \"normal\" or \"full\", not {other:?}"),
                        ))
                    }
                };
                a.store_invite = raw.audit.store_invite.unwrap_or(true);
                Some(a)
            }
        };
        Ok(Config {
            trunk,
            pbx,
            health,
            overload,
            timers,
            no_response,
            limits,
            tcp_idle,
            admin,
            log: LogConfig { level, format },
            shutdown,
            stir,
            risk,
            audit,
            state: state(raw.state)?,
            media: media(raw.media)?,
        })
    }

    /// The configuration embedded in the binary.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT, Path::new("sip-config/callgate.toml"))
    }

    pub fn side(&self, side: Side) -> &SideConfig {
        match side {
            Side::Trunk => &self.trunk,
            Side::Pbx => &self.pbx,
        }
    }
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
fn media(raw: RawMedia) -> Result<Option<crate::gate::media::MediaConfig>, ConfigError> {
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
    Ok(Some(crate::gate::media::MediaConfig {
        relay: crate::media::relay::RelayConfig {
            bind,
            port_min,
            port_max,
            workers,
            media_timeout: Duration::from_secs(timeout),
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

/// Validates `[state]`.
fn state(raw: RawState) -> Result<crate::state::StateConfig, ConfigError> {
    let mut cfg = crate::state::StateConfig::default();
    if let Some(url) = raw.redis.filter(|u| !u.is_empty()) {
        cfg.redis = Some(
            crate::state::redis::RedisAddr::parse(&url)
                // The URL is not echoed: it may hold a password.
                .map_err(|e| invalid("state.redis", e))?,
        );
    }
    if let Some(ms) = raw.timeout_ms {
        if !(1..=5_000).contains(&ms) {
            return Err(invalid(
                "state.timeout_ms",
                format!("{ms} is outside 1..=5000 (a call waits this long for Redis)"),
            ));
        }
        cfg.timeout = Duration::from_millis(ms);
    }
    if let Some(prefix) = raw.key_prefix {
        if prefix
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(invalid(
                "state.key_prefix",
                "must not contain spaces or control characters",
            ));
        }
        cfg.key_prefix = prefix;
    }
    Ok(cfg)
}

/// Loads `[risk]` policies: paths as for other files (as given, else
/// relative to the directory above the config file's).
fn risk(raw: RawRisk, origin: &Path) -> Result<RiskConfig, ConfigError> {
    let base = origin.parent().and_then(Path::parent);
    let load = |key: &str,
                p: &PathBuf|
     -> Result<std::sync::Arc<crate::risk::policy::Policy>, ConfigError> {
        let path = if p.is_absolute() || p.exists() {
            p.clone()
        } else {
            base.map(|b| b.join(p))
                .filter(|bp| bp.exists())
                .ok_or_else(|| invalid(key, format!("file {} not found", p.display())))?
        };
        crate::risk::policy::Policy::load(&path)
            .map(std::sync::Arc::new)
            .map_err(|e| invalid(key, e.to_string()))
    };
    let policy = raw
        .policy
        .as_ref()
        .map(|p| load("risk.policy", p))
        .transpose()?;
    let shadow = raw
        .shadow_policy
        .as_ref()
        .map(|p| load("risk.shadow_policy", p))
        .transpose()?;
    if shadow.is_some() && policy.is_none() {
        return Err(invalid(
            "risk.shadow_policy",
            "needs risk.policy (the active policy)",
        ));
    }
    Ok(RiskConfig { policy, shadow })
}

fn stir(raw: RawStir, origin: &Path) -> Result<StirConfig, ConfigError> {
    let base = origin.parent().and_then(Path::parent);
    let resolve = |p: &PathBuf| -> Option<PathBuf> {
        if p.is_absolute() || p.exists() {
            Some(p.clone())
        } else {
            base.map(|b| b.join(p)).filter(|bp| bp.exists())
        }
    };
    let enabled = raw.enabled.unwrap_or(false);
    let trust_dir = match &raw.trust_dir {
        Some(d) => Some(resolve(d).ok_or_else(|| {
            invalid(
                "stir.trust_dir",
                format!("directory {} not found", d.display()),
            )
        })?),
        None if enabled => {
            return Err(invalid(
                "stir.trust_dir",
                "required when stir.enabled = true (a directory of PEM STI trust anchors)",
            ))
        }
        None => None,
    };
    let mut x5u_ca = Vec::new();
    for (i, f) in raw.x5u_ca.iter().enumerate() {
        x5u_ca.push(resolve(f).ok_or_else(|| {
            invalid(
                format!("stir.x5u_ca[{i}]"),
                format!("file {} not found", f.display()),
            )
        })?);
    }
    let mut crl_files = Vec::new();
    for (i, f) in raw.crl_files.iter().enumerate() {
        crl_files.push(resolve(f).ok_or_else(|| {
            invalid(
                format!("stir.crl_files[{i}]"),
                format!("file {} not found", f.display()),
            )
        })?);
    }
    let certificate_policies = match &raw.certificate_policies {
        None => crate::stir::certs::DEFAULT_POLICIES
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                let arcs = p.strip_suffix(".*").unwrap_or(p);
                if arcs.is_empty()
                    || arcs
                        .split('.')
                        .any(|a| a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()))
                {
                    return Err(invalid(
                        format!("stir.certificate_policies[{i}]"),
                        format!("{p:?} is not a dotted OID (e.g. \"2.16.840.1.114569.1.1.3\", or \"2.16.840.1.114569.1.1.*\" for the arc)"),
                    ));
                }
            }
            list.clone()
        }
    };
    let preload_dir = match &raw.preload_dir {
        Some(d) => Some(resolve(d).filter(|p| p.is_dir()).ok_or_else(|| {
            invalid(
                "stir.preload_dir",
                format!("directory {} not found", d.display()),
            )
        })?),
        None => None,
    };
    let on_failure = match raw.on_failure.as_deref().unwrap_or("mark") {
        "mark" => StirFailure::Mark,
        "reject" => StirFailure::Reject,
        other => {
            return Err(invalid(
                "stir.on_failure",
                format!("must be \"mark\" or \"reject\", not {other:?}"),
            ))
        }
    };
    let freshness_secs = raw.freshness_secs.unwrap_or(60);
    if freshness_secs <= 0 {
        return Err(invalid("stir.freshness_secs", "must be greater than zero"));
    }
    let sign = if raw.sign.unwrap_or(false) {
        let key = raw
            .sign_key
            .as_ref()
            .ok_or_else(|| invalid("stir.sign_key", "required when stir.sign = true"))?;
        let key = resolve(key)
            .ok_or_else(|| invalid("stir.sign_key", format!("file {} not found", key.display())))?;
        let pem = std::fs::read(&key).map_err(|e| invalid("stir.sign_key", e.to_string()))?;
        crate::stir::keys::SigningKey::from_pem(&pem)
            .map_err(|e| invalid("stir.sign_key", e.to_string()))?;
        let x5u = raw
            .sign_x5u
            .clone()
            .ok_or_else(|| invalid("stir.sign_x5u", "required when stir.sign = true"))?;
        if !x5u.starts_with("https://") {
            return Err(invalid("stir.sign_x5u", "must be an https URL"));
        }
        for (i, p) in raw.sign_full_attestation_prefixes.iter().enumerate() {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    format!("stir.sign_full_attestation_prefixes[{i}]"),
                    "must be digits (a number prefix)",
                ));
            }
        }
        let other_attestation = match raw.sign_other_attestation.as_deref().unwrap_or("B") {
            "B" => 'B',
            "C" => 'C',
            other => {
                return Err(invalid(
                    "stir.sign_other_attestation",
                    format!("must be \"B\" or \"C\", not {other:?}"),
                ))
            }
        };
        Some(SignConfig {
            key,
            x5u,
            full_attestation_prefixes: raw.sign_full_attestation_prefixes.clone(),
            other_attestation,
        })
    } else {
        None
    };
    Ok(StirConfig {
        sign,
        enabled,
        trust_dir,
        x5u_ca,
        crl_files,
        certificate_policies,
        preload_dir,
        crl_fetch: raw.crl_fetch.unwrap_or(false),
        allow_private_x5u: raw.allow_private_x5u.unwrap_or(false),
        deadline: Duration::from_millis(positive(
            "stir.deadline_ms",
            raw.deadline_ms.unwrap_or(300),
        )?),
        freshness_secs,
        attest_suffix: raw.verstat_attest_suffix.unwrap_or(true),
        on_failure,
        verify_threads: match raw.verify_threads {
            Some(n) if n > 64 => {
                return Err(invalid("stir.verify_threads", "at most 64"));
            }
            Some(n) => n,
            // One per core beside the signalling thread, at least one.
            None => std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
        },
    })
}

fn positive(key: &str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        Err(invalid(key, "must be greater than zero"))
    } else {
        Ok(v)
    }
}

fn socket_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        invalid(
            key,
            format!("{s:?} is not an IP:port address (e.g. \"127.0.0.1:5060\" or \"[::1]:5060\")"),
        )
    })
}

fn side(which: Side, raw: Option<RawSide>, base: Option<&Path>) -> Result<SideConfig, ConfigError> {
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
    let resolve = |k: &str, p: &Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = p else { return Ok(None) };
        let found = if p.is_absolute() || p.exists() {
            Some(p.clone())
        } else {
            base.map(|b| b.join(p)).filter(|bp| bp.exists())
        };
        found
            .map(Some)
            .ok_or_else(|| invalid(key(k), format!("file {} not found", p.display())))
    };
    let tls_cert = resolve("tls_cert", &raw.tls_cert)?;
    let tls_key = resolve("tls_key", &raw.tls_key)?;
    let tls_ca = resolve("tls_ca", &raw.tls_ca)?;
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
