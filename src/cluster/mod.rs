//! Several instances behind one trunk, supervised as one (issue 16;
//! docs/operations.md, "Several instances: one console").
//!
//! With `[state] redis` (and `share_console`, on by default), every
//! instance shares through the state store what supervisors see and say
//! (`wire.rs` lists the keys):
//!
//! * its **calls in progress**: a snapshot each tick (`TICK`, 250 ms)
//!   under a key that expires unless renewed; every instance reads the
//!   others' on the same tick, so `/v1/calls` and `/v1/review` on any of
//!   them list every live instance's calls, and the console served by one
//!   shows them all, without asking Redis while answering;
//! * each **decision** it makes, as the enforcement API answers it, kept
//!   a day: a lookup by Call-ID or decision id on any instance finds it;
//! * **step-ups and verdicts**, kept with the decision a day and written
//!   to the log: the instance that decided writes those given elsewhere
//!   into its own audit trail (so its `callgate report` counts them), and
//!   every instance answers a decision with all of them;
//! * **list additions**, in the log: the other instances add the number
//!   to their running policy and list file (and audit the change, naming
//!   the instance it came from);
//! * its committed **decision events**, relayed to the other instances'
//!   live streams (`GET /v1/events`), so one stream shows every call.
//!
//! One task per instance does it (`share.rs`) on a thread of its own,
//! never the call path (which only hands each decision over, `offer`). When
//! the store is down or slow each instance shows its own calls; a step-up
//! or verdict on one of its own calls is written to its audit trail and
//! not shared (counted, logged); one on another instance's call, or a
//! lookup of it, is refused with 503 after at most `ASK_DEADLINE`.

pub mod share;
pub mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::Value;

use crate::api::enforce::{CallState, EnforcedDecision};
use crate::api::operations::CallView;
use crate::state::redis::{Redis, RedisError};
use wire::{Keys, LogEntry, SharedCall, SharedLabel, SharedListChange};

/// How often an instance publishes its calls and reads the others'.
pub const TICK: Duration = Duration::from_millis(250);

/// An instance whose calls were not renewed for this long is gone: its
/// calls are no longer listed (its snapshot key expires with it).
pub const ALIVE: Duration = Duration::from_secs(3);

/// Longest an API request waits for the shared store.
pub const ASK_DEADLINE: Duration = Duration::from_millis(500);

/// Why the shared store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("shared state store: {0}")]
    Store(#[from] RedisError),
    #[error("shared state store: no answer within {} ms", ASK_DEADLINE.as_millis())]
    Deadline,
    #[error("shared state store: unreadable {what}: {reason}")]
    Unreadable { what: String, reason: String },
}

/// What the sharing task asks of the running service (the gate).
pub trait Member: Send + Sync + 'static {
    /// The calls in progress, without media counters (their decisions
    /// come through [`Cluster::offer`]).
    fn calls_to_share(&self) -> Vec<CallView>;
    /// Writes a step-up or verdict given on another instance, on one of
    /// this instance's decisions, into the audit trail. Must not block.
    fn import_label(&self, label: &SharedLabel);
    /// Adds a number another instance added to a list (running policy,
    /// list file, audit trail). Blocking: the task runs it off its thread.
    fn import_list_change(&self, change: &SharedListChange);
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct ClusterMetrics {
    /// Ticks whose publishing or reading failed.
    pub tick_failures: AtomicU64,
    /// Labels and list additions from other instances applied here.
    pub imported_labels: AtomicU64,
    pub imported_list_changes: AtomicU64,
    /// Labels and list additions made here that could not be shared.
    pub labels_unshared: AtomicU64,
    pub lists_unshared: AtomicU64,
    /// Ticks that found another process publishing under this name.
    pub name_conflicts: AtomicU64,
    /// Decisions not shared because too many waited for one tick.
    pub decisions_dropped: AtomicU64,
    /// Events relayed: sent to the others, and received from them.
    pub events_out: AtomicU64,
    pub events_in: AtomicU64,
    /// Times the relay fell behind this instance's events and lost some.
    pub relay_cut: AtomicU64,
}

/// The other instances as last read.
#[derive(Default)]
struct Remote {
    /// By instance name: the version read and its calls.
    instances: BTreeMap<String, (String, Vec<SharedCall>)>,
    /// When they were last read successfully.
    read_at: Option<Instant>,
}

impl Remote {
    /// Whether the last read is recent enough to list what it found.
    fn fresh(&self) -> bool {
        self.read_at.is_some_and(|t| t.elapsed() < ALIVE)
    }
}

/// This instance's share of the deployment.
pub struct Cluster {
    redis: Arc<Redis>,
    keys: Keys,
    instance: String,
    /// This process among those that may (wrongly) share its name.
    incarnation: String,
    /// The runtime the Redis connection lives on (API requests run on
    /// blocking threads of another).
    runtime: tokio::runtime::Handle,
    remote: Mutex<Remote>,
    /// Decisions made since the last tick, for the task to share (a call
    /// may end before the tick sees it in progress: a rejected one).
    pending: Mutex<std::collections::VecDeque<EnforcedDecision>>,
    pub metrics: ClusterMetrics,
}

/// Most decisions waiting for the next tick; beyond, the oldest are
/// dropped (counted): another instance cannot look those up.
pub(crate) const PENDING_MAX: usize = 4096;

/// A reply's bytes, when it is a string.
fn bulk(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A reply's elements, when it is an array (or a RESP3 set).
fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unreadable {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

impl Cluster {
    /// The cluster of `instance` on `redis` (inside the runtime the
    /// connection runs on).
    pub fn new(redis: Arc<Redis>, key_prefix: &str, instance: &str) -> Arc<Cluster> {
        Arc::new(Cluster {
            redis,
            keys: Keys::new(key_prefix),
            instance: instance.to_owned(),
            incarnation: format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ),
            runtime: tokio::runtime::Handle::current(),
            remote: Mutex::new(Remote::default()),
            pending: Mutex::new(std::collections::VecDeque::new()),
            metrics: ClusterMetrics::default(),
        })
    }

    /// Starts the sharing task for `member` (ends when it is dropped) on
    /// a thread of its own (`callgate-cluster`): writing and reading the
    /// instances' call lists is JSON work that must not delay signalling.
    /// With `events`, relays its decision events both ways.
    pub fn start(
        self: &Arc<Self>,
        member: Weak<dyn Member>,
        events: Option<crate::events::Events>,
    ) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("callgate-cluster".into())
            .spawn(crate::logs::in_current_span(move || {
                runtime.block_on(share::run(me, member, events));
            }))
            .map(drop)
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remote> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A decision just made here, shared at the next tick. Never waits.
    pub fn offer(&self, d: EnforcedDecision) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= PENDING_MAX {
            pending.pop_front();
            self.metrics.decisions_dropped.fetch_add(1, Relaxed);
        }
        pending.push_back(d);
    }

    /// The decisions offered since the last call.
    fn offered(&self) -> Vec<EnforcedDecision> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.drain(..).collect()
    }

    /// The other live instances' calls in progress, as last read (none
    /// when the store has not answered within [`ALIVE`]).
    pub fn remote_calls(&self) -> Vec<CallView> {
        let remote = self.lock();
        if !remote.fresh() {
            return Vec::new();
        }
        remote
            .instances
            .iter()
            .flat_map(|(name, (_, calls))| calls.iter().map(|c| c.clone().view(name)))
            .collect()
    }

    /// How many instances are seen live, this one included.
    pub fn instances_seen(&self) -> usize {
        let remote = self.lock();
        1 + if remote.fresh() {
            remote.instances.len()
        } else {
            0
        }
    }

    /// Whether another live instance lists `call_id` in progress.
    fn remote_live(&self, instance: &str, call_id: &str) -> bool {
        let remote = self.lock();
        remote.fresh()
            && remote
                .instances
                .get(instance)
                .is_some_and(|(_, calls)| calls.iter().any(|c| c.call_id == call_id))
    }

    /// Runs `work` against the store from a blocking thread, within
    /// [`ASK_DEADLINE`].
    fn ask<T>(
        &self,
        work: impl Future<Output = Result<T, ClusterError>>,
    ) -> Result<T, ClusterError> {
        self.runtime.block_on(async {
            tokio::time::timeout(ASK_DEADLINE, work)
                .await
                .unwrap_or(Err(ClusterError::Deadline))
        })
    }

    /// A decision another instance shared (`Ok(None)`: none is known),
    /// by Call-ID or decision id. Blocking.
    pub fn decision(
        &self,
        call_id: Option<&str>,
        decision_id: Option<&str>,
    ) -> Result<Option<EnforcedDecision>, ClusterError> {
        self.ask(async {
            let id = match (decision_id, call_id) {
                (Some(id), _) => id.to_owned(),
                (None, Some(call)) => {
                    let mut pipe = redis::pipe();
                    pipe.cmd("GET").arg(self.keys.call(call));
                    let replies = self.redis.pipeline(&pipe).await?;
                    match replies.first().and_then(bulk) {
                        Some(id) => String::from_utf8_lossy(id).into_owned(),
                        None => return Ok(None),
                    }
                }
                (None, None) => return Ok(None),
            };
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(self.keys.decision(&id));
            let replies = self.redis.pipeline(&pipe).await?;
            let Some(json) = replies.first().and_then(bulk) else {
                return Ok(None);
            };
            let mut d: EnforcedDecision =
                serde_json::from_slice(json).map_err(|e| unreadable("decision", e))?;
            // Shared live, but its instance no longer lists it (ended
            // within a tick, or the instance is gone).
            if d.state == CallState::Live {
                let instance = d.instance.clone().unwrap_or_default();
                if !self.remote_live(&instance, &d.call_id) {
                    d.state = CallState::Ended;
                }
            }
            Ok(Some(d))
        })
    }

    /// The step-ups and verdicts shared for `decision_id`, oldest first.
    /// Blocking.
    pub fn labels(&self, decision_id: &str) -> Result<Vec<SharedLabel>, ClusterError> {
        self.ask(async {
            let mut pipe = redis::pipe();
            pipe.cmd("LRANGE")
                .arg(self.keys.labels(decision_id))
                .arg(0)
                .arg(-1);
            let replies = self.redis.pipeline(&pipe).await?;
            Ok(replies
                .first()
                .map(items)
                .unwrap_or_default()
                .iter()
                .filter_map(bulk)
                .filter_map(|b| serde_json::from_slice(b).ok())
                .collect())
        })
    }

    /// Shares a step-up or verdict given here: kept with the decision
    /// and logged for the instance that decided. Blocking.
    pub fn share_label(&self, label: &SharedLabel) -> Result<(), ClusterError> {
        let json = serde_json::to_string(label).map_err(|e| unreadable("label", e))?;
        let key = self.keys.labels(&label.decision_id);
        let result = self.ask(async {
            let mut pipe = redis::pipe();
            pipe.cmd("RPUSH")
                .arg(&key)
                .arg(&json)
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(wire::DECISION_TTL_SECS)
                .ignore();
            self.log(&mut pipe, &LogEntry::Label(label.clone()));
            self.redis.pipeline(&pipe).await?;
            Ok(())
        });
        if result.is_err() {
            self.metrics.labels_unshared.fetch_add(1, Relaxed);
        }
        result
    }

    /// Logs a list addition made here for the other instances. Blocking.
    pub fn share_list_change(&self, change: &SharedListChange) -> Result<(), ClusterError> {
        let result = self.ask(async {
            let mut pipe = redis::pipe();
            self.log(&mut pipe, &LogEntry::List(change.clone()));
            self.redis.pipeline(&pipe).await?;
            Ok(())
        });
        if result.is_err() {
            self.metrics.lists_unshared.fetch_add(1, Relaxed);
        }
        result
    }

    /// Appends `entry` to the log in `pipe`.
    fn log(&self, pipe: &mut redis::Pipeline, entry: &LogEntry) {
        pipe.cmd("XADD")
            .arg(self.keys.log())
            .arg("MAXLEN")
            .arg("~")
            .arg(wire::LOG_MAX)
            .arg("*")
            .arg("from")
            .arg(entry.from_instance())
            .arg("kind")
            .arg(entry.kind())
            .arg("body")
            .arg(entry.body())
            .ignore();
    }

    /// Writes the metrics into `/metrics`.
    pub fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use crate::exposition::{counter, one_counter, one_gauge};
        let m = &self.metrics;
        one_gauge(
            e,
            "callgate_cluster_instances",
            "Instances seen live through the shared state store, this one included.",
            i64::try_from(self.instances_seen()).unwrap_or(i64::MAX),
        )?;
        one_counter(
            e,
            "callgate_cluster_tick_failures_total",
            "Ticks that could not publish this instance's calls or read the others' (the store is down or slow).",
            m.tick_failures.load(Relaxed),
        )?;
        let mut f = counter(
            e,
            "callgate_cluster_imported_total",
            "Step-ups, verdicts and list additions from other instances applied here.",
        )?;
        f.counter(&[("kind", "label")], m.imported_labels.load(Relaxed))?;
        f.counter(&[("kind", "list")], m.imported_list_changes.load(Relaxed))?;
        let mut f = counter(
            e,
            "callgate_cluster_unshared_total",
            "Step-ups, verdicts (label) and list additions (list) made here that the shared store did not take: known to this instance only.",
        )?;
        f.counter(&[("kind", "label")], m.labels_unshared.load(Relaxed))?;
        f.counter(&[("kind", "list")], m.lists_unshared.load(Relaxed))?;
        let mut f = counter(
            e,
            "callgate_cluster_events_relayed_total",
            "Decision events relayed through the shared store: out (this instance's) and in (the others').",
        )?;
        f.counter(&[("direction", "out")], m.events_out.load(Relaxed))?;
        f.counter(&[("direction", "in")], m.events_in.load(Relaxed))?;
        one_counter(
            e,
            "callgate_cluster_name_conflicts_total",
            "Ticks that found another running instance publishing under this instance's name ([instance] name must differ).",
            m.name_conflicts.load(Relaxed),
        )?;
        one_counter(
            e,
            "callgate_cluster_decisions_dropped_total",
            "Decisions not shared because more than 4096 waited to be (the store slow or down, or a burst between two ticks).",
            m.decisions_dropped.load(Relaxed),
        )?;
        one_counter(
            e,
            "callgate_cluster_relay_cut_total",
            "Times the relay fell behind this instance's events and lost some.",
            m.relay_cut.load(Relaxed),
        )
    }
}
