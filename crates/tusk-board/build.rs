//! Generates the TensorBoard event types from `proto/event.proto` with prost. The proto is
//! compiled by `protox` (pure Rust), so no `protoc` binary is needed to build tusk.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/event.proto");
    let descriptors = protox::compile(["proto/event.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
