//! Test tool: encodes raw 16 kHz mono s16le PCM from stdin into a G.722 (64 kbit/s) bitstream on stdout.
//! The system tests use it to produce G.722 RTP payloads; `cargo build --release -p airlock-media --example
//! g722_encode`.

use std::io::{Read, Write};
use std::process::ExitCode;

use airlock_media::g722::G722Encoder;

fn main() -> ExitCode {
    let mut input = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("g722_encode: cannot read stdin: {error}");
        return ExitCode::FAILURE;
    }
    if input.len() % 4 != 0 {
        eprintln!(
            "g722_encode: input must be whole pairs of 16-bit samples (got {} bytes)",
            input.len()
        );
        return ExitCode::FAILURE;
    }
    let pcm: Vec<i16> = input
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    let mut encoded = Vec::with_capacity(pcm.len() / 2);
    G722Encoder::new().encode(&pcm, &mut encoded);
    if let Err(error) = std::io::stdout().write_all(&encoded) {
        eprintln!("g722_encode: cannot write stdout: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
