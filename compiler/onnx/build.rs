//! Build script: compiles `proto/onnx.proto` into Rust types with prost, using the protoc
//! binary vendored by `protoc-bin-vendored` so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free in a build script: we are single-threaded here and prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    prost_build::Config::new().compile_protos(&["proto/onnx.proto"], &["proto"])?;
    Ok(())
}
