//! SIP messages out of a packet capture, for `callgate replay`: classic
//! pcap (microsecond or nanosecond, either byte order) and pcapng
//! (enhanced and simple packet blocks), over Ethernet, Linux cooked
//! (SLL, SLL2), BSD loopback or raw IP; IPv4 and IPv6; UDP, and TCP
//! segments that hold whole messages. Every read is bounds-checked:
//! a damaged capture yields fewer packets, never a panic.

/// One transport payload with its capture time (Unix microseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub time_us: i64,
    pub data: Vec<u8>,
}

/// Why a capture could not be read at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcapError {
    #[error("not a pcap or pcapng file")]
    Format,
}

fn u16_at(b: &[u8], at: usize, le: bool) -> Option<u16> {
    let x: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if le {
        u16::from_le_bytes(x)
    } else {
        u16::from_be_bytes(x)
    })
}

fn u32_at(b: &[u8], at: usize, le: bool) -> Option<u32> {
    let x: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if le {
        u32::from_le_bytes(x)
    } else {
        u32::from_be_bytes(x)
    })
}

/// Transport payloads of every UDP datagram and TCP segment in `file`.
pub fn payloads(file: &[u8]) -> Result<Vec<Payload>, PcapError> {
    let magic = u32_at(file, 0, true).ok_or(PcapError::Format)?;
    match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 => Ok(classic(file, magic)),
        0x0a0d_0d0a => Ok(pcapng(file)),
        _ => Err(PcapError::Format),
    }
}

fn classic(file: &[u8], magic: u32) -> Vec<Payload> {
    let le = matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d);
    let nanos = matches!(magic, 0xa1b2_3c4d | 0x4d3c_b2a1);
    let link = u32_at(file, 20, le).unwrap_or(1);
    let mut out = Vec::new();
    let mut at = 24;
    while let (Some(sec), Some(frac), Some(len)) = (
        u32_at(file, at, le),
        u32_at(file, at + 4, le),
        u32_at(file, at + 8, le),
    ) {
        let start = at + 16;
        let Some(pkt) = file.get(start..start + len as usize) else {
            break;
        };
        let us = i64::from(sec) * 1_000_000 + i64::from(if nanos { frac / 1000 } else { frac });
        if let Some(data) = transport(link, pkt) {
            out.push(Payload {
                time_us: us,
                data: data.to_vec(),
            });
        }
        at = start + len as usize;
    }
    out
}

fn pcapng(file: &[u8]) -> Vec<Payload> {
    let mut out = Vec::new();
    let mut le = true;
    let mut links: Vec<(u32, u64)> = Vec::new(); // (linktype, ticks per second)
    let mut at = 0;
    while let Some(kind) = u32_at(file, at, le) {
        if kind == 0x0a0d_0d0a {
            // Section header: byte-order magic decides the endianness.
            le = u32_at(file, at + 8, true) == Some(0x1a2b_3c4d);
            links.clear();
        }
        let Some(len) = u32_at(file, at + 4, le).map(|l| l as usize) else {
            break;
        };
        if len < 12 || at + len > file.len() {
            break;
        }
        let body = &file[at + 8..at + len - 4];
        match kind {
            1 => {
                // Interface description: linktype, then options (if_tsresol).
                let link = u16_at(body, 0, le).map(u32::from).unwrap_or(1);
                let mut ticks = 1_000_000u64;
                let mut o = 8;
                while let (Some(code), Some(olen)) = (u16_at(body, o, le), u16_at(body, o + 2, le))
                {
                    if code == 0 {
                        break;
                    }
                    if code == 9 {
                        if let Some(r) = body.get(o + 4) {
                            let exp = u32::from(r & 0x7f);
                            ticks = if r & 0x80 == 0 {
                                10u64.checked_pow(exp).unwrap_or(1_000_000)
                            } else {
                                2u64.checked_pow(exp).unwrap_or(1_000_000)
                            };
                        }
                    }
                    o += 4 + usize::from(olen).div_ceil(4) * 4;
                }
                links.push((link, ticks.max(1)));
            }
            6 => {
                // Enhanced packet: interface, timestamp, captured length.
                let (Some(iface), Some(hi), Some(lo), Some(cap)) = (
                    u32_at(body, 0, le),
                    u32_at(body, 4, le),
                    u32_at(body, 8, le),
                    u32_at(body, 12, le),
                ) else {
                    break;
                };
                let (link, ticks) = links.get(iface as usize).copied().unwrap_or((1, 1_000_000));
                let ts = (u64::from(hi) << 32) | u64::from(lo);
                let us = (u128::from(ts) * 1_000_000 / u128::from(ticks)) as i64;
                if let Some(pkt) = body.get(20..20 + cap as usize) {
                    if let Some(data) = transport(link, pkt) {
                        out.push(Payload {
                            time_us: us,
                            data: data.to_vec(),
                        });
                    }
                }
            }
            3 => {
                // Simple packet: no timestamp.
                let link = links.first().map(|l| l.0).unwrap_or(1);
                if let Some(pkt) = body.get(4..) {
                    if let Some(data) = transport(link, pkt) {
                        out.push(Payload {
                            time_us: 0,
                            data: data.to_vec(),
                        });
                    }
                }
            }
            _ => {}
        }
        at += len;
    }
    out
}

/// The UDP or TCP payload of one link-layer frame.
fn transport(link: u32, frame: &[u8]) -> Option<&[u8]> {
    let (ethertype, ip) = match link {
        1 => {
            // Ethernet, with up to two VLAN tags.
            let mut et = u16_at(frame, 12, false)?;
            let mut off = 14;
            while et == 0x8100 || et == 0x88a8 {
                et = u16_at(frame, off + 2, false)?;
                off += 4;
            }
            (et, frame.get(off..)?)
        }
        113 => (u16_at(frame, 14, false)?, frame.get(16..)?),
        276 => (u16_at(frame, 0, false)?, frame.get(20..)?),
        0 | 108 => {
            let family = u32_at(frame, 0, true)?;
            (if family == 2 { 0x0800 } else { 0x86dd }, frame.get(4..)?)
        }
        101 | 12 | 14 => {
            let v = frame.first()? >> 4;
            (if v == 4 { 0x0800 } else { 0x86dd }, frame)
        }
        _ => return None,
    };
    let (proto, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(u16_at(ip, 2, false)?);
            (*ip.get(9)?, ip.get(ihl..total.min(ip.len()))?)
        }
        0x86dd => {
            let plen = usize::from(u16_at(ip, 4, false)?);
            (*ip.get(6)?, ip.get(40..(40 + plen).min(ip.len()))?)
        }
        _ => return None,
    };
    match proto {
        17 => l4.get(8..),
        6 => {
            let off = usize::from(l4.get(12)? >> 4) * 4;
            l4.get(off..).filter(|d| !d.is_empty())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic pcap with one Ethernet/IPv4/UDP packet carrying `data`.
    pub fn one_packet(data: &[u8]) -> Vec<u8> {
        let mut f = vec![];
        f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        f.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&65535u32.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        let udp_len = 8 + data.len();
        let ip_len = 20 + udp_len;
        let mut pkt = vec![0u8; 12];
        pkt.extend_from_slice(&[0x08, 0x00]);
        pkt.extend_from_slice(&[0x45, 0]);
        pkt.extend_from_slice(&(ip_len as u16).to_be_bytes());
        pkt.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        pkt.extend_from_slice(&[0x13, 0xc4, 0x13, 0xc4]);
        pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(data);
        f.extend_from_slice(&1_795_510_800u32.to_le_bytes());
        f.extend_from_slice(&5u32.to_le_bytes());
        f.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        f.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        f.extend_from_slice(&pkt);
        f
    }

    #[test]
    fn classic_udp_and_damage() {
        let f = one_packet(b"INVITE sip:x SIP/2.0\r\n\r\n");
        let p = payloads(&f).unwrap_or_default();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].time_us, 1_795_510_800_000_005);
        assert!(p[0].data.starts_with(b"INVITE "));
        assert_eq!(payloads(b"nope"), Err(PcapError::Format));
        // Truncated anywhere: fewer packets, no panic.
        for cut in 0..f.len() {
            let _ = payloads(&f[..cut]);
        }
    }
}
