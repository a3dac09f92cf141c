//! Arbitrary bytes as a SIP body: the first line is the Content-Type value, the rest the body; both the raw
//! multipart split and the SIPREC classification must return an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&byte| byte == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let content_type = String::from_utf8_lossy(header);
    let _ = airlock_siprec::multipart::parse(&content_type, body);
    let _ = airlock_siprec::multipart::classify(Some(&content_type), body);
});
