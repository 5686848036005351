//! The operator's views of the running service, read from where the data
//! lives: a call's decision from its call context, calls in progress from
//! the outcome tracker (`outcome.rs`) with their media from the anchor,
//! targets from the proxy core. Narrow read functions: nothing here
//! changes the service.

use std::time::Instant;

use super::context::CallContext;
use super::outcome::LiveCall;
use super::route::Route;
use super::Gate;
use crate::api::operations::{
    CallView, DecisionView, LegView, MediaView, ProbeView, StreamView, TargetView, Worded,
};
use crate::config::Side;
use crate::sip::proxy::TargetStatus;

/// What `ctl calls` shows of the call phases' decision on `ctx`.
pub fn decision_view(ctx: &CallContext) -> DecisionView {
    let decision = ctx.assessed.as_ref().map(|(d, _)| d);
    let verdict = decision.map(|d| &d.verdict);
    let (route, target) = match &ctx.route {
        Route::Agents => ("agents", None),
        Route::Review { target } => ("review", Some(target.clone())),
        Route::Reject { status, reason } => ("reject", Some(format!("{status} {reason}"))),
    };
    DecisionView {
        id: decision.map(|d| d.id.clone()),
        verstat: (!ctx.stir.verstat.is_empty()).then(|| ctx.stir.verstat.clone()),
        verify_text: ctx.verification.as_ref().map(crate::stir::mark::in_words),
        level: verdict.map(|v| v.level.as_str().to_owned()),
        score: verdict.map(|v| v.score),
        reasons: verdict
            .map(|v| v.reasons().map(str::to_owned).collect())
            .unwrap_or_default(),
        level_text: verdict.and_then(|v| v.level_text.as_deref().map(str::to_owned)),
        reasons_text: verdict
            .map(|v| {
                v.reason_texts()
                    .map(|(code, text)| worded(code, text))
                    .collect()
            })
            .unwrap_or_default(),
        restrict: verdict.map(|v| v.restrict.clone()).unwrap_or_default(),
        restrict_text: verdict
            .map(|v| {
                v.restrict_text
                    .iter()
                    .map(|r| worded(&r.action, &r.text))
                    .collect()
            })
            .unwrap_or_default(),
        action: match (&ctx.route, verdict) {
            (Route::Reject { .. }, _) => "reject",
            (_, Some(v)) => v.action.as_str(),
            (_, None) => "tag",
        }
        .to_owned(),
        route: route.to_owned(),
        target,
        policy_version: verdict.map(|v| v.policy_version.clone()),
    }
}

fn worded(code: &str, text: &str) -> Worded {
    Worded {
        code: code.to_owned(),
        text: text.to_owned(),
    }
}

/// Unix milliseconds of `at`, a past instant, on the pipeline's clock.
pub(super) fn unix_ms_of(gate: &Gate, at: Instant) -> i64 {
    let ago = i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX);
    gate.env.unix_ms().saturating_sub(ago)
}

impl Gate {
    /// A call in progress with its media, if the relay anchors it.
    pub(super) fn call_view(&self, call: LiveCall) -> CallView {
        let media = self.media_view(&call.call_id);
        CallView {
            media,
            ..self.plain_view(call)
        }
    }

    /// A call in progress without its media counters (what the other
    /// instances list, `crate::cluster`).
    pub(super) fn plain_view(&self, call: LiveCall) -> CallView {
        CallView {
            instance: self.env.instance().map(str::to_owned),
            direction: match call.side {
                Side::Trunk => "inbound",
                Side::Pbx => "outbound",
            },
            state: if call.answered_unix_ms.is_some() {
                "established"
            } else {
                "proceeding"
            },
            call_id: call.call_id,
            caller: call.caller,
            callee: call.callee,
            started_unix_ms: call.started_unix_ms,
            answered_unix_ms: call.answered_unix_ms,
            decision: call.decision,
            media: None,
        }
    }

    /// The media of the call `call_id`, if the relay anchors it.
    fn media_view(&self, call_id: &str) -> Option<MediaView> {
        self.media
            .as_ref()
            .and_then(|m| m.anchor.query(call_id).ok())
            .map(|report| MediaView {
                age_secs: report.age_secs,
                streams: report
                    .streams
                    .iter()
                    .zip(report.details.iter())
                    .map(|((index, stats), detail)| {
                        let leg = |i: usize, s: &crate::media::stats::StreamStats| LegView {
                            remote: detail.remotes[i].map(|r| r.rtp.to_string()),
                            packets: s.packets,
                            bytes: s.bytes,
                            lost: s.lost,
                            jitter: s.jitter,
                        };
                        StreamView {
                            index: *index,
                            media_type: detail.media_type.clone(),
                            proto: detail.proto.clone(),
                            ports: [detail.ports[0].0, detail.ports[1].0],
                            idle_ms: stats.idle_ms,
                            legs: [leg(0, &stats.a), leg(1, &stats.b)],
                        }
                    })
                    .collect(),
            })
    }

    /// One target of `side` as the operator sees it.
    pub(super) fn target_view(&self, side: Side, t: TargetStatus) -> TargetView {
        TargetView {
            side: side.as_str(),
            uri: t.target.uri,
            address: t.target.addr.to_string(),
            transport: t.target.transport.param(),
            health: if t.up { "up" } else { "down" },
            consecutive_failures: t.failures,
            last_probe: t.last_probe.map(|(at, answered)| ProbeView {
                unix_ms: unix_ms_of(self, at),
                answered,
            }),
            disabled: t.disabled,
            in_rotation: t.up && !t.disabled,
        }
    }
}
