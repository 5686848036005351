//! Whole SIP messages out of a capture's payloads: a UDP datagram is one
//! message (RFC 3261 §18.3 gives UDP no framing), a TCP stream is cut
//! into messages by Content-Length (RFC 3261 §18.3) with the SIP core's
//! own stream framer, so a message split across segments, or segments
//! holding several messages, come out whole. A stream that cannot be
//! framed (no Content-Length, over the message limit) is dropped from
//! there on, as a SIP peer would close it.

use std::collections::HashMap;

use crate::sip::message::{frame_stream, Limits};

use super::{Flow, Payload, Transport};

/// The SIP messages of `payloads`, each with the time of the payload that
/// completed it.
pub fn messages(payloads: &[Payload], limits: &Limits) -> Vec<Payload> {
    let mut out = Vec::new();
    let mut streams: HashMap<Flow, Vec<u8>> = HashMap::new();
    let mut broken: std::collections::HashSet<Flow> = std::collections::HashSet::new();
    for p in payloads {
        if p.flow.transport == Transport::Udp {
            out.push(p.clone());
            continue;
        }
        if broken.contains(&p.flow) {
            continue;
        }
        let buf = streams.entry(p.flow).or_default();
        buf.extend_from_slice(&p.data);
        loop {
            match frame_stream(buf, limits) {
                Ok(Some(frame)) => {
                    let end = frame.skip + frame.len;
                    out.push(Payload {
                        time_us: p.time_us,
                        flow: p.flow,
                        data: buf[frame.skip..end].to_vec(),
                    });
                    buf.drain(..end);
                }
                Ok(None) => break,
                Err(_) => {
                    streams.remove(&p.flow);
                    broken.insert(p.flow);
                    break;
                }
            }
        }
    }
    out
}
