//! The optimizer's differential test: every ONNX node test and every example model, at
//! `--opt-level 0` and at 2. A case whose graph the optimizer leaves unchanged compiles to the
//! same artifact at both levels, so only the cases it changes are run: a node test must keep
//! its status on interp, host and npu-sim (a pass at 0 is a pass at 1 and 2, within the
//! conformance tolerance: the pass lists hold at the default level), and an example
//! model's outputs at 2 must match those at 0 to the f32 tolerance (reassociation only).

use std::collections::BTreeMap;
use tessera_driver::conformance::{self, Status};
use tessera_driver::{CompileOptions, OptLevel};
use tessera_ir::Tensor;

/// Example inputs of a case folder's first data set, by graph-input name.
fn inputs(case: &std::path::Path) -> Option<BTreeMap<String, Tensor>> {
    let names = tessera_onnx::input_names(&case.join("model.onnx")).ok()?;
    let mut m = BTreeMap::new();
    for (k, n) in names.iter().enumerate() {
        let p = case.join(format!("test_data_set_0/input_{k}.pb"));
        m.insert(n.clone(), tessera_onnx::read_tensor_file(&p).ok()?);
    }
    Some(m)
}

/// Whether the optimizer at level 2 changes the case's graph on `target` (None: no import).
fn changed(case: &std::path::Path, target: &str) -> Option<(bool, Vec<String>)> {
    let named = inputs(case)?;
    let mut opts = CompileOptions::for_target(target).with_inputs(&named);
    opts.opt_level = OptLevel::O2;
    let g = tessera_driver::import(&case.join("model.onnx"), &opts).ok()?;
    match tessera_driver::optimize(&g, &opts) {
        Ok((_, r)) => Some((r.changed, r.fired.keys().cloned().collect())),
        // An optimizer error on an importable model is a bug: report it as a change, so
        // that the run at level 2 fails and names the rule.
        Err(e) => Some((true, vec![e.to_string()])),
    }
}

/// Node tests on `target`: each case the optimizer changes must keep a pass at -O0 as a pass
/// at -O1 (the default, so the pass lists hold) and at -O2.
fn node_tests_on(target: &str) {
    let dir = tessera_tests::node_tests();
    let cases = conformance::discover(&dir).unwrap();
    let mut compared = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let Some((true, fired)) = changed(case, target) else {
            continue;
        };
        compared += 1;
        let at0 = conformance::run_case_at(case, target, OptLevel::O0);
        if at0.status != Status::Pass {
            continue;
        }
        for level in [OptLevel::O1, OptLevel::O2] {
            let r = conformance::run_case_at(case, target, level);
            if r.status != Status::Pass {
                failures.push(format!(
                    "{} on {target} (rules {fired:?}): passes at -O0, {:?} at {level:?}: {}",
                    r.name, r.status, r.message
                ));
            }
        }
    }
    eprintln!(
        "{target}: {} node tests, {compared} changed by the optimizer and compared",
        cases.len()
    );
    assert!(
        compared > 0,
        "the optimizer changed no node test on {target}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn node_tests_keep_their_status_on_interp() {
    node_tests_on("interp");
}

#[test]
fn node_tests_keep_their_status_on_host() {
    node_tests_on("host");
}

#[test]
fn node_tests_keep_their_status_on_npu_sim() {
    node_tests_on("npu-sim");
}

fn run_model(model: &str, target: &str, level: OptLevel) -> Vec<Tensor> {
    let dir = tessera_tests::models().join(model);
    let named = inputs(&dir).unwrap();
    let mut opts = CompileOptions::for_target(target).with_inputs(&named);
    opts.opt_level = level;
    let artifact = tessera_driver::compile_file(&dir.join("model.onnx"), &opts).unwrap();
    let m = tessera_driver::load(artifact, target).unwrap();
    let ins: Vec<Tensor> = m
        .inputs()
        .iter()
        .map(|io| named[&io.name].clone())
        .collect();
    m.run(&ins).unwrap()
}

#[test]
fn example_models_match_across_opt_levels() {
    for model in ["mlp", "cnn", "bert"] {
        let a = run_model(model, "host", OptLevel::O0);
        let b = run_model(model, "host", OptLevel::O2);
        assert_eq!(a.len(), b.len());
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            conformance::compare(y, x)
                .unwrap_or_else(|m| panic!("{model} output {k}, -O2 vs -O0: {m}"));
        }
    }
}

/// Deterministic values in [-1, 1), `n` at a time.
fn seeded(mut state: u64) -> impl FnMut(usize) -> Vec<f32> {
    move |n| {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }
}

/// Runs `g` on `target` after the optimizer at level 2 under `precision`; returns the output
/// and the rules that fired.
fn run_graph(
    g: &tessera_ir::Graph,
    inputs: &[Tensor],
    target: &str,
    precision: tessera_driver::Precision,
) -> (Tensor, Vec<String>) {
    let mut opts = CompileOptions::for_target(target);
    opts.opt_level = OptLevel::O2;
    opts.precision = precision;
    let (g, report) = tessera_driver::optimize(g, &opts).unwrap();
    let artifact = tessera_driver::compile_graph(&g, "bf16-bound", target).unwrap();
    let m = tessera_driver::load(artifact, target).unwrap();
    let out = m.run(inputs).unwrap().remove(0);
    (out, report.fired.keys().cloned().collect())
}

/// Each narrow-float policy keeps a product within its documented bound (docs/optimizer.md):
/// the largest error over the largest reference magnitude stays within the target's output
/// tolerance for that dtype (`target.toml`), here on npu-sim, whose Cube runs the pairs.
#[test]
fn narrow_float_policies_stay_within_their_bounds() {
    let mut g = tessera_ir::text::parse(
        "graph @mm(%x: f32[64,256], %w: f32[256,128]) -> (%y) {\n  %y = MatMul(%x, %w)\n}\n",
    )
    .unwrap();
    tessera_ir::infer_shapes(&mut g).unwrap();
    let mut vals = seeded(2026);
    let inputs = vec![
        Tensor::from_f32(vec![64, 256], &vals(64 * 256)),
        Tensor::from_f32(vec![256, 128], &vals(256 * 128)),
    ];
    let (exact, fired) = run_graph(&g, &inputs, "npu-sim", tessera_driver::Precision::Exact);
    assert!(fired.is_empty(), "{fired:?}");
    let desc = tessera_driver::targets::lookup("npu-sim")
        .unwrap()
        .desc()
        .clone();
    for (policy, dtype, rule) in [
        (
            tessera_driver::Precision::Bf16,
            tessera_ir::DType::BF16,
            "matmul-bf16",
        ),
        (
            tessera_driver::Precision::F16,
            tessera_ir::DType::F16,
            "matmul-f16",
        ),
    ] {
        let (got, fired) = run_graph(&g, &inputs, "npu-sim", policy);
        assert_eq!(fired, [rule]);
        let (mut err, mut big) = (0f64, 0f64);
        for i in 0..exact.num_elements() {
            let (a, b) = (got.get_f64(i).unwrap(), exact.get_f64(i).unwrap());
            err = err.max((a - b).abs());
            big = big.max(b.abs());
        }
        let (rel, _) = desc.tolerance_of(dtype).unwrap();
        let e = err / big;
        eprintln!("{rule}: relative error {e:.3e} (bound {rel:.1e})");
        assert!(
            e > 0.0,
            "{rule} changed nothing: was the narrow product chosen?"
        );
        assert!(
            e <= rel,
            "{rule}: relative error {e:.3e} above the bound {rel:.1e}"
        );
    }
}

/// Each activation FusedMatMul's epilogue applies (`matmul-relu`, `matmul-activation`) gives
/// what the unfused product and activation give, on every kind of target: the reference
/// interpreter, the CPU and the NPU (whose epilogue runs on the Vector unit).
#[test]
fn fused_activations_match_the_unfused_graph() {
    let acts = [
        ("Relu", "Relu(%a)", "matmul-relu"),
        ("Gelu", "Gelu(%a)", "matmul-activation"),
        (
            "GeluTanh",
            "Gelu(%a) {approximate = \"tanh\"}",
            "matmul-activation",
        ),
        ("Sigmoid", "Sigmoid(%a)", "matmul-activation"),
        ("Tanh", "Tanh(%a)", "matmul-activation"),
    ];
    let mut state = 7u64;
    let mut vals = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
            })
            .collect()
    };
    let inputs = vec![
        Tensor::from_f32(vec![24, 40], &vals(24 * 40, 1.0)),
        Tensor::from_f32(vec![40, 36], &vals(40 * 36, 0.5)),
        Tensor::from_f32(vec![36], &vals(36, 1.0)),
    ];
    for (name, act, rule) in acts {
        let text = format!(
            "graph @act(%x: f32[24,40], %w: f32[40,36], %b: f32[36]) -> (%y) {{\n  %m = MatMul(%x, %w)\n  %a = Add(%m, %b)\n  %y = {act}\n}}\n"
        );
        let mut g = tessera_ir::text::parse(&text).unwrap();
        tessera_ir::infer_shapes(&mut g).unwrap();
        for target in ["interp", "host", "npu-sim"] {
            let plain = {
                let artifact = tessera_driver::compile_graph(&g, "act", target).unwrap();
                let m = tessera_driver::load(artifact, target).unwrap();
                m.run(&inputs).unwrap().remove(0)
            };
            let (fused, fired) = run_graph(&g, &inputs, target, tessera_driver::Precision::Exact);
            assert!(
                fired.iter().any(|r| r == rule) && fired.iter().any(|r| r == "matmul-bias"),
                "{name} on {target}: fired {fired:?}"
            );
            conformance::compare(&fused, &plain)
                .unwrap_or_else(|m| panic!("{name} on {target}, fused vs unfused: {m}"));
        }
    }
}

/// The Conv and product epilogues (`conv-batchnorm`, `conv-residual`, `conv-activation`,
/// `matmul-residual`) compute what their unfused graphs compute, on every lowering path
/// (the Conv as a tile-program product, a grouped and a 1-D Conv on the direct kernels) and on
/// every target (npu-sim keeps only a ReLU in the product and runs the rest after it): each
/// graph at -O2 against the same graph at -O0 on the interpreter.
#[test]
fn conv_and_residual_epilogues_match_their_parts() {
    let cases = [
        (
            "graph @resnet(%x: f32[1,8,10,10], %w: f32[8,8,3,3], %b: f32[8], %s: f32[1,8,10,10]) -> (%y) {\n  \
             %c = Conv(%x, %w, %b) {pads = [1, 1, 1, 1]}\n  %a = Add(%c, %s)\n  %y = Relu(%a)\n}\n",
            &["conv-activation", "conv-residual"][..],
        ),
        (
            "graph @bn(%x: f32[1,8,10,10]) -> (%y) {\n  \
             const %w = dense<f32[8,8,1,1]: [WEIGHTS]>\n  \
             const %g = dense<f32[8]: [1.0, 2.0, 0.5, 1.5, -1.0, 1.0, 0.25, 3.0]>\n  \
             const %be = dense<f32[8]: [0.1, -0.2, 0.3, 0.0, 1.0, -1.0, 0.5, 0.2]>\n  \
             const %mu = dense<f32[8]: [0.0, 0.5, -0.5, 1.0, 0.2, 0.0, 0.1, -0.3]>\n  \
             const %var = dense<f32[8]: [1.0, 0.5, 2.0, 0.1, 1.0, 4.0, 0.3, 1.0]>\n  \
             %c = Conv(%x, %w)\n  \
             %n = BatchNormalization(%c, %g, %be, %mu, %var)\n  %y = Sigmoid(%n)\n}\n",
            &["conv-activation", "conv-batchnorm"][..],
        ),
        (
            "graph @grouped(%x: f32[1,8,10,10], %w: f32[8,4,3,3], %s: f32[1,8,8,8]) -> (%y) {\n  \
             %c = Conv(%x, %w) {group = 2}\n  %a = Add(%s, %c)\n  %y = Tanh(%a)\n}\n",
            &["conv-activation", "conv-residual"][..],
        ),
        (
            "graph @conv1d(%x: f32[2,4,16], %w: f32[6,4,3], %s: f32[2,6,14]) -> (%y) {\n  \
             %c = Conv(%x, %w)\n  %a = Add(%c, %s)\n  %y = Relu(%a)\n}\n",
            &["conv-activation", "conv-residual"][..],
        ),
        (
            "graph @block(%x: f32[32,64], %w: f32[64,64], %b: f32[64]) -> (%y) {\n  \
             %m = MatMul(%x, %w)\n  %a = Add(%m, %b)\n  %r = Add(%a, %x)\n  %y = Gelu(%r)\n}\n",
            &["matmul-activation", "matmul-bias", "matmul-residual"][..],
        ),
    ];
    let mut vals = seeded(7);
    // The BatchNormalization case needs constant weights.
    let weights: Vec<String> = (0..64)
        .map(|i| format!("{:.3}", (i % 7) as f32 * 0.25 - 0.7))
        .collect();
    for (text, rules) in cases {
        let text = text.replace("WEIGHTS", &weights.join(", "));
        let mut g = tessera_ir::text::parse(&text).unwrap();
        tessera_ir::infer_shapes(&mut g).unwrap();
        let inputs: Vec<Tensor> = g
            .inputs
            .iter()
            .map(|&v| {
                let dims = g.ty(v).unwrap().shape.as_static().unwrap();
                let n = dims.iter().product::<u64>() as usize;
                Tensor::from_f32(dims, &vals(n))
            })
            .collect();
        let reference = {
            let artifact = tessera_driver::compile_graph(&g, "reference", "interp").unwrap();
            let m = tessera_driver::load(artifact, "interp").unwrap();
            m.run(&inputs).unwrap().remove(0)
        };
        for target in ["interp", "host", "npu-sim"] {
            let (got, fired) = run_graph(&g, &inputs, target, tessera_driver::Precision::Exact);
            assert_eq!(fired, rules, "{} on {target}", g.name);
            conformance::compare(&got, &reference)
                .unwrap_or_else(|m| panic!("{} on {target}, -O2 vs -O0: {m}", g.name));
        }
    }
}

/// `matmul-merge`: three biased products of one activation (Q, K and V, of different widths)
/// as one product and a Split give each product's own result, on every target; host (launches
/// dear against copying these small results) takes the merged form, npu-sim keeps three.
#[test]
fn merged_products_match_the_separate_ones() {
    let mut vals = seeded(11);
    let mut hex = |dims: &[u64]| -> String {
        let n = dims.iter().product::<u64>() as usize;
        let bytes: String = vals(n)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .map(|b| format!("{b:02x}"))
            .collect();
        let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        format!("dense_hex<f32[{}]: \"{bytes}\">", dims.join(","))
    };
    let mut text = String::from("graph @qkv(%x: f32[2,16,64]) -> (%q, %k, %v) {\n");
    for (name, n) in [("q", 48u64), ("k", 48), ("v", 32)] {
        text.push_str(&format!("  const %w{name} = {}\n", hex(&[64, n])));
        text.push_str(&format!("  const %b{name} = {}\n", hex(&[n])));
    }
    for name in ["q", "k", "v"] {
        text.push_str(&format!(
            "  %m{name} = MatMul(%x, %w{name})\n  %{name} = Add(%m{name}, %b{name})\n"
        ));
    }
    text.push_str("}\n");
    let mut g = tessera_ir::text::parse(&text).unwrap();
    tessera_ir::infer_shapes(&mut g).unwrap();
    let inputs = vec![Tensor::from_f32(vec![2, 16, 64], &vals(2 * 16 * 64))];
    let reference = {
        let artifact = tessera_driver::compile_graph(&g, "reference", "interp").unwrap();
        let m = tessera_driver::load(artifact, "interp").unwrap();
        m.run(&inputs).unwrap()
    };
    for (target, merged) in [
        ("interp", None),
        ("host", Some(true)),
        ("npu-sim", Some(false)),
    ] {
        let mut opts = CompileOptions::for_target(target);
        opts.opt_level = OptLevel::O2;
        let (opt, report) = tessera_driver::optimize(&g, &opts).unwrap();
        assert!(
            report.fired.contains_key("matmul-merge"),
            "{target}: fired {:?}",
            report.fired
        );
        let split = opt.nodes.iter().any(|n| n.op == tessera_ir::Op::Split);
        if let Some(want) = merged {
            assert_eq!(split, want, "{target}: merged form taken");
        }
        let artifact = tessera_driver::compile_graph(&opt, "qkv", target).unwrap();
        let m = tessera_driver::load(artifact, target).unwrap();
        let got = m.run(&inputs).unwrap();
        assert_eq!(got.len(), 3);
        for (i, (got, want)) in got.iter().zip(&reference).enumerate() {
            conformance::compare(got, want)
                .unwrap_or_else(|m| panic!("{target}, output {i}, -O2 vs -O0: {m}"));
        }
    }
}
