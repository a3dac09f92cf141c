//! Arbitrary bytes as a SIP datagram and as a TCP stream; the logic lives in `airlock_sip::fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    airlock_sip::fuzz::parse_and_frame(std::time::Instant::now(), data);
});
