//! The capture file formats, parsed by `pcap-file`: classic pcap
//! (libpcap's format, microsecond or nanosecond timestamps, either byte
//! order) and pcapng (draft-ietf-opsawg-pcapng: sections of either byte
//! order, interface descriptions with their link type and `if_tsresol`,
//! enhanced, simple and obsolete packet blocks).

use std::borrow::Cow;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::DataLink;

use super::CaptureError;

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Capture time, Unix microseconds (0 where the format has none).
    pub time_us: i64,
    pub link: DataLink,
    pub data: &'a [u8],
}

/// Magic numbers: classic pcap (µs, ns; either byte order) and pcapng.
const PCAP_MAGICS: [u32; 4] = [0xa1b2_c3d4, 0xa1b2_3c4d, 0xd4c3_b2a1, 0x4d3c_b2a1];
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;

/// Calls `each` with every frame of `file`, in file order. `Ok(Some(why))`
/// when the file is damaged part-way: the frames before the damage were
/// given, and `why` says where.
pub fn frames(file: &[u8], each: impl FnMut(Frame<'_>)) -> Result<Option<String>, CaptureError> {
    let magic: [u8; 4] = file
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .ok_or(CaptureError::Short(file.len()))?;
    let magic = u32::from_le_bytes(magic);
    if PCAP_MAGICS.contains(&magic) {
        classic(file, each)
    } else if magic == PCAPNG_MAGIC {
        pcapng(file, each)
    } else {
        Err(CaptureError::Format(magic))
    }
}

/// Where the damage is, for the operator.
fn damage(file: &[u8], rest: &[u8], records: u64, e: &pcap_file::PcapError) -> String {
    format!(
        "damaged at byte {} after {records} records: {}",
        file.len() - rest.len(),
        match e {
            pcap_file::PcapError::IncompleteBuffer => "the file ends inside a record".to_owned(),
            e => e.to_string(),
        }
    )
}

fn classic(file: &[u8], mut each: impl FnMut(Frame<'_>)) -> Result<Option<String>, CaptureError> {
    let (mut rest, parser) = PcapParser::new(file).map_err(|e| CaptureError::Header {
        format: "pcap",
        reason: e.to_string(),
    })?;
    let link = parser.header().datalink;
    let mut records = 0u64;
    while !rest.is_empty() {
        match parser.next_packet(rest) {
            Ok((next, packet)) => {
                let data: &[u8] = match &packet.data {
                    Cow::Borrowed(d) => d,
                    Cow::Owned(d) => d,
                };
                each(Frame {
                    time_us: micros(packet.timestamp.as_micros()),
                    link,
                    data,
                });
                records += 1;
                rest = next;
            }
            Err(e) => return Ok(Some(damage(file, rest, records, &e))),
        }
    }
    Ok(None)
}

fn pcapng(file: &[u8], mut each: impl FnMut(Frame<'_>)) -> Result<Option<String>, CaptureError> {
    let (mut rest, mut parser) = PcapNgParser::new(file).map_err(|e| CaptureError::Header {
        format: "pcapng",
        reason: e.to_string(),
    })?;
    let mut records = 0u64;
    while !rest.is_empty() {
        let (next, block) = match parser.next_block(rest) {
            Ok(b) => b,
            Err(e) => return Ok(Some(damage(file, rest, records, &e))),
        };
        records += 1;
        rest = next;
        let (interface, ticks, data) = match &block {
            // The parser reads the raw timestamp as nanoseconds; its unit
            // is the interface's `if_tsresol`.
            Block::EnhancedPacket(p) => (
                p.interface_id,
                p.timestamp.as_nanos() as u64,
                p.data.as_ref(),
            ),
            Block::Packet(p) => (u32::from(p.interface_id), p.timestamp, p.data.as_ref()),
            Block::SimplePacket(p) => (0, 0, p.data.as_ref()),
            _ => continue,
        };
        // A packet of an interface not described is skipped.
        let Some(iface) = parser.interfaces().get(interface as usize) else {
            continue;
        };
        let time_us = match &block {
            Block::SimplePacket(_) => 0,
            _ => micros(u128::from(ticks) * 1_000_000 / u128::from(ticks_per_second(iface))),
        };
        each(Frame {
            time_us,
            link: iface.linktype,
            data,
        });
    }
    Ok(None)
}

/// Timestamp units per second of an interface (`if_tsresol`: a power of
/// ten, or of two with the high bit set; microseconds by default).
fn ticks_per_second(iface: &InterfaceDescriptionBlock<'_>) -> u64 {
    iface
        .options
        .iter()
        .find_map(|o| match o {
            InterfaceDescriptionOption::IfTsResol(r) => {
                let exp = u32::from(r & 0x7f);
                if r & 0x80 == 0 {
                    10u64.checked_pow(exp)
                } else {
                    2u64.checked_pow(exp)
                }
            }
            _ => None,
        })
        .unwrap_or(1_000_000)
        .max(1)
}

fn micros(us: u128) -> i64 {
    i64::try_from(us).unwrap_or(i64::MAX)
}
