//! Typed configuration (`sip-config/callgate.toml`), validated at load.
//!
//! Every key is documented in `docs/configuration.md`. Errors name the key
//! (`trunk.targets[1]`) and the reason, so an operator can fix the file
//! without reading code.
//!
//! This file reads the text and assembles [`Config`]; each section is
//! validated in a file of its own: `side.rs` (`[trunk]`, `[pbx]`),
//! `proxy.rs` (`[timers]`, `[limits]`, `[health]`, `[overload]`),
//! `stir.rs`, `risk.rs`, `audit.rs`, `events.rs` (`[events]`), `state.rs`,
//! `media.rs`, `dns.rs`, and
//! `service.rs` (`[admin]`, `[log]`, `[shutdown]`), `reload.rs`
//! (`[reload]`), `instance.rs` (`[instance]`). `expand.rs` puts `${NAME}` from the environment into
//! string values first. Relative paths resolve against the configuration
//! file's own directory (`locate`). The types the SIP core
//! runs with ([`Side`], [`Transport`], [`Target`], [`TimerConfig`],
//! [`HealthConfig`], [`OverloadConfig`]) belong to `crate::sip` and are
//! re-exported here.

mod audit;
mod dns;
mod events;
mod expand;
pub mod instance;
mod media;
mod proxy;
mod reload;
mod risk;
pub mod secret;
mod service;
mod side;
mod state;
mod stir;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::sip::proxy::{canonical_ip, HealthConfig, OverloadConfig, Target};
pub use crate::sip::side::{Side, Transport};
pub use crate::sip::transaction::TimerConfig;
pub use risk::RiskConfig;
pub use service::{
    AdminConfig, AdminToken, LogConfig, LogFormat, Role, RoleToken, ShutdownConfig,
    LEGACY_TOKEN_NAME,
};
pub use side::{Denied, NumberPattern, OptionsAnswer, Scanners, SideConfig, TrunkScreen};
pub use stir::{SignConfig, StirConfig, StirFailure};

use crate::sip::message::Limits;

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
    /// A `${NAME}` in a value names a variable that is not set and gives
    /// no `${NAME:-default}`.
    #[error("{path}: {key}: environment variable {var} is not set (give it a value, or a default: ${{{var}:-value}})")]
    UnsetVariable {
        path: PathBuf,
        key: String,
        var: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
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

/// Where a path named in the configuration points: as given when
/// absolute, else under `base`, the directory of the configuration file
/// that names it (`tls/k.pem` in `/etc/callgate/callgate.toml` is
/// `/etc/callgate/tls/k.pem`, whatever the working directory).
fn locate(p: &Path, base: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A file or directory named in the configuration ([`locate`]) that must
/// exist; `Err` carries the path looked for, for the error message.
fn resolve(p: &Path, base: &Path) -> Result<PathBuf, PathBuf> {
    let located = locate(p, base);
    if located.exists() {
        Ok(located)
    } else {
        Err(located)
    }
}

/// The whole configuration, after validation.
#[derive(Debug, Clone)]
pub struct Config {
    /// This instance's name (`[instance] name`, default the host name):
    /// the start of every decision id, in every audit record.
    pub instance: String,
    pub trunk: SideConfig,
    pub pbx: SideConfig,
    pub health: HealthConfig,
    pub overload: OverloadConfig,
    pub timers: TimerConfig,
    /// A forwarded request with no response at all within this time fails
    /// over to the next target (`timers.no_response_ms`).
    pub no_response: Duration,
    pub limits: Limits,
    /// Bounds of the dialog table (`limits.max_dialogs`,
    /// `limits.dialog_idle_secs`).
    pub dialogs: crate::sip::dialogs::DialogLimits,
    /// Stream connections idle this long are closed (`limits.tcp_idle_secs`).
    pub tcp_idle: Duration,
    /// A stream message must be whole this long after its first byte
    /// (`limits.message_deadline_secs`).
    pub message_deadline: Duration,
    /// Caps on accepted TCP/TLS connections, TLS handshake time.
    pub connections: crate::sip::transport::connections::ConnectionLimits,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub stir: StirConfig,
    pub risk: RiskConfig,
    /// The audit store; `None` when `[audit] path` is not set.
    pub audit: Option<crate::audit::AuditConfig>,
    /// Decision events (`[events]`, read at start); `None` when absent.
    pub events: Option<crate::events::EventsConfig>,
    /// Velocity, replay and certificate state: local, or shared on Redis.
    pub state: crate::state::StateConfig,
    /// Media anchoring (`[media] enabled = true`); `None`: SDP untouched.
    pub media: Option<crate::media::config::MediaConfig>,
    /// Where host names in `targets` are resolved (`[dns]`, read at start).
    pub dns: crate::dns::DnsConfig,
    /// Reload when the configuration's files change, compared this often
    /// (`[reload] watch_secs`); `None`: only on SIGHUP or the API.
    pub watch: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    instance: instance::RawInstance,
    trunk: Option<side::RawSide>,
    pbx: Option<side::RawSide>,
    #[serde(default)]
    health: proxy::RawHealth,
    #[serde(default)]
    overload: proxy::RawOverload,
    #[serde(default)]
    timers: proxy::RawTimers,
    #[serde(default)]
    limits: proxy::RawLimits,
    #[serde(default)]
    admin: service::RawAdmin,
    #[serde(default)]
    log: service::RawLog,
    #[serde(default)]
    shutdown: service::RawShutdown,
    #[serde(default)]
    stir: stir::RawStir,
    #[serde(default)]
    risk: risk::RawRisk,
    #[serde(default)]
    audit: audit::RawAudit,
    events: Option<events::RawEvents>,
    #[serde(default)]
    state: state::RawState,
    #[serde(default)]
    media: media::RawMedia,
    #[serde(default)]
    reload: reload::RawReload,
    #[serde(default)]
    dns: dns::RawDns,
}

/// The configuration compiled into the binary: `sip-config/callgate.toml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../sip-config/callgate.toml");

/// How errors name the embedded configuration.
const EMBEDDED_ORIGIN: &str = "<embedded callgate.toml>";

impl Config {
    /// Reads and validates a configuration file. Relative paths inside it
    /// (TLS files, trust anchors, policies, the token file, the audit
    /// store, …) are resolved against the file's own directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses configuration text; `origin` names it in errors and its
    /// directory resolves relative paths. Sections are validated in file
    /// order, so the first error reported is stable.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        Config::parse_in(text, origin, origin.parent().unwrap_or(Path::new("")))
    }

    /// [`Config::parse`] with relative paths resolved under `base`.
    fn parse_in(text: &str, origin: &Path, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = expand::deserialize(text, origin)?;
        let instance = instance::instance(raw.instance)?;
        let trunk = side::side(Side::Trunk, raw.trunk, base)?;
        let pbx = side::side(Side::Pbx, raw.pbx, base)?;
        let health = proxy::health(raw.health)?;
        let overload = proxy::overload(raw.overload)?;
        let (timers, no_response) = proxy::timers(raw.timers)?;
        let proxy::LimitsSection {
            limits,
            tcp_idle,
            message_deadline,
            connections,
            dialogs,
        } = proxy::limits(raw.limits)?;
        let admin = service::admin(raw.admin, base)?;
        let log = service::log(raw.log)?;
        let shutdown = service::shutdown(raw.shutdown);
        let stir = stir::stir(raw.stir, base)?;
        let risk = risk::risk(raw.risk, base)?;
        let audit = audit::audit(raw.audit, base)?;
        let events = events::events(raw.events, audit.is_some(), base)?;
        Ok(Config {
            instance,
            trunk,
            pbx,
            health,
            overload,
            timers,
            no_response,
            limits,
            dialogs,
            tcp_idle,
            message_deadline,
            connections,
            admin,
            log,
            shutdown,
            stir,
            risk,
            audit,
            events,
            state: state::state(raw.state, base)?,
            media: media::media(raw.media)?,
            dns: dns::dns(raw.dns)?,
            watch: reload::reload(raw.reload)?,
        })
    }

    /// The configuration embedded in the binary. It names no files; were
    /// one added, a relative path would resolve against the working
    /// directory.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse_in(EMBEDDED_DEFAULT, Path::new(EMBEDDED_ORIGIN), Path::new(""))
    }

    pub fn side(&self, side: Side) -> &SideConfig {
        match side {
            Side::Trunk => &self.trunk,
            Side::Pbx => &self.pbx,
        }
    }
}
