//! STIR/SHAKEN: the Identity header (RFC 8224), PASSporTs (RFC 8225) with
//! the SHAKEN extension (RFC 8588, ATIS-1000074), ES256 signing and
//! verification.
//!
//! Layers, bottom up: [`crate::pki`] reads certificates; [`identity`]
//! and [`passport`] decode and check the header and claims; [`certs`]
//! validates chains to the STI trust anchors; [`fetch`] gets `x5u` over
//! HTTPS; [`service`] caches and coalesces fetches under a deadline;
//! [`verify`] summarises a [`verify::Verification`]; [`mark`] turns it into
//! `verstat` and `Reason`; [`sign`] is the authentication service.

pub mod cache;
pub mod certs;
pub mod divert;
pub mod egress;
pub mod fetch;
pub mod identity;
pub mod keys;
pub mod lru;
pub mod mark;
pub mod offload;
pub mod passport;
pub mod rcd;
pub mod replay;
pub mod service;
pub mod sign;
pub mod tn_auth;
pub mod verify;

/// Why a PASSporT failed, with the SIP response RFC 8224 §6.2.2 assigns to
/// a verification service that rejects the call for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// 428 Use Identity Header: no Identity header where one is required.
    MissingIdentity,
    /// 436 Bad Identity Info: `info`/`x5u` unusable (not https, mismatch).
    BadIdentityInfo,
    /// 437 Unsupported Credential: the certificate cannot be used.
    UnsupportedCredential,
    /// 438 Invalid Identity Header: malformed, wrong algorithm or type,
    /// signature or claims that do not verify.
    InvalidIdentityHeader,
    /// 403 Stale Date: `iat` outside the freshness window.
    StaleDate,
}

impl Cause {
    /// The RFC 8224 response code for this cause.
    pub fn status(&self) -> u16 {
        match self {
            Cause::MissingIdentity => 428,
            Cause::BadIdentityInfo => 436,
            Cause::UnsupportedCredential => 437,
            Cause::InvalidIdentityHeader => 438,
            Cause::StaleDate => 403,
        }
    }
}
