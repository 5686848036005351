//! Metrics of the resource bounds that keep a flood from exhausting
//! connections, memory or disk: connections refused at accept and closed
//! by a deadline, bytes held by transactions and refusals over those
//! budgets. Encoded into `/metrics` with [`super::metrics::Metrics`].

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::exposition::{counter, one_gauge};
use crate::sip::side::Side;
use crate::sip::transport::connections::CapReached;
use crate::sip::transport::stream::Closed;

const SIDES: [Side; 2] = [Side::Trunk, Side::Pbx];

/// Why callgate ended or refused a stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// Refused at accept: its source already holds its cap.
    PerSourceCap,
    /// Refused at accept: the listener holds its total cap.
    TotalCap,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// The TLS handshake failed.
    HandshakeFailed,
    /// Closed: a message incomplete at its deadline.
    MessageDeadline,
    /// Closed: idle between messages.
    Idle,
    /// Closed: bytes that cannot be framed, or over the size limit.
    Unframeable,
}

const ENDS: [(ConnectionEnd, &str); 7] = [
    (ConnectionEnd::PerSourceCap, "per_source_cap"),
    (ConnectionEnd::TotalCap, "total_cap"),
    (ConnectionEnd::HandshakeTimeout, "handshake_timeout"),
    (ConnectionEnd::HandshakeFailed, "handshake_failed"),
    (ConnectionEnd::MessageDeadline, "message_deadline"),
    (ConnectionEnd::Idle, "idle"),
    (ConnectionEnd::Unframeable, "unframeable"),
];

impl From<CapReached> for ConnectionEnd {
    fn from(c: CapReached) -> Self {
        match c {
            CapReached::PerSource => ConnectionEnd::PerSourceCap,
            CapReached::Total => ConnectionEnd::TotalCap,
        }
    }
}

impl ConnectionEnd {
    /// The end a stream's close reason counts as; `None` when the peer
    /// closed it (not callgate's doing).
    pub fn of(closed: Closed) -> Option<ConnectionEnd> {
        match closed {
            Closed::Peer => None,
            Closed::Idle => Some(ConnectionEnd::Idle),
            Closed::MessageDeadline => Some(ConnectionEnd::MessageDeadline),
            Closed::Unframeable => Some(ConnectionEnd::Unframeable),
        }
    }
}

/// Counters and gauges of the exhaustion bounds.
#[derive(Default)]
pub struct ExhaustionMetrics {
    /// [side][end]
    connection_ends: [[AtomicU64; ENDS.len()]; 2],
    /// Bytes of requests and responses held by transactions now.
    transaction_bytes: AtomicI64,
}

impl ExhaustionMetrics {
    /// Counts a connection callgate refused or closed.
    pub fn connection_end(&self, side: Side, end: ConnectionEnd) {
        let i = ENDS.iter().position(|(e, _)| *e == end).unwrap_or(0);
        self.connection_ends[side.index()][i].fetch_add(1, Relaxed);
    }

    /// The bytes transactions hold now.
    pub fn set_transaction_bytes(&self, bytes: usize) {
        self.transaction_bytes
            .store(i64::try_from(bytes).unwrap_or(i64::MAX), Relaxed);
    }

    /// Writes these families (see [`crate::exposition`]).
    pub fn encode(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let mut f = counter(
            e,
            "callgate_connections_closed_total",
            "TCP/TLS connections callgate refused at accept or closed, by reason.",
        )?;
        for side in SIDES {
            for (i, (_, name)) in ENDS.iter().enumerate() {
                let labels = [("side", side.as_str()), ("reason", *name)];
                f.counter(&labels, self.connection_ends[side.index()][i].load(Relaxed))?;
            }
        }
        one_gauge(
            e,
            "callgate_transaction_bytes",
            "Bytes of messages held by SIP transactions.",
            self.transaction_bytes.load(Relaxed),
        )
    }
}
