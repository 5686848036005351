//! sip-loadgen: a cheap SIP load generator (UAC and UAS over UDP) for the
//! callgate benchmark harness (test-calls/bench/run.sh). Std only.

pub mod flood;
pub mod sip;
pub mod sys;
pub mod uac;
pub mod uas;

use std::time::Duration;

/// RFC 3261 timer values.
pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);

/// FNV-1a: Call-IDs are short, and SipHash's DoS resistance buys nothing here.
#[derive(Default, Clone, Copy)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub type FnvMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;
