//! Verification with certificates fetched from x5u: a test STI PKI made
//! with rcgen (root → intermediate → leaf with TNAuthList) and a real HTTPS
//! server on loopback serving good, bad and hanging responses; what a
//! caller's PASSporT can make callgate fetch (CRL distribution points,
//! the per-call bounds, the cache under a flood, an egress proxy).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callgate::stir::certs::TrustStore;
use callgate::stir::fetch::{tls_config, FetchOptions, Proxy};
use callgate::stir::offload::SignatureOffload;
use callgate::stir::passport::{Claims, Dest, Div, Header, Orig};
use callgate::stir::rcd::RcdSource;
use callgate::stir::service::{Verifier, VerifierSettings};
use callgate::stir::sign::{identity_header, sign_passport, SignRequest};
use callgate::stir::verify::{Status, Verification};
use callgate::stir::Cause;
use common::pki::{crl_server, https_server, pki, Pki, MANY_DPS};

fn verifier(pki: &Pki, allow_private: bool) -> Arc<Verifier> {
    let mut trust = TrustStore::from_dir(&pki.trust_dir).expect("trust");
    trust
        .add_crl(&std::fs::read(&pki.crl).expect("crl"))
        .expect("add crl");
    Verifier::new(settings(pki, allow_private), trust)
}

fn settings(pki: &Pki, allow_private: bool) -> VerifierSettings {
    let deadline = Duration::from_millis(500);
    VerifierSettings {
        fetch: FetchOptions {
            tls: tls_config(std::slice::from_ref(&pki.web_ca)).expect("tls"),
            timeout: deadline,
            max_bytes: 64 * 1024,
            allow_private,
            proxy: None,
        },
        deadline,
        freshness_secs: 60,
        skew_secs: 5,
        min_cache: Duration::from_secs(60),
        max_cache: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(30),
        max_entries: 100,
        max_cache_bytes: 64 << 20,
        max_fetches_per_call: 6,
        max_crl_dps: 2,
        crl_fetch: true,
        counters: Default::default(),
        shared: None,
        offload: None,
    }
}

/// A current-thread runtime, as callgate runs signalling.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn header(pki: &Pki, port: u16, path: &str) -> String {
    header_from(pki, port, path, "+15550199")
}

fn header_from(pki: &Pki, port: u16, path: &str, orig: &str) -> String {
    let x5u = format!("https://127.0.0.1:{port}{path}");
    let req = SignRequest {
        orig,
        dest: "15550100",
        attest: 'A',
        origid: "123e4567-e89b-12d3-a456-426655440000",
        x5u: &x5u,
        iat: now(),
    };
    identity_header(&pki.signing, &req).expect("sign")
}

async fn check(v: &Arc<Verifier>, h: &str) -> Verification {
    v.verify(h.as_bytes(), "+15550199", &["15550100"], now())
        .await
}

fn failed_with(v: &Verification, cause: Cause, check: &str) {
    assert_eq!(v.status, Status::Failed, "{v:#?}");
    let f = v.failure.as_ref().expect("failure");
    assert_eq!(f.cause, cause, "{v:#?}");
    assert!(
        f.text.starts_with(check),
        "expected {check} to fail first: {}",
        f.text
    );
}

#[test]
fn x5u_certificates_are_fetched_validated_and_each_fault_has_its_cause() {
    let mut pki = pki();
    let (port, counts) = https_server(&pki);
    let crl_fetches = crl_server(&mut pki);
    let rt = runtime();
    rt.block_on(async {
        let v = verifier(&pki, true);
        // A valid call passes; the SPC comes from TNAuthList.
        let good = check(&v, &header(&pki, port, "/good.pem")).await;
        assert_eq!(good.status, Status::Passed, "{good:#?}");
        assert_eq!(good.spc.as_deref(), Some("1234"));
        // Every check is recorded; the slow ones with their timing.
        for name in ["certificate", "signature"] {
            let c = good.checks.iter().find(|c| c.name == name).expect(name);
            assert!(c.ok && c.micros.is_some(), "{c:?}");
        }
        // Chain faults: 437 Unsupported Credential.
        failed_with(
            &check(&v, &header(&pki, port, "/stranger.pem")).await,
            Cause::UnsupportedCredential,
            "certificate",
        );
        failed_with(
            &check(&v, &header(&pki, port, "/expired.pem")).await,
            Cause::UnsupportedCredential,
            "certificate",
        );
        let revoked = check(&v, &header(&pki, port, "/revoked.pem")).await;
        failed_with(&revoked, Cause::UnsupportedCredential, "certificate");
        assert!(
            revoked
                .failure
                .as_ref()
                .is_some_and(|f| f.text.contains("Revoked")),
            "{revoked:#?}"
        );
        let critical = check(&v, &header(&pki, port, "/critical.pem")).await;
        failed_with(&critical, Cause::UnsupportedCredential, "certificate");
        let no_tn = check(&v, &header(&pki, port, "/no-tn.pem")).await;
        failed_with(&no_tn, Cause::UnsupportedCredential, "certificate");
        assert!(
            no_tn
                .failure
                .as_ref()
                .is_some_and(|f| f.text.contains("TNAuthList")),
            "{no_tn:#?}"
        );
        // CRLs from the distribution point (plain HTTP, signed): fetched
        // once, checked for every chain that names it.
        let dp_good = check(&v, &header(&pki, port, "/dp-good.pem")).await;
        assert_eq!(dp_good.status, Status::Passed, "{dp_good:#?}");
        let dp_revoked = check(&v, &header(&pki, port, "/dp-revoked.pem")).await;
        failed_with(&dp_revoked, Cause::UnsupportedCredential, "certificate");
        assert!(
            dp_revoked
                .failure
                .as_ref()
                .is_some_and(|f| f.text.contains("Revoked")),
            "{dp_revoked:#?}"
        );
        assert_eq!(*crl_fetches.lock().unwrap_or_else(|p| p.into_inner()), 1);
        // A CRL whose signature does not verify with its issuer's key is
        // not trusted: the chain is refused rather than taken as unrevoked.
        let forged = {
            let mut trust = TrustStore::from_dir(&pki.trust_dir).expect("trust");
            trust
                .add_crl(&std::fs::read(&pki.forged_crl).expect("crl"))
                .expect("add crl");
            Verifier::new(settings(&pki, true), trust)
        };
        let refused = check(&forged, &header(&pki, port, "/good.pem")).await;
        failed_with(&refused, Cause::UnsupportedCredential, "certificate");
        assert!(
            refused
                .failure
                .as_ref()
                .is_some_and(|f| f.text.contains("CrlSignature")),
            "{refused:#?}"
        );
        // The SHAKEN certificate policy is required (ATIS-1000080 §6.4.1).
        let no_policy = check(&v, &header(&pki, port, "/no-policy.pem")).await;
        failed_with(&no_policy, Cause::UnsupportedCredential, "certificate");
        assert!(
            no_policy
                .failure
                .as_ref()
                .is_some_and(|f| f.text.contains("SHAKEN certificate policy")),
            "{no_policy:#?}"
        );
        // A delegate certificate signs only for its numbers (RFC 9060).
        let delegated = check(&v, &header(&pki, port, "/delegate.pem")).await;
        assert_eq!(delegated.status, Status::Passed, "{delegated:#?}");
        assert_eq!(delegated.spc, None);
        let outside = v
            .verify(
                header_from(&pki, port, "/delegate.pem", "+15550300").as_bytes(),
                "+15550300",
                &["15550100"],
                now(),
            )
            .await;
        failed_with(&outside, Cause::UnsupportedCredential, "certificate");
        assert!(
            outside
                .failure
                .as_ref()
                .is_some_and(|f| f.text.contains("does not cover")),
            "{outside:#?}"
        );
        // What the URL serves is wrong: 436 Bad Identity Info.
        for path in ["/garbage.pem", "/big.pem", "/redirect.pem", "/missing.pem"] {
            failed_with(
                &check(&v, &header(&pki, port, path)).await,
                Cause::BadIdentityInfo,
                "x5u-content",
            );
        }
        // Private addresses are refused unless allowed.
        let strict = verifier(&pki, false);
        failed_with(
            &check(&strict, &header(&pki, port, "/good.pem")).await,
            Cause::BadIdentityInfo,
            "x5u-content",
        );
        // A hanging server: No-TN-Validation within the deadline, while a
        // call whose certificate is cached goes through at once.
        let started = Instant::now();
        let hanging = header(&pki, port, "/hang.pem");
        let cached = header(&pki, port, "/good.pem");
        let (slow, fast) = tokio::join!(check(&v, &hanging), check(&v, &cached));
        assert_eq!(fast.status, Status::Passed, "{fast:#?}");
        assert_eq!(slow.status, Status::NoValidation, "{slow:#?}");
        assert!(
            slow.unavailable
                .as_deref()
                .is_some_and(|u| u.starts_with("certificate unavailable")),
            "{slow:#?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "bounded by the 500 ms deadline, took {:?}",
            started.elapsed()
        );
    });
    // The good chain was fetched once per verifier (the forged-CRL one has
    // its own cache) and then served from the cache.
    assert_eq!(
        counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get("/good.pem"),
        Some(&2)
    );
}

#[test]
fn concurrent_requests_for_one_url_are_coalesced() {
    let pki = pki();
    let (port, counts) = https_server(&pki);
    let rt = runtime();
    rt.block_on(async {
        let v = verifier(&pki, true);
        let h = header(&pki, port, "/good.pem");
        let all = futures_join(&v, &h, 8).await;
        assert!(all.iter().all(|r| r.status == Status::Passed), "{all:#?}");
    });
    assert_eq!(
        counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get("/good.pem"),
        Some(&1),
        "eight calls, one fetch"
    );
}

async fn futures_join(v: &Arc<Verifier>, h: &str, n: usize) -> Vec<Verification> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (v, h) = (v.clone(), h.to_owned());
            tokio::spawn(async move { check(&v, &h).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[test]
fn cli_verify_fetches_x5u() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let h = header(&pki, port, "/good.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "verify",
            "--identity",
            &h,
            "--from",
            "+15550199",
            "--to",
            "15550100",
            "--allow-private-x5u",
            "--trust",
        ])
        .arg(&pki.trust_dir)
        .arg("--x5u-ca")
        .arg(&pki.web_ca)
        .output()
        .expect("run callgate verify");
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(json.contains("\"spc\": \"1234\""), "{json}");
}

/// A PASSporT of any type signed with the good key, as an Identity value.
fn signed(pki: &Pki, port: u16, ppt: &str, claims: Claims) -> String {
    let header = Header {
        alg: Some("ES256".into()),
        ppt: Some(ppt.into()),
        typ: Some("passport".into()),
        x5u: Some(format!("https://127.0.0.1:{port}/good.pem")),
    };
    sign_passport(&pki.signing, &header, &claims).expect("sign")
}

fn tn(t: &str) -> Dest {
    Dest {
        tn: vec![t.into()],
        uri: vec![],
    }
}

fn orig(t: &str) -> Orig {
    Orig {
        tn: Some(t.into()),
        uri: None,
    }
}

/// Changes one character in the middle of a PASSporT's signature part.
fn tamper(h: &str) -> String {
    let (token, params) = h.split_once(';').expect("params");
    let mut t = token.to_owned();
    let at = t.len() - 20;
    let new = if &t[at..=at] == "A" { "B" } else { "A" };
    t.replace_range(at..=at, new);
    format!("{t};{params}")
}

#[test]
fn diverted_calls_verify_through_their_div_chain_and_rcd_is_kept_when_verified() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let rt = runtime();
    rt.block_on(async {
        let v = verifier(&pki, true);
        // Signed for 15550100, diverted to 15550200 (RFC 8946).
        let shaken = header(&pki, port, "/good.pem");
        let div = |from: &str, to: &str, caller: &str| {
            signed(
                &pki,
                port,
                "div",
                Claims {
                    dest: tn(to),
                    div: Some(Div {
                        tn: Some(from.into()),
                        uri: None,
                    }),
                    iat: Some(now()),
                    orig: orig(caller),
                    ..Claims::default()
                },
            )
        };
        let hop = div("15550100", "15550200", "15550199");
        let call = |ids: Vec<String>, to: &'static str| {
            let v = v.clone();
            async move {
                let refs: Vec<&[u8]> = ids.iter().map(|s| s.as_bytes()).collect();
                v.verify_call(&refs, "+15550199", &[to], now()).await
            }
        };
        let passed = call(vec![shaken.clone(), hop.clone()], "15550200").await;
        assert_eq!(passed.status, Status::Passed, "{passed:#?}");
        assert_eq!(passed.diversion.len(), 1);
        assert_eq!(passed.diversion[0].from, "15550100");
        // Two hops, given in any order.
        let second = div("15550200", "15550300", "15550199");
        let two = call(
            vec![second.clone(), shaken.clone(), hop.clone()],
            "15550300",
        )
        .await;
        assert_eq!(two.status, Status::Passed, "{two:#?}");
        assert_eq!(two.diversion.len(), 2);
        // Without the div PASSporT the destination does not match.
        failed_with(
            &call(vec![shaken.clone()], "15550200").await,
            Cause::InvalidIdentityHeader,
            "dest",
        );
        // A tampered div, or one for another caller, fails the call.
        failed_with(
            &call(vec![shaken.clone(), tamper(&hop)], "15550200").await,
            Cause::InvalidIdentityHeader,
            "div",
        );
        failed_with(
            &call(
                vec![shaken.clone(), div("15550100", "15550200", "15550999")],
                "15550200",
            )
            .await,
            Cause::InvalidIdentityHeader,
            "div",
        );
        // Rich call data in a separate rcd PASSporT (RFC 9795).
        let rcd = signed(
            &pki,
            port,
            "rcd",
            Claims {
                dest: tn("15550100"),
                iat: Some(now()),
                orig: orig("15550199"),
                rcd: Some(serde_json::json!({"nam": "Acme Bank Fraud Team"})),
                ..Claims::default()
            },
        );
        let with_rcd = call(vec![shaken.clone(), rcd.clone()], "15550100").await;
        assert_eq!(with_rcd.status, Status::Passed, "{with_rcd:#?}");
        let r = with_rcd.rcd.as_ref().expect("rcd kept");
        assert_eq!(r.nam.as_deref(), Some("Acme Bank Fraud Team"));
        assert_eq!(r.source, RcdSource::Rcd);
        // A tampered rcd PASSporT is ignored, the call still passes.
        let bad_rcd = call(vec![shaken.clone(), tamper(&rcd)], "15550100").await;
        assert_eq!(bad_rcd.status, Status::Passed, "{bad_rcd:#?}");
        assert!(bad_rcd.rcd.is_none());
        assert!(bad_rcd.checks.iter().any(|c| c.name == "rcd" && !c.ok));
        // rcd and crn claims inside the SHAKEN PASSporT itself.
        let enhanced = signed(
            &pki,
            port,
            "shaken",
            Claims {
                attest: Some("A".into()),
                crn: Some("Appointment reminder".into()),
                dest: tn("15550100"),
                iat: Some(now()),
                orig: orig("15550199"),
                origid: Some("123e4567-e89b-12d3-a456-426655440001".into()),
                rcd: Some(serde_json::json!({"nam": "Clinic"})),
                ..Claims::default()
            },
        );
        let e = call(vec![enhanced], "15550100").await;
        assert_eq!(e.status, Status::Passed, "{e:#?}");
        let r = e.rcd.as_ref().expect("rcd from shaken");
        assert_eq!(
            (r.nam.as_deref(), r.crn.as_deref(), r.source),
            (
                Some("Clinic"),
                Some("Appointment reminder"),
                RcdSource::Shaken
            )
        );
    });
}

#[test]
fn signature_checks_on_the_worker_pool_give_the_same_verdicts() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let rt = runtime();
    rt.block_on(async {
        let pool = SignatureOffload::start(1).expect("pool");
        pool.set_active(true);
        let trust = TrustStore::from_dir(&pki.trust_dir).expect("trust");
        let mut s = settings(&pki, true);
        s.crl_fetch = false;
        s.offload = Some(pool.clone());
        let v = Verifier::new(s, trust);
        let good = check(&v, &header(&pki, port, "/good.pem")).await;
        assert_eq!(good.status, Status::Passed, "{good:#?}");
        let sig = good.checks.iter().find(|c| c.name == "signature");
        assert!(sig.is_some_and(|c| c.ok && c.micros.is_some()), "{sig:?}");
        failed_with(
            &check(&v, &tamper(&header(&pki, port, "/good.pem"))).await,
            Cause::InvalidIdentityHeader,
            "signature",
        );
        assert_eq!(pool.offloaded(), 2, "both checks ran on the pool");
        // Switched off: inline again, same verdict.
        pool.set_active(false);
        let again = check(&v, &header(&pki, port, "/good.pem")).await;
        assert_eq!(again.status, Status::Passed, "{again:#?}");
        assert_eq!(pool.offloaded(), 2);
    });
}

// ---- What a caller's PASSporT can make callgate fetch (issue 13): CRL
// distribution points only of chains that validate and only up to the
// bounds; the cache forgets its coldest entries first; fetches through an
// egress CONNECT proxy, and a dead proxy costs a call only the deadline.

/// A verifier with `s` and the trust anchors only (no configured CRL).
fn with(pki: &Pki, s: VerifierSettings) -> Arc<Verifier> {
    Verifier::new(s, TrustStore::from_dir(&pki.trust_dir).expect("trust"))
}

fn verify_now(v: &Arc<Verifier>, h: &str) -> Verification {
    runtime().block_on(check(v, h))
}

/// Serves HTTP on `listener` for at most 30 s, answering every request
/// 404 after counting it (the distribution points of the test chains).
fn counting_http(listener: TcpListener) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let stop = Instant::now() + Duration::from_secs(30);
        while Instant::now() < stop {
            match listener.accept() {
                Ok((mut tcp, _)) => {
                    seen.fetch_add(1, Ordering::SeqCst);
                    tcp.set_nonblocking(false).ok();
                    tcp.set_read_timeout(Some(Duration::from_secs(2))).ok();
                    let mut buf = [0u8; 2048];
                    let _ = tcp.read(&mut buf);
                    let _ = tcp.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    count
}

/// A chain to an unknown root naming twenty CRL distribution points: the
/// URLs are the caller's choice, and nothing vouches for them. Before
/// issue 13 each was fetched (one INVITE, any number of attacker-chosen
/// URLs); now none is, and the refusal is counted.
#[test]
fn crl_distribution_points_of_an_unvalidated_chain_are_never_fetched() {
    let mut pki = pki();
    let dps = counting_http(pki.many_dps_listener.take().expect("listener"));
    let (port, _) = https_server(&pki);
    let s = settings(&pki, true);
    let counters = s.counters.clone();
    let v = with(
        &pki,
        VerifierSettings {
            max_crl_dps: 16,
            ..s
        },
    );
    let r = verify_now(&v, &header(&pki, port, "/stranger-dps.pem"));
    assert_eq!(r.status, Status::Failed, "{r:#?}");
    assert_eq!(
        dps.load(Ordering::SeqCst),
        0,
        "no distribution point fetched"
    );
    assert_eq!(
        counters.refused_count(callgate::stir::cache::Refusal::UnvalidatedChain),
        1
    );
}

/// A valid chain naming twenty distribution points: at most `max_crl_dps`
/// of them are fetched, and never more network fetches in all (x5u and
/// CRLs) than `max_fetches_per_call`; revocation by the others is recorded
/// as not checked.
#[test]
fn an_invite_causes_at_most_the_bounded_number_of_fetches() {
    let mut pki = pki();
    let dps = counting_http(pki.many_dps_listener.take().expect("listener"));
    let (port, x5u) = https_server(&pki);
    let v = with(&pki, settings(&pki, true));
    let r = verify_now(&v, &header(&pki, port, "/many-dps.pem"));
    assert_eq!(r.status, Status::Passed, "{r:#?}");
    assert_eq!(dps.load(Ordering::SeqCst), 2, "max_crl_dps = 2");
    assert!(
        r.checks
            .iter()
            .any(|c| c.name == "crl" && !c.ok && c.detail.contains("20 distribution points")),
        "{r:#?}"
    );
    // The per-call budget binds first when it is smaller: one x5u fetch
    // and two CRL fetches of three.
    let s = settings(&pki, true);
    let v = with(
        &pki,
        VerifierSettings {
            max_crl_dps: MANY_DPS,
            max_fetches_per_call: 3,
            ..s
        },
    );
    let r = verify_now(&v, &header(&pki, port, "/many-dps.pem"));
    assert_eq!(r.status, Status::Passed, "{r:#?}");
    assert_eq!(dps.load(Ordering::SeqCst), 2 + 2, "two more CRL fetches");
    let x5u_fetches = x5u
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get("/many-dps.pem")
        .copied();
    assert_eq!(x5u_fetches, Some(2), "one x5u fetch per verifier");
}

/// With the cache full, a flood of new URLs pushes out the coldest
/// entries, never the chain every call uses: it is fetched once. Before,
/// a full cache dropped every entry (and a CRL that could not be fetched
/// again let its revoked certificates pass). Its certificate stays revoked.
#[test]
fn a_full_cache_keeps_its_hot_entries_and_a_revoked_certificate_stays_revoked() {
    let mut pki = pki();
    let crl = crl_server(&mut pki);
    let (port, x5u) = https_server(&pki);
    let s = settings(&pki, true);
    let counters = s.counters.clone();
    let v = with(
        &pki,
        VerifierSettings {
            max_entries: 4,
            ..s
        },
    );
    let hot = header(&pki, port, "/dp-revoked.pem");
    for i in 0..12 {
        let r = verify_now(&v, &hot);
        assert_eq!(r.status, Status::Failed, "{r:#?}");
        assert!(
            r.failure
                .as_ref()
                .is_some_and(|f| f.text.contains("evoked")),
            "revoked at round {i}: {r:#?}"
        );
        // A URL never seen (404): a new cache entry each round.
        let cold = verify_now(&v, &header(&pki, port, &format!("/cold-{i}.pem")));
        assert_ne!(cold.status, Status::Passed);
    }
    let fetched = |path: &str| {
        x5u.lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(fetched("/dp-revoked.pem"), 1, "the hot chain stayed cached");
    assert_eq!(*crl.lock().unwrap_or_else(|p| p.into_inner()), 1);
    assert!(
        counters.x5u.evicted.load(Ordering::Relaxed) >= 8,
        "cold entries were evicted"
    );
    assert!(v.cached() <= 4);
}

/// A small HTTP CONNECT proxy on loopback: it counts the tunnels it
/// opened and relays bytes both ways; `hang` accepts and never answers.
/// Stops accepting after 30 s.
fn connect_proxy(hang: bool) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let tunnels = Arc::new(Mutex::new(Vec::new()));
    let seen = tunnels.clone();
    std::thread::spawn(move || {
        let stop = Instant::now() + Duration::from_secs(30);
        let mut held = Vec::new();
        while Instant::now() < stop {
            let Ok((client, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            if hang {
                held.push(client);
                continue;
            }
            let seen = seen.clone();
            std::thread::spawn(move || tunnel(client, &seen));
        }
    });
    (port, tunnels)
}

fn tunnel(mut client: TcpStream, seen: &Mutex<Vec<String>>) {
    client.set_nonblocking(false).ok();
    client.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let Some(target) = head
        .strip_prefix("CONNECT ")
        .and_then(|r| r.split(' ').next())
    else {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
        return;
    };
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(target.to_owned());
    let Ok(upstream) = TcpStream::connect(target) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    };
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let a = pipe(client, upstream);
    let b = pipe(u2, c2);
    let _ = a.join();
    let _ = b.join();
}

fn through_proxy(pki: &Pki, port: u16) -> VerifierSettings {
    let mut s = settings(pki, true);
    s.fetch.proxy = Some(Proxy {
        host: "127.0.0.1".to_owned(),
        port,
    });
    s
}

/// `[stir] fetch_proxy`: the x5u fetch is tunnelled through the proxy
/// (HTTP CONNECT) and the chain verifies; with the proxy refusing
/// connections, or accepting and never answering, the call goes on
/// unvalidated by the deadline with the proxy or the deadline as cause.
#[test]
fn x5u_is_fetched_through_an_egress_proxy_and_a_dead_proxy_costs_only_the_deadline() {
    let pki = pki();
    let (port, x5u) = https_server(&pki);
    let (proxy_port, tunnels) = connect_proxy(false);
    let v = with(&pki, through_proxy(&pki, proxy_port));
    let r = verify_now(&v, &header(&pki, port, "/good.pem"));
    assert_eq!(r.status, Status::Passed, "{r:#?}");
    assert_eq!(
        *tunnels.lock().unwrap_or_else(|p| p.into_inner()),
        vec![format!("127.0.0.1:{port}")]
    );
    assert_eq!(
        x5u.lock()
            .unwrap_or_else(|p| p.into_inner())
            .get("/good.pem")
            .copied(),
        Some(1)
    );

    // Nothing listens at the proxy's address any more.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let v = with(&pki, through_proxy(&pki, closed_port));
    let r = verify_now(&v, &header(&pki, port, "/good.pem"));
    assert_eq!(r.status, Status::NoValidation, "{r:#?}");
    let cause = r.unavailable.clone().unwrap_or_default();
    assert!(cause.contains("proxy"), "{cause}");

    // A proxy that accepts and never answers: the deadline decides.
    let (hung_port, _) = connect_proxy(true);
    let v = with(&pki, through_proxy(&pki, hung_port));
    let r = verify_now(&v, &header(&pki, port, "/good.pem"));
    assert_eq!(r.status, Status::NoValidation, "{r:#?}");
    let cause = r.unavailable.clone().unwrap_or_default();
    assert!(cause.contains("no certificate within 500 ms"), "{cause}");
}

/// A CRL distribution point that accepts, reads the request and never
/// answers; reports when the client closed the connection.
fn hanging_crl_server(listener: TcpListener) -> std::sync::mpsc::Receiver<()> {
    let (closed, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut tcp, _)) = listener.accept() else {
            return;
        };
        // Bounded: gives up after 20 s.
        tcp.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let mut buf = [0u8; 2048];
        loop {
            match tcp.read(&mut buf) {
                Ok(0) => {
                    let _ = closed.send(());
                    return;
                }
                Ok(_) => continue,
                Err(_) => return,
            }
        }
    });
    rx
}

/// A CRL fetch is abandoned when the call's deadline passes (issue 13:
/// it ran on to the fetch timeout, after the call had gone on): with a
/// 10 s fetch timeout and a 500 ms deadline, the CRL server sees the
/// connection closed long before the timeout, and the call passed with
/// revocation recorded as not checked.
#[test]
fn a_crl_fetch_is_abandoned_at_the_calls_deadline() {
    let mut pki = pki();
    let closed = hanging_crl_server(pki.crl_listener.take().expect("crl listener"));
    let (port, _) = https_server(&pki);
    let mut s = settings(&pki, true);
    s.fetch.timeout = Duration::from_secs(10);
    let v = with(&pki, s);
    // One runtime throughout: the fetch task lives on after the call, as
    // in callgate (dropping the runtime would close the connection anyway).
    let rt = runtime();
    let r = rt.block_on(check(&v, &header(&pki, port, "/dp-good.pem")));
    assert_eq!(r.status, Status::Passed, "{r:#?}");
    assert!(
        r.checks
            .iter()
            .any(|c| c.name == "crl" && !c.ok && c.detail.contains("not fetched in time")),
        "{r:#?}"
    );
    let seen = rt.block_on(async {
        tokio::task::spawn_blocking(move || closed.recv_timeout(Duration::from_secs(5)).is_ok())
            .await
            .unwrap_or(false)
    });
    assert!(
        seen,
        "the CRL fetch still held its connection 5 s after the deadline"
    );
}
