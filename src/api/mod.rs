//! Admin HTTP API (axum): liveness, readiness, Prometheus metrics, reload.
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when listening and not draining, else 503 |
//! | `GET /metrics` | Prometheus text format 0.0.4 ([`exposition`]): the service's families, the admin API's, build and process |
//! | `POST /reload` | re-reads the configuration file (as SIGHUP), off the signalling thread |
//! | `GET /console`, `/console/…` | the console for agents, supervisors and ops, embedded (`console.rs`) |
//! | `/v1/…` | the operator's API (`callgate ctl`): calls, targets, drain, reload, policy (`v1.rs`); the CRM's enforcement API (`enforce.rs`); `GET /v1/events`, the decision events as Server-Sent Events (`stream.rs`); `GET /v1/whoami` (`console.rs`); the policy's lists (`lists.rs`) |
//!
//! Every request passes [`access::Access`] first: a `Host` that names the
//! listener, no cross-site browser origin, a bearer token for anything
//! that changes state, and a role that allows the route (`[admin]` in
//! docs/configuration.md).
//!
//! The API knows the running service only through [`Service`], so it
//! depends on no layer above it (the gate implements the trait and spawns
//! [`serve`]).

pub mod access;
mod console;
pub mod enforce;
pub mod exhaustion;
pub mod lists;
pub mod metrics;
pub mod operations;
pub mod process;
pub mod reason_metrics;
pub mod stream;
pub mod tls_metrics;
mod v1;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::exposition;

/// What the admin API needs of the running service.
pub trait Service:
    operations::Operations + enforce::Enforcement + lists::ListEditing + Send + Sync + 'static
{
    /// Listening and not draining.
    fn is_ready(&self) -> bool;
    /// Writes every metric family the service has (see [`exposition`]).
    fn encode_metrics(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result;
    /// Re-reads the configuration file (as SIGHUP); the error says why not.
    fn reload(&self) -> Result<(), String>;
    /// A new client of the event stream, with the events after
    /// `last_event_id` the service still holds. Blocking (reads the
    /// store): the API calls it off the runtime. `NotFound` when events
    /// are off, `Conflict` when the stream has all the clients it takes.
    fn subscribe_events(
        &self,
        _last_event_id: Option<&str>,
    ) -> Result<stream::EventFeed, operations::OperationError> {
        Err(operations::OperationError::NotFound(
            "events are not configured ([events])".to_owned(),
        ))
    }
}

type Shared = Arc<dyn Service>;

/// What the handlers share: the service, the access rules and the
/// registry `/metrics` encodes.
#[derive(Clone)]
struct Api {
    service: Shared,
    access: Arc<access::Access>,
    registry: Arc<prometheus_client::registry::Registry>,
}

/// The service as one part of the `/metrics` registry.
struct ServiceMetrics(Shared);

impl exposition::Exposed for ServiceMetrics {
    fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        self.0.encode_metrics(e)
    }
}

impl exposition::Exposed for access::Access {
    fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        access::Access::encode(self, e)
    }
}

/// Serves the admin API on `listener` until the process exits, every
/// request checked by `access` first; `instance` (`[instance] name`)
/// labels `callgate_build_info`.
pub async fn serve(
    listener: TcpListener,
    service: Shared,
    access: access::Access,
    instance: String,
) {
    let access = Arc::new(access);
    let registry = exposition::registry([
        exposition::collector(Arc::new(ServiceMetrics(service.clone()))),
        exposition::collector(access.clone()),
        exposition::collector(Arc::new(process::ProcessMetrics { instance })),
    ]);
    let api = Api {
        service,
        access,
        registry: Arc::new(registry),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        .merge(v1::routes())
        .merge(console::routes())
        .layer(axum::middleware::from_fn_with_state(api.clone(), guard))
        .with_state(api);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

/// Runs [`access::Access::check`] before any handler.
/// The accepted caller (if a token was sent) goes into the request's
/// extensions as an `Option<access::Caller>`.
async fn guard(State(api): State<Api>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    match api.access.check(request.method(), &path, request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => {
            tracing::warn!(reason = refusal.as_str(), method = %request.method(), path = %request.uri().path(), "admin request refused");
            let (status, body) = refusal.answer();
            if refusal == access::Refusal::Token {
                (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
            } else {
                (status, body).into_response()
            }
        }
    }
}

async fn readyz(State(api): State<Api>) -> impl IntoResponse {
    if api.service.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}

/// Encodes on a blocking thread: the media relay's workers are asked for
/// their live totals (a bounded wait) and `/proc` is read.
async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    let registry = api.registry.clone();
    match tokio::task::spawn_blocking(move || exposition::text(&registry)).await {
        Ok(text) => ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Reloads on a blocking thread: reading and compiling the policy, trust
/// anchors and CRLs must not stall the runtime that carries signalling.
async fn reload(State(api): State<Api>) -> impl IntoResponse {
    let service = api.service.clone();
    match tokio::task::spawn_blocking(crate::logs::in_current_span(move || service.reload())).await
    {
        Ok(Ok(())) => (StatusCode::OK, "reloaded\n".to_owned()),
        Ok(Err(e)) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed: {e}\n"),
        ),
    }
}
