//! End-to-end on npu-sim's Cube: the low-precision models of tests/python/make_npu_models.py
//! (an f16 MLP, an f16 BERT encoder layer, and the int8 MatMul a QDQ model becomes) compiled
//! for npu-sim and npu-sim-lite must match onnxruntime: the f16 outputs within f16's
//! precision, the integer outputs exactly. Every matrix-product kernel must have gone down the
//! tile-level path (its program issues `MMA`), and a cycle-mode run must report the Cube's
//! useful MACs, with no simulator hard error anywhere (that would be a compiler bug).

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_driver::{compile_file, targets, CompileOptions};
use tessera_ir::Tensor;
use tessera_npu_sim::blob::Blob;
use tessera_npu_sim::{Instr, Mem, Mode};
use tessera_runtime::Model;

/// Largest element error over the largest reference magnitude.
fn relative_error(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!((got.dtype, &got.dims), (want.dtype, &want.dims));
    let (mut err, mut scale) = (0f64, 0f64);
    for i in 0..want.num_elements() {
        let (g, w) = (got.get_f64(i).unwrap(), want.get_f64(i).unwrap());
        assert!(g.is_finite(), "element {i} is {g}");
        err = err.max((g - w).abs());
        scale = scale.max(w.abs());
    }
    err / scale.max(f64::MIN_POSITIVE)
}

/// What a cycle-mode run of a model reported: useful Cube MACs and total cycles.
struct Run {
    macs: u64,
    cycles: u64,
}

/// Compiles `model` for `target`, checks its products run on the Cube and its row kernels
/// (softmax, layer norm) and transposes on the UB paths (no scalar GM access; the row form of `VRED`,
/// a transposing `DMA GM->UB` for a transpose that turns rows into columns), runs it in
/// functional and cycle mode, and compares every output with onnxruntime's (`tol` for floats,
/// exact for integers).
fn check(model: &str, target: &str, tol: f64) -> u64 {
    check_run(model, target, tol).macs
}

fn check_run(model: &str, target: &str, tol: f64) -> Run {
    let dir = tessera_tests::npu_models().join(model);
    let set = dir.join("test_data_set_0");
    let input = tessera_onnx::read_tensor_file(&set.join("input_0.pb")).unwrap();
    let names = tessera_onnx::input_names(&dir.join("model.onnx")).unwrap();
    let named: BTreeMap<String, Tensor> = [(names[0].clone(), input.clone())].into();
    let artifact = compile_file(
        &dir.join("model.onnx"),
        &CompileOptions::for_target(target).with_inputs(&named),
    )
    .unwrap();
    let mut products = 0;
    for k in &artifact.kernels {
        if k.name.starts_with("matmul") || k.name.starts_with("gemm") {
            let blob = Blob::decode(&k.blob).unwrap();
            let cube = blob.program.iter().any(|i| matches!(i, Instr::Mma { .. }));
            assert!(
                cube,
                "{model} on {target}: kernel `{}` is not on the Cube",
                k.name
            );
            products += 1;
        }
    }
    assert!(products > 0, "{model}: no matrix-product kernel");
    let mut turned = false;
    for k in &artifact.kernels {
        let row = k.name.starts_with("softmax") || k.name.starts_with("layer_norm");
        if !row && !k.name.starts_with("transpose") {
            continue;
        }
        let blob = Blob::decode(&k.blob).unwrap();
        let scalar_gm = blob.program.iter().any(|i| {
            matches!(
                i,
                Instr::Ld { mem: Mem::Gm, .. } | Instr::St { mem: Mem::Gm, .. }
            )
        });
        let vred = blob
            .program
            .iter()
            .any(|i| matches!(i, Instr::VredRows { .. }));
        turned |= blob.program.iter().any(|i| {
            matches!(
                i,
                Instr::Dma {
                    src_mem: Mem::Gm,
                    dst_mem: Mem::Ub,
                    transpose: true,
                    ..
                }
            )
        });
        assert!(
            !scalar_gm && (vred || !row),
            "{model} on {target}: kernel `{}` is not on the UB path",
            k.name
        );
    }
    let transposes = artifact
        .kernels
        .iter()
        .any(|k| k.name.starts_with("transpose"));
    assert!(
        !transposes || turned,
        "{model} on {target}: no transposing DMA"
    );
    let mut useful = 0;
    let mut cycles = 0;
    for mode in [Mode::Functional, Mode::Cycle] {
        let dev = targets::npu_sim_device(target, mode).unwrap().unwrap();
        let m = Model::load(artifact.clone(), Arc::new(dev.clone())).unwrap();
        let got = m.run(std::slice::from_ref(&input)).unwrap();
        for (i, g) in got.iter().enumerate() {
            let want = tessera_onnx::read_tensor_file(&set.join(format!("output_{i}.pb"))).unwrap();
            if want.dtype.is_float() {
                let err = relative_error(g, &want);
                eprintln!("{model} on {target}: output {i} relative error {err:.3e}");
                assert!(
                    err <= tol,
                    "{model} on {target}: output {i} error {err:.3e} > {tol}"
                );
            } else {
                assert!(
                    g == &want,
                    "{model} on {target}: integer output {i} differs"
                );
            }
        }
        let reports = dev.take_reports();
        useful = reports.iter().map(|r| r.report.macs_useful).sum();
        cycles = reports.iter().map(|r| r.report.total_cycles).sum();
    }
    Run {
        macs: useful,
        cycles,
    }
}

#[test]
fn f16_mlp_runs_its_products_on_the_cube() {
    let macs = 8 * (256 * 512 + 512 * 512 + 512 * 256 + 256 * 128);
    assert_eq!(check("mlp_f16", "npu-sim", 1e-2), macs);
    assert_eq!(check("mlp_f16", "npu-sim-lite", 1e-2), macs);
}

#[test]
fn f16_bert_layer_runs_its_products_on_the_cube() {
    // Q, K, V and the output projection (32 x 128 x 128 each), the scores and the context
    // (2 heads of 32 x 32 x 64), the FFN (32 x 128 x 512, twice).
    let macs = 4 * 32 * 128 * 128 + 2 * 2 * 32 * 32 * 64 + 2 * 32 * 128 * 512;
    let run = check_run("bert_f16", "npu-sim", 2e-2);
    assert_eq!(run.macs, macs);
    // Deterministic cycle counts: with softmax, the layer norms and the transposes lane by
    // lane the layer took 30.5 M cycles; on the UB paths 73,174.
    assert!(run.cycles < 150_000, "bert_f16 took {} cycles", run.cycles);
    assert_eq!(check("bert_f16", "npu-sim-lite", 2e-2), macs);
}

#[test]
fn int8_matmul_runs_on_the_cube_i8_path_exactly() {
    assert_eq!(check("qdq_i8_matmul", "npu-sim", 0.0), 16 * 96 * 40);
    assert_eq!(check("qdq_i8_matmul", "npu-sim-lite", 0.0), 16 * 96 * 40);
}
