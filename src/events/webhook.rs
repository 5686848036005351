//! Webhook delivery: each `[[events.webhook]]` is one task that reads the
//! outbox in order from its cursor, POSTs each event it wants as JSON,
//! signed, and moves its cursor once the receiver answered 2xx. A failed
//! attempt is retried with exponential backoff and full jitter, up to
//! `max_backoff` between attempts, for as long as the outbox still holds
//! the event (its cap bounds how long that is); so delivery is at least
//! once, and a receiver dedupes by the event id.
//!
//! The signature (docs/integration.md, "Checking a webhook's
//! signature"): `X-Callgate-Signature: sha256=<hex>`, the HMAC-SHA256
//! (RFC 2104, FIPS 198-1) under the webhook's secret of
//! `<X-Callgate-Timestamp>.<body>`, so the timestamp is signed too and a
//! receiver refuses an old (replayed) request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use hyper::body::Bytes;

use super::{EventKind, Shared, WebhookConfig};
use crate::audit::{Outbox, StoredEvent};
use crate::stir::fetch::{post, FetchOptions};

/// The signature's header.
pub const SIGNATURE_HEADER: &str = "x-callgate-signature";
/// The signed timestamp's header (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-callgate-timestamp";
/// The event id's header (also in the body).
pub const EVENT_ID_HEADER: &str = "x-callgate-event-id";

/// Events read from the outbox at a time.
const BATCH: usize = 64;

/// First retry delay; doubled per attempt up to the webhook's bound.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Bytes of a receiver's answer read at most (and dropped).
const MAX_ANSWER: usize = 64 * 1024;

/// `sha256=<hex>` of `<timestamp>.<body>` under `key`.
pub fn signature(key: &hmac::Key, timestamp: u64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The wait before retry `attempt` (1, 2, …): 250 ms doubled per attempt,
/// at most `max`, drawn uniformly from its upper half (jitter, so that
/// callgates retrying against one receiver spread out).
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let half = full / 2;
    half + half.mul_f64(fastrand::f64())
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Opens the outbox, retrying (the store may be busy or briefly away).
async fn open(shared: &Shared, name: &str) -> Outbox {
    loop {
        match Outbox::open(&shared.path) {
            Ok(o) => return o,
            Err(e) => {
                tracing::error!(webhook = name, error = %e, "events outbox cannot be opened; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Delivers the outbox to webhook `index` of `shared`, forever.
pub(super) async fn deliver(shared: Arc<Shared>, index: usize) {
    let hook = &shared.config.webhooks[index];
    let metrics = &shared.metrics.webhooks[index];
    let key = hmac::Key::new(hmac::HMAC_SHA256, &hook.secret);
    let opts = FetchOptions {
        tls: shared.tls[index].clone(),
        timeout: hook.timeout,
        max_bytes: MAX_ANSWER,
        allow_private: true,
        proxy: None,
    };
    let mut wake = shared.wake.subscribe();
    let outbox = open(&shared, &hook.name).await;
    let mut cursor = loop {
        match outbox.cursor(&hook.name) {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(webhook = %hook.name, error = %e, "webhook cursor unreadable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    metrics.cursor.store(cursor, Ordering::Relaxed);
    loop {
        let batch = match outbox.after(cursor, BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(webhook = %hook.name, error = %e, "events outbox unreadable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            // New events wake it; the timeout is a safety net.
            let woken = tokio::time::timeout(Duration::from_secs(5), wake.changed()).await;
            if let Ok(Err(_)) = woken {
                // The sender is gone (shutting down): poll slowly.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            continue;
        }
        let saved = cursor;
        for event in batch {
            let wanted = EventKind::parse(&event.kind).is_some_and(|k| hook.kinds.contains(&k));
            if wanted {
                // Delivered, or gone from the outbox (counted): either way
                // the cursor moves past it. About to wait for a retry,
                // what was delivered before it is saved first.
                until_delivered(hook, &key, &opts, &outbox, metrics, &event, || {
                    save(&outbox, &hook.name, cursor, saved)
                })
                .await;
            }
            cursor = event.seq;
            metrics.cursor.store(cursor, Ordering::Relaxed);
        }
        // Once per batch, not per event: the store's writer is the audit's.
        save(&outbox, &hook.name, cursor, saved);
    }
}

/// Saves webhook `name`'s cursor when it moved past `saved`. A failure
/// is logged and delivery goes on: after a restart the receiver may get
/// those events again (it dedupes by id).
fn save(outbox: &Outbox, name: &str, cursor: i64, saved: i64) {
    if cursor > saved {
        if let Err(e) = outbox.set_cursor(name, cursor) {
            tracing::warn!(webhook = %name, error = %e, "webhook cursor not saved");
        }
    }
}

/// POSTs `event` until the receiver answers 2xx (`true`), or the outbox
/// no longer holds it (removed by its cap: counted as dropped, `false`).
/// `before_retry` runs at the first failure.
async fn until_delivered(
    hook: &WebhookConfig,
    key: &hmac::Key,
    opts: &FetchOptions,
    outbox: &Outbox,
    metrics: &super::WebhookMetrics,
    event: &StoredEvent,
    before_retry: impl FnOnce(),
) -> bool {
    let mut before_retry = Some(before_retry);
    let body = Bytes::from(event.body.clone());
    let mut attempt = 0u32;
    // Failures are logged in a span with the call's Call-ID (read from
    // the event only then).
    let mut span: Option<tracing::Span> = None;
    loop {
        let ts = unix_secs();
        let headers = [
            (SIGNATURE_HEADER, signature(key, ts, &body)),
            (TIMESTAMP_HEADER, ts.to_string()),
            (EVENT_ID_HEADER, event.event_id.clone()),
        ];
        let error = match post(&hook.url, "application/json", &headers, body.clone(), opts).await {
            Ok(status) if (200..300).contains(&status) => {
                metrics.delivered.fetch_add(1, Ordering::Relaxed);
                if attempt > 0 {
                    tracing::info!(webhook = %hook.name, event = %event.event_id, attempts = attempt + 1, "webhook delivered after retries");
                }
                return true;
            }
            Ok(status) => format!("receiver answered HTTP {status}"),
            Err(e) => e.to_string(),
        };
        metrics.failed.fetch_add(1, Ordering::Relaxed);
        attempt += 1;
        let wait = backoff(attempt, hook.max_backoff);
        let span = span.get_or_insert_with(|| {
            let call_id = serde_json::from_str::<serde_json::Value>(&event.body)
                .ok()
                .and_then(|v| v["call_id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            tracing::warn_span!("webhook", call_id = %call_id)
        });
        let gone = span.in_scope(|| {
            // One line for the first failure of an event and then every
            // tenth attempt, not one per retry.
            if attempt == 1 || attempt % 10 == 0 {
                tracing::warn!(webhook = %hook.name, url = %hook.url, event = %event.event_id, attempt, error = %error, retry_in_ms = wait.as_millis() as u64, "webhook delivery failed; retrying");
            }
            let gone = matches!(outbox.seq_of(&event.event_id), Ok(None));
            if gone {
                tracing::error!(webhook = %hook.name, event = %event.event_id, "event removed by the outbox cap before delivery: given up");
            }
            gone
        });
        if gone {
            metrics.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if let Some(f) = before_retry.take() {
            f();
        }
        metrics.retried.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        // RFC 4231 test case 2's key and message, with our framing
        // checked against an independent computation below.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let sig = signature(&key, 1_700_000_000, b"{}");
        let expect = hmac::sign(&key, b"1700000000.{}");
        let hex: String = expect.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sig, format!("sha256={hex}"));
        assert_ne!(sig, signature(&key, 1_700_000_001, b"{}"));
        // RFC 4231 §4.3: HMAC-SHA-256("Jefe", "what do ya want for nothing?").
        let known = hmac::sign(&key, b"what do ya want for nothing?");
        let known: String = known.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            known,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_with_jitter() {
        let max = Duration::from_secs(10);
        for attempt in 1..30 {
            let full = FIRST_BACKOFF
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(max);
            let b = backoff(attempt, max);
            assert!(b >= full / 2 && b <= full, "attempt {attempt}: {b:?}");
        }
    }
}
