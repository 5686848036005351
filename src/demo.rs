//! `callgate demo`: callgate on its embedded defaults between a simulated
//! carrier and PBX on loopback.

use std::process::ExitCode;

pub fn main() -> ExitCode {
    eprintln!("demo: not yet implemented");
    ExitCode::FAILURE
}
