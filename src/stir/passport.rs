//! PASSporT (RFC 8225) with the SHAKEN extension (RFC 8588): decoding and
//! the claim checks of a verification service (RFC 8224 §6.2,
//! ATIS-1000074 §5.3.1). Pure functions of their inputs and `now`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::identity::IdentityHeader;
use super::Cause;

/// Protected header (RFC 8225 §4, RFC 8588 §6). Fields in lexicographic
/// order: serialised as is, this is the canonical form of RFC 8225 §9.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x5u: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tn: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uri: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// The `div` claim of a diversion PASSporT (RFC 8946 §3): the number the
/// call was originally for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Div {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// PASSporT claims (RFC 8225 §5): SHAKEN (RFC 8588 §4), diversion
/// (RFC 8946 §3) and rich call data (RFC 9795 §5, `crn` §6), in
/// lexicographic order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attest: Option<String>,
    /// Call reason (RFC 9795 §6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crn: Option<String>,
    #[serde(default)]
    pub dest: Dest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub div: Option<Div>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default)]
    pub orig: Orig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origid: Option<String>,
    /// Rich call data (RFC 9795 §5): `nam`, `jcd`, `jcl`, `icn`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcd: Option<serde_json::Value>,
    /// Integrity digests of linked rich call data (RFC 9795 §5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcdi: Option<serde_json::Value>,
}

/// A decoded PASSporT.
#[derive(Debug, Clone)]
pub struct Passport {
    pub header: Header,
    pub claims: Claims,
    /// `base64url(header) "." base64url(claims)` as transmitted: the bytes
    /// the signature covers (RFC 7515 §5.2).
    pub signing_input: String,
    pub signature: Vec<u8>,
}

impl Passport {
    /// Decodes a JWS compact serialization (full form, RFC 8225 §7).
    pub fn decode(token: &str) -> Result<Passport, (Cause, String)> {
        let bad = |why: String| (Cause::InvalidIdentityHeader, why);
        let mut it = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad("PASSporT must have three parts".into()));
        };
        if c.is_empty() {
            return Err(bad(
                "compact-form PASSporT (no claims) is not supported".into()
            ));
        }
        let json = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| bad(format!("{what} is not base64url")))
        };
        let header: Header = serde_json::from_slice(&json(h, "header")?)
            .map_err(|e| bad(format!("header JSON: {e}")))?;
        let claims: Claims = serde_json::from_slice(&json(c, "claims")?)
            .map_err(|e| bad(format!("claims JSON: {e}")))?;
        let signature = json(s, "signature")?;
        Ok(Passport {
            header,
            claims,
            signing_input: format!("{h}.{c}"),
            signature,
        })
    }
}

/// A telephone number in the canonical form of ATIS-1000074 §5.3.1: digits
/// only (a leading `+` and visual separators dropped).
pub fn canonical_tn(tn: &str) -> String {
    tn.chars().filter(char::is_ascii_digit).collect()
}

/// What the verifier expects, from the SIP request and its own clock.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// Calling number (P-Asserted-Identity, else From user part).
    pub orig: &'a str,
    /// Called numbers the PASSporT may name (To and Request-URI user parts).
    pub dest: &'a [&'a str],
    /// Verifier's time, seconds since the Unix epoch.
    pub now: i64,
    /// Largest accepted age of `iat` (RFC 8224 §6.2.2 recommends 60 s).
    pub freshness_secs: i64,
    /// Tolerated clock skew for an `iat` in the future.
    pub skew_secs: i64,
}

/// The outcome of one named check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// Time the check took, for the checks that can take time (certificate
    /// fetch and validation, signature).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micros: Option<u64>,
}

impl Check {
    pub fn new(name: &'static str, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            name,
            ok,
            detail: detail.into(),
            micros: None,
        }
    }

    /// The same check, with how long it took.
    pub fn timed(mut self, took: std::time::Duration) -> Check {
        self.micros = Some(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        self
    }
}

fn show(v: Option<&str>) -> &str {
    v.unwrap_or("(absent)")
}

/// Collects named checks and remembers the first failure.
struct Recorder {
    checks: Vec<Check>,
    first: Option<(Cause, String)>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            checks: Vec::new(),
            first: None,
        }
    }

    fn record(&mut self, name: &'static str, ok: bool, cause: Cause, detail: String) {
        if !ok && self.first.is_none() {
            self.first = Some((cause, format!("{name}: {detail}")));
        }
        self.checks.push(Check::new(name, ok, detail));
    }

    /// The protected header and `iat` checks every PASSporT type shares
    /// (RFC 8225 §4, RFC 8224 §6.2.2), for PASSporT type `ppt`.
    fn header_and_iat(
        &mut self,
        identity: &IdentityHeader<'_>,
        p: &Passport,
        ppt: &str,
        e: &Expect<'_>,
    ) {
        let h = &p.header;
        let alg_ok = h.alg.as_deref() == Some("ES256") && identity.alg.is_none_or(|a| a == "ES256");
        self.record(
            "alg",
            alg_ok,
            Cause::InvalidIdentityHeader,
            format!(
                "header {}, Identity parameter {}; ES256 required",
                show(h.alg.as_deref()),
                show(identity.alg)
            ),
        );
        self.record(
            "typ",
            h.typ.as_deref() == Some("passport"),
            Cause::InvalidIdentityHeader,
            format!("{}; passport required", show(h.typ.as_deref())),
        );
        let ppt_ok = h.ppt.as_deref() == Some(ppt) && identity.ppt.is_none_or(|x| x == ppt);
        self.record(
            "ppt",
            ppt_ok,
            Cause::InvalidIdentityHeader,
            format!(
                "header {}, Identity parameter {}; {ppt} required",
                show(h.ppt.as_deref()),
                show(identity.ppt)
            ),
        );
        let x5u = h.x5u.as_deref().unwrap_or_default();
        self.record(
            "x5u-https",
            x5u.starts_with("https://"),
            Cause::BadIdentityInfo,
            format!("{}; https required", show(h.x5u.as_deref())),
        );
        self.record(
            "x5u-info",
            identity.info == Some(x5u),
            Cause::BadIdentityInfo,
            format!(
                "x5u {}, info {}",
                show(h.x5u.as_deref()),
                show(identity.info)
            ),
        );
        match p.claims.iat {
            Some(iat) => {
                let age = e.now - iat;
                let ok = age <= e.freshness_secs && age >= -e.skew_secs;
                self.record(
                    "iat",
                    ok,
                    Cause::StaleDate,
                    format!(
                        "age {age} s; window {} s, skew {} s",
                        e.freshness_secs, e.skew_secs
                    ),
                );
            }
            None => self.record("iat", false, Cause::StaleDate, "missing".into()),
        }
    }

    /// `orig.tn` names the calling number (canonical digits compared).
    fn orig(&mut self, p: &Passport, expected: &str) {
        let orig = p
            .claims
            .orig
            .tn
            .as_deref()
            .map(canonical_tn)
            .unwrap_or_default();
        self.record(
            "orig",
            !orig.is_empty() && orig == canonical_tn(expected),
            Cause::InvalidIdentityHeader,
            format!(
                "PASSporT {}, SIP {}",
                show(p.claims.orig.tn.as_deref()),
                expected
            ),
        );
    }

    /// One of `dest.tn` is one of the expected called numbers.
    fn dest(&mut self, p: &Passport, expected: &[&str]) {
        let c = &p.claims;
        let ok = c
            .dest
            .tn
            .iter()
            .map(|t| canonical_tn(t))
            .any(|t| !t.is_empty() && expected.iter().any(|d| canonical_tn(d) == t));
        self.record(
            "dest",
            ok,
            Cause::InvalidIdentityHeader,
            format!(
                "PASSporT {}, SIP {}",
                c.dest.tn.join(","),
                expected.join(",")
            ),
        );
    }

    fn finish(self) -> (Vec<Check>, Option<(Cause, String)>) {
        (self.checks, self.first)
    }
}

/// Checks a companion PASSporT that rides with the SHAKEN one — `div`
/// (RFC 8946 §6) or `rcd` (RFC 9795 §8): the shared header and `iat`
/// checks, and the same calling number. Type-specific claims are the
/// caller's (`divert`, `rcd`).
pub fn check_companion(
    identity: &IdentityHeader<'_>,
    p: &Passport,
    ppt: &str,
    e: &Expect<'_>,
) -> (Vec<Check>, Option<(Cause, String)>) {
    let mut r = Recorder::new();
    r.header_and_iat(identity, p, ppt, e);
    r.orig(p, e.orig);
    r.finish()
}

/// Runs the header and claim checks of a SHAKEN PASSporT (not the
/// signature). Returns every check in order and the first failure's cause.
pub fn check_claims(
    identity: &IdentityHeader<'_>,
    p: &Passport,
    e: &Expect<'_>,
) -> (Vec<Check>, Option<(Cause, String)>) {
    let mut r = Recorder::new();
    r.header_and_iat(identity, p, "shaken", e);
    let c = &p.claims;
    let attest = c.attest.as_deref().unwrap_or_default();
    r.record(
        "attest",
        matches!(attest, "A" | "B" | "C"),
        Cause::InvalidIdentityHeader,
        format!("{}; A, B or C", show(c.attest.as_deref())),
    );
    r.record(
        "origid",
        c.origid.as_deref().is_some_and(|o| !o.is_empty()),
        Cause::InvalidIdentityHeader,
        show(c.origid.as_deref()).to_owned(),
    );
    r.orig(p, e.orig);
    r.dest(p, e.dest);
    r.finish()
}

/// The PASSporT type of an Identity header value: its `ppt` parameter,
/// else the `ppt` of the PASSporT's protected header, else `shaken`'s
/// absence (`None`, a base PASSporT).
pub fn ppt_of(value: &[u8]) -> Option<String> {
    let h = IdentityHeader::parse(value).ok()?;
    if let Some(p) = h.ppt {
        return Some(p.to_ascii_lowercase());
    }
    let first = h.token.split('.').next()?;
    let json = URL_SAFE_NO_PAD.decode(first).ok()?;
    let header: Header = serde_json::from_slice(&json).ok()?;
    header.ppt.map(|p| p.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_numbers() {
        assert_eq!(canonical_tn("+1 (555) 010-0199"), "15550100199");
        assert_eq!(canonical_tn("15550199"), "15550199");
    }

    #[test]
    fn decode_rejects_malformed_tokens() {
        assert!(Passport::decode("a.b").is_err());
        assert!(Passport::decode("a..c").is_err());
        assert!(Passport::decode("!!.e30.AA").is_err());
        let ok = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"attest":"A"}"#),
            URL_SAFE_NO_PAD.encode([0u8; 64])
        );
        let p = Passport::decode(&ok).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.claims.attest.as_deref(), Some("A"));
        assert_eq!(p.signature.len(), 64);
    }
}
