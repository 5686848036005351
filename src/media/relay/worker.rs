//! One relay worker: an `epoll` loop (mio) over the sockets of the
//! sessions it owns. Everything on the per-packet path — the socket table,
//! latching, statistics — belongs to this thread alone.
//!
//! The sockets are edge-triggered, so a ready socket is read until it is
//! empty. Reads go through [`Batch`] (`recvmmsg`): one call returns every
//! datagram waiting, up to a batch, and a short batch proves the socket
//! drained, so a packet costs one receive call instead of two (the packet,
//! then an empty `recvfrom`). Only a full batch is followed by another
//! read. Each datagram of a batch is then handled exactly as if it had
//! been read alone: pending commands first, then [`Worker::relay`].

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use super::source::SourcePolicy;
use super::totals::MediaTotals;
use super::{Leg, RelayEvent, RelayMetrics, Remote, SessionStats, SrtpRole};
use crate::media::rtp::{is_rtcp, RtpHeader};
use crate::media::srtp::SrtpContext;
use crate::media::stats::StreamStats;
use crate::sip::transport::batch::{Batch, MAX_DATAGRAM};

/// Datagrams a worker takes per receive call at most: plenty where a
/// socket rarely holds two packets; a backlog (the worker was busy) takes
/// one call per eight (see `sip::transport::batch`).
pub(super) const BATCH: usize = 8;

/// The worker's receive buffers (512 KiB, allocated once per worker).
type RelayBatch = Batch<BATCH>;

const WAKER: Token = Token(usize::MAX);

/// The least time between two panics of one worker (see `Worker::run`).
const PANIC_PAUSE: Duration = Duration::from_secs(1);

/// How often idle sessions are looked for.
const TIMEOUT_SCAN: Duration = Duration::from_millis(500);

/// A control-plane request.
pub(super) enum Command {
    Add {
        id: u64,
        sockets: [(UdpSocket, Option<UdpSocket>); 2],
    },
    Remote {
        id: u64,
        leg: Leg,
        remote: Remote,
        relatch: bool,
    },
    Srtp {
        id: u64,
        leg: Leg,
        role: SrtpRole,
        context: Option<Box<SrtpContext>>,
    },
    SrtpRequired {
        id: u64,
        leg: Leg,
        required: bool,
    },
    Source {
        id: u64,
        leg: Leg,
        policy: SourcePolicy,
    },
    Stats {
        id: u64,
        reply: mpsc::SyncSender<Option<SessionStats>>,
    },
    Delete {
        id: u64,
        reply: mpsc::SyncSender<Option<SessionStats>>,
    },
    /// The worker's [`MediaTotals`]: ended sessions and live ones.
    Totals {
        reply: mpsc::SyncSender<MediaTotals>,
    },
    Stop,
}

/// One socket: a leg's RTP or RTCP port.
struct Endpoint {
    socket: mio::net::UdpSocket,
    session: usize,
    leg: Leg,
    rtcp: bool,
    /// Bound to an IPv6 address (sources come out as IPv6).
    ipv6: bool,
}

#[derive(Default)]
struct LegState {
    rtp: usize,
    rtcp: Option<usize>,
    remote: Option<Remote>,
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    /// Which sources may latch the leg (see `source`); `None`: the first
    /// packet from anywhere (the ng protocol, unit tests).
    policy: Option<SourcePolicy>,
    stats: StreamStats,
    /// SRTP termination on this leg (none: RTP, or SRTP passed through).
    srtp: LegSrtp,
}

/// A leg's SRTP contexts (see [`SrtpRole`]).
#[derive(Default)]
struct LegSrtp {
    /// The decrypt context tried first.
    inbound: Option<Box<SrtpContext>>,
    /// During a key change, the other decrypt context: the far end may
    /// go on sending with its old key until its offer is answered, or for
    /// good if that offer failed (RFC 4568 §7.1.4). Tried when the first
    /// one refuses a packet.
    fallback: Option<Box<SrtpContext>>,
    /// `fallback` holds the new key (the old one opened the last packets).
    fallback_newer: bool,
    outbound: Option<Box<SrtpContext>>,
    /// The leg speaks SRTP but its key is not known yet (the answer that
    /// names it has not come): its packets are dropped, not relayed
    /// unchecked.
    required: bool,
}

impl LegSrtp {
    /// A new decrypt key: tried first; the old one stays until a packet
    /// under the new one arrives.
    fn rekey(&mut self, ctx: Option<Box<SrtpContext>>) {
        match ctx {
            Some(ctx) => self.fallback = self.inbound.replace(ctx),
            None => (self.inbound, self.fallback) = (None, None),
        }
        self.fallback_newer = false;
    }

    /// Opens an SRTP or SRTCP packet in place: its plain length; `None`
    /// when no context opens it; the length unchanged when the leg does
    /// not terminate SRTP.
    fn open(&mut self, buf: &mut [u8], rtcp: bool) -> Option<usize> {
        let open = |ctx: &mut SrtpContext, buf: &mut [u8]| {
            if rtcp {
                ctx.unprotect_rtcp(buf)
            } else {
                ctx.unprotect_rtp(buf)
            }
        };
        let Some(ctx) = self.inbound.as_mut() else {
            return (!self.required).then_some(buf.len());
        };
        match open(ctx, buf) {
            Ok(n) => {
                if !self.fallback_newer {
                    self.fallback = None; // the new key is in use: the old one goes
                }
                Some(n)
            }
            Err(crate::media::srtp::SrtpError::Auth) => {
                let other = self.fallback.as_mut()?;
                let n = open(other, buf).ok()?;
                if self.fallback_newer {
                    self.inbound = self.fallback.take(); // switched to the new key
                    self.fallback_newer = false;
                } else {
                    // Still the old key: try it first from now on.
                    std::mem::swap(&mut self.inbound, &mut self.fallback);
                    self.fallback_newer = true;
                }
                Some(n)
            }
            Err(_) => None,
        }
    }
}

impl LegState {
    /// Where RTP (or RTCP) for this leg's far end goes: the latched source,
    /// else the SDP's address (RTCP: its a=rtcp, else RTP's port + 1, or
    /// the RTP port itself with rtcp-mux).
    fn destination(&self, rtcp: bool) -> Option<SocketAddr> {
        if !rtcp {
            return self.latched_rtp.or(self.remote.map(|r| r.rtp));
        }
        if let Some(a) = self.latched_rtcp {
            return Some(a);
        }
        let remote = self.remote?;
        match (remote.rtcp, self.rtcp) {
            (Some(a), _) => Some(a),
            (None, None) => self.latched_rtp.or(Some(remote.rtp)),
            (None, Some(_)) => {
                let mut a = remote.rtp;
                a.set_port(a.port().checked_add(1)?);
                Some(a)
            }
        }
    }
}

struct SessionState {
    id: u64,
    legs: [LegState; 2],
    created: Instant,
    last_packet: Option<Instant>,
    timed_out: bool,
    timeouts: u32,
    /// Reported silent for the reclaim time (reported once).
    reclaimed: bool,
}

impl SessionState {
    fn stats(&self, now: Instant) -> SessionStats {
        SessionStats {
            a: self.legs[0].stats.clone(),
            b: self.legs[1].stats.clone(),
            idle_ms: self
                .last_packet
                .map(|t| now.duration_since(t).as_millis() as u64),
            timeouts: self.timeouts,
        }
    }
}

/// A slab: stable indexes, reused slots.
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    fn new() -> Slab<T> {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
        }
    }

    fn insert(&mut self, t: T) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.items[i] = Some(t);
                i
            }
            None => {
                self.items.push(Some(t));
                self.items.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) -> Option<T> {
        let t = self.items.get_mut(i)?.take();
        if t.is_some() {
            self.free.push(i);
        }
        t
    }

    fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)?.as_ref()
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i)?.as_mut()
    }
}

pub(super) struct Worker {
    poll: Poll,
    waker: Arc<Waker>,
    commands: mpsc::Receiver<Command>,
    events_out: mpsc::Sender<RelayEvent>,
    endpoints: Slab<Endpoint>,
    sessions: Slab<SessionState>,
    by_id: HashMap<u64, usize>,
    media_timeout: Duration,
    /// See [`super::RelayConfig::reclaim_after`].
    reclaim_after: Option<Duration>,
    /// See [`super::RelayConfig::busy_poll`].
    busy_poll: Duration,
    metrics: Arc<RelayMetrics>,
    epoch: Instant,
    /// Set by [`Command::Stop`] or when the control plane is gone.
    stopped: bool,
    /// This worker's number (logs, [`RelayEvent::WorkerFailed`]).
    index: usize,
    /// Sessions failed by a panic (see [`Worker::run`]): their last
    /// statistics, until the control plane deletes them.
    failed: HashMap<u64, SessionStats>,
    /// What the sessions this worker ended had carried (see `totals`).
    ended: MediaTotals,
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl Worker {
    pub(super) fn new(
        index: usize,
        commands: mpsc::Receiver<Command>,
        events_out: mpsc::Sender<RelayEvent>,
        media_timeout: Duration,
        reclaim_after: Option<Duration>,
        busy_poll: Duration,
        metrics: Arc<RelayMetrics>,
    ) -> std::io::Result<Worker> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Worker {
            poll,
            waker,
            commands,
            events_out,
            endpoints: Slab::new(),
            sessions: Slab::new(),
            by_id: HashMap::new(),
            media_timeout,
            reclaim_after,
            busy_poll,
            metrics,
            epoch: Instant::now(),
            stopped: false,
            index,
            failed: HashMap::new(),
            ended: MediaTotals::default(),
        })
    }

    pub(super) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The worker thread's body: [`Worker::serve`] under supervision.
    ///
    /// A panic in the loop (a bug on the per-packet path, an arithmetic
    /// overflow in a debug build, an injected fault: see [`super::fault`])
    /// must not leave its calls silent with their ports held and the
    /// control plane's commands unanswered, nor cost the relay a thread.
    /// The panic is caught here; the state it interrupted is not trusted
    /// (a session may be half-updated), so every session of this worker is
    /// failed: its sockets closed (the ports return to the pool), its last
    /// statistics kept for the control plane's delete, and one
    /// [`RelayEvent::WorkerFailed`] naming them sent, on which the control
    /// plane ends those calls (a BYE to each side). The worker then serves
    /// again, empty, on the same thread and command channel, so new calls
    /// keep being placed on it. A bug that panics at once again (a crash
    /// loop) is held to one panic per [`PANIC_PAUSE`], not a hot spin.
    /// This relies on `panic = "unwind"`, the profile default (Cargo.toml
    /// sets no `panic`).
    pub(super) fn run(mut self) {
        let mut last_panic: Option<Instant> = None;
        loop {
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve()));
            match served {
                Ok(()) => return,
                Err(panic) => self.fail_sessions(panic_text(panic.as_ref())),
            }
            if last_panic.is_some_and(|t| t.elapsed() < PANIC_PAUSE) {
                std::thread::sleep(PANIC_PAUSE);
            }
            last_panic = Some(Instant::now());
        }
    }

    /// Fails every session after a panic (see [`Worker::run`]). Touches
    /// only the slabs' plain data, nothing the panic may have left midway.
    fn fail_sessions(&mut self, why: &str) {
        let now = Instant::now();
        let sessions = std::mem::replace(&mut self.sessions, Slab::new());
        // Dropping the sockets closes them: out of epoll, ports free.
        self.endpoints = Slab::new();
        self.by_id.clear();
        let mut ids = Vec::new();
        for s in sessions.items.into_iter().flatten() {
            self.failed.insert(s.id, s.stats(now));
            ids.push(s.id);
        }
        self.metrics.worker_panics.fetch_add(1, Relaxed);
        self.metrics
            .sessions_failed
            .fetch_add(ids.len() as u64, Relaxed);
        tracing::error!(
            worker = self.index,
            sessions = ids.len(),
            panic = why,
            "media relay worker panicked: its sessions are failed, the worker serves again"
        );
        let _ = self.events_out.send(RelayEvent::WorkerFailed {
            worker: self.index,
            sessions: ids,
        });
    }

    /// The event loop; returns on [`Command::Stop`] or when the control
    /// plane is gone.
    fn serve(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut batch = RelayBatch::new(MAX_DATAGRAM);
        let mut last_scan = Instant::now();
        // Busy polling: poll without sleeping until then (see `busy_poll`).
        let mut spin_until: Option<Instant> = None;
        loop {
            let timeout = match spin_until {
                Some(t) if Instant::now() < t => Duration::ZERO,
                _ => TIMEOUT_SCAN,
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "media worker poll failed; stopping");
                return;
            }
            // Commands first: a remote address set before a packet was sent
            // applies to that packet (one cheap channel check per wake-up).
            if !self.commands_pending() {
                return;
            }
            let mut packets = false;
            for ev in events.iter() {
                if ev.token() != WAKER {
                    packets = true;
                    self.drain(ev.token().0, &mut batch);
                }
            }
            if self.stopped {
                return;
            }
            let now = Instant::now();
            if packets && !self.busy_poll.is_zero() {
                spin_until = Some(now + self.busy_poll);
            }
            if now.duration_since(last_scan) >= TIMEOUT_SCAN {
                last_scan = now;
                self.scan_timeouts(now);
            }
        }
    }

    /// Reads every datagram waiting on one socket (edge-triggered) and
    /// relays it: batches until one comes back short (the socket is empty)
    /// or the socket says `WouldBlock`.
    fn drain(&mut self, token: usize, batch: &mut RelayBatch) {
        loop {
            if self.stopped {
                return;
            }
            let Some(ep) = self.endpoints.get(token) else {
                return;
            };
            let (session, leg, rtcp_port) = (ep.session, ep.leg, ep.rtcp);
            let Some(id) = self.sessions.get(session).map(|s| s.id) else {
                return;
            };
            let n = match batch.recv(&ep.socket, ep.ipv6) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // Interrupted, or an ICMP error for an earlier send (which
                // the relay's unconnected sockets do not get): keep going.
                Err(_) => continue,
            };
            for i in 0..n {
                // A command sent before this packet applies to it (a
                // relatch, a new remote); the check is one atomic load when
                // none waits.
                if !self.commands_pending() {
                    return;
                }
                // A delete among them closed this socket: the rest of the
                // batch goes with it (as it would have in the socket), and
                // the session's slot may already hold another session.
                if self.sessions.get(session).map(|s| s.id) != Some(id) {
                    return;
                }
                let Some((buf, d)) = batch.get_mut(i) else {
                    break;
                };
                if d.truncated {
                    if let Some(s) = self.sessions.get_mut(session) {
                        s.legs[leg as usize].stats.malformed += 1;
                    }
                    continue;
                }
                self.relay(session, leg, rtcp_port, buf, d.len, d.src);
            }
            if n < BATCH {
                return;
            }
        }
    }

    /// The per-packet path: validate, check or latch the source, decrypt
    /// (SRTP terminated on this leg), count, encrypt (SRTP terminated on
    /// the other leg) and send out of the other leg. `buf` holds the
    /// packet's `len` bytes and room after them for an SRTP tag.
    fn relay(
        &mut self,
        session: usize,
        leg: Leg,
        rtcp_port: bool,
        buf: &mut [u8],
        mut len: usize,
        src: SocketAddr,
    ) {
        let now = Instant::now();
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        // The RTP header and the first 8 bytes of RTCP are in the clear in
        // SRTP and SRTCP too (RFC 3711 §3.1, §3.4).
        let rtcp = rtcp_port || is_rtcp(&buf[..len]);
        let me = &mut s.legs[leg as usize];
        if rtcp && !(len >= 8 && buf[0] >> 6 == 2) {
            me.stats.malformed += 1;
            return;
        }
        let latched = if rtcp {
            me.latched_rtcp
        } else {
            me.latched_rtp
        };
        // Strict-source latching (`source`): a latched leg takes only its
        // source; one not latched yet only a source its policy admits. The
        // latched path costs one comparison, as before.
        let foreign = match latched {
            Some(a) => a != src,
            None => me
                .policy
                .as_ref()
                .is_some_and(|p| !p.admits(src, me.remote.as_ref())),
        };
        if foreign {
            me.stats.dropped_source += 1;
            if let Some(side) = me.policy.as_ref().map(|p| p.side) {
                if let Some(c) = self.metrics.foreign.get(side) {
                    c.fetch_add(1, Relaxed);
                }
            }
            return;
        }
        // Decrypt before latching: only an authenticated packet may latch
        // (a malformed one on an SRTP leg counts as refused by SRTP).
        match me.srtp.open(&mut buf[..len], rtcp) {
            Some(n) => len = n,
            None => {
                me.stats.srtp_failed += 1;
                return;
            }
        }
        // The one parse of the RTP header: validity, then statistics.
        let rtp = if rtcp {
            None
        } else {
            match RtpHeader::parse(&buf[..len]) {
                Some(h) => Some(h),
                None => {
                    me.stats.malformed += 1;
                    return;
                }
            }
        };
        if latched.is_none() {
            if rtcp {
                me.latched_rtcp = Some(src);
            } else {
                me.latched_rtp = Some(src);
                me.stats.latches += 1;
            }
        }
        match &rtp {
            Some(h) => {
                let at = now.duration_since(self.epoch).as_micros() as u64;
                me.stats.on_rtp(h, len, at);
            }
            None => me.stats.on_rtcp(len),
        }
        s.last_packet = Some(now);
        s.timed_out = false;
        s.reclaimed = false;
        let out = &mut s.legs[leg.other() as usize];
        if let Some(ctx) = out.srtp.outbound.as_mut() {
            let secured = if rtcp {
                ctx.protect_rtcp(buf, len)
            } else {
                ctx.protect_rtp(buf, len)
            };
            match secured {
                Ok(n) => len = n,
                Err(_) => {
                    s.legs[leg as usize].stats.srtp_failed += 1;
                    return;
                }
            }
        }
        let out = &s.legs[leg.other() as usize];
        let out_token = match (rtcp, out.rtcp) {
            (true, Some(t)) => t,
            _ => out.rtp,
        };
        let sent = out.destination(rtcp).and_then(|dest| {
            let ep = self.endpoints.get(out_token)?;
            ep.socket.send_to(&buf[..len], dest).ok()
        });
        if sent.is_none() {
            if let Some(s) = self.sessions.get_mut(session) {
                s.legs[leg as usize].stats.dropped_send += 1;
            }
        }
    }

    /// Applies queued commands; `false` on Stop or when the control plane
    /// has gone.
    fn commands_pending(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        loop {
            match self.commands.try_recv() {
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                    self.stopped = true;
                    return false;
                }
                Err(mpsc::TryRecvError::Empty) => return true,
                Ok(cmd) => self.apply(cmd),
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Add { id, sockets } => self.add(id, sockets, now),
            Command::Remote {
                id,
                leg,
                remote,
                relatch,
            } => {
                if let Some(s) = self.by_id.get(&id).and_then(|&i| self.sessions.get_mut(i)) {
                    let l = &mut s.legs[leg as usize];
                    // An SDP address outside the side's ACL is neither a
                    // destination nor (in `sdp` mode) a source.
                    let admitted = l
                        .policy
                        .as_ref()
                        .is_none_or(|p| p.admits_destination(remote.rtp.ip()));
                    if !admitted {
                        tracing::warn!(session = id, leg = ?leg, remote = %remote.rtp, "SDP address outside the side's ACL: not used for media");
                    }
                    l.remote = admitted.then_some(remote);
                    if relatch {
                        l.latched_rtp = None;
                        l.latched_rtcp = None;
                    }
                }
            }
            Command::Srtp {
                id,
                leg,
                role,
                context,
            } => {
                if let Some(s) = self.by_id.get(&id).and_then(|&i| self.sessions.get_mut(i)) {
                    let srtp = &mut s.legs[leg as usize].srtp;
                    match role {
                        SrtpRole::Decrypt => srtp.rekey(context),
                        SrtpRole::Encrypt => srtp.outbound = context,
                    }
                }
            }
            Command::Source { id, leg, policy } => {
                if let Some(s) = self.by_id.get(&id).and_then(|&i| self.sessions.get_mut(i)) {
                    s.legs[leg as usize].policy = Some(policy);
                }
            }
            Command::SrtpRequired { id, leg, required } => {
                if let Some(s) = self.by_id.get(&id).and_then(|&i| self.sessions.get_mut(i)) {
                    s.legs[leg as usize].srtp.required = required;
                }
            }
            Command::Stats { id, reply } => {
                let stats = self
                    .by_id
                    .get(&id)
                    .and_then(|&i| self.sessions.get(i))
                    .map(|s| s.stats(now))
                    .or_else(|| self.failed.get(&id).cloned());
                let _ = reply.send(stats);
            }
            Command::Delete { id, reply } => {
                let stats = self
                    .remove(id)
                    .map(|s| s.stats(now))
                    .or_else(|| self.failed.remove(&id));
                if let Some(stats) = &stats {
                    self.ended.add_ended(stats);
                }
                let _ = reply.send(stats);
            }
            Command::Totals { reply } => {
                let mut totals = self.ended.clone();
                for s in self.sessions.items.iter().flatten() {
                    totals.add_live(&s.stats(now));
                }
                for s in self.failed.values() {
                    totals.add_live(s);
                }
                let _ = reply.send(totals);
            }
            Command::Stop => {}
        }
    }

    fn add(&mut self, id: u64, sockets: [(UdpSocket, Option<UdpSocket>); 2], now: Instant) {
        let slot = self.sessions.insert(SessionState {
            id,
            legs: [LegState::default(), LegState::default()],
            created: now,
            last_packet: None,
            timed_out: false,
            timeouts: 0,
            reclaimed: false,
        });
        for (i, (rtp, rtcp)) in sockets.into_iter().enumerate() {
            let leg = if i == 0 { Leg::A } else { Leg::B };
            let rtp = self.register(rtp, slot, leg, false);
            let rtcp = rtcp.and_then(|s| self.register(s, slot, leg, true));
            if let Some(s) = self.sessions.get_mut(slot) {
                s.legs[i].rtp = rtp.unwrap_or(usize::MAX);
                s.legs[i].rtcp = rtcp;
            }
        }
        self.by_id.insert(id, slot);
    }

    fn register(
        &mut self,
        socket: UdpSocket,
        session: usize,
        leg: Leg,
        rtcp: bool,
    ) -> Option<usize> {
        if let Err(e) = socket.set_nonblocking(true) {
            tracing::warn!(error = %e, "media socket not usable");
            return None;
        }
        let ipv6 = match socket.local_addr() {
            Ok(a) => a.is_ipv6(),
            Err(e) => {
                tracing::warn!(error = %e, "media socket not usable");
                return None;
            }
        };
        let socket = mio::net::UdpSocket::from_std(socket);
        let token = self.endpoints.insert(Endpoint {
            socket,
            session,
            leg,
            rtcp,
            ipv6,
        });
        let ep = self.endpoints.get_mut(token)?;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut ep.socket, Token(token), Interest::READABLE)
        {
            tracing::warn!(error = %e, "media socket not registered");
            self.endpoints.remove(token);
            return None;
        }
        Some(token)
    }

    fn remove(&mut self, id: u64) -> Option<SessionState> {
        let slot = self.by_id.remove(&id)?;
        let s = self.sessions.remove(slot)?;
        for leg in &s.legs {
            for token in std::iter::once(leg.rtp).chain(leg.rtcp) {
                if let Some(mut ep) = self.endpoints.remove(token) {
                    let _ = self.poll.registry().deregister(&mut ep.socket);
                }
            }
        }
        Some(s)
    }

    /// Reports sessions idle in both directions for the media timeout,
    /// and once for the reclaim time (the control plane then ends them).
    fn scan_timeouts(&mut self, now: Instant) {
        if super::fault::injected_panic_due() {
            panic!("injected fault: media worker {} panics", self.index);
        }
        for s in self.sessions.items.iter_mut().flatten() {
            let since = s.last_packet.unwrap_or(s.created);
            let silent = now.duration_since(since);
            if !s.reclaimed && self.reclaim_after.is_some_and(|r| silent >= r) {
                s.reclaimed = true;
                let _ = self.events_out.send(RelayEvent::Silent { session: s.id });
            }
            if !s.timed_out && now.duration_since(since) >= self.media_timeout {
                s.timed_out = true;
                s.timeouts += 1;
                self.metrics.media_timeouts.fetch_add(1, Relaxed);
                let _ = self
                    .events_out
                    .send(RelayEvent::MediaTimeout { session: s.id });
            }
        }
    }
}
