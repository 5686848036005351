//! The signals a policy decides on, each computed once per call and named
//! (docs/policy.md lists them). Pure: the gate gathers the inputs (the SIP
//! request, the verification, list membership, velocity counts, the clock)
//! and [`Signals`] holds the results the conditions read.

use serde::{Deserialize, Serialize};

use crate::stir::passport::canonical_tn;
use crate::stir::verify::{Status, Verification};

/// The STIR/SHAKEN outcome as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stir {
    Passed,
    Failed,
    /// `No-TN-Validation`: unsigned, or the certificate was unavailable.
    None,
}

/// Every signal of one call. `Option` fields are `None` when their source
/// could not be consulted; the policy's `[unavailable]` table says what a
/// condition on them then means (fail open or closed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Signals {
    /// `None`: verification is not enabled.
    pub stir: Option<Stir>,
    /// The PASSporT's attestation claim, whether or not it verified (the
    /// policy's `attest` condition; combine with `stir = "passed"` for a
    /// verified one). Recorded as `claimed_attest` so that the audit's
    /// signals never show an unchecked attestation in a verified one's
    /// form; records written before read back through the old name.
    #[serde(rename = "claimed_attest", alias = "attest")]
    pub attest: Option<char>,
    /// Response code of the verification failure (403, 436, 437, 438).
    pub stir_cause: Option<u16>,
    /// Age of `iat` when verified, seconds.
    pub iat_age_secs: Option<i64>,
    /// The call arrived through verified `div` PASSporTs (RFC 8946).
    pub diverted: bool,
    /// The PASSporT was already used on another call.
    pub replayed: bool,
    /// Verified rich call data is present (RFC 9795).
    pub rcd: bool,
    /// The PASSporT's origination identifier (for velocity per origid).
    pub origid: Option<String>,
    /// Calling number, canonical digits.
    pub calling: String,
    /// Called number, canonical digits.
    pub called: String,
    /// The calling number is not plausible E.164 (8–15 digits, no leading 0).
    pub e164_invalid: bool,
    /// The calling number is in a configured unassigned or invalid range.
    pub unassigned: bool,
    /// The calling number claims one of the contact centre's own numbers.
    pub own_number: bool,
    /// Anonymous caller (`anonymous` user, Privacy: id/user, or no number).
    pub anonymous: bool,
    /// Names of the operator lists the calling number is on.
    pub lists: Vec<String>,
    /// Calls counted by each velocity window, by name; `None`: unavailable.
    pub velocity: Vec<(String, Option<u64>)>,
    /// From and P-Asserted-Identity name different numbers.
    pub from_pai_mismatch: bool,
    /// A Diversion or History-Info header is present.
    pub diversion_header: bool,
    /// The User-Agent is not one of the expected ones.
    pub user_agent_unexpected: bool,
    /// P-Asserted-Identity's host is not one of the trunk's domains.
    pub pai_foreign_domain: bool,
    /// Local hour (0–23) and weekday (0 = Monday) of the call.
    pub hour: u8,
    pub weekday: u8,
}

impl Signals {
    /// The velocity count named `name`.
    pub fn velocity(&self, name: &str) -> Option<u64> {
        self.velocity
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, c)| *c)
    }
}

/// The STIR signals of a verification (`None`: verification not enabled).
pub fn stir_signals(s: &mut Signals, v: Option<&Verification>, now: i64) {
    let Some(v) = v else { return };
    s.stir = Some(match v.status {
        Status::Passed => Stir::Passed,
        Status::Failed => Stir::Failed,
        Status::NoValidation => Stir::None,
    });
    s.attest = v.attest.as_deref().and_then(|a| a.chars().next());
    s.stir_cause = v.failure.as_ref().map(|f| f.code);
    s.iat_age_secs = v.iat.map(|iat| now - iat);
    s.diverted = !v.diversion.is_empty();
    s.replayed = v.checks.iter().any(|c| c.name == "replay" && !c.ok);
    s.rcd = v.rcd.is_some();
}

/// Plausible E.164 (ITU-T E.164 §6): 8 to 15 digits, not starting with 0.
pub fn e164_plausible(tn: &str) -> bool {
    let d = canonical_tn(tn);
    (8..=15).contains(&d.len()) && !d.starts_with('0')
}

/// Whether `number` (canonical digits) starts with one of `prefixes`.
pub fn has_prefix(number: &str, prefixes: &[String]) -> bool {
    !number.is_empty() && prefixes.iter().any(|p| number.starts_with(p.as_str()))
}

/// Local hour and weekday (0 = Monday) of Unix time `secs` at a UTC offset.
pub fn hour_and_weekday(secs: i64, utc_offset_minutes: i32) -> (u8, u8) {
    let local = secs + i64::from(utc_offset_minutes) * 60;
    let days = local.div_euclid(86_400);
    let hour = local.rem_euclid(86_400) / 3600;
    // 1970-01-01 was a Thursday (3 with Monday = 0).
    let weekday = (days + 3).rem_euclid(7);
    (hour as u8, weekday as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_attestation_is_named_a_claim_and_old_records_read_back() {
        let s = Signals {
            stir: Some(Stir::None),
            attest: Some('A'),
            ..Signals::default()
        };
        let j = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(j["claimed_attest"], "A", "{j}");
        assert!(j.get("attest").is_none(), "{j}");
        let back: Signals = serde_json::from_value(j).unwrap_or_default();
        assert_eq!(back.attest, Some('A'));
        let old: Signals =
            serde_json::from_str(r#"{"stir": "failed", "attest": "B"}"#).unwrap_or_default();
        assert_eq!(old.attest, Some('B'));
    }

    #[test]
    fn numbers_and_time() {
        assert!(e164_plausible("+1 555 0100"));
        assert!(!e164_plausible("0555"));
        assert!(!e164_plausible("05550100123"));
        assert!(!e164_plausible("1234567890123456"));
        assert!(has_prefix("15550100", &["1555".into()]));
        assert!(!has_prefix("", &["".into()]));
        // 2026-11-24 was a Tuesday; 09:30 UTC is 04:30 at UTC-5.
        let t = 1_795_512_600;
        assert_eq!(hour_and_weekday(t, 0), (9, 1));
        assert_eq!(hour_and_weekday(t, -300), (4, 1));
        assert_eq!(hour_and_weekday(t, -600), (23, 0));
    }
}
