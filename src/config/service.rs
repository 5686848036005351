//! How the process itself runs: `[admin]` (the admin HTTP listener),
//! `[log]` (level and format) and `[shutdown]` (the drain on SIGTERM).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, socket_addr, ConfigError};

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
    /// The bearer token of state-changing requests (`admin.token_file`),
    /// an `ops` token named [`LEGACY_TOKEN_NAME`]; `None`: only the
    /// `[[admin.tokens]]` authenticate.
    pub token: Option<AdminToken>,
    /// Named tokens with roles (`[[admin.tokens]]`).
    pub tokens: Vec<RoleToken>,
    /// Reads (metrics, health, readiness) need a token too.
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

/// What a token may do on the admin API (`[[admin.tokens]] role`); each
/// role may do everything the one before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Looks up a call's decision, records step-up and a verdict for a call.
    Agent,
    /// An agent's rights, every call in progress and the review queue.
    Supervisor,
    /// Everything: reload, drain, targets, policy, metrics.
    Ops,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Ops => "ops",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        [Role::Agent, Role::Supervisor, Role::Ops]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// One named token with its role (`[[admin.tokens]]`).
#[derive(Debug, Clone)]
pub struct RoleToken {
    /// Written to the audit trail with what the token did.
    pub name: String,
    pub role: Role,
    pub token: AdminToken,
}

/// The name `admin.token_file`'s token (an `ops` token) goes by.
pub const LEGACY_TOKEN_NAME: &str = "admin";

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
    tokens: Option<Vec<RawRoleToken>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoleToken {
    name: Option<String>,
    role: Option<String>,
    token_file: Option<std::path::PathBuf>,
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
        .map(|p| admin_token("admin.token_file", &super::locate(p, base)))
        .transpose()?;
    let tokens = role_tokens(raw.tokens.unwrap_or_default(), token.as_ref(), base)?;
    let token_for_reads = raw.token_for_reads.unwrap_or(false);
    if token_for_reads && token.is_none() && tokens.is_empty() {
        return Err(invalid(
            "admin.token_for_reads",
            "needs admin.token_file or [[admin.tokens]] (no request could be authenticated)",
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
        tokens,
        token_for_reads,
        allowed_hosts: allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        allowed_origins,
    })
}

/// Validates `[[admin.tokens]]`: every entry has a unique name (letters,
/// digits, `.`, `_`, `-`; at most 64), a role and a token file of its
/// own (a token shared by two entries, or with `admin.token_file`, would
/// make the role and the name the audit trail records ambiguous).
fn role_tokens(
    raw: Vec<RawRoleToken>,
    legacy: Option<&AdminToken>,
    base: &std::path::Path,
) -> Result<Vec<RoleToken>, ConfigError> {
    let mut out: Vec<RoleToken> = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("admin.tokens[{i}].{k}");
        let name = t
            .name
            .ok_or_else(|| invalid(key("name"), "missing (the name the audit trail records)"))?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                key("name"),
                format!("{name:?} must be 1-64 letters, digits, '.', '_' or '-'"),
            ));
        }
        if name == LEGACY_TOKEN_NAME || out.iter().any(|o| o.name == name) {
            return Err(invalid(
                key("name"),
                format!(
                    "{name:?} is taken (by another entry, or {LEGACY_TOKEN_NAME:?}: admin.token_file's)"
                ),
            ));
        }
        let role_text = t.role.ok_or_else(|| {
            invalid(
                key("role"),
                "missing (\"agent\", \"supervisor\" or \"ops\")",
            )
        })?;
        let role = Role::parse(&role_text).ok_or_else(|| {
            invalid(
                key("role"),
                format!("must be \"agent\", \"supervisor\" or \"ops\", not {role_text:?}"),
            )
        })?;
        let file = t
            .token_file
            .ok_or_else(|| invalid(key("token_file"), "missing (the file holding the token)"))?;
        let token = admin_token(&key("token_file"), &super::locate(&file, base))?;
        if legacy == Some(&token) || out.iter().any(|o| o.token == token) {
            return Err(invalid(
                key("token_file"),
                "holds the same token as another entry or admin.token_file; give each its own",
            ));
        }
        out.push(RoleToken { name, role, token });
    }
    Ok(out)
}

/// Reads a token file (config key `key`): owner-only, one line, at least
/// [`MIN_TOKEN_LEN`] bytes once surrounding whitespace is trimmed.
fn admin_token(key: &str, path: &std::path::Path) -> Result<AdminToken, ConfigError> {
    super::secret::owner_only(key, path)?;
    let text = std::fs::read(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    let token = text.trim_ascii();
    if token.len() < MIN_TOKEN_LEN || token.iter().any(|b| !b.is_ascii_graphic()) {
        return Err(invalid(
            key,
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
