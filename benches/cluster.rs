//! Criterion benchmarks of the shared console's tick (`src/cluster/`):
//! the JSON work of one instance's call list, which the sharing thread
//! does every 250 ms when the list changed (writing its own) and again
//! for each other instance whose list changed (reading theirs).
//! - `cluster/write_500`: 500 calls in progress with decisions worded as
//!   the shipped policy words them (one in ten routed to review), made
//!   into the shared list (`SharedCall::of`: the words its tables do not
//!   show left out) and serialized;
//! - `cluster/read_500`: the same list parsed back.
//!
//! `cargo bench --bench cluster`

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use callgate::api::operations::{CallView, DecisionView, Worded};
use callgate::cluster::wire::SharedCall;

fn worded(code: &str, text: &str) -> Worded {
    Worded {
        code: code.to_owned(),
        text: text.to_owned(),
    }
}

/// A high-risk call with two reasons and two restrictions, in the shipped
/// policy's words; every tenth routed to review.
fn call(i: usize) -> CallView {
    let route = if i % 10 == 0 { "review" } else { "agents" };
    CallView {
        call_id: format!("{i:08x}-4f2a9c1e@198.51.100.7"),
        instance: Some("cg-a".into()),
        direction: "inbound",
        state: "established",
        caller: format!("+1555{i:07}"),
        callee: "+15550100".into(),
        started_unix_ms: 1_796_673_471_281 + i as i64,
        answered_unix_ms: Some(1_796_673_471_900 + i as i64),
        decision: Some(DecisionView {
            id: Some(format!("cg-a-{i:016x}")),
            verstat: Some("No-TN-Validation".into()),
            verify_text: Some(
                "Caller ID not verified: the call carried no signature (no Identity header). \
                 Treat the number as a claim."
                    .into(),
            ),
            level: Some("high".into()),
            score: Some(75),
            reasons: vec!["STIR_NONE".into(), "OWN_NUMBER_SPOOF".into()],
            level_text: Some(
                "High risk: verify the caller through a known channel before any account change."
                    .into(),
            ),
            reasons_text: vec![
                worded("STIR_NONE", "The caller ID was not signed by the carrier."),
                worded(
                    "OWN_NUMBER_SPOOF",
                    "The call claims to come from one of our own numbers.",
                ),
            ],
            restrict: vec!["mfa-change".into(), "phone-change".into()],
            restrict_text: vec![
                worded("mfa-change", "No change to MFA devices without step-up."),
                worded(
                    "phone-change",
                    "No change of the phone number on file without step-up.",
                ),
            ],
            action: if route == "review" { "review" } else { "tag" }.into(),
            route: route.into(),
            target: Some("sip:review@pbx.example.net".into()),
            policy_version: Some("2026-12-07.1".into()),
        }),
        media: None,
    }
}

fn bench(c: &mut Criterion) {
    let views: Vec<CallView> = (0..500).map(call).collect();
    let calls: Vec<SharedCall> = views.iter().map(SharedCall::of).collect();
    let json = serde_json::to_string(&calls).unwrap_or_default();
    eprintln!(
        "cluster: 500 calls = {} bytes of JSON ({} per call)",
        json.len(),
        json.len() / 500
    );
    let mut g = c.benchmark_group("cluster");
    g.bench_function("write_500", |b| {
        b.iter(|| {
            let shared: Vec<SharedCall> = black_box(&views).iter().map(SharedCall::of).collect();
            serde_json::to_string(&shared).map(|s| s.len())
        })
    });
    g.bench_function("read_500", |b| {
        b.iter(|| serde_json::from_str::<Vec<SharedCall>>(black_box(&json)).map(|v| v.len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
