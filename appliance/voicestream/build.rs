//! Generates the Five9 VoiceStream messages from `proto/voice.proto` without a `protoc` binary: `protox`
//! parses the file (it bundles the well-known `google/protobuf/timestamp.proto`) into a
//! `FileDescriptorSet`, `prost-build` generates the Rust messages from that set, and the encoded set is
//! written next to them for gRPC reflection and service generation in the runtime.
use std::env;
use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/voice.proto");
    let descriptors = protox::compile(["voice.proto"], ["proto"])?;
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    std::fs::write(
        out_dir.join("five9_voicestream_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // StreamingConfig carries the trust token and call identifiers: its Debug is written by hand (lib.rs).
    prost_build::Config::new()
        .skip_debug(["five9.voicestream.StreamingConfig"])
        .compile_fds(descriptors)?;
    Ok(())
}
