//! Shared helpers for the integration tests: kernel loading, seeded random
//! inputs and plain-Rust references.
#![allow(dead_code)]

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_npu_sim::{run_kernel, CycleReport, KernelArgs, Mode, NdArray, TargetConfig};

pub fn kernel(name: &str) -> String {
    let p = format!("{}/kernels/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

pub fn target() -> TargetConfig {
    TargetConfig::default_target().expect("the shipped target.toml is valid")
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn rand_f16(rng: &mut StdRng, n: usize) -> Vec<f16> {
    (0..n)
        .map(|_| f16::from_f32(rng.gen_range(-1.0f32..1.0)))
        .collect()
}

pub fn rand_i8(rng: &mut StdRng, n: usize) -> Vec<i8> {
    (0..n).map(|_| rng.gen_range(-128i32..=127) as i8).collect()
}

/// f64 reference GEMM on f16 inputs.
pub fn gemm_ref(a: &[f16], b: &[f16], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p].to_f64();
            for j in 0..n {
                c[i * n + j] += x * b[p * n + j].to_f64();
            }
        }
    }
    c
}

/// Runs the f16 GEMM kernel and returns the C output and the report.
pub fn run_gemm_f16(
    src: &str,
    a: &[f16],
    b: &[f16],
    m: usize,
    n: usize,
    k: usize,
    mode: Mode,
) -> (Vec<f32>, Option<CycleReport>) {
    let args = KernelArgs::default()
        .input(1, NdArray::from_f16(&[m, k], a))
        .input(2, NdArray::from_f16(&[k, n], b))
        .output(3, NdArray::zeros(tessera_npu_sim::DType::F16, &[m, n]))
        .scalar(4, m as u64)
        .scalar(5, n as u64)
        .scalar(6, k as u64);
    let out =
        run_kernel(src, &target(), &args, mode).unwrap_or_else(|e| panic!("gemm {m}x{n}x{k}: {e}"));
    (out.output(3).expect("C is an output").to_f32(), out.report)
}

/// Asserts |got - want| <= rel * |want| + abs elementwise, naming the first bad element.
pub fn assert_close(got: &[f32], want: &[f64], rel: f64, abs: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= rel * w.abs() + abs,
            "{what}: element {i}: got {g}, want {w} (err {err:e})"
        );
    }
}
