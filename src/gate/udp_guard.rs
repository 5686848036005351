//! The gate's UDP SIP sockets under a flood: the side's ACL attached to
//! each socket as a kernel filter (`sip/transport/acl_filter.rs`) at start
//! and again after every reload, and what the kernel dropped at each
//! socket, for `/metrics`.
//!
//! `callgate_acl_kernel_filter{side}`: IPv4 prefixes of the side's ACL in
//! force in the kernel, 0 when no filter is attached (the userspace ACL
//! alone decides; the log line at start or reload says why).
//! `callgate_udp_socket_drops_total{side}`: datagrams the kernel dropped at
//! the side's SIP socket — receive queue full, or refused by the filter.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use super::Gate;
use crate::config::{Denied, SideConfig};
use crate::sip::side::Side;
use crate::sip::transport::{acl_filter, socket_drops};

const SIDES: [Side; 2] = [Side::Trunk, Side::Pbx];

/// Prefixes in force per side (0: none attached).
#[derive(Debug, Default)]
pub struct UdpGuard {
    prefixes: [AtomicI64; 2],
}

impl Gate {
    /// Attaches, replaces or detaches the kernel filter of `cfg`'s side
    /// to match its ACL. A failure leaves the userspace ACL in charge and
    /// says so; it never stops callgate.
    pub(super) fn guard_udp(&self, cfg: &SideConfig) {
        let side = cfg.side;
        let Some(socket) = &self.udp[side.index()] else {
            return;
        };
        let n = match acl_filter::apply(socket, &cfg.allow, cfg.on_denied == Denied::Reject) {
            Ok(Ok(n)) => {
                tracing::info!(
                    side = side.as_str(),
                    prefixes = n,
                    "ACL attached to the UDP socket as a kernel filter"
                );
                n
            }
            Ok(Err(why)) => {
                tracing::info!(side = side.as_str(), reason = %why, "no kernel ACL filter on the UDP socket; the ACL is checked in userspace");
                0
            }
            Err(e) => {
                tracing::warn!(side = side.as_str(), error = %e, "cannot attach the ACL kernel filter; the ACL is checked in userspace");
                0
            }
        };
        self.udp_guard.prefixes[side.index()].store(n as i64, Relaxed);
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
