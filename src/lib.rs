//! callgate: a SIP middlebox between a carrier trunk and a contact centre PBX.
//!
//! Layers, following the call path (see `docs/architecture.md`):
//! * [`sip`] — SIP plumbing with no policy: message parsing and splicing,
//!   transports, transactions, the stateful proxy core;
//! * [`config`] — typed configuration, validated at load;
//! * [`dns`] — host names in targets resolved at the edge (RFC 3263),
//!   refreshed by TTL in the background;
//! * [`gate`] — the running service: wires transports, the proxy core,
//!   admission, timers, signals and the admin API;
//! * [`api`] — admin HTTP: health, readiness, Prometheus metrics;
//! * [`exposition`] — how every layer writes its metric families;
//! * [`stir`] — STIR/SHAKEN verification and signing;
//! * [`risk`] — signals, the operator's policy and the decision per call;
//! * [`cluster`] — several instances behind one trunk seen and supervised
//!   as one through the shared state store (calls, decisions, verdicts,
//!   list additions, events);
//! * [`media`] — media anchoring: the SDP rewrite for the relay;
//! * [`capture`] — packet captures (pcap, pcapng) read back into SIP
//!   messages, for `callgate replay --pcap`.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod capture;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod env;
pub mod events;
pub mod exposition;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod logs;
pub mod media;
pub mod pki;
pub mod risk;
pub mod sip;
pub mod state;
pub mod stir;
