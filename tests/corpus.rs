//! The labelled call corpus (issue 16, `test-calls/corpus/corpus.toml`):
//! `callgate corpus` places every call through a callgate under a policy,
//! with its own STI PKI so that signed calls are really verified, and
//! prints what the policy caught (attacks reviewed or refused) and touched
//! (legitimate calls reviewed or refused). The shipped policy catches every
//! attack and touches at most 1 %; a policy weakened where a fraudster
//! would push is named; the labelled store it keeps lets `callgate replay
//! --labelled` measure a candidate without placing the calls again.

use std::path::Path;
use std::process::{Command, Output};

fn corpus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("corpus")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run callgate corpus: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const SHIPPED_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sip-config/policy.toml");

/// The shipped policy with `from` replaced by `to`, written in `dir`
/// (list files resolve against the shipped policy's directory: copied).
fn weakened(dir: &Path, from: &str, to: &str) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(SHIPPED_POLICY).unwrap_or_else(|e| panic!("{e}"));
    assert!(shipped.contains(from), "the shipped policy lacks {from:?}");
    let lists = dir.join("lists");
    std::fs::create_dir_all(&lists).unwrap_or_else(|e| panic!("{e}"));
    for name in ["allow.txt", "dno.txt", "fraud.txt"] {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("sip-config/lists")
            .join(name);
        std::fs::copy(&src, lists.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let path = dir.join("weakened.toml");
    std::fs::write(&path, shipped.replace(from, to)).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn the_shipped_policy_catches_every_attack_and_touches_at_most_one_percent() {
    let out = corpus(&[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let summary = t
        .lines()
        .find(|l| l.starts_with("caught "))
        .unwrap_or_else(|| panic!("no summary: {t}"));
    // "caught N of N attacks (100.0 %); touched T of L legitimate calls (…)"
    let n: Vec<usize> = summary
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [caught, attacks, touched, legit, ..] = n[..] else {
        panic!("{summary}")
    };
    assert!(attacks >= 20 && caught == attacks, "{summary}");
    assert!(legit >= 200 && touched * 100 <= legit, "{summary}");
    assert!(!t.contains("\n! "), "no attack kind missed: {t}");
}

/// Without `CUSTOMER_UNPROVEN` (weight 0), a fraudster claiming a known
/// customer's number through a gateway gets through: the run exits 1 and
/// marks those kinds with `!`.
#[test]
fn a_policy_weakened_where_a_fraudster_pushes_is_named() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let policy = weakened(
        dir.path(),
        "weight = 50\n# A known customer's number",
        "weight = 0\n# A known customer's number",
    );
    let out = corpus(&["--policy", &policy.display().to_string()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for kind in [
        "spoofed known customer, unsigned",
        "spoofed known customer through a gateway (C)",
        "spoofed known customer, attested B",
    ] {
        assert!(
            t.lines().any(|l| l.starts_with("! ") && l.contains(kind)),
            "{kind} not named as missed: {t}"
        );
    }
}

/// `--db` keeps the run's store with every counted call labelled; `callgate
/// replay --labelled` then measures a candidate on those calls: the
/// weakened policy misses the three spoofed customers the live run missed.
#[test]
fn the_labelled_store_measures_a_candidate_without_placing_the_calls_again() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("corpus.db");
    let out = corpus(&["--db", &db.display().to_string(), "--json"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {t}"));
    let attacks = summary["attacks"].as_u64().unwrap_or_default();
    let legit = summary["legit"].as_u64().unwrap_or_default();
    // The candidate holds the corpus's list numbers, as the live run's
    // policy did (`[lists]` of test-calls/corpus/corpus.toml).
    let candidate = weakened(
        dir.path(),
        "weight = 50\n# A known customer's number",
        "weight = 0\n# A known customer's number",
    );
    let with_lists = std::fs::read_to_string(&candidate)
        .unwrap_or_else(|e| panic!("{e}"))
        .replace(
            "[lists.allow]\n",
            "[lists.allow]\nnumbers = [\"+15558880001\", \"+15558880002\", \"+15558880003\", \"+15558880004\", \"+15558880005\"]\n",
        )
        .replace(
            "[lists.fraud]\n",
            "[lists.fraud]\nnumbers = [\"+15557770001\", \"+15557770002\"]\n",
        );
    std::fs::write(&candidate, with_lists).unwrap_or_else(|e| panic!("{e}"));
    let replay = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["replay", "--labelled", "--db"])
        .arg(&db)
        .arg("--policy")
        .arg(&candidate)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = text(&replay);
    let want = format!("would catch {} of {attacks} confirmed fraud", attacks - 3);
    assert!(r.contains(&want), "{want:?} in {r}");
    assert!(
        r.contains(&format!("would touch 0 of {legit} confirmed customers")),
        "{r}"
    );
    // A second run will not write into an existing store.
    let again = corpus(&["--db", &db.display().to_string()]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
}
