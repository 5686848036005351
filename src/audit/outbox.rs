//! The events outbox (schema 5): every decision and every call's end, as
//! the event a webhook receives, written by the audit writer in the same
//! transaction as the record it comes from. So an event exists exactly
//! when its record does: nothing is lost when callgate or a receiver
//! restarts, and nothing is published that the audit trail does not hold
//! (the transactional outbox pattern).
//!
//! The audit layer stores and reads events; what an event says is the
//! events layer's (`crate::events`), handed in as an [`EventHook`]. Each
//! webhook's progress is a cursor (`outbox_cursors`): the sequence number
//! of the last event it has been given or has skipped. Rows every webhook
//! is past are deleted by the delivery side; the outbox is capped in rows
//! by the writer (`[events] outbox_max_events`), oldest first.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::record::{AuditRecord, CallOutcome};
use super::AuditError;

/// The outbox tables. `seq` is AUTOINCREMENT so that it never goes back,
/// even once every row has been delivered and deleted: a cursor stays
/// meaningful across restarts.
pub(super) const OUTBOX: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_cursors (
    webhook TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
";

/// One event as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Unique per event: the decision id and the kind
    /// (`<decision id>:<kind>`), so that a receiver dedupes by it.
    pub event_id: String,
    /// `decision` or `call_end`.
    pub kind: &'static str,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// The event as JSON.
    pub body: String,
}

/// A stored event with its place in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub event_id: String,
    pub kind: String,
    pub body: String,
}

/// How a call that was decided ended (a `call_end` event's facts).
#[derive(Debug, Clone)]
pub struct CallEnd<'a> {
    pub call_id: &'a str,
    pub decision_id: String,
    pub instance: String,
    pub outcome: CallOutcome,
    pub duration_ms: Option<u64>,
    /// Unix milliseconds, when the writer learnt it.
    pub time_ms: i64,
}

/// What the events layer does for the audit writer: turn records and call
/// ends into events (on the writer thread, off the call path), and hear
/// of them once committed.
pub trait EventHook: Send + Sync + 'static {
    /// The event of a decision.
    fn decision(&self, record: &AuditRecord) -> OutboxEvent;
    /// The event of a call's end.
    fn call_end(&self, end: &CallEnd<'_>) -> OutboxEvent;
    /// Events just committed, with their sequence numbers, in order.
    fn committed(&self, events: Vec<StoredEvent>);
    /// Rows removed by the outbox's cap, before every webhook had them.
    fn evicted(&self, rows: u64);
}

/// The outbox as the audit writer is given it.
#[derive(Clone)]
pub struct OutboxSettings {
    pub hook: Arc<dyn EventHook>,
    /// Most rows kept; the oldest go first.
    pub max_events: u64,
}

/// The outbox's reader and cursor keeper (the delivery side): a
/// connection of its own to the audit store, never the writer's.
pub struct Outbox {
    db: Connection,
}

impl Outbox {
    /// Opens the outbox of the store at `path` (which the audit writer
    /// has created).
    pub fn open(path: &Path) -> Result<Outbox, AuditError> {
        let opening = |e: rusqlite::Error| AuditError::Open(path.to_owned(), e.to_string());
        let db = Connection::open(path).map_err(opening)?;
        db.execute_batch("PRAGMA busy_timeout = 2000;")
            .map_err(opening)?;
        Ok(Outbox { db })
    }

    /// Up to `limit` events after `seq`, oldest first.
    pub fn after(&self, seq: i64, limit: usize) -> Result<Vec<StoredEvent>, AuditError> {
        let read = |e: rusqlite::Error| AuditError::Read(e.to_string());
        let mut q = self
            .db
            .prepare_cached(
                "SELECT seq, event_id, kind, body FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(read)?;
        let rows = q
            .query_map(params![seq, limit as i64], |r| {
                Ok(StoredEvent {
                    seq: r.get(0)?,
                    event_id: r.get(1)?,
                    kind: r.get(2)?,
                    body: r.get(3)?,
                })
            })
            .map_err(read)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read)
    }

    /// The sequence number of the event `event_id`, while it is kept.
    pub fn seq_of(&self, event_id: &str) -> Result<Option<i64>, AuditError> {
        self.db
            .query_row(
                "SELECT seq FROM outbox WHERE event_id = ?1",
                [event_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| AuditError::Read(e.to_string()))
    }

    /// The newest sequence number ever given (0 before the first event).
    pub fn last_seq(&self) -> Result<i64, AuditError> {
        self.db
            .query_row(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)",
                [],
                |r| r.get(0),
            )
            .map_err(|e| AuditError::Read(e.to_string()))
    }

    /// Rows in the outbox.
    pub fn depth(&self) -> Result<i64, AuditError> {
        self.db
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .map_err(|e| AuditError::Read(e.to_string()))
    }

    /// Webhook `name`'s cursor; a webhook seen for the first time starts
    /// at the oldest event still kept.
    pub fn cursor(&self, name: &str) -> Result<i64, AuditError> {
        let read = |e: rusqlite::Error| AuditError::Read(e.to_string());
        let stored: Option<i64> = self
            .db
            .query_row(
                "SELECT seq FROM outbox_cursors WHERE webhook = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(read)?;
        match stored {
            Some(seq) => Ok(seq),
            None => self
                .db
                .query_row("SELECT coalesce(min(seq), 1) - 1 FROM outbox", [], |r| {
                    r.get(0)
                })
                .map_err(read),
        }
    }

    /// Moves webhook `name`'s cursor to `seq` (delivered or skipped).
    pub fn set_cursor(&self, name: &str, seq: i64) -> Result<(), AuditError> {
        self.db
            .execute(
                "INSERT INTO outbox_cursors (webhook, seq) VALUES (?1, ?2)
                 ON CONFLICT (webhook) DO UPDATE SET seq = excluded.seq",
                params![name, seq],
            )
            .map(|_| ())
            .map_err(|e| AuditError::Read(e.to_string()))
    }

    /// Deletes the events at or before `seq` (every webhook is past them),
    /// at most a chunk at a time; how many went.
    pub fn delete_through(&self, seq: i64) -> Result<usize, AuditError> {
        self.db
            .execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE seq <= ?1 ORDER BY seq LIMIT 1000)",
                [seq],
            )
            .map_err(|e| AuditError::Read(e.to_string()))
    }
}
