//! Imports every cached ONNX backend node test (and the example models) with their
//! test-data inputs bound, and reports how many import cleanly, how many are unsupported and
//! which errors remain. Ignored by default: it needs the generated cache under
//! `tests/data/node-cache` (see the conformance harness). Run with
//! `cargo test -p tessera-onnx --test node_sweep -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::path::Path;
use tessera_onnx::{decode_model, import_file, read_tensor_file, ImportOptions};

fn options_for(dir: &Path) -> ImportOptions {
    let mut opts = ImportOptions {
        folder: Some(tessera_driver::fold::InterpFolder::shared()),
        ..ImportOptions::default()
    };
    let Ok(bytes) = std::fs::read(dir.join("model.onnx")) else {
        return opts;
    };
    let Ok(m) = decode_model(&bytes, "model.onnx") else {
        return opts;
    };
    let Some(g) = m.graph else { return opts };
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let names = g
        .input
        .iter()
        .map(|v| v.name.clone())
        .filter(|n| !inits.contains(&n.as_str()));
    for (k, name) in names.enumerate() {
        if let Ok(t) = read_tensor_file(dir.join("test_data_set_0").join(format!("input_{k}.pb"))) {
            opts.bound_inputs.insert(name, t);
        }
    }
    opts
}

#[test]
#[ignore]
fn sweep_node_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let mut dirs: Vec<_> = ["node-cache", "models"]
        .iter()
        .filter_map(|d| std::fs::read_dir(root.join(d)).ok())
        .flat_map(|r| r.filter_map(|e| e.ok().map(|e| e.path())))
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        eprintln!("no node-test cache; nothing to sweep");
        return;
    }
    let (mut ok, mut unsupported, mut panics) = (0, 0, 0);
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unsup: BTreeMap<String, usize> = BTreeMap::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let opts = options_for(dir);
        let r = std::panic::catch_unwind(|| import_file(&dir.join("model.onnx"), &opts));
        match r {
            Err(_) => {
                panics += 1;
                eprintln!("PANIC {name}");
            }
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) if e.is_unsupported() => {
                unsupported += 1;
                let key = match &e {
                    tessera_onnx::OnnxError::Unsupported { op_type, .. } => format!("op {op_type}"),
                    other => other.to_string(),
                };
                *unsup.entry(key).or_default() += 1;
            }
            Ok(Err(e)) => errors.entry(e.to_string()).or_default().push(name),
        }
    }
    for (k, n) in &unsup {
        eprintln!("unsupported {n:4}  {k}");
    }
    for (msg, tests) in &errors {
        eprintln!(
            "ERROR {} [{}]: {msg}",
            tests.len(),
            tests.first().map_or("", |s| s.as_str())
        );
    }
    let nerr: usize = errors.values().map(|v| v.len()).sum();
    eprintln!(
        "{} models: {ok} imported, {unsupported} unsupported, {nerr} errors, {panics} panics",
        dirs.len()
    );
    assert_eq!(panics, 0);
}
