//! Borrowed views of RTP and RTCP headers (RFC 3550 §5.1, §6.4): read in
//! place from the packet buffer, no copy and no allocation per packet.

/// The fixed RTP header of a packet (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy)]
pub struct RtpHeader<'a> {
    buf: &'a [u8],
}

/// Length of the fixed RTP header.
pub const RTP_HEADER_LEN: usize = 12;

impl<'a> RtpHeader<'a> {
    /// The header of an RTP version 2 packet; `None` for anything shorter
    /// than the fixed header or of another version.
    pub fn parse(buf: &'a [u8]) -> Option<RtpHeader<'a>> {
        (buf.len() >= RTP_HEADER_LEN && buf[0] >> 6 == 2).then_some(RtpHeader { buf })
    }

    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }

    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7f
    }

    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }

    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }

    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]])
    }

    /// Bytes of the fixed header, the CSRC list and the header extension
    /// (RFC 3550 §5.1, §5.3.1): where the payload starts. `None` when the
    /// packet is shorter than they say.
    pub fn header_len(&self) -> Option<usize> {
        let first = self.buf[0];
        let mut len = RTP_HEADER_LEN + 4 * usize::from(first & 0x0f);
        if first & 0x10 != 0 {
            let words = self.buf.get(len + 2..len + 4)?;
            len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
        }
        (len <= self.buf.len()).then_some(len)
    }
}

/// Whether a packet is RTCP rather than RTP when both share a port
/// (RFC 5761 §4: RTCP packet types 192–223 fall where RTP's marker bit and
/// payload types 64–95 would be, which RTP must not use).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

/// The RTP clock rate of a static payload type (RFC 3551 §6), when known.
pub fn static_clock_rate(payload_type: u8) -> Option<u32> {
    match payload_type {
        0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 => Some(8_000),
        6 => Some(16_000),
        10 | 11 => Some(44_100),
        14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => Some(90_000),
        16 => Some(11_025),
        17 => Some(22_050),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_and_rtcp_demultiplexing() {
        let pkt = [
            0x80, 0x88, 0x12, 0x34, 0x00, 0x00, 0x0a, 0x00, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
        ];
        let h = RtpHeader::parse(&pkt).unwrap_or_else(|| panic!("rtp"));
        assert!(h.marker());
        assert_eq!(h.payload_type(), 8);
        assert_eq!(h.sequence(), 0x1234);
        assert_eq!(h.timestamp(), 2560);
        assert_eq!(h.ssrc(), 0xdead_beef);
        assert!(!is_rtcp(&pkt));
        let sr = [0x80, 200, 0, 6, 0, 0, 0, 1];
        assert!(is_rtcp(&sr));
        assert!(RtpHeader::parse(&pkt[..11]).is_none());
        assert!(RtpHeader::parse(&[0x40; 12]).is_none(), "version 1");
        assert_eq!(static_clock_rate(0), Some(8000));
        assert_eq!(static_clock_rate(101), None);
    }

    #[test]
    fn header_length_counts_csrcs_and_the_extension() {
        let mut pkt = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        let len = |p: &[u8]| RtpHeader::parse(p).and_then(|h| h.header_len());
        assert_eq!(len(&pkt), Some(12));
        pkt[0] = 0x92; // X, two CSRCs
        pkt.extend_from_slice(&[0; 8]);
        assert_eq!(len(&pkt), None, "extension header missing");
        pkt.extend_from_slice(&[0xbe, 0xde, 0, 2]);
        assert_eq!(len(&pkt), None, "extension shorter than it says");
        pkt.extend_from_slice(&[0; 8]);
        assert_eq!(len(&pkt), Some(12 + 8 + 4 + 8));
        pkt.push(0x55);
        assert_eq!(len(&pkt), Some(32), "the payload starts after it");
    }
}
