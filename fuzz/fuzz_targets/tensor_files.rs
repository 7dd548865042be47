//! Input readers: `.npy` (the driver's and npu-sim's) and serialized ONNX `TensorProto`s.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = tessera_driver::npy::decode(data, Path::new("fuzz.npy")) {
        if let Ok(bytes) = tessera_driver::npy::encode(&t) {
            assert!(tessera_driver::npy::decode(&bytes, Path::new("again.npy")).is_ok());
        }
    }
    let _ = tessera_npu_sim::npy::read_npy(data);
    if let Ok(t) = tessera_onnx::decode_tensor(data, "fuzz.pb", None) {
        let bytes = tessera_onnx::encode_tensor(&t, "t");
        assert!(tessera_onnx::decode_tensor(&bytes, "again.pb", None).is_ok());
    }
});
