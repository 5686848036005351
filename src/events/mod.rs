//! Decision events for CTI (docs/integration.md): every decision and every
//! decided call's end, as JSON (docs/events.schema.json), published to the
//! configured webhooks and on the live stream (`GET /v1/events`).
//!
//! Durability comes from the audit store: the audit writer puts each event
//! in the outbox in the transaction of its record
//! ([`crate::audit::outbox`]), through the [`EventHook`] this layer gives
//! it; then it hands the committed events to the stream's clients
//! (`hub.rs`) and wakes the webhook tasks (`webhook.rs`), which run on a
//! thread of their own (`callgate-events`) with their own connection to
//! the store. The call path never waits for any of it.
//!
//! - `event.rs`: what an event says;
//! - `webhook.rs`: signed delivery, retries, cursors;
//! - `hub.rs`: the stream's per-client buffers.

pub mod event;
pub mod hub;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;

use crate::audit::outbox::{CallEnd, EventHook, OutboxEvent, OutboxSettings, StoredEvent};
use crate::audit::{AuditRecord, Outbox};
use hub::{EventFeed, StreamEvent};

pub use event::EventKind;

/// `[events]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// Most events the outbox keeps; the oldest go first (counted).
    pub outbox_max_events: u64,
    /// Events each stream client's buffer holds before it is cut.
    pub stream_buffer: usize,
    /// Most stream clients at once.
    pub stream_clients: usize,
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            outbox_max_events: 100_000,
            stream_buffer: 256,
            stream_clients: 32,
            webhooks: Vec::new(),
        }
    }
}

/// One `[[events.webhook]]`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Its name in metrics, logs and the outbox's cursors.
    pub name: String,
    pub url: String,
    /// CA certificates (PEM) an https receiver's certificate may chain to,
    /// beside the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The HMAC-SHA256 key (`secret_file`).
    pub secret: Vec<u8>,
    /// Deadline of one delivery attempt.
    pub timeout: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// The kinds it receives.
    pub kinds: Vec<EventKind>,
}

impl std::fmt::Debug for WebhookConfig {
    /// Everything but the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("ca_file", &self.ca_file)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("max_backoff", &self.max_backoff)
            .field("kinds", &self.kinds)
            .finish()
    }
}

/// Why events could not start.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("events: TLS client configuration: {0}")]
    Tls(String),
    #[error("events: cannot start the delivery thread: {0}")]
    Thread(std::io::Error),
    #[error("events: {0}")]
    Outbox(#[from] crate::audit::AuditError),
}

/// One webhook's counters.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    /// Events the receiver took (2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed (no 2xx).
    pub failed: AtomicU64,
    /// Attempts made again after a failure.
    pub retried: AtomicU64,
    /// Events the outbox's cap removed before they were delivered.
    pub dropped: AtomicU64,
    /// The last event given to it (or skipped by its filter).
    pub cursor: AtomicI64,
}

/// The events' counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct EventMetrics {
    pub webhooks: Vec<WebhookMetrics>,
    /// The newest event's sequence number.
    pub last_seq: AtomicI64,
    /// Rows the outbox holds (as of the last pruning pass).
    pub outbox_rows: AtomicI64,
    /// Rows the outbox's cap removed.
    pub evicted: AtomicU64,
}

/// What the writer's hook, the webhook tasks and the stream share.
pub(crate) struct Shared {
    config: EventsConfig,
    /// The audit store holding the outbox.
    path: PathBuf,
    metrics: EventMetrics,
    hub: hub::Hub,
    /// The newest committed sequence number: wakes the webhook tasks.
    wake: tokio::sync::watch::Sender<i64>,
    /// Each webhook's TLS client settings.
    tls: Vec<Arc<rustls::ClientConfig>>,
}

/// The events layer: cheap to clone.
#[derive(Clone)]
pub struct Events {
    shared: Arc<Shared>,
}

/// How often rows every webhook is past are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Most backlog events a reconnecting stream client is sent.
const MAX_BACKLOG: usize = 10_000;

impl Events {
    /// The events layer for `cfg`, its outbox in the audit store at
    /// `audit_path`. Nothing runs until [`Events::start`].
    pub fn new(cfg: &EventsConfig, audit_path: &Path) -> Result<Events, EventsError> {
        let tls = cfg
            .webhooks
            .iter()
            .map(|w| {
                crate::stir::fetch::tls_config(w.ca_file.as_slice())
                    .map_err(|e| EventsError::Tls(format!("events.webhook {}: {e}", w.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metrics = EventMetrics {
            webhooks: cfg
                .webhooks
                .iter()
                .map(|_| WebhookMetrics::default())
                .collect(),
            ..EventMetrics::default()
        };
        Ok(Events {
            shared: Arc::new(Shared {
                config: cfg.clone(),
                path: audit_path.to_owned(),
                metrics,
                hub: hub::Hub::new(cfg.stream_buffer, cfg.stream_clients),
                wake: tokio::sync::watch::channel(0).0,
                tls,
            }),
        })
    }

    /// The outbox settings the audit writer takes.
    pub fn outbox(&self) -> OutboxSettings {
        OutboxSettings {
            hook: self.shared.clone(),
            max_events: self.shared.config.outbox_max_events,
        }
    }

    /// Starts delivery (after the audit store is open: the outbox exists):
    /// the `callgate-events` thread, a task per webhook and the pruning.
    pub fn start(&self) -> Result<(), EventsError> {
        let outbox = Outbox::open(&self.shared.path)?;
        let last = outbox.last_seq()?;
        self.shared
            .metrics
            .last_seq
            .fetch_max(last, Ordering::Relaxed);
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("callgate-events".into())
            .spawn(crate::logs::in_current_span(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "events: no runtime; webhooks are not delivered");
                        return;
                    }
                };
                // Each task holds its own connection to the store (not
                // Sync): they stay on this thread.
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    for i in 0..shared.config.webhooks.len() {
                        tokio::task::spawn_local(webhook::deliver(shared.clone(), i));
                    }
                    prune(shared, outbox).await;
                });
            }))
            .map_err(EventsError::Thread)?;
        Ok(())
    }

    /// A new stream client: its backlog after `last_event_id` (when the
    /// outbox still holds that event), then the live events.
    pub fn subscribe(&self, last_event_id: Option<&str>) -> Result<EventFeed, SubscribeError> {
        let live = self
            .shared
            .hub
            .subscribe()
            .map_err(|_| SubscribeError::Full)?;
        let mut backlog = Vec::new();
        if let Some(last) = last_event_id {
            let outbox = Outbox::open(&self.shared.path)?;
            if let Some(seq) = outbox.seq_of(last)? {
                backlog = outbox
                    .after(seq, MAX_BACKLOG)?
                    .into_iter()
                    .map(stream_event)
                    .collect();
            }
        }
        Ok(EventFeed { backlog, live })
    }

    pub fn metrics(&self) -> &EventMetrics {
        &self.shared.metrics
    }

    /// This instance's committed events as they are published, for the
    /// relay to the other instances (`crate::cluster`): a stream client
    /// of its own (it counts against `stream_clients` and is cut like any
    /// client that falls behind).
    pub fn relay_out(&self) -> Result<tokio::sync::mpsc::Receiver<StreamEvent>, SubscribeError> {
        self.shared
            .hub
            .subscribe()
            .map_err(|_| SubscribeError::Full)
    }

    /// Other instances' events, handed to this instance's stream clients
    /// (live only: the outbox, and so `Last-Event-ID`, is this instance's).
    pub fn relay_in(&self, events: &[StreamEvent]) {
        self.shared.hub.publish(events);
    }

    /// `[events]` as started (it is read at start only).
    pub fn config(&self) -> &EventsConfig {
        &self.shared.config
    }
}

/// Why a stream client was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("the event stream has all the clients it takes ([events] stream_clients)")]
    Full,
    #[error("reading the events outbox: {0}")]
    Outbox(#[from] crate::audit::AuditError),
}

fn stream_event(e: StoredEvent) -> StreamEvent {
    StreamEvent {
        seq: e.seq,
        id: Arc::from(e.event_id),
        kind: Arc::from(e.kind),
        data: Arc::from(e.body),
        origin: None,
    }
}

/// Deletes the rows every webhook is past, and keeps the row count for
/// `/metrics`. Without webhooks rows stay (for the stream's
/// `Last-Event-ID`) up to the cap.
async fn prune(shared: Arc<Shared>, outbox: Outbox) {
    loop {
        let past = shared
            .metrics
            .webhooks
            .iter()
            .map(|w| w.cursor.load(Ordering::Relaxed))
            .min();
        if let Some(past) = past.filter(|p| *p > 0) {
            loop {
                match outbox.delete_through(past) {
                    Ok(n) if n >= 1000 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "events outbox not pruned");
                        break;
                    }
                }
            }
        }
        if let Ok(rows) = outbox.depth() {
            shared.metrics.outbox_rows.store(rows, Ordering::Relaxed);
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

impl EventHook for Shared {
    fn decision(&self, record: &AuditRecord) -> OutboxEvent {
        event::decision(record)
    }

    fn call_end(&self, end: &CallEnd<'_>) -> OutboxEvent {
        event::call_end(end)
    }

    fn committed(&self, events: Vec<StoredEvent>) {
        let Some(last) = events.last().map(|e| e.seq) else {
            return;
        };
        self.metrics.last_seq.fetch_max(last, Ordering::Relaxed);
        self.hub
            .publish(&events.into_iter().map(stream_event).collect::<Vec<_>>());
        self.wake.send_replace(last);
    }

    fn evicted(&self, rows: u64) {
        let before = self.metrics.evicted.fetch_add(rows, Ordering::Relaxed);
        // Without webhooks the cap is the stream's history, working as
        // meant; with them, events some receiver never had are going. One
        // line when that starts and then every 1,000 events, not one per
        // batch (the counter has the exact figure).
        if !self.config.webhooks.is_empty()
            && (before == 0 || before / 1000 != (before + rows) / 1000)
        {
            tracing::warn!(
                evicted_total = before + rows,
                cap = self.config.outbox_max_events,
                "events outbox full: the oldest events are removed before every webhook had them"
            );
        }
    }
}

impl crate::exposition::Exposed for Events {
    /// Writes the events' counters into `/metrics` (see
    /// [`crate::exposition`]).
    fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use crate::exposition::{counter, gauge, one_counter, one_gauge};
        let s = &self.shared;
        let m = &s.metrics;
        let last = m.last_seq.load(Ordering::Relaxed);
        let per_hook = |w: &WebhookMetrics| {
            [
                w.delivered.load(Ordering::Relaxed),
                w.failed.load(Ordering::Relaxed),
                w.retried.load(Ordering::Relaxed),
                w.dropped.load(Ordering::Relaxed),
            ]
        };
        for (i, (name, help)) in [
            (
                "callgate_events_webhook_delivered_total",
                "Events a webhook's receiver took (2xx).",
            ),
            (
                "callgate_events_webhook_failed_total",
                "Webhook delivery attempts that failed (no 2xx answer).",
            ),
            (
                "callgate_events_webhook_retried_total",
                "Webhook delivery attempts made again after a failure.",
            ),
            (
                "callgate_events_webhook_dropped_total",
                "Events removed by the outbox cap before a webhook had them.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let mut f = counter(e, name, help)?;
            for (hook, w) in s.config.webhooks.iter().zip(&m.webhooks) {
                f.counter(&[("webhook", &hook.name)], per_hook(w)[i])?;
            }
        }
        let mut f = gauge(
            e,
            "callgate_events_webhook_outbox_depth",
            "Events in the outbox a webhook has yet to be given.",
        )?;
        for (hook, w) in s.config.webhooks.iter().zip(&m.webhooks) {
            f.gauge(
                &[("webhook", &hook.name)],
                (last - w.cursor.load(Ordering::Relaxed)).max(0),
            )?;
        }
        one_gauge(
            e,
            "callgate_events_outbox_rows",
            "Rows in the events outbox (as of the last pruning pass).",
            m.outbox_rows.load(Ordering::Relaxed),
        )?;
        one_counter(
            e,
            "callgate_events_outbox_evicted_total",
            "Events removed by the outbox cap ([events] outbox_max_events).",
            m.evicted.load(Ordering::Relaxed),
        )?;
        one_gauge(
            e,
            "callgate_events_stream_clients",
            "Clients of the event stream (GET /v1/events).",
            s.hub.clients() as i64,
        )?;
        one_counter(
            e,
            "callgate_events_stream_cut_total",
            "Event stream clients cut for falling behind.",
            s.hub.cut.load(Ordering::Relaxed),
        )
    }
}
