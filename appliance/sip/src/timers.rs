//! RFC 3261 timer values. Everything else (G, H, I, J, E, F, K, L) derives from T1, T2 and T4.

use std::time::Duration;

/// The base timers of RFC 3261 §17 (Table 4). Defaults: T1 = 500 ms, T2 = 4 s, T4 = 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// Round-trip estimate; first retransmission interval.
    pub t1: Duration,
    /// Retransmission interval cap for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Maximum time a message stays in the network.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64 × T1: Timer B/F/H/J/L (transaction timeout), 32 s with the defaults.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// The next retransmission interval: double, capped at T2.
    pub fn next_interval(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.t2)
    }
}
