//! Fuzzes the outbox spool's record parser, which reads every record file at start-up after a crash: any
//! bytes must give a record or a reason, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    airlock_outbox::spool::fuzz_parse_record(data);
});
