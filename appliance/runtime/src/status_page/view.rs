//! What the status page shows and how: the [`Status`] of the box (also served as JSON) and its HTML, the
//! login page and the style sheet. Server-rendered, no scripts (the pages' Content-Security-Policy allows
//! none); every value from elsewhere is HTML-escaped. Numbers, states and bounded names only: the page names
//! no call, number, URI, address or transcript text (the last problems are log lines, which follow the same
//! rule).

use std::fmt::Write;
use std::time::SystemTime;

use airlock_telemetry::Problem;
use serde::{Serialize, Serializer};

use super::selftest::Report;
use super::system::SystemInfo;
use crate::health::Health;
use crate::requests::CallsSummary;

/// Problems shown on the page (newest first); the JSON carries every one kept.
const PROBLEMS_SHOWN: usize = 20;
/// Seconds between the page's own refreshes.
const REFRESH_SECS: u32 = 15;
/// The query of the page's own refreshes (they do not keep a session alive).
pub(crate) const REFRESH_QUERY: &str = "refresh";

/// Everything the status page shows.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub site: String,
    pub appliance: String,
    pub health: Health,
    pub calls: CallsSummary,
    /// Where artifacts go: `s3` or `local directory`; events: `mqtt` or `local log`.
    pub objects_go_to: &'static str,
    pub events_go_to: &'static str,
    pub system: SystemInfo,
    pub selftest: Option<Report>,
    pub selftest_running: bool,
    pub problems: Vec<ProblemLine>,
    /// Warnings and errors logged since the start (more than `problems` once the ring dropped some).
    pub problems_total: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct ProblemLine {
    #[serde(serialize_with = "serialize_time")]
    pub at: SystemTime,
    pub level: &'static str,
    pub message: String,
}

impl From<Problem> for ProblemLine {
    fn from(problem: Problem) -> ProblemLine {
        ProblemLine {
            at: problem.at,
            level: problem.level,
            message: problem.message,
        }
    }
}

pub(crate) fn serialize_time<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::clock::rfc3339(*time))
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn page(title: &str, refresh: bool, body: &str) -> String {
    let refresh = if refresh {
        format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}; url=/?{REFRESH_QUERY}\">")
    } else {
        String::new()
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
         <title>{}</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\n<body>{body}</body></html>\n",
        escape(title)
    )
}

/// The login page, with `message` (a wrong password, throttling) above the form.
pub(crate) fn login_page(message: Option<&str>) -> String {
    let message = message.map_or(String::new(), |text| {
        format!(
            "<p class=\"message fail\" id=\"login-message\">{}</p>",
            escape(text)
        )
    });
    page(
        "Airlock — log in",
        false,
        &format!(
            "<main class=\"login\"><h1>Airlock status</h1>{message}\
             <form method=\"post\" action=\"/login\">\
             <label for=\"password\">Technician password</label>\
             <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" \
             autofocus required>\
             <button type=\"submit\" id=\"login\">Log in</button></form></main>"
        ),
    )
}

fn yes_no(value: Option<bool>, yes: &str, no: &str) -> (String, &'static str) {
    match value {
        Some(true) => (yes.to_string(), "ok"),
        Some(false) => (no.to_string(), "fail"),
        None => ("not used yet".to_string(), "skip"),
    }
}

fn bytes(value: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut scaled = value.max(0) as f64;
    let mut unit = 0;
    while scaled >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value} B")
    } else {
        format!("{scaled:.1} {}", UNITS[unit])
    }
}

fn duration(secs: u64) -> String {
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    if hours > 0 {
        format!("{hours} h {minutes:02} min")
    } else if minutes > 0 {
        format!("{minutes} min {seconds:02} s")
    } else {
        format!("{seconds} s")
    }
}

/// A definition row: label, value (already escaped), class of the value.
fn row(out: &mut String, id: &str, label: &str, value: &str, class: &str) {
    let _ = write!(
        out,
        "<tr id=\"{id}\"><th>{}</th><td class=\"{class}\">{value}</td></tr>",
        escape(label)
    );
}

fn card(out: &mut String, id: &str, title: &str, rows: &str) {
    let _ = write!(
        out,
        "<section class=\"card\" id=\"{id}\"><h2>{}</h2><table>{rows}</table></section>",
        escape(title)
    );
}

/// The status page for a logged-in technician; `form_token` goes into its forms.
pub(crate) fn status_page(status: &Status, form_token: &str) -> String {
    let health = &status.health;
    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1>Airlock {} <span class=\"where\">at {}</span></h1>\
         <p id=\"health\" class=\"badge {}\">{}</p>",
        escape(&status.appliance),
        escape(&status.site),
        health.state,
        health.state.to_uppercase(),
    );
    if !health.reasons.is_empty() {
        let reasons: Vec<String> = health
            .reasons
            .iter()
            .map(|reason| escape(reason.explain()))
            .collect();
        let _ = write!(
            body,
            "<ul id=\"reasons\"><li>{}</li></ul>",
            reasons.join("</li><li>")
        );
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/logout\" class=\"logout\">\
         <input type=\"hidden\" name=\"form_token\" value=\"{}\">\
         <button type=\"submit\" id=\"logout\">Log out</button></form></header><main>",
        escape(form_token)
    );

    let calls = &status.calls;
    let mut rows = String::new();
    row(
        &mut rows,
        "calls-active",
        "Active calls",
        &health.active_calls.to_string(),
        "",
    );
    row(&mut rows, "calls-siprec", "SIPREC", &calls.siprec.to_string(), "");
    row(
        &mut rows,
        "calls-voicestream",
        "VoiceStream",
        &calls.voicestream.to_string(),
        "",
    );
    row(
        &mut rows,
        "calls-capture",
        "Local capture",
        &calls.local_capture.to_string(),
        "",
    );
    row(
        &mut rows,
        "calls-paused",
        "Paused on request",
        &calls.paused_on_request.to_string(),
        "",
    );
    row(
        &mut rows,
        "calls-longest",
        "Longest running",
        &if calls.siprec + calls.voicestream + calls.local_capture > 0 {
            duration(calls.longest_running_secs)
        } else {
            "—".to_string()
        },
        "",
    );
    let (admission, class) = yes_no(
        Some(health.admission_open),
        "open",
        "closed: new calls are refused",
    );
    row(&mut rows, "calls-admission", "New calls", &admission, class);
    card(&mut body, "calls", "Calls", &rows);

    let spool = &health.spool;
    let mut rows = String::new();
    row(
        &mut rows,
        "spool-bytes",
        "Spool",
        &format!("{} of {}", bytes(spool.bytes), bytes(spool.limit_bytes)),
        "",
    );
    row(
        &mut rows,
        "spool-objects",
        "Artifacts waiting",
        &spool.objects_waiting.to_string(),
        "",
    );
    row(
        &mut rows,
        "spool-events",
        "Events waiting",
        &spool.events_waiting.to_string(),
        "",
    );
    row(
        &mut rows,
        "spool-oldest",
        "Oldest waiting",
        &duration(spool.oldest_age_secs as u64),
        "",
    );
    card(&mut body, "spool", "Outbox spool", &rows);

    let mut rows = String::new();
    let (objects, class) = yes_no(
        health.uplink_objects_up,
        "up",
        "DOWN: artifacts wait in the spool",
    );
    row(
        &mut rows,
        "uplink-objects",
        &format!("Artifacts ({})", status.objects_go_to),
        &objects,
        class,
    );
    row(
        &mut rows,
        "uplink-events",
        "Events",
        &escape(status.events_go_to),
        "",
    );
    if let Some(days) = health.certificate_days_left {
        let class = if days < 14 { "warn" } else { "ok" };
        row(
            &mut rows,
            "uplink-certificate",
            "SIP TLS certificate",
            &format!("expires in {days} days"),
            class,
        );
    }
    card(&mut body, "uplink", "Uplink", &rows);

    let transcription = &health.transcription;
    let mut rows = String::new();
    row(&mut rows, "asr-state", "State", &escape(transcription.state), "");
    row(
        &mut rows,
        "asr-lag",
        "Lag",
        &format!("{:.1} s", transcription.lag_secs),
        "",
    );
    row(
        &mut rows,
        "asr-queue",
        "Queued segments",
        &transcription.queue_depth.to_string(),
        "",
    );
    card(&mut body, "transcription", "Transcription", &rows);

    let system = &status.system;
    let unknown = || "— (not an Airlock image)".to_string();
    let mut rows = String::new();
    row(
        &mut rows,
        "version-airlock",
        "Airlock",
        &escape(system.airlock_version),
        "",
    );
    row(
        &mut rows,
        "version-image",
        "Image",
        &system.image_version.as_deref().map_or_else(unknown, escape),
        "",
    );
    row(
        &mut rows,
        "version-slot",
        "Root slot",
        &system.root_slot.as_deref().map_or_else(unknown, escape),
        "",
    );
    row(
        &mut rows,
        "version-boot",
        "Boot entry",
        &match (&system.boot_entry, &system.boot_state) {
            (Some(entry), Some(state)) => format!("{} — {}", escape(entry), escape(state)),
            _ => unknown(),
        },
        "",
    );
    row(
        &mut rows,
        "version-uptime",
        "Up for",
        &duration(health.uptime_secs),
        "",
    );
    card(&mut body, "software", "Software", &rows);

    selftest_card(&mut body, status, form_token);
    problems_card(&mut body, status);
    let _ = write!(
        body,
        "</main><footer>As of {} · refreshes every {REFRESH_SECS} s · <a href=\"/status.json\">JSON</a></footer>",
        escape(&health.at)
    );
    page(&format!("Airlock {} — status", status.appliance), true, &body)
}

fn selftest_card(body: &mut String, status: &Status, form_token: &str) {
    let _ = write!(
        body,
        "<section class=\"card wide\" id=\"selftest\"><h2>Selftest</h2>\
         <form method=\"post\" action=\"/selftest\"><input type=\"hidden\" name=\"form_token\" value=\"{}\">\
         <button type=\"submit\" id=\"run-selftest\"{}>{}</button></form>",
        escape(form_token),
        if status.selftest_running { " disabled" } else { "" },
        if status.selftest_running {
            "Selftest running…"
        } else {
            "Run selftest"
        },
    );
    match &status.selftest {
        None => body.push_str("<p id=\"selftest-summary\">Not run since airlock started.</p>"),
        Some(report) => {
            let count = |wanted: &str| {
                report
                    .checks
                    .iter()
                    .filter(|check| check.status == wanted)
                    .count()
            };
            let _ = write!(
                body,
                "<p id=\"selftest-summary\">Run at {} in {:.1} s: {} ok, {} warnings, {} failed, {} skipped.</p>",
                escape(&crate::clock::rfc3339(report.at)),
                report.took_secs,
                count("ok"),
                count("warn"),
                count("fail"),
                count("skip"),
            );
            if let Some(error) = &report.error {
                let _ = write!(body, "<p class=\"message fail\">{}</p>", escape(error));
            }
            body.push_str("<table class=\"checks\">");
            for check in &report.checks {
                let status_class = match check.status.as_str() {
                    "ok" => "ok",
                    "warn" => "warn",
                    "fail" => "fail",
                    _ => "skip",
                };
                let fix = check.fix.as_deref().map_or(String::new(), |fix| {
                    format!("<div class=\"fix\">→ {}</div>", escape(fix))
                });
                let _ = write!(
                    body,
                    "<tr class=\"check\" data-check=\"{}\"><td class=\"mark {status_class}\">{}</td>\
                     <th>{}</th><td>{}{fix}</td></tr>",
                    escape(&check.id),
                    escape(&check.status.to_uppercase()),
                    escape(&check.id),
                    escape(&check.detail),
                );
            }
            body.push_str("</table>");
        }
    }
    body.push_str("</section>");
}

fn problems_card(body: &mut String, status: &Status) {
    let _ = write!(
        body,
        "<section class=\"card wide\" id=\"problems\"><h2>Last problems</h2>\
         <p id=\"problems-summary\">{} since airlock started{}.</p>",
        match status.problems_total {
            0 => "No warnings or errors".to_string(),
            1 => "1 warning or error".to_string(),
            many => format!("{many} warnings and errors"),
        },
        if status.problems.len() > PROBLEMS_SHOWN {
            format!("; the newest {PROBLEMS_SHOWN}")
        } else {
            String::new()
        }
    );
    if !status.problems.is_empty() {
        body.push_str("<table class=\"problems\">");
        for problem in status.problems.iter().rev().take(PROBLEMS_SHOWN) {
            let class = if problem.level == "error" { "fail" } else { "warn" };
            let _ = write!(
                body,
                "<tr class=\"problem\"><td class=\"mark {class}\">{}</td><td class=\"at\">{}</td><td>{}</td></tr>",
                problem.level.to_uppercase(),
                escape(&crate::clock::rfc3339(problem.at)),
                escape(&problem.message),
            );
        }
        body.push_str("</table>");
    }
    body.push_str("</section>");
}

/// The pages' style sheet (served as `/style.css`: the Content-Security-Policy allows no inline style).
pub(crate) const STYLE_SHEET: &str = "\
body{font-family:system-ui,sans-serif;margin:0;background:#f3f4f6;color:#111827}
header{background:#1f2937;color:#fff;padding:1rem 1.5rem;display:flex;flex-wrap:wrap;align-items:center;gap:1rem}
header h1{font-size:1.4rem;margin:0}.where{font-weight:normal;color:#d1d5db}
#reasons{margin:0;padding-left:1.2rem;color:#fde68a}
.logout{margin-left:auto}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:1rem;padding:1rem 1.5rem}
.card{background:#fff;border-radius:.5rem;padding:.8rem 1rem;box-shadow:0 1px 3px rgba(0,0,0,.15)}
.card.wide{grid-column:1/-1}.card h2{font-size:1.1rem;margin:.2rem 0 .6rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25rem .4rem;vertical-align:top}
td{overflow-wrap:break-word}
th{font-weight:600;color:#374151}
.badge{margin:0;padding:.35rem .9rem;border-radius:.4rem;font-weight:700;letter-spacing:.05em}
.badge.healthy{background:#15803d;color:#fff}.badge.degraded{background:#d97706;color:#fff}
td.ok{color:#15803d}td.warn{color:#b45309}td.fail{color:#b91c1c;font-weight:600}td.skip{color:#6b7280}
td.mark{font-weight:700;width:4.5rem;text-align:center;color:#fff;border-radius:.3rem}
td.mark.ok{background:#15803d}td.mark.warn{background:#d97706}td.mark.fail{background:#b91c1c}
td.mark.skip{background:#9ca3af}
tr.check,tr.problem{border-top:1px solid #e5e7eb}.fix{color:#4b5563;margin-top:.2rem}
td.at{white-space:nowrap;color:#4b5563}
.message.fail{background:#fee2e2;color:#991b1b;padding:.5rem;border-radius:.3rem}
button{font-size:1rem;padding:.4rem 1rem;border-radius:.3rem;border:1px solid #374151;background:#fff;cursor:pointer}
button[disabled]{color:#9ca3af}
main.login{display:block;max-width:22rem;margin:4rem auto;background:#fff;padding:1.5rem;border-radius:.5rem}
main.login input{display:block;width:100%;margin:.5rem 0 1rem;font-size:1rem;padding:.4rem;box-sizing:border-box}
footer{padding:0 1.5rem 1.5rem;color:#6b7280;font-size:.9rem}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        let login = login_page(Some("<b>bad</b>"));
        assert!(login.contains("&lt;b&gt;bad&lt;/b&gt;") && !login.contains("<b>bad"));
    }

    #[test]
    fn sizes_and_durations_read_like_a_person_writes_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(bytes(-1), "-1 B");
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(125), "2 min 05 s");
        assert_eq!(duration(3 * 3600 + 61), "3 h 01 min");
    }
}
