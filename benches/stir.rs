//! Criterion benchmarks of STIR/SHAKEN verification with a warm cache,
//! against the bare ES256 signature check in the same run:
//! - `es256_raw_aws_lc`: aws-lc-rs's P-256/SHA-256 verification of the
//!   PASSporT's signing input, the key given as bytes — the floor any
//!   verifier pays (`es256_raw_aws_lc_parsed`: with the key parsed once);
//! - `verify_warm`: callgate's whole verification of the same Identity
//!   header — parsing, every claim check, the cached chain (validated once,
//!   remembered for its validity window), the signature, the summary.
//!
//! The ratio `es256_raw_aws_lc / verify_warm` is the share of time spent in the
//! signature check (goal ≥ 0.9: everything around it costs under 10%).
//!
//! `cargo bench --bench stir`

use std::time::Duration;

use aws_lc_rs::signature::{ParsedPublicKey, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use callgate::stir::certs::TrustStore;
use callgate::stir::fetch::{tls_config, FetchOptions};
use callgate::stir::keys::{PublicKey, SigningKey};
use callgate::stir::passport::{Expect, Passport};
use callgate::stir::service::{Verifier, VerifierSettings};
use callgate::stir::sign::{identity_header, SignRequest};
use callgate::stir::verify::{self, Status};

const X5U: &str = "https://cert.example.org/sti.pem";
const POLICY: [u8; 16] = [
    0x30, 0x0e, 0x30, 0x0c, 0x06, 0x0a, 0x60, 0x86, 0x48, 0x01, 0x86, 0xff, 0x09, 0x01, 0x01, 0x03,
];
const TN_AUTH_LIST: [u8; 10] = [0x30, 0x08, 0xa0, 0x06, 0x16, 0x04, b'1', b'2', b'3', b'4'];

fn ca(
    name: &str,
    issuer: Option<(&rcgen::Certificate, &KeyPair)>,
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(DnType::CommonName, name);
    p.custom_extensions = vec![CustomExtension::from_oid_content(
        &[2, 5, 29, 32],
        POLICY.to_vec(),
    )];
    let cert = match issuer {
        Some((i, k)) => p.signed_by(&key, i, k),
        None => p.self_signed(&key),
    }
    .expect("cert");
    (cert, key)
}

fn bench(c: &mut Criterion) {
    let (root, root_key) = ca("STI root", None);
    let (inter, inter_key) = ca("STI intermediate", Some((&root, &root_key)));
    let leaf_key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(DnType::CommonName, "SHAKEN 1234");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.custom_extensions = vec![
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 26], TN_AUTH_LIST.to_vec()),
        CustomExtension::from_oid_content(&[2, 5, 29, 32], POLICY.to_vec()),
    ];
    let leaf = p.signed_by(&leaf_key, &inter, &inter_key).expect("leaf");

    let dir = tempfile::tempdir().expect("tempdir");
    let trust_dir = dir.path().join("trust");
    let preload = dir.path().join("preload");
    std::fs::create_dir(&trust_dir).expect("mkdir");
    std::fs::create_dir(&preload).expect("mkdir");
    std::fs::write(trust_dir.join("root.pem"), root.pem()).expect("write");
    std::fs::write(
        preload.join("sti.pem"),
        format!("x5u: {X5U}\n{}{}", leaf.pem(), inter.pem()),
    )
    .expect("write");

    let settings = VerifierSettings {
        fetch: FetchOptions {
            tls: tls_config(&[]).expect("tls"),
            timeout: Duration::from_secs(1),
            max_bytes: 64 * 1024,
            allow_private: false,
            proxy: None,
        },
        deadline: Duration::from_millis(300),
        freshness_secs: 1_000_000_000,
        skew_secs: 5,
        min_cache: Duration::from_secs(300),
        max_cache: Duration::from_secs(86_400),
        negative_ttl: Duration::from_secs(30),
        max_entries: 100,
        max_cache_bytes: 64 << 20,
        max_fetches_per_call: 6,
        max_crl_dps: 2,
        crl_fetch: false,
        counters: Default::default(),
        shared: None,
        offload: None,
    };
    let verifier = Verifier::new(settings, TrustStore::from_dir(&trust_dir).expect("trust"));
    assert_eq!(verifier.preload(&preload), Ok(1));

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let signing = SigningKey::from_pem(leaf_key.serialize_pem().as_bytes()).expect("signing key");
    let identity = identity_header(
        &signing,
        &SignRequest {
            orig: "+15550199",
            dest: "15550100",
            attest: 'A',
            origid: "123e4567-e89b-12d3-a456-426655440000",
            x5u: X5U,
            iat: now,
        },
    )
    .expect("sign");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let first = rt.block_on(verifier.verify(identity.as_bytes(), "+15550199", &["15550100"], now));
    assert_eq!(first.status, Status::Passed, "{first:#?}");

    let token = identity.split(';').next().unwrap_or_default();
    let passport = Passport::decode(token).expect("passport");
    let public = PublicKey::from_pem(leaf.pem().as_bytes()).expect("public key");
    let mut g = c.benchmark_group("stir");
    g.bench_function("es256_raw_aws_lc", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, black_box(public.point()))
                .verify(
                    passport.signing_input.as_bytes(),
                    black_box(&passport.signature),
                )
                .is_ok()
        })
    });
    let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public.point()).expect("key");
    g.bench_function("es256_raw_aws_lc_parsed", |b| {
        b.iter(|| {
            parsed
                .verify_sig(
                    passport.signing_input.as_bytes(),
                    black_box(&passport.signature),
                )
                .is_ok()
        })
    });
    g.bench_function("parse_and_claims", |b| {
        let dest = ["15550100"];
        let expect = Expect {
            orig: "+15550199",
            dest: &dest,
            now,
            freshness_secs: 1_000_000_000,
            skew_secs: 5,
        };
        b.iter(|| verify::preflight(black_box(identity.as_bytes()), &expect).is_ok())
    });
    g.bench_function("verify_warm", |b| {
        b.iter(|| {
            let v = rt.block_on(verifier.verify(
                black_box(identity.as_bytes()),
                "+15550199",
                &["15550100"],
                now,
            ));
            debug_assert_eq!(v.status, Status::Passed);
            v
        })
    });
    g.finish();
}

/// A `div` PASSporT (RFC 8946) from `from` to each of `to`, unsigned: the
/// path search looks at claims only.
fn div(from: &str, to: Vec<String>) -> Passport {
    use callgate::stir::passport::{Claims, Dest, Div, Header};
    Passport {
        header: Header::default(),
        claims: Claims {
            dest: Dest {
                tn: to,
                uri: vec![],
            },
            div: Some(Div {
                tn: Some(from.into()),
                uri: None,
            }),
            ..Claims::default()
        },
        signing_input: String::new(),
        signature: vec![],
    }
}

/// The `div` path search (`stir::divert`) on an attacker's set: seven
/// `div` PASSporTs (the most one INVITE can carry beside its SHAKEN one),
/// all diverting 15550100 back to itself `k` times over, and none reaching
/// the called number — the worst case for a search that neither
/// deduplicates nor remembers where it has been (issue 13: on the old
/// search, k = 3 took seconds and hundreds of MB). `k_distinct`: each list
/// names `k` different numbers that all divert onwards.
fn bench_div(c: &mut Criterion) {
    use callgate::stir::divert;
    let mut g = c.benchmark_group("stir_div");
    g.sample_size(10);
    for k in [2usize, 3] {
        let set: Vec<Passport> = (0..7)
            .map(|_| div("15550100", vec!["15550100".to_owned(); k]))
            .collect();
        let refs: Vec<&Passport> = set.iter().collect();
        let original = ["15550100".to_owned()];
        g.bench_function(format!("path_self_loops_k{k}"), |b| {
            b.iter(|| black_box(divert::path(&original, &["15559999"], black_box(&refs))))
        });
    }
    let k = 1_000;
    let numbers: Vec<String> = (0..k).map(|i| format!("1555{i:07}")).collect();
    let set: Vec<Passport> = (0..7)
        .map(|i| div(&numbers[i * 7], numbers.clone()))
        .collect();
    let refs: Vec<&Passport> = set.iter().collect();
    g.bench_function("reachable_distinct_k1000", |b| {
        b.iter(|| black_box(divert::reachable(&["15550000000"], black_box(&refs))))
    });
    g.finish();
}

criterion_group!(benches, bench, bench_div);
criterion_main!(benches);
