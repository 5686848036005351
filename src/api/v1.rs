//! The operator's API, `/v1/…`, JSON in and out (what `callgate ctl`
//! calls; described in docs/admin-api.openapi.yaml):
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v1/calls` | calls in progress with their decision and media |
//! | `GET /v1/calls/{id}` | one call, by Call-ID or decision id; 404 |
//! | `GET /v1/targets` | each side's targets: health, last probe, override |
//! | `POST /v1/targets/{side}/{target}/disable` | out of rotation until enabled; 404, 409 for the last one |
//! | `POST /v1/targets/{side}/{target}/enable` | back in rotation |
//! | `GET /v1/drain` | whether new INVITEs are refused |
//! | `POST /v1/drain` | refuse new INVITEs (503 + Retry-After), keep calls |
//! | `POST /v1/undrain` | take new INVITEs again; 409 while shutting down |
//! | `POST /v1/reload` | re-read the configuration: what changed, or 422 and why not |
//! | `GET /v1/policy` | active and shadow policy: versions, rules, disagreements |
//! | `GET /v1/calls/{id}/decision`, `GET /v1/decisions/{id}` | the enforcement API (`enforce.rs`): a call's decision for the CRM |
//! | `POST /v1/calls/{id}/step-up`, `POST /v1/calls/{id}/verdict` | step-up and verdicts, written to the audit trail |
//! | `GET /v1/review` | calls in progress routed to the review queue |
//! | `GET /v1/whoami` | the token's name and role (`console.rs`) |
//! | `GET /v1/lists`, `POST /v1/lists/{list}` | numbers supervisors added to `fraud` or `allow` (`lists.rs`) |
//! | `GET /v1/events` | decision events, live, as Server-Sent Events (`stream.rs`); 404 when `[events]` is off |
//!
//! Access is checked before any of these (`access.rs`): reads need a
//! token when `admin.token_for_reads`, every POST and the enforcement API
//! always, and the token's role must allow the route. Errors are
//! `{"error": "…"}` with the status saying which kind.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

use super::enforce;
use super::operations::OperationError;
use super::Api;

/// The `/v1` routes, on the admin API's state.
pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/calls", get(calls))
        .route("/v1/calls/{id}", get(call))
        .route("/v1/targets", get(targets))
        .route("/v1/targets/{side}/{target}/disable", post(disable))
        .route("/v1/targets/{side}/{target}/enable", post(enable))
        .route("/v1/drain", get(drain_status).post(drain))
        .route("/v1/undrain", post(undrain))
        .route("/v1/reload", post(reload))
        .route("/v1/policy", get(policy))
        .route("/v1/calls/{id}/decision", get(enforce::by_call))
        .route("/v1/decisions/{id}", get(enforce::by_decision))
        .route("/v1/calls/{id}/step-up", post(enforce::step_up))
        .route("/v1/calls/{id}/verdict", post(enforce::verdict))
        .route("/v1/review", get(enforce::review))
        .route("/v1/events", get(super::stream::events))
        .route("/v1/whoami", get(super::console::whoami))
        .route("/v1/lists", get(super::lists::changes))
        .route("/v1/lists/{list}", post(super::lists::add))
}

/// `value` as a JSON answer with `status`.
pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `{"error": reason}` with `status`.
pub(super) fn error(status: StatusCode, reason: &str) -> Response {
    #[derive(Serialize)]
    struct Error<'a> {
        error: &'a str,
    }
    let body = serde_json::to_vec(&Error { error: reason }).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The answer to an operation that may be refused.
pub(super) fn outcome(result: Result<impl Serialize, OperationError>) -> Response {
    match result {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => {
            let status = match e {
                OperationError::NotFound(_) => StatusCode::NOT_FOUND,
                OperationError::Conflict(_) => StatusCode::CONFLICT,
                OperationError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
                OperationError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, &e.to_string())
        }
    }
}

/// Whether a request's query asks for every instance's calls
/// (`?instances=all`) rather than this instance's.
pub(super) fn all_instances(uri: &axum::http::Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|p| p == "instances=all"))
}

/// This instance's calls, and the other instances' too when `all`
/// (`crate::cluster`), oldest first.
pub(super) fn calls_of(api: &Api, all: bool) -> Vec<super::operations::CallView> {
    let mut calls = api.service.calls();
    if all {
        calls.extend(api.service.other_instances_calls());
        calls.sort_by_key(|c| c.started_unix_ms);
    }
    calls
}

/// `GET /v1/calls[?instances=all]`: this instance's calls in progress
/// (what `ctl calls` and a drain wait for), or every instance's.
async fn calls(State(api): State<Api>, uri: axum::http::Uri) -> Response {
    #[derive(Serialize)]
    struct Calls {
        count: usize,
        calls: Vec<super::operations::CallView>,
    }
    let calls = calls_of(&api, all_instances(&uri));
    json(
        StatusCode::OK,
        &Calls {
            count: calls.len(),
            calls,
        },
    )
}

async fn call(State(api): State<Api>, Path(id): Path<String>) -> Response {
    outcome(api.service.call(&id).ok_or_else(|| {
        OperationError::NotFound(format!(
            "no call in progress with Call-ID or decision id {id:?}"
        ))
    }))
}

async fn targets(State(api): State<Api>) -> Response {
    json(StatusCode::OK, &api.service.targets())
}

async fn disable(State(api): State<Api>, Path((side, target)): Path<(String, String)>) -> Response {
    outcome(api.service.set_target_disabled(&side, &target, true))
}

async fn enable(State(api): State<Api>, Path((side, target)): Path<(String, String)>) -> Response {
    outcome(api.service.set_target_disabled(&side, &target, false))
}

async fn drain_status(State(api): State<Api>) -> Response {
    json(StatusCode::OK, &api.service.drain_status())
}

async fn drain(State(api): State<Api>) -> Response {
    json(StatusCode::OK, &api.service.drain())
}

async fn undrain(State(api): State<Api>) -> Response {
    outcome(api.service.undrain())
}

/// Reloads on a blocking thread (files are read and compiled), as
/// `POST /reload` does.
async fn reload(State(api): State<Api>) -> Response {
    let service = api.service.clone();
    match tokio::task::spawn_blocking(crate::logs::in_current_span(move || {
        service.reload_report()
    }))
    .await
    {
        Ok(result) => outcome(result),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("reload failed: {e}"),
        ),
    }
}

async fn policy(State(api): State<Api>) -> Response {
    json(StatusCode::OK, &api.service.policy())
}
