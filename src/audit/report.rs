//! The consistency report (`callgate report`): how decisions were spread —
//! by rule, level, action, trunk and hour — how often calls went to review,
//! which callers were treated differently on different calls, and where the
//! shadow policy disagreed. JSON for machines, one self-contained HTML page
//! (inline SVG charts, no scripts) for people.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::record::StoredDecision;

/// One call of a caller, as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct CallLine {
    pub call_id: String,
    pub time_ms: i64,
    pub level: String,
    pub action: String,
    pub score: u32,
    pub reasons: Vec<String>,
}

/// A caller whose calls got different levels or actions.
#[derive(Debug, Clone, Serialize)]
pub struct Inconsistent {
    pub calling: String,
    pub calls: Vec<CallLine>,
}

/// A call where the shadow policy would have decided otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    pub call_id: String,
    pub calling: String,
    pub active: String,
    pub shadow: String,
}

/// The report's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub decisions: usize,
    /// Rule code → how many decisions it fired in.
    pub by_rule: BTreeMap<String, usize>,
    pub by_level: BTreeMap<String, usize>,
    pub by_action: BTreeMap<String, usize>,
    pub by_trunk: BTreeMap<String, usize>,
    /// Decisions per hour of the day (UTC), 0–23.
    pub by_hour: Vec<usize>,
    /// Share of decisions sent to the review queue.
    pub review_rate: f64,
    pub outcomes: BTreeMap<String, usize>,
    pub inconsistent_callers: Vec<Inconsistent>,
    pub shadow_evaluated: usize,
    pub shadow_disagreements: usize,
    /// Up to 50 examples.
    pub disagreement_examples: Vec<Disagreement>,
}

/// Builds the report over `rows` (oldest first).
pub fn build(rows: &[StoredDecision], since_ms: Option<i64>, until_ms: Option<i64>) -> Report {
    let mut r = Report {
        since_ms,
        until_ms,
        decisions: rows.len(),
        by_rule: BTreeMap::new(),
        by_level: BTreeMap::new(),
        by_action: BTreeMap::new(),
        by_trunk: BTreeMap::new(),
        by_hour: vec![0; 24],
        review_rate: 0.0,
        outcomes: BTreeMap::new(),
        inconsistent_callers: vec![],
        shadow_evaluated: 0,
        shadow_disagreements: 0,
        disagreement_examples: vec![],
    };
    let mut callers: BTreeMap<&str, Vec<CallLine>> = BTreeMap::new();
    for d in rows {
        let rec = &d.record;
        for rule in &rec.rules {
            *r.by_rule.entry(rule.code.clone()).or_default() += 1;
        }
        let level = if rec.level.is_empty() {
            "none"
        } else {
            rec.level.as_str()
        };
        *r.by_level.entry(level.to_owned()).or_default() += 1;
        *r.by_action.entry(rec.action.clone()).or_default() += 1;
        *r.by_trunk.entry(rec.trunk.clone()).or_default() += 1;
        let hour = rec.time_ms.rem_euclid(86_400_000) / 3_600_000;
        if let Some(h) = r.by_hour.get_mut(hour as usize) {
            *h += 1;
        }
        *r.outcomes
            .entry(d.outcome.clone().unwrap_or_else(|| "open".into()))
            .or_default() += 1;
        if !rec.calling.is_empty() {
            callers
                .entry(rec.calling.as_str())
                .or_default()
                .push(CallLine {
                    call_id: rec.call_id.clone(),
                    time_ms: rec.time_ms,
                    level: level.to_owned(),
                    action: rec.action.clone(),
                    score: rec.score,
                    reasons: rec.rules.iter().map(|x| x.code.clone()).collect(),
                });
        }
        if let Some(shadow) = rec.shadow.as_ref().map(|s| s.value()) {
            r.shadow_evaluated += 1;
            let s_level = shadow["level"].as_str().unwrap_or_default();
            let s_action = shadow["action"]
                .as_str()
                .or_else(|| {
                    shadow["action"]
                        .as_object()
                        .and_then(|o| o.keys().next().map(String::as_str))
                })
                .unwrap_or_default();
            if s_level != rec.level || s_action.to_ascii_lowercase() != rec.action {
                r.shadow_disagreements += 1;
                if r.disagreement_examples.len() < 50 {
                    r.disagreement_examples.push(Disagreement {
                        call_id: rec.call_id.clone(),
                        calling: rec.calling.clone(),
                        active: format!("{}/{}", rec.level, rec.action),
                        shadow: format!("{s_level}/{}", s_action.to_ascii_lowercase()),
                    });
                }
            }
        }
    }
    let reviewed = r.by_action.get("review").copied().unwrap_or(0);
    r.review_rate = if rows.is_empty() {
        0.0
    } else {
        reviewed as f64 / rows.len() as f64
    };
    r.inconsistent_callers = callers
        .into_iter()
        .filter(|(_, calls)| {
            calls
                .iter()
                .any(|c| c.level != calls[0].level || c.action != calls[0].action)
        })
        .map(|(calling, calls)| Inconsistent {
            calling: calling.to_owned(),
            calls,
        })
        .collect();
    r
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart as inline SVG.
fn bars(title: &str, items: &[(String, usize)]) -> String {
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let row = 22;
    let height = row * items.len().max(1) + 30;
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg class=\"chart\" role=\"img\" aria-label=\"{}\" width=\"640\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">",
        escape(title),
        escape(title)
    );
    for (i, (label, n)) in items.iter().enumerate() {
        let y = 10 + i * row;
        let w = (*n as f64 / max as f64 * 400.0).round() as usize;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"170\" y=\"{y}\" width=\"{w}\" height=\"16\" fill=\"#3b6ea5\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{n}</text>",
            y + 13,
            escape(label),
            175 + w,
            y + 13
        );
    }
    svg.push_str("</svg></figure>\n");
    svg
}

/// The report as one self-contained HTML page.
pub fn html(r: &Report) -> String {
    let mut h = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>callgate consistency report</title>\
         <style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}figure{margin:1em 0}figcaption{font-weight:bold}</style>\
         </head><body><h1>callgate consistency report</h1>\n",
    );
    let _ = writeln!(
        h,
        "<p>{} decisions; review-queue rate <strong>{:.1}%</strong>; shadow policy disagreed on {} of {} calls.</p>",
        r.decisions,
        r.review_rate * 100.0,
        r.shadow_disagreements,
        r.shadow_evaluated
    );
    let sorted = |m: &BTreeMap<String, usize>| {
        let mut v: Vec<(String, usize)> = m.iter().map(|(k, n)| (k.clone(), *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    h.push_str(&bars("Decisions by rule", &sorted(&r.by_rule)));
    let levels: Vec<(String, usize)> = ["low", "medium", "high", "critical", "none"]
        .iter()
        .filter_map(|l| r.by_level.get(*l).map(|n| ((*l).to_owned(), *n)))
        .collect();
    h.push_str(&bars("Decisions by level", &levels));
    h.push_str(&bars("Decisions by action", &sorted(&r.by_action)));
    h.push_str(&bars("Decisions by trunk", &sorted(&r.by_trunk)));
    let hours: Vec<(String, usize)> = r
        .by_hour
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("{i:02}:00 UTC"), *n))
        .collect();
    h.push_str(&bars("Decisions by hour", &hours));
    h.push_str(&bars("Call outcomes", &sorted(&r.outcomes)));
    h.push_str("<h2>Callers treated differently on different calls</h2>\n");
    if r.inconsistent_callers.is_empty() {
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<table><tr><th>calling</th><th>call</th><th>level</th><th>action</th><th>score</th><th>reasons</th></tr>\n");
        for c in &r.inconsistent_callers {
            for call in &c.calls {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&c.calling),
                    escape(&call.call_id),
                    escape(&call.level),
                    escape(&call.action),
                    call.score,
                    escape(&call.reasons.join(","))
                );
            }
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Shadow policy disagreements</h2>\n");
    if r.disagreement_examples.is_empty() {
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<table><tr><th>call</th><th>calling</th><th>active</th><th>shadow</th></tr>\n");
        for d in &r.disagreement_examples {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&d.call_id),
                escape(&d.calling),
                escape(&d.active),
                escape(&d.shadow)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}
