//! Admin tokens with roles (`[[admin.tokens]]`): an agent desk and a
//! supervisor beside the ops token every test configuration has, and one
//! admin request with a token (tests/enforce.rs, tests/cluster.rs).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Callgate;

pub const AGENT: &str = "agent-token-0123456789abcdef";
pub const SUPERVISOR: &str = "supervisor-token-0123456789abcdef";

/// A token file (mode 600) in `dir`.
pub fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, token).expect("write token");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// `[[admin.tokens]]` for an agent desk (`desk-1`) and a supervisor
/// (`floor`), written into the `[admin]` section of `cfg`.
pub fn with_role_tokens(cfg: &str, dir: &Path) -> String {
    let agent = token_file(dir, "agent.token", AGENT);
    let sup = token_file(dir, "supervisor.token", SUPERVISOR);
    let tokens = format!(
        "\n[[admin.tokens]]\nname = \"desk-1\"\nrole = \"agent\"\ntoken_file = \"{}\"\n\
         [[admin.tokens]]\nname = \"floor\"\nrole = \"supervisor\"\ntoken_file = \"{}\"\n",
        agent.display(),
        sup.display()
    );
    // After the [admin] keys, before the next table.
    cfg.replacen("\n[log]\n", &format!("{tokens}\n[log]\n"), 1)
}

/// One admin request with `token` (if any) and a JSON `body` (if any);
/// (status, body as JSON or as a string).
pub fn request(
    cg: &Callgate,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("Authorization", b.as_str()))
        .collect();
    let (status, text) = super::http_body(
        ("127.0.0.1", cg.ports.admin),
        method,
        path,
        &headers,
        body.unwrap_or(""),
    );
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}
