//! `callgate trace to-sipp`: one dialog of a capture written as a sipp
//! scenario pair (the conversion is `callgate::capture::to_sipp`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use callgate::capture::expect::Expectations;
use callgate::capture::resign::Resigner;
use callgate::capture::to_sipp::{self, IdentityMode, Options, ToSippError};

use super::time::unix_now;

/// What `--resign KEY --x5u URL` and `--keep-identity` asked for.
pub struct Identity {
    pub resign: Option<(PathBuf, String)>,
    pub keep: bool,
}

/// What `--expect LIST` and `--expect-file FILE` asked for.
pub struct Expect {
    pub list: Option<String>,
    pub file: Option<PathBuf>,
}

impl Expect {
    fn load(self) -> Result<Expectations, String> {
        match (self.list, self.file) {
            (Some(list), _) => Expectations::parse_list(&list).map_err(|e| e.to_string()),
            (None, Some(file)) => {
                let name = format!("--expect-file {}", file.display());
                let text = std::fs::read_to_string(&file).map_err(|e| format!("{name}: {e}"))?;
                Expectations::parse_file(&text, &name).map_err(|e| e.to_string())
            }
            (None, None) => Ok(Expectations::default()),
        }
    }
}

/// Reads `capture`, converts the dialog `call_id` (default: the first)
/// and writes `uac.xml`, `uas.xml` and `README.md` into `out`.
pub fn to_sipp(
    capture: &Path,
    out: &Path,
    call_id: Option<String>,
    max_pause_ms: u64,
    identity: Identity,
    expect: Expect,
) -> ExitCode {
    let fail = |code: u8, e: String| {
        eprintln!("trace to-sipp: {e}");
        ExitCode::from(code)
    };
    let expect = match expect.load() {
        Ok(e) => e,
        Err(e) => return fail(2, e),
    };
    let identity = match identity {
        Identity {
            resign: Some((key, x5u)),
            ..
        } => match callgate::config::secret::owner_only("--resign", &key)
            .map_err(|e| e.to_string())
            .and_then(|()| Resigner::load(&key, &x5u, unix_now()).map_err(|e| e.to_string()))
        {
            Ok(r) => IdentityMode::Resign(Arc::new(r)),
            Err(e) => return fail(2, e),
        },
        Identity { keep: true, .. } => IdentityMode::Keep,
        Identity { .. } => IdentityMode::Stale,
    };
    let read = std::fs::read(capture)
        .map_err(|e| e.to_string())
        .and_then(|b| callgate::capture::read(&b).map_err(|e| e.to_string()));
    let read = match read {
        Ok(c) => c,
        Err(e) => return fail(2, format!("{}: {e}", capture.display())),
    };
    if let Some(damage) = &read.stats.damage {
        eprintln!(
            "trace to-sipp: {}: {damage}; converting the {} records before it",
            capture.display(),
            read.stats.packets
        );
    }
    let limits = callgate::sip::message::Limits::default();
    let messages = callgate::capture::sip::messages(&read.payloads, &limits);
    // The scenarios name the RTP pcaps by absolute path: sipp opens them
    // from its working directory, wherever the tester runs it.
    let media_dir = match std::fs::create_dir_all(out).and_then(|()| std::fs::canonicalize(out)) {
        Ok(d) => d.display().to_string(),
        Err(e) => return fail(2, format!("{}: {e}", out.display())),
    };
    let options = Options {
        call_id,
        max_pause_ms,
        identity,
        expect,
        media_dir,
        ..Options::default()
    };
    let scenarios = match to_sipp::convert_with_media(&messages, &read.payloads, &limits, &options)
    {
        Ok(s) => s,
        Err(e @ (ToSippError::NoDialog(_) | ToSippError::NoSuchCall { .. })) => {
            return fail(1, format!("{}: {e}", capture.display()))
        }
        Err(e @ (ToSippError::Resign(_) | ToSippError::Media(_))) => {
            return fail(2, format!("{}: {e}", capture.display()))
        }
    };
    let others: Vec<String> = to_sipp::dialogs(&messages, &limits)
        .into_iter()
        .filter(|d| d.call_id != scenarios.call_id)
        .map(|d| d.call_id)
        .collect();
    if !others.is_empty() {
        eprintln!(
            "trace to-sipp: {} other dialogs in the capture (pick one with --call-id): {}",
            others.len(),
            others.join(", ")
        );
    }
    // Absolute, so the README's command that converts again (to re-sign)
    // works from the output directory.
    let named = std::fs::canonicalize(capture).unwrap_or_else(|_| capture.to_path_buf());
    let readme = to_sipp::readme(&scenarios, &named.display().to_string());
    let rtp = &scenarios.rtp;
    let written = std::fs::create_dir_all(out).and_then(|()| {
        std::fs::write(out.join("uac.xml"), &scenarios.uac)?;
        std::fs::write(out.join("uas.xml"), &scenarios.uas)?;
        for (name, file) in to_sipp::RTP_FILES.iter().zip([&rtp.uac, &rtp.uas]) {
            match file {
                Some(f) => std::fs::write(out.join(name), f)?,
                // A stale one from an earlier conversion would mislead.
                None => match std::fs::remove_file(out.join(name)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                },
            }
        }
        std::fs::write(out.join("README.md"), &readme)
    });
    if let Err(e) = written {
        return fail(2, format!("{}: {e}", out.display()));
    }
    for w in &scenarios.warnings {
        eprintln!("trace to-sipp: warning: {w}");
    }
    println!(
        "Call-ID {}: {} messages, uac.xml and uas.xml written to {} (see its README.md)",
        scenarios.call_id,
        scenarios.played,
        out.display()
    );
    ExitCode::SUCCESS
}
