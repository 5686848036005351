//! RFC 3261 §17 transactions as sans-IO state machines.
//!
//! A transaction is fed messages and the current time and answers with
//! [`TxOutput`]s: bytes to (re)transmit, or an event for the transaction user
//! (the proxy core). It never touches a socket or a clock: the caller asks
//! [`ClientTransaction::next_deadline`] / [`ServerTransaction::next_deadline`]
//! when to call `on_timer` next. That keeps every timer (A–K, plus L and M
//! of RFC 6026) unit-testable with an injected clock.

mod client;
mod server;
mod timers;

pub use client::{ClientState, ClientTransaction};
pub use server::{ServerState, ServerTransaction};
pub use timers::TimerConfig;

use bytes::Bytes;

/// What a transaction asks its caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutput {
    /// Send these bytes to the transaction's peer.
    Transmit(Bytes),
    /// Hand the response just received to the transaction user (client only).
    PassUp,
    /// Timer B/F fired, or the transport failed: the TU should act as if a
    /// 408 was received (RFC 3261 §17.1.1.2, §17.1.2.2, §16.7 step 10.. §16.9).
    Timeout,
    /// Timer H fired: the final response was never acknowledged (§17.2.1).
    AckTimeout,
    /// The transaction reached Terminated and can be dropped.
    Terminated,
}

/// Whether a transaction handles INVITE (three-way handshake) or anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    Invite,
    NonInvite,
}
