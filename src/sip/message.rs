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

pub use crate::sip::error::ParseError;
pub use crate::sip::header::HeaderName;
pub use crate::sip::method::Method;
use crate::sip::scan;
use crate::sip::uri::{NameAddr, Uri};
use crate::sip::via::Via;

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
    let skip = keepalive_prefix(buf);
    let rest = &buf[skip..];
    if rest.is_empty() {
        return Ok(None);
    }
    let Some(hdr_end) = find(rest, b"\r\n\r\n") else {
        if rest.len() > limits.max_message_bytes {
            return Err(ParseError::TooLarge(limits.max_message_bytes));
        }
        return Ok(None);
    };
    let mut content_length = None;
    for line in rest[..hdr_end].split(|b| *b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if HeaderName::from_bytes(scan::trim(&line[..colon])) == HeaderName::ContentLength {
            content_length = Some(
                decimal(scan::trim(&line[colon + 1..]))
                    .ok_or(ParseError::BadContentLength("not a number"))?,
            );
            break;
        }
    }
    // §18.3: Content-Length MUST be present on stream transports.
    let cl = content_length.ok_or(ParseError::BadContentLength(
        "missing on a stream transport",
    ))?;
    let total = hdr_end
        .checked_add(4)
        .and_then(|n| n.checked_add(usize::try_from(cl).ok()?))
        .filter(|n| *n <= limits.max_message_bytes)
        .ok_or(ParseError::TooLarge(limits.max_message_bytes))?;
    if rest.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame { skip, len: total }))
}

/// Number of leading CR/LF bytes in `buf` (keep-alive pings).
pub fn keepalive_prefix(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// A non-negative decimal of at most 19 digits (no sign, no spaces).
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Finds the end of the line starting at `pos`: returns (end of content,
/// start of the next line). CRLF is the terminator; a bare LF is tolerated.
fn line_at(b: &[u8], pos: usize, limits: &Limits) -> Result<(usize, usize), ParseError> {
    let rel = memchr::memchr(b'\n', &b[pos..]).ok_or(ParseError::BadHeader {
        name: "(headers)",
        reason: "missing the blank line that ends the headers",
    })?;
    let nl = pos + rel;
    if rel > limits.max_line_bytes {
        return Err(ParseError::LineTooLong(limits.max_line_bytes));
    }
    let end = if nl > pos && b[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Ok((end, nl + 1))
}

fn r(a: usize, b: usize) -> Range<u32> {
    // Sizes are bounded by max_message_bytes (≤ 1 MiB, checked first).
    a as u32..b as u32
}

/// Parses the start line (RFC 3261 §7.1 Request-Line, §7.2 Status-Line).
fn start_line(b: &[u8], end: usize) -> Result<StartLine, ParseError> {
    let line = &b[..end];
    if let Some(rest) = line.strip_prefix(b"SIP/") {
        let version_ok = rest.starts_with(b"2.0 ");
        if !version_ok {
            return Err(ParseError::BadVersion);
        }
        let code = &rest[4..];
        let digits = code.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits != 3 || !matches!(code.get(3), None | Some(b' ')) {
            return Err(ParseError::BadStartLine("status code must be three digits"));
        }
        let status = code[..3]
            .iter()
            .fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&status) {
            return Err(ParseError::BadStartLine("status code out of range"));
        }
        let reason_start = (4 + 4 + 4).min(end);
        return Ok(StartLine::Response {
            status,
            reason: r(reason_start, end),
        });
    }
    let mut parts = line.split(|c| *c == b' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadStartLine(
            "request line must be METHOD SP URI SP VERSION",
        ));
    };
    if !scan::is_token(method) {
        return Err(ParseError::BadStartLine("method is not a token"));
    }
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        return Err(
            if version.len() > 4 && version[..4].eq_ignore_ascii_case(b"SIP/") {
                ParseError::BadVersion
            } else {
                ParseError::BadStartLine("bad SIP version")
            },
        );
    }
    if Uri::parse(uri).is_err() {
        return Err(ParseError::BadRequestUri("not a URI"));
    }
    let m_end = method.len();
    let u_start = m_end + 1;
    Ok(StartLine::Request {
        method: Method::from_bytes(method),
        method_range: r(0, m_end),
        uri: r(u_start, u_start + uri.len()),
    })
}

impl SipMessage {
    /// Parses one message from a datagram or a framed stream chunk.
    /// Octets after the Content-Length body are ignored (RFC 3261 §18.3).
    /// With no Content-Length header, the rest of the buffer is the body.
    /// A body shorter than Content-Length is an error.
    pub fn parse(buf: Bytes, limits: &Limits) -> Result<SipMessage, ParseError> {
        if buf.len() > limits.max_message_bytes || buf.len() > u32::MAX as usize {
            return Err(ParseError::TooLarge(limits.max_message_bytes));
        }
        let skip = keepalive_prefix(&buf);
        let buf = if skip > 0 { buf.slice(skip..) } else { buf };
        let b: &[u8] = &buf;
        if b.is_empty() {
            return Err(ParseError::BadStartLine("empty message"));
        }
        let (sl_end, mut pos) = line_at(b, 0, limits)?;
        let start = start_line(b, sl_end)?;
        let headers_start = pos;
        let mut headers: SmallVec<[Header; 24]> = SmallVec::new();
        let body_start;
        loop {
            if pos >= b.len() {
                return Err(ParseError::BadHeader {
                    name: "(headers)",
                    reason: "missing the blank line that ends the headers",
                });
            }
            let (end, mut next) = line_at(b, pos, limits)?;
            if end == pos {
                body_start = next;
                break;
            }
            let line = &b[pos..end];
            let colon = memchr::memchr(b':', line).ok_or(ParseError::BadHeader {
                name: "(unknown)",
                reason: "header line without a colon",
            })?;
            let raw_name = &line[..colon];
            let name_len = raw_name
                .iter()
                .rposition(|c| !matches!(c, b' ' | b'\t'))
                .map_or(0, |i| i + 1);
            if !scan::is_token(&raw_name[..name_len]) {
                return Err(ParseError::BadHeader {
                    name: "(unknown)",
                    reason: "header name is not a token",
                });
            }
            let mut value_end = end;
            // Folded continuation lines (§7.3.1).
            while next < b.len() && matches!(b[next], b' ' | b'\t') {
                let (e2, n2) = line_at(b, next, limits)?;
                if e2 > next && b[next..e2].iter().any(|c| !matches!(c, b' ' | b'\t')) {
                    value_end = e2;
                }
                next = n2;
            }
            let mut vs = pos + colon + 1;
            while vs < value_end && scan::is_lws(b[vs]) {
                vs += 1;
            }
            let mut ve = value_end;
            while ve > vs && scan::is_lws(b[ve - 1]) {
                ve -= 1;
            }
            if headers.len() >= limits.max_headers {
                return Err(ParseError::TooManyHeaders(limits.max_headers));
            }
            headers.push(Header {
                name: HeaderName::from_bytes(&raw_name[..name_len]),
                line: r(pos, next),
                name_range: r(pos, pos + name_len),
                value: r(vs, ve),
            });
            pos = next;
        }
        let body_end = match headers.iter().find(|h| h.name == HeaderName::ContentLength) {
            Some(h) => {
                let v = &b[h.value.start as usize..h.value.end as usize];
                let n =
                    decimal(v).ok_or(ParseError::BadContentLength("not a non-negative number"))?;
                let end = usize::try_from(n)
                    .ok()
                    .and_then(|n| body_start.checked_add(n))
                    .ok_or(ParseError::BadContentLength("too large"))?;
                if end > b.len() {
                    return Err(ParseError::BadContentLength(
                        "body shorter than Content-Length",
                    ));
                }
                end
            }
            None => b.len(),
        };
        let buf = if body_end < buf.len() {
            buf.slice(..body_end)
        } else {
            buf
        };
        Ok(SipMessage {
            buf,
            start,
            headers,
            headers_start: headers_start as u32,
            body: r(body_start, body_end),
        })
    }

    /// Semantic checks before acting on a message: mandatory headers (Via,
    /// From, To, Call-ID, CSeq), parseable CSeq with the request's method and
    /// a number below 2^31, Max-Forwards 0–255 when present, Content-Length
    /// matching, well-formed From/To/Request-URI. See the RFC 4475 §3.1.2
    /// cases for what must fail.
    pub fn validate(&self) -> Result<(), ParseError> {
        for (name, label) in [
            (HeaderName::Via, "Via"),
            (HeaderName::From, "From"),
            (HeaderName::To, "To"),
            (HeaderName::CallId, "Call-ID"),
            (HeaderName::CSeq, "CSeq"),
        ] {
            if self.first(name).is_none_or(|v| v.is_empty()) {
                return Err(ParseError::MissingHeader(label));
            }
        }
        // Single-valued headers may appear once (RFC 4475 §3.3.7, §3.3.8).
        for (name, label) in [
            (HeaderName::From, "From"),
            (HeaderName::To, "To"),
            (HeaderName::CallId, "Call-ID"),
            (HeaderName::CSeq, "CSeq"),
            (HeaderName::MaxForwards, "Max-Forwards"),
            (HeaderName::ContentLength, "Content-Length"),
            (HeaderName::ContentType, "Content-Type"),
        ] {
            if self.headers.iter().filter(|h| h.name == name).count() > 1 {
                return Err(ParseError::BadHeader {
                    name: label,
                    reason: "appears more than once",
                });
            }
        }
        for v in self.values(HeaderName::Via) {
            Via::parse(v)?;
        }
        if self
            .headers
            .iter()
            .any(|h| h.name == HeaderName::Via && scan::split_top(self.value(h), b',').is_none())
        {
            return Err(ParseError::BadHeader {
                name: "Via",
                reason: "unbalanced quotes",
            });
        }
        self.from()?;
        self.to()?;
        let cseq = self.cseq()?;
        if let Some(m) = self.method_bytes() {
            if cseq.method_bytes != m {
                return Err(ParseError::BadHeader {
                    name: "CSeq",
                    reason: "method does not match the request line",
                });
            }
        }
        self.max_forwards()?;
        if let Some(h) = self.headers.iter().find(|h| h.name == HeaderName::Contact) {
            let list = scan::split_top(self.value(h), b',').ok_or(ParseError::BadHeader {
                name: "Contact",
                reason: "unbalanced quotes or brackets",
            })?;
            for c in list {
                NameAddr::parse(c)?;
            }
        }
        if let Some(d) = self.first(HeaderName::Date) {
            // §20.17: dates are always in GMT (RFC 4475 §3.1.2.12).
            if !d.ends_with(b"GMT") {
                return Err(ParseError::BadHeader {
                    name: "Date",
                    reason: "not in GMT",
                });
            }
        }
        if let Some(uri) = self.request_uri() {
            let u = Uri::parse(uri).map_err(|_| ParseError::BadRequestUri("not a URI"))?;
            // §19.1.5: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
            if u.is_sip() && !u.headers.is_empty() {
                return Err(ParseError::BadRequestUri(
                    "URI headers are not allowed in a Request-URI",
                ));
            }
        }
        Ok(())
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
    /// Bytes of a range of this message (empty if out of range).
    pub fn slice(&self, r: &Range<u32>) -> &[u8] {
        self.buf
            .get(r.start as usize..r.end as usize)
            .unwrap_or_default()
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
    /// Values of the headers named `name` (case-insensitive) that have no
    /// [`HeaderName`] of their own, e.g. `Diversion`, `User-Agent`.
    pub fn other<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| {
                h.name == HeaderName::Other
                    && self
                        .slice(&h.name_range)
                        .eq_ignore_ascii_case(name.as_bytes())
            })
            .map(move |h| self.value(h))
    }
    /// Index (into [`Self::headers`]) of the first header with this name.
    pub fn first_index(&self, name: HeaderName) -> Option<usize> {
        self.headers.iter().position(|h| h.name == name)
    }
    /// Every comma-separated value of every header with this name, in order
    /// (RFC 3261 §7.3.1), splitting outside quoted strings and `<...>`.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .flat_map(move |h| {
                let v = self.value(h);
                scan::split_top(v, b',')
                    .unwrap_or_else(|| smallvec::smallvec![v])
                    .into_iter()
                    .map(scan::trim)
                    .filter(|p| !p.is_empty())
            })
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
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        let v = self
            .values(HeaderName::Via)
            .next()
            .ok_or(ParseError::MissingHeader("Via"))?;
        Via::parse(v)
    }
    pub fn call_id(&self) -> Option<&[u8]> {
        self.first(HeaderName::CallId)
    }
    pub fn cseq(&self) -> Result<CSeq<'_>, ParseError> {
        let bad = |reason| ParseError::BadHeader {
            name: "CSeq",
            reason,
        };
        let v = scan::trim(
            self.first(HeaderName::CSeq)
                .ok_or(ParseError::MissingHeader("CSeq"))?,
        );
        let digits = v.iter().take_while(|c| c.is_ascii_digit()).count();
        // §8.1.1.5: the sequence number is below 2^31.
        let seq = decimal(&v[..digits])
            .filter(|n| *n < 1 << 31)
            .ok_or(bad("sequence number missing or too large"))?;
        let method_bytes = scan::trim(&v[digits..]);
        if digits == 0 || method_bytes.len() == v.len() - digits || !scan::is_token(method_bytes) {
            return Err(bad("expected NUMBER SP METHOD"));
        }
        Ok(CSeq {
            seq: seq as u32,
            method: Method::from_bytes(method_bytes),
            method_bytes,
        })
    }
    /// Max-Forwards value; `Ok(None)` when absent.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        let Some(v) = self.first(HeaderName::MaxForwards) else {
            return Ok(None);
        };
        let n = decimal(scan::trim(v))
            .and_then(|n| u8::try_from(n).ok())
            .ok_or(ParseError::BadHeader {
                name: "Max-Forwards",
                reason: "must be 0-255",
            })?;
        Ok(Some(n))
    }
    pub fn from(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(
            self.first(HeaderName::From)
                .ok_or(ParseError::MissingHeader("From"))?,
        )
    }
    pub fn to(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(
            self.first(HeaderName::To)
                .ok_or(ParseError::MissingHeader("To"))?,
        )
    }
    /// The From tag (RFC 3261 §19.3), read without parsing the URI
    /// ([`crate::sip::uri::header_tag`]).
    pub fn from_tag(&self) -> Option<&[u8]> {
        self.first(HeaderName::From)
            .and_then(crate::sip::uri::header_tag)
    }
    /// The To tag: present on a request within a dialog (RFC 3261 §12.2).
    pub fn to_tag(&self) -> Option<&[u8]> {
        self.first(HeaderName::To)
            .and_then(crate::sip::uri::header_tag)
    }
    /// Content-Length when present.
    pub fn content_length(&self) -> Option<usize> {
        self.first(HeaderName::ContentLength)
            .and_then(|v| decimal(scan::trim(v)))
            .and_then(|n| usize::try_from(n).ok())
    }
}

/// CSeq header (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: Method,
    pub method_bytes: &'a [u8],
}
