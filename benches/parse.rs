//! Criterion benchmark: parse + forward of a realistic INVITE (filled in with the parser).
use criterion::{criterion_group, criterion_main, Criterion};

fn parse(_c: &mut Criterion) {}

criterion_group!(benches, parse);
criterion_main!(benches);
