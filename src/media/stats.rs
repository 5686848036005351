//! Per-stream reception statistics as RFC 3550 defines them for RTCP
//! receiver reports: packets and bytes, loss from the extended highest
//! sequence number (Appendix A.3) and interarrival jitter (§6.4.1,
//! Appendix A.8). Updated from borrowed headers; nothing allocates.

use serde::Serialize;

use super::rtp::{static_clock_rate, RtpHeader};

/// A sequence jump larger than this starts a new sequence (RFC 3550 A.1's
/// MAX_DROPOUT) rather than counting thousands of packets lost.
const MAX_DROPOUT: u16 = 3000;

/// What one leg of a call received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// RTP packets and bytes received and relayed.
    pub packets: u64,
    pub bytes: u64,
    pub rtcp_packets: u64,
    pub rtcp_bytes: u64,
    /// Packets dropped: from an address other than the latched one.
    pub dropped_source: u64,
    /// Packets dropped: nowhere to send them yet, or the send failed.
    pub dropped_send: u64,
    /// Packets that were neither RTP nor RTCP.
    pub malformed: u64,
    /// Packets dropped by SRTP termination: authentication, replay or
    /// decoding failed (RFC 3711 §3.3), or no room for the tag.
    pub srtp_failed: u64,
    /// Packets expected minus received (RFC 3550 A.3), not below zero.
    pub lost: u64,
    /// Interarrival jitter in RTP timestamp units (RFC 3550 §6.4.1).
    pub jitter: u32,
    /// Times the source address was latched (1 for a normal call).
    pub latches: u32,
    #[serde(skip)]
    seq: SeqState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SeqState {
    started: bool,
    ssrc: u32,
    base: u32,
    max: u16,
    cycles: u32,
    received: u64,
    /// Relative transit of the previous packet, in timestamp units.
    transit: i64,
    /// Jitter scaled by 16 (RFC 3550 A.8).
    jitter16: u64,
    /// Clock rate of the last packet's payload type (Hz).
    rate: u32,
}

impl StreamStats {
    /// Counts an RTP packet received at `arrival_us` (microseconds on any
    /// monotonic clock).
    pub fn on_rtp(&mut self, h: &RtpHeader<'_>, len: usize, arrival_us: u64) {
        self.packets += 1;
        self.bytes += len as u64;
        let seq = h.sequence();
        let s = &mut self.seq;
        if !s.started || s.ssrc != h.ssrc() {
            // A new source (or the first packet): start over (RFC 3550 A.1).
            *s = SeqState {
                started: true,
                ssrc: h.ssrc(),
                base: u32::from(seq),
                max: seq,
                ..SeqState::default()
            };
        } else {
            let delta = seq.wrapping_sub(s.max);
            if delta != 0 && delta < MAX_DROPOUT {
                if seq < s.max {
                    s.cycles += 1 << 16;
                }
                s.max = seq;
            } else if delta != 0 && delta <= u16::MAX - 100 {
                // A big jump: a restarted sender; begin a new sequence.
                s.base = s.cycles + u32::from(seq);
                s.max = seq;
                s.received = 0;
            }
            // delta == 0 or a small step back: duplicate or reordered.
        }
        s.received += 1;
        let extended_max = u64::from(s.cycles) + u64::from(s.max);
        let expected = extended_max + 1 - u64::from(s.base).min(extended_max + 1);
        self.lost = expected.saturating_sub(s.received);
        // Jitter (RFC 3550 A.8), in the payload's clock units.
        // Dynamic payload types (telephone-event, Opus…) are taken as 8 kHz,
        // the rate of the voice codecs carrier trunks use.
        let rate = static_clock_rate(h.payload_type()).unwrap_or(8_000);
        let arrival = (u128::from(arrival_us) * u128::from(rate) / 1_000_000) as i64;
        let transit = arrival - i64::from(h.timestamp());
        if s.received > 1 {
            let d = (transit - s.transit).unsigned_abs();
            s.jitter16 = s.jitter16 + d - ((s.jitter16 + 8) >> 4);
        }
        s.transit = transit;
        s.rate = rate;
        self.jitter = u32::try_from(s.jitter16 >> 4).unwrap_or(u32::MAX);
    }

    /// The interarrival jitter in seconds (timestamp units over the
    /// payload's clock rate).
    pub fn jitter_seconds(&self) -> f64 {
        f64::from(self.jitter) / f64::from(self.seq.rate.max(1))
    }

    pub fn on_rtcp(&mut self, len: usize) {
        self.rtcp_packets += 1;
        self.rtcp_bytes += len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, ts: u32) -> [u8; 12] {
        let mut p = [0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p
    }

    fn feed(s: &mut StreamStats, seq: u16, ts: u32, at_us: u64) {
        let p = pkt(seq, ts);
        let h = RtpHeader::parse(&p).unwrap_or_else(|| panic!("rtp"));
        s.on_rtp(&h, 172, at_us);
    }

    #[test]
    fn loss_counts_gaps_across_the_sequence_wrap() {
        let mut s = StreamStats::default();
        // 65530 .. 65535, then 0 .. 9 with 3 and 4 missing.
        for (i, seq) in (65530u16..=65535).chain(0..10).enumerate() {
            if seq == 3 || seq == 4 {
                continue;
            }
            feed(&mut s, seq, i as u32 * 160, i as u64 * 20_000);
        }
        assert_eq!(s.packets, 14);
        assert_eq!(s.lost, 2);
        assert_eq!(s.bytes, 14 * 172);
    }

    #[test]
    fn duplicates_and_reordering_are_not_loss() {
        let mut s = StreamStats::default();
        for (seq, at) in [
            (1u16, 0u64),
            (3, 40_000),
            (2, 41_000),
            (3, 42_000),
            (4, 60_000),
        ] {
            feed(&mut s, seq, u32::from(seq) * 160, at);
        }
        assert_eq!(s.lost, 0);
    }

    #[test]
    fn jitter_is_zero_for_a_steady_stream_and_grows_with_variation() {
        let mut steady = StreamStats::default();
        for i in 0..50u16 {
            feed(&mut steady, i, u32::from(i) * 160, u64::from(i) * 20_000);
        }
        assert_eq!(steady.jitter, 0);
        let mut shaky = StreamStats::default();
        for i in 0..50u16 {
            let wobble = if i % 2 == 0 { 0 } else { 5_000 }; // 5 ms late every other packet
            feed(
                &mut shaky,
                i,
                u32::from(i) * 160,
                u64::from(i) * 20_000 + wobble,
            );
        }
        // |D| = 40 timestamp units (5 ms at 8 kHz) per packet: J → 40.
        assert!((30..=40).contains(&shaky.jitter), "{}", shaky.jitter);
    }

    #[test]
    fn a_new_ssrc_restarts_the_count() {
        let mut s = StreamStats::default();
        feed(&mut s, 100, 0, 0);
        feed(&mut s, 101, 160, 20_000);
        let mut p = pkt(5000, 0);
        p[11] = 9; // another SSRC
        let h = RtpHeader::parse(&p).unwrap_or_else(|| panic!("rtp"));
        s.on_rtp(&h, 172, 40_000);
        assert_eq!(s.lost, 0);
    }
}
