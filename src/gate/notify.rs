//! Telling the service manager what state callgate is in: the sd_notify
//! protocol (sd_notify(3), systemd.service(5) `Type=notify`), written here
//! in a few lines instead of linking libsystemd.
//!
//! When `$NOTIFY_SOCKET` is set (systemd sets it for `Type=notify`
//! services), each state change is one datagram of `KEY=value` lines to
//! that `AF_UNIX` socket; a name starting with `@` is in the abstract
//! namespace. Unset, every call here is a no-op, so callgate runs the same
//! under any supervisor.
//!
//! | when | message |
//! |---|---|
//! | every listener bound (`callgate ready` printed) | `READY=1`, `STATUS=` the bound addresses |
//! | a reload starts (SIGHUP, `POST /reload`) | `RELOADING=1`, `MONOTONIC_USEC=` |
//! | the reload applied | `READY=1`, `STATUS=configuration reloaded` |
//! | the reload refused | `READY=1` (the old configuration still serves), `STATUS=reload refused: <reason>` |
//! | SIGTERM: draining | `STOPPING=1`, `STATUS=draining` |
//!
//! `READY=1` after a refused reload is what the protocol asks for (the
//! service is running again); the refusal itself is reported to
//! `systemctl reload` by `callgate reload --pid`, the unit's synchronous
//! `ExecReload=` ([`crate::gate::reload_status`]), because sd_notify has no
//! message for a failed reload.
//!
//! A message that cannot be sent is logged once at debug and otherwise
//! ignored: the service manager's view is advisory, the calls go on.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets to its notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=value` lines) to the service
/// manager; does nothing when `$NOTIFY_SOCKET` is unset.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = send(&target.to_string_lossy(), state) {
        tracing::debug!(error = %e, socket = %target.to_string_lossy(), "sd_notify not delivered");
    }
}

/// One datagram to the socket named `target` (`@name`: abstract).
fn send(target: &str, state: &str) -> std::io::Result<()> {
    let addr = address(target)?;
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// The socket address of `$NOTIFY_SOCKET`: a path, or an abstract name
/// after `@` (Linux).
fn address(target: &str) -> std::io::Result<SocketAddr> {
    if let Some(name) = target.strip_prefix('@') {
        abstract_address(name.as_bytes())
    } else if target.starts_with('/') {
        SocketAddr::from_pathname(target)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an @abstract name",
        ))
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets are Linux only",
    ))
}

/// Every listener is bound: the service answers.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// A reload starts. `MONOTONIC_USEC` lets systemd (≥ 253,
/// `Type=notify-reload`) tell this reload from an earlier one.
pub fn reloading() {
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
        monotonic_usec()
    ));
}

/// A reload ended: applied (`Ok`) or refused with the reason. Either way
/// the service runs again (on the old configuration when refused).
pub fn reloaded(result: &Result<(), String>) {
    let status = match result {
        Ok(()) => "configuration reloaded".to_owned(),
        Err(why) => format!("reload refused: {}", one_line(why)),
    };
    notify(&format!("READY=1\nSTATUS={status}"));
}

/// SIGTERM: draining, then exit.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=draining");
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares with.
fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1_000,
        Err(_) => 0,
    }
}

/// A value on one line (a newline would start another `KEY=`).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        send(&path.display().to_string(), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("callgate-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&abstract_address(name.as_bytes()).expect("addr"))
            .expect("bind abstract");
        send(&format!("@{name}"), "STOPPING=1").expect("send abstract");
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_relative_socket_name_is_refused_and_status_stays_on_one_line() {
        assert!(send("relative/name", "READY=1").is_err());
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
        assert!(monotonic_usec() > 0);
    }
}
