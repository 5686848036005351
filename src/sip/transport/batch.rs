//! Receive a batch of datagrams from one socket with one system call
//! (`recvmmsg`, Linux). Two users: the SIP UDP listeners
//! ([`super::udp::receive_loop`]) and the media relay's workers
//! (`media/relay/worker.rs`); it lives here, in the SIP core's transport,
//! because media may import the SIP core but not the other way round.
//!
//! Why: a socket read one `recvfrom` at a time costs one system call per
//! datagram plus the empty read that proves the socket drained. Under a
//! flood of the SIP trunk (issue 14, `rate`) that was the whole receive
//! path's cost: an admitted source's excess is dropped on the receive
//! buffer before any copy or parse, yet every datagram still took its own
//! read and its own pass through the async runtime, the generator outpaced
//! the reader, and the queue overflowed with legitimate datagrams in it.
//! `recvmmsg` reads up to `N` datagrams at once and stops at the first
//! `EAGAIN`; a short count (fewer than asked) proves the socket was empty
//! at that moment, so only a full batch calls for another read.
//!
//! That proof holds because the kernel returns a short count early only on
//! `EAGAIN` or on an error; the only errors a UDP receive reports are
//! pending socket errors (ICMP), which the kernel records only on
//! connected sockets or with `IP_RECVERR` — neither the relay's sockets
//! nor the SIP listeners are either.
//!
//! Sizes: `N` buffers per batch (the relay: 8, where a socket rarely holds
//! two packets; a SIP listener: 32, where a burst or a flood queues
//! hundreds), each as large as the biggest UDP payload ([`MAX_DATAGRAM`]),
//! so no datagram is cut short. The size costs address space, not work:
//! the kernel copies only each datagram's bytes, the buffers are allocated
//! once per reader (`N` × 64 KiB: 512 KiB for the relay's, 2 MiB for a SIP
//! listener's; with glibc or mimalloc an allocation that large is a fresh
//! zero mapping, and only the pages datagrams were written to become
//! resident — a few KiB per buffer in SIP traffic, the whole 2 MiB only
//! under a flood of 64 KB datagrams). A datagram longer than its buffer
//! (possible only with a smaller buffer, as in the tests) comes back with
//! [`Datagram::truncated`] set; the caller must not use it as whole.
//!
//! The address of each message is read through `nix`'s `MultiHeaders`,
//! preallocated with the header array once. `nix` resets only the data
//! pointers between calls, not the address capacity (`msg_namelen`, an
//! in-out field the kernel overwrites with the length it wrote), so a
//! header that once received a 16-byte IPv4 address would cut an IPv6 one
//! short afterwards. Hence one header array per address family, typed to
//! that family's exact address size: the kernel always writes back that
//! same size, and the capacity never shrinks. (A dual-stack IPv6 socket
//! reports IPv4 sources as IPv4-mapped IPv6 addresses, full size.)

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrIn, SockaddrIn6};

/// The largest UDP payload (IPv4 allows 65 507 bytes, IPv6 without
/// jumbograms 65 527).
pub const MAX_DATAGRAM: usize = 65_535;

/// Where one received datagram is and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Bytes in the buffer (at most the buffer's size).
    pub len: usize,
    pub src: SocketAddr,
    /// The datagram was longer than its buffer; only `len` bytes were kept.
    pub truncated: bool,
}

/// Buffers and headers for `N` datagrams, allocated once; the results of
/// the last [`Batch::recv`].
pub struct Batch<const N: usize> {
    bufs: Box<[u8]>,
    size: usize,
    v4: MultiHeaders<SockaddrIn>,
    v6: MultiHeaders<SockaddrIn6>,
    got: [Datagram; N],
    count: usize,
}

impl<const N: usize> Batch<N> {
    /// `N` buffers of `size` bytes each ([`MAX_DATAGRAM`] outside tests).
    pub fn new(size: usize) -> Batch<N> {
        let none = Datagram {
            len: 0,
            src: SocketAddr::from(([0, 0, 0, 0], 0)),
            truncated: false,
        };
        Batch {
            bufs: vec![0u8; size * N].into_boxed_slice(),
            size,
            v4: MultiHeaders::preallocate(N, None),
            v6: MultiHeaders::preallocate(N, None),
            got: [none; N],
            count: 0,
        }
    }

    /// Receives up to `N` datagrams from `socket` without blocking;
    /// `ipv6` must tell the socket's family (IPv4-mapped sources on an
    /// IPv6 socket come out as IPv6). `Ok(n)`: `n >= 1` datagrams, in
    /// arrival order, and fewer than `N` means the socket is now empty.
    /// An empty socket is `Err` of kind `WouldBlock`.
    pub fn recv(&mut self, socket: &impl AsRawFd, ipv6: bool) -> io::Result<usize> {
        self.count = 0;
        let fd = socket.as_raw_fd();
        let n = if ipv6 {
            receive(
                fd,
                &mut self.v6,
                &mut self.bufs,
                self.size,
                &mut self.got,
                |a| SocketAddr::V6(SocketAddrV6::from(*a)),
            )?
        } else {
            receive(
                fd,
                &mut self.v4,
                &mut self.bufs,
                self.size,
                &mut self.got,
                |a| SocketAddr::V4(SocketAddrV4::from(*a)),
            )?
        };
        self.count = n;
        Ok(n)
    }

    /// The `i`th datagram's whole buffer (its bytes first, then room up to
    /// the buffer's size: SRTP termination appends its tag in place) and
    /// where it came from.
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8], Datagram)> {
        if i >= self.count {
            return None;
        }
        let d = *self.got.get(i)?;
        let start = i * self.size;
        Some((self.bufs.get_mut(start..start + self.size)?, d))
    }

    /// The `i`th datagram of the last [`Batch::recv`]: its bytes and where
    /// it came from.
    pub fn get(&self, i: usize) -> Option<(&[u8], Datagram)> {
        if i >= self.count {
            return None;
        }
        let d = *self.got.get(i)?;
        let start = i * self.size;
        Some((self.bufs.get(start..start + d.len)?, d))
    }
}

/// One `recvmmsg` into `bufs` (cut into `N` buffers of `size`), the
/// results into `got`; the count received.
fn receive<S: Copy + nix::sys::socket::SockaddrLike, const N: usize>(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<S>,
    bufs: &mut [u8],
    size: usize,
    got: &mut [Datagram; N],
    to_std: impl Fn(&S) -> SocketAddr,
) -> io::Result<usize> {
    let mut chunks = bufs.chunks_mut(size);
    let mut iovs: [[IoSliceMut<'_>; 1]; N] =
        std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
    let results =
        recvmmsg(fd, headers, &mut iovs, MsgFlags::MSG_DONTWAIT, None).map_err(io::Error::from)?;
    let mut n = 0;
    for (msg, slot) in results.zip(got.iter_mut()) {
        // `nix` always gives the address for recvmmsg (and UDP always has
        // one); the unspecified address stands in should that change.
        let src = msg
            .address
            .as_ref()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), &to_std);
        *slot = Datagram {
            len: msg.bytes.min(size),
            src,
            truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        };
        n += 1;
    }
    if n == 0 {
        // Not expected (recvmmsg returns a message or an error), but keeps
        // the contract: `Ok` means at least one datagram.
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    /// The relay's batch size; the SIP listeners' is tested below too.
    const BATCH: usize = 8;
    type B = Batch<BATCH>;

    fn bind(ip: &str) -> UdpSocket {
        UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn addr(s: &UdpSocket) -> SocketAddr {
        s.local_addr().unwrap_or_else(|e| panic!("{e}"))
    }

    fn send(from: &UdpSocket, to: &UdpSocket, data: &[u8]) {
        from.send_to(data, addr(to))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Every datagram of the last call, as owned bytes with their sources.
    fn all<const N: usize>(b: &Batch<N>, n: usize) -> Vec<(Vec<u8>, SocketAddr, bool)> {
        (0..n)
            .map(|i| {
                let (p, d) = b.get(i).unwrap_or_else(|| panic!("datagram {i} missing"));
                (p.to_vec(), d.src, d.truncated)
            })
            .collect()
    }

    #[test]
    fn queued_datagrams_come_out_in_order_with_their_sources() {
        let (rx, a, b) = (bind("127.0.0.1"), bind("127.0.0.1"), bind("127.0.0.1"));
        send(&a, &rx, b"one");
        send(&b, &rx, b"two");
        send(&a, &rx, &[7u8; 1500]);
        let mut batch = B::new(MAX_DATAGRAM);
        let n = batch.recv(&rx, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 3, "all three in one call, a short batch");
        assert_eq!(
            all(&batch, n),
            vec![
                (b"one".to_vec(), addr(&a), false),
                (b"two".to_vec(), addr(&b), false),
                (vec![7u8; 1500], addr(&a), false),
            ]
        );
        assert!(batch.get(n).is_none());
        let empty = batch.recv(&rx, false).map(|_| ());
        assert_eq!(
            empty.map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock),
            "a short batch left nothing behind"
        );
    }

    #[test]
    fn an_empty_socket_would_block_even_in_blocking_mode() {
        let rx = bind("127.0.0.1");
        let mut batch = B::new(2048);
        let got = batch.recv(&rx, false).map(|_| ());
        assert_eq!(got.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        assert!(batch.get(0).is_none(), "no stale results");
    }

    #[test]
    fn a_full_batch_then_the_rest_in_a_second_call() {
        let (rx, tx) = (bind("127.0.0.1"), bind("127.0.0.1"));
        for i in 0..BATCH as u8 + 2 {
            send(&tx, &rx, &[i; 20]);
        }
        let mut batch = B::new(2048);
        let n = batch.recv(&rx, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, BATCH, "exactly full: the caller must read again");
        for (i, (p, from, _)) in all(&batch, n).into_iter().enumerate() {
            assert_eq!((p, from), (vec![i as u8; 20], addr(&tx)));
        }
        let n = batch.recv(&rx, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 2);
        let rest: Vec<_> = all(&batch, n).into_iter().map(|(p, _, _)| p).collect();
        assert_eq!(rest, vec![vec![BATCH as u8; 20], vec![BATCH as u8 + 1; 20]]);

        // Exactly BATCH queued: a full batch, then an empty socket.
        for i in 0..BATCH as u8 {
            send(&tx, &rx, &[i; 20]);
        }
        assert_eq!(batch.recv(&rx, false).ok(), Some(BATCH));
        let empty = batch.recv(&rx, false).map(|_| ());
        assert_eq!(empty.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
    }

    #[test]
    fn ipv6_sources_and_both_families_through_one_batch() {
        let Ok(rx6) = UdpSocket::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here; skipped");
            return;
        };
        let tx6 = bind("::1");
        let (rx4, tx4) = (bind("127.0.0.1"), bind("127.0.0.1"));
        let mut batch = B::new(2048);
        // Alternate the families several times through the same headers:
        // an IPv4 address received must not shrink the room for an IPv6
        // one (or the other way round).
        for round in 0..3u8 {
            send(&tx4, &rx4, &[round; 4]);
            assert_eq!(batch.recv(&rx4, false).ok(), Some(1));
            assert_eq!(all(&batch, 1), vec![(vec![round; 4], addr(&tx4), false)]);
            send(&tx6, &rx6, &[round; 6]);
            send(&tx6, &rx6, &[round; 7]);
            assert_eq!(batch.recv(&rx6, true).ok(), Some(2));
            let src = addr(&tx6);
            assert!(src.is_ipv6());
            assert_eq!(
                all(&batch, 2),
                vec![(vec![round; 6], src, false), (vec![round; 7], src, false)]
            );
        }
    }

    #[test]
    fn a_datagram_longer_than_its_buffer_is_cut_and_flagged() {
        let (rx, tx) = (bind("127.0.0.1"), bind("127.0.0.1"));
        send(&tx, &rx, &[1u8; 100]);
        send(&tx, &rx, &[2u8; 64]);
        let mut batch = B::new(64);
        assert_eq!(batch.recv(&rx, false).ok(), Some(2));
        assert_eq!(
            all(&batch, 2),
            vec![
                (vec![1u8; 64], addr(&tx), true),
                (vec![2u8; 64], addr(&tx), false),
            ],
            "the long one flagged, the next one intact"
        );
    }

    #[test]
    fn the_largest_udp_payload_fits_the_relays_buffers() {
        let (rx, tx) = (bind("127.0.0.1"), bind("127.0.0.1"));
        let big = vec![9u8; 65_507];
        send(&tx, &rx, &big);
        let mut batch = B::new(MAX_DATAGRAM);
        assert_eq!(batch.recv(&rx, false).ok(), Some(1));
        assert_eq!(all(&batch, 1), vec![(big, addr(&tx), false)]);
    }

    /// A SIP listener's case: a dual-stack socket holding a burst of
    /// several batches from three sources, IPv4 ones (reported as
    /// IPv4-mapped IPv6) and `::1` interleaved: full batches, then a short
    /// one, every datagram once, each with its own source, in order.
    #[test]
    fn a_burst_of_several_batches_from_both_families_on_a_dual_stack_socket() {
        let Ok(rx) = UdpSocket::bind("[::]:0") else {
            eprintln!("no IPv6 here; skipped");
            return;
        };
        let Ok(tx6) = UdpSocket::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here; skipped");
            return;
        };
        let (tx1, tx2) = (bind("127.0.0.1"), bind("127.0.0.2"));
        let port = addr(&rx).port();
        let mapped = |s: &UdpSocket| match addr(s) {
            SocketAddr::V4(a) => {
                SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
            }
            v6 => v6,
        };
        const PER_SOURCE: usize = 40;
        let mut expected = Vec::new();
        for i in 0..PER_SOURCE {
            for (k, (tx, to)) in [
                (&tx1, SocketAddr::from(([127, 0, 0, 1], port))),
                (&tx2, SocketAddr::from(([127, 0, 0, 1], port))),
                (
                    &tx6,
                    SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
                ),
            ]
            .into_iter()
            .enumerate()
            {
                let payload = vec![k as u8; 10 + i];
                tx.send_to(&payload, to).unwrap_or_else(|e| panic!("{e}"));
                expected.push((payload, mapped(tx), false));
            }
        }
        let mut batch = Batch::<32>::new(MAX_DATAGRAM);
        let mut got = Vec::new();
        let mut counts = Vec::new();
        loop {
            match batch.recv(&rx, true) {
                Ok(n) => {
                    counts.push(n);
                    got.extend(all(&batch, n));
                    if n < 32 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            counts,
            vec![32, 32, 32, 24],
            "three full batches, a short one"
        );
        assert_eq!(got, expected);
    }
}
