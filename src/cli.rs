//! Command line: `callgate run | check-config | demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// callgate: a SIP middlebox between a carrier trunk and a contact-centre PBX.
#[derive(Debug, Parser)]
#[command(name = "callgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy. Prints "callgate ready" on stdout once every listener is bound.
    Run {
        /// Configuration file; when the default path does not exist, the
        /// configuration embedded in the binary is used.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a configuration file and exit (0 when valid).
    CheckConfig {
        /// Configuration file to check.
        file: PathBuf,
    },
    /// Run callgate on its embedded defaults between a simulated carrier and
    /// PBX on loopback, place a handful of calls, and print what happened.
    Demo,
}

pub const DEFAULT_CONFIG: &str = "sip-config/callgate.toml";
