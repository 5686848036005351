//! `callgate verify`: checks an Identity header value, fetching x5u and
//! validating the chain (`--trust`) or offline against a key (`--cert`);
//! prints the verification as JSON.

use std::path::Path;
use std::process::ExitCode;

use super::time::unix_now;

/// Verifies with the certificate fetched from x5u and its chain checked
/// against the anchors in `trust`.
#[allow(clippy::too_many_arguments)]
pub fn verify_fetching(
    identity: &[String],
    from: &str,
    to: &str,
    trust: &Path,
    x5u_ca: &[std::path::PathBuf],
    crl: &[std::path::PathBuf],
    allow_private: bool,
    deadline_ms: u64,
    at: Option<i64>,
    freshness: i64,
    crl_fetch: bool,
) -> ExitCode {
    use callgate::stir::{certs::TrustStore, fetch, service};
    let mut store = match TrustStore::from_dir(trust) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("verify: {e}");
            return ExitCode::from(2);
        }
    };
    for f in crl {
        if let Err(e) = std::fs::read(f)
            .map_err(|e| e.to_string())
            .and_then(|d| store.add_crl(&d))
        {
            eprintln!("verify: {}: {e}", f.display());
            return ExitCode::from(2);
        }
    }
    let tls = match fetch::tls_config(x5u_ca) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("verify: {e}");
            return ExitCode::from(2);
        }
    };
    let deadline = std::time::Duration::from_millis(deadline_ms);
    let settings = service::VerifierSettings {
        fetch: fetch::FetchOptions {
            tls,
            timeout: deadline,
            max_bytes: 64 * 1024,
            allow_private,
            proxy: None,
        },
        deadline,
        freshness_secs: freshness,
        skew_secs: 5,
        min_cache: std::time::Duration::from_secs(60),
        max_cache: std::time::Duration::from_secs(86_400),
        negative_ttl: std::time::Duration::from_secs(30),
        max_entries: 1000,
        max_cache_bytes: 64 << 20,
        crl_fetch,
        max_fetches_per_call: 6,
        max_crl_dps: 2,
        counters: Default::default(),
        shared: None,
        offload: None,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("verify: {e}");
            return ExitCode::FAILURE;
        }
    };
    let verifier = service::Verifier::new(settings, store);
    let ids: Vec<&[u8]> = identity.iter().map(|i| i.as_bytes()).collect();
    let v = rt.block_on(verifier.verify_call(&ids, from, &[to], at.unwrap_or_else(unix_now)));
    print_verification(&v)
}

/// Prints `v` as JSON; exit 0 only when it passed.
fn print_verification(v: &callgate::stir::verify::Verification) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("verify: {e}"),
    }
    if v.status == callgate::stir::verify::Status::Passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Verifies offline against the public key or certificate in `cert`.
pub fn verify(
    identity: &str,
    from: &str,
    to: &str,
    cert: &Path,
    at: Option<i64>,
    freshness: i64,
) -> ExitCode {
    use callgate::stir::{keys::PublicKey, passport::Expect, verify};
    let key = match std::fs::read(cert)
        .map_err(|e| e.to_string())
        .and_then(|pem| PublicKey::from_pem(&pem).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{}: {e}", cert.display());
            return ExitCode::from(2);
        }
    };
    let dest = [to];
    let expect = Expect {
        orig: from,
        dest: &dest,
        now: at.unwrap_or_else(unix_now),
        freshness_secs: freshness,
        skew_secs: 5,
    };
    print_verification(&verify::verify(identity.as_bytes(), &expect, &key))
}
