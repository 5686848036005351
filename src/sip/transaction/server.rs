//! Server transactions (RFC 3261 §17.2, with the Accepted state of RFC 6026 §7.1).

use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

use super::TimerConfig;
use super::{TxKind, TxOutput};

/// States of a server transaction. INVITE starts in `Proceeding` (§17.2.1),
/// non-INVITE in `Trying` (§17.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Trying,
    Proceeding,
    /// RFC 6026 §7.1: a 2xx was sent; request retransmissions are absorbed
    /// and further 2xx from the TU are sent, until Timer L fires.
    Accepted,
    Completed,
    Confirmed,
    Terminated,
}

/// A server transaction: a request received by the proxy.
#[derive(Debug)]
pub struct ServerTransaction {
    kind: TxKind,
    state: ServerState,
    reliable: bool,
    timers: TimerConfig,
    /// Last response sent (resent on request retransmissions).
    last_response: Option<Bytes>,
    last_status: u16,
    /// Timer G and its interval.
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Timer H (wait for ACK).
    ack_timeout_at: Option<Instant>,
    /// Timer I, J or L.
    linger_until: Option<Instant>,
}

type Outputs = SmallVec<[TxOutput; 2]>;

impl ServerTransaction {
    pub fn new(kind: TxKind, reliable: bool, timers: TimerConfig) -> Self {
        ServerTransaction {
            kind,
            state: match kind {
                TxKind::Invite => ServerState::Proceeding,
                TxKind::NonInvite => ServerState::Trying,
            },
            reliable,
            timers,
            last_response: None,
            last_status: 0,
            retransmit_at: None,
            retransmit_interval: timers.t1,
            ack_timeout_at: None,
            linger_until: None,
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }
    pub fn kind(&self) -> TxKind {
        self.kind
    }
    /// Status of the last response sent, 0 if none.
    pub fn last_status(&self) -> u16 {
        self.last_status
    }
    /// Whether a final response was sent.
    pub fn is_final(&self) -> bool {
        self.last_status >= 200
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.ack_timeout_at, self.linger_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// A retransmission of the request arrived (§17.2.1, §17.2.2): resend
    /// the last response, if any, in the states that do so.
    pub fn on_request_retransmission(&mut self) -> Outputs {
        let mut out = Outputs::new();
        match self.state {
            ServerState::Proceeding | ServerState::Completed => {
                if let Some(r) = &self.last_response {
                    out.push(TxOutput::Transmit(r.clone()));
                }
            }
            _ => {}
        }
        out
    }

    /// An ACK matched this INVITE transaction (non-2xx final, §17.2.1).
    pub fn on_ack(&mut self, now: Instant) -> Outputs {
        let mut out = Outputs::new();
        if self.kind == TxKind::Invite && self.state == ServerState::Completed {
            self.state = ServerState::Confirmed;
            self.retransmit_at = None;
            self.ack_timeout_at = None;
            // Timer I: T4 for unreliable transports, 0 else.
            self.linger_until = Some(
                now + if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                },
            );
            if self.reliable {
                self.state = ServerState::Terminated;
                self.linger_until = None;
                out.push(TxOutput::Terminated);
            }
        }
        out
    }

    /// The TU sends a response through this transaction. Returns what to
    /// transmit; a response the state no longer allows is not sent.
    pub fn send_response(&mut self, status: u16, bytes: Bytes, now: Instant) -> Outputs {
        let mut out = Outputs::new();
        let allowed = match self.state {
            ServerState::Trying | ServerState::Proceeding => true,
            // RFC 6026 §7.1: 2xx retransmissions from the TU pass in Accepted.
            ServerState::Accepted => (200..300).contains(&status),
            _ => false,
        };
        if !allowed {
            return out;
        }
        out.push(TxOutput::Transmit(bytes.clone()));
        self.last_response = Some(bytes);
        self.last_status = status;
        match (self.kind, status) {
            (_, s) if s < 200 => {
                if self.state == ServerState::Trying {
                    self.state = ServerState::Proceeding;
                }
            }
            (TxKind::Invite, s) if s < 300 => {
                if self.state != ServerState::Accepted {
                    self.state = ServerState::Accepted;
                    // Timer L = 64*T1 (RFC 6026 §8.7).
                    self.linger_until = Some(now + 64 * self.timers.t1);
                }
            }
            (TxKind::Invite, _) => {
                self.state = ServerState::Completed;
                if !self.reliable {
                    // Timer G.
                    self.retransmit_interval = self.timers.t1;
                    self.retransmit_at = Some(now + self.timers.t1);
                }
                // Timer H = 64*T1.
                self.ack_timeout_at = Some(now + 64 * self.timers.t1);
            }
            (TxKind::NonInvite, _) => {
                self.state = ServerState::Completed;
                // Timer J: 64*T1 for unreliable transports, 0 else.
                self.linger_until = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        64 * self.timers.t1
                    },
                );
            }
        }
        out
    }

    /// Processes every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Outputs {
        let mut out = Outputs::new();
        if self.linger_until.is_some_and(|t| t <= now) {
            self.terminate(&mut out);
            return out;
        }
        if self.ack_timeout_at.is_some_and(|t| t <= now) {
            // Timer H: the ACK never came.
            out.push(TxOutput::AckTimeout);
            self.terminate(&mut out);
            return out;
        }
        if let Some(at) = self.retransmit_at.filter(|t| *t <= now) {
            if let Some(r) = &self.last_response {
                out.push(TxOutput::Transmit(r.clone()));
            }
            // Timer G doubles up to T2.
            self.retransmit_interval = (self.retransmit_interval * 2).min(self.timers.t2);
            self.retransmit_at = Some(at + self.retransmit_interval);
        }
        out
    }

    fn terminate(&mut self, out: &mut Outputs) {
        if self.state != ServerState::Terminated {
            self.state = ServerState::Terminated;
            self.retransmit_at = None;
            self.ack_timeout_at = None;
            self.linger_until = None;
            out.push(TxOutput::Terminated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn invite_retransmission_resends_last_provisional() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(TxKind::Invite, false, TimerConfig::default());
        assert!(tx.on_request_retransmission().is_empty());
        tx.send_response(100, b("100"), t0);
        assert_eq!(
            tx.on_request_retransmission().as_slice(),
            &[TxOutput::Transmit(b("100"))]
        );
        tx.send_response(180, b("180"), t0);
        assert_eq!(
            tx.on_request_retransmission().as_slice(),
            &[TxOutput::Transmit(b("180"))]
        );
        assert_eq!(tx.state(), ServerState::Proceeding);
    }

    #[test]
    fn invite_error_final_retransmits_on_timer_g_until_ack() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(TxKind::Invite, false, TimerConfig::default());
        tx.send_response(486, b("486"), t0);
        assert_eq!(tx.state(), ServerState::Completed);
        let mut at = vec![];
        for _ in 0..5 {
            let d = tx.next_deadline().unwrap_or(t0);
            assert_eq!(tx.on_timer(d).as_slice(), &[TxOutput::Transmit(b("486"))]);
            at.push((d - t0).as_millis());
        }
        assert_eq!(at, vec![500, 1500, 3500, 7500, 11500]);
        assert!(tx.on_ack(t0 + ms(12_000)).is_empty());
        assert_eq!(tx.state(), ServerState::Confirmed);
        // ACK retransmissions are absorbed; Timer I ends it after T4.
        assert!(tx.on_ack(t0 + ms(12_100)).is_empty());
        assert_eq!(tx.next_deadline(), Some(t0 + ms(17_000)));
        assert_eq!(
            tx.on_timer(t0 + ms(17_000)).as_slice(),
            &[TxOutput::Terminated]
        );
    }

    #[test]
    fn invite_timer_h_fires_without_ack() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(TxKind::Invite, true, TimerConfig::default());
        tx.send_response(503, b("503"), t0);
        // Reliable: no Timer G, only H.
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_000)));
        assert_eq!(
            tx.on_timer(t0 + ms(32_000)).as_slice(),
            &[TxOutput::AckTimeout, TxOutput::Terminated]
        );
    }

    #[test]
    fn invite_2xx_enters_accepted_and_forwards_2xx_retransmissions() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(TxKind::Invite, false, TimerConfig::default());
        tx.send_response(200, b("200"), t0);
        assert_eq!(tx.state(), ServerState::Accepted);
        assert!(tx.on_request_retransmission().is_empty());
        assert_eq!(
            tx.send_response(200, b("200"), t0 + ms(500)).as_slice(),
            &[TxOutput::Transmit(b("200"))]
        );
        assert!(tx.send_response(486, b("486"), t0 + ms(500)).is_empty());
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_000)));
    }

    #[test]
    fn non_invite_completed_resends_final_and_ends_with_timer_j() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(TxKind::NonInvite, false, TimerConfig::default());
        assert!(tx.on_request_retransmission().is_empty());
        tx.send_response(200, b("200"), t0);
        assert_eq!(tx.state(), ServerState::Completed);
        assert_eq!(
            tx.on_request_retransmission().as_slice(),
            &[TxOutput::Transmit(b("200"))]
        );
        assert!(tx.send_response(500, b("500"), t0).is_empty());
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_000)));
        let mut reliable = ServerTransaction::new(TxKind::NonInvite, true, TimerConfig::default());
        reliable.send_response(200, b("200"), t0);
        assert_eq!(reliable.next_deadline(), Some(t0));
    }
}
