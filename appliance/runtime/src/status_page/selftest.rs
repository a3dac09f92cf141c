//! Runs `airlock selftest --json` for the status page (a production box has no console login: this is how a
//! technician runs it there) and keeps the last report. The selftest runs as a child process with the
//! service's own rights and configuration, so it sees the box exactly as the running service does; one run
//! at a time, ended after `SELFTEST_TIMEOUT`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// A selftest taking longer than this is ended and reported as such (its probes time out well before).
const SELFTEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest report read from the child (bytes); a longer one is reported as unreadable.
const MAX_REPORT_BYTES: usize = 1 << 20;

/// How to run the selftest: the airlock binary and its arguments (`selftest --json --config FILE`).
#[derive(Debug, Clone)]
pub struct SelftestCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// One line of the checklist, as `airlock selftest --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckLine {
    pub id: String,
    /// `ok`, `warn`, `fail` or `skip`.
    pub status: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The last selftest run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    #[serde(serialize_with = "crate::status_page::view::serialize_time")]
    pub at: SystemTime,
    pub took_secs: f64,
    pub checks: Vec<CheckLine>,
    /// Why there are no checks (the selftest could not run, timed out or printed no report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs selftests one at a time and keeps the last report; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Selftests {
    command: SelftestCommand,
    last: Arc<Mutex<Option<Report>>>,
    running: Arc<tokio::sync::Mutex<()>>,
}

impl Selftests {
    pub(crate) fn new(command: SelftestCommand) -> Selftests {
        Selftests {
            command,
            last: Arc::default(),
            running: Arc::default(),
        }
    }

    /// The last report, if a selftest ran.
    pub(crate) fn last(&self) -> Option<Report> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether a selftest is running now.
    pub(crate) fn is_running(&self) -> bool {
        self.running.try_lock().is_err()
    }

    /// Runs a selftest unless one is running (then waits for that one) and keeps its report.
    pub(crate) async fn run(&self) {
        let Ok(_only_one) = self.running.try_lock() else {
            drop(self.running.lock().await);
            return;
        };
        let at = SystemTime::now();
        let started = Instant::now();
        let outcome = tokio::time::timeout(SELFTEST_TIMEOUT, self.spawn()).await;
        let took_secs = started.elapsed().as_secs_f64();
        let (checks, error) = match outcome {
            Ok(Ok(checks)) => (checks, None),
            Ok(Err(error)) => (Vec::new(), Some(error)),
            Err(_elapsed) => (
                Vec::new(),
                Some(format!(
                    "the selftest did not finish within {} s and was ended",
                    SELFTEST_TIMEOUT.as_secs()
                )),
            ),
        };
        if let Some(error) = &error {
            tracing::warn!(%error, "the status page's selftest gave no report");
        } else {
            let failed = checks.iter().filter(|check| check.status == "fail").count();
            tracing::info!(checks = checks.len(), failed, "selftest run from the status page");
        }
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Report {
            at,
            took_secs,
            checks,
            error,
        });
    }

    async fn spawn(&self) -> Result<Vec<CheckLine>, String> {
        let output = tokio::process::Command::new(&self.command.program)
            .args(&self.command.args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|error| format!("cannot run {}: {error}", self.command.program.display()))?;
        parse_report(&output.stdout, &output.stderr)
    }
}

/// The checks of a `selftest --json` report; otherwise what the child said on stderr.
fn parse_report(stdout: &[u8], stderr: &[u8]) -> Result<Vec<CheckLine>, String> {
    if stdout.len() > MAX_REPORT_BYTES {
        return Err(format!("the selftest printed more than {MAX_REPORT_BYTES} bytes"));
    }
    serde_json::from_slice::<Vec<CheckLine>>(stdout).map_err(|error| {
        let said = String::from_utf8_lossy(stderr);
        let said = said.trim();
        if said.is_empty() {
            format!("the selftest printed no readable report: {error}")
        } else {
            format!("the selftest printed no readable report: {said}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_read_from_selftest_json_and_failures_say_why() {
        let json = br#"[
          {"id": "config", "status": "ok", "detail": "/etc/airlock/airlock.toml is valid"},
          {"id": "uplink.s3", "status": "fail", "detail": "bucket unreachable", "fix": "check the uplink NIC"}
        ]"#;
        let checks = parse_report(json, b"").expect("report");
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[1].fix.as_deref(), Some("check the uplink NIC"));
        let refused = parse_report(b"", b"error: unexpected argument '--json'\n");
        assert_eq!(
            refused,
            Err("the selftest printed no readable report: error: unexpected argument '--json'".into())
        );
        assert!(parse_report(b"not json", b"").is_err_and(|error| error.contains("no readable report")));
    }

    #[tokio::test]
    async fn one_run_at_a_time_and_the_last_report_is_kept() {
        let selftests = Selftests::new(SelftestCommand {
            program: PathBuf::from("/bin/sh"),
            args: vec![
                "-c".into(),
                r#"sleep 0.2; echo '[{"id":"disk","status":"warn","detail":"12% free","fix":"free room"}]'"#
                    .into(),
            ],
        });
        assert!(selftests.last().is_none());
        let (first, second) = tokio::join!(selftests.run(), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(selftests.is_running());
            selftests.run().await;
        });
        let ((), ()) = (first, second);
        let report = selftests.last().expect("a report");
        assert_eq!(report.checks.len(), 1);
        assert_eq!(report.checks[0].status, "warn");
        assert!(report.error.is_none() && report.took_secs >= 0.2);
        assert!(!selftests.is_running());

        let missing = Selftests::new(SelftestCommand {
            program: PathBuf::from("/nonexistent/airlock"),
            args: Vec::new(),
        });
        missing.run().await;
        let report = missing.last().expect("a report");
        assert!(report.checks.is_empty());
        assert!(
            report
                .error
                .is_some_and(|error| error.contains("cannot run /nonexistent/airlock"))
        );
    }
}
