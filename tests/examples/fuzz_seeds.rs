//! Writes the seed corpora of the fuzz targets (`fuzz/`, see docs/security.md) from the node
//! tests and the example models: `cargo run -p tessera-tests --example fuzz_seeds -- OUT_DIR`
//! (scripts/fuzz.sh runs it). For every target it writes real inputs of the format that target
//! parses, so the fuzzer starts from well-formed files and mutates them:
//!
//! - `onnx_import`: node-test models (every 8th, by name) and the example models;
//! - `tensor_files`: their `.pb` inputs, and the same tensors as `.npy`;
//! - `ir_text`: the imported graphs printed as graph-IR text, and the file tests' graphs;
//! - `kir_text` and `tsa_load`: the kernels (text) and artifacts those models compile to on
//!   `interp`;
//! - `npu_asm` and `npu_decode`: the hand-written npu-sim kernels, as text and encoded.
//!
//! Inputs over 256 KiB are skipped: they slow the fuzzer down and add nothing a small one does
//! not. The output is deterministic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAX_SEED: usize = 256 << 10;

fn write(out: &Path, target: &str, name: &str, bytes: &[u8]) {
    if bytes.len() > MAX_SEED {
        return;
    }
    let dir = out.join(target);
    std::fs::create_dir_all(&dir).expect("create corpus folder");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut models: Vec<PathBuf> = Vec::new();
    let cache = root.join("tests/data/node-cache");
    if let Ok(cases) = tessera_driver::conformance::discover(&cache) {
        models.extend(cases.into_iter().step_by(8));
    }
    for m in ["mlp", "cnn", "bert"] {
        models.push(root.join("tests/data/models").join(m));
    }
    let mut count = 0usize;
    for case in &models {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let model = case.join("model.onnx");
        let Ok(bytes) = std::fs::read(&model) else {
            continue;
        };
        write(&out, "onnx_import", &format!("{name}.onnx"), &bytes);
        let set = case.join("test_data_set_0");
        let mut named = BTreeMap::new();
        let names = tessera_onnx::input_names(&model).unwrap_or_default();
        for (k, input) in names.iter().enumerate() {
            let pb = set.join(format!("input_{k}.pb"));
            let Ok(pb_bytes) = std::fs::read(&pb) else {
                break;
            };
            write(&out, "tensor_files", &format!("{name}_{k}.pb"), &pb_bytes);
            if let Ok(t) = tessera_onnx::read_tensor_file(&pb) {
                if let Ok(npy) = tessera_driver::npy::encode(&t) {
                    write(&out, "tensor_files", &format!("{name}_{k}.npy"), &npy);
                }
                named.insert(input.clone(), t);
            }
        }
        let opts = tessera_driver::CompileOptions::for_target("interp").with_inputs(&named);
        let Ok(graph) = tessera_driver::import(&model, &opts) else {
            continue;
        };
        write(
            &out,
            "ir_text",
            &format!("{name}.tir"),
            tessera_ir::text::print(&graph).as_bytes(),
        );
        let Ok(artifact) = tessera_driver::compile_graph(&graph, &name, "interp") else {
            continue;
        };
        write(&out, "tsa_load", &format!("{name}.tsa"), &artifact.encode());
        for (i, k) in artifact.kernels.iter().enumerate() {
            write(&out, "kir_text", &format!("{name}_{i}.kir"), &k.blob);
        }
        count += 1;
    }
    for dir in ["tests/filetests/infer", "tests/filetests/lower"] {
        for e in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            // The graph is everything but the `//` header and CHECK lines.
            let graph: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .map(|l| format!("{l}\n"))
                .collect();
            write(
                &out,
                "ir_text",
                &e.file_name().to_string_lossy(),
                graph.as_bytes(),
            );
        }
    }
    for e in std::fs::read_dir(root.join("targets/npu-sim/kernels"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let name = e.file_name().to_string_lossy().to_string();
        write(&out, "npu_asm", &name, text.as_bytes());
        if let Ok(prog) = tessera_npu_sim::assemble(&text) {
            write(
                &out,
                "npu_decode",
                &format!("{name}.bin"),
                &tessera_npu_sim::encode_program(&prog),
            );
        }
    }
    println!("seeded {} from {count} compiled models", out.display());
}
