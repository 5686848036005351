//! `callgate replay`: recorded calls (audit store or pcap) through a
//! candidate policy; prints where its decisions differ.

use std::path::Path;
use std::process::ExitCode;

use super::time::time_range;

/// Replays the audited decisions of `db` (within `since`..`until`) or the
/// initial INVITEs of `pcap` under `policy`; exit 0 when none differ.
/// With `labelled`, only the calls agents or supervisors gave a verdict
/// are listed and compared (all calls still count towards velocity).
#[allow(clippy::too_many_arguments)]
pub fn replay(
    policy: &Path,
    db: Option<std::path::PathBuf>,
    pcap: Option<std::path::PathBuf>,
    baseline: Option<std::path::PathBuf>,
    since: Option<&str>,
    until: Option<&str>,
    json: bool,
    labelled: bool,
) -> ExitCode {
    use callgate::risk::{policy::Policy, replay};
    let fail = |e: String| {
        eprintln!("replay: {e}");
        ExitCode::from(2)
    };
    let candidate = match Policy::load(policy) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let calls = if let Some(db) = db {
        let times = time_range(since, until);
        let (since, until) = match times {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        match callgate::audit::decisions(&db, since, until) {
            Ok(rows) => replay::audited(&rows, &candidate),
            Err(e) => return fail(e.to_string()),
        }
    } else if let Some(pcap) = pcap {
        let base = match baseline.as_deref().map(Policy::load).transpose() {
            Ok(b) => b,
            Err(e) => return fail(e.to_string()),
        };
        let capture = match std::fs::read(&pcap)
            .map_err(|e| format!("{}: {e}", pcap.display()))
            .and_then(|b| {
                callgate::capture::read(&b).map_err(|e| format!("{}: {e}", pcap.display()))
            }) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        report_capture(&pcap, &capture.stats);
        let packets = callgate::capture::sip::messages(
            &capture.payloads,
            &callgate::sip::message::Limits::default(),
        );
        replay::captured(&packets, &candidate, base.as_ref())
    } else {
        return fail("give --db or --pcap".into());
    };
    let calls: Vec<_> = if labelled {
        calls.into_iter().filter(|c| c.label.is_some()).collect()
    } else {
        calls
    };
    let summary = replay::summary(&calls);
    if json {
        let all = serde_json::json!({ "summary": summary, "calls": calls });
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        for c in calls.iter().filter(|c| c.differs() || c.before.is_none()) {
            let before = c
                .before
                .as_ref()
                .map(|b| format!("{}/{} [{}]", b.level, b.action, b.reasons.join(",")))
                .unwrap_or_else(|| "-".into());
            println!(
                "{}  {}  {}  ->  {}/{} [{}]",
                c.call_id,
                c.calling,
                before,
                c.candidate.level.as_str(),
                c.candidate.action.as_str(),
                c.candidate.reasons().collect::<Vec<_>>().join(",")
            );
        }
        println!(
            "{} calls replayed under {}, {} compared, {} would be decided differently",
            summary.calls, candidate.version, summary.compared, summary.differ
        );
        for (change, n) in &summary.changes {
            println!("  {n:6}  {change}");
        }
        let l = &summary.labelled;
        if l.fraud + l.customers + l.escalated > 0 {
            let share = |n: usize, of: usize| {
                if of == 0 {
                    0.0
                } else {
                    n as f64 * 100.0 / of as f64
                }
            };
            println!(
                "labelled calls: would catch {} of {} confirmed fraud ({:.1}%), would touch {} of {} confirmed customers ({:.1}%); {} escalated",
                l.caught,
                l.fraud,
                share(l.caught, l.fraud),
                l.touched,
                l.customers,
                share(l.touched, l.customers),
                l.escalated
            );
        }
    }
    if summary.differ == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Tells the operator (on stderr) what of the capture was not read: the
/// damage, if any, and the fragments and segments dropped.
fn report_capture(pcap: &Path, stats: &callgate::capture::Stats) {
    if let Some(damage) = &stats.damage {
        eprintln!(
            "replay: {}: {damage}; replaying the {} records before it",
            pcap.display(),
            stats.packets
        );
    }
    let dropped = stats.fragments_expired
        + stats.fragments_evicted
        + stats.fragments_unfinished
        + stats.fragments_invalid
        + stats.tcp_dropped;
    if dropped > 0 || stats.unsupported_link > 0 {
        eprintln!(
            "replay: {}: {} records, {} reassembled from {} IP fragments; dropped: {} fragment sets expired, {} evicted, {} unfinished at the end, {} fragments invalid, {} TCP segments, {} records of an unsupported link type",
            pcap.display(),
            stats.packets,
            stats.reassembled,
            stats.fragments,
            stats.fragments_expired,
            stats.fragments_evicted,
            stats.fragments_unfinished,
            stats.fragments_invalid,
            stats.tcp_dropped,
            stats.unsupported_link
        );
    }
}
