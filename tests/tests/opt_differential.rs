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
