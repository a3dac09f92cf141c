//! The service manager: sd_notify through libsystemd (`READY=1`, `STATUS=`, `STOPPING=1`, `WATCHDOG=1`).
//! Without `NOTIFY_SOCKET` (not started by systemd) every notification is a no-op.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use airlock_runtime::Supervisor;

/// systemd as the runtime's [`Supervisor`].
#[derive(Debug)]
pub struct Systemd {
    keepalive: Option<Duration>,
    /// A failed notification is logged once, not at every keep-alive.
    reported_failure: AtomicBool,
}

impl Systemd {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`, which must name this process) through libsystemd.
    pub fn from_environment() -> Systemd {
        let watchdog_usec = systemd::daemon::watchdog_enabled().unwrap_or(0);
        Systemd {
            keepalive: keepalive_interval(watchdog_usec),
            reported_failure: AtomicBool::new(false),
        }
    }

    fn notify(&self, state: &[(&str, &str)]) {
        let state: Vec<(&str, String)> = state
            .iter()
            .map(|&(key, value)| (key, single_line(value)))
            .collect();
        if let Err(error) = systemd::daemon::notify(state.iter())
            && !self.reported_failure.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(%error, "cannot notify systemd");
        }
    }
}

impl Supervisor for Systemd {
    fn ready(&self, status: &str) {
        self.notify(&[("READY", "1"), ("STATUS", status)]);
    }

    fn status(&self, status: &str) {
        self.notify(&[("STATUS", status)]);
    }

    fn stopping(&self, status: &str) {
        self.notify(&[("STOPPING", "1"), ("STATUS", status)]);
    }

    fn alive(&self) {
        self.notify(&[("WATCHDOG", "1")]);
    }

    fn keepalive_interval(&self) -> Option<Duration> {
        self.keepalive
    }
}

/// Keep-alives are due at half the watchdog timeout; none when the watchdog is off (0).
fn keepalive_interval(watchdog_usec: u64) -> Option<Duration> {
    (watchdog_usec > 0).then(|| Duration::from_micros(watchdog_usec / 2))
}

/// A notification is `KEY=VALUE` lines: a line break (or NUL) inside a value would start another key.
fn single_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if matches!(c, '\n' | '\r' | '\0') { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalives_are_due_at_half_the_watchdog_timeout() {
        assert_eq!(keepalive_interval(0), None);
        assert_eq!(keepalive_interval(2_000_000), Some(Duration::from_secs(1)));
        assert_eq!(keepalive_interval(30_000_000), Some(Duration::from_secs(15)));
    }

    #[test]
    fn values_cannot_inject_another_key() {
        assert_eq!(
            single_line("recording; 3 active calls"),
            "recording; 3 active calls"
        );
        assert_eq!(single_line("a\nREADY=1\r\0"), "a READY=1  ");
    }
}
