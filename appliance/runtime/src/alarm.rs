//! Alarms: conditions a site's NOC must act on (spool full, S3 credentials or bucket refused, MQTT refused).
//! Each alarm changes state at most once per transition: raising logs an error, clearing logs the recovery,
//! and both are spooled as an event on `alarm/{name}` (delivered like every event, so an alarm raised
//! while the uplink is down arrives after it) and shown on the `airlock_alarm{alarm}` gauge. The raised set
//! is kept in `<data>/alarms.json` (written after the event is spooled: a crash in between repeats the
//! event rather than losing it), so an alarm raised before a restart is still raised after it and its
//! clearing is published then. Reasons are fixed texts, service error codes and object keys — never a phone
//! number, a URI, an address or transcript text.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use airlock_telemetry::Alarm;
use serde::Serialize;

/// Which alarms are raised now, and the file that keeps them across restarts.
#[derive(Debug)]
pub(crate) struct Alarms {
    raised: Mutex<Vec<Alarm>>,
    file: PathBuf,
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
    /// The alarms raised when the appliance last stopped (none when the file is missing or unreadable).
    pub(crate) fn load(file: PathBuf) -> Alarms {
        let names: Vec<String> = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let raised = Alarm::ALL
            .into_iter()
            .filter(|alarm| names.iter().any(|name| name == alarm.as_str()))
            .collect();
        Alarms {
            raised: Mutex::new(raised),
            file,
        }
    }

    /// The alarms raised now.
    pub(crate) fn raised(&self) -> Vec<Alarm> {
        self.raised
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records the alarm's new state in memory; Some(event) when it changed (the caller spools it, then
    /// calls [`Alarms::persist`]).
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

impl Alarms {
    /// Writes the raised set to `alarms.json`.
    pub(crate) fn persist(&self) {
        let names: Vec<&str> = self.raised().iter().map(|alarm| alarm.as_str()).collect();
        if let Err(error) = serde_json::to_vec(&names)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::storage::write_atomically(&self.file, &bytes))
        {
            tracing::warn!(%error, "cannot keep the alarm state in alarms.json; a restart forgets it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_changes_state_once_per_transition_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("airlock-alarms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("alarms.json");
        let _ = std::fs::remove_file(&file);
        let alarms = Alarms::load(file.clone());
        assert!(alarms.transition(Alarm::SpoolFull, false, "").is_none());
        let raised = alarms.transition(Alarm::SpoolFull, true, "full").unwrap();
        assert_eq!((raised.alarm, raised.state), ("spool_full", "raised"));
        assert!(alarms.transition(Alarm::SpoolFull, true, "still").is_none());
        // Another alarm is independent.
        assert!(alarms.transition(Alarm::S3Bucket, true, "x").is_some());
        alarms.persist();
        let cleared = alarms.transition(Alarm::SpoolFull, false, "ok").unwrap();
        alarms.persist();
        assert_eq!(cleared.state, "cleared");
        assert!(alarms.transition(Alarm::SpoolFull, false, "ok").is_none());
        // The raised set is back after a restart, so clearing it then is published.
        assert_eq!(Alarms::load(file.clone()).raised(), vec![Alarm::S3Bucket]);
        let restarted = Alarms::load(file);
        assert!(restarted.transition(Alarm::S3Bucket, false, "ok").is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
