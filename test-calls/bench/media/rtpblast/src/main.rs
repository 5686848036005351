//! rtpblast: RTP load through a media relay, with one-way latency.
//!
//! Sets up calls on a relay over rtpengine's ng protocol (offer from side
//! A naming A's socket, answer from side B naming B's), then, for each
//! rate asked, sends RTP in both directions of every call — 172-byte
//! packets (12-byte RTP header + 160 bytes of payload), 50 packets/s per
//! stream, so a rate of R packets/s uses R/50 streams on R/100 calls — for
//! a warm-up and then a measured window, and receives it on the far
//! sockets (one socket per call side, connected to its relay port).
//! `--direct` sends the same load socket to socket with no relay: the
//! baseline the relay's added latency is measured against.
//!
//! Each packet carries its stream, its index in the run and its send time
//! (CLOCK_MONOTONIC via `Instant`, and CLOCK_REALTIME). The receiver takes
//! the kernel's receive timestamp (SO_TIMESTAMPNS, CLOCK_REALTIME: when the
//! datagram entered the network stack towards our socket, so the blaster's
//! own scheduling does not count) and its own receive time (`Instant`
//! after `recvmmsg` returns); both latencies are reported.
//!
//! By default one thread does everything in a busy loop: send each packet
//! at its time (spinning on the clock), and in between poll the sockets
//! with a zero epoll timeout, so the blaster's core never sleeps or
//! switches threads (pin the process to a core of its own). `--threads`
//! uses a paced sender thread and a blocking receiver thread instead.
//! Nothing is allocated per packet: one send buffer rewritten in place,
//! recvmmsg into preallocated buffers, latencies into vectors sized
//! beforehand.
//!
//! With `--relay-pid`, the relay's CPU time (utime+stime from
//! /proc/PID/stat, and the run time of all its threads from
//! /proc/PID/task/*/schedstat) is read at the start and end of each
//! measured window; with `--relay-core`, also the run time of that core's
//! ksoftirqd (softirq work deferred there) and each core's busy share
//! (/proc/stat; tick-sampled, a noise indicator). One JSON object per rate
//! goes to stdout.
//!
//! Every run is bounded: the packet count of each step is fixed, the
//! receiver stops a fixed drain time after the last send, ng requests time
//! out. Calls are deleted over ng at the end.

mod ng;
mod srtp;
mod sys;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PACKET: usize = 172;
const PER_STREAM_PPS: u64 = 50;
const MAGIC: u32 = 0x7274_6231; // "rtb1"

struct Args {
    ng: Option<SocketAddr>,
    rates: Vec<u64>,
    secs: u64,
    warmup_ms: u64,
    drain_ms: u64,
    relay_pid: Option<u32>,
    relay_core: Option<usize>,
    threads: bool,
    share: usize,
    label: String,
    srtp: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: rtpblast (--ng HOST:PORT | --direct) --rates 1000,5000,... [--secs 5] [--warmup-ms 1000] [--drain-ms 500] [--relay-pid PID] [--relay-core N] [--threads] [--share K] [--label NAME] [--srtp]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        ng: None,
        rates: Vec::new(),
        secs: 5,
        warmup_ms: 1000,
        drain_ms: 500,
        relay_pid: None,
        relay_core: None,
        threads: false,
        share: 0,
        label: String::new(),
        srtp: false,
    };
    let mut direct = false;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--ng" => a.ng = Some(v().parse().unwrap_or_else(|_| usage())),
            "--direct" => direct = true,
            "--rates" => {
                a.rates = v()
                    .split(',')
                    .map(|r| r.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--secs" => a.secs = v().parse().unwrap_or_else(|_| usage()),
            "--warmup-ms" => a.warmup_ms = v().parse().unwrap_or_else(|_| usage()),
            "--drain-ms" => a.drain_ms = v().parse().unwrap_or_else(|_| usage()),
            "--relay-pid" => a.relay_pid = Some(v().parse().unwrap_or_else(|_| usage())),
            "--relay-core" => a.relay_core = Some(v().parse().unwrap_or_else(|_| usage())),
            "--threads" => a.threads = true,
            "--share" => a.share = v().parse().unwrap_or_else(|_| usage()),
            "--label" => a.label = v(),
            "--srtp" => a.srtp = true,
            _ => usage(),
        }
    }
    if a.rates.is_empty()
        || direct == a.ng.is_some()
        || a.secs == 0
        || a.secs > 600
        || (a.srtp && direct)
    {
        usage()
    }
    if a.label.is_empty() {
        a.label = if direct {
            "direct".into()
        } else {
            "relay".into()
        };
    }
    a.rates.sort_unstable();
    if a.rates[0] < PER_STREAM_PPS || *a.rates.last().unwrap_or(&0) > 1_000_000 {
        eprintln!("rates must be within {PER_STREAM_PPS}..=1000000 packets/s");
        std::process::exit(2)
    }
    a
}

/// Nanoseconds on CLOCK_MONOTONIC since the run's epoch.
#[inline]
fn mono_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// Nanoseconds on CLOCK_REALTIME (what SO_TIMESTAMPNS reports).
#[inline]
fn real_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The relay's CPU time so far.
#[derive(Clone, Copy, Default)]
struct Cpu {
    ticks: u64,
    sched_ns: u64,
    threads: u64,
}

fn read_cpu(pid: u32) -> Cpu {
    let mut c = Cpu::default();
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Fields after the command's closing parenthesis start at field 3
        // (state); utime and stime are fields 14 and 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            c.ticks = n(11) + n(12);
        }
    }
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                c.sched_ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0);
                c.threads += 1;
            }
        }
    }
    c
}

/// The pid of the kernel thread that runs softirq work deferred on `core`
/// (network receive processing the relay's own sends raised, when the
/// inline budget runs out).
fn ksoftirqd(core: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{core}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == want).then_some(pid)
    })
}

/// Jiffies of one CPU from /proc/stat (a `cpuN` line).
#[derive(Clone, Copy, Default)]
struct Core {
    busy: u64,
    softirq: u64,
    total: u64,
}

fn read_cores() -> Vec<Core> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            // user nice system idle iowait irq softirq steal
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let g = |i: usize| f.get(i).copied().unwrap_or(0);
            let total: u64 = (0..8).map(g).sum();
            Core {
                busy: total - g(3) - g(4),
                softirq: g(6),
                total,
            }
        })
        .collect()
}

/// Per core between two [`read_cores`]: (share busy, share in softirq).
fn core_shares(before: &[Core], after: &[Core]) -> Vec<(f64, f64)> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let t = a.total.saturating_sub(b.total).max(1) as f64;
            (
                a.busy.saturating_sub(b.busy) as f64 / t,
                a.softirq.saturating_sub(b.softirq) as f64 / t,
            )
        })
        .collect()
}

fn json_list(v: impl Iterator<Item = f64>) -> String {
    format!(
        "[{}]",
        v.map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(",")
    )
}

/// The sockets of one call: A (the offerer) and B (the answerer).
/// Socket index 2c is call c's A, 2c+1 its B.
/// Socket index 2c is call c's A, 2c+1 its B (connected to the relay).
/// With `--share K`, K sockets per side serve all calls instead (index k
/// for side A, K+k for side B; call c uses k = c % K) and are not
/// connected: each packet names its destination.
struct Endpoints {
    socks: Vec<UdpSocket>,
    share: usize,
    /// Per call, where A and B send (shared sockets only).
    dests: Vec<[SocketAddr; 2]>,
    calls_ready: usize,
    /// `--srtp`: per call, A's key and the relay's towards A.
    srtp: Option<Vec<srtp::CallKeys>>,
}

impl Endpoints {
    fn new(share: usize) -> std::io::Result<Endpoints> {
        let mut socks = Vec::new();
        for _ in 0..share * 2 {
            socks.push(bind_socket(share)?);
        }
        Ok(Endpoints {
            socks,
            share,
            dests: Vec::new(),
            calls_ready: 0,
            srtp: None,
        })
    }

    /// Which side (0: A, 1: B) socket `idx` of [`active`](Self::active) is.
    #[inline]
    fn side_of(&self, idx: usize) -> usize {
        if self.share > 0 {
            usize::from(idx >= self.share)
        } else {
            idx % 2
        }
    }

    /// The sockets a step with `calls` calls receives on.
    fn active(&self, calls: usize) -> &[UdpSocket] {
        if self.share > 0 {
            &self.socks
        } else {
            &self.socks[..calls * 2]
        }
    }

    /// Index (in [`active`](Self::active)) of the socket call `c` uses on
    /// side `dir` (0: A, 1: B), and where that socket sends, if it is not
    /// connected.
    #[inline]
    fn sender(&self, c: usize, dir: usize) -> (usize, Option<SocketAddr>) {
        let dest = (self.share > 0).then(|| self.dests[c][dir]);
        (self.slot(c, dir), dest)
    }

    #[inline]
    fn slot(&self, c: usize, dir: usize) -> usize {
        if self.share > 0 {
            dir * self.share + c % self.share
        } else {
            c * 2 + dir
        }
    }
}

fn bind_socket(share: usize) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    sys::enable_rx_timestamps(s.as_raw_fd())?;
    // Room for a stall of the receiver (the kernel doubles it; a shared
    // socket takes many calls' packets).
    let bytes = if share > 0 { 16 << 20 } else { 256 << 10 };
    if sys::set_rcvbuf_force(s.as_raw_fd(), bytes).is_err() {
        let _ = sys::set_rcvbuf(s.as_raw_fd(), bytes);
    }
    Ok(s)
}

fn call_id(c: usize) -> String {
    format!("rtpblast-{}-{c}", std::process::id())
}

/// Makes sure calls 0..n exist: binds their sockets (unless shared) and,
/// through a relay, runs the ng offer (A's SDP) and answer (B's SDP); A
/// then sends to the relay port the answer named, B to the one the offer
/// named (per-call sockets are connected there). Without a relay, A and B
/// send to each other.
fn ensure_calls(ep: &mut Endpoints, n: usize, ng: &mut Option<ng::Client>) -> std::io::Result<()> {
    use ng::Arg::{L, S};
    const REPLACE: &[&str] = &["origin", "session-connection"];
    while ep.calls_ready < n {
        let c = ep.calls_ready;
        let (a, b) = if ep.share > 0 {
            (None, None)
        } else {
            (Some(bind_socket(0)?), Some(bind_socket(0)?))
        };
        let addr = |own: &Option<UdpSocket>, dir: usize| match own {
            Some(s) => s.local_addr(),
            None => ep.socks[ep.slot(c, dir)].local_addr(),
        };
        let (pa, pb) = (addr(&a, 0)?, addr(&b, 1)?);
        // Where A and B send.
        let (to_a, to_b) = match ng {
            None => (pb, pa),
            Some(cl) => {
                let id = call_id(c);
                let (ft, tt) = (format!("a{c}"), format!("b{c}"));
                // --srtp: A offers SDES-SRTP, B is to get plain RTP.
                let a_key = match ep.srtp {
                    Some(_) => Some(srtp::new_key().map_err(std::io::Error::other)?),
                    None => None,
                };
                let offer_sdp = match &a_key {
                    Some((_, line)) => ng::sdp(pa.port(), 1)
                        .replace("RTP/AVP", "RTP/SAVP")
                        .replace(
                            "a=sendrecv\r\n",
                            &format!("a=sendrecv\r\na=crypto:{line}\r\n"),
                        ),
                    None => ng::sdp(pa.port(), 1),
                };
                let mut offer_args = vec![
                    ("command", S("offer")),
                    ("call-id", S(&id)),
                    ("from-tag", S(&ft)),
                    ("sdp", S(&offer_sdp)),
                    ("replace", L(REPLACE)),
                    ("ICE", S("remove")),
                ];
                if a_key.is_some() {
                    offer_args.push(("transport-protocol", S("RTP/AVP")));
                }
                let offer = cl.request(&offer_args)?;
                let to_b = offer
                    .get("sdp")
                    .and_then(ng::Value::str)
                    .and_then(ng::sdp_target)
                    .ok_or_else(|| std::io::Error::other("offer reply without a usable SDP"))?;
                let answer = cl.request(&[
                    ("command", S("answer")),
                    ("call-id", S(&id)),
                    ("from-tag", S(&ft)),
                    ("to-tag", S(&tt)),
                    ("sdp", S(&ng::sdp(pb.port(), 1))),
                    ("replace", L(REPLACE)),
                    ("ICE", S("remove")),
                ])?;
                let answer_sdp = answer.get("sdp").and_then(ng::Value::str);
                let to_a = answer_sdp
                    .and_then(ng::sdp_target)
                    .ok_or_else(|| std::io::Error::other("answer reply without a usable SDP"))?;
                if let (Some(keys), Some((a, _))) = (ep.srtp.as_mut(), a_key) {
                    let relay = answer_sdp.and_then(srtp::key_of).ok_or_else(|| {
                        std::io::Error::other("the relay's answer to A has no a=crypto")
                    })?;
                    keys.push(srtp::CallKeys { a, relay });
                }
                (to_a, to_b)
            }
        };
        if let (Some(a), Some(b)) = (a, b) {
            a.connect(to_a)?;
            b.connect(to_b)?;
            ep.socks.push(a);
            ep.socks.push(b);
        }
        ep.dests.push([to_a, to_b]);
        ep.calls_ready += 1;
    }
    Ok(())
}

fn delete_calls(n: usize, ng: &mut ng::Client) -> usize {
    use ng::Arg::S;
    let mut failed = 0;
    for c in 0..n {
        let id = call_id(c);
        let ft = format!("a{c}");
        if let Err(e) = ng.request(&[
            ("command", S("delete")),
            ("call-id", S(&id)),
            ("from-tag", S(&ft)),
        ]) {
            failed += 1;
            if failed <= 3 {
                eprintln!("rtpblast: delete {id}: {e}");
            }
        }
    }
    failed
}

/// Percentiles of `v` (sorted in place), nanoseconds.
fn pct(v: &mut [u64]) -> [u64; 5] {
    if v.is_empty() {
        return [0; 5];
    }
    v.sort_unstable();
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    [at(0.5), at(0.9), at(0.99), at(0.999), v[v.len() - 1]]
}

fn pct_json(p: [u64; 5]) -> String {
    format!(
        "{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}}",
        p[0], p[1], p[2], p[3], p[4]
    )
}

/// One step's schedule: packet j goes at t0 + j/rate on stream
/// j % streams (call = stream/2, direction = stream%2) as that stream's
/// (j / streams)-th packet; packets below `warm_n` are the warm-up, the
/// next `meas_n` are measured.
#[derive(Clone, Copy)]
struct Plan {
    epoch: Instant,
    t0: u64,
    rate: u64,
    streams: u64,
    warm_n: u64,
    meas_n: u64,
    /// The receiver stops here (monotonic ns): last send + drain.
    stop_at: u64,
    /// Added to every stream's sequence numbers, so that they keep rising
    /// from one step to the next (an SRTP receiver refuses replays).
    seq_base: u64,
}

impl Plan {
    fn at(&self, j: u64) -> u64 {
        self.t0 + (u128::from(j) * 1_000_000_000 / u128::from(self.rate)) as u64
    }

    fn total(&self) -> u64 {
        self.warm_n + self.meas_n
    }
}

/// The sending side: one packet buffer rewritten in place per packet
/// (with room for an SRTP tag).
struct Tx {
    buf: [u8; PACKET + 16],
    lateness: Vec<u64>,
    send_errors: u64,
    /// `--srtp`: seals what side A sends.
    seal: Option<srtp::Contexts>,
}

impl Tx {
    fn new(plan: &Plan, ep: &Endpoints) -> Tx {
        let mut buf = [0xffu8; PACKET + 16];
        buf[0] = 0x80; // V=2, no padding/extension/CSRC
        buf[1] = 0; // PT 0 (PCMU)
        buf[12..16].copy_from_slice(&MAGIC.to_be_bytes());
        Tx {
            buf,
            lateness: Vec::with_capacity(plan.meas_n as usize),
            send_errors: 0,
            seal: ep.srtp.as_deref().map(|k| srtp::Contexts::new(k, false)),
        }
    }

    /// Sends packet `j` now (its scheduled time was `target`).
    #[inline]
    fn send(&mut self, ep: &Endpoints, socks: &[UdpSocket], plan: &Plan, j: u64, target: u64) {
        let stream = j % plan.streams;
        let seq = plan.seq_base + j / plan.streams;
        let (call, dir) = (stream / 2, stream % 2);
        let buf = &mut self.buf;
        buf[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
        buf[4..8].copy_from_slice(&((seq as u32).wrapping_mul(160)).to_be_bytes());
        buf[8..12].copy_from_slice(&(stream as u32 + 1).to_be_bytes());
        buf[16..20].copy_from_slice(&(stream as u32).to_be_bytes());
        buf[20..28].copy_from_slice(&j.to_be_bytes());
        let tx_mono = mono_ns(plan.epoch);
        let tx_real = real_ns();
        buf[28..36].copy_from_slice(&tx_mono.to_be_bytes());
        buf[36..44].copy_from_slice(&tx_real.to_be_bytes());
        let mut len = PACKET;
        if let (Some(seal), 0) = (self.seal.as_mut(), dir) {
            len = seal.protect(call as usize, buf, PACKET).unwrap_or(0);
        }
        let sealed = len != PACKET;
        let (idx, dest) = ep.sender(call as usize, dir as usize);
        let sent = match dest {
            None => socks[idx].send(&buf[..len]),
            Some(d) => socks[idx].send_to(&buf[..len], d),
        };
        if sent.is_err() {
            self.send_errors += 1;
        }
        if sealed {
            // Sealing encrypted the payload in place: restore what the
            // next packet does not rewrite.
            buf[12..16].copy_from_slice(&MAGIC.to_be_bytes());
            buf[44..PACKET].fill(0xff);
        }
        if j >= plan.warm_n {
            self.lateness.push(tx_mono.saturating_sub(target));
        }
    }
}

/// The receiving side: epoll over the step's sockets, recvmmsg batches
/// into preallocated buffers, latencies into preallocated vectors.
struct Rx {
    ep: sys::Epoll,
    evs: Vec<sys::EpollEvent>,
    batch: sys::RecvBatch,
    in_window: u64,
    warm: u64,
    foreign: u64,
    no_stamp: u64,
    lat_k: Vec<u64>,
    lat_u: Vec<u64>,
    /// `--srtp`: opens what the relay sends side A, and which side each
    /// socket is.
    open: Option<srtp::Contexts>,
    sides: Vec<usize>,
    srtp_failed: u64,
}

impl Rx {
    fn new(socks: &[UdpSocket], plan: &Plan, endpoints: &Endpoints) -> std::io::Result<Rx> {
        let ep = sys::Epoll::new()?;
        for (i, s) in socks.iter().enumerate() {
            ep.add(s.as_raw_fd(), i as u64)?;
        }
        Ok(Rx {
            ep,
            evs: vec![sys::EpollEvent { events: 0, data: 0 }; 256],
            batch: sys::RecvBatch::new(),
            in_window: 0,
            warm: 0,
            foreign: 0,
            no_stamp: 0,
            lat_k: Vec::with_capacity(plan.meas_n as usize),
            lat_u: Vec::with_capacity(plan.meas_n as usize),
            open: endpoints
                .srtp
                .as_deref()
                .map(|k| srtp::Contexts::new(k, true)),
            sides: (0..socks.len()).map(|i| endpoints.side_of(i)).collect(),
            srtp_failed: 0,
        })
    }

    /// Waits up to `timeout_ms` (0: just looks) for at most `max_events`
    /// ready sockets and takes what they hold; returns the events seen.
    fn poll(
        &mut self,
        socks: &[UdpSocket],
        plan: &Plan,
        max_events: usize,
        timeout_ms: i32,
    ) -> std::io::Result<usize> {
        let max = max_events.min(self.evs.len());
        let n = self.ep.wait(&mut self.evs[..max], timeout_ms)?;
        for e in 0..n {
            let idx = self.evs[e].data as usize;
            let got = match self.batch.recv(socks[idx].as_raw_fd()) {
                Ok(g) => g,
                // ICMP errors (port unreachable) surface here; count, go on.
                Err(_) => {
                    self.foreign += 1;
                    continue;
                }
            };
            if got > 0 {
                let user_rx = mono_ns(plan.epoch);
                if self.sides[idx] == 0 {
                    self.open_srtp(got);
                }
                self.take(got, user_rx, plan);
            }
        }
        Ok(n)
    }

    /// `--srtp`: opens the packets side A received in place (the stream's
    /// SSRC names its call); a packet that does not open is cut to nothing
    /// and counted.
    fn open_srtp(&mut self, got: usize) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        for i in 0..got {
            let p = self.batch.packet_mut(i);
            let ssrc = match p.get(8..12) {
                Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                None => 0,
            };
            let call = (ssrc.saturating_sub(1) / 2) as usize;
            match open.unprotect(call, p) {
                Some(n) => self.batch.set_len(i, n),
                None => {
                    self.srtp_failed += 1;
                    self.batch.set_len(i, 0);
                }
            }
        }
    }

    fn take(&mut self, got: usize, user_rx: u64, plan: &Plan) {
        for i in 0..got {
            let p = self.batch.packet(i);
            if p.len() < 44 || u32::from_be_bytes([p[12], p[13], p[14], p[15]]) != MAGIC {
                self.foreign += 1;
                continue;
            }
            let field = |a: usize| u64::from_be_bytes(p[a..a + 8].try_into().unwrap_or([0; 8]));
            let j = field(20);
            if j < plan.warm_n {
                self.warm += 1;
                continue;
            }
            if j >= plan.total() {
                self.foreign += 1;
                continue;
            }
            self.in_window += 1;
            let (tx_mono, tx_real) = (field(28), field(36));
            if self.lat_u.len() < self.lat_u.capacity() {
                self.lat_u.push(user_rx.saturating_sub(tx_mono));
            }
            match self.batch.rx_time_ns(i) {
                Some(k) if self.lat_k.len() < self.lat_k.capacity() => {
                    self.lat_k.push(k.saturating_sub(tx_real))
                }
                Some(_) => {}
                None => self.no_stamp += 1,
            }
        }
    }
}

/// Most packets sent back to back before looking at the receive side
/// again (when behind schedule), and most ready sockets read before
/// looking at the schedule again.
const SEND_BURST: u64 = 32;
const RECV_EVENTS: usize = 8;

/// Single-thread mode (the default): one busy loop sends each packet on
/// time and, between sends, polls the sockets (epoll with a zero timeout).
/// Nothing on the blaster's core ever sleeps or switches threads, so its
/// pacing holds at high rates and the relay never pays for waking it.
fn drive_loop(ep: &Endpoints, socks: &[UdpSocket], plan: Plan) -> std::io::Result<(Tx, Rx)> {
    let mut tx = Tx::new(&plan, ep);
    let mut rx = Rx::new(socks, &plan, ep)?;
    let mut j = 0;
    let total = plan.total();
    let mut next = plan.at(0);
    loop {
        let mut now = mono_ns(plan.epoch);
        let mut burst = 0;
        while j < total && next <= now && burst < SEND_BURST {
            tx.send(ep, socks, &plan, j, next);
            j += 1;
            next = plan.at(j);
            burst += 1;
            now = mono_ns(plan.epoch);
        }
        if j >= total && now >= plan.stop_at {
            return Ok((tx, rx));
        }
        // After the last send, wait for stragglers without spinning.
        let timeout = if j >= total { 1 } else { 0 };
        rx.poll(socks, &plan, RECV_EVENTS, timeout)?;
    }
}

/// Two-thread mode (`--threads`): a sender thread paced by spinning (it
/// sleeps only when the next packet is more than 300 µs away) and a
/// receiver thread blocked in epoll_wait. On a one-core blaster the two
/// preempt each other; kept for comparison.
fn drive_threads(ep: &Endpoints, socks: &[UdpSocket], plan: Plan) -> std::io::Result<(Tx, Rx)> {
    std::thread::scope(|s| {
        let rx = std::thread::Builder::new().name("rx".into()).spawn_scoped(
            s,
            move || -> std::io::Result<Rx> {
                let mut rx = Rx::new(socks, &plan, ep)?;
                loop {
                    let now = mono_ns(plan.epoch);
                    if now >= plan.stop_at {
                        return Ok(rx);
                    }
                    let wait = ((plan.stop_at - now) / 1_000_000).clamp(1, 20) as i32;
                    rx.poll(socks, &plan, 256, wait)?;
                }
            },
        )?;
        let mut tx = Tx::new(&plan, ep);
        for j in 0..plan.total() {
            let target = plan.at(j);
            let mut now = mono_ns(plan.epoch);
            if target > now + 300_000 {
                std::thread::sleep(Duration::from_nanos(target - now - 200_000));
                now = mono_ns(plan.epoch);
            }
            while now < target {
                std::hint::spin_loop();
                now = mono_ns(plan.epoch);
            }
            tx.send(ep, socks, &plan, j, target);
        }
        let rx = rx
            .join()
            .map_err(|_| std::io::Error::other("receiver panicked"))??;
        Ok((tx, rx))
    })
}

fn run() -> Result<(), String> {
    let args = parse_args();
    let epoch = Instant::now();
    let clk_tck = sys::clock_ticks();
    let mut ng = match args.ng {
        Some(a) => {
            let mut c = ng::Client::new(a).map_err(|e| e.to_string())?;
            c.request(&[("command", ng::Arg::S("ping"))])
                .map_err(|e| format!("ng ping to {a}: {e}"))?;
            Some(c)
        }
        None => None,
    };
    let mut ep = Endpoints::new(args.share).map_err(|e| format!("sockets: {e}"))?;
    if args.srtp {
        ep.srtp = Some(Vec::new());
    }
    // Each step's streams continue the sequence numbers of the last.
    let mut seq_base = 0u64;
    let soft_pid = args.relay_core.and_then(ksoftirqd);
    let result = (|| -> Result<(), String> {
        for &rate in &args.rates {
            let streams = (rate / PER_STREAM_PPS).max(1);
            let calls = streams.div_ceil(2) as usize;
            let setup = Instant::now();
            ensure_calls(&mut ep, calls, &mut ng)
                .map_err(|e| format!("setting up call {}: {e}", ep.calls_ready))?;
            let setup_ms = setup.elapsed().as_millis();
            let ep = &ep;
            let socks = ep.active(calls);
            let warm_n = rate * args.warmup_ms / 1000;
            let meas_n = rate * args.secs;
            let mut plan = Plan {
                epoch,
                t0: mono_ns(epoch) + 50_000_000,
                rate,
                streams,
                warm_n,
                meas_n,
                stop_at: 0,
                seq_base,
            };
            seq_base += (warm_n + meas_n) / streams + 1;
            let (win_start, win_end) = (plan.at(warm_n), plan.at(warm_n + meas_n));
            plan.stop_at = win_end + args.drain_ms * 1_000_000;
            let (tx, rx, cpu, cores, wall, me, soft_ns) = std::thread::scope(|s| {
                let blaster = std::thread::Builder::new()
                    .name("blast".into())
                    .spawn_scoped(s, move || {
                        if args.threads {
                            drive_threads(ep, socks, plan)
                        } else {
                            drive_loop(ep, socks, plan)
                        }
                    })
                    .map_err(|e| e.to_string())?;
                // The relay's CPU and the cores' use over the measured
                // window (+2 ms for the last packets to get through).
                let sleep_until = |t: u64| {
                    let now = mono_ns(epoch);
                    if t > now {
                        std::thread::sleep(Duration::from_nanos(t - now));
                    }
                };
                sleep_until(win_start);
                let cores_before = read_cores();
                let me_before = read_cpu(std::process::id());
                let relay_before = args.relay_pid.map(read_cpu);
                let soft_before = soft_pid.map(read_cpu);
                let t_before = mono_ns(epoch);
                sleep_until(win_end + 2_000_000);
                let wall = mono_ns(epoch) - t_before;
                let cpu = match (args.relay_pid, relay_before) {
                    (Some(pid), Some(before)) => Some((before, read_cpu(pid))),
                    _ => None,
                };
                let cores = core_shares(&cores_before, &read_cores());
                let soft_ns = match (soft_pid, soft_before) {
                    (Some(p), Some(b)) => Some(read_cpu(p).sched_ns.saturating_sub(b.sched_ns)),
                    _ => None,
                };
                // Ticks: they include the threads that have ended.
                let me = read_cpu(std::process::id())
                    .ticks
                    .saturating_sub(me_before.ticks) as f64
                    * 1e9
                    / clk_tck as f64;
                let (tx, rx) = blaster
                    .join()
                    .map_err(|_| "blaster panicked".to_string())?
                    .map_err(|e| format!("blaster: {e}"))?;
                Ok::<_, String>((tx, rx, cpu, cores, wall, me, soft_ns))
            })?;
            let Tx {
                mut lateness,
                send_errors,
                ..
            } = tx;
            let Rx {
                in_window,
                warm,
                foreign,
                no_stamp,
                mut lat_k,
                mut lat_u,
                srtp_failed,
                ..
            } = rx;
            let per = |ns: f64| {
                if in_window > 0 {
                    ns / in_window as f64
                } else {
                    0.0
                }
            };
            let machine = format!(
                "{{\"core_busy\":{},\"core_softirq\":{},\"blaster_core_share\":{:.3}}}",
                json_list(cores.iter().map(|c| c.0)),
                json_list(cores.iter().map(|c| c.1)),
                me / wall.max(1) as f64
            );
            let lost = meas_n.saturating_sub(in_window);
            // The relay's CPU time: its threads' run time (softirq work
            // its sends do inline is in it: no IRQ time accounting here)
            // and, with --relay-core, ksoftirqd's time on that core (the
            // softirq work deferred there; only the relay runs on it).
            // The per-core shares from /proc/stat are tick-sampled: a noise
            // indicator, not a measure.
            let cpu_json = match cpu {
                Some((b, a)) => {
                    let ticks = a.ticks.saturating_sub(b.ticks);
                    let sched = a.sched_ns.saturating_sub(b.sched_ns);
                    let soft = soft_ns.unwrap_or(0);
                    format!(
                        ",\"cpu\":{{\"ticks\":{ticks},\"clk_tck\":{clk_tck},\"sched_ns\":{sched},\"ksoftirqd_ns\":{soft},\"wall_ns\":{wall},\"threads\":{},\"ns_per_packet_sched\":{:.1},\"ns_per_packet_ticks\":{:.1},\"ns_per_packet_total\":{:.1},\"core_share\":{:.3},\"core_share_total\":{:.3}}}",
                        a.threads,
                        per(sched as f64),
                        per(ticks as f64 * 1e9 / clk_tck as f64),
                        per((sched + soft) as f64),
                        sched as f64 / wall.max(1) as f64,
                        (sched + soft) as f64 / wall.max(1) as f64,
                    )
                }
                None => String::new(),
            };
            println!(
                "{{\"label\":\"{}\",\"mode\":\"{}\",\"share\":{},\"rate\":{rate},\"calls\":{calls},\"streams\":{streams},\"secs\":{},\"setup_ms\":{setup_ms},\"sent\":{meas_n},\"received\":{in_window},\"lost\":{lost},\"warmup_sent\":{warm_n},\"warmup_received\":{warm},\"foreign\":{foreign},\"no_stamp\":{no_stamp},\"srtp\":{},\"srtp_failed\":{srtp_failed},\"send_errors\":{send_errors},\"lat_ns\":{},\"lat_user_ns\":{},\"send_late_ns\":{},\"machine\":{machine}{cpu_json}}}",
                args.label,
                if args.threads { "threads" } else { "loop" },
                args.share,
                args.secs,
                args.srtp,
                pct_json(pct(&mut lat_k)),
                pct_json(pct(&mut lat_u)),
                pct_json(pct(&mut lateness)),
            );
            eprintln!(
                "rtpblast {}: {rate} pps, {calls} calls: lost {lost}/{meas_n}, latency p50 {:.1} µs",
                args.label,
                pct(&mut lat_k)[0] as f64 / 1000.0
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    })();
    if let Some(c) = ng.as_mut() {
        let failed = delete_calls(ep.calls_ready, c);
        eprintln!(
            "rtpblast {}: deleted {} calls over ng ({failed} failed)",
            args.label,
            ep.calls_ready - failed
        );
    }
    result
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtpblast: {e}");
            ExitCode::FAILURE
        }
    }
}
