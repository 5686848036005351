//! The parser never panics: every torture message, every truncation of it,
//! and seeded random mutations go through every parser path
//! (`callgate::sip::fuzzing::exercise`, the fuzz target's body).

use callgate::sip::fuzzing::exercise;

#[path = "common/mutate.rs"]
mod mutate;

fn corpus() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sip-torture");
    let mut out = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        for e in std::fs::read_dir(root.join(dir))
            .expect("corpus dir")
            .flatten()
        {
            out.push(std::fs::read(e.path()).expect("read"));
        }
    }
    out
}

#[test]
fn truncations_never_panic() {
    let all = corpus();
    assert!(all.len() >= 61);
    for m in &all {
        for cut in 0..=m.len() {
            exercise(&m[..cut]);
        }
    }
}

#[test]
fn seeded_mutations_never_panic() {
    let all = corpus();
    let mut rng = fastrand::Rng::with_seed(0x5eed_ca11);
    let specials = b"\r\n:;,<>\"\\[]@ =\t%";
    for _ in 0..20_000 {
        let seed = &all[rng.usize(..all.len())];
        let m = mutate::mutate(&mut rng, seed, specials, 8);
        exercise(&m);
    }
}
