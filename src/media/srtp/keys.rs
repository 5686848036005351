//! Master keys and the session keys derived from them (RFC 3711 §4.3).

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::iv::FixedLength;

use super::SrtpError;

/// Bytes of an AES-128 master or session encryption key.
pub const KEY_LEN: usize = 16;
/// Bytes of a master or session salt (112 bits).
pub const SALT_LEN: usize = 14;
/// Bytes of an HMAC-SHA1 session authentication key (n_a = 160).
pub const AUTH_KEY_LEN: usize = 20;

/// A master key and master salt, as SDES carries them (`key||salt`).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    pub key: [u8; KEY_LEN],
    pub salt: [u8; SALT_LEN],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)") // never in logs
    }
}

impl MasterKey {
    /// From the 30 bytes of an SDES `inline:` key (key then salt).
    pub fn from_concatenated(raw: &[u8]) -> Option<MasterKey> {
        if raw.len() != KEY_LEN + SALT_LEN {
            return None;
        }
        let mut key = [0; KEY_LEN];
        let mut salt = [0; SALT_LEN];
        key.copy_from_slice(&raw[..KEY_LEN]);
        salt.copy_from_slice(&raw[KEY_LEN..]);
        Some(MasterKey { key, salt })
    }

    pub fn concatenated(&self) -> [u8; KEY_LEN + SALT_LEN] {
        let mut out = [0; KEY_LEN + SALT_LEN];
        out[..KEY_LEN].copy_from_slice(&self.key);
        out[KEY_LEN..].copy_from_slice(&self.salt);
        out
    }

    /// A fresh random master key (for the leg callgate offers SRTP to).
    pub fn random() -> Result<MasterKey, SrtpError> {
        let mut raw = [0u8; KEY_LEN + SALT_LEN];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| SrtpError::Cipher("no randomness"))?;
        MasterKey::from_concatenated(&raw).ok_or(SrtpError::Cipher("key length"))
    }
}

/// Key derivation labels (RFC 3711 §4.3.2).
#[derive(Debug, Clone, Copy)]
pub enum Label {
    RtpEncryption = 0,
    RtpAuthentication = 1,
    RtpSalt = 2,
    RtcpEncryption = 3,
    RtcpAuthentication = 4,
    RtcpSalt = 5,
}

/// The session keys of one direction for RTP or for RTCP.
pub struct SessionKeys {
    pub cipher: EncryptingKey,
    pub auth: aws_lc_rs::hmac::Key,
    pub salt: [u8; SALT_LEN],
}

/// AES in counter mode over `out` (zeros in, keystream out, or data in,
/// data XOR keystream out) from the 128-bit counter block `iv`
/// (RFC 3711 §4.1.1: the block counter is the low 16 bits).
pub fn aes_cm(cipher: &EncryptingKey, iv: [u8; 16], out: &mut [u8]) -> Result<(), SrtpError> {
    cipher
        .less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map(|_| ())
        .map_err(|_| SrtpError::Cipher("AES-CM"))
}

/// AES-128 in counter mode with `key`.
pub fn aes_ctr_key(key: &[u8; KEY_LEN]) -> Result<EncryptingKey, SrtpError> {
    UnboundCipherKey::new(&AES_128, key)
        .and_then(EncryptingKey::ctr)
        .map_err(|_| SrtpError::Cipher("AES-128 key"))
}

/// The key derivation function with a key derivation rate of 0 (the SDES
/// default, so r = 0): x = (label || r) XOR master salt, right-aligned;
/// output = the AES-CM keystream of the master key from x · 2^16
/// (RFC 3711 §4.3.1, §4.3.3).
pub fn derive(
    master: &EncryptingKey,
    salt: &[u8; SALT_LEN],
    label: Label,
    out: &mut [u8],
) -> Result<(), SrtpError> {
    let mut iv = [0u8; 16];
    iv[..SALT_LEN].copy_from_slice(salt);
    // key_id = label (8 bits) || r (48 bits, zero): its label byte lands
    // 7 bytes from the salt's end.
    iv[SALT_LEN - 7] ^= label as u8;
    out.fill(0);
    aes_cm(master, iv, out)
}

impl SessionKeys {
    /// RTP (`rtcp = false`) or RTCP session keys of a master key.
    pub fn derive(master: &MasterKey, rtcp: bool) -> Result<SessionKeys, SrtpError> {
        let (enc, auth, salt) = if rtcp {
            (
                Label::RtcpEncryption,
                Label::RtcpAuthentication,
                Label::RtcpSalt,
            )
        } else {
            (
                Label::RtpEncryption,
                Label::RtpAuthentication,
                Label::RtpSalt,
            )
        };
        let m = aes_ctr_key(&master.key)?;
        let mut k_e = [0u8; KEY_LEN];
        let mut k_a = [0u8; AUTH_KEY_LEN];
        let mut k_s = [0u8; SALT_LEN];
        derive(&m, &master.salt, enc, &mut k_e)?;
        derive(&m, &master.salt, auth, &mut k_a)?;
        derive(&m, &master.salt, salt, &mut k_s)?;
        Ok(SessionKeys {
            cipher: aes_ctr_key(&k_e)?,
            auth: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &k_a),
            salt: k_s,
        })
    }

    /// The counter block of a packet: (k_s · 2^16) XOR (SSRC · 2^64) XOR
    /// (index · 2^16) (RFC 3711 §4.1.1).
    pub fn iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..SALT_LEN].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        iv
    }
}
