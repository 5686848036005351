//! The audit phase's record of an inbound decision: the call's parties,
//! the verification path, the signals, the rules that fired, the score,
//! level and action, where the call went, and the policy version
//! (docs/audit.md). Built from the call context; written off the call path.

use super::context::CallContext;
use crate::audit::{AuditRecord, FiredRule, Json, RestrictWords};
use crate::env::Env;

/// The audit record of the call's decision.
pub fn audit_record(ctx: &CallContext, env: &Env) -> AuditRecord {
    let (decision, signals) = match &ctx.assessed {
        Some((d, s)) => (Some(d), Some(s)),
        None => (None, None),
    };
    let verdict = decision.map(|d| &d.verdict);
    let target = match &ctx.route {
        super::route::Route::Review { target } => Some(target.clone()),
        _ => None,
    };
    AuditRecord {
        decision_id: decision
            .map(|d| d.id.clone())
            .unwrap_or_else(|| env.decision_id()),
        instance: env.instance().unwrap_or_default().to_owned(),
        time_ms: env.unix_ms(),
        call_id: String::from_utf8_lossy(ctx.msg.call_id().unwrap_or_default()).into_owned(),
        side: ctx.peer.side.as_str().to_owned(),
        trunk: ctx.peer.addr.ip().to_string(),
        calling: ctx.parties.calling.clone(),
        called: ctx.parties.called.first().cloned().unwrap_or_default(),
        verification: ctx
            .verification
            .as_ref()
            .map(Json::of)
            .unwrap_or_else(Json::null),
        signals: signals.map(Json::of).unwrap_or_else(Json::null),
        rules: verdict
            .map(|v| {
                v.fired
                    .iter()
                    .map(|f| FiredRule {
                        code: f.code.clone(),
                        weight: f.weight,
                        text: f.text.as_deref().map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        score: verdict.map(|v| v.score).unwrap_or(0),
        level: verdict
            .map(|v| v.level.as_str().to_owned())
            .unwrap_or_default(),
        action: match (&ctx.route, verdict) {
            (super::route::Route::Reject { .. }, _) => "reject",
            (_, Some(v)) => v.action.as_str(),
            (_, None) => "tag",
        }
        .to_owned(),
        target,
        restrict: verdict.map(|v| v.restrict.clone()).unwrap_or_default(),
        level_text: verdict.and_then(|v| v.level_text.as_deref().map(str::to_owned)),
        restrict_text: verdict
            .map(|v| {
                v.restrict_text
                    .iter()
                    .map(|r| RestrictWords {
                        action: r.action.to_string(),
                        text: r.text.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        verify_text: ctx.verification.as_ref().map(crate::stir::mark::in_words),
        from_user: ctx.parties.from_user.clone(),
        pai_user: ctx.parties.pai_user.clone(),
        policy_version: verdict
            .map(|v| v.policy_version.clone())
            .unwrap_or_default(),
        shadow: decision.and_then(|d| d.shadow.as_ref()).map(Json::of),
        // Stored from the received bytes by the audit writer (see
        // `Audit::record_with_invite`).
        invite: None,
    }
}
