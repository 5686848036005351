//! IP fragment reassembly: IPv4 (RFC 791 §3.2, the fragment offset and
//! More Fragments flag, sets keyed by source, destination, protocol and
//! Identification) and IPv6 (RFC 8200 §4.5, the Fragment extension
//! header). The byte ranges are merged by `etherparse`'s `IpDefragBuf`;
//! this file holds the sets and bounds them, since a capture can hold
//! any number of first fragments whose rest never comes: at most
//! [`MAX_PENDING`] incomplete sets (the oldest dropped to make room), each
//! dropped [`TIMEOUT_US`] of capture time after its last fragment (the
//! 30 s of RFC 8200 §4.5 and Linux's `ipfrag_time`), and each at most
//! 64 KiB (the IP length field). Both drops are counted in [`Stats`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use etherparse::defrag::IpDefragBuf;
use etherparse::{IpFragOffset, IpNumber, Ipv6ExtensionSlice, NetSlice, SlicedPacket};
use etherparse::{TcpSlice, TransportSlice, UdpSlice};

use super::{Flow, Stats, Transport};

/// Incomplete fragment sets held at once (each at most 64 KiB: 16 MiB in
/// all).
pub const MAX_PENDING: usize = 256;

/// Capture time after its last fragment at which an incomplete set is
/// dropped (microseconds).
pub const TIMEOUT_US: i64 = 30_000_000;

/// A TCP segment's sequence number and flags (RFC 9293 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
}

/// A whole UDP datagram or TCP segment, reassembled if it came in
/// fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub flow: Flow,
    pub data: Cow<'a, [u8]>,
    /// For TCP, the segment's header fields.
    pub tcp: Option<Segment>,
}

/// What identifies the fragments of one packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SetKey {
    vlans: Vec<u16>,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u32,
}

/// One fragment's place in its set.
struct Fragment<'a> {
    key: SetKey,
    offset: IpFragOffset,
    more: bool,
    proto: IpNumber,
    data: &'a [u8],
}

/// The fragment sets being reassembled.
#[derive(Default)]
pub struct Reassembler {
    /// Each set with the capture time of its last fragment.
    sets: HashMap<SetKey, (IpDefragBuf, i64)>,
}

impl Reassembler {
    /// The UDP or TCP packet `sliced` carries, or completes; `None` while
    /// a set is incomplete, or for anything else.
    pub fn packet<'a>(
        &mut self,
        sliced: &SlicedPacket<'a>,
        time_us: i64,
        stats: &mut Stats,
    ) -> Option<Packet<'a>> {
        let (src, dst) = addresses(sliced)?;
        let Some(fragment) = fragment_of(sliced, src, dst) else {
            return whole(sliced.transport.as_ref()?, src, dst);
        };
        stats.fragments += 1;
        self.expire(time_us, stats);
        let key = fragment.key.clone();
        if !self.sets.contains_key(&key) && self.sets.len() >= MAX_PENDING {
            if let Some(oldest) = self
                .sets
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            {
                self.sets.remove(&oldest);
                stats.fragments_evicted += 1;
            }
        }
        let (buf, last) = self.sets.entry(key.clone()).or_insert_with(|| {
            (
                IpDefragBuf::new(fragment.proto, Vec::new(), Vec::new()),
                time_us,
            )
        });
        *last = time_us;
        if buf
            .add(fragment.offset, fragment.more, fragment.data)
            .is_err()
        {
            stats.fragments_invalid += 1;
            self.sets.remove(&key);
            return None;
        }
        if !buf.is_complete() {
            return None;
        }
        let (buf, _) = self.sets.remove(&key)?;
        let proto = buf.ip_number();
        let (data, _) = buf.take_bufs();
        stats.reassembled += 1;
        reassembled(proto, &data, src, dst)
    }

    /// Drops the sets whose last fragment is older than [`TIMEOUT_US`].
    fn expire(&mut self, now_us: i64, stats: &mut Stats) {
        let before = self.sets.len();
        self.sets
            .retain(|_, (_, last)| now_us.saturating_sub(*last) <= TIMEOUT_US);
        stats.fragments_expired += (before - self.sets.len()) as u64;
    }

    /// Incomplete sets held.
    pub fn pending(&self) -> usize {
        self.sets.len()
    }
}

fn addresses(sliced: &SlicedPacket<'_>) -> Option<(IpAddr, IpAddr)> {
    match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => Some((
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        )),
        Some(NetSlice::Ipv6(v6)) => Some((
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        )),
        _ => None,
    }
}

/// The fragment `sliced` is, if it is one: its set's Identification,
/// offset and More Fragments flag from the IPv4 header, or from the IPv6
/// Fragment header.
fn fragment_of<'a>(sliced: &SlicedPacket<'a>, src: IpAddr, dst: IpAddr) -> Option<Fragment<'a>> {
    let (payload, id, offset, more) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            let header = v4.header();
            if !header.is_fragmenting_payload() {
                return None;
            }
            (
                v4.payload().clone(),
                u32::from(header.identification()),
                header.fragments_offset(),
                header.more_fragments(),
            )
        }
        Some(NetSlice::Ipv6(v6)) => {
            let frag = v6.extensions().clone().into_iter().find_map(|e| match e {
                Ipv6ExtensionSlice::Fragment(f) if f.is_fragmenting_payload() => {
                    Some(f.to_header())
                }
                _ => None,
            })?;
            (
                v6.payload().clone(),
                frag.identification,
                frag.fragment_offset,
                frag.more_fragments,
            )
        }
        _ => return None,
    };
    Some(Fragment {
        key: SetKey {
            vlans: sliced.vlan_ids().iter().map(|v| v.value()).collect(),
            src,
            dst,
            proto: payload.ip_number.0,
            id,
        },
        offset,
        more,
        proto: payload.ip_number,
        data: payload.payload,
    })
}

/// An unfragmented packet's UDP or TCP payload.
fn whole<'a>(transport: &TransportSlice<'a>, src: IpAddr, dst: IpAddr) -> Option<Packet<'a>> {
    match transport {
        TransportSlice::Udp(udp) => Some(packet(
            (src, udp.source_port()),
            (dst, udp.destination_port()),
            Cow::Borrowed(udp.payload()),
            None,
        )),
        TransportSlice::Tcp(tcp) => Some(packet(
            (src, tcp.source_port()),
            (dst, tcp.destination_port()),
            Cow::Borrowed(tcp.payload()),
            Some(segment(tcp)),
        )),
        _ => None,
    }
}

/// A reassembled packet's UDP or TCP payload (`data`: the transport
/// header and what follows it).
fn reassembled<'a>(proto: IpNumber, data: &[u8], src: IpAddr, dst: IpAddr) -> Option<Packet<'a>> {
    match proto {
        IpNumber::UDP => {
            let udp = UdpSlice::from_slice(data).ok()?;
            Some(packet(
                (src, udp.source_port()),
                (dst, udp.destination_port()),
                Cow::Owned(udp.payload().to_vec()),
                None,
            ))
        }
        IpNumber::TCP => {
            let tcp = TcpSlice::from_slice(data).ok()?;
            Some(packet(
                (src, tcp.source_port()),
                (dst, tcp.destination_port()),
                Cow::Owned(tcp.payload().to_vec()),
                Some(segment(&tcp)),
            ))
        }
        _ => None,
    }
}

/// A UDP datagram's payload, or a TCP segment's (`tcp` given).
fn packet<'a>(
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    data: Cow<'a, [u8]>,
    tcp: Option<Segment>,
) -> Packet<'a> {
    Packet {
        flow: Flow {
            transport: if tcp.is_some() {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            src: SocketAddr::from(src),
            dst: SocketAddr::from(dst),
        },
        data,
        tcp,
    }
}

fn segment(tcp: &TcpSlice<'_>) -> Segment {
    Segment {
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        fin: tcp.fin(),
        rst: tcp.rst(),
    }
}
