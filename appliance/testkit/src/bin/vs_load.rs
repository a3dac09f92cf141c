//! VoiceStream load benchmark: how many concurrent call legs one core of `airlock` sustains.
//!
//! For each N in `--calls` it starts the release `airlock` binary (`AIRLOCK_BIN`, default
//! target/release/airlock) with a generated config (plaintext VoiceStream listener on a free loopback port,
//! data directory under DATA_ROOT, default /dev/shm, a metrics listener, one trust token), then plays N
//! two-leg calls at once (2N gRPC streams over `--connections` HTTP/2 connections, one tokio task per leg,
//! starts spread over one second), each `--secs` seconds of LINEAR16 8 kHz audio in 100 ms chunks paced in
//! real time. It measures airlock's CPU time (utime + stime from /proc/PID/stat) over the steady-state
//! window when every leg is streaming, its peak RSS (VmHWM), the legs that failed (no 1001, gRPC error,
//! early end) and whether every call was published to `uplink/` with a manifest. The reference in the
//! same run is the bench's own client process (same legs, same audio, same gRPC stack, sending instead of
//! receiving, recording nothing), and the smallest N shows scaling.
//!
//! `cargo build --release -p airlock -p airlock-testkit` then
//! `target/release/vs_load [--calls 10,50,100,200,400] [--secs 20] [--connections 16] [DATA_ROOT]`.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use airlock_testkit::{LegFailure, LegReport, LegSpec, LegStreamer, Pacing, tone_pcm};
use airlock_voicestream::proto::streaming_config::CallLeg;
use clap::Parser;
use tokio::time::{Instant, sleep, sleep_until};

/// Concurrent VoiceStream legs per core of airlock.
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent two-leg calls per round, comma-separated (a fresh airlock per round).
    #[arg(long, value_delimiter = ',', default_values_t = [10, 50, 100, 200, 400])]
    calls: Vec<usize>,
    /// Seconds of audio per leg (at least 5).
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// HTTP/2 connections the legs are spread over.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Keep each round's data directory and airlock log instead of deleting them.
    #[arg(long)]
    keep: bool,
    /// Where the data directories go (tmpfs measures CPU, a disk adds fsync latency).
    #[arg(default_value = "/dev/shm")]
    data_root: PathBuf,
}

/// Leg starts are spread over this long so the server does not see 800 configs in one instant.
const RAMP: Duration = Duration::from_secs(1);
const TOKEN: &str = "bench-token";
const SUBSCRIPTION: &str = "bench-sub";
const LINGER_SECS: u64 = 1;

#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: Instant,
    airlock_ticks: u64,
    client_ticks: u64,
}

#[derive(Debug)]
struct Round {
    calls: usize,
    window: Duration,
    airlock_cpu: f64,
    client_cpu: f64,
    round_airlock_cpu: f64,
    peak_rss_kb: u64,
    failures: Vec<String>,
    stopped_by_server: usize,
    published: usize,
    publish_wait: Duration,
    max_lag: Duration,
    streams_metric: Option<f64>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if args.secs < 5 || args.calls.is_empty() || args.calls.contains(&0) || args.connections == 0 {
        return Err("need --secs >= 5, non-zero --calls and --connections".into());
    }
    let bin = std::env::var_os("AIRLOCK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/airlock"));
    if !bin.is_file() {
        return Err(format!("{}: no airlock binary (set AIRLOCK_BIN)", bin.display()).into());
    }
    let tick = clock_ticks_per_second();
    let work = args
        .data_root
        .join(format!("airlock-vs-load-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    println!(
        "vs_load: {} s of LINEAR16 8 kHz per leg, 100 ms chunks, 2 legs per call, {} connections, data under {}, \
         airlock {}, CLK_TCK {tick}, {} CPUs",
        args.secs,
        args.connections,
        work.display(),
        bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let mut rounds = Vec::new();
    for &calls in &args.calls {
        let round = run_round(&args, &bin, &work, calls, tick).await?;
        println!(
            "calls {calls}: airlock {:.2} CPU-s over {:.1} s = {:.0} legs/core; client {:.2} CPU-s; peak RSS {:.1} MB; \
             failures {}; published {}/{calls} ({:.1} s after the audio); max chunk lag {} ms",
            round.airlock_cpu,
            round.window.as_secs_f64(),
            legs_per_core(2 * calls, round.airlock_cpu, round.window),
            round.client_cpu,
            round.peak_rss_kb as f64 / 1024.0,
            round.failures.len(),
            round.published,
            round.publish_wait.as_secs_f64(),
            round.max_lag.as_millis(),
        );
        for failure in round.failures.iter().take(5) {
            println!("  failure: {failure}");
        }
        rounds.push(round);
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    print_table(&rounds);
    let failed = rounds
        .iter()
        .any(|r| !r.failures.is_empty() || r.published != r.calls);
    if failed {
        return Err("some legs failed or some calls were not published".into());
    }
    Ok(())
}

fn print_table(rounds: &[Round]) {
    println!();
    println!(
        "| calls (legs) | airlock CPU in window | airlock cores busy | **legs per core** | client CPU (reference) | \
         airlock / client CPU | airlock CPU per leg-second (µs) | peak RSS | failed legs | published | streams counted |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rounds {
        let legs = 2 * r.calls;
        let wall = r.window.as_secs_f64();
        println!(
            "| {} ({legs}) | {:.2} s / {wall:.1} s | {:.3} | **{:.0}** | {:.2} s ({:.0} legs/core) | {:.2} | {:.0} | {:.1} MB | {} | {}/{} | {} |",
            r.calls,
            r.airlock_cpu,
            r.airlock_cpu / wall,
            legs_per_core(legs, r.airlock_cpu, r.window),
            r.client_cpu,
            legs_per_core(legs, r.client_cpu, r.window),
            if r.client_cpu > 0.0 {
                r.airlock_cpu / r.client_cpu
            } else {
                f64::NAN
            },
            r.airlock_cpu / (legs as f64 * wall) * 1e6,
            r.peak_rss_kb as f64 / 1024.0,
            r.failures.len(),
            r.published,
            r.calls,
            r.streams_metric.map_or("?".to_string(), |v| format!("{v:.0}")),
        );
    }
    for r in rounds {
        println!(
            "calls {}: whole round (streams, finalisation, publish) airlock CPU {:.2} s; {} legs told to stop by the server",
            r.calls, r.round_airlock_cpu, r.stopped_by_server
        );
    }
}

fn legs_per_core(legs: usize, cpu_secs: f64, wall: Duration) -> f64 {
    if cpu_secs <= 0.0 {
        return f64::INFINITY;
    }
    legs as f64 / (cpu_secs / wall.as_secs_f64())
}

async fn run_round(args: &Args, bin: &Path, work: &Path, calls: usize, tick: f64) -> Result<Round, BoxError> {
    let dir = work.join(format!("calls-{calls}"));
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let vs_port = free_port()?;
    let metrics_port = free_port()?;
    let sip_port = free_port()?;
    let config = format!(
        r#"[sip]
udp = "127.0.0.1:{sip_port}"
tcp = ""
[storage]
data_dir = "{data}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[voicestream]
listen = "127.0.0.1:{vs_port}"
insecure_plaintext = true
max_streams = {max_streams}
idle_timeout_secs = 30
leg_linger_secs = {LINGER_SECS}
[voicestream.trust_tokens]
{SUBSCRIPTION} = ["{TOKEN}"]
"#,
        data = data_dir.display(),
        max_streams = 2 * calls + 16,
    );
    let config_path = dir.join("airlock.toml");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(dir.join("airlock.log"))?;
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config_path)
        .env("AIRLOCK_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut airlock = Airlock { child };
    let result = drive(args, &mut airlock, &data_dir, vs_port, metrics_port, calls, tick).await;
    airlock.stop().await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn drive(
    args: &Args,
    airlock: &mut Airlock,
    data_dir: &Path,
    vs_port: u16,
    metrics_port: u16,
    calls: usize,
    tick: f64,
) -> Result<Round, BoxError> {
    let pid = airlock.child.id();
    wait_listening(SocketAddr::from(([127, 0, 0, 1], vs_port)), airlock).await?;

    let target = format!("http://127.0.0.1:{vs_port}");
    let pacing = Pacing {
        wait_start: Duration::from_secs(15),
        ..Pacing::default()
    };
    let streamers = (0..args.connections.min(2 * calls))
        .map(|_| Ok(LegStreamer::new(LegStreamer::plaintext_channel(&target)?, pacing)))
        .collect::<Result<Vec<_>, tonic::transport::Error>>()?;
    // Two shared buffers: legs of different calls may carry the same samples, nobody compares them here.
    let secs = args.secs as f64;
    let agent_pcm = Arc::new(tone_pcm(secs, 440.0, 1));
    let customer_pcm = Arc::new(tone_pcm(secs, 620.0, 2));

    let begin = Instant::now();
    let round_start = cpu_ticks(pid)?;
    let mut tasks = Vec::with_capacity(2 * calls);
    for call in 0..calls {
        let at = begin + RAMP.mul_f64(call as f64 / calls as f64);
        let call_id = format!("{}", 300_000_000_000_000u64 + call as u64);
        for (leg, pcm) in [(CallLeg::Agent, &agent_pcm), (CallLeg::Customer, &customer_pcm)] {
            let streamer = streamers[tasks.len() % streamers.len()].clone();
            let pcm = Arc::clone(pcm);
            let spec = LegSpec::new(call_id.clone(), leg, "bench-domain", SUBSCRIPTION, TOKEN);
            tasks.push(tokio::spawn(async move {
                sleep_until(at).await;
                streamer.stream(&spec, &pcm).await
            }));
        }
    }
    // Steady state: every leg is streaming from a little after the ramp until the first legs run out.
    let window_start = begin + RAMP + Duration::from_secs(1);
    let window_end = begin + Duration::from_secs(args.secs) - Duration::from_millis(500);
    sleep_until(window_start).await;
    let first = sample(pid)?;
    sleep_until(window_end).await;
    let last = sample(pid)?;

    let mut reports: Vec<LegReport> = Vec::with_capacity(tasks.len());
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok(report) => reports.push(report),
            Err(error) => failures.push(format!("leg task: {error}")),
        }
    }
    let audio_done = Instant::now();
    for report in &reports {
        if let Some(failure) = &report.failure {
            failures.push(describe(failure, report));
        }
    }
    let stopped_by_server = reports.iter().filter(|r| r.stopped_by_server).count();
    let max_lag = reports.iter().map(|r| r.max_lag).max().unwrap_or_default();

    // Every call must reach uplink/ with a manifest (finalisation follows the linger after the last leg).
    let deadline = audio_done + Duration::from_secs(LINGER_SECS + 60);
    let mut published = count_published(data_dir);
    while published < calls && Instant::now() < deadline {
        sleep(Duration::from_millis(100)).await;
        published = count_published(data_dir);
    }
    let publish_wait = audio_done.elapsed();
    let round_end = cpu_ticks(pid)?;
    let streams_metric = scrape_sum(metrics_port, "airlock_voicestream_streams_total");
    let peak_rss_kb = vm_hwm_kb(pid).unwrap_or(0);

    Ok(Round {
        calls,
        window: last.at - first.at,
        airlock_cpu: (last.airlock_ticks - first.airlock_ticks) as f64 / tick,
        client_cpu: (last.client_ticks - first.client_ticks) as f64 / tick,
        round_airlock_cpu: (round_end - round_start) as f64 / tick,
        peak_rss_kb,
        failures,
        stopped_by_server,
        published,
        publish_wait,
        max_lag,
        streams_metric,
    })
}

fn describe(failure: &LegFailure, report: &LegReport) -> String {
    let codes: Vec<i32> = report.responses.iter().map(|r| r.code).collect();
    match failure {
        LegFailure::Open(status) | LegFailure::Grpc(status) => format!(
            "gRPC {:?} {:?} (responses {codes:?}, {} chunks sent)",
            status.code(),
            status.message(),
            report.chunks_sent
        ),
        other => format!(
            "{other:?} (responses {codes:?}, {} chunks sent)",
            report.chunks_sent
        ),
    }
}

/// The airlock child, stopped with SIGTERM (then SIGKILL) however the round ends.
#[derive(Debug)]
struct Airlock {
    child: Child,
}

impl Airlock {
    async fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_listening(addr: SocketAddr, airlock: &mut Airlock) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = airlock.child.try_wait() {
            return Err(format!("airlock exited before listening ({status}); see its log").into());
        }
        if Instant::now() > deadline {
            return Err(format!("airlock did not listen on {addr} within 15 s").into());
        }
        sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn sample(pid: u32) -> std::io::Result<CpuSample> {
    Ok(CpuSample {
        at: Instant::now(),
        airlock_ticks: cpu_ticks(pid)?,
        client_ticks: cpu_ticks_of(Path::new("/proc/self/stat"))?,
    })
}

fn cpu_ticks(pid: u32) -> std::io::Result<u64> {
    cpu_ticks_of(&PathBuf::from(format!("/proc/{pid}/stat")))
}

/// utime + stime (fields 14 and 15 of /proc/PID/stat), in clock ticks, over all threads.
fn cpu_ticks_of(path: &Path) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(path)?;
    let bad = || std::io::Error::other(format!("{}: unexpected format", path.display()));
    // The command name (field 2) is in parentheses and may contain spaces: count from its end.
    let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field =
        |n: usize| -> std::io::Result<u64> { fields.get(n - 3).and_then(|f| f.parse().ok()).ok_or_else(bad) };
    Ok(field(14)? + field(15)?)
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `getconf CLK_TCK`, or 100 (the Linux value on every common architecture) if getconf is missing.
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn count_published(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("uplink")).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("manifest.json").is_file())
            .count()
    })
}

/// The sum of every sample of metric `name` on airlock's /metrics (plain HTTP/1.0 GET).
fn scrape_sum(port: u16, name: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    let values: Vec<f64> = body
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
