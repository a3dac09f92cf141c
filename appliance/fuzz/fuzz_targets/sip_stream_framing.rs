//! A TCP/TLS byte stream cut into reads at arbitrary points; the logic lives in `airlock_sip::fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    airlock_sip::fuzz::frame_stream(data);
});
