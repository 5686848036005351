//! Changes of the running service's state: reload of the configuration
//! (SIGHUP or the admin API) without dropping calls, readiness and drain
//! (new INVITEs refused with 503, pending ones finish), and the run until
//! SIGTERM/SIGINT with the audit flushed at exit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lock, Gate, Phases, Running};
use crate::config::{Config, Side};
use crate::sip::proxy::CoreSettings;

/// Held by a reload and by a number added to a policy list
/// (`lists.rs`): one change of the phases at a time, so neither swaps in
/// phases built before the other's.
pub(super) static POLICY_CHANGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Gate {
    pub fn is_ready(&self) -> bool {
        !self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts draining for exit: readiness off, new INVITEs refused with
    /// 503; the operator cannot undo it.
    pub fn start_drain(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.drain_by_operator();
    }

    /// Drains without exiting (`ctl drain`): readiness off, new INVITEs
    /// refused with 503 + Retry-After, established calls go on.
    pub fn drain_by_operator(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        lock(&self.core).start_drain();
    }

    /// Ends the operator's drain (`ctl undrain`): ready, new INVITEs taken.
    /// The caller checks that the process is not shutting down.
    pub fn undrain_by_operator(&self) {
        lock(&self.core).stop_drain();
        self.draining
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_drained(&self) -> bool {
        lock(&self.core).is_drained()
    }

    /// Re-reads the configuration file and applies what can change without
    /// dropping calls: ACLs, rate limits, targets, timers, limits, health
    /// checks, all of `[stir]` (trust anchors, CRLs, policies, signing
    /// key; fetched certificates are kept) and each side's TLS files
    /// (certificate, key, CAs: new handshakes use them, established
    /// connections keep theirs). Listener addresses need a restart. A
    /// configuration that does not load (an expired certificate, a key
    /// that does not match it) changes nothing.
    ///
    /// Blocking (files are read and compiled): callers run it on a
    /// blocking thread. Reloads are serialised, so two at once (SIGHUP and
    /// the API) cannot interleave their swaps.
    ///
    /// A refused reload (a broken file, a policy that does not compile)
    /// changes nothing: it is logged and counted
    /// (`callgate_config_reload_failures_total`), so an operator whose
    /// SIGHUP went unheeded sees it, not only the caller of the API.
    ///
    /// The service manager is told (sd_notify `RELOADING=1`, then
    /// `READY=1` with the outcome in `STATUS=`), and the outcome is
    /// recorded for `callgate reload --pid` ([`super::reload_status`]).
    pub fn reload(&self) -> Result<(), String> {
        self.reload_and_report().map(|_| ())
    }

    /// [`Gate::reload`], saying what changed since the last load: the
    /// configuration keys and the policy versions (`control.rs`).
    pub fn reload_and_report(&self) -> Result<crate::api::operations::ReloadView, String> {
        let _one = lock(&POLICY_CHANGES);
        super::notify::reloading();
        let applied = self.apply_reload();
        if let Err(e) = &applied {
            self.metrics.reload_failed();
            tracing::error!(error = %e, "reload failed; keeping the running configuration");
        }
        super::reload_status::record(&applied);
        super::notify::reloaded(&applied);
        applied?;
        let after = self.snapshot();
        let mut loaded = lock(&self.loaded);
        let report = Gate::report(&loaded, &after);
        *loaded = after;
        Ok(report)
    }

    /// [`Gate::reload`]'s work: everything fallible before the first swap.
    fn apply_reload(&self) -> Result<(), String> {
        let Some(path) = &self.config_path else {
            return Err("running on the embedded configuration: nothing to reload".to_owned());
        };
        let cfg = Config::load(path).map_err(|e| e.to_string())?;
        // Everything fallible first: a bad [stir] keeps the running config.
        if cfg.state != self.state_config {
            tracing::warn!("[state] changed: it takes effect at the next restart");
        }
        if cfg.media != self.media_config {
            tracing::warn!("[media] changed: it takes effect at the next restart");
        }
        if cfg.events.as_ref() != self.events.as_ref().map(crate::events::Events::config) {
            tracing::warn!("[events] changed: it takes effect at the next restart");
        }
        let running_threads = self.offload.as_ref().map_or(0, |p| p.threads());
        if cfg.stir.verify_threads != running_threads {
            tracing::warn!(
                running = running_threads,
                configured = cfg.stir.verify_threads,
                "stir.verify_threads changed: it takes effect at the next restart"
            );
        }
        let phases = Phases::from_config(
            &cfg,
            &self.phases(),
            &self.metrics,
            &self.state,
            self.offload.as_ref(),
        )?;
        *self.phases.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(phases);
        self.reload_tls(&cfg);
        if &cfg.dns != self.dns.config() {
            tracing::warn!("[dns] changed: it takes effect at the next restart");
        }
        // The ACLs (admission, kernel filter, media) and the targets, with
        // the host names resolved so far (new names in the background).
        let mut settings = CoreSettings::from_config(&cfg);
        settings.sides = self.reload_sides(&cfg);
        lock(&self.core).reload(settings);
        self.metrics.reloaded();
        tracing::info!(path = %path.display(), "configuration reloaded");
        Ok(())
    }
}

impl Gate {
    /// Puts each side's newly loaded TLS in force for new handshakes.
    fn reload_tls(&self, cfg: &Config) {
        for side in [Side::Trunk, Side::Pbx] {
            let mut new = cfg.side(side).tls_context.clone();
            let mut slot = self.tls[side.index()]
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if new.acceptor.is_none() && slot.acceptor.is_some() {
                // The listener stays bound until a restart: it keeps
                // serving with the certificate it has.
                tracing::warn!(
                    side = side.as_str(),
                    "tls removed from the configuration: the TLS listener keeps its certificate until the next restart"
                );
                new.acceptor = slot.acceptor.clone();
                new.not_after = slot.not_after;
                new.fingerprint = slot.fingerprint.clone();
            }
            if new.fingerprint != slot.fingerprint {
                tracing::info!(
                    side = side.as_str(),
                    fingerprint = new.fingerprint.as_deref().unwrap_or("none"),
                    not_after = %new.not_after.map(crate::sip::transport::tls::files::utc).unwrap_or_default(),
                    "TLS certificate reloaded: new handshakes use it"
                );
            }
            self.metrics.tls.set_not_after(side, new.not_after);
            *slot = Arc::new(new);
        }
    }
}

impl Running {
    /// Runs until SIGTERM/SIGINT, then drains (new INVITEs get 503, pending
    /// ones finish) for at most `drain`. SIGHUP reloads the configuration.
    pub async fn until_shutdown(self, drain: Duration) {
        let gate = self.gate;
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        // Off the runtime that carries signalling (reading
                        // policy, trust anchors and CRLs blocks).
                        let g = gate.clone();
                        match tokio::task::spawn_blocking(crate::logs::in_current_span(move || g.reload())).await {
                            // A refusal is logged and counted by the reload.
                            Ok(_) => {}
                            Err(e) => tracing::error!(error = %e, "reload task failed; keeping the running configuration"),
                        }
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!(deadline_secs = drain.as_secs(), "draining");
        super::notify::stopping();
        gate.start_drain();
        let deadline = Instant::now() + drain;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while Instant::now() < deadline && !gate.is_drained() {
            tick.tick().await;
        }
        if gate.is_drained() {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!("drain deadline reached with transactions pending; exiting");
        }
        // Every decision recorded so far is acknowledged before exit.
        if let Some(audit) = &gate.audit {
            if audit.flush(Duration::from_secs(5)) {
                tracing::info!("audit flushed");
            } else {
                tracing::error!("audit not fully flushed at exit");
            }
        }
    }
}
