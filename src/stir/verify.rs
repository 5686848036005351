//! The verification service (RFC 8224 §6.2): an Identity header, the SIP
//! numbers and a public key in, a [`Verification`] out.

use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde::Serialize;

use super::identity::IdentityHeader;
use super::keys::PublicKey;
use super::passport::{check_claims, Check, Expect, Passport};
use super::Cause;

/// Overall result, as marked downstream by `verstat` (3GPP TS 24.229).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    Failed,
    NoValidation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub code: u16,
    pub cause: Cause,
    pub text: String,
}

/// Everything the verification found, for the risk phase and the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub status: Status,
    pub attest: Option<String>,
    pub origid: Option<String>,
    pub orig: Option<String>,
    pub dest: Vec<String>,
    pub iat: Option<i64>,
    pub x5u: Option<String>,
    pub failure: Option<Failure>,
    pub checks: Vec<Check>,
}

impl Verification {
    fn failed(cause: Cause, text: String, checks: Vec<Check>) -> Verification {
        Verification {
            status: Status::Failed,
            attest: None,
            origid: None,
            orig: None,
            dest: vec![],
            iat: None,
            x5u: None,
            failure: Some(Failure {
                code: cause.status(),
                cause,
                text,
            }),
            checks,
        }
    }
}

/// Verifies one Identity header value against the SIP numbers and the
/// signer's public key (the certificate named by `x5u`).
pub fn verify(identity_value: &[u8], expect: &Expect<'_>, key: &PublicKey) -> Verification {
    let identity = match IdentityHeader::parse(identity_value) {
        Ok(i) => i,
        Err((cause, why)) => return Verification::failed(cause, why.into(), vec![]),
    };
    let passport = match Passport::decode(identity.token) {
        Ok(p) => p,
        Err((cause, why)) => return Verification::failed(cause, why, vec![]),
    };
    let (mut checks, mut failure) = check_claims(&identity, &passport, expect);
    // ES256 over the transmitted bytes; the signature is exactly r||s.
    let sig_ok = passport.signature.len() == 64
        && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key.0)
            .verify(passport.signing_input.as_bytes(), &passport.signature)
            .is_ok();
    let detail = if passport.signature.len() != 64 {
        format!(
            "signature is {} bytes, ES256 needs 64",
            passport.signature.len()
        )
    } else if sig_ok {
        "ES256 signature verifies".to_owned()
    } else {
        "ES256 signature does not verify with the certificate's key".to_owned()
    };
    if !sig_ok && failure.is_none() {
        failure = Some((Cause::InvalidIdentityHeader, format!("signature: {detail}")));
    }
    checks.push(Check {
        name: "signature",
        ok: sig_ok,
        detail,
    });
    let c = passport.claims;
    Verification {
        status: if failure.is_none() {
            Status::Passed
        } else {
            Status::Failed
        },
        attest: c.attest,
        origid: c.origid,
        orig: c.orig.tn,
        dest: c.dest.tn,
        iat: c.iat,
        x5u: passport.header.x5u,
        failure: failure.map(|(cause, text)| Failure {
            code: cause.status(),
            cause,
            text,
        }),
        checks,
    }
}
