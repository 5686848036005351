//! The authentication service (RFC 8224 §5, RFC 8588, ATIS-1000074 §5.2):
//! builds and signs a SHAKEN PASSporT and renders the Identity header.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::keys::SigningKey;
use super::passport::{canonical_tn, Claims, Dest, Div, Header, Orig};

/// What to attest.
#[derive(Debug, Clone)]
pub struct SignRequest<'a> {
    pub orig: &'a str,
    pub dest: &'a str,
    /// `A`, `B` or `C` (ATIS-1000074 §5.2.3).
    pub attest: char,
    /// Unique per call (a UUID).
    pub origid: &'a str,
    /// Where verifiers fetch the certificate (https).
    pub x5u: &'a str,
    /// Seconds since the Unix epoch.
    pub iat: i64,
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("attestation must be A, B or C")]
    Attest,
    #[error("x5u must be an https URL")]
    X5u,
    #[error("signing failed")]
    Crypto,
}

/// Signs and returns the Identity header value
/// `header.claims.signature;info=<x5u>;alg=ES256;ppt=shaken`.
pub fn identity_header(key: &SigningKey, r: &SignRequest<'_>) -> Result<String, SignError> {
    if !matches!(r.attest, 'A' | 'B' | 'C') {
        return Err(SignError::Attest);
    }
    let header = Header {
        alg: Some("ES256".into()),
        ppt: Some("shaken".into()),
        typ: Some("passport".into()),
        x5u: Some(r.x5u.into()),
    };
    let claims = Claims {
        attest: Some(r.attest.to_string()),
        dest: Dest {
            tn: vec![canonical_tn(r.dest)],
            uri: vec![],
        },
        iat: Some(r.iat),
        orig: Orig {
            tn: Some(canonical_tn(r.orig)),
            uri: None,
        },
        origid: Some(r.origid.into()),
        ..Claims::default()
    };
    sign_passport(key, &header, &claims)
}

/// Signs any PASSporT and returns the Identity header value
/// `header.claims.signature;info=<x5u>;alg=ES256;ppt=<ppt>` (RFC 8224 §4).
/// The header's `x5u` and `ppt` must be set.
pub fn sign_passport(
    key: &SigningKey,
    header: &Header,
    claims: &Claims,
) -> Result<String, SignError> {
    let x5u = header.x5u.as_deref().unwrap_or_default();
    if !x5u.starts_with("https://") || x5u.contains(['<', '>', ' ', ';']) {
        return Err(SignError::X5u);
    }
    let ppt = header.ppt.as_deref().unwrap_or("shaken");
    // Serialised in field order, which is lexicographic: RFC 8225 §9.
    let h = serde_json::to_vec(header).map_err(|_| SignError::Crypto)?;
    let c = serde_json::to_vec(&claims).map_err(|_| SignError::Crypto)?;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(h),
        URL_SAFE_NO_PAD.encode(c)
    );
    let sig = key
        .pair
        .sign(&key.rng, input.as_bytes())
        .map_err(|_| SignError::Crypto)?;
    Ok(format!(
        "{input}.{};info=<{x5u}>;alg=ES256;ppt={ppt}",
        URL_SAFE_NO_PAD.encode(sig.as_ref()),
    ))
}

/// What a diverting service attests (RFC 8946 §3): the call from `orig`,
/// originally for `div`, now goes to `dest`.
#[derive(Debug, Clone)]
pub struct DivRequest<'a> {
    pub orig: &'a str,
    pub dest: &'a str,
    pub div: &'a str,
    pub x5u: &'a str,
    pub iat: i64,
}

/// Signs a `div` PASSporT and returns its Identity header value.
pub fn div_header(key: &SigningKey, r: &DivRequest<'_>) -> Result<String, SignError> {
    let header = Header {
        alg: Some("ES256".into()),
        ppt: Some("div".into()),
        typ: Some("passport".into()),
        x5u: Some(r.x5u.into()),
    };
    let claims = Claims {
        dest: Dest {
            tn: vec![canonical_tn(r.dest)],
            uri: vec![],
        },
        div: Some(Div {
            tn: Some(canonical_tn(r.div)),
            uri: None,
        }),
        iat: Some(r.iat),
        orig: Orig {
            tn: Some(canonical_tn(r.orig)),
            uri: None,
        },
        ..Claims::default()
    };
    sign_passport(key, &header, &claims)
}

/// A random UUID (version 4) for `origid`.
pub fn new_origid() -> String {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = fastrand::u8(..);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
