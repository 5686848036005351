//! The gate as a member of several instances sharing a state store
//! ([`crate::cluster::Member`]): what it shares, and what it takes from
//! the others (labels on its own decisions into its audit trail; list
//! additions into its running policy and list files).

use super::{lock, Gate};
use crate::api::enforce::EnforcedDecision;
use crate::api::lists::ListAddition;
use crate::api::operations::CallView;
use crate::audit::verdicts::Label;
use crate::audit::{StepUp, Verdict};
use crate::cluster::wire::{LabelKind, SharedLabel, SharedListChange};
use crate::cluster::Member;

impl Member for Gate {
    fn calls_to_share(&self) -> Vec<(CallView, Option<EnforcedDecision>)> {
        let live = lock(&self.outcomes).live();
        live.into_iter()
            .map(|c| (self.plain_view(c.clone()), self.live_decision(c)))
            .collect()
    }

    fn import_label(&self, l: &SharedLabel) {
        let Some(audit) = &self.audit else {
            return;
        };
        let token = format!("{}@{}", l.token, l.instance);
        let queued = match &l.what {
            LabelKind::StepUp { method } => audit.step_up(StepUp {
                decision_id: l.decision_id.clone(),
                call_id: l.call_id.clone(),
                time_ms: l.unix_ms,
                by: l.by.clone(),
                method: method.clone(),
                token,
            }),
            LabelKind::Verdict { verdict, note } => {
                let Some(label) = Label::parse(verdict) else {
                    tracing::warn!(verdict = %verdict, instance = %l.instance, "cluster: unknown verdict from another instance; not recorded");
                    return;
                };
                audit.verdict(Verdict {
                    decision_id: l.decision_id.clone(),
                    call_id: l.call_id.clone(),
                    time_ms: l.unix_ms,
                    verdict: label,
                    by: l.by.clone(),
                    note: note.clone(),
                    token,
                })
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
