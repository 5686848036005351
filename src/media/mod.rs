//! Media anchoring (the `anchor media` phase): the SDP rewrite that puts the
//! relay on the media path, the relay itself, and its control protocols.
//!
//! * [`sdp`] — reading and rewriting SDP (RFC 8866, RFC 3264);
//! * [`rtp`] — borrowed RTP/RTCP header views (RFC 3550, RFC 5761);
//! * [`srtp`] — SRTP/SRTCP with SDES keys (RFC 3711, RFC 4568), to
//!   terminate SRTP at the relay;
//! * [`stats`] — per-stream packets, loss and jitter (RFC 3550 A.3, A.8);
//! * [`relay`] — the RTP/RTCP relay: port pairs, latching, worker threads;
//! * [`anchor`] — offer/answer through the relay: streams, remotes, rewrite;
//! * [`config`] — `[media]` as this layer takes it ([`config::MediaConfig`]);
//! * [`ng`] — rtpengine's ng control protocol, so Kamailio or OpenSIPS can
//!   drive the relay too; [`ng_control`] maps it onto the anchor.

pub mod anchor;
pub mod config;
pub mod ng;
pub mod ng_control;
pub mod relay;
pub mod rtp;
pub mod sdp;
pub mod srtp;
pub mod stats;
