//! The few Linux calls std does not expose: epoll, recvmmsg with kernel
//! receive timestamps (SO_TIMESTAMPNS), sysconf. Declared by hand to keep
//! the tool std-only; layouts are those of 64-bit Linux (x86_64, aarch64).

use std::io;
use std::os::fd::RawFd;

#[allow(non_camel_case_types)]
type c_int = i32;

#[repr(C)]
struct Iovec {
    base: *mut u8,
    len: usize,
}

#[repr(C)]
struct Msghdr {
    name: *mut u8,
    namelen: u32,
    iov: *mut Iovec,
    iovlen: usize,
    control: *mut u8,
    controllen: usize,
    flags: c_int,
}

#[repr(C)]
struct Mmsghdr {
    hdr: Msghdr,
    len: u32,
}

/// `struct epoll_event` is packed on x86_64 only.
#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
pub struct EpollEvent {
    pub events: u32,
    pub data: u64,
}

extern "C" {
    fn epoll_create1(flags: c_int) -> c_int;
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut EpollEvent) -> c_int;
    fn epoll_wait(epfd: c_int, evs: *mut EpollEvent, max: c_int, timeout_ms: c_int) -> c_int;
    fn recvmmsg(fd: c_int, msgs: *mut Mmsghdr, vlen: u32, flags: c_int, timeout: *mut u8) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const u8, len: u32) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn sysconf(name: c_int) -> i64;
}

const SOL_SOCKET: c_int = 1;
const SO_RCVBUF: c_int = 8;
const SO_RCVBUFFORCE: c_int = 33;
const SO_TIMESTAMPNS: c_int = 35;
const SCM_TIMESTAMPNS: c_int = SO_TIMESTAMPNS;
const MSG_DONTWAIT: c_int = 0x40;
const EPOLL_CTL_ADD: c_int = 1;
pub const EPOLLIN: u32 = 1;
const EINTR: i32 = 4;
const EAGAIN: i32 = 11;
const SC_CLK_TCK: c_int = 2;

fn check(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Clock ticks per second (`utime`/`stime` unit in /proc).
pub fn clock_ticks() -> u64 {
    let t = unsafe { sysconf(SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Asks the kernel to stamp each datagram when it enters the network stack
/// on its way to this socket (CLOCK_REALTIME, read back with [`RecvBatch`]).
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    let on: c_int = 1;
    check(unsafe {
        setsockopt(
            fd,
            SOL_SOCKET,
            SO_TIMESTAMPNS,
            (&on as *const c_int).cast(),
            4,
        )
    })
    .map(drop)
}

pub fn set_rcvbuf(fd: RawFd, bytes: i32) -> io::Result<()> {
    check(unsafe { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, (&bytes as *const i32).cast(), 4) })
        .map(drop)
}

/// Like [`set_rcvbuf`] past `net.core.rmem_max` (needs CAP_NET_ADMIN).
pub fn set_rcvbuf_force(fd: RawFd, bytes: i32) -> io::Result<()> {
    check(unsafe {
        setsockopt(
            fd,
            SOL_SOCKET,
            SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            4,
        )
    })
    .map(drop)
}

/// An epoll instance (closed on drop).
pub struct Epoll(c_int);

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        check(unsafe { epoll_create1(0) }).map(Epoll)
    }

    /// Level-triggered read interest; `data` comes back with the event.
    pub fn add(&self, fd: RawFd, data: u64) -> io::Result<()> {
        let mut ev = EpollEvent {
            events: EPOLLIN,
            data,
        };
        check(unsafe { epoll_ctl(self.0, EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
    }

    pub fn wait(&self, evs: &mut [EpollEvent], timeout_ms: i32) -> io::Result<usize> {
        let n = unsafe { epoll_wait(self.0, evs.as_mut_ptr(), evs.len() as c_int, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(EINTR) {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        unsafe {
            close(self.0);
        }
    }
}

pub const BATCH: usize = 64;
const BUF: usize = 2048;
const CTRL: usize = 64;

/// Preallocated buffers for one `recvmmsg` of up to [`BATCH`] datagrams;
/// nothing is allocated per packet.
pub struct RecvBatch {
    bufs: Vec<u8>,
    ctrl: Vec<u8>,
    iovs: Vec<Iovec>,
    msgs: Vec<Mmsghdr>,
    n: usize,
}

// The raw pointers point into the batch's own heap buffers.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        let mut b = RecvBatch {
            bufs: vec![0u8; BATCH * BUF],
            ctrl: vec![0u8; BATCH * CTRL],
            iovs: Vec::with_capacity(BATCH),
            msgs: Vec::with_capacity(BATCH),
            n: 0,
        };
        for i in 0..BATCH {
            b.iovs.push(Iovec {
                base: unsafe { b.bufs.as_mut_ptr().add(i * BUF) },
                len: BUF,
            });
        }
        for i in 0..BATCH {
            b.msgs.push(Mmsghdr {
                hdr: Msghdr {
                    name: std::ptr::null_mut(),
                    namelen: 0,
                    iov: unsafe { b.iovs.as_mut_ptr().add(i) },
                    iovlen: 1,
                    control: unsafe { b.ctrl.as_mut_ptr().add(i * CTRL) },
                    controllen: CTRL,
                    flags: 0,
                },
                len: 0,
            });
        }
        b
    }

    /// Reads what is queued on `fd` (up to BATCH datagrams) without
    /// blocking; returns how many.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for m in &mut self.msgs {
            m.hdr.controllen = CTRL;
            m.hdr.flags = 0;
            m.len = 0;
        }
        loop {
            let r = unsafe {
                recvmmsg(
                    fd,
                    self.msgs.as_mut_ptr(),
                    BATCH as u32,
                    MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                self.n = r as usize;
                return Ok(self.n);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(EINTR) => continue,
                Some(EAGAIN) => {
                    self.n = 0;
                    return Ok(0);
                }
                _ => return Err(e),
            }
        }
    }

    /// Datagram `i` of the last [`recv`](Self::recv).
    pub fn packet(&self, i: usize) -> &[u8] {
        let len = (self.msgs[i].len as usize).min(BUF);
        &self.bufs[i * BUF..i * BUF + len]
    }

    /// Shortens datagram `i` to `len` bytes (what opening SRTP left).
    pub fn set_len(&mut self, i: usize, len: usize) {
        self.msgs[i].len = len.min(BUF) as _;
    }

    /// Datagram `i`, writable (SRTP is opened in place).
    pub fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        let len = (self.msgs[i].len as usize).min(BUF);
        &mut self.bufs[i * BUF..i * BUF + len]
    }

    /// The kernel's receive timestamp of datagram `i`, in nanoseconds
    /// since the Unix epoch (CLOCK_REALTIME), if one came.
    pub fn rx_time_ns(&self, i: usize) -> Option<u64> {
        let ctrl = &self.ctrl[i * CTRL..(i * CTRL) + self.msgs[i].hdr.controllen.min(CTRL)];
        let mut off = 0;
        // struct cmsghdr { size_t len; int level; int type; } then data,
        // each aligned to 8.
        while off + 16 <= ctrl.len() {
            let len = usize::from_ne_bytes(ctrl[off..off + 8].try_into().ok()?);
            let level = i32::from_ne_bytes(ctrl[off + 8..off + 12].try_into().ok()?);
            let ty = i32::from_ne_bytes(ctrl[off + 12..off + 16].try_into().ok()?);
            if len < 16 {
                return None;
            }
            if level == SOL_SOCKET && ty == SCM_TIMESTAMPNS && off + 32 <= ctrl.len() {
                let sec = i64::from_ne_bytes(ctrl[off + 16..off + 24].try_into().ok()?);
                let nsec = i64::from_ne_bytes(ctrl[off + 24..off + 32].try_into().ok()?);
                return Some(sec as u64 * 1_000_000_000 + nsec as u64);
            }
            off += (len + 7) & !7;
        }
        None
    }
}
