//! Fuzzes the site provisioning bundle's parser, which reads a file from removable media a technician brings:
//! any bytes must give a parsed bundle or a reason, never a panic, and nothing verifies without a trusted key.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    airlock_bundle::fuzz_parse(data);
});
