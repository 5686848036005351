//! The side's kernel filter: a classic BPF socket filter on a UDP SIP
//! socket that drops, before they are queued to the socket, every datagram
//! whose IPv4 source lies outside the side's `allow` list, and all but a
//! sampled share of the datagrams of each source the gate has throttled.
//!
//! The failures it handles (issue 14, "Floods"):
//! - A flood from a source outside the ACL filled the trunk socket's
//!   receive queue and took the one receive loop's time, so the kernel
//!   dropped 1.6 million datagrams at the socket, legitimate ACKs and BYEs
//!   among them. Filtered in the kernel, such a datagram costs no queue
//!   space, no wake-up, no copy and no lock.
//! - A flood from an *admitted* source far beyond its `rate_limit`: the
//!   admit phase drops the excess on the receive buffer, but each datagram
//!   still took queue space and a read; on two cores, with the generator on
//!   one, the queue overflowed whenever callgate was off the CPU, and a lost
//!   legitimate INVITE cost its caller T1 = 500 ms. The gate now throttles
//!   such a source in the kernel (`gate/throttle.rs` decides who and how
//!   much): the filter keeps each of its datagrams with a probability the
//!   gate sets (about twice its rate limit's worth of what it sends) and
//!   drops the rest before the queue, using the kernel's per-packet random
//!   number. The admit phase still applies the exact limit to what is kept.
//!
//! An accelerator only: the admit phase's ACL check and rate limits stay
//! the authority (`gate/admit.rs`), so where the filter is not attached —
//! not Linux, an IPv6 or dual-stack socket, an ACL the filter cannot
//! express and no throttled source — nothing changes but the cost. With
//! `on_denied = "reject"` (refused sources must reach userspace to be
//! answered 403) the filter holds the throttled sources only. The kernel
//! counts the datagrams it filters in the socket's drop counter
//! (`/proc/net/udp`, `callgate_udp_socket_drops_total`).
//!
//! The program (Linux `Documentation/networking/filter.rst`): load the
//! source address from the IP header through the ancillary network-layer
//! offset (`SKF_NET_OFF + 12`, so the same program works whatever the link
//! layer); for each throttled source, on a match, load the random number
//! (`SKF_AD_OFF + SKF_AD_RANDOM`) and drop when it is above the source's
//! threshold; then for each allowed prefix: mask, compare, accept on a
//! match; drop when none matched (accept, without ACL prefixes).

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

/// One classic BPF instruction: `(code, jt, jf, k)`.
pub type Insn = (u16, u8, u8, u32);

/// `BPF_LD | BPF_W | BPF_ABS`: A = 32-bit word at offset k.
const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`: A &= k.
const AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JEQ | BPF_K`: if A == k skip jt else skip jf.
const JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGT | BPF_K`: if A > k skip jt else skip jf.
const JGT_K: u16 = 0x25;
/// `BPF_RET | BPF_K`: keep k bytes of the packet (0: drop it).
const RET_K: u16 = 0x06;
/// `SKF_NET_OFF` (-0x100000) + 12: the IPv4 header's source address.
const IPV4_SOURCE: u32 = 0xFFF0_0000 + 12;
/// `SKF_AD_OFF` (-0x1000) + `SKF_AD_RANDOM` (56): a fresh random 32-bit
/// number per load (Linux ≥ 3.13).
const RANDOM: u32 = 0xFFFF_F000 + 56;
/// Keep the whole datagram.
const ACCEPT: u32 = u32::MAX;
/// `BPF_MAXINSNS`: the kernel refuses longer programs.
const MAX_INSNS: usize = 4096;
/// Instructions per prefix (load, mask, compare, accept).
const PER_PREFIX: usize = 4;
/// Instructions per throttled source (load, compare, random, compare,
/// drop).
const PER_THROTTLED: usize = 5;
/// Throttled sources one program holds at most (the gate never asks for
/// more: `gate/throttle.rs`).
pub const MAX_THROTTLED: usize = 64;

/// A source whose datagrams the kernel keeps only in part: each one with
/// probability `keep / 2³²` (`u32::MAX`: all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub source: Ipv4Addr,
    pub keep: u32,
}

impl Throttled {
    /// `source` kept with probability `share` (clamped to 0–1).
    pub fn new(source: Ipv4Addr, share: f64) -> Throttled {
        let keep = (share.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u32;
        Throttled { source, keep }
    }
}

/// Why a side's UDP socket has no kernel filter (the userspace ACL and
/// rate limits alone decide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAttached {
    /// `on_denied = "reject"` and no throttled source: refused sources
    /// must reach userspace to be answered 403.
    Rejecting,
    /// The socket is IPv6 (or dual-stack): the filter reads IPv4 headers.
    Ipv6Socket,
    /// The ACL admits every IPv4 source (or names none), and no source is
    /// throttled: nothing to filter.
    NothingToFilter,
    /// More prefixes than one program holds (`BPF_MAXINSNS`).
    TooManyPrefixes(usize),
    /// Not Linux.
    Unsupported,
}

impl std::fmt::Display for NotAttached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAttached::Rejecting => write!(f, "on_denied = \"reject\" answers refused sources"),
            NotAttached::Ipv6Socket => write!(f, "the socket is IPv6"),
            NotAttached::NothingToFilter => write!(f, "the ACL admits every IPv4 source"),
            NotAttached::TooManyPrefixes(n) => write!(
                f,
                "{n} IPv4 prefixes, more than one filter holds ({})",
                (MAX_INSNS - 1 - MAX_THROTTLED * PER_THROTTLED) / PER_PREFIX
            ),
            NotAttached::Unsupported => write!(f, "not supported on this platform"),
        }
    }
}

/// What a filter attached to a socket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InForce {
    /// The ACL's IPv4 prefixes (0: the ACL is checked in userspace only).
    pub prefixes: usize,
    /// Throttled sources.
    pub throttled: usize,
}

/// The IPv4 prefixes of `allow`: those the userspace check can match an
/// IPv4 source against (it compares IPv4-mapped sources as IPv4, against
/// IPv4 networks only). An IPv6 network never matches an IPv4 source.
pub fn ipv4_prefixes(allow: &[IpNet]) -> Vec<Ipv4Net> {
    allow
        .iter()
        .filter_map(|net| match net {
            IpNet::V4(v4) => Some(v4.trunc()),
            IpNet::V6(_) => None,
        })
        .collect()
}

/// The ACL part of a program: whether `prefixes` can be checked in the
/// kernel at all.
pub fn acl_expressible(prefixes: &[Ipv4Net]) -> Result<(), NotAttached> {
    if prefixes.is_empty() || prefixes.iter().any(|p| p.prefix_len() == 0) {
        return Err(NotAttached::NothingToFilter);
    }
    if prefixes.len() * PER_PREFIX + MAX_THROTTLED * PER_THROTTLED + 1 > MAX_INSNS {
        return Err(NotAttached::TooManyPrefixes(prefixes.len()));
    }
    Ok(())
}

/// The filter program: the sampling of `throttled` (at most
/// [`MAX_THROTTLED`]; more are ignored), then the ACL of `prefixes` when
/// given (already checked with [`acl_expressible`]), else accept.
pub fn program(prefixes: Option<&[Ipv4Net]>, throttled: &[Throttled]) -> Vec<Insn> {
    let throttled = &throttled[..throttled.len().min(MAX_THROTTLED)];
    let acl = prefixes.unwrap_or_default();
    let mut insns =
        Vec::with_capacity(throttled.len() * PER_THROTTLED + acl.len() * PER_PREFIX + 1);
    for t in throttled {
        insns.push((LD_W_ABS, 0, 0, IPV4_SOURCE));
        // Another source: skip this entry's three remaining instructions.
        insns.push((JEQ_K, 0, 3, u32::from(t.source)));
        insns.push((LD_W_ABS, 0, 0, RANDOM));
        // Above the threshold: fall through to the drop; else skip it.
        insns.push((JGT_K, 0, 1, t.keep));
        insns.push((RET_K, 0, 0, 0));
    }
    match prefixes {
        Some(prefixes) => {
            for p in prefixes {
                insns.push((LD_W_ABS, 0, 0, IPV4_SOURCE));
                insns.push((AND_K, 0, 0, u32::from(p.netmask())));
                // Match: fall through to the accept; no match: skip it.
                insns.push((JEQ_K, 0, 1, u32::from(p.network())));
                insns.push((RET_K, 0, 0, ACCEPT));
            }
            insns.push((RET_K, 0, 0, 0));
        }
        None => insns.push((RET_K, 0, 0, ACCEPT)),
    }
    insns
}

/// What `socket`'s filter should hold for `allow` and `throttled`, as a
/// program and what it holds, or why there is none.
fn wanted(
    ipv4_socket: bool,
    allow: &[IpNet],
    rejecting: bool,
    throttled: &[Throttled],
) -> Result<(Vec<Insn>, InForce), NotAttached> {
    if !ipv4_socket {
        return Err(NotAttached::Ipv6Socket);
    }
    let prefixes = ipv4_prefixes(allow);
    let acl = if rejecting {
        Err(NotAttached::Rejecting)
    } else {
        acl_expressible(&prefixes)
    };
    let throttled = &throttled[..throttled.len().min(MAX_THROTTLED)];
    match acl {
        Ok(()) => Ok((
            program(Some(&prefixes), throttled),
            InForce {
                prefixes: prefixes.len(),
                throttled: throttled.len(),
            },
        )),
        Err(why) if throttled.is_empty() => Err(why),
        Err(_) => Ok((
            program(None, throttled),
            InForce {
                prefixes: 0,
                throttled: throttled.len(),
            },
        )),
    }
}

/// Attaches (or replaces) the filter for `allow` and `throttled` on
/// `socket`, or detaches any filter when none applies. What is in force,
/// or why nothing is; on an error no filter is left attached (never one
/// of an earlier ACL).
#[cfg(target_os = "linux")]
pub fn apply(
    socket: &tokio::net::UdpSocket,
    allow: &[IpNet],
    rejecting: bool,
    throttled: &[Throttled],
) -> std::io::Result<Result<InForce, NotAttached>> {
    let sock = socket2::SockRef::from(socket);
    match wanted(socket.local_addr()?.is_ipv4(), allow, rejecting, throttled) {
        Ok((insns, in_force)) => {
            let filter: Vec<socket2::SockFilter> = insns
                .iter()
                .map(|&(code, jt, jf, k)| socket2::SockFilter::new(code, jt, jf, k))
                .collect();
            if let Err(e) = sock.attach_filter(&filter) {
                // A filter of an earlier ACL may still be attached: it
                // would drop sources a reload just admitted. Without a
                // filter the userspace check decides alone.
                let _ = sock.detach_filter();
                return Err(e);
            }
            Ok(Ok(in_force))
        }
        Err(why) => {
            // ENOENT: there was none to detach.
            match sock.detach_filter() {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(2) => {}
                Err(e) => return Err(e),
            }
            Ok(Err(why))
        }
    }
}

/// Not Linux: the userspace ACL and limits alone.
#[cfg(not(target_os = "linux"))]
pub fn apply(
    _socket: &tokio::net::UdpSocket,
    _allow: &[IpNet],
    _rejecting: bool,
    _throttled: &[Throttled],
) -> std::io::Result<Result<InForce, NotAttached>> {
    Ok(Err(NotAttached::Unsupported))
}

/// A loopback receiver for the tests that attach a filter to a real
/// socket, and what reaches it.
#[cfg(all(test, target_os = "linux"))]
pub(crate) mod on_a_socket {
    /// A UDP socket on `ip`, port 0.
    pub fn bind(ip: &str) -> std::net::UdpSocket {
        std::net::UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("{ip}: {e}"))
    }

    /// A tokio socket on 127.0.0.1 to attach filters to.
    pub fn receiver() -> tokio::net::UdpSocket {
        let s = bind("127.0.0.1");
        s.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
        tokio::net::UdpSocket::from_std(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The first datagram `rx` receives (within 5 s) and its source.
    pub async fn first_datagram(rx: &tokio::net::UdpSocket) -> (Vec<u8>, std::net::IpAddr) {
        let mut buf = [0u8; 64];
        let (n, from) =
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv_from(&mut buf))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"));
        (buf[..n].to_vec(), from.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` the way the kernel would on a datagram from `src` (only
    /// the instructions [`program`] emits), each random load drawing the
    /// next of `random`.
    fn run_with(prog: &[Insn], src: Ipv4Addr, random: &mut impl FnMut() -> u32) -> u32 {
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let (code, jt, jf, k) = prog[pc];
            pc += 1;
            match code {
                LD_W_ABS if k == IPV4_SOURCE => a = u32::from(src),
                LD_W_ABS if k == RANDOM => a = random(),
                AND_K => a &= k,
                JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
                JGT_K => pc += usize::from(if a > k { jt } else { jf }),
                RET_K => return k,
                other => panic!("unexpected instruction {other:#x} {k:#x}"),
            }
        }
    }

    /// [`run_with`] where no random number is expected.
    fn run(prog: &[Insn], src: Ipv4Addr) -> u32 {
        run_with(prog, src, &mut || panic!("no random load expected"))
    }

    /// The ACL part alone.
    fn acl_program(prefixes: &[Ipv4Net]) -> Result<Vec<Insn>, NotAttached> {
        acl_expressible(prefixes).map(|()| program(Some(prefixes), &[]))
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn accepts_exactly_what_the_acl_admits() {
        let allow = nets(&[
            "10.1.0.0/16",
            "192.0.2.7/32",
            "::ffff:198.51.100.0/120",
            "2001:db8::/32",
        ]);
        let prefixes = ipv4_prefixes(&allow);
        assert_eq!(prefixes.len(), 2, "IPv6 networks match no IPv4 source");
        let prog = acl_program(&prefixes).unwrap_or_else(|e| panic!("{e}"));
        for (src, admitted) in [
            ("10.1.2.3", true),
            ("10.1.255.255", true),
            ("10.2.0.1", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("198.51.100.99", false),
            ("198.51.101.1", false),
            ("127.0.0.1", false),
        ] {
            assert_eq!(run(&prog, ip(src)) != 0, admitted, "{src}");
            // The userspace ACL agrees (the filter only accelerates it).
            assert_eq!(
                crate::sip::proxy::admits(&allow, std::net::IpAddr::V4(ip(src))),
                admitted,
                "{src}"
            );
        }
    }

    #[test]
    fn a_host_prefix_written_loosely_is_truncated() {
        // "10.0.0.5/8" admits all of 10/8 in userspace: so must the filter.
        let prog =
            acl_program(&ipv4_prefixes(&nets(&["10.0.0.5/8"]))).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(run(&prog, ip("10.9.9.9")), 0);
        assert_eq!(run(&prog, ip("11.0.0.5")), 0);
    }

    #[test]
    fn no_filter_when_everything_or_nothing_ipv4_is_admitted() {
        assert_eq!(
            acl_program(&ipv4_prefixes(&nets(&["0.0.0.0/0"]))),
            Err(NotAttached::NothingToFilter)
        );
        assert_eq!(
            acl_program(&ipv4_prefixes(&nets(&["2001:db8::/32"]))),
            Err(NotAttached::NothingToFilter)
        );
        let many: Vec<Ipv4Net> = (0..1100u32)
            .map(|i| {
                Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        assert_eq!(acl_program(&many), Err(NotAttached::TooManyPrefixes(1100)));
        // The largest ACL that fits leaves room for every throttled source.
        let fits = (MAX_INSNS - 1 - MAX_THROTTLED * PER_THROTTLED) / PER_PREFIX;
        assert_eq!(
            acl_program(&many[..fits + 1]),
            Err(NotAttached::TooManyPrefixes(fits + 1))
        );
        let all_throttled: Vec<Throttled> = (0..MAX_THROTTLED as u32)
            .map(|i| Throttled::new(Ipv4Addr::from(0x0a00_0001 + i), 0.5))
            .collect();
        assert!(acl_program(&many[..fits]).is_ok());
        assert!(program(Some(&many[..fits]), &all_throttled).len() <= MAX_INSNS);
    }

    /// A deterministic stand-in for the kernel's random numbers.
    fn xorshift(mut x: u32) -> impl FnMut() -> u32 {
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        }
    }

    #[test]
    fn a_throttled_source_keeps_its_share_and_no_other_source_is_touched() {
        let allow = ipv4_prefixes(&nets(&["10.0.0.0/8"]));
        let flooder = ip("10.0.0.2");
        let prog = program(Some(&allow), &[Throttled::new(flooder, 0.05)]);
        let mut random = xorshift(0x1234_5678);
        let kept = (0..100_000)
            .filter(|_| run_with(&prog, flooder, &mut random) != 0)
            .count();
        assert!(
            (4_000..6_000).contains(&kept),
            "about 5 % of the flooder's datagrams kept: {kept}"
        );
        // The carrier next to it and a stranger: as with the ACL alone,
        // and no random number drawn for them.
        assert_ne!(run(&prog, ip("10.0.0.1")), 0);
        assert_eq!(run(&prog, ip("192.0.2.1")), 0);
    }

    #[test]
    fn a_share_of_one_keeps_all_and_of_zero_keeps_none() {
        let src = ip("10.0.0.2");
        let allow = ipv4_prefixes(&nets(&["10.0.0.0/8"]));
        let mut random = xorshift(99);
        let all = program(Some(&allow), &[Throttled::new(src, 1.0)]);
        let none = program(Some(&allow), &[Throttled::new(src, 0.0)]);
        for _ in 0..1000 {
            assert_ne!(run_with(&all, src, &mut random), 0);
        }
        let kept = (0..1000)
            .filter(|_| run_with(&none, src, &mut random) != 0)
            .count();
        assert_eq!(kept, 0);
    }

    #[test]
    fn without_kernel_acl_throttled_sources_still_get_a_filter() {
        let flooder = ip("192.0.2.9");
        let throttled = [Throttled::new(flooder, 0.0)];
        // `on_denied = "reject"`: strangers must reach userspace for
        // their 403, so everyone but the throttled source is accepted.
        let (prog, in_force) = wanted(true, &nets(&["10.0.0.0/8"]), true, &throttled)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            in_force,
            InForce {
                prefixes: 0,
                throttled: 1
            }
        );
        assert_ne!(
            run(&prog, ip("203.0.113.5")),
            0,
            "a stranger reaches the 403"
        );
        assert_eq!(run_with(&prog, flooder, &mut xorshift(7)), 0);
        // An ACL admitting everything: the same.
        let (_, in_force) = wanted(true, &nets(&["0.0.0.0/0"]), false, &throttled)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(in_force.prefixes, 0);
        // Nothing throttled: no filter, and the reason.
        assert_eq!(
            wanted(true, &nets(&["10.0.0.0/8"]), true, &[]).map(|w| w.1),
            Err(NotAttached::Rejecting)
        );
        assert_eq!(
            wanted(false, &nets(&["10.0.0.0/8"]), false, &throttled).map(|w| w.1),
            Err(NotAttached::Ipv6Socket)
        );
        assert_eq!(
            wanted(true, &nets(&["10.0.0.0/8"]), false, &throttled).map(|w| w.1),
            Ok(InForce {
                prefixes: 1,
                throttled: 1
            })
        );
    }

    /// The program the kernel runs is the one emulated above: attached to
    /// a real socket, a source kept with share 0 loses every datagram in
    /// the kernel and the carrier's reach the socket.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_kernel_drops_a_throttled_source_and_counts_it() {
        use super::on_a_socket::{bind, first_datagram, receiver};
        let rx = receiver();
        let to = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (carrier, flooder) = (bind("127.0.0.1"), bind("127.0.0.2"));
        let in_force = apply(
            &rx,
            &nets(&["127.0.0.0/8"]),
            false,
            &[Throttled::new(ip("127.0.0.2"), 0.0)],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            in_force,
            InForce {
                prefixes: 1,
                throttled: 1
            }
        );
        let before = super::super::socket_drops::kernel_drops(&rx).unwrap_or(0);
        for _ in 0..50 {
            flooder
                .send_to(b"flood", to)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        carrier
            .send_to(b"INVITE", to)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            first_datagram(&rx).await,
            (
                b"INVITE".to_vec(),
                carrier
                    .local_addr()
                    .map(|a| a.ip())
                    .unwrap_or_else(|e| panic!("{e}"))
            ),
            "the flooder's 50 went first, none was kept"
        );
        let after = super::super::socket_drops::kernel_drops(&rx).unwrap_or(0);
        assert_eq!(
            after - before,
            50,
            "the kernel counted every one it dropped"
        );
    }
}
