//! UDP transport (RFC 3261 §18.1.1, §18.2.1): one socket per side, a
//! receive loop feeding the sink, sends straight from the caller.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::UdpSocket;

use super::{Sink, TransportError};
use crate::config::{Side, Transport};
use crate::sip::proxy::Peer;

/// Largest datagram read; longer ones are truncated by the kernel and then
/// fail framing (Content-Length) and are answered 400 or dropped.
const MAX_DATAGRAM: usize = 65_535;

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
    // Linux caps the size silently at net.core.rmem_max (reporting twice
    // what it grants, for its own bookkeeping): say so once per socket, so
    // an operator knows why bursts may be dropped in the kernel.
    if let Ok(granted) = socket.recv_buffer_size() {
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

/// Bytes reserved at a time for received datagrams: each datagram is split
/// off the front of this block, so one allocation serves dozens of typical
/// (1–2 KB) SIP messages.
const RECEIVE_BLOCK: usize = 4 * MAX_DATAGRAM;

/// Reads datagrams forever and hands each to the sink.
///
/// Datagrams are read into the spare capacity of a block (`recv_buf_from`),
/// never into a zero-filled buffer: filling 64 KB per datagram cost ~5% of
/// the proxy's CPU in the benchmark.
pub async fn receive_loop(socket: Arc<UdpSocket>, side: Side, sink: Arc<dyn Sink>) {
    let mut buf = BytesMut::with_capacity(RECEIVE_BLOCK);
    loop {
        if buf.capacity() < MAX_DATAGRAM {
            buf = BytesMut::with_capacity(RECEIVE_BLOCK);
        }
        match socket.recv_buf_from(&mut buf).await {
            Ok((_, from)) => {
                let data = buf.split().freeze();
                // CRLF keep-alives (RFC 5626 §3.5.1) carry no message.
                if crate::sip::message::keepalive_prefix(&data) == data.len() {
                    continue;
                }
                let peer = Peer {
                    side,
                    transport: Transport::Udp,
                    addr: from,
                    conn: None,
                };
                sink.on_message(peer, data);
            }
            Err(e) => {
                // ICMP errors surface here on Linux (ECONNREFUSED); they are
                // not fatal for an unconnected socket.
                tracing::debug!(side = side.as_str(), error = %e, "udp receive error");
                buf.clear();
            }
        }
    }
}
