//! The policy's number lists, changed by supervisors (the console's "add
//! to fraud list" and "allow-list after verification"):
//!
//! | method and path | role | answer |
//! |---|---|---|
//! | `POST /v1/lists/{list}` | supervisor | `{number, by, note}`: the number is on the running policy's list `fraud` or `allow` at once, appended to the list's file, and written to the audit trail |
//! | `GET /v1/lists` | supervisor | the latest list changes from the audit trail, newest first |
//!
//! Only `fraud` and `allow` can be changed here (the lists a review
//! concludes with); the policy must name a `file` for the list, which
//! keeps the number across reloads and restarts.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::operations::OperationError;
use super::v1::{error, outcome};
use super::Api;

/// The lists this API changes.
pub const EDITABLE: [&str; 2] = ["fraud", "allow"];

/// How many changes `GET /v1/lists` answers.
const RECENT: usize = 100;

/// What the lists API asks of the running service.
pub trait ListEditing: Send + Sync + 'static {
    /// Adds `add.number` to the running policy's list `list`, appends it
    /// to the list's file and records the change in the audit trail
    /// (committed before the answer). Blocking.
    fn add_to_list(
        &self,
        list: &str,
        add: ListAddition,
        token: &str,
    ) -> Result<ListChangeView, OperationError>;
    /// The latest list changes, newest first. Blocking.
    fn list_changes(&self, limit: usize) -> Result<Vec<ListChangeView>, OperationError>;
}

/// `POST /v1/lists/{list}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListAddition {
    /// A telephone number (`+15550123`, `1 555 0123`); no prefixes.
    pub number: String,
    /// The person, as the console names them.
    pub by: String,
    #[serde(default)]
    pub note: String,
}

/// A change to a list, as recorded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListChangeView {
    pub list: String,
    /// Canonical digits.
    pub number: String,
    pub by: String,
    pub note: String,
    pub unix_ms: i64,
    /// The admin token it came through.
    pub token: String,
    /// `false` when the number was on the list already (recorded anyway).
    pub added: bool,
}

impl ListAddition {
    fn check(&self) -> Result<(), String> {
        super::enforce::field("number", &self.number, 32, false)?;
        super::enforce::field("by", &self.by, super::enforce::MAX_NAME, false)?;
        // One line: the note also goes into the list file as a comment.
        super::enforce::field("note", &self.note, super::enforce::MAX_NOTE, true)?;
        if self.note.contains('\n') {
            return Err("note: one line only".to_owned());
        }
        Ok(())
    }
}

/// `POST /v1/lists/{list}`.
pub(super) async fn add(
    State(api): State<Api>,
    Extension(who): Extension<Option<Caller>>,
    Path(list): Path<String>,
    bytes: Bytes,
) -> Response {
    let Some(caller) = who else {
        return error(StatusCode::UNAUTHORIZED, "bearer token required");
    };
    if !EDITABLE.contains(&list.as_str()) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("list {list:?}: only fraud and allow can be changed here"),
        );
    }
    let request = match super::enforce::body(&bytes, ListAddition::check) {
        Ok(r) => r,
        Err((status, reason)) => return error(status, &reason),
    };
    let work = move || api.service.add_to_list(&list, request, &caller.name);
    match tokio::task::spawn_blocking(crate::logs::in_current_span(work)).await {
        Ok(result) => outcome(result),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /v1/lists`.
pub(super) async fn changes(State(api): State<Api>) -> Response {
    #[derive(Serialize)]
    struct Changes {
        changes: Vec<ListChangeView>,
    }
    let work = move || {
        api.service
            .list_changes(RECENT)
            .map(|changes| Changes { changes })
    };
    match tokio::task::spawn_blocking(crate::logs::in_current_span(work)).await {
        Ok(result) => outcome(result),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_addition_is_checked_by_field() {
        let ok = ListAddition {
            number: "+15550123".into(),
            by: "floor lead".into(),
            note: "confirmed with the account holder".into(),
        };
        assert_eq!(ok.check(), Ok(()));
        let two_lines = ListAddition {
            note: "a\nb".into(),
            ..ok.clone()
        };
        assert_eq!(two_lines.check(), Err("note: one line only".into()));
        let nobody = ListAddition {
            by: "".into(),
            ..ok
        };
        assert_eq!(nobody.check(), Err("by: must not be empty".into()));
    }
}
