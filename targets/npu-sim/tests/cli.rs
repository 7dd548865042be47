//! Runs the `npu-sim` binary end to end: .npy in, kernel, .npy out, report printed.

mod common;
use common::*;
use tessera_npu_sim::npy::{read_npy, write_npy};
use tessera_npu_sim::NdArray;

#[test]
fn binary_runs_a_kernel_on_npy_files() {
    let dir = std::env::temp_dir().join(format!("npu-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (m, n, k) = (20usize, 24usize, 40usize);
    let mut r = rng(9);
    let a = rand_f16(&mut r, m * k);
    let b = rand_f16(&mut r, k * n);
    std::fs::write(
        dir.join("a.npy"),
        write_npy(&NdArray::from_f16(&[m, k], &a)).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("b.npy"),
        write_npy(&NdArray::from_f16(&[k, n], &b)).unwrap(),
    )
    .unwrap();
    let c_path = dir.join("c.npy");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_npu-sim"))
        .arg("run")
        .arg(format!(
            "{}/kernels/gemm_f16.asm",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(["--in", &format!("r1={}", dir.join("a.npy").display())])
        .args(["--in", &format!("r2={}", dir.join("b.npy").display())])
        .args(["--out", &format!("r3={}:f16:{m}x{n}", c_path.display())])
        .args([
            "--set",
            &format!("r4={m}"),
            "--set",
            &format!("r5={n}"),
            "--set",
            &format!("r6={k}"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Cube utilisation"), "{stdout}");
    let c = read_npy(&std::fs::read(&c_path).unwrap()).unwrap();
    assert_eq!(c.shape, vec![m, n]);
    assert_close(
        &c.to_f32(),
        &gemm_ref(&a, &b, m, n, k),
        1e-3,
        1e-5 * k as f64,
        "cli gemm",
    );

    // A bad kernel is reported with its line, and the exit code is non-zero.
    std::fs::write(dir.join("bad.asm"), "NOP\nFROB r1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_npu-sim"))
        .args(["run", dir.join("bad.asm").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("assembly line 2"));
    std::fs::remove_dir_all(&dir).ok();
}
