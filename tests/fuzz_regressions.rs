//! The fuzz targets' entry points (`callgate::fuzzing`) on stable: every
//! committed seed (`fuzz/seeds/<target>/`) and every truncation of it goes
//! through its target, and every input a fuzzing campaign found to crash
//! is kept here as a named regression test (docs/fuzzing.md lists them).

use std::path::Path;

use callgate::fuzzing;

#[path = "common/mutate.rs"]
mod mutate;

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

type Exercise = fn(&[u8]) -> usize;

/// The targets that run without a gate, with their entry points.
const TARGETS: [(&str, Exercise); 8] = [
    ("sdp", fuzzing::sdp::exercise),
    ("ng", fuzzing::ng::exercise),
    ("srtp", fuzzing::srtp::exercise),
    ("x509", fuzzing::x509::exercise),
    ("passport", fuzzing::passport::exercise),
    ("http", fuzzing::http::exercise),
    ("pcap", fuzzing::pcap::exercise),
    ("policy", fuzzing::policy::exercise),
];

#[test]
fn seeds_and_their_prefixes_never_panic() {
    // Each target must get somewhere on its own seeds: a seed that every
    // parser refuses seeds nothing.
    for (target, exercise) in TARGETS {
        assert!(
            every_prefix(target, exercise) > 0,
            "{target}: no seed reached the parser"
        );
    }
}

/// A stable-toolchain stand-in for the fuzzer: seeded random byte
/// mutations of every seed (so `cargo test` catches the shallow crashes
/// even where cargo-fuzz is not installed).
#[test]
fn seeded_mutations_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0xf022_5eed);
    let specials = b"\r\n:;,=/ 0123456789-*$+ie\x00\xff";
    for (target, exercise) in TARGETS {
        let all = seeds(target);
        for _ in 0..3_000 {
            let seed = &all[rng.usize(..all.len())];
            let m = mutate::mutate(&mut rng, seed, specials, 6);
            exercise(&m);
        }
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

/// An input a campaign found, kept in `tests/fuzz-crashes/`.
fn crash(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-crashes")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// ng, campaign of 2026-12-07: a dictionary whose keys arrive unsorted
/// (`cadl-id` before `\x04ommand`) decodes in arrival order but encodes
/// sorted, so decode(encode(v)) != v. Not a fault of the decoder (rtpengine
/// accepts unsorted keys too, and lookups are by key); the target's
/// property was too strict and now checks that the encoding is canonical.
#[test]
fn ng_unsorted_dict_keys_encode_canonically() {
    use bytes::Bytes;
    use callgate::media::ng::bencode;
    let input = crash("ng-unsorted-dict-keys");
    fuzzing::ng::exercise(&input);
    let v = bencode::decode(&Bytes::from(input)).expect("decodes");
    let once = v.to_vec();
    let twice = bencode::decode(&Bytes::from(once.clone()))
        .expect("our encoding decodes")
        .to_vec();
    assert_eq!(once, twice);
    let d = v.as_dict().expect("a dictionary");
    assert!(d.get(b"cadl-id").is_some() && d.get(b"\x04ommand").is_some());
}
