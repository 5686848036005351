//! Crypto suites and the SDP `a=crypto` attribute of SDES (RFC 4568).

use base64::Engine as _;

use super::keys::MasterKey;
use super::SrtpError;

/// The SDES crypto suites callgate terminates (RFC 4568 §6.2): AES-128 in
/// counter mode with HMAC-SHA1, an 80-bit or a 32-bit SRTP tag (SRTCP
/// always carries 80 bits, §6.2.1-6.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl CryptoSuite {
    pub fn parse(name: &str) -> Option<CryptoSuite> {
        match name {
            "AES_CM_128_HMAC_SHA1_80" => Some(CryptoSuite::AesCm128HmacSha1_80),
            "AES_CM_128_HMAC_SHA1_32" => Some(CryptoSuite::AesCm128HmacSha1_32),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// Bytes of the SRTP authentication tag.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => 10,
            CryptoSuite::AesCm128HmacSha1_32 => 4,
        }
    }

    /// Bytes of the SRTCP authentication tag (80 bits for both suites).
    pub fn rtcp_tag_len(self) -> usize {
        10
    }
}

/// One `a=crypto:<tag> <suite> inline:<key||salt>[|lifetime][|MKI:len]`
/// line (RFC 4568 §9.1) of a suite callgate supports, with one key and no
/// MKI or session parameters (which callgate does not implement; a line
/// with them is refused by name so the offerer's other lines can be
/// tried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    pub tag: u32,
    pub suite: CryptoSuite,
    pub key: MasterKey,
}

impl CryptoAttribute {
    /// Parses the attribute's value (after `a=crypto:`).
    pub fn parse(value: &str) -> Result<CryptoAttribute, SrtpError> {
        let bad = |why: &str| SrtpError::Attribute(format!("{why}: {value}"));
        let mut fields = value.split_ascii_whitespace();
        let tag = fields
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|t| *t < 1_000_000_000)
            .ok_or_else(|| bad("tag is not 1 to 9 digits"))?;
        let suite_name = fields.next().ok_or_else(|| bad("no crypto suite"))?;
        let suite =
            CryptoSuite::parse(suite_name).ok_or_else(|| bad("crypto suite not supported"))?;
        let key_params = fields.next().ok_or_else(|| bad("no key parameters"))?;
        if key_params.contains(';') {
            return Err(bad("more than one key is not supported"));
        }
        if let Some(param) = fields.next() {
            return Err(bad(&format!("session parameter {param} is not supported")));
        }
        let inline = key_params
            .strip_prefix("inline:")
            .ok_or_else(|| bad("key method is not inline"))?;
        let mut parts = inline.split('|');
        let encoded = parts.next().unwrap_or_default();
        for p in parts {
            if p.contains(':') {
                return Err(bad("MKI is not supported"));
            }
            // A lifetime (`2^31` or decimal) bounds how many packets the
            // key may protect (§6.1; without one, the suite's maximum,
            // 2^48). callgate does not re-key a call, so it takes a key
            // whose lifetime covers at least 2^31 packets (a year of one
            // stream at 50 packets/s is 2^31 / 1.36).
            let packets = match p.strip_prefix("2^") {
                Some(exp) => exp.parse::<u32>().ok().filter(|e| *e <= 64).map(|e| {
                    if e >= 63 {
                        u64::MAX
                    } else {
                        1u64 << e
                    }
                }),
                None => p.parse::<u64>().ok(),
            }
            .ok_or_else(|| bad("lifetime is not a number"))?;
            if packets < 1 << 31 {
                return Err(bad(
                    "key lifetime shorter than 2^31 packets is not supported",
                ));
            }
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| bad("key is not base64"))?;
        let key =
            MasterKey::from_concatenated(&raw).ok_or_else(|| bad("key||salt is not 30 bytes"))?;
        Ok(CryptoAttribute { tag, suite, key })
    }

    /// The attribute's value, for `a=crypto:` in an SDP callgate writes.
    pub fn to_value(&self) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(self.key.concatenated());
        format!("{} {} inline:{encoded}", self.tag, self.suite.name())
    }
}
