//! Marking a verified call for the PBX: the `verstat` URI parameter on
//! P-Asserted-Identity (else From) (3GPP TS 24.229 §7.2A.20, ATIS-1000074
//! §5.3.3) and the `Reason: STIR` header of a call that continues after a
//! failed verification (RFC 8224 §6.2.2, RFC 9410).

use super::verify::{Status, Verification};

/// What the inbound phases (verify, route, tag) or the sign phase hand
/// the proxy for one INVITE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marking {
    /// Value of the `verstat` parameter (empty: none; a forged one from the
    /// trunk is still removed).
    pub verstat: String,
    /// Header lines to add (no CRLF).
    pub headers: Vec<String>,
    /// Answer with this status and reason phrase instead of forwarding.
    pub reject: Option<(u16, String)>,
    /// Send to this Request-URI instead (the review queue).
    pub request_uri: Option<String>,
    /// 100 Trying already went to the caller (the inbound phases send it
    /// before they run): the proxy core records it in the INVITE server
    /// transaction, to answer retransmissions, but does not send it again.
    pub trying_sent: bool,
}

/// The marking for a verification. `suffix` appends the attestation
/// (`-A`/`-B`/`-C`) for PBXs that show it; `reject` refuses failed calls.
pub fn marking(v: &Verification, suffix: bool, reject: bool) -> Marking {
    let base = match v.status {
        Status::Passed => "TN-Validation-Passed",
        Status::Failed => "TN-Validation-Failed",
        Status::NoValidation => "No-TN-Validation",
    };
    let verstat = match (&v.attest, suffix, v.status) {
        (Some(a), true, Status::Passed | Status::Failed)
            if matches!(a.as_str(), "A" | "B" | "C") =>
        {
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

/// Removes every `;verstat=...` parameter (an untrusted peer's claim).
pub fn strip_verstat(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let rest = &value[i..];
        if rest.len() > 9 && rest[..9].eq_ignore_ascii_case(b";verstat=") {
            let end = rest[9..]
                .iter()
                .position(|b| matches!(b, b';' | b'>' | b',' | b' ' | b'?'))
                .map_or(rest.len(), |p| p + 9);
            i += end;
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    out
}

/// Adds `;verstat=<v>` to the URI of a name-addr or addr-spec value
/// (any earlier verstat removed). An addr-spec is put in `<>` so the
/// parameter binds to the URI, not to the header.
pub fn with_verstat(value: &[u8], verstat: &str) -> Vec<u8> {
    let v = strip_verstat(value);
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
            strip_verstat(b"<sip:a@b;VERSTAT=TN-Validation-Passed;user=phone>"),
            b"<sip:a@b;user=phone>"
        );
    }
}
