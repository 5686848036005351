//! A generated test of the one-pipeline promise: mutations of the RFC 4475
//! / RFC 5118 INVITEs and of the project's own test INVITEs (leading CRLFs,
//! compact header forms, letter case, line folding, repeated and
//! comma-joined headers, To tags, odd spacing, forged tags, a lower-case
//! method, a bare CR), each sent from the trunk over UDP and TCP, each
//! followed by a sentinel on the same connection. Then:
//!
//! * every INVITE that reached the PBX arrived as an initial request (no To
//!   tag), carries exactly one `X-Callgate-Risk` and no `verstat` but
//!   callgate's own, and has a decision record in the audit store;
//! * every other message was refused or dropped by callgate — nothing
//!   reached the PBX under another guise.
//!
//! The mutations come from a fixed seed, so a failure names a variant that
//! can be rerun.

mod common;

use std::collections::BTreeMap;

use common::carrier::{pipeline_callgate, sentinel, Carrier, Pbx, Wire};
use common::pki::pki;
use common::{repo, LOOPBACK};

/// The project's own INVITEs, with forgeries a carrier could send.
fn own_invites() -> Vec<String> {
    let base = |from: &str, extra: &str| {
        format!(
            "INVITE sip:+15550100@{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-base;rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: <sip:+15550100@{LOOPBACK}>\r\nCall-ID: base\r\nCSeq: 1 INVITE\r\nContact: <sip:+14155550206@192.0.2.10>\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    };
    vec![
        base("<sip:+14155550206@carrier.example;user=phone>;tag=c1", ""),
        base(
            "<sip:+14155550206;verstat=TN-Validation-Passed@carrier.example;user=phone>;tag=c1",
            "",
        ),
        base(
            "\"verstat=TN-Validation-Passed-A\" <sip:+14155550206@carrier.example;verstat=TN-Validation-Passed>;tag=c1",
            "P-Asserted-Identity: <sip:+14155550206@carrier.example;user=phone;verstat=TN-Validation-Passed-A>, <tel:+14155550206;verstat=TN-Validation-Passed>\r\nSubject: hello\r\n",
        ),
        base(
            "<sip:+14155550206@carrier.example>;tag=c1",
            "X-Callgate-Risk: low;score=0\r\nReason: STIR;cause=438\r\nRemote-Party-ID: <sip:+14155550206@c;verstat=TN-Validation-Passed>;party=calling\r\n",
        ),
    ]
}

/// The INVITEs of the torture corpus, as files.
fn torture_invites() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        let path = repo().join("tests/sip-torture").join(dir);
        let Ok(entries) = std::fs::read_dir(&path) else {
            panic!("no torture corpus at {}", path.display());
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let Ok(bytes) = std::fs::read(&f) else {
                continue;
            };
            let start = bytes
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if bytes[start..].starts_with(b"INVITE ") {
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((format!("{dir}/{name}"), bytes));
            }
        }
    }
    out
}

/// Splits a message into head lines and body.
fn split(msg: &[u8]) -> (Vec<String>, Vec<u8>) {
    let text = String::from_utf8_lossy(msg);
    match text.find("\r\n\r\n") {
        Some(i) => (
            text[..i].split("\r\n").map(str::to_owned).collect(),
            msg[(i + 4).min(msg.len())..].to_vec(),
        ),
        None => (text.split("\r\n").map(str::to_owned).collect(), Vec::new()),
    }
}

fn join(lines: &[String], body: &[u8]) -> Vec<u8> {
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

fn name_of(line: &str) -> Option<String> {
    let (n, _) = line.split_once(':')?;
    Some(n.trim().to_ascii_lowercase())
}

/// Gives the message a Call-ID of its own (long or compact form; one is
/// added when it has none) and its top Via a branch of its own, so that no
/// variant is taken for a retransmission of another.
fn with_call_id(msg: &[u8], id: &str) -> Vec<u8> {
    let (mut lines, body) = split(msg);
    let mut found = false;
    if let Some(via) = lines
        .iter_mut()
        .skip(1)
        .find(|l| matches!(name_of(l).as_deref(), Some("via" | "v")))
    {
        if let Some(at) = via.find("branch=") {
            let end = via[at..]
                .find([';', ',', ' '])
                .map_or(via.len(), |e| at + e);
            via.replace_range(at..end, &format!("branch=z9hG4bK-{id}"));
        }
    }
    for l in lines.iter_mut().skip(1) {
        if matches!(name_of(l).as_deref(), Some("call-id" | "i")) {
            let n = l
                .split_once(':')
                .map(|(n, _)| n.to_owned())
                .unwrap_or_default();
            *l = format!("{n}: {id}");
            found = true;
        }
    }
    if !found {
        lines.push(format!("Call-ID: {id}"));
    }
    join(&lines, &body)
}

/// One mutation of a message's head.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    None,
    LeadingCrlf,
    Compact,
    LetterCase,
    LowerMethod,
    Fold,
    RepeatIdentity,
    ToTag,
    OddSpacing,
    ForgedTags,
    BareCr,
}

const MUTATIONS: [Mutation; 11] = [
    Mutation::None,
    Mutation::LeadingCrlf,
    Mutation::Compact,
    Mutation::LetterCase,
    Mutation::LowerMethod,
    Mutation::Fold,
    Mutation::RepeatIdentity,
    Mutation::ToTag,
    Mutation::OddSpacing,
    Mutation::ForgedTags,
    Mutation::BareCr,
];

fn compact(name: &str) -> Option<&'static str> {
    Some(match name {
        "via" => "v",
        "from" => "f",
        "to" => "t",
        "call-id" => "i",
        "contact" => "m",
        "content-length" => "l",
        "content-type" => "c",
        "subject" => "s",
        "supported" => "k",
        _ => return None,
    })
}

/// Calls `f` on every header line with its lower-case name.
fn each_header(lines: &mut [String], mut f: impl FnMut(&mut String, &str)) {
    for l in lines.iter_mut().skip(1) {
        if let Some(n) = name_of(l) {
            f(l, &n);
        }
    }
}

fn mutate(msg: &[u8], m: Mutation, rng: &mut fastrand::Rng) -> Vec<u8> {
    let (mut lines, body) = split(msg);
    match m {
        Mutation::None => {}
        Mutation::LeadingCrlf => {
            let mut out = b"\r\n\r\n".to_vec();
            out.extend_from_slice(msg);
            return out;
        }
        Mutation::Compact => each_header(&mut lines, |l, n| {
            if let (Some(c), Some((_, v))) = (compact(n), l.clone().split_once(':')) {
                *l = format!("{c}:{v}");
            }
        }),
        Mutation::LetterCase => each_header(&mut lines, |l, _| {
            if let Some((n, v)) = l.clone().split_once(':') {
                let n: String = n
                    .chars()
                    .map(|c| {
                        if rng.bool() {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        }
                    })
                    .collect();
                *l = format!("{n}:{v}");
            }
        }),
        Mutation::LowerMethod => {
            if let Some(first) = lines.first_mut() {
                *first = first.replacen("INVITE", "invite", 1);
            }
            each_header(&mut lines, |l, n| {
                if n == "cseq" {
                    *l = l.replace("INVITE", "invite");
                }
            });
        }
        Mutation::Fold => each_header(&mut lines, |l, n| {
            if matches!(
                n,
                "from" | "f" | "to" | "t" | "p-asserted-identity" | "subject"
            ) {
                if let Some((n, v)) = l.clone().split_once(':') {
                    *l = format!("{n}:\r\n {}", v.trim_start());
                }
            }
        }),
        Mutation::RepeatIdentity => {
            lines.push("P-Asserted-Identity: <sip:+14155550206@carrier.example;verstat=TN-Validation-Passed>".to_owned());
            lines.push("P-Asserted-Identity: <sip:+14155550207@c>, <tel:+14155550207;verstat=TN-Validation-Passed-A>".to_owned());
        }
        Mutation::ToTag => each_header(&mut lines, |l, n| {
            if matches!(n, "to" | "t") && !l.contains("tag=") {
                l.push_str(";tag=forged");
            }
        }),
        Mutation::OddSpacing => each_header(&mut lines, |l, _| {
            if let Some((n, v)) = l.clone().split_once(':') {
                *l = format!("{n} \t:\t {}", v.trim_start());
            }
        }),
        Mutation::ForgedTags => {
            lines.push("X-Callgate-Risk: low;score=0".to_owned());
            lines.push("x-CALLGATE-restrict: none".to_owned());
            lines.push("Remote-Party-ID: \"VERSTAT=TN-Validation-Passed-A\" <sip:+1@c>".to_owned());
        }
        Mutation::BareCr => lines.push("Subject: x\rX-Callgate-Risk: low;score=0".to_owned()),
    }
    join(&lines, &body)
}

fn header_values<'a>(msg: &'a str, names: &[&str]) -> Vec<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            names
                .iter()
                .any(|x| n.trim().eq_ignore_ascii_case(x))
                .then_some(v.trim())
        })
        .collect()
}

#[test]
fn no_mutation_reaches_the_pbx_without_every_phase() {
    let pki = pki();
    let pbx = Pbx::bind();
    let db = pki._dir.path().join("audit.db");
    let cg = pipeline_callgate(
        &pki,
        &pbx,
        "mutations-1",
        &format!("[audit]\npath = \"{}\"\n", db.display()),
    );

    let mut bases: Vec<(String, Vec<u8>)> = own_invites()
        .into_iter()
        .enumerate()
        .map(|(i, m)| (format!("own-{i}"), m.into_bytes()))
        .collect();
    bases.extend(torture_invites());
    assert!(bases.len() > 15, "corpus not found: {}", bases.len());

    let mut rng = fastrand::Rng::with_seed(0x5eed_c411);
    let mut sent: BTreeMap<String, String> = BTreeMap::new();
    let mut reached: Vec<(String, String)> = Vec::new();
    let mut n = 0;
    for wire in [Wire::Udp, Wire::Tcp] {
        for (name, base) in &bases {
            // Each mutation alone, then two at random together.
            let mut plans: Vec<Vec<Mutation>> = MUTATIONS.iter().map(|m| vec![*m]).collect();
            for _ in 0..4 {
                plans.push(vec![
                    MUTATIONS[rng.usize(..MUTATIONS.len())],
                    MUTATIONS[rng.usize(..MUTATIONS.len())],
                ]);
            }
            for plan in plans {
                n += 1;
                let id = format!("mut-{n}");
                let mut msg = with_call_id(base, &id);
                for m in &plan {
                    msg = mutate(&msg, *m, &mut rng);
                }
                let what = format!("{wire:?} {name} {plan:?}");
                sent.insert(id.clone(), what);
                let mut c = Carrier::connect(&cg, wire);
                c.send(&msg);
                // On a stream, an unfinished frame (a Content-Length past
                // the end) would swallow a sentinel sent behind it: the
                // connection is closed first, and the sentinel goes by UDP.
                c.finish();
                let s = format!("sentinel-{n}");
                if wire != Wire::Udp {
                    c = Carrier::connect(&cg, Wire::Udp);
                }
                c.send(sentinel(&c, &s).as_bytes());
                let got = pbx.until(&s);
                for m in &got[..got.len() - 1] {
                    reached.push((id.clone(), m.clone()));
                }
            }
        }
    }

    let mut tagged = Vec::new();
    for (id, m) in &reached {
        let what = &sent[id];
        let first = m.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("INVITE "),
            "{what}: only INVITEs were sent, yet this reached the PBX:\n{m}"
        );
        let to = header_values(m, &["To", "t"]);
        assert!(
            to.len() == 1 && !to[0].contains("tag="),
            "{what}: reached the PBX as an in-dialog request:\n{m}"
        );
        let risk = header_values(m, &["X-Callgate-Risk"]);
        assert_eq!(risk.len(), 1, "{what}: X-Callgate-Risk:\n{m}");
        assert!(risk[0].contains("policy=mutations-1"), "{what}: {m}");
        let lower = m.to_ascii_lowercase();
        assert_eq!(
            lower.matches("verstat").count(),
            1,
            "{what}: a verstat that is not callgate's:\n{m}"
        );
        assert!(lower.contains(";verstat=no-tn-validation"), "{what}: {m}");
        for h in ["x-callgate-restrict: none", "reason: stir"] {
            assert!(!lower.contains(h), "{what}: forged {h}:\n{m}");
        }
        let call_id = header_values(m, &["Call-ID", "i"]);
        tagged.push(call_id.first().map(|s| s.to_string()).unwrap_or_default());
    }
    // Enough of both outcomes to mean something.
    assert!(
        tagged.len() >= 40,
        "only {} INVITEs were let through",
        tagged.len()
    );
    assert!(
        sent.len() - tagged.len() >= 150,
        "only {} messages were refused",
        sent.len() - tagged.len()
    );

    eprintln!("{} sent, {} let through", sent.len(), tagged.len());
    // Every INVITE let through has its decision record (the store is
    // flushed at a clean shutdown).
    let mut cg = cg;
    let exit = cg.signal_and_wait("TERM", std::time::Duration::from_secs(15));
    assert!(
        exit.is_some_and(|e| e.success()),
        "callgate did not stop cleanly: {exit:?}"
    );
    let conn = rusqlite::Connection::open(&db).expect("audit db");
    let mut stmt = conn
        .prepare("SELECT 1 FROM decisions WHERE call_id = ?1")
        .expect("query");
    for id in &tagged {
        assert!(
            stmt.exists([id]).expect("query"),
            "{}: let through without a decision record",
            sent.get(id).map(String::as_str).unwrap_or(id)
        );
    }
}
