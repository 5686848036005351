//! Marking a verified call for the PBX: the `verstat` URI parameter on
//! P-Asserted-Identity (else From) (3GPP TS 24.229 §7.2A.20, ATIS-1000074
//! §5.3.3) and the `Reason: STIR` header of a call that continues after a
//! failed verification (RFC 8224 §6.2.2, RFC 9410).

use super::verify::{Status, Verification};

/// What a verification means for the call: the `verstat` to write, the
/// `Reason` header of a call that continues after a failure, or the
/// refusal when failures are rejected. The route and tag phases apply it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marking {
    /// Value of the `verstat` parameter (empty: none).
    pub verstat: String,
    /// Header lines to add (no CRLF).
    pub headers: Vec<String>,
    /// Answer with this status and reason phrase instead of forwarding.
    pub reject: Option<(u16, String)>,
}

/// The marking for a verification. `suffix` appends the attestation
/// (`-A`/`-B`/`-C`) for PBXs that show it, only when the PASSporT verified:
/// the attestation of a PASSporT that failed or could not be checked is a
/// claim nobody checked, and a PBX that shows the letter would show it as
/// if it were (issue 16); `reject` refuses failed calls.
pub fn marking(v: &Verification, suffix: bool, reject: bool) -> Marking {
    let base = match v.status {
        Status::Passed => "TN-Validation-Passed",
        Status::Failed => "TN-Validation-Failed",
        Status::NoValidation => "No-TN-Validation",
    };
    let verstat = match (&v.attest, suffix, v.status) {
        (Some(a), true, Status::Passed) if matches!(a.as_str(), "A" | "B" | "C") => {
            format!("{base}-{a}")
        }
        _ => base.to_owned(),
    };
    let mut m = Marking {
        verstat,
        ..Marking::default()
    };
    if let Some(f) = &v.failure {
        let text: String = f
            .text
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        if reject {
            let phrase = match f.code {
                403 => "Stale Date",
                428 => "Use Identity Header",
                436 => "Bad Identity Info",
                437 => "Unsupported Credential",
                _ => "Invalid Identity Header",
            };
            m.reject = Some((f.code, phrase.to_owned()));
        } else {
            m.headers
                .push(format!("Reason: STIR;cause={};text=\"{text}\"", f.code));
        }
    }
    m
}

/// The verification in words an agent reads in a glance (issue 16): what
/// was verified, by whom (the certificate subject's organisation, else
/// its common name, RFC 5280 §4.1.2.6, and its SPC, from its TNAuthList,
/// ATIS-1000080: "signed by Example Telecom (SPC 1234)"), what the
/// attestation means (ATIS-1000074 §5.2.3), and,
/// when it did not verify, why — the attestation then named as the
/// unproven claim it is. Built from callgate's own results; the network's
/// parts (SPC, attestation, the failure's text) are taken as they are and
/// quoted by whoever writes them into a header.
pub fn in_words(v: &Verification) -> String {
    let claim = |a: &str| format!(" Its claimed attestation {a} is unproven.");
    match v.status {
        Status::Passed => {
            let by = match (v.subject.as_ref().map(|s| s.name()), v.spc.as_deref()) {
                (Some(name), Some(spc)) => format!(", signed by {name} (SPC {spc})"),
                (Some(name), None) => format!(", signed by {name}"),
                (None, Some(spc)) => format!(", signed by the carrier with SPC {spc}"),
                (None, None) => String::new(),
            };
            let meaning = match v.attest.as_deref() {
                Some("A") => "A: the carrier knows the caller and that they may use this number.",
                Some("B") => {
                    "B: the carrier knows the caller, but not that they may use this number."
                }
                Some("C") => {
                    "C: the carrier only saw the call enter its network; the number is unproven."
                }
                _ => "unknown.",
            };
            format!("Caller ID signature verified{by}. Attestation {meaning}")
        }
        Status::Failed => {
            let why = v
                .failure
                .as_ref()
                .map(|f| format!(" ({} {})", f.code, f.text))
                .unwrap_or_default();
            let attest = v.attest.as_deref().map(claim).unwrap_or_default();
            format!("Caller ID signature FAILED{why}: the number may be faked.{attest}")
        }
        Status::NoValidation => match (v.attest.as_deref(), v.unavailable.as_deref()) {
            (None, Some("no Identity header")) | (None, None) => {
                "Caller ID not signed: the number is unproven.".to_owned()
            }
            (attest, why) => {
                let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
                let attest = attest.map(claim).unwrap_or_default();
                format!("Caller ID signature could not be checked{why}.{attest}")
            }
        },
    }
}

/// Bytes that end a `verstat` value wherever it is written: parameter and
/// URI delimiters, quotes, whitespace.
fn ends_value(b: u8) -> bool {
    matches!(
        b,
        b';' | b'>' | b'<' | b',' | b'"' | b'@' | b'?' | b'&' | b' ' | b'\t' | b'\r' | b'\n'
    )
}

/// Removes every `verstat` claim from an identity header value (an
/// untrusted peer's): the word `verstat` in any letter case, its `=value`,
/// and its separator, wherever it is written — URI parameter, user-part
/// parameter (3GPP TS 24.229 §7.2A.20), URI header, header parameter or
/// display name — leaving everything else as written (the host after a
/// user-part parameter included). `None` when there is none.
pub fn scrub_verstat(value: &[u8]) -> Option<Vec<u8>> {
    const WORD: &[u8] = b"verstat";
    // Jumps between the `v`/`V` bytes (memchr2): most values hold none.
    let found = |v: &[u8]| {
        memchr::memchr2_iter(b'v', b'V', v).find(|&i| {
            v.get(i..i + WORD.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(WORD))
        })
    };
    let skip_ws = |mut i: usize, v: &[u8]| {
        while i < v.len() && matches!(v[i], b' ' | b'\t') {
            i += 1;
        }
        i
    };
    let mut at = found(value)?;
    let mut out = value.to_vec();
    loop {
        let mut start = at;
        let mut end = at + WORD.len();
        let eq = skip_ws(end, &out);
        if out.get(eq) == Some(&b'=') {
            end = skip_ws(eq + 1, &out);
            while end < out.len() && !ends_value(out[end]) {
                end += 1;
            }
        }
        // The separator goes with the claim: `;` of a parameter, `&` of a
        // URI header, or `?` when it was the only URI header.
        match start.checked_sub(1).map(|p| out[p]) {
            Some(b';' | b'&') => start -= 1,
            Some(b'?') if out.get(end) == Some(&b'&') => end += 1,
            Some(b'?') => start -= 1,
            _ => {}
        }
        out.drain(start..end);
        match found(&out) {
            Some(next) => at = next,
            None => return Some(out),
        }
    }
}

/// Adds `;verstat=<v>` to the URI of a name-addr or addr-spec value
/// (any earlier verstat removed). An addr-spec is put in `<>` so the
/// parameter binds to the URI, not to the header.
pub fn with_verstat(value: &[u8], verstat: &str) -> Vec<u8> {
    let v = scrub_verstat(value).unwrap_or_else(|| value.to_vec());
    let param = format!(";verstat={verstat}");
    let mut out = Vec::with_capacity(v.len() + param.len() + 2);
    match v.iter().position(|b| *b == b'>') {
        Some(gt) => {
            out.extend_from_slice(&v[..gt]);
            out.extend_from_slice(param.as_bytes());
            out.extend_from_slice(&v[gt..]);
        }
        None => {
            let semi = v.iter().position(|b| *b == b';').unwrap_or(v.len());
            out.push(b'<');
            out.extend_from_slice(&v[..semi]);
            out.extend_from_slice(param.as_bytes());
            out.push(b'>');
            out.extend_from_slice(&v[semi..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::name::Subject;

    #[test]
    fn the_words_name_an_unchecked_attestation_a_claim() {
        let mut v = Verification::absent();
        assert_eq!(
            in_words(&v),
            "Caller ID not signed: the number is unproven."
        );
        v.attest = Some("A".into());
        v.unavailable = Some("certificate unavailable: connection refused".into());
        let w = in_words(&v);
        assert!(
            w.starts_with("Caller ID signature could not be checked (certificate unavailable")
                && w.ends_with("Its claimed attestation A is unproven."),
            "{w}"
        );
        v.status = Status::Failed;
        v.unavailable = None;
        let w = in_words(&v);
        assert!(
            w.contains("FAILED") && w.ends_with("claimed attestation A is unproven."),
            "{w}"
        );
        v.status = Status::Passed;
        v.spc = Some("1234".into());
        let w = in_words(&v);
        assert!(
            w.starts_with(
                "Caller ID signature verified, signed by the carrier with SPC 1234. Attestation A:"
            ) && !w.contains("claimed"),
            "{w}"
        );
    }

    #[test]
    fn the_words_name_who_signed_only_when_it_verified() {
        let mut v = Verification::absent();
        v.attest = Some("A".into());
        v.spc = Some("1234".into());
        v.subject = Some(Subject {
            organization: Some("Example Telecom".into()),
            common_name: Some("SHAKEN 1234".into()),
        });
        v.status = Status::Passed;
        let w = in_words(&v);
        assert!(
            w.starts_with(
                "Caller ID signature verified, signed by Example Telecom (SPC 1234). Attestation A:"
            ),
            "{w}"
        );
        // A delegate certificate has no SPC; a subject without O is named
        // by its CN.
        v.spc = None;
        v.subject = Some(Subject {
            organization: None,
            common_name: Some("SHAKEN 1234".into()),
        });
        assert!(
            in_words(&v).starts_with("Caller ID signature verified, signed by SHAKEN 1234. "),
            "{}",
            in_words(&v)
        );
        v.subject = None;
        assert!(in_words(&v).starts_with("Caller ID signature verified. Attestation A:"));
        // A signature that failed with a valid chain: nobody is named.
        v.subject = Some(Subject {
            organization: Some("Example Telecom".into()),
            common_name: None,
        });
        v.spc = Some("1234".into());
        for status in [Status::Failed, Status::NoValidation] {
            v.status = status;
            let w = in_words(&v);
            assert!(!w.contains("Example Telecom") && !w.contains("1234"), "{w}");
        }
    }

    #[test]
    fn only_a_verified_attestation_is_suffixed() {
        let mut v = Verification::absent();
        v.attest = Some("A".into());
        for (status, want) in [
            (Status::Passed, "TN-Validation-Passed-A"),
            (Status::Failed, "TN-Validation-Failed"),
            (Status::NoValidation, "No-TN-Validation"),
        ] {
            v.status = status;
            assert_eq!(marking(&v, true, false).verstat, want);
        }
    }

    #[test]
    fn verstat_goes_on_the_uri() {
        assert_eq!(
            with_verstat(
                b"<sip:+15550199@carrier;user=phone>",
                "TN-Validation-Passed-A"
            ),
            b"<sip:+15550199@carrier;user=phone;verstat=TN-Validation-Passed-A>"
        );
        assert_eq!(
            with_verstat(
                b"\"Bob\" <tel:+15550199;verstat=TN-Validation-Passed>;tag=1",
                "No-TN-Validation"
            ),
            b"\"Bob\" <tel:+15550199;verstat=No-TN-Validation>;tag=1"
        );
        assert_eq!(
            with_verstat(b"sip:+15550199@carrier;tag=abc", "TN-Validation-Failed"),
            b"<sip:+15550199@carrier;verstat=TN-Validation-Failed>;tag=abc"
        );
        assert_eq!(
            scrub_verstat(b"<sip:a@b;VERSTAT=TN-Validation-Passed;user=phone>").as_deref(),
            Some(&b"<sip:a@b;user=phone>"[..])
        );
        // The 3GPP user-part form keeps its host (it was cut off).
        assert_eq!(
            with_verstat(
                b"<sip:+14155550206;verstat=TN-Validation-Passed@carrier.example;user=phone>",
                "No-TN-Validation"
            ),
            b"<sip:+14155550206@carrier.example;user=phone;verstat=No-TN-Validation>"
        );
    }
}
