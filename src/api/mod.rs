//! Admin HTTP API (axum): liveness, readiness, Prometheus metrics, reload.
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when listening and not draining, else 503 |
//! | `GET /metrics` | Prometheus text format |
//! | `POST /reload` | re-reads the configuration file (as SIGHUP) |

pub mod metrics;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::gate::Gate;

/// Serves the admin API on `listener` until the process exits.
pub async fn serve(listener: TcpListener, gate: Arc<Gate>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        .with_state(gate);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

async fn readyz(State(gate): State<Arc<Gate>>) -> impl IntoResponse {
    if gate.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}

async fn metrics(State(gate): State<Arc<Gate>>) -> impl IntoResponse {
    let mut text = gate.metrics.render();
    gate.state.metrics().render(&mut text);
    if let Some(pool) = &gate.offload {
        pool.render(&mut text);
    }
    if let Some(media) = &gate.media {
        media.anchor.relay().render(&mut text);
        media.ng_metrics.render(&mut text);
    }
    if let Some(audit) = &gate.audit {
        audit.metrics().render(&mut text);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn reload(State(gate): State<Arc<Gate>>) -> impl IntoResponse {
    match gate.reload() {
        Ok(()) => (StatusCode::OK, "reloaded\n".to_owned()),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")),
    }
}
