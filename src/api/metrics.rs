//! Prometheus metrics, kept as plain atomics indexed by enums so that
//! counting on the call path costs one relaxed add and no allocation.
//! They are encoded at scrape time through [`crate::exposition`].

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::DescriptorEncoder;

use crate::exposition::{self, counter, gauge, histogram, info, one_counter, one_gauge, Exposed};

use crate::sip::method::Method;
use crate::sip::proxy::{CoreObserver, CoreRefusal};
use crate::sip::side::Side;
use crate::stir::Cause;

pub use crate::sip::proxy::Direction;

const SIDES: [Side; 2] = [Side::Trunk, Side::Pbx];
const METHODS: [Method; 15] = [
    Method::Invite,
    Method::Ack,
    Method::Bye,
    Method::Cancel,
    Method::Options,
    Method::Register,
    Method::Prack,
    Method::Update,
    Method::Info,
    Method::Subscribe,
    Method::Notify,
    Method::Refer,
    Method::Message,
    Method::Publish,
    Method::Extension,
];

fn method_index(m: Method) -> usize {
    METHODS
        .iter()
        .position(|x| *x == m)
        .unwrap_or(METHODS.len() - 1)
}

/// Why a request was refused before the proxy core saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Source not in the side's ACL.
    Acl,
    /// Source over its rate limit.
    RateLimit,
    /// Source over its byte budget (`rate_limit_bytes`).
    ByteRate,
    /// Work over budget (503).
    Overload,
    /// Draining for shutdown (503).
    Draining,
    /// Refused by the sanitize phase (400: a control character).
    Unsafe,
    /// A request for no dialog callgate knows (481).
    NoDialog,
    /// A method the trunk may not send outside a dialog (405).
    Method,
    /// A Request-URI that is not one of the centre's numbers (404).
    Number,
    /// A scanning tool's signature (dropped, or 403).
    Scanner,
    /// A PBX's 401/407 challenge to the trunk, replaced by 404.
    Challenge,
    /// A transaction over its source's or the core's byte budget (503).
    TransactionBytes,
}

impl From<CoreRefusal> for Refusal {
    fn from(why: CoreRefusal) -> Refusal {
        match why {
            CoreRefusal::Overload => Refusal::Overload,
            CoreRefusal::Draining => Refusal::Draining,
            CoreRefusal::TransactionBytes => Refusal::TransactionBytes,
        }
    }
}

const REFUSALS: [(Refusal, &str); 12] = [
    (Refusal::Acl, "acl"),
    (Refusal::RateLimit, "rate_limit"),
    (Refusal::ByteRate, "byte_rate"),
    (Refusal::Overload, "overload"),
    (Refusal::Draining, "draining"),
    (Refusal::Unsafe, "unsafe"),
    (Refusal::NoDialog, "no_dialog"),
    (Refusal::Method, "method"),
    (Refusal::Number, "number"),
    (Refusal::Scanner, "scanner"),
    (Refusal::Challenge, "challenge"),
    (Refusal::TransactionBytes, "transaction_bytes"),
];

/// Why a verification failed (RFC 8224 §6.2.2 response codes), as
/// labelled in `callgate_stir_failures_total`.
const STIR_CAUSES: [(Cause, &str); 5] = [
    (Cause::MissingIdentity, "missing-identity"),
    (Cause::BadIdentityInfo, "bad-identity-info"),
    (Cause::UnsupportedCredential, "unsupported-credential"),
    (Cause::InvalidIdentityHeader, "invalid-identity-header"),
    (Cause::StaleDate, "stale-date"),
];

/// Phases whose latency is observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Parse + admission + proxy processing of one inbound message.
    Process,
    /// STIR/SHAKEN verification of one INVITE (including any certificate wait).
    Verify,
    /// Risk assessment of one INVITE: signals, velocity counts, policy.
    Assess,
}

/// Upper bounds (seconds) of the process phase: microseconds when all is
/// well, milliseconds when the signalling thread queues.
const PROCESS_BUCKETS: &[f64] = &[
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
    0.1, 0.25, 1.0,
];

/// Verification: a cached certificate costs a signature check (tens of
/// microseconds); a fetch waits up to `[stir] deadline_ms` (300 ms by
/// default, hence the bounds around it) and a certificate fetch at most
/// `max(deadline_ms, 2 s)`. The old buckets stopped at 50 ms, so every
/// fetch landed in `+Inf` (issue 15).
const VERIFY_BUCKETS: &[f64] = &[
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.2, 0.3, 0.4,
    0.5, 1.0, 2.5, 5.0,
];

/// Assessment: the policy runs in microseconds; velocity counts on Redis
/// wait up to `[state] timeout_ms` (50 ms by default, at most 5 s).
const ASSESS_BUCKETS: &[f64] = &[
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
    0.1, 0.25, 0.5, 1.0, 5.0,
];

const PHASES: [(Phase, &str, &[f64]); 3] = [
    (Phase::Process, "process", PROCESS_BUCKETS),
    (Phase::Verify, "verify", VERIFY_BUCKETS),
    (Phase::Assess, "assess", ASSESS_BUCKETS),
];

/// The most bounds any phase has.
const MAX_BUCKETS: usize = 18;

/// Observations per bucket (not cumulative), their count and sum.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; MAX_BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, bounds: &[f64], d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = bounds.iter().position(|b| secs <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }
}

/// All counters and gauges of one callgate process.
#[derive(Default)]
pub struct Metrics {
    /// [side][direction][method]
    requests: [[[AtomicU64; METHODS.len()]; 2]; 2],
    /// [side][direction][class 1..=6 → 0..=5]
    responses: [[[AtomicU64; 6]; 2]; 2],
    parse_errors: [AtomicU64; 2],
    refusals: [[AtomicU64; REFUSALS.len()]; 2],
    /// Answers callgate formed but did not send: over the refusal limit.
    answers_suppressed: [AtomicU64; 2],
    transport_errors: [AtomicU64; 2],
    failovers: AtomicU64,
    timeouts: AtomicU64,
    loops: AtomicU64,
    active_server_tx: AtomicI64,
    active_client_tx: AtomicI64,
    targets_up: [AtomicI64; 2],
    tcp_connections: AtomicI64,
    tcp_opened: AtomicU64,
    draining: AtomicI64,
    reloads: AtomicU64,
    /// Reloads refused (the running configuration kept).
    reload_failures: AtomicU64,
    /// The pipeline's dialog table: dialogs held, entries forgotten when full.
    dialogs: AtomicI64,
    dialogs_evicted: AtomicU64,
    /// [passed, failed, no-validation]
    stir: [AtomicU64; 3],
    /// Failed verifications by [`STIR_CAUSES`].
    stir_failures: [AtomicU64; STIR_CAUSES.len()],
    /// Risk decisions: [level low..critical][action tag, review, reject].
    decisions: [[AtomicU64; 3]; 4],
    shadow_disagreements: AtomicU64,
    /// Reason codes of the decisions.
    reasons: super::reason_metrics::ReasonCounts,
    /// Versions of the active and shadow policies, for `callgate_policy_info`.
    policy_versions: std::sync::Mutex<(String, String)>,
    /// Certificate and CRL fetches, shared with the verifier.
    pub stir_fetch: crate::stir::cache::FetchMetrics,
    /// Connections, transaction bytes and audit bytes under their bounds.
    pub exhaustion: super::exhaustion::ExhaustionMetrics,
    /// TLS handshake failures and certificate expiry.
    pub tls: super::tls_metrics::TlsMetrics,
    phases: [Histogram; PHASES.len()],
}

impl Metrics {
    pub fn request(&self, side: Side, dir: Direction, method: Method) {
        self.requests[side.index()][dir as usize][method_index(method)].fetch_add(1, Relaxed);
    }
    pub fn response(&self, side: Side, dir: Direction, status: u16) {
        let class = usize::from((status / 100).clamp(1, 6)) - 1;
        self.responses[side.index()][dir as usize][class].fetch_add(1, Relaxed);
    }
    pub fn parse_error(&self, side: Side) {
        self.parse_errors[side.index()].fetch_add(1, Relaxed);
    }
    pub fn refused(&self, side: Side, why: Refusal) {
        let i = REFUSALS.iter().position(|(r, _)| *r == why).unwrap_or(0);
        self.refusals[side.index()][i].fetch_add(1, Relaxed);
    }
    /// An answer callgate formed was not sent (refusal rate limit).
    pub fn answer_suppressed(&self, side: Side) {
        self.answers_suppressed[side.index()].fetch_add(1, Relaxed);
    }
    pub fn transport_error(&self, side: Side) {
        self.transport_errors[side.index()].fetch_add(1, Relaxed);
    }
    pub fn failover(&self) {
        self.failovers.fetch_add(1, Relaxed);
    }
    pub fn timeout(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }
    pub fn loop_detected(&self) {
        self.loops.fetch_add(1, Relaxed);
    }
    pub fn set_active_transactions(&self, server: usize, client: usize) {
        self.active_server_tx.store(server as i64, Relaxed);
        self.active_client_tx.store(client as i64, Relaxed);
    }
    pub fn set_targets_up(&self, side: Side, up: usize) {
        self.targets_up[side.index()].store(up as i64, Relaxed);
    }
    pub fn tcp_connection_opened(&self) {
        self.tcp_opened.fetch_add(1, Relaxed);
        self.tcp_connections.fetch_add(1, Relaxed);
    }
    pub fn tcp_connection_closed(&self) {
        self.tcp_connections.fetch_sub(1, Relaxed);
    }
    pub fn set_draining(&self, on: bool) {
        self.draining.store(i64::from(on), Relaxed);
    }
    pub fn reloaded(&self) {
        self.reloads.fetch_add(1, Relaxed);
    }
    pub fn reload_failed(&self) {
        self.reload_failures.fetch_add(1, Relaxed);
    }
    /// The dialog table's size and its evictions so far.
    pub fn set_dialogs(&self, held: usize, evicted: u64) {
        self.dialogs
            .store(i64::try_from(held).unwrap_or(i64::MAX), Relaxed);
        self.dialogs_evicted.store(evicted, Relaxed);
    }
    /// One risk decision (level index 0–3, action index 0 tag, 1 review,
    /// 2 reject) and whether the shadow policy disagreed.
    pub fn decision(&self, level: usize, action: usize, shadow_disagrees: bool) {
        if let Some(c) = self.decisions.get(level).and_then(|l| l.get(action)) {
            c.fetch_add(1, Relaxed);
        }
        if shadow_disagrees {
            self.shadow_disagreements.fetch_add(1, Relaxed);
        }
    }
    /// The reason codes of one risk decision.
    pub fn decision_reasons<'a>(&self, reasons: impl Iterator<Item = &'a str>) {
        self.reasons.count(reasons);
    }
    /// The policy versions now in force (empty: none).
    pub fn set_policy_versions(&self, active: &str, shadow: &str) {
        *self
            .policy_versions
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = (active.to_owned(), shadow.to_owned());
    }
    /// One STIR verification result: 0 passed, 1 failed, 2 no-validation.
    pub fn stir_result(&self, index: usize) {
        if let Some(c) = self.stir.get(index) {
            c.fetch_add(1, Relaxed);
        }
    }
    /// The cause of one failed STIR verification.
    pub fn stir_failure(&self, cause: Cause) {
        if let Some(i) = STIR_CAUSES.iter().position(|(c, _)| *c == cause) {
            self.stir_failures[i].fetch_add(1, Relaxed);
        }
    }
    pub fn observe(&self, phase: Phase, d: Duration) {
        let i = PHASES.iter().position(|(p, ..)| *p == phase).unwrap_or(0);
        self.phases[i].observe(PHASES[i].2, d);
    }

    /// Live server transactions (for overload decisions and tests).
    pub fn active_server_transactions(&self) -> i64 {
        self.active_server_tx.load(Relaxed)
    }
    pub fn parse_error_count(&self, side: Side) -> u64 {
        self.parse_errors[side.index()].load(Relaxed)
    }

    /// Prometheus text exposition of these families alone (tests, `callgate
    /// demo`); the admin API encodes them with every other part.
    pub fn render(self: &Arc<Self>) -> String {
        exposition::text_of(self.clone())
    }
}

impl Exposed for Metrics {
    fn encode(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let dirs = [(Direction::In, "in"), (Direction::Out, "out")];
        let mut f = counter(
            e,
            "callgate_sip_requests_total",
            "SIP requests by side, direction and method.",
        )?;
        for side in SIDES {
            for (dir, dname) in dirs {
                for m in METHODS {
                    let v =
                        self.requests[side.index()][dir as usize][method_index(m)].load(Relaxed);
                    if v > 0 {
                        let labels = [
                            ("side", side.as_str()),
                            ("direction", dname),
                            ("method", m.as_str()),
                        ];
                        f.counter(&labels, v)?;
                    }
                }
            }
        }
        let mut f = counter(
            e,
            "callgate_sip_responses_total",
            "SIP responses by side, direction and status class.",
        )?;
        for side in SIDES {
            for (dir, dname) in dirs {
                for (class, cname) in ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"]
                    .iter()
                    .enumerate()
                {
                    let v = self.responses[side.index()][dir as usize][class].load(Relaxed);
                    if v > 0 {
                        let labels = [
                            ("side", side.as_str()),
                            ("direction", dname),
                            ("class", cname),
                        ];
                        f.counter(&labels, v)?;
                    }
                }
            }
        }
        let mut f = counter(
            e,
            "callgate_sip_parse_errors_total",
            "Messages that could not be parsed or failed validation.",
        )?;
        for side in SIDES {
            f.counter(
                &[("side", side.as_str())],
                self.parse_errors[side.index()].load(Relaxed),
            )?;
        }
        let mut f = counter(
            e,
            "callgate_admission_refusals_total",
            "Requests refused before processing.",
        )?;
        for side in SIDES {
            for (i, (_, name)) in REFUSALS.iter().enumerate() {
                let labels = [("side", side.as_str()), ("reason", name)];
                f.counter(&labels, self.refusals[side.index()][i].load(Relaxed))?;
            }
        }
        let mut f = counter(
            e,
            "callgate_local_answers_suppressed_total",
            "Answers callgate formed itself but did not send: over refusals_per_source or refusals_total.",
        )?;
        for side in SIDES {
            f.counter(
                &[("side", side.as_str())],
                self.answers_suppressed[side.index()].load(Relaxed),
            )?;
        }
        let mut f = counter(
            e,
            "callgate_transport_errors_total",
            "Failed sends or connects.",
        )?;
        for side in SIDES {
            f.counter(
                &[("side", side.as_str())],
                self.transport_errors[side.index()].load(Relaxed),
            )?;
        }
        for (name, help, v) in [
            ("callgate_tcp_connections_opened_total", "TCP/TLS connections opened, inbound and outbound.", &self.tcp_opened),
            ("callgate_failovers_total", "Requests retried on the next target.", &self.failovers),
            ("callgate_transaction_timeouts_total", "Client transactions that timed out (Timer B/F/C).", &self.timeouts),
            ("callgate_loops_detected_total", "Requests refused with 482 Loop Detected.", &self.loops),
            ("callgate_config_reloads_total", "Successful configuration reloads.", &self.reloads),
            ("callgate_config_reload_failures_total", "Reloads refused (SIGHUP or POST /reload); the running configuration was kept.", &self.reload_failures),
            ("callgate_dialogs_evicted_total", "Dialogs and pending requests forgotten because the table was full ([limits] max_dialogs).", &self.dialogs_evicted),
        ] {
            one_counter(e, name, help, v.load(Relaxed))?;
        }
        for (name, help, v) in [
            (
                "callgate_server_transactions",
                "Live server transactions.",
                &self.active_server_tx,
            ),
            (
                "callgate_client_transactions",
                "Live client transactions.",
                &self.active_client_tx,
            ),
            (
                "callgate_tcp_connections",
                "Open TCP/TLS connections.",
                &self.tcp_connections,
            ),
            (
                "callgate_draining",
                "1 while draining for shutdown.",
                &self.draining,
            ),
            (
                "callgate_dialogs",
                "Dialogs callgate record-routed and knows (the classify phase's table).",
                &self.dialogs,
            ),
        ] {
            one_gauge(e, name, help, v.load(Relaxed))?;
        }
        one_gauge(e, "callgate_up", "Always 1 while the process serves.", 1)?;
        let mut f = counter(
            e,
            "callgate_stir_verifications_total",
            "STIR/SHAKEN verifications of inbound INVITEs by result.",
        )?;
        for (i, name) in ["passed", "failed", "no-validation"].iter().enumerate() {
            f.counter(&[("status", name)], self.stir[i].load(Relaxed))?;
        }
        let mut f = counter(
            e,
            "callgate_stir_failures_total",
            "Failed STIR/SHAKEN verifications by cause (the RFC 8224 response code's meaning); a no-validation result's cause shows in callgate_stir_fetches_total.",
        )?;
        for (i, (_, name)) in STIR_CAUSES.iter().enumerate() {
            f.counter(&[("cause", name)], self.stir_failures[i].load(Relaxed))?;
        }
        let mut f = counter(
            e,
            "callgate_decisions_total",
            "Risk decisions on inbound calls by level and action.",
        )?;
        for (li, level) in ["low", "medium", "high", "critical"].iter().enumerate() {
            for (ai, action) in ["tag", "review", "reject"].iter().enumerate() {
                let labels = [("level", *level), ("action", *action)];
                f.counter(&labels, self.decisions[li][ai].load(Relaxed))?;
            }
        }
        self.reasons.encode(e)?;
        one_counter(
            e,
            "callgate_shadow_disagreements_total",
            "Calls the shadow policy would have given another level or action.",
            self.shadow_disagreements.load(Relaxed),
        )?;
        {
            let v = self
                .policy_versions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !v.0.is_empty() {
                // The versions are the operator's strings: the encoder
                // escapes them (a `"` once broke the whole scrape).
                info(
                    e,
                    "callgate_policy_info",
                    "The risk policy versions in force.",
                )?
                .info(&[("version", v.0.as_str()), ("shadow", v.1.as_str())])?;
            }
        }
        self.stir_fetch.encode(e)?;
        let mut f = gauge(
            e,
            "callgate_targets_up",
            "Next-hop targets in rotation, by side they are reached through.",
        )?;
        for side in SIDES {
            f.gauge(
                &[("side", side.as_str())],
                self.targets_up[side.index()].load(Relaxed),
            )?;
        }
        let mut f = histogram(
            e,
            "callgate_phase_seconds",
            "Time spent per phase for one message; each phase's buckets reach past its deadline.",
        )?;
        for (i, (_, name, bounds)) in PHASES.iter().enumerate() {
            let h = &self.phases[i];
            let buckets: Vec<(f64, u64)> = bounds
                .iter()
                .zip(&h.buckets)
                .map(|(b, n)| (*b, n.load(Relaxed)))
                .collect();
            let sum = h.sum_ns.load(Relaxed) as f64 / 1e9;
            f.histogram(&[("phase", name)], sum, h.count.load(Relaxed), &buckets)?;
        }
        self.exhaustion.encode(e)?;
        self.tls.encode(e)?;
        Ok(())
    }
}

/// The proxy core's counters land in the same atomics as the edge's.
impl CoreObserver for Metrics {
    fn request(&self, side: Side, dir: Direction, method: Method) {
        Metrics::request(self, side, dir, method);
    }
    fn response(&self, side: Side, dir: Direction, status: u16) {
        Metrics::response(self, side, dir, status);
    }
    fn parse_error(&self, side: Side) {
        Metrics::parse_error(self, side);
    }
    fn refused(&self, side: Side, why: CoreRefusal) {
        Metrics::refused(self, side, why.into());
    }
    fn transport_error(&self, side: Side) {
        Metrics::transport_error(self, side);
    }
    fn failover(&self) {
        Metrics::failover(self);
    }
    fn timeout(&self) {
        Metrics::timeout(self);
    }
    fn loop_detected(&self) {
        Metrics::loop_detected(self);
    }
    fn set_active_transactions(&self, server: usize, client: usize) {
        Metrics::set_active_transactions(self, server, client);
    }
    fn set_transaction_bytes(&self, bytes: usize) {
        self.exhaustion.set_transaction_bytes(bytes);
    }
    fn set_targets_up(&self, side: Side, up: usize) {
        Metrics::set_targets_up(self, side, up);
    }
    fn set_draining(&self, on: bool) {
        Metrics::set_draining(self, on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_with_labels() {
        let m = Arc::new(Metrics::default());
        m.request(Side::Trunk, Direction::In, Method::Invite);
        m.response(Side::Pbx, Direction::Out, 487);
        m.observe(Phase::Process, Duration::from_micros(7));
        let text = m.render();
        assert!(text.contains(
            "callgate_sip_requests_total{side=\"trunk\",direction=\"in\",method=\"INVITE\"} 1"
        ));
        assert!(text.contains(
            "callgate_sip_responses_total{side=\"pbx\",direction=\"out\",class=\"4xx\"} 1"
        ));
        assert!(text.contains("callgate_phase_seconds_bucket{phase=\"process\",le=\"1e-05\"} 1"));
        assert!(text.contains("callgate_phase_seconds_count{phase=\"process\"} 1"));
    }

    /// Issue 15: a `"`, `\` or newline in a policy version broke the
    /// whole scrape; the encoder escapes them.
    #[test]
    fn a_policy_version_is_escaped_in_its_label() {
        let m = Arc::new(Metrics::default());
        m.set_policy_versions("v\"1\\2\nthree", "shadow\"x");
        let text = m.render();
        assert!(
            text.lines()
                .any(|l| l
                    == r#"callgate_policy_info{version="v\"1\\2\nthree",shadow="shadow\"x"} 1"#),
            "{text}"
        );
    }

    /// Issue 15: the buckets stopped at 50 ms while verification waits up
    /// to the 300 ms deadline; a certificate fetch of 350 ms is now in a
    /// bucket of its own, not only in `+Inf`.
    #[test]
    fn verification_buckets_reach_past_the_deadline() {
        let m = Arc::new(Metrics::default());
        m.observe(Phase::Verify, Duration::from_millis(350));
        m.observe(Phase::Verify, Duration::from_millis(80));
        let text = m.render();
        for line in [
            r#"callgate_phase_seconds_bucket{phase="verify",le="0.05"} 0"#,
            r#"callgate_phase_seconds_bucket{phase="verify",le="0.1"} 1"#,
            r#"callgate_phase_seconds_bucket{phase="verify",le="0.3"} 1"#,
            r#"callgate_phase_seconds_bucket{phase="verify",le="0.4"} 2"#,
            r#"callgate_phase_seconds_bucket{phase="verify",le="5"} 2"#,
            r#"callgate_phase_seconds_bucket{phase="verify",le="+Inf"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(PHASES.iter().all(|(_, _, b)| b.len() <= MAX_BUCKETS));
    }

    #[test]
    fn the_cores_reports_render_under_their_names() {
        let m = Arc::new(Metrics::default());
        let core: &dyn CoreObserver = &*m;
        core.refused(Side::Trunk, CoreRefusal::Overload);
        core.refused(Side::Pbx, CoreRefusal::Draining);
        core.failover();
        core.parse_error(Side::Trunk);
        let text = m.render();
        assert!(text
            .contains("callgate_admission_refusals_total{side=\"trunk\",reason=\"overload\"} 1"));
        assert!(
            text.contains("callgate_admission_refusals_total{side=\"pbx\",reason=\"draining\"} 1")
        );
        assert!(text.contains("callgate_failovers_total 1"));
        assert_eq!(m.parse_error_count(Side::Trunk), 1);
    }
}
