//! The test network itself (tests/common/netns.rs): hosts in namespaces of
//! their own reach this side from their own addresses. Needs root.
mod common;

use common::netns::Lab;

/// A datagram from one host arrives here from that host's address, also when
/// it is sent to another host's link (the way an attacker reaches callgate's
/// trunk address), and the answer finds its way back.
#[test]
fn hosts_reach_this_side_from_their_own_addresses() {
    let lab = Lab::new(&["carrier", "attacker"]);
    let (carrier, attacker) = (lab.host(0).clone(), lab.host(1).clone());
    let here = std::net::UdpSocket::bind((carrier.gate, 0)).expect("bind gate address");
    here.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok();
    let to = here.local_addr().expect("addr");
    let mut buf = [0u8; 64];
    for (host, word) in [(&carrier, b"carrier"), (&attacker, b"attack!")] {
        let s = host.udp(0);
        s.send_to(word, to).expect("send");
        let (n, from) = here.recv_from(&mut buf).expect("datagram from the host");
        assert_eq!(&buf[..n], word);
        assert_eq!(
            from.ip(),
            std::net::IpAddr::V4(host.addr),
            "source is the host's own"
        );
        here.send_to(b"back", from).expect("answer");
        let (n, _) = s.recv_from(&mut buf).expect("answer reaches the host");
        assert_eq!(&buf[..n], b"back");
    }
    assert_ne!(carrier.addr, attacker.addr);
}
