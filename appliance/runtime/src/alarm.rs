//! Alarms: conditions a site's NOC must act on (spool full, S3 credentials or bucket refused, MQTT refused).
//! Each alarm changes state at most once per transition: raising logs an error, clearing logs the recovery,
//! and both are spooled as an event on `alarm/{name}` (delivered like every event, so an alarm raised
//! while the uplink is down arrives after it) and shown on the `airlock_alarm{alarm}` gauge. Reasons are
//! fixed texts and service error codes — never a key, a number or an address.

use std::sync::Mutex;
use std::time::SystemTime;

use airlock_telemetry::Alarm;
use serde::Serialize;

/// Which alarms are raised now.
#[derive(Debug, Default)]
pub(crate) struct Alarms {
    raised: Mutex<Vec<Alarm>>,
}

/// The event spooled on `alarm/{name}`.
#[derive(Serialize)]
pub(crate) struct AlarmEvent<'a> {
    pub event: &'static str,
    pub alarm: &'static str,
    /// `raised` or `cleared`.
    pub state: &'static str,
    pub reason: &'a str,
    pub at: String,
}

impl Alarms {
    /// Records the alarm's new state; Some(event) when it changed (the caller spools it).
    pub(crate) fn transition<'a>(
        &self,
        alarm: Alarm,
        raised: bool,
        reason: &'a str,
    ) -> Option<AlarmEvent<'a>> {
        let mut current = self
            .raised
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let was = current.contains(&alarm);
        if was == raised {
            return None;
        }
        if raised {
            current.push(alarm);
        } else {
            current.retain(|other| *other != alarm);
        }
        Some(AlarmEvent {
            event: "alarm",
            alarm: alarm.as_str(),
            state: if raised { "raised" } else { "cleared" },
            reason,
            at: crate::clock::rfc3339(SystemTime::now()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_changes_state_once_per_transition() {
        let alarms = Alarms::default();
        assert!(alarms.transition(Alarm::SpoolFull, false, "").is_none());
        let raised = alarms.transition(Alarm::SpoolFull, true, "full").unwrap();
        assert_eq!((raised.alarm, raised.state), ("spool_full", "raised"));
        assert!(alarms.transition(Alarm::SpoolFull, true, "still").is_none());
        // Another alarm is independent.
        assert!(alarms.transition(Alarm::S3Bucket, true, "x").is_some());
        let cleared = alarms.transition(Alarm::SpoolFull, false, "ok").unwrap();
        assert_eq!(cleared.state, "cleared");
        assert!(alarms.transition(Alarm::SpoolFull, false, "ok").is_none());
    }
}
