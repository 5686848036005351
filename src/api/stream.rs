//! `GET /v1/events`: the decision events as Server-Sent Events (the
//! WHATWG HTML Living Standard, §9.2 "Server-sent events";
//! `text/event-stream`). Each event is written as `id:` (the event id, a
//! client's `Last-Event-ID` when it reconnects), `event:` (its kind) and
//! one `data:` line (its JSON, docs/events.schema.json).
//!
//! The service hands the API an [`EventFeed`]: what the outbox still holds
//! after the client's `Last-Event-ID` (when it can tell), then the live
//! events, through a bounded buffer per client that the service never
//! waits on — a client too slow to keep up is cut (its stream ends; it
//! reconnects with `Last-Event-ID`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::operations::OperationError;
use super::Api;
pub use crate::events::hub::{EventFeed, StreamEvent};

/// How often an idle stream carries a comment, so that proxies and the
/// client see the connection alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /v1/events`: 404 when events are off, 503 when the stream has as
/// many clients as it takes.
pub(super) async fn events(State(api): State<Api>, headers: HeaderMap) -> Response {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let service = api.service.clone();
    // The backlog is read from the audit store: off the runtime.
    let feed = tokio::task::spawn_blocking(move || service.subscribe_events(last.as_deref())).await;
    match feed {
        Ok(Ok(feed)) => Sse::new(FeedStream::new(feed))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response(),
        Ok(Err(e)) => {
            let status = match e {
                OperationError::NotFound(_) => StatusCode::NOT_FOUND,
                OperationError::Conflict(_) => StatusCode::SERVICE_UNAVAILABLE,
                OperationError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
                OperationError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            super::v1::error(status, &e.to_string())
        }
        Err(e) => super::v1::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("event stream failed: {e}"),
        ),
    }
}

/// The feed as a stream of SSE events: the backlog, then the live events
/// not already in it.
struct FeedStream {
    backlog: VecDeque<StreamEvent>,
    live: tokio::sync::mpsc::Receiver<StreamEvent>,
    /// The last sequence number sent.
    sent: i64,
}

impl FeedStream {
    fn new(feed: EventFeed) -> FeedStream {
        FeedStream {
            backlog: feed.backlog.into(),
            live: feed.live,
            sent: i64::MIN,
        }
    }
}

/// An event of this instance carries its id (a reconnecting client's
/// `Last-Event-ID`); one relayed from another instance does not.
fn sse(e: &StreamEvent) -> Event {
    let event = Event::default().event(&*e.kind).data(&*e.data);
    match e.origin {
        None => event.id(&*e.id),
        Some(_) => event,
    }
}

impl futures_core::Stream for FeedStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(e) = self.backlog.pop_front() {
            self.sent = e.seq;
            return Poll::Ready(Some(Ok(sse(&e))));
        }
        loop {
            match self.live.poll_recv(cx) {
                Poll::Ready(Some(e)) if e.origin.is_some() => {
                    return Poll::Ready(Some(Ok(sse(&e))));
                }
                // Subscribed before the backlog was read: skip the overlap.
                Poll::Ready(Some(e)) if e.seq <= self.sent => continue,
                Poll::Ready(Some(e)) => {
                    self.sent = e.seq;
                    return Poll::Ready(Some(Ok(sse(&e))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
