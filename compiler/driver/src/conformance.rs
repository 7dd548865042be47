//! The conformance runner: executes ONNX backend node tests (`<case>/model.onnx` plus
//! `test_data_set_N/{input,output}_K.pb`) on a target and classifies each as pass, fail
//! (wrong numbers, shape or dtype), unsupported, or error. Every case goes the whole way:
//! import, lower, compile, encode the artifact, decode it, load it on the device and run.

use crate::pipeline::{compile_file, load, CompileOptions};
use crate::DriverError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tessera_ir::{DType, Tensor};
use tessera_kir::Execution;
use tessera_runtime::Artifact;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Pass,
    /// Ran, but an output had the wrong dtype, shape or values.
    Fail,
    /// Refused cleanly: an op, dtype or attribute Tessera does not support yet.
    Unsupported,
    /// Anything else: an error that is not "unsupported", or a panic (a bug).
    Error,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Unsupported => "unsupported",
            Status::Error => "error",
        }
    }
}

#[derive(Clone, Debug)]
pub struct CaseResult {
    pub name: String,
    pub status: Status,
    pub message: String,
    /// Whether every dense op of the model ran as a compiled kernel (`None` if it never ran).
    pub dense_as_kernels: Option<bool>,
    /// Ops that ran on the host rather than as kernels.
    pub host_ops: Vec<String>,
    /// Kernel launches in the plan (summed over data sets); 0 means everything was folded.
    pub launches: usize,
    pub millis: u128,
}

/// The node-test case folders under `dir`, sorted by name.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, DriverError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DriverError::Io {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut cases: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    cases.sort();
    Ok(cases)
}

/// Per-dtype (relative, absolute) tolerances; integers, bools and strings must match exactly.
pub fn tolerance(dtype: DType) -> Option<(f64, f64)> {
    Some(match dtype {
        DType::F64 | DType::F32 => (1e-3, 1e-5),
        DType::F16 => (4e-3, 1e-3),
        DType::BF16 => (3e-2, 1e-2),
        DType::F8E4M3FN | DType::F8E4M3FNUZ => (0.125, 1e-2),
        DType::F8E5M2 | DType::F8E5M2FNUZ => (0.25, 1e-2),
        DType::F4E2M1 => (0.5, 0.5),
        _ => return None,
    })
}

/// Compares one output; `Err` says how it differs.
pub fn compare(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dtype != want.dtype {
        return Err(format!(
            "dtype {} where {} was expected",
            got.dtype, want.dtype
        ));
    }
    if got.dims != want.dims {
        return Err(format!(
            "shape {:?} where {:?} was expected",
            got.dims, want.dims
        ));
    }
    if want.dtype == DType::String {
        return if got.strings == want.strings {
            Ok(())
        } else {
            Err("strings differ".into())
        };
    }
    let n = want.num_elements();
    match tolerance(want.dtype) {
        Some((rtol, atol)) => {
            for i in 0..n {
                let (g, w) = (
                    got.get_f64(i).unwrap_or(f64::NAN),
                    want.get_f64(i).unwrap_or(f64::NAN),
                );
                let ok =
                    (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= atol + rtol * w.abs();
                if !ok {
                    return Err(format!("element {i}: got {g}, expected {w}"));
                }
            }
        }
        None => {
            for i in 0..n {
                let (g, w) = (got.get_i64(i), want.get_i64(i));
                if g != w {
                    return Err(format!("element {i}: got {g:?}, expected {w:?}"));
                }
            }
        }
    }
    Ok(())
}

fn read_pb_set(dir: &Path, prefix: &str) -> Result<Vec<Tensor>, DriverError> {
    let mut out = Vec::new();
    for k in 0.. {
        let p = dir.join(format!("{prefix}_{k}.pb"));
        if !p.is_file() {
            break;
        }
        out.push(tessera_onnx::read_tensor_file(&p)?);
    }
    Ok(out)
}

/// Runs one case folder on `target` at the default opt-level.
pub fn run_case(case: &Path, target: &str) -> CaseResult {
    run_case_at(case, target, tessera_opt::OptLevel::default())
}

/// Runs one case folder on `target` with the optimizer at `level` (the differential test).
pub fn run_case_at(case: &Path, target: &str, level: tessera_opt::OptLevel) -> CaseResult {
    let name = case
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let start = std::time::Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_case_inner(case, target, level)
    }));
    let mut r = match outcome {
        Ok(Ok((dense, host_ops, launches))) => CaseResult {
            name,
            status: Status::Pass,
            message: String::new(),
            dense_as_kernels: Some(dense),
            host_ops,
            launches,
            millis: 0,
        },
        Ok(Err((status, message, dense))) => CaseResult {
            name,
            status,
            message,
            dense_as_kernels: dense,
            host_ops: Vec::new(),
            launches: 0,
            millis: 0,
        },
        Err(p) => {
            let msg = tessera_ir::error::panic_message(p.as_ref());
            CaseResult {
                name,
                status: Status::Error,
                message: format!("panic (a bug): {msg}"),
                dense_as_kernels: None,
                host_ops: Vec::new(),
                launches: 0,
                millis: 0,
            }
        }
    };
    r.millis = start.elapsed().as_millis();
    r
}

type CaseErr = (Status, String, Option<bool>);

fn classify(e: DriverError) -> CaseErr {
    let status = if e.is_unsupported() {
        Status::Unsupported
    } else {
        Status::Error
    };
    (status, e.to_string(), None)
}

fn run_case_inner(
    case: &Path,
    target: &str,
    level: tessera_opt::OptLevel,
) -> Result<(bool, Vec<String>, usize), CaseErr> {
    let model_path = case.join("model.onnx");
    let mut sets: Vec<PathBuf> = std::fs::read_dir(case)
        .map_err(|e| (Status::Error, e.to_string(), None))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Err((Status::Error, "no test_data_set_* folder".into(), None));
    }
    let mut dense_all = true;
    let mut host_ops = Vec::new();
    let mut launches = 0;
    for set in &sets {
        let inputs = read_pb_set(set, "input").map_err(classify)?;
        let expected = read_pb_set(set, "output").map_err(classify)?;
        // Input names come from the model; the .pb files are in graph-input order.
        let graph_inputs =
            tessera_onnx::input_names(&model_path).map_err(|e| classify(e.into()))?;
        if graph_inputs.len() != inputs.len() {
            return Err((
                Status::Error,
                format!(
                    "model has {} inputs, data set {} has {}",
                    graph_inputs.len(),
                    set.display(),
                    inputs.len()
                ),
                None,
            ));
        }
        let named: BTreeMap<String, Tensor> = graph_inputs
            .iter()
            .cloned()
            .zip(inputs.iter().cloned())
            .collect();
        let mut opts = CompileOptions::for_target(target).with_inputs(&named);
        opts.opt_level = level;
        #[cfg(feature = "llvm")]
        if crate::targets::is_cross(target) {
            let got = run_static_case(&model_path, &opts, &inputs, &mut launches)?;
            compare_all(&got, &expected, dense_all)?;
            continue;
        }
        let artifact = compile_file(&model_path, &opts).map_err(classify)?;
        // Round-trip through the file format so every run exercises the artifact too.
        let artifact = Artifact::decode(&artifact.encode()).map_err(|e| classify(e.into()))?;
        launches += artifact
            .plan
            .steps
            .iter()
            .map(tessera_kir::Step::launches)
            .sum::<usize>();
        for n in &artifact.plan.nodes {
            if n.how == Execution::Host {
                host_ops.push(n.op.clone());
                if n.dense {
                    dense_all = false;
                }
            }
        }
        let model = load(artifact, target).map_err(classify)?;
        let got = model.run(&inputs).map_err(|e| classify(e.into()))?;
        compare_all(&got, &expected, dense_all)?;
    }
    host_ops.sort();
    host_ops.dedup();
    Ok((dense_all, host_ops, launches))
}

fn compare_all(got: &[Tensor], expected: &[Tensor], dense_all: bool) -> Result<(), CaseErr> {
    if got.len() != expected.len() {
        return Err((
            Status::Fail,
            format!(
                "{} outputs where {} were expected",
                got.len(),
                expected.len()
            ),
            Some(dense_all),
        ));
    }
    for (k, (g, w)) in got.iter().zip(expected).enumerate() {
        compare(g, w).map_err(|m| (Status::Fail, format!("output {k}: {m}"), Some(dense_all)))?;
    }
    Ok(())
}

/// One data set of a case on a cross target: compiled into a static library, linked with
/// the C driver by the ISA's gcc and run under qemu-user, in a temporary folder removed
/// afterwards. The plan's host steps are refused by the library (unsupported).
#[cfg(feature = "llvm")]
fn run_static_case(
    model: &Path,
    opts: &CompileOptions,
    inputs: &[Tensor],
    launches: &mut usize,
) -> Result<Vec<Tensor>, CaseErr> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let isa = tessera_llvm::Isa::of_target(crate::targets::split_cpu(&opts.target).0).ok_or_else(
        || {
            (
                Status::Error,
                format!("`{}` is no LLVM target", opts.target),
                None,
            )
        },
    )?;
    let lib = crate::aot::compile_static_lib(model, opts, "model").map_err(classify)?;
    *launches += lib.launches;
    let dir = std::env::temp_dir().join(format!(
        "tessera-aot-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let r = crate::aot::run_static(&lib, isa, crate::aot::riscv_vlen(), inputs, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    r.map_err(classify)
}

/// Runs every case under `dir` whose name matches `filter`, on `jobs` threads.
pub fn run_suite(
    dir: &Path,
    target: &str,
    filter: Option<&regex::Regex>,
    jobs: usize,
    only: Option<&[String]>,
) -> Result<Vec<CaseResult>, DriverError> {
    run_suite_with_progress(dir, target, filter, jobs, only, &|_, _| {})
}

/// [`run_suite`], calling `progress(0, total)` before the first case and `progress(done, total)`
/// after each (from the worker threads, so calls may arrive out of order).
pub fn run_suite_with_progress(
    dir: &Path,
    target: &str,
    filter: Option<&regex::Regex>,
    jobs: usize,
    only: Option<&[String]>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<CaseResult>, DriverError> {
    let cases: Vec<PathBuf> = discover(dir)?
        .into_iter()
        .filter(|c| {
            let n = c
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            filter.is_none_or(|f| f.is_match(&n)) && only.is_none_or(|o| o.contains(&n))
        })
        .collect();
    progress(0, cases.len());
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(cases.len()));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = cases.get(i) else { break };
                let r = run_case(c, target);
                let done = {
                    let mut all = results.lock().unwrap_or_else(|e| e.into_inner());
                    all.push(r);
                    all.len()
                };
                progress(done, cases.len());
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(results)
}

/// Counts per status.
pub fn summary(results: &[CaseResult]) -> BTreeMap<Status, usize> {
    let mut m = BTreeMap::new();
    for r in results {
        *m.entry(r.status).or_insert(0) += 1;
    }
    m
}

/// The JSON report written by `tessera conformance`.
pub fn report_json(target: &str, results: &[CaseResult]) -> String {
    let s = summary(results);
    let cases: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "status": r.status.name(),
                "message": r.message,
                "dense_ops_as_kernels": r.dense_as_kernels,
                "host_ops": r.host_ops,
                "kernel_launches": r.launches,
                "millis": r.millis as u64,
            })
        })
        .collect();
    let v = serde_json::json!({
        "target": target,
        "total": results.len(),
        "pass": s.get(&Status::Pass).copied().unwrap_or(0),
        "fail": s.get(&Status::Fail).copied().unwrap_or(0),
        "unsupported": s.get(&Status::Unsupported).copied().unwrap_or(0),
        "error": s.get(&Status::Error).copied().unwrap_or(0),
        "cases": cases,
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// Reads a committed pass list: one test name per line, `#` comments.
pub fn read_pass_list(path: &Path) -> Result<Vec<String>, DriverError> {
    let text = std::fs::read_to_string(path).map_err(|e| DriverError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}
