//! Generates the `tf.train.Example` types from `proto/example.proto` with prost. The proto is
//! compiled by `protox` (pure Rust), so no `protoc` binary is needed to build tusk.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/example.proto");
    let descriptors = protox::compile(["proto/example.proto"], ["proto"])?;
    prost_build::Config::new()
        // Sorted feature maps make JSON output and re-encoding deterministic.
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
