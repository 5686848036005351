//! The RTP of a captured dialog, for `callgate trace to-sipp`: the
//! datagrams each side sent to the audio address the other side's SDP
//! named (the offer's and the answer's first `m=audio`, RFC 3264 §5, §6),
//! written as the pcap files sipp's `<exec play_pcap_audio=…>` replays.
//! sipp keeps each packet's payload and timing and sends it from its own
//! media port to the address the replay's SDP names, so the addresses
//! written here only need to be well-formed. Sans-IO: payloads in, pcap
//! bytes out.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, UdpHeader};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

use super::{Payload, Transport};
use crate::media::sdp::Sdp;

/// Why an RTP stream could not be written as a pcap.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("an RTP packet of {0} bytes does not fit in one IPv4 datagram")]
    TooLarge(usize),
    #[error("writing the RTP pcap: {0}")]
    Pcap(String),
}

/// The address of the first audio stream an SDP body (RFC 8866 §5.7,
/// §5.14) offers or answers: where the other side sends its RTP.
pub fn audio_addr(body: &[u8]) -> Option<SocketAddr> {
    let sdp = Sdp::parse(body).ok()?;
    let m = sdp
        .media()
        .iter()
        .find(|m| m.media_type.eq_ignore_ascii_case("audio") && m.port != 0)?;
    Some(SocketAddr::new(m.address?, m.port))
}

/// Whether `data` looks like an RTP packet (RFC 3550 §5.1: version 2, a
/// whole fixed header) rather than RTCP (payload types 72–76 with the
/// marker bit, RFC 5761 §4) or anything else.
fn is_rtp(data: &[u8]) -> bool {
    data.len() >= 12 && data[0] >> 6 == 2 && !(72..=76).contains(&(data[1] & 0x7f))
}

/// The RTP datagrams of `payloads` sent to `to`, from `since` (capture
/// time, microseconds) on, in capture order.
pub fn rtp_to(payloads: &[Payload], to: SocketAddr, since: i64) -> Vec<&Payload> {
    payloads
        .iter()
        .filter(|p| {
            p.flow.transport == Transport::Udp
                && p.flow.dst == to
                && p.time_us >= since
                && is_rtp(&p.data)
        })
        .collect()
}

/// How long a stream lasts, first packet to last, milliseconds.
pub fn duration_ms(packets: &[&Payload]) -> u64 {
    match (packets.first(), packets.last()) {
        (Some(a), Some(b)) => u64::try_from((b.time_us - a.time_us) / 1000).unwrap_or(0),
        _ => 0,
    }
}

/// `packets` as a pcap sipp's `play_pcap_audio` reads: Ethernet, IPv4,
/// UDP (sipp rewrites the addresses and ports when it plays them), the
/// captured payloads and times. IPv6 streams are written over IPv4
/// documentation addresses (RFC 5737), which sipp ignores the same way.
pub fn pcap(packets: &[&Payload]) -> Result<Vec<u8>, MediaError> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut w =
        PcapWriter::with_header(Vec::new(), header).map_err(|e| MediaError::Pcap(e.to_string()))?;
    let v4 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => ip.octets(),
        IpAddr::V6(_) => [192, 0, 2, 1],
    };
    for p in packets {
        let len = u16::try_from(8 + p.data.len())
            .ok()
            .filter(|l| *l <= u16::MAX - 20)
            .ok_or(MediaError::TooLarge(p.data.len()))?;
        let udp = UdpHeader {
            source_port: p.flow.src.port(),
            destination_port: p.flow.dst.port(),
            length: len,
            checksum: 0,
        };
        let ip = Ipv4Header::new(len, 64, IpNumber::UDP, v4(p.flow.src), v4(p.flow.dst))
            .map_err(|_| MediaError::TooLarge(p.data.len()))?;
        let mut frame = Ethernet2Header {
            source: [2, 0, 0, 0, 0, 1],
            destination: [2, 0, 0, 0, 0, 2],
            ether_type: EtherType::IPV4,
        }
        .to_bytes()
        .to_vec();
        frame.extend_from_slice(&ip.to_bytes());
        frame.extend_from_slice(&udp.to_bytes());
        frame.extend_from_slice(&p.data);
        let micros = u64::try_from(p.time_us).unwrap_or(0);
        let orig = u32::try_from(frame.len()).map_err(|_| MediaError::TooLarge(p.data.len()))?;
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(micros),
            orig,
            &frame,
        ))
        .map_err(|e| MediaError::Pcap(e.to_string()))?;
    }
    Ok(w.into_writer())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Flow;

    fn rtp(seq: u16, time_us: i64, to: &str) -> Payload {
        let mut data = vec![0x80, 8, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        data[2..4].copy_from_slice(&seq.to_be_bytes());
        data.extend_from_slice(&[0xd5; 160]);
        Payload {
            time_us,
            flow: Flow {
                transport: Transport::Udp,
                src: "127.0.0.10:31000".parse().unwrap_or_else(|e| panic!("{e}")),
                dst: to.parse().unwrap_or_else(|e| panic!("{e}")),
            },
            data,
        }
    }

    #[test]
    fn the_stream_to_the_answered_address_becomes_a_pcap_sipp_reads() {
        let answer = audio_addr(
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.20\r\ns=-\r\nc=IN IP4 127.0.0.20\r\nt=0 0\r\n\
              m=video 0 RTP/AVP 96\r\nm=audio 42000 RTP/AVP 8\r\n",
        );
        assert_eq!(answer, "127.0.0.20:42000".parse().ok());
        let to = "127.0.0.20:42000";
        let mut all = vec![rtp(1, 1_000_000, to), rtp(2, 1_020_000, to)];
        // Another stream, an RTCP packet, a packet before the call: left.
        all.push(rtp(3, 1_040_000, "127.0.0.20:42002"));
        let mut rtcp = rtp(4, 1_060_000, to);
        rtcp.data[1] = 200;
        all.push(rtcp);
        all.insert(0, rtp(0, 10, to));
        let Some(answer) = answer else { return };
        let stream = rtp_to(&all, answer, 500_000);
        assert_eq!(stream.len(), 2);
        assert_eq!(duration_ms(&stream), 20);
        let file = pcap(&stream).unwrap_or_else(|e| panic!("{e}"));
        // Read back by the capture reader: the same payloads and times.
        let read = crate::capture::read(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.payloads.len(), 2);
        assert_eq!(read.payloads[1].data, stream[1].data);
        assert_eq!(read.payloads[1].time_us, 1_020_000);
        assert_eq!(read.payloads[0].flow.dst, answer);
    }
}
