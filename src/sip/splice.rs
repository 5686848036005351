//! Forwarding by splicing bytes (RFC 3261 §16.6): the proxy edits a message
//! by inserting, removing and replacing whole header lines or single values,
//! and copies every other byte of the original unchanged.

use std::ops::Range;

use smallvec::SmallVec;

use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::scan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EditKind {
    Remove,
    Replace,
    RemoveFirst,
    ReplaceFirst,
}

/// A set of edits to apply to one message. Edits refer to header indexes of
/// [`SipMessage::headers`]; each index may be edited at most once (a later
/// edit of the same index replaces the earlier one).
/// [`Splice::write`] emits the original with the edits applied, in one pass.
#[derive(Debug)]
pub struct Splice<'m> {
    msg: &'m SipMessage,
    /// Every inserted byte, referenced by range.
    arena: Vec<u8>,
    request_uri: Option<Range<usize>>,
    prepend: SmallVec<[Range<usize>; 4]>,
    append: SmallVec<[Range<usize>; 2]>,
    edits: SmallVec<[(usize, EditKind, Range<usize>); 4]>,
    body: Option<Range<usize>>,
}

impl<'m> Splice<'m> {
    pub fn new(msg: &'m SipMessage) -> Self {
        Splice {
            msg,
            arena: Vec::new(),
            request_uri: None,
            prepend: SmallVec::new(),
            append: SmallVec::new(),
            edits: SmallVec::new(),
            body: None,
        }
    }

    fn stash(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        start..self.arena.len()
    }

    fn edit(&mut self, index: usize, kind: EditKind, value: &[u8]) -> &mut Self {
        let r = self.stash(value);
        self.edits.retain(|(i, _, _)| *i != index);
        self.edits.push((index, kind, r));
        self
    }

    /// Replaces the Request-URI (request only).
    pub fn set_request_uri(&mut self, uri: &[u8]) -> &mut Self {
        self.request_uri = Some(self.stash(uri));
        self
    }
    /// Inserts a header line (`Name: value`, no CRLF) before the first
    /// header. Several calls keep their call order.
    pub fn prepend_header(&mut self, line: &[u8]) -> &mut Self {
        let r = self.stash(line);
        self.prepend.push(r);
        self
    }
    /// Appends a header line (no CRLF) after the last header.
    pub fn append_header(&mut self, line: &[u8]) -> &mut Self {
        let r = self.stash(line);
        self.append.push(r);
        self
    }
    /// Removes the whole header field at `index`.
    pub fn remove_header(&mut self, index: usize) -> &mut Self {
        self.edit(index, EditKind::Remove, b"")
    }
    /// Replaces the whole value of the header at `index`.
    pub fn replace_value(&mut self, index: usize, value: &[u8]) -> &mut Self {
        self.edit(index, EditKind::Replace, value)
    }
    /// Removes the first comma-separated value of the header at `index`
    /// (e.g. the top Route or Via); removes the whole field if it was the
    /// only value.
    pub fn remove_first_value(&mut self, index: usize) -> &mut Self {
        self.edit(index, EditKind::RemoveFirst, b"")
    }
    /// Replaces only the first comma-separated value of the header at `index`
    /// (e.g. adding `received`/`rport` to the top Via).
    pub fn replace_first_value(&mut self, index: usize, value: &[u8]) -> &mut Self {
        self.edit(index, EditKind::ReplaceFirst, value)
    }
    /// Replaces the body and rewrites (or adds) Content-Length to match.
    pub fn set_body(&mut self, body: &[u8]) -> &mut Self {
        self.body = Some(self.stash(body));
        self
    }

    /// Writes the edited message to `out` (appending). Content-Length is kept
    /// as is unless the body was replaced.
    pub fn write(&self, out: &mut Vec<u8>) {
        let msg = self.msg;
        let src = msg.as_slice();
        let hs = msg.headers_start() as usize;
        out.reserve(src.len() + self.arena.len() + 64);
        match (&self.request_uri, msg.request_uri_range()) {
            (Some(new), Some(old)) => {
                out.extend_from_slice(&src[..old.start as usize]);
                out.extend_from_slice(&self.arena[new.clone()]);
                out.extend_from_slice(&src[old.end as usize..hs]);
            }
            _ => out.extend_from_slice(&src[..hs]),
        }
        for r in &self.prepend {
            out.extend_from_slice(&self.arena[r.clone()]);
            out.extend_from_slice(b"\r\n");
        }
        let mut headers_end = hs;
        for (i, h) in msg.headers().iter().enumerate() {
            headers_end = h.line.end as usize;
            if self.body.is_some() && h.name == HeaderName::ContentLength {
                continue;
            }
            let line = msg.slice(&h.line);
            let (ls, vs, ve) = (
                h.line.start as usize,
                h.value.start as usize,
                h.value.end as usize,
            );
            let Some((_, kind, r)) = self.edits.iter().find(|(idx, _, _)| *idx == i) else {
                out.extend_from_slice(line);
                continue;
            };
            let value = msg.value(h);
            let new = &self.arena[r.clone()];
            // Where the first top-level value ends (at its comma), if there
            // are several.
            let first_comma = scan::split_top(value, b',')
                .filter(|p| p.len() > 1)
                .map(|p| p[0].len());
            match kind {
                EditKind::Remove => {}
                EditKind::Replace => {
                    out.extend_from_slice(&src[ls..vs]);
                    out.extend_from_slice(new);
                    out.extend_from_slice(&src[ve..h.line.end as usize]);
                }
                EditKind::RemoveFirst => {
                    if let Some(c) = first_comma {
                        out.extend_from_slice(&src[ls..vs]);
                        out.extend_from_slice(scan::trim(&value[c + 1..]));
                        out.extend_from_slice(&src[ve..h.line.end as usize]);
                    }
                }
                EditKind::ReplaceFirst => {
                    out.extend_from_slice(&src[ls..vs]);
                    out.extend_from_slice(new);
                    if let Some(c) = first_comma {
                        out.extend_from_slice(&value[c..]);
                    }
                    out.extend_from_slice(&src[ve..h.line.end as usize]);
                }
            }
        }
        for r in &self.append {
            out.extend_from_slice(&self.arena[r.clone()]);
            out.extend_from_slice(b"\r\n");
        }
        match &self.body {
            Some(b) => {
                let body = &self.arena[b.clone()];
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
            }
            None => out.extend_from_slice(&src[headers_end..]),
        }
    }

    /// Convenience: the edited message as new bytes.
    pub fn to_bytes(&self) -> bytes::Bytes {
        let mut out = Vec::with_capacity(self.msg.as_slice().len() + self.arena.len() + 64);
        self.write(&mut out);
        bytes::Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Limits;

    const MSG: &str = "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\nRoute: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nMax-Forwards: 70\r\nX-Odd:   keep  me \r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 4\r\n\r\nbodyTRAILING";

    fn msg() -> SipMessage {
        SipMessage::parse(
            bytes::Bytes::from_static(MSG.as_bytes()),
            &Limits::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn untouched_message_round_trips_byte_exact() {
        let m = msg();
        let out = Splice::new(&m).to_bytes();
        assert_eq!(&out[..], &MSG.as_bytes()[..MSG.len() - "TRAILING".len()]);
    }

    #[test]
    fn proxy_edits() {
        let m = msg();
        let mut sp = Splice::new(&m);
        sp.prepend_header(b"Via: SIP/2.0/UDP proxy;branch=z9hG4bKp")
            .replace_first_value(
                0,
                b"SIP/2.0/UDP a.example.com;branch=z9hG4bK1;received=192.0.2.1",
            )
            .remove_first_value(1)
            .replace_value(2, b"69")
            .append_header(b"X-Added: 1");
        let out = String::from_utf8(sp.to_bytes().to_vec()).unwrap_or_default();
        assert!(out.starts_with("INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP proxy;branch=z9hG4bKp\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1;received=192.0.2.1, SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\nRoute: <sip:p2.example.com;lr>\r\nMax-Forwards: 69\r\nX-Odd:   keep  me \r\n"), "{out}");
        assert!(out.ends_with("X-Added: 1\r\n\r\nbody"), "{out}");
        let re = SipMessage::parse(bytes::Bytes::from(out.into_bytes()), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(re.validate(), Ok(()));
    }

    #[test]
    fn remove_only_value_drops_line_and_set_body_rewrites_length() {
        let m = msg();
        let mut sp = Splice::new(&m);
        sp.remove_first_value(1)
            .remove_first_value(1)
            .set_request_uri(b"sip:review@pbx")
            .set_body(b"v=0\r\n");
        let out = String::from_utf8(sp.to_bytes().to_vec()).unwrap_or_default();
        assert!(out.starts_with("INVITE sip:review@pbx SIP/2.0\r\n"));
        assert!(out.contains("Route: <sip:p2.example.com;lr>"));
        assert!(out.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"), "{out}");
        let mut sp = Splice::new(&m);
        sp.remove_header(1);
        assert!(!String::from_utf8_lossy(&sp.to_bytes()).contains("Route:"));
    }
}
