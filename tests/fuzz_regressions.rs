//! The fuzz targets' entry points (`callgate::fuzzing`) on stable: every
//! committed seed (`fuzz/seeds/<target>/`) and every truncation of it goes
//! through its target, and every input a fuzzing campaign found to crash
//! is kept here as a named regression test (docs/fuzzing.md lists them).

use std::path::Path;

use callgate::fuzzing;

/// The seed files of one target.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// Runs every seed, and every prefix of it, through `exercise`; returns
/// how many inputs the target accepted far enough to return non-zero.
fn every_prefix(target: &str, exercise: fn(&[u8]) -> usize) -> usize {
    let mut reached = 0;
    for seed in seeds(target) {
        for cut in 0..=seed.len() {
            reached += usize::from(exercise(&seed[..cut]) > 0);
        }
    }
    reached
}

#[test]
fn seeds_and_their_prefixes_never_panic() {
    // Each target must get somewhere on its own seeds: a seed that every
    // parser refuses seeds nothing.
    for (target, exercise) in [
        ("sdp", fuzzing::sdp::exercise as fn(&[u8]) -> usize),
        ("ng", fuzzing::ng::exercise),
        ("srtp", fuzzing::srtp::exercise),
        ("x509", fuzzing::x509::exercise),
        ("passport", fuzzing::passport::exercise),
        ("http", fuzzing::http::exercise),
        ("resp", fuzzing::resp::exercise),
        ("pcap", fuzzing::pcap::exercise),
        ("policy", fuzzing::policy::exercise),
    ] {
        assert!(
            every_prefix(target, exercise) > 0,
            "{target}: no seed reached the parser"
        );
    }
}

#[test]
fn pipeline_seeds_never_panic() {
    // Non-zero only when the in-process gate started and took the input.
    let fed: usize = seeds("pipeline")
        .iter()
        .map(|s| fuzzing::pipeline::exercise(s))
        .sum();
    assert!(fed > 0, "the pipeline harness did not start");
}
