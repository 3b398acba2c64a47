//! Compiles `proto/` into Rust stubs and the descriptor set served by reflection.
//!
//! The protos are parsed by `protox` (pure Rust), so no system `protoc` is needed.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/clerk_broker/v1/admin.proto",
        "proto/clerk_broker/v1/quota.proto",
        "proto/clerk_broker/v1/users.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("clerk_broker_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
