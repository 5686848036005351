//! The SQLite store (WAL): schema, the writer thread that commits records
//! in batches off the call path, outcome updates, retention, and reads.
//!
//! Layout (schema 5, docs/audit.md): a decision's fixed part is one row of
//! `records`, written once; what arrives later or is bulky lives in tables
//! keyed by that row's id — `outcomes` (how the call ended), `media` (the
//! relay's statistics), `invites` (the INVITE as received). So the writer
//! only ever appends: an outcome is a small row of its own instead of a
//! rewrite of the decision's row (and its page) 200 ms or an hour later.
//! The view `decisions` joins them back into one row per decision, with
//! the columns of schema 2, for readers and operators' queries. Schema 5
//! added the policy's words beside the codes and the events outbox
//! (`outbox.rs`), written in the same transaction as the records.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::outbox::{CallEnd, OutboxSettings, StoredEvent, OUTBOX};
use super::record::{AuditRecord, CallOutcome, FiredRule, Json, StoredDecision};
use super::verdicts::{self, StepUp, Verdict};
use super::{AuditConfig, AuditError, AuditMetrics};

/// Schema version (`PRAGMA user_version`).
/// 2 added `media` (the relay's per-call statistics); 3 moved outcomes,
/// media statistics and INVITEs into tables of their own (the view
/// `decisions` keeps schema 2's columns); 4 added `instance`, the name of
/// the callgate that made the decision; 5 added the words (`level_text`,
/// `restrict_text`, `verify_text`) and the events outbox; 6 added
/// `step_ups` and `verdicts` (`verdicts.rs`).
const SCHEMA_VERSION: i64 = 6;

/// The decisions' fixed part and its indexes (the index names are schema
/// 2's, kept by the upgrade's rename).
const RECORDS: &str = "
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    decision_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    call_id TEXT NOT NULL,
    side TEXT NOT NULL,
    trunk TEXT NOT NULL,
    calling TEXT NOT NULL,
    called TEXT NOT NULL,
    verification TEXT NOT NULL,
    signals TEXT NOT NULL,
    rules TEXT NOT NULL,
    score INTEGER NOT NULL,
    level TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    restrict_actions TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    shadow TEXT,
    instance TEXT NOT NULL DEFAULT '',
    level_text TEXT,
    restrict_text TEXT NOT NULL DEFAULT '[]',
    verify_text TEXT
);
CREATE INDEX IF NOT EXISTS decisions_time ON records(time_ms);
CREATE INDEX IF NOT EXISTS decisions_call ON records(call_id);
CREATE INDEX IF NOT EXISTS decisions_calling ON records(calling);
";

/// What arrives later or is bulky, keyed by the record's id.
const SIDE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS outcomes (
    record INTEGER PRIMARY KEY REFERENCES records(id) ON DELETE CASCADE,
    outcome TEXT NOT NULL,
    status INTEGER,
    duration_ms INTEGER
);
CREATE TABLE IF NOT EXISTS media (
    record INTEGER PRIMARY KEY REFERENCES records(id) ON DELETE CASCADE,
    stats TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS invites (
    record INTEGER PRIMARY KEY REFERENCES records(id) ON DELETE CASCADE,
    invite BLOB NOT NULL
);
";

/// One row per decision with schema 2's columns, for readers.
const VIEW: &str = "
CREATE VIEW IF NOT EXISTS decisions AS
SELECT r.*, i.invite, o.outcome, o.status, o.duration_ms, m.stats AS media
FROM records r
LEFT JOIN invites i ON i.record = r.id
LEFT JOIN outcomes o ON o.record = r.id
LEFT JOIN media m ON m.record = r.id;
";

/// Schema 2 (or 1) to 3, run between `BEGIN; ALTER TABLE decisions RENAME
/// TO records;` plus [`SIDE_TABLES`] and `COMMIT`: the late and bulky
/// columns move to their tables (then [`VIEW`] makes `decisions` the view).
/// One transaction: an interrupted upgrade leaves schema 2 as it was.
const MOVE_COLUMNS_TO_3: &str = "
INSERT INTO outcomes SELECT id, outcome, status, duration_ms FROM records WHERE outcome IS NOT NULL;
INSERT INTO media SELECT id, media FROM records WHERE media IS NOT NULL;
INSERT INTO invites SELECT id, invite FROM records WHERE invite IS NOT NULL;
ALTER TABLE records DROP COLUMN outcome;
ALTER TABLE records DROP COLUMN status;
ALTER TABLE records DROP COLUMN duration_ms;
ALTER TABLE records DROP COLUMN media;
ALTER TABLE records DROP COLUMN invite;
";

/// Schema 3 to 4: the instance that made each decision (empty for the
/// rows stored before).
const ADD_INSTANCE: &str = "ALTER TABLE records ADD COLUMN instance TEXT NOT NULL DEFAULT '';";

/// Schema 4 to 5, one step of its own: the policy's words beside the codes
/// (null and `[]` for the rows stored before) and the events outbox
/// ([`OUTBOX`]). The view is made again over the new columns.
const WORDS_AND_OUTBOX_5: &str = "
ALTER TABLE records ADD COLUMN level_text TEXT;
ALTER TABLE records ADD COLUMN restrict_text TEXT NOT NULL DEFAULT '[]';
ALTER TABLE records ADD COLUMN verify_text TEXT;
DROP VIEW IF EXISTS decisions;
";

/// What the writer thread is asked to do.
pub(super) enum Job {
    /// A decision; the INVITE as received, when stored, travels as the
    /// received bytes and is stored as they are (a BLOB of `invites`).
    Record(Box<AuditRecord>, Option<bytes::Bytes>),
    Outcome {
        call_id: String,
        outcome: CallOutcome,
        duration_ms: Option<u64>,
    },
    /// The relay's statistics of a call whose media ended (JSON).
    Media { call_id: String, media: String },
    /// An agent completed step-up for a call (schema 6).
    StepUp(Box<StepUp>),
    /// A verdict on a call (schema 6).
    Verdict(Box<Verdict>),
    /// Reply once everything queued before it is committed (or failed).
    Flush(std::sync::mpsc::Sender<bool>),
}

/// Opens (creating) the database read-write with WAL and the schema.
pub(super) fn open(cfg: &AuditConfig) -> Result<Connection, AuditError> {
    if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| AuditError::Open(cfg.path.clone(), e.to_string()))?;
    }
    let db = Connection::open(&cfg.path)
        .map_err(|e| AuditError::Open(cfg.path.clone(), e.to_string()))?;
    let sync = if cfg.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    let opening = |e: rusqlite::Error| AuditError::Open(cfg.path.clone(), e.to_string());
    // Foreign keys are enforced only while retention deletes (see
    // `prune`): the writer's own inserts always name the record they
    // belong to, and checking that per row costs about a microsecond a
    // call.
    db.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 2000;
         PRAGMA foreign_keys = OFF;"
    ))
    .map_err(opening)?;
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(opening)?;
    if version > SCHEMA_VERSION {
        return Err(AuditError::Open(
            cfg.path.clone(),
            format!("schema version {version} is newer than this callgate's {SCHEMA_VERSION}"),
        ));
    }
    if version == 1 {
        // Version 1 had no media column.
        db.execute_batch("ALTER TABLE decisions ADD COLUMN media TEXT")
            .map_err(opening)?;
    }
    // One transaction per upgrade step, each stamping the version it
    // reached: an interrupted step leaves the schema before it as it was.
    // The steps run in order from the store's version; a new schema adds
    // its own step at the end. Schema 3's view is dropped to be made again
    // over the new column.
    let steps: [(std::ops::RangeInclusive<i64>, i64, String); 4] = [
        (
            1..=2,
            4,
            format!(
                "ALTER TABLE decisions RENAME TO records; {SIDE_TABLES} {MOVE_COLUMNS_TO_3} {ADD_INSTANCE}"
            ),
        ),
        (
            3..=3,
            4,
            format!("{ADD_INSTANCE} DROP VIEW IF EXISTS decisions;"),
        ),
        (4..=4, 5, format!("{WORDS_AND_OUTBOX_5} {OUTBOX}")),
        (5..=5, 6, verdicts::TABLES.to_owned()),
    ];
    let mut at = version;
    for (from, to, sql) in steps {
        if from.contains(&at) {
            upgrade(&db, cfg, at, to, &sql)?;
            at = to;
        }
    }
    db.execute_batch(&format!(
        "{RECORDS} {SIDE_TABLES} {OUTBOX} {VIEW} {}",
        verdicts::TABLES
    ))
    .and_then(|_| db.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")))
    .map_err(opening)?;
    Ok(db)
}

/// Runs one upgrade step `from` → `to` in a transaction that also stamps
/// `to`; on failure rolls back and says which step failed.
fn upgrade(
    db: &Connection,
    cfg: &AuditConfig,
    from: i64,
    to: i64,
    sql: &str,
) -> Result<(), AuditError> {
    if let Err(e) = db.execute_batch(&format!("BEGIN; {sql} PRAGMA user_version = {to}; COMMIT;")) {
        let _ = db.execute_batch("ROLLBACK");
        return Err(AuditError::Open(
            cfg.path.clone(),
            format!("upgrading schema {from} to {to}: {e}"),
        ));
    }
    tracing::info!(path = %cfg.path.display(), from, to, "audit store upgraded");
    Ok(())
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// The record id of each call whose outcome or media statistics may still
/// come (the writer's memory, so those rows need no lookup by Call-ID).
/// Bounded: past [`OpenRecords::MAX`] calls it starts over, and a call it
/// does not know is looked up in the table, as after a restart.
#[derive(Default)]
pub(super) struct OpenRecords {
    ids: HashMap<String, i64>,
}

impl OpenRecords {
    const MAX: usize = 200_000;

    fn get(&self, call_id: &str) -> Option<i64> {
        self.ids.get(call_id).copied()
    }

    /// Applies a committed batch's changes.
    fn apply(&mut self, opened: HashMap<&str, i64>, closed: Vec<&str>) {
        if self.ids.len() + opened.len() > Self::MAX {
            self.ids.clear();
        }
        self.ids
            .extend(opened.into_iter().map(|(c, id)| (c.to_owned(), id)));
        for c in closed {
            self.ids.remove(c);
        }
    }

    /// Forgets everything (after retention deleted records).
    fn clear(&mut self) {
        self.ids.clear();
    }
}

/// Writes one batch in one transaction, appending only: a decision's
/// record (and its INVITE), and for an outcome or media statistics a row
/// keyed by the latest record of the call (a later one replaces it: the
/// answer, then the duration at BYE). The record's id comes from `open`
/// (or this batch) when known, else from the table; `open` learns this
/// batch's records and forgets ended calls only once the batch committed.
/// With an `outbox`, each decision and each call's end also leaves its
/// event there, in the same transaction (`outbox.rs`).
fn write_batch(
    db: &mut Connection,
    jobs: &[Job],
    open: &mut OpenRecords,
    outbox: Option<&OutboxSettings>,
) -> rusqlite::Result<Written> {
    let tx = db.transaction()?;
    let mut written = 0;
    let mut events = Vec::new();
    let mut evicted = 0;
    // This batch's records by Call-ID (the latest wins), and the calls
    // that ended: `open` learns them once the batch is committed.
    let mut opened: HashMap<&str, i64> = HashMap::new();
    let mut closed: Vec<&str> = Vec::new();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO records (decision_id, time_ms, call_id, side, trunk, calling, called,
             verification, signals, rules, score, level, action, target, restrict_actions,
             policy_version, shadow, instance, level_text, restrict_text, verify_text)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21)",
        )?;
        // A retried batch or a repeated call end writes its event once.
        let mut event = tx.prepare_cached(
            "INSERT OR IGNORE INTO outbox (event_id, kind, time_ms, body) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut decided =
            tx.prepare_cached("SELECT decision_id, instance FROM records WHERE id = ?1")?;
        let mut publish = |e: super::outbox::OutboxEvent| -> rusqlite::Result<()> {
            if event.execute(params![e.event_id, e.kind, e.time_ms, e.body])? == 1 {
                events.push(StoredEvent {
                    seq: tx.last_insert_rowid(),
                    event_id: e.event_id,
                    kind: e.kind.to_owned(),
                    body: e.body,
                });
            }
            Ok(())
        };
        let mut invite =
            tx.prepare_cached("INSERT INTO invites (record, invite) VALUES (?1, ?2)")?;
        let mut latest = tx
            .prepare_cached("SELECT id FROM records WHERE call_id = ?1 ORDER BY id DESC LIMIT 1")?;
        // An upsert updates the row in place (INSERT OR REPLACE would
        // delete and insert it).
        let mut outcome = tx.prepare_cached(
            "INSERT INTO outcomes (record, outcome, status, duration_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (record) DO UPDATE SET outcome = excluded.outcome,
             status = excluded.status, duration_ms = excluded.duration_ms",
        )?;
        let mut media = tx.prepare_cached(
            "INSERT INTO media (record, stats) VALUES (?1, ?2)
             ON CONFLICT (record) DO UPDATE SET stats = excluded.stats",
        )?;
        let mut record_of =
            |call_id: &str, opened: &HashMap<&str, i64>| -> rusqlite::Result<Option<i64>> {
                match opened.get(call_id).copied().or_else(|| open.get(call_id)) {
                    Some(id) => Ok(Some(id)),
                    None => latest.query_row([call_id], |r| r.get(0)).optional(),
                }
            };
        for job in jobs {
            match job {
                Job::Record(r, raw_invite) => {
                    insert.execute(params![
                        r.decision_id,
                        r.time_ms,
                        r.call_id,
                        r.side,
                        r.trunk,
                        r.calling,
                        r.called,
                        r.verification.get(),
                        r.signals.get(),
                        json(&r.rules),
                        r.score,
                        r.level,
                        r.action,
                        r.target,
                        json(&r.restrict),
                        r.policy_version,
                        r.shadow.as_ref().map(Json::get),
                        r.instance,
                        r.level_text,
                        json(&r.restrict_text),
                        r.verify_text,
                    ])?;
                    let id = tx.last_insert_rowid();
                    let text = r
                        .invite
                        .as_deref()
                        .map(str::as_bytes)
                        .or(raw_invite.as_deref());
                    if let Some(text) = text {
                        invite.execute(params![id, text])?;
                    }
                    opened.insert(&r.call_id, id);
                    written += 1;
                    if let Some(o) = outbox {
                        publish(o.hook.decision(r))?;
                    }
                }
                Job::Outcome {
                    call_id,
                    outcome: o,
                    duration_ms,
                } => {
                    let Some(id) = record_of(call_id, &opened)? else {
                        continue;
                    };
                    outcome.execute(params![
                        id,
                        o.name(),
                        o.code(),
                        duration_ms.map(|d| d as i64)
                    ])?;
                    // Answered without a duration: the BYE's outcome is to come.
                    if !(matches!(o, CallOutcome::Answered) && duration_ms.is_none()) {
                        closed.push(call_id);
                        // (A record retention removed meanwhile has no event.)
                        let decided = match outbox {
                            Some(_) => decided
                                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                                .optional()?,
                            None => None,
                        };
                        if let (Some(out), Some((decision_id, instance))) = (outbox, decided) {
                            publish(out.hook.call_end(&CallEnd {
                                call_id,
                                decision_id,
                                instance,
                                outcome: *o,
                                duration_ms: *duration_ms,
                                time_ms: now_ms(),
                            }))?;
                        }
                    }
                }
                Job::Media { call_id, media: m } => {
                    if let Some(id) = record_of(call_id, &opened)? {
                        media.execute(params![id, m])?;
                    }
                }
                Job::StepUp(step) => verdicts::insert_step_up(&tx, step)?,
                Job::Verdict(v) => verdicts::insert_verdict(&tx, v)?,
                Job::Flush(_) => {}
            }
        }
        // The cap: the oldest rows go (AUTOINCREMENT: `seq` never repeats,
        // so the newest minus the cap is the line).
        if let (Some(o), Some(last)) = (outbox, events.last()) {
            let line = last.seq - i64::try_from(o.max_events).unwrap_or(i64::MAX);
            if line > 0 {
                evicted = tx.execute("DELETE FROM outbox WHERE seq <= ?1", [line])?;
            }
        }
    }
    tx.commit()?;
    open.apply(opened, closed);
    Ok(Written {
        records: written,
        events,
        evicted,
    })
}

/// What a committed batch wrote.
struct Written {
    records: usize,
    /// Its events, in outbox order.
    events: Vec<StoredEvent>,
    /// Outbox rows its cap removed.
    evicted: usize,
}

/// Deletes decisions older than the retention, a chunk at a time.
/// The foreign keys are on while it runs, so the INVITE, outcome and media
/// rows of a deleted record go with it (`ON DELETE CASCADE`).
fn prune(db: &Connection, retention_days: u32) -> rusqlite::Result<usize> {
    if retention_days == 0 {
        return Ok(0);
    }
    db.execute_batch("PRAGMA foreign_keys = ON")?;
    let cutoff = now_ms() - i64::from(retention_days) * 86_400_000;
    let deleted =
        delete_before(db, cutoff).and_then(|n| verdicts::delete_before(db, cutoff).map(|m| n + m));
    db.execute_batch("PRAGMA foreign_keys = OFF")?;
    deleted
}

fn delete_before(db: &Connection, cutoff_ms: i64) -> rusqlite::Result<usize> {
    let mut total = 0;
    loop {
        let n = db.execute(
            "DELETE FROM records WHERE id IN (SELECT id FROM records WHERE time_ms < ?1 LIMIT 1000)",
            [cutoff_ms],
        )?;
        total += n;
        if n < 1000 {
            return Ok(total);
        }
    }
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Most jobs held in memory while the database refuses writes; beyond
/// this the oldest are dropped (and counted).
const MAX_PENDING: usize = 100_000;

/// Gives back the queue bytes of jobs written or dropped
/// (`super::budget`).
fn release(metrics: &AuditMetrics, jobs: &[Job]) {
    let bytes: usize = jobs.iter().map(super::budget::job_bytes).sum();
    metrics
        .queue_bytes
        .fetch_sub(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
}

/// How long the idle writer blocks before it looks at retention again.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// The writer thread: batches of up to `batch_max` jobs or `batch_ms`,
/// one transaction each; on a write error the batch is kept and retried
/// with backoff (bounded), never blocking callers. While a batch fills the
/// thread is parked: [`super::Audit`] unparks it for a flush request or
/// once `batch_max` jobs wait in the queue, so it wakes about twice per
/// batch instead of once per record or per polling step.
pub(super) fn writer(
    mut db: Connection,
    rx: Receiver<Job>,
    cfg: AuditConfig,
    metrics: Arc<AuditMetrics>,
    outbox: Option<OutboxSettings>,
) {
    let mut pending: Vec<Job> = Vec::new();
    let mut open = OpenRecords::default();
    let mut last_prune = Instant::now();
    let mut backoff = Duration::from_millis(0);
    let mut closed = false;
    if let Err(e) = prune(&db, cfg.retention_days) {
        tracing::warn!(error = %e, "audit retention pass failed");
    }
    while !closed || !pending.is_empty() {
        // Gather a batch without being woken once per record (a wake-up
        // per call costs more than the insert): block for the first job
        // only, then park while the window fills and drain what came.
        // After a failed write the window is the backoff, so the retry
        // never spins, and records keep being taken (up to MAX_PENDING).
        let mut flushing = false;
        if pending.is_empty() && !closed {
            match rx.recv_timeout(IDLE_WAKE) {
                Ok(job) => {
                    flushing = matches!(job, Job::Flush(_));
                    pending.push(job);
                    metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
        }
        let deadline = Instant::now() + cfg.batch.max(backoff);
        let full = |n: usize, backoff: Duration| n >= cfg.batch_max && backoff.is_zero();
        while !pending.is_empty() && !closed && !flushing && !full(pending.len(), backoff) {
            loop {
                match rx.try_recv() {
                    Ok(job) => {
                        flushing |= matches!(job, Job::Flush(_));
                        pending.push(job);
                        metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                        if flushing || full(pending.len(), backoff) {
                            break;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            let now = Instant::now();
            if closed || flushing || full(pending.len(), backoff) || now >= deadline {
                break;
            }
            // Spurious or stale wake-ups only cost one more pass.
            std::thread::park_timeout(deadline - now);
        }
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = Instant::now();
            open.clear(); // deleted records must not be pointed at
            if let Err(e) = prune(&db, cfg.retention_days) {
                tracing::warn!(error = %e, "audit retention pass failed");
            }
        }
        if pending.is_empty() {
            continue;
        }
        match write_batch(&mut db, &pending, &mut open, outbox.as_ref()) {
            Ok(w) => {
                metrics
                    .written
                    .fetch_add(w.records as u64, Ordering::Relaxed);
                if let Some(o) = &outbox {
                    if w.evicted > 0 {
                        o.hook.evicted(w.evicted as u64);
                    }
                    if !w.events.is_empty() {
                        o.hook.committed(w.events);
                    }
                }
                metrics.batches.fetch_add(1, Ordering::Relaxed);
                if backoff > Duration::ZERO {
                    tracing::info!("audit store writable again");
                }
                backoff = Duration::ZERO;
                release(&metrics, &pending);
                for job in pending.drain(..) {
                    if let Job::Flush(ack) = job {
                        let _ = ack.send(true);
                    }
                }
            }
            Err(e) => {
                metrics.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, path = %cfg.path.display(), held = pending.len(), "audit write failed; retrying");
                if handle_may_be_stale(&e) && reopen(&mut db, &cfg) {
                    open.clear(); // its ids may name rows of another file
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                // Flush requests are answered "not done"; records are kept.
                pending.retain(|j| match j {
                    Job::Flush(ack) => {
                        let _ = ack.send(false);
                        false
                    }
                    _ => true,
                });
                if pending.len() > MAX_PENDING {
                    let extra = pending.len() - MAX_PENDING;
                    release(&metrics, &pending[..extra]);
                    pending.drain(..extra);
                    metrics.dropped.fetch_add(extra as u64, Ordering::Relaxed);
                }
                if closed {
                    // Shutting down and the disk still refuses: give up
                    // after one retry rather than hang the exit.
                    std::thread::sleep(backoff);
                    if write_batch(&mut db, &pending, &mut open, outbox.as_ref()).is_err() {
                        metrics
                            .dropped
                            .fetch_add(pending.len() as u64, Ordering::Relaxed);
                        tracing::error!(
                            lost = pending.len(),
                            "audit records not written at shutdown"
                        );
                    }
                    release(&metrics, &pending);
                    pending.clear();
                }
            }
        }
    }
}

/// Whether a failed write may come from a file handle that can never
/// write again, whatever happens to the volume: the kernel remounted it
/// read-only after an error (ext4 `errors=remount-ro`, which only an
/// unmount clears), or the operator unmounted it and mounted it (or a
/// repaired copy) again. The open handle keeps pointing at the old file
/// system; only a new connection to the path finds the volume as it is
/// now. (A locked database or a full disk heal under the same handle.)
fn handle_may_be_stale(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::SystemIoFailure | ErrorCode::CannotOpen)
    )
}

/// Replaces `db` by a new connection to `cfg.path` when one can write
/// there (never by a read-only one: SQLite opens a file it cannot write
/// read-only, and [`open`] fails at the schema's version stamp); `true`
/// when replaced. Tried at every failed attempt of a write that
/// [`handle_may_be_stale`], so at the retry pace (100 ms up to 5 s).
///
/// Only an existing database is reopened, never created: while the
/// operator has the volume unmounted, the path names the empty mount
/// point on the file system below, and a database created there would
/// take records that the volume, once mounted again, hides.
fn reopen(db: &mut Connection, cfg: &AuditConfig) -> bool {
    if !cfg.path.is_file() {
        return false;
    }
    match open(cfg) {
        Ok(fresh)
            if !fresh
                .is_readonly(rusqlite::DatabaseName::Main)
                .unwrap_or(true) =>
        {
            *db = fresh;
            tracing::warn!(path = %cfg.path.display(), "audit store reopened after a write error");
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::debug!(error = %e, "audit store not reopened");
            false
        }
    }
}

/// Reads decisions (read-only) between two times, oldest first.
pub fn decisions(
    path: &Path,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> Result<Vec<StoredDecision>, AuditError> {
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| AuditError::Open(path.to_owned(), e.to_string()))?;
    read_rows(
        &db,
        "d.time_ms >= ?1 AND d.time_ms <= ?2",
        params![since_ms.unwrap_or(i64::MIN), until_ms.unwrap_or(i64::MAX)],
    )
}

/// Whether the store has schema 5's words (`level_text`, …).
fn has_words(db: &Connection) -> rusqlite::Result<bool> {
    db.query_row(
        "SELECT count(*) FROM pragma_table_info('records') WHERE name = 'level_text'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// The decisions (the view, aliased `d`) where `condition` holds, in
/// record order, each with its latest verdict. A store of schema 4 or
/// older (read where an older callgate still writes it, or a copy) has
/// no verdicts: its rows are read without.
pub(super) fn read_rows(
    db: &Connection,
    condition: &str,
    values: impl rusqlite::Params,
) -> Result<Vec<StoredDecision>, AuditError> {
    let verdict = if verdicts::present(db).map_err(|e| AuditError::Read(e.to_string()))? {
        verdicts::LATEST_VERDICT
    } else {
        "NULL"
    };
    // Schema 5's words; a store read before its upgrade has none.
    let words = if has_words(db).map_err(|e| AuditError::Read(e.to_string()))? {
        "d.level_text, d.restrict_text, d.verify_text"
    } else {
        "NULL, NULL, NULL"
    };
    let mut q = db
        .prepare(&format!(
            "SELECT decision_id, time_ms, call_id, side, trunk, calling, called, verification, signals,
             rules, score, level, action, target, restrict_actions, policy_version, shadow, invite,
             outcome, status, duration_ms, media, instance, {words}, {verdict} FROM decisions d WHERE {condition} ORDER BY id",
            // (the view: records joined with their INVITE, outcome, media)
        ))
        .map_err(|e| AuditError::Read(e.to_string()))?;
    let parse = |s: String| {
        serde_json::from_str::<serde_json::Value>(&s).unwrap_or(serde_json::Value::Null)
    };
    let rows = q
        .query_map(values, |r| {
            let rules: String = r.get(9)?;
            let restrict: String = r.get(14)?;
            let shadow: Option<String> = r.get(16)?;
            let restrict_text: Option<String> = r.get(24)?;
            Ok(StoredDecision {
                record: AuditRecord {
                    decision_id: r.get(0)?,
                    instance: r.get(22)?,
                    time_ms: r.get(1)?,
                    call_id: r.get(2)?,
                    side: r.get(3)?,
                    trunk: r.get(4)?,
                    calling: r.get(5)?,
                    called: r.get(6)?,
                    verification: Json::from_stored(r.get(7)?),
                    signals: Json::from_stored(r.get(8)?),
                    rules: serde_json::from_str::<Vec<FiredRule>>(&rules).unwrap_or_default(),
                    score: r.get(10)?,
                    level: r.get(11)?,
                    action: r.get(12)?,
                    target: r.get(13)?,
                    restrict: serde_json::from_str(&restrict).unwrap_or_default(),
                    level_text: r.get(23)?,
                    restrict_text: restrict_text
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or_default(),
                    verify_text: r.get(25)?,
                    from_user: None,
                    pai_user: None,
                    policy_version: r.get(15)?,
                    shadow: shadow.map(Json::from_stored),
                    // Text in stores upgraded from schema 2, bytes since.
                    invite: match r.get_ref(17)? {
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                        _ => None,
                    },
                },
                outcome: r.get(18)?,
                status: r.get(19)?,
                duration_ms: r.get(20)?,
                media: r.get::<_, Option<String>>(21)?.map(parse),
                verdict: r
                    .get::<_, Option<String>>(26)?
                    .as_deref()
                    .and_then(verdicts::Label::parse),
            })
        })
        .map_err(|e| AuditError::Read(e.to_string()))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| AuditError::Read(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: rusqlite::ErrorCode, extended: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error {
                code,
                extended_code: extended,
            },
            None,
        )
    }

    #[test]
    fn only_errors_of_a_dead_handle_reopen_the_store() {
        use rusqlite::ErrorCode::*;
        // A volume remounted read-only: EROFS on write is SQLite's I/O error.
        assert!(handle_may_be_stale(&sqlite(SystemIoFailure, 778)));
        assert!(handle_may_be_stale(&sqlite(ReadOnly, 8)));
        assert!(handle_may_be_stale(&sqlite(CannotOpen, 14)));
        // These heal under the same handle.
        assert!(!handle_may_be_stale(&sqlite(DiskFull, 13)));
        assert!(!handle_may_be_stale(&sqlite(DatabaseBusy, 5)));
        assert!(!handle_may_be_stale(&rusqlite::Error::QueryReturnedNoRows));
    }
}
