//! Compiles `proto/casebook/v1/*.proto` with protox (pure Rust, no system
//! `protoc`), generates the messages and the tonic clients and servers, and
//! writes the encoded descriptor set the server's reflection service serves.

use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "proto/casebook/v1/common.proto",
    "proto/casebook/v1/cases.proto",
    "proto/casebook/v1/events.proto",
    "proto/casebook/v1/admin.proto",
    "proto/casebook/v1/workers.proto",
    "proto/casebook/v1/audit.proto",
    "proto/casebook/v1/records.proto",
    "proto/casebook/v1/integrity.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(FILES, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("casebook_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
