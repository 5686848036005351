//! `callgate sign`: a SHAKEN PASSporT as an Identity header value, or
//! `--csv N` signed calls for sipp load tests.

use std::path::Path;
use std::process::ExitCode;

use callgate::stir::keys::SigningKey;

use super::time::unix_now;

/// The P-256 private key in the PEM file `path`; `None` (said on stderr)
/// when it cannot be read.
fn signing_key(path: &Path) -> Option<SigningKey> {
    // A signing key others can read signs calls in the operator's name.
    if let Err(e) = callgate::config::secret::owner_only("--key", path) {
        eprintln!("{e}");
        return None;
    }
    match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|pem| SigningKey::from_pem(&pem).map_err(|e| e.to_string()))
    {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            None
        }
    }
}

/// Prints the Identity header value of one signed call.
pub fn sign(
    orig: &str,
    dest: &str,
    attest: char,
    origid: Option<String>,
    x5u: &str,
    key: &Path,
    iat: Option<i64>,
) -> ExitCode {
    use callgate::stir::sign;
    let Some(key) = signing_key(key) else {
        return ExitCode::from(2);
    };
    let origid = origid.unwrap_or_else(sign::new_origid);
    let req = sign::SignRequest {
        orig,
        dest,
        attest,
        origid: &origid,
        x5u,
        iat: iat.unwrap_or_else(unix_now),
    };
    match sign::identity_header(&key, &req) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sign: {e}");
            ExitCode::from(2)
        }
    }
}

/// `callgate sign --csv N`: N signed calls as sipp CSV lines.
pub fn sign_csv(
    orig: &str,
    dest: &str,
    attest: char,
    x5u: &str,
    key: &Path,
    iat: Option<i64>,
    n: u32,
) -> ExitCode {
    use callgate::stir::{passport::canonical_tn, sign};
    use std::io::Write;
    let Some(key) = signing_key(key) else {
        return ExitCode::from(2);
    };
    let digits = canonical_tn(orig);
    let Ok(first) = digits.parse::<u128>() else {
        eprintln!("sign: --orig must be a number to count up from");
        return ExitCode::from(2);
    };
    let plus = if orig.starts_with('+') { "+" } else { "" };
    let iat = iat.unwrap_or_else(unix_now);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let _ = writeln!(out, "SEQUENTIAL");
    for i in 0..u128::from(n) {
        let number = format!("{plus}{:0width$}", first + i, width = digits.len());
        let origid = sign::new_origid();
        let req = sign::SignRequest {
            orig: &number,
            dest,
            attest,
            origid: &origid,
            x5u,
            iat,
        };
        match sign::identity_header(&key, &req) {
            Ok(h) => {
                let token = h.split(';').next().unwrap_or_default();
                let _ = writeln!(out, "{number};{dest};Identity: {token};{x5u}");
            }
            Err(e) => {
                eprintln!("sign: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
