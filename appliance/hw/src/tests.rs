use std::path::Path;

use super::*;

/// A valid profile every test breaks in one place.
const BASE: &str = r#"
schema = 1
id = "test-box"
description = "test"
arch = "x86_64"

[firmware]
kind = "uefi"
build = "vendor"
secure_boot = "required"

[tpm]
kind = "discrete"
interface = "tis"
device = "/dev/tpmrm0"
pcrs = [7]
signed_pcr11 = true
disk_encryption = "luks2-tpm2"

[disk]
device = "/dev/disk/by-path/pci-0000:01:00.0-nvme-1"
kind = "nvme"
min_gib = 64
data_min_gib = 32

[watchdog]
device = "/dev/watchdog0"
driver = "iTCO_wdt"
timeout_secs = 30

[[nic]]
name = "sbc0"
path = "pci-0000:02:00.0"
roles = ["sip", "media"]

[[nic]]
name = "uplink0"
mac = "52:54:00:12:34:57"
roles = ["uplink", "management"]

[[audio]]
name = "tap"
card = "Device"
device = 0
direction = "capture"
channels = 2
rate_hz = 48000

[[led]]
name = "status"
sysfs = "/sys/class/leds/status:green"
meaning = "status"

[console]
serial = "ttyS0"
baud = 115200
"#;

fn check(text: &str) -> Result<Profile, HwError> {
    from_str(text, Path::new("hw/test.toml"))
}

/// BASE with `from` replaced by `to` (which must occur).
fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    BASE.replacen(from, to, 1)
}

/// The key a broken profile is refused for; the message also names the file.
fn refused_key(text: &str) -> String {
    match check(text) {
        Err(error @ HwError::Invalid { .. }) => {
            assert!(error.to_string().contains("hw/test.toml"), "{error}");
            let HwError::Invalid { key, .. } = error else {
                unreachable!()
            };
            key
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// A profile that does not parse; returns the message, which names the file.
fn unparsable(text: &str) -> String {
    match check(text) {
        Err(error @ HwError::Parse { .. }) => {
            let message = error.to_string();
            assert!(message.contains("hw/test.toml"), "{message}");
            message
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn base_is_valid() {
    let profile = check(BASE).unwrap();
    assert_eq!(profile.arch, Arch::X86_64);
    assert_eq!(profile.nics.len(), 2);
    assert_eq!(profile.tpm.pcrs, [7]);
}

#[test]
fn unknown_keys_and_values_are_refused_with_the_key() {
    let message = unparsable(&with("arch = \"x86_64\"", "arch = \"mips\""));
    assert!(message.contains("arch") && message.contains("mips"), "{message}");
    let message = unparsable(&with("[console]", "[console]\nparity = \"none\""));
    assert!(message.contains("parity"), "{message}");
    let message = unparsable(&with(
        "roles = [\"sip\", \"media\"]",
        "roles = [\"sip\", \"voice\"]",
    ));
    assert!(
        message.contains("roles") && message.contains("voice"),
        "{message}"
    );
    unparsable(&with("[watchdog]\ndevice = \"/dev/watchdog0\"\n", "[watchdog]\n"));
}

#[test]
fn schema_and_id() {
    assert_eq!(refused_key(&with("schema = 1", "schema = 2")), "schema");
    assert_eq!(refused_key(&with("id = \"test-box\"", "id = \"Test Box\"")), "id");
    assert_eq!(refused_key(&with("id = \"test-box\"", "id = \"\"")), "id");
}

#[test]
fn secure_boot_needs_uefi() {
    assert_eq!(
        refused_key(&with("kind = \"uefi\"", "kind = \"uboot-efi\"")),
        "firmware.secure_boot"
    );
    let uboot = with("kind = \"uefi\"", "kind = \"uboot\"");
    assert_eq!(refused_key(&uboot), "firmware.secure_boot");
    check(&uboot.replace("secure_boot = \"required\"", "secure_boot = \"unsupported\"")).unwrap();
}

#[test]
fn edk2_firmware_matches_the_arch() {
    check(&with("build = \"vendor\"", "build = \"ovmf\"")).unwrap();
    assert_eq!(
        refused_key(&with("build = \"vendor\"", "build = \"aavmf\"")),
        "firmware.build"
    );
    let arm = with("arch = \"x86_64\"", "arch = \"aarch64\"").replace("\"tis\"", "\"crb\"");
    assert_eq!(
        refused_key(&arm.replace("build = \"vendor\"", "build = \"ovmf\"")),
        "firmware.build"
    );
    check(&arm.replace("build = \"vendor\"", "build = \"aavmf\"")).unwrap();
    let uboot = with("kind = \"uefi\"", "kind = \"uboot\"")
        .replace("secure_boot = \"required\"", "secure_boot = \"unsupported\"")
        .replace("build = \"vendor\"", "build = \"ovmf\"");
    assert_eq!(refused_key(&uboot), "firmware.kind");
}

#[test]
fn pcrs_in_range_not_11_not_twice() {
    assert_eq!(refused_key(&with("pcrs = [7]", "pcrs = [7, 24]")), "tpm.pcrs[1]");
    assert_eq!(refused_key(&with("pcrs = [7]", "pcrs = [11]")), "tpm.pcrs[0]");
    assert_eq!(refused_key(&with("pcrs = [7]", "pcrs = [7, 7]")), "tpm.pcrs[1]");
    check(&with("pcrs = [7]", "pcrs = [0, 7, 23]")).unwrap();
}

#[test]
fn tpm_encryption_needs_a_policy_and_a_device() {
    let no_policy = with(
        "pcrs = [7]\nsigned_pcr11 = true",
        "pcrs = []\nsigned_pcr11 = false",
    );
    assert_eq!(refused_key(&no_policy), "tpm.disk_encryption");
    check(&no_policy.replace("\"luks2-tpm2\"", "\"none\"")).unwrap();
    check(&with("pcrs = [7]", "pcrs = []")).unwrap();
    assert_eq!(refused_key(&with("device = \"/dev/tpmrm0\"\n", "")), "tpm.device");
    assert_eq!(
        refused_key(&with("\"/dev/tpmrm0\"", "\"/dev/sda\"")),
        "tpm.device"
    );
}

#[test]
fn no_tpm_means_no_policy() {
    let none = with("kind = \"discrete\"", "kind = \"none\"");
    assert_eq!(refused_key(&none), "tpm.device");
    let none = none.replace("device = \"/dev/tpmrm0\"\n", "");
    assert_eq!(refused_key(&none), "tpm.pcrs");
    let none = none.replace("pcrs = [7]\nsigned_pcr11 = true\n", "");
    assert_eq!(refused_key(&none), "tpm.disk_encryption");
    let none = none.replace("\"luks2-tpm2\"", "\"none\"");
    assert_eq!(refused_key(&none), "tpm.interface");
    check(&none.replace("interface = \"tis\"\n", "")).unwrap();
}

#[test]
fn disk_is_stable_and_big_enough() {
    let sda = "device = \"/dev/sda\"";
    assert_eq!(
        refused_key(&with(
            "device = \"/dev/disk/by-path/pci-0000:01:00.0-nvme-1\"",
            sda
        )),
        "disk.device"
    );
    check(&with(
        "/dev/disk/by-path/pci-0000:01:00.0-nvme-1",
        "/dev/disk/by-id/nvme-Samsung_SSD_980_S123",
    ))
    .unwrap();
    assert_eq!(refused_key(&with("min_gib = 64", "min_gib = 36")), "disk.min_gib");
    check(&with("min_gib = 64", "min_gib = 37")).unwrap();
    assert_eq!(
        refused_key(&with("data_min_gib = 32", "data_min_gib = 0")),
        "disk.data_min_gib"
    );
}

#[test]
fn watchdog() {
    assert_eq!(
        refused_key(&with("\"/dev/watchdog0\"", "\"/dev/null\"")),
        "watchdog.device"
    );
    assert_eq!(refused_key(&with("\"iTCO_wdt\"", "\"\"")), "watchdog.driver");
    assert_eq!(
        refused_key(&with("timeout_secs = 30", "timeout_secs = 0")),
        "watchdog.timeout_secs"
    );
}

#[test]
fn every_role_needs_a_nic() {
    assert_eq!(
        refused_key(&with("roles = [\"sip\", \"media\"]", "roles = [\"sip\"]")),
        "nic"
    );
    assert_eq!(
        refused_key(&with(
            "roles = [\"uplink\", \"management\"]",
            "roles = [\"uplink\"]"
        )),
        "nic"
    );
    assert_eq!(
        refused_key(&with("roles = [\"sip\", \"media\"]", "roles = []")),
        "nic[0].roles"
    );
    assert_eq!(
        refused_key(&with(
            "roles = [\"sip\", \"media\"]",
            "roles = [\"sip\", \"media\", \"sip\"]"
        )),
        "nic[0].roles"
    );
}

#[test]
fn nics_are_found_by_exactly_one_well_formed_key() {
    assert_eq!(
        refused_key(&with(
            "path = \"pci-0000:02:00.0\"",
            "path = \"pci-0000:02:00.0\"\nkernel_name = \"enp2s0\""
        )),
        "nic[0]"
    );
    assert_eq!(refused_key(&with("path = \"pci-0000:02:00.0\"\n", "")), "nic[0]");
    check(&with("path = \"pci-0000:02:00.0\"", "kernel_name = \"enp2s0\"")).unwrap();
    assert_eq!(
        refused_key(&with(
            "path = \"pci-0000:02:00.0\"",
            "kernel_name = \"a-very-long-name0\""
        )),
        "nic[0].kernel_name"
    );
    assert_eq!(
        refused_key(&with("\"52:54:00:12:34:57\"", "\"52:54:00:12:34\"")),
        "nic[1].mac"
    );
    assert_eq!(
        refused_key(&with("\"52:54:00:12:34:57\"", "\"52:54:00:12:34:5G\"")),
        "nic[1].mac"
    );
    assert_eq!(
        refused_key(&with("\"pci-0000:02:00.0\"", "\"pci 0000\"")),
        "nic[0].path"
    );
    assert_eq!(
        refused_key(&with("name = \"sbc0\"", "name = \"sbc/0\"")),
        "nic[0].name"
    );
}

#[test]
fn duplicate_nics_are_refused() {
    assert_eq!(
        refused_key(&with("name = \"uplink0\"", "name = \"sbc0\"")),
        "nic[1].name"
    );
    let same_mac = with("path = \"pci-0000:02:00.0\"", "mac = \"52:54:00:12:34:57\"");
    assert_eq!(refused_key(&same_mac), "nic[1].mac");
}

#[test]
fn audio_devices() {
    assert_eq!(
        refused_key(&with("card = \"Device\"", "card = \"hw:Device\"")),
        "audio[0].card"
    );
    assert_eq!(
        refused_key(&with("channels = 2", "channels = 0")),
        "audio[0].channels"
    );
    assert_eq!(
        refused_key(&with("rate_hz = 48000", "rate_hz = 1000")),
        "audio[0].rate_hz"
    );
    let tap = "[[audio]]\nname = \"tap\"\ncard = \"Device\"\ndevice = 0\n";
    let second = "[[audio]]\nname = \"tap2\"\ncard = \"Device\"\ndevice = 0\ndirection = \"capture\"\n\
                  channels = 1\nrate_hz = 8000\n\n";
    assert_eq!(
        refused_key(&with(tap, &format!("{second}{tap}"))),
        "audio[1].device"
    );
    let same_name = second.replace("tap2", "tap");
    assert_eq!(
        refused_key(&with(tap, &format!("{same_name}{tap}"))),
        "audio[1].name"
    );
    check(&with("[[audio]]\nname = \"tap\"\ncard = \"Device\"\ndevice = 0\ndirection = \"capture\"\nchannels = 2\nrate_hz = 48000\n", ""))
        .unwrap();
}

#[test]
fn leds() {
    assert_eq!(
        refused_key(&with(
            "\"/sys/class/leds/status:green\"",
            "\"/sys/class/gpio/status\""
        )),
        "led[0].sysfs"
    );
    let led = "[[led]]\nname = \"status\"\n";
    let fault =
        "[[led]]\nname = \"fault\"\nsysfs = \"/sys/class/leds/status:green\"\nmeaning = \"fault\"\n\n";
    assert_eq!(refused_key(&with(led, &format!("{fault}{led}"))), "led[1].sysfs");
    let status = fault.replace("\"fault\"\nsysfs", "\"status\"\nsysfs");
    assert_eq!(refused_key(&with(led, &format!("{status}{led}"))), "led[1].name");
}

#[test]
fn console() {
    assert_eq!(
        refused_key(&with("serial = \"ttyS0\"", "serial = \"/dev/ttyS0\"")),
        "console.serial"
    );
    assert_eq!(
        refused_key(&with("serial = \"ttyS0\"", "serial = \"tty\"")),
        "console.serial"
    );
    check(&with("serial = \"ttyS0\"", "serial = \"hvc0\"")).unwrap();
    assert_eq!(
        refused_key(&with("baud = 115200", "baud = 115000")),
        "console.baud"
    );
}

#[test]
fn unreadable_file_names_the_path() {
    let error = load(Path::new("/nonexistent/box.toml")).unwrap_err();
    assert!(error.to_string().contains("/nonexistent/box.toml"), "{error}");
}

#[test]
fn tpm_interface_is_named_and_driven_by_the_image_kernel() {
    assert_eq!(refused_key(&with("interface = \"tis\"\n", "")), "tpm.interface");
    let lpc = unparsable(&with("interface = \"tis\"", "interface = \"lpc\""));
    assert!(lpc.contains("interface") && lpc.contains("lpc"), "{lpc}");
    let arm = with("arch = \"x86_64\"", "arch = \"aarch64\"");
    let error = check(&arm).unwrap_err().to_string();
    assert!(
        error.contains("tpm.interface") && error.contains("no driver"),
        "{error}"
    );
    check(&arm.replace("interface = \"tis\"", "interface = \"crb\"")).unwrap();
    check(&arm.replace("interface = \"tis\"", "interface = \"spi\"")).unwrap();
    // Only the QEMU machine's swtpm may be memory-mapped TIS on arm64 (its image adds the driver).
    check(&arm.replace("kind = \"discrete\"", "kind = \"swtpm\"")).unwrap();
}
