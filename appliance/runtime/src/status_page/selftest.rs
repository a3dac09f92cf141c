//! Runs `airlock selftest --json` for the status page (a production box has no console login: this is how a
//! technician runs it there) and keeps the last report. A run belongs to this module, not to the request that
//! asked for it: the page answers at once, shows "running" and picks the report up on a later refresh, so a
//! closed tab or a slow uplink probe never cuts a run short. One run at a time, ended after
//! `SELFTEST_TIMEOUT`.
//!
//! Two ways to run it ([`SelftestCommand`]):
//! - as a child process in its own process group (killed as a group on timeout), with the service's rights;
//! - on the appliance image, through systemd: the service's sandbox hides the devices the checks look at
//!   (TPM, watchdog, sound cards, the dm-crypt mapping), so the service only drops a request file, which
//!   `airlock-selftest.path` turns into a run of `airlock-selftest.service` as root, and reads the report it
//!   leaves beside the request.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// A selftest taking longer than this is ended and reported as such (its probes time out well before).
const SELFTEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest report read (bytes); a longer one is reported as unreadable.
const MAX_REPORT_BYTES: usize = 1 << 20;
/// How often the systemd way looks for its report.
const REPORT_POLL: Duration = Duration::from_millis(250);

/// How to run the selftest.
#[derive(Debug, Clone)]
pub enum SelftestCommand {
    /// This program with these arguments (`airlock selftest --json --config FILE`) as a child.
    Child { program: PathBuf, args: Vec<OsString> },
    /// Create `request`; systemd runs the selftest as root and writes `report` (the appliance image).
    Systemd { request: PathBuf, report: PathBuf },
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
    command: Arc<SelftestCommand>,
    last: Arc<Mutex<Option<Report>>>,
    running: Arc<AtomicBool>,
}

impl Selftests {
    pub(crate) fn new(command: SelftestCommand) -> Selftests {
        Selftests {
            command: Arc::new(command),
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
        self.running.load(Ordering::Acquire)
    }

    /// Starts a selftest in its own task unless one is running; returns that task (`None`: one was running).
    pub(crate) fn start(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.running.swap(true, Ordering::AcqRel) {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            this.run().await;
            this.running.store(false, Ordering::Release);
        }))
    }

    async fn run(&self) {
        let at = SystemTime::now();
        let started = Instant::now();
        let outcome = match self.command.as_ref() {
            SelftestCommand::Child { program, args } => run_child(program, args, SELFTEST_TIMEOUT).await,
            SelftestCommand::Systemd { request, report } => {
                run_through_systemd(request, report, SELFTEST_TIMEOUT).await
            }
        };
        let took_secs = started.elapsed().as_secs_f64();
        let (checks, error) = match outcome {
            Ok(checks) => (checks, None),
            Err(error) => (Vec::new(), Some(error)),
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
}

/// Runs the child in its own process group; on timeout the whole group is killed (the selftest's own helper
/// programs with it).
async fn run_child(
    program: &std::path::Path,
    args: &[OsString],
    timeout: Duration,
) -> Result<Vec<CheckLine>, String> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", program.display()))?;
    let group = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => parse_report(&output.stdout, &output.stderr),
        Ok(Err(error)) => Err(format!("the selftest could not be read: {error}")),
        Err(_elapsed) => {
            if let Some(group) = group {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            Err(timed_out(timeout))
        }
    }
}

/// Asks systemd for a run (`request`) and waits for its `report`.
async fn run_through_systemd(
    request: &std::path::Path,
    report: &std::path::Path,
    timeout: Duration,
) -> Result<Vec<CheckLine>, String> {
    match std::fs::remove_file(report) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(format!(
                "cannot remove the old report {}: {error}",
                report.display()
            ));
        }
    }
    std::fs::write(request, b"")
        .map_err(|error| format!("cannot ask for a selftest ({}): {error}", request.display()))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match std::fs::read(report) {
            Ok(bytes) => return parse_report(&bytes, b""),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(format!("cannot read {}: {error}", report.display())),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{}; is airlock-selftest.path enabled?",
                timed_out(timeout)
            ));
        }
        tokio::time::sleep(REPORT_POLL).await;
    }
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "the selftest did not finish within {} s and was ended",
        timeout.as_secs()
    )
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

    fn shell(script: &str) -> SelftestCommand {
        SelftestCommand::Child {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
        }
    }

    #[tokio::test]
    async fn one_run_at_a_time_and_the_last_report_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = dir.path().join("runs");
        let selftests = Selftests::new(shell(&format!(
            r#"echo run >> '{}'; sleep 0.3; echo '[{{"id":"disk","status":"warn","detail":"12% free","fix":"free room"}}]'"#,
            runs.display()
        )));
        assert!(selftests.last().is_none());
        let first = selftests.start().expect("started");
        assert!(selftests.is_running());
        assert!(
            selftests.start().is_none(),
            "a second run while one runs is not started"
        );
        first.await.expect("run");
        assert!(!selftests.is_running());
        assert_eq!(std::fs::read_to_string(&runs).expect("runs"), "run\n");
        let report = selftests.last().expect("a report");
        assert_eq!(report.checks.len(), 1);
        assert_eq!(report.checks[0].status, "warn");
        assert!(report.error.is_none() && report.took_secs >= 0.3);
        // Once it ended, a new run starts.
        selftests.start().expect("started again").await.expect("run");
        assert_eq!(std::fs::read_to_string(&runs).expect("runs"), "run\nrun\n");

        let missing = Selftests::new(SelftestCommand::Child {
            program: PathBuf::from("/nonexistent/airlock"),
            args: Vec::new(),
        });
        missing.start().expect("started").await.expect("run");
        let report = missing.last().expect("a report");
        assert!(report.checks.is_empty());
        assert!(
            report
                .error
                .is_some_and(|error| error.contains("cannot run /nonexistent/airlock"))
        );
    }

    #[tokio::test]
    async fn a_run_over_time_is_ended_with_the_programs_it_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let grandchild = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > '{}'; wait", grandchild.display());
        let SelftestCommand::Child { program, args } = shell(&script) else {
            unreachable!("a child command")
        };
        let outcome = run_child(&program, &args, Duration::from_millis(500)).await;
        assert!(outcome.is_err_and(|error| error.contains("did not finish within")));
        let pid: i32 = std::fs::read_to_string(&grandchild)
            .expect("pid")
            .trim()
            .parse()
            .expect("a pid");
        // The sleep in the background was in the group: it is gone (or a zombie about to be reaped by init).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(") Z "), "{state}");
    }

    #[tokio::test]
    async fn through_systemd_a_request_is_left_and_the_report_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let request = dir.path().join("selftest.request");
        let report = dir.path().join("selftest.json");
        std::fs::write(&report, b"stale").expect("old report");
        let answering = {
            let (request, report) = (request.clone(), report.clone());
            tokio::spawn(async move {
                while !request.exists() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                std::fs::write(&report, br#"[{"id":"tpm","status":"ok","detail":"present"}]"#)
            })
        };
        let checks = run_through_systemd(&request, &report, Duration::from_secs(10))
            .await
            .expect("report");
        assert_eq!(checks[0].id, "tpm");
        answering.await.expect("task").expect("written");
        std::fs::remove_file(&report).expect("remove");
        std::fs::remove_file(&request).expect("remove");
        let unanswered = run_through_systemd(&request, &report, Duration::from_millis(300)).await;
        assert!(unanswered.is_err_and(|error| error.contains("airlock-selftest.path")));
    }
}
