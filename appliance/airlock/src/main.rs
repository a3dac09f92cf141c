//! The `airlock` command: `run` loads the configuration (or the embedded defaults) and runs the appliance
//! until SIGTERM/SIGINT; `check-config` validates a file and names the first bad key; `check-hw` validates
//! hardware profiles (hw/*.toml); `audit verify` checks an
//! audit log (and the checkpoints published from it) and names the first bad line; `redact` runs labelled
//! dialogues (JSON Lines) through the transcript gate offline. Under systemd, `run` notifies readiness,
//! status, stopping and watchdog keep-alives, and logs to journald.

mod config;
mod journal;
mod provision;
mod redact;
mod selftest;
mod service;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use airlock_recording::{DevIdentity, Recipient};
use clap::{Parser, Subcommand};

use crate::config::{Config, Validated};

#[derive(Debug, Parser)]
#[command(
    name = "airlock",
    version,
    about = "On-prem SIPREC recorder: records calls encrypted to public keys"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the appliance (embedded defaults when no --config is given).
    Run {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit (0 = valid, 2 = invalid).
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
    /// Validate hardware profiles (hw/*.toml) and exit (0 = all valid, 2 = one is invalid).
    CheckHw {
        /// Profile files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check everything this box needs to record (hardware profile, addresses and ports, time, disk and
    /// spool, TPM-sealed data, models, certificates, S3/MQTT uplink): a checklist, 0 = nothing failed, 1 = a
    /// check failed (each failed line says what to do).
    Selftest {
        /// TOML configuration file (default: the embedded defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the checks as JSON (id, status ok|warn|fail|skip, detail, fix).
        #[arg(long)]
        json: bool,
    },
    /// Apply a signed site bundle (from removable media) to the site directory: 0 applied, 1 refused (the
    /// previous provisioning is kept), 3 already applied. Restart airlock afterwards to use it.
    Provision {
        /// The bundle file (`airlock make-bundle` writes one).
        bundle: PathBuf,
        /// Where the site's configuration and files live (`/etc/airlock/airlock.toml` points into it).
        #[arg(long, default_value = "/var/lib/airlock-site")]
        site_dir: PathBuf,
        /// The provisioning public keys this box trusts (one 64-hex-digit Ed25519 key per line).
        #[arg(long, default_value = "/usr/share/airlock/provisioning-keys.txt")]
        trusted_keys: PathBuf,
        /// Accept a bundle for another site or appliance than the current provisioning.
        #[arg(long)]
        change_site: bool,
        /// Accept a bundle made before the current one (a deliberate rollback).
        #[arg(long)]
        allow_older: bool,
    },
    /// Create a provisioning signing key (PKCS#8, with `<key>.pub` beside it) unless it exists, and print its
    /// public key: the line images list in their trusted provisioning keys.
    ProvisioningKey {
        /// The key file.
        key: PathBuf,
    },
    /// Sign a directory (holding airlock.toml and the files it names) into a site bundle.
    MakeBundle {
        /// The provisioning signing key (PKCS#8, made by `airlock provisioning-key`).
        #[arg(long)]
        key: PathBuf,
        /// The site's id (outbox.site).
        #[arg(long)]
        site: String,
        /// The appliance's id at the site (outbox.mqtt.appliance).
        #[arg(long)]
        appliance: String,
        /// The bundle to write.
        #[arg(long)]
        out: PathBuf,
        /// The directory whose files go into the bundle.
        dir: PathBuf,
    },
    /// Hash the technician password for the status page: reads the password from the first line of stdin,
    /// writes its Argon2id hash to FILE (mode 0640; status_page.password_file names it).
    StatusPassword {
        /// The password file to write (replaced if it exists).
        file: PathBuf,
    },
    /// Redact dialogues (JSON Lines, the development set's format) from stdin to stdout, as the appliance's
    /// transcript gate would, adding the spans found (0 = all lines redacted, 1 = a line was malformed).
    Redact,
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify an audit log's hash chain and signed checkpoints (0 = valid, 1 = not valid or unreadable).
    Verify {
        /// The log (`<data>/audit/audit.jsonl`, or a copy).
        log: PathBuf,
        /// A trusted public key file (`<key>.pub`: 64 hex digits); repeat for several keys.
        #[arg(long = "public-key", required = true)]
        public_key: Vec<PathBuf>,
        /// The checkpoints published from this log (their lines, one per line), kept off the appliance:
        /// each must match the log, which detects a log rewritten or truncated after they left.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
}

/// Exit status for configuration errors.
const EXIT_CONFIG: u8 = 2;

/// The dev identity's file name inside the data directory.
const DEV_IDENTITY_FILE: &str = "dev-identity.txt";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => {
            match Config::load(&file).and_then(|validated| match &validated.transcription {
                Some(transcription) => config::check_transcription_files(transcription)
                    .and_then(|()| config::check_vad_loads(transcription)),
                None => Ok(()),
            }) {
                Ok(()) => {
                    eprintln!("{}: configuration is valid", file.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    log,
                    public_key,
                    checkpoints,
                },
        } => audit_verify(&log, &public_key, checkpoints.as_deref()),
        Command::CheckHw { files } => check_hw(&files),
        Command::Redact => redact(),
        Command::Provision {
            bundle,
            site_dir,
            trusted_keys,
            change_site,
            allow_older,
        } => provision::run(&provision::Request {
            bundle: &bundle,
            site_dir: &site_dir,
            trusted_keys: &trusted_keys,
            change_site,
            allow_older,
        }),
        Command::ProvisioningKey { key } => provision::provisioning_key(&key),
        Command::MakeBundle {
            key,
            site,
            appliance,
            out,
            dir,
        } => provision::make_bundle(&key, &site, &appliance, &dir, &out),
        Command::Selftest { config, json } => selftest::run(config.as_deref(), json),
        Command::StatusPassword { file } => status_password(&file),
        Command::Run { config } => {
            // Before any thread starts: the process may replace itself once (airlock_transcribe::blas).
            let blas_restart = airlock_transcribe::blas::restart_with_fitting_kernels();
            let recent_problems = airlock_telemetry::RecentProblems::default();
            journal::init_tracing(recent_problems.clone());
            match blas_restart {
                Ok(()) => tracing::info!("{}", airlock_transcribe::blas::kernel_report()),
                Err(error) => tracing::warn!(
                    "cannot restart with OpenBLAS kernels fitting this CPU, transcription may be slower: {error}"
                ),
            }
            let validated = match &config {
                Some(path) => Config::load(path),
                None => Config::default().validate(),
            };
            let mut validated = match validated {
                Ok(validated) => validated,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if let Some(page) = &mut validated.status_page {
                page.selftest = selftest_command(config.as_deref());
            }
            run(validated, recent_problems)
        }
    }
}

/// `airlock check-hw`: one line per file on stderr, valid or the first problem (file and key).
fn check_hw(files: &[PathBuf]) -> ExitCode {
    let mut all_valid = true;
    for file in files {
        match airlock_hw::load(file) {
            Ok(profile) => eprintln!("{}: hardware profile {:?} is valid", file.display(), profile.id),
            Err(error) => {
                eprintln!("{error}");
                all_valid = false;
            }
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CONFIG)
    }
}

/// `airlock audit verify`: one summary line on stdout when valid, the file and line of the first problem on
/// stderr otherwise.
fn audit_verify(log: &Path, public_keys: &[PathBuf], checkpoints: Option<&Path>) -> ExitCode {
    let result = (|| -> Result<airlock_audit::Report, String> {
        let keys = public_keys
            .iter()
            .map(|path| airlock_audit::PublicKey::load(path).map_err(|error| error.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let log_bytes = std::fs::read(log).map_err(|error| format!("{}: {error}", log.display()))?;
        let outcome = match checkpoints {
            Some(path) => {
                let published =
                    std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
                airlock_audit::verify_with_checkpoints(&log_bytes, &published, &keys)
            }
            None => airlock_audit::verify(&log_bytes, &keys),
        };
        outcome.map_err(|error| {
            let file = match (error.input, checkpoints) {
                (airlock_audit::Input::Checkpoints, Some(path)) => path,
                _ => log,
            };
            format!("{}: line {}: {}", file.display(), error.line, error.problem)
        })
    })();
    match result {
        Ok(report) => {
            let mut summary = format!(
                "{}: valid: {} entries, {} checkpoints",
                log.display(),
                report.entries,
                report.checkpoints
            );
            if let Some(seq) = report.last_checkpoint_seq {
                summary.push_str(&format!(" (last at seq {seq})"));
            }
            summary.push_str(&format!(
                ", {} entries after the last checkpoint (not yet signed)",
                report.uncovered_entries
            ));
            if checkpoints.is_some() {
                summary.push_str(&format!(
                    ", {} published checkpoints match",
                    report.published_checkpoints_matched
                ));
            }
            if report.torn_tail_bytes > 0 {
                summary.push_str(&format!(
                    ", torn last line ({} bytes) ignored",
                    report.torn_tail_bytes
                ));
            }
            #[expect(clippy::print_stdout, reason = "the summary is the command's output")]
            {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// `airlock redact`: stdin to stdout; each malformed line named on stderr, exit 1 if there was any.
fn redact() -> ExitCode {
    let mut output = std::io::BufWriter::new(std::io::stdout().lock());
    match redact::redact_lines(&mut std::io::stdin().lock(), &mut output) {
        Ok(bad) if bad.is_empty() => ExitCode::SUCCESS,
        Ok(bad) => {
            for line in &bad {
                eprintln!("stdin: line {}: {}", line.line, line.problem);
            }
            let plural = if bad.len() == 1 { "" } else { "s" };
            eprintln!("{} malformed line{plural} not redacted", bad.len());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("cannot redact: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Set by the appliance image's unit drop-in: the directory where the status page asks systemd for a selftest
/// run as root (`selftest.request`) and finds its report (`selftest.json`); see image/README.md.
const SELFTEST_VIA_SYSTEMD: &str = "AIRLOCK_SELFTEST_VIA_SYSTEMD";

/// How the status page runs the selftest: through systemd on the appliance image, otherwise this binary as a
/// child, with the configuration the service runs with.
fn selftest_command(config: Option<&Path>) -> airlock_runtime::SelftestCommand {
    if let Some(dir) = std::env::var_os(SELFTEST_VIA_SYSTEMD).filter(|dir| !dir.is_empty()) {
        let dir = PathBuf::from(dir);
        return airlock_runtime::SelftestCommand::Systemd {
            request: dir.join("selftest.request"),
            report: dir.join("selftest.json"),
        };
    }
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("airlock"));
    let mut args = vec!["selftest".into(), "--json".into()];
    if let Some(path) = config {
        // The selftest runs from the same working directory; an absolute path keeps it right if that changes.
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        args.extend(["--config".into(), path.into_os_string()]);
    }
    airlock_runtime::SelftestCommand::Child { program, args }
}

/// `airlock status-password FILE`: the first line of stdin, hashed with Argon2id, written to FILE (0640).
fn status_password(file: &Path) -> ExitCode {
    let line = match read_password() {
        Ok(line) => line,
        Err(error) => {
            eprintln!("cannot read the password from stdin: {error}");
            return ExitCode::FAILURE;
        }
    };
    let password = line.trim_end_matches(['\r', '\n']);
    if password.chars().count() < MIN_STATUS_PASSWORD_CHARS {
        eprintln!(
            "the password must be at least {MIN_STATUS_PASSWORD_CHARS} characters (give it on the first line \
             of stdin)"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let hash = match airlock_runtime::hash_password(password) {
        Ok(hash) => hash,
        Err(error) => {
            eprintln!("cannot hash the password: {error}");
            return ExitCode::FAILURE;
        }
    };
    let written = (|| -> std::io::Result<()> {
        let partial = file.with_extension("partial");
        let mut out = std::fs::File::create(&partial)?;
        // 0640 whatever the umask or a file left over from an earlier try.
        out.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o640))?;
        out.write_all(format!("{hash}\n").as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&partial, file)
    })();
    match written {
        Ok(()) => {
            eprintln!(
                "{}: status page password hash written (point status_page.password_file at it)",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// The first line of stdin; typed without echo when stdin is a terminal.
fn read_password() -> std::io::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, isatty, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let mut line = String::new();
    if !isatty(&stdin) {
        stdin.read_line(&mut line)?;
        return Ok(line);
    }
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    eprint!("technician password: ");
    tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    let read = stdin.read_line(&mut line);
    tcsetattr(&stdin, OptionalActions::Now, &saved)?;
    eprintln!();
    read.map(|_| line)
}

/// Shortest technician password `status-password` accepts.
const MIN_STATUS_PASSWORD_CHARS: usize = 12;

fn run(validated: Validated, recent_problems: airlock_telemetry::RecentProblems) -> ExitCode {
    let config = &validated.config;
    if let Some(profile) = &validated.hardware {
        tracing::info!(profile = %profile.id, arch = profile.arch.name(), "hardware profile");
    }
    // A missing or broken model is a start-up error naming the key, never a failure mid-call.
    if let Some(transcription) = &validated.transcription
        && let Err(error) = config::check_transcription_files(transcription)
    {
        eprintln!("{error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let recipients = match recipients(config) {
        Ok(recipients) => recipients,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let settings = airlock_runtime::Settings {
        sip_udp: validated.sip_udp,
        sip_tcp: validated.sip_tcp,
        sip_tls: validated.sip_tls.clone(),
        insecure_sdes_without_tls: config.sip.insecure_sdes_without_tls,
        sip_guard: validated.sip_guard(),
        max_tcp_connections_per_source: config.sip.max_tcp_connections_per_source,
        strict_src: config.sip.strict_src,
        max_calls: config.sip.max_calls,
        retry_after_secs: config.sip.retry_after_secs,
        media_bind_ip: config.media.bind_ip,
        media_advertise_ip: config.media.advertise_ip.unwrap_or(config.media.bind_ip),
        rtp_port_min: config.media.port_min,
        rtp_port_max: config.media.port_max,
        inactivity_timeout: Duration::from_secs(config.media.inactivity_timeout_secs),
        reorder_delay: Duration::from_millis(config.media.reorder_delay_ms),
        recipients,
        data_dir: config.storage.data_dir.clone(),
        metrics_listen: validated.metrics_listen,
        grace: config.shutdown.grace(),
        voicestream: validated.voicestream.clone(),
        transcription: validated.transcription.clone(),
        outbox: validated.outbox.clone(),
        control_api: validated.control_api.clone(),
        status_page: validated.status_page.clone(),
        recent_problems,
        capture: validated.capture.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(airlock_runtime::run(
        settings,
        termination_signal(),
        Arc::new(service::Systemd::from_environment()),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        // A model that passed the file checks but cannot be loaded (a corrupt VAD model or ONNX Runtime
        // library, whisper tensors that do not load) is the same configuration error as a missing one.
        Err(error @ airlock_runtime::RuntimeError::Transcription(_)) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The configured recipients, or the development identity's recipient (generated on first use).
fn recipients(config: &Config) -> Result<Vec<Recipient>, String> {
    if !config.recording.recipients.is_empty() {
        return config
            .recording
            .recipients
            .iter()
            .map(|text| Recipient::parse(text).map_err(|error| format!("recording.recipients: {error}")))
            .collect();
    }
    let data_dir = &config.storage.data_dir;
    let path = data_dir.join(DEV_IDENTITY_FILE);
    let identity = load_or_create_dev_identity(data_dir, &path)?;
    tracing::warn!(
        identity_file = %path.display(),
        "NO RECIPIENTS CONFIGURED: recording to a development identity whose SECRET KEY is stored on this \
         machine. Anyone with this file can decrypt every recording. Never use this on a real appliance: \
         set recording.recipients to public keys whose secret halves live elsewhere."
    );
    Ok(vec![identity.recipient()])
}

fn load_or_create_dev_identity(data_dir: &Path, path: &Path) -> Result<DevIdentity, String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return DevIdentity::from_identity_file(&text)
            .map_err(|error| format!("{}: not a usable age identity file: {error}", path.display()));
    }
    std::fs::create_dir_all(data_dir).map_err(|error| format!("{}: {error}", data_dir.display()))?;
    let identity = DevIdentity::generate()
        .map_err(|error| format!("cannot generate a development identity: {error}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    file.write_all(identity.to_identity_file().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(identity)
}
