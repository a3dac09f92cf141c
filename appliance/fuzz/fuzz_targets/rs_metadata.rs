//! Arbitrary text as an rs-metadata document (RFC 7865): parse it, and apply it as an update onto itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(document) = airlock_siprec::metadata::parse(xml) {
        let mut state = airlock_siprec::metadata::RecordingMetadata::default();
        let _ = state.apply(document.clone());
        let _ = state.apply(document);
        let _ = state.stream_participants("1");
    }
});
