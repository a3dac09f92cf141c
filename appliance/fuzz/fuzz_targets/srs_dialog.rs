//! Hostile bodies and content types inside a well-formed SIPREC dialog; the logic lives in
//! `airlock_siprec::fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _calls_started = airlock_siprec::fuzz::drive_dialog(std::time::Instant::now(), data);
});
