//! The console: a web page for agents, supervisors and ops, served by
//! the admin listener from files embedded in the binary (no build step,
//! nothing fetched from elsewhere), and `GET /v1/whoami`, which tells the
//! page the name and role of the token it was given
//! (docs/integration.md "The console").
//!
//! | path | answer |
//! |---|---|
//! | `GET /console` | the page (`console/index.html`) |
//! | `GET /console/console.css`, `GET /console/console.js` | its style and script |
//! | `GET /v1/whoami` | `{name, role}` of the bearer token (any role; routed in `v1.rs`) |
//!
//! The page holds no data: it asks for a token, keeps it in the tab's
//! `sessionStorage`, and sends it as `Authorization: Bearer` with every
//! API request, so each view gets exactly what the API gives that role
//! (the same access checks, `access.rs`). Every file is answered with
//! `Content-Security-Policy: default-src 'self'` (no inline script or
//! style, no other origin; docs/security.md), `X-Content-Type-Options:
//! nosniff` and `Cache-Control: no-store`.

use axum::extract::Extension;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::access::Caller;
use super::v1::{error, json};
use super::Api;

/// The policy every console file is served with: its own origin only
/// (CSP Level 3 §6.1), not framed by anyone, no `<base>`.
pub const CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX: &str = include_str!("console/index.html");
const STYLE: &str = include_str!("console/console.css");
const SCRIPT: &str = include_str!("console/console.js");

/// The console's routes, on the admin API's state.
pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route(
            "/console",
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/",
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/console.css",
            get(|| async { file(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/console/console.js",
            get(|| async { file(SCRIPT, "text/javascript; charset=utf-8") }),
        )
}

/// One embedded file with the console's security headers.
fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `GET /v1/whoami`: the token's name and role.
pub(super) async fn whoami(Extension(who): Extension<Option<Caller>>) -> Response {
    #[derive(Serialize)]
    struct Whoami<'a> {
        name: &'a str,
        role: &'a str,
    }
    match &who {
        Some(c) => json(
            StatusCode::OK,
            &Whoami {
                name: &c.name,
                role: c.role.as_str(),
            },
        ),
        None => error(StatusCode::UNAUTHORIZED, "bearer token required"),
    }
}
