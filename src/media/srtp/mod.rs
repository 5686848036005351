//! SRTP (RFC 3711) with SDES keying (RFC 4568): the crypto core for
//! terminating SRTP at the relay — decrypt what one leg sends with that
//! leg's keys, re-encrypt for the other leg with the keys callgate offered
//! it. Sans-IO: packets in, packets out, in the caller's buffers, no
//! allocation per packet.
//!
//! * [`suite`] — the crypto suites and the SDP `a=crypto` attribute
//!   (RFC 4568 §9.1, §6.2);
//! * [`keys`] — master keys and session-key derivation (RFC 3711 §4.3);
//! * [`replay`] — packet index estimation and the replay window
//!   (RFC 3711 §3.3.1, §3.3.2, Appendix A);
//! * [`context`] — protect and unprotect RTP and RTCP packets
//!   (RFC 3711 §3.3, §3.4, §4.1.1, §4.2).
//!
//! Cryptography is aws-lc-rs (AES-128 in counter mode, HMAC-SHA1), the
//! library that already checks callgate's STIR/SHAKEN signatures.

pub mod context;
pub mod keys;
pub mod replay;
pub mod suite;

#[cfg(test)]
mod tests;

pub use context::SrtpContext;
pub use keys::MasterKey;
pub use suite::{CryptoAttribute, CryptoSuite};

/// Why a packet or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("packet too short for an {0} header and tag")]
    Short(&'static str),
    #[error("not RTP version 2")]
    Version,
    #[error("authentication tag does not match")]
    Auth,
    #[error("packet index {0} already received (replay)")]
    Replay(u64),
    #[error("packet index {0} is older than the replay window")]
    TooOld(u64),
    #[error("no room after the packet for its {0}-byte tag")]
    NoRoom(usize),
    #[error("crypto attribute: {0}")]
    Attribute(String),
    #[error("cipher: {0}")]
    Cipher(&'static str),
    #[error("more than {0} SSRCs to seal under one key")]
    TooManyStreams(usize),
}
