//! How the process itself runs: `[admin]` (the admin HTTP listener),
//! `[log]` (level and format) and `[shutdown]` (the drain on SIGTERM).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, socket_addr, ConfigError};

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: Option<String>,
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

/// Validates `[admin]`.
pub(super) fn admin(raw: RawAdmin) -> Result<AdminConfig, ConfigError> {
    Ok(AdminConfig {
        listen: match raw.listen.as_deref() {
            None | Some("") => None,
            Some(s) => Some(socket_addr("admin.listen", s)?),
        },
    })
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
