//! Client transactions (RFC 3261 §17.1, with the Accepted state of RFC 6026 §7.2).

use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

use super::TimerConfig;
use super::{TxKind, TxOutput};

/// States of a client transaction. `Calling`/`Trying` are the initial states
/// of INVITE and non-INVITE transactions respectively (§17.1.1, §17.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Calling,
    Trying,
    Proceeding,
    /// RFC 6026 §7.2: a 2xx was received; retransmitted 2xx are passed up
    /// until Timer M fires.
    Accepted,
    Completed,
    Terminated,
}

/// A client transaction: the proxy's forwarded request towards one target.
#[derive(Debug)]
pub struct ClientTransaction {
    kind: TxKind,
    state: ClientState,
    reliable: bool,
    timers: TimerConfig,
    request: Bytes,
    /// ACK for a non-2xx final response, built by the caller (§17.1.1.3).
    ack: Option<Bytes>,
    /// Retransmission timer (A or E) and its current interval.
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Transaction timeout (B or F).
    timeout_at: Option<Instant>,
    /// Timer D, K or M: when Completed/Accepted ends.
    linger_until: Option<Instant>,
    /// Last final status received.
    final_status: Option<u16>,
}

type Outputs = SmallVec<[TxOutput; 2]>;

impl ClientTransaction {
    /// Starts a transaction: the request is transmitted at once and timers
    /// A/B (INVITE) or E/F (non-INVITE) are armed.
    pub fn start(
        kind: TxKind,
        request: Bytes,
        reliable: bool,
        timers: TimerConfig,
        now: Instant,
    ) -> (Self, TxOutput) {
        let t1 = timers.t1;
        let tx = ClientTransaction {
            kind,
            state: match kind {
                TxKind::Invite => ClientState::Calling,
                TxKind::NonInvite => ClientState::Trying,
            },
            reliable,
            timers,
            request: request.clone(),
            ack: None,
            retransmit_at: (!reliable).then(|| now + t1),
            retransmit_interval: t1,
            timeout_at: Some(now + 64 * t1),
            linger_until: None,
            final_status: None,
        };
        (tx, TxOutput::Transmit(request))
    }

    pub fn state(&self) -> ClientState {
        self.state
    }
    pub fn kind(&self) -> TxKind {
        self.kind
    }
    pub fn request(&self) -> &Bytes {
        &self.request
    }
    pub fn final_status(&self) -> Option<u16> {
        self.final_status
    }

    /// Earliest time `on_timer` must be called, if any timer is armed.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.linger_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Feeds a response matched to this transaction (§17.1.3). `ack` is the
    /// ACK to send for a non-2xx final response to an INVITE; the caller
    /// builds it lazily only when asked via `needs_ack`.
    pub fn on_response(
        &mut self,
        status: u16,
        now: Instant,
        ack: impl FnOnce() -> Option<Bytes>,
    ) -> Outputs {
        let mut out = Outputs::new();
        match (self.kind, self.state) {
            (_, ClientState::Terminated) => {}
            (TxKind::Invite, ClientState::Calling | ClientState::Proceeding) => {
                if status < 200 {
                    self.state = ClientState::Proceeding;
                    // §17.1.1.2: in Proceeding no more retransmissions; Timer B
                    // no longer applies (the proxy runs Timer C instead).
                    self.retransmit_at = None;
                    self.timeout_at = None;
                    out.push(TxOutput::PassUp);
                } else if status < 300 {
                    self.final_status = Some(status);
                    self.enter_accepted(now);
                    out.push(TxOutput::PassUp);
                } else {
                    self.final_status = Some(status);
                    self.ack = ack();
                    if let Some(a) = &self.ack {
                        out.push(TxOutput::Transmit(a.clone()));
                    }
                    self.state = ClientState::Completed;
                    self.retransmit_at = None;
                    self.timeout_at = None;
                    // Timer D: at least 32 s for unreliable transports, 0 else.
                    self.linger_until = Some(
                        now + if self.reliable {
                            Duration::ZERO
                        } else {
                            Duration::from_secs(32)
                        },
                    );
                    out.push(TxOutput::PassUp);
                }
            }
            // RFC 6026 §7.2: 2xx retransmissions go up to the TU (the proxy
            // forwards them statelessly); anything else is absorbed.
            (TxKind::Invite, ClientState::Accepted) if (200..300).contains(&status) => {
                out.push(TxOutput::PassUp);
            }
            // Retransmitted final: resend the ACK, don't pass up.
            (TxKind::Invite, ClientState::Completed) if status >= 300 => {
                if let Some(a) = &self.ack {
                    out.push(TxOutput::Transmit(a.clone()));
                }
            }
            (TxKind::NonInvite, ClientState::Trying | ClientState::Proceeding) => {
                if status < 200 {
                    self.state = ClientState::Proceeding;
                    out.push(TxOutput::PassUp);
                } else {
                    self.final_status = Some(status);
                    self.state = ClientState::Completed;
                    self.retransmit_at = None;
                    self.timeout_at = None;
                    // Timer K: T4 for unreliable transports, 0 else.
                    self.linger_until = Some(
                        now + if self.reliable {
                            Duration::ZERO
                        } else {
                            self.timers.t4
                        },
                    );
                    out.push(TxOutput::PassUp);
                }
            }
            _ => {}
        }
        out
    }

    fn enter_accepted(&mut self, now: Instant) {
        self.state = ClientState::Accepted;
        self.retransmit_at = None;
        self.timeout_at = None;
        // Timer M = 64*T1 (RFC 6026 §8.4).
        self.linger_until = Some(now + 64 * self.timers.t1);
    }

    /// The transport reported a failure sending the request (§17.1.4).
    pub fn on_transport_error(&mut self) -> Outputs {
        let mut out = Outputs::new();
        if matches!(
            self.state,
            ClientState::Calling | ClientState::Trying | ClientState::Proceeding
        ) {
            out.push(TxOutput::Timeout);
        }
        self.terminate(&mut out);
        out
    }

    /// A CANCEL for this INVITE went out (the caller's, or Timer C's): if
    /// no final response comes within 64*T1, the transaction times out
    /// (RFC 3261 §9.1: the client "SHOULD then consider the original
    /// transaction cancelled"), so a target that died while ringing
    /// cannot hold the call open forever. Only in Proceeding: Calling
    /// still has Timer B.
    pub fn cancel_sent(&mut self, now: Instant) {
        if self.kind == TxKind::Invite
            && self.state == ClientState::Proceeding
            && self.timeout_at.is_none()
        {
            self.timeout_at = Some(now + 64 * self.timers.t1);
        }
    }

    /// The TU abandons the transaction (e.g. Timer C fired and a CANCEL went
    /// out): nothing more is sent or passed up except through responses.
    fn terminate(&mut self, out: &mut Outputs) {
        if self.state != ClientState::Terminated {
            self.state = ClientState::Terminated;
            self.retransmit_at = None;
            self.timeout_at = None;
            self.linger_until = None;
            out.push(TxOutput::Terminated);
        }
    }

    /// Processes every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Outputs {
        let mut out = Outputs::new();
        if self.linger_until.is_some_and(|t| t <= now) {
            // Timer D, K or M.
            self.terminate(&mut out);
            return out;
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            // Timer B or F.
            out.push(TxOutput::Timeout);
            self.terminate(&mut out);
            return out;
        }
        if let Some(at) = self.retransmit_at.filter(|t| *t <= now) {
            out.push(TxOutput::Transmit(self.request.clone()));
            self.retransmit_interval = match (self.kind, self.state) {
                // Timer A doubles without bound (§17.1.1.2).
                (TxKind::Invite, _) => self.retransmit_interval * 2,
                // Timer E doubles up to T2 in Trying, stays T2 in Proceeding.
                (TxKind::NonInvite, ClientState::Proceeding) => self.timers.t2,
                (TxKind::NonInvite, _) => (self.retransmit_interval * 2).min(self.timers.t2),
            };
            // Schedule from the due time, not from `now`, so a late tick does
            // not stretch the series.
            self.retransmit_at = Some(at + self.retransmit_interval);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers() -> TimerConfig {
        TimerConfig::default()
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn transmits(out: &[TxOutput]) -> usize {
        out.iter()
            .filter(|o| matches!(o, TxOutput::Transmit(_)))
            .count()
    }

    #[test]
    fn invite_timer_a_doubles_and_timer_b_times_out() {
        let t0 = Instant::now();
        let (mut tx, first) = ClientTransaction::start(
            TxKind::Invite,
            Bytes::from_static(b"INVITE"),
            false,
            timers(),
            t0,
        );
        assert_eq!(first, TxOutput::Transmit(Bytes::from_static(b"INVITE")));
        let mut sent_at = vec![];
        let mut now = t0;
        while let Some(d) = tx.next_deadline() {
            now = d;
            let out = tx.on_timer(now);
            if transmits(&out) > 0 {
                sent_at.push(now - t0);
            }
            if out.contains(&TxOutput::Timeout) {
                break;
            }
        }
        // Retransmits at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; Timer B at 32 s.
        let expect: Vec<Duration> = [500, 1500, 3500, 7500, 15500, 31500]
            .iter()
            .map(|m| ms(*m))
            .collect();
        assert_eq!(sent_at, expect);
        assert_eq!(now - t0, ms(32_000));
        assert_eq!(tx.state(), ClientState::Terminated);
    }

    #[test]
    fn invite_reliable_has_no_retransmissions() {
        let t0 = Instant::now();
        let (tx, _) = ClientTransaction::start(TxKind::Invite, Bytes::new(), true, timers(), t0);
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_000)));
    }

    #[test]
    fn invite_provisional_stops_retransmission_and_timer_b() {
        let t0 = Instant::now();
        let (mut tx, _) =
            ClientTransaction::start(TxKind::Invite, Bytes::new(), false, timers(), t0);
        let out = tx.on_response(180, t0 + ms(10), || None);
        assert_eq!(out.as_slice(), &[TxOutput::PassUp]);
        assert_eq!(tx.state(), ClientState::Proceeding);
        assert_eq!(tx.next_deadline(), None);
    }

    #[test]
    fn invite_non2xx_final_sends_ack_and_absorbs_retransmissions() {
        let t0 = Instant::now();
        let (mut tx, _) =
            ClientTransaction::start(TxKind::Invite, Bytes::new(), false, timers(), t0);
        let ack = Bytes::from_static(b"ACK");
        let out = tx.on_response(486, t0, || Some(ack.clone()));
        assert_eq!(
            out.as_slice(),
            &[TxOutput::Transmit(ack.clone()), TxOutput::PassUp]
        );
        assert_eq!(tx.state(), ClientState::Completed);
        let again = tx.on_response(486, t0 + ms(600), || panic!("ack is built once"));
        assert_eq!(again.as_slice(), &[TxOutput::Transmit(ack)]);
        // Timer D = 32 s on UDP.
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_000)));
        assert_eq!(
            tx.on_timer(t0 + ms(32_000)).as_slice(),
            &[TxOutput::Terminated]
        );
    }

    #[test]
    fn invite_2xx_enters_accepted_and_passes_retransmissions_up() {
        let t0 = Instant::now();
        let (mut tx, _) =
            ClientTransaction::start(TxKind::Invite, Bytes::new(), false, timers(), t0);
        assert_eq!(
            tx.on_response(200, t0, || None).as_slice(),
            &[TxOutput::PassUp]
        );
        assert_eq!(tx.state(), ClientState::Accepted);
        assert_eq!(
            tx.on_response(200, t0 + ms(500), || None).as_slice(),
            &[TxOutput::PassUp]
        );
        assert!(tx.on_response(180, t0 + ms(500), || None).is_empty());
        // Timer M = 64*T1.
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_000)));
    }

    #[test]
    fn non_invite_timer_e_caps_at_t2_and_f_times_out() {
        let t0 = Instant::now();
        let (mut tx, _) =
            ClientTransaction::start(TxKind::NonInvite, Bytes::new(), false, timers(), t0);
        let mut gaps = vec![];
        let mut last = t0;
        while let Some(d) = tx.next_deadline() {
            let out = tx.on_timer(d);
            if out.contains(&TxOutput::Timeout) {
                assert_eq!(d - t0, ms(32_000));
                break;
            }
            gaps.push((d - last).as_millis());
            last = d;
        }
        assert_eq!(&gaps[..6], &[500, 1000, 2000, 4000, 4000, 4000]);
    }

    #[test]
    fn non_invite_proceeding_retransmits_every_t2_then_completes_with_timer_k() {
        let t0 = Instant::now();
        let (mut tx, _) =
            ClientTransaction::start(TxKind::NonInvite, Bytes::new(), false, timers(), t0);
        tx.on_response(100, t0 + ms(100), || None);
        assert_eq!(tx.state(), ClientState::Proceeding);
        let out = tx.on_timer(t0 + ms(500));
        assert_eq!(transmits(&out), 1);
        assert_eq!(tx.next_deadline(), Some(t0 + ms(4500)));
        assert_eq!(
            tx.on_response(200, t0 + ms(600), || None).as_slice(),
            &[TxOutput::PassUp]
        );
        assert!(tx.on_response(200, t0 + ms(700), || None).is_empty());
        assert_eq!(tx.next_deadline(), Some(t0 + ms(600) + ms(5000)));
    }

    #[test]
    fn transport_error_times_out() {
        let t0 = Instant::now();
        let (mut tx, _) =
            ClientTransaction::start(TxKind::NonInvite, Bytes::new(), true, timers(), t0);
        assert_eq!(
            tx.on_transport_error().as_slice(),
            &[TxOutput::Timeout, TxOutput::Terminated]
        );
    }
}
