//! The PBX side: answers every INVITE with 180 and 200 OK (SDP), absorbs the
//! ACK, answers BYE with 200. Single thread, one UDP socket.
//!
//! - Responses go where RFC 3261 §18.2.2 says (top Via sent-by, with the
//!   server's `received` and RFC 3581 `rport`); for a proxy relaying from its
//!   listening socket that is the request's source.
//! - 180 and 200 carry a To tag, a Contact, and the request's Record-Route
//!   headers (§12.1.1).
//! - A retransmitted INVITE gets the 200 again (until it is ACKed); a
//!   retransmitted BYE gets its 200 again (built the same way, statelessly).
//! - The 200 is retransmitted on Timer G (T1 doubling, capped at T2) until
//!   the ACK comes, at most 7 times and for at most 64*T1 (§13.3.1.4).

use crate::sip::{self, Start};
use crate::{sys, FnvMap, T1, T2};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub struct Config {
    pub listen: SocketAddr,
    /// Print counters to stderr this often when they changed (0: never).
    pub stats_every: Duration,
    /// Exit after this long without any datagram (0: never).
    pub idle_exit: Duration,
    /// Wake every `tick` (sleeping on a timer) and answer whatever arrived;
    /// zero: wake on every datagram (ppoll). See uac.rs.
    pub tick: Duration,
}

const G_MAX_TRIES: u32 = 7;
/// How long a dialog's INVITE state is kept (to recognise retransmissions).
const KEEP: Duration = Duration::from_secs(40);

struct Dialog {
    /// The 200 to retransmit; emptied once ACKed or given up.
    ok: Vec<u8>,
    dest: SocketAddr,
    acked: bool,
    g_interval: Duration,
    g_tries: u32,
    answered: Instant,
}

#[derive(Default, Clone, PartialEq, Eq)]
struct Stats {
    invites: u64,
    invite_retrans: u64,
    acks: u64,
    acks_unmatched: u64,
    byes: u64,
    other_requests: u64,
    responses_ignored: u64,
    bad: u64,
    g_retrans: u64,
    g_given_up: u64,
    dest_not_source: u64,
    send_errors: u64,
}

impl Stats {
    fn line(&self) -> String {
        format!(
            "invites={} invite_retrans={} acks={} acks_unmatched={} byes={} other_requests={} \
             responses_ignored={} unparsable={} ok_retrans_timer_g={} ok_never_acked={} \
             dest_not_source={} send_errors={}",
            self.invites,
            self.invite_retrans,
            self.acks,
            self.acks_unmatched,
            self.byes,
            self.other_requests,
            self.responses_ignored,
            self.bad,
            self.g_retrans,
            self.g_given_up,
            self.dest_not_source,
            self.send_errors
        )
    }
}

const SDP: &[u8] = b"v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n";

pub struct Uas {
    sock: UdpSocket,
    local: SocketAddr,
    dialogs: FnvMap<Vec<u8>, Dialog>,
    /// (answered, Call-ID) in answer order: dialogs are forgotten after KEEP.
    expiry: VecDeque<(Instant, Vec<u8>)>,
    /// Timer G: (when, Call-ID).
    timers: BinaryHeap<Reverse<(Instant, Vec<u8>)>>,
    tag_seq: u64,
    tag_base: u64,
    stats: Stats,
    out: Vec<u8>,
}

/// Builds a response to `req` into `out`.
#[allow(clippy::too_many_arguments)]
pub fn build_response(
    out: &mut Vec<u8>,
    req: &sip::Msg<'_>,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    dest: (Option<std::net::IpAddr>, Option<u16>),
    record_route: bool,
    contact: Option<SocketAddr>,
    body: &[u8],
) {
    out.clear();
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    for (i, v) in req.vias.as_slice().iter().enumerate() {
        out.extend_from_slice(b"Via: ");
        if i == 0 {
            sip::write_top_via(out, v, dest.0, dest.1);
        } else {
            out.extend_from_slice(v);
        }
        out.extend_from_slice(b"\r\n");
    }
    if record_route {
        for rr in req.record_routes.as_slice() {
            out.extend_from_slice(b"Record-Route: ");
            out.extend_from_slice(rr);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"From: ");
    out.extend_from_slice(req.from);
    out.extend_from_slice(b"\r\nTo: ");
    out.extend_from_slice(req.to);
    if let (Some(t), None) = (to_tag, sip::tag(req.to)) {
        out.extend_from_slice(b";tag=");
        out.extend_from_slice(t.as_bytes());
    }
    out.extend_from_slice(b"\r\nCall-ID: ");
    out.extend_from_slice(req.call_id);
    let _ = write!(out, "\r\nCSeq: {} ", req.cseq_num);
    out.extend_from_slice(req.cseq_method);
    out.extend_from_slice(b"\r\n");
    if let Some(c) = contact {
        let _ = write!(out, "Contact: <sip:pbx@{c};transport=udp>\r\n");
    }
    if !body.is_empty() {
        out.extend_from_slice(b"Content-Type: application/sdp\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
}

impl Uas {
    pub fn bind(listen: SocketAddr) -> std::io::Result<Uas> {
        let sock = UdpSocket::bind(listen)?;
        sock.set_nonblocking(true)?;
        sys::set_buffers(&sock, 4 << 20);
        let local = sock.local_addr()?;
        let tag_base = std::process::id() as u64 * 1_000_003
            + std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos() as u64;
        Ok(Uas {
            sock,
            local,
            dialogs: FnvMap::default(),
            expiry: VecDeque::new(),
            timers: BinaryHeap::new(),
            tag_seq: 0,
            tag_base,
            stats: Stats::default(),
            out: Vec::with_capacity(2048),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn run(mut self, cfg: &Config) -> std::io::Result<()> {
        let mut buf = vec![0u8; 65536];
        let mut last_print = Instant::now();
        let mut printed = Stats::default();
        let mut last_rx = Instant::now();
        let cpu0 = sys::cpu_time();
        loop {
            // Drain the socket.
            loop {
                match self.sock.recv_from(&mut buf) {
                    Ok((n, src)) => {
                        last_rx = Instant::now();
                        self.handle(&buf[..n], src);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    // ICMP errors surface as ConnectionRefused on the next call.
                    Err(_) => continue,
                }
            }
            let now = Instant::now();
            self.fire_timers(now);
            self.expire(now);
            if !cfg.stats_every.is_zero() && now - last_print >= cfg.stats_every {
                last_print = now;
                if self.stats != printed {
                    printed = self.stats.clone();
                    let cpu = sys::cpu_time() - cpu0;
                    eprintln!(
                        "sip-loadgen uas {}: {} cpu_s={:.2}",
                        self.local,
                        self.stats.line(),
                        cpu.as_secs_f64()
                    );
                }
            }
            if !cfg.idle_exit.is_zero() && now - last_rx >= cfg.idle_exit && self.timers.is_empty()
            {
                let cpu = sys::cpu_time() - cpu0;
                eprintln!(
                    "sip-loadgen uas {}: idle, exiting: {} cpu_s={:.2}",
                    self.local,
                    self.stats.line(),
                    cpu.as_secs_f64()
                );
                return Ok(());
            }
            if !cfg.tick.is_zero() {
                std::thread::sleep(cfg.tick);
                continue;
            }
            let mut wait = Duration::from_millis(100);
            if let Some(Reverse((at, _))) = self.timers.peek() {
                wait = wait.min(at.saturating_duration_since(now));
            }
            if !wait.is_zero() {
                sys::wait_readable(&self.sock, wait);
            }
        }
    }

    fn send(&mut self, dest: SocketAddr) {
        if self.sock.send_to(&self.out, dest).is_err() {
            self.stats.send_errors += 1;
        }
    }

    fn handle(&mut self, datagram: &[u8], src: SocketAddr) {
        if sip::trim(datagram).is_empty() {
            return; // keep-alive
        }
        let msg = match sip::parse(datagram) {
            Ok(m) => m,
            Err(_) => {
                self.stats.bad += 1;
                return;
            }
        };
        let method = match msg.start {
            Start::Response { .. } => {
                self.stats.responses_ignored += 1;
                return;
            }
            Start::Request { method, .. } => method,
        };
        let Some(top) = sip::parse_via(sip::first_element(msg.vias.as_slice()[0])) else {
            self.stats.bad += 1;
            return;
        };
        let (dest, received, rport) = sip::response_dest(&top, src);
        if dest != src {
            self.stats.dest_not_source += 1;
        }
        match method {
            b"INVITE" => {
                if let Some(d) = self.dialogs.get(msg.call_id) {
                    // A retransmission: the 200 again, unless already ACKed.
                    self.stats.invite_retrans += 1;
                    if !d.acked && !d.ok.is_empty() {
                        let (ok, dest) = (d.ok.clone(), d.dest);
                        self.out = ok;
                        self.send(dest);
                    }
                    return;
                }
                self.stats.invites += 1;
                self.tag_seq += 1;
                let to_tag = format!("u{:x}.{:x}", self.tag_base, self.tag_seq);
                let contact = Some(self.local);
                let mut out = std::mem::take(&mut self.out);
                build_response(
                    &mut out,
                    &msg,
                    180,
                    "Ringing",
                    Some(&to_tag),
                    (received, rport),
                    true,
                    contact,
                    b"",
                );
                self.out = out;
                self.send(dest);
                let mut out = std::mem::take(&mut self.out);
                build_response(
                    &mut out,
                    &msg,
                    200,
                    "OK",
                    Some(&to_tag),
                    (received, rport),
                    true,
                    contact,
                    SDP,
                );
                self.out = out;
                self.send(dest);
                let now = Instant::now();
                let key = msg.call_id.to_vec();
                self.dialogs.insert(
                    key.clone(),
                    Dialog {
                        ok: self.out.clone(),
                        dest,
                        acked: false,
                        g_interval: T1,
                        g_tries: 0,
                        answered: now,
                    },
                );
                self.expiry.push_back((now, key.clone()));
                self.timers.push(Reverse((now + T1, key)));
            }
            b"ACK" => match self.dialogs.get_mut(msg.call_id) {
                Some(d) => {
                    self.stats.acks += 1;
                    d.acked = true;
                    d.ok = Vec::new();
                }
                None => self.stats.acks_unmatched += 1,
            },
            b"BYE" => {
                self.stats.byes += 1;
                let mut out = std::mem::take(&mut self.out);
                build_response(
                    &mut out,
                    &msg,
                    200,
                    "OK",
                    None,
                    (received, rport),
                    false,
                    None,
                    b"",
                );
                self.out = out;
                self.send(dest);
            }
            _ => {
                self.stats.other_requests += 1;
                let (code, reason) = match method {
                    b"OPTIONS" => (200, "OK"),
                    b"CANCEL" => (481, "Call/Transaction Does Not Exist"),
                    _ => (405, "Method Not Allowed"),
                };
                let mut out = std::mem::take(&mut self.out);
                build_response(
                    &mut out,
                    &msg,
                    code,
                    reason,
                    Some("x"),
                    (received, rport),
                    false,
                    None,
                    b"",
                );
                self.out = out;
                self.send(dest);
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.timers.pop() else {
                break;
            };
            let Some(d) = self.dialogs.get_mut(&key) else {
                continue;
            };
            if d.acked || d.ok.is_empty() {
                continue;
            }
            if d.g_tries >= G_MAX_TRIES || now - d.answered >= 64 * T1 {
                self.stats.g_given_up += 1;
                d.ok = Vec::new();
                continue;
            }
            d.g_tries += 1;
            d.g_interval = (d.g_interval * 2).min(T2);
            let next = at + d.g_interval;
            let (ok, dest) = (d.ok.clone(), d.dest);
            self.stats.g_retrans += 1;
            self.out = ok;
            self.send(dest);
            self.timers.push(Reverse((next, key)));
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.expiry.front() {
            if now - *t < KEEP {
                break;
            }
            let Some((_, key)) = self.expiry.pop_front() else {
                break;
            };
            if let Some(d) = self.dialogs.get_mut(&key) {
                if !d.acked && !d.ok.is_empty() {
                    self.stats.g_given_up += 1;
                }
            }
            self.dialogs.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_copies_vias_record_routes_and_adds_a_to_tag() {
        let req = b"INVITE sip:x@127.0.0.1:61080 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:61062;branch=z9hG4bKp;rport\r\n\
Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKu\r\n\
Record-Route: <sip:127.0.0.1:61062;lr>\r\nRecord-Route: <sip:127.0.0.1:61060;lr>\r\n\
From: <sip:a@h>;tag=f\r\nTo: <sip:x@h>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = sip::parse(req).unwrap();
        let src: SocketAddr = "127.0.0.1:61062".parse().unwrap();
        let top = sip::parse_via(m.vias.as_slice()[0]).unwrap();
        let (dest, received, rport) = sip::response_dest(&top, src);
        assert_eq!(dest, src);
        let mut out = Vec::new();
        let contact: SocketAddr = "127.0.0.1:61080".parse().unwrap();
        build_response(
            &mut out,
            &m,
            200,
            "OK",
            Some("t1"),
            (received, rport),
            true,
            Some(contact),
            SDP,
        );
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:61062;branch=z9hG4bKp;received=127.0.0.1;rport=61062\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKu\r\n"), "{text}");
        assert!(text.contains(
            "Record-Route: <sip:127.0.0.1:61062;lr>\r\nRecord-Route: <sip:127.0.0.1:61060;lr>\r\n"
        ));
        assert!(text.contains("To: <sip:x@h>;tag=t1\r\n"));
        assert!(text.contains("Contact: <sip:pbx@127.0.0.1:61080;transport=udp>\r\n"));
        assert!(text.contains("CSeq: 1 INVITE\r\n"));
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        // It parses back, with the tag.
        let r = sip::parse(&out).unwrap();
        assert_eq!(sip::tag(r.to), Some(&b"t1"[..]));
        // A BYE response keeps the existing To tag and has no Record-Route.
        build_response(
            &mut out,
            &m,
            200,
            "OK",
            None,
            (None, None),
            false,
            None,
            b"",
        );
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Record-Route") && text.ends_with("Content-Length: 0\r\n\r\n"));
    }
}
