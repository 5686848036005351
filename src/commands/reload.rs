//! `callgate reload --pid PID`: the systemd unit's `ExecReload=`. Sends
//! SIGHUP to the running callgate and waits for the outcome it records in
//! `$RUNTIME_DIRECTORY/reload-status` (`callgate::gate::reload_status`):
//! exit 0 when the configuration was applied, 1 when it was refused (the
//! reason on stderr), 2 when the outcome cannot be known. So `systemctl
//! reload callgate` fails when the reload did, which a signal alone
//! (`kill -HUP`) or sd_notify cannot report.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use callgate::gate::reload_status;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Signals `pid` and waits at most `timeout` for its reload outcome.
pub fn reload(pid: i32, timeout: Duration) -> ExitCode {
    if reload_status::path().is_none() {
        eprintln!(
            "reload: ${} is not set: the outcome of a reload cannot be read (run under systemd with RuntimeDirectory=, or send SIGHUP and read the log)",
            reload_status::RUNTIME_DIRECTORY
        );
        return ExitCode::from(2);
    }
    let before = reload_status::read().map_or(0, |o| o.generation);
    if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGHUP) {
        eprintln!("reload: cannot signal process {pid}: {e}");
        return ExitCode::from(2);
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match reload_status::read() {
            Some(o) if o.generation > before => {
                return match o.refused {
                    None => {
                        println!("configuration reloaded");
                        ExitCode::SUCCESS
                    }
                    Some(why) => {
                        eprintln!(
                            "reload refused; the running configuration stays in force: {why}"
                        );
                        ExitCode::FAILURE
                    }
                };
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    eprintln!(
        "reload: no outcome from process {pid} within {} s",
        timeout.as_secs()
    );
    ExitCode::from(2)
}
