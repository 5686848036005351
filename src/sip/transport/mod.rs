//! SIP transports (RFC 3261 §18): UDP, TCP and TLS listeners, outbound
//! connections, and the connection table used for connection reuse.
//!
//! The transport layer only moves bytes: every received message goes to a
//! [`Sink`] (the gate), which decides what to do with it.

pub mod batch;
pub mod connections;
pub mod kernel_filter;
pub mod socket_drops;
pub mod stream;
pub mod tls;
pub mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::sip::proxy::{ConnId, Peer};
use crate::sip::side::{Side, Transport};

/// Receives what the transports read.
pub trait Sink: Send + Sync + 'static {
    /// One message (a datagram, or a framed stream message) from `peer`.
    fn on_message(&self, peer: Peer, data: Bytes);

    /// One datagram from `peer`, still in the receive buffer. A sink that
    /// can refuse a datagram on its source alone (the admit phase) does so
    /// here, before it is copied out: a flood of large datagrams from a
    /// refused source then costs no allocation and no copy. By default:
    /// copied and handed to [`Sink::on_message`].
    fn on_datagram(&self, peer: Peer, data: &[u8]) {
        self.on_message(peer, Bytes::copy_from_slice(data));
    }
}

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("bind {addr} ({transport:?}): {source}")]
    Bind {
        addr: SocketAddr,
        transport: Transport,
        source: std::io::Error,
    },
}

/// A writer handle of an open stream connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    pub side: Side,
    pub transport: Transport,
    pub remote: SocketAddr,
    pub tx: mpsc::Sender<Bytes>,
}

/// Open stream connections, by id and by (side, transport, remote address)
/// so requests to a peer reuse its connection (RFC 3261 §18.1.1, RFC 5923 spirit).
#[derive(Default)]
pub struct ConnTable {
    inner: Mutex<ConnTableInner>,
}

#[derive(Default)]
struct ConnTableInner {
    next_id: ConnId,
    by_id: HashMap<ConnId, ConnHandle>,
    by_remote: HashMap<(Side, Transport, SocketAddr), ConnId>,
}

impl ConnTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnTableInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection and returns its handle.
    pub fn register(
        &self,
        side: Side,
        transport: Transport,
        remote: SocketAddr,
        tx: mpsc::Sender<Bytes>,
    ) -> ConnHandle {
        let mut t = self.lock();
        t.next_id += 1;
        let h = ConnHandle {
            id: t.next_id,
            side,
            transport,
            remote,
            tx,
        };
        t.by_id.insert(h.id, h.clone());
        t.by_remote.insert((side, transport, remote), h.id);
        h
    }

    pub fn remove(&self, id: ConnId) {
        let mut t = self.lock();
        if let Some(h) = t.by_id.remove(&id) {
            let key = (h.side, h.transport, h.remote);
            if t.by_remote.get(&key) == Some(&id) {
                t.by_remote.remove(&key);
            }
        }
    }

    /// The connection to use for `to`: its own connection if still open,
    /// else any open connection to the same remote address.
    pub fn find(&self, to: &Peer) -> Option<ConnHandle> {
        let t = self.lock();
        if let Some(h) = to.conn.and_then(|id| t.by_id.get(&id)) {
            return Some(h.clone());
        }
        t.by_remote
            .get(&(to.side, to.transport, to.addr))
            .and_then(|id| t.by_id.get(id))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
