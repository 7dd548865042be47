//! The conformance ratchets: each target's committed pass list must keep passing, on the
//! node tests and on the model folders the `onnx` wheel ships (legacy-opset exports).

#[test]
fn host_pass_list_still_passes() {
    tessera_tests::ratchet("host");
}

#[test]
fn interp_pass_list_still_passes() {
    tessera_tests::ratchet("interp");
}

/// The legacy-opset model folders, on both reference targets.
fn wheel_folder(folder: &str) {
    let data = tessera_tests::onnx_wheel_data(folder);
    for target in ["host", "interp"] {
        let what = format!("Models of the onnx wheel's `{folder}` folder");
        tessera_tests::ratchet_on(target, &data, &format!("{folder}.{target}.pass"), &what);
    }
}

#[test]
fn pytorch_converted_pass_lists_still_pass() {
    wheel_folder("pytorch-converted");
}

#[test]
fn pytorch_operator_pass_lists_still_pass() {
    wheel_folder("pytorch-operator");
}

#[test]
fn simple_pass_lists_still_pass() {
    wheel_folder("simple");
}

/// The com.microsoft contrib ops against onnxruntime's outputs, on both reference targets.
#[test]
fn contrib_pass_lists_still_pass() {
    let data = tessera_tests::contrib_tests();
    for target in ["host", "interp"] {
        let what = "com.microsoft contrib-op cases (tests/python/make_contrib_tests.py, outputs from onnxruntime)";
        tessera_tests::ratchet_on(target, &data, &format!("contrib.{target}.pass"), what);
    }
}

#[test]
fn npu_sim_pass_list_still_passes() {
    tessera_tests::ratchet("npu-sim");
}

#[test]
fn npu_sim_lite_pass_list_still_passes() {
    tessera_tests::ratchet("npu-sim-lite");
}

/// The LLVM CPU target's node-test ratchet (cargo feature `llvm`), on every 4th listed test:
/// LLVM's -O3 makes the full list take several minutes of CI's two cores.
/// `TESSERA_FULL_RATCHET=1` runs the whole list; `TESSERA_BLESS=1` the whole suite.
#[cfg(feature = "llvm")]
#[test]
fn llvm_x86_64_pass_list_still_passes() {
    tessera_tests::ratchet_sampled("llvm-x86_64", 4);
}
