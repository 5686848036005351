//! Media anchoring (the `anchor media` phase): the SDP rewrite that puts the
//! relay on the media path. The port pool, RTP/RTCP relay and per-call stats
//! join here as they land.

pub mod ng;
pub mod sdp;
