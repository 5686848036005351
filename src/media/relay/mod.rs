//! The RTP/RTCP relay: the data plane of media anchoring.
//!
//! A call's media stream has two legs: leg A faces the side that made the
//! offer (the carrier, for inbound calls), leg B the other side (the PBX).
//! Each leg owns a local port pair from the configured range — RTP on an
//! even port, RTCP on the next (RFC 3550 §11), or RTP and RTCP on one port
//! with rtcp-mux (RFC 5761). A packet arriving on leg A goes out of leg B's
//! socket to leg B's remote address, and the other way round.
//!
//! Each leg latches to the source of the first valid packet it receives
//! among the sources its [`SourcePolicy`] admits (`source`: the SDP's
//! address, or the side's ACL networks — never a stranger spraying the port
//! range), then drops packets from anywhere else and counts them as
//! foreign. Before a leg has latched, packets towards it go to the address
//! its SDP named.
//!
//! Packets never touch the async runtime: worker threads each own a share
//! of the sessions and run their own `epoll` loop (mio) over those
//! sessions' sockets; both legs of a session live in one worker, so the
//! per-packet path takes no lock and shares no atomic. The control plane
//! (this module's [`Relay`]) binds the sockets, hands them to a worker over
//! a channel and wakes it; statistics come back the same way. A worker
//! reads each ready socket with `recvmmsg` (one call per packet in
//! relay traffic, see `sip::transport::batch`). A panic in a worker is caught there: its
//! sessions are failed and reported ([`RelayEvent::WorkerFailed`]) for the
//! control plane to end their calls, and the worker serves on (see
//! `worker::Worker::run`; tests inject the panic through [`fault`]).

pub mod fault;
pub mod source;
mod totals;
mod worker;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::srtp::SrtpContext;
use super::stats::StreamStats;
pub use source::{LatchMode, SourcePolicy};
pub use totals::{MediaTotals, JITTER_BUCKETS};
use worker::{Command, Worker};

/// Why the relay could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("no free media ports in {min}-{max}")]
    NoPorts { min: u16, max: u16 },
    #[error("unknown media session {0}")]
    UnknownSession(u64),
    #[error("media relay worker stopped")]
    WorkerGone,
    #[error("media relay: {0}")]
    Io(#[from] std::io::Error),
}

/// Relay settings (`[media]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Local address the media sockets bind to.
    pub bind: IpAddr,
    /// Port range for media (inclusive); RTP ports are even.
    pub port_min: u16,
    pub port_max: u16,
    /// Worker threads (each an epoll loop over its sessions' sockets).
    pub workers: usize,
    /// A session with no packet in either direction for this long is
    /// reported as timed out.
    pub media_timeout: Duration,
    /// A session with no packet in either direction for this long is
    /// reported as [`RelayEvent::Silent`] (once), for the control plane to
    /// end it and free its ports; `None`: never.
    pub reclaim_after: Option<Duration>,
    /// CPU cores the workers are pinned to, worker `i` to `cpus[i %
    /// len]`; empty: not pinned.
    pub cpus: Vec<usize>,
    /// Adaptive busy polling: after a wake-up that found packets, a worker
    /// keeps polling without sleeping for this long (each packet found
    /// restarts the window) before it sleeps again. Zero: off. It trades
    /// CPU for latency — the wake-up of an idle core (tens of µs on a VM)
    /// is skipped while traffic flows; an idle relay never spins.
    pub busy_poll: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            port_min: 30_000,
            port_max: 39_999,
            workers: 1,
            media_timeout: Duration::from_secs(60),
            reclaim_after: Some(Duration::from_secs(120)),
            cpus: Vec::new(),
            busy_poll: Duration::ZERO,
        }
    }
}

/// Which side of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Leg {
    A = 0,
    B = 1,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }
}

/// A session's handle: its id and the local ports of its legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub id: u64,
    /// Local (RTP, RTCP) ports per leg; RTCP equals RTP with rtcp-mux.
    pub ports: [(u16, u16); 2],
}

/// Where a leg's far end sends and receives, from its SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    pub rtp: SocketAddr,
    /// `None`: RTCP on the RTP port (rtcp-mux) or the next one.
    pub rtcp: Option<SocketAddr>,
}

/// What one session relayed, per leg (what arrived on that leg).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SessionStats {
    pub a: StreamStats,
    pub b: StreamStats,
    /// Milliseconds since the last packet on either leg (`None`: none yet).
    pub idle_ms: Option<u64>,
    /// Times the stream went silent in both directions for the media
    /// timeout (it counts again only after packets resumed).
    pub timeouts: u32,
}

/// SRTP termination on one leg (RFC 3711, keyed by SDES, RFC 4568):
/// what arrives on the leg is authenticated and decrypted with the leg's
/// [`SrtpRole::Decrypt`] context (the key the far end announced), what
/// leaves through it is encrypted with its [`SrtpRole::Encrypt`] context
/// (the key the relay announced to it). Neither: the leg relays packets as
/// they are (RTP, or SRTP passed through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpRole {
    Decrypt,
    Encrypt,
}

/// Something the data plane tells the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// No packet in either direction for the configured time.
    MediaTimeout { session: u64 },
    /// No packet in either direction for the reclaim time: the session's
    /// ports should be freed.
    Silent { session: u64 },
    /// A worker panicked (see `worker::Worker::run`): these sessions
    /// were failed — their sockets closed, no packet relayed any more —
    /// and await their delete; their calls should be ended.
    WorkerFailed { worker: usize, sessions: Vec<u64> },
}

/// Counters over all sessions, for `/metrics`.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    pub sessions_created: AtomicU64,
    pub sessions_deleted: AtomicU64,
    pub media_timeouts: AtomicU64,
    /// Packets dropped because their source may not latch the leg or is
    /// not its latched source, per side the leg faces (trunk, PBX); live.
    pub foreign: [AtomicU64; 2],
    /// Sessions refused because the port range had no free pair.
    pub ports_exhausted: AtomicU64,
    /// Calls whose media the control plane ended after they were silent
    /// for the reclaim time.
    pub reclaimed: AtomicU64,
    /// Worker panics caught (each failed that worker's sessions).
    pub worker_panics: AtomicU64,
    /// Sessions failed by a worker panic.
    pub sessions_failed: AtomicU64,
    /// Offers the anchor refused, by [`OfferRefusal`] (in its order).
    pub offers_refused: [AtomicU64; 4],
}

/// Why an offer got no relay ports (`callgate_media_offers_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferRefusal {
    /// The port range had no free pair.
    Ports = 0,
    /// The signalling source held its share (`max_ports_per_source`).
    SourceCap = 1,
    /// More m-lines than `max_streams`.
    Streams = 2,
    /// SDP the anchor could not read or rewrite.
    Sdp = 3,
}

impl OfferRefusal {
    const LABELS: [&'static str; 4] = ["ports", "source_cap", "streams", "sdp"];
}

/// Even ports of the range, handed out from a random place in it: a
/// stranger cannot guess the next call's relay ports from the last one's
/// (rtpengine does the same), and a port just released is reused only by
/// chance, one in the range's number of pairs.
struct PortPool {
    min: u16,
    max: u16,
}

impl PortPool {
    fn new(min: u16, max: u16) -> PortPool {
        let min = min + (min % 2);
        PortPool { min, max }
    }

    /// Binds an RTP socket on a free even port and, unless `mux`, an RTCP
    /// socket on the next port; ports in use by anything are skipped,
    /// looking on from a random even port and wrapping around the range.
    fn bind_pair(
        &mut self,
        ip: IpAddr,
        mux: bool,
    ) -> Result<(UdpSocket, Option<UdpSocket>), RelayError> {
        let span = u32::from(self.max.saturating_sub(self.min)) / 2 + 1;
        let start = fastrand::u32(..span);
        for k in 0..span {
            let slot = (start + k) % span;
            let Some(port) = u16::try_from(u32::from(self.min) + 2 * slot).ok() else {
                continue;
            };
            if port.checked_add(1).is_none_or(|p| p > self.max) {
                continue;
            }
            let Ok(rtp) = UdpSocket::bind((ip, port)) else {
                continue;
            };
            if mux {
                return Ok((rtp, None));
            }
            if let Ok(rtcp) = UdpSocket::bind((ip, port + 1)) {
                return Ok((rtp, Some(rtcp)));
            }
        }
        Err(RelayError::NoPorts {
            min: self.min,
            max: self.max,
        })
    }
}

struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
    sessions: AtomicUsize,
}

/// The relay: worker threads and the control calls that drive them.
pub struct Relay {
    config: RelayConfig,
    workers: Vec<WorkerHandle>,
    ports: Mutex<PortPool>,
    next_id: AtomicU64,
    pub metrics: Arc<RelayMetrics>,
    events: Mutex<mpsc::Receiver<RelayEvent>>,
    /// Each worker's last [`MediaTotals`] (see [`Relay::totals`]).
    totals: Mutex<Vec<MediaTotals>>,
}

impl Relay {
    /// Starts the worker threads.
    pub fn start(config: RelayConfig) -> Result<Relay, RelayError> {
        let metrics = Arc::new(RelayMetrics::default());
        let (events_tx, events) = mpsc::channel();
        let mut workers = Vec::new();
        for i in 0..config.workers.max(1) {
            let (commands, rx) = mpsc::channel();
            let worker = Worker::new(
                i,
                rx,
                events_tx.clone(),
                config.media_timeout,
                config.reclaim_after,
                config.busy_poll,
                metrics.clone(),
            )?;
            let waker = worker.waker();
            let cpu = (!config.cpus.is_empty()).then(|| config.cpus[i % config.cpus.len()]);
            std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(crate::logs::in_current_span(move || {
                    if let Some(cpu) = cpu {
                        pin_to(cpu, i);
                    }
                    worker.run()
                }))?;
            workers.push(WorkerHandle {
                commands,
                waker,
                sessions: AtomicUsize::new(0),
            });
        }
        Ok(Relay {
            totals: Mutex::new(vec![MediaTotals::default(); workers.len()]),
            ports: Mutex::new(PortPool::new(config.port_min, config.port_max)),
            config,
            workers,
            next_id: AtomicU64::new(1),
            metrics,
            events: Mutex::new(events),
        })
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    fn worker_of(&self, id: u64) -> &WorkerHandle {
        &self.workers[(id % self.workers.len() as u64) as usize]
    }

    fn send(&self, id: u64, cmd: Command) -> Result<(), RelayError> {
        let w = self.worker_of(id);
        w.commands.send(cmd).map_err(|_| RelayError::WorkerGone)?;
        w.waker.wake().map_err(RelayError::Io)
    }

    /// Creates a session: binds both legs' ports and hands them to a
    /// worker. `mux`: RTP and RTCP share one port per leg (RFC 5761).
    pub fn create(&self, mux: bool) -> Result<Session, RelayError> {
        let bound = {
            let mut pool = self.ports.lock().unwrap_or_else(|p| p.into_inner());
            let pair = pool
                .bind_pair(self.config.bind, mux)
                .and_then(|a| Ok([a, pool.bind_pair(self.config.bind, mux)?]));
            if let Err(RelayError::NoPorts { .. }) = &pair {
                self.metrics.ports_exhausted.fetch_add(1, Relaxed);
            }
            pair?
        };
        let port = |s: &UdpSocket| s.local_addr().map(|a| a.port());
        let mut ports = [(0, 0); 2];
        for (i, (rtp, rtcp)) in bound.iter().enumerate() {
            let p = port(rtp)?;
            ports[i] = (p, rtcp.as_ref().map(port).transpose()?.unwrap_or(p));
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        self.send(id, Command::Add { id, sockets: bound })?;
        self.worker_of(id).sessions.fetch_add(1, Relaxed);
        self.metrics.sessions_created.fetch_add(1, Relaxed);
        Ok(Session { id, ports })
    }

    /// Sets where a leg's far end receives (its SDP's address and ports),
    /// used until the leg latches to the real source. `relatch`: forget a
    /// latched source (the far end moved: a re-INVITE changed its address).
    pub fn set_remote(
        &self,
        id: u64,
        leg: Leg,
        remote: Remote,
        relatch: bool,
    ) -> Result<(), RelayError> {
        self.send(
            id,
            Command::Remote {
                id,
                leg,
                remote,
                relatch,
            },
        )
    }

    /// Sets which sources may latch a leg (strict-source latching, see
    /// [`source`]); until then any source may.
    pub fn set_source(&self, id: u64, leg: Leg, policy: SourcePolicy) -> Result<(), RelayError> {
        self.send(id, Command::Source { id, leg, policy })
    }

    /// Sets (or, with `None`, ends) one of a leg's SRTP contexts. The
    /// context replaces the leg's current one in that role, with its
    /// rollover and replay state: set it only when the key changed. A
    /// replaced decrypt context stays as a fallback (the far end may keep
    /// its old key until its offer is answered, or if the offer fails).
    pub fn set_srtp(
        &self,
        id: u64,
        leg: Leg,
        role: SrtpRole,
        context: Option<SrtpContext>,
    ) -> Result<(), RelayError> {
        self.send(
            id,
            Command::Srtp {
                id,
                leg,
                role,
                context: context.map(Box::new),
            },
        )
    }

    /// Whether a leg must speak SRTP: while it has no decrypt context (its
    /// key is not known yet), its packets are dropped instead of relayed
    /// unchecked.
    pub fn require_srtp(&self, id: u64, leg: Leg, required: bool) -> Result<(), RelayError> {
        self.send(id, Command::SrtpRequired { id, leg, required })
    }

    /// The session's statistics (asks its worker; bounded wait).
    pub fn stats(&self, id: u64) -> Result<SessionStats, RelayError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(id, Command::Stats { id, reply: tx })?;
        rx.recv_timeout(Duration::from_secs(1))
            .map_err(|_| RelayError::WorkerGone)?
            .ok_or(RelayError::UnknownSession(id))
    }

    /// Ends a session: closes its sockets (the ports return to the pool)
    /// and returns its final statistics.
    pub fn delete(&self, id: u64) -> Result<SessionStats, RelayError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(id, Command::Delete { id, reply: tx })?;
        let stats = rx
            .recv_timeout(Duration::from_secs(1))
            .map_err(|_| RelayError::WorkerGone)?
            .ok_or(RelayError::UnknownSession(id))?;
        self.worker_of(id).sessions.fetch_sub(1, Relaxed);
        self.metrics.sessions_deleted.fetch_add(1, Relaxed);
        Ok(stats)
    }

    /// Sessions now open.
    pub fn sessions(&self) -> usize {
        self.workers.iter().map(|w| w.sessions.load(Relaxed)).sum()
    }

    /// Events from the data plane (media timeouts) since the last call.
    pub fn events(&self) -> Vec<RelayEvent> {
        let rx = self.events.lock().unwrap_or_else(|p| p.into_inner());
        rx.try_iter().collect()
    }

    /// What the relay has carried, live sessions included (see
    /// [`totals`]): each worker is asked (bounded wait); one that does not
    /// answer in time counts with its last answer.
    pub fn totals(&self) -> MediaTotals {
        let mut last = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        let asked: Vec<_> = self
            .workers
            .iter()
            .map(|w| {
                let (tx, rx) = mpsc::sync_channel(1);
                let sent = w.commands.send(Command::Totals { reply: tx }).is_ok()
                    && w.waker.wake().is_ok();
                sent.then_some(rx)
            })
            .collect();
        let deadline = std::time::Instant::now() + TOTALS_WAIT;
        let mut sum = MediaTotals::default();
        for (seen, rx) in last.iter_mut().zip(asked) {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            if let Some(newer) = rx.and_then(|rx| rx.recv_timeout(wait).ok()) {
                seen.advance(&newer);
            }
            sum.sum(seen);
        }
        sum
    }

    /// Writes the relay's metrics into `/metrics` (see
    /// [`crate::exposition`]).
    pub fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use crate::exposition::{counter, gauge, histogram, one_counter, one_gauge};
        let m = &self.metrics;
        let t = self.totals();
        one_gauge(
            e,
            "callgate_media_sessions",
            "Media sessions open in the relay.",
            i64::try_from(self.sessions()).unwrap_or(i64::MAX),
        )?;
        for (name, help, v) in [
            ("callgate_media_sessions_created_total", "Media sessions created.", m.sessions_created.load(Relaxed)),
            ("callgate_media_timeouts_total", "Media sessions with no packet in either direction for media_timeout.", m.media_timeouts.load(Relaxed)),
            ("callgate_media_packets_total", "RTP and RTCP packets relayed, by live and ended sessions.", t.packets),
            ("callgate_media_bytes_total", "RTP and RTCP bytes relayed, by live and ended sessions.", t.bytes),
            ("callgate_media_dropped_source_total", "Packets dropped because they came from an address other than the latched one, by live and ended sessions.", t.dropped_source),
            ("callgate_media_srtp_failed_total", "Packets dropped because SRTP termination refused them (authentication or replay check failed), by live and ended sessions.", t.srtp_failed),
            ("callgate_media_lost_packets_total", "RTP packets lost before they reached callgate (RFC 3550 A.3: expected minus received), by live and ended sessions.", t.lost),
            ("callgate_media_ports_exhausted_total", "Media sessions refused because the relay's port range had no free pair (the offer was answered 503).", m.ports_exhausted.load(Relaxed)),
            ("callgate_media_worker_panics_total", "Media relay worker panics caught; each failed the worker's sessions (their calls were ended with a BYE to each side) and the worker served on.", m.worker_panics.load(Relaxed)),
            ("callgate_media_sessions_failed_total", "Media sessions failed by a relay worker panic.", m.sessions_failed.load(Relaxed)),
            ("callgate_media_reclaimed_total", "Calls whose media was ended (ports freed) after no packet in either direction for media.reclaim_after_secs.", m.reclaimed.load(Relaxed)),
        ] {
            one_counter(e, name, help, v)?;
        }
        let buckets: Vec<(f64, u64)> = JITTER_BUCKETS
            .iter()
            .copied()
            .zip(t.jitter_buckets)
            .collect();
        histogram(
            e,
            "callgate_media_jitter_seconds",
            "Interarrival jitter (RFC 3550 6.4.1) of each ended stream that carried RTP, at its end.",
        )?
        .histogram(&[], t.jitter_sum, t.jitter_count, &buckets)?;
        gauge(
            e,
            "callgate_media_live_jitter_max_seconds",
            "The largest interarrival jitter among the streams of live sessions now.",
        )?
        .gauge_f64(&[], t.live_jitter_max)?;
        let mut f = counter(
            e,
            "callgate_media_offers_refused_total",
            "Offers (SDP) the relay refused to anchor, answered 503 (ports, source_cap) or 488 (streams, sdp), by reason.",
        )?;
        for (reason, c) in OfferRefusal::LABELS.iter().zip(&m.offers_refused) {
            f.counter(&[("reason", reason)], c.load(Relaxed))?;
        }
        let mut f = counter(
            e,
            "callgate_media_foreign_packets_total",
            "Packets dropped by the relay because their source may not latch the leg (strict-source latching, ACL) or is not its latched source, by the side the leg faces.",
        )?;
        for (side, c) in ["trunk", "pbx"].iter().zip(&m.foreign) {
            f.counter(&[("side", side)], c.load(Relaxed))?;
        }
        Ok(())
    }
}

/// How long a scrape waits for the relay workers' totals.
const TOTALS_WAIT: Duration = Duration::from_millis(250);

/// Pins the calling thread (worker `worker`) to `cpu`; a failure is
/// logged and the worker runs unpinned.
fn pin_to(cpu: usize, worker: usize) {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    match pinned {
        Ok(()) => tracing::info!(worker, cpu, "media worker pinned"),
        Err(e) => tracing::warn!(worker, cpu, error = %e, "media worker not pinned"),
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.commands.send(Command::Stop);
            let _ = w.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests;
