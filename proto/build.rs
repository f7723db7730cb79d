//! Generates the switchyard.v1 Rust code with the protoc that
//! protoc-bin-vendored ships, so a machine without protoc builds.
use std::path::PathBuf;

// Build scripts read what cargo puts in their environment.
#[allow(clippy::disallowed_methods)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let wkt = protoc_bin_vendored::include_path()?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // A credential must never reach a log through a derived Debug.
    config.skip_debug(["switchyard.v1.CredentialInput"]);

    let protos = [
        PathBuf::from("switchyard/v1/config.proto"),
        PathBuf::from("switchyard/v1/control_plane.proto"),
        PathBuf::from("switchyard/v1/inference.proto"),
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("switchyard_descriptor.bin"))
        .compile_with_config(config, &protos, &[PathBuf::from("."), wkt])?;
    for p in protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    Ok(())
}
