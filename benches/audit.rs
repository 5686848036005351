//! The audit writer's cost per answered call: a decision record with its
//! INVITE, the outcome at the answer, and the outcome with its duration at
//! the BYE — what the writer thread does for every call of the pipeline
//! benchmark (`test-calls/bench/pipeline.sh`), here without the network.
//!
//! `answered_call_x256`: 256 such calls queued, then a flush (the writer
//! commits in batches of up to 256 records); time per iteration / 256 is
//! the writer's time per call plus the queueing. Records are built before
//! the clock starts.
//!
//! `answered_call_x256_with_events`: the same with `[events]` on — the
//! writer also builds each decision's and call end's event and writes it
//! to the outbox in the same transaction (`src/audit/outbox.rs`).
//!
//! `cargo bench --bench audit`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use callgate::audit::{Audit, AuditConfig, AuditRecord, CallOutcome, FiredRule, Json};

const CALLS: usize = 256;

/// A record shaped like the pipeline's: verification and signals JSON of
/// their usual size, two rules fired.
fn record(i: u64) -> AuditRecord {
    AuditRecord {
        decision_id: format!("d{i:016x}"),
        instance: "cg-a".into(),
        time_ms: 1_765_000_000_000 + i as i64,
        call_id: format!("{i}-bench@198.51.100.7"),
        side: "trunk".into(),
        trunk: "198.51.100.7".into(),
        calling: format!("+1202555{:04}", i % 10_000),
        called: "+15550100".into(),
        verification: Json::of(&serde_json::json!({
            "status": "none", "attest": null, "origid": null, "cause": null,
            "checks": [{"check": "identity-present", "ok": false, "us": 1}],
        })),
        signals: Json::of(&serde_json::json!({
            "stir": "none", "attest": null, "iat_age_s": null, "diverted": false,
            "replay": false, "calling_valid": true, "calling_unassigned": false,
            "calling_own": false, "lists": [], "velocity": {"ani_10m": 1, "dnis_1m": 3},
            "from_pai_mismatch": false, "anonymous": false, "history": false,
            "ua_unexpected": false, "pai_domain_foreign": false, "hour": 14,
        })),
        rules: vec![
            FiredRule {
                code: "STIR_NONE".into(),
                weight: 30,
                text: Some("The caller ID is not signed: not proven.".into()),
            },
            FiredRule {
                code: "NEW_CALLER".into(),
                weight: 5,
                text: None,
            },
        ],
        score: 35,
        level: "medium".into(),
        action: "tag".into(),
        target: None,
        restrict: vec!["credential-reset".into(), "mfa-change".into()],
        policy_version: "bench-1".into(),
        shadow: None,
        invite: None,
        level_text: Some("Some doubt: verify the caller.".into()),
        restrict_text: vec![callgate::audit::RestrictWords {
            action: "credential-reset".into(),
            text: "No password reset without step-up.".into(),
        }],
        verify_text: Some("Caller ID signature verified.".into()),
        from_user: None,
        pai_user: None,
    }
}

fn invite(i: u64) -> bytes::Bytes {
    bytes::Bytes::from(format!(
        "INVITE sip:+15550100@203.0.113.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK{i}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+12025550100@198.51.100.7>;tag={i}\r\nTo: <sip:+15550100@203.0.113.1>\r\n\
         Call-ID: {i}-bench@198.51.100.7\r\nCSeq: 1 INVITE\r\nContact: <sip:+12025550100@198.51.100.7>\r\n\
         Content-Type: application/sdp\r\nContent-Length: 120\r\n\r\n{}",
        "v".repeat(120)
    ))
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let audit = Audit::open(&AuditConfig::new(dir.path().join("audit.db")))
        .unwrap_or_else(|e| panic!("{e}"));
    calls(c, "answered_call_x256", &audit);
    let path = dir.path().join("events.db");
    let events = callgate::events::Events::new(&callgate::events::EventsConfig::default(), &path)
        .unwrap_or_else(|e| panic!("{e}"));
    let audit = Audit::open_with_outbox(&AuditConfig::new(path), Some(events.outbox()))
        .unwrap_or_else(|e| panic!("{e}"));
    calls(c, "answered_call_x256_with_events", &audit);
}

/// `CALLS` answered calls through `audit`, then a flush, per iteration.
fn calls(c: &mut Criterion, name: &str, audit: &Audit) {
    let mut next = 0u64;
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Built before the clock starts: on the call path, not the
                // writer's.
                let calls: Vec<_> = (0..CALLS)
                    .map(|_| {
                        next += 1;
                        let id = format!("{next}-bench@198.51.100.7");
                        (record(next), invite(next), id)
                    })
                    .collect();
                let start = Instant::now();
                for (rec, inv, id) in calls {
                    audit.record_with_invite(rec, inv);
                    audit.call_ended(&id, CallOutcome::Answered, None);
                    audit.call_ended(&id, CallOutcome::Answered, Some(Duration::from_secs(42)));
                }
                assert!(audit.flush(Duration::from_secs(10)), "flush");
                total += start.elapsed();
            }
            total
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
