//! What the runtime tells the service manager: ready once every listener is bound, a status line without
//! personal data, stopping when shutdown begins, and keep-alives sent only while a liveness probe through
//! the control loop's bounded queue is answered in time. A stalled async runtime or control loop therefore
//! stops the keep-alives, and the service manager's watchdog restarts the appliance.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often the status line is refreshed when no watchdog asks for more frequent keep-alives.
const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// The service manager as the runtime sees it. The binary implements it with sd_notify; every call is a
/// no-op when the appliance does not run under systemd.
pub trait Supervisor: Send + Sync + 'static {
    /// Every listener is bound and the appliance records.
    fn ready(&self, status: &str);
    /// What the appliance is doing, in one line.
    fn status(&self, status: &str);
    /// Shutdown has begun.
    fn stopping(&self, status: &str);
    /// The runtime and the control loop are turning (one watchdog keep-alive).
    fn alive(&self);
    /// How often [`Supervisor::alive`] is due (half the watchdog timeout); `None` when nothing watches.
    fn keepalive_interval(&self) -> Option<Duration>;
}

/// The control loop's answer to a liveness probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub active_calls: usize,
    /// New calls are admitted (the disk keeps up and the outbox spool has room).
    pub admission_open: bool,
    /// Shutdown has begun: active calls are being ended and finalised.
    pub stopping: bool,
    /// The object uplink's last delivery result; `None` before the first attempt.
    pub uplink_up: Option<bool>,
}

/// The status line for `systemctl status`: counts and states only, never a call id, number or address.
pub fn status_line(health: &Health) -> String {
    let calls = match health.active_calls {
        1 => "1 active call".to_string(),
        n => format!("{n} active calls"),
    };
    if health.stopping {
        return format!("stopping; finalising {calls}");
    }
    let uplink = match health.uplink_up {
        Some(true) => "uplink up",
        Some(false) => "uplink down",
        None => "uplink not used yet",
    };
    let mut line = format!("recording; {calls}; {uplink}");
    if !health.admission_open {
        line.push_str("; refusing new calls (disk or spool behind)");
    }
    line
}

/// Probes the control loop once per period (half the watchdog timeout, at most [`STATUS_PERIOD`]) and, when
/// it answers within that period, sends a keep-alive and the status line if it changed. Runs until aborted.
pub(crate) async fn supervise<P, F>(supervisor: Arc<dyn Supervisor>, mut probe: P)
where
    P: FnMut() -> F,
    F: Future<Output = Option<Health>>,
{
    let watched = supervisor.keepalive_interval();
    let period = watched.map_or(STATUS_PERIOD, |interval| interval.min(STATUS_PERIOD));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status: Option<String> = None;
    let mut failing = false;
    loop {
        ticks.tick().await;
        match tokio::time::timeout(period, probe()).await {
            Ok(Some(health)) => {
                if failing {
                    failing = false;
                    tracing::warn!("the control loop answers liveness probes again");
                }
                if watched.is_some() {
                    supervisor.alive();
                }
                let line = status_line(&health);
                if last_status.as_ref() != Some(&line) {
                    supervisor.status(&line);
                    last_status = Some(line);
                }
            }
            Ok(None) | Err(_) => {
                if !failing {
                    failing = true;
                    tracing::error!(
                        period_ms = period.as_millis() as u64,
                        "the control loop did not answer a liveness probe in time: watchdog keep-alives withheld"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct Recorder {
        interval: Option<Duration>,
        keepalives: AtomicUsize,
        statuses: Mutex<Vec<String>>,
    }

    impl Supervisor for Recorder {
        fn ready(&self, status: &str) {
            self.status(status);
        }
        fn status(&self, status: &str) {
            self.statuses.lock().unwrap().push(status.to_string());
        }
        fn stopping(&self, status: &str) {
            self.status(status);
        }
        fn alive(&self) {
            self.keepalives.fetch_add(1, Ordering::SeqCst);
        }
        fn keepalive_interval(&self) -> Option<Duration> {
            self.interval
        }
    }

    fn healthy(active_calls: usize) -> Health {
        Health {
            active_calls,
            admission_open: true,
            stopping: false,
            uplink_up: Some(true),
        }
    }

    #[test]
    fn status_lines_carry_counts_and_states_only() {
        assert_eq!(status_line(&healthy(3)), "recording; 3 active calls; uplink up");
        assert_eq!(
            status_line(&Health {
                active_calls: 1,
                admission_open: false,
                stopping: false,
                uplink_up: Some(false),
            }),
            "recording; 1 active call; uplink down; refusing new calls (disk or spool behind)"
        );
        assert_eq!(
            status_line(&Health {
                uplink_up: None,
                ..healthy(0)
            }),
            "recording; 0 active calls; uplink not used yet"
        );
        assert_eq!(
            status_line(&Health {
                stopping: true,
                ..healthy(2)
            }),
            "stopping; finalising 2 active calls"
        );
    }

    #[tokio::test]
    async fn keepalives_stop_while_the_probe_goes_unanswered() {
        let recorder = Arc::new(Recorder {
            interval: Some(Duration::from_millis(20)),
            ..Recorder::default()
        });
        let probes = Arc::new(AtomicUsize::new(0));
        let counted = probes.clone();
        // Answers the first five probes, then stalls like a control loop stuck in an await.
        let task = tokio::spawn(supervise(recorder.clone(), move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 5 {
                    Some(healthy(n))
                } else {
                    std::future::pending().await
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let stalled_at = recorder.keepalives.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        task.abort();
        assert_eq!(stalled_at, 5, "one keep-alive per answered probe");
        assert_eq!(
            recorder.keepalives.load(Ordering::SeqCst),
            5,
            "none while the probe stalls"
        );
        assert!(probes.load(Ordering::SeqCst) > 6, "probing goes on");
        assert_eq!(
            recorder.statuses.lock().unwrap().len(),
            5,
            "a status line per change"
        );
    }

    #[tokio::test]
    async fn without_a_watchdog_only_the_status_is_sent() {
        let recorder = Arc::new(Recorder::default());
        let task = tokio::spawn(supervise(recorder.clone(), || async { Some(healthy(0)) }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        task.abort();
        assert_eq!(recorder.keepalives.load(Ordering::SeqCst), 0);
        assert_eq!(
            *recorder.statuses.lock().unwrap(),
            vec!["recording; 0 active calls; uplink up"]
        );
    }
}
