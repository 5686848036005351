//! A minimal client of rtpengine's ng control protocol: bencoded
//! dictionaries over UDP, each request prefixed by a cookie the reply
//! repeats.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// A bencode value (what ng replies hold).
#[derive(Debug)]
#[allow(dead_code)] // ints and lists are decoded, not read
pub enum Value {
    Bytes(Vec<u8>),
    Int(i64),
    List(Vec<Value>),
    Dict(Vec<(Vec<u8>, Value)>),
}

impl Value {
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// Decodes one value at the start of `s`; returns it and the rest.
pub fn decode(s: &[u8]) -> Option<(Value, &[u8])> {
    match *s.first()? {
        b'i' => {
            let end = s.iter().position(|&c| c == b'e')?;
            let n = std::str::from_utf8(&s[1..end]).ok()?.parse().ok()?;
            Some((Value::Int(n), &s[end + 1..]))
        }
        b'l' => {
            let mut rest = &s[1..];
            let mut items = Vec::new();
            while *rest.first()? != b'e' {
                let (v, r) = decode(rest)?;
                items.push(v);
                rest = r;
            }
            Some((Value::List(items), &rest[1..]))
        }
        b'd' => {
            let mut rest = &s[1..];
            let mut items = Vec::new();
            while *rest.first()? != b'e' {
                let (Value::Bytes(k), r) = decode(rest)? else {
                    return None;
                };
                let (v, r) = decode(r)?;
                items.push((k, v));
                rest = r;
            }
            Some((Value::Dict(items), &rest[1..]))
        }
        b'0'..=b'9' => {
            let colon = s.iter().position(|&c| c == b':')?;
            let len: usize = std::str::from_utf8(&s[..colon]).ok()?.parse().ok()?;
            let body = s.get(colon + 1..colon + 1 + len)?;
            Some((Value::Bytes(body.to_vec()), &s[colon + 1 + len..]))
        }
        _ => None,
    }
}

/// What a request dictionary holds: strings and lists of strings.
pub enum Arg<'a> {
    S(&'a str),
    L(&'a [&'a str]),
}

fn encode(pairs: &[(&str, Arg)]) -> Vec<u8> {
    let mut out = b"d".to_vec();
    let s = |x: &str, out: &mut Vec<u8>| {
        out.extend_from_slice(format!("{}:", x.len()).as_bytes());
        out.extend_from_slice(x.as_bytes());
    };
    for (k, v) in pairs {
        s(k, &mut out);
        match v {
            Arg::S(x) => s(x, &mut out),
            Arg::L(xs) => {
                out.push(b'l');
                for x in *xs {
                    s(x, &mut out);
                }
                out.push(b'e');
            }
        }
    }
    out.push(b'e');
    out
}

pub struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    next: u64,
}

impl Client {
    pub fn new(server: SocketAddr) -> io::Result<Client> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(1000)))?;
        Ok(Client {
            sock,
            server,
            next: 1,
        })
    }

    /// Sends one request (retransmitted with the same cookie on timeout)
    /// and returns the reply dictionary; an ng error reply is an error.
    pub fn request(&mut self, pairs: &[(&str, Arg)]) -> io::Result<Value> {
        let cookie = format!("{}_{}", std::process::id(), self.next);
        self.next += 1;
        let mut msg = format!("{cookie} ").into_bytes();
        msg.extend_from_slice(&encode(pairs));
        let mut buf = vec![0u8; 65_536];
        for _ in 0..5 {
            self.sock.send_to(&msg, self.server)?;
            loop {
                match self.sock.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        let got = &buf[..n];
                        let Some(body) = got.strip_prefix(format!("{cookie} ").as_bytes()) else {
                            continue; // a late reply to an earlier request
                        };
                        let (v, _) = decode(body).ok_or_else(|| {
                            io::Error::new(io::ErrorKind::InvalidData, "undecodable ng reply")
                        })?;
                        match v.get("result").and_then(Value::str) {
                            Some("ok") | Some("pong") => return Ok(v),
                            r => {
                                let why = v.get("error-reason").and_then(Value::str).unwrap_or("");
                                return Err(io::Error::other(format!(
                                    "ng reply {:?}: {why}",
                                    r.unwrap_or("?")
                                )));
                            }
                        }
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::TimedOut =>
                    {
                        break
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "no ng reply"))
    }
}

/// An SDP offer/answer body naming one PCMU stream at 127.0.0.1:`port`.
pub fn sdp(port: u16, version: u32) -> String {
    format!(
        "v=0\r\no=- {version} {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The address an SDP body says to send RTP to (its c= and m=audio port).
pub fn sdp_target(sdp: &str) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for l in sdp.lines() {
        if let Some(a) = l.strip_prefix("c=IN IP4 ") {
            ip.get_or_insert(a.trim().to_owned());
        } else if let Some(m) = l.strip_prefix("m=audio ") {
            port = m.split(' ').next().and_then(|p| p.parse::<u16>().ok());
        }
    }
    format!("{}:{}", ip?, port?).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = encode(&[("command", Arg::S("ping")), ("flags", Arg::L(&["a", "bc"]))]);
        assert_eq!(e, b"d7:command4:ping5:flagsl1:a2:bcee");
        let (v, rest) = decode(b"d6:result2:ok3:sdp3:x=y4:numsli1ei-2eee").unwrap();
        assert!(rest.is_empty());
        assert_eq!(v.get("result").and_then(Value::str), Some("ok"));
        assert_eq!(v.get("sdp").and_then(Value::str), Some("x=y"));
    }

    #[test]
    fn target() {
        let s = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 40002 RTP/AVP 0\r\n";
        assert_eq!(sdp_target(s), "127.0.0.1:40002".parse().ok());
    }
}
