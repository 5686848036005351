//! Why SIP text could not be parsed or failed validation: one error type
//! for the message, URI and Via parsers (RFC 3261 §7, §25), with the status
//! a server answers it with.

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
