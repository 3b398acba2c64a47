//! Generates the client stubs from every `.proto` under the repository's
//! `proto/` (no system `protoc`): a file added there is picked up without
//! touching this script.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// The contract's root: imports are relative to it.
const PROTO_ROOT: &str = "../proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A directory: cargo re-runs the script when anything below it changes.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let mut files = Vec::new();
    find_protos(Path::new(PROTO_ROOT), &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files under {PROTO_ROOT}").into());
    }
    let descriptors = protox::compile(&files, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}

/// Collects the `.proto` files below `dir`, recursively.
fn find_protos(dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            find_protos(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
