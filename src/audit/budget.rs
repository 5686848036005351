//! The audit trail's memory and disk, bounded in bytes.
//!
//! Defends against a flood that fills memory or the disk through the audit
//! trail: every inbound call's decision is recorded, with the INVITE as
//! received (up to `max_message_bytes`, 64 KiB by default). Bounding the
//! queue and the backlog in entries (65,536 and 100,000) still let them
//! hold ≈10 GiB of INVITEs, and nothing bounded what one source could make
//! callgate write to disk. Three bounds, applied on the call path without
//! waiting (a call is never blocked, only its record reduced):
//!
//! - a stored INVITE is cut to `audit.max_invite_bytes` (its head — the
//!   request line and headers that matter to a reviewer — is kept);
//! - the INVITE bytes one source address may have stored per minute
//!   (`audit.invite_bytes_per_source_minute`): past it, that source's
//!   INVITEs are left out of their records until the minute ends;
//! - the bytes queued for the writer and held by it while the disk refuses
//!   writes (`audit.max_queue_bytes`): records with their INVITEs may fill
//!   half of it; past that a record's INVITE is left out, and when even the
//!   record alone does not fit, the record is dropped.
//!
//! Each reduction is counted (`callgate_audit_invites_reduced_total`,
//! `callgate_audit_dropped_total`) and logged on the first and every
//! 1,000th occurrence.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::store::Job;

/// How long a source's INVITE byte budget lasts before it is renewed.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Most sources tracked in one window; sources beyond share one budget
/// (the map is keyed by attacker-influenced input and must stay bounded).
const MAX_SOURCES: usize = 10_000;

/// The bytes a job is charged against `audit.max_queue_bytes`: what it
/// holds in memory (its texts, and a fixed 512 bytes for the rest).
pub(super) fn job_bytes(job: &Job) -> usize {
    const FIXED: usize = 512;
    match job {
        Job::Record(r, invite) => {
            FIXED
                + r.verification.get().len()
                + r.signals.get().len()
                + r.shadow.as_ref().map_or(0, |s| s.get().len())
                + r.invite.as_ref().map_or(0, String::len)
                + invite.as_ref().map_or(0, bytes::Bytes::len)
                + r.call_id.len()
                + r.calling.len()
                + r.called.len()
        }
        Job::Outcome { call_id, .. } => FIXED + call_id.len(),
        Job::Media { call_id, media } => FIXED + call_id.len() + media.len(),
        Job::StepUp(s) => FIXED + s.call_id.len() + s.by.len() + s.method.len(),
        Job::Verdict(v) => FIXED + v.call_id.len() + v.by.len() + v.note.len(),
        Job::Flush(_) => 0,
    }
}

/// Why an INVITE was cut or left out of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduced {
    /// Cut to `audit.max_invite_bytes`.
    Truncated,
    /// Its source used its INVITE bytes for this minute.
    SourceBudget,
    /// The queue and backlog held `audit.max_queue_bytes`.
    QueueBytes,
}

pub const REDUCED: [(Reduced, &str); 3] = [
    (Reduced::Truncated, "truncated"),
    (Reduced::SourceBudget, "source_budget"),
    (Reduced::QueueBytes, "queue_bytes"),
];

/// The byte bounds of `[audit]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLimits {
    pub max_queue_bytes: usize,
    pub max_invite_bytes: usize,
    pub invite_bytes_per_source_minute: usize,
}

impl Default for AuditLimits {
    fn default() -> Self {
        AuditLimits {
            max_queue_bytes: 256 << 20,
            max_invite_bytes: 16 << 10,
            invite_bytes_per_source_minute: 32 << 20,
        }
    }
}

/// INVITE bytes stored per source in the current window.
#[derive(Debug)]
pub struct SourceWindow {
    started: Instant,
    by_source: HashMap<String, usize>,
}

impl SourceWindow {
    pub fn new(now: Instant) -> SourceWindow {
        SourceWindow {
            started: now,
            by_source: HashMap::new(),
        }
    }

    /// Charges `bytes` to `source` if its budget allows; the window
    /// renews every [`WINDOW`].
    pub fn take(&mut self, source: &str, bytes: usize, budget: usize, now: Instant) -> bool {
        if now.saturating_duration_since(self.started) >= WINDOW {
            self.started = now;
            self.by_source.clear();
        }
        let key = if self.by_source.len() >= MAX_SOURCES && !self.by_source.contains_key(source) {
            "(others)"
        } else {
            source
        };
        let used = self.by_source.get(key).copied().unwrap_or(0);
        if used.saturating_add(bytes) > budget {
            return false;
        }
        self.by_source.insert(key.to_owned(), used + bytes);
        true
    }
}

/// Counts reductions: [reason].
#[derive(Debug, Default)]
pub struct ReducedCounts(pub [AtomicU64; REDUCED.len()]);

impl ReducedCounts {
    /// Counts one; logs the first and every 1,000th of each reason.
    pub fn count(&self, why: Reduced, source: &str) {
        let i = REDUCED.iter().position(|(r, _)| *r == why).unwrap_or(0);
        let n = self.0[i].fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n % 1000 == 0 {
            tracing::warn!(reason = REDUCED[i].1, total = n, %source, "audit record reduced: INVITE cut or left out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_budget_renews_each_window_and_spares_other_sources() {
        let t0 = Instant::now();
        let mut w = SourceWindow::new(t0);
        assert!(w.take("192.0.2.1", 600, 1000, t0));
        assert!(!w.take("192.0.2.1", 600, 1000, t0), "over its minute");
        assert!(w.take("192.0.2.2", 600, 1000, t0), "another source");
        assert!(w.take("192.0.2.1", 600, 1000, t0 + WINDOW), "a new window");
    }

    #[test]
    fn sources_past_the_map_bound_share_one_budget() {
        let t0 = Instant::now();
        let mut w = SourceWindow::new(t0);
        for i in 0..MAX_SOURCES {
            assert!(w.take(&format!("s{i}"), 1, 1000, t0));
        }
        assert!(w.take("new-1", 600, 1000, t0));
        assert!(!w.take("new-2", 600, 1000, t0), "shares the others' budget");
        assert_eq!(w.by_source.len(), MAX_SOURCES + 1);
    }
}
