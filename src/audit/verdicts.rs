//! What agents and supervisors said about a call after its decision
//! (schema 6): a **step-up** (the agent checked the caller through a
//! stronger channel, so the decision's restrictions are lifted for that
//! call) and a **verdict** (`confirmed_customer`, `suspected_fraud`,
//! `escalate`). Both are kept beside the decision they concern, keyed by
//! its decision id, with who gave them, when, and through which admin
//! token; `callgate report` turns verdicts into precision per rule and
//! `callgate replay` into catch and touch rates (docs/audit.md).

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::record::StoredDecision;
use super::AuditError;

/// Tables and indexes of schema 6 (kept by retention as long as
/// decisions: rows older than the retention are deleted with them).
pub(super) const TABLES: &str = "
CREATE TABLE IF NOT EXISTS step_ups (
    id INTEGER PRIMARY KEY,
    decision_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    by_whom TEXT NOT NULL,
    method TEXT NOT NULL,
    token TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS step_ups_decision ON step_ups(decision_id);
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY,
    decision_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    by_whom TEXT NOT NULL,
    note TEXT NOT NULL,
    token TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_decision ON verdicts(decision_id);
CREATE INDEX IF NOT EXISTS decisions_decision ON records(decision_id);
";

/// What a person concluded about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// The caller was the customer.
    ConfirmedCustomer,
    /// The call was (likely) fraud.
    SuspectedFraud,
    /// Handed to the review queue or a supervisor; not a conclusion.
    Escalate,
}

impl Label {
    pub const ALL: [Label; 3] = [
        Label::ConfirmedCustomer,
        Label::SuspectedFraud,
        Label::Escalate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::ConfirmedCustomer => "confirmed_customer",
            Label::SuspectedFraud => "suspected_fraud",
            Label::Escalate => "escalate",
        }
    }

    pub fn parse(s: &str) -> Option<Label> {
        Label::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// A step-up an agent completed for a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUp {
    pub decision_id: String,
    pub call_id: String,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// Who did it, as the CRM names the agent.
    pub by: String,
    /// How (e.g. `otp-sms`, `callback-on-file`).
    pub method: String,
    /// The admin token it came through (`[[admin.tokens]] name`).
    pub token: String,
}

/// A verdict on a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision_id: String,
    pub call_id: String,
    pub time_ms: i64,
    pub verdict: Label,
    pub by: String,
    pub note: String,
    pub token: String,
}

/// The step-ups and verdicts of one decision, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Labels {
    pub step_ups: Vec<StepUp>,
    pub verdicts: Vec<Verdict>,
}

/// Appends a step-up (in the writer's transaction), unless the same one
/// (decision, time, person, method) is there: one given on another
/// instance may be offered twice (`crate::cluster`).
pub(super) fn insert_step_up(tx: &rusqlite::Transaction<'_>, s: &StepUp) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO step_ups (decision_id, call_id, time_ms, by_whom, method, token)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS (SELECT 1 FROM step_ups
           WHERE decision_id = ?1 AND time_ms = ?3 AND by_whom = ?4 AND method = ?5)",
    )?
    .execute(params![
        s.decision_id,
        s.call_id,
        s.time_ms,
        s.by,
        s.method,
        s.token
    ])
    .map(drop)
}

/// Appends a verdict (in the writer's transaction), unless the same one
/// (decision, time, verdict, person) is there (as for step-ups).
pub(super) fn insert_verdict(tx: &rusqlite::Transaction<'_>, v: &Verdict) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO verdicts (decision_id, call_id, time_ms, verdict, by_whom, note, token)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE NOT EXISTS (SELECT 1 FROM verdicts
           WHERE decision_id = ?1 AND time_ms = ?3 AND verdict = ?4 AND by_whom = ?5)",
    )?
    .execute(params![
        v.decision_id,
        v.call_id,
        v.time_ms,
        v.verdict.as_str(),
        v.by,
        v.note,
        v.token
    ])
    .map(drop)
}

/// Deletes step-ups and verdicts older than `cutoff_ms` (retention).
pub(super) fn delete_before(db: &Connection, cutoff_ms: i64) -> rusqlite::Result<usize> {
    Ok(
        db.execute("DELETE FROM step_ups WHERE time_ms < ?1", [cutoff_ms])?
            + db.execute("DELETE FROM verdicts WHERE time_ms < ?1", [cutoff_ms])?,
    )
}

/// The latest verdict of each decision, as `SQL` over the view
/// `decisions` aliased `d` (what report and replay read as labels).
pub(super) const LATEST_VERDICT: &str = "(SELECT v.verdict FROM verdicts v
     WHERE v.decision_id = d.decision_id ORDER BY v.id DESC LIMIT 1)";

/// Whether the store has the verdicts table (schema 6 or later).
pub(super) fn present(db: &Connection) -> rusqlite::Result<bool> {
    has_table(db, "verdicts")
}

/// Whether the store has the table `name` (a reader of a store a schema
/// older than the table's).
pub(super) fn has_table(db: &Connection, name: &str) -> rusqlite::Result<bool> {
    db.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

pub(super) fn read_only(path: &Path) -> Result<Connection, AuditError> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| AuditError::Open(path.to_owned(), e.to_string()))
}

fn read_err(e: rusqlite::Error) -> AuditError {
    AuditError::Read(e.to_string())
}

/// The step-ups and verdicts recorded for `decision_id` (none in a store
/// older than schema 6).
pub fn labels(path: &Path, decision_id: &str) -> Result<Labels, AuditError> {
    let db = read_only(path)?;
    let mut out = Labels::default();
    if !present(&db).map_err(read_err)? {
        return Ok(out);
    }
    let mut q = db
        .prepare(
            "SELECT call_id, time_ms, by_whom, method, token FROM step_ups
             WHERE decision_id = ?1 ORDER BY id",
        )
        .map_err(read_err)?;
    let rows = q
        .query_map([decision_id], |r| {
            Ok(StepUp {
                decision_id: decision_id.to_owned(),
                call_id: r.get(0)?,
                time_ms: r.get(1)?,
                by: r.get(2)?,
                method: r.get(3)?,
                token: r.get(4)?,
            })
        })
        .map_err(read_err)?;
    out.step_ups = rows.collect::<Result<_, _>>().map_err(read_err)?;
    let mut q = db
        .prepare(
            "SELECT call_id, time_ms, verdict, by_whom, note, token FROM verdicts
             WHERE decision_id = ?1 ORDER BY id",
        )
        .map_err(read_err)?;
    let rows = q
        .query_map([decision_id], |r| {
            let label: String = r.get(2)?;
            Ok((
                label,
                Verdict {
                    decision_id: decision_id.to_owned(),
                    call_id: r.get(0)?,
                    time_ms: r.get(1)?,
                    verdict: Label::Escalate,
                    by: r.get(3)?,
                    note: r.get(4)?,
                    token: r.get(5)?,
                },
            ))
        })
        .map_err(read_err)?;
    for row in rows {
        let (label, mut v) = row.map_err(read_err)?;
        // A label this callgate does not know (a newer one wrote it) is
        // skipped rather than misread.
        if let Some(l) = Label::parse(&label) {
            v.verdict = l;
            out.verdicts.push(v);
        }
    }
    Ok(out)
}

/// Which decision a lookup names.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    /// The latest decision on the call with this Call-ID.
    CallId(&'a str),
    /// The decision with this id.
    DecisionId(&'a str),
}

/// The decision a lookup names, read from the store; `None`: there is
/// none.
pub fn find(path: &Path, key: Key<'_>) -> Result<Option<StoredDecision>, AuditError> {
    let db = read_only(path)?;
    let (column, value) = match key {
        Key::CallId(c) => ("call_id", c),
        Key::DecisionId(d) => ("decision_id", d),
    };
    let id: Option<i64> = db
        .query_row(
            &format!("SELECT id FROM records WHERE {column} = ?1 ORDER BY id DESC LIMIT 1"),
            [value],
            |r| r.get(0),
        )
        .optional()
        .map_err(read_err)?;
    match id {
        Some(id) => Ok(super::store::read_rows(&db, "d.id = ?1", params![id])?
            .into_iter()
            .next()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_back_as_written() {
        for l in Label::ALL {
            assert_eq!(Label::parse(l.as_str()), Some(l));
            let json = serde_json::to_string(&l).expect("json");
            assert_eq!(json, format!("\"{}\"", l.as_str()));
        }
        assert_eq!(Label::parse("fraud"), None);
    }

    #[test]
    fn the_same_label_offered_twice_is_stored_once() {
        let mut db = Connection::open_in_memory().expect("db");
        db.execute_batch(
            TABLES
                .replace(
                    "CREATE INDEX IF NOT EXISTS decisions_decision ON records(decision_id);",
                    "",
                )
                .as_str(),
        )
        .expect("tables");
        let step = StepUp {
            decision_id: "cg-b-00".into(),
            call_id: "c1".into(),
            time_ms: 7,
            by: "agent 7".into(),
            method: "otp-sms".into(),
            token: "desk-1@cg-a".into(),
        };
        let verdict = Verdict {
            decision_id: "cg-b-00".into(),
            call_id: "c1".into(),
            time_ms: 8,
            verdict: Label::SuspectedFraud,
            by: "lead".into(),
            note: String::new(),
            token: "floor@cg-a".into(),
        };
        let later = Verdict {
            time_ms: 9,
            verdict: Label::ConfirmedCustomer,
            ..verdict.clone()
        };
        let tx = db.transaction().expect("tx");
        for _ in 0..2 {
            insert_step_up(&tx, &step).expect("step-up");
            insert_verdict(&tx, &verdict).expect("verdict");
        }
        insert_verdict(&tx, &later).expect("a later verdict");
        tx.commit().expect("commit");
        let count = |t: &str| {
            db.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .expect("count")
        };
        assert_eq!((count("step_ups"), count("verdicts")), (1, 2));
    }
}
