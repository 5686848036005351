//! A small HTTP/1.1 client for callgate's own admin API (`callgate ctl`):
//! one request per connection (`Connection: close`), a bearer token when
//! given, bounded in time and size. Plain HTTP only: the admin API listens
//! on loopback or a management network (docs/operations.md).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long to wait for a connection, and for the answer (a reload reads
/// and compiles files).
const CONNECT: Duration = Duration::from_secs(5);
const ANSWER: Duration = Duration::from_secs(60);
/// Largest answer read (the list of calls of a busy instance fits).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// Why the admin API could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("admin address {0:?}: give host:port or http://host:port")]
    Address(String),
    #[error("cannot reach the admin API at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("admin API at {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("admin API at {addr}: malformed answer ({what})")]
    Malformed { addr: String, what: &'static str },
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Where the admin API is: `host:port` as written (the `Host` header) and
/// the addresses it resolves to.
#[derive(Debug, Clone)]
pub struct AdminApi {
    host: String,
    addrs: Vec<SocketAddr>,
    token: Option<String>,
}

impl AdminApi {
    /// `url`: `host:port` or `http://host:port[/]`.
    pub fn new(url: &str, token: Option<String>) -> Result<AdminApi, ClientError> {
        let host = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        if host.is_empty() || host.contains('/') || url.starts_with("https://") {
            return Err(ClientError::Address(url.to_owned()));
        }
        let addrs: Vec<SocketAddr> = host
            .to_socket_addrs()
            .map_err(|_| ClientError::Address(url.to_owned()))?
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::Address(url.to_owned()));
        }
        Ok(AdminApi {
            host: host.to_owned(),
            addrs,
            token,
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.request("GET", path)
    }

    /// `POST path` with no body.
    pub fn post(&self, path: &str) -> Result<Answer, ClientError> {
        self.request("POST", path)
    }

    fn request(&self, method: &str, path: &str) -> Result<Answer, ClientError> {
        let io = |source| ClientError::Io {
            addr: self.host.clone(),
            source,
        };
        let mut stream = self.connect()?;
        stream.set_read_timeout(Some(ANSWER)).map_err(io)?;
        stream.set_write_timeout(Some(ANSWER)).map_err(io)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: 0\r\n",
            self.host
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        stream.take(MAX_ANSWER).read_to_end(&mut raw).map_err(io)?;
        parse_answer(&raw).map_err(|what| ClientError::Malformed {
            addr: self.host.clone(),
            what,
        })
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let mut last = None;
        for a in &self.addrs {
            match TcpStream::connect_timeout(a, CONNECT) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::Connect {
            addr: self.host.clone(),
            source: last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()),
        })
    }
}

/// Status and body of an HTTP/1.1 answer read to the connection's end
/// (RFC 9112: `Content-Length` or chunked framing, else to the end).
fn parse_answer(raw: &[u8]) -> Result<Answer, &'static str> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of header")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "header not UTF-8")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|l| l.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("status line")?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or("body shorter than Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

/// A chunked body's data (RFC 9112 §7.1); trailers are ignored.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| "chunk size")?;
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| "chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or("chunk shorter than its size")?);
        rest = rest.get(size + 2..).ok_or("chunk end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_length_chunked_and_to_the_end() {
        let a = parse_answer(b"HTTP/1.1 422 Unprocessable\r\ncontent-length: 3\r\n\r\nbadX")
            .expect("length");
        assert_eq!((a.status, a.body.as_slice()), (422, &b"bad"[..]));
        let c = parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n")
            .expect("chunked");
        assert_eq!(c.body, b"abcde");
        let e = parse_answer(b"HTTP/1.1 200 OK\r\n\r\nall of it").expect("to the end");
        assert_eq!(e.body, b"all of it");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
        assert!(parse_answer(b"garbage").is_err());
    }
}
