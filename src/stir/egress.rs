//! Where an `x5u` or CRL fetch may connect. The URL comes from a caller's
//! PASSporT (or a certificate it names), so without a check it would make
//! callgate reach hosts the attacker cannot: the loopback admin API, the
//! PBX, Redis, cloud metadata services (server-side request forgery).
//! Only global unicast addresses are allowed (unless `allow_private_x5u`,
//! for tests): every special-purpose block of the IANA IPv4 and IPv6
//! Special-Purpose Address Registries (RFC 6890) that is not globally
//! reachable, multicast, and the IPv6 blocks that embed an IPv4 address
//! (NAT64 64:ff9b::/96 — RFC 6052 — 6to4 2002::/16 — RFC 3056 — Teredo,
//! IPv4-mapped and -compatible), whose IPv4 part could be anything.
//!
//! A name is resolved once and every address it resolves to is checked;
//! the connection goes only to an allowed one ([`allowed`]), so a name
//! that resolves to a private and a public address cannot steer the
//! connection to the private one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{Ipv4Net, Ipv6Net};

/// IPv4 blocks never fetched from (RFC 6890 and updates).
const V4_REFUSED: [(Ipv4Addr, u8); 16] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network" (RFC 791)
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private (RFC 1918)
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared CGN space (RFC 6598)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link local (cloud metadata)
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation TEST-NET-1
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast (RFC 7526)
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking (RFC 2544)
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation TEST-NET-2
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation TEST-NET-3
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, and broadcast
    (Ipv4Addr::new(255, 255, 255, 255), 32),
];

/// IPv6 blocks never fetched from.
const V6_REFUSED: [(Ipv6Addr, u8); 14] = [
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128), // unspecified
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128), // loopback
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96), // IPv4-mapped
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96),  // IPv4-compatible (deprecated)
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96), // NAT64 (RFC 6052)
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local NAT64 (RFC 8215)
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard (RFC 6666)
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF assignments, Teredo
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16), // 6to4 (RFC 3056)
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
];

/// Whether a fetch must not connect to `ip`.
pub fn is_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => V4_REFUSED
            .iter()
            .any(|(net, len)| Ipv4Net::new(*net, *len).is_ok_and(|n| n.contains(&v4))),
        IpAddr::V6(v6) => V6_REFUSED
            .iter()
            .any(|(net, len)| Ipv6Net::new(*net, *len).is_ok_and(|n| n.contains(&v6))),
    }
}

/// The resolved addresses a fetch may connect to, in the resolver's
/// order; `Err` with the first refused one when none is allowed. With
/// `allow_private` (tests), all of them.
pub fn allowed(
    resolved: &[SocketAddr],
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Option<IpAddr>> {
    if allow_private {
        return if resolved.is_empty() {
            Err(None)
        } else {
            Ok(resolved.to_vec())
        };
    }
    let ok: Vec<SocketAddr> = resolved
        .iter()
        .filter(|a| !is_refused(a.ip()))
        .copied()
        .collect();
    if ok.is_empty() {
        Err(resolved.first().map(SocketAddr::ip))
    } else {
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn every_special_purpose_range_is_refused_at_both_ends() {
        for a in [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.255",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.0.1",
            "192.168.255.255",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.254",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::a00:1",
            "64:ff9b::808:808",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:a00:1::1",
            "2002:808:808::1",
            "fc00::1",
            "fdff:ffff::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
        ] {
            assert!(is_refused(ip(a)), "{a} must be refused");
        }
    }

    #[test]
    fn global_unicast_is_allowed_next_to_the_refused_blocks() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.0.3.1",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.1",
            "203.0.112.1",
            "223.255.255.255",
            "2001:200::1",
            "2001:4860:4860::8888",
            "2003::1",
            "2a00:1450::1",
            "fbff::1",
        ] {
            assert!(!is_refused(ip(a)), "{a} must be allowed");
        }
    }

    #[test]
    fn only_allowed_addresses_of_a_name_are_connected_to() {
        let sa = |s: &str| SocketAddr::new(ip(s), 443);
        let mixed = [sa("10.0.0.5"), sa("8.8.8.8"), sa("::1"), sa("2a00:1450::1")];
        assert_eq!(
            allowed(&mixed, false),
            Ok(vec![sa("8.8.8.8"), sa("2a00:1450::1")])
        );
        assert_eq!(
            allowed(&[sa("127.0.0.1"), sa("fe80::1")], false),
            Err(Some(ip("127.0.0.1")))
        );
        assert_eq!(allowed(&[], false), Err(None));
        assert_eq!(allowed(&mixed, true), Ok(mixed.to_vec()));
    }
}
