//! Compiles `ratify/**/*.proto` into Rust with protox (a protobuf compiler in Rust), so building
//! needs no system `protoc`. The encoded descriptor set is kept for gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "ratify/common/v1/common.proto",
    "ratify/coordinator/v1/coordinator.proto",
    "ratify/participant/v1/participant.proto",
    "ratify/raft/v1/raft.proto",
    "ratify/example/bank/v1/bank.proto",
    "ratify/jepsen/v1/kv.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("ratify_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
