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
    // `pb`: every message, and the clients.
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors.clone())?;
    // `grpc::wire`: the servers, whose answers carry users already encoded
    // (`grpc::EncodedUser`, a cached user's message bytes): the messages that
    // hold a `User` are made again around it, every other type is `pb`'s.
    let wire_dir = out_dir.join("wire");
    fs::create_dir_all(&wire_dir)?;
    let mut wire = tonic_prost_build::configure()
        .build_client(false)
        // prost's codec, writing each answer into room reserved for all of it.
        .codec_path("crate::grpc::codec::WireCodec")
        .out_dir(&wire_dir)
        .extern_path(".clerk_broker.v1.User", "crate::grpc::EncodedUser");
    for file in &descriptors.file {
        let names = file.message_type.iter().map(|message| message.name());
        for name in names.chain(file.enum_type.iter().map(|kind| kind.name())) {
            if name != "User" && !holds_user(file, name) {
                wire = wire.extern_path(
                    format!(".{}.{name}", file.package()),
                    format!("crate::pb::{name}"),
                );
            }
        }
    }
    wire.compile_fds(descriptors)?;
    Ok(())
}

/// Whether the message `name` of `file` has a field of type `User`.
fn holds_user(file: &prost_types::FileDescriptorProto, name: &str) -> bool {
    let user = format!(".{}.User", file.package());
    file.message_type
        .iter()
        .filter(|message| message.name() == name)
        .flat_map(|message| &message.field)
        .any(|field| field.type_name() == user)
}
