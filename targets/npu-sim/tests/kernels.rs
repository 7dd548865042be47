//! Runs every hand-written kernel in `kernels/` against a plain Rust reference
//! on seeded random inputs, at tile-multiple and ragged shapes.

mod common;
use common::*;
use tessera_npu_sim::{Mem, Mode, Pipe};

#[test]
fn gemm_f16_matches_f64_reference() {
    let src = kernel("gemm_f16.asm");
    // Ragged shapes exercise the DMA padding; 300 x 140 x 1100 takes the
    // A-reload path (K > 1024) and spans several tiles in M and N.
    for (idx, &(m, n, k)) in [
        (16, 16, 16),
        (37, 53, 29),
        (128, 128, 256),
        (130, 257, 200),
        (33, 20, 1100),
    ]
    .iter()
    .enumerate()
    {
        let mut r = rng(idx as u64 + 1);
        let a = rand_f16(&mut r, m * k);
        let b = rand_f16(&mut r, k * n);
        let (c, _) = run_gemm_f16(&src, &a, &b, m, n, k, Mode::Functional);
        let want = gemm_ref(&a, &b, m, n, k);
        // f16 output rounding is 2^-11 relative; the small absolute floor
        // covers f32 accumulation error on results that cancel to near zero.
        assert_close(
            &c,
            &want,
            1e-3,
            1e-5 * k as f64,
            &format!("gemm_f16 {m}x{n}x{k}"),
        );
    }
}

#[test]
fn gemm_f16_cycle_report_is_consistent() {
    let src = kernel("gemm_f16.asm");
    let (m, n, k) = (100, 70, 90);
    let mut r = rng(7);
    let a = rand_f16(&mut r, m * k);
    let b = rand_f16(&mut r, k * n);
    let (c_cycle, rep) = run_gemm_f16(&src, &a, &b, m, n, k, Mode::Cycle);
    let (c_func, _) = run_gemm_f16(&src, &a, &b, m, n, k, Mode::Functional);
    assert_eq!(c_cycle, c_func, "both modes compute the same result");
    let rep = rep.expect("cycle mode reports");
    assert_eq!(rep.macs_useful, (m * n * k) as u64);
    // Padded to 112 x 80 x 96.
    assert_eq!(rep.macs_issued, 112 * 80 * 96);
    assert!((rep.ideal_cube_cycles - (m * n * k) as f64 / 4096.0).abs() < 1e-9);
    for p in &rep.pipes {
        assert_eq!(p.busy + p.stall + p.idle, rep.total_cycles, "{:?}", p.pipe);
    }
    assert_eq!(
        rep.edge(Mem::L0c, Mem::Gm).unwrap().bytes,
        (m * n * 2) as u64
    );
    assert_eq!(
        rep.edge(Mem::Gm, Mem::L1).unwrap().bytes,
        (112 * 96 * 2 + 96 * 80 * 2) as u64
    );
    assert!(rep.pipe(Pipe::Cube).unwrap().busy >= 7 * 5 * 6);
    assert!(rep.cube_utilisation > 0.0 && rep.cube_utilisation < 1.0);
    // The benchmark measures utilisation in timing-only mode (no arithmetic); that is sound
    // only if it reports exactly what cycle mode does.
    let (_, timing) = run_gemm_f16(&src, &a, &b, m, n, k, Mode::TimingOnly);
    assert_eq!(
        timing.expect("timing mode reports"),
        rep,
        "timing-only and cycle modes agree"
    );
}

#[test]
fn gemm_i8_is_bit_exact() {
    use tessera_npu_sim::{run_kernel, DType, KernelArgs, NdArray};
    let src = kernel("gemm_i8.asm");
    for (idx, &(m, n, k, scale)) in [
        (16, 16, 32, 0.001f32),
        (45, 19, 77, 0.0007),
        (129, 130, 300, 0.00025),
        (20, 33, 2100, 0.0001),
    ]
    .iter()
    .enumerate()
    {
        let mut r = rng(100 + idx as u64);
        let a = rand_i8(&mut r, m * k);
        let b = rand_i8(&mut r, k * n);
        let args = KernelArgs::default()
            .input(1, NdArray::from_i8(&[m, k], &a))
            .input(2, NdArray::from_i8(&[k, n], &b))
            .output(3, NdArray::zeros(DType::I8, &[m, n]))
            .scalar(4, m as u64)
            .scalar(5, n as u64)
            .scalar(6, k as u64)
            .scalar_f32(7, scale);
        let out =
            run_kernel(&src, &target(), &args, Mode::Functional).unwrap_or_else(|e| panic!("{e}"));
        let got = out.output(3).unwrap().to_i8();
        let mut saturated = 0;
        for i in 0..m {
            for j in 0..n {
                let acc: i32 = (0..k)
                    .map(|p| a[i * k + p] as i32 * b[p * n + j] as i32)
                    .sum();
                let want = (acc as f64 * scale as f64)
                    .round_ties_even()
                    .clamp(-128.0, 127.0) as i8;
                saturated += (want == 127 || want == -128) as usize;
                assert_eq!(
                    got[i * n + j],
                    want,
                    "gemm_i8 {m}x{n}x{k} at ({i},{j}), acc {acc}"
                );
            }
        }
        // The scales are picked so results span the i8 range without all saturating.
        assert!(
            saturated < m * n / 2,
            "gemm_i8 {m}x{n}x{k}: {saturated} saturated"
        );
    }
}

#[test]
fn softmax_matches_reference() {
    use rand::Rng;
    use tessera_npu_sim::{run_kernel, DType, KernelArgs, NdArray};
    let src = kernel("softmax_f32.asm");
    for (idx, &(m, n)) in [(1, 1), (4, 8), (7, 37), (300, 129), (3, 5000)]
        .iter()
        .enumerate()
    {
        let mut r = rng(200 + idx as u64);
        let x: Vec<f32> = (0..m * n).map(|_| r.gen_range(-8.0f32..8.0)).collect();
        let args = KernelArgs::default()
            .input(1, NdArray::from_f32(&[m, n], &x))
            .output(2, NdArray::zeros(DType::F32, &[m, n]))
            .scalar(4, m as u64)
            .scalar(5, n as u64);
        let out = run_kernel(&src, &target(), &args, Mode::Cycle).unwrap_or_else(|e| panic!("{e}"));
        let got = out.output(2).unwrap().to_f32();
        let mut want = vec![0.0f64; m * n];
        for i in 0..m {
            let row = &x[i * n..(i + 1) * n];
            let mx = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
            let s: f64 = row.iter().map(|&v| (v as f64 - mx).exp()).sum();
            for j in 0..n {
                want[i * n + j] = (row[j] as f64 - mx).exp() / s;
            }
        }
        assert_close(&got, &want, 1e-5, 1e-7, &format!("softmax {m}x{n}"));
        let rep = out.report.unwrap();
        assert!(rep.pipe(Pipe::Vec).unwrap().busy > 0);
        assert_eq!(
            rep.edge(Mem::Ub, Mem::Gm).unwrap().bytes,
            (m * n * 4) as u64
        );
    }
}

#[test]
fn gemm_bias_relu_matches_reference() {
    use rand::Rng;
    use tessera_npu_sim::{run_kernel, DType, KernelArgs, NdArray};
    let src = kernel("gemm_bias_relu_f16.asm");
    for (idx, &(m, n, k)) in [(16, 16, 16), (50, 70, 40), (140, 150, 130)]
        .iter()
        .enumerate()
    {
        let mut r = rng(300 + idx as u64);
        let a = rand_f16(&mut r, m * k);
        let b = rand_f16(&mut r, k * n);
        let bias: Vec<f32> = (0..n).map(|_| r.gen_range(-2.0f32..2.0)).collect();
        let args = KernelArgs::default()
            .input(1, NdArray::from_f16(&[m, k], &a))
            .input(2, NdArray::from_f16(&[k, n], &b))
            .output(3, NdArray::zeros(DType::F16, &[m, n]))
            .input(7, NdArray::from_f32(&[n], &bias))
            .scalar(4, m as u64)
            .scalar(5, n as u64)
            .scalar(6, k as u64);
        let out = run_kernel(&src, &target(), &args, Mode::Cycle).unwrap_or_else(|e| panic!("{e}"));
        let got = out.output(3).unwrap().to_f32();
        let mut want = gemm_ref(&a, &b, m, n, k);
        for (i, w) in want.iter_mut().enumerate() {
            *w = (*w + bias[i % n] as f64).max(0.0);
        }
        assert!(
            got.contains(&0.0) && got.iter().any(|&v| v > 0.0),
            "ReLU must clip some, not all"
        );
        assert_close(
            &got,
            &want,
            1e-3,
            1e-5 * k as f64,
            &format!("gemm_bias_relu {m}x{n}x{k}"),
        );
    }
}

#[test]
fn assembler_round_trips_every_kernel_file() {
    use tessera_npu_sim::{assemble, decode_program, disassemble, encode_program};
    let dir = format!("{}/kernels", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("asm") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let prog = assemble(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let bin = encode_program(&prog);
        assert_eq!(
            decode_program(&bin).unwrap(),
            prog,
            "{}: binary round trip",
            p.display()
        );
        let canon = disassemble(&prog);
        let again = assemble(&canon).unwrap();
        assert_eq!(
            encode_program(&again),
            bin,
            "{}: text round trip",
            p.display()
        );
        assert_eq!(
            disassemble(&again),
            canon,
            "{}: canonical text is a fixpoint",
            p.display()
        );
        n += 1;
    }
    assert_eq!(n, 4, "four kernel files");
}
