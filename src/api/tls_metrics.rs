//! Metrics of SIP over TLS: failed handshakes by side, direction and
//! reason ([`HandshakeFailure`]), and when each side's certificate
//! expires. Encoded into `/metrics` with [`super::metrics::Metrics`].

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::exposition::{counter, gauge};
use crate::sip::side::Side;
use crate::sip::transport::tls::failure::REASONS;
use crate::sip::transport::tls::HandshakeFailure;

/// Which end of the handshake callgate was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsDirection {
    /// A peer connected to callgate's TLS listener.
    Inbound = 0,
    /// callgate connected to a TLS target.
    Outbound = 1,
}

#[derive(Default)]
pub struct TlsMetrics {
    /// [side][direction][reason]
    failures: [[[AtomicU64; REASONS.len()]; 2]; 2],
    /// notAfter of each side's certificate (Unix seconds); 0 when none.
    not_after: [AtomicI64; 2],
}

impl TlsMetrics {
    pub fn handshake_failed(&self, side: Side, dir: TlsDirection, why: HandshakeFailure) {
        let i = REASONS.iter().position(|(r, _)| *r == why).unwrap_or(0);
        self.failures[side.index()][dir as usize][i].fetch_add(1, Relaxed);
    }

    /// Records the notAfter of the certificate the side now serves.
    pub fn set_not_after(&self, side: Side, not_after: Option<i64>) {
        self.not_after[side.index()].store(not_after.unwrap_or(0), Relaxed);
    }

    /// Writes these families (see [`crate::exposition`]).
    pub fn encode(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let mut f = counter(
            e,
            "callgate_tls_handshake_failures_total",
            "TLS handshakes that failed, by side, direction and reason.",
        )?;
        for side in [Side::Trunk, Side::Pbx] {
            for (d, dir) in ["inbound", "outbound"].iter().enumerate() {
                for (i, (_, reason)) in REASONS.iter().enumerate() {
                    let labels = [
                        ("side", side.as_str()),
                        ("direction", *dir),
                        ("reason", *reason),
                    ];
                    f.counter(&labels, self.failures[side.index()][d][i].load(Relaxed))?;
                }
            }
        }
        let mut f = gauge(
            e,
            "callgate_tls_cert_not_after_seconds",
            "When the certificate each side serves expires (Unix time).",
        )?;
        for side in [Side::Trunk, Side::Pbx] {
            let v = self.not_after[side.index()].load(Relaxed);
            if v != 0 {
                f.gauge(&[("side", side.as_str())], v)?;
            }
        }
        Ok(())
    }
}
