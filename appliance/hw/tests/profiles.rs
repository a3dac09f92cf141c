//! Every profile shipped in hw/ validates (this is how CI checks them).

use std::path::Path;

#[test]
fn every_profile_in_hw_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hw");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            if let Err(error) = airlock_hw::load(&path) {
                panic!("{error}");
            }
            checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    checked.sort();
    for required in ["arm64-sff.toml", "qemu-x86_64.toml", "x86_64-rack.toml"] {
        assert!(
            checked.iter().any(|name| name == required),
            "hw/{required} missing: {checked:?}"
        );
    }
}
