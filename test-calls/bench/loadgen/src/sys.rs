//! The three libc calls std does not wrap (Linux): ppoll for a sub-millisecond
//! wait on one socket, setsockopt for socket buffers, getrusage for the
//! generator's own CPU time.

use std::os::raw::{c_int, c_long, c_ulong, c_void};
use std::os::unix::io::AsRawFd;
use std::time::Duration;

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

#[repr(C)]
struct Timespec {
    tv_sec: c_long,
    tv_nsec: c_long,
}

#[repr(C)]
struct Timeval {
    tv_sec: c_long,
    tv_usec: c_long,
}

#[repr(C)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    rest: [c_long; 14],
}

extern "C" {
    fn ppoll(
        fds: *mut PollFd,
        nfds: c_ulong,
        timeout: *const Timespec,
        sigmask: *const c_void,
    ) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
    fn getrusage(who: c_int, usage: *mut Rusage) -> c_int;
}

const POLLIN: i16 = 1;
const POLLOUT: i16 = 4;
const SOL_SOCKET: c_int = 1;
const SO_SNDBUF: c_int = 7;
const SO_RCVBUF: c_int = 8;
const SO_SNDBUFFORCE: c_int = 32;
const SO_RCVBUFFORCE: c_int = 33;

/// Waits until `sock` is readable or `timeout` passes. True if readable.
pub fn wait_readable(sock: &impl AsRawFd, timeout: Duration) -> bool {
    poll_one(sock, POLLIN, timeout)
}

/// Waits until `sock` can take a datagram again or `timeout` passes.
pub fn wait_writable(sock: &impl AsRawFd, timeout: Duration) -> bool {
    poll_one(sock, POLLOUT, timeout)
}

fn poll_one(sock: &impl AsRawFd, events: i16, timeout: Duration) -> bool {
    let mut fd = PollFd {
        fd: sock.as_raw_fd(),
        events,
        revents: 0,
    };
    let ts = Timespec {
        tv_sec: timeout.as_secs() as c_long,
        tv_nsec: c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: one valid pollfd and timespec, no signal mask.
    let r = unsafe { ppoll(&mut fd, 1, &ts, std::ptr::null()) };
    r > 0 && fd.revents & events != 0
}

/// Large socket buffers so that bursts are queued, not dropped, at the
/// generator (the privileged *FORCE variant first, then the capped one).
pub fn set_buffers(sock: &impl AsRawFd, bytes: i32) {
    for (force, plain) in [(SO_RCVBUFFORCE, SO_RCVBUF), (SO_SNDBUFFORCE, SO_SNDBUF)] {
        let v: c_int = bytes;
        let p = &v as *const c_int as *const c_void;
        // SAFETY: a valid fd and a c_int option value.
        unsafe {
            if setsockopt(sock.as_raw_fd(), SOL_SOCKET, force, p, 4) != 0 {
                setsockopt(sock.as_raw_fd(), SOL_SOCKET, plain, p, 4);
            }
        }
    }
}

/// User + system CPU time of this process.
pub fn cpu_time() -> Duration {
    let mut u = Rusage {
        utime: Timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        stime: Timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        rest: [0; 14],
    };
    // SAFETY: RUSAGE_SELF (0) into a struct rusage-sized buffer.
    if unsafe { getrusage(0, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: &Timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(&u.utime) + tv(&u.stime)
}

/// The kernel's drop counter of the UDP socket bound to `local` (IPv4,
/// from /proc/net/udp), if found.
pub fn udp_drops(local: std::net::SocketAddr) -> Option<u64> {
    let std::net::SocketAddr::V4(v4) = local else {
        return None;
    };
    // /proc/net/udp prints the address as the in-memory u32 in hex.
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    text.lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}
