//! PASSporT replay detection (RFC 8224 §12.1, ATIS-1000074 §5.3.1): a
//! verified PASSporT may serve one call; the same PASSporT on another call
//! within the freshness window is a replay. Two things decide that, and
//! both are defined here so that every store (local or Redis) agrees:
//!
//! * **Which PASSporT** ([`passport_key`]): the SHA-256 of the JWS signing
//!   input (`header.payload`), not of the signature. An ECDSA signature is
//!   malleable — `(r, n−s)` verifies wherever `(r, s)` does, and a lenient
//!   base64url decoder accepts several spellings of one signature — so a
//!   key over the signature would let an attacker mint a "new" PASSporT
//!   from a captured one (issue 13). The signing input cannot change
//!   without breaking the signature, and it is what the signer vouched
//!   for: the same `orig`, `dest`, `iat` and `origid` are the same
//!   PASSporT however it was signed. A normalised low-s signature would
//!   close the `(r, n−s)` hole only; the signing input closes every
//!   signature-side variant at once. The digest also gives the store a
//!   fixed 32-byte key whatever the token's size.
//! * **Which call** ([`CallInstance`]): the Call-ID, the From tag and the
//!   top Via branch of the initial INVITE. A retransmission repeats all
//!   three and is the same call; a captured INVITE resent with its Call-ID
//!   but a new branch or From tag is a new transaction — a new call — and
//!   so a replay (before, the Call-ID alone was compared and such a resend
//!   passed again).

use aws_lc_rs::digest;

/// The replay key of a PASSporT (compact JWS `header.payload.signature`):
/// the SHA-256 of `header.payload`. `None` when the token has no
/// signature part.
pub fn passport_key(token: &str) -> Option<[u8; 32]> {
    let (signing_input, _signature) = token.rsplit_once('.')?;
    let d = digest::digest(&digest::SHA256, signing_input.as_bytes());
    d.as_ref().try_into().ok()
}

/// Bytes of the Call-ID kept for reports (the whole of it is hashed).
const SHOWN_CALL_ID: usize = 128;

/// The call an initial INVITE starts, as the replay store records it: a
/// digest of Call-ID, From tag and top Via branch, then the Call-ID (cut
/// to 128 bytes) for the report of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInstance(Vec<u8>);

impl CallInstance {
    pub fn new(call_id: &[u8], from_tag: &[u8], branch: &[u8]) -> CallInstance {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for part in [call_id, from_tag, branch] {
            // Length-prefixed, so that no two triples hash alike.
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let d = ctx.finish();
        let mut owner = Vec::with_capacity(33 + SHOWN_CALL_ID);
        for b in &d.as_ref()[..16] {
            owner.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        owner.push(b' ');
        owner.extend_from_slice(&call_id[..call_id.len().min(SHOWN_CALL_ID)]);
        CallInstance(owner)
    }

    /// What the store keeps as the claim's owner.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The Call-ID shown for a stored owner (what follows the digest).
    pub fn call_id_of(owner: &[u8]) -> String {
        let shown = owner
            .iter()
            .position(|b| *b == b' ')
            .map_or(owner, |i| &owner[i + 1..]);
        String::from_utf8_lossy(shown).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_ignores_the_signature_and_follows_the_signed_content() {
        let a = passport_key("aGVhZA.cGF5bG9hZA.c2lnMQ");
        assert!(a.is_some());
        assert_eq!(a, passport_key("aGVhZA.cGF5bG9hZA.b3RoZXItc2ln"));
        assert_ne!(a, passport_key("aGVhZA.cGF5bG9hZB.c2lnMQ"));
        assert_eq!(passport_key("no-dots"), None);
    }

    #[test]
    fn a_new_branch_or_from_tag_is_a_new_call_and_the_call_id_is_shown() {
        let first = CallInstance::new(b"call-1", b"tag-1", b"z9hG4bK-1");
        assert_eq!(first, CallInstance::new(b"call-1", b"tag-1", b"z9hG4bK-1"));
        assert_ne!(first, CallInstance::new(b"call-1", b"tag-1", b"z9hG4bK-2"));
        assert_ne!(first, CallInstance::new(b"call-1", b"tag-2", b"z9hG4bK-1"));
        // Moving bytes between the parts does not collide.
        assert_ne!(
            CallInstance::new(b"ab", b"c", b""),
            CallInstance::new(b"a", b"bc", b"")
        );
        assert_eq!(CallInstance::call_id_of(first.as_bytes()), "call-1");
        let long = CallInstance::new(&[b'x'; 1000], b"", b"");
        assert_eq!(long.as_bytes().len(), 33 + 128);
    }
}
