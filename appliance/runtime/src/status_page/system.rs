//! What software this box runs, for the status page: airlock's version, the image version (os-release), the
//! boot entry systemd-boot started and whether it was on trial (boot counting, docs/IMAGE.md) when it did,
//! and the root partition (slot) it came from. Read for each page (a few small files); on a machine that is
//! not an Airlock image the image fields are absent.

use std::path::Path;

use serde::Serialize;

/// systemd-boot's EFI variables (vendor GUID of the Boot Loader Interface): the entry it booted, as named
/// before it counted the boot down, and — for an entry on trial only — the entry's path after counting.
const LOADER_ENTRY_SELECTED: &str =
    "/sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
const LOADER_BOOT_COUNT_PATH: &str =
    "/sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SystemInfo {
    pub airlock_version: &'static str,
    /// `IMAGE_VERSION` of os-release.
    pub image_version: Option<String>,
    /// The UKI systemd-boot started, e.g. `airlock_0.2.0+2-1.efi`.
    pub boot_entry: Option<String>,
    /// As of this boot: `trial (N boots left after this one)` for an entry on trial (it is blessed once airlock
    /// is ready, which this does not follow), `good` for an entry without a boot counter.
    pub boot_state: Option<String>,
    /// The partition label of the root file system's partition (the slot), e.g. `airlock_0.2.0`.
    pub root_slot: Option<String>,
}

impl SystemInfo {
    pub(crate) fn read() -> SystemInfo {
        let image_version = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| os_release_value(&text, "IMAGE_VERSION"));
        let boot_entry = std::fs::read(LOADER_ENTRY_SELECTED)
            .ok()
            .and_then(|bytes| efi_string(&bytes));
        let counted = std::fs::read(LOADER_BOOT_COUNT_PATH)
            .ok()
            .and_then(|bytes| efi_string(&bytes));
        let boot_state = boot_entry.as_ref().map(|_| boot_state(counted.as_deref()));
        SystemInfo {
            airlock_version: env!("CARGO_PKG_VERSION"),
            image_version,
            boot_entry,
            boot_state,
            root_slot: root_partition_label(Path::new("/")),
        }
    }
}

/// A value of an os-release file (quotes removed).
fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix('=')?;
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// An EFI variable holding a NUL-terminated UTF-16LE string (after its 4 attribute bytes).
fn efi_string(bytes: &[u8]) -> Option<String> {
    let units: Vec<u16> = bytes
        .get(4..)?
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .take_while(|&unit| unit != 0)
        .collect();
    String::from_utf16(&units).ok().filter(|text| !text.is_empty())
}

/// `good` without a counted path, or `trial (N boots left after this one)` for a counted path
/// (`…\\<name>+<left>[-<done>].efi`, already counted down for this boot).
fn boot_state(counted_path: Option<&str>) -> String {
    let left = counted_path.and_then(|path| {
        let name = path.rsplit(['\\', '/']).next()?;
        let stem = name.strip_suffix(".efi").unwrap_or(name);
        let (_, counter) = stem.rsplit_once('+')?;
        counter
            .split_once('-')
            .map_or(counter, |(left, _done)| left)
            .parse::<u32>()
            .ok()
    });
    match left {
        Some(left) => format!("trial ({left} boots left after this one)"),
        None => "good".to_string(),
    }
}

/// The GPT label of the partition under `mount_point`'s file system (through dm-verity if there is one).
fn root_partition_label(mount_point: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let device = mount_device(&mountinfo, mount_point.to_str()?)?;
    let dir = std::path::PathBuf::from(format!("/sys/dev/block/{device}"));
    // A verity device sits on two partitions, the data and its hash tree (`<label>_verity`): the slot is the
    // data partition.
    if let Ok(entries) = std::fs::read_dir(dir.join("slaves")) {
        return entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|slave| partition_label(&format!("/sys/class/block/{slave}")))
            .find(|label| !label.ends_with("_verity"));
    }
    partition_label(&dir.to_string_lossy())
}

/// PARTNAME of the block device whose sysfs directory is `dir`.
fn partition_label(dir: &str) -> Option<String> {
    let uevent = std::fs::read_to_string(format!("{dir}/uevent")).ok()?;
    uevent
        .lines()
        .find_map(|line| line.strip_prefix("PARTNAME="))
        .map(str::to_string)
}

/// `major:minor` of the file system mounted at `mount_point` (the last such mount wins).
fn mount_device(mountinfo: &str, mount_point: &str) -> Option<String> {
    mountinfo.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2)?;
        let point = fields.nth(1)?;
        (point == mount_point).then(|| device.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_version_comes_from_os_release() {
        let text = "ID=debian\nIMAGE_ID=airlock\nIMAGE_VERSION=\"0.2.0\"\nVERSION_ID=12\n";
        assert_eq!(os_release_value(text, "IMAGE_VERSION").as_deref(), Some("0.2.0"));
        assert_eq!(os_release_value(text, "IMAGE"), None);
        assert_eq!(os_release_value("ID=debian\n", "IMAGE_VERSION"), None);
    }

    #[test]
    fn the_boot_entry_is_read_from_its_efi_variable_and_tells_trial_from_good() {
        let mut variable = vec![6, 0, 0, 0];
        for unit in "airlock_0.2.0+2-1.efi".encode_utf16().chain([0]) {
            variable.extend(unit.to_le_bytes());
        }
        let entry = efi_string(&variable).expect("entry");
        assert_eq!(entry, "airlock_0.2.0+2-1.efi");
        // systemd-boot selected `+3-0` and renamed it `+2-1` before starting it: two tries remain.
        assert_eq!(
            boot_state(Some("\\EFI\\Linux\\airlock_0.2.0+2-1.efi")),
            "trial (2 boots left after this one)"
        );
        assert_eq!(
            boot_state(Some("/EFI/Linux/airlock_0.3.0+0-3.efi")),
            "trial (0 boots left after this one)"
        );
        assert_eq!(boot_state(None), "good");
        assert_eq!(boot_state(Some("\\EFI\\Linux\\airlock_0.2.0.efi")), "good");
        assert_eq!(efi_string(&[6, 0, 0, 0, 0, 0]), None);
        assert_eq!(efi_string(&[6]), None);
    }

    #[test]
    fn the_root_device_comes_from_mountinfo() {
        let mountinfo = "21 1 254:0 / / ro,relatime shared:1 - erofs /dev/mapper/root ro\n\
                         22 21 0:5 / /dev rw shared:2 - devtmpfs devtmpfs rw\n\
                         30 21 254:1 / /var rw shared:9 - ext4 /dev/mapper/var rw\n";
        assert_eq!(mount_device(mountinfo, "/").as_deref(), Some("254:0"));
        assert_eq!(mount_device(mountinfo, "/var").as_deref(), Some("254:1"));
        assert_eq!(mount_device(mountinfo, "/srv"), None);
    }
}
