//! Builds `examples/c/run_model.c` and the example in `docs/c-api.md` with the system C
//! compiler (`cc`) against `libtessera_capi.a` and `include/tessera.h`, runs them on the CNN
//! example artifact, and checks their output against the Rust API: the same output bytes
//! (an FNV-1a checksum over them) and the same values.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The static library cargo built next to this test (target/<profile>/libtessera_capi.a).
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let lib = profile_dir.join("libtessera_capi.a");
    assert!(
        lib.is_file(),
        "{} is missing: `cargo build -p tessera-capi` makes it",
        lib.display()
    );
    lib
}

/// Compiles one C file into an executable under the test's temp folder.
fn build_c(src: &Path, name: &str) -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let out = Command::new("cc")
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
            "-D_POSIX_C_SOURCE=200809L",
        ])
        .arg("-I")
        .arg(root().join("include"))
        .arg(src)
        .arg(static_lib())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .expect("`cc` runs (the C compiler is installed by the setup)");
    assert!(
        out.status.success(),
        "cc {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// The CNN example compiled for host, and the Rust API's output bytes on its example input.
fn artifact_and_expected() -> (PathBuf, PathBuf, Vec<u8>) {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let artifact = tessera_driver::compile_file(
        &root().join("examples/cnn/model.onnx"),
        &tessera_driver::CompileOptions::for_target("host"),
    )
    .unwrap();
    let tsa = tmp.join("c-example-cnn.tsa");
    tessera_driver::write_artifact(&tsa, &artifact).unwrap();
    let input = tessera_driver::npy::read(&root().join("examples/cnn/input.npy")).unwrap();
    let bin = tmp.join("c-example-input.bin");
    std::fs::write(&bin, &*input.bytes).unwrap();
    let model = tessera_driver::load_file(&tsa, "host").unwrap();
    let out = model.run(&[input]).unwrap();
    (tsa, bin, out[0].bytes.to_vec())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(1469598103934665603u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    })
}

fn run(exe: &Path, args: &[&Path], extra: &[&str]) -> String {
    let out = Command::new(exe).args(args).args(extra).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn c_example_matches_the_rust_api() {
    let exe = build_c(&root().join("examples/c/run_model.c"), "run_model");
    let (tsa, bin, want) = artifact_and_expected();
    let out = run(&exe, &[&tsa, &bin], &[]);
    assert!(
        out.starts_with(&format!(
            "tessera {} (ABI 1), target host\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    // `output float [1, 10] v0 v1 …`: the values, printed with %.6g, agree with the Rust API's.
    let line = out
        .lines()
        .find(|l| l.starts_with("output float [1, 10]"))
        .unwrap_or_else(|| panic!("no output line in:\n{out}"));
    let got: Vec<f32> = line
        .split(']')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let want_f: Vec<f32> = want
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got.len(), want_f.len());
    for (g, w) in got.iter().zip(&want_f) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "C printed {g}, the Rust API gave {w}"
        );
    }
    // And the bytes are identical.
    let checksum = format!("threads 1, checksum {:016x}", fnv1a(&want));
    assert!(out.contains(&checksum), "want `{checksum}` in:\n{out}");
    // Four threads on one model get the same bytes (the program checks they agree).
    let out4 = run(&exe, &[&tsa, &bin], &["--threads", "4"]);
    assert!(
        out4.contains(&format!("threads 4, checksum {:016x}", fnv1a(&want))),
        "{out4}"
    );
}

#[test]
fn c_example_reports_errors_with_the_library_message() {
    let exe = build_c(&root().join("examples/c/run_model.c"), "run_model_err");
    let bad = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("not-an-artifact.tsa");
    std::fs::write(&bad, b"this is not an artifact").unwrap();
    let out = Command::new(&exe).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: load: invalid artifact: {}: ",
            bad.display()
        )),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with("(TESSERA_ERR_INVALID_ARTIFACT)"),
        "{err}"
    );
}

/// docs/c-api.md's complete example, compiled and run as the page says.
#[test]
fn docs_example_builds_and_runs() {
    let doc = std::fs::read_to_string(root().join("docs/c-api.md")).unwrap();
    let start = doc
        .find("```c\n")
        .expect("docs/c-api.md has a ```c example")
        + 5;
    let len = doc[start..].find("```").unwrap();
    let src = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("doc_example.c");
    std::fs::write(&src, &doc[start..start + len]).unwrap();
    let exe = build_c(&src, "doc_example");
    let (tsa, bin, want) = artifact_and_expected();
    let out = run(&exe, &[&tsa, &bin], &[]);
    let want_f: Vec<f32> = want
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (best, _) =
        want_f.iter().enumerate().fold(
            (0, f32::MIN),
            |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
        );
    assert!(
        out.contains(&format!("class {best}")),
        "want `class {best}` in:\n{out}"
    );
}
