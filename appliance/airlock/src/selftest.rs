//! `airlock selftest`: the technician's and NOC's checklist of what this box needs to record a site's calls —
//! the hardware profile's NICs, TPM, watchdog and audio devices, the listen addresses and ports, time sync, disk
//! and spool room, the sealed data partition, the speech models, certificates, and the S3 and MQTT uplink. Each
//! line says OK, WARN, FAIL or SKIP with what was seen and, when not OK, what to do. Read-only: it binds ports
//! only to learn whether they are free, connects to S3/MQTT under a separate client id, and writes nothing.
//! Nothing it prints names a phone number, a call, or a credential.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Config, Validated};

/// How long each uplink probe may take.
const UPLINK_TIMEOUT: Duration = Duration::from_secs(10);
/// Certificates expiring sooner than this are a warning.
const CERTIFICATE_WARN_DAYS: i64 = 30;
/// The spool is a warning above this share of `outbox.max_mib`, a failure above the admission limit.
const SPOOL_WARN_SHARE: f64 = 0.5;

/// SHA-256 of the speech files the image ships (ci/install-asr-model, ci/install-vad).
const KNOWN_FILES: &[(&str, &str)] = &[
    (
        "ggml-tiny.en-q8_0.bin",
        "603d2759323b6059fe92f258b2a9a27ebd3bafc8dfbcddae016b087e1309bbf2",
    ),
    (
        "silero_vad.onnx",
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    ),
    #[cfg(target_arch = "x86_64")]
    (
        "libonnxruntime.so",
        "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
    ),
    #[cfg(target_arch = "aarch64")]
    (
        "libonnxruntime.so",
        "8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => " OK ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable id for machines, e.g. `uplink.s3`, `nic.sbc0`.
    pub id: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do (absent when OK).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(id: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        id: id.into(),
        status: Status::Ok,
        detail: one_line(detail.into()),
        fix: None,
    }
}

/// Details quote other programs' messages, which may span lines: the checklist keeps one line per check.
fn one_line(text: String) -> String {
    if text.contains('\n') {
        text.split('\n')
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        text
    }
}

fn not_ok(status: Status, id: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        id: id.into(),
        status,
        detail: one_line(detail.into()),
        fix: Some(fix.into()),
    }
}

/// `airlock selftest [--config FILE] [--json]`: 0 when nothing failed, 1 otherwise.
pub fn run(config: Option<&Path>, json: bool) -> ExitCode {
    let checks = collect(config);
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, &checks)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        render(&checks, &mut out)
    };
    if let Err(error) = written {
        eprintln!("airlock selftest: cannot write the report: {error}");
        return ExitCode::FAILURE;
    }
    if checks.iter().any(|check| check.status == Status::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn render(checks: &[Check], out: &mut impl Write) -> std::io::Result<()> {
    for check in checks {
        writeln!(
            out,
            "[{}] {:<26} {}",
            check.status.label(),
            check.id,
            check.detail
        )?;
        if let Some(fix) = &check.fix {
            writeln!(out, "       {:<26} → {fix}", "")?;
        }
    }
    let count = |status| checks.iter().filter(|check| check.status == status).count();
    writeln!(
        out,
        "{} checks: {} ok, {} warnings, {} failed, {} skipped",
        checks.len(),
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Skip)
    )
}

/// The configuration the service runs with on the appliance image; selftest checks it when no --config is
/// given and it exists.
const IMAGE_CONFIG: &str = "/etc/airlock/airlock.toml";

/// Every check, in checklist order.
pub fn collect(config_path: Option<&Path>) -> Vec<Check> {
    let config_path = config_path.or_else(|| Some(Path::new(IMAGE_CONFIG)).filter(|path| path.exists()));
    let validated = match config_path {
        Some(path) => Config::load(path),
        None => Config::default().validate(),
    };
    let source = config_path.map_or("embedded defaults".to_string(), |path| path.display().to_string());
    let validated = match validated {
        Ok(validated) => validated,
        Err(error) => {
            return vec![not_ok(
                Status::Fail,
                "config",
                format!("{error}"),
                "fix the key named above (docs/CONFIG.md lists every key), then run selftest again",
            )];
        }
    };
    let mut checks = vec![ok("config", format!("{source} is valid"))];
    let interfaces = Interfaces::read();
    match &validated.hardware {
        Some(profile) => {
            checks.push(ok(
                "hw.profile",
                format!("{} ({})", profile.id, profile.description),
            ));
            checks.extend(nic_checks(profile, &interfaces));
        }
        None => checks.push(not_ok(
            Status::Skip,
            "hw.profile",
            "no [hardware] profile configured: NICs, TPM, watchdog and audio devices are not checked",
            "set [hardware] profile to this box's hw/*.toml (the image's factory configuration does)",
        )),
    }
    let running = running_metrics(validated.metrics_listen);
    checks.extend(listener_checks(&validated, &interfaces));
    checks.push(time_sync());
    checks.extend(storage_checks(&validated));
    if let Some(profile) = &validated.hardware {
        checks.push(tpm_check(profile));
        checks.push(data_partition_check(profile, &validated.config.storage.data_dir));
        checks.push(watchdog_check(profile));
        checks.extend(audio_checks(profile));
    }
    checks.extend(capture_check(&validated, running.as_deref()));
    checks.extend(model_checks(&validated));
    checks.extend(certificate_checks(&validated.config, SystemTime::now()));
    checks.extend(uplink_checks(&validated));
    checks
}

// --- network interfaces ------------------------------------------------------------------------------------

/// One network interface as `ip -json address` reports it.
#[derive(Debug, Clone, PartialEq)]
struct Interface {
    name: String,
    mac: Option<String>,
    /// udev-style `ID_PATH` of its device (`pci-0000:02:00.0`, `platform-fe300000.ethernet`), when it has one.
    path: Option<String>,
    up: bool,
    addresses: Vec<IpAddr>,
}

#[derive(Debug, Default)]
struct Interfaces {
    list: Vec<Interface>,
    /// Why the list is empty, when it could not be read.
    error: Option<String>,
}

impl Interfaces {
    fn read() -> Interfaces {
        match Command::new("ip").args(["-json", "address", "show"]).output() {
            Ok(output) if output.status.success() => match parse_ip_json(&output.stdout) {
                Ok(list) => Interfaces { list, error: None },
                Err(error) => Interfaces {
                    list: Vec::new(),
                    error: Some(format!("cannot read `ip -json address`: {error}")),
                },
            },
            Ok(output) => Interfaces {
                list: Vec::new(),
                error: Some(format!("`ip -json address` failed: {}", output.status)),
            },
            Err(error) => Interfaces {
                list: Vec::new(),
                error: Some(format!("cannot run `ip` (iproute2): {error}")),
            },
        }
    }

    fn has_address(&self, address: IpAddr) -> bool {
        self.list
            .iter()
            .any(|interface| interface.addresses.contains(&address))
    }
}

fn parse_ip_json(text: &[u8]) -> Result<Vec<Interface>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Link {
        ifname: String,
        #[serde(default)]
        address: Option<String>,
        #[serde(default)]
        operstate: Option<String>,
        #[serde(default)]
        flags: Vec<String>,
        #[serde(default)]
        addr_info: Vec<Address>,
    }
    #[derive(serde::Deserialize)]
    struct Address {
        local: Option<String>,
    }
    let links: Vec<Link> = serde_json::from_slice(text)?;
    Ok(links
        .into_iter()
        .map(|link| Interface {
            up: link.operstate.as_deref() == Some("UP")
                || (link.operstate.as_deref() == Some("UNKNOWN")
                    && link.flags.iter().any(|f| f == "LOWER_UP")),
            addresses: link
                .addr_info
                .iter()
                .filter_map(|address| address.local.as_deref()?.parse().ok())
                .collect(),
            path: device_path(&link.ifname),
            name: link.ifname,
            mac: link.address.map(|mac| mac.to_ascii_lowercase()),
        })
        .collect())
}

/// `pci-0000:02:00.0` for a NIC whose sysfs device is PCI function 0000:02:00.0 (the last element of the
/// path udev's `ID_PATH` names for an on-board or slot NIC), `platform-NAME` for a SoC one.
fn device_path(interface: &str) -> Option<String> {
    let device = Path::new("/sys/class/net").join(interface).join("device");
    let name = std::fs::canonicalize(&device)
        .ok()?
        .file_name()?
        .to_str()?
        .to_string();
    let subsystem = std::fs::canonicalize(device.join("subsystem"))
        .ok()?
        .file_name()?
        .to_str()?
        .to_string();
    Some(format!("{subsystem}-{name}"))
}

fn nic_checks(profile: &airlock_hw::Profile, interfaces: &Interfaces) -> Vec<Check> {
    if let Some(error) = &interfaces.error {
        return vec![not_ok(
            Status::Fail,
            "nic",
            error.clone(),
            "install iproute2 (the image has it) and run selftest again",
        )];
    }
    profile
        .nics
        .iter()
        .map(|nic| {
            let id = format!("nic.{}", nic.name);
            let roles = nic.roles.iter().map(|role| format!("{role:?}").to_lowercase()).collect::<Vec<_>>().join("+");
            let found = interfaces.list.iter().find(|interface| {
                interface.name == nic.name
                    || nic.kernel_name.as_deref() == Some(interface.name.as_str())
                    || (nic.mac.is_some() && interface.mac == nic.mac)
                    || (nic.path.is_some() && interface.path == nic.path)
            });
            let Some(interface) = found else {
                return not_ok(
                    Status::Fail,
                    id,
                    format!("{roles}: no interface named {} (nor its MAC or kernel name) on this box", nic.name),
                    "check the cable-side port is the one the hardware profile names, and that the profile matches this box",
                );
            };
            if !interface.up {
                return not_ok(
                    Status::Fail,
                    id,
                    format!("{roles}: {} has no link", interface.name),
                    format!("plug the {roles} cable into {} and check the switch port", nic.name),
                );
            }
            let usable: Vec<&IpAddr> = interface
                .addresses
                .iter()
                .filter(|address| !address.is_loopback() && !is_link_local(address))
                .collect();
            if usable.is_empty() {
                return not_ok(
                    Status::Fail,
                    id,
                    format!("{roles}: {} is up but has no address", interface.name),
                    "check DHCP on that network, or give the port a static address in the site configuration",
                );
            }
            ok(id, format!("{roles}: {} up, {} address(es)", interface.name, usable.len()))
        })
        .collect()
}

fn is_link_local(address: &IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

// --- listen addresses and ports ------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// Every address airlock listens on, by configuration key.
fn listeners(validated: &Validated) -> Vec<(&'static str, Transport, SocketAddr)> {
    let config = &validated.config;
    let mut listeners = Vec::new();
    if let Some(address) = validated.sip_udp {
        listeners.push(("sip.udp", Transport::Udp, address));
    }
    if let Some(address) = validated.sip_tcp {
        listeners.push(("sip.tcp", Transport::Tcp, address));
    }
    let optional = [
        (
            "sip.tls.listen",
            config.sip.tls.as_ref().map(|tls| tls.listen.as_str()),
        ),
        ("voicestream.listen", Some(config.voicestream.listen.as_str())),
        (
            "voicestream.webhooks.listen",
            config
                .voicestream
                .webhooks
                .as_ref()
                .map(|webhooks| webhooks.listen.as_str()),
        ),
        ("control_api.listen", Some(config.control_api.listen.as_str())),
        ("status_page.listen", Some(config.status_page.listen.as_str())),
    ];
    for (key, listen) in optional {
        if let Some(address) = listen.and_then(|listen| listen.parse::<SocketAddr>().ok()) {
            listeners.push((key, Transport::Tcp, address));
        }
    }
    if let Some(address) = validated.metrics_listen {
        listeners.push(("metrics.listen", Transport::Tcp, address));
    }
    listeners
}

fn listener_checks(validated: &Validated, interfaces: &Interfaces) -> Vec<Check> {
    let running = airlock_answers(validated.metrics_listen) || airlock_unit_active();
    let mut checks = Vec::new();
    let media_ip = validated.config.media.bind_ip;
    let mut addresses: Vec<(&str, IpAddr)> = listeners(validated)
        .iter()
        .map(|&(key, _, address)| (key, address.ip()))
        .collect();
    addresses.push(("media.bind_ip", media_ip));
    if interfaces.error.is_none() {
        let mut seen = BTreeSet::new();
        for (key, ip) in addresses {
            if ip.is_unspecified() || ip.is_loopback() || !seen.insert(ip) {
                continue;
            }
            checks.push(if interfaces.has_address(ip) {
                ok(
                    format!("address.{key}"),
                    format!("{key}: this box has the address"),
                )
            } else {
                not_ok(
                    Status::Fail,
                    format!("address.{key}"),
                    format!("{key}: no interface of this box has that address"),
                    format!(
                        "give the NIC of that role the address, or correct {key} in the site configuration"
                    ),
                )
            });
        }
    }
    for (key, transport, address) in listeners(validated) {
        let id = format!("port.{key}");
        let what = format!("{key} {:?} port {}", transport, address.port())
            .replace("Udp", "UDP")
            .replace("Tcp", "TCP");
        let bound = match transport {
            Transport::Udp => UdpSocket::bind(address).map(drop),
            Transport::Tcp => TcpListener::bind(address).map(drop),
        };
        checks.push(match bound {
            Ok(()) if running => not_ok(
                Status::Fail,
                id,
                format!("{what} is free although airlock is running"),
                "airlock did not bind it: see `journalctl -u airlock` for the listener's error",
            ),
            Ok(()) => ok(id, format!("{what} is free (airlock is not running)")),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && running => {
                ok(id, format!("{what} is bound by the running airlock"))
            }
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => not_ok(
                Status::Fail,
                id,
                format!("{what} is taken by another program"),
                format!("stop the program holding it (`ss -lpn` shows which), or move {key}"),
            ),
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied && running => ok(
                id,
                format!("{what}: not bindable by this user; airlock is running"),
            ),
            Err(error) => not_ok(
                Status::Warn,
                id,
                format!("{what}: cannot test-bind it here ({})", error.kind()),
                "run selftest as root to check this port",
            ),
        });
    }
    checks
}

/// Whether systemd runs airlock.service (the appliance image), for when no metrics listener is configured.
fn airlock_unit_active() -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", "airlock.service"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether an airlock answers on the metrics listener (its `/metrics` carries `airlock_` series).
fn airlock_answers(metrics: Option<SocketAddr>) -> bool {
    running_metrics(metrics).is_some_and(|body| body.contains("airlock_"))
}

/// The running airlock's metrics exposition, if its metrics endpoint answers.
fn running_metrics(metrics: Option<SocketAddr>) -> Option<String> {
    let mut address = metrics?;
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        });
    }
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = Vec::new();
    let _ = stream.take(4 << 20).read_to_end(&mut body);
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// The value of an unlabelled sample in a metrics exposition.
fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// `[capture]`: while airlock runs, whether it has the device open (its own metric); otherwise whether the
/// profile's card is there (an `alsa:` PCM can only be told by opening it, which airlock does when it runs).
fn capture_check(validated: &Validated, running: Option<&str>) -> Option<Check> {
    let device = validated.config.capture.device.as_str();
    if device.is_empty() {
        return None;
    }
    let id = "capture.device";
    let fix = "check that the audio interface is plugged in and is the one the profile's [[audio]] names (card \
               id in /proc/asound/cards); airlock retries the device by itself (alarm capture_device)";
    if let Some(up) = running.and_then(|body| sample(body, "airlock_capture_device_up")) {
        return Some(if up >= 1.0 {
            ok(
                id,
                format!("the running airlock records from {device} (device open)"),
            )
        } else {
            not_ok(
                Status::Fail,
                id,
                format!("the running airlock cannot open {device}"),
                fix,
            )
        });
    }
    let card = validated.hardware.as_ref().and_then(|profile| {
        profile
            .audio
            .iter()
            .find(|audio| audio.name == device)
            .map(|audio| audio.card.clone())
    });
    Some(match card {
        Some(card) => {
            let cards = std::fs::read_to_string("/proc/asound/cards").unwrap_or_default();
            if alsa_card_ids(&cards).contains(&card) {
                ok(
                    id,
                    format!("{device}: ALSA card {card} present (airlock is not running)"),
                )
            } else {
                not_ok(
                    Status::Fail,
                    id,
                    format!("{device}: ALSA card {card} is missing"),
                    fix,
                )
            }
        }
        None => not_ok(
            Status::Skip,
            id,
            format!("{device} is checked by opening it, which airlock does when it runs"),
            "start airlock, then run selftest again",
        ),
    })
}

// --- time -------------------------------------------------------------------------------------------------------

fn time_sync() -> Check {
    let output = Command::new("timedatectl")
        .args(["show", "--property=NTPSynchronized", "--value"])
        .output();
    match output {
        Ok(output) if output.status.success() => {
            if String::from_utf8_lossy(&output.stdout).trim() == "yes" {
                ok("time.sync", "the clock is synchronised (NTP)")
            } else {
                not_ok(
                    Status::Fail,
                    "time.sync",
                    "the clock is not synchronised",
                    "let the uplink reach an NTP server (UDP 123; systemd-timesyncd), or set NTP= in the site configuration",
                )
            }
        }
        Ok(output) => not_ok(
            Status::Warn,
            "time.sync",
            format!(
                "timedatectl could not tell ({})",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            "check systemd-timedated on this box; on the appliance image it is present",
        ),
        Err(error) => not_ok(
            Status::Warn,
            "time.sync",
            format!("cannot run timedatectl: {error}"),
            "run selftest on the appliance image, which has systemd's time tools",
        ),
    }
}

// --- disk, spool -------------------------------------------------------------------------------------------------

fn storage_checks(validated: &Validated) -> Vec<Check> {
    let data_dir = &validated.config.storage.data_dir;
    let outbox = &validated.outbox;
    let mut checks = Vec::new();
    // Before airlock's first start the data directory does not exist yet: measure where it will be created.
    let measured = data_dir
        .ancestors()
        .find(|dir| dir.as_os_str().is_empty() || dir.exists())
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }
        })
        .unwrap_or(data_dir);
    let not_yet = if measured == data_dir {
        ""
    } else {
        " (not created yet: airlock creates it at start)"
    };
    match rustix::fs::statvfs(measured) {
        Ok(stat) => {
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            let total = stat.f_blocks.saturating_mul(stat.f_frsize);
            let detail = format!(
                "{} free of {} for {}{not_yet}",
                gib(free),
                gib(total),
                data_dir.display()
            );
            checks.push(if free < outbox.reserve_bytes {
                not_ok(
                    Status::Fail,
                    "disk.room",
                    detail,
                    "the disk is nearly full: get the uplink delivering (the spool empties) or free space on the data partition",
                )
            } else if free < outbox.reserve_bytes.saturating_mul(4) {
                not_ok(
                    Status::Warn,
                    "disk.room",
                    detail,
                    "little room left: check the uplink delivers and on-device retention is not too long",
                )
            } else {
                ok("disk.room", detail)
            });
        }
        Err(error) => checks.push(not_ok(
            Status::Fail,
            "disk.room",
            format!("{}: {error}", data_dir.display()),
            "create the data directory (storage.data_dir) or fix its permissions",
        )),
    }
    let spool = data_dir.join("outbox");
    if let Err(error) = std::fs::read_dir(&spool)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        checks.push(not_ok(
            Status::Warn,
            "spool.depth",
            format!("cannot read {}: {error}", spool.display()),
            "run selftest as root to measure the spool",
        ));
        return checks;
    }
    let used = directory_bytes(&spool);
    let admission_limit = outbox.max_bytes.saturating_sub(outbox.reserve_bytes);
    let detail = format!(
        "{} spooled of {} (new calls refused above {})",
        gib(used),
        gib(outbox.max_bytes),
        gib(admission_limit)
    );
    checks.push(if used >= admission_limit {
        not_ok(
            Status::Fail,
            "spool.depth",
            detail,
            "the uplink is not taking artifacts: fix S3/MQTT reachability (below); new calls are being refused",
        )
    } else if used as f64 >= outbox.max_bytes as f64 * SPOOL_WARN_SHARE {
        not_ok(
            Status::Warn,
            "spool.depth",
            detail,
            "the spool is growing: check the uplink checks below and the NOC's AirlockSpool alerts",
        )
    } else {
        ok("spool.depth", detail)
    });
    checks
}

fn directory_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => directory_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |metadata| metadata.len()),
            Err(_) => 0,
        })
        .sum()
}

fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

// --- TPM, data partition, watchdog, audio (hardware profile) ----------------------------------------------------

fn tpm_check(profile: &airlock_hw::Profile) -> Check {
    let Some(device) = &profile.tpm.device else {
        return ok("tpm", "the hardware profile has no TPM");
    };
    if Path::new(device).exists() {
        ok("tpm", format!("{device} present"))
    } else {
        not_ok(
            Status::Fail,
            "tpm",
            format!("{device} is missing"),
            "enable the TPM in the firmware set-up (Security → TPM 2.0), then reboot",
        )
    }
}

fn data_partition_check(profile: &airlock_hw::Profile, data_dir: &Path) -> Check {
    if profile.tpm.disk_encryption == airlock_hw::DiskEncryption::None {
        return ok(
            "data.sealed",
            "the hardware profile keeps the data partition unencrypted",
        );
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let absolute = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let Some(source) = mount_source(&mountinfo, &absolute) else {
        return not_ok(
            Status::Fail,
            "data.sealed",
            format!("cannot tell which filesystem holds {}", data_dir.display()),
            "check storage.data_dir points into /var (the encrypted data partition)",
        );
    };
    match dm_crypt_kind(&source) {
        Some(kind) if kind.starts_with("CRYPT-LUKS2") => ok(
            "data.sealed",
            format!("{} is on LUKS2 ({source})", data_dir.display()),
        ),
        _ => not_ok(
            Status::Fail,
            "data.sealed",
            format!(
                "{} is on {source}, which is not LUKS2-encrypted",
                data_dir.display()
            ),
            "recordings must stay on the TPM-sealed data partition: point storage.data_dir into /var, or re-run the first-boot set-up (docs/IMAGE.md)",
        ),
    }
}

/// The mount source of the filesystem holding `path` (the longest mount point that is a prefix of it).
fn mount_source(mountinfo: &str, path: &Path) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = unescape_mount(fields.get(4)?);
            let separator = fields.iter().position(|field| *field == "-")?;
            let source = fields.get(separator + 2)?;
            path.starts_with(&mount_point)
                .then(|| (mount_point.as_os_str().len(), (*source).to_string()))
        })
        .max_by_key(|(length, _)| *length)
        .map(|(_, source)| source)
}

fn unescape_mount(field: &str) -> PathBuf {
    PathBuf::from(
        field
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\"),
    )
}

/// The device-mapper UUID (`CRYPT-LUKS2-…` for a LUKS2 mapping) of a `/dev/mapper/NAME` or `/dev/dm-N` source.
fn dm_crypt_kind(source: &str) -> Option<String> {
    let device = std::fs::canonicalize(source).ok()?;
    let name = device.file_name()?.to_str()?.to_string();
    std::fs::read_to_string(format!("/sys/class/block/{name}/dm/uuid"))
        .ok()
        .map(|uuid| uuid.trim().to_string())
}

fn watchdog_check(profile: &airlock_hw::Profile) -> Check {
    let device = &profile.watchdog.device;
    if Path::new(device).exists() {
        ok(
            "watchdog",
            format!("{device} present ({})", profile.watchdog.driver),
        )
    } else {
        not_ok(
            Status::Fail,
            "watchdog",
            format!("{device} is missing"),
            format!(
                "the {} watchdog driver did not load: check the firmware enables the watchdog, or that the profile matches this box",
                profile.watchdog.driver
            ),
        )
    }
}

fn audio_checks(profile: &airlock_hw::Profile) -> Vec<Check> {
    if profile.audio.is_empty() {
        return Vec::new();
    }
    let cards = std::fs::read_to_string("/proc/asound/cards").unwrap_or_default();
    let present = alsa_card_ids(&cards);
    profile
        .audio
        .iter()
        .map(|audio| {
            let id = format!("audio.{}", audio.name);
            if present.iter().any(|card| card == &audio.card) {
                ok(id, format!("ALSA card {} present", audio.card))
            } else {
                not_ok(
                    Status::Fail,
                    id,
                    format!("ALSA card {} is missing", audio.card),
                    "plug in the audio interface (USB) the profile names, then run selftest again",
                )
            }
        })
        .collect()
}

/// Card ids from `/proc/asound/cards` (` 0 [PCH            ]: HDA-Intel - …`).
fn alsa_card_ids(cards: &str) -> Vec<String> {
    cards
        .lines()
        .filter_map(|line| {
            let open = line.find('[')?;
            let close = line[open..].find(']')? + open;
            line[..open].trim().parse::<u32>().ok()?;
            Some(line[open + 1..close].trim().to_string())
        })
        .collect()
}

// --- models -------------------------------------------------------------------------------------------------------

fn model_checks(validated: &Validated) -> Vec<Check> {
    let Some(transcription) = &validated.transcription else {
        return vec![ok("models", "transcription is off: no speech model needed")];
    };
    [
        &transcription.model,
        &transcription.vad_model,
        &transcription.onnxruntime_library,
    ]
    .into_iter()
    .map(|path| model_check(path))
    .collect()
}

fn model_check(path: &Path) -> Check {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("?")
        .to_string();
    let id = format!("model.{name}");
    let digest = match std::fs::File::open(path)
        .and_then(airlock_outbox::spool::sha256_of)
        .map(|(digest, _)| hex::encode(digest))
    {
        Ok(digest) => digest,
        Err(error) => {
            return not_ok(
                Status::Fail,
                id,
                format!("{}: {error}", path.display()),
                "the image ships the models under /usr/share/airlock/models; check [transcription] models_dir",
            );
        }
    };
    match KNOWN_FILES.iter().find(|(known, _)| *known == name) {
        Some((_, expected)) if *expected == digest => ok(id, "present, SHA-256 as shipped"),
        Some(_) => not_ok(
            Status::Fail,
            id,
            format!("{} does not have the SHA-256 this release ships", path.display()),
            "the file is damaged or replaced: re-flash or update the image (models live on the verified root)",
        ),
        None => not_ok(
            Status::Warn,
            id,
            format!(
                "{} is not a file this release ships (SHA-256 {digest})",
                path.display()
            ),
            "a site-supplied model: compare its SHA-256 with the one its supplier published",
        ),
    }
}

// --- certificates -----------------------------------------------------------------------------------------------

/// Configured certificate files, by configuration key.
fn certificate_files(config: &Config) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    if let Some(tls) = &config.sip.tls {
        files.push(("sip.tls.certificate".to_string(), tls.certificate.clone()));
        if let Some(ca) = &tls.client_ca {
            files.push(("sip.tls.client_ca".to_string(), ca.clone()));
        }
    }
    if !config.voicestream.listen.is_empty()
        && let Some(certificate) = &config.voicestream.certificate
    {
        files.push(("voicestream.certificate".to_string(), certificate.clone()));
    }
    if let Some(certificate) = config
        .voicestream
        .webhooks
        .as_ref()
        .and_then(|webhooks| webhooks.certificate.clone())
    {
        files.push(("voicestream.webhooks.certificate".to_string(), certificate));
    }
    if !config.control_api.listen.is_empty() {
        files.push((
            "control_api.certificate".to_string(),
            config.control_api.certificate.clone(),
        ));
    }
    if !config.status_page.listen.is_empty() {
        files.push((
            "status_page.certificate".to_string(),
            config.status_page.certificate.clone(),
        ));
    }
    if let Some(mqtt) = &config.outbox.mqtt {
        files.push(("outbox.mqtt.ca".to_string(), mqtt.ca.clone()));
        if !mqtt.certificate.as_os_str().is_empty() {
            files.push(("outbox.mqtt.certificate".to_string(), mqtt.certificate.clone()));
        }
    }
    if let Some(s3) = &config.outbox.s3
        && !s3.ca.as_os_str().is_empty()
    {
        files.push(("outbox.s3.ca".to_string(), s3.ca.clone()));
    }
    files
}

fn certificate_checks(config: &Config, now: SystemTime) -> Vec<Check> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    certificate_files(config)
        .into_iter()
        .map(|(key, path)| certificate_check(&key, &path, now))
        .collect()
}

/// The first certificate of a PEM file (the leaf of a chain, or the first CA of a bundle).
fn certificate_check(key: &str, path: &Path, now: i64) -> Check {
    let id = format!("cert.{key}");
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(error) => {
            return not_ok(
                Status::Fail,
                id,
                format!("{}: {error}", path.display()),
                format!("install the file {key} names (provisioning bundle), or correct {key}"),
            );
        }
    };
    let validity = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .next()
        .and_then(|block| block.ok())
        .and_then(|block| {
            let (_, certificate) = x509_parser::parse_x509_certificate(&block.contents).ok()?;
            let validity = certificate.validity();
            Some((validity.not_before.timestamp(), validity.not_after.timestamp()))
        });
    let Some((not_before, not_after)) = validity else {
        return not_ok(
            Status::Fail,
            id,
            format!("{} holds no readable PEM certificate", path.display()),
            format!("replace the file {key} names with a PEM certificate"),
        );
    };
    let until = format_day(not_after);
    let days_left = (not_after - now).div_euclid(86_400);
    if now < not_before {
        not_ok(
            Status::Fail,
            id,
            format!("not valid before {}", format_day(not_before)),
            "check the clock (time.sync) or install a certificate valid now",
        )
    } else if now > not_after {
        not_ok(
            Status::Fail,
            id,
            format!("expired on {until}"),
            format!("install a renewed certificate for {key} (a new provisioning bundle)"),
        )
    } else if days_left < CERTIFICATE_WARN_DAYS {
        not_ok(
            Status::Warn,
            id,
            format!("expires on {until}, in {days_left} day(s)"),
            format!("renew the certificate for {key} before it expires"),
        )
    } else {
        ok(id, format!("valid until {until} ({days_left} days)"))
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
fn format_day(unix: i64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    airlock_runtime::rfc3339(time)[..10].to_string()
}

// --- uplink -------------------------------------------------------------------------------------------------------

fn uplink_checks(validated: &Validated) -> Vec<Check> {
    let outbox = &validated.outbox;
    let mut checks = Vec::new();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            return vec![not_ok(
                Status::Fail,
                "uplink",
                format!("cannot start the probe runtime: {error}"),
                "run selftest again; if it persists, the box is out of memory or threads",
            )];
        }
    };
    match &outbox.s3 {
        None => checks.push(ok(
            "uplink.s3",
            "no S3 configured: artifacts go to the local uplink/ directory",
        )),
        Some(s3) => {
            let probe = runtime.block_on(async {
                tokio::time::timeout(UPLINK_TIMEOUT, airlock_runtime::probe_bucket(s3)).await
            });
            checks.push(match probe {
                Ok(airlock_runtime::BucketProbe::Ready) => ok("uplink.s3", "S3 bucket reachable with these credentials"),
                Ok(airlock_runtime::BucketProbe::Unreachable(why)) => not_ok(
                    Status::Fail,
                    "uplink.s3",
                    format!("S3 unreachable: {why}"),
                    "check the uplink NIC, DNS, firewall and outbox.s3.endpoint; artifacts wait in the spool meanwhile",
                ),
                Ok(airlock_runtime::BucketProbe::CredentialsRefused(why)) => not_ok(
                    Status::Fail,
                    "uplink.s3",
                    format!("S3 refused the credentials: {why}"),
                    "check outbox.s3.access_key_id and the secret key file (a new provisioning bundle)",
                ),
                Ok(airlock_runtime::BucketProbe::BucketUnusable(why)) => not_ok(
                    Status::Fail,
                    "uplink.s3",
                    format!("S3 bucket not usable: {why}"),
                    "check outbox.s3.bucket and region with the storage administrator",
                ),
                Err(_) => not_ok(
                    Status::Fail,
                    "uplink.s3",
                    format!("S3 did not answer within {} s", UPLINK_TIMEOUT.as_secs()),
                    "check the uplink NIC, DNS, firewall and outbox.s3.endpoint",
                ),
            });
        }
    }
    match &outbox.mqtt {
        None => checks.push(ok(
            "uplink.mqtt",
            "no MQTT configured: events go to the local uplink/events.jsonl",
        )),
        Some(mqtt) => {
            let check = match airlock_runtime::mqtt_tls_config(mqtt) {
                Err(error) => not_ok(
                    Status::Fail,
                    "uplink.mqtt",
                    format!("MQTT TLS set-up: {error}"),
                    "check outbox.mqtt.ca, certificate and private_key",
                ),
                Ok(tls) => match runtime.block_on(airlock_runtime::probe_broker(mqtt, tls, UPLINK_TIMEOUT)) {
                    airlock_runtime::BrokerProbe::Ready => {
                        ok("uplink.mqtt", "MQTT broker accepted the connection")
                    }
                    airlock_runtime::BrokerProbe::Unreachable(why) => not_ok(
                        Status::Fail,
                        "uplink.mqtt",
                        format!("MQTT broker unreachable: {why}"),
                        "check the uplink NIC, DNS, firewall and outbox.mqtt.broker; events wait in the spool meanwhile",
                    ),
                    airlock_runtime::BrokerProbe::Refused(why) => not_ok(
                        Status::Fail,
                        "uplink.mqtt",
                        format!("MQTT broker refused: {why}"),
                        "check outbox.mqtt.username / password_file / certificate and the broker's ACL for this client id",
                    ),
                },
            };
            checks.push(check);
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_come_from_ip_json_with_state_and_addresses() {
        let json = br#"[
          {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"operstate":"UNKNOWN",
           "address":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1"}]},
          {"ifindex":2,"ifname":"sbc0","flags":["BROADCAST","UP","LOWER_UP"],"operstate":"UP",
           "address":"52:54:00:AB:CD:EF","addr_info":[{"family":"inet","local":"10.1.2.3"},
           {"family":"inet6","local":"fe80::1"}]},
          {"ifindex":3,"ifname":"uplink0","flags":["NO-CARRIER","BROADCAST","UP"],"operstate":"DOWN","addr_info":[]}
        ]"#;
        let list = parse_ip_json(json).unwrap();
        assert_eq!(list.len(), 3);
        assert!(list[0].up, "loopback reports UNKNOWN with LOWER_UP");
        assert_eq!(list[1].mac.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(
            list[1].addresses,
            vec!["10.1.2.3".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]
        );
        assert!(!list[2].up);
        assert!(is_link_local(&"fe80::1".parse().unwrap()));
        assert!(!is_link_local(&"10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn the_mount_holding_a_path_is_the_longest_prefix() {
        let mountinfo = "\
22 1 253:0 / / ro,relatime shared:1 - erofs /dev/mapper/root ro
30 22 253:1 / /var rw,relatime shared:2 - ext4 /dev/mapper/airlock-data rw
31 30 0:40 / /var/lib/with\\040space rw - tmpfs tmpfs rw
";
        assert_eq!(
            mount_source(mountinfo, Path::new("/var/lib/airlock")).as_deref(),
            Some("/dev/mapper/airlock-data")
        );
        assert_eq!(
            mount_source(mountinfo, Path::new("/usr/bin")).as_deref(),
            Some("/dev/mapper/root")
        );
        assert_eq!(
            mount_source(mountinfo, Path::new("/var/lib/with space/x")).as_deref(),
            Some("tmpfs")
        );
        assert_eq!(mount_source("", Path::new("/var")), None);
    }

    #[test]
    fn samples_are_read_from_the_exposition() {
        let exposition = "# HELP airlock_capture_device_up …\nairlock_capture_device_up 1\n\
                          airlock_capture_device_up_total 7\nairlock_active_calls 2\n";
        assert_eq!(sample(exposition, "airlock_capture_device_up"), Some(1.0));
        assert_eq!(sample(exposition, "airlock_active_calls"), Some(2.0));
        assert_eq!(sample(exposition, "airlock_missing"), None);
    }

    #[test]
    fn alsa_cards_are_read_by_id() {
        let cards = " 0 [PCH            ]: HDA-Intel - HDA Intel PCH\n                      HDA Intel PCH at 0xf7f10000 irq 32\n 1 [Device         ]: USB-Audio - USB Audio Device\n";
        assert_eq!(alsa_card_ids(cards), vec!["PCH", "Device"]);
        assert!(alsa_card_ids("--- no soundcards ---\n").is_empty());
    }

    #[test]
    fn the_report_names_every_failure_with_what_to_do_and_counts() {
        let checks = vec![
            ok("config", "valid"),
            not_ok(
                Status::Fail,
                "uplink.s3",
                "S3 unreachable: connection refused",
                "check the uplink",
            ),
            not_ok(Status::Warn, "cert.x", "expires soon", "renew it"),
        ];
        let mut out = Vec::new();
        render(&checks, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("[FAIL] uplink.s3"), "{text}");
        assert!(text.contains("→ check the uplink"), "{text}");
        assert!(
            text.ends_with("3 checks: 1 ok, 1 warnings, 1 failed, 0 skipped\n"),
            "{text}"
        );
    }

    #[test]
    fn a_known_file_with_another_digest_fails_and_an_unknown_one_warns() {
        let dir = std::env::temp_dir().join(format!("airlock-selftest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let damaged = dir.join("silero_vad.onnx");
        std::fs::write(&damaged, b"not the model").unwrap();
        assert_eq!(model_check(&damaged).status, Status::Fail);
        let site = dir.join("site-model.bin");
        std::fs::write(&site, b"x").unwrap();
        assert_eq!(model_check(&site).status, Status::Warn);
        assert_eq!(model_check(&dir.join("absent.bin")).status, Status::Fail);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
