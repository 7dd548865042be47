//! Ahead-of-time static libraries (`--emit static-lib`, cargo feature `llvm`): the example
//! models compiled into a library for llvm-x86_64 (run natively), llvm-aarch64 (under
//! qemu-aarch64) and llvm-riscv64 (under qemu-riscv64 at VLEN 128 and 256), linked with the C
//! driver `examples/c/aot_driver.c`, must match onnxruntime's outputs; the cross targets'
//! node-test ratchets run on a deterministic sample; and what a library cannot do (host ops,
//! running foreign code in this process) is refused with a clear error.
//!
//! The cross tools come from `scripts/setup-system.sh` (Debian's `qemu-user`,
//! `gcc-aarch64-linux-gnu`, `gcc-riscv64-linux-gnu`); a test needing one that is absent says
//! so and skips.
#![cfg(feature = "llvm")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tessera_driver::aot::Isa;
use tessera_driver::aot::{compile_static_lib, run_static, tools_present};
use tessera_driver::{targets, CompileOptions, DriverError};
use tessera_ir::Tensor;

/// Whether `isa`'s C compiler and runner are installed; prints why not when they are not.
fn have_tools(isa: Isa) -> bool {
    match tools_present(isa) {
        Ok(()) => true,
        Err(e) => {
            eprintln!(
                "SKIPPED: {e}; scripts/setup-system.sh installs qemu-user and the cross gcc packages"
            );
            false
        }
    }
}

fn scratch_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tessera-aot-test-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Compiles example `model` into a library for `target`, runs it through the C driver (on
/// RISC-V at each of `vlens`) and compares with onnxruntime's output (`test_data_set_0`).
/// Returns the library's outputs.
fn example(model: &str, target: &str, vlens: &[u32]) -> Option<Vec<Tensor>> {
    let isa = Isa::of_target(target).unwrap();
    if !have_tools(isa) {
        return None;
    }
    let dir = tessera_tests::models().join(model);
    let set = dir.join("test_data_set_0");
    let input = tessera_onnx::read_tensor_file(&set.join("input_0.pb")).unwrap();
    let want = tessera_onnx::read_tensor_file(&set.join("output_0.pb")).unwrap();
    let names = tessera_onnx::input_names(&dir.join("model.onnx")).unwrap();
    let named: BTreeMap<String, Tensor> = [(names[0].clone(), input.clone())].into();
    let opts = CompileOptions::for_target(target).with_inputs(&named);
    let lib = compile_static_lib(&dir.join("model.onnx"), &opts, "model").unwrap();
    assert!(lib.launches > 0, "{model}: the plan launches no kernel");
    let mut first = None;
    for &vlen in vlens {
        let got = run_example(&lib, model, target, vlen, &set, &input, &want);
        if let Some(f) = &first {
            assert_eq!(
                f, &got,
                "{model} on {target}: VLEN {vlen} gave other outputs"
            );
        } else {
            first = Some(got);
        }
    }
    first
}

fn run_example(
    lib: &tessera_driver::aot::StaticLib,
    model: &str,
    target: &str,
    vlen: u32,
    set: &Path,
    input: &Tensor,
    want: &Tensor,
) -> Vec<Tensor> {
    let isa = Isa::of_target(target).unwrap();
    let work = scratch_dir(&format!("{model}-{target}-{vlen}"));
    let got = run_static(lib, isa, vlen, &[input.clone()], &work).unwrap_or_else(|e| panic!("{e}"));
    let err = tessera_tests::relative_error(&got[0], want);
    eprintln!("{model} on {target} (static library, vlen {vlen}): relative error {err:.3e} vs onnxruntime");
    assert!(err <= 1e-4, "{model} on {target}: relative error {err:.3e}");
    // The driver reads the TensorProto file itself too, with the same result.
    let pb_dir = work.join("pb");
    std::fs::create_dir_all(&pb_dir).unwrap();
    std::fs::copy(set.join("input_0.pb"), pb_dir.join("input_0.pb")).unwrap();
    let (_, runner) = tessera_driver::aot::toolchain(isa, vlen);
    let exe = work.join("aot_driver");
    let mut cmd = match runner.split_first() {
        Some((first, rest)) => {
            let mut c = std::process::Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => std::process::Command::new(&exe),
    };
    let out = cmd.arg(&pb_dir).arg(&pb_dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(pb_dir.join("output_0.bin")).unwrap(),
        *got[0].bytes,
        "{model} on {target}: the .pb input gave other outputs than the raw one"
    );
    let _ = std::fs::remove_dir_all(&work);
    got
}

#[test]
fn examples_on_x86_64_match_onnxruntime_and_the_jit() {
    for model in ["mlp", "cnn", "bert"] {
        let Some(aot) = example(model, "llvm-x86_64", &[128]) else {
            return;
        };
        // The same kernels loaded in this process (the JIT path) give the same numbers.
        let dir = tessera_tests::models().join(model);
        let input =
            tessera_onnx::read_tensor_file(&dir.join("test_data_set_0/input_0.pb")).unwrap();
        let names = tessera_onnx::input_names(&dir.join("model.onnx")).unwrap();
        let named: BTreeMap<String, Tensor> = [(names[0].clone(), input.clone())].into();
        let opts = CompileOptions::for_target("llvm-x86_64").with_inputs(&named);
        let artifact = tessera_driver::compile_file(&dir.join("model.onnx"), &opts).unwrap();
        let jit = tessera_driver::load(artifact, "llvm-x86_64")
            .unwrap()
            .run(&[input])
            .unwrap();
        let err = tessera_tests::relative_error(&aot[0], &jit[0]);
        assert!(err <= 1e-5, "{model}: static library vs JIT {err:.3e}");
    }
}

#[test]
fn examples_on_aarch64_match_onnxruntime() {
    for model in ["mlp", "cnn", "bert"] {
        example(model, "llvm-aarch64", &[128]);
    }
}

#[test]
fn examples_on_riscv64_match_onnxruntime_at_vlen_128_and_256() {
    for model in ["mlp", "cnn", "bert"] {
        example(model, "llvm-riscv64", &[128, 256]);
    }
}

/// The llvm-aarch64 node-test ratchet through the static library and qemu-aarch64, on every
/// 24th listed test; `TESSERA_FULL_RATCHET=1` runs the whole list.
#[test]
fn llvm_aarch64_pass_list_still_passes() {
    if have_tools(Isa::Aarch64) {
        tessera_tests::ratchet_sampled("llvm-aarch64", 24);
    }
}

/// The llvm-riscv64 node-test ratchet under qemu-riscv64 (VLEN 128, or `TESSERA_RISCV_VLEN`),
/// on every 24th listed test; `TESSERA_FULL_RATCHET=1` runs the whole list.
#[test]
fn llvm_riscv64_pass_list_still_passes() {
    if have_tools(Isa::Riscv64) {
        tessera_tests::ratchet_sampled("llvm-riscv64", 24);
    }
}

#[test]
fn host_ops_are_refused_naming_op_and_node() {
    let case = tessera_tests::node_tests().join("test_nonzero_example");
    let model = case.join("model.onnx");
    let input = tessera_onnx::read_tensor_file(&case.join("test_data_set_0/input_0.pb")).unwrap();
    let names = tessera_onnx::input_names(&model).unwrap();
    let named: BTreeMap<String, Tensor> = [(names[0].clone(), input)].into();
    for target in ["llvm-x86_64", "llvm-aarch64", "llvm-riscv64"] {
        let opts = CompileOptions::for_target(target).with_inputs(&named);
        let e = compile_static_lib(&model, &opts, "model").err().unwrap();
        assert!(e.is_unsupported(), "{e}");
        assert!(
            e.to_string()
                .starts_with("--emit static-lib: host op NonZero (NonZero node"),
            "{e}"
        );
    }
}

#[test]
fn foreign_code_is_never_loaded() {
    for t in ["llvm-aarch64", "llvm-riscv64"] {
        // No device runs it here, and no .tsa is made for it.
        let e = tessera_driver::load_file(Path::new("/nonexistent.tsa"), t)
            .err()
            .unwrap();
        assert!(
            matches!(
                e,
                DriverError::Lookup(targets::LookupError::ForeignIsa { .. })
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("use `tessera compile --target"),
            "{e}"
        );
        let model = tessera_tests::models().join("mlp/model.onnx");
        let e = tessera_driver::compile_file(&model, &CompileOptions::for_target(t))
            .err()
            .unwrap();
        assert!(e.is_unsupported(), "{e}");
        assert!(e.to_string().contains("--emit static-lib"), "{e}");
    }
    // An artifact that claims a cross target is refused before any of its code is read.
    let model = tessera_tests::models().join("mlp/model.onnx");
    let mut a =
        tessera_driver::compile_file(&model, &CompileOptions::for_target("llvm-x86_64")).unwrap();
    a.target = "llvm-riscv64".into();
    let e = tessera_driver::load(a, "llvm-riscv64").err().unwrap();
    assert!(
        matches!(
            e,
            DriverError::Lookup(targets::LookupError::ForeignIsa { .. })
        ),
        "{e}"
    );
}

#[test]
fn a_failed_data_check_returns_a_status_naming_node_and_value() {
    if !have_tools(Isa::X86_64) {
        return;
    }
    let case = tessera_tests::node_tests().join("test_gather_0");
    let model = case.join("model.onnx");
    let set = case.join("test_data_set_0");
    let data = tessera_onnx::read_tensor_file(&set.join("input_0.pb")).unwrap();
    let indices = tessera_onnx::read_tensor_file(&set.join("input_1.pb")).unwrap();
    let names = tessera_onnx::input_names(&model).unwrap();
    let named: BTreeMap<String, Tensor> = names
        .iter()
        .cloned()
        .zip([data.clone(), indices.clone()])
        .collect();
    let opts = CompileOptions::for_target("llvm-x86_64").with_inputs(&named);
    let lib = compile_static_lib(&model, &opts, "model").unwrap();
    assert!(lib
        .header
        .contains("#define MODEL_INPUT_1_NAME \"indices\""));
    // Index 99 on an axis of 5.
    let mut bad = indices.bytes.to_vec();
    bad[..8].copy_from_slice(&99i64.to_le_bytes());
    let bad = Tensor::new(indices.dtype, indices.dims.clone(), bad);
    let work = scratch_dir("trap");
    let e = run_static(&lib, Isa::X86_64, 128, &[data, bad], &work)
        .err()
        .unwrap()
        .to_string();
    let _ = std::fs::remove_dir_all(&work);
    assert!(e.contains("run failed (status 1): Gather node"), "{e}");
    assert!(e.contains("input `indices`"), "{e}");
    assert!(e.contains("[value 99]"), "{e}");
}
