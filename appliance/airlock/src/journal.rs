//! Logging to journald with structured fields when stderr is connected to the journal (systemd sets
//! `JOURNAL_STREAM` to stderr's `device:inode`); otherwise the plain stderr lines of `airlock_telemetry`.
//! Fields are those of the event, so the `Pii<T>` rules hold here exactly as on stderr.

use std::fmt::Write;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the journald subscriber when stderr is the journal, the stderr subscriber otherwise; either way
/// the warnings and errors are also kept in `recent` (the status page's last problems).
pub fn init_tracing(recent: airlock_telemetry::RecentProblems) {
    let stderr_is_journal = std::env::var("JOURNAL_STREAM").ok().is_some_and(|stream| {
        rustix::fs::fstat(std::io::stderr()).is_ok_and(|stat| names_stream(&stream, stat.st_dev, stat.st_ino))
    });
    if !stderr_is_journal {
        return airlock_telemetry::init_tracing(recent);
    }
    use tracing_subscriber::Layer;
    let _already_installed = tracing_subscriber::registry()
        .with(Journald.with_filter(airlock_telemetry::log_filter()))
        .with(recent.layer())
        .try_init();
}

/// Whether `JOURNAL_STREAM` (`<device>:<inode>`, decimal) names the file with this device and inode.
fn names_stream(journal_stream: &str, device: u64, inode: u64) -> bool {
    journal_stream
        .split_once(':')
        .and_then(|(dev, ino)| Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?)))
        == Some((device, inode))
}

/// Sends each event as one journal entry: `MESSAGE` reads like the stderr line, and every field of the
/// event is also a journal field of its own (`AIRLOCK_` + its name in upper case), with `PRIORITY` from the level.
#[derive(Debug)]
struct Journald;

impl<S: Subscriber> tracing_subscriber::Layer<S> for Journald {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let metadata = event.metadata();
        let mut entry = Entry::default();
        event.record(&mut entry);
        let mut fields = vec![
            format!("MESSAGE={}", entry.message),
            format!("PRIORITY={}", priority(*metadata.level())),
            format!("AIRLOCK_TARGET={}", metadata.target()),
        ];
        fields.extend(entry.fields);
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        // Nowhere better to report a journal that cannot be written to.
        let _ = systemd::journal::send(&fields);
    }
}

/// syslog priorities: err, warning, info, debug.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

#[derive(Debug, Default)]
struct Entry {
    message: String,
    fields: Vec<String>,
}

impl Visit for Entry {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field.name(), format!("{value:?}"));
    }
}

impl Entry {
    fn record(&mut self, name: &str, value: String) {
        if name == "message" {
            self.message.insert_str(0, &value);
            return;
        }
        let _ = write!(self.message, " {name}={value}");
        self.fields.push(format!("{}={value}", journal_field_name(name)));
    }
}

/// A journal field name: `AIRLOCK_` then upper-case letters, digits and `_` (journald drops other names).
fn journal_field_name(name: &str) -> String {
    let mut out = String::from("AIRLOCK_");
    out.extend(name.chars().map(|c| match c {
        'a'..='z' => c.to_ascii_uppercase(),
        'A'..='Z' | '0'..='9' => c,
        _ => '_',
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_names_stderr_only_by_device_and_inode() {
        assert!(names_stream("8:12345", 8, 12345));
        assert!(!names_stream("8:12345", 8, 12346));
        assert!(!names_stream("9:12345", 8, 12345));
        assert!(!names_stream("8", 8, 12345));
        assert!(!names_stream("", 0, 0));
        assert!(!names_stream("x:1", 0, 1));
    }

    #[test]
    fn field_names_are_valid_journal_names() {
        assert_eq!(journal_field_name("active_calls"), "AIRLOCK_ACTIVE_CALLS");
        assert_eq!(journal_field_name("error.kind"), "AIRLOCK_ERROR_KIND");
        assert_eq!(journal_field_name("r#type"), "AIRLOCK_R_TYPE");
    }

    #[test]
    fn the_message_reads_like_the_stderr_line() {
        let mut entry = Entry::default();
        entry.record("active_calls", "3".to_string());
        entry.record("message", "shutting down".to_string());
        assert_eq!(entry.message, "shutting down active_calls=3");
        assert_eq!(entry.fields, ["AIRLOCK_ACTIVE_CALLS=3"]);
    }
}
