//! The running service: binds the listeners of both sides, runs every
//! received message through the call pipeline ([`pipeline`]: admit, parse,
//! sanitize, classify, verify, assess, route, tag, audit, sign, anchor
//! media, forward), sends what the proxy core asks for, drives its timers,
//! and handles SIGTERM (drain) and SIGHUP (reload).
//!
//! This file holds the shared state ([`Gate`]), the phases in force and
//! [`start`]; the transport edge (sending, stream connections, listeners,
//! the timer task) is in `edge.rs`, reload, drain and shutdown in
//! `lifecycle.rs`.

mod admin;
pub mod admit;
pub mod assess;
mod bucket;
pub mod call;
mod cluster;
mod conceal;
pub mod context;
mod control;
mod edge;
mod enforce;
mod lifecycle;
mod lists;
mod live;
pub mod media;
pub mod notify;
pub mod outcome;
pub mod pipeline;
pub mod record;
mod refusals;
pub mod reload_status;
pub mod route;
pub mod sanitize;
pub mod screen;
pub mod sign;
pub mod tag;
mod targets;
mod throttle;
mod udp_guard;
pub mod verify;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;

use crate::api::metrics::Metrics;
use crate::config::{Config, Side, Transport};
use crate::sip::message::Limits;
use crate::sip::proxy::{CoreSettings, ProxyCore};
use crate::sip::transport::connections::ConnectionCounter;
use crate::sip::transport::stream::StreamSettings;
use crate::sip::transport::tls::SideTls;
use crate::sip::transport::{udp, ConnTable, TransportError};
use crate::stir::offload::{LoadMeter, SignatureOffload};
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
    #[error(transparent)]
    Events(#[from] crate::events::EventsError),
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
    /// The targets' host names, resolved and refreshed in the background
    /// (`[dns]`, `targets.rs`).
    dns: Arc<crate::dns::TargetResolver>,
    /// Each side as configured and its ACL with the resolved addresses.
    side_targets: Mutex<targets::SideTargets>,
    udp: [Option<Arc<UdpSocket>>; 2],
    /// The ACL's kernel filter on each UDP socket (`udp_guard.rs`).
    udp_guard: udp_guard::UdpGuard,
    conns: Arc<ConnTable>,
    /// Each side's TLS (acceptor, connector), swapped whole on reload.
    tls: [std::sync::RwLock<Arc<SideTls>>; 2],
    stream_settings: StreamSettings,
    pub metrics: Arc<Metrics>,
    timer_wake: Notify,
    armed: Mutex<Option<Instant>>,
    /// Set while draining (readiness goes false): for exit, or by the
    /// operator (`ctl drain`).
    draining: std::sync::atomic::AtomicBool,
    /// Set once draining for exit (SIGTERM): `ctl undrain` is refused.
    shutting_down: std::sync::atomic::AtomicBool,
    /// The configuration keys and policy versions last loaded, which a
    /// reload reports its changes against (`control.rs`).
    loaded: Mutex<control::Snapshot>,
    config_path: Option<PathBuf>,
    /// The phases and limits in force, swapped whole on reload.
    phases: std::sync::RwLock<Arc<Phases>>,
    /// The clock and random source of the pipeline's decisions.
    pub env: crate::env::Env,
    /// The dialogs callgate record-routed (the classify phase's table).
    dialogs: Mutex<crate::sip::dialogs::DialogTable>,
    /// Initial INVITEs in the inbound phases, by Call-ID + top branch:
    /// their retransmissions are absorbed (100 Trying was already sent).
    inbound_pending: Mutex<std::collections::HashSet<Vec<u8>>>,
    /// The audit trail, when `[audit] path` is set.
    pub audit: Option<crate::audit::Audit>,
    /// Decision events (webhooks, the stream), when `[events]` is set:
    /// written by the audit writer into its outbox.
    pub events: Option<crate::events::Events>,
    /// Velocity windows, PASSporTs seen and shared certificates: local,
    /// or shared with other instances on Redis (`[state]`; kept across
    /// reloads).
    pub state: Arc<crate::state::State>,
    /// `[state]` as started: it does not change on reload.
    state_config: crate::state::StateConfig,
    /// The other instances sharing the state store, when there is one and
    /// `[state] share_console` is on (`crate::cluster`, `cluster.rs`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Media anchoring, when `[media]` is on (read at start only).
    pub media: Option<Arc<media::MediaPhase>>,
    media_config: Option<crate::media::config::MediaConfig>,
    /// Calls in progress, by Call-ID: listed by `ctl calls`, their
    /// outcome recorded when audited.
    outcomes: Mutex<outcome::Tracker>,
    /// Worker threads for signature checks (`stir.verify_threads`), and the
    /// signalling thread's demand that switches them on and off.
    pub offload: Option<Arc<SignatureOffload>>,
    load: Mutex<LoadMeter>,
    me: std::sync::Weak<Gate>,
}

/// What the pipeline applies, as configured: parse limits, verification
/// and assessment of inbound INVITEs, signing of agents' outbound calls
/// (each when enabled). Read once per message (one `Arc` clone); a call holds the `Arc` of
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
            risk: assess::RiskPhase::from_config(
                &cfg.risk,
                previous.risk.as_deref(),
                crate::env::Env::system().unix_ms(),
            )
            .map(Arc::new),
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
    /// The TLS of `side` now in force (a new handshake takes it once).
    fn tls_of(&self, side: Side) -> Arc<SideTls> {
        self.tls[side.index()]
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The phases and limits now in force.
    fn phases(&self) -> Arc<Phases> {
        self.phases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
    // Host names in targets resolved before anything is served (RFC 3263;
    // refreshed by TTL in the background from here on).
    let dns = crate::dns::TargetResolver::new(cfg.dns.clone(), targets::specs(cfg));
    targets::resolve_at_start(&dns).await;
    let mut settings = CoreSettings::from_config(cfg);
    let resolved =
        [Side::Trunk, Side::Pbx].map(|side| targets::resolved(cfg.side(side), dns.targets(side)));
    for (i, (core, _)) in resolved.iter().enumerate() {
        settings.sides[i].targets = core.targets.clone();
        settings.sides[i].allow = core.allow.clone();
    }
    let [(_, trunk_in_force), (_, pbx_in_force)] = resolved;
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
        if let (Some(addr), Some(_)) = (sc.tls, &sc.tls_context.acceptor) {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| TransportError::Bind {
                    addr,
                    transport: Transport::Tls,
                    source,
                })?;
            bound.tls[i] = l.local_addr().ok();
            tls_listeners.push((side, l));
        }
        metrics.tls.set_not_after(side, sc.tls_context.not_after);
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
    // Events ride on the audit writer (its outbox), so they exist before
    // it opens and deliver once it has.
    let events = match (&cfg.events, &cfg.audit) {
        (Some(e), Some(a)) => Some(crate::events::Events::new(e, &a.path)?),
        _ => None,
    };
    let audit = cfg
        .audit
        .as_ref()
        .map(|a| crate::audit::Audit::open_with_outbox(a, events.as_ref().map(|e| e.outbox())))
        .transpose()?;
    if let Some(e) = &events {
        e.start()?;
    }
    let locals = [
        crate::sip::proxy::LocalSide::from_config(&settings.sides[0]),
        crate::sip::proxy::LocalSide::from_config(&settings.sides[1]),
    ];
    let env = crate::env::Env::system().with_instance(&cfg.instance);
    let core = ProxyCore::new(settings, metrics.clone(), now, env.u64());
    let media = match &cfg.media {
        Some(m) => {
            let phase = media::MediaPhase::start(
                m,
                audit.clone(),
                locals,
                [trunk_in_force.allow.clone(), pbx_in_force.allow.clone()],
            )
            .map_err(GateError::Media)?;
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
            Mutex::new(Admission::new(trunk_in_force.clone())),
            Mutex::new(Admission::new(pbx_in_force.clone())),
        ],
        dns,
        side_targets: Mutex::new(targets::SideTargets::new(
            cfg,
            [trunk_in_force.allow.clone(), pbx_in_force.allow.clone()],
        )),
        udp: sockets.clone(),
        udp_guard: udp_guard::UdpGuard::default(),
        conns: Arc::new(ConnTable::default()),
        tls: [
            std::sync::RwLock::new(Arc::new(cfg.trunk.tls_context.clone())),
            std::sync::RwLock::new(Arc::new(cfg.pbx.tls_context.clone())),
        ],
        stream_settings: StreamSettings {
            limits: cfg.limits,
            idle: cfg.tcp_idle,
            message_deadline: cfg.message_deadline,
        },
        metrics,
        timer_wake: Notify::new(),
        armed: Mutex::new(None),
        draining: std::sync::atomic::AtomicBool::new(false),
        shutting_down: std::sync::atomic::AtomicBool::new(false),
        loaded: Mutex::new(control::Snapshot::default()),
        config_path,
        phases: std::sync::RwLock::new(Arc::new(phases)),
        env,
        dialogs: Mutex::new(crate::sip::dialogs::DialogTable::new(cfg.dialogs)),
        inbound_pending: Mutex::new(std::collections::HashSet::new()),
        audit,
        events,
        cluster: state
            .redis()
            .filter(|_| cfg.state.share_console)
            .map(|r| crate::cluster::Cluster::new(r, &cfg.state.key_prefix, &cfg.instance)),
        state,
        state_config: cfg.state.clone(),
        media,
        media_config: cfg.media.clone(),
        outcomes: Mutex::new(outcome::Tracker::default()),
        offload,
        load: Mutex::new(LoadMeter::new(now)),
        me: me.clone(),
    });
    *lock(&gate.loaded) = gate.snapshot();
    if let Some(m) = &gate.media {
        let weak = Arc::downgrade(&gate);
        m.watch_timeouts(move |out| {
            if let Some(g) = weak.upgrade() {
                g.dispatch(out);
            }
        });
    }
    if let Some(cluster) = &gate.cluster {
        let weak: std::sync::Weak<Gate> = Arc::downgrade(&gate);
        let weak: std::sync::Weak<dyn crate::cluster::Member> = weak;
        if let Err(e) = cluster.start(weak, gate.events.clone()) {
            // Calls are not affected: this instance answers for its own.
            tracing::error!(error = %e, "cluster: cannot start the sharing thread; the console lists this instance's calls only");
        }
    }
    gate.refresh_targets();
    for (side, in_force) in [(Side::Trunk, &trunk_in_force), (Side::Pbx, &pbx_in_force)] {
        gate.guard_udp(in_force);
        if let Some(s) = &sockets[side.index()] {
            tokio::spawn(udp::receive_loop(s.clone(), side, gate.clone()));
        }
    }
    // The kernel throttle's reviews (`throttle.rs`), for as long as the
    // gate lives.
    let weak = Arc::downgrade(&gate);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(throttle::REVIEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(gate) = weak.upgrade() else {
                break;
            };
            gate.review_throttles(Instant::now());
        }
    });
    // Each listener caps its own connections (`[limits]`, read at start).
    let counter = || ConnectionCounter::new(cfg.connections);
    for (side, l) in tcp_listeners {
        tokio::spawn(gate.clone().accept_tcp(side, l, counter()));
    }
    for (side, l) in tls_listeners {
        let handshake = cfg.connections.tls_handshake;
        tokio::spawn(gate.clone().accept_tls(side, l, counter(), handshake));
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
        let access = crate::api::access::Access::new(&cfg.admin, bound.admin.unwrap_or(addr));
        tokio::spawn(crate::api::serve(
            l,
            gate.clone(),
            access,
            cfg.instance.clone(),
        ));
    }
    // Kick the probes off now that sockets are ready.
    gate.rearm(Some(Instant::now()));
    Ok(Running { gate, bound })
}
