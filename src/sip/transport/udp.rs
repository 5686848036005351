//! UDP transport (RFC 3261 §18.1.1, §18.2.1): one socket per side, a
//! receive loop feeding the sink, sends straight from the caller.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::{Sink, TransportError};
use crate::sip::proxy::Peer;
use crate::sip::side::{Side, Transport};

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

/// Reads datagrams forever and hands each to the sink.
///
/// Each datagram is read into one reused 64 KB buffer (zeroed once, not
/// per datagram) and copied out at its own size once the sink admits it
/// ([`Sink::on_datagram`]: a refused source's datagram is never copied). A transaction keeps parts
/// of what it received for up to 32 s (the last response, for
/// retransmissions); slices of a shared receive block would keep the whole
/// block — every datagram around them — alive that long: 742 MB after
/// 100,000 calls at 10,000 calls/s, against one small allocation per
/// datagram here.
pub async fn receive_loop(socket: Arc<UdpSocket>, side: Side, sink: Arc<dyn Sink>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                // CRLF keep-alives (RFC 5626 §3.5.1) carry no message.
                if crate::sip::message::keepalive_prefix(&buf[..n]) == n {
                    continue;
                }
                let peer = Peer {
                    side,
                    transport: Transport::Udp,
                    addr: from,
                    conn: None,
                };
                sink.on_datagram(peer, &buf[..n]);
            }
            Err(e) => {
                // ICMP errors surface here on Linux (ECONNREFUSED); they are
                // not fatal for an unconnected socket.
                tracing::debug!(side = side.as_str(), error = %e, "udp receive error");
            }
        }
    }
}
