//! What the relay has carried so far, live sessions included: the
//! `/metrics` counters of packets, bytes, drops and loss, and the jitter
//! of the streams.
//!
//! The counters once summed sessions only as they ended, so a call of an
//! hour showed nothing for an hour and then a step (issue 15). Now each
//! worker keeps the totals of its ended sessions and, when asked, adds
//! its live sessions' running statistics — both read on the worker's own
//! thread at one instant, so a session ending between two scrapes moves
//! from one sum to the other without being lost or counted twice. The
//! packet path stays as it was: no atomic, no lock.
//!
//! RFC 3550 loss (expected minus received) of a live stream can shrink
//! when a late duplicate arrives; [`MediaTotals::advance`] keeps every
//! counter from going backwards across scrapes, as Prometheus requires.

use super::SessionStats;
use crate::media::stats::StreamStats;

/// Upper bounds (seconds) of the jitter histogram: a good voice path stays
/// under 10 ms, 30 ms is audible, 100 ms and more breaks speech.
pub const JITTER_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0];

/// Totals of one worker, or of the whole relay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaTotals {
    /// RTP and RTCP packets and bytes received and relayed.
    pub packets: u64,
    pub bytes: u64,
    /// Packets dropped: not from the latched source.
    pub dropped_source: u64,
    /// Packets dropped by SRTP termination.
    pub srtp_failed: u64,
    /// RTP packets lost on the way to callgate (RFC 3550 A.3).
    pub lost: u64,
    /// Final interarrival jitter of ended streams that carried RTP, per
    /// bucket of [`JITTER_BUCKETS`] (not cumulative), with their count
    /// and sum (seconds).
    pub jitter_buckets: [u64; JITTER_BUCKETS.len()],
    pub jitter_count: u64,
    pub jitter_sum: f64,
    /// The largest jitter among live streams now (seconds).
    pub live_jitter_max: f64,
}

impl MediaTotals {
    fn add_stream(&mut self, s: &StreamStats) {
        self.packets += s.packets + s.rtcp_packets;
        self.bytes += s.bytes + s.rtcp_bytes;
        self.dropped_source += s.dropped_source;
        self.srtp_failed += s.srtp_failed;
        self.lost += s.lost;
    }

    /// Adds a live session's running statistics.
    pub fn add_live(&mut self, s: &SessionStats) {
        for leg in [&s.a, &s.b] {
            self.add_stream(leg);
            if leg.packets > 0 {
                self.live_jitter_max = self.live_jitter_max.max(leg.jitter_seconds());
            }
        }
    }

    /// Adds an ended session's final statistics, its streams' jitter to
    /// the histogram.
    pub fn add_ended(&mut self, s: &SessionStats) {
        for leg in [&s.a, &s.b] {
            self.add_stream(leg);
            if leg.packets > 1 {
                let j = leg.jitter_seconds();
                if let Some(i) = JITTER_BUCKETS.iter().position(|b| j <= *b) {
                    self.jitter_buckets[i] += 1;
                }
                self.jitter_count += 1;
                self.jitter_sum += j;
            }
        }
    }

    /// Takes a newer reading of the same worker, keeping each counter at
    /// least where it was.
    pub fn advance(&mut self, newer: &MediaTotals) {
        self.packets = self.packets.max(newer.packets);
        self.bytes = self.bytes.max(newer.bytes);
        self.dropped_source = self.dropped_source.max(newer.dropped_source);
        self.srtp_failed = self.srtp_failed.max(newer.srtp_failed);
        self.lost = self.lost.max(newer.lost);
        if newer.jitter_count >= self.jitter_count {
            self.jitter_buckets = newer.jitter_buckets;
            self.jitter_count = newer.jitter_count;
            self.jitter_sum = newer.jitter_sum;
        }
        self.live_jitter_max = newer.live_jitter_max;
    }

    /// Adds another worker's totals (the live maximum is the larger).
    pub fn sum(&mut self, other: &MediaTotals) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.dropped_source += other.dropped_source;
        self.srtp_failed += other.srtp_failed;
        self.lost += other.lost;
        for (a, b) in self.jitter_buckets.iter_mut().zip(other.jitter_buckets) {
            *a += b;
        }
        self.jitter_count += other.jitter_count;
        self.jitter_sum += other.jitter_sum;
        self.live_jitter_max = self.live_jitter_max.max(other.live_jitter_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(packets: u64, lost: u64) -> StreamStats {
        let mut s = StreamStats::default();
        s.packets = packets;
        s.bytes = packets * 172;
        s.lost = lost;
        s
    }

    #[test]
    fn a_session_moving_from_live_to_ended_keeps_the_counters() {
        let s = SessionStats {
            a: stream(50, 2),
            b: stream(40, 0),
            ..SessionStats::default()
        };
        let mut live = MediaTotals::default();
        live.add_live(&s);
        let mut ended = MediaTotals::default();
        ended.add_ended(&s);
        assert_eq!((live.packets, live.bytes, live.lost), (90, 90 * 172, 2));
        assert_eq!((ended.packets, ended.lost), (live.packets, live.lost));
        assert_eq!(ended.jitter_count, 2, "both streams carried RTP");
        assert_eq!(
            live.jitter_count, 0,
            "live streams are not in the histogram"
        );
    }

    #[test]
    fn a_reading_never_takes_a_counter_back() {
        let mut seen = MediaTotals {
            lost: 5,
            packets: 100,
            ..MediaTotals::default()
        };
        seen.advance(&MediaTotals {
            lost: 4,
            packets: 120,
            ..MediaTotals::default()
        });
        assert_eq!((seen.lost, seen.packets), (5, 120));
    }
}
