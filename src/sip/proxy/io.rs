//! What the sans-IO proxy core exchanges with the transport edge.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::sip::side::{Side, Transport};

/// Identifies a TCP/TLS connection owned by the transport edge.
pub type ConnId = u64;

/// Where a message came from, or where one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub side: Side,
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The connection a message arrived on (stream transports). Responses
    /// go back on it (RFC 3261 §18.2.2); requests may reuse it.
    pub conn: Option<ConnId>,
}

/// A message the edge must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Peer,
    pub bytes: Bytes,
    /// Set for requests of client transactions: the edge reports a failed
    /// send or connect back with [`super::ProxyCore::on_transport_error`].
    pub client: Option<Bytes>,
}
