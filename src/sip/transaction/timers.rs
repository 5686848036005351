//! The RFC 3261 §17 timer base values (T1, T2, T4) every transaction runs
//! on, and Timer C of the proxy (§16.6 step 11).

use std::time::Duration;

/// RFC 3261 §17 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    pub timer_c: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_millis(4000),
            t4: Duration::from_millis(5000),
            timer_c: Duration::from_secs(180),
        }
    }
}
