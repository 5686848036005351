//! `[stir]`: STIR/SHAKEN verification of inbound calls (trust anchors,
//! CRLs, deadlines, what a failure does) and signing of the agents'
//! outbound calls.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, positive, resolve, ConfigError};

/// What to do with a call whose STIR verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StirFailure {
    /// Forward it marked `TN-Validation-Failed` with a `Reason: STIR` header.
    Mark,
    /// Answer with the RFC 8224 response (403, 428, 436, 437, 438).
    Reject,
}

/// STIR/SHAKEN verification of inbound calls (`[stir]`).
#[derive(Debug, Clone)]
pub struct StirConfig {
    pub enabled: bool,
    /// Directory of PEM STI trust anchors.
    pub trust_dir: Option<PathBuf>,
    /// Extra CAs for the HTTPS fetch of x5u.
    pub x5u_ca: Vec<PathBuf>,
    /// CRL files (PEM or DER) checked along every chain.
    pub crl_files: Vec<PathBuf>,
    /// Accepted SHAKEN certificate policy OIDs (ATIS-1000080 §6.4.1);
    /// empty: not checked.
    pub certificate_policies: Vec<String>,
    /// Certificates loaded into the cache at startup and on reload.
    pub preload_dir: Option<PathBuf>,
    /// Fetch CRLs from the certificates' distribution points.
    pub crl_fetch: bool,
    /// An egress HTTP proxy for x5u and CRL fetches.
    pub fetch_proxy: Option<crate::stir::fetch::Proxy>,
    /// Network fetches (x5u and CRL together) one INVITE may start.
    pub max_fetches_per_call: usize,
    /// CRL distribution points looked at per certificate chain.
    pub max_crl_dps: usize,
    /// Documents the certificate cache (and the CRL cache) hold at most.
    pub cache_entries: usize,
    /// MiB of documents each cache holds at most.
    pub cache_mib: usize,
    pub allow_private_x5u: bool,
    pub deadline: Duration,
    pub freshness_secs: i64,
    /// `TN-Validation-Passed-A` (true) or the bare 3GPP value (false).
    pub attest_suffix: bool,
    pub on_failure: StirFailure,
    /// Worker threads for signature checks while the signalling thread is
    /// busy; 0: always inline. Read at start.
    pub verify_threads: usize,
    /// Signing of agents' outbound calls (authentication service), if on.
    pub sign: Option<SignConfig>,
}

/// The authentication service for calls from the PBX (`[stir] sign_*`).
#[derive(Debug, Clone)]
pub struct SignConfig {
    /// PEM private key (P-256).
    pub key: PathBuf,
    /// https URL where verifiers fetch our certificate.
    pub x5u: String,
    /// Calling numbers (digit prefixes) the contact centre owns: full
    /// attestation A (ATIS-1000074 §5.2.3).
    pub full_attestation_prefixes: Vec<String>,
    /// Attestation for other calling numbers: B or C.
    pub other_attestation: char,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStir {
    enabled: Option<bool>,
    trust_dir: Option<PathBuf>,
    #[serde(default)]
    x5u_ca: Vec<PathBuf>,
    #[serde(default)]
    crl_files: Vec<PathBuf>,
    certificate_policies: Option<Vec<String>>,
    preload_dir: Option<PathBuf>,
    crl_fetch: Option<bool>,
    fetch_proxy: Option<String>,
    max_fetches_per_call: Option<usize>,
    max_crl_dps: Option<usize>,
    cache_entries: Option<usize>,
    cache_mib: Option<usize>,
    allow_private_x5u: Option<bool>,
    deadline_ms: Option<u64>,
    freshness_secs: Option<i64>,
    verstat_attest_suffix: Option<bool>,
    on_failure: Option<String>,
    verify_threads: Option<usize>,
    sign: Option<bool>,
    sign_key: Option<PathBuf>,
    sign_x5u: Option<String>,
    #[serde(default)]
    sign_full_attestation_prefixes: Vec<String>,
    sign_other_attestation: Option<String>,
}

/// Validates `[stir]`; relative paths are under `base` (the config
/// file's directory).
pub(super) fn stir(raw: RawStir, base: &Path) -> Result<StirConfig, ConfigError> {
    let resolve = |p: &PathBuf| resolve(p, base);
    let enabled = raw.enabled.unwrap_or(false);
    let trust_dir = match &raw.trust_dir {
        Some(d) => Some(resolve(d).map_err(|at| {
            invalid(
                "stir.trust_dir",
                format!("directory {} not found", at.display()),
            )
        })?),
        None if enabled => {
            return Err(invalid(
                "stir.trust_dir",
                "required when stir.enabled = true (a directory of PEM STI trust anchors)",
            ))
        }
        None => None,
    };
    let mut x5u_ca = Vec::new();
    for (i, f) in raw.x5u_ca.iter().enumerate() {
        x5u_ca.push(resolve(f).map_err(|at| {
            invalid(
                format!("stir.x5u_ca[{i}]"),
                format!("file {} not found", at.display()),
            )
        })?);
    }
    let mut crl_files = Vec::new();
    for (i, f) in raw.crl_files.iter().enumerate() {
        crl_files.push(resolve(f).map_err(|at| {
            invalid(
                format!("stir.crl_files[{i}]"),
                format!("file {} not found", at.display()),
            )
        })?);
    }
    let certificate_policies = match &raw.certificate_policies {
        None => crate::stir::certs::DEFAULT_POLICIES
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                let arcs = p.strip_suffix(".*").unwrap_or(p);
                if arcs.is_empty()
                    || arcs
                        .split('.')
                        .any(|a| a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()))
                {
                    return Err(invalid(
                        format!("stir.certificate_policies[{i}]"),
                        format!("{p:?} is not a dotted OID (e.g. \"2.16.840.1.114569.1.1.3\", or \"2.16.840.1.114569.1.1.*\" for the arc)"),
                    ));
                }
            }
            list.clone()
        }
    };
    let preload_dir = match &raw.preload_dir {
        Some(d) => Some(
            resolve(d)
                .and_then(|p| if p.is_dir() { Ok(p) } else { Err(p) })
                .map_err(|at| {
                    invalid(
                        "stir.preload_dir",
                        format!("directory {} not found", at.display()),
                    )
                })?,
        ),
        None => None,
    };
    let on_failure = match raw.on_failure.as_deref().unwrap_or("mark") {
        "mark" => StirFailure::Mark,
        "reject" => StirFailure::Reject,
        other => {
            return Err(invalid(
                "stir.on_failure",
                format!("must be \"mark\" or \"reject\", not {other:?}"),
            ))
        }
    };
    let fetch_proxy = match &raw.fetch_proxy {
        Some(url) => Some(
            crate::stir::fetch::Proxy::parse(url)
                .map_err(|why| invalid("stir.fetch_proxy", format!("{url:?}: {why}")))?,
        ),
        None => None,
    };
    let in_range = |key: &str, v: Option<usize>, default: usize, min: usize, max: usize| {
        let v = v.unwrap_or(default);
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(key, format!("must be {min} to {max}, not {v}")))
        }
    };
    let max_fetches_per_call = in_range(
        "stir.max_fetches_per_call",
        raw.max_fetches_per_call,
        6,
        1,
        32,
    )?;
    let max_crl_dps = in_range("stir.max_crl_dps", raw.max_crl_dps, 2, 1, 16)?;
    let cache_entries = in_range(
        "stir.cache_entries",
        raw.cache_entries,
        10_000,
        16,
        1_000_000,
    )?;
    let cache_mib = in_range("stir.cache_mib", raw.cache_mib, 64, 1, 4096)?;
    let freshness_secs = raw.freshness_secs.unwrap_or(60);
    if freshness_secs <= 0 {
        return Err(invalid("stir.freshness_secs", "must be greater than zero"));
    }
    let sign = if raw.sign.unwrap_or(false) {
        let key = raw
            .sign_key
            .as_ref()
            .ok_or_else(|| invalid("stir.sign_key", "required when stir.sign = true"))?;
        let key = resolve(key)
            .map_err(|at| invalid("stir.sign_key", format!("file {} not found", at.display())))?;
        super::secret::owner_only("stir.sign_key", &key)?;
        let pem = std::fs::read(&key).map_err(|e| invalid("stir.sign_key", e.to_string()))?;
        crate::stir::keys::SigningKey::from_pem(&pem)
            .map_err(|e| invalid("stir.sign_key", e.to_string()))?;
        let x5u = raw
            .sign_x5u
            .clone()
            .ok_or_else(|| invalid("stir.sign_x5u", "required when stir.sign = true"))?;
        if !x5u.starts_with("https://") {
            return Err(invalid("stir.sign_x5u", "must be an https URL"));
        }
        for (i, p) in raw.sign_full_attestation_prefixes.iter().enumerate() {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    format!("stir.sign_full_attestation_prefixes[{i}]"),
                    "must be digits (a number prefix)",
                ));
            }
        }
        let other_attestation = match raw.sign_other_attestation.as_deref().unwrap_or("B") {
            "B" => 'B',
            "C" => 'C',
            other => {
                return Err(invalid(
                    "stir.sign_other_attestation",
                    format!("must be \"B\" or \"C\", not {other:?}"),
                ))
            }
        };
        Some(SignConfig {
            key,
            x5u,
            full_attestation_prefixes: raw.sign_full_attestation_prefixes.clone(),
            other_attestation,
        })
    } else {
        None
    };
    Ok(StirConfig {
        sign,
        enabled,
        trust_dir,
        x5u_ca,
        crl_files,
        certificate_policies,
        preload_dir,
        crl_fetch: raw.crl_fetch.unwrap_or(false),
        fetch_proxy,
        max_fetches_per_call,
        max_crl_dps,
        cache_entries,
        cache_mib,
        allow_private_x5u: raw.allow_private_x5u.unwrap_or(false),
        deadline: Duration::from_millis(positive(
            "stir.deadline_ms",
            raw.deadline_ms.unwrap_or(300),
        )?),
        freshness_secs,
        attest_suffix: raw.verstat_attest_suffix.unwrap_or(true),
        on_failure,
        verify_threads: match raw.verify_threads {
            Some(n) if n > 64 => {
                return Err(invalid("stir.verify_threads", "at most 64"));
            }
            Some(n) => n,
            // One per core beside the signalling thread, at least one.
            None => std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StirConfig, ConfigError> {
        let raw: RawStir = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        stir(raw, Path::new(""))
    }

    fn key_of(r: Result<StirConfig, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn fetch_bounds_and_proxy_have_safe_defaults_and_bad_values_name_the_key() {
        let c = parse("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.max_fetches_per_call, c.max_crl_dps, c.cache_entries),
            (6, 2, 10_000)
        );
        assert_eq!(c.fetch_proxy, None);
        let c = parse("fetch_proxy = \"http://10.0.0.8:3128\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.fetch_proxy.map(|p| (p.host, p.port)),
            Some(("10.0.0.8".into(), 3128))
        );
        assert_eq!(
            key_of(parse("fetch_proxy = \"https://p:1\"")),
            "stir.fetch_proxy"
        );
        assert_eq!(
            key_of(parse("fetch_proxy = \"http://p\"")),
            "stir.fetch_proxy"
        );
        assert_eq!(
            key_of(parse("max_fetches_per_call = 0")),
            "stir.max_fetches_per_call"
        );
        assert_eq!(key_of(parse("max_crl_dps = 17")), "stir.max_crl_dps");
        assert_eq!(key_of(parse("cache_entries = 1")), "stir.cache_entries");
        assert_eq!(key_of(parse("cache_mib = 0")), "stir.cache_mib");
        assert_eq!(parse("").map(|c| c.cache_mib).ok(), Some(64));
    }
}
