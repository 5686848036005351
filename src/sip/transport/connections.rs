//! Caps on accepted stream connections (TCP, TLS), per source address and
//! in total per listener.
//!
//! Defends against connection exhaustion: every accepted connection costs
//! a file descriptor, a task, a read buffer (up to `max_message_bytes`) and,
//! for TLS, a handshake. Without a cap one admitted host can open
//! connections until the process runs out of descriptors (EMFILE), after
//! which no carrier can connect at all. A source at its cap gets its new
//! connection closed at once; other sources are unaffected. The total cap
//! bounds what many sources together can hold.

use crate::sip::tally::Over;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The stream connection limits of `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections one source address may hold open on one listener
    /// (`limits.max_connections_per_source`).
    pub per_source: usize,
    /// Most connections one listener holds open in all
    /// (`limits.max_connections`).
    pub total: usize,
    /// A TLS handshake not finished this long after the accept is abandoned
    /// (`limits.tls_handshake_secs`).
    pub tls_handshake: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            per_source: 64,
            total: 4096,
            tls_handshake: Duration::from_secs(5),
        }
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapReached {
    /// The source already holds `per_source` connections.
    PerSource,
    /// The listener already holds `total` connections.
    Total,
}

/// The open accepted connections of one listener, by source address.
#[derive(Debug)]
pub struct ConnectionCounter {
    limits: ConnectionLimits,
    open: Mutex<Open>,
}

type Open = crate::sip::tally::SourceTally;

/// One admitted connection's place in its counter; given back on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    counter: Arc<ConnectionCounter>,
    source: IpAddr,
}

impl ConnectionCounter {
    pub fn new(limits: ConnectionLimits) -> Arc<ConnectionCounter> {
        Arc::new(ConnectionCounter {
            limits,
            open: Mutex::new(Open::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a connection from `source`, or says which cap it
    /// would exceed. The map holds only sources with open connections, so
    /// it is bounded by the total cap.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<ConnectionSlot, CapReached> {
        let source = crate::sip::proxy::canonical_ip(source);
        self.lock()
            .charge(source, 1, self.limits.per_source, self.limits.total)
            .map_err(|over| match over {
                Over::Source => CapReached::PerSource,
                Over::Total => CapReached::Total,
            })?;
        Ok(ConnectionSlot {
            counter: self.clone(),
            source,
        })
    }

    /// Connections open now (all sources).
    pub fn open(&self) -> usize {
        self.lock().total()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counter.lock().release(self.source, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_source_at_its_cap_is_refused_while_others_are_admitted() {
        let c = ConnectionCounter::new(ConnectionLimits {
            per_source: 2,
            total: 3,
            ..ConnectionLimits::default()
        });
        let a1 = c.admit(ip(1)).expect("first");
        let _a2 = c.admit(ip(1)).expect("second");
        assert_eq!(c.admit(ip(1)).err(), Some(CapReached::PerSource));
        let _b1 = c.admit(ip(2)).expect("another source");
        assert_eq!(
            c.admit(ip(3)).err(),
            Some(CapReached::Total),
            "the listener is full"
        );
        drop(a1);
        assert_eq!(c.open(), 2);
        let _a3 = c.admit(ip(1)).expect("a closed connection frees its slot");
        assert_eq!(c.open(), 3);
    }

    #[test]
    fn sources_without_connections_leave_the_map() {
        let c = ConnectionCounter::new(ConnectionLimits::default());
        for i in 0..200u8 {
            drop(c.admit(ip(i)).expect("admitted"));
        }
        assert_eq!(c.open(), 0);
        assert!(c.lock().sources() == 0, "no entry per closed source");
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_source() {
        let c = ConnectionCounter::new(ConnectionLimits {
            per_source: 1,
            ..ConnectionLimits::default()
        });
        let _v4 = c.admit(ip(9)).expect("v4");
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 9).to_ipv6_mapped());
        assert_eq!(c.admit(mapped).err(), Some(CapReached::PerSource));
    }
}
