//! `callgate report`: the consistency report over the audit store, as JSON
//! or HTML.

use std::path::Path;
use std::process::ExitCode;

use super::time::time_range;

/// Builds the report over the decisions of `db` within `since`..`until`
/// and writes it to `html` and/or `json`, or prints the JSON.
pub fn report(
    db: &Path,
    since: Option<&str>,
    until: Option<&str>,
    html: Option<std::path::PathBuf>,
    json: Option<std::path::PathBuf>,
) -> ExitCode {
    use callgate::audit::{decisions, report};
    let times = time_range(since, until);
    let (since, until) = match times {
        Ok(t) => t,
        Err(e) => {
            eprintln!("report: {e}");
            return ExitCode::from(2);
        }
    };
    let rows = match decisions(db, since, until) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("report: {e}");
            return ExitCode::from(2);
        }
    };
    let r = report::build(&rows, since, until);
    let text = serde_json::to_string_pretty(&r).unwrap_or_default();
    let mut ok = true;
    if let Some(p) = &html {
        if let Err(e) = std::fs::write(p, report::html(&r)) {
            eprintln!("report: {}: {e}", p.display());
            ok = false;
        }
    }
    if let Some(p) = &json {
        if let Err(e) = std::fs::write(p, &text) {
            eprintln!("report: {}: {e}", p.display());
            ok = false;
        }
    }
    if html.is_none() && json.is_none() {
        println!("{text}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
