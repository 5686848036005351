//! `callgate check-config`: validates a configuration file (exit 0 when
//! valid, 2 with the key and reason when not).

use std::path::Path;
use std::process::ExitCode;

use callgate::config::Config;

/// Loads `file` and reports whether it is valid.
pub fn check_config(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}
