//! The gate as the CRM's enforcement API sees it
//! ([`crate::api::enforce::Enforcement`]): a call's decision from the
//! live-call table while it lasts, from the audit store once it ended,
//! with the step-ups and verdicts of the audit trail; step-ups and
//! verdicts written there (committed before the answer).

use std::time::Duration;

use super::outcome::LiveCall;
use super::{lock, Gate};
use crate::api::enforce::{
    CallState, EnforcedDecision, Enforcement, Lookup, StepUpRequest, StepUpView, VerdictRequest,
    VerdictView,
};
use crate::api::operations::{OperationError, Worded};
use crate::audit::verdicts::{self, Key, Label, Labels};
use crate::audit::{StepUp, StoredDecision, Verdict};
use crate::cluster::wire::{LabelKind, Recorded, SharedLabel};
use crate::risk::policy::{Level, Policy};

/// Longest a step-up, verdict or list change waits for its audit commit
/// before the API answers 503 (it is still queued and is written when the
/// disk allows).
pub(super) const COMMIT_WAIT: Duration = Duration::from_secs(3);

impl Gate {
    /// A call in progress's decision as the enforcement API answers it
    /// (without labels), when it has one.
    pub(super) fn live_decision(&self, call: LiveCall) -> Option<EnforcedDecision> {
        let d = call.decision?;
        let decision_id = d.id?;
        Some(EnforcedDecision {
            call_id: call.call_id,
            decision_id,
            instance: self.env.instance().map(str::to_owned),
            state: CallState::Live,
            time_unix_ms: call.started_unix_ms,
            level: d.level,
            level_text: d.level_text,
            score: d.score,
            reasons: d.reasons,
            reasons_text: d.reasons_text,
            verify_text: d.verify_text,
            restricted_by_policy: d.restrict.clone(),
            restrict: d.restrict,
            restrict_text: d.restrict_text,
            restrictions_lifted: false,
            action: d.action,
            route: d.route,
            policy_version: d.policy_version,
            step_ups: vec![],
            verdicts: vec![],
            caller: Some(call.caller),
            callee: Some(call.callee),
        })
    }

    /// The decision a lookup names, without its labels: the live call's,
    /// else the audit store's, else (several instances) the one another
    /// instance shared.
    fn decided(&self, key: Lookup<'_>) -> Result<EnforcedDecision, OperationError> {
        let id = match key {
            Lookup::CallId(id) | Lookup::DecisionId(id) => id,
        };
        let live = lock(&self.outcomes).find(id).filter(|c| match key {
            Lookup::CallId(id) => c.call_id == id,
            Lookup::DecisionId(id) => c
                .decision
                .as_ref()
                .is_some_and(|d| d.id.as_deref() == Some(id)),
        });
        if let Some(d) = live.and_then(|call| self.live_decision(call)) {
            return Ok(d);
        }
        let not_found = || {
            OperationError::NotFound(match key {
                Lookup::CallId(id) => format!("no decision on a call with Call-ID {id:?}"),
                Lookup::DecisionId(id) => format!("no decision with id {id:?}"),
            })
        };
        if let Some(audit) = &self.audit {
            let store_key = match key {
                Lookup::CallId(id) => Key::CallId(id),
                Lookup::DecisionId(id) => Key::DecisionId(id),
            };
            let stored = verdicts::find(audit.path(), store_key)
                .map_err(|e| OperationError::Unavailable(e.to_string()))?;
            if let Some(stored) = stored {
                let phases = self.phases();
                let mut d = ended(stored, phases.risk.as_deref().map(|r| &*r.policy));
                d.instance = self.env.instance().map(str::to_owned);
                return Ok(d);
            }
        }
        let Some(cluster) = &self.cluster else {
            return Err(not_found());
        };
        let (call_id, decision_id) = match key {
            Lookup::CallId(id) => (Some(id), None),
            Lookup::DecisionId(id) => (None, Some(id)),
        };
        cluster
            .decision(call_id, decision_id)
            .map_err(|e| OperationError::Unavailable(e.to_string()))?
            .ok_or_else(not_found)
    }

    /// `d` with the labels of the audit trail applied: restrictions
    /// lifted after a step-up.
    fn labelled(&self, mut d: EnforcedDecision) -> Result<EnforcedDecision, OperationError> {
        let mut labels: Labels = match &self.audit {
            Some(audit) => verdicts::labels(audit.path(), &d.decision_id)
                .map_err(|e| OperationError::Unavailable(e.to_string()))?,
            None => Labels::default(),
        };
        if let Some(cluster) = &self.cluster {
            match cluster.labels(&d.decision_id) {
                Ok(shared) => merge_shared(&mut labels, shared),
                // This instance's own labels still answer.
                Err(e) => tracing::warn!(error = %e, "labels given on other instances not read"),
            }
        }
        d.step_ups = labels
            .step_ups
            .into_iter()
            .map(|s| StepUpView {
                by: s.by,
                method: s.method,
                unix_ms: s.time_ms,
                token: s.token,
            })
            .collect();
        d.verdicts = labels
            .verdicts
            .into_iter()
            .map(|v| VerdictView {
                verdict: v.verdict.as_str().to_owned(),
                by: v.by,
                note: v.note,
                unix_ms: v.time_ms,
                token: v.token,
            })
            .collect();
        if !d.step_ups.is_empty() {
            d.restrictions_lifted = true;
            d.restrict.clear();
            d.restrict_text.clear();
        }
        Ok(d)
    }

    /// The audit handle a label is written to: refused without one (a
    /// step-up that leaves no trace must not lift anything).
    fn audit_for_labels(&self) -> Result<&crate::audit::Audit, OperationError> {
        self.audit.as_ref().ok_or_else(|| {
            OperationError::Conflict(
                "step-ups and verdicts are written to the audit trail: configure [audit] path"
                    .to_owned(),
            )
        })
    }

    /// Queues what `write` makes of the call's decision (a step-up or a
    /// verdict) to the audit trail, waits for its commit, shares it with
    /// the other instances (first, when another instance decided), and
    /// answers the decision as it stands then.
    fn label(
        &self,
        call_id: &str,
        (by, token, what): (&str, &str, LabelKind),
        write: impl FnOnce(&crate::audit::Audit, &EnforcedDecision, i64) -> bool,
    ) -> Result<EnforcedDecision, OperationError> {
        let audit = self.audit_for_labels()?;
        let d = self.decided(Lookup::CallId(call_id))?;
        let now = self.env.unix_ms();
        // Another instance's decision: it learns of the label through the
        // shared store, so that must take it first.
        let mine = d.instance.as_deref() == self.env.instance();
        let share = |what| {
            self.cluster.as_ref().map(|c| {
                c.share_label(&SharedLabel {
                    decision_id: d.decision_id.clone(),
                    call_id: d.call_id.clone(),
                    instance: c.instance().to_owned(),
                    unix_ms: now,
                    by: by.to_owned(),
                    token: token.to_owned(),
                    what,
                })
            })
        };
        if !mine {
            match share(what.clone()) {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    return Err(OperationError::Unavailable(format!(
                        "the call was decided by instance {}: {e}; try again",
                        d.instance.as_deref().unwrap_or("?")
                    )))
                }
                None => return Err(OperationError::NotFound("no such decision".to_owned())),
            }
        }
        let queued = write(audit, &d, now);
        if !(queued && audit.flush(COMMIT_WAIT)) {
            return Err(OperationError::Unavailable(
                "the audit store did not commit in time; try again".to_owned(),
            ));
        }
        tracing::info!(decision = %d.decision_id, "recorded in the audit trail");
        if mine {
            if let Some(Err(e)) = share(what) {
                tracing::warn!(error = %e, decision = %d.decision_id, "recorded here but not shared with the other instances");
            }
        }
        self.labelled(d)
    }
}

/// An ended call's decision as stored, with the words of the policy in
/// force for its level and restrictions (the rules' words were stored).
fn ended(s: StoredDecision, policy: Option<&Policy>) -> EnforcedDecision {
    let r = s.record;
    let level = Level::ALL.into_iter().find(|l| l.as_str() == r.level);
    let words = |code: &str| {
        policy.and_then(|p| {
            p.restrictions
                .iter()
                .find(|t| &*t.action == code)
                .map(|t| Worded {
                    code: code.to_owned(),
                    text: t.text.to_string(),
                })
        })
    };
    let route = match r.action.as_str() {
        "review" => "review",
        "reject" => "reject",
        _ => "agents",
    };
    EnforcedDecision {
        call_id: r.call_id,
        decision_id: r.decision_id,
        instance: None,
        state: CallState::Ended,
        time_unix_ms: r.time_ms,
        level_text: level.and_then(|l| {
            policy.and_then(|p| p.levels[l as usize].text.as_deref().map(str::to_owned))
        }),
        level: (!r.level.is_empty()).then_some(r.level),
        score: Some(r.score),
        reasons_text: r
            .rules
            .iter()
            .filter_map(|f| {
                f.text.as_ref().map(|t| Worded {
                    code: f.code.clone(),
                    text: t.clone(),
                })
            })
            .collect(),
        reasons: r.rules.into_iter().map(|f| f.code).collect(),
        verify_text: None,
        restrict_text: r.restrict.iter().filter_map(|c| words(c)).collect(),
        restricted_by_policy: r.restrict.clone(),
        restrict: r.restrict,
        restrictions_lifted: false,
        action: r.action,
        route: route.to_owned(),
        policy_version: (!r.policy_version.is_empty()).then_some(r.policy_version),
        step_ups: vec![],
        verdicts: vec![],
        caller: Some(r.calling),
        callee: Some(r.called),
    }
}

impl Enforcement for Gate {
    fn enforced(&self, key: Lookup<'_>) -> Result<EnforcedDecision, OperationError> {
        let span = match key {
            Lookup::CallId(id) => tracing::debug_span!("decision_lookup", call_id = %id),
            Lookup::DecisionId(id) => tracing::debug_span!("decision_lookup", decision = %id),
        };
        let _entered = span.entered();
        self.decided(key).and_then(|d| self.labelled(d))
    }

    fn step_up(
        &self,
        call_id: &str,
        step: StepUpRequest,
        token: &str,
    ) -> Result<EnforcedDecision, OperationError> {
        let _span =
            tracing::info_span!("step_up", call_id = %call_id, token, method = %step.method)
                .entered();
        let what = LabelKind::StepUp {
            method: step.method.clone(),
        };
        let by = step.by.clone();
        self.label(call_id, (&by, token, what), |audit, d, now| {
            audit.step_up(StepUp {
                decision_id: d.decision_id.clone(),
                call_id: d.call_id.clone(),
                time_ms: now,
                by: step.by,
                method: step.method,
                token: token.to_owned(),
            })
        })
    }

    fn verdict(
        &self,
        call_id: &str,
        verdict: VerdictRequest,
        token: &str,
    ) -> Result<EnforcedDecision, OperationError> {
        let label = Label::parse(&verdict.verdict).ok_or_else(|| {
            OperationError::Refused(format!(
                "verdict: must be confirmed_customer, suspected_fraud or escalate, not {:?}",
                verdict.verdict
            ))
        })?;
        let _span =
            tracing::info_span!("verdict", call_id = %call_id, token, verdict = label.as_str())
                .entered();
        let what = LabelKind::Verdict {
            verdict: label.as_str().to_owned(),
            note: verdict.note.clone(),
        };
        let by = verdict.by.clone();
        self.label(call_id, (&by, token, what), |audit, d, now| {
            audit.verdict(Verdict {
                decision_id: d.decision_id.clone(),
                call_id: d.call_id.clone(),
                time_ms: now,
                verdict: label,
                by: verdict.by,
                note: verdict.note,
                token: token.to_owned(),
            })
        })
    }
}

/// Adds to `labels` those given on other instances that it does not hold
/// (those given here are in both), in time order.
fn merge_shared(labels: &mut Labels, shared: Vec<SharedLabel>) {
    /// Adds `item` unless `same` finds it there.
    fn add<T>(to: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool) {
        if !to.iter().any(|x| same(x, &item)) {
            to.push(item);
        }
    }
    for l in shared {
        match l.recorded() {
            Some(Recorded::StepUp(s)) => add(&mut labels.step_ups, s, |a, b| {
                (a.time_ms, &a.by, &a.method) == (b.time_ms, &b.by, &b.method)
            }),
            Some(Recorded::Verdict(v)) => add(&mut labels.verdicts, v, |a, b| {
                (a.time_ms, &a.by, a.verdict) == (b.time_ms, &b.by, b.verdict)
            }),
            None => {}
        }
    }
    labels.step_ups.sort_by_key(|s| s.time_ms);
    labels.verdicts.sort_by_key(|v| v.time_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(unix_ms: i64, by: &str, what: LabelKind) -> SharedLabel {
        SharedLabel {
            decision_id: "cg-b-00".into(),
            call_id: "c1".into(),
            instance: "cg-a".into(),
            unix_ms,
            by: by.into(),
            token: "floor".into(),
            what,
        }
    }

    #[test]
    fn labels_from_other_instances_join_those_stored_here_once_in_time_order() {
        let here = Verdict {
            decision_id: "cg-b-00".into(),
            call_id: "c1".into(),
            time_ms: 20,
            verdict: Label::Escalate,
            by: "agent 7".into(),
            note: String::new(),
            token: "desk-1".into(),
        };
        let mut labels = Labels {
            step_ups: vec![],
            verdicts: vec![here],
        };
        let fraud = LabelKind::Verdict {
            verdict: "suspected_fraud".into(),
            note: "asked for a reset".into(),
        };
        let escalate = LabelKind::Verdict {
            verdict: "escalate".into(),
            note: String::new(),
        };
        let otp = LabelKind::StepUp {
            method: "otp-sms".into(),
        };
        let unknown = LabelKind::Verdict {
            verdict: "maybe".into(),
            note: String::new(),
        };
        merge_shared(
            &mut labels,
            vec![
                shared(30, "lead", fraud),
                // The one stored here, shared too: not twice.
                shared(20, "agent 7", escalate),
                shared(10, "agent 7", otp),
                shared(40, "lead", unknown),
            ],
        );
        let verdicts: Vec<(i64, &str, &str)> = labels
            .verdicts
            .iter()
            .map(|v| (v.time_ms, v.verdict.as_str(), v.token.as_str()))
            .collect();
        assert_eq!(
            verdicts,
            [
                (20, "escalate", "desk-1"),
                (30, "suspected_fraud", "floor@cg-a")
            ]
        );
        assert_eq!(labels.step_ups.len(), 1);
        assert_eq!(labels.step_ups[0].token, "floor@cg-a");
    }
}
