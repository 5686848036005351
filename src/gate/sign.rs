//! The sign phase: agents' outbound calls (initial INVITEs from the PBX)
//! get a SHAKEN Identity header (RFC 8224 §5, ATIS-1000074 §5.2) before the
//! proxy core forwards them to the carrier. Signing is local and takes tens
//! of microseconds, so it runs inline.

use std::time::SystemTime;

use crate::config::StirConfig;
use crate::sip::message::SipMessage;
use crate::stir::keys::SigningKey;
use crate::stir::passport::canonical_tn;
use crate::stir::sign::{identity_header, new_origid, SignRequest};

/// Signing settings and key.
pub struct SignPhase {
    key: SigningKey,
    x5u: String,
    full_prefixes: Vec<String>,
    other: char,
}

impl SignPhase {
    /// `None` when signing is off.
    pub fn from_config(cfg: &StirConfig) -> Result<Option<SignPhase>, String> {
        let Some(s) = &cfg.sign else { return Ok(None) };
        let pem = std::fs::read(&s.key)
            .map_err(|e| format!("stir.sign_key: {}: {e}", s.key.display()))?;
        let key = SigningKey::from_pem(&pem).map_err(|e| format!("stir.sign_key: {e}"))?;
        Ok(Some(SignPhase {
            key,
            x5u: s.x5u.clone(),
            full_prefixes: s.full_attestation_prefixes.clone(),
            other: s.other_attestation,
        }))
    }

    /// Attestation for a calling number: A for the contact centre's own
    /// numbers, the configured level (B or C) otherwise.
    pub fn attestation(&self, orig: &str) -> char {
        let digits = canonical_tn(orig);
        if self
            .full_prefixes
            .iter()
            .any(|p| digits.starts_with(p.as_str()))
        {
            'A'
        } else {
            self.other
        }
    }

    /// The Identity header line to add to `msg` (no CRLF); `None` when the
    /// request names no calling or called number to attest.
    pub fn identity_line(&self, msg: &SipMessage) -> Option<String> {
        let orig = crate::sip::parties::calling(msg);
        let dest = crate::sip::parties::called(msg)
            .into_iter()
            .rev()
            .find(|d| !canonical_tn(d).is_empty())?;
        if canonical_tn(&orig).is_empty() {
            return None;
        }
        let origid = new_origid();
        let iat = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let req = SignRequest {
            orig: &orig,
            dest: &dest,
            attest: self.attestation(&orig),
            origid: &origid,
            x5u: &self.x5u,
            iat,
        };
        match identity_header(&self.key, &req) {
            Ok(h) => Some(format!("Identity: {h}")),
            Err(e) => {
                tracing::warn!(error = %e, "cannot sign outbound call");
                None
            }
        }
    }
}
