//! Changes supervisors made to the policy's number lists (schema 7):
//! a number added to `fraud` ("add to fraud list") or `allow`
//! ("allow-list after verification") through `POST /v1/lists/{list}`,
//! with who asked (the person, as the console names them), the admin
//! token it came through, a note and when. Kept beside the decisions and
//! deleted with them by retention (docs/audit.md).

use std::path::Path;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::AuditError;

/// The table of schema 7.
pub(super) const TABLES: &str = "
CREATE TABLE IF NOT EXISTS list_changes (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    list TEXT NOT NULL,
    number TEXT NOT NULL,
    by_whom TEXT NOT NULL,
    note TEXT NOT NULL,
    token TEXT NOT NULL,
    added INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS list_changes_number ON list_changes(number);
";

/// A number a person added to one of the policy's lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListChange {
    /// Unix milliseconds.
    pub time_ms: i64,
    /// The list's name (`fraud`, `allow`).
    pub list: String,
    /// The number as added (canonical digits).
    pub number: String,
    pub by: String,
    pub note: String,
    /// The admin token it came through (`[[admin.tokens]] name`).
    pub token: String,
    /// `false`: the number was on the list already (the request is
    /// recorded all the same).
    pub added: bool,
}

/// Appends a list change (in the writer's transaction).
pub(super) fn insert(tx: &rusqlite::Transaction<'_>, c: &ListChange) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO list_changes (time_ms, list, number, by_whom, note, token, added)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        c.time_ms, c.list, c.number, c.by, c.note, c.token, c.added
    ])
    .map(drop)
}

/// Deletes list changes older than `cutoff_ms` (retention).
pub(super) fn delete_before(db: &Connection, cutoff_ms: i64) -> rusqlite::Result<usize> {
    db.execute("DELETE FROM list_changes WHERE time_ms < ?1", [cutoff_ms])
}

/// The latest `limit` list changes, newest first (none in a store older
/// than schema 7).
pub fn recent(path: &Path, limit: usize) -> Result<Vec<ListChange>, AuditError> {
    let read = |e: rusqlite::Error| AuditError::Read(e.to_string());
    let db = super::verdicts::read_only(path)?;
    if !super::verdicts::has_table(&db, "list_changes").map_err(read)? {
        return Ok(vec![]);
    }
    let mut q = db
        .prepare(
            "SELECT time_ms, list, number, by_whom, note, token, added FROM list_changes
             ORDER BY id DESC LIMIT ?1",
        )
        .map_err(read)?;
    let rows = q
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(ListChange {
                time_ms: r.get(0)?,
                list: r.get(1)?,
                number: r.get(2)?,
                by: r.get(3)?,
                note: r.get(4)?,
                token: r.get(5)?,
                added: r.get(6)?,
            })
        })
        .map_err(read)?;
    rows.collect::<Result<_, _>>().map_err(read)
}
