//! The carrier side: places N calls at R calls/s, each
//! INVITE / 1xx / 200 / ACK, hold, BYE / 200, as a UA does:
//!
//! - INVITE retransmitted on Timer A (T1 doubling) until a response; the
//!   INVITE transaction fails after 64*T1 without a final response;
//! - ACK and BYE go through the route set from the 200's Record-Route
//!   (reversed; loose routing: Route headers, Request-URI = the 200's
//!   Contact; strict routing handled too) with the 200's To tag;
//! - a retransmitted 200 is ACKed again, a late provisional ignored, a final
//!   non-2xx ACKed (same branch) and the call failed;
//! - BYE retransmitted on Timer E (T1 doubling, capped at T2) until a final
//!   response; it fails after 64*T1.
//!
//! One UDP socket, one thread; calls are started on a clock (the i-th at
//! i/R s). By default the loop wakes on a fixed tick (1 ms, sleeping on a
//! timer), drains the socket, fires due timers and starts the calls due by
//! then: one wake-up per tick instead of one per datagram, which is most of
//! the cost of a UDP endpoint on a VM (the pacing granularity is the tick,
//! as sipp's is 1 ms). With --tick-us 0 it waits on the socket with ppoll
//! until the next start or timer instead.
//! Calls are found by the index in their Call-ID (`<index>-<run>@loadgen`).

use crate::sip::{self, Start};
use crate::{sys, T1, T2};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub struct Config {
    pub target: SocketAddr,
    pub bind: SocketAddr,
    pub rate: f64,
    pub calls: u32,
    pub hold: Duration,
    pub timeout: Duration,
    /// Wake every `tick` (sleeping on a timer, not on the socket) and handle
    /// whatever is due; zero: wake on every datagram and every deadline.
    pub tick: Duration,
    pub to_user: String,
    /// Per-call fields from a sipp-style CSV: calling number, called number,
    /// "Identity: token", x5u (as for scenarios/uac-csv.xml).
    pub inf: Option<Vec<Vec<String>>>,
}

/// Parses a sipp `-inf` CSV: an optional first line SEQUENTIAL/RANDOM/USER,
/// then one line per call, fields separated by ';'.
pub fn parse_inf(text: &str) -> Vec<Vec<String>> {
    let mut lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .peekable();
    if let Some(first) = lines.peek() {
        if matches!(first.trim(), "SEQUENTIAL" | "RANDOM" | "USER" | "PRINTF")
            || first.trim().starts_with("PRINTF")
        {
            lines.next();
        }
    }
    lines
        .map(|l| l.split(';').map(str::to_string).collect())
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    NotStarted,
    /// INVITE sent, no response yet (Timer A running).
    Calling,
    /// A provisional arrived.
    Proceeding,
    /// 200 ACKed, holding.
    Confirmed,
    ByeSent,
    Done,
    Failed,
}

struct Call {
    state: State,
    invite: Vec<u8>,
    /// The ACK for the final response to INVITE (resent on its retransmission).
    ack: Vec<u8>,
    ack_dest: SocketAddr,
    bye: Vec<u8>,
    a_interval: Duration,
    e_interval: Duration,
    invite_at: Instant,
    bye_at: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Timer {
    /// INVITE retransmission.
    A,
    /// INVITE transaction timeout.
    B,
    /// End of hold: send BYE.
    Hold,
    /// BYE retransmission.
    E,
    /// BYE transaction timeout.
    F,
}

#[derive(Default)]
pub struct Report {
    pub ok: u64,
    pub failed: u64,
    pub reasons: BTreeMap<String, u64>,
    pub invite_retrans: u64,
    pub bye_retrans: u64,
    pub ok_retrans_reacked: u64,
    pub late_provisionals: u64,
    pub final_retrans_reacked: u64,
    pub unexpected: u64,
    pub send_errors: u64,
    pub setup_us: Vec<u32>,
    pub bye_us: Vec<u32>,
    pub max_start_lag: Duration,
    pub elapsed: Duration,
    pub cpu: Duration,
    /// Datagrams the kernel dropped at the UAC's socket (/proc/net/udp).
    pub socket_drops: u64,
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    f64::from(sorted[i]) / 1000.0
}

/// p50, p99 and max in milliseconds.
fn spread(v: &mut [u32]) -> [f64; 3] {
    v.sort_unstable();
    [pct(v, 0.5), pct(v, 0.99), pct(v, 1.0)]
}

impl Report {
    /// The stderr breakdown.
    pub fn describe(&mut self, cfg: &Config) -> String {
        let mut s = String::new();
        let n = self.ok + self.failed;
        let _ = writeln!(
            s,
            "sip-loadgen uac: {} calls at {}/s to {} in {:.2} s: {} ok, {} failed",
            cfg.calls,
            cfg.rate,
            cfg.target,
            self.elapsed.as_secs_f64(),
            self.ok,
            self.failed
        );
        if self.reasons.is_empty() {
            let _ = writeln!(s, "  failures: none");
        } else {
            let r: Vec<String> = self
                .reasons
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "  failures: {}", r.join(", "));
        }
        let _ = writeln!(
            s,
            "  retransmissions: INVITE={} BYE={}; received again: 200 (re-ACKed)={} non-2xx final (re-ACKed)={}; \
             late provisionals ignored={}; unexpected messages={}; send errors={}; datagrams dropped at the UAC socket={}",
            self.invite_retrans,
            self.bye_retrans,
            self.ok_retrans_reacked,
            self.final_retrans_reacked,
            self.late_provisionals,
            self.unexpected,
            self.send_errors,
            self.socket_drops
        );
        let a = spread(&mut self.setup_us);
        let b = spread(&mut self.bye_us);
        let _ = writeln!(
            s,
            "  INVITE->200 ms p50={:.2} p99={:.2} max={:.2}; BYE->200 ms p50={:.2} p99={:.2} max={:.2}",
            a[0], a[1], a[2], b[0], b[1], b[2]
        );
        let _ = write!(
            s,
            "  pacing: max start lag {:.2} ms; generator CPU {:.3} s = {:.1} us/call",
            self.max_start_lag.as_secs_f64() * 1e3,
            self.cpu.as_secs_f64(),
            self.cpu.as_secs_f64() * 1e6 / n.max(1) as f64
        );
        s
    }

    /// The same as one JSON object (for the harness).
    pub fn json(&mut self) -> String {
        let a = spread(&mut self.setup_us);
        let b = spread(&mut self.bye_us);
        let n = (self.ok + self.failed).max(1) as f64;
        let reasons: Vec<String> = self
            .reasons
            .iter()
            .map(|(k, v)| format!("\"{}\":{v}", k.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        format!(
            "{{\"ok\":{},\"failed\":{},\"failures\":{{{}}},\"invite_retrans\":{},\"bye_retrans\":{},\
             \"ok_retrans_reacked\":{},\"late_provisionals\":{},\"unexpected\":{},\"uac_socket_drops\":{},\
             \"setup_ms\":{{\"p50\":{:.2},\"p99\":{:.2},\"max\":{:.2}}},\"bye_ms\":{{\"p50\":{:.2},\"p99\":{:.2},\"max\":{:.2}}},\
             \"elapsed_s\":{:.3},\"max_start_lag_ms\":{:.2},\"uac_us_per_call\":{:.1}}}",
            self.ok,
            self.failed,
            reasons.join(","),
            self.invite_retrans,
            self.bye_retrans,
            self.ok_retrans_reacked,
            self.late_provisionals,
            self.unexpected,
            self.socket_drops,
            a[0],
            a[1],
            a[2],
            b[0],
            b[1],
            b[2],
            self.elapsed.as_secs_f64(),
            self.max_start_lag.as_secs_f64() * 1e3,
            self.cpu.as_secs_f64() * 1e6 / n
        )
    }
}

use std::fmt::Write as _;

pub struct Uac<'c> {
    cfg: &'c Config,
    sock: UdpSocket,
    local: SocketAddr,
    run: String,
    calls: Vec<Call>,
    timers: BinaryHeap<Reverse<(Instant, u32, Timer)>>,
    finished: u32,
    report: Report,
    out: Vec<u8>,
}

impl<'c> Uac<'c> {
    pub fn new(cfg: &'c Config) -> std::io::Result<Uac<'c>> {
        let sock = UdpSocket::bind(cfg.bind)?;
        sock.set_nonblocking(true)?;
        sys::set_buffers(&sock, 4 << 20);
        let local = sock.local_addr()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let run = format!("{:x}{:x}", std::process::id(), nanos as u64 & 0xffff_ffff);
        let now = Instant::now();
        let calls = (0..cfg.calls)
            .map(|_| Call {
                state: State::NotStarted,
                invite: Vec::new(),
                ack: Vec::new(),
                ack_dest: cfg.target,
                bye: Vec::new(),
                a_interval: T1,
                e_interval: T1,
                invite_at: now,
                bye_at: now,
            })
            .collect();
        Ok(Uac {
            cfg,
            sock,
            local,
            run,
            calls,
            timers: BinaryHeap::new(),
            finished: 0,
            report: Report::default(),
            out: Vec::with_capacity(2048),
        })
    }

    pub fn run(mut self) -> Report {
        let cpu0 = sys::cpu_time();
        let start = Instant::now();
        let deadline = start + self.cfg.timeout;
        let interval = Duration::from_secs_f64(1.0 / self.cfg.rate);
        let mut next_call: u32 = 0;
        let mut buf = vec![0u8; 65536];
        let n = self.cfg.calls;
        self.report.setup_us.reserve(n as usize);
        self.report.bye_us.reserve(n as usize);
        while self.finished < n {
            // Everything that arrived.
            loop {
                match self.sock.recv_from(&mut buf) {
                    Ok((len, src)) => self.handle(&buf[..len], src),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => continue, // ICMP port unreachable and the like
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.fire_timers(now);
            // Calls due by the clock (the i-th at start + i*interval).
            while next_call < n {
                let due = start + interval.mul_f64(f64::from(next_call));
                if due > now + Duration::from_micros(20) {
                    break;
                }
                self.report.max_start_lag = self
                    .report
                    .max_start_lag
                    .max(now.saturating_duration_since(due));
                self.start_call(next_call, now);
                next_call += 1;
            }
            let mut until = deadline;
            if next_call < n {
                until = until.min(start + interval.mul_f64(f64::from(next_call)));
            }
            if let Some(Reverse((at, _, _))) = self.timers.peek() {
                until = until.min(*at);
            }
            let now = Instant::now();
            if !self.cfg.tick.is_zero() {
                // The next tick (or the run's deadline, if sooner).
                std::thread::sleep(
                    (now + self.cfg.tick)
                        .min(deadline)
                        .saturating_duration_since(now),
                );
            } else if until > now {
                sys::wait_readable(&self.sock, until - now);
            }
        }
        // Whatever is unfinished at the deadline failed.
        for i in 0..self.calls.len() {
            let st = self.calls[i].state;
            if !matches!(st, State::Done | State::Failed) {
                self.fail(i, &format!("run timeout ({st:?})"));
            }
        }
        self.report.elapsed = start.elapsed();
        self.report.cpu = sys::cpu_time() - cpu0;
        self.report.socket_drops = sys::udp_drops(self.local).unwrap_or(0);
        self.report
    }

    fn send(&mut self, buf: &[u8], dest: SocketAddr) {
        if let Err(e) = self.sock.send_to(buf, dest) {
            if e.kind() != ErrorKind::ConnectionRefused {
                self.report.send_errors += 1;
            }
        }
    }

    fn fail(&mut self, i: usize, why: &str) {
        self.calls[i].state = State::Failed;
        self.calls[i].invite = Vec::new();
        self.calls[i].bye = Vec::new();
        self.finished += 1;
        self.report.failed += 1;
        *self.report.reasons.entry(why.to_string()).or_default() += 1;
    }

    fn call_id(&self, out: &mut Vec<u8>, i: u32) {
        let _ = write!(out, "{i}-{}@loadgen", self.run);
    }

    fn start_call(&mut self, i: u32, now: Instant) {
        let cfg = self.cfg;
        let (l, t) = (self.local, cfg.target);
        let mut m = std::mem::take(&mut self.out);
        m.clear();
        let fields = cfg
            .inf
            .as_ref()
            .filter(|v| !v.is_empty())
            .map(|v| &v[i as usize % v.len()]);
        let field = |k: usize| {
            fields
                .and_then(|f| f.get(k))
                .map(String::as_str)
                .unwrap_or("")
        };
        let (from_user, to_user) = match fields {
            Some(_) => (field(0), field(1)),
            None => ("+15550199", cfg.to_user.as_str()),
        };
        let _ = write!(
            m,
            "INVITE sip:{to_user}@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{}-{i}-i\r\n",
            self.run
        );
        match fields {
            // As scenarios/uac-csv.xml.
            Some(_) => {
                let _ = write!(
                    m,
                    "From: <sip:{from_user}@{l};user=phone>;tag={}.{i}\r\nTo: <sip:{to_user}@{t};user=phone>\r\n\
                     P-Asserted-Identity: <sip:{from_user}@{};user=phone>\r\n",
                    self.run,
                    l.ip()
                );
            }
            // As scenarios/uac-basic.xml.
            None => {
                let _ = write!(
                    m,
                    "From: \"Carrier\" <sip:{from_user}@{l}>;tag={}.{i}\r\nTo: <sip:{to_user}@{t}>\r\n",
                    self.run
                );
            }
        }
        m.extend_from_slice(b"Call-ID: ");
        self.call_id(&mut m, i);
        let _ = write!(m, "\r\nCSeq: 1 INVITE\r\nContact: <sip:{from_user}@{l};transport=udp>\r\nMax-Forwards: 70\r\n");
        match fields {
            Some(_) => {
                let _ = write!(
                    m,
                    "{};info=<{}>;alg=ES256;ppt=shaken\r\nContent-Length: 0\r\n\r\n",
                    field(2),
                    field(3)
                );
            }
            None => {
                let ip = l.ip();
                let sdp = format!(
                    "v=0\r\no=user1 53655765 2353687637 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
                     m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
                     a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
                );
                let _ = write!(
                    m,
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                );
            }
        }
        self.send(&m, t);
        let c = &mut self.calls[i as usize];
        c.invite = m.clone();
        c.state = State::Calling;
        c.invite_at = now;
        c.a_interval = T1;
        self.out = m;
        self.timers.push(Reverse((now + T1, i, Timer::A)));
        self.timers.push(Reverse((now + 64 * T1, i, Timer::B)));
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, i, kind))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let idx = i as usize;
            let st = self.calls[idx].state;
            match kind {
                Timer::A if st == State::Calling => {
                    let inv = std::mem::take(&mut self.calls[idx].invite);
                    self.send(&inv, self.cfg.target);
                    self.calls[idx].invite = inv;
                    self.report.invite_retrans += 1;
                    let c = &mut self.calls[idx];
                    c.a_interval *= 2;
                    self.timers.push(Reverse((at + c.a_interval, i, Timer::A)));
                }
                Timer::B if matches!(st, State::Calling | State::Proceeding) => {
                    let why = if st == State::Calling {
                        "INVITE timeout, no response"
                    } else {
                        "INVITE timeout after 1xx"
                    };
                    self.fail(idx, why);
                }
                Timer::Hold if st == State::Confirmed => {
                    let bye = std::mem::take(&mut self.calls[idx].bye);
                    let dest = self.calls[idx].ack_dest;
                    self.send(&bye, dest);
                    let c = &mut self.calls[idx];
                    c.bye = bye;
                    c.state = State::ByeSent;
                    c.bye_at = now;
                    c.e_interval = T1;
                    self.timers.push(Reverse((now + T1, i, Timer::E)));
                    self.timers.push(Reverse((now + 64 * T1, i, Timer::F)));
                }
                Timer::E if st == State::ByeSent => {
                    let bye = std::mem::take(&mut self.calls[idx].bye);
                    let dest = self.calls[idx].ack_dest;
                    self.send(&bye, dest);
                    self.report.bye_retrans += 1;
                    let c = &mut self.calls[idx];
                    c.bye = bye;
                    c.e_interval = (c.e_interval * 2).min(T2);
                    self.timers.push(Reverse((at + c.e_interval, i, Timer::E)));
                }
                Timer::F if st == State::ByeSent => self.fail(idx, "BYE timeout"),
                _ => {} // stale: the call moved on
            }
        }
    }

    /// The call index from our Call-ID, or None for anything else.
    fn index_of(&self, call_id: &[u8]) -> Option<usize> {
        let dash = call_id.iter().position(|&c| c == b'-')?;
        let (num, rest) = (&call_id[..dash], &call_id[dash + 1..]);
        if num.is_empty() || num.len() > 10 || !num.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let i = num.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0')) as usize;
        let run = self.run.as_bytes();
        (rest.len() == run.len() + 8
            && rest.starts_with(run)
            && &rest[run.len()..] == b"@loadgen"
            && i < self.calls.len())
        .then_some(i)
    }

    fn handle(&mut self, datagram: &[u8], src: SocketAddr) {
        if sip::trim(datagram).is_empty() {
            return;
        }
        let Ok(msg) = sip::parse(datagram) else {
            self.report.unexpected += 1;
            return;
        };
        let code = match msg.start {
            Start::Response { code } => code,
            Start::Request { method, .. } => {
                self.answer_request(&msg, method, src);
                return;
            }
        };
        let Some(i) = self.index_of(msg.call_id) else {
            self.report.unexpected += 1;
            return;
        };
        let st = self.calls[i].state;
        match msg.cseq_method {
            b"INVITE" => match (code, st) {
                (100..=199, State::Calling) => self.calls[i].state = State::Proceeding,
                (100..=199, State::Proceeding) => {}
                (100..=199, _) => self.report.late_provisionals += 1,
                (200..=299, State::Calling | State::Proceeding) => self.answered(i, &msg),
                (200..=299, _) => {
                    // A retransmitted 200: ACK it again.
                    if !self.calls[i].ack.is_empty() {
                        let (ack, dest) = (
                            std::mem::take(&mut self.calls[i].ack),
                            self.calls[i].ack_dest,
                        );
                        self.send(&ack, dest);
                        self.calls[i].ack = ack;
                        self.report.ok_retrans_reacked += 1;
                    }
                }
                (_, State::Calling | State::Proceeding) => {
                    self.ack_non2xx(i, &msg);
                    self.fail(i, &format!("INVITE {code}"));
                }
                (_, _) => {
                    if !self.calls[i].ack.is_empty() {
                        let ack = std::mem::take(&mut self.calls[i].ack);
                        self.send(&ack, self.cfg.target);
                        self.calls[i].ack = ack;
                        self.report.final_retrans_reacked += 1;
                    }
                }
            },
            b"BYE" => match (code, st) {
                (100..=199, State::ByeSent) => self.calls[i].e_interval = T2,
                (200..=299, State::ByeSent) => {
                    let c = &mut self.calls[i];
                    c.state = State::Done;
                    c.bye = Vec::new();
                    let us = c.bye_at.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    self.report.bye_us.push(us);
                    self.finished += 1;
                    self.report.ok += 1;
                }
                (300.., State::ByeSent) => self.fail(i, &format!("BYE {code}")),
                _ => {} // a retransmitted response
            },
            _ => self.report.unexpected += 1,
        }
    }

    /// The first 200 to the INVITE: learn the dialog, ACK, schedule the BYE.
    fn answered(&mut self, i: usize, msg: &sip::Msg<'_>) {
        let Some(_) = sip::tag(msg.to) else {
            self.fail(i, "200 without To tag");
            return;
        };
        let Some(contact) = msg.contact.map(sip::first_element).map(sip::uri_of) else {
            self.fail(i, "200 without Contact");
            return;
        };
        // Route set: the Record-Route entries reversed.
        let mut routes: Vec<&[u8]> = Vec::with_capacity(4);
        for rr in msg.record_routes.as_slice() {
            routes.extend(sip::split_commas(rr));
        }
        routes.reverse();
        let (ruri, dest, route_lines): (&[u8], Option<SocketAddr>, Vec<&[u8]>) =
            match routes.first() {
                None => (contact, sip::uri_addr(contact), vec![]),
                Some(first) if sip::is_loose(first) => {
                    (contact, sip::uri_addr(sip::uri_of(first)), routes.clone())
                }
                // Strict routing (RFC 3261 §12.2.1.1): the first route becomes
                // the Request-URI, the remote target the last Route.
                Some(first) => (
                    sip::uri_of(first),
                    sip::uri_addr(sip::uri_of(first)),
                    routes[1..].to_vec(),
                ),
            };
        let strict_tail = !routes.is_empty() && !sip::is_loose(routes[0]);
        let dest = dest.unwrap_or(self.cfg.target);
        let idx = i as u32;
        let build = |method: &str, cseq: u32, out: &mut Vec<u8>, this: &Self| {
            out.clear();
            out.extend_from_slice(method.as_bytes());
            out.push(b' ');
            out.extend_from_slice(ruri);
            let tag = if method == "ACK" { 'a' } else { 'b' };
            let _ = write!(
                out,
                " SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-{}-{idx}-{tag}\r\n",
                this.local, this.run
            );
            for r in &route_lines {
                out.extend_from_slice(b"Route: ");
                out.extend_from_slice(r);
                out.extend_from_slice(b"\r\n");
            }
            if strict_tail {
                out.extend_from_slice(b"Route: <");
                out.extend_from_slice(contact);
                out.extend_from_slice(b">\r\n");
            }
            // From as in the INVITE, To with the remote tag (the 200's To).
            out.extend_from_slice(b"From: ");
            out.extend_from_slice(msg.from);
            out.extend_from_slice(b"\r\nTo: ");
            out.extend_from_slice(msg.to);
            out.extend_from_slice(b"\r\nCall-ID: ");
            out.extend_from_slice(msg.call_id);
            let _ = write!(
                out,
                "\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            );
        };
        let mut ack = Vec::with_capacity(512);
        let mut bye = Vec::with_capacity(512);
        build("ACK", 1, &mut ack, self);
        build("BYE", 2, &mut bye, self);
        self.send(&ack, dest);
        let now = Instant::now();
        let c = &mut self.calls[i];
        let us = (now - c.invite_at).as_micros().min(u32::MAX as u128) as u32;
        c.ack = ack;
        c.bye = bye;
        c.ack_dest = dest;
        c.invite = Vec::new();
        c.state = State::Confirmed;
        self.report.setup_us.push(us);
        self.timers
            .push(Reverse((now + self.cfg.hold, idx, Timer::Hold)));
    }

    /// ACK for a final non-2xx: part of the INVITE transaction (§17.1.1.3).
    fn ack_non2xx(&mut self, i: usize, msg: &sip::Msg<'_>) {
        let inv = std::mem::take(&mut self.calls[i].invite);
        let mut ack = Vec::with_capacity(512);
        if let Ok(req) = sip::parse(&inv) {
            if let Start::Request { uri, .. } = req.start {
                ack.extend_from_slice(b"ACK ");
                ack.extend_from_slice(uri);
                ack.extend_from_slice(b" SIP/2.0\r\nVia: ");
                ack.extend_from_slice(req.vias.as_slice()[0]);
                ack.extend_from_slice(b"\r\nFrom: ");
                ack.extend_from_slice(req.from);
                ack.extend_from_slice(b"\r\nTo: ");
                ack.extend_from_slice(msg.to);
                ack.extend_from_slice(b"\r\nCall-ID: ");
                ack.extend_from_slice(req.call_id);
                ack.extend_from_slice(
                    b"\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                );
            }
        }
        if !ack.is_empty() {
            self.send(&ack, self.cfg.target);
        }
        self.calls[i].ack = ack;
    }

    /// A request to the UAC (not part of this scenario): OPTIONS 200, else 481.
    fn answer_request(&mut self, msg: &sip::Msg<'_>, method: &[u8], src: SocketAddr) {
        if method == b"ACK" {
            return;
        }
        self.report.unexpected += 1;
        let Some(top) = sip::parse_via(sip::first_element(msg.vias.as_slice()[0])) else {
            return;
        };
        let (dest, received, rport) = sip::response_dest(&top, src);
        let (code, reason) = if method == b"OPTIONS" {
            (200, "OK")
        } else {
            (481, "Call/Transaction Does Not Exist")
        };
        let mut out = std::mem::take(&mut self.out);
        crate::uas::build_response(
            &mut out,
            msg,
            code,
            reason,
            Some("uac"),
            (received, rport),
            false,
            None,
            b"",
        );
        self.send(&out, dest);
        self.out = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inf_csv_as_callgate_sign_writes_it() {
        let v = parse_inf("SEQUENTIAL\n+15550000;+15550100;Identity: eyJ.a.b;https://x/sti.pem\n\n+15550001;+15550100;Identity: c.d.e;https://x/sti.pem\n");
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0],
            [
                "+15550000",
                "+15550100",
                "Identity: eyJ.a.b",
                "https://x/sti.pem"
            ]
        );
        assert_eq!(v[1][0], "+15550001");
        assert!(parse_inf("").is_empty());
    }

    fn cfg(inf: Option<Vec<Vec<String>>>) -> Config {
        Config {
            target: "127.0.0.1:9".parse().unwrap(),
            bind: "127.0.0.1:0".parse().unwrap(),
            rate: 10.0,
            calls: 3,
            hold: Duration::from_millis(1),
            timeout: Duration::from_secs(1),
            tick: Duration::from_millis(1),
            to_user: "svc".into(),
            inf,
        }
    }

    #[test]
    fn invite_is_well_formed_and_call_id_maps_back() {
        let c = cfg(None);
        let mut u = Uac::new(&c).unwrap();
        u.start_call(2, Instant::now());
        let inv = u.calls[2].invite.clone();
        let m = sip::parse(&inv).unwrap();
        assert_eq!(
            m.start,
            Start::Request {
                method: b"INVITE",
                uri: b"sip:svc@127.0.0.1:9"
            }
        );
        assert_eq!(u.index_of(m.call_id), Some(2));
        assert_eq!(u.index_of(b"2-other@loadgen"), None);
        assert_eq!(u.index_of(b"x"), None);
        let text = String::from_utf8(inv).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn signed_invite_carries_identity_like_uac_csv() {
        let c = cfg(Some(parse_inf(
            "SEQUENTIAL\n+15550000;+15550100;Identity: a.b.c;https://h/sti.pem\n",
        )));
        let mut u = Uac::new(&c).unwrap();
        u.start_call(0, Instant::now());
        let text = String::from_utf8(u.calls[0].invite.clone()).unwrap();
        assert!(text.starts_with("INVITE sip:+15550100@127.0.0.1:9 SIP/2.0\r\n"));
        assert!(
            text.contains("\r\nIdentity: a.b.c;info=<https://h/sti.pem>;alg=ES256;ppt=shaken\r\n")
        );
        assert!(text.contains(";user=phone>;tag="));
        assert!(text.contains("\r\nP-Asserted-Identity: <sip:+15550000@127.0.0.1;user=phone>\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    fn ok_for(u: &Uac<'_>, i: u32, rr: &str) -> Vec<u8> {
        let mut cid = Vec::new();
        u.call_id(&mut cid, i);
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-x\r\n{rr}From: <sip:a@h>;tag=f\r\n\
             To: <sip:svc@h>;tag=remote\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@127.0.0.1:7000>\r\n\r\n",
            u.local,
            String::from_utf8(cid).unwrap()
        )
        .into_bytes()
    }

    #[test]
    fn ack_and_bye_follow_the_reversed_loose_route_set() {
        let c = cfg(None);
        let mut u = Uac::new(&c).unwrap();
        u.start_call(0, Instant::now());
        let ok = ok_for(&u, 0, "Record-Route: <sip:127.0.0.1:62;lr>\r\nRecord-Route: <sip:127.0.0.1:60;lr;r2=on>, <sip:127.0.0.1:61;lr>\r\n");
        u.handle(&ok, c.target);
        assert_eq!(u.calls[0].state, State::Confirmed);
        assert_eq!(u.calls[0].ack_dest, "127.0.0.1:61".parse().unwrap());
        let ack = String::from_utf8(u.calls[0].ack.clone()).unwrap();
        assert!(
            ack.starts_with("ACK sip:pbx@127.0.0.1:7000 SIP/2.0\r\n"),
            "{ack}"
        );
        assert!(ack.contains("Route: <sip:127.0.0.1:61;lr>\r\nRoute: <sip:127.0.0.1:60;lr;r2=on>\r\nRoute: <sip:127.0.0.1:62;lr>\r\n"), "{ack}");
        assert!(ack.contains("To: <sip:svc@h>;tag=remote\r\n"));
        assert!(ack.contains("CSeq: 1 ACK\r\n"));
        let bye = String::from_utf8(u.calls[0].bye.clone()).unwrap();
        assert!(bye.starts_with("BYE sip:pbx@127.0.0.1:7000 SIP/2.0\r\n"));
        assert!(bye.contains("CSeq: 2 BYE\r\n"));
        // A retransmitted 200 is ACKed again; a late 180 is ignored.
        u.handle(&ok, c.target);
        assert_eq!(u.report.ok_retrans_reacked, 1);
        let late = String::from_utf8(ok.clone())
            .unwrap()
            .replacen("200 OK", "180 Ringing", 1);
        u.handle(late.as_bytes(), c.target);
        assert_eq!(u.report.late_provisionals, 1);
        assert_eq!(u.calls[0].state, State::Confirmed);
    }

    #[test]
    fn strict_route_puts_the_first_route_in_the_request_uri() {
        let c = cfg(None);
        let mut u = Uac::new(&c).unwrap();
        u.start_call(1, Instant::now());
        u.handle(
            &ok_for(&u, 1, "Record-Route: <sip:127.0.0.1:62>\r\n"),
            c.target,
        );
        let ack = String::from_utf8(u.calls[1].ack.clone()).unwrap();
        assert!(ack.starts_with("ACK sip:127.0.0.1:62 SIP/2.0\r\n"), "{ack}");
        assert!(ack.contains("Route: <sip:pbx@127.0.0.1:7000>\r\n"), "{ack}");
    }

    #[test]
    fn final_error_fails_the_call_and_is_acked() {
        let c = cfg(None);
        let mut u = Uac::new(&c).unwrap();
        u.start_call(0, Instant::now());
        let resp = String::from_utf8(ok_for(&u, 0, "")).unwrap().replacen(
            "200 OK",
            "503 Service Unavailable",
            1,
        );
        u.handle(resp.as_bytes(), c.target);
        assert_eq!(u.calls[0].state, State::Failed);
        assert_eq!(u.report.reasons.get("INVITE 503"), Some(&1));
        let ack = String::from_utf8(u.calls[0].ack.clone()).unwrap();
        assert!(ack.starts_with("ACK sip:svc@127.0.0.1:9 SIP/2.0\r\n"));
        assert!(ack.contains(&format!("branch=z9hG4bK-{}-0-i", u.run)));
    }
}
