//! `callgate report`: the consistency report over one audit store or
//! several (one per instance, merged), as JSON or HTML.

use std::path::PathBuf;
use std::process::ExitCode;

use super::time::time_range;

/// Builds the report over the decisions of the stores `dbs` within
/// `since`..`until` and writes it to `html` and/or `json`, or prints the
/// JSON.
pub fn report(
    dbs: &[PathBuf],
    since: Option<&str>,
    until: Option<&str>,
    html: Option<PathBuf>,
    json: Option<PathBuf>,
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
    let mut stores = Vec::with_capacity(dbs.len());
    for db in dbs {
        match decisions(db, since, until) {
            Ok(rows) => stores.push((db.display().to_string(), rows)),
            Err(e) => {
                eprintln!("report: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let (rows, duplicates) = report::merge(stores);
    let mut r = report::build(&rows, since, until);
    r.duplicates_skipped = duplicates;
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
