//! The bodies of the `callgate` subcommands, one file each; `main.rs`
//! only parses the arguments and dispatches here. Binary-private: the
//! library's public API is all they use.

pub mod admin_client;
pub mod check_config;
pub mod corpus;
pub mod ctl;
pub mod demo;
pub mod reload;
pub mod replay;
pub mod report;
pub mod run;
pub mod sign;
pub mod time;
pub mod trace;
pub mod verify;
