//! Wireshark's exported PDUs (link type 252, `LINKTYPE_WIRESHARK_UPPER_PDU`):
//! how a SIP-over-TLS capture reaches callgate decrypted. The capture
//! itself holds only TLS records; Wireshark or tshark, given the session
//! keys (an `SSLKEYLOGFILE` written by the client or server, or the
//! server's RSA key for TLS 1.2 without forward secrecy), decrypts and
//! dissects them, and *File → Export PDUs to File…* (`tshark -U "OSI layer
//! 7"`) writes each SIP message it dissected as one record of this link
//! type: a list of tags, then the message.
//!
//! The tags (Wireshark's `wsutil/exported_pdu_tlvs.h`): each a big-endian
//! 16-bit type and 16-bit length, then `length` bytes; type 0 ends the
//! list. Read here: the dissector name (12, a string padded with NULs:
//! `sip`, `sip.tcp`), the IPv4 (20, 21) or IPv6 (22, 23) source and
//! destination, the port type (24, a 32-bit value: 2 TCP, 3 UDP) and the
//! source and destination ports (25, 26, 32 bits each). A record without
//! addresses, ports or a SIP dissector name is skipped: what the rest of
//! the reader needs is a flow for each message.
//!
//! A record is one whole SIP message, reassembled by Wireshark across TLS
//! records and TCP segments; it is handed on as the next bytes of its flow
//! (TCP) or as a datagram (UDP), and the SIP layer frames it as any other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Flow, Transport};

const END: u16 = 0;
const DISSECTOR_NAME: u16 = 12;
const IPV4_SRC: u16 = 20;
const IPV4_DST: u16 = 21;
const IPV6_SRC: u16 = 22;
const IPV6_DST: u16 = 23;
const PORT_TYPE: u16 = 24;
const SRC_PORT: u16 = 25;
const DST_PORT: u16 = 26;
/// `EXP_PDU_PT_TCP` and `EXP_PDU_PT_UDP`.
const PT_TCP: u32 = 2;
const PT_UDP: u32 = 3;

/// What one exported record holds, as far as it is read.
#[derive(Debug, Default)]
struct Tags {
    sip: bool,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    transport: Option<Transport>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
}

/// The flow and the SIP message of one exported record; `None` when it
/// is not a SIP message with both addresses and ports, or is damaged.
pub fn sip_message(record: &[u8]) -> Option<(Flow, &[u8])> {
    let mut tags = Tags::default();
    let mut rest = record;
    loop {
        let kind = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*rest.get(2)?, *rest.get(3)?]));
        let value = rest.get(4..4 + len)?;
        rest = rest.get(4 + len..)?;
        match kind {
            END => break,
            DISSECTOR_NAME => {
                let name = value.split(|&b| b == 0).next().unwrap_or_default();
                tags.sip =
                    name.eq_ignore_ascii_case(b"sip") || name.eq_ignore_ascii_case(b"sip.tcp");
            }
            IPV4_SRC | IPV4_DST => {
                let a: [u8; 4] = value.try_into().ok()?;
                let ip = IpAddr::V4(Ipv4Addr::from(a));
                if kind == IPV4_SRC {
                    tags.src = Some(ip);
                } else {
                    tags.dst = Some(ip);
                }
            }
            IPV6_SRC | IPV6_DST => {
                let a: [u8; 16] = value.try_into().ok()?;
                let ip = IpAddr::V6(Ipv6Addr::from(a));
                if kind == IPV6_SRC {
                    tags.src = Some(ip);
                } else {
                    tags.dst = Some(ip);
                }
            }
            PORT_TYPE => {
                tags.transport = match u32::from_be_bytes(value.try_into().ok()?) {
                    PT_TCP => Some(Transport::Tcp),
                    PT_UDP => Some(Transport::Udp),
                    _ => None,
                };
            }
            SRC_PORT | DST_PORT => {
                let port = u16::try_from(u32::from_be_bytes(value.try_into().ok()?)).ok()?;
                if kind == SRC_PORT {
                    tags.src_port = Some(port);
                } else {
                    tags.dst_port = Some(port);
                }
            }
            _ => {}
        }
    }
    if !tags.sip || rest.is_empty() {
        return None;
    }
    let flow = Flow {
        transport: tags.transport?,
        src: SocketAddr::new(tags.src?, tags.src_port?),
        dst: SocketAddr::new(tags.dst?, tags.dst_port?),
    };
    Some((flow, rest))
}

/// One exported record holding `message`, as Wireshark writes it: for
/// the tests here and for callgate's own tests that need a TLS-decrypted
/// capture without Wireshark.
pub fn record(flow: Flow, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut tag = |kind: u16, value: &[u8]| {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
    };
    let name: &[u8] = match flow.transport {
        Transport::Tcp => b"sip.tcp\0",
        Transport::Udp => b"sip\0",
    };
    tag(DISSECTOR_NAME, name);
    for (addr, v4, v6) in [
        (flow.src, IPV4_SRC, IPV6_SRC),
        (flow.dst, IPV4_DST, IPV6_DST),
    ] {
        match addr.ip() {
            IpAddr::V4(a) => tag(v4, &a.octets()),
            IpAddr::V6(a) => tag(v6, &a.octets()),
        }
    }
    let pt = match flow.transport {
        Transport::Tcp => PT_TCP,
        Transport::Udp => PT_UDP,
    };
    tag(PORT_TYPE, &pt.to_be_bytes());
    tag(SRC_PORT, &u32::from(flow.src.port()).to_be_bytes());
    tag(DST_PORT, &u32::from(flow.dst.port()).to_be_bytes());
    tag(END, &[]);
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(transport: Transport, src: &str, dst: &str) -> Flow {
        Flow {
            transport,
            src: src.parse().unwrap_or_else(|e| panic!("{src}: {e}")),
            dst: dst.parse().unwrap_or_else(|e| panic!("{dst}: {e}")),
        }
    }

    #[test]
    fn a_record_gives_back_its_flow_and_message() {
        let msg = b"INVITE sip:+15550100@pbx SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        for f in [
            flow(Transport::Tcp, "192.0.2.1:5061", "198.51.100.2:40000"),
            flow(Transport::Udp, "[2001:db8::1]:5060", "[2001:db8::2]:5060"),
        ] {
            let r = record(f, msg);
            assert_eq!(sip_message(&r), Some((f, &msg[..])));
        }
    }

    /// `r` with its first tag (the dissector name) replaced by `name`.
    fn renamed(r: &[u8], name: &[u8]) -> Vec<u8> {
        let len = usize::from(u16::from_be_bytes([r[2], r[3]]));
        let mut out = DISSECTOR_NAME.to_be_bytes().to_vec();
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&r[4 + len..]);
        out
    }

    #[test]
    fn other_protocols_and_records_without_a_flow_are_skipped() {
        let f = flow(Transport::Tcp, "192.0.2.1:443", "198.51.100.2:40000");
        let r = record(f, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(sip_message(&renamed(&r, b"http")), None);
        assert!(sip_message(&renamed(&r, b"SIP\0\0\0\0\0")).is_some());
        // A SIP name, then the end of the tags: no addresses or ports,
        // no flow.
        let mut no_flow = renamed(&[0, 0, 0, 0, END as u8, 0, 0, 0], b"sip\0");
        no_flow.extend_from_slice(b"INVITE");
        assert_eq!(sip_message(&no_flow), None);
    }

    #[test]
    fn damaged_records_are_refused_not_read_past() {
        let f = flow(Transport::Udp, "192.0.2.1:5060", "192.0.2.2:5060");
        let r = record(f, b"OPTIONS sip:x SIP/2.0\r\n\r\n");
        for cut in [0, 1, 3, 5, 20, 40] {
            let got = sip_message(&r[..cut.min(r.len())]);
            assert_eq!(got, None, "cut at {cut}");
        }
        // A tag claiming more bytes than there are.
        let mut long = r.clone();
        long[2] = 0xff;
        assert_eq!(sip_message(&long), None);
    }
}
