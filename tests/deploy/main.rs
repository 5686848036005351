//! Deploy artifacts and the files they depend on (issue 15): configuration
//! paths and environment values, the installed binary, the systemd unit
//! and sd_notify, the container image's configuration, the Kubernetes
//! manifests. Each artifact is started where this machine allows it and
//! validated where it does not.

#[path = "../common/mod.rs"]
mod common;

mod config_files;
mod container;
mod install;
mod kubernetes;
mod systemd;
mod two_instances;
