//! Link layers of a capture (the tcpdump LINKTYPE registry), sliced down
//! to IP by `etherparse`: Ethernet II with 802.1Q/802.1ad VLAN tags,
//! Linux cooked capture v1 (SLL, `tcpdump -i any` before libpcap 1.10)
//! and v2 (SLL2, its protocol type in the first two bytes of a 20-byte
//! header), BSD loopback (`NULL`/`LOOP`: a 4-byte address family), and
//! raw IPv4/IPv6.

use etherparse::{EtherType, SlicedPacket};
use pcap_file::DataLink;

/// Bytes of a Linux cooked capture v2 header.
const SLL2_HEADER: usize = 20;

/// Bytes of a BSD loopback header.
const LOOPBACK_HEADER: usize = 4;

/// Whether frames of `link` are read at all.
pub fn supported(link: DataLink) -> bool {
    matches!(
        link,
        DataLink::ETHERNET
            | DataLink::LINUX_SLL
            | DataLink::LINUX_SLL2
            | DataLink::NULL
            | DataLink::LOOP
            | DataLink::RAW
            | DataLink::IPV4
            | DataLink::IPV6
    )
}

/// The frame sliced down to its network and transport layers; `None`
/// when the link layer is not supported or the frame does not slice.
pub fn slice(link: DataLink, frame: &[u8]) -> Option<SlicedPacket<'_>> {
    match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(frame).ok(),
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(frame).ok(),
        DataLink::LINUX_SLL2 => {
            let proto = u16::from_be_bytes([*frame.first()?, *frame.get(1)?]);
            SlicedPacket::from_ether_type(EtherType(proto), frame.get(SLL2_HEADER..)?).ok()
        }
        DataLink::NULL | DataLink::LOOP => {
            SlicedPacket::from_ip(frame.get(LOOPBACK_HEADER..)?).ok()
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(frame).ok(),
        _ => None,
    }
    .filter(|s| s.net.is_some())
}
