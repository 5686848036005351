//! The side's ACL in the kernel: a classic BPF socket filter on a UDP SIP
//! socket that drops every datagram whose IPv4 source lies outside the
//! side's `allow` list before it is queued to the socket.
//!
//! The failure it handles (issue 14, "Floods"): a flood from a source
//! outside the ACL filled the trunk socket's receive queue and took the one
//! receive loop's time, so the kernel dropped 1.6 million datagrams at the
//! socket, legitimate ACKs and BYEs among them. Filtered in the kernel,
//! such a datagram costs no queue space, no wake-up, no copy and no lock.
//!
//! An accelerator only: the admit phase's ACL check stays the authority
//! (`gate/admit.rs`), so where the filter is not attached — not Linux, an
//! IPv6 or dual-stack socket, `on_denied = "reject"` (the 403 must still be
//! answered), an ACL that admits every IPv4 address, more prefixes than a
//! filter can hold — nothing changes but the cost. The kernel counts the
//! datagrams it filters in the socket's drop counter (`/proc/net/udp`,
//! `callgate_udp_socket_drops_total`).
//!
//! The program (Linux `Documentation/networking/filter.rst`): load the
//! source address from the IP header through the ancillary network-layer
//! offset (`SKF_NET_OFF + 12`, so the same program works whatever the link
//! layer), then for each allowed prefix: mask, compare, accept on a match;
//! drop when none matched.

use ipnet::{IpNet, Ipv4Net};

/// One classic BPF instruction: `(code, jt, jf, k)`.
pub type Insn = (u16, u8, u8, u32);

/// `BPF_LD | BPF_W | BPF_ABS`: A = 32-bit word at offset k.
const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`: A &= k.
const AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JEQ | BPF_K`: if A == k skip jt else skip jf.
const JEQ_K: u16 = 0x15;
/// `BPF_RET | BPF_K`: keep k bytes of the packet (0: drop it).
const RET_K: u16 = 0x06;
/// `SKF_NET_OFF` (-0x100000) + 12: the IPv4 header's source address.
const IPV4_SOURCE: u32 = 0xFFF0_0000 + 12;
/// Keep the whole datagram.
const ACCEPT: u32 = u32::MAX;
/// `BPF_MAXINSNS`: the kernel refuses longer programs.
const MAX_INSNS: usize = 4096;
/// Instructions per prefix (load, mask, compare, accept).
const PER_PREFIX: usize = 4;

/// Why a side's UDP socket has no kernel filter (the userspace ACL alone
/// decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAttached {
    /// `on_denied = "reject"`: refused sources must reach userspace to be
    /// answered 403.
    Rejecting,
    /// The socket is IPv6 (or dual-stack): the filter reads IPv4 headers.
    Ipv6Socket,
    /// The ACL admits every IPv4 source (or names none): nothing to filter.
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
                (MAX_INSNS - 1) / PER_PREFIX
            ),
            NotAttached::Unsupported => write!(f, "not supported on this platform"),
        }
    }
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

/// The filter program for `prefixes`, or why there is none.
pub fn program(prefixes: &[Ipv4Net]) -> Result<Vec<Insn>, NotAttached> {
    if prefixes.is_empty() || prefixes.iter().any(|p| p.prefix_len() == 0) {
        return Err(NotAttached::NothingToFilter);
    }
    if prefixes.len() * PER_PREFIX + 1 > MAX_INSNS {
        return Err(NotAttached::TooManyPrefixes(prefixes.len()));
    }
    let mut insns = Vec::with_capacity(prefixes.len() * PER_PREFIX + 1);
    for p in prefixes {
        let mask = u32::from(p.netmask());
        let net = u32::from(p.network());
        insns.push((LD_W_ABS, 0, 0, IPV4_SOURCE));
        insns.push((AND_K, 0, 0, mask));
        // Match: fall through to the accept; no match: skip it.
        insns.push((JEQ_K, 0, 1, net));
        insns.push((RET_K, 0, 0, ACCEPT));
    }
    insns.push((RET_K, 0, 0, 0));
    Ok(insns)
}

/// Attaches (or replaces) the filter for `allow` on `socket`, or detaches
/// any filter when none applies. The number of prefixes in force, or why
/// none is; on an error no filter is left attached (never one of an
/// earlier ACL).
#[cfg(target_os = "linux")]
pub fn apply(
    socket: &tokio::net::UdpSocket,
    allow: &[IpNet],
    rejecting: bool,
) -> std::io::Result<Result<usize, NotAttached>> {
    let sock = socket2::SockRef::from(socket);
    let wanted = if rejecting {
        Err(NotAttached::Rejecting)
    } else if !socket.local_addr()?.is_ipv4() {
        Err(NotAttached::Ipv6Socket)
    } else {
        let prefixes = ipv4_prefixes(allow);
        program(&prefixes).map(|p| (p, prefixes.len()))
    };
    match wanted {
        Ok((insns, n)) => {
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
            Ok(Ok(n))
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

/// Not Linux: the userspace ACL alone.
#[cfg(not(target_os = "linux"))]
pub fn apply(
    _socket: &tokio::net::UdpSocket,
    _allow: &[IpNet],
    _rejecting: bool,
) -> std::io::Result<Result<usize, NotAttached>> {
    Ok(Err(NotAttached::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Runs `prog` the way the kernel would on a datagram from `src` (only
    /// the instructions [`program`] emits).
    fn run(prog: &[Insn], src: Ipv4Addr) -> u32 {
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let (code, jt, jf, k) = prog[pc];
            pc += 1;
            match code {
                LD_W_ABS => {
                    assert_eq!(k, IPV4_SOURCE);
                    a = u32::from(src);
                }
                AND_K => a &= k,
                JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
                RET_K => return k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
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
        let prog = program(&prefixes).unwrap_or_else(|e| panic!("{e}"));
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
            program(&ipv4_prefixes(&nets(&["10.0.0.5/8"]))).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(run(&prog, ip("10.9.9.9")), 0);
        assert_eq!(run(&prog, ip("11.0.0.5")), 0);
    }

    #[test]
    fn no_filter_when_everything_or_nothing_ipv4_is_admitted() {
        assert_eq!(
            program(&ipv4_prefixes(&nets(&["0.0.0.0/0"]))),
            Err(NotAttached::NothingToFilter)
        );
        assert_eq!(
            program(&ipv4_prefixes(&nets(&["2001:db8::/32"]))),
            Err(NotAttached::NothingToFilter)
        );
        let many: Vec<Ipv4Net> = (0..1100u32)
            .map(|i| {
                Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        assert_eq!(program(&many), Err(NotAttached::TooManyPrefixes(1100)));
        assert!(program(&many[..1023]).is_ok_and(|p| p.len() <= MAX_INSNS));
    }
}
