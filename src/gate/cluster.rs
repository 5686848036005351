//! The gate as a member of several instances sharing a state store
//! ([`crate::cluster::Member`]): what it shares, and what it takes from
//! the others (labels on its own decisions into its audit trail; list
//! additions into its running policy and list files).

use super::{lock, Gate};
use crate::api::lists::ListAddition;
use crate::api::operations::CallView;
use crate::cluster::wire::{Recorded, SharedLabel, SharedListChange};
use crate::cluster::Member;

impl Member for Gate {
    fn calls_to_share(&self) -> Vec<CallView> {
        let live = lock(&self.outcomes).live();
        live.into_iter().map(|c| self.plain_view(c)).collect()
    }

    fn import_label(&self, l: &SharedLabel) {
        let Some(audit) = &self.audit else {
            return;
        };
        let queued = match l.recorded() {
            Some(Recorded::StepUp(s)) => audit.step_up(s),
            Some(Recorded::Verdict(v)) => audit.verdict(v),
            None => {
                tracing::warn!(instance = %l.instance, what = ?l.what, "cluster: unknown verdict from another instance; not recorded");
                return;
            }
        };
        if queued {
            tracing::info!(decision = %l.decision_id, call_id = %l.call_id, instance = %l.instance, "label given on another instance recorded in the audit trail");
        }
    }

    fn import_list_change(&self, c: &SharedListChange) {
        let add = ListAddition {
            number: c.number.clone(),
            by: c.by.clone(),
            note: c.note.clone(),
        };
        let token = format!("{}@{}", c.token, c.instance);
        match self.add_number(&c.list, add, &token, true) {
            Ok(change) if change.added => {
                tracing::info!(list = %c.list, number = %c.number, instance = %c.instance, "number added to the list on another instance: added here");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(list = %c.list, number = %c.number, instance = %c.instance, error = %e, "number added to the list on another instance: not added here");
            }
        }
    }
}
