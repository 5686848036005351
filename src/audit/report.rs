//! The consistency report (`callgate report`): how decisions were spread —
//! by rule, level, action, trunk and hour — how often calls went to review,
//! which callers were treated differently on different calls, and where the
//! shadow policy disagreed. JSON for machines, one self-contained HTML page
//! (inline SVG charts, no scripts) for people.
//!
//! Several instances behind one trunk each keep their own audit store;
//! [`merge`] puts their decisions in one time line, and the report gives
//! per-instance figures beside the totals: an instance that reviews more
//! than its peers, or still runs an older policy, is what a consistency
//! report over a cluster must show.
//!
//! Where agents and supervisors gave verdicts (`verdicts.rs`), each rule
//! gets its **precision**: of the calls it fired on that were labelled
//! `suspected_fraud` or `confirmed_customer`, the share that were fraud.
//! A rule whose calls are mostly confirmed customers costs the contact
//! centre friction for little gain; its weight is the one to lower.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::record::StoredDecision;
use super::verdicts::Label;

/// One rule's calls against the verdicts given on them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RulePrecision {
    /// Decisions the rule fired in.
    pub fired: usize,
    /// Of those, labelled `suspected_fraud` (the latest verdict).
    pub confirmed_fraud: usize,
    /// Labelled `confirmed_customer`.
    pub confirmed_customer: usize,
    /// Labelled `escalate` (no conclusion: not in the precision).
    pub escalated: usize,
    /// confirmed_fraud / (confirmed_fraud + confirmed_customer); `null`
    /// while none of its calls is labelled either way.
    pub precision: Option<f64>,
}

/// One call of a caller, as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct CallLine {
    pub call_id: String,
    /// The instance that decided (see [`merge`]).
    pub instance: String,
    pub policy_version: String,
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

/// One instance's share of the decisions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstanceFigures {
    pub decisions: usize,
    pub by_level: BTreeMap<String, usize>,
    pub by_action: BTreeMap<String, usize>,
    /// Share of its decisions sent to the review queue.
    pub review_rate: f64,
    /// Policy version → decisions made under it.
    pub policy_versions: BTreeMap<String, usize>,
    /// The policy version of its latest decision in the range.
    pub latest_policy_version: String,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// The report's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub decisions: usize,
    /// Instance name → its figures (one entry for a single store).
    pub by_instance: BTreeMap<String, InstanceFigures>,
    /// Whether the instances' latest decisions were made under different
    /// policy versions (one of them missed a reload).
    pub instances_on_different_policies: bool,
    /// Decisions found in more than one of the merged stores (the same
    /// store given twice, or a copy), counted once.
    pub duplicates_skipped: usize,
    /// Rule code → how many decisions it fired in.
    pub by_rule: BTreeMap<String, usize>,
    /// Rule code → its calls against the verdicts given on them.
    pub rule_precision: BTreeMap<String, RulePrecision>,
    /// Decisions with a verdict, by the latest verdict.
    pub verdicts: BTreeMap<String, usize>,
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

/// The decisions of several audit stores as one time line, oldest first:
/// `stores` holds each store's label (its path) and its rows. A row's
/// `instance` is filled where the store left it empty (rows written before
/// instance names existed): from its decision id when that names one
/// (`crate::env::decision_instance`), else the store's label. A decision
/// present in several stores (same id, call and time) is kept once; the
/// second value counts the others.
pub fn merge(stores: Vec<(String, Vec<StoredDecision>)>) -> (Vec<StoredDecision>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut skipped = 0;
    let mut all = Vec::with_capacity(stores.iter().map(|(_, rows)| rows.len()).sum());
    for (label, rows) in stores {
        for mut d in rows {
            let rec = &mut d.record;
            if !seen.insert((rec.decision_id.clone(), rec.call_id.clone(), rec.time_ms)) {
                skipped += 1;
                continue;
            }
            if rec.instance.is_empty() {
                rec.instance = crate::env::decision_instance(&rec.decision_id)
                    .unwrap_or(&label)
                    .to_owned();
            }
            all.push(d);
        }
    }
    // Stable: rows of one store keep their order at equal times.
    all.sort_by_key(|d| d.record.time_ms);
    (all, skipped)
}

/// Builds the report over `rows` (oldest first; [`merge`] for several
/// stores).
pub fn build(rows: &[StoredDecision], since_ms: Option<i64>, until_ms: Option<i64>) -> Report {
    let mut r = Report {
        since_ms,
        until_ms,
        decisions: rows.len(),
        by_instance: BTreeMap::new(),
        instances_on_different_policies: false,
        duplicates_skipped: 0,
        by_rule: BTreeMap::new(),
        rule_precision: BTreeMap::new(),
        verdicts: BTreeMap::new(),
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
            let p = r.rule_precision.entry(rule.code.clone()).or_default();
            p.fired += 1;
            match d.verdict {
                Some(Label::SuspectedFraud) => p.confirmed_fraud += 1,
                Some(Label::ConfirmedCustomer) => p.confirmed_customer += 1,
                Some(Label::Escalate) => p.escalated += 1,
                None => {}
            }
        }
        if let Some(v) = d.verdict {
            *r.verdicts.entry(v.as_str().to_owned()).or_default() += 1;
        }
        let level = if rec.level.is_empty() {
            "none"
        } else {
            rec.level.as_str()
        };
        *r.by_level.entry(level.to_owned()).or_default() += 1;
        *r.by_action.entry(rec.action.clone()).or_default() += 1;
        let inst = r.by_instance.entry(rec.instance.clone()).or_default();
        if inst.decisions == 0 {
            inst.first_ms = rec.time_ms;
        }
        inst.decisions += 1;
        inst.last_ms = rec.time_ms;
        *inst.by_level.entry(level.to_owned()).or_default() += 1;
        *inst.by_action.entry(rec.action.clone()).or_default() += 1;
        *inst
            .policy_versions
            .entry(rec.policy_version.clone())
            .or_default() += 1;
        inst.latest_policy_version = rec.policy_version.clone();
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
                    instance: rec.instance.clone(),
                    policy_version: rec.policy_version.clone(),
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
    for p in r.rule_precision.values_mut() {
        let labelled = p.confirmed_fraud + p.confirmed_customer;
        p.precision = (labelled > 0).then(|| p.confirmed_fraud as f64 / labelled as f64);
    }
    r.review_rate = review_rate(&r.by_action, rows.len());
    for inst in r.by_instance.values_mut() {
        inst.review_rate = review_rate(&inst.by_action, inst.decisions);
    }
    let mut latest = r.by_instance.values().map(|i| &i.latest_policy_version);
    if let Some(first) = latest.next() {
        r.instances_on_different_policies = latest.any(|v| v != first);
    }
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

/// Share of `total` decisions whose action was review.
fn review_rate(by_action: &BTreeMap<String, usize>, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        by_action.get("review").copied().unwrap_or(0) as f64 / total as f64
    }
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
    if r.duplicates_skipped > 0 {
        let _ = writeln!(
            h,
            "<p>{} decisions found in more than one store were counted once.</p>",
            r.duplicates_skipped
        );
    }
    instances_table(&mut h, r);
    let sorted = |m: &BTreeMap<String, usize>| {
        let mut v: Vec<(String, usize)> = m.iter().map(|(k, n)| (k.clone(), *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    h.push_str(&bars("Decisions by rule", &sorted(&r.by_rule)));
    precision_table(&mut h, r);
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
        h.push_str("<table><tr><th>calling</th><th>call</th><th>instance</th><th>policy</th><th>level</th><th>action</th><th>score</th><th>reasons</th></tr>\n");
        for c in &r.inconsistent_callers {
            for call in &c.calls {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&c.calling),
                    escape(&call.call_id),
                    escape(&call.instance),
                    escape(&call.policy_version),
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

/// Each rule's calls against the verdicts given on them.
fn precision_table(h: &mut String, r: &Report) {
    h.push_str("<h2>Rules against verdicts</h2>\n");
    if r.verdicts.is_empty() {
        h.push_str("<p>No verdicts yet: agents and supervisors give them through the enforcement API.</p>\n");
        return;
    }
    h.push_str("<table><tr><th>rule</th><th>fired</th><th>confirmed fraud</th><th>confirmed customer</th><th>escalated</th><th>precision</th></tr>\n");
    for (code, p) in &r.rule_precision {
        let precision = p
            .precision
            .map_or_else(|| "–".to_owned(), |v| format!("{:.0}%", v * 100.0));
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{precision}</td></tr>",
            escape(code),
            p.fired,
            p.confirmed_fraud,
            p.confirmed_customer,
            p.escalated
        );
    }
    h.push_str("</table>\n");
}

/// The per-instance table: decisions, review rate, levels and the policy
/// each instance decided under, with a warning when the policies differ.
fn instances_table(h: &mut String, r: &Report) {
    h.push_str("<h2>By instance</h2>\n");
    if r.instances_on_different_policies {
        h.push_str("<p><strong>The instances decided under different policy versions</strong>: one of them may have missed a reload.</p>\n");
    }
    h.push_str("<table><tr><th>instance</th><th>decisions</th><th>review rate</th><th>low</th><th>medium</th><th>high</th><th>critical</th><th>latest policy</th><th>policies</th></tr>\n");
    for (name, i) in &r.by_instance {
        let level = |l: &str| i.by_level.get(l).copied().unwrap_or(0);
        let policies: Vec<String> = i
            .policy_versions
            .iter()
            .map(|(v, n)| format!("{v} ({n})"))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            i.decisions,
            i.review_rate * 100.0,
            level("low"),
            level("medium"),
            level("high"),
            level("critical"),
            escape(&i.latest_policy_version),
            escape(&policies.join(", "))
        );
    }
    h.push_str("</table>\n");
}
