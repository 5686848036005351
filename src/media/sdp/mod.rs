//! SDP for media anchoring: a zero-copy reader and a byte-splicing rewriter.
//!
//! [`Sdp::parse`] reads a session description (RFC 8866, which obsoletes
//! RFC 4566) into a line index — the byte range of every line — and decodes
//! only what anchoring needs: the origin (`o=`, §5.2), the connection data
//! (`c=`, §5.7) at session and media level, and per media description
//! (`m=`, §5.14) its port, proto, formats, `a=rtcp` (RFC 3605), `a=rtcp-mux`
//! (RFC 5761), direction (§6.7), `a=ptime` (§6.4), ICE attributes (RFC 8839)
//! and SDES `a=crypto` (RFC 4568). Everything borrows from the body.
//!
//! [`Sdp::rewrite`] then applies an anchoring plan (one [`Anchor`] or `None`
//! per m-line) by splicing: it edits `c=`, the `m=` port, `a=rtcp` and the
//! `o=` sess-version, optionally removes ICE lines, and copies every other
//! byte — `b=`, `a=rtpmap`, `a=fmtp`, `a=crypto`, unknown attributes, each
//! line's own CRLF or LF ending — unchanged. See [`rewrite`] for the rules.
//!
//! Parsing is strict where the rewrite depends on the field (`v=`, `o=`,
//! `c=`, `m=`, `a=rtcp`: a malformed one is an [`SdpError`]) and lenient
//! elsewhere: lines it does not need, and a malformed `a=ptime`, pass through
//! untouched. Sizes are bounded by [`Limits`]. Empty lines are tolerated and
//! copied (some user agents end the body with an extra CRLF).

use std::net::IpAddr;

mod parse;
pub mod rewrite;

#[cfg(test)]
mod tests;

pub use rewrite::{
    plain_proto, secure_proto, Anchor, Keying, Rewrite, RewriteError, RewriteOptions,
};

/// Size bounds applied by [`Sdp::parse_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Most physical lines accepted (empty lines included).
    pub max_lines: usize,
    /// Most media descriptions (`m=` lines) accepted.
    pub max_media: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 65_535,
            max_lines: 512,
            max_media: 32,
        }
    }
}

/// Why a body is not an SDP this module can anchor. `line` is 1-based and
/// counts physical lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("SDP has more than {0} lines")]
    TooManyLines(usize),
    #[error("SDP has more than {0} media descriptions")]
    TooManyMedia(usize),
    /// RFC 8866 §5: every line is `<type>=<value>`, `<type>` one letter.
    #[error("line {line}: not of the form <type>=<value>")]
    MalformedLine { line: usize },
    /// RFC 8866 §5.1: the body starts with `v=`.
    #[error("SDP does not start with v=")]
    MissingVersion,
    /// RFC 8866 §5.2: `o=` is mandatory.
    #[error("SDP has no o= line")]
    MissingOrigin,
    /// RFC 8866 §5.7: a media description that is not disabled needs `c=`
    /// at media or session level.
    #[error("media description {media} has no c= at media or session level")]
    MissingConnection { media: usize },
    #[error("line {line}: bad {field}: {reason}")]
    BadField {
        line: usize,
        field: &'static str,
        reason: &'static str,
    },
    #[error("line {line}: {field} repeated or out of place")]
    Misplaced { line: usize, field: &'static str },
}

/// One line of the body, by byte offsets. The value starts after `<type>=`,
/// at `start + 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// The type letter: `b'v'`, `b'o'`, `b'c'`, `b'm'`, `b'a'`, …
    pub kind: u8,
    /// Offset of the type letter.
    pub start: usize,
    /// End of the value: where the line ending starts.
    pub value_end: usize,
    /// End of the line including its ending: `\r\n`, `\n`, or nothing on an
    /// unterminated last line.
    pub end: usize,
}

impl Line {
    pub fn value_range(&self) -> std::ops::Range<usize> {
        self.start + 2..self.value_end
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`
/// (RFC 8866 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin<'a> {
    pub username: &'a str,
    pub sess_id: &'a str,
    /// RFC 3264 §8: increases with every change of the description.
    pub sess_version: u64,
    pub nettype: &'a str,
    pub addrtype: &'a str,
    /// Kept as text: it may be a host name.
    pub address: &'a str,
    /// Byte range of the sess-version field.
    version_at: (usize, usize),
}

/// A `c=IN IP4|IP6 <address>` line (RFC 8866 §5.7). Only unicast IP literals
/// are accepted (a host name or a multicast `/ttl` suffix is an error): the
/// relay needs an address it can send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub addr: IpAddr,
    /// Index into [`Sdp::lines`].
    line: usize,
}

/// `a=rtcp:<port> [IN IP4|IP6 <address>]` (RFC 3605 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtcp {
    pub port: u16,
    pub addr: Option<IpAddr>,
    /// Index into [`Sdp::lines`].
    line: usize,
}

/// Media direction attribute (RFC 8866 §6.7; RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// One media description: the `m=` line and the lines after it up to the
/// next `m=` (RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media<'a> {
    /// `audio`, `video`, `image`, …
    pub media_type: &'a str,
    /// 0 = disabled or rejected stream (RFC 3264 §5.1, §6).
    pub port: u16,
    /// `m=audio 49170/2 …` gives 2; 1 when absent.
    pub port_count: u16,
    /// `RTP/AVP`, `RTP/SAVP`, `RTP/AVPF`, `UDP/TLS/RTP/SAVPF`, …
    pub proto: &'a str,
    /// The format list as written; see [`Media::formats`].
    pub format_list: &'a str,
    /// Media-level `c=`.
    pub connection: Option<Connection>,
    /// Effective connection address: media-level `c=`, else session-level.
    pub address: Option<IpAddr>,
    pub rtcp: Option<Rtcp>,
    /// `a=rtcp-mux` (RFC 5761 §5.1.1).
    pub rtcp_mux: bool,
    /// Effective direction: media level, else session level, else sendrecv.
    pub direction: Direction,
    /// `a=ptime` in whole milliseconds; `None` when absent or unreadable.
    pub ptime: Option<u32>,
    /// Media-level ICE attributes (RFC 8839 §5): candidate, ice-ufrag,
    /// ice-pwd, ice-options, end-of-candidates, remote-candidates, …
    pub has_ice: bool,
    /// SDES keying `a=crypto` (RFC 4568 §9).
    pub has_crypto: bool,
    /// The `a=crypto` lines in order (those whose value is UTF-8).
    pub crypto: Vec<Crypto<'a>>,
    /// See [`Media::is_on_hold`].
    on_hold: bool,
    /// Media-level direction attribute, if any.
    declared_direction: Option<Direction>,
    /// Index of the `m=` line in [`Sdp::lines`].
    line: usize,
    /// Byte range of the port number (without `/count`).
    port_at: (usize, usize),
    /// Byte range of the proto field.
    proto_at: (usize, usize),
    /// Index in [`Sdp::lines`] of the description's last line.
    last_line: usize,
}

/// One `a=crypto:<value>` line of a media description (RFC 4568 §9.1),
/// unparsed: see [`crate::media::srtp::CryptoAttribute::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crypto<'a> {
    /// The attribute's value: `<tag> <crypto-suite> <key-params> …`.
    pub value: &'a str,
    /// Index into [`Sdp::lines`].
    line: usize,
}

impl<'a> Media<'a> {
    /// The formats (RTP payload types for RTP protos), in order.
    pub fn formats(&self) -> impl Iterator<Item = &'a str> {
        self.format_list.split(' ').filter(|f| !f.is_empty())
    }
    /// Port 0: the stream is disabled (offer) or rejected (answer), RFC 3264
    /// §5.1 and §6.
    pub fn is_disabled(&self) -> bool {
        self.port == 0
    }
    /// On hold: direction sendonly or inactive (RFC 3264 §8.4), or the
    /// effective address is unspecified (`0.0.0.0` or `::`, the RFC 2543
    /// style of hold) in a description without ICE — with ICE an unspecified
    /// address is the "no default candidate yet" placeholder (JSEP,
    /// RFC 8829 §5.2.1; RFC 8838), not a hold.
    pub fn is_on_hold(&self) -> bool {
        self.on_hold
    }
}

/// A parsed session description borrowing its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp<'a> {
    body: &'a [u8],
    lines: Vec<Line>,
    origin: Origin<'a>,
    connection: Option<Connection>,
    direction: Option<Direction>,
    session_has_ice: bool,
    media: Vec<Media<'a>>,
}

impl<'a> Sdp<'a> {
    /// Parses with the default [`Limits`].
    pub fn parse(body: &'a [u8]) -> Result<Self, SdpError> {
        Self::parse_with(body, &Limits::default())
    }
    pub fn parse_with(body: &'a [u8], limits: &Limits) -> Result<Self, SdpError> {
        parse::parse(body, limits)
    }
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
    /// Every non-empty line, in order.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }
    pub fn origin(&self) -> &Origin<'a> {
        &self.origin
    }
    /// Session-level `c=`.
    pub fn connection(&self) -> Option<Connection> {
        self.connection
    }
    /// Session-level direction attribute, if any.
    pub fn session_direction(&self) -> Option<Direction> {
        self.direction
    }
    /// ICE attributes at session level (`a=ice-ufrag`, `a=ice-lite`, …).
    pub fn session_has_ice(&self) -> bool {
        self.session_has_ice
    }
    /// ICE attributes anywhere in the description.
    pub fn has_ice(&self) -> bool {
        self.session_has_ice || self.media.iter().any(|m| m.has_ice)
    }
    /// The media descriptions, in `m=` order.
    pub fn media(&self) -> &[Media<'a>] {
        &self.media
    }

    /// Whether `media`'s effective address is an RFC 2543 hold address that
    /// the rewrite keeps (unspecified, and no ICE in scope).
    fn held_by_address(&self, media: &Media<'_>) -> bool {
        media.address.is_some_and(|a| a.is_unspecified())
            && !(media.has_ice || self.session_has_ice)
    }
}
