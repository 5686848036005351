//! Files that hold secrets: the TLS private keys (`trunk.tls_key`,
//! `pbx.tls_key`), the STIR signing key (`stir.sign_key`), the admin
//! token (`admin.token_file`) and the webhooks' HMAC keys
//! (`events.webhook[N].secret_file`). Whoever reads one can impersonate
//! callgate (a TLS key), sign calls in the operator's name (the signing
//! key), reload it (the token) or forge its events (an HMAC key), so a
//! secret readable by group or others is
//! refused at load, with the key, the path and the fix in the error.
//!
//! The demo key shipped in `sip-config/tls/` is public (it is in the
//! repository): [`is_demo_key`] lets `run` warn loudly when a
//! configuration points at it.

use std::path::Path;

use super::{invalid, ConfigError};

/// The private key of the demo certificate, as committed.
const DEMO_KEY: &[u8] = include_bytes!("../../sip-config/tls/callgate-demo.key");

/// Refuses `path` (the value of config key `key`) unless only its owner
/// may read it: mode `& 0o077` must be 0 (`chmod 600`).
pub fn owner_only(key: &str, path: &Path) -> Result<(), ConfigError> {
    let meta =
        std::fs::metadata(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    let mode = file_mode(&meta);
    if mode & 0o077 != 0 {
        return Err(invalid(
            key,
            format!(
                "{} holds a secret but is readable by group or others (mode {:03o}); \
                 make it readable by its owner only: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode()
}

/// Without Unix modes there is nothing to check.
#[cfg(not(unix))]
fn file_mode(_: &std::fs::Metadata) -> u32 {
    0
}

/// Whether the file at `path` is the demo private key published in the
/// repository (whoever has the repository can impersonate a callgate
/// that uses it).
pub fn is_demo_key(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|k| k == DEMO_KEY)
}
