//! The RFC 3261 §16 transaction-stateful proxy core, sans-IO.
//!
//! [`ProxyCore`] is fed bytes (with the [`Peer`] they came from) and the
//! current time, and answers with [`Outgoing`] messages for the transport
//! edge to send. It owns the server and client transactions
//! ([`crate::sip::transaction`]), the per-request forwarding context
//! (failover over targets, Timer C, CANCEL, best-response selection) and the
//! OPTIONS health checks of the targets. It never reads a clock or a socket,
//! so every behaviour is testable by feeding messages and instants.
//!
//! Routing model: a request arriving on one [`Side`] leaves through the
//! other. Initial requests (no To tag, no Route left after removing ours) go
//! to the configured targets of the outgoing side, in failover order; other
//! requests follow their Route set or Request-URI, and only to addresses the
//! outgoing side's ACL admits — callgate is never an open relay.

mod ack;
pub mod branch;
pub mod budget;
mod build;
mod cancel;
mod edits;
mod forward;
mod io;
pub mod observe;
mod request;
mod response;
mod route;
mod settings;
mod table;
mod targets;
#[cfg(test)]
mod tests;
mod timers;
mod upstream;

pub use build::LocalSide;
pub use edits::{Edits, Routing};
pub use io::{ConnId, Outgoing, Peer};
pub use observe::{CoreObserver, CoreRefusal, Direction};
pub use route::next_hop;
pub use table::keyed as keyed_hasher;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::sip::message::{Limits, SipMessage};
use crate::sip::method::Method;
use crate::sip::side::{Side, Transport};
use crate::sip::transaction::{ClientTransaction, ServerTransaction};
use branch::BranchGenerator;
use table::TransactionTable;
use targets::TargetSet;
use timers::TimerWheel;

pub use settings::{
    admits, canonical_ip, CoreSettings, HealthConfig, OverloadConfig, SideSettings,
};
pub use targets::{OverrideError, Target, TargetStatus};

/// What a client transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    /// A forwarded request, branch of a server transaction.
    Forward,
    /// A CANCEL we sent for a forwarded INVITE.
    Cancel,
    /// An OPTIONS health probe of the target of `side` at `addr` over
    /// `transport` (by address, not index: the set may change while the
    /// probe is out, when a host name resolves anew).
    Probe {
        side: Side,
        addr: SocketAddr,
        transport: Transport,
    },
}

#[derive(Debug)]
struct ClientEntry {
    tx: ClientTransaction,
    kind: ClientKind,
    /// Server transaction this branch belongs to (Forward only).
    server: Option<Bytes>,
    to: Peer,
    got_provisional: bool,
    cancel_sent: bool,
    /// Probes: when the probe counts as failed.
    probe_deadline: Option<Instant>,
    scheduled: Option<Instant>,
}

/// Where a request goes next.
#[derive(Debug, Clone)]
enum NextHop {
    /// The outgoing side's targets in failover order, as they were when
    /// the request arrived.
    Targets(Vec<(SocketAddr, Transport)>),
    /// One address from the Route set or Request-URI.
    Fixed(Peer),
}

/// The best final response so far (RFC 3261 §16.7 step 6).
#[derive(Debug)]
struct Best {
    status: u16,
    /// Response ready for upstream (our Via removed); `None` when the status
    /// was synthesized (timeout, transport error).
    bytes: Option<Bytes>,
}

/// Forwarding state of one server transaction (the §16 "response context").
#[derive(Debug)]
struct Forwarding {
    out_side: Side,
    hop: NextHop,
    /// Attempts made so far (index into the failover order).
    attempts: usize,
    /// Leading Route values that name us and are removed when forwarding.
    pop_routes: usize,
    record_route: bool,
    /// A sips Request-URI: TLS hops only, sips Record-Route entries.
    secure: bool,
    /// Live client transaction keys of this request, current one last.
    branches: SmallVec<[Bytes; 2]>,
    best: Option<Best>,
    canceled: bool,
    timer_c_at: Option<Instant>,
    no_response_at: Option<Instant>,
    done: bool,
}

#[derive(Debug)]
struct ServerEntry {
    tx: ServerTransaction,
    method: Method,
    reply: Peer,
    /// The request as received; dropped once a final response is sent.
    /// Boxed: a parsed message (its header index inline) is ~750 bytes that
    /// a transaction lingering 32 s after its final response should not
    /// keep reserved.
    request: Option<Box<SipMessage>>,
    to_tag: String,
    fwd: Option<Forwarding>,
    /// What the pipeline decided for the forwarded copy.
    edits: Option<Edits>,
    scheduled: Option<Instant>,
    /// What this transaction is charged in the byte budget, and to whom.
    charged: Option<(std::net::IpAddr, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TimerRef {
    Server(Bytes),
    Client(Bytes),
    Probes,
}

/// Whether a wheel entry firing at `at` is the one an entry still waits
/// for (not one superseded by an earlier deadline); if so it is consumed.
fn take_if_current(scheduled: &mut Option<Instant>, at: Instant) -> bool {
    let current = *scheduled == Some(at);
    if current {
        *scheduled = None;
    }
    current
}

/// The proxy core. See the module documentation.
pub struct ProxyCore {
    settings: CoreSettings,
    local: [LocalSide; 2],
    /// Indexed by the side requests leave through.
    targets: [TargetSet; 2],
    servers: TransactionTable<ServerEntry>,
    clients: TransactionTable<ClientEntry>,
    wheel: TimerWheel<TimerRef>,
    branches: BranchGenerator,
    observer: Arc<dyn CoreObserver>,
    draining: bool,
    /// INVITE server transactions without a final response yet.
    pending_invites: usize,
    /// Bytes the server transactions hold, by source (`budget.rs`).
    bytes: budget::ByteBudget,
    next_probe_at: Option<Instant>,
    probe_seq: u32,
}

impl ProxyCore {
    /// A core with these settings, counting through `observer`, at `now`;
    /// `seed` feeds its branch salt and tags (a running callgate passes one
    /// from the pipeline's environment; tests a constant).
    pub fn new(
        settings: CoreSettings,
        observer: Arc<dyn CoreObserver>,
        now: Instant,
        seed: u64,
    ) -> ProxyCore {
        let local = [
            LocalSide::from_config(&settings.sides[0]),
            LocalSide::from_config(&settings.sides[1]),
        ];
        let down_after = settings.health.down_after;
        let targets = [
            TargetSet::new(settings.sides[0].targets.clone(), down_after),
            TargetSet::new(settings.sides[1].targets.clone(), down_after),
        ];
        let mut core = ProxyCore {
            local,
            targets,
            servers: TransactionTable::new(),
            clients: TransactionTable::new(),
            wheel: TimerWheel::new(now),
            branches: BranchGenerator::seeded(seed),
            observer,
            draining: false,
            pending_invites: 0,
            bytes: budget::ByteBudget::default(),
            next_probe_at: None,
            probe_seq: 0,
            settings,
        };
        for side in [Side::Trunk, Side::Pbx] {
            core.observer
                .set_targets_up(side, core.targets[side.index()].up_count());
        }
        if !core.settings.health.interval.is_zero() {
            core.next_probe_at = Some(now);
            core.push_timer(now, TimerRef::Probes);
        }
        core
    }

    /// Applies reloadable settings (ACLs, targets, timers, limits, health)
    /// without touching live transactions. Listeners are not reloadable.
    pub fn reload(&mut self, settings: CoreSettings) {
        self.settings.health.down_after = settings.health.down_after;
        for side in &settings.sides {
            self.set_targets(side.side, side.targets.clone(), side.allow.clone());
            self.local[side.side.index()] = LocalSide::from_config(side);
        }
        self.settings = settings;
    }

    /// Replaces one side's next hops and ACL — at a reload, or when a
    /// target's host name resolved to new addresses at the edge — without
    /// touching live transactions. Targets still in the set keep their
    /// health and the operator's override; a request already forwarded
    /// fails over along the addresses it started with.
    pub fn set_targets(&mut self, side: Side, targets: Vec<Target>, allow: Vec<ipnet::IpNet>) {
        let i = side.index();
        if targets != self.settings.sides[i].targets {
            self.targets[i] =
                self.targets[i].reconfigured(targets.clone(), self.settings.health.down_after);
            self.observer
                .set_targets_up(side, self.targets[i].up_count());
        }
        self.settings.sides[i].targets = targets;
        self.settings.sides[i].allow = allow;
    }

    /// Starts draining: new initial INVITEs get 503, everything else runs on.
    pub fn start_drain(&mut self) {
        self.draining = true;
        self.observer.set_draining(true);
    }

    /// Stops draining (the operator's undrain): new INVITEs are taken again.
    pub fn stop_drain(&mut self) {
        self.draining = false;
        self.observer.set_draining(false);
    }

    /// The targets requests leaving through `side` go to, with their
    /// health and the operator's override.
    pub fn target_statuses(&self, side: Side) -> Vec<TargetStatus> {
        self.targets[side.index()].statuses()
    }

    /// The operator takes a target of `side` (named by URI or address) out
    /// of rotation, or puts it back; health probes do not undo it. Returns
    /// whether anything changed.
    pub fn set_target_disabled(
        &mut self,
        side: Side,
        name: &str,
        disabled: bool,
    ) -> Result<bool, OverrideError> {
        let set = &mut self.targets[side.index()];
        let changed = set.set_disabled(name, disabled)?;
        if changed {
            self.observer.set_targets_up(side, set.up_count());
        }
        Ok(changed)
    }

    /// True once no INVITE is waiting for its final response.
    pub fn is_drained(&self) -> bool {
        self.pending_invites == 0
    }

    /// Live (server, client) transactions.
    pub fn transaction_counts(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    pub fn limits(&self) -> &Limits {
        &self.settings.limits
    }

    /// Whether a request already has its server transaction here (so it is
    /// a retransmission, handled without the verify phase).
    pub fn knows(&self, msg: &SipMessage) -> bool {
        let (Ok(via), Some(m)) = (msg.top_via(), msg.method_bytes()) else {
            return false;
        };
        self.servers
            .contains_key(&request::server_key(msg, &via, m))
    }

    /// When [`Self::on_timer`] must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    /// Handles one message received from `peer`: parsed, validated, and
    /// classified by its To tag alone. The running service goes through
    /// its call pipeline instead, which parses, sanitizes and classifies
    /// against its dialog table before calling [`Self::on_request`] or
    /// [`Self::on_response`]; this entry serves the core's own tests and
    /// benchmarks.
    pub fn on_message(&mut self, peer: Peer, data: Bytes, now: Instant, out: &mut Vec<Outgoing>) {
        let msg =
            match crate::sip::response::parse_valid(data, &self.settings.limits, Some(peer.addr)) {
                Ok(m) => m,
                Err(e) => {
                    self.observer.parse_error(peer.side);
                    if let Some((resp, status)) = e.answer {
                        self.send_response(out, peer, resp, status);
                    }
                    return;
                }
            };
        if msg.is_request() {
            let routing = Routing::by_to_tag(&msg);
            self.on_request(peer, msg, routing, None, now, out);
        } else {
            self.on_response(peer, msg, None, now, out);
        }
    }

    /// Whether a URI (or name-addr, as in Record-Route) names callgate.
    pub fn names_me(&self, uri: &[u8]) -> bool {
        let uri = crate::sip::uri::NameAddr::parse(uri)
            .map(|na| na.uri)
            .unwrap_or(uri);
        crate::sip::uri::Uri::parse(uri).is_ok_and(|u| self.is_me(u.host, u.port))
    }

    /// Whether a response is one the core may act on: its top Via names
    /// callgate (RFC 3261 §16.7 step 1; others are dropped).
    pub fn is_own_response(&self, msg: &SipMessage) -> bool {
        msg.top_via().is_ok_and(|v| self.is_me(v.host, v.port))
    }

    /// Handles a parsed, validated and sanitized request, classified by the
    /// pipeline, with what its phases decided for the forwarded copy.
    pub fn on_request(
        &mut self,
        peer: Peer,
        msg: SipMessage,
        routing: Routing,
        edits: Option<Edits>,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        self.handle_request(peer, msg, routing, edits, now, out);
        self.observer
            .set_active_transactions(self.servers.len(), self.clients.len());
        self.observer.set_transaction_bytes(self.bytes.total());
    }

    /// Handles a parsed, validated and sanitized response; `body` replaces
    /// its body in the copy passed upstream (SDP through the media relay).
    pub fn on_response(
        &mut self,
        peer: Peer,
        msg: SipMessage,
        body: Option<Vec<u8>>,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        self.handle_response(peer, msg, body, now, out);
        self.observer
            .set_active_transactions(self.servers.len(), self.clients.len());
        self.observer.set_transaction_bytes(self.bytes.total());
    }

    /// Processes every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        while let Some((at, what)) = self.wheel.pop_due(now) {
            match what {
                TimerRef::Server(key) => {
                    if self
                        .servers
                        .get_mut(&key)
                        .is_some_and(|e| take_if_current(&mut e.scheduled, at))
                    {
                        self.server_timer(&key, now, out);
                    }
                }
                TimerRef::Client(key) => {
                    if self
                        .clients
                        .get_mut(&key)
                        .is_some_and(|e| take_if_current(&mut e.scheduled, at))
                    {
                        self.client_timer(&key, now, out);
                    }
                }
                TimerRef::Probes => {
                    if self.next_probe_at == Some(at) {
                        self.send_probes(now, out);
                    }
                }
            }
        }
        self.observer
            .set_active_transactions(self.servers.len(), self.clients.len());
        self.observer.set_transaction_bytes(self.bytes.total());
    }

    /// The edge could not send a client transaction's request (§17.1.4).
    pub fn on_transport_error(&mut self, client: &Bytes, now: Instant, out: &mut Vec<Outgoing>) {
        let Some(entry) = self.clients.get_mut(client) else {
            return;
        };
        self.observer.transport_error(entry.to.side);
        let outputs = entry.tx.on_transport_error();
        self.client_outputs(client, outputs, None, now, out);
    }

    // ---- timers ----

    fn push_timer(&mut self, at: Instant, what: TimerRef) {
        self.wheel.push(at, what);
    }

    fn schedule_server(&mut self, key: &Bytes) {
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        let mut next = e.tx.next_deadline();
        if let Some(f) = &e.fwd {
            next = [next, f.timer_c_at, f.no_response_at]
                .into_iter()
                .flatten()
                .min();
        }
        // Only an earlier deadline needs a new wheel entry: a later one is
        // found when the one already scheduled fires (the timer handler
        // always reschedules). Timer C, pushed back by every provisional
        // response, then leaves one entry per call instead of one per 1xx.
        if let Some(at) = next.filter(|at| e.scheduled.is_none_or(|s| *at < s)) {
            e.scheduled = Some(at);
            self.push_timer(at, TimerRef::Server(key.clone()));
        }
    }

    fn schedule_client(&mut self, key: &Bytes) {
        let Some(e) = self.clients.get_mut(key) else {
            return;
        };
        let next = [e.tx.next_deadline(), e.probe_deadline]
            .into_iter()
            .flatten()
            .min();
        // As for servers: only an earlier deadline needs a new entry.
        if let Some(at) = next.filter(|at| e.scheduled.is_none_or(|s| *at < s)) {
            e.scheduled = Some(at);
            self.push_timer(at, TimerRef::Client(key.clone()));
        }
    }

    // ---- sending ----

    fn send_request(
        &self,
        out: &mut Vec<Outgoing>,
        to: Peer,
        bytes: Bytes,
        method: Method,
        client: Option<Bytes>,
    ) {
        self.observer.request(to.side, Direction::Out, method);
        out.push(Outgoing { to, bytes, client });
    }

    fn send_response(&self, out: &mut Vec<Outgoing>, to: Peer, bytes: Bytes, status: u16) {
        self.observer.response(to.side, Direction::Out, status);
        out.push(Outgoing {
            to,
            bytes,
            client: None,
        });
    }

    /// Whether `host:port` names callgate on either side.
    fn is_me(&self, host: &[u8], port: Option<u16>) -> bool {
        self.local.iter().any(|l| l.is_me(host, port))
    }
}
