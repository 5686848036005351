//! The audit trail (phase `audit`): every decision with its full
//! verification path, recorded durably in SQLite (WAL) by a writer thread,
//! in batches, off the call path (docs/audit.md).
//!
//! **Acknowledged** means committed: a record is acknowledged once the
//! transaction of its batch has committed. With WAL and `synchronous =
//! NORMAL` a committed transaction survives a crash of the process (it is
//! in the WAL file); `synchronous = "full"` also makes it survive power
//! loss. Records are committed within `batch_ms` (50 ms by default);
//! [`Audit::flush`] waits until everything recorded before it is
//! acknowledged, and SIGTERM flushes before callgate exits.

pub mod budget;
pub mod list_changes;
pub mod outbox;
pub mod record;
pub mod report;
pub mod store;
pub mod verdicts;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

pub use outbox::{EventHook, Outbox, OutboxEvent, OutboxSettings, StoredEvent};
pub use record::{AuditRecord, CallOutcome, FiredRule, Json, RestrictWords, StoredDecision};
pub use store::decisions;
pub use verdicts::{Label, Labels, StepUp, Verdict};

/// Unix milliseconds now (the audit's clock).
pub fn store_now_ms() -> i64 {
    store::now_ms()
}
use store::Job;

/// `[audit]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// Most records per transaction.
    pub batch_max: usize,
    /// Longest a record waits for its batch to commit.
    pub batch: Duration,
    /// Decisions older than this many days are deleted (0: kept).
    pub retention_days: u32,
    /// `synchronous = FULL` (survives power loss) instead of NORMAL.
    pub synchronous_full: bool,
    /// Keep each INVITE as received (for `callgate replay`).
    pub store_invite: bool,
    /// The byte bounds of the queue, the backlog and stored INVITEs.
    pub limits: budget::AuditLimits,
}

impl AuditConfig {
    pub fn new(path: PathBuf) -> AuditConfig {
        AuditConfig {
            path,
            batch_max: 256,
            batch: Duration::from_millis(50),
            retention_days: 90,
            synchronous_full: false,
            store_invite: true,
            limits: budget::AuditLimits::default(),
        }
    }
}

/// Why the audit store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit database {0}: {1}")]
    Open(PathBuf, String),
    #[error("reading the audit database: {0}")]
    Read(String),
}

/// Counters of the audit writer, for `/metrics`.
#[derive(Debug, Default)]
pub struct AuditMetrics {
    pub written: AtomicU64,
    pub batches: AtomicU64,
    /// Records lost: queue full, or the disk refused them for too long.
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
    pub queue_depth: AtomicI64,
    /// Bytes of the jobs queued for the writer or held by it, charged
    /// against `audit.max_queue_bytes` (`budget.rs`).
    pub queue_bytes: AtomicI64,
    /// INVITEs cut or left out of their records, by reason.
    pub reduced: budget::ReducedCounts,
}

impl crate::exposition::Exposed for AuditMetrics {
    /// Writes these counters into `/metrics` (see [`crate::exposition`]).
    fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use crate::exposition::{counter, one_counter, one_gauge};
        for (name, help, v) in [
            (
                "callgate_audit_records_written_total",
                "Decisions committed to the audit store.",
                &self.written,
            ),
            (
                "callgate_audit_batches_total",
                "Audit transactions committed.",
                &self.batches,
            ),
            (
                "callgate_audit_dropped_total",
                "Audit records lost (queue full, or the disk refused them).",
                &self.dropped,
            ),
            (
                "callgate_audit_write_errors_total",
                "Failed audit transactions (retried).",
                &self.write_errors,
            ),
        ] {
            one_counter(e, name, help, v.load(Ordering::Relaxed))?;
        }
        one_gauge(
            e,
            "callgate_audit_queue_depth",
            "Audit jobs waiting for the writer.",
            self.queue_depth.load(Ordering::Relaxed),
        )?;
        one_gauge(
            e,
            "callgate_audit_queue_bytes",
            "Bytes of audit jobs queued for the writer or held by it.",
            self.queue_bytes.load(Ordering::Relaxed),
        )?;
        let mut f = counter(
            e,
            "callgate_audit_invites_reduced_total",
            "INVITEs cut (truncated) or left out of their audit records (source_budget, queue_bytes).",
        )?;
        for (i, (_, reason)) in budget::REDUCED.iter().enumerate() {
            f.counter(
                &[("reason", reason)],
                self.reduced.0[i].load(Ordering::Relaxed),
            )?;
        }
        Ok(())
    }
}

/// Capacity of the queue to the writer: about a minute at 1,000 calls/s.
const QUEUE: usize = 65_536;

/// The audit handle: cheap to clone; the writer thread ends when the last
/// handle is dropped (after writing what was queued).
#[derive(Clone)]
pub struct Audit {
    tx: SyncSender<Job>,
    /// The writer thread, parked while a batch fills: unparked for a flush,
    /// or once `batch_max` jobs wait in the queue (a full batch is then
    /// certainly there, whatever the writer already holds).
    writer: std::thread::Thread,
    batch_max: i64,
    metrics: Arc<AuditMetrics>,
    pub store_invite: bool,
    limits: budget::AuditLimits,
    path: PathBuf,
    /// INVITE bytes stored per source this minute.
    window: Arc<std::sync::Mutex<budget::SourceWindow>>,
}

impl Audit {
    /// Opens (creating) the store and starts its writer thread.
    pub fn open(cfg: &AuditConfig) -> Result<Audit, AuditError> {
        Audit::open_with_outbox(cfg, None)
    }

    /// [`Audit::open`], with each decision's and call end's event written
    /// to the outbox in the record's transaction (`outbox.rs`).
    pub fn open_with_outbox(
        cfg: &AuditConfig,
        outbox: Option<OutboxSettings>,
    ) -> Result<Audit, AuditError> {
        let db = store::open(cfg)?;
        let (tx, rx) = sync_channel(QUEUE);
        let metrics = Arc::new(AuditMetrics::default());
        let m = metrics.clone();
        let c = cfg.clone();
        let writer = std::thread::Builder::new()
            .name("callgate-audit".into())
            .spawn(crate::logs::in_current_span(move || {
                store::writer(db, rx, c, m, outbox)
            }))
            .map_err(|e| AuditError::Open(cfg.path.clone(), e.to_string()))?
            .thread()
            .clone();
        Ok(Audit {
            tx,
            writer,
            batch_max: cfg.batch_max.max(1) as i64,
            metrics,
            store_invite: cfg.store_invite,
            limits: cfg.limits,
            path: cfg.path.clone(),
            window: Arc::new(std::sync::Mutex::new(budget::SourceWindow::new(
                std::time::Instant::now(),
            ))),
        })
    }

    /// Charges `job` against `audit.max_queue_bytes` (the writer gives the
    /// bytes back once it has written or dropped the job). Records with
    /// INVITEs may fill half of it; past that a record goes without its
    /// INVITE, and if even that does not fit it is not queued (`None`).
    fn charge(&self, mut job: Job) -> Option<Job> {
        let cap = i64::try_from(self.limits.max_queue_bytes).unwrap_or(i64::MAX);
        let held = &self.metrics.queue_bytes;
        let mut bytes = budget::job_bytes(&job) as i64;
        // A record with its INVITE may fill only half the bound, so that
        // decisions (without their INVITEs) still find room.
        let with_invite = matches!(&job, Job::Record(r, i) if i.is_some() || r.invite.is_some());
        let cap_now = if with_invite { cap / 2 } else { cap };
        if held.fetch_add(bytes, Ordering::Relaxed) + bytes <= cap_now {
            return Some(job);
        }
        held.fetch_sub(bytes, Ordering::Relaxed);
        if let Job::Record(r, invite) = &mut job {
            if with_invite {
                *invite = None;
                r.invite = None;
                self.metrics
                    .reduced
                    .count(budget::Reduced::QueueBytes, &r.trunk);
                bytes = budget::job_bytes(&job) as i64;
                if held.fetch_add(bytes, Ordering::Relaxed) + bytes <= cap {
                    return Some(job);
                }
                held.fetch_sub(bytes, Ordering::Relaxed);
            }
        }
        None
    }

    fn send(&self, job: Job) -> bool {
        let flush = matches!(job, Job::Flush(_));
        let Some(job) = self.charge(job) else {
            return self.dropped();
        };
        let bytes = budget::job_bytes(&job) as i64;
        match self.tx.try_send(job) {
            Ok(()) => {
                let depth = self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed) + 1;
                if flush || depth >= self.batch_max {
                    self.writer.unpark();
                }
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.queue_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.dropped()
            }
        }
    }

    /// Counts a record lost (queue full in entries or bytes); false.
    fn dropped(&self) -> bool {
        let dropped = self.metrics.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // One line for the first drop and then every 1,000th, not one per
        // record (the counter has the exact figure).
        if dropped == 1 || dropped % 1000 == 0 {
            tracing::warn!(dropped_total = dropped, "audit queue full: records dropped");
        }
        false
    }

    /// Queues a decision; never blocks (a full queue drops and counts it).
    pub fn record(&self, rec: AuditRecord) {
        self.send(Job::Record(Box::new(rec), None));
    }

    /// Queues a decision with the INVITE as received: the writer stores it
    /// as text (`invite`), so the call path neither copies nor validates it.
    /// The INVITE is cut to `audit.max_invite_bytes`, and left out when
    /// its source has stored its INVITE bytes for this minute
    /// (`budget.rs`).
    pub fn record_with_invite(&self, rec: AuditRecord, mut invite: bytes::Bytes) {
        let l = &self.limits;
        if invite.len() > l.max_invite_bytes {
            invite.truncate(l.max_invite_bytes);
            self.metrics
                .reduced
                .count(budget::Reduced::Truncated, &rec.trunk);
        }
        let allowed = self.window.lock().unwrap_or_else(|p| p.into_inner()).take(
            &rec.trunk,
            invite.len(),
            l.invite_bytes_per_source_minute,
            std::time::Instant::now(),
        );
        if !allowed {
            self.metrics
                .reduced
                .count(budget::Reduced::SourceBudget, &rec.trunk);
        }
        self.send(Job::Record(Box::new(rec), allowed.then_some(invite)));
    }

    /// Records how the call ended on its latest decision.
    pub fn call_ended(&self, call_id: &str, outcome: CallOutcome, duration: Option<Duration>) {
        self.send(Job::Outcome {
            call_id: call_id.to_owned(),
            outcome,
            duration_ms: duration.map(|d| d.as_millis() as u64),
        });
    }

    /// Records the media relay's statistics of a call whose media ended.
    pub fn media_ended(&self, call_id: &str, media: &impl serde::Serialize) {
        self.send(Job::Media {
            call_id: call_id.to_owned(),
            media: serde_json::to_string(media).unwrap_or_else(|_| "null".into()),
        });
    }

    /// Records a step-up; `false` when the queue is full (nothing queued).
    pub fn step_up(&self, step: StepUp) -> bool {
        self.send(Job::StepUp(Box::new(step)))
    }

    /// Records a verdict; `false` when the queue is full (nothing queued).
    pub fn verdict(&self, verdict: Verdict) -> bool {
        self.send(Job::Verdict(Box::new(verdict)))
    }

    /// Records a change to a policy list; `false` when the queue is full.
    pub fn list_change(&self, change: list_changes::ListChange) -> bool {
        self.send(Job::ListChange(Box::new(change)))
    }

    /// The database file (for reads: [`verdicts::find`], [`verdicts::labels`]).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Waits (at most `timeout`) until everything queued before is
    /// committed; `true` when it is.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = std::sync::mpsc::channel();
        if !self.send(Job::Flush(ack)) {
            return false;
        }
        done.recv_timeout(timeout).unwrap_or(false)
    }

    pub fn metrics(&self) -> &Arc<AuditMetrics> {
        &self.metrics
    }

    /// Flushes for shutdown (bounded); the writer thread ends by itself
    /// when the last handle is dropped.
    pub fn close(self, timeout: Duration) -> bool {
        self.flush(timeout)
    }
}
