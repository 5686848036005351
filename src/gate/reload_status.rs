//! The outcome of the last reload, in a file a separate process can wait
//! on: how `systemctl reload` learns that a reload was refused.
//!
//! sd_notify has no "reload failed" message (systemd.service(5): a
//! `Type=notify-reload` reload ends with `READY=1`, whatever happened), so
//! the unit runs `ExecReload=callgate reload --pid $MAINPID`: that one-shot
//! reads the generation written here, sends SIGHUP, waits until a newer
//! generation appears and exits 0 when it says `ok`, 1 when `refused`.
//! systemd fails the reload job when `ExecReload=` exits non-zero, so
//! `systemctl reload callgate` returns non-zero and prints the reason.
//!
//! The file is `$RUNTIME_DIRECTORY/reload-status` (systemd's
//! `RuntimeDirectory=callgate`: `/run/callgate`, private to the service,
//! and set for `ExecReload=` too); without `$RUNTIME_DIRECTORY` nothing is
//! written. One line: `<generation> ok` or `<generation> refused <reason>`,
//! replaced atomically (written beside, then renamed).
//!
//! Reloads are serialised; when another one (the API, the file watcher)
//! finishes first, the one-shot reports that one's outcome, which read the
//! same files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable systemd sets to the unit's `RuntimeDirectory=`.
pub const RUNTIME_DIRECTORY: &str = "RUNTIME_DIRECTORY";
/// The file's name in that directory.
pub const FILE: &str = "reload-status";

/// Reloads finished since start. One per process: a process runs one
/// service and owns its runtime directory.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The status file, when the service manager gave a runtime directory
/// (the first, when it gave several separated by `:`).
pub fn path() -> Option<PathBuf> {
    let dirs = std::env::var_os(RUNTIME_DIRECTORY)?;
    let first = dirs.to_string_lossy().split(':').next()?.to_owned();
    (!first.is_empty()).then(|| PathBuf::from(first).join(FILE))
}

/// Records the outcome of the reload that just finished.
pub fn record(result: &Result<(), String>) {
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    let Some(path) = path() else { return };
    let line = match result {
        Ok(()) => format!("{generation} ok\n"),
        Err(why) => format!("{generation} refused {}\n", why.replace(['\n', '\r'], " ")),
    };
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, line).and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %path.display(), "cannot record the reload outcome; `callgate reload --pid` will time out");
    }
}

/// A reload outcome as read back from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub generation: u64,
    /// `None`: applied; `Some(reason)`: refused.
    pub refused: Option<String>,
}

/// Parses the file's line; `None` for anything else (a file being
/// replaced is never seen half-written, thanks to the rename).
pub fn parse(text: &str) -> Option<Outcome> {
    let line = text.lines().next()?;
    let (generation, rest) = line.split_once(' ')?;
    let generation = generation.parse().ok()?;
    let refused = match rest.split_once(' ') {
        None if rest == "ok" => None,
        Some(("refused", why)) => Some(why.to_owned()),
        _ => return None,
    };
    Some(Outcome {
        generation,
        refused,
    })
}

/// The last outcome written, if any.
pub fn read() -> Option<Outcome> {
    let text = std::fs::read_to_string(path()?).ok()?;
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back() {
        assert_eq!(
            parse("3 ok\n"),
            Some(Outcome {
                generation: 3,
                refused: None
            })
        );
        assert_eq!(
            parse("4 refused timers.t1_ms: must be greater than zero\n"),
            Some(Outcome {
                generation: 4,
                refused: Some("timers.t1_ms: must be greater than zero".to_owned())
            })
        );
        for bad in ["", "x ok", "3", "3 maybe", "3 refused"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
