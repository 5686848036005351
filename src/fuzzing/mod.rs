//! Entry points for the cargo-fuzz targets in `fuzz/` and for the
//! regression tests of what they found. Each `exercise` takes arbitrary
//! bytes, drives one hand-written parser (and what consumes its result) and
//! returns a checksum so nothing is optimised away. None may panic, loop
//! without bound or allocate without bound: that is what fuzzing checks.
//!
//! Not part of the API: hidden from the docs, stable only for `fuzz/` and
//! `tests/fuzz_regressions.rs`.

pub mod http;
pub mod ng;
pub mod passport;
pub mod pcap;
pub mod pipeline;
pub mod policy;
pub mod sdp;
pub mod srtp;
pub mod x509;

/// The SIP message parser, splicer and response builder.
pub use crate::sip::fuzzing as sip;
