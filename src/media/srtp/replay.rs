//! The packet index of an SRTP stream and its replay window
//! (RFC 3711 §3.3.1, §3.3.2, Appendix A).

use super::SrtpError;

/// Packets remembered behind the highest index (RFC 3711 §3.3.2 asks for
/// at least 64).
pub const WINDOW: u64 = 64;

/// One SSRC's rollover counter, highest sequence number, and which of the
/// last [`WINDOW`] indices were seen.
#[derive(Debug, Clone, Copy)]
pub struct StreamIndex {
    roc: u32,
    highest: u16,
    /// Bit n: index (highest index − n) was accepted.
    seen: u64,
}

impl StreamIndex {
    /// The stream's state after its first packet (ROC 0, RFC 3711 §3.3.1).
    pub fn starting_at(seq: u16) -> StreamIndex {
        StreamIndex {
            roc: 0,
            highest: seq,
            seen: 0,
        }
    }

    /// A window whose highest index is `index`, not yet seen (SRTCP,
    /// whose packets carry their index).
    pub fn at_index(index: u64) -> StreamIndex {
        StreamIndex {
            roc: (index >> 16) as u32,
            highest: index as u16,
            seen: 0,
        }
    }

    /// The ROC that goes with `index` (RFC 3711 §3.3.1: index = 2^16 ·
    /// ROC + SEQ).
    pub fn roc_of(index: u64) -> u32 {
        (index >> 16) as u32
    }

    fn highest_index(&self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.highest)
    }

    /// The 48-bit index of a packet with sequence number `seq`: the guess
    /// of RFC 3711 Appendix A, the ROC one off from the current where the
    /// sequence number wrapped. A packet that would need a ROC below 0 (a
    /// late one from before the stream's first) is too old.
    pub fn estimate(&self, seq: u16) -> Result<u64, SrtpError> {
        let (s_l, seq_i) = (i32::from(self.highest), i32::from(seq));
        let roc = if s_l < 32_768 && seq_i - s_l > 32_768 {
            self.roc.checked_sub(1)
        } else if s_l >= 32_768 && s_l - 32_768 > seq_i {
            self.roc.checked_add(1)
        } else {
            Some(self.roc)
        };
        roc.map(|v| (u64::from(v) << 16) | u64::from(seq))
            .ok_or(SrtpError::TooOld(u64::from(seq)))
    }

    /// Refuses an index seen before or too old to tell (§3.3.2); call
    /// before authenticating, [`StreamIndex::accept`] after.
    pub fn check(&self, index: u64) -> Result<(), SrtpError> {
        let top = self.highest_index();
        if index > top {
            return Ok(());
        }
        let behind = top - index;
        if behind >= WINDOW {
            return Err(SrtpError::TooOld(index));
        }
        if self.seen & (1 << behind) != 0 {
            return Err(SrtpError::Replay(index));
        }
        Ok(())
    }

    /// Records an authenticated packet's index: it may move the window
    /// and the ROC forward (Appendix A's update).
    pub fn accept(&mut self, index: u64) {
        let top = self.highest_index();
        if index > top {
            let ahead = index - top;
            self.seen = if ahead >= WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.roc = (index >> 16) as u32;
            self.highest = index as u16;
        } else {
            let behind = top - index;
            if behind < WINDOW {
                self.seen |= 1 << behind;
            }
        }
    }
}
