//! `--srtp`: side A (the carrier) speaks SDES-SRTP and side B plain RTP,
//! so the relay terminates SRTP (ng `transport-protocol: RTP/AVP` on the
//! offer): it opens A's packets with A's key and seals B's for A with a key
//! of its own, named in the answer. Built with `--features srtp`.

/// One call's keys: A's own (it sends with it), and the relay's towards
/// A (A opens with it).
#[derive(Clone)]
#[cfg_attr(not(feature = "srtp"), allow(dead_code))]
pub struct CallKeys {
    pub a: Key,
    pub relay: Key,
}

#[cfg(feature = "srtp")]
mod imp {
    use super::CallKeys;
    use callgate::media::srtp::{CryptoAttribute, CryptoSuite, MasterKey, SrtpContext};

    pub type Key = MasterKey;

    /// A fresh key for side A, and its `a=crypto` value.
    pub fn new_key() -> Result<(MasterKey, String), String> {
        let key = MasterKey::random().map_err(|e| e.to_string())?;
        let line = CryptoAttribute {
            tag: 1,
            suite: CryptoSuite::AesCm128HmacSha1_80,
            key: key.clone(),
        }
        .to_value();
        Ok((key, line))
    }

    /// The key of the first `a=crypto` line of an SDP.
    pub fn key_of(sdp: &str) -> Option<MasterKey> {
        let v = sdp.lines().find_map(|l| l.strip_prefix("a=crypto:"))?;
        CryptoAttribute::parse(v.trim()).ok().map(|a| a.key)
    }

    /// Per call, the contexts of one direction.
    pub struct Contexts(Vec<SrtpContext>);

    impl Contexts {
        /// `relay`: the contexts that open what the relay sends A; else
        /// those that seal what A sends.
        pub fn new(keys: &[CallKeys], relay: bool) -> Contexts {
            Contexts(
                keys.iter()
                    .filter_map(|k| {
                        let key = if relay { &k.relay } else { &k.a };
                        SrtpContext::new(CryptoSuite::AesCm128HmacSha1_80, key).ok()
                    })
                    .collect(),
            )
        }

        /// Seals `buf[..len]` in place; the new length.
        pub fn protect(&mut self, call: usize, buf: &mut [u8], len: usize) -> Option<usize> {
            self.0.get_mut(call)?.protect_rtp(buf, len).ok()
        }

        /// Opens a packet in place; its plain length.
        pub fn unprotect(&mut self, call: usize, buf: &mut [u8]) -> Option<usize> {
            self.0.get_mut(call)?.unprotect_rtp(buf).ok()
        }
    }
}

#[cfg(not(feature = "srtp"))]
mod imp {
    use super::CallKeys;

    pub type Key = ();

    pub fn new_key() -> Result<((), String), String> {
        Err("rtpblast was built without --features srtp".into())
    }

    pub fn key_of(_sdp: &str) -> Option<()> {
        None
    }

    pub struct Contexts;

    impl Contexts {
        pub fn new(_keys: &[CallKeys], _relay: bool) -> Contexts {
            Contexts
        }
        pub fn protect(&mut self, _c: usize, _b: &mut [u8], _l: usize) -> Option<usize> {
            None
        }
        pub fn unprotect(&mut self, _c: usize, _b: &mut [u8]) -> Option<usize> {
            None
        }
    }
}

pub use imp::*;
