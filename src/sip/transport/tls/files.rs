//! Reading a side's TLS files (PEM) and the checks that turn a bad one into
//! an error naming its key and the reason, at start, at `check-config` and
//! at reload: a certificate expired or not yet valid, a file with no
//! certificate or no key. (A key that does not match its certificate is
//! caught when the server configuration is built, in [`super::SideTls`].)
//!
//! Without these checks an expired certificate loads fine and every peer's
//! handshake then fails, which the operator sees only as calls that stop.

use std::path::Path;

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file that cannot serve: its configuration key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct TlsFileError {
    /// The configuration key naming the file (`trunk.tls_cert`).
    pub key: String,
    pub reason: String,
}

pub(super) fn error(key: &str, reason: impl Into<String>) -> TlsFileError {
    TlsFileError {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| error(key, format!("cannot read {}: {e}", path.display())))
}

/// The certificates of a PEM file, in order; at least one.
pub fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(key, path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(key, format!("{}: not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(error(
            key,
            format!("{} contains no certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let pem = read(key, path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| error(key, format!("{}: not PEM: {e}", path.display())))?
        .ok_or_else(|| error(key, format!("{} contains no private key", path.display())))
}

/// Checks that `cert` is valid at `now` (Unix seconds) and returns its
/// notAfter (RFC 5280 §4.1.2.5). `which` says which certificate of the
/// file it is, for the message.
pub fn check_validity(
    key: &str,
    which: &str,
    cert: &CertificateDer<'_>,
    now: i64,
) -> Result<i64, TlsFileError> {
    let (not_before, not_after) = crate::stir::x509::validity(cert).ok_or_else(|| {
        error(
            key,
            format!("{which} is not a well-formed X.509 certificate"),
        )
    })?;
    if now > not_after {
        return Err(error(key, format!("{which} expired on {}", utc(not_after))));
    }
    if now < not_before {
        return Err(error(
            key,
            format!("{which} is not valid before {}", utc(not_before)),
        ));
    }
    Ok(not_after)
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (the
/// inverse of `stir::x509::days_from_civil`, H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Now, as Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stir::x509::days_from_civil;

    #[test]
    fn dates_round_trip() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2026, 12, 7), (2100, 3, 1)] {
            assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
        }
        assert_eq!(utc(86_400 + 3661), "1970-01-02 01:01:01 UTC");
    }
}
