//! Generates the client stubs from the broker's protos (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "../proto/clerk_broker/v1/admin.proto",
        "../proto/clerk_broker/v1/quota.proto",
        "../proto/clerk_broker/v1/users.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
