//! ONNX model bytes: protobuf decode, import (opset upgrades, folding, inference,
//! verification) and, for models that import, lowering to kernels compiled for `interp`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // No folder: external data is refused, so the fuzzer never reads files.
    let Ok(graph) = tessera_onnx::import_bytes(data, None, &tessera_onnx::ImportOptions::default()) else { return };
    let _ = tessera_driver::compile_graph(&graph, "fuzz", "interp");
});
