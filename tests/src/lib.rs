//! Shared helpers of Tessera's end-to-end tests: where the generated test data lives, and the
//! conformance ratchet that the per-target tests call. The tests themselves are in `tests/`.

use std::path::PathBuf;
use tessera_driver::conformance::{self, Status};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The generated ONNX node tests; panics with the command to run if they are missing.
pub fn node_tests() -> PathBuf {
    let dir = root().join("tests/data/node-cache");
    assert!(
        dir.join(".stamp").is_file(),
        "{} is missing: run scripts/gen-node-tests.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// The generated example models; panics with the command to run if they are missing.
pub fn models() -> PathBuf {
    let dir = root().join("tests/data/models");
    assert!(
        dir.join(".stamp").is_file(),
        "{} is missing: run scripts/make-models.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// The low-precision models for npu-sim's Cube (tests/python/make_npu_models.py); panics with
/// the command to run if they are missing.
pub fn npu_models() -> PathBuf {
    let dir = root().join("tests/data/npu-models");
    assert!(
        dir.join(".stamp").is_file(),
        "{} is missing: run scripts/make-models.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// The com.microsoft contrib-op cases with onnxruntime's outputs; panics with the command to
/// run if they are missing.
pub fn contrib_tests() -> PathBuf {
    // A folder generated elsewhere (`make_contrib_tests.py DIR`) replaces the shared one, to
    // try new cases without writing into tests/data/contrib.
    let dir = std::env::var_os("TESSERA_CONTRIB_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/data/contrib"));
    assert!(
        dir.join(".stamp").is_file(),
        "{} is missing: run scripts/make-contrib-tests.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// The largest element error of `got` over the largest magnitude of `want` (stable where
/// single reference values are near zero); dtypes and shapes must agree, and every element
/// of `got` be finite.
pub fn relative_error(got: &tessera_ir::Tensor, want: &tessera_ir::Tensor) -> f64 {
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

fn jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The model folders the `onnx` wheel ships (`pytorch-converted`, `pytorch-operator`, `simple`),
/// found in the project's venv; panics with the command to run if it is missing.
pub fn onnx_wheel_data(folder: &str) -> PathBuf {
    let lib = root().join(".venv/lib");
    let found = std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let d = e
                .path()
                .join("site-packages/onnx/backend/test/data")
                .join(folder);
            d.is_dir().then_some(d)
        });
    found.unwrap_or_else(|| panic!("onnx's `{folder}` test data is missing under {}: run scripts/setup-python.sh (scripts/test.sh does)", lib.display()))
}

/// The conformance ratchet for `target` on the node tests: every test in
/// `tests/conformance/<target>.pass` must still pass.
pub fn ratchet(target: &str) {
    ratchet_on(
        target,
        &node_tests(),
        &format!("{target}.pass"),
        "ONNX node tests",
    );
}

/// The conformance ratchet for `target` on the cases under `data`: every test in
/// `tests/conformance/<list>` must still pass. With `TESSERA_BLESS=1` it runs every case instead
/// and rewrites the list with everything that passes now (review the diff: a shrinking list is
/// a regression).
pub fn ratchet_on(target: &str, data: &std::path::Path, list_name: &str, what: &str) {
    ratchet_sample(target, data, list_name, what, 1)
}

/// [`ratchet`] on a deterministic sample of the node tests: every `every`-th listed test (for
/// targets whose full list does not fit CI's time). `TESSERA_FULL_RATCHET=1` runs them all.
pub fn ratchet_sampled(target: &str, every: usize) {
    let every = if std::env::var_os("TESSERA_FULL_RATCHET").is_some() {
        1
    } else {
        every
    };
    ratchet_sample(
        target,
        &node_tests(),
        &format!("{target}.pass"),
        "ONNX node tests",
        every,
    );
}

fn ratchet_sample(target: &str, data: &std::path::Path, list_name: &str, what: &str, every: usize) {
    let list = root().join("tests/conformance").join(list_name);
    if std::env::var_os("TESSERA_BLESS").is_some() {
        let results = conformance::run_suite(data, target, None, jobs(), None).expect("run suite");
        let passing: Vec<&str> = results
            .iter()
            .filter(|r| r.status == Status::Pass)
            .map(|r| r.name.as_str())
            .collect();
        let mut text = format!(
            "# {what} that pass on `{target}` (onnx 1.23.2). CI fails if one stops passing.\n# Regenerate with TESSERA_BLESS=1 cargo test -p tessera-tests --test conformance.\n"
        );
        for p in &passing {
            text.push_str(p);
            text.push('\n');
        }
        std::fs::write(&list, text).expect("write pass list");
        let s = conformance::summary(&results);
        eprintln!(
            "{target} on {}: {} of {} pass; {s:?}",
            data.display(),
            passing.len(),
            results.len()
        );
        for r in results.iter().filter(|r| r.status != Status::Pass) {
            eprintln!("  {} [{}]: {}", r.name, r.status.name(), r.message);
        }
        return;
    }
    let listed: Vec<String> = conformance::read_pass_list(&list)
        .expect("read pass list")
        .into_iter()
        .step_by(every.max(1))
        .collect();
    let results =
        conformance::run_suite(data, target, None, jobs(), Some(&listed)).expect("run suite");
    let found: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    let missing: Vec<&String> = listed
        .iter()
        .filter(|n| !found.contains(&n.as_str()))
        .collect();
    let regressions: Vec<String> = results
        .iter()
        .filter(|r| r.status != Status::Pass)
        .map(|r| format!("  {} [{}]: {}", r.name, r.status.name(), r.message))
        .collect();
    eprintln!(
        "{target}: {} listed tests ran, {} regressed, {} missing from the data",
        results.len(),
        regressions.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "listed tests not found in {}: {missing:?}",
        data.display()
    );
    assert!(
        regressions.is_empty(),
        "tests listed in {} no longer pass on `{target}`:\n{}",
        list.display(),
        regressions.join("\n")
    );
}
