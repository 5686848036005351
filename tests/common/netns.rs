//! Real, distinct hosts for the tests whose point is an address: network
//! namespaces joined to this (the callgate) namespace by veth pairs.
//!
//! Each host gets its own namespace and link: `10.231.K.2/30` inside the
//! host, `10.231.K.1/30` on this side, and a default route through it. The
//! callgate under test runs here and listens on the `gate` address of a
//! host's link; every other host reaches that address through its own link
//! (this side owns all the `.1` addresses), so a carrier, an attacker and a
//! PBX each talk to callgate from an address of their own, on their own
//! interface, as on a real network.
//!
//! **Needs root** (CAP_NET_ADMIN and CAP_SYS_ADMIN, for `ip netns` and
//! `setns`): CI runs as root. Without it a test that builds a [`Lab`] fails
//! with a message saying so, never silently skips.
//!
//! Everything is removed when the [`Lab`] drops (deleting a namespace
//! deletes its end of the veth pair, and with it the pair). Namespaces left
//! by a test binary that was killed are removed by the next [`Lab::new`].
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A set of hosts for one test.
pub struct Lab {
    hosts: Vec<Host>,
}

/// One host: a network namespace with one link toward callgate.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name (`ip netns exec NAME …`).
    pub netns: String,
    /// The host's own address.
    pub addr: Ipv4Addr,
    /// The address on callgate's side of this host's link: what callgate
    /// listens on when this host is its peer on that side.
    pub gate: Ipv4Addr,
    /// This side's end of the host's veth pair (MTU 1500): where a capture
    /// sees the host's packets as a NIC would (`tcpdump -i LINK`).
    pub link: String,
}

const PREFIX: &str = "cgt";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e} (apt-get install iproute2)", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ns_ip(netns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", netns, "ip"];
    all.extend_from_slice(args);
    ip(&all)
}

/// Whether this process runs with effective uid 0 (from /proc/self/status).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Removes namespaces of earlier test processes that no longer run.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Lab {
    /// Creates one host per name. Panics, naming the cause, when the
    /// machine does not allow namespaces (not root).
    pub fn new(names: &[&str]) -> Lab {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if !is_root() {
            panic!(
                "this test builds network namespaces (ip netns, veth) and needs root, as in CI; \
                 run it as root"
            );
        }
        remove_stale();
        let pid = std::process::id();
        let mut lab = Lab { hosts: Vec::new() };
        for name in names {
            // A /30 per host in 10.231.0.0/16, starting at a place of this
            // process's own so that runs one after another do not collide.
            let k = (pid.wrapping_mul(131) + NEXT.fetch_add(1, Ordering::SeqCst)) % 16_384;
            let base = u32::from(Ipv4Addr::new(10, 231, 0, 0)) + k * 4;
            let gate = Ipv4Addr::from(base + 1);
            let addr = Ipv4Addr::from(base + 2);
            let netns = format!("{PREFIX}{pid}x{k}");
            let outer = format!("cg{k}o");
            let inner = format!("cg{k}i");
            let made = (|| {
                ip(&["netns", "add", &netns])?;
                ip(&[
                    "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                ])?;
                ip(&["link", "set", &inner, "netns", &netns])?;
                ip(&["addr", "add", &format!("{gate}/30"), "dev", &outer])?;
                ip(&["link", "set", &outer, "up"])?;
                ns_ip(
                    &netns,
                    &["addr", "add", &format!("{addr}/30"), "dev", &inner],
                )?;
                ns_ip(&netns, &["link", "set", &inner, "up"])?;
                ns_ip(&netns, &["link", "set", "lo", "up"])?;
                ns_ip(
                    &netns,
                    &["route", "add", "default", "via", &gate.to_string()],
                )
            })();
            let host = Host {
                netns: netns.clone(),
                addr,
                gate,
                link: outer.clone(),
            };
            if let Err(e) = made {
                let _ = ip(&["link", "del", &outer]);
                let _ = ip(&["netns", "del", &netns]);
                drop(lab);
                panic!("could not build test host {name}: {e}");
            }
            lab.hosts.push(host);
        }
        lab
    }

    /// The host created for `names[i]`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.netns]);
        }
    }
}

impl Host {
    /// Runs `f` on a thread that lives in this host's namespace: sockets it
    /// creates belong to the host (and stay so when used from elsewhere).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.netns);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("a thread in namespace {} panicked", self.netns))
    }

    /// A UDP socket on this host (port 0: any), with a read timeout.
    pub fn udp(&self, port: u16) -> UdpSocket {
        let addr = self.addr;
        self.run(move || {
            let s =
                UdpSocket::bind((addr, port)).unwrap_or_else(|e| panic!("bind {addr}:{port}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            s
        })
    }

    /// A TCP connection from this host to `to`.
    pub fn tcp(&self, to: SocketAddr) -> std::io::Result<TcpStream> {
        self.run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
    }

    /// `program` to be run inside this host (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program]);
        c
    }
}
