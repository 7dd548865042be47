//! End-to-end: the three example models (MLP, ResNet-style CNN, BERT encoder layer) compiled
//! for `host` and `interp` (and the MLP and CNN for `npu-sim`, whose f32 runs exactly on its Vector
//! unit) must match onnxruntime's outputs to a relative error of 1e-4.

use std::collections::BTreeMap;
use tessera_driver::{compile_file, load, CompileOptions};
use tessera_ir::Tensor;

fn check(model: &str, target: &str) {
    let dir = tessera_tests::models().join(model);
    let set = dir.join("test_data_set_0");
    let input = tessera_onnx::read_tensor_file(&set.join("input_0.pb")).unwrap();
    let want = tessera_onnx::read_tensor_file(&set.join("output_0.pb")).unwrap();
    let names = tessera_onnx::input_names(&dir.join("model.onnx")).unwrap();
    let named: BTreeMap<String, Tensor> = [(names[0].clone(), input.clone())].into();
    let artifact = compile_file(
        &dir.join("model.onnx"),
        &CompileOptions::for_target(target).with_inputs(&named),
    )
    .unwrap();
    for n in &artifact.plan.nodes {
        assert!(
            !n.dense || n.how == tessera_kir::Execution::Kernel,
            "{} ran as {:?}",
            n.node,
            n.how
        );
    }
    let m = load(artifact, target).unwrap();
    let got = m.run(&[input]).unwrap();
    let err = tessera_tests::relative_error(&got[0], &want);
    eprintln!("{model} on {target}: relative error {err:.3e}");
    assert!(
        err <= 1e-4,
        "{model} on {target}: relative error {err:.3e} > 1e-4"
    );
}

#[test]
fn mlp_host() {
    check("mlp", "host");
}

#[test]
fn mlp_interp() {
    check("mlp", "interp");
}

#[test]
fn cnn_host() {
    check("cnn", "host");
}

#[test]
fn cnn_interp() {
    check("cnn", "interp");
}

#[test]
fn bert_host() {
    check("bert", "host");
}

#[test]
fn bert_interp() {
    check("bert", "interp");
}

/// A loaded model runs from several threads at once, each run with its own scratch memory,
/// and every thread gets the single-threaded answer bit for bit.
#[test]
fn one_model_many_threads() {
    let dir = tessera_tests::models().join("cnn");
    let set = dir.join("test_data_set_0");
    let input = tessera_onnx::read_tensor_file(&set.join("input_0.pb")).unwrap();
    let artifact =
        compile_file(&dir.join("model.onnx"), &CompileOptions::for_target("host")).unwrap();
    let m = load(artifact, "host").unwrap();
    let alone = m.run(std::slice::from_ref(&input)).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..3)
                        .map(|_| m.run(std::slice::from_ref(&input)).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for out in h.join().unwrap() {
                assert_eq!(out, alone);
            }
        }
    });
}

/// The same model compiled twice gives byte-identical artifacts, on both targets.
#[test]
fn compiling_is_deterministic() {
    let model = tessera_tests::models().join("cnn/model.onnx");
    for target in ["host", "interp"] {
        let a = compile_file(&model, &CompileOptions::for_target(target))
            .unwrap()
            .encode();
        let b = compile_file(&model, &CompileOptions::for_target(target))
            .unwrap()
            .encode();
        assert!(a == b, "{target}: two compilations differ");
    }
}

#[test]
fn mlp_npu_sim() {
    check("mlp", "npu-sim");
}

#[test]
fn cnn_npu_sim() {
    check("cnn", "npu-sim");
}
