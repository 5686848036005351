//! Criterion benchmarks of the assess phase with a 50-rule policy:
//! - `decide_50_rules`: the policy's decision on a call's signals;
//! - `signals_and_decide_50_rules`: the signals from a parsed INVITE and a
//!   verification (lists, number checks, header anomalies, time), then the
//!   decision — the assess phase's CPU work apart from velocity counting;
//! - `velocity_new_key_full_table`: one velocity count for a number never
//!   seen, on a local table already holding its 200,000 keys (the flood of
//!   fresh calling numbers: each count forgets the least recent key).
//!
//! Goal (issue 4): under 10 µs per call.
//!
//! `cargo bench --bench risk`

use std::path::Path;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

use callgate::risk::assess::{decide, signals};
use callgate::risk::policy::Policy;
use callgate::sip::message::{Limits, SipMessage};
use callgate::stir::verify::{Status, Verification};

/// 50 rules over every kind of condition, 5 lists of 1,000 numbers each.
fn policy() -> Policy {
    let mut text = String::from(
        "version = \"bench-50\"\n[review]\nuri = \"sip:review@pbx\"\n[level.high]\naction = \"review\"\n\
         [numbers]\nown = [\"1555010\"]\nunassigned = [\"1555555\", \"1900\"]\n\
         trunk_domains = [\"carrier.example.net\"]\nuser_agents = [\"Carrier SBC\"]\n\
         [velocity.ani_10m]\nkey = \"calling\"\nwindow_secs = 600\n\
         [velocity.dnis_1m]\nkey = \"called\"\nwindow_secs = 60\n",
    );
    for l in ["allow", "block", "dno", "fraud", "customers"] {
        let numbers: Vec<String> = (0..1000).map(|i| format!("\"+1202555{i:04}\"")).collect();
        text.push_str(&format!("[lists.{l}]\nnumbers = [{}]\n", numbers.join(",")));
    }
    let conditions = [
        "{ stir = \"failed\" }",
        "{ stir = \"none\", anonymous = false }",
        "{ stir = \"passed\", attest = [\"B\", \"C\"] }",
        "{ list = \"dno\", not = { stir = \"passed\", attest = \"A\" } }",
        "{ list = \"fraud\" }",
        "{ any = [{ list = \"block\" }, { list = \"fraud\" }], stir = [\"failed\", \"none\"] }",
        "{ velocity = \"ani_10m\", at_least = 5 }",
        "{ velocity = \"dnis_1m\", at_least = 100, hours = [22, 6] }",
        "{ from_pai_mismatch = true, diversion_header = false }",
        "{ own_number = true, not = { attest = \"A\" } }",
    ];
    for i in 0..50 {
        text.push_str(&format!(
            "[[rule]]\ncode = \"RULE_{i}\"\nweight = {}\nwhen = {}\n",
            (i % 7) as i32 * 3 - 5,
            conditions[i % conditions.len()]
        ));
    }
    Policy::parse(&text, Path::new(".")).unwrap_or_else(|e| panic!("{e:?}"))
}

const INVITE: &str = "INVITE sip:+15550100@pbx.example.com;user=phone SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1\r\nMax-Forwards: 70\r\nFrom: \"Caller\" <sip:+15550199@carrier.example.net;user=phone>;tag=a\r\nTo: <sip:+15550100@pbx.example.com;user=phone>\r\nCall-ID: c1@carrier\r\nCSeq: 1 INVITE\r\nP-Asserted-Identity: <sip:+15550199@carrier.example.net;user=phone>\r\nUser-Agent: Carrier SBC 4.2\r\nContent-Length: 0\r\n\r\n";

fn bench(c: &mut Criterion) {
    let p = policy();
    assert_eq!(p.rules.len(), 50);
    let msg = SipMessage::parse(Bytes::from_static(INVITE.as_bytes()), &Limits::default())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut v = Verification::absent();
    v.status = Status::Passed;
    v.attest = Some("B".into());
    v.origid = Some("o".into());
    let now = 1_795_512_600;
    let mut s = signals(&msg, Some(&v), &p, now);
    s.velocity = vec![("ani_10m".into(), Some(3)), ("dnis_1m".into(), Some(40))];
    let mut g = c.benchmark_group("risk");
    g.bench_function("decide_50_rules", |b| {
        b.iter(|| decide(&p, None, black_box(&s), "d1".to_owned()))
    });
    g.bench_function("signals_and_decide_50_rules", |b| {
        b.iter(|| {
            let mut s = signals(black_box(&msg), Some(&v), &p, now);
            s.velocity = vec![("ani_10m".into(), Some(3)), ("dnis_1m".into(), Some(40))];
            decide(&p, None, &s, "d1".to_owned())
        })
    });
    let velocity = callgate::state::window::LocalVelocity::default();
    let hour = 3_600_000;
    let full = callgate::state::window::MAX_KEYS as u64;
    for i in 0..full {
        velocity.hit(&format!("ani_10m:+1555{i:07}"), hour, i);
    }
    let mut next = full;
    g.bench_function("velocity_new_key_full_table", |b| {
        b.iter(|| {
            next += 1;
            velocity.hit(black_box(&format!("ani_10m:+1555{next:07}")), hour, next)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
