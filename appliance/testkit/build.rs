//! Generates the tonic client for `five9.voicestream.Voice` from the proto owned by airlock-voicestream,
//! reusing that crate's message types (extern_path), with protox so no `protoc` binary is needed (the
//! same approach as appliance/runtime/build.rs, which generates the server).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "../voicestream/proto";
    let proto = "../voicestream/proto/voice.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], [proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .extern_path(".five9.voicestream", "::airlock_voicestream::proto")
        .compile_fds(descriptors)?;
    Ok(())
}
