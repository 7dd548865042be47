//! The npu-sim benchmark: Cube utilisation of `kernels/gemm_f16.asm` in cycle
//! mode at 1024x1024x1024 and 4096x4096x64, and the functional simulator's
//! speed in simulated MACs per second. Run with
//! `cargo bench -p tessera-npu-sim --bench gemm`.

use std::time::Instant;

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_npu_sim::{run_kernel, DType, KernelArgs, Mode, NdArray, TargetConfig};

fn args(m: usize, n: usize, k: usize, rng: &mut StdRng) -> (KernelArgs, Vec<f16>, Vec<f16>) {
    let a: Vec<f16> = (0..m * k)
        .map(|_| f16::from_f32(rng.gen_range(-1.0f32..1.0)))
        .collect();
    let b: Vec<f16> = (0..k * n)
        .map(|_| f16::from_f32(rng.gen_range(-1.0f32..1.0)))
        .collect();
    let ka = KernelArgs::default()
        .input(1, NdArray::from_f16(&[m, k], &a))
        .input(2, NdArray::from_f16(&[k, n], &b))
        .output(3, NdArray::zeros(DType::F16, &[m, n]))
        .scalar(4, m as u64)
        .scalar(5, n as u64)
        .scalar(6, k as u64);
    (ka, a, b)
}

fn main() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/gemm_f16.asm"))
        .expect("kernel file");
    let target = TargetConfig::default_target().expect("target.toml");
    let mut rng = StdRng::seed_from_u64(42);
    for &(m, n, k) in &[(1024usize, 1024usize, 1024usize), (4096, 4096, 64)] {
        let (ka, _, _) = args(m, n, k, &mut rng);
        let t0 = Instant::now();
        // Timing and every check, without the arithmetic: the cycle count does
        // not depend on the data.
        let out = run_kernel(&src, &target, &ka, Mode::TimingOnly).expect("gemm runs");
        let rep = out.report.expect("report");
        println!(
            "== f16 GEMM {m}x{n}x{k}, cycle mode ({:.2} s wall) ==",
            t0.elapsed().as_secs_f64()
        );
        println!("{rep}");
        println!(
            "RESULT gemm_f16 {m}x{n}x{k}: cube utilisation {:.1}% ({} cycles, ideal {:.0})\n",
            100.0 * rep.cube_utilisation,
            rep.total_cycles,
            rep.ideal_cube_cycles
        );
    }
    let (m, n, k) = (1024usize, 1024usize, 1024usize);
    let (ka, a, b) = args(m, n, k, &mut rng);
    let t0 = Instant::now();
    let out = run_kernel(&src, &target, &ka, Mode::Functional).expect("gemm runs");
    let secs = t0.elapsed().as_secs_f64();
    // Spot-check a few outputs against an f64 dot product, so a fast wrong answer cannot pass.
    let c = out.output(3).expect("C").to_f32();
    let mut worst = 0.0f64;
    for s in 0..64 {
        let (i, j) = ((s * 97) % m, (s * 389) % n);
        let want: f64 = (0..k)
            .map(|p| a[i * k + p].to_f64() * b[p * n + j].to_f64())
            .sum();
        worst = worst.max((c[i * n + j] as f64 - want).abs() / want.abs().max(1e-2));
    }
    let macs = (m * n * k) as f64;
    println!("== functional simulation, f16 GEMM {m}x{n}x{k} ==");
    println!(
        "RESULT functional: {secs:.3} s, {:.3e} simulated MACs/s (spot-check max rel err {worst:.2e})",
        macs / secs
    );
}
