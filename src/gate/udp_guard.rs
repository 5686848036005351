//! The gate's UDP SIP sockets under a flood: the side's kernel filter
//! (`sip/transport/kernel_filter.rs`) holding its ACL, attached at start
//! and again after every reload, and the sources the admit phase
//! throttles (`throttle.rs`), rebuilt after each review that changed them;
//! and what the kernel dropped at each socket, for `/metrics`.
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

impl Gate {
    /// Attaches, replaces or detaches the kernel filter of `cfg`'s side
    /// to match its ACL (at start and after every reload). A failure
    /// leaves the userspace ACL in charge and says so; it never stops
    /// callgate.
    pub(super) fn guard_udp(&self, cfg: &SideConfig) {
        let side = cfg.side;
        let mut wanted = lock(&self.udp_guard.wanted);
        let w = &mut wanted[side.index()];
        w.allow = cfg.allow.clone();
        w.rejecting = cfg.on_denied == Denied::Reject;
        match self.attach_udp_filter(side, w) {
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
        if self.udp[side.index()].is_none() {
            return;
        }
        let Some((changes, list)) = lock(&self.admission[side.index()]).review_throttle(now) else {
            return;
        };
        for c in &changes {
            log_change(side, c);
            if matches!(c, Change::Throttled { .. }) {
                self.udp_guard.throttles[side.index()].fetch_add(1, Relaxed);
            }
        }
        let mut wanted = lock(&self.udp_guard.wanted);
        let w = &mut wanted[side.index()];
        w.throttled = list;
        if let Some(Err(why)) = self.attach_udp_filter(side, w) {
            if !w.throttled.is_empty() {
                tracing::warn!(side = side.as_str(), reason = %why, "cannot throttle in the kernel; the admit phase alone refuses the excess");
            }
        }
    }

    /// Builds and attaches `side`'s filter from `w`, records what is in
    /// force; `None` when the side has no UDP socket or the attach failed
    /// (logged).
    fn attach_udp_filter(
        &self,
        side: Side,
        w: &Wanted,
    ) -> Option<Result<InForce, kernel_filter::NotAttached>> {
        let socket = self.udp[side.index()].as_ref()?;
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
        self.udp_guard.prefixes[i].store(in_force.prefixes as i64, Relaxed);
        self.udp_guard.throttled[i].store(in_force.throttled as i64, Relaxed);
        got.ok()
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
