//! Hostile gRPC requests and stream events against VoiceStream leg sessions and the call joiner, in virtual
//! time; the logic and the invariants live in `airlock_voicestream::fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _legs_started = airlock_voicestream::fuzz::drive_session(std::time::Instant::now(), data);
});
