//! Fuzzes the audit log verifier, which `airlock audit verify` and the log's own open run on files that may
//! have been tampered with: any bytes (a log, or a log and a published-checkpoints file split at a NUL) must
//! give a report or the line that is wrong, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    airlock_audit::verify::fuzz_verify(data);
});
