//! `callgate ctl`: the operator's command (the role kamcmd and
//! rtpengine-ctl play), over the admin API's `/v1` routes. Tables for
//! people, `--json` (the API's own JSON) for scripts. Exit 0 on success,
//! 1 when callgate refused or failed (its reason printed), 2 when it could
//! not be asked (address, connection, token file).
//!
//! Where the API is: `--admin`, else `[admin] listen` of `--config`, else
//! env `CALLGATE_ADMIN`, else 127.0.0.1:9060. The token: `--token-file`,
//! else `[admin] token_file` of `--config` (relative to the file's
//! directory), else env `CALLGATE_ADMIN_TOKEN_FILE`; reads go without one
//! unless the server asks for it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use super::admin_client::{AdminApi, Answer};
use callgate::cli::{CtlOptions, CtlVerb, TargetAction};

const DEFAULT_ADMIN: &str = "127.0.0.1:9060";

/// Runs one `ctl` verb.
pub fn ctl(how: &CtlOptions, verb: &CtlVerb) -> ExitCode {
    let api = match connect(how) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("callgate ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let (answer, render): (_, fn(&Value) -> String) = match verb {
        CtlVerb::Calls { all: false } => (api.get("/v1/calls"), calls_table),
        CtlVerb::Calls { all: true } => (api.get("/v1/calls?instances=all"), calls_table_all),
        CtlVerb::Call { id } => (api.get(&format!("/v1/calls/{}", encode(id))), call_detail),
        CtlVerb::Targets => (api.get("/v1/targets"), targets_table),
        CtlVerb::Target {
            action,
            side,
            target,
        } => {
            let verb = match action {
                TargetAction::Disable => "disable",
                TargetAction::Enable => "enable",
            };
            let path = format!("/v1/targets/{}/{}/{verb}", encode(side), encode(target));
            (api.post(&path), target_line)
        }
        CtlVerb::Drain => (api.post("/v1/drain"), drain_line),
        CtlVerb::Undrain => (api.post("/v1/undrain"), drain_line),
        CtlVerb::Reload => (api.post("/v1/reload"), reload_report),
        CtlVerb::Policy => (api.get("/v1/policy"), policy_table),
    };
    match answer {
        Ok(a) => finish(&a, how.json, render),
        Err(e) => {
            eprintln!("callgate ctl: {e}");
            ExitCode::from(2)
        }
    }
}

/// Prints a success (table or JSON) and exits 0, or the server's reason
/// and exits 1.
fn finish(a: &Answer, json: bool, render: fn(&Value) -> String) -> ExitCode {
    let value: Option<Value> = serde_json::from_slice(&a.body).ok();
    if !(200..300).contains(&a.status) {
        let reason = value
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&a.body).trim().to_owned());
        eprintln!("callgate ctl: refused ({}): {reason}", a.status);
        return ExitCode::from(1);
    }
    let text = match value {
        Some(v) if json => serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
        Some(v) => render(&v),
        None => {
            eprintln!("callgate ctl: the answer is not JSON");
            return ExitCode::from(1);
        }
    };
    // A closed pipe (`ctl calls | head`) is not an error of the verb.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    ExitCode::SUCCESS
}

/// The admin API as the options, the environment and the configuration
/// say.
fn connect(how: &CtlOptions) -> Result<AdminApi, String> {
    let from_config = match &how.config {
        Some(path) => admin_of_config(path)?,
        None => (None, None),
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // What the command line names beats the ambient environment.
    let admin = how
        .admin
        .clone()
        .or(from_config.0)
        .or_else(|| env("CALLGATE_ADMIN"))
        .unwrap_or_else(|| DEFAULT_ADMIN.to_owned());
    let token_file = how
        .token_file
        .clone()
        .or(from_config.1)
        .or_else(|| env("CALLGATE_ADMIN_TOKEN_FILE").map(PathBuf::from));
    let token = match token_file {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| format!("token file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    AdminApi::new(&admin, token).map_err(|e| e.to_string())
}

/// `[admin] listen` (a wildcard becomes loopback) and `token_file` of a
/// configuration file, read without loading the rest (ctl may run where
/// the TLS keys are not readable).
fn admin_of_config(path: &Path) -> Result<(Option<String>, Option<PathBuf>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let admin = table.get("admin").and_then(toml::Value::as_table);
    let text_of = |key: &str| admin.and_then(|a| a.get(key)).and_then(toml::Value::as_str);
    let listen = match text_of("listen") {
        None | Some("") => None,
        Some(l) => Some(
            l.parse::<std::net::SocketAddr>()
                .map(|mut a| {
                    if a.ip().is_unspecified() {
                        a.set_ip(match a {
                            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                        });
                    }
                    a.to_string()
                })
                .map_err(|e| format!("{}: admin.listen {l:?}: {e}", path.display()))?,
        ),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let token = text_of("token_file").map(|t| dir.join(t));
    Ok((listen, token))
}

/// Percent-encodes a path segment (RFC 3986 §3.3: unreserved characters
/// pass).
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Text of a JSON value for a table cell (`-` for null).
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.is_empty() => "-".to_owned(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| cell(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        Some(v) => v.to_string(),
    }
}

/// Rows aligned in columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// How long ago `unix_ms` was, as `1h02m`, `3m04s` or `12s`.
fn ago(unix_ms: Option<&Value>) -> String {
    let Some(ms) = unix_ms.and_then(Value::as_i64) else {
        return "-".to_owned();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let s = (now - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Packets and loss of a call's media, both legs of every stream.
fn media_summary(call: &Value) -> String {
    let Some(streams) = call.pointer("/media/streams").and_then(Value::as_array) else {
        return "-".to_owned();
    };
    let legs = || {
        streams.iter().flat_map(|s| {
            s.get("legs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
    };
    let sum = |key: &str| {
        legs()
            .filter_map(|l| l.get(key).and_then(Value::as_u64))
            .sum::<u64>()
    };
    format!("{} pkts, {} lost", sum("packets"), sum("lost"))
}

fn calls_table(v: &Value) -> String {
    calls_table_of(v, false)
}

/// `ctl calls --all`: with the instance each call goes through.
fn calls_table_all(v: &Value) -> String {
    calls_table_of(v, true)
}

fn calls_table_of(v: &Value, by_instance: bool) -> String {
    let calls = v
        .get("calls")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = calls
        .iter()
        .map(|c| {
            let d = |k: &str| cell(c.get("decision").and_then(|d| d.get(k)));
            let mut row = vec![
                cell(c.get("call_id")),
                d("id"),
                cell(c.get("direction")),
                cell(c.get("caller")),
                cell(c.get("callee")),
                d("level"),
                d("score"),
                d("action"),
                d("route"),
                cell(c.get("state")),
                ago(c.get("started_unix_ms")),
                media_summary(c),
            ];
            if by_instance {
                row.insert(0, cell(c.get("instance")));
            }
            row
        })
        .collect();
    let mut header = vec![
        "CALL-ID", "DECISION", "DIR", "CALLER", "CALLEE", "LEVEL", "SCORE", "ACTION", "ROUTE",
        "STATE", "AGE", "MEDIA",
    ];
    if by_instance {
        header.insert(0, "INSTANCE");
    }
    let mut out = table(&header, &rows);
    out.push_str(&format!("{} call(s)\n", calls.len()));
    out
}

/// The policy's words for codes (`[{code, text}]`), a line each under
/// the codes' line.
fn worded(field: &mut impl FnMut(&str, String), v: Option<&Value>) {
    for w in v.and_then(Value::as_array).into_iter().flatten() {
        field(
            "",
            format!("{}: {}", cell(w.get("code")), cell(w.get("text"))),
        );
    }
}

fn call_detail(c: &Value) -> String {
    let d = |k: &str| cell(c.get("decision").and_then(|d| d.get(k)));
    let mut out = String::new();
    let mut field = |name: &str, value: String| out.push_str(&format!("{name:<14} {value}\n"));
    field("call-id", cell(c.get("call_id")));
    field("direction", cell(c.get("direction")));
    field("state", cell(c.get("state")));
    field("caller", cell(c.get("caller")));
    field("callee", cell(c.get("callee")));
    field("started", format!("{} ago", ago(c.get("started_unix_ms"))));
    field("decision", d("id"));
    field("verstat", d("verstat"));
    if let Some(t) = c.pointer("/decision/verify_text").and_then(Value::as_str) {
        field("", t.to_owned());
    }
    field("level / score", format!("{} / {}", d("level"), d("score")));
    if let Some(t) = c.pointer("/decision/level_text").and_then(Value::as_str) {
        field("", t.to_owned());
    }
    field("reasons", d("reasons"));
    worded(&mut field, c.pointer("/decision/reasons_text"));
    field("restrict", d("restrict"));
    worded(&mut field, c.pointer("/decision/restrict_text"));
    field("action", d("action"));
    field("route", format!("{} {}", d("route"), d("target")));
    field("policy", d("policy_version"));
    let streams = c.pointer("/media/streams").and_then(Value::as_array);
    match streams {
        None => field("media", "not anchored".to_owned()),
        Some(streams) => {
            for s in streams {
                let leg = |i: usize, k: &str| cell(s.pointer(&format!("/legs/{i}/{k}")));
                field(
                    &format!("media {}", cell(s.get("index"))),
                    format!(
                        "{} {} ports {} | a: {} pkts {} lost jitter {} from {} | b: {} pkts {} lost jitter {} from {}",
                        cell(s.get("media_type")),
                        cell(s.get("proto")),
                        cell(s.get("ports")),
                        leg(0, "packets"),
                        leg(0, "lost"),
                        leg(0, "jitter"),
                        leg(0, "remote"),
                        leg(1, "packets"),
                        leg(1, "lost"),
                        leg(1, "jitter"),
                        leg(1, "remote"),
                    ),
                );
            }
        }
    }
    out
}

fn target_row(t: &Value) -> Vec<String> {
    let probe = match t.get("last_probe") {
        Some(p) if !p.is_null() => format!(
            "{} ago {}",
            ago(p.get("unix_ms")),
            if p.get("answered").and_then(Value::as_bool) == Some(true) {
                "answered"
            } else {
                "failed"
            }
        ),
        _ => "-".to_owned(),
    };
    let rotation = match (
        t.get("in_rotation").and_then(Value::as_bool),
        t.get("disabled").and_then(Value::as_bool),
    ) {
        (_, Some(true)) => "out (operator)",
        (Some(true), _) => "in",
        _ => "out (health)",
    };
    vec![
        cell(t.get("side")),
        cell(t.get("uri")),
        cell(t.get("address")),
        cell(t.get("health")),
        cell(t.get("consecutive_failures")),
        probe,
        rotation.to_owned(),
    ]
}

const TARGET_HEADER: [&str; 7] = [
    "SIDE",
    "TARGET",
    "ADDRESS",
    "HEALTH",
    "FAILS",
    "LAST PROBE",
    "ROTATION",
];

fn targets_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = ["trunk", "pbx"]
        .iter()
        .flat_map(|s| {
            v.get(*s)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .map(|t| target_row(&t))
        .collect();
    table(&TARGET_HEADER, &rows)
}

fn target_line(t: &Value) -> String {
    table(&TARGET_HEADER, &[target_row(t)])
}

fn drain_line(v: &Value) -> String {
    let draining = v.get("draining").and_then(Value::as_bool) == Some(true);
    format!(
        "{}; {} call(s) in progress{}\n",
        if draining {
            "draining: new INVITEs get 503 + Retry-After"
        } else {
            "serving: new INVITEs are taken"
        },
        cell(v.get("calls")),
        if v.get("shutting_down").and_then(Value::as_bool) == Some(true) {
            " (shutting down)"
        } else {
            ""
        }
    )
}

fn reload_report(v: &Value) -> String {
    let list = |k: &str| cell(v.get(k));
    let version = |p: &str| {
        format!(
            "{} -> {}",
            cell(v.pointer(&format!("/{p}/before"))),
            cell(v.pointer(&format!("/{p}/after")))
        )
    };
    format!(
        "reloaded\nchanged         {}\nrestart needed  {}\npolicy          {}\nshadow          {}\n",
        list("changed"),
        list("restart_needed"),
        version("policy"),
        version("shadow")
    )
}

fn policy_table(v: &Value) -> String {
    let row = |role: &str| {
        let p = v.get(role).filter(|p| !p.is_null());
        vec![
            role.to_owned(),
            p.map_or("-".to_owned(), |p| cell(p.get("version"))),
            p.map_or("-".to_owned(), |p| cell(p.get("rules"))),
            p.map_or("-".to_owned(), |p| {
                format!("{} ago", ago(p.get("loaded_unix_ms")))
            }),
            p.map_or("-".to_owned(), |p| cell(p.get("review_uri"))),
        ]
    };
    let mut out = table(
        &["POLICY", "VERSION", "RULES", "LOADED", "REVIEW QUEUE"],
        &[row("active"), row("shadow")],
    );
    out.push_str(&format!(
        "decisions {}, shadow disagreements {}\n",
        cell(v.get("decisions")),
        cell(v.get("shadow_disagreements"))
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calls_of_several_instances_are_listed_with_theirs() {
        let call = |id: &str, instance: &str| {
            serde_json::json!({"call_id": id, "instance": instance, "direction": "inbound",
                "state": "proceeding", "caller": "+1555", "callee": "100",
                "started_unix_ms": 0, "decision": null, "media": null})
        };
        let both = serde_json::json!({"calls": [call("c1", "cg-a"), call("c2", "cg-b")]});
        let own = calls_table(&both);
        assert!(!own.contains("INSTANCE"), "{own}");
        let two = calls_table_all(&both);
        let lines: Vec<&str> = two.lines().collect();
        assert!(lines[0].starts_with("INSTANCE"), "{two}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("cg-b") && l.contains("c2")),
            "{two}"
        );
    }

    #[test]
    fn segments_are_percent_encoded_and_wildcards_become_loopback() {
        assert_eq!(
            encode("sip:127.0.0.1:5080;transport=udp"),
            "sip%3A127.0.0.1%3A5080%3Btransport%3Dudp"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("callgate.toml");
        std::fs::write(
            &cfg,
            "[admin]\nlisten = \"0.0.0.0:9061\"\ntoken_file = \"admin.token\"\n",
        )
        .expect("write");
        let (listen, token) = admin_of_config(&cfg).expect("read");
        assert_eq!(listen.as_deref(), Some("127.0.0.1:9061"));
        assert_eq!(token, Some(dir.path().join("admin.token")));
    }
}
