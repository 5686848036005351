//! The running service: binds the listeners of both sides, runs every
//! received message through the call pipeline ([`pipeline`]: admit, parse,
//! sanitize, classify, verify, assess, route, tag, audit, sign, anchor
//! media, forward), sends what the proxy core asks for, drives its timers,
//! and handles SIGTERM (drain) and SIGHUP (reload).

mod admin;
pub mod admit;
pub mod assess;
pub mod call;
pub mod context;
pub mod media;
pub mod outcome;
pub mod pipeline;
pub mod record;
pub mod route;
pub mod sanitize;
pub mod sign;
pub mod tag;
pub mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;

use crate::api::metrics::{Metrics, Phase};
use crate::config::{Config, Side, Transport};
use crate::sip::message::{Limits, SipMessage};
use crate::sip::method::Method;
use crate::sip::proxy::{CoreSettings, Outgoing, Peer, ProxyCore};
use crate::sip::response::build_response;
use crate::sip::transport::stream::{self, StreamId, StreamSettings};
use crate::sip::transport::{tls, udp, ConnTable, Sink, TransportError};
use crate::stir::offload::{offload_after, LoadMeter, SignatureOffload};
use admit::Admission;

/// Errors that stop callgate from starting.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("bind admin {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// `[stir]` could not be set up (trust anchors, CA files).
    #[error("{0}")]
    Stir(String),
    /// The media relay could not start (threads, poll).
    #[error("{0}")]
    Media(String),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

/// The addresses actually bound (ports may have been 0 in the config).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub udp: [Option<SocketAddr>; 2],
    pub tcp: [Option<SocketAddr>; 2],
    pub tls: [Option<SocketAddr>; 2],
    pub admin: Option<SocketAddr>,
    /// The media relay's ng control socket, when served.
    pub ng: Option<SocketAddr>,
}

/// Shared state of a running gate.
pub struct Gate {
    core: Mutex<ProxyCore>,
    admission: [Mutex<Admission>; 2],
    udp: [Option<Arc<UdpSocket>>; 2],
    conns: Arc<ConnTable>,
    connectors: [Option<tokio_rustls::TlsConnector>; 2],
    stream_settings: StreamSettings,
    pub metrics: Arc<Metrics>,
    timer_wake: Notify,
    armed: Mutex<Option<Instant>>,
    /// Set once draining starts (readiness goes false).
    draining: std::sync::atomic::AtomicBool,
    config_path: Option<PathBuf>,
    /// The phases and limits in force, swapped whole on reload.
    phases: std::sync::RwLock<Phases>,
    /// The clock and random source of the pipeline's decisions.
    pub env: crate::env::Env,
    /// The dialogs callgate record-routed (the classify phase's table).
    dialogs: Mutex<crate::sip::dialogs::DialogTable>,
    /// Initial INVITEs in the inbound phases, by Call-ID + top branch:
    /// their retransmissions are absorbed (100 Trying was already sent).
    inbound_pending: Mutex<std::collections::HashSet<Vec<u8>>>,
    /// The audit trail, when `[audit] path` is set.
    pub audit: Option<crate::audit::Audit>,
    /// Velocity windows, PASSporTs seen and shared certificates: local,
    /// or shared with other instances on Redis (`[state]`; kept across
    /// reloads).
    pub state: Arc<crate::state::State>,
    /// `[state]` as started: it does not change on reload.
    state_config: crate::state::StateConfig,
    /// Media anchoring, when `[media]` is on (read at start only).
    pub media: Option<Arc<media::MediaPhase>>,
    media_config: Option<crate::media::config::MediaConfig>,
    /// Audited calls awaiting their outcome, by Call-ID.
    outcomes: Mutex<outcome::Tracker>,
    /// Worker threads for signature checks (`stir.verify_threads`), and the
    /// signalling thread's demand that switches them on and off.
    pub offload: Option<Arc<SignatureOffload>>,
    load: Mutex<LoadMeter>,
    me: std::sync::Weak<Gate>,
}

/// What the pipeline applies, as configured: parse limits, verification
/// and assessment of inbound INVITEs, signing of agents' outbound calls
/// (each when enabled). Read once per message; a call holds the `Arc` of
/// the phase it started with, so a reload never changes the rules under it.
#[derive(Default, Clone)]
struct Phases {
    limits: Limits,
    verify: Option<Arc<verify::VerifyPhase>>,
    risk: Option<Arc<assess::RiskPhase>>,
    sign: Option<Arc<sign::SignPhase>>,
}

impl Phases {
    /// Builds the phases from `[stir]`, taking over `previous`'s state.
    fn from_config(
        cfg: &Config,
        previous: &Phases,
        metrics: &Metrics,
        state: &Arc<crate::state::State>,
        offload: Option<&Arc<SignatureOffload>>,
    ) -> Result<Phases, String> {
        let phases = Phases {
            limits: cfg.limits,
            verify: verify::VerifyPhase::from_config(
                &cfg.stir,
                previous.verify.as_deref(),
                &metrics.stir_fetch,
                state,
                offload,
            )?
            .map(Arc::new),
            risk: assess::RiskPhase::from_config(&cfg.risk).map(Arc::new),
            sign: sign::SignPhase::from_config(&cfg.stir)?.map(Arc::new),
        };
        let version = |p: &Option<Arc<crate::risk::policy::Policy>>| {
            p.as_ref().map(|p| p.version.clone()).unwrap_or_default()
        };
        metrics.set_policy_versions(&version(&cfg.risk.policy), &version(&cfg.risk.shadow));
        Ok(phases)
    }

    /// The call phases of inbound INVITEs, when any is enabled.
    fn call(&self) -> Option<call::CallPhases> {
        (self.verify.is_some() || self.risk.is_some()).then(|| call::CallPhases {
            verify: self.verify.clone(),
            risk: self.risk.clone(),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gate {
    /// Records the time spent on one message, and at the end of each load
    /// window switches signature offload on or off
    /// ([`crate::stir::offload`]).
    fn observe_busy(&self, started: Instant) {
        let now = Instant::now();
        let busy = now.saturating_duration_since(started);
        self.metrics.observe(Phase::Process, busy);
        if let Some(pool) = &self.offload {
            if let Some(demand) = lock(&self.load).record(busy, now, || pool.take_busy()) {
                pool.set_active(offload_after(pool.is_active(), demand));
            }
        }
    }

    /// Answers 403 to a request from a source outside the ACL.
    fn forbid(&self, peer: Peer, data: Bytes) {
        let Ok(msg) = SipMessage::parse(data, &Default::default()) else {
            return;
        };
        if msg.is_request() && msg.method() != Some(Method::Ack) {
            let r = build_response(&msg, 403, "Forbidden", None, &[]);
            self.dispatch(vec![Outgoing {
                to: peer,
                bytes: r,
                client: None,
            }]);
        }
    }

    /// Wakes the timer task if the core's next deadline moved earlier.
    fn rearm(&self, next: Option<Instant>) {
        let Some(next) = next else { return };
        let mut armed = lock(&self.armed);
        if armed.is_none_or(|a| next < a) {
            *armed = Some(next);
            drop(armed);
            self.timer_wake.notify_one();
        }
    }

    /// Sends what the core produced; failures go back to the core.
    fn dispatch(&self, mut out: Vec<Outgoing>) {
        if let Some(audit) = &self.audit {
            lock(&self.outcomes).observe(&out, audit);
        }
        if let Some(media) = &self.media {
            media.observe_sent(&out);
        }
        while !out.is_empty() {
            let mut failed = Vec::new();
            for o in out.drain(..) {
                match o.to.transport {
                    Transport::Udp => {
                        let sock = self.udp[o.to.side.index()]
                            .as_ref()
                            .or(self.udp[o.to.side.other().index()].as_ref());
                        let Some(sock) = sock else {
                            failed.extend(o.client);
                            continue;
                        };
                        match sock.try_send_to(&o.bytes, o.to.addr) {
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                let sock = sock.clone();
                                tokio::spawn(async move {
                                    let _ = sock.send_to(&o.bytes, o.to.addr).await;
                                });
                            }
                            Err(e) => {
                                tracing::debug!(to = %o.to.addr, error = %e, "udp send failed");
                                failed.extend(o.client);
                            }
                        }
                    }
                    Transport::Tcp | Transport::Tls => {
                        if let Some(h) = self.conns.find(&o.to) {
                            if h.tx.try_send(o.bytes.clone()).is_ok() {
                                continue;
                            }
                        }
                        self.connect_and_send(o);
                    }
                }
            }
            if !failed.is_empty() {
                let now = Instant::now();
                let mut core = lock(&self.core);
                for key in failed {
                    core.on_transport_error(&key, now, &mut out);
                }
            }
        }
    }

    /// Opens a stream connection to `o.to` and sends `o.bytes` on it; a
    /// failure is reported to the core as a transport error.
    fn connect_and_send(&self, o: Outgoing) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let to = o.to;
            let connect = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(to.addr),
            )
            .await;
            match (connect, to.transport) {
                (Ok(Ok(s)), Transport::Tcp) => {
                    let _ = s.set_nodelay(true);
                    me.serve_stream(s, to.side, Transport::Tcp, to.addr, Some(o.bytes))
                        .await;
                }
                (Ok(Ok(s)), Transport::Tls) => {
                    let Some(connector) = me.connectors[to.side.index()].clone() else {
                        tracing::warn!(to = %to.addr, "TLS target but no tls_ca configured on this side");
                        me.transport_failed(o.client);
                        return;
                    };
                    let name =
                        tokio_rustls::rustls::pki_types::ServerName::IpAddress(to.addr.ip().into());
                    match tokio::time::timeout(Duration::from_secs(2), connector.connect(name, s))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            me.serve_stream(tls, to.side, Transport::Tls, to.addr, Some(o.bytes))
                                .await;
                        }
                        _ => me.transport_failed(o.client),
                    }
                }
                _ => {
                    tracing::info!(to = %to.addr, transport = ?to.transport, "connect failed");
                    me.transport_failed(o.client);
                }
            }
        });
    }

    /// Runs one stream connection to its end, counted in the metrics.
    async fn serve_stream<S>(
        self: &Arc<Self>,
        s: S,
        side: Side,
        transport: Transport,
        remote: SocketAddr,
        first: Option<Bytes>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        self.metrics.tcp_connection_opened();
        let sink: Arc<dyn Sink> = self.clone();
        let id = StreamId {
            side,
            transport,
            remote,
        };
        // Framing takes the limits in force when the connection opens
        // (after any reload), as the pipeline's parse phase does.
        let settings = StreamSettings {
            limits: self.phases().limits,
            ..self.stream_settings
        };
        stream::serve(s, id, self.conns.clone(), sink, settings, first).await;
        self.metrics.tcp_connection_closed();
    }

    fn transport_failed(&self, client: Option<Bytes>) {
        let Some(key) = client else { return };
        let mut out = Vec::new();
        let next = {
            let mut core = lock(&self.core);
            core.on_transport_error(&key, Instant::now(), &mut out);
            core.next_deadline()
        };
        self.dispatch(out);
        self.rearm(next);
    }

    /// Drives the core's timers: sleeps until the earliest deadline or until
    /// a message arms an earlier one.
    async fn timer_loop(self: Arc<Self>) {
        loop {
            let next = *lock(&self.armed);
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = self.timer_wake.notified() => continue,
                    }
                }
                None => {
                    self.timer_wake.notified().await;
                    continue;
                }
            }
            let now = Instant::now();
            let mut out = Vec::new();
            let next = {
                let mut core = lock(&self.core);
                core.on_timer(now, &mut out);
                core.next_deadline()
            };
            *lock(&self.armed) = next;
            self.dispatch(out);
        }
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts draining: readiness off, new INVITEs refused with 503.
    pub fn start_drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        lock(&self.core).start_drain();
    }

    pub fn is_drained(&self) -> bool {
        lock(&self.core).is_drained()
    }

    /// The phases and limits now in force.
    fn phases(&self) -> Phases {
        self.phases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the configuration file and applies what can change without
    /// dropping calls: ACLs, rate limits, targets, timers, limits, health
    /// checks, and all of `[stir]` (trust anchors, CRLs, policies, signing
    /// key; fetched certificates are kept). Listener addresses and TLS
    /// files need a restart.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.config_path else {
            return Err("running on the embedded configuration: nothing to reload".to_owned());
        };
        let cfg = Config::load(path).map_err(|e| e.to_string())?;
        // Everything fallible first: a bad [stir] keeps the running config.
        if cfg.state != self.state_config {
            tracing::warn!("[state] changed: it takes effect at the next restart");
        }
        if cfg.media != self.media_config {
            tracing::warn!("[media] changed: it takes effect at the next restart");
        }
        let running_threads = self.offload.as_ref().map_or(0, |p| p.threads());
        if cfg.stir.verify_threads != running_threads {
            tracing::warn!(
                running = running_threads,
                configured = cfg.stir.verify_threads,
                "stir.verify_threads changed: it takes effect at the next restart"
            );
        }
        let phases = Phases::from_config(
            &cfg,
            &self.phases(),
            &self.metrics,
            &self.state,
            self.offload.as_ref(),
        )?;
        *self.phases.write().unwrap_or_else(|p| p.into_inner()) = phases;
        lock(&self.admission[0]).reload(cfg.trunk.clone());
        lock(&self.admission[1]).reload(cfg.pbx.clone());
        lock(&self.core).reload(CoreSettings::from_config(&cfg));
        self.metrics.reloaded();
        tracing::info!(path = %path.display(), "configuration reloaded");
        Ok(())
    }
}

/// A started gate: shared state plus the addresses it listens on.
pub struct Running {
    pub gate: Arc<Gate>,
    pub bound: Bound,
}

/// Binds every listener and starts all tasks on the current runtime.
pub async fn start(cfg: &Config, config_path: Option<PathBuf>) -> Result<Running, GateError> {
    let metrics = Arc::new(Metrics::default());
    let now = Instant::now();
    let mut bound = Bound::default();
    let mut sockets: [Option<Arc<UdpSocket>>; 2] = [None, None];
    let mut tcp_listeners = Vec::new();
    let mut tls_listeners = Vec::new();
    let mut connectors: [Option<tokio_rustls::TlsConnector>; 2] = [None, None];
    let mut settings = CoreSettings::from_config(cfg);
    for side in [Side::Trunk, Side::Pbx] {
        let sc = cfg.side(side);
        let i = side.index();
        if let Some(addr) = sc.udp {
            let s = udp::bind(addr).await?;
            bound.udp[i] = s.local_addr().ok();
            sockets[i] = Some(s);
        }
        if let Some(addr) = sc.tcp {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| TransportError::Bind {
                    addr,
                    transport: Transport::Tcp,
                    source,
                })?;
            bound.tcp[i] = l.local_addr().ok();
            tcp_listeners.push((side, l));
        }
        if let (Some(addr), Some(cert), Some(key)) = (sc.tls, &sc.tls_cert, &sc.tls_key) {
            let acceptor = tls::acceptor(cert, key)?;
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| TransportError::Bind {
                    addr,
                    transport: Transport::Tls,
                    source,
                })?;
            bound.tls[i] = l.local_addr().ok();
            tls_listeners.push((side, l, acceptor));
        }
        if let Some(ca) = &sc.tls_ca {
            connectors[i] = Some(tls::connector(ca)?);
        }
        // Advertise the ports actually bound (config may say port 0).
        settings.sides[i].udp = bound.udp[i];
        settings.sides[i].tcp = bound.tcp[i];
        settings.sides[i].tls = bound.tls[i];
    }
    let state = Arc::new(crate::state::State::from_config(&cfg.state));
    // Signature checks move to worker threads while signalling is busy
    // (read at start: `stir.verify_threads`).
    let offload = match cfg.stir.verify_threads {
        0 => None,
        n => Some(
            SignatureOffload::start(n)
                .map_err(|e| GateError::Stir(format!("stir.verify_threads: {e}")))?,
        ),
    };
    let phases = Phases::from_config(cfg, &Phases::default(), &metrics, &state, offload.as_ref())
        .map_err(GateError::Stir)?;
    let audit = cfg
        .audit
        .as_ref()
        .map(crate::audit::Audit::open)
        .transpose()?;
    let locals = [
        crate::sip::proxy::LocalSide::from_config(&settings.sides[0]),
        crate::sip::proxy::LocalSide::from_config(&settings.sides[1]),
    ];
    let env = crate::env::Env::system();
    let core = ProxyCore::new(settings, metrics.clone(), now, env.u64());
    let media = match &cfg.media {
        Some(m) => {
            let phase =
                media::MediaPhase::start(m, audit.clone(), locals).map_err(GateError::Media)?;
            if let Some(listen) = m.ng_listen {
                bound.ng = Some(
                    phase
                        .serve_ng(listen, m.ng_allow.clone())
                        .await
                        .map_err(|e| GateError::Media(format!("media.ng_listen {listen}: {e}")))?,
                );
            }
            Some(phase)
        }
        None => None,
    };
    let gate = Arc::new_cyclic(|me| Gate {
        core: Mutex::new(core),
        admission: [
            Mutex::new(Admission::new(cfg.trunk.clone())),
            Mutex::new(Admission::new(cfg.pbx.clone())),
        ],
        udp: sockets.clone(),
        conns: Arc::new(ConnTable::default()),
        connectors,
        stream_settings: StreamSettings {
            limits: cfg.limits,
            idle: cfg.tcp_idle,
        },
        metrics,
        timer_wake: Notify::new(),
        armed: Mutex::new(None),
        draining: std::sync::atomic::AtomicBool::new(false),
        config_path,
        phases: std::sync::RwLock::new(phases),
        env,
        dialogs: Mutex::new(crate::sip::dialogs::DialogTable::new(cfg.dialogs)),
        inbound_pending: Mutex::new(std::collections::HashSet::new()),
        audit,
        state,
        state_config: cfg.state.clone(),
        media,
        media_config: cfg.media.clone(),
        outcomes: Mutex::new(outcome::Tracker::default()),
        offload,
        load: Mutex::new(LoadMeter::new(now)),
        me: me.clone(),
    });
    if let Some(m) = &gate.media {
        let weak = Arc::downgrade(&gate);
        m.watch_timeouts(move |out| {
            if let Some(g) = weak.upgrade() {
                g.dispatch(out);
            }
        });
    }
    for side in [Side::Trunk, Side::Pbx] {
        if let Some(s) = &sockets[side.index()] {
            tokio::spawn(udp::receive_loop(s.clone(), side, gate.clone()));
        }
    }
    for (side, l) in tcp_listeners {
        let g = gate.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, remote)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let g = g.clone();
                tokio::spawn(async move {
                    g.serve_stream(s, side, Transport::Tcp, remote, None).await;
                });
            }
        });
    }
    for (side, l, acceptor) in tls_listeners {
        let g = gate.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, remote)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let g = g.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(s)).await
                    else {
                        tracing::info!(%remote, "TLS handshake failed");
                        return;
                    };
                    g.serve_stream(tls, side, Transport::Tls, remote, None)
                        .await;
                });
            }
        });
    }
    // Arm the timer task with the core's first deadline (health probes).
    let first = lock(&gate.core).next_deadline();
    tokio::spawn(gate.clone().timer_loop());
    gate.rearm(first);
    if let Some(addr) = cfg.admin.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| GateError::Admin { addr, source })?;
        bound.admin = l.local_addr().ok();
        tokio::spawn(crate::api::serve(l, gate.clone()));
    }
    // Kick the probes off now that sockets are ready.
    gate.rearm(Some(Instant::now()));
    Ok(Running { gate, bound })
}

impl Running {
    /// Runs until SIGTERM/SIGINT, then drains (new INVITEs get 503, pending
    /// ones finish) for at most `drain`. SIGHUP reloads the configuration.
    pub async fn until_shutdown(self, drain: Duration) {
        let gate = self.gate;
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        if let Err(e) = gate.reload() {
                            tracing::error!(error = %e, "reload failed; keeping the running configuration");
                        }
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!(deadline_secs = drain.as_secs(), "draining");
        gate.start_drain();
        let deadline = Instant::now() + drain;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while Instant::now() < deadline && !gate.is_drained() {
            tick.tick().await;
        }
        if gate.is_drained() {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!("drain deadline reached with transactions pending; exiting");
        }
        // Every decision recorded so far is acknowledged before exit.
        if let Some(audit) = &gate.audit {
            if audit.flush(Duration::from_secs(5)) {
                tracing::info!("audit flushed");
            } else {
                tracing::error!("audit not fully flushed at exit");
            }
        }
    }
}
