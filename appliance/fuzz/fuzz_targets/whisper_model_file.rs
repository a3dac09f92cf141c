//! Fuzzes the whisper.cpp model file checker that guards start-up: any bytes must give a summary or an
//! error, never a panic, a hang or an unbounded allocation.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    airlock_transcribe::model::fuzz_check_model(data);
});
