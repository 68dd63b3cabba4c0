//! Compiles the protocol definitions without a system `protoc`: `protox` parses
//! them into a descriptor set and `tonic-prost-build` generates the code.

const FILES: &[&str] = &[
    "metapb.proto",
    "errorpb.proto",
    "eraftpb.proto",
    "kvrpcpb.proto",
    "pdpb.proto",
    "tikvpb.proto",
    "keyspacepb.proto",
    "raftpb.proto",
    "storeraftpb.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let paths: Vec<String> = FILES.iter().map(|f| format!("proto/{f}")).collect();
    let descriptors = protox::compile(&paths, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
