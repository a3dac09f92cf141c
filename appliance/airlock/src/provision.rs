//! `airlock provision BUNDLE`: applies a signed site bundle (airlock-bundle) to the site directory, and
//! `airlock make-bundle`: writes one. Applying verifies the signature against the provisioning keys the image
//! trusts, refuses a bundle for another site or appliance than the box already belongs to, writes the files as a
//! new generation, validates the configuration there, and only then switches `current` to it (one atomic
//! rename). Any failure leaves the previous provisioning exactly as it was.
//!
//! Site directory layout (default `/var/lib/airlock-site`, on the encrypted data partition):
//! ```text
//! airlock.toml -> current/airlock.toml        (what /etc/airlock/airlock.toml points to)
//! current -> generations/<n>
//! generations/<n>/bundle-manifest.json        (the signed manifest, as signed)
//! generations/<n>/<files of the bundle>
//! ```
//! A bundle's configuration names its own files as `<site dir>/current/<path>`. Directories are written 0750 and
//! files 0640: readable by the site directory's group, which on the image is `airlock-site` (the directory is
//! setgid, so everything below inherits it) and which the service's dynamic user is a member of.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use airlock_audit::PublicKey;
use airlock_bundle::{CONFIG_FILE, MANIFEST_FILE, Manifest};

use crate::config::Config;

/// Bundles are small (configuration, certificates, keys); a larger file is not one.
const MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// What `airlock provision` was asked to do.
#[derive(Debug)]
pub struct Request<'a> {
    pub bundle: &'a Path,
    pub site_dir: &'a Path,
    pub trusted_keys: &'a Path,
    /// Allow a bundle for another site or appliance than the current provisioning.
    pub change_site: bool,
    /// Allow a bundle made before the current one (a deliberate rollback).
    pub allow_older: bool,
}

/// Exit status when the bundle is the one already applied (nothing changed; airlock need not restart).
const EXIT_UNCHANGED: u8 = 3;

/// What applying a bundle did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The site directory now holds the bundle: restart airlock.
    Applied(String),
    /// The bundle was already applied: nothing changed.
    Unchanged(String),
}

/// `airlock provision`: 0 applied, 1 refused (the previous provisioning kept), 3 already applied.
pub fn run(request: &Request) -> ExitCode {
    match apply(request, &mut |step| eprintln!("{step}")) {
        Ok(Outcome::Applied(summary)) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Unchanged(summary)) => {
            eprintln!("{summary}");
            ExitCode::from(EXIT_UNCHANGED)
        }
        Err(why) => {
            eprintln!("provisioning refused: {why}");
            eprintln!("the previous provisioning is unchanged");
            ExitCode::FAILURE
        }
    }
}

/// Applies the bundle, reporting each step through `progress`; the error says why nothing changed. One
/// provisioning at a time (a lock in the site directory).
pub fn apply(request: &Request, progress: &mut dyn FnMut(String)) -> Result<Outcome, String> {
    let steps = 5;
    progress(format!("[1/{steps}] reading {}", request.bundle.display()));
    let bytes = read_bundle(request.bundle)?;
    progress(format!(
        "[2/{steps}] checking the signature and {} bytes of content",
        bytes.len()
    ));
    let trusted = trusted_keys(request.trusted_keys)?;
    let parsed = airlock_bundle::parse(&bytes).map_err(|error| error.to_string())?;
    let verified = parsed.verify(&trusted).map_err(|error| error.to_string())?;
    let manifest = &verified.manifest;

    create_private_dir(request.site_dir)?;
    let _lock = lock_site(request.site_dir)?;
    let applied = request.site_dir.join("current").join(MANIFEST_FILE);
    if std::fs::read(&applied).is_ok_and(|current| current == verified.manifest_bytes) {
        let config_link = request.site_dir.join(CONFIG_FILE);
        if std::fs::read_link(&config_link).ok() == Some(PathBuf::from("current").join(CONFIG_FILE)) {
            return Ok(Outcome::Unchanged(format!(
                "already provisioned with this bundle (site {:?}, appliance {:?}, of {}): nothing to do",
                manifest.site, manifest.appliance, manifest.created
            )));
        }
        // An earlier run stopped between its two renames: finish it.
        replace_with_link(&PathBuf::from("current").join(CONFIG_FILE), &config_link)?;
        return Ok(Outcome::Applied(format!(
            "already provisioned with this bundle (site {:?}, appliance {:?}); {CONFIG_FILE} pointed at it again",
            manifest.site, manifest.appliance
        )));
    }
    if let Some(current) = current_manifest(request.site_dir)? {
        if !request.change_site && current.site != manifest.site {
            return Err(format!(
                "the bundle is for site {:?}, but this box belongs to site {:?} (to move it, provision with --change-site)",
                manifest.site, current.site
            ));
        }
        if !request.change_site && current.appliance != manifest.appliance {
            return Err(format!(
                "the bundle is for appliance {:?} of site {:?}, but this box is {:?} (to re-purpose it, provision with --change-site)",
                manifest.appliance, manifest.site, current.appliance
            ));
        }
        // An old stick must not bring back a recipient or credential the site has since replaced.
        if !request.allow_older && manifest.created <= current.created {
            return Err(format!(
                "the bundle was made {}, not after the current provisioning's bundle ({}): an older bundle is only applied with --allow-older",
                manifest.created, current.created
            ));
        }
    }

    progress(format!(
        "[3/{steps}] writing {} file(s) for site {:?}, appliance {:?}",
        verified.files.len(),
        manifest.site,
        manifest.appliance
    ));
    let generations = request.site_dir.join("generations");
    create_private_dir(&generations)?;
    let previous = current_generation(request.site_dir);
    let number = next_generation(&generations)?;
    let generation = generations.join(number.to_string());
    // Not recursive: fails rather than reuse a directory this run did not create.
    std::fs::DirBuilder::new()
        .mode(0o750)
        .create(&generation)
        .map_err(|error| format!("cannot create {}: {error}", generation.display()))?;
    let written = write_generation(&generation, &verified.files, verified.manifest_bytes)
        .and_then(|()| {
            progress(format!("[4/{steps}] validating the site configuration"));
            validate(request.site_dir, &generation, manifest)
        })
        .and_then(|()| {
            progress(format!("[5/{steps}] switching to the new provisioning"));
            switch_to(request.site_dir, number, previous)
        });
    if let Err(why) = written {
        let _ = std::fs::remove_dir_all(&generation);
        return Err(why);
    }
    prune(&generations, number, previous);
    Ok(Outcome::Applied(format!(
        "provisioned site {:?}, appliance {:?} (bundle of {}, signed by key {}): {} file(s) in {}; restart airlock to apply (systemctl restart airlock)",
        manifest.site,
        manifest.appliance,
        manifest.created,
        verified.key_id,
        verified.files.len(),
        generation.display()
    )))
}

/// Holds an exclusive lock on `<site dir>/.lock` until dropped (waits for another provisioning to finish).
fn lock_site(site_dir: &Path) -> Result<std::fs::File, String> {
    let path = site_dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|error| format!("cannot lock {}: {error}", path.display()))?;
    Ok(file)
}

/// The generation `current` points at, if any.
fn current_generation(site_dir: &Path) -> Option<u64> {
    std::fs::read_link(site_dir.join("current"))
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

fn read_bundle(path: &Path) -> Result<Vec<u8>, String> {
    let metadata = std::fs::metadata(path).map_err(|error| format!("{}: {error}", path.display()))?;
    if !metadata.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if metadata.len() > MAX_BUNDLE_BYTES {
        return Err(format!(
            "{} is {} bytes; a site bundle is at most {MAX_BUNDLE_BYTES}",
            path.display(),
            metadata.len()
        ));
    }
    std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))
}

/// The provisioning keys: one Ed25519 public key (64 hex digits) per line; `#` comments and blank lines skipped.
fn trusted_keys(path: &Path) -> Result<Vec<PublicKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        format!(
            "cannot read the trusted provisioning keys {}: {error}",
            path.display()
        )
    })?;
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        keys.push(
            PublicKey::parse(line).map_err(|why| format!("{} line {}: {why}", path.display(), number + 1))?,
        );
    }
    if keys.is_empty() {
        return Err(format!(
            "{} lists no provisioning key: this image cannot accept any bundle",
            path.display()
        ));
    }
    Ok(keys)
}

fn current_manifest(site_dir: &Path) -> Result<Option<Manifest>, String> {
    let path = site_dir.join("current").join(MANIFEST_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            format!(
                "the current provisioning's {} is unreadable: {error}",
                path.display()
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))
}

fn next_generation(generations: &Path) -> Result<u64, String> {
    let entries =
        std::fs::read_dir(generations).map_err(|error| format!("{}: {error}", generations.display()))?;
    Ok(entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .map_or(1, |last| last + 1))
}

fn write_generation(
    generation: &Path,
    files: &[(&airlock_bundle::FileEntry, &[u8])],
    manifest: &[u8],
) -> Result<(), String> {
    create_private_dir(generation)?;
    for (entry, content) in files {
        let path = generation.join(&entry.path);
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        write_private(&path, content)?;
    }
    write_private(&generation.join(MANIFEST_FILE), manifest)?;
    sync_dir(generation)
}

/// Writes a file readable by its owner and group only (see the module doc), and syncs it.
fn write_private(path: &Path, content: &[u8]) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| format!("cannot sync {}: {error}", dir.display()))
}

/// Loads the new generation's configuration as `airlock run` would once `current` points to it, and checks it
/// is the configuration of the site and appliance the signed manifest names.
fn validate(site_dir: &Path, generation: &Path, manifest: &Manifest) -> Result<(), String> {
    let config_path = generation.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)
        .map_err(|error| format!("{CONFIG_FILE} in the bundle: {error}"))?;
    let current_prefix = format!("{}/", site_dir.join("current").display());
    let generation_prefix = format!("{}/", generation.display());
    let probe = generation.join(".validate.toml");
    write_private(
        &probe,
        text.replace(&current_prefix, &generation_prefix).as_bytes(),
    )?;
    let loaded = Config::load(&probe).and_then(|validated| match &validated.transcription {
        Some(transcription) => crate::config::check_transcription_files(transcription).map(|()| validated),
        None => Ok(validated),
    });
    let _ = std::fs::remove_file(&probe);
    let validated = loaded.map_err(|error| {
        format!(
            "the bundle's {CONFIG_FILE} is not valid: {}",
            error
                .to_string()
                .replace(&probe.display().to_string(), CONFIG_FILE)
        )
    })?;
    let outbox = &validated.config.outbox;
    if outbox.site != manifest.site {
        return Err(format!(
            "the bundle's {CONFIG_FILE} says outbox.site = {:?}, but the bundle is signed for site {:?}",
            outbox.site, manifest.site
        ));
    }
    if let Some(mqtt) = &outbox.mqtt
        && mqtt.appliance != manifest.appliance
    {
        return Err(format!(
            "the bundle's {CONFIG_FILE} says outbox.mqtt.appliance = {:?}, but the bundle is signed for appliance {:?}",
            mqtt.appliance, manifest.appliance
        ));
    }
    Ok(())
}

/// Replaces `link` by a symlink to `target` in one rename.
fn replace_with_link(target: &Path, link: &Path) -> Result<(), String> {
    let staged = link.with_extension("new-link");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(target, &staged)
        .and_then(|()| std::fs::rename(&staged, link))
        .map_err(|error| format!("cannot point {} at {}: {error}", link.display(), target.display()))
}

/// Points `current` at the generation and `airlock.toml` at `current/airlock.toml`, each by an atomic rename;
/// if the second fails, `current` goes back to `previous` (or away), so the error leaves things as they were.
fn switch_to(site_dir: &Path, number: u64, previous: Option<u64>) -> Result<(), String> {
    let current = site_dir.join("current");
    replace_with_link(&PathBuf::from("generations").join(number.to_string()), &current)?;
    if let Err(why) = replace_with_link(
        &PathBuf::from("current").join(CONFIG_FILE),
        &site_dir.join(CONFIG_FILE),
    ) {
        let _ = match previous {
            Some(previous) => {
                replace_with_link(&PathBuf::from("generations").join(previous.to_string()), &current)
            }
            None => std::fs::remove_file(&current).map_err(|error| error.to_string()),
        };
        return Err(why);
    }
    // Both renames are done: the new provisioning stands even if this sync fails (the next boot sees it or
    // the previous one, each whole).
    if let Err(why) = sync_dir(site_dir) {
        eprintln!("warning: {why}");
    }
    Ok(())
}

/// Removes every generation but the new one and the one it replaced.
fn prune(generations: &Path, current: u64, previous: Option<u64>) {
    let Ok(entries) = std::fs::read_dir(generations) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(number) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u64>().ok())
        else {
            continue;
        };
        if number != current && Some(number) != previous {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `airlock provisioning-key`: the key (created if missing); its public key on stdout.
pub fn provisioning_key(key: &Path) -> ExitCode {
    match airlock_audit::load_or_create_signing_key(key) {
        Ok(signing_key) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(signing_key.public_key().to_text().as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("provisioning-key: cannot write the public key: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("provisioning-key: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `airlock make-bundle`: signs every file under `from` (which must hold `airlock.toml`) into one bundle.
pub fn make_bundle(key: &Path, site: &str, appliance: &str, from: &Path, out: &Path) -> ExitCode {
    match write_bundle(key, site, appliance, from, out) {
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("make-bundle: {why}");
            ExitCode::FAILURE
        }
    }
}

fn write_bundle(key: &Path, site: &str, appliance: &str, from: &Path, out: &Path) -> Result<String, String> {
    // Never created here: a mistyped --key would sign with a key no box trusts (`airlock provisioning-key`
    // makes one).
    let der = std::fs::read(key).map_err(|error| {
        format!(
            "--key {}: {error} (make a key with `airlock provisioning-key FILE`)",
            key.display()
        )
    })?;
    let signing_key = airlock_audit::SigningKey::from_pkcs8(&der)
        .map_err(|why| format!("--key {}: {why}", key.display()))?;
    let mut files = Vec::new();
    collect_files(from, from, &mut files)?;
    files.sort();
    let created = airlock_runtime::rfc3339(std::time::SystemTime::now());
    let bundle = airlock_bundle::write(site, appliance, &created, &files, |manifest| {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&signing_key.sign(manifest));
        signature
    })
    .map_err(|error| error.to_string())?;
    std::fs::write(out, bundle).map_err(|error| format!("{}: {error}", out.display()))?;
    Ok(format!(
        "{}: site {site:?}, appliance {appliance:?}, {} file(s), signed by key {} (its public key, to be trusted by the image: {})",
        out.display(),
        files.len(),
        signing_key.public_key().key_id(),
        airlock_audit::keys::public_key_path(key).display()
    ))
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<(String, Vec<u8>)>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|error| format!("{}: {error}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|error| format!("{}: {error}", path.display()))?;
        if kind.is_dir() {
            collect_files(root, &path, files)?;
        } else if kind.is_file() {
            let relative = path
                .strip_prefix(root)
                .map_err(|_| format!("{} is outside {}", path.display(), root.display()))?
                .to_string_lossy()
                .into_owned();
            let content = std::fs::read(&path).map_err(|error| format!("{}: {error}", path.display()))?;
            files.push((relative, content));
        } else {
            return Err(format!("{} is neither a file nor a directory", path.display()));
        }
    }
    Ok(())
}
