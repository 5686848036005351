//! What counting costs on the call path: callgate's counters (an
//! `AtomicU64` in an array indexed by enums, `api::metrics`) against
//! `prometheus-client`'s own `Family<Labels, Counter>`, which hashes the
//! label set and takes a read lock per increment — the measurement behind
//! docs/decisions/0007-metrics-exposition.md. Also the cost of encoding
//! the request counters' families for one scrape.
//!
//! `cargo bench --bench metrics`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use callgate::api::metrics::{Direction, Metrics, Phase};
use callgate::sip::method::Method;
use callgate::sip::side::Side;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
enum LabelSide {
    Trunk,
    Pbx,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
enum LabelMethod {
    Invite,
    Ack,
    Bye,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    side: LabelSide,
    method: LabelMethod,
}

fn counting(c: &mut Criterion) {
    let metrics = Metrics::default();
    let sides = [Side::Trunk, Side::Pbx];
    let methods = [Method::Invite, Method::Ack, Method::Bye];
    let mut i = 0usize;
    c.bench_function("atomics_request", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            metrics.request(sides[i & 1], Direction::In, methods[i % 3]);
        })
    });
    let family: Family<Labels, Counter> = Family::default();
    let sides = [LabelSide::Trunk, LabelSide::Pbx];
    let methods = [LabelMethod::Invite, LabelMethod::Ack, LabelMethod::Bye];
    c.bench_function("family_inc", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let labels = Labels {
                side: sides[i & 1],
                method: methods[i % 3],
            };
            family.get_or_create(black_box(&labels)).inc();
        })
    });
}

fn scraping(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::default());
    for m in [Method::Invite, Method::Ack, Method::Bye, Method::Options] {
        metrics.request(Side::Trunk, Direction::In, m);
        metrics.request(Side::Pbx, Direction::Out, m);
    }
    metrics.observe(Phase::Verify, std::time::Duration::from_millis(3));
    metrics.set_policy_versions("2026-12-07.1", "");
    c.bench_function("encode_core_families", |b| {
        b.iter(|| black_box(metrics.render()))
    });
}

criterion_group!(benches, counting, scraping);
criterion_main!(benches);
