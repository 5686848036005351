//! The verification service (RFC 8224 §6.2): an Identity header, the SIP
//! numbers and a public key in, a [`Verification`] out.

use serde::Serialize;

use super::identity::IdentityHeader;
use super::keys::PublicKey;
use super::passport::{check_claims, Check, Expect, Passport};
use super::rcd::{self, RcdSource, RichCallData};
use super::Cause;
use crate::pki::name::Subject;

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
///
/// As JSON (the audit record, `callgate verify`), the PASSporT's `attest`
/// and `origid` are written under those names only when the verification
/// passed; otherwise under `claimed_attest` and `claimed_origid`, so that a
/// reader never takes an attestation nobody checked for a verified one
/// (RFC 8588 §4: the attestation is the signer's assertion, worth what
/// the signature is). The signing certificate's subject likewise is
/// `subject` only for a verified PASSporT, else `unverified_subject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub status: Status,
    /// The PASSporT's `attest` claim: verified only when `status` is
    /// [`Status::Passed`].
    pub attest: Option<String>,
    /// The PASSporT's `origid` claim, verified under the same condition.
    pub origid: Option<String>,
    pub orig: Option<String>,
    pub dest: Vec<String>,
    pub iat: Option<i64>,
    pub x5u: Option<String>,
    /// Service Provider Code of the signing certificate (TNAuthList).
    pub spc: Option<String>,
    /// The signing certificate's subject (organisation, common name),
    /// cleaned for display: set only when its chain validated to a trust
    /// anchor, and shown as the signer's only when `status` is
    /// [`Status::Passed`] (as JSON, `unverified_subject` otherwise).
    pub subject: Option<Subject>,
    /// Why the result is `no-validation`, when it is.
    pub unavailable: Option<String>,
    pub failure: Option<Failure>,
    pub checks: Vec<Check>,
    /// The verified `div` PASSporTs (RFC 8946) from the SHAKEN `dest` to
    /// the request's called number, in diversion order.
    pub diversion: Vec<DivHop>,
    /// Verified rich call data (RFC 9795), when present.
    pub rcd: Option<RichCallData>,
}

/// The JSON form of a [`Verification`]: unverified claims named as such.
#[derive(Serialize)]
struct Shown<'a> {
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    attest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claimed_attest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claimed_origid: Option<&'a str>,
    orig: &'a Option<String>,
    dest: &'a [String],
    iat: Option<i64>,
    x5u: &'a Option<String>,
    spc: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unverified_subject: Option<String>,
    unavailable: &'a Option<String>,
    failure: &'a Option<Failure>,
    checks: &'a [Check],
    #[serde(skip_serializing_if = "Option::is_none")]
    diversion: Option<&'a [DivHop]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rcd: Option<&'a RichCallData>,
}

impl Serialize for Verification {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let verified = self.status == Status::Passed;
        fn split(verified: bool, c: Option<&str>) -> (Option<&str>, Option<&str>) {
            if verified {
                (c, None)
            } else {
                (None, c)
            }
        }
        let (attest, claimed_attest) = split(verified, self.attest.as_deref());
        let (origid, claimed_origid) = split(verified, self.origid.as_deref());
        let shown = self.subject.as_ref().map(Subject::to_string);
        let (subject, unverified_subject) = if verified {
            (shown, None)
        } else {
            (None, shown)
        };
        Shown {
            status: self.status,
            attest,
            claimed_attest,
            origid,
            claimed_origid,
            orig: &self.orig,
            dest: &self.dest,
            iat: self.iat,
            x5u: &self.x5u,
            spc: &self.spc,
            subject,
            unverified_subject,
            unavailable: &self.unavailable,
            failure: &self.failure,
            checks: &self.checks,
            diversion: (!self.diversion.is_empty()).then_some(self.diversion.as_slice()),
            rcd: self.rcd.as_ref(),
        }
        .serialize(s)
    }
}

/// One verified diversion: the call for `from` was sent on to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DivHop {
    pub from: String,
    pub to: Vec<String>,
    pub x5u: Option<String>,
}

impl Verification {
    /// A call that carries no Identity header: `No-TN-Validation`.
    pub fn absent() -> Verification {
        Verification {
            status: Status::NoValidation,
            attest: None,
            origid: None,
            orig: None,
            dest: vec![],
            iat: None,
            x5u: None,
            spc: None,
            subject: None,
            unavailable: Some("no Identity header".into()),
            failure: None,
            checks: vec![],
            diversion: vec![],
            rcd: None,
        }
    }

    fn failed(cause: Cause, text: String, checks: Vec<Check>) -> Verification {
        Verification {
            status: Status::Failed,
            attest: None,
            origid: None,
            orig: None,
            dest: vec![],
            iat: None,
            x5u: None,
            spc: None,
            subject: None,
            unavailable: None,
            failure: Some(Failure {
                code: cause.status(),
                cause,
                text,
            }),
            checks,
            diversion: vec![],
            rcd: None,
        }
    }

    /// The verification of a call whose SHAKEN PASSporT passed but whose
    /// companion PASSporT (`check`: `div`) failed: failed, with its cause.
    pub fn fail_companion(
        mut self,
        check: &'static str,
        cause: Cause,
        why: String,
    ) -> Verification {
        self.checks.push(Check::new(check, false, why.clone()));
        self.status = Status::Failed;
        self.rcd = None;
        self.failure = Some(Failure {
            code: cause.status(),
            cause,
            text: format!("{check}: {why}"),
        });
        self
    }

    /// As [`fail_companion`](Self::fail_companion), when the companion's
    /// certificate could not be obtained in time: `No-TN-Validation`.
    pub fn companion_unavailable(mut self, check: &'static str, why: String) -> Verification {
        self.checks.push(Check::new(check, false, why.clone()));
        self.status = Status::NoValidation;
        self.rcd = None;
        self.unavailable = Some(format!("{check} certificate unavailable: {why}"));
        self
    }
}

/// Who signed, as the certificate whose chain validated says: its
/// Service Provider Code (TNAuthList, RFC 8226 §9) and subject (RFC 5280
/// §4.1.2.6). Empty when no chain was validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signer {
    pub spc: Option<String>,
    pub subject: Option<Subject>,
}

/// ES256 over the transmitted bytes with the signer's key; the signature
/// is exactly r||s, 64 bytes (RFC 7518 §3.4).
pub fn signature_ok(passport: &Passport, key: &PublicKey) -> Result<(), String> {
    signature_verifies(passport.signing_input.as_bytes(), &passport.signature, key)
}

/// ES256 over `signing_input` (RFC 7515 §5.2, RFC 8225 §5): exactly 64
/// bytes of signature, verified with the certificate's key.
pub fn signature_verifies(
    signing_input: &[u8],
    signature: &[u8],
    key: &PublicKey,
) -> Result<(), String> {
    if signature.len() != 64 {
        return Err(format!(
            "signature is {} bytes, ES256 needs 64",
            signature.len()
        ));
    }
    if key.verifies(signing_input, signature) {
        Ok(())
    } else {
        Err("ES256 signature does not verify with the certificate's key".to_owned())
    }
}

/// The outcome of a signature check and how long it took; made wherever
/// the check ran (inline or on a worker, [`crate::stir::offload`]).
#[derive(Debug, Clone)]
pub struct SignatureCheck {
    pub result: Result<(), String>,
    pub took: std::time::Duration,
}

/// Runs and times the ES256 check.
pub fn check_signature(signing_input: &[u8], signature: &[u8], key: &PublicKey) -> SignatureCheck {
    let started = std::time::Instant::now();
    let result = signature_verifies(signing_input, signature, key);
    SignatureCheck {
        result,
        took: started.elapsed(),
    }
}

/// Parses the header and PASSporT and runs the claim checks. `Err` is the
/// finished (failed) verification when there is no point going further.
pub fn preflight(
    identity_value: &[u8],
    expect: &Expect<'_>,
) -> Result<(Passport, Vec<Check>), Box<Verification>> {
    let identity = IdentityHeader::parse(identity_value)
        .map_err(|(cause, why)| Box::new(Verification::failed(cause, why.into(), vec![])))?;
    let passport = Passport::decode(identity.token)
        .map_err(|(cause, why)| Box::new(Verification::failed(cause, why, vec![])))?;
    let (checks, failure) = check_claims(&identity, &passport, expect);
    if let Some((cause, text)) = failure {
        return Err(Box::new(summarise(
            passport,
            checks,
            Some((cause, text)),
            Signer::default(),
        )));
    }
    Ok((passport, checks))
}

/// Checks the ES256 signature with the signer's key and summarises.
pub fn finish(
    passport: Passport,
    checks: Vec<Check>,
    key: &PublicKey,
    signer: Signer,
) -> Verification {
    let sig = check_signature(passport.signing_input.as_bytes(), &passport.signature, key);
    finish_checked(passport, checks, sig, signer)
}

/// [`finish`] with the signature already checked.
pub fn finish_checked(
    passport: Passport,
    mut checks: Vec<Check>,
    sig: SignatureCheck,
    signer: Signer,
) -> Verification {
    let sig_ok = sig.result.is_ok();
    let detail = sig
        .result
        .err()
        .unwrap_or_else(|| "ES256 signature verifies".to_owned());
    let failure = (!sig_ok).then(|| (Cause::InvalidIdentityHeader, format!("signature: {detail}")));
    checks.push(Check::new("signature", sig_ok, detail).timed(sig.took));
    summarise(passport, checks, failure, signer)
}

/// The verification of a call whose certificate could not be obtained in
/// time: `No-TN-Validation`, with the reason (DESIGN: never block a call).
pub fn unavailable(passport: Passport, mut checks: Vec<Check>, why: String) -> Verification {
    checks.push(Check::new("certificate", false, why.clone()));
    let mut v = summarise(passport, checks, None, Signer::default());
    v.status = Status::NoValidation;
    v.unavailable = Some(format!("certificate unavailable: {why}"));
    v
}

/// Marks a verification as a replay: the same PASSporT (by signature) was
/// already presented on another call within the freshness window.
pub fn replayed(mut v: Verification, other_call: &str) -> Verification {
    let text = format!("replay: PASSporT already used by call {other_call}");
    v.checks.push(Check::new("replay", false, text.clone()));
    v.status = Status::Failed;
    v.failure = Some(Failure {
        code: Cause::InvalidIdentityHeader.status(),
        cause: Cause::InvalidIdentityHeader,
        text,
    });
    v
}

/// A failure found after the claim checks (certificate content or chain).
pub fn failed_after(
    passport: Passport,
    mut checks: Vec<Check>,
    name: &'static str,
    cause: Cause,
    why: String,
) -> Verification {
    checks.push(Check::new(name, false, why.clone()));
    summarise(
        passport,
        checks,
        Some((cause, format!("{name}: {why}"))),
        Signer::default(),
    )
}

fn summarise(
    passport: Passport,
    checks: Vec<Check>,
    failure: Option<(Cause, String)>,
    signer: Signer,
) -> Verification {
    let rcd = failure
        .is_none()
        .then(|| rcd::from_claims(&passport.claims, RcdSource::Shaken))
        .flatten();
    let c = passport.claims;
    Verification {
        rcd,
        diversion: vec![],
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
        spc: signer.spc,
        subject: signer.subject,
        unavailable: None,
        failure: failure.map(|(cause, text)| Failure {
            code: cause.status(),
            cause,
            text,
        }),
        checks,
    }
}

/// Verifies one Identity header value against the SIP numbers and a key
/// the caller already trusts (no certificate fetch or chain check).
pub fn verify(identity_value: &[u8], expect: &Expect<'_>, key: &PublicKey) -> Verification {
    let identity = match IdentityHeader::parse(identity_value) {
        Ok(i) => i,
        Err((cause, why)) => return Verification::failed(cause, why.into(), vec![]),
    };
    let passport = match Passport::decode(identity.token) {
        Ok(p) => p,
        Err((cause, why)) => return Verification::failed(cause, why, vec![]),
    };
    let (checks, failure) = check_claims(&identity, &passport, expect);
    let mut v = finish(passport, checks, key, Signer::default());
    if let Some((cause, text)) = failure {
        v.status = Status::Failed;
        v.rcd = None;
        v.failure = Some(Failure {
            code: cause.status(),
            cause,
            text,
        });
    }
    v
}

/// A verification of `status` whose PASSporT claimed attestation A and
/// origid `o-1`, for tests of how claims are shown.
#[cfg(test)]
pub(crate) fn claiming(status: Status) -> Verification {
    let mut v = Verification::absent();
    v.status = status;
    v.attest = Some("A".into());
    v.origid = Some("o-1".into());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_is_the_signers_only_when_verified() {
        let subject = Subject {
            organization: Some("Example Telecom".into()),
            common_name: Some("SHAKEN 1234".into()),
        };
        for (status, key, not) in [
            (Status::Passed, "subject", "unverified_subject"),
            (Status::Failed, "unverified_subject", "subject"),
            (Status::NoValidation, "unverified_subject", "subject"),
        ] {
            let mut v = claiming(status);
            v.subject = Some(subject.clone());
            let j = serde_json::to_value(&v).unwrap_or_default();
            assert_eq!(j[key], "O=Example Telecom, CN=SHAKEN 1234", "{j}");
            assert!(j.get(not).is_none(), "{j}");
        }
        let j = serde_json::to_value(claiming(Status::Passed)).unwrap_or_default();
        assert!(j.get("subject").is_none(), "none when unknown: {j}");
    }

    #[test]
    fn unverified_claims_are_named_claims_in_json() {
        for status in [Status::Failed, Status::NoValidation] {
            let j = serde_json::to_value(claiming(status)).unwrap_or_default();
            assert_eq!(j["claimed_attest"], "A", "{j}");
            assert_eq!(j["claimed_origid"], "o-1", "{j}");
            assert!(
                j.get("attest").is_none() && j.get("origid").is_none(),
                "{j}"
            );
        }
        let j = serde_json::to_value(claiming(Status::Passed)).unwrap_or_default();
        assert_eq!((&j["attest"], &j["origid"]), (&"A".into(), &"o-1".into()));
        assert!(j.get("claimed_attest").is_none(), "{j}");
        assert_eq!(j["status"], "passed");
        assert!(
            j.get("diversion").is_none() && j.get("rcd").is_none(),
            "{j}"
        );
    }
}
