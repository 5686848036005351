//! What the proxy core reports as it works: the counters and gauges it
//! moves, behind the narrow [`CoreObserver`] trait. The core defines the
//! words it reports in ([`Direction`], [`CoreRefusal`]) and knows nothing
//! of who listens; the admin API's `Metrics` is one listener (the API
//! layer depends on the SIP core, never the reverse).
//!
//! Every call is made on the hot path: an implementation should do no more
//! than an atomic add or store, and must not allocate or block.

use crate::sip::method::Method;
use crate::sip::side::Side;

/// Direction of a counted message relative to callgate. `as usize` gives
/// 0 for [`Direction::In`] and 1 for [`Direction::Out`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from a peer.
    In,
    /// Sent to a peer.
    Out,
}

/// Why the core itself refused a new INVITE with 503 and Retry-After.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreRefusal {
    /// More INVITEs waiting for a final response than the overload limit.
    Overload,
    /// Draining for shutdown.
    Draining,
    /// A request (of any method) whose transaction would take its source
    /// or the core over its byte budget (`budget.rs`).
    TransactionBytes,
}

/// The counters and gauges the proxy core moves. See the module
/// documentation for the cost each call may have.
pub trait CoreObserver: Send + Sync {
    /// A request received (`In`) or sent (`Out`) on `side`.
    fn request(&self, side: Side, dir: Direction, method: Method);
    /// A response received (`In`) or sent (`Out`) on `side`.
    fn response(&self, side: Side, dir: Direction, status: u16);
    /// A message from `side` that could not be parsed or failed validation.
    fn parse_error(&self, side: Side);
    /// A new INVITE from `side` refused by the core.
    fn refused(&self, side: Side, why: CoreRefusal);
    /// A send towards `side` failed.
    fn transport_error(&self, side: Side);
    /// A request retried on the next target.
    fn failover(&self);
    /// A client transaction timed out (Timer B/F/C).
    fn timeout(&self);
    /// A request refused with 482 Loop Detected.
    fn loop_detected(&self);
    /// Live server and client transactions.
    fn set_active_transactions(&self, server: usize, client: usize);
    /// The bytes transactions hold now (`budget.rs`).
    fn set_transaction_bytes(&self, _bytes: usize) {}
    /// Targets in rotation reached through `side`.
    fn set_targets_up(&self, side: Side, up: usize);
    /// Whether the core is draining for shutdown.
    fn set_draining(&self, on: bool);
}
