//! SRTP unprotection of arbitrary bytes and of tampered genuine packets, for an input-chosen suite; the
//! logic and its invariants live in `airlock_rtp::fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    airlock_rtp::fuzz::srtp_unprotect(std::time::Instant::now(), data);
});
