//! The gate's UDP SIP sockets under a flood: the side's kernel filter
//! (`sip/transport/kernel_filter.rs`) holding its ACL, attached at start
//! and again after every reload, and the sources the admit phase
//! throttles (`throttle.rs`), rebuilt after each review that changed them
//! — a reload rebuilds it with the new ACL and the sources throttled
//! now; and what the kernel dropped at each socket, for `/metrics`.
//!
//! `callgate_acl_kernel_filter{side}`: IPv4 prefixes of the side's ACL in
//! force in the kernel, 0 when none is (the userspace ACL alone decides;
//! the log line at start or reload says why).
//! `callgate_kernel_throttled_sources{side}`: sources throttled now;
//! `callgate_kernel_throttles_total{side}`: times a source was throttled.
//! `callgate_udp_socket_drops_total{side}`: datagrams the kernel dropped at
//! the side's SIP socket — receive queue full, or refused by the filter.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use ipnet::IpNet;

use super::throttle::Change;
use super::{lock, Gate};
use crate::config::{Denied, SideConfig};
use crate::sip::side::Side;
use crate::sip::transport::kernel_filter::{self, InForce, Throttled};
use crate::sip::transport::socket_drops;

const SIDES: [Side; 2] = [Side::Trunk, Side::Pbx];

/// What one side's filter is built from: the ACL as last put in force,
/// and the sources the admit phase throttles.
#[derive(Debug, Default)]
struct Wanted {
    allow: Vec<IpNet>,
    rejecting: bool,
    throttled: Vec<Throttled>,
}

/// Per side: what its filter is built from, and what is in force.
#[derive(Debug, Default)]
pub struct UdpGuard {
    /// Held while a filter is built and attached: a reload and a throttle
    /// review never attach out of order.
    wanted: Mutex<[Wanted; 2]>,
    prefixes: [AtomicI64; 2],
    throttled: [AtomicI64; 2],
    /// Sources ever throttled, per side.
    throttles: [AtomicU64; 2],
}

impl UdpGuard {
    /// A configuration of `cfg`'s side put in force (start, reload, a
    /// target's new addresses): its ACL and `on_denied` replace the
    /// filter's; the throttled sources stay in it (the throttle reviews
    /// them at its own pace, a reload keeps them), unless the new
    /// configuration throttles nothing (`kernel_throttle = false` or no
    /// `rate_limit`: released at the next review, out of the kernel now).
    /// Rebuilt and attached on `socket`.
    fn reload(
        &self,
        socket: &tokio::net::UdpSocket,
        cfg: &SideConfig,
    ) -> Option<Result<InForce, kernel_filter::NotAttached>> {
        let side = cfg.side;
        let mut wanted = lock(&self.wanted);
        let w = &mut wanted[side.index()];
        w.allow = cfg.allow.clone();
        w.rejecting = cfg.on_denied == Denied::Reject;
        if !cfg.kernel_throttle || cfg.rate_limit == 0 {
            w.throttled.clear();
        }
        self.attach(socket, side, w)
    }

    /// `side`'s throttled sources as `review` says them (`None`: no
    /// change), attached with the ACL in force. The review runs under the
    /// lock the attach takes, so that two reviews at once attach in the
    /// order they were made (never an older list last).
    fn throttle(
        &self,
        socket: &tokio::net::UdpSocket,
        side: Side,
        review: impl FnOnce() -> Option<Vec<Throttled>>,
    ) {
        let mut wanted = lock(&self.wanted);
        let Some(list) = review() else {
            return;
        };
        let w = &mut wanted[side.index()];
        w.throttled = list;
        if let Some(Err(why)) = self.attach(socket, side, w) {
            if !w.throttled.is_empty() {
                tracing::warn!(side = side.as_str(), reason = %why, "cannot throttle in the kernel; the admit phase alone refuses the excess");
            }
        }
    }

    /// Builds and attaches `side`'s filter from `w`, records what is in
    /// force; `None` when the attach failed (logged).
    fn attach(
        &self,
        socket: &tokio::net::UdpSocket,
        side: Side,
        w: &Wanted,
    ) -> Option<Result<InForce, kernel_filter::NotAttached>> {
        let got = kernel_filter::apply(socket, &w.allow, w.rejecting, &w.throttled);
        let in_force = match &got {
            Ok(Ok(f)) => *f,
            Ok(Err(_)) => InForce::default(),
            Err(e) => {
                tracing::warn!(side = side.as_str(), error = %e, "cannot attach the kernel filter; the ACL and rate limits are checked in userspace");
                InForce::default()
            }
        };
        let i = side.index();
        self.prefixes[i].store(in_force.prefixes as i64, Relaxed);
        self.throttled[i].store(in_force.throttled as i64, Relaxed);
        got.ok()
    }
}

impl Gate {
    /// Attaches, replaces or detaches the kernel filter of `cfg`'s side
    /// to match its ACL (at start and after every reload), with the
    /// sources throttled now ([`UdpGuard::reload`]). A failure leaves the
    /// userspace ACL in charge and says so; it never stops callgate.
    pub(super) fn guard_udp(&self, cfg: &SideConfig) {
        let side = cfg.side;
        let Some(socket) = self.udp[side.index()].as_ref() else {
            return;
        };
        match self.udp_guard.reload(socket, cfg) {
            Some(Ok(f)) => tracing::info!(
                side = side.as_str(),
                prefixes = f.prefixes,
                throttled = f.throttled,
                "kernel filter attached to the UDP socket"
            ),
            Some(Err(why)) => {
                tracing::info!(side = side.as_str(), reason = %why, "no kernel filter on the UDP socket; the ACL is checked in userspace")
            }
            None => {}
        }
    }

    /// Every quarter second, for each side with a UDP socket
    /// ([`Gate::review_throttle`]).
    pub(super) fn review_throttles(&self, now: Instant) {
        for side in SIDES {
            self.review_throttle(side, now);
        }
    }

    /// `side`'s admit phase says which sources to throttle in the kernel
    /// (`throttle.rs`); the filter is rebuilt only when that changed.
    /// Called by the periodic review and, when a flood is recognised
    /// between reviews, by the admit phase at once.
    pub(super) fn review_throttle(&self, side: Side, now: Instant) {
        let Some(socket) = self.udp[side.index()].as_ref() else {
            return;
        };
        self.udp_guard.throttle(socket, side, || {
            let (changes, list) = lock(&self.admission[side.index()]).review_throttle(now)?;
            for c in &changes {
                log_change(side, c);
                if matches!(c, Change::Throttled { .. }) {
                    self.udp_guard.throttles[side.index()].fetch_add(1, Relaxed);
                }
            }
            Some(list)
        });
    }

    /// The filter gauge and the kernel's socket drops, into `/metrics`.
    pub(super) fn encode_udp_guard(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use crate::exposition::{counter, gauge};
        let mut f = gauge(
            e,
            "callgate_acl_kernel_filter",
            "IPv4 prefixes of the side's ACL attached to its UDP socket as a kernel filter (0: none, the ACL is checked in userspace only).",
        )?;
        for side in SIDES {
            f.gauge(
                &[("side", side.as_str())],
                self.udp_guard.prefixes[side.index()].load(Relaxed),
            )?;
        }
        let mut f = gauge(
            e,
            "callgate_kernel_throttled_sources",
            "Admitted sources the side's kernel filter throttles now: they sent at four times their rate limit or more, and the kernel keeps about twice their rate's worth of their datagrams.",
        )?;
        for side in SIDES {
            f.gauge(
                &[("side", side.as_str())],
                self.udp_guard.throttled[side.index()].load(Relaxed),
            )?;
        }
        let mut f = counter(
            e,
            "callgate_kernel_throttles_total",
            "Times a source was throttled in the side's kernel filter.",
        )?;
        for side in SIDES {
            f.counter(
                &[("side", side.as_str())],
                self.udp_guard.throttles[side.index()].load(Relaxed),
            )?;
        }
        let mut f = counter(
            e,
            "callgate_udp_socket_drops_total",
            "Datagrams the kernel dropped at the side's UDP SIP socket (receive queue full, or refused by the ACL filter).",
        )?;
        for side in SIDES {
            let drops = self.udp[side.index()]
                .as_ref()
                .and_then(|s| socket_drops::kernel_drops(s));
            if let Some(drops) = drops {
                f.counter(&[("side", side.as_str())], drops)?;
            }
        }
        Ok(())
    }
}

/// One line per change: a throttle is an operator's business (a peer
/// misbehaving, or a limit set too low).
fn log_change(side: Side, c: &Change) {
    match *c {
        Change::Throttled {
            source,
            offered,
            share,
        } => tracing::warn!(
            side = side.as_str(),
            %source,
            offered_per_sec = offered.round(),
            kept_share = share,
            "source far over its rate limit: throttled in the kernel"
        ),
        Change::Adjusted {
            source,
            offered,
            share,
        } => tracing::info!(
            side = side.as_str(),
            %source,
            offered_per_sec = offered.round(),
            kept_share = share,
            "kernel throttle follows the source's rate"
        ),
        Change::Released { source } => tracing::info!(
            side = side.as_str(),
            %source,
            "source back under its rate limit: kernel throttle released"
        ),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::sip::transport::kernel_filter::on_a_socket::{bind, first_datagram, receiver};
    use std::net::Ipv4Addr;

    fn trunk(allow: &[&str]) -> SideConfig {
        let mut cfg = crate::config::Config::embedded()
            .map(|c| c.trunk)
            .unwrap_or_else(|e| panic!("embedded config: {e}"));
        cfg.allow = allow
            .iter()
            .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
            .collect();
        cfg.on_denied = Denied::Drop;
        cfg.rate_limit = 100;
        cfg.kernel_throttle = true;
        cfg
    }

    /// What `guard` holds in force on the trunk side.
    fn in_force(guard: &UdpGuard) -> (i64, i64) {
        let i = Side::Trunk.index();
        (
            guard.prefixes[i].load(Relaxed),
            guard.throttled[i].load(Relaxed),
        )
    }

    /// A reload while a source is throttled keeps it in the socket's
    /// filter, and a reload that changes the ACL rebuilds the filter with
    /// the new ACL and the throttled source together — checked on a real
    /// socket: the throttled source's datagrams are dropped by the kernel,
    /// a host the reload admitted gets through, a stranger does not. A
    /// reload that switches throttling off takes it out of the kernel at
    /// once.
    #[tokio::test]
    async fn a_reload_keeps_the_throttled_sources_in_the_filter_with_the_new_acl() {
        let rx = receiver();
        let to = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let guard = UdpGuard::default();
        let before = trunk(&["127.0.0.1/32", "127.0.0.2/32"]);
        assert!(guard.reload(&rx, &before).is_some_and(|f| f.is_ok()));
        assert_eq!(in_force(&guard), (2, 0));
        let flooder = Ipv4Addr::new(127, 0, 0, 2);
        guard.throttle(&rx, Side::Trunk, || {
            Some(vec![Throttled::new(flooder, 0.0)])
        });
        assert_eq!(in_force(&guard), (2, 1));
        // No change from the throttle: the filter stays.
        guard.throttle(&rx, Side::Trunk, || None);
        assert_eq!(in_force(&guard), (2, 1));

        // The same configuration reloaded: the source stays throttled.
        assert!(guard.reload(&rx, &before).is_some_and(|f| f.is_ok()));
        assert_eq!(in_force(&guard), (2, 1), "a reload keeps the throttle");
        // A new ACL: its three prefixes and the throttled source.
        let after = trunk(&["127.0.0.1/32", "127.0.0.2/32", "127.0.0.3/32"]);
        assert!(guard.reload(&rx, &after).is_some_and(|f| f.is_ok()));
        assert_eq!(in_force(&guard), (3, 1), "the new ACL and the throttle");

        let (flood, stranger, admitted) = (bind("127.0.0.2"), bind("127.0.0.4"), bind("127.0.0.3"));
        let drops = socket_drops::kernel_drops(&rx).unwrap_or(0);
        for _ in 0..20 {
            for s in [&flood, &stranger] {
                s.send_to(b"dropped", to).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        admitted
            .send_to(b"INVITE", to)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            first_datagram(&rx).await,
            (b"INVITE".to_vec(), std::net::IpAddr::from([127, 0, 0, 3])),
            "the newly admitted host's datagram is the first through"
        );
        assert_eq!(
            socket_drops::kernel_drops(&rx).unwrap_or(0) - drops,
            40,
            "the kernel dropped the throttled source's 20 and the stranger's 20"
        );

        // Throttling switched off: out of the kernel at the reload.
        let mut off = after.clone();
        off.kernel_throttle = false;
        assert!(guard.reload(&rx, &off).is_some_and(|f| f.is_ok()));
        assert_eq!(in_force(&guard), (3, 0));
    }
}
