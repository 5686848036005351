//! The kernel's drop counter of one of callgate's own UDP sockets, for
//! `callgate_udp_socket_drops_total{side}`.
//!
//! A datagram the kernel cannot queue (receive buffer full while the
//! receive loop is busy) or that the socket's filter refuses
//! (`kernel_filter.rs`) never reaches callgate; the only trace is the
//! socket's `drops` column in `/proc/net/udp` (`/proc/net/udp6` for an
//! IPv6 socket), found by the socket's inode (the `socket:[N]` link of
//! `/proc/self/fd/FD`). Linux only; elsewhere `None`.

/// Drops counted by the kernel at `socket` since it was opened.
#[cfg(target_os = "linux")]
pub fn kernel_drops(socket: &tokio::net::UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    let inode = inode_of(link.to_str()?)?;
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .find_map(|text| drops_in_table(&text, inode))
}

#[cfg(not(target_os = "linux"))]
pub fn kernel_drops(_socket: &tokio::net::UdpSocket) -> Option<u64> {
    None
}

/// `socket:[12345]` → 12345.
fn inode_of(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The `drops` column (the last) of the row whose `inode` column (the
/// tenth) is `inode`, in a `/proc/net/udp` table.
fn drops_in_table(text: &str, inode: u64) -> Option<u64> {
    text.lines().skip(1).find_map(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        if cols.get(9)?.parse::<u64>().ok()? == inode {
            cols.last()?.parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_row_by_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            1: 0100007F:EDC0 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0\n\
            2: 0100007F:EDC2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 1734\n";
        assert_eq!(drops_in_table(table, 4243), Some(1734));
        assert_eq!(drops_in_table(table, 4242), Some(0));
        assert_eq!(drops_in_table(table, 9), None);
        assert_eq!(inode_of("socket:[4243]"), Some(4243));
        assert_eq!(inode_of("pipe:[4243]"), None);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn reads_its_own_socket() {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kernel_drops(&s), Some(0));
    }
}
