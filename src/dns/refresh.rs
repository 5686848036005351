//! The resolved targets of both sides, kept fresh in the background: each
//! host name is resolved again when the smallest TTL of its answer runs
//! out (held between `[dns] ttl_floor_secs` and `ttl_ceiling_secs`), by one
//! task on the runtime, never on a call's path. When a lookup fails (the
//! servers do not answer, SERVFAIL, the name vanished) the last good
//! answer stays in force and the lookup is retried after the floor: a DNS
//! outage never takes a PBX out of rotation (the OPTIONS probes judge the
//! addresses themselves). Every change of a side's addresses is handed to
//! the caller's `on_change`, which puts them into the proxy core and the
//! side's ACL.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use super::lookup::{Answer, Lookup};
use super::spec::TargetSpec;
use super::{DnsConfig, DnsError};
use crate::sip::proxy::Target;
use crate::sip::side::Side;

const SIDES: [Side; 2] = [Side::Trunk, Side::Pbx];

/// One configured target and what the DNS last said of it.
#[derive(Debug)]
struct Entry {
    spec: TargetSpec,
    /// The last good answer (kept when a later lookup fails).
    answer: Option<Answer>,
    /// When to ask again (host names only).
    due: Instant,
    /// The last lookup failed: `answer`, if any, is older than its TTL.
    stale: bool,
}

impl Entry {
    fn new(spec: TargetSpec, now: Instant) -> Entry {
        Entry {
            spec,
            answer: None,
            due: now,
            stale: false,
        }
    }

    fn targets(&self, out: &mut Vec<Target>) {
        if let Some(t) = self.spec.literal() {
            out.push(t);
        } else if let Some(a) = &self.answer {
            out.extend(a.addrs.iter().map(|addr| self.spec.at(*addr)));
        }
    }
}

/// Both sides' configured targets, their answers, and the resolver.
pub struct TargetResolver {
    cfg: DnsConfig,
    /// Built on first need: a configuration of IP literals never reads
    /// /etc/resolv.conf.
    lookup: tokio::sync::OnceCell<Result<Lookup, DnsError>>,
    sides: Mutex<[Vec<Entry>; 2]>,
    wake: Notify,
    pub(super) lookups_ok: AtomicU64,
    pub(super) lookups_failed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A side's state at scrape time.
pub(super) struct SideCounts {
    pub addresses: usize,
    pub stale: usize,
    pub unresolved: usize,
}

impl TargetResolver {
    /// A resolver for `specs` (indexed by [`Side::index`]); nothing is
    /// resolved until [`TargetResolver::resolve_due`] or the task runs.
    pub fn new(cfg: DnsConfig, specs: [Vec<TargetSpec>; 2]) -> Arc<TargetResolver> {
        let now = Instant::now();
        let [trunk, pbx] = specs;
        let entries = |v: Vec<TargetSpec>| v.into_iter().map(|s| Entry::new(s, now)).collect();
        Arc::new(TargetResolver {
            cfg,
            lookup: tokio::sync::OnceCell::new(),
            sides: Mutex::new([entries(trunk), entries(pbx)]),
            wake: Notify::new(),
            lookups_ok: AtomicU64::new(0),
            lookups_failed: AtomicU64::new(0),
        })
    }

    /// The `[dns]` settings it runs with (read at start).
    pub fn config(&self) -> &DnsConfig {
        &self.cfg
    }

    /// `side`'s targets now: the configured order, each host name
    /// expanded into the addresses of its last good answer (none before
    /// the first).
    pub fn targets(&self, side: Side) -> Vec<Target> {
        let sides = lock(&self.sides);
        let mut out = Vec::new();
        for e in &sides[side.index()] {
            e.targets(&mut out);
        }
        // Two names for one address make one target: a second attempt at
        // the same peer would fail the same way.
        let mut seen = std::collections::HashSet::new();
        out.retain(|t| seen.insert((t.addr, t.transport)));
        out
    }

    /// The identity a TLS target of `side` at `addr` must prove: the host
    /// name of the URI it was resolved from (RFC 5922 §4.1: the domain of
    /// the SIP URI, not the SRV target's name), or `None` for an address
    /// written as such.
    pub fn tls_name(&self, side: Side, addr: std::net::SocketAddr) -> Option<String> {
        let sides = lock(&self.sides);
        sides[side.index()]
            .iter()
            .find_map(|e| match (&e.spec.host, &e.answer) {
                (super::spec::Host::Name(name), Some(a)) if a.addrs.contains(&addr) => {
                    Some(name.clone())
                }
                _ => None,
            })
    }

    /// Whether any target of either side is a host name.
    pub fn has_names(&self) -> bool {
        lock(&self.sides).iter().flatten().any(|e| e.spec.is_name())
    }

    /// A reload's targets: answers are kept for the targets still
    /// configured, new host names are resolved at once by the task.
    pub fn set_specs(&self, specs: [Vec<TargetSpec>; 2]) {
        let now = Instant::now();
        {
            let mut sides = lock(&self.sides);
            for (i, new) in specs.into_iter().enumerate() {
                let mut old = std::mem::take(&mut sides[i]);
                sides[i] = new
                    .into_iter()
                    .map(|spec| match old.iter().position(|e| e.spec == spec) {
                        Some(j) => old.swap_remove(j),
                        None => Entry::new(spec, now),
                    })
                    .collect();
            }
        }
        self.wake.notify_one();
    }

    pub(super) fn counts(&self, side: Side) -> SideCounts {
        let addresses = self.targets(side).len();
        let sides = lock(&self.sides);
        let names = sides[side.index()].iter().filter(|e| e.spec.is_name());
        SideCounts {
            addresses,
            stale: names
                .clone()
                .filter(|e| e.stale && e.answer.is_some())
                .count(),
            unresolved: names.filter(|e| e.answer.is_none()).count(),
        }
    }

    /// Resolves every host name whose answer is due at `now`; returns the
    /// sides whose targets changed.
    pub async fn resolve_due(&self, rng: &mut fastrand::Rng) -> [bool; 2] {
        let now = Instant::now();
        let due: Vec<(usize, TargetSpec)> = {
            let sides = lock(&self.sides);
            sides
                .iter()
                .enumerate()
                .flat_map(|(i, v)| {
                    v.iter()
                        .filter(|e| e.spec.is_name() && e.due <= now)
                        .map(move |e| (i, e.spec.clone()))
                })
                .collect()
        };
        let mut changed = [false; 2];
        if due.is_empty() {
            return changed;
        }
        let lookup = self
            .lookup
            .get_or_init(|| async { Lookup::new(&self.cfg) })
            .await;
        for (side, spec) in due {
            let result = match lookup {
                Ok(l) => l.resolve(&spec, rng).await,
                Err(e) => Err(e.clone()),
            };
            if self.record(side, &spec, result) {
                changed[side] = true;
            }
        }
        changed
    }

    /// Puts a lookup's result into the entry of `spec` (if it is still
    /// configured); true if the side's addresses changed.
    fn record(&self, side: usize, spec: &TargetSpec, result: Result<Answer, DnsError>) -> bool {
        let now = Instant::now();
        let mut sides = lock(&self.sides);
        let Some(e) = sides[side].iter_mut().find(|e| &e.spec == spec) else {
            return false;
        };
        let side_name = SIDES[side].as_str();
        match result {
            Ok(answer) => {
                self.lookups_ok.fetch_add(1, Relaxed);
                let ttl = answer.ttl.clamp(self.cfg.ttl_floor, self.cfg.ttl_ceiling);
                e.due = now + ttl;
                let changed = e.answer.as_ref().map(|a| &a.addrs) != Some(&answer.addrs);
                if changed {
                    tracing::info!(
                        side = side_name,
                        target = %spec.uri,
                        addresses = ?answer.addrs,
                        srv = answer.srv,
                        ttl_secs = ttl.as_secs(),
                        "DNS: target resolved to new addresses"
                    );
                } else if e.stale {
                    tracing::info!(side = side_name, target = %spec.uri, "DNS answers again: the target's addresses are fresh");
                }
                e.answer = Some(answer);
                e.stale = false;
                changed
            }
            Err(err) => {
                self.lookups_failed.fetch_add(1, Relaxed);
                e.due = now + self.cfg.ttl_floor;
                e.stale = true;
                match &e.answer {
                    Some(a) => tracing::warn!(
                        side = side_name,
                        target = %spec.uri,
                        error = %err,
                        kept = ?a.addrs,
                        retry_secs = self.cfg.ttl_floor.as_secs(),
                        "DNS lookup failed: keeping the last good answer"
                    ),
                    None => tracing::error!(
                        side = side_name,
                        target = %spec.uri,
                        error = %err,
                        retry_secs = self.cfg.ttl_floor.as_secs(),
                        "DNS lookup failed and there is no earlier answer: the target has no address"
                    ),
                }
                false
            }
        }
    }

    /// When the next answer falls due, if any target is a host name.
    fn next_due(&self) -> Option<Instant> {
        lock(&self.sides)
            .iter()
            .flatten()
            .filter(|e| e.spec.is_name())
            .map(|e| e.due)
            .min()
    }

    /// Runs the refresh on the current runtime until the resolver is
    /// dropped elsewhere: sleeps until the next answer is due (or a reload
    /// wakes it), resolves what is due, and hands each side whose
    /// addresses changed to `on_change` with its new targets.
    pub fn spawn(
        self: &Arc<Self>,
        on_change: impl Fn(Side, Vec<Target>) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::new();
            loop {
                let next = me.next_due();
                let wait = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = wait => {}
                    () = me.wake.notified() => {}
                }
                let changed = me.resolve_due(&mut rng).await;
                for side in SIDES {
                    if changed[side.index()] {
                        on_change(side, me.targets(side));
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::spec::Host;
    use crate::sip::side::Transport;
    use std::time::Duration;

    fn spec(uri: &str, host: Host) -> TargetSpec {
        TargetSpec {
            uri: uri.into(),
            host,
            port: None,
            transport: Transport::Udp,
        }
    }

    fn answer(ports: &[u16], ttl: u64) -> Answer {
        Answer {
            addrs: ports.iter().map(|p| ([192, 0, 2, 1], *p).into()).collect(),
            ttl: Duration::from_secs(ttl),
            srv: true,
        }
    }

    fn ports(r: &TargetResolver) -> Vec<u16> {
        r.targets(Side::Pbx).iter().map(|t| t.addr.port()).collect()
    }

    #[test]
    fn answers_expand_in_order_the_last_good_one_outlives_a_failure_and_a_reload() {
        let name = spec("sip:pbx.example.com", Host::Name("pbx.example.com".into()));
        let ip = TargetSpec {
            port: Some(9),
            ..spec("sip:192.0.2.1:9", Host::Ip([192, 0, 2, 1].into()))
        };
        let cfg = DnsConfig {
            ttl_floor: Duration::from_secs(5),
            ttl_ceiling: Duration::from_secs(60),
            ..DnsConfig::default()
        };
        let r = TargetResolver::new(cfg, [vec![], vec![name.clone(), ip.clone()]]);
        assert_eq!(
            ports(&r),
            [9],
            "a name without an answer has no address yet"
        );
        assert_eq!(r.counts(Side::Pbx).unresolved, 1);
        let before = Instant::now();
        assert!(r.record(1, &name, Ok(answer(&[5060, 5070, 9], 0))));
        assert_eq!(ports(&r), [5060, 5070, 9], "one address once, in SRV order");
        let due = r.next_due().unwrap_or(before);
        assert!(
            due >= before + Duration::from_secs(5),
            "a TTL of 0 waits the floor"
        );
        assert!(
            !r.record(1, &name, Ok(answer(&[5060, 5070, 9], 3600))),
            "same answer"
        );
        assert!(r.next_due().unwrap_or(before) <= Instant::now() + Duration::from_secs(60));

        let failure = DnsError::Lookup {
            query: "_sip._udp.pbx.example.com SRV".into(),
            reason: "timed out".into(),
        };
        assert!(!r.record(1, &name, Err(failure)));
        assert_eq!(ports(&r), [5060, 5070, 9], "the last good answer stays");
        let c = r.counts(Side::Pbx);
        assert_eq!((c.stale, c.unresolved, c.addresses), (1, 0, 3));
        assert_eq!(r.lookups_failed.load(Relaxed), 1);

        // A reload that keeps the name keeps its answer; a new name waits.
        let other = spec(
            "sip:pbx2.example.com",
            Host::Name("pbx2.example.com".into()),
        );
        r.set_specs([vec![other.clone()], vec![ip, name.clone()]]);
        assert_eq!(ports(&r), [9, 5060, 5070]);
        assert!(r.targets(Side::Trunk).is_empty());
        assert!(
            r.next_due().unwrap_or(before) <= Instant::now(),
            "the new name is due now"
        );
        assert!(
            !r.record(0, &name, Ok(answer(&[1], 5))),
            "not a trunk target"
        );
    }
}
