//! A number added to the policy's `fraud` or `allow` list while the
//! service runs ([`crate::api::lists::ListEditing`], the console's list
//! actions): recorded in the audit trail (who, what, when, through which
//! token; committed first), appended to the list's file (atomically,
//! so a reload or a restart reads it back), then put into the running
//! policy: the phases are swapped with a copy of the policy whose list
//! holds the number, so the next call from it scores accordingly. Calls
//! already in their phases keep the policy they started with, and a
//! shadow policy whose list reads the same file gets the number too. The
//! policies' versions are unchanged (their text is), and the tally goes
//! on.
//!
//! The list's file must be writable by callgate (under the systemd unit,
//! /etc/callgate is read-only: point `file` into the state directory;
//! docs/operations.md). With several instances sharing a state store
//! (`crate::cluster`), the addition is logged there and each other
//! instance adds the number to its own running list and file the same
//! way (its audit trail naming the instance it came from); without one,
//! the number reaches the others when their files do and they reload.

use std::sync::Arc;

use super::enforce::COMMIT_WAIT;
use super::lifecycle::POLICY_CHANGES;
use super::{lock, Gate};
use crate::api::lists::{ListAddition, ListChangeView, ListEditing};
use crate::api::operations::OperationError;
use crate::audit::list_changes::{self, ListChange};
use crate::cluster::wire::SharedListChange;
use crate::gate::assess::RiskPhase;
use crate::risk::lists::append_to_file;

fn view(c: ListChange) -> ListChangeView {
    ListChangeView {
        list: c.list,
        number: c.number,
        by: c.by,
        note: c.note,
        unix_ms: c.time_ms,
        token: c.token,
        added: c.added,
    }
}

impl ListEditing for Gate {
    fn add_to_list(
        &self,
        list: &str,
        add: ListAddition,
        token: &str,
    ) -> Result<ListChangeView, OperationError> {
        let change = self.add_number(list, add, token, false)?;
        if let (true, Some(cluster)) = (change.added, &self.cluster) {
            let shared = SharedListChange {
                list: change.list.clone(),
                number: change.number.clone(),
                by: change.by.clone(),
                note: change.note.clone(),
                token: change.token.clone(),
                unix_ms: change.time_ms,
                instance: cluster.instance().to_owned(),
            };
            if let Err(e) = cluster.share_list_change(&shared) {
                tracing::warn!(error = %e, number = %change.number, "added here but not shared with the other instances");
            }
        }
        Ok(view(change))
    }

    fn list_changes(&self, limit: usize) -> Result<Vec<ListChangeView>, OperationError> {
        let Some(audit) = &self.audit else {
            return Ok(vec![]);
        };
        let changes = list_changes::recent(audit.path(), limit)
            .map_err(|e| OperationError::Unavailable(e.to_string()))?;
        Ok(changes.into_iter().map(view).collect())
    }
}

impl Gate {
    /// Adds `add.number` to `list`: audit first, then the file, then the
    /// running policy. `imported`: another instance added it (`token` is
    /// then `name@instance`), so nothing is recorded when the number is
    /// on the list already.
    pub(super) fn add_number(
        &self,
        list: &str,
        add: ListAddition,
        token: &str,
        imported: bool,
    ) -> Result<ListChange, OperationError> {
        let _span = tracing::info_span!("list_add", list, token).entered();
        let audit = self.audit.as_ref().ok_or_else(|| {
            OperationError::Conflict(
                "list changes are written to the audit trail: configure [audit] path".to_owned(),
            )
        })?;
        let _one = lock(&POLICY_CHANGES);
        let phases = self.phases();
        let risk = phases.risk.as_ref().ok_or_else(|| {
            OperationError::NotFound("no risk policy is configured ([risk] policy)".to_owned())
        })?;
        let mut policy = (*risk.policy).clone();
        let entry = policy
            .lists
            .iter_mut()
            .find(|l| l.name == list)
            .ok_or_else(|| OperationError::NotFound(format!("the policy has no [lists.{list}]")))?;
        let file = entry.file.clone().ok_or_else(|| {
            OperationError::Conflict(format!(
                "lists.{list}: the policy names no file to keep the number in (lists.{list}.file)"
            ))
        })?;
        let (digits, added) = entry
            .insert(&add.number)
            .map_err(|e| OperationError::Refused(format!("number: {e}")))?;
        let change = ListChange {
            time_ms: self.env.unix_ms(),
            list: list.to_owned(),
            number: digits,
            by: add.by,
            note: add.note,
            token: token.to_owned(),
            added,
        };
        if imported && !added {
            return Ok(change);
        }
        if !(audit.list_change(change.clone()) && audit.flush(COMMIT_WAIT)) {
            return Err(OperationError::Unavailable(
                "the audit store did not commit in time; nothing was changed, try again".to_owned(),
            ));
        }
        if !added {
            tracing::info!(number = %change.number, "already on the list");
            return Ok(change);
        }
        let line = format!(
            "{}  # {} by {} (token {}){}{}",
            change.number,
            crate::events::event::rfc3339(change.time_ms),
            change.by,
            change.token,
            if change.note.is_empty() { "" } else { ": " },
            change.note
        );
        append_to_file(&file, &line).map_err(|e| {
            OperationError::Unavailable(format!(
                "lists.{list}.file: {e}; the running list is unchanged"
            ))
        })?;
        // A shadow policy reading the same file sees the number too, as it
        // would after a reload.
        let shadow = risk.shadow.as_ref().map(|s| {
            let same_file = |l: &&mut crate::risk::lists::NumberList| {
                l.name == list && l.file.as_deref() == Some(file.as_path())
            };
            let mut copy = (**s).clone();
            match copy.lists.iter_mut().find(same_file) {
                Some(l) => {
                    let _ = l.insert(&change.number);
                    Arc::new(copy)
                }
                None => s.clone(),
            }
        });
        let mut next = (*phases).clone();
        next.risk = Some(Arc::new(RiskPhase {
            policy: Arc::new(policy),
            shadow,
            tally: risk.tally.clone(),
        }));
        *self.phases.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        tracing::info!(number = %change.number, file = %file.display(), "added to the policy's list");
        Ok(change)
    }
}
