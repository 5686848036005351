//! The enforcement API: what a CRM asks about the call an agent is on,
//! and what it tells callgate back (docs/integration.md):
//!
//! | method and path | role | answer |
//! |---|---|---|
//! | `GET /v1/calls/{id}/decision` | agent | the decision on the call with this Call-ID, restrictions as they stand now |
//! | `GET /v1/decisions/{id}` | agent | the same, by decision id (`X-Callgate-Decision`) |
//! | `POST /v1/calls/{id}/step-up` | agent | `{by, method}`: the agent completed step-up; the call's restrictions are lifted from now on |
//! | `POST /v1/calls/{id}/verdict` | agent | `{verdict, by, note}`: `confirmed_customer`, `suspected_fraud` or `escalate`, stored with the decision |
//! | `GET /v1/review` | supervisor | calls in progress routed to the review queue, oldest first |
//!
//! A call in progress is answered from the live-call table, an ended one
//! from the audit store; step-ups and verdicts are written to the audit
//! trail (who, how, when, through which token) before the answer, so what
//! the CRM is told survives a restart. Reads and writes of the store run
//! off the runtime that carries signalling.
//!
//! **Personal data.** An `agent` is told what the decision says and no
//! more: no calling or called number, no addresses, no signals, no
//! INVITE. A `supervisor` or `ops` caller also gets `caller` and `callee`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::operations::{CallView, OperationError, Worded};
use super::v1::{error, json, outcome};
use super::Api;
use crate::config::Role;

/// What the enforcement API asks of the running service.
pub trait Enforcement: Send + Sync + 'static {
    /// The decision a lookup names, with its step-ups and verdicts.
    /// Blocking: may read the audit store.
    fn enforced(&self, key: Lookup<'_>) -> Result<EnforcedDecision, OperationError>;
    /// Records a step-up for the call with Call-ID `call_id`, durably,
    /// and answers the decision as it stands after it. Blocking.
    fn step_up(
        &self,
        call_id: &str,
        step: StepUpRequest,
        token: &str,
    ) -> Result<EnforcedDecision, OperationError>;
    /// Records a verdict for the call, durably. Blocking.
    fn verdict(
        &self,
        call_id: &str,
        verdict: VerdictRequest,
        token: &str,
    ) -> Result<EnforcedDecision, OperationError>;
}

/// Which decision a lookup names.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// The latest decision on the call with this Call-ID.
    CallId(&'a str),
    /// The decision with this id.
    DecisionId(&'a str),
}

/// `POST /v1/calls/{id}/step-up`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpRequest {
    /// The agent, as the CRM names them.
    pub by: String,
    /// How the caller was checked (`otp-sms`, `callback-on-file`, …).
    pub method: String,
}

/// `POST /v1/calls/{id}/verdict`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictRequest {
    /// `confirmed_customer`, `suspected_fraud` or `escalate`.
    pub verdict: String,
    pub by: String,
    #[serde(default)]
    pub note: String,
}

/// Whether a decision's call is still in progress.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// The call is in progress (on this instance or, shared, another).
    Live,
    /// The call ended: the audit trail (or the shared store) has it.
    Ended,
}

/// A call's decision as the CRM enforces it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnforcedDecision {
    pub call_id: String,
    pub decision_id: String,
    /// The instance that decided (with several sharing a state store, any
    /// of them answers for every instance's decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// `live` while the call is in progress, `ended` once only the audit
    /// trail has it.
    pub state: CallState,
    /// When the call was decided (Unix ms).
    pub time_unix_ms: i64,
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_text: Option<String>,
    pub score: Option<u32>,
    pub reasons: Vec<String>,
    pub reasons_text: Vec<Worded>,
    /// The verification in words (calls in progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_text: Option<String>,
    /// The actions the agent must not take now: the policy's
    /// restrictions, or none once a step-up is recorded.
    pub restrict: Vec<String>,
    pub restrict_text: Vec<Worded>,
    /// What the policy restricted, lifted or not.
    pub restricted_by_policy: Vec<String>,
    /// A step-up was recorded for this call.
    pub restrictions_lifted: bool,
    /// `tag`, `review` or `reject`.
    pub action: String,
    /// `agents`, `review` or `reject`.
    pub route: String,
    pub policy_version: Option<String>,
    pub step_ups: Vec<StepUpView>,
    /// Every verdict given, oldest first (the last one stands).
    pub verdicts: Vec<VerdictView>,
    /// Calling and called numbers: for `supervisor` and `ops` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee: Option<String>,
}

/// A step-up as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepUpView {
    pub by: String,
    pub method: String,
    pub unix_ms: i64,
    /// The admin token's name it came through.
    pub token: String,
}

/// A verdict as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerdictView {
    pub verdict: String,
    pub by: String,
    pub note: String,
    pub unix_ms: i64,
    pub token: String,
}

/// Longest `by` and `method` (characters), and `note`.
pub(super) const MAX_NAME: usize = 128;
pub(super) const MAX_NOTE: usize = 2000;

/// Checks a free-text field of a request: `Err` names the field.
pub(super) fn field(name: &str, value: &str, max: usize, empty_ok: bool) -> Result<(), String> {
    if value.trim().is_empty() && !empty_ok {
        return Err(format!("{name}: must not be empty"));
    }
    if value.chars().count() > max {
        return Err(format!("{name}: longer than {max} characters"));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(format!("{name}: control characters are not allowed"));
    }
    Ok(())
}

impl StepUpRequest {
    fn check(&self) -> Result<(), String> {
        field("by", &self.by, MAX_NAME, false)?;
        field("method", &self.method, MAX_NAME, false)
    }
}

impl VerdictRequest {
    fn check(&self) -> Result<(), String> {
        field("by", &self.by, MAX_NAME, false)?;
        field("note", &self.note, MAX_NOTE, true)
    }
}

/// The caller a route needing a token was accepted for (the access check
/// guarantees one; a missing one is answered as unauthenticated).
type Who = Extension<Option<Caller>>;

/// What `caller` may see of `d`: numbers only for supervisors and ops.
fn for_role(mut d: EnforcedDecision, caller: &Caller) -> EnforcedDecision {
    if caller.role < Role::Supervisor {
        d.caller = None;
        d.callee = None;
    }
    d
}

/// Runs `work` on a blocking thread and answers its outcome for `caller`.
async fn blocking(
    api: Api,
    caller: Option<Caller>,
    work: impl FnOnce(&Api, &Caller) -> Result<EnforcedDecision, OperationError> + Send + 'static,
) -> Response {
    let Some(caller) = caller else {
        return error(StatusCode::UNAUTHORIZED, "bearer token required");
    };
    match tokio::task::spawn_blocking(crate::logs::in_current_span(move || {
        work(&api, &caller).map(|d| for_role(d, &caller))
    }))
    .await
    {
        Ok(result) => outcome(result),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /v1/calls/{id}/decision`.
pub(super) async fn by_call(
    State(api): State<Api>,
    Extension(who): Who,
    Path(id): Path<String>,
) -> Response {
    blocking(api, who, move |api, _| {
        api.service.enforced(Lookup::CallId(&id))
    })
    .await
}

/// `GET /v1/decisions/{id}`.
pub(super) async fn by_decision(
    State(api): State<Api>,
    Extension(who): Who,
    Path(id): Path<String>,
) -> Response {
    blocking(api, who, move |api, _| {
        api.service.enforced(Lookup::DecisionId(&id))
    })
    .await
}

/// The JSON body of a request, or the status and reason refusing it (400
/// when it is not the document, 422 when a field is wrong).
pub(super) fn body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, (StatusCode, String)> {
    let value: T = serde_json::from_slice(bytes)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("request body: {e}")))?;
    check(&value).map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(value)
}

/// A POST of the enforcement API: its body checked, then `act` with the
/// call's Call-ID, the request and the caller's token name.
async fn labelling<T: serde::de::DeserializeOwned + Send + 'static>(
    api: Api,
    who: Option<Caller>,
    call_id: String,
    bytes: &[u8],
    check: impl Fn(&T) -> Result<(), String>,
    act: fn(&Api, &str, T, &str) -> Result<EnforcedDecision, OperationError>,
) -> Response {
    match body(bytes, check) {
        Ok(request) => {
            blocking(api, who, move |api, caller| {
                act(api, &call_id, request, &caller.name)
            })
            .await
        }
        Err((status, reason)) => error(status, &reason),
    }
}

/// `POST /v1/calls/{id}/step-up`.
pub(super) async fn step_up(
    State(api): State<Api>,
    Extension(who): Who,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    labelling(
        api,
        who,
        id,
        &bytes,
        StepUpRequest::check,
        |api, id, r, t| api.service.step_up(id, r, t),
    )
    .await
}

/// `POST /v1/calls/{id}/verdict`.
pub(super) async fn verdict(
    State(api): State<Api>,
    Extension(who): Who,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    labelling(
        api,
        who,
        id,
        &bytes,
        VerdictRequest::check,
        |api, id, r, t| api.service.verdict(id, r, t),
    )
    .await
}

/// `GET /v1/review`: calls in progress the route phase sent to the review
/// queue, oldest first: the supervisors' queue, so every instance's when
/// several share a state store (`crate::cluster`).
pub(super) async fn review(State(api): State<Api>) -> Response {
    #[derive(Serialize)]
    struct Queue {
        count: usize,
        calls: Vec<CallView>,
    }
    let calls: Vec<CallView> = super::v1::calls_of(&api, true)
        .into_iter()
        .filter(|c| c.decision.as_ref().is_some_and(|d| d.route == "review"))
        .collect();
    json(
        StatusCode::OK,
        &Queue {
            count: calls.len(),
            calls,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fields_are_checked_by_name() {
        let ok = StepUpRequest {
            by: "agent 7".into(),
            method: "otp-sms".into(),
        };
        assert_eq!(ok.check(), Ok(()));
        let empty = StepUpRequest {
            by: " ".into(),
            method: "otp-sms".into(),
        };
        assert_eq!(empty.check(), Err("by: must not be empty".into()));
        let control = VerdictRequest {
            verdict: "escalate".into(),
            by: "a".into(),
            note: "line\u{1b}[2J".into(),
        };
        assert_eq!(
            control.check(),
            Err("note: control characters are not allowed".into())
        );
        let long = StepUpRequest {
            by: "a".into(),
            method: "m".repeat(MAX_NAME + 1),
        };
        assert!(long.check().is_err_and(|e| e.starts_with("method:")));
    }
}
