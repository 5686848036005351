//! How the process itself runs: `[admin]` (the admin HTTP listener),
//! `[log]` (level and format) and `[shutdown]` (the drain on SIGTERM).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, socket_addr, ConfigError};

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
    /// The bearer token of state-changing requests (`admin.token_file`);
    /// `None`: they are refused.
    pub token: Option<AdminToken>,
    /// Reads (metrics, health, readiness) need the token too.
    pub token_for_reads: bool,
    /// Host names accepted in `Host` besides IP literals of the listener.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`) allowed to call the API.
    pub allowed_origins: Vec<String>,
}

/// The admin token's bytes; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub Vec<u8>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Shortest token accepted (bytes): guessing must be hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: Option<String>,
    token_file: Option<std::path::PathBuf>,
    token_for_reads: Option<bool>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    level: Option<String>,
    format: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShutdown {
    drain_secs: Option<u64>,
}

/// Validates `[admin]`; a relative `token_file` is under `base` (the
/// config file's directory).
pub(super) fn admin(raw: RawAdmin, base: &std::path::Path) -> Result<AdminConfig, ConfigError> {
    let token = raw
        .token_file
        .as_deref()
        .map(|p| admin_token(&super::locate(p, base)))
        .transpose()?;
    let token_for_reads = raw.token_for_reads.unwrap_or(false);
    if token_for_reads && token.is_none() {
        return Err(invalid(
            "admin.token_for_reads",
            "needs admin.token_file (no request could be authenticated)",
        ));
    }
    let allowed_hosts = raw
        .allowed_hosts
        .unwrap_or_else(|| vec!["localhost".to_owned()]);
    for (i, h) in allowed_hosts.iter().enumerate() {
        if h.is_empty() || h.contains([':', '/', ' ']) {
            return Err(invalid(
                format!("admin.allowed_hosts[{i}]"),
                format!("{h:?} is not a host name (no port, scheme or path)"),
            ));
        }
    }
    let allowed_origins = raw.allowed_origins.unwrap_or_default();
    for (i, o) in allowed_origins.iter().enumerate() {
        if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
            return Err(invalid(
                format!("admin.allowed_origins[{i}]"),
                format!("{o:?} is not an origin (scheme://host[:port], no path)"),
            ));
        }
    }
    Ok(AdminConfig {
        listen: match raw.listen.as_deref() {
            None | Some("") => None,
            Some(s) => Some(socket_addr("admin.listen", s)?),
        },
        token,
        token_for_reads,
        allowed_hosts: allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        allowed_origins,
    })
}

/// Reads `admin.token_file`: owner-only, one line, at least
/// [`MIN_TOKEN_LEN`] bytes once surrounding whitespace is trimmed.
fn admin_token(path: &std::path::Path) -> Result<AdminToken, ConfigError> {
    const KEY: &str = "admin.token_file";
    super::secret::owner_only(KEY, path)?;
    let text = std::fs::read(path).map_err(|e| invalid(KEY, format!("{}: {e}", path.display())))?;
    let token = text.trim_ascii();
    if token.len() < MIN_TOKEN_LEN || token.iter().any(|b| !b.is_ascii_graphic()) {
        return Err(invalid(
            KEY,
            format!(
                "{} must hold one token of at least {MIN_TOKEN_LEN} printable characters \
                 (e.g. head -c 32 /dev/urandom | base64 > {})",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(AdminToken(token.to_vec()))
}

/// Validates `[log]`.
pub(super) fn log(raw: RawLog) -> Result<LogConfig, ConfigError> {
    let format = match raw.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "log.format",
                format!("must be \"text\" or \"json\", not {other:?}"),
            ))
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(invalid(
            "log.level",
            format!("{level:?} is not a valid filter"),
        ));
    }
    Ok(LogConfig { level, format })
}

/// Reads `[shutdown]`.
pub(super) fn shutdown(raw: RawShutdown) -> ShutdownConfig {
    ShutdownConfig {
        drain: Duration::from_secs(raw.drain_secs.unwrap_or(10)),
    }
}
