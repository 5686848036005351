//! Test-only fault injection: make a relay worker panic on demand, so the
//! integration tests can show what the supervision in [`super::worker`]
//! does when a worker thread loses its loop (issue 14: "the relay's host
//! loses a worker thread").
//!
//! The trigger is a file, not a packet: with the environment variable
//! [`PANIC_FILE_VAR`] naming a path, a worker that finds that file during
//! its idle scan (every 500 ms) deletes it and panics. Only the worker
//! whose delete succeeds panics, so one file costs exactly one worker.
//!
//! Why this cannot fire in production:
//! - it exists only in debug builds (`cfg(debug_assertions)`); a release
//!   build compiles [`injected_panic_due`] to a constant `false`;
//! - even in a debug build it needs the variable set in callgate's
//!   environment and a file created on the host — nothing a peer on the
//!   network can do.

/// The environment variable naming the trigger file (debug builds only).
pub const PANIC_FILE_VAR: &str = "CALLGATE_FAULT_MEDIA_WORKER_PANIC";

/// Whether this worker should panic now (the trigger file existed and
/// this worker removed it).
#[cfg(debug_assertions)]
pub(super) fn injected_panic_due() -> bool {
    static PATH: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| std::env::var_os(PANIC_FILE_VAR).map(Into::into))
        .as_ref()
        .is_some_and(|p| std::fs::remove_file(p).is_ok())
}

/// Release builds: never.
#[cfg(not(debug_assertions))]
pub(super) fn injected_panic_due() -> bool {
    false
}
