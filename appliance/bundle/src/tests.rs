use airlock_audit::SigningKey;

use super::*;

const CREATED: &str = "2026-11-30T00:00:00.000Z";

fn key() -> SigningKey {
    SigningKey::generate().expect("key").0
}

fn files() -> Vec<(String, Vec<u8>)> {
    vec![
        (CONFIG_FILE.to_string(), b"[outbox]\nsite = \"lis\"\n".to_vec()),
        (
            "tls/server.pem".to_string(),
            b"-----BEGIN CERTIFICATE-----\n".to_vec(),
        ),
    ]
}

fn bundle(key: &SigningKey) -> Vec<u8> {
    write("lis", "airlock-3", CREATED, &files(), |manifest| {
        key.sign(manifest).try_into().expect("64-byte signature")
    })
    .expect("write")
}

#[test]
fn a_signed_bundle_verifies_with_its_key_and_gives_back_every_file() {
    let key = key();
    let bytes = bundle(&key);
    let parsed = parse(&bytes).expect("parse");
    let verified = parsed
        .verify(&[self::key().public_key().clone(), key.public_key().clone()])
        .expect("verify");
    assert_eq!(verified.manifest.site, "lis");
    assert_eq!(verified.manifest.appliance, "airlock-3");
    assert_eq!(verified.key_id, key.public_key().key_id());
    let got: Vec<(String, Vec<u8>)> = verified
        .files
        .iter()
        .map(|(entry, content)| (entry.path.clone(), content.to_vec()))
        .collect();
    assert_eq!(got, files());
}

#[test]
fn another_key_a_changed_byte_and_a_cut_are_refused() {
    let key = key();
    let bytes = bundle(&key);
    assert_eq!(
        parse(&bytes)
            .unwrap()
            .verify(&[self::key().public_key().clone()])
            .unwrap_err(),
        BundleError::Untrusted { trusted: 1 }
    );
    // A byte of a file: the manifest's SHA-256 no longer matches.
    let mut changed = bytes.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    let error = parse(&changed)
        .unwrap()
        .verify(&[key.public_key().clone()])
        .unwrap_err();
    assert!(
        matches!(&error, BundleError::Tampered(why) if why.contains("tls/server.pem")),
        "{error}"
    );
    // A byte of the manifest (the site): the signature no longer matches.
    let text = String::from_utf8_lossy(&bytes).replacen("\"site\":\"lis\"", "\"site\":\"lix\"", 1);
    let error = parse(text.as_bytes())
        .unwrap()
        .verify(&[key.public_key().clone()])
        .unwrap_err();
    assert!(matches!(error, BundleError::Untrusted { .. }), "{error}");
    for cut in [0, 10, MAGIC.len() + 3, bytes.len() - 1] {
        assert!(parse(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(parse(&longer), Err(BundleError::Malformed(_))));
}

#[test]
fn manifests_must_name_ids_safe_paths_and_a_configuration() {
    let sign = |_: &[u8]| [0u8; 64];
    let mut escaping = files();
    escaping[1].0 = "../etc/passwd".into();
    let error = write("lis", "a", CREATED, &escaping, sign).unwrap_err();
    assert!(error.to_string().contains("../etc/passwd"), "{error}");
    for bad in [
        "/etc/shadow",
        "tls//x",
        "tls/./x",
        "a b",
        "",
        ".validate.toml",
        "tls/.hidden",
        MANIFEST_FILE,
    ] {
        let mut named = files();
        named[1].0 = bad.into();
        assert!(write("lis", "a", CREATED, &named, sign).is_err(), "{bad:?}");
    }
    let error = write("lis", "a", CREATED, &files()[1..], sign).unwrap_err();
    assert!(error.to_string().contains("no airlock.toml"), "{error}");
    let error = write("l is", "a", CREATED, &files(), sign).unwrap_err();
    assert!(error.to_string().contains("site"), "{error}");
    for created in ["2026-11-30T00:00:00Z", "yesterday", "2026-11-30 00:00:00.000Z"] {
        let error = write("lis", "a", created, &files(), sign).unwrap_err();
        assert!(error.to_string().contains("created"), "{error}");
    }
    let mut twice = files();
    twice.push(twice[1].clone());
    assert!(
        write("lis", "a", CREATED, &twice, sign)
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
}

#[test]
fn not_a_bundle_is_said_so_and_fuzz_entry_holds_on_a_real_one() {
    assert_eq!(parse(b"PK\x03\x04").unwrap_err(), BundleError::NotABundle);
    fuzz_parse(&bundle(&key()));
    fuzz_parse(b"AIRLOCK-BUNDLE 1\n99999999999999999999\n");
}
