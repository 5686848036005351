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

pub async fn bind(addr: SocketAddr) -> Result<Arc<UdpSocket>, TransportError> {
    UdpSocket::bind(addr)
        .await
        .map(Arc::new)
        .map_err(|source| TransportError::Bind {
            addr,
            transport: Transport::Udp,
            source,
        })
}

/// Reads datagrams forever and hands each to the sink.
pub async fn receive_loop(socket: Arc<UdpSocket>, side: Side, sink: Arc<dyn Sink>) {
    let mut buf = BytesMut::with_capacity(MAX_DATAGRAM * 4);
    loop {
        if buf.capacity() < MAX_DATAGRAM {
            buf.reserve(MAX_DATAGRAM * 4);
        }
        buf.resize(MAX_DATAGRAM, 0);
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                buf.truncate(n);
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
