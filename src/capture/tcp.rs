//! TCP segments in sequence order (RFC 9293 §3.4): per direction of each
//! connection, the bytes after the last ones delivered are delivered
//! next; a segment ahead of them waits (at most [`MAX_AHEAD`] segments a
//! stream), a retransmission's bytes already delivered are dropped, and a
//! SYN sets where the stream starts (without one, the first segment seen
//! does). At most [`MAX_STREAMS`] streams are followed (the least recently
//! active one is forgotten to make room); FIN and RST end a stream.

use std::collections::HashMap;

use super::defrag::Packet;
use super::{Flow, Payload, Stats};

/// Segments a stream holds ahead of a gap.
pub const MAX_AHEAD: usize = 64;

/// Streams followed at once.
pub const MAX_STREAMS: usize = 4096;

/// One direction of a connection.
#[derive(Default)]
struct Stream {
    /// The sequence number of the next byte to deliver.
    next: Option<u32>,
    /// Segments past a gap: (sequence number, capture time, bytes).
    ahead: Vec<(u32, i64, Vec<u8>)>,
    /// Capture time of its last segment.
    last_us: i64,
}

/// The streams being followed.
#[derive(Default)]
pub struct Streams {
    streams: HashMap<Flow, Stream>,
}

/// The part of a segment starting at `seq` not yet delivered when `next`
/// is due (`None`: all delivered already, or it starts past `next`).
fn unseen(seq: u32, next: u32, data: &[u8]) -> Option<&[u8]> {
    let behind = next.wrapping_sub(seq) as i32;
    if behind < 0 {
        return None;
    }
    data.get(behind as usize..).filter(|d| !d.is_empty())
}

impl Streams {
    /// Takes one TCP segment; pushes what it makes deliverable to `out`.
    pub fn segment(
        &mut self,
        packet: &Packet<'_>,
        time_us: i64,
        stats: &mut Stats,
        out: &mut Vec<Payload>,
    ) {
        let Some(seg) = packet.tcp else {
            return;
        };
        if !self.streams.contains_key(&packet.flow) && self.streams.len() >= MAX_STREAMS {
            if let Some(idle) = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.last_us)
                .map(|(f, _)| *f)
            {
                if let Some(s) = self.streams.remove(&idle) {
                    stats.tcp_dropped += s.ahead.len() as u64;
                }
            }
        }
        let stream = self.streams.entry(packet.flow).or_default();
        stream.last_us = time_us;
        let data_seq = if seg.syn {
            stream.next = Some(seg.seq.wrapping_add(1));
            stream.ahead.clear();
            seg.seq.wrapping_add(1)
        } else {
            seg.seq
        };
        let next = *stream.next.get_or_insert(data_seq);
        if !packet.data.is_empty() {
            if let Some(fresh) = unseen(data_seq, next, &packet.data) {
                stream.next = Some(next.wrapping_add(fresh.len() as u32));
                out.push(Payload {
                    time_us,
                    flow: packet.flow,
                    data: fresh.to_vec(),
                });
                Self::drain(stream, packet.flow, out);
            } else if (data_seq.wrapping_sub(next) as i32) > 0 {
                if stream.ahead.len() < MAX_AHEAD {
                    stream.ahead.push((data_seq, time_us, packet.data.to_vec()));
                } else {
                    stats.tcp_dropped += 1;
                }
            }
        }
        if seg.fin || seg.rst {
            if let Some(s) = self.streams.remove(&packet.flow) {
                stats.tcp_dropped += s.ahead.len() as u64;
            }
        }
    }

    /// Delivers the waiting segments the gap's closing made due.
    fn drain(stream: &mut Stream, flow: Flow, out: &mut Vec<Payload>) {
        while let Some(next) = stream.next {
            let Some(i) = stream
                .ahead
                .iter()
                .position(|(seq, _, _)| (next.wrapping_sub(*seq) as i32) >= 0)
            else {
                return;
            };
            let (seq, time_us, data) = stream.ahead.swap_remove(i);
            if let Some(fresh) = unseen(seq, next, &data) {
                stream.next = Some(next.wrapping_add(fresh.len() as u32));
                out.push(Payload {
                    time_us,
                    flow,
                    data: fresh.to_vec(),
                });
            }
        }
    }
}
