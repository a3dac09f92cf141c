//! `airlock check-hw` on the built binary: exit 0 for the profiles in hw/, exit 2 naming the file and key of a
//! bad one.

use std::path::{Path, PathBuf};
use std::process::Command;

fn hw_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hw")
}

#[test]
fn shipped_profiles_are_valid() {
    let files = [
        "x86_64-rack.toml",
        "arm64-sff.toml",
        "qemu-x86_64.toml",
        "qemu-arm64.toml",
    ]
    .map(|file| hw_dir().join(file));
    let output = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("check-hw")
        .args(&files)
        .output()
        .expect("run airlock");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.matches("is valid").count(), 4, "{stderr}");
}

#[test]
fn bad_profile_exits_2_naming_file_and_key() {
    let good = std::fs::read_to_string(hw_dir().join("x86_64-rack.toml")).expect("read profile");
    let bad = good.replacen("pcrs = [7, 12]", "pcrs = [7, 31]", 1);
    assert_ne!(good, bad);
    let path = std::env::temp_dir().join(format!("airlock-hw-cli-{}.toml", std::process::id()));
    std::fs::write(&path, bad).expect("write profile");
    let output = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("check-hw")
        .arg(hw_dir().join("qemu-x86_64.toml"))
        .arg(&path)
        .output()
        .expect("run airlock");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("qemu-x86-64") && stderr.contains("is valid"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("tpm.pcrs[1]"),
        "{stderr}"
    );
}
