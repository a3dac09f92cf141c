//! The last warnings and errors airlock logged, kept in memory for the technician's status page.
//! [`RecentProblems`] is a tracing layer beside the stderr/journald one, with its own filter (warnings and
//! errors, whatever `AIRLOCK_LOG` says): the `Pii<T>` rules that keep numbers, URIs, addresses and transcript
//! text out of the log keep them out of here too, and the call's own name (`call` field) is left out. Only
//! airlock's own events are kept: libraries' log lines (a TLS library's warning about a peer's bad handshake,
//! with text the peer chose) could otherwise push the real problems out. Bounded: the newest
//! [`RECENT_PROBLEMS`] entries; policy: the oldest is dropped first.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// Entries kept; older ones are dropped first.
pub const RECENT_PROBLEMS: usize = 50;
/// Longest message kept (bytes, cut at a character boundary): one runaway message cannot grow the ring.
const MAX_MESSAGE_BYTES: usize = 1024;

/// One logged warning or error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: SystemTime,
    /// `error` or `warn`.
    pub level: &'static str,
    /// The message as the stderr line reads it, with the event's fields (`name=value`).
    pub message: String,
}

/// The ring of recent problems; cheap to clone (every clone is the same ring).
#[derive(Debug, Clone, Default)]
pub struct RecentProblems {
    ring: Arc<Mutex<VecDeque<Problem>>>,
    /// Problems seen since the start, including those no longer in the ring.
    total: Arc<std::sync::atomic::AtomicU64>,
}

impl RecentProblems {
    /// The entries kept, oldest first, and how many problems were logged since the start.
    pub fn snapshot(&self) -> (Vec<Problem>, u64) {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        (
            ring.iter().cloned().collect(),
            self.total.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Keeps `problem`, dropping the oldest entry when the ring is full.
    pub fn push(&self, problem: Problem) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == RECENT_PROBLEMS {
            ring.pop_front();
        }
        ring.push_back(problem);
        self.total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Fields never kept: the recorder's own name of a call.
const LEFT_OUT_FIELDS: &[&str] = &["call"];

impl RecentProblems {
    /// The layer with its own filter: airlock's warnings and errors.
    pub fn layer<S>(self) -> impl tracing_subscriber::Layer<S>
    where
        S: Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        use tracing_subscriber::Layer;
        use tracing_subscriber::filter::FilterExt;
        self.with_filter(tracing_subscriber::filter::LevelFilter::WARN.and(
            tracing_subscriber::filter::filter_fn(|metadata| is_airlocks(metadata.target())),
        ))
    }
}

/// Whether an event comes from airlock's own crates (`airlock`, `airlock_runtime::…`, …).
fn is_airlocks(target: &str) -> bool {
    target
        .strip_prefix("airlock")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('_') || rest.starts_with("::"))
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for RecentProblems {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            _ => return,
        };
        let mut line = Line::default();
        event.record(&mut line);
        let mut message = line.message;
        message.push_str(&line.fields);
        if message.len() > MAX_MESSAGE_BYTES {
            let mut cut = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        self.push(Problem {
            at: SystemTime::now(),
            level,
            message,
        });
    }
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if !LEFT_OUT_FIELDS.contains(&field.name()) {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else if !LEFT_OUT_FIELDS.contains(&field.name()) {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn keeps_airlocks_warnings_and_errors_with_their_fields_newest_last() {
        let recent = RecentProblems::default();
        // Even when the log itself shows errors only.
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer().with_filter(tracing_subscriber::filter::LevelFilter::ERROR),
            )
            .with(recent.clone().layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not a problem");
            tracing::warn!(sink = "objects", "uplink down");
            tracing::warn!(target: "rustls::msgs", "Illegal SNI hostname received");
            tracing::warn!(target: "airlockish", "not ours either");
            tracing::error!(call = "20261130T0700Z-ab", error = %"disk full", "cannot write");
        });
        let (problems, total) = recent.snapshot();
        assert_eq!(total, 2);
        let lines: Vec<(&str, &str)> = problems
            .iter()
            .map(|problem| (problem.level, problem.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                ("warn", "uplink down sink=objects"),
                ("error", "cannot write error=disk full")
            ]
        );
    }

    #[test]
    fn the_ring_drops_the_oldest_and_cuts_long_messages() {
        let recent = RecentProblems::default();
        let subscriber = tracing_subscriber::registry().with(recent.clone().layer());
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..RECENT_PROBLEMS + 5 {
                tracing::warn!("problem {n}");
            }
            tracing::warn!("{}", "é".repeat(MAX_MESSAGE_BYTES));
        });
        let (problems, total) = recent.snapshot();
        assert_eq!(total, RECENT_PROBLEMS as u64 + 6);
        assert_eq!(problems.len(), RECENT_PROBLEMS);
        assert_eq!(problems[0].message, "problem 6");
        let last = &problems[RECENT_PROBLEMS - 1].message;
        assert!(last.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8() && last.ends_with('…'));
    }
}
