//! ES256 checks on worker threads while the signalling thread is busy.
//!
//! Signalling runs on one thread; a signature check costs about as much
//! CPU as proxying the whole call (≈ 63 µs against ≈ 60 µs here), so with
//! every check on that thread, signed traffic saturates one core while the
//! others idle. The pool moves checks to its own threads, but only while
//! the signalling thread is busy: a hand-off costs two thread wake-ups,
//! more than it saves on a quiet system. The gate measures the demand —
//! the signalling thread's busy time plus the pool's, over a short window —
//! and switches the pool on above [`ON_ABOVE`] of a core and off below
//! [`OFF_BELOW`] ([`LoadMeter`]). A full queue runs the check inline, so
//! the pool never holds a call.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Checks waiting for a worker at most; beyond, they run inline.
const QUEUE: usize = 4096;

/// Demand (share of one core) above which checks go to the pool.
pub const ON_ABOVE: f64 = 0.6;
/// Demand below which checks stay on the signalling thread again.
pub const OFF_BELOW: f64 = 0.4;
/// The window the demand is measured over.
pub const WINDOW: Duration = Duration::from_millis(100);

type Job = Box<dyn FnOnce() + Send>;

/// Worker threads for signature checks, and whether to use them now.
pub struct SignatureOffload {
    jobs: SyncSender<Job>,
    active: AtomicBool,
    /// Nanoseconds the workers spent on checks, taken by the load meter.
    busy_ns: Arc<AtomicU64>,
    /// Checks run on the workers (for metrics).
    offloaded: AtomicU64,
    threads: usize,
}

impl SignatureOffload {
    /// Starts `threads` workers (at least one).
    pub fn start(threads: usize) -> std::io::Result<Arc<SignatureOffload>> {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let busy_ns = Arc::new(AtomicU64::new(0));
        for i in 0..threads {
            let (rx, busy) = (rx.clone(), busy_ns.clone());
            std::thread::Builder::new()
                .name(format!("callgate-verify-{i}"))
                .spawn(crate::logs::in_current_span(move || worker(&rx, &busy)))?;
        }
        Ok(Arc::new(SignatureOffload {
            jobs: tx,
            active: AtomicBool::new(false),
            busy_ns,
            offloaded: AtomicU64::new(0),
            threads,
        }))
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether checks go to the workers now.
    pub fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    pub fn set_active(&self, on: bool) {
        if self.active.swap(on, Relaxed) != on {
            tracing::info!(
                offload = on,
                threads = self.threads,
                "signature checks {}",
                if on {
                    "moved to worker threads (signalling thread busy)"
                } else {
                    "back on the signalling thread"
                }
            );
        }
    }

    /// Checks run on the workers so far.
    pub fn offloaded(&self) -> u64 {
        self.offloaded.load(Relaxed)
    }

    /// Writes the pool's metrics into `/metrics` (see [`crate::exposition`]).
    pub fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use crate::exposition::{one_counter, one_gauge};
        one_gauge(
            e,
            "callgate_stir_offload_active",
            "1 while signature checks run on worker threads (signalling busy).",
            i64::from(self.is_active()),
        )?;
        one_counter(
            e,
            "callgate_stir_offloaded_total",
            "Signature checks run on worker threads.",
            self.offloaded(),
        )
    }

    /// Worker time since the last call.
    pub fn take_busy(&self) -> Duration {
        Duration::from_nanos(self.busy_ns.swap(0, Relaxed))
    }

    /// Runs `f` on a worker and waits for it without blocking the caller's
    /// thread; inline when the queue is full. `None` only if `f` panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.offloaded.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                    tracing::error!("signature check panicked");
                }
            }
        }
        rx.await.ok()
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, busy: &AtomicU64) {
    loop {
        // One worker waits on the queue at a time; the lock is released
        // before the job runs.
        let job = {
            let Ok(queue) = rx.lock() else { return };
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return, // the pool is gone
            }
        };
        let started = Instant::now();
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("signature check panicked");
        }
        busy.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
    }
}

/// The signalling thread's demand over [`WINDOW`]s: its own busy time plus
/// the pool's, as a share of one core.
#[derive(Debug)]
pub struct LoadMeter {
    window_start: Instant,
    busy: Duration,
}

impl LoadMeter {
    pub fn new(now: Instant) -> LoadMeter {
        LoadMeter {
            window_start: now,
            busy: Duration::ZERO,
        }
    }

    /// Adds `busy` time of the signalling thread; at the end of a window,
    /// returns the demand over it (with `pool_busy()` added) and starts the
    /// next one.
    pub fn record(
        &mut self,
        busy: Duration,
        now: Instant,
        pool_busy: impl FnOnce() -> Duration,
    ) -> Option<f64> {
        self.busy += busy;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return None;
        }
        let demand = (self.busy + pool_busy()).as_secs_f64() / elapsed.as_secs_f64();
        self.window_start = now;
        self.busy = Duration::ZERO;
        Some(demand)
    }
}

/// Whether the pool should be on after a window with `demand`
/// (hysteresis between [`OFF_BELOW`] and [`ON_ABOVE`]).
pub fn offload_after(active: bool, demand: f64) -> bool {
    if active {
        demand >= OFF_BELOW
    } else {
        demand > ON_ABOVE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn runs_on_a_worker_thread_and_returns_the_value() {
        let pool = SignatureOffload::start(1).expect("threads");
        let here = std::thread::current().id();
        let there = pool.run(|| std::thread::current().id()).await;
        assert!(there.is_some_and(|t| t != here), "ran on {there:?}");
        assert_eq!(pool.offloaded(), 1);
        assert_eq!(pool.run(|| 6 * 7).await, Some(42));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_check_is_none_and_the_worker_survives() {
        let pool = SignatureOffload::start(1).expect("threads");
        assert_eq!(pool.run(|| -> u8 { panic!("boom") }).await, None);
        assert_eq!(pool.run(|| 1u8).await, Some(1), "worker still serves");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn many_concurrent_checks_all_complete() {
        let pool = SignatureOffload::start(2).expect("threads");
        let handles: Vec<_> = (0..500u32)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(move || i * 2).await })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.ok().flatten(), Some(i as u32 * 2));
        }
    }

    #[test]
    fn demand_over_a_window_counts_pool_time_and_switches_with_hysteresis() {
        let t0 = Instant::now();
        let mut m = LoadMeter::new(t0);
        assert_eq!(
            m.record(
                Duration::from_millis(30),
                t0 + Duration::from_millis(50),
                || Duration::ZERO
            ),
            None
        );
        let d = m
            .record(Duration::from_millis(20), t0 + WINDOW, || {
                Duration::from_millis(20)
            })
            .unwrap_or(0.0);
        assert!((d - 0.7).abs() < 1e-9, "{d}");
        assert!(offload_after(false, d), "on above 0.6");
        assert!(offload_after(true, 0.5), "stays on between the bounds");
        assert!(!offload_after(false, 0.5), "stays off between the bounds");
        assert!(!offload_after(true, 0.3), "off below 0.4");
        // The next window starts afresh.
        let d = m.record(Duration::from_millis(10), t0 + WINDOW * 2, || {
            Duration::ZERO
        });
        assert_eq!(d.map(|d| (d * 100.0).round()), Some(10.0));
    }
}
