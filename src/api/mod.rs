//! Admin HTTP API (axum): liveness, readiness, Prometheus metrics, reload.
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when listening and not draining, else 503 |
//! | `GET /metrics` | Prometheus text format |
//! | `POST /reload` | re-reads the configuration file (as SIGHUP), off the signalling thread |
//! | `/v1/…` | the operator's API (`callgate ctl`): calls, targets, drain, reload, policy (`v1.rs`) |
//!
//! Every request passes [`access::Access`] first: a `Host` that names the
//! listener, no cross-site browser origin, and the bearer token for
//! anything that changes state (`[admin]` in docs/configuration.md).
//!
//! The API knows the running service only through [`Service`], so it
//! depends on no layer above it (the gate implements the trait and spawns
//! [`serve`]).

pub mod access;
pub mod exhaustion;
pub mod metrics;
pub mod operations;
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

/// What the admin API needs of the running service.
pub trait Service: operations::Operations + Send + Sync + 'static {
    /// Listening and not draining.
    fn is_ready(&self) -> bool;
    /// Every metric family the service has, in Prometheus text format
    /// (version 0.0.4).
    fn metrics_text(&self) -> String;
    /// Re-reads the configuration file (as SIGHUP); the error says why not.
    fn reload(&self) -> Result<(), String>;
}

type Shared = Arc<dyn Service>;

/// What the handlers share: the service and the access rules.
#[derive(Clone)]
struct Api {
    service: Shared,
    access: Arc<access::Access>,
}

/// Serves the admin API on `listener` until the process exits, every
/// request checked by `access` first.
pub async fn serve(listener: TcpListener, service: Shared, access: access::Access) {
    let api = Api {
        service,
        access: Arc::new(access),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        .merge(v1::routes())
        .layer(axum::middleware::from_fn_with_state(api.clone(), guard))
        .with_state(api);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

/// Runs [`access::Access::check`] before any handler.
async fn guard(State(api): State<Api>, request: Request, next: Next) -> Response {
    match api.access.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
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

async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    let mut text = api.service.metrics_text();
    api.access.render(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Reloads on a blocking thread: reading and compiling the policy, trust
/// anchors and CRLs must not stall the runtime that carries signalling.
async fn reload(State(api): State<Api>) -> impl IntoResponse {
    let service = api.service.clone();
    match tokio::task::spawn_blocking(move || service.reload()).await {
        Ok(Ok(())) => (StatusCode::OK, "reloaded\n".to_owned()),
        Ok(Err(e)) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed: {e}\n"),
        ),
    }
}
