//! UDP transport (RFC 3261 §18.1.1, §18.2.1): one socket per side, a
//! receive loop feeding the sink, sends straight from the caller.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::batch::{Batch, MAX_DATAGRAM};
use super::{Sink, TransportError};
use crate::sip::proxy::Peer;
use crate::sip::side::{Side, Transport};

/// Socket buffer asked for on each side (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`): a burst of calls must wait in the
/// kernel rather than be dropped there while the loop is busy. The default
/// (~208 KiB on Linux) overflowed at 2,500 calls/s in the benchmark.
const SOCKET_BUFFER: usize = 8 << 20;

pub async fn bind(addr: SocketAddr) -> Result<Arc<UdpSocket>, TransportError> {
    let err = |source| TransportError::Bind {
        addr,
        transport: Transport::Udp,
        source,
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(err)?;
    for (what, r) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER)),
    ] {
        if let Err(e) = r {
            tracing::warn!(%addr, error = %e, "cannot enlarge the UDP {what} buffer");
        }
    }
    // Linux caps the size silently at net.core.rmem_max and reports twice
    // what it grants (its own bookkeeping): say so once per socket, so an
    // operator knows why bursts may be dropped in the kernel.
    if let Ok(reported) = socket.recv_buffer_size() {
        let granted = if cfg!(target_os = "linux") {
            reported / 2
        } else {
            reported
        };
        if granted < SOCKET_BUFFER {
            tracing::warn!(
                %addr,
                granted_bytes = granted,
                wanted_bytes = SOCKET_BUFFER,
                "UDP receive buffer capped by the kernel; raise net.core.rmem_max (see docs/operations.md)"
            );
        }
    }
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    let std: std::net::UdpSocket = socket.into();
    UdpSocket::from_std(std).map(Arc::new).map_err(err)
}

/// Datagrams read per receive call at most ([`Batch`]): a burst or a
/// flood drains 32 at a time; ordinary traffic, a datagram now and then,
/// still takes one call per datagram. The buffers: 32 × 64 KiB = 2 MiB of
/// address space per listener, resident only where datagrams were written
/// (see [`super::batch`]).
pub const RECEIVE_BATCH: usize = 32;

/// Datagrams handed to the sink between two yields to the runtime: the
/// listeners, timers, admin API and streams share one thread, and a flood
/// that always fills a batch must not keep them waiting (the same share a
/// `recv_from` loop got from tokio's cooperative budget).
const YIELD_EVERY: usize = 128;

thread_local! {
    /// The receive batch of this thread, shared by the listeners whose
    /// loops run on it. Not owned by each loop: `nix`'s receive headers
    /// hold raw pointers, so a batch cannot live in a task across an
    /// `await` (a task may move between threads); it is only used between
    /// two awaits — read, then every datagram handed to the sink — so one
    /// per thread serves every listener on it (in production the one
    /// runtime thread: 2 MiB of address space in all).
    static RECEIVE: RefCell<Batch<RECEIVE_BATCH>> = RefCell::new(Batch::new(MAX_DATAGRAM));
}

/// Reads datagrams forever and hands each to the sink.
///
/// Waits for the socket to be readable, then reads it in batches of up to
/// [`RECEIVE_BATCH`] with one `recvmmsg` each ([`Batch`]) until a batch
/// comes back short, which proves the socket empty at that moment: a
/// flood's datagrams cost one system call per batch, not one each plus
/// a pass through the runtime (issue 14: an admitted source far beyond
/// its rate limit outran a `recv_from` loop, and the queue overflowed
/// with legitimate datagrams in it).
///
/// Each datagram is handed to the sink where it lies in the batch's
/// buffer ([`Sink::on_datagram`]: the admit phase refuses a source outside
/// the ACL or over its rate or byte budget there, before any copy) and is
/// copied out at its own size only once admitted. A transaction keeps
/// parts of what it received for up to 32 s (the last response, for
/// retransmissions); slices of a shared receive block would keep the whole
/// block — every datagram around them — alive that long: 742 MB after
/// 100,000 calls at 10,000 calls/s, against one small allocation per
/// datagram here.
pub async fn receive_loop(socket: Arc<UdpSocket>, side: Side, sink: Arc<dyn Sink>) {
    let ipv6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
    let mut since_yield = 0;
    loop {
        if let Err(e) = socket.readable().await {
            tracing::debug!(side = side.as_str(), error = %e, "udp readiness error");
            continue;
        }
        let handed = RECEIVE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut batch) => receive_batch(&socket, &mut batch, ipv6, side, &*sink),
            // Never: the batch is not held across an await, and the sink
            // does not read sockets. Should it happen, the next turn reads.
            Err(_) => YIELD_EVERY,
        });
        since_yield += handed;
        if since_yield >= YIELD_EVERY {
            since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// One batch from `socket` (readable), each datagram handed to `sink`;
/// how many were read.
fn receive_batch(
    socket: &UdpSocket,
    batch: &mut Batch<RECEIVE_BATCH>,
    ipv6: bool,
    side: Side,
    sink: &dyn Sink,
) -> usize {
    let mut short = None;
    let got = socket.try_io(Interest::READABLE, || {
        let n = batch.recv(socket, ipv6)?;
        if n < RECEIVE_BATCH {
            // The socket was empty after these: clear its readiness as an
            // empty read would (tokio keeps it if a datagram arrived
            // since), so the next wait does not cost a read of its own.
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    let n = match got {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => match short {
            Some(n) => n,
            None => return 0,
        },
        Err(e) => {
            // ICMP errors surface on Linux (ECONNREFUSED) only with
            // IP_RECVERR or on a connected socket, neither of which a
            // listener is; not fatal either way.
            tracing::debug!(side = side.as_str(), error = %e, "udp receive error");
            return 0;
        }
    };
    for i in 0..n {
        let Some((data, d)) = batch.get(i) else {
            break;
        };
        // Buffers hold the largest UDP payload, so nothing is cut; a cut
        // datagram must never pass for a whole one all the same. CRLF
        // keep-alives (RFC 5626 §3.5.1) carry no message.
        if d.truncated || crate::sip::message::keepalive_prefix(data) == data.len() {
            continue;
        }
        let peer = Peer {
            side,
            transport: Transport::Udp,
            addr: d.src,
            conn: None,
        };
        sink.on_datagram(peer, data);
    }
    n
}
