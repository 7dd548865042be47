//! The `tessera` binary end to end: the malformed-input corpus (`tests/data/bad`, made by
//! `tests/python/make_bad_corpus.py`), exit codes, corrupt artifacts, and both run modes.
//! Every bad input must give an error naming the problem, a documented exit code (never a
//! panic's 101), and no output file, partial or not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tessera_ir::Tensor;

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera")
}

fn corpus(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/bad")
        .join(name)
        .display()
        .to_string()
}

/// A fresh empty folder for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tessera-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn write_npy(path: &Path, t: &Tensor) {
    std::fs::write(path, tessera_driver::npy::encode(t).unwrap()).unwrap();
}

/// Compiling `bad` fails with `code`, a message containing `needle`, and leaves nothing behind.
fn refused(bad: &str, code: i32, needle: &str) {
    let dir = scratch(bad);
    let out = dir.join("out.tsa");
    let o = tessera(&[
        "compile",
        &corpus(bad),
        "--target",
        "host",
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{bad}: {err}");
    assert!(err.starts_with("error: "), "{bad}: {err}");
    assert!(!err.contains("panicked"), "{bad}: {err}");
    assert!(err.contains(needle), "{bad}: expected `{needle}` in: {err}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "{bad}: files left behind"
    );
}

#[test]
fn truncated_protobuf_is_refused() {
    refused("truncated.onnx", 1, "truncated.onnx");
}

#[test]
fn cycle_is_refused() {
    refused("cycle.onnx", 1, "cycle");
}

#[test]
fn dangling_input_is_refused() {
    refused("dangling.onnx", 1, "nowhere");
}

#[test]
fn unknown_op_is_unsupported_and_named() {
    refused("unknown_op.onnx", 3, "FrobnicateTensor");
}

#[test]
fn mismatched_shapes_are_refused() {
    refused("mismatched_shapes.onnx", 1, "Add");
}

#[test]
fn absurd_dimension_is_refused_before_allocating() {
    refused("huge_dim.onnx", 1, "big");
}

#[test]
fn escaping_external_data_path_is_refused() {
    refused("bad_external.onnx", 1, "passwd");
}

#[test]
fn corrupt_truncated_and_wrong_target_artifacts_are_refused() {
    let dir = scratch("artifact");
    let tsa = dir.join("m.tsa");
    let o = tessera(&[
        "compile",
        &corpus("good_add.onnx"),
        "--target",
        "interp",
        "-o",
        tsa.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let x = dir.join("x.npy");
    write_npy(
        &x,
        &Tensor::from_f32(vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    );
    let input = format!("x={}", x.display());

    let ok = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--target",
        "interp",
        "--input",
        &input,
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("2.000000, 4.000000, 6.000000"));

    let wrong = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--target",
        "host",
        "--input",
        &input,
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("compiled for target `interp`"),
        "{}",
        stderr(&wrong)
    );

    let good = std::fs::read(&tsa).unwrap();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    std::fs::write(&tsa, &flipped).unwrap();
    let o = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--target",
        "interp",
        "--input",
        &input,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("corrupt") && stderr(&o).contains("m.tsa"),
        "{}",
        stderr(&o)
    );

    std::fs::write(&tsa, &good[..good.len() - 10]).unwrap();
    let o = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--target",
        "interp",
        "--input",
        &input,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
}

#[test]
fn wrong_input_shape_names_the_input() {
    let dir = scratch("shape");
    let tsa = dir.join("m.tsa");
    assert!(tessera(&[
        "compile",
        &corpus("good_add.onnx"),
        "-o",
        tsa.to_str().unwrap()
    ])
    .status
    .success());
    let x = dir.join("x.npy");
    write_npy(&x, &Tensor::from_f32(vec![3, 3], &[0.0; 9]));
    let o = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--input",
        &format!("x={}", x.display()),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("input `x`") && stderr(&o).contains("shape"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn usage_errors_exit_2() {
    let o = tessera(&["run", &corpus("good_add.onnx"), "--target", "tpu9000"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("tpu9000"));
    assert_eq!(tessera(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn run_with_pb_folders_writes_outputs_in_order() {
    let dir = scratch("pb");
    let inputs = dir.join("in");
    let outputs = dir.join("out");
    std::fs::create_dir_all(&inputs).unwrap();
    let x = Tensor::from_f32(vec![2, 3], &[1.0, -2.0, 3.0, -4.0, 5.0, -6.5]);
    tessera_onnx::write_tensor_file(&inputs.join("input_0.pb"), &x, "x").unwrap();
    for target in ["host", "interp"] {
        let o = tessera(&[
            "run",
            &corpus("good_add.onnx"),
            "--target",
            target,
            "--inputs",
            inputs.to_str().unwrap(),
            "--outputs",
            outputs.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{target}: {}", stderr(&o));
        let y = tessera_onnx::read_tensor_file(&outputs.join("output_0.pb")).unwrap();
        assert_eq!(y.dims, vec![2, 3]);
        assert_eq!(
            y.to_f64_vec().unwrap(),
            vec![2.0, -4.0, 6.0, -8.0, 10.0, -13.0],
            "{target}"
        );
    }
}

#[test]
fn targets_lists_host_and_interp() {
    let o = tessera(&["targets"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        s.contains("host") && s.contains("interp") && s.contains("needs --features mlir"),
        "{s}"
    );
    let llvm = s
        .lines()
        .find(|l| l.starts_with("llvm-x86_64 "))
        .unwrap_or("");
    let want = if cfg!(feature = "llvm") {
        "built"
    } else {
        "needs --features llvm"
    };
    assert!(llvm.contains(want), "{s}");
}

#[test]
fn npu_sim_subcommand_runs_a_kernel_and_reports_cycles() {
    let dir = scratch("npusim");
    let (m, n) = (3usize, 10usize);
    let x: Vec<f32> = (0..m * n)
        .map(|i| ((i * 7) % 11) as f32 * 0.25 - 1.0)
        .collect();
    write_npy(
        &dir.join("x.npy"),
        &Tensor::from_f32(vec![m as u64, n as u64], &x),
    );
    let kernel =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../targets/npu-sim/kernels/softmax_f32.asm");
    let y_path = dir.join("y.npy");
    let o = tessera(&[
        "npu-sim",
        "run",
        kernel.to_str().unwrap(),
        "--in",
        &format!("r1={}", dir.join("x.npy").display()),
        "--out",
        &format!("r2={}:f32:{m}x{n}", y_path.display()),
        "--set",
        &format!("r4={m}"),
        "--set",
        &format!("r5={n}"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("total cycles"));
    let y = tessera_driver::npy::read(&y_path)
        .unwrap()
        .to_f64_vec()
        .unwrap();
    for r in 0..m {
        let row = &x[r * n..(r + 1) * n];
        let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - mx).exp()).sum();
        for j in 0..n {
            let want = (row[j] as f64 - mx).exp() / sum;
            assert!(
                (y[r * n + j] - want).abs() < 1e-5,
                "row {r} col {j}: {} vs {want}",
                y[r * n + j]
            );
        }
    }
    // A kernel that does not assemble is an error (exit 1), not a panic.
    std::fs::write(dir.join("bad.asm"), "FROB r1\n").unwrap();
    let o = tessera(&["npu-sim", "run", dir.join("bad.asm").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn a_bound_shape_input_must_be_passed_again_unchanged() {
    let dir = scratch("bound");
    let tsa = dir.join("m.tsa");
    let x = dir.join("x.npy");
    write_npy(
        &x,
        &Tensor::from_f32(vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    );
    let s32 = dir.join("s32.npy");
    write_npy(&s32, &Tensor::from_i64(vec![2], &[3, 2]));
    let s61 = dir.join("s61.npy");
    write_npy(&s61, &Tensor::from_i64(vec![2], &[6, 1]));
    let (xi, s32i, s61i) = (
        format!("x={}", x.display()),
        format!("shape={}", s32.display()),
        format!("shape={}", s61.display()),
    );
    let o = tessera(&[
        "compile",
        &corpus("reshape_input.onnx"),
        "-o",
        tsa.to_str().unwrap(),
        "--input",
        &s32i,
        "--input",
        &xi,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ok = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--input",
        &xi,
        "--input",
        &s32i,
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("r: f32 [3, 2]"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let bad = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--input",
        &xi,
        "--input",
        &s61i,
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("input `shape`") && stderr(&bad).contains("recompile"),
        "{}",
        stderr(&bad)
    );
    // Compiling the .onnx afresh with the new value works.
    let fresh = tessera(&[
        "run",
        &corpus("reshape_input.onnx"),
        "--input",
        &xi,
        "--input",
        &s61i,
    ]);
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    assert!(String::from_utf8_lossy(&fresh.stdout).contains("r: f32 [6, 1]"));
}

#[test]
fn npu_sim_compiles_runs_and_reports_cycles() {
    let dir = scratch("npu");
    let tsa = dir.join("m.tsa");
    let o = tessera(&[
        "compile",
        &corpus("good_add.onnx"),
        "--target",
        "npu-sim",
        "-o",
        tsa.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let x = dir.join("x.npy");
    write_npy(
        &x,
        &Tensor::from_f32(vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    );
    let input = format!("x={}", x.display());
    let ok = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--target",
        "npu-sim",
        "--input",
        &input,
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("2.000000, 4.000000, 6.000000"));

    // Cycle mode: a report per launch, then the totals with every pipe, edge and the Cube.
    let o = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--target",
        "npu-sim",
        "--input",
        &input,
        "--cycles",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("== launch 0: kernel `") && out.contains("== totals over 1 launches =="),
        "{out}"
    );
    for needle in [
        "total cycles",
        "VEC",
        "MTE2",
        "GM->UB",
        "MACs issued",
        "MACs useful",
        "Cube utilisation",
    ] {
        assert!(out.contains(needle), "`{needle}` missing from: {out}");
    }
    let o = tessera(&[
        "bench",
        &corpus("good_add.onnx"),
        "--target",
        "npu-sim",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--cycles",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("median") && out.contains("== totals over"),
        "{out}{}",
        stderr(&o)
    );

    // --cycles is for the simulator; an artifact is for the chip it was compiled for.
    let o = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--target",
        "host",
        "--input",
        &input,
        "--cycles",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--cycles needs an npu-sim target"),
        "{}",
        stderr(&o)
    );
    let o = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--target",
        "npu-sim-lite",
        "--input",
        &input,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("compiled for target `npu-sim`"),
        "{}",
        stderr(&o)
    );
}

// ---- reliability: data errors at run time, hostile files, digests, memory caps ----

/// Running `model` from the corpus with `inputs` (NAME=corpus file) on every target fails
/// with exit 1, an error containing every needle, and writes no output file.
fn run_refused(model: &str, inputs: &[(&str, &str)], needles: &[&str]) {
    for target in ["host", "interp"] {
        let dir = scratch(&format!("{model}-{target}"));
        let outs = dir.join("outs");
        let mut args = vec![
            "run".to_string(),
            corpus(model),
            "--target".into(),
            target.into(),
        ];
        for (name, file) in inputs {
            args.push("--input".into());
            args.push(format!("{name}={}", corpus(file)));
        }
        args.push("--outputs".into());
        args.push(outs.display().to_string());
        let o = tessera(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{model} on {target}: {err}");
        assert!(
            err.starts_with("error: ") && !err.contains("panicked"),
            "{model} on {target}: {err}"
        );
        for n in needles {
            assert!(
                err.contains(n),
                "{model} on {target}: expected `{n}` in: {err}"
            );
        }
        assert!(
            !outs.exists() || std::fs::read_dir(&outs).unwrap().count() == 0,
            "{model} on {target}: output written"
        );
    }
}

#[test]
fn gather_with_an_out_of_range_runtime_index_is_an_error_on_every_target() {
    // The case: [1, -1, 100000000] into 1000 rows. -1 wraps; 100000000 does not.
    run_refused(
        "gather_oob.onnx",
        &[
            ("data", "gather_data.npy"),
            ("indices", "gather_indices.npy"),
        ],
        &[
            "Gather node \"gather_oob\"",
            "input `indices`",
            "holds 100000000",
            "axis 0 of `data` of size 1000",
            "-1000 to 999",
        ],
    );
    // In range (with negative indices) it runs, on both targets, with the right rows.
    for target in ["host", "interp"] {
        let data = format!("data={}", corpus("gather_data.npy"));
        let ind = format!("indices={}", corpus("gather_indices_ok.npy"));
        let o = tessera(&[
            "run",
            &corpus("gather_oob.onnx"),
            "--target",
            target,
            "--input",
            &data,
            "--input",
            &ind,
        ]);
        assert!(o.status.success(), "{target}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            out.contains("[2.000000, 3.000000, 1998.000000, 1999.000000, 0.000000, 1.000000]"),
            "{target}: {out}"
        );
    }
    // A constant index of 7 into a dimension of 2.
    run_refused(
        "gather_const_oob.onnx",
        &[("data", "small_data.npy")],
        &[
            "Gather node \"gather_const\"",
            "holds 7",
            "size 2 (valid: -2 to 1)",
        ],
    );
}

#[test]
fn every_indexing_op_refuses_out_of_range_runtime_indices() {
    let cases: [(&str, &[(&str, &str)], &[&str]); 4] = [
        (
            "gather_elements_oob.onnx",
            &[
                ("data", "small_data.npy"),
                ("indices", "gather_elements_indices.npy"),
            ],
            &[
                "GatherElements node",
                "input `indices`",
                "holds -4",
                "axis 1 of `data` of size 3",
            ],
        ),
        (
            "gather_nd_oob.onnx",
            &[
                ("data", "small_data.npy"),
                ("indices", "gather_nd_indices.npy"),
            ],
            &[
                "GatherND node",
                "input `indices`",
                "holds 2",
                "axis 0 of `data` of size 2",
            ],
        ),
        (
            "scatter_elements_oob.onnx",
            &[
                ("data", "small_data.npy"),
                ("indices", "scatter_elements_indices.npy"),
                ("updates", "updates_2x2.npy"),
            ],
            &[
                "ScatterElements node",
                "input `indices`",
                "holds 3",
                "axis 1 of `data` of size 3",
            ],
        ),
        (
            "scatter_nd_oob.onnx",
            &[
                ("data", "small_data.npy"),
                ("indices", "scatter_nd_indices.npy"),
                ("updates", "updates_2x3.npy"),
            ],
            &[
                "ScatterND node",
                "input `indices`",
                "holds -3",
                "axis 0 of `data` of size 2",
            ],
        ),
    ];
    for (model, inputs, needles) in cases {
        run_refused(model, inputs, needles);
    }
}

#[test]
fn a_future_opset_is_unsupported_unless_allowed() {
    refused("future_opset.onnx", 3, "opset 999 of domain \"ai.onnx\"");
    let dir = scratch("future-allowed");
    let out = dir.join("m.tsa");
    let o = tessera(&[
        "compile",
        &corpus("future_opset.onnx"),
        "--allow-newer-opset",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("warning: ") && stderr(&o).contains("treated as opset 28"),
        "{}",
        stderr(&o)
    );
    assert!(out.is_file());
}

#[test]
fn negative_sizes_and_huge_metadata_are_refused() {
    refused("negative_dim.onnx", 1, "negative dimension -3");
    refused("huge_metadata.onnx", 1, "metadata_props");
}

#[cfg(unix)]
#[test]
fn hard_linked_external_data_is_refused() {
    // Git cannot hold a hard link, so the case is made here: a model whose weights file is a
    // hard link to a file outside the model's folder.
    let outer = scratch("hardlink");
    let dir = outer.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(outer.join("secret.bin"), [0u8; 24]).unwrap();
    std::fs::hard_link(outer.join("secret.bin"), dir.join("w.bin")).unwrap();
    // bad_external.onnx with the location rewritten to "w.bin".
    let bytes = std::fs::read(corpus("bad_external.onnx")).unwrap();
    let model = dir.join("model.onnx");
    let mut proto =
        <tessera_onnx::proto::ModelProto as prost::Message>::decode(bytes.as_slice()).unwrap();
    let init = &mut proto.graph.as_mut().unwrap().initializer[0];
    init.external_data
        .iter_mut()
        .find(|kv| kv.key == "location")
        .unwrap()
        .value = "w.bin".into();
    std::fs::write(&model, prost::Message::encode_to_vec(&proto)).unwrap();
    let out = dir.join("out.tsa");
    let o = tessera(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\"w.bin\"") && err.contains("2 hard links"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn digests_are_printed_checked_and_a_corrupt_artifact_never_runs() {
    let dir = scratch("digest");
    let tsa = dir.join("m.tsa");
    let o = tessera(&[
        "compile",
        &corpus("good_add.onnx"),
        "-o",
        tsa.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let digest = stdout
        .lines()
        .find_map(|l| l.strip_prefix("sha256 "))
        .expect("digest line")
        .to_string();
    assert_eq!(digest.len(), 64);
    let x = dir.join("x.npy");
    write_npy(&x, &Tensor::from_f32(vec![2, 3], &[1.0; 6]));
    let input = format!("x={}", x.display());
    let outs = dir.join("outs");
    let run = |d: &str| {
        tessera(&[
            "run",
            tsa.to_str().unwrap(),
            "--input",
            &input,
            "--expect-digest",
            d,
            "--outputs",
            outs.to_str().unwrap(),
        ])
    };
    assert!(run(&digest).status.success());
    std::fs::remove_dir_all(&outs).unwrap();
    let other: String = digest.chars().rev().collect();
    let o = run(&other);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("digest mismatch") && stderr(&o).contains(&digest),
        "{}",
        stderr(&o)
    );
    assert!(!outs.exists());
    let o = run("xyz");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A flipped byte anywhere in the payload is caught by the digest before anything runs.
    let mut bytes = std::fs::read(&tsa).unwrap();
    bytes[40] ^= 0x20;
    std::fs::write(&tsa, &bytes).unwrap();
    let o = tessera(&[
        "run",
        tsa.to_str().unwrap(),
        "--input",
        &input,
        "--outputs",
        outs.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("SHA-256 digest mismatch: the file is corrupt"),
        "{}",
        stderr(&o)
    );
    assert!(!outs.exists());
}

#[test]
fn max_memory_refuses_a_run_before_it_allocates() {
    let dir = scratch("maxmem");
    let x = dir.join("x.npy");
    write_npy(&x, &Tensor::from_f32(vec![2, 3], &[1.0; 6]));
    let input = format!("x={}", x.display());
    let o = tessera(&[
        "run",
        &corpus("good_add.onnx"),
        "--input",
        &input,
        "--max-memory",
        "16",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("needs 72 bytes of scratch memory, more than the limit of 16 bytes"),
        "{}",
        stderr(&o)
    );
    let o = tessera(&[
        "run",
        &corpus("good_add.onnx"),
        "--input",
        &input,
        "--max-memory",
        "1K",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tessera(&[
        "run",
        &corpus("good_add.onnx"),
        "--input",
        &input,
        "--max-memory",
        "lots",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn if_on_a_run_time_condition_takes_either_branch() {
    let dir = scratch("if");
    let outputs = dir.join("out");
    let x = Tensor::from_f32(vec![2, 3], &[1.0, -2.0, 3.0, -4.0, 5.0, -6.5]);
    for (flag, want) in [
        (1u8, vec![1.0, 0.0, 3.0, 0.0, 5.0, 0.0]),
        (0, vec![-1.0, 2.0, -3.0, 4.0, -5.0, 6.5]),
    ] {
        let inputs = dir.join(format!("in{flag}"));
        std::fs::create_dir_all(&inputs).unwrap();
        let c = Tensor::new(tessera_ir::DType::Bool, vec![], vec![flag]);
        tessera_onnx::write_tensor_file(&inputs.join("input_0.pb"), &c, "cond").unwrap();
        tessera_onnx::write_tensor_file(&inputs.join("input_1.pb"), &x, "x").unwrap();
        for target in ["host", "interp"] {
            let o = tessera(&[
                "run",
                &corpus("good_if.onnx"),
                "--target",
                target,
                "--inputs",
                inputs.to_str().unwrap(),
                "--outputs",
                outputs.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{target}: {}", stderr(&o));
            let y = tessera_onnx::read_tensor_file(&outputs.join("output_0.pb")).unwrap();
            assert_eq!(y.to_f64_vec().unwrap(), want, "{target}, cond = {flag}");
        }
    }
}

#[test]
fn loop_whose_carried_value_grows_is_unsupported() {
    refused("loop_grows.onnx", 3, "Loop node \"grow\": unsupported: loop-carried value 0 changes shape across iterations (f32[2,3] to f32[4,3])");
}

#[test]
fn compile_reports_what_the_optimizer_did_and_refuses_bad_levels() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/models/bert/model.onnx");
    let model = model.display().to_string();
    let d = scratch("opt-report");
    let (tsa, json) = (d.join("bert.tsa"), d.join("report.json"));
    let o = tessera(&[
        "compile",
        &model,
        "-o",
        &tsa.display().to_string(),
        "--opt-level",
        "2",
        "--report",
        "--report-json",
        &json.display().to_string(),
        "--emit",
        "graph",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", stderr(&o));
    for want in [
        "// graph before optimisation",
        "// graph after optimisation",
        "{activation = \"Gelu\"}",
        "optimizer: target host, opt-level 2, precision exact",
        "stopped: saturated",
        "    gelu-erf               1",
        "    matmul-activation      1",
        "    matmul-bias            6",
        "FusedMatMul node \"Add_attn.query.out\" [fusedmatmul_3] <- MatMul node \"MatMul_attn.query.matmul\", Add node \"Add_attn.query.out\"",
    ] {
        assert!(out.contains(want), "`{want}` missing from:\n{out}");
    }
    let j = std::fs::read_to_string(&json).unwrap();
    assert!(
        j.contains("\"rules_fired\"") && j.contains("\"gelu-erf\": 1"),
        "{j}"
    );
    let o = tessera(&[
        "compile",
        &model,
        "-o",
        &tsa.display().to_string(),
        "--opt-level",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--opt-level `3`: expected 0, 1 or 2"),
        "{}",
        stderr(&o)
    );
    let o = tessera(&["run", &model, "--precision", "fp7"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--precision `fp7`: expected exact, f16, bf16 or int8"));
}

/// `compile --emit static-lib` writes the archive (or object) and the header, and refuses
/// targets that are not LLVM CPU targets; the cross targets never run in-process.
#[cfg(feature = "llvm")]
#[test]
fn emit_static_lib_writes_archive_and_header_and_cross_targets_refuse_to_run() {
    let dir = scratch("static-lib");
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cnn/model.onnx")
        .display()
        .to_string();
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cnn/input.npy")
        .display()
        .to_string();
    for (target, out) in [("llvm-riscv64", "my-net.a"), ("llvm-aarch64", "cnn.o")] {
        let out = dir.join(out);
        let o = tessera(&[
            "compile",
            &model,
            "--target",
            target,
            "--emit",
            "static-lib",
            "-o",
            &out.display().to_string(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let bytes = std::fs::read(&out).unwrap();
        if out.extension().unwrap() == "a" {
            assert!(bytes.starts_with(b"!<arch>\n"));
            let h = std::fs::read_to_string(dir.join("my-net.h")).unwrap();
            assert!(h.contains("int32_t my_net_run(const void *const inputs[], void *const outputs[], void *workspace);"), "{h}");
            assert!(
                h.contains("#define MY_NET_INPUT_0_DIMS {1, 3, 32, 32}"),
                "{h}"
            );
            assert!(h.contains("#define MY_NET_TARGET \"llvm-riscv64\""), "{h}");
        } else {
            assert!(bytes.starts_with(b"\x7fELF"));
            // EM_AARCH64
            assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), 183);
            assert!(dir.join("cnn.h").is_file());
        }
        let o = tessera(&[
            "run",
            &model,
            "--target",
            target,
            "--input",
            &format!("input={input}"),
        ]);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("{target} code cannot run on this")),
            "{}",
            stderr(&o)
        );
    }
    let o = tessera(&[
        "compile",
        &model,
        "--target",
        "host",
        "--emit",
        "static-lib",
        "-o",
        &dir.join("h.a").display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("`--emit static-lib` needs an LLVM CPU target"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("h.a").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_profile_lists_every_launched_kernel_by_time() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/models/mlp/model.onnx");
    let o = tessera(&[
        "bench",
        model.to_str().unwrap(),
        "--runs",
        "2",
        "--warmup",
        "0",
        "--profile",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("profile over 2 runs"), "{out}");
    // One line per kernel that ran: name, ms per run, share, launches per run.
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("ms/run"))
        .skip(1)
        .collect();
    let kernels: Vec<&str> = rows
        .iter()
        .filter(|l| !l.contains("(outside kernels)"))
        .copied()
        .collect();
    assert!(!kernels.is_empty(), "{out}");
    for row in &kernels {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 4, "{row}");
        assert!(
            cols[1].parse::<f64>().is_ok() && cols[2].ends_with('%'),
            "{row}"
        );
        assert!(cols[3].parse::<u32>().unwrap() >= 1, "{row}");
    }
    let shares: f64 = rows
        .iter()
        .filter_map(|l| l.split_whitespace().find(|c| c.ends_with('%')))
        .map(|c| c.trim_end_matches('%').parse::<f64>().unwrap())
        .sum();
    assert!(
        (shares - 100.0).abs() < 1.0,
        "shares add up to {shares}: {out}"
    );
}

/// `run` and `bench` take `--cpu` as `compile` does: the LLVM CPU target compiles for that
/// level, and a target without CPU choices, or an unknown CPU, is a clear error.
#[cfg(feature = "llvm")]
#[test]
fn run_and_bench_take_a_cpu_level() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cnn/model.onnx")
        .display()
        .to_string();
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cnn/input.npy")
        .display()
        .to_string();
    let o = tessera(&[
        "run",
        &model,
        "--target",
        "llvm-x86_64",
        "--cpu",
        "x86-64-v2",
        "--input",
        &format!("input={input}"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tessera(&[
        "bench",
        &model,
        "--target",
        "llvm-x86_64",
        "--cpu",
        "x86-64-v2",
        "--runs",
        "1",
        "--warmup",
        "0",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("llvm-x86_64@x86-64-v2 median"),
        "{out}{}",
        stderr(&o)
    );
    let o = tessera(&["bench", &model, "--cpu", "x86-64-v2", "--runs", "1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("takes no CPU choice"), "{}", stderr(&o));
    let o = tessera(&[
        "run",
        &model,
        "--target",
        "llvm-x86_64",
        "--cpu",
        "bogus9",
        "--input",
        &format!("input={input}"),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown CPU `bogus9`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn compile_prints_kernel_ir_and_machine_code_without_writing() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cnn/model.onnx")
        .display()
        .to_string();
    let o = tessera(&["compile", &model, "--emit", "kir"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let kir = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(kir.starts_with("kernel @"), "{kir}");
    assert!(
        kir.contains("tile.mma"),
        "the Conv products are tile programs:\n{kir}"
    );
    let o = tessera(&["compile", &model, "--emit", "asm"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let asm = String::from_utf8_lossy(&o.stdout).to_string();
    let kernels = kir.matches("kernel @").count();
    assert_eq!(asm.matches("// kernel ").count(), kernels, "{asm}");
    assert!(asm.contains("ret"), "x86 code:\n{asm}");
    // npu-sim prints its assembly, cross targets work too, and other modes still need -o.
    let o = tessera(&["compile", &model, "--target", "npu-sim", "--emit", "asm"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("// kernel "));
    let o = tessera(&["compile", &model]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("needs `-o FILE`"), "{}", stderr(&o));
}
