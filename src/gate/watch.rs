//! Reload when the configuration's files change (`[reload] watch_secs`).
//!
//! A Kubernetes ConfigMap mounted as a volume is updated in place by the
//! kubelet (a new `..data` directory swapped in by one rename), and no
//! signal reaches the process, so an edited ConfigMap would otherwise
//! change nothing until the pod restarts. Every `watch_secs` the files of
//! the configuration file's directory (recursively, dot-entries skipped,
//! symlinks followed: the ConfigMap's keys are symlinks into `..data`) are
//! fingerprinted; when the fingerprint changes, callgate reloads exactly as
//! on SIGHUP. A refused reload is logged and counted like any other, and
//! not retried until the files change again.
//!
//! Bounded: at most [`MAX_FILES`] files and [`MAX_BYTES`] read per pass,
//! on a blocking thread; past the bounds the rest is not looked at (and a
//! warning says so once).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Gate;

/// Files fingerprinted per pass, at most.
pub const MAX_FILES: usize = 256;
/// Bytes read per pass, at most.
pub const MAX_BYTES: u64 = 16 << 20;

/// What a pass saw: the fingerprint, and whether the bounds cut it short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub hash: u64,
    pub truncated: bool,
}

/// Fingerprints the files under `dir`: their relative paths and contents.
pub fn fingerprint(dir: &Path) -> Fingerprint {
    let mut files = Vec::new();
    let mut truncated = collect(dir, dir, &mut files);
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut read = 0u64;
    for (rel, path) in files {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        read += bytes.len() as u64;
        if read > MAX_BYTES {
            truncated = true;
            break;
        }
        rel.hash(&mut h);
        bytes.hash(&mut h);
    }
    Fingerprint {
        hash: h.finish(),
        truncated,
    }
}

/// Regular files under `dir` (dot-entries skipped, symlinks followed), as
/// (path relative to `root`, path); true when [`MAX_FILES`] cut it short.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut truncated = false;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            truncated |= collect(root, &path, out);
        } else if meta.is_file() {
            if out.len() >= MAX_FILES {
                return true;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            out.push((rel, path));
        }
    }
    truncated
}

/// Compares the configuration directory's fingerprint every `every` and
/// reloads when it changes. Runs until the runtime stops.
pub async fn watch(gate: Arc<Gate>, config: PathBuf, every: Duration) {
    let dir = config
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let take = |dir: PathBuf| tokio::task::spawn_blocking(move || fingerprint(&dir));
    let Ok(mut last) = take(dir.clone()).await else {
        return;
    };
    if last.truncated {
        tracing::warn!(dir = %dir.display(), max_files = MAX_FILES, max_bytes = MAX_BYTES, "reload.watch_secs: the configuration directory is larger than the watcher reads; changes past the bound go unnoticed");
    }
    tracing::info!(dir = %dir.display(), every_secs = every.as_secs(), "watching the configuration files; a change reloads");
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Ok(now) = take(dir.clone()).await else {
            continue;
        };
        if now.hash == last.hash {
            continue;
        }
        last = now;
        tracing::info!(dir = %dir.display(), "configuration files changed; reloading");
        let g = gate.clone();
        // The outcome is logged, counted and notified by the reload.
        let _ = tokio::task::spawn_blocking(crate::logs::in_current_span(move || g.reload())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_anywhere_under_the_directory_changes_the_fingerprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("lists")).expect("mkdir");
        std::fs::write(d.join("callgate.toml"), "a").expect("write");
        std::fs::write(d.join("lists/x.txt"), "1").expect("write");
        let first = fingerprint(d);
        assert_eq!(fingerprint(d), first, "stable");
        std::fs::write(d.join("lists/x.txt"), "2").expect("write");
        let second = fingerprint(d);
        assert_ne!(second, first, "a list file changed");
        std::fs::write(d.join(".hidden"), "x").expect("write");
        assert_eq!(fingerprint(d), second, "dot-entries are skipped");
        std::fs::rename(d.join("lists/x.txt"), d.join("lists/y.txt")).expect("rename");
        assert_ne!(fingerprint(d), second, "a rename is a change");
        assert!(!fingerprint(d).truncated);
    }

    /// The kubelet's layout: keys are symlinks into `..data`, itself a
    /// symlink swapped to a new directory on update.
    #[test]
    fn a_configmap_update_is_seen_through_its_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for (gen, text) in [("..v1", "one"), ("..v2", "two")] {
            std::fs::create_dir(d.join(gen)).expect("mkdir");
            std::fs::write(d.join(gen).join("callgate.toml"), text).expect("write");
        }
        std::os::unix::fs::symlink("..v1", d.join("..data")).expect("link");
        std::os::unix::fs::symlink("..data/callgate.toml", d.join("callgate.toml")).expect("link");
        let before = fingerprint(d);
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).expect("link");
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("swap");
        assert_ne!(fingerprint(d), before);
    }
}
