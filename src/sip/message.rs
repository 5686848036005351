//! Zero-copy SIP message (RFC 3261 §7) over [`bytes::Bytes`].
//!
//! A message is parsed once into a *header index*: for every header line, its
//! [`HeaderName`] id and the byte ranges of the whole line and of its value.
//! Nothing is copied or decoded until a caller asks for a typed view
//! ([`SipMessage::top_via`], [`SipMessage::cseq`], …), and forwarding splices
//! the original bytes (see [`crate::sip::splice`]) so unknown headers pass
//! through untouched.
//!
//! Parsing is split in two steps:
//! * [`SipMessage::parse`] frames the message and builds the index (RFC 3261
//!   §7.1–§7.5, §18.3 framing, §25 grammar for the start line); it fails only
//!   when no index can be built;
//! * [`SipMessage::validate`] applies the semantic checks an element must make
//!   before acting on a message (mandatory headers per §8.1.1, CSeq/method
//!   agreement, scalar ranges, Content-Length consistency) so that a request
//!   failing them can still be answered with a 400 that copies its headers.

use std::ops::Range;

use bytes::Bytes;
use smallvec::SmallVec;

pub use crate::sip::header::HeaderName;
pub use crate::sip::method::Method;

/// Size limits applied while parsing. Defaults follow common SBC practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole message (start line + headers + body) accepted.
    pub max_message_bytes: usize,
    /// Largest number of header lines (after unfolding) accepted.
    pub max_headers: usize,
    /// Longest single physical line accepted.
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 65_535,
            max_headers: 128,
            max_line_bytes: 8_192,
        }
    }
}

/// Why a message could not be parsed or failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Stream framing: the buffer does not yet hold a whole message.
    #[error("incomplete message")]
    Incomplete,
    #[error("message exceeds {0} bytes")]
    TooLarge(usize),
    #[error("more than {0} header lines")]
    TooManyHeaders(usize),
    #[error("a line exceeds {0} bytes")]
    LineTooLong(usize),
    #[error("bad start line: {0}")]
    BadStartLine(&'static str),
    /// SIP version other than SIP/2.0 (answered with 505, RFC 3261 §8.2.2... §21.5.6).
    #[error("unsupported SIP version")]
    BadVersion,
    #[error("bad header {name}: {reason}")]
    BadHeader {
        name: &'static str,
        reason: &'static str,
    },
    #[error("missing mandatory header {0}")]
    MissingHeader(&'static str),
    #[error("bad Content-Length: {0}")]
    BadContentLength(&'static str),
    #[error("bad Request-URI: {0}")]
    BadRequestUri(&'static str),
}

impl ParseError {
    /// Status code of the response a server sends for a request failing with
    /// this error: 505 for [`ParseError::BadVersion`], else 400.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::BadVersion => 505,
            _ => 400,
        }
    }
}

/// First line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Method,
        /// Range of the method token (meaningful for [`Method::Extension`]).
        method_range: Range<u32>,
        /// Range of the Request-URI.
        uri: Range<u32>,
    },
    Response {
        status: u16,
        /// Range of the reason phrase (may be empty).
        reason: Range<u32>,
    },
}

/// One entry of the header index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    /// Whole header field, from the first byte of its name to and including
    /// the CRLF that ends its last (folded) line.
    pub line: Range<u32>,
    /// The header name as written (compact or long form).
    pub name_range: Range<u32>,
    /// The value, leading and trailing whitespace trimmed; folded lines stay
    /// inside this range as written (CRLF + WSP).
    pub value: Range<u32>,
}

/// A parsed SIP message: the original bytes plus the header index.
#[derive(Debug, Clone)]
pub struct SipMessage {
    buf: Bytes,
    start: StartLine,
    headers: SmallVec<[Header; 24]>,
    /// End of the start line including its CRLF (= start of the first header).
    headers_start: u32,
    /// Range of the body as framed by Content-Length.
    body: Range<u32>,
}

/// Result of [`frame_stream`]: where the next message in a stream buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Leading CRLF keep-alive bytes (RFC 5626 §3.5.1) to skip first.
    pub skip: usize,
    /// Length of the message following the skipped bytes.
    pub len: usize,
}

/// Stream framing (RFC 3261 §18.3): find the end of the next message in a
/// TCP/TLS byte stream. Returns `Ok(None)` when more bytes are needed,
/// `Ok(Some(frame))` when `buf[frame.skip..frame.skip + frame.len]` is a whole
/// message, and an error when the stream can not be framed (missing or bad
/// Content-Length, limits exceeded) and the connection should be closed.
/// A buffer holding only CRLFs yields `Ok(None)` (the keep-alive bytes are
/// reported through a later frame's `skip`, or by [`keepalive_prefix`]).
pub fn frame_stream(buf: &[u8], limits: &Limits) -> Result<Option<Frame>, ParseError> {
    let _ = (buf, limits);
    todo!()
}

/// Number of leading CR/LF bytes in `buf` (keep-alive pings).
pub fn keepalive_prefix(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

impl SipMessage {
    /// Parses one message from a datagram or a framed stream chunk.
    /// Octets after the Content-Length body are ignored (RFC 3261 §18.3).
    /// With no Content-Length header, the rest of the buffer is the body.
    /// A body shorter than Content-Length is an error.
    pub fn parse(buf: Bytes, limits: &Limits) -> Result<SipMessage, ParseError> {
        let _ = (buf, limits);
        todo!()
    }

    /// Semantic checks before acting on a message: mandatory headers (Via,
    /// From, To, Call-ID, CSeq), parseable CSeq with the request's method and
    /// a number below 2^31, Max-Forwards 0–255 when present, Content-Length
    /// matching, well-formed From/To/Request-URI. See the RFC 4475 §3.1.2
    /// cases for what must fail.
    pub fn validate(&self) -> Result<(), ParseError> {
        todo!()
    }

    /// The framed message bytes (without trailing octets).
    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
    pub fn start_line(&self) -> &StartLine {
        &self.start
    }
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    /// Request method, or `None` for a response.
    pub fn method(&self) -> Option<Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(*method),
            StartLine::Response { .. } => None,
        }
    }
    /// Method token as written (request only).
    pub fn method_bytes(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Request { method_range, .. } => Some(self.slice(method_range)),
            StartLine::Response { .. } => None,
        }
    }
    /// Response status code, or `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }
    /// Request-URI bytes (request only).
    pub fn request_uri(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(self.slice(uri)),
            StartLine::Response { .. } => None,
        }
    }
    /// Range of the request-URI in [`Self::as_slice`].
    pub fn request_uri_range(&self) -> Option<Range<u32>> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri.clone()),
            StartLine::Response { .. } => None,
        }
    }
    /// Offset of the first header line.
    pub fn headers_start(&self) -> u32 {
        self.headers_start
    }
    /// The header index, in message order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }
    /// Bytes of a range of this message.
    pub fn slice(&self, r: &Range<u32>) -> &[u8] {
        &self.buf[r.start as usize..r.end as usize]
    }
    /// Value of an indexed header.
    pub fn value(&self, h: &Header) -> &[u8] {
        self.slice(&h.value)
    }
    /// Value of the first header with this name.
    pub fn first(&self, name: HeaderName) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| self.value(h))
    }
    /// Index (into [`Self::headers`]) of the first header with this name.
    pub fn first_index(&self, name: HeaderName) -> Option<usize> {
        self.headers.iter().position(|h| h.name == name)
    }
    /// Every comma-separated value of every header with this name, in order
    /// (RFC 3261 §7.3.1), splitting outside quoted strings and `<...>`.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        let _ = name;
        std::iter::empty::<&[u8]>()
    }
    /// The body as framed by Content-Length.
    pub fn body(&self) -> &[u8] {
        self.slice(&self.body)
    }
    pub fn body_range(&self) -> Range<u32> {
        self.body.clone()
    }

    // ---- lazy typed views of the headers a proxy reads ----

    /// Topmost Via value (first value of the first Via header).
    pub fn top_via(&self) -> Result<crate::sip::via::Via<'_>, ParseError> {
        todo!()
    }
    pub fn call_id(&self) -> Option<&[u8]> {
        self.first(HeaderName::CallId)
    }
    pub fn cseq(&self) -> Result<CSeq<'_>, ParseError> {
        todo!()
    }
    /// Max-Forwards value; `Ok(None)` when absent.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        todo!()
    }
    pub fn from(&self) -> Result<crate::sip::uri::NameAddr<'_>, ParseError> {
        todo!()
    }
    pub fn to(&self) -> Result<crate::sip::uri::NameAddr<'_>, ParseError> {
        todo!()
    }
    /// Content-Length when present.
    pub fn content_length(&self) -> Option<usize> {
        todo!()
    }
}

/// CSeq header (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: Method,
    pub method_bytes: &'a [u8],
}
