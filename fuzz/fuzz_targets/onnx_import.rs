//! ONNX model bytes: protobuf decode, import (opset upgrades, folding, inference,
//! verification) and, for models that import, lowering to kernels compiled for `interp`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // No model folder: external data is refused, so the fuzzer never reads files. Constants
    // fold with the driver's interpreter-backed folder, as the pipeline imports.
    let opts = tessera_onnx::ImportOptions {
        folder: Some(tessera_driver::fold::InterpFolder::shared()),
        ..Default::default()
    };
    let Ok(graph) = tessera_onnx::import_bytes(data, None, &opts) else { return };
    let _ = tessera_driver::compile_graph(&graph, "fuzz", "interp");
});
