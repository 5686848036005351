//! The risk policy: the shipped `sip-config/policy.toml` decides the
//! documented cases, and a broken policy is refused with the rule and key.

use std::path::Path;

use bytes::Bytes;
use callgate::risk::assess::{decide, signals, velocity_requests};
use callgate::risk::policy::{Action, Level, Policy, PolicyError};
use callgate::sip::message::{Limits, SipMessage};
use callgate::stir::verify::{Status, Verification};

const NOW: i64 = 1_795_512_600;

fn shipped() -> Policy {
    Policy::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sip-config/policy.toml"
    )))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn invite(from: &str, pai: Option<&str>, extra: &str) -> SipMessage {
    let pai = pai
        .map(|p| format!("P-Asserted-Identity: <sip:{p}@carrier.example>\r\n"))
        .unwrap_or_default();
    let text = format!(
        "INVITE sip:+15550100@pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1\r\nMax-Forwards: 70\r\nFrom: <sip:{from}@carrier.example>;tag=1\r\nTo: <sip:+15550100@pbx.example>\r\n{pai}{extra}Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    SipMessage::parse(Bytes::from(text), &Limits::default()).unwrap_or_else(|e| panic!("{e:?}"))
}

fn verified(status: Status, attest: &str) -> Verification {
    let mut v = Verification::absent();
    v.status = status;
    v.attest = Some(attest.into());
    v.origid = Some("o-1".into());
    v.unavailable = None;
    v
}

#[test]
fn the_shipped_policy_decides_the_documented_cases() {
    let p = shipped();
    assert_eq!(p.version, "2026-12-07.1");
    // A-attested, nothing else: low, tagged, no restrictions.
    let msg = invite("+15550199", Some("+15550199"), "");
    let v = verified(Status::Passed, "A");
    let s = signals(&msg, Some(&v), &p, NOW);
    let d = decide(&p, None, &s, "d1".to_owned());
    assert_eq!(
        (d.verdict.level, d.verdict.action),
        (Level::Low, Action::Tag)
    );
    assert!(
        d.verdict.restrict.is_empty() && d.verdict.fired.is_empty(),
        "{d:?}"
    );
    // Failed verification: high, review queue, restrictions.
    let v = verified(Status::Failed, "A");
    let d = decide(&p, None, &signals(&msg, Some(&v), &p, NOW), "d1".to_owned());
    assert_eq!(
        (d.verdict.level, d.verdict.action),
        (Level::High, Action::Review)
    );
    assert_eq!(d.target.as_deref(), Some("sip:fraud-review@pbx.invalid"));
    assert!(d.verdict.reasons().any(|r| r == "STIR_FAILED"));
    assert!(d.verdict.restrict.contains(&"credential-reset".to_owned()));
    // Unsigned call claiming a Do-Not-Originate number: rejected with 608.
    let dno = invite("+15550100", None, "");
    let d = decide(
        &p,
        None,
        &signals(&dno, Some(&Verification::absent()), &p, NOW),
        "d1".to_owned(),
    );
    assert_eq!(
        (d.verdict.level, d.verdict.action),
        (Level::Critical, Action::Reject(608))
    );
    assert!(d.verdict.reasons().any(|r| r == "DNO"), "{d:?}");
    // A burst from one number: velocity crosses into review.
    let none = Verification::absent();
    let mut s = signals(&msg, Some(&none), &p, NOW);
    let reqs = velocity_requests(&[&p], &s);
    assert!(reqs
        .iter()
        .any(|r| r.name == "ani_10m" && r.key == "v:ani_10m:15550199"));
    s.velocity = vec![("ani_10m".into(), Some(5))];
    let d = decide(&p, None, &s, "d1".to_owned());
    assert_eq!(d.verdict.level, Level::High, "unsigned and a burst: {d:?}");
    assert!(d.verdict.reasons().any(|r| r == "BURST_ANI_10M"));
    // Anonymous and mismatched headers are signals too.
    let anon = invite("anonymous", None, "Privacy: id\r\n");
    let s = signals(&anon, None, &p, NOW);
    assert!(s.anonymous && s.stir.is_none());
    let d = decide(&p, None, &s, "d1".to_owned());
    assert!(d.verdict.reasons().any(|r| r == "ANONYMOUS"));
    assert!(
        !d.verdict.reasons().any(|r| r == "STIR_NONE"),
        "stir unavailable fails open"
    );
    let mismatch = invite(
        "+15550198",
        Some("+15550199"),
        "Diversion: <sip:+15550111@x>\r\n",
    );
    let s = signals(&mismatch, None, &p, NOW);
    assert!(s.from_pai_mismatch && s.diversion_header);
}

/// The allow list's exemption (`ALLOWLISTED`, −50) cannot be used to
/// dilute the signals meant to catch a spoofed customer number: a gateway
/// call (C) or a B-attested call claiming an allow-listed number keeps its
/// attestation's weight (and is `CUSTOMER_UNPROVEN`), and a number on the
/// fraud list is not exempted by an older allow-listing (in policy
/// 2026-11-24.1, C on `allow` scored −25 and `allow` + `fraud` 20: both
/// low, tagged as ordinary calls).
#[test]
fn the_allow_list_exempts_only_a_vouched_number_never_a_fraud_listed_one() {
    let p = shipped();
    let msg = invite("+15550177", Some("+15550177"), "");
    let decide_on = |attest: &str, lists: &[&str]| {
        let v = verified(Status::Passed, attest);
        let mut s = signals(&msg, Some(&v), &p, NOW);
        s.lists = lists.iter().map(|l| (*l).to_owned()).collect();
        let d = decide(&p, None, &s, "d1".to_owned());
        let reasons: Vec<String> = d.verdict.reasons().map(str::to_owned).collect();
        (d.verdict.level, d.verdict.score, reasons)
    };
    let (level, score, reasons) = decide_on("A", &["allow"]);
    assert_eq!((level, score), (Level::Low, 0), "{reasons:?}");
    assert_eq!(reasons, ["ALLOWLISTED"]);
    // B or C on a known customer's number: no exemption, and the number
    // is unproven (test-calls/corpus: how a customer is impersonated).
    for (attest, score_b_or_c, code) in [("B", 60, "ATTEST_B"), ("C", 75, "ATTEST_C")] {
        let (level, score, reasons) = decide_on(attest, &["allow"]);
        assert_eq!(
            (level, score),
            (Level::High, score_b_or_c),
            "{attest}: {reasons:?}"
        );
        assert_eq!(
            reasons,
            [code, "CUSTOMER_UNPROVEN"],
            "{attest}: no exemption without A"
        );
    }
    let (level, score, reasons) = decide_on("A", &["allow", "fraud"]);
    assert_eq!(
        (level, score, reasons),
        (Level::High, 70, vec!["KNOWN_FRAUD".to_owned()]),
        "a fraud-listed number is not exempted"
    );
}

#[test]
fn texts_are_refused_past_200_characters_with_their_key() {
    let text = |n: usize| {
        format!(
            "version = \"1\"\n[level.medium]\nrestrict = [\"mfa-change\"]\n[restrictions]\nmfa-change = \"{}\"\n",
            "é".repeat(n)
        )
    };
    let p =
        Policy::parse(&text(200), Path::new("/nonexistent")).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(p.levels[1].restrict_text.len(), 1);
    match Policy::parse(&text(201), Path::new("/nonexistent")) {
        Err(callgate::risk::policy::Parse::Invalid(k, reason)) => {
            assert_eq!(k, "restrictions.mfa-change");
            assert!(reason.contains("201 characters, at most 200"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_shipped_policy_puts_words_on_every_code() {
    let p = shipped();
    for r in &p.rules {
        assert!(
            r.description.is_some(),
            "rule {} has no description",
            r.code
        );
    }
    for (level, la) in Level::ALL.iter().zip(&p.levels) {
        assert!(la.text.is_some(), "level {level:?} has no text");
        assert_eq!(
            la.restrict_text.len(),
            la.restrict.len(),
            "level {level:?}: every restricted action has words"
        );
    }
    // The words reach the verdict: a failed verification of our own number.
    let msg = invite("+15550101", Some("+15550101"), "");
    let v = verified(Status::Failed, "A");
    let d = decide(&p, None, &signals(&msg, Some(&v), &p, NOW), "d1".to_owned());
    let codes: Vec<&str> = d.verdict.reason_texts().map(|(c, _)| c).collect();
    assert_eq!(codes, d.verdict.reasons().collect::<Vec<_>>());
    assert!(
        d.verdict
            .reason_texts()
            .any(|(c, t)| c == "OWN_NUMBER_SPOOF" && t.contains("escalate")),
        "{d:?}"
    );
    assert!(d.verdict.level_text.is_some(), "{d:?}");
}

#[test]
fn shadow_disagreements_and_fail_closed() {
    let p = shipped();
    let strict = Policy::parse(
        "version = \"strict-1\"\n[unavailable]\nstir = \"closed\"\n[[rule]]\ncode = \"NOT_A\"\nweight = 70\nwhen = { not = { attest = \"A\" } }\n",
        Path::new("."),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let msg = invite("+15550199", None, "");
    let v = verified(Status::Passed, "B");
    let s = signals(&msg, Some(&v), &p, NOW);
    let d = decide(&p, Some(&strict), &s, "d1".to_owned());
    assert_eq!(d.verdict.level, Level::Low);
    assert_eq!(d.shadow.as_ref().map(|v| v.level), Some(Level::High));
    assert!(d.disagrees());
    // Verification disabled: the strict policy fails closed.
    let s = signals(&msg, None, &p, NOW);
    let v = strict.decide(&s);
    assert_eq!(v.fired.first().and_then(|f| f.fail_closed), Some("stir"));
}

#[test]
fn a_shadow_policy_is_judged_on_its_own_lists() {
    let p = shipped();
    let candidate = Policy::parse(
        "version = \"lists-2\"\n[levels]\nhigh = 60\n[level.high]\naction = \"review\"\n[review]\nuri = \"sip:review@pbx\"\n[lists.watch]\nnumbers = [\"+15550177\"]\n[[rule]]\ncode = \"WATCHED\"\nweight = 80\nwhen = { list = \"watch\" }\n",
        Path::new("."),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let msg = invite("+15550177", None, "");
    let s = signals(&msg, None, &p, NOW);
    let d = decide(&p, Some(&candidate), &s, "d1".to_owned());
    let shadow = d
        .shadow
        .as_ref()
        .map(|v| (v.level, v.reasons().collect::<Vec<_>>()));
    assert_eq!(shadow, Some((Level::High, vec!["WATCHED"])));
    assert!(d.disagrees());
}

#[test]
fn broken_policies_name_the_rule_and_key() {
    let cases = [
        ("version = \"1\"\n[[rule]]\ncode = \"X\"\nweight = 10\nwhen = { stir = \"maybe\" }\n", "rule[0] (X).when.stir"),
        ("version = \"1\"\n[[rule]]\ncode = \"x\"\nweight = 10\nwhen = { stir = \"failed\" }\n", "rule[0].code"),
        ("version = \"1\"\n[[rule]]\ncode = \"X\"\nweight = 500\nwhen = { stir = \"failed\" }\n", "rule[0] (X).weight"),
        ("version = \"1\"\n[[rule]]\ncode = \"X\"\nweight = 5\nwhen = { velocity = \"nope\", at_least = 2 }\n", "rule[0] (X).when.velocity"),
        ("version = \"1\"\n[[rule]]\ncode = \"X\"\nweight = 5\nwhen = { list = \"nope\" }\n", "rule[0] (X).when.list"),
        ("version = \"1\"\n[levels]\nmedium = 70\nhigh = 60\n", "levels"),
        ("version = \"1\"\n[level.high]\naction = \"review\"\n", "review.uri"),
        ("[[rule]]\ncode = \"X\"\nweight = 5\nwhen = { stir = \"failed\" }\n", "version"),
        ("version = \"1\"\n[lists.dno]\nfile = \"missing.txt\"\n", "lists.dno"),
        ("version = \"1\"\n[level.critical]\naction = \"reject\"\nreject_code = 486\n", "level.critical.reject_code"),
        // The plain-language texts: one line, not empty, at most 200 characters.
        ("version = \"1\"\n[[rule]]\ncode = \"X\"\nweight = 5\nwhen = { stir = \"failed\" }\ndescription = \"two\\nlines\"\n", "rule[0] (X).description"),
        ("version = \"1\"\n[[rule]]\ncode = \"X\"\nweight = 5\nwhen = { stir = \"failed\" }\ndescription = 7\n", "rule[0] (X).description"),
        ("version = \"1\"\n[level.high]\ntext = \"  \"\n", "level.high.text"),
        ("version = \"1\"\n[level.low]\ntxt = \"typo\"\n", "level.low.txt"),
        ("version = \"1\"\n[restrictions]\nCredential_Reset = \"No reset.\"\n", "restrictions.Credential_Reset"),
        ("version = \"1\"\n[restrictions]\ncredential-reset = \"a\\rb\"\n", "restrictions.credential-reset"),
        ("version = \"1\"\nrestrictions = \"no\"\n", "restrictions"),
    ];
    for (text, key) in cases {
        match Policy::parse(text, Path::new("/nonexistent")) {
            Err(callgate::risk::policy::Parse::Invalid(k, reason)) => {
                assert!(k.starts_with(key), "{text}\nkey {k}: {reason}")
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        "version = \"1\"\n[[rule]]\ncode = \"X\"\nweight = 5\nwhen = { colour = \"red\" }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = Policy::load(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("p.toml") && err.contains("rule[0] (X).when.colour"),
        "{err}"
    );
    assert!(matches!(
        Policy::load(&dir.path().join("none.toml")),
        Err(PolicyError::Read { .. })
    ));
}

/// An Ethernet/IPv4/UDP frame carrying `data`.
fn frame(data: &[u8]) -> Vec<u8> {
    let udp_len = 8 + data.len();
    let mut pkt = vec![0u8; 12];
    pkt.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    pkt.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 10, 192, 0, 2, 20]);
    pkt.extend_from_slice(&[0x13, 0xc4, 0x13, 0xc4]);
    pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(data);
    pkt
}

fn classic_pcap(packets: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut f = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    for (sec, data) in packets {
        let fr = frame(data);
        for v in [*sec, 0, fr.len() as u32, fr.len() as u32] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&fr);
    }
    f
}

fn pcapng(packets: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut f = Vec::new();
    let block = |f: &mut Vec<u8>, kind: u32, body: &[u8]| {
        let len = 12 + body.len().div_ceil(4) * 4;
        f.extend_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&(len as u32).to_le_bytes());
        f.extend_from_slice(body);
        f.resize(f.len() + (len - 12 - body.len()), 0);
        f.extend_from_slice(&(len as u32).to_le_bytes());
    };
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    block(&mut f, 0x0a0d_0d0a, &shb);
    let mut idb = 1u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&[0, 0]);
    idb.extend_from_slice(&65535u32.to_le_bytes());
    block(&mut f, 1, &idb);
    for (sec, data) in packets {
        let fr = frame(data);
        let us = u64::from(*sec) * 1_000_000;
        let mut epb = 0u32.to_le_bytes().to_vec();
        epb.extend_from_slice(&((us >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(us as u32).to_le_bytes());
        epb.extend_from_slice(&(fr.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(fr.len() as u32).to_le_bytes());
        epb.extend_from_slice(&fr);
        block(&mut f, 6, &epb);
    }
    f
}

#[test]
fn replay_a_capture_through_a_candidate_policy() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let shipped_path = concat!(env!("CARGO_MANIFEST_DIR"), "/sip-config/policy.toml");
    let shipped_text = std::fs::read_to_string(shipped_path).unwrap_or_else(|e| panic!("{e}"));
    // The candidate reviews a burst sooner: 3 calls in 10 minutes, not 5.
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(
        &candidate,
        shipped_text
            .lines()
            .map(|l| {
                if l.starts_with("version = ") {
                    "version = \"candidate-1\""
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            .replace(
                "velocity = \"ani_10m\", at_least = 5",
                "velocity = \"ani_10m\", at_least = 3",
            )
            .replace(
                "file = \"lists/",
                &format!("file = \"{}/sip-config/lists/", env!("CARGO_MANIFEST_DIR")),
            ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let invite = |n: u32| {
        let m = invite("+15550199", Some("+15550199"), "");
        String::from_utf8_lossy(m.bytes())
            .replace("Call-ID: c1", &format!("Call-ID: burst-{n}"))
            .into_bytes()
    };
    // Five calls a second apart, the second one retransmitted.
    let mut packets: Vec<(u32, Vec<u8>)> = (0..5).map(|n| (1_795_510_800 + n, invite(n))).collect();
    packets.insert(2, (1_795_510_801, invite(1)));
    for (name, bytes) in [
        ("c.pcap", classic_pcap(&packets)),
        ("c.pcapng", pcapng(&packets)),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
            .arg("replay")
            .arg("--policy")
            .arg(&candidate)
            .arg("--baseline")
            .arg(shipped_path)
            .arg("--pcap")
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(
                "5 calls replayed under candidate-1, 5 compared, 2 would be decided differently"
            ),
            "{name}: {text}"
        );
        assert!(
            text.contains("burst-2  15550199  low/tag []  ->  medium/tag [BURST_ANI_10M]"),
            "{name}: {text}"
        );
        assert!(text.contains("2  low/tag -> medium/tag"), "{name}: {text}");
    }
}

/// The decision phases under one environment: assess (with the id from the
/// environment), route and tag.
fn tagged(p: &Policy, env: &callgate::env::Env) -> (String, callgate::sip::proxy::Edits) {
    use callgate::gate::{route::route, tag::tag};
    let msg = invite("+15550199", Some("+15550199"), "");
    let v = verified(Status::Failed, "C");
    let d = decide(
        p,
        None,
        &signals(&msg, Some(&v), p, env.unix_secs()),
        env.decision_id(),
    );
    let stir = callgate::stir::mark::marking(&v, true, false);
    let r = route(&stir, Some(&d));
    (d.id.clone(), tag(&msg, &stir, Some(&v), Some(&d), &r))
}

#[test]
fn the_same_invite_under_the_same_environment_is_tagged_byte_for_byte_alike() {
    let p = shipped();
    let (env_a, _) = callgate::env::Env::fixed(NOW * 1000, 7);
    let (env_b, _) = callgate::env::Env::fixed(NOW * 1000, 7);
    let a = tagged(&p, &env_a);
    let b = tagged(&p, &env_b);
    assert_eq!(a, b);
    assert!(
        a.1.append
            .iter()
            .any(|h| h.starts_with("X-Callgate-Risk:") && h.contains(&a.0)),
        "{a:?}"
    );
    // Another seed: the same decision under another id.
    let (env_c, _) = callgate::env::Env::fixed(NOW * 1000, 8);
    let c = tagged(&p, &env_c);
    assert_ne!(a.0, c.0);
    assert_eq!(a.1.replace_first, c.1.replace_first);
}
