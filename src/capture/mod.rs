//! Packet captures, for `callgate replay --pcap` and its fuzz target:
//! what a carrier's or a lab's `tcpdump` wrote, read back into the
//! transport payloads the SIP layer understands.
//!
//! The layers, a file each, every one bounds-checked (a damaged or
//! crafted capture yields fewer payloads and a note of the damage, never
//! a panic):
//! - [`file`]: the capture formats, classic pcap (microsecond or
//!   nanosecond, either byte order) and pcapng (enhanced, simple and
//!   obsolete packet blocks, `if_tsresol`), read by the `pcap-file` crate;
//! - [`link`]: link layers, Ethernet (with VLAN tags), Linux cooked
//!   capture (SLL and SLL2), BSD loopback and raw IPv4/IPv6, sliced by the
//!   `etherparse` crate;
//! - [`defrag`]: IPv4 (RFC 791 §3.2) and IPv6 (RFC 8200 §4.5) fragment
//!   reassembly, with a bound on the incomplete sets held and a timeout
//!   in capture time — a signed INVITE is often larger than the path MTU;
//! - [`tcp`]: TCP segments put in sequence order per direction of each
//!   connection (RFC 9293 §3.4), retransmissions dropped, bounded too;
//! - [`sip`]: whole SIP messages out of those payloads — a UDP datagram is
//!   one, a TCP stream is framed by Content-Length (RFC 3261 §18.3);
//! - [`upper_pdu`]: Wireshark's exported PDUs (link type 252), a SIP
//!   message each with its addresses: how a capture of SIP over TLS
//!   arrives decrypted (Wireshark or tshark decrypt it with the session
//!   keys and export the SIP messages);
//! - [`to_sipp`]: one dialog of those messages as a sipp scenario pair
//!   (`callgate trace to-sipp`), its Identity headers kept or re-signed
//!   fresh by [`resign`].

pub mod defrag;
pub mod expect;
pub mod file;
pub mod link;
pub mod media;
pub mod resign;
pub mod sip;
pub mod tcp;
pub mod to_sipp;
pub mod upper_pdu;

use std::net::SocketAddr;

/// The transport a payload came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One direction of a conversation: transport, source and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// One transport payload with its capture time (Unix microseconds): a
/// whole UDP datagram (reassembled from its IP fragments), or the next
/// in-order bytes of a TCP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub time_us: i64,
    pub flow: Flow,
    pub data: Vec<u8>,
}

/// Why a capture could not be read at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaptureError {
    #[error("not a pcap or pcapng file (magic number {0:#010x})")]
    Format(u32),
    #[error("not a pcap or pcapng file: shorter than a file header ({0} bytes)")]
    Short(usize),
    #[error("damaged {format} file header: {reason}")]
    Header {
        format: &'static str,
        reason: String,
    },
}

/// What the reader counted on the way: what it skipped, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Packet records read.
    pub packets: u64,
    /// Records whose link layer is not one of [`link`]'s.
    pub unsupported_link: u64,
    /// Frames that do not slice as IP (ARP, damaged or cut by the snap
    /// length).
    pub unparsed: u64,
    /// IP fragments seen, and the packets reassembled from them.
    pub fragments: u64,
    pub reassembled: u64,
    /// Incomplete fragment sets dropped at the timeout, or to make room
    /// at the limit ([`defrag::MAX_PENDING`]).
    pub fragments_expired: u64,
    pub fragments_evicted: u64,
    /// Fragment sets still incomplete at the end of the capture.
    pub fragments_unfinished: u64,
    /// Fragments refused (overlapping ends, unaligned, beyond 64 KiB).
    pub fragments_invalid: u64,
    /// TCP segments dropped: out of order past the per-stream bound, or
    /// of a stream evicted at the stream limit.
    pub tcp_dropped: u64,
    /// Where the file is damaged, if it is: the rest is not read.
    pub damage: Option<String>,
}

/// A capture read: its payloads in capture order, and the counts.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub payloads: Vec<Payload>,
    pub stats: Stats,
}

/// Reads every UDP datagram and in-order TCP payload of the capture
/// `file` (pcap or pcapng).
pub fn read(file: &[u8]) -> Result<Capture, CaptureError> {
    let mut stats = Stats::default();
    let mut defrag = defrag::Reassembler::default();
    let mut tcp = tcp::Streams::default();
    let mut payloads = Vec::new();
    let damage = file::frames(file, |frame| {
        stats.packets += 1;
        if frame.link == pcap_file::DataLink::WIRESHARK_UPPER_PDU {
            match upper_pdu::sip_message(frame.data) {
                Some((flow, data)) => payloads.push(Payload {
                    time_us: frame.time_us,
                    flow,
                    data: data.to_vec(),
                }),
                None => stats.unparsed += 1,
            }
            return;
        }
        let Some(sliced) = link::slice(frame.link, frame.data) else {
            if link::supported(frame.link) {
                stats.unparsed += 1;
            } else {
                stats.unsupported_link += 1;
            }
            return;
        };
        let Some(packet) = defrag.packet(&sliced, frame.time_us, &mut stats) else {
            return;
        };
        match packet.flow.transport {
            Transport::Udp => payloads.push(Payload {
                time_us: frame.time_us,
                flow: packet.flow,
                data: packet.data.to_vec(),
            }),
            Transport::Tcp => tcp.segment(&packet, frame.time_us, &mut stats, &mut payloads),
        }
    })?;
    stats.damage = damage;
    stats.fragments_unfinished = defrag.pending() as u64;
    Ok(Capture { payloads, stats })
}
