//! What every log line carries, on whichever thread it is written.
//!
//! The signalling thread runs inside the `callgate{instance=…}` span
//! (`commands/run.rs`), so its lines name the instance. Threads spawned
//! for the audit writer, the events, the media relay and signature
//! checks, and the blocking pool the admin API and reloads use, start
//! with no span: [`in_current_span`] hands them the spawner's.

/// `f`, to run on another thread inside the span current here (the
/// instance's, and any the caller is in).
pub fn in_current_span<T>(f: impl FnOnce() -> T) -> impl FnOnce() -> T {
    let span = tracing::Span::current();
    move || span.in_scope(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_thread_runs_inside_the_spawners_span() {
        // As in `callgate run`, every thread logs to the one subscriber.
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry());
        let name = || tracing::Span::current().metadata().map(|m| m.name());
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::error_span!("callgate", instance = "cg-a");
            let _entered = span.enter();
            let on_thread = |work: Box<dyn FnOnce() -> Option<&'static str> + Send>| {
                let d = dispatch.clone();
                std::thread::spawn(move || tracing::dispatcher::with_default(&d, work))
                    .join()
                    .ok()
                    .flatten()
            };
            let inside = on_thread(Box::new(in_current_span(name)));
            let bare = on_thread(Box::new(name));
            assert_eq!((inside, bare), (Some("callgate"), None));
        });
    }
}
