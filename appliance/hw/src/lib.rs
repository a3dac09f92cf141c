//! Hardware profiles: the TOML files in `hw/` that describe one kind of appliance box (CPU architecture,
//! firmware and Secure Boot, TPM and its PCR policy, disk, watchdog, NICs by role, audio cards, LEDs, serial
//! console). This crate owns the format: [`Profile`] parses with unknown keys rejected, and [`load`] checks every
//! rule once, returning errors that name the file and the key. The format is documented in `hw/README.md`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The only `schema` version this crate reads.
pub const SCHEMA: u32 = 1;

/// GiB the system partitions take before the data partition: the ESP (512 MiB) and two root slots with their
/// verity partitions (2 × (2 GiB + 64 MiB)), rounded up.
pub const SYSTEM_GIB: u32 = 5;

/// Highest PCR index of a TPM 2.0 PC-client PCR bank (PCRs 0–23).
pub const MAX_PCR: u32 = 23;

/// Baud rates a serial console may be set to.
const BAUD_RATES: [u32; 9] = [
    9_600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 921_600, 1_500_000,
];

/// One hardware profile (a `hw/*.toml` file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version; must be [`SCHEMA`].
    pub schema: u32,
    /// Short name: lowercase letters, digits and `-`.
    pub id: String,
    pub description: String,
    pub arch: Arch,
    pub firmware: Firmware,
    pub tpm: Tpm,
    pub disk: Disk,
    pub watchdog: Watchdog,
    #[serde(rename = "nic")]
    pub nics: Vec<Nic>,
    #[serde(rename = "audio", default)]
    pub audio: Vec<Audio>,
    #[serde(rename = "led", default)]
    pub leds: Vec<Led>,
    pub console: Console,
}

/// CPU architecture (one OS image per architecture).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    /// The name profiles use.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The architecture this program was built for, if profiles describe it.
    pub fn of_this_build() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

/// `[firmware]`: how the box boots.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    pub kind: FirmwareKind,
    /// Whose firmware: the board vendor's, or QEMU's EDK II builds (OVMF for x86_64, AAVMF for aarch64).
    pub build: FirmwareBuild,
    pub secure_boot: SecureBoot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirmwareKind {
    /// UEFI (systemd-boot, UKIs, EFI variables for boot counting).
    Uefi,
    /// U-Boot's EFI layer: systemd-boot runs, EFI variables are often volatile.
    UbootEfi,
    /// Plain U-Boot.
    Uboot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirmwareBuild {
    Vendor,
    Ovmf,
    Aavmf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecureBoot {
    /// The image is only shipped to the box with Secure Boot enforced.
    Required,
    /// Supported by the firmware, not enforced.
    Optional,
    Unsupported,
}

/// `[tpm]`: the TPM and what secrets are sealed to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tpm {
    pub kind: TpmKind,
    /// How the TPM is attached, so the image is known to carry its driver; absent with `kind = "none"`.
    #[serde(default)]
    pub interface: Option<TpmInterface>,
    /// The kernel's resource-managed device, e.g. `/dev/tpmrm0`; absent with `kind = "none"`.
    #[serde(default)]
    pub device: Option<String>,
    /// PCRs whose literal values secrets are sealed to (0–23; not 11, which changes with every update).
    #[serde(default)]
    pub pcrs: Vec<u32>,
    /// Secrets are also bound to PCR 11 through a policy signed by the release key, so updates keep them.
    #[serde(default)]
    pub signed_pcr11: bool,
    pub disk_encryption: DiskEncryption,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TpmKind {
    Discrete,
    /// Firmware TPM (Intel PTT, AMD fTPM, TrustZone).
    Firmware,
    /// Software TPM (swtpm) of a QEMU machine.
    Swtpm,
    None,
}

/// The TPM's bus and register interface (kernel driver in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TpmInterface {
    /// Memory-mapped TIS/FIFO registers (`tpm_tis`): x86 LPC TPMs, QEMU's `tpm-tis` and `tpm-tis-device`.
    Tis,
    /// Command Response Buffer announced by ACPI (`tpm_crb`): Intel PTT, AMD fTPM, Arm firmware TPMs with the
    /// SMC start method.
    Crb,
    /// TIS over SPI (`tpm_tis_spi`): discrete TPM modules on boards.
    Spi,
    /// Infineon TPM over I²C (`tpm_i2c_infineon`).
    I2cInfineon,
}

impl TpmInterface {
    fn name(self) -> &'static str {
        match self {
            TpmInterface::Tis => "tis",
            TpmInterface::Crb => "crb",
            TpmInterface::Spi => "spi",
            TpmInterface::I2cInfineon => "i2c-infineon",
        }
    }

    /// Whether the image's kernel (Debian 13's `linux-image-<arch>`) drives this interface. Debian builds
    /// the memory-mapped TIS driver for x86 only; the arm64 QEMU test image adds it (ci/build-image).
    fn driven_by_image_kernel(self, arch: Arch) -> bool {
        !(self == TpmInterface::Tis && arch == Arch::Aarch64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskEncryption {
    /// The data partition is LUKS2 with its key sealed to the TPM.
    Luks2Tpm2,
    None,
}

/// `[disk]`: the disk the image is written to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// A stable name under `/dev/disk/by-path/` or `/dev/disk/by-id/` (never `sda`, which can move).
    pub device: String,
    pub kind: DiskKind,
    /// Smallest disk this profile accepts, in GiB.
    pub min_gib: u32,
    /// Smallest data partition (`/var`: spool, recordings, logs), in GiB.
    pub data_min_gib: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskKind {
    Nvme,
    Sata,
    Emmc,
    Virtio,
}

/// `[watchdog]`: the hardware watchdog systemd pings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watchdog {
    /// E.g. `/dev/watchdog0`.
    pub device: String,
    /// Kernel module, e.g. `iTCO_wdt`.
    pub driver: String,
    /// Seconds without a ping before the box resets (1–600).
    pub timeout_secs: u32,
}

/// `[[nic]]`: one network interface, found by exactly one of `mac`, `kernel_name` or `path`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// The stable interface name the image gives it (a systemd .link file).
    pub name: String,
    pub roles: Vec<Role>,
    /// MAC address, lowercase `aa:bb:cc:dd:ee:ff`.
    #[serde(default)]
    pub mac: Option<String>,
    /// The kernel's predictable name, e.g. `enp2s0`.
    #[serde(default)]
    pub kernel_name: Option<String>,
    /// udev `ID_PATH`, e.g. `pci-0000:02:00.0` or `platform-fe300000.ethernet`.
    #[serde(default)]
    pub path: Option<String>,
}

/// What traffic a NIC carries; every role needs at least one NIC, and one NIC may carry several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// SIP signalling from the SBCs (and VoiceStream gRPC).
    Sip,
    /// RTP/SRTP media from the SBCs.
    Media,
    /// Outbound delivery: S3, MQTT, updates.
    Uplink,
    /// Technician and NOC access (metrics, control API).
    Management,
}

impl Role {
    /// Every role, in the order errors report missing ones.
    pub const ALL: [Role; 4] = [Role::Sip, Role::Media, Role::Uplink, Role::Management];

    fn name(self) -> &'static str {
        match self {
            Role::Sip => "sip",
            Role::Media => "media",
            Role::Uplink => "uplink",
            Role::Management => "management",
        }
    }
}

/// `[[audio]]`: a sound card for the local tap.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audio {
    pub name: String,
    /// ALSA card id (`/proc/asound/cards`, `hw:CARD=<card>`).
    pub card: String,
    /// ALSA device number on the card.
    pub device: u32,
    pub direction: Direction,
    pub channels: u32,
    pub rate_hz: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Capture,
    Playback,
    Duplex,
}

/// `[[led]]`: an LED the appliance drives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Led {
    pub name: String,
    /// `/sys/class/leds/<led>`.
    pub sysfs: String,
    pub meaning: LedMeaning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LedMeaning {
    /// On: healthy; blinking: starting or provisioning.
    Status,
    /// On: an alarm is raised.
    Fault,
    /// On while a call is recorded.
    Recording,
    /// Blinking while an update is written.
    Update,
}

/// `[console]`: the serial console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// Kernel tty name, e.g. `ttyS0` (x86_64) or `ttyAMA0` (arm64).
    pub serial: String,
    pub baud: u32,
}

/// Why a profile was refused.
#[derive(Debug, thiserror::Error)]
pub enum HwError {
    #[error("cannot read hardware profile {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("hardware profile {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("hardware profile {path}: key `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// Reads, parses and validates one profile file.
pub fn load(path: &Path) -> Result<Profile, HwError> {
    let text = std::fs::read_to_string(path).map_err(|source| HwError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_str(&text, path)
}

/// Parses and validates a profile's text; `path` names it in errors.
pub fn from_str(text: &str, path: &Path) -> Result<Profile, HwError> {
    let profile: Profile = toml::from_str(text).map_err(|error| HwError::Parse {
        path: path.to_path_buf(),
        message: error.to_string(),
    })?;
    profile
        .validate()
        .map_err(|Invalid { key, problem }| HwError::Invalid {
            path: path.to_path_buf(),
            key,
            problem,
        })?;
    Ok(profile)
}

/// A rule a profile broke: the key and what is wrong with it.
struct Invalid {
    key: String,
    problem: String,
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl Profile {
    fn validate(&self) -> Result<(), Invalid> {
        if self.schema != SCHEMA {
            return Err(invalid(
                "schema",
                format!("unsupported schema {} (this build reads {SCHEMA})", self.schema),
            ));
        }
        if self.id.is_empty()
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "id",
                "must be non-empty lowercase letters, digits and `-`",
            ));
        }
        self.validate_firmware()?;
        self.tpm.validate(self.arch)?;
        self.disk.validate()?;
        self.watchdog.validate()?;
        validate_nics(&self.nics)?;
        validate_audio(&self.audio)?;
        validate_leds(&self.leds)?;
        self.console.validate()
    }

    fn validate_firmware(&self) -> Result<(), Invalid> {
        let firmware = &self.firmware;
        if firmware.secure_boot != SecureBoot::Unsupported && firmware.kind != FirmwareKind::Uefi {
            return Err(invalid(
                "firmware.secure_boot",
                "Secure Boot needs UEFI firmware (firmware.kind = \"uefi\"); set \"unsupported\"",
            ));
        }
        let edk2_arch = match firmware.build {
            FirmwareBuild::Vendor => None,
            FirmwareBuild::Ovmf => Some(("ovmf", Arch::X86_64)),
            FirmwareBuild::Aavmf => Some(("aavmf", Arch::Aarch64)),
        };
        if let Some((build, arch)) = edk2_arch {
            if arch != self.arch {
                return Err(invalid(
                    "firmware.build",
                    format!(
                        "{build} is EDK II for {} machines, not {}",
                        arch.name(),
                        self.arch.name()
                    ),
                ));
            }
            if firmware.kind != FirmwareKind::Uefi {
                return Err(invalid("firmware.kind", format!("{build} is UEFI firmware")));
            }
        }
        Ok(())
    }
}

impl Tpm {
    fn validate(&self, arch: Arch) -> Result<(), Invalid> {
        if self.kind == TpmKind::None {
            if self.device.is_some() {
                return Err(invalid("tpm.device", "set, but tpm.kind is \"none\""));
            }
            if !self.pcrs.is_empty() || self.signed_pcr11 {
                return Err(invalid(
                    "tpm.pcrs",
                    "a PCR policy needs a TPM (tpm.kind is \"none\")",
                ));
            }
            if self.disk_encryption != DiskEncryption::None {
                return Err(invalid(
                    "tpm.disk_encryption",
                    "luks2-tpm2 needs a TPM (tpm.kind is \"none\")",
                ));
            }
            if self.interface.is_some() {
                return Err(invalid("tpm.interface", "set, but tpm.kind is \"none\""));
            }
            return Ok(());
        }
        match &self.device {
            None => return Err(invalid("tpm.device", "required unless tpm.kind is \"none\"")),
            Some(device) if !device.starts_with("/dev/tpm") => {
                return Err(invalid(
                    "tpm.device",
                    format!("{device:?} is not a TPM device (/dev/tpmrm0)"),
                ));
            }
            Some(_) => {}
        }
        match self.interface {
            None => {
                return Err(invalid(
                    "tpm.interface",
                    "required unless tpm.kind is \"none\" (tis, crb, spi or i2c-infineon)",
                ));
            }
            Some(interface) if !interface.driven_by_image_kernel(arch) && self.kind != TpmKind::Swtpm => {
                return Err(invalid(
                    "tpm.interface",
                    format!(
                        "{:?}: the image's {} kernel has no driver for it (Debian builds tpm_tis for x86 only; \
                         only the QEMU test image adds one): choose a box whose TPM is crb, spi or i2c-infineon",
                        interface.name(),
                        arch.name()
                    ),
                ));
            }
            Some(_) => {}
        }
        let mut seen = HashSet::new();
        for (i, &pcr) in self.pcrs.iter().enumerate() {
            let key = format!("tpm.pcrs[{i}]");
            if pcr > MAX_PCR {
                return Err(invalid(key, format!("PCR {pcr} is out of range 0–{MAX_PCR}")));
            }
            if pcr == 11 {
                return Err(invalid(
                    key,
                    "PCR 11 changes with every UKI update; bind it with signed_pcr11 = true instead",
                ));
            }
            if !seen.insert(pcr) {
                return Err(invalid(key, format!("PCR {pcr} is listed twice")));
            }
        }
        if self.disk_encryption == DiskEncryption::Luks2Tpm2 && self.pcrs.is_empty() && !self.signed_pcr11 {
            return Err(invalid(
                "tpm.disk_encryption",
                "luks2-tpm2 needs a PCR policy (tpm.pcrs or tpm.signed_pcr11)",
            ));
        }
        Ok(())
    }
}

impl Disk {
    fn validate(&self) -> Result<(), Invalid> {
        if !["/dev/disk/by-path/", "/dev/disk/by-id/"]
            .iter()
            .any(|prefix| self.device.len() > prefix.len() && self.device.starts_with(prefix))
        {
            return Err(invalid(
                "disk.device",
                format!(
                    "{:?} is not a stable name under /dev/disk/by-path/ or /dev/disk/by-id/",
                    self.device
                ),
            ));
        }
        if self.data_min_gib == 0 {
            return Err(invalid("disk.data_min_gib", "must be at least 1"));
        }
        let needed = SYSTEM_GIB.saturating_add(self.data_min_gib);
        if self.min_gib < needed {
            return Err(invalid(
                "disk.min_gib",
                format!(
                    "{} GiB cannot hold the system partitions ({SYSTEM_GIB} GiB) and disk.data_min_gib \
                     ({} GiB)",
                    self.min_gib, self.data_min_gib
                ),
            ));
        }
        Ok(())
    }
}

impl Watchdog {
    fn validate(&self) -> Result<(), Invalid> {
        if !self.device.starts_with("/dev/watchdog") {
            return Err(invalid(
                "watchdog.device",
                format!("{:?} is not a watchdog device (/dev/watchdog0)", self.device),
            ));
        }
        if self.driver.is_empty() {
            return Err(invalid("watchdog.driver", "must not be empty"));
        }
        if !(1..=600).contains(&self.timeout_secs) {
            return Err(invalid("watchdog.timeout_secs", "must be 1–600"));
        }
        Ok(())
    }
}

/// A Linux interface name: 1–15 bytes, no `/`, `:` or whitespace.
fn is_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

fn is_mac(mac: &str) -> bool {
    let octets: Vec<&str> = mac.split(':').collect();
    octets.len() == 6
        && octets.iter().all(|octet| {
            octet.len() == 2
                && octet
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn validate_nics(nics: &[Nic]) -> Result<(), Invalid> {
    let mut names = HashSet::new();
    let mut matches = HashSet::new();
    for (i, nic) in nics.iter().enumerate() {
        let key = |field: &str| format!("nic[{i}].{field}");
        if !is_ifname(&nic.name) {
            return Err(invalid(
                key("name"),
                format!(
                    "{:?} is not an interface name (1–15 characters, no / : or spaces)",
                    nic.name
                ),
            ));
        }
        if !names.insert(nic.name.as_str()) {
            return Err(invalid(key("name"), format!("duplicate NIC {:?}", nic.name)));
        }
        let found_by = [
            ("mac", &nic.mac),
            ("kernel_name", &nic.kernel_name),
            ("path", &nic.path),
        ]
        .into_iter()
        .filter_map(|(field, value)| value.as_deref().map(|value| (field, value)))
        .collect::<Vec<_>>();
        let [(field, value)] = found_by[..] else {
            return Err(invalid(
                format!("nic[{i}]"),
                "set exactly one of mac, kernel_name and path",
            ));
        };
        let well_formed = match field {
            "mac" => is_mac(value),
            "kernel_name" => is_ifname(value),
            _ => !value.is_empty() && !value.bytes().any(|b| b == b'/' || b.is_ascii_whitespace()),
        };
        if !well_formed {
            return Err(invalid(key(field), format!("{value:?} is malformed")));
        }
        if !matches.insert((field, value)) {
            return Err(invalid(
                key(field),
                format!("duplicate NIC: another [[nic]] is also found by {field} = {value:?}"),
            ));
        }
        if nic.roles.is_empty() {
            return Err(invalid(key("roles"), "at least one role"));
        }
        let mut roles = HashSet::new();
        if let Some(role) = nic.roles.iter().find(|role| !roles.insert(**role)) {
            return Err(invalid(
                key("roles"),
                format!("role {} is listed twice", role.name()),
            ));
        }
    }
    for role in Role::ALL {
        if !nics.iter().any(|nic| nic.roles.contains(&role)) {
            return Err(invalid("nic", format!("no [[nic]] has the role {}", role.name())));
        }
    }
    Ok(())
}

/// An ALSA card id: 1–15 letters, digits or `_`.
fn is_alsa_card_id(card: &str) -> bool {
    (1..=15).contains(&card.len()) && card.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn validate_audio(audio: &[Audio]) -> Result<(), Invalid> {
    let mut names = HashSet::new();
    let mut devices = HashSet::new();
    for (i, tap) in audio.iter().enumerate() {
        let key = |field: &str| format!("audio[{i}].{field}");
        if tap.name.is_empty() || !names.insert(tap.name.as_str()) {
            return Err(invalid(
                key("name"),
                format!("empty or duplicate name {:?}", tap.name),
            ));
        }
        if !is_alsa_card_id(&tap.card) {
            return Err(invalid(
                key("card"),
                format!(
                    "{:?} is not an ALSA card id (1–15 letters, digits or _)",
                    tap.card
                ),
            ));
        }
        if !devices.insert((tap.card.as_str(), tap.device)) {
            return Err(invalid(
                key("device"),
                format!("hw:CARD={},DEV={} is listed twice", tap.card, tap.device),
            ));
        }
        if !(1..=32).contains(&tap.channels) {
            return Err(invalid(key("channels"), "must be 1–32"));
        }
        if !(8_000..=192_000).contains(&tap.rate_hz) {
            return Err(invalid(key("rate_hz"), "must be 8000–192000"));
        }
    }
    Ok(())
}

fn validate_leds(leds: &[Led]) -> Result<(), Invalid> {
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for (i, led) in leds.iter().enumerate() {
        let key = |field: &str| format!("led[{i}].{field}");
        if led.name.is_empty() || !names.insert(led.name.as_str()) {
            return Err(invalid(
                key("name"),
                format!("empty or duplicate name {:?}", led.name),
            ));
        }
        let valid_path = led
            .sysfs
            .strip_prefix("/sys/class/leds/")
            .is_some_and(|led| !led.is_empty() && !led.contains('/'));
        if !valid_path {
            return Err(invalid(
                key("sysfs"),
                format!("{:?} is not /sys/class/leds/<name>", led.sysfs),
            ));
        }
        if !paths.insert(led.sysfs.as_str()) {
            return Err(invalid(key("sysfs"), format!("{:?} is listed twice", led.sysfs)));
        }
    }
    Ok(())
}

impl Console {
    fn validate(&self) -> Result<(), Invalid> {
        let tty = ["tty", "hvc"].iter().any(|prefix| {
            self.serial
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
        });
        if !tty {
            return Err(invalid(
                "console.serial",
                format!(
                    "{:?} is not a kernel tty name (ttyS0, ttyAMA0, hvc0)",
                    self.serial
                ),
            ));
        }
        if !BAUD_RATES.contains(&self.baud) {
            return Err(invalid(
                "console.baud",
                format!("{} is not one of {BAUD_RATES:?}", self.baud),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
