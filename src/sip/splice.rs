//! Forwarding by splicing bytes (RFC 3261 §16.6): the proxy edits a message
//! by inserting, removing and replacing whole header lines or single values,
//! and copies every other byte of the original unchanged.

use crate::sip::message::SipMessage;

/// A set of edits to apply to one message. Edits refer to header indexes of
/// [`SipMessage::headers`]; each index may be edited at most once.
/// [`Splice::write`] emits the original with the edits applied, in one pass.
#[derive(Debug)]
pub struct Splice<'m> {
    msg: &'m SipMessage,
}

impl<'m> Splice<'m> {
    pub fn new(msg: &'m SipMessage) -> Self {
        Splice { msg }
    }
    /// Replaces the Request-URI (request only).
    pub fn set_request_uri(&mut self, uri: &[u8]) -> &mut Self {
        let _ = uri;
        todo!()
    }
    /// Inserts a header line (`Name: value`, no CRLF) before the first
    /// header. Several calls keep their call order.
    pub fn prepend_header(&mut self, line: &[u8]) -> &mut Self {
        let _ = line;
        todo!()
    }
    /// Appends a header line (no CRLF) after the last header.
    pub fn append_header(&mut self, line: &[u8]) -> &mut Self {
        let _ = line;
        todo!()
    }
    /// Removes the whole header field at `index`.
    pub fn remove_header(&mut self, index: usize) -> &mut Self {
        let _ = index;
        todo!()
    }
    /// Replaces the whole value of the header at `index`.
    pub fn replace_value(&mut self, index: usize, value: &[u8]) -> &mut Self {
        let _ = (index, value);
        todo!()
    }
    /// Removes the first comma-separated value of the header at `index`
    /// (e.g. the top Route or Via); removes the whole field if it was the
    /// only value.
    pub fn remove_first_value(&mut self, index: usize) -> &mut Self {
        let _ = index;
        todo!()
    }
    /// Replaces only the first comma-separated value of the header at `index`
    /// (e.g. adding `received`/`rport` to the top Via).
    pub fn replace_first_value(&mut self, index: usize, value: &[u8]) -> &mut Self {
        let _ = (index, value);
        todo!()
    }
    /// Replaces the body and rewrites (or adds) Content-Length to match.
    pub fn set_body(&mut self, body: &[u8]) -> &mut Self {
        let _ = body;
        todo!()
    }
    /// Writes the edited message to `out` (appending). Content-Length is kept
    /// as is unless the body was replaced.
    pub fn write(&self, out: &mut Vec<u8>) {
        let _ = (out, self.msg);
        todo!()
    }
    /// Convenience: the edited message as new bytes.
    pub fn to_bytes(&self) -> bytes::Bytes {
        let mut out = Vec::with_capacity(self.msg.as_slice().len() + 256);
        self.write(&mut out);
        bytes::Bytes::from(out)
    }
}
