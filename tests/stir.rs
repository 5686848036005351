//! STIR/SHAKEN primitives: every verification failure has its own cause, and
//! interop both ways with secsipidx (an independent implementation).

use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use callgate::stir::keys::{PublicKey, SigningKey};
use callgate::stir::passport::Expect;
use callgate::stir::sign::{identity_header, SignRequest};
use callgate::stir::verify::{verify, Status, Verification};
use callgate::stir::Cause;

const X5U: &str = "https://cert.example.org/sti.pem";
const NOW: i64 = 1_800_000_000;

struct Keys {
    signing: SigningKey,
    public: PublicKey,
    private_pem: String,
    public_pem: String,
    cert_pem: String,
    pkcs8: Vec<u8>,
}

fn keys() -> Keys {
    let kp = rcgen::KeyPair::generate().expect("keypair");
    let cert = rcgen::CertificateParams::new(vec!["sti.example.org".into()])
        .expect("params")
        .self_signed(&kp)
        .expect("cert");
    Keys {
        signing: SigningKey::from_pem(kp.serialize_pem().as_bytes()).expect("signing key"),
        public: PublicKey::from_pem(cert.pem().as_bytes()).expect("public key from certificate"),
        private_pem: kp.serialize_pem(),
        public_pem: kp.public_key_pem(),
        cert_pem: cert.pem(),
        pkcs8: kp.serialize_der(),
    }
}

fn request(attest: char) -> SignRequest<'static> {
    SignRequest {
        orig: "+15550199",
        dest: "15550100",
        attest,
        origid: "123e4567-e89b-12d3-a456-426655440000",
        x5u: X5U,
        iat: NOW,
    }
}

fn expect(now: i64) -> Expect<'static> {
    Expect {
        orig: "+1 555 0199",
        dest: &["15550100"],
        now,
        freshness_secs: 60,
        skew_secs: 5,
    }
}

fn failed_with(v: &Verification, cause: Cause, check: &str) {
    assert_eq!(v.status, Status::Failed, "{v:#?}");
    let f = v.failure.as_ref().expect("failure");
    assert_eq!(f.cause, cause, "{v:#?}");
    assert_eq!(f.code, cause.status());
    assert!(
        f.text.starts_with(check),
        "expected the {check} check to fail first: {}",
        f.text
    );
}

/// Signs arbitrary header/claims JSON with the test key, to forge
/// well-signed but invalid PASSporTs.
fn forge(k: &Keys, header: &str, claims: &str, info: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &k.pkcs8,
    )
    .expect("pair");
    let sig = pair.sign(&rng, input.as_bytes()).expect("sign");
    format!(
        "{input}.{};info=<{info}>;alg=ES256;ppt=shaken",
        URL_SAFE_NO_PAD.encode(sig.as_ref())
    )
}

const GOOD_HEADER: &str =
    r#"{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"https://cert.example.org/sti.pem"}"#;
const GOOD_CLAIMS: &str = r#"{"attest":"A","dest":{"tn":["15550100"]},"iat":1800000000,"orig":{"tn":"15550199"},"origid":"123e4567-e89b-12d3-a456-426655440000"}"#;

#[test]
fn valid_a_b_c_calls_pass() {
    let k = keys();
    for attest in ['A', 'B', 'C'] {
        let h = identity_header(&k.signing, &request(attest)).expect("sign");
        let v = verify(h.as_bytes(), &expect(NOW + 10), &k.public);
        assert_eq!(v.status, Status::Passed, "{v:#?}");
        assert_eq!(v.attest.as_deref(), Some(attest.to_string().as_str()));
        assert_eq!(v.checks.len(), 11);
        assert!(v.checks.iter().all(|c| c.ok));
    }
}

#[test]
fn each_failure_has_its_own_cause() {
    let k = keys();
    let good = identity_header(&k.signing, &request('A')).expect("sign");
    let e = expect(NOW);

    // Tampered payload: claims swapped after signing.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(GOOD_CLAIMS.replace("15550199", "15550666"));
    let tampered = parts.join(".");
    failed_with(
        &verify(tampered.as_bytes(), &expect(NOW), &k.public),
        Cause::InvalidIdentityHeader,
        "orig",
    );
    let tampered_same_orig = {
        let mut p: Vec<String> = good.split('.').map(str::to_owned).collect();
        p[1] = URL_SAFE_NO_PAD.encode(GOOD_CLAIMS.replace("\"A\"", "\"B\""));
        p.join(".")
    };
    failed_with(
        &verify(tampered_same_orig.as_bytes(), &e, &k.public),
        Cause::InvalidIdentityHeader,
        "signature",
    );
    // Wrong key.
    failed_with(
        &verify(good.as_bytes(), &e, &keys().public),
        Cause::InvalidIdentityHeader,
        "signature",
    );
    // alg none / HS256, missing ppt, wrong typ.
    for (header, check) in [
        (GOOD_HEADER.replace("ES256", "none"), "alg"),
        (GOOD_HEADER.replace("ES256", "HS256"), "alg"),
        (GOOD_HEADER.replace(r#""ppt":"shaken","#, ""), "ppt"),
        (GOOD_HEADER.replace("passport", "jwt"), "typ"),
    ] {
        let h = forge(&k, &header, GOOD_CLAIMS, X5U);
        failed_with(
            &verify(h.as_bytes(), &e, &k.public),
            Cause::InvalidIdentityHeader,
            check,
        );
    }
    // x5u different from info; http x5u.
    let h = forge(
        &k,
        GOOD_HEADER,
        GOOD_CLAIMS,
        "https://elsewhere.example/c.pem",
    );
    failed_with(
        &verify(h.as_bytes(), &e, &k.public),
        Cause::BadIdentityInfo,
        "x5u-info",
    );
    let http = GOOD_HEADER.replace("https://", "http://");
    let h = forge(&k, &http, GOOD_CLAIMS, "http://cert.example.org/sti.pem");
    failed_with(
        &verify(h.as_bytes(), &e, &k.public),
        Cause::BadIdentityInfo,
        "x5u-https",
    );
    // Stale and future iat.
    failed_with(
        &verify(good.as_bytes(), &expect(NOW + 61), &k.public),
        Cause::StaleDate,
        "iat",
    );
    failed_with(
        &verify(good.as_bytes(), &expect(NOW - 6), &k.public),
        Cause::StaleDate,
        "iat",
    );
    // Orig and dest mismatch.
    let other = Expect {
        orig: "15550000",
        ..expect(NOW)
    };
    failed_with(
        &verify(good.as_bytes(), &other, &k.public),
        Cause::InvalidIdentityHeader,
        "orig",
    );
    let other = Expect {
        dest: &["15559999"],
        ..expect(NOW)
    };
    failed_with(
        &verify(good.as_bytes(), &other, &k.public),
        Cause::InvalidIdentityHeader,
        "dest",
    );
    // Bad attest, empty origid.
    let h = forge(&k, GOOD_HEADER, &GOOD_CLAIMS.replace("\"A\"", "\"D\""), X5U);
    failed_with(
        &verify(h.as_bytes(), &e, &k.public),
        Cause::InvalidIdentityHeader,
        "attest",
    );
    let h = forge(
        &k,
        GOOD_HEADER,
        &GOOD_CLAIMS.replace("123e4567-e89b-12d3-a456-426655440000", ""),
        X5U,
    );
    failed_with(
        &verify(h.as_bytes(), &e, &k.public),
        Cause::InvalidIdentityHeader,
        "origid",
    );
    // Garbage.
    failed_with(
        &verify(b"garbage", &e, &k.public),
        Cause::InvalidIdentityHeader,
        "token",
    );
    // A 65-byte signature is refused before any crypto.
    let mut p: Vec<String> = good
        .split(';')
        .next()
        .unwrap_or_default()
        .split('.')
        .map(str::to_owned)
        .collect();
    p[2] = URL_SAFE_NO_PAD.encode([1u8; 65]);
    let long = format!("{};info=<{X5U}>;alg=ES256;ppt=shaken", p.join("."));
    failed_with(
        &verify(long.as_bytes(), &e, &k.public),
        Cause::InvalidIdentityHeader,
        "signature",
    );
}

/// Writes a file readable by its owner only (callgate refuses a key
/// others can read).
fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[test]
fn secsipidx_signs_and_callgate_verifies() {
    let k = keys();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = write(dir.path(), "key.pem", &k.private_pem);
    let cert = write(dir.path(), "cert.pem", &k.cert_pem);
    for attest in ["A", "B", "C"] {
        let out = Command::new("secsipidx")
            .args([
                "-sign-full",
                "-orig-tn",
                "15550199",
                "-dest-tn",
                "15550100",
                "-attest",
                attest,
                "-x5u",
                X5U,
                "-orig-id",
                "123e4567-e89b-12d3-a456-426655440000",
                "-k",
            ])
            .arg(&key)
            .output()
            .expect("run secsipidx (apt-get install secsipidx)");
        assert!(
            out.status.success(),
            "secsipidx: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let identity = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let v = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args([
                "verify",
                "--identity",
                &identity,
                "--from",
                "+15550199",
                "--to",
                "15550100",
                "--at",
                &now().to_string(),
                "--cert",
            ])
            .arg(&cert)
            .output()
            .expect("run callgate verify");
        let json = String::from_utf8_lossy(&v.stdout);
        assert!(
            v.status.success(),
            "callgate verify of a secsipidx header failed:\n{json}"
        );
        assert!(
            json.contains(&format!("\"attest\": \"{attest}\"")),
            "{json}"
        );
    }
}

#[test]
fn callgate_signs_and_secsipidx_verifies() {
    let k = keys();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = write(dir.path(), "key.pem", &k.private_pem);
    let public = write(dir.path(), "public.pem", &k.public_pem);
    for attest in ["A", "B", "C"] {
        let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args([
                "sign",
                "--orig",
                "+15550199",
                "--dest",
                "15550100",
                "--attest",
                attest,
                "--x5u",
                X5U,
                "--key",
            ])
            .arg(&key)
            .output()
            .expect("run callgate sign");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let identity = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let file = write(dir.path(), "identity.txt", &identity);
        let check = Command::new("secsipidx")
            .args(["-check", "-expire", "60", "-fidentity"])
            .arg(&file)
            .arg("-p")
            .arg(&public)
            .output()
            .expect("run secsipidx");
        assert!(
            check.status.success(),
            "secsipidx rejected callgate's header: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        // And a tampered one is rejected by secsipidx too.
        let tampered = identity.replacen('.', ".e", 1);
        let file = write(dir.path(), "tampered.txt", &tampered);
        let check = Command::new("secsipidx")
            .args(["-check", "-fidentity"])
            .arg(&file)
            .arg("-p")
            .arg(&public)
            .output()
            .expect("run secsipidx");
        assert!(
            !check.status.success(),
            "secsipidx accepted a tampered header"
        );
    }
}

#[test]
fn keys_load_from_sec1_and_reject_garbage() {
    let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEID8R9D0PP7dsLosdV20qxTv7wCgHDEs9ovBm8QrhEzh/oAoGCCqGSM49\nAwEHoUQDQgAEb1i3hXSa3dDnbrvLaFW0KyKSeMFbyoNl1hPTaTODuLzcqQmJ2O1t\nnkS7c1fXMnkgvZSOVpgiOh7VmxXqBAvVOQ==\n-----END EC PRIVATE KEY-----\n";
    // Whether or not this particular point matches its scalar, loading must
    // not panic and must say why when it fails.
    let _ = SigningKey::from_pem(sec1.as_bytes());
    assert!(SigningKey::from_pem(b"not pem").is_err());
    assert!(
        PublicKey::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .is_err()
    );
}

#[test]
fn sign_csv_writes_fresh_verifiable_calls_for_sipp() {
    let k = keys();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = write(dir.path(), "key.pem", &k.private_pem);
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "sign",
            "--orig",
            "+15550098",
            "--dest",
            "+15550100",
            "--attest",
            "B",
            "--x5u",
            X5U,
            "--csv",
            "3",
            "--key",
        ])
        .arg(&key)
        .output()
        .expect("run callgate sign --csv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"SEQUENTIAL"));
    assert_eq!(lines.len(), 4, "{text}");
    let mut origids = Vec::new();
    for (i, line) in lines[1..].iter().enumerate() {
        let f: Vec<&str> = line.split(';').collect();
        let orig = format!("+1555{:04}", 98 + i);
        assert_eq!(
            (f[0], f[1], f[3]),
            (orig.as_str(), "+15550100", X5U),
            "{line}"
        );
        let token = f[2].strip_prefix("Identity: ").expect("Identity field");
        let header = format!("{token};info=<{X5U}>;alg=ES256;ppt=shaken");
        let v = verify(
            header.as_bytes(),
            &Expect {
                orig: &orig,
                dest: &["15550100"],
                ..expect(now())
            },
            &k.public,
        );
        assert_eq!(v.status, Status::Passed, "{v:#?}");
        origids.push(v.origid);
    }
    origids.dedup();
    assert_eq!(origids.len(), 3, "a fresh origid per call");
}
