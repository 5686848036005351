//! Admin HTTP API (axum): liveness, readiness, Prometheus metrics, reload.
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when listening and not draining, else 503 |
//! | `GET /metrics` | Prometheus text format |
//! | `POST /reload` | re-reads the configuration file (as SIGHUP) |
//!
//! The API knows the running service only through [`Service`], so it
//! depends on no layer above it (the gate implements the trait and spawns
//! [`serve`]).

pub mod exhaustion;
pub mod metrics;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

/// What the admin API needs of the running service.
pub trait Service: Send + Sync + 'static {
    /// Listening and not draining.
    fn is_ready(&self) -> bool;
    /// Every metric family the service has, in Prometheus text format
    /// (version 0.0.4).
    fn metrics_text(&self) -> String;
    /// Re-reads the configuration file (as SIGHUP); the error says why not.
    fn reload(&self) -> Result<(), String>;
}

type Shared = Arc<dyn Service>;

/// Serves the admin API on `listener` until the process exits.
pub async fn serve(listener: TcpListener, service: Shared) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        .with_state(service);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

async fn readyz(State(service): State<Shared>) -> impl IntoResponse {
    if service.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}

async fn metrics(State(service): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        service.metrics_text(),
    )
}

async fn reload(State(service): State<Shared>) -> impl IntoResponse {
    match service.reload() {
        Ok(()) => (StatusCode::OK, "reloaded\n".to_owned()),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")),
    }
}
