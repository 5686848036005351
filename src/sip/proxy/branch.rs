//! Branch parameters and loop detection (RFC 3261 §16.6 step 8, §16.3 step 4).
//!
//! Our branches are `z9hG4bK-cg<loop>-<unique>`: `<loop>` is a hash of the
//! fields that define where a request is going (Request-URI, From tag,
//! Call-ID, CSeq number, Route values), so a request that comes back to us
//! with one of our Vias carrying the same hash is a loop (482), while one
//! whose hash differs is a legitimate spiral.

use crate::sip::message::HeaderName;
use crate::sip::message::SipMessage;

/// Prefix of every branch callgate generates.
pub const PREFIX: &str = "z9hG4bK-cg";

/// FNV-1a, 64 bit: stable across processes, so a loop through two callgate
/// instances is detected too.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The loop-detection hash of a request as received.
pub fn loop_hash(msg: &SipMessage) -> u32 {
    let from_tag = msg.from_tag().unwrap_or_default();
    let seq = msg.cseq().map(|c| c.seq.to_be_bytes()).unwrap_or_default();
    let route = msg.first(HeaderName::Route).unwrap_or_default();
    let h = fnv1a(&[
        msg.request_uri().unwrap_or_default(),
        from_tag,
        msg.call_id().unwrap_or_default(),
        &seq,
        route,
    ]);
    (h ^ (h >> 32)) as u32
}

/// Extracts the loop hash from one of our branches.
pub fn parse_loop_hash(branch: &[u8]) -> Option<u32> {
    let rest = branch.strip_prefix(PREFIX.as_bytes())?;
    let hex = rest.get(..8)?;
    u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Generates unique branches (a salt and a counter) and the core's tags,
/// from a seed the core is given: the same seed gives the same branches
/// and tags, so a run can be reproduced.
#[derive(Debug)]
pub struct BranchGenerator {
    salt: u32,
    counter: u64,
    rng: fastrand::Rng,
}

impl BranchGenerator {
    pub fn seeded(seed: u64) -> BranchGenerator {
        let mut rng = fastrand::Rng::with_seed(seed);
        BranchGenerator {
            salt: rng.u32(..),
            counter: 0,
            rng,
        }
    }

    /// A random token for tags and Call-IDs.
    pub fn token(&mut self) -> String {
        format!("{:016x}", self.rng.u64(..))
    }

    /// A new unique branch for a request with this loop hash.
    pub fn next(&mut self, loop_hash: u32) -> String {
        self.counter += 1;
        format!(
            "{PREFIX}{loop_hash:08x}-{:08x}{:x}",
            self.salt, self.counter
        )
    }
    /// A deterministic branch for a statelessly forwarded request (the ACK
    /// for a 2xx): the same input always gives the same branch (§16.11).
    pub fn stateless(loop_hash: u32, incoming_branch: &[u8]) -> String {
        format!(
            "{PREFIX}{loop_hash:08x}-s{:016x}",
            fnv1a(&[incoming_branch])
        )
    }
}

/// A random token for tags and Call-IDs outside the core (the media
/// phase's own BYEs).
pub fn token() -> String {
    format!("{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_are_unique_and_carry_the_loop_hash() {
        let mut g = BranchGenerator::seeded(1);
        assert_eq!(
            BranchGenerator::seeded(7).next(1),
            BranchGenerator::seeded(7).next(1)
        );
        assert_eq!(
            BranchGenerator::seeded(7).token(),
            BranchGenerator::seeded(7).token()
        );
        let a = g.next(0xdead_beef);
        let b = g.next(0xdead_beef);
        assert_ne!(a, b);
        assert!(a.starts_with("z9hG4bK"));
        assert_eq!(parse_loop_hash(a.as_bytes()), Some(0xdead_beef));
        assert_eq!(parse_loop_hash(b"z9hG4bK-other"), None);
        let s = BranchGenerator::stateless(1, b"z9hG4bKabc");
        assert_eq!(s, BranchGenerator::stateless(1, b"z9hG4bKabc"));
        assert_eq!(parse_loop_hash(s.as_bytes()), Some(1));
    }
}
