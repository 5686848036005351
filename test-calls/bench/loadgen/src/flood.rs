//! Flood mode: blasts one kind of unwanted SIP traffic at a target, at a
//! given rate or as fast as the socket takes it, for a given time, from a
//! given source address (so that limits acting per source are exercised as
//! in the field). Every message is fresh: its own Call-ID, From number, tag
//! and Via branch, so nothing on the receiver can match it to an earlier
//! one. It never reads answers (a flooder does not care); the receive
//! buffer is kept small so that answers cost the generator nothing.
//!
//! Kinds (test-calls/bench/flood.sh runs each one on its own):
//! - `invite`: initial INVITEs with an SDP offer (ACL, rate limit and
//!   velocity state, depending on the source address and the config);
//! - `identity`: the same with a SHAKEN Identity header whose x5u names one
//!   of `--x5u-count` different URLs under `--x5u-base` (fetch and cache
//!   pressure); the signature is random, so nothing verifies;
//! - `options`, `register`: out-of-dialog requests callgate screens;
//! - `response`: stray 200 OK responses whose top Via names the target;
//! - `oversized`: INVITEs padded to a 60 KB body;
//! - `headers`: INVITEs with 4,000 extension headers (a header bomb);
//! - `vias`: INVITEs with an 800-deep Via stack;
//! - `halfopen`: `--conns` TCP connections to the target, each sending half
//!   a request head and then nothing, held for the duration (from the
//!   source address the route picks).

use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Invite,
    Identity,
    Options,
    Register,
    Response,
    Oversized,
    Headers,
    Vias,
    HalfOpen,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "invite" => Kind::Invite,
            "identity" => Kind::Identity,
            "options" => Kind::Options,
            "register" => Kind::Register,
            "response" => Kind::Response,
            "oversized" => Kind::Oversized,
            "headers" => Kind::Headers,
            "vias" => Kind::Vias,
            "halfopen" => Kind::HalfOpen,
            _ => return None,
        })
    }
}

pub struct Config {
    pub target: SocketAddr,
    pub bind: SocketAddr,
    pub kind: Kind,
    /// Messages a second; 0: as fast as the socket takes them.
    pub rate: f64,
    pub duration: Duration,
    /// `identity`: x5u URLs are `{x5u_base}/{n}.pem`, n < x5u_count.
    pub x5u_base: String,
    pub x5u_count: u32,
    /// `halfopen`: connections to hold.
    pub conns: u32,
}

#[derive(Default)]
pub struct Report {
    pub sent: u64,
    pub send_errors: u64,
    /// `halfopen`: connections established (and held).
    pub connected: u64,
    pub elapsed: Duration,
}

impl Report {
    pub fn json(&self, cfg: &Config) -> String {
        format!(
            "{{\"kind\":\"{:?}\",\"sent\":{},\"send_errors\":{},\"connected\":{},\"elapsed_s\":{:.3},\"rate\":{:.0}}}",
            cfg.kind,
            self.sent,
            self.send_errors,
            self.connected,
            self.elapsed.as_secs_f64(),
            self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
        )
    }
}

/// xorshift64*: fresh numbers and identifiers, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 4648 §5), as PASSporTs use.
fn b64url(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 4 / 3 + 3);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            s.push(char::from(B64URL[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    s
}

/// Builds the n-th message of the flood.
struct Builder<'c> {
    cfg: &'c Config,
    local: SocketAddr,
    rng: Rng,
    run: String,
}

impl Builder<'_> {
    fn message(&mut self, n: u64, out: &mut Vec<u8>) {
        out.clear();
        let r = self.rng.next();
        let from_num = 15_550_000_000 + r % 10_000_000;
        let call_id = format!("fl{}-{n}-{:x}@flood", self.run, r);
        let branch = format!("z9hG4bKfl{}{n}x{:x}", self.run, r >> 7);
        let target = self.cfg.target;
        let local = self.local;
        let mut s = String::with_capacity(1024);
        let method = match self.cfg.kind {
            Kind::Options => "OPTIONS",
            Kind::Register => "REGISTER",
            _ => "INVITE",
        };
        if self.cfg.kind == Kind::Response {
            // A 200 to an INVITE callgate never sent: its Via names callgate.
            let _ = write!(
                s,
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {target};branch={branch}\r\n\
                 From: <sip:+{from_num}@{target}>;tag=f{r:x}\r\nTo: <sip:service@{target}>;tag=t{n}\r\n\
                 Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{local}>\r\nContent-Length: 0\r\n\r\n"
            );
            out.extend_from_slice(s.as_bytes());
            return;
        }
        let ruri = if method == "REGISTER" {
            format!("sip:{target}")
        } else {
            format!("sip:service@{target}")
        };
        let _ = write!(s, "{method} {ruri} SIP/2.0\r\n");
        if self.cfg.kind == Kind::Vias {
            // The deep stack: our own Via on top, 800 forged hops under it.
            let _ = write!(s, "Via: SIP/2.0/UDP {local};branch={branch}\r\n");
            for i in 0..800 {
                let _ = write!(
                    s,
                    "Via: SIP/2.0/UDP 192.0.2.{}:5060;branch=z9hG4bKv{i}\r\n",
                    i % 250 + 1
                );
            }
        } else {
            let _ = write!(s, "Via: SIP/2.0/UDP {local};branch={branch};rport\r\n");
        }
        let _ = write!(
            s,
            "Max-Forwards: 70\r\nFrom: <sip:+{from_num}@{local}>;tag=f{r:x}\r\n\
             To: <sip:service@{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n\
             Contact: <sip:+{from_num}@{local}>\r\n"
        );
        if self.cfg.kind == Kind::Identity {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let which = (r >> 11) % u64::from(self.cfg.x5u_count.max(1));
            let x5u = format!("{}/{which}.pem", self.cfg.x5u_base);
            let header = format!(
                "{{\"alg\":\"ES256\",\"ppt\":\"shaken\",\"typ\":\"passport\",\"x5u\":\"{x5u}\"}}"
            );
            let claims = format!(
                "{{\"attest\":\"A\",\"dest\":{{\"tn\":[\"15550100\"]}},\"iat\":{now},\"orig\":{{\"tn\":\"{from_num}\"}},\"origid\":\"{:08x}-0000-4000-8000-{:012x}\"}}",
                r as u32,
                n
            );
            let sig: Vec<u8> = (0..8).flat_map(|_| self.rng.next().to_le_bytes()).collect();
            let _ = write!(
                s,
                "Identity: {}.{}.{};info=<{x5u}>;alg=ES256;ppt=shaken\r\n",
                b64url(header.as_bytes()),
                b64url(claims.as_bytes()),
                b64url(&sig)
            );
        }
        if self.cfg.kind == Kind::Headers {
            for i in 0..4000 {
                let _ = write!(s, "X-B{i}: {i}\r\n");
            }
        }
        let body = if method == "INVITE" {
            let mut b = format!(
                "v=0\r\no=- {n} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
                ip = local.ip(),
                port = 20_000 + (n % 20_000) * 2
            );
            if self.cfg.kind == Kind::Oversized {
                while b.len() < 60_000 {
                    b.push_str(
                        "a=x-pad:0123456789012345678901234567890123456789012345678901234567\r\n",
                    );
                }
            }
            b
        } else {
            String::new()
        };
        if !body.is_empty() {
            s.push_str("Content-Type: application/sdp\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n{body}", body.len());
        out.extend_from_slice(s.as_bytes());
    }
}

/// Runs the flood to its end.
pub fn run(cfg: &Config) -> std::io::Result<Report> {
    if cfg.kind == Kind::HalfOpen {
        return half_open(cfg);
    }
    let sock = UdpSocket::bind(cfg.bind)?;
    sock.set_nonblocking(true)?;
    crate::sys::set_buffers(&sock, 4 << 20);
    let local = sock.local_addr()?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut b = Builder {
        cfg,
        local,
        rng: Rng(seed ^ u64::from(std::process::id())),
        run: format!("{:x}", seed & 0xffff_ffff),
    };
    let mut report = Report::default();
    let mut out = Vec::with_capacity(65_536);
    let mut sink = vec![0u8; 65_536];
    let start = Instant::now();
    let end = start + cfg.duration;
    let mut n: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Answers are read and thrown away so they never back up.
        while sock.recv_from(&mut sink).is_ok() {}
        let due = if cfg.rate > 0.0 {
            (now.duration_since(start).as_secs_f64() * cfg.rate) as u64
        } else {
            n + 64
        };
        if n >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        // At most 256 at a time so the clock is checked often.
        while n < due.min(n + 256) {
            b.message(n, &mut out);
            match sock.send_to(&out, cfg.target) {
                Ok(_) => report.sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    crate::sys::wait_writable(&sock, Duration::from_millis(1));
                    continue;
                }
                Err(_) => report.send_errors += 1,
            }
            n += 1;
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Opens `conns` TCP connections at `rate` a second (0: at once), each
/// sending half a request head, holds them until the end. They come from
/// the address the route picks (`--bind` is not used: on loopback that is
/// 127.0.0.1, the admitted carrier's address, the case the per-source
/// connection cap is for).
fn half_open(cfg: &Config) -> std::io::Result<Report> {
    let mut report = Report::default();
    let start = Instant::now();
    let end = start + cfg.duration;
    let mut held = Vec::with_capacity(cfg.conns as usize);
    let part = format!(
        "INVITE sip:service@{} SIP/2.0\r\nVia: SIP/2.0/TCP {};branch=z9hG4bKhalf\r\n",
        cfg.target,
        cfg.bind.ip()
    );
    for i in 0..cfg.conns {
        if Instant::now() >= end {
            break;
        }
        if cfg.rate > 0.0 {
            let due = start + Duration::from_secs_f64(f64::from(i) / cfg.rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        match TcpStream::connect_timeout(&cfg.target, Duration::from_secs(2)) {
            Ok(mut s) => {
                report.connected += 1;
                if s.write_all(part.as_bytes()).is_ok() {
                    report.sent += 1;
                }
                held.push(s);
            }
            Err(_) => report.send_errors += 1,
        }
    }
    if let Some(wait) = end.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
