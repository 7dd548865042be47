//! The row path (`src/rows.rs`) and the tile-copy path (`src/tcopy.rs`) on the tile programs
//! `tessera-lower` writes for Softmax, LogSoftmax, LayerNormalization and Transpose
//! (`compiler/lower/src/rows.rs`), compiled for npu-sim and npu-sim-lite. Each program must
//! take its path (its assembly has the row forms of `VRED` and `VEC` or the DMAs of a tile copy, and no scalar GM
//! access), match the interpreter (row kernels within the chip's tolerance: `exp` and `log`
//! are the Vector unit's; transposes byte for byte) in functional mode on row counts that take
//! several blocks with a ragged last one, and run without a simulator hard error in cycle mode.

use tessera_ir::DType;
use tessera_kir::Kernel;
use tessera_lower::rows::{layer_norm_kernel, softmax_kernel, transpose_kernel};
use tessera_npu_sim::{Mode, NpuSim, NpuSimDevice, TargetConfig};
use tessera_runtime::{Device, KernelArg};
use tessera_target::Target;

const NPU_SIM: &str = include_str!("../target.toml");
const NPU_SIM_LITE: &str = include_str!("../../npu-sim-lite/target.toml");

fn data(dt: DType, n: u64, seed: u64) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let v = ((i * 37 + seed * 11) % 101) as f32 / 16.0 - 3.0;
            match dt {
                DType::F16 => half::f16::from_f32(v).to_bits().to_le_bytes().to_vec(),
                DType::BF16 => half::bf16::from_f32(v).to_bits().to_le_bytes().to_vec(),
                DType::F32 => v.to_le_bytes().to_vec(),
                // Any other dtype: distinct byte patterns (a copy moves bits).
                _ => (0..dt.bits() / 8)
                    .map(|b| (i * 7 + b as u64 * 13 + seed) as u8)
                    .collect(),
            }
        })
        .collect()
}

fn floats(dt: DType, bytes: &[u8]) -> Vec<f32> {
    match dt {
        DType::F32 => bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        _ => bytes
            .chunks(2)
            .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
    }
}

/// Runs `k` on the chip of `toml` in `mode` after checking its assembly has every one of
/// `needs` and no scalar GM access.
fn run(toml: &str, k: &Kernel, args: &[Vec<u8>], mode: Mode, needs: &[&str]) -> Vec<Vec<u8>> {
    let npu = NpuSim::from_toml(toml, "target.toml").unwrap();
    let asm = npu.assembly(k).unwrap();
    for n in needs {
        assert!(asm.contains(n), "`{}` lacks `{n}`:\n{asm}", k.name);
    }
    assert!(
        !asm.contains("LD GM") && !asm.contains("ST GM"),
        "scalar GM access:\n{asm}"
    );
    let blob = npu.compile(k).unwrap();
    let dev = NpuSimDevice::new(TargetConfig::from_toml(toml).unwrap()).with_mode(mode);
    let loaded = dev.load(&blob.name, &blob.code).unwrap();
    let mut got = args.to_vec();
    // SAFETY: every buffer outlives the launch and they do not overlap.
    let a: Vec<KernelArg> = got
        .iter_mut()
        .map(|v| unsafe { KernelArg::new(v.as_mut_ptr(), v.len()) })
        .collect();
    loaded.launch(&a).unwrap();
    got
}

/// The interpreter's outputs for `args` (the last buffer is the output).
fn interpret(k: &Kernel, args: &[Vec<u8>]) -> Vec<u8> {
    let mut want = args.to_vec();
    let mut refs: Vec<&mut [u8]> = want.iter_mut().map(|v| v.as_mut_slice()).collect();
    tessera_kir::run_kernel(k, &mut refs).unwrap();
    want.pop().unwrap()
}

/// Checks row kernel `k` (inputs of `ins`, output of `out_dt` and `n` elements) against the
/// interpreter on both chips, in both modes.
fn check_rows(k: &Kernel, ins: &[(DType, u64)], out_dt: DType, n: u64) {
    let mut args: Vec<Vec<u8>> = ins
        .iter()
        .enumerate()
        .map(|(s, &(dt, len))| data(dt, len, s as u64 + 1))
        .collect();
    args.push(vec![0u8; (out_dt.bits() as u64 / 8 * n) as usize]);
    let want = floats(out_dt, &interpret(k, &args));
    let (rel, abs) = match out_dt {
        DType::F16 => (4e-3, 1e-3),
        DType::BF16 => (3e-2, 1e-2),
        _ => (1e-5, 1e-6),
    };
    for chip in [NPU_SIM, NPU_SIM_LITE] {
        for mode in [Mode::Functional, Mode::Cycle] {
            let needs = ["rows=", ", row=", "DMA GM->UB", "DMA UB->GM"];
            let got = run(chip, k, &args, mode, &needs);
            let got = floats(out_dt, got.last().unwrap());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let ok = g == w || (g - w).abs() <= abs + rel * w.abs();
                assert!(
                    ok,
                    "`{}` element {i} of {n}: got {g}, the interpreter {w}",
                    k.name
                );
            }
        }
    }
}

#[test]
fn softmax_rows_run_on_the_vector_unit_in_f32_and_f16() {
    // 75 rows of 128 take blocks of 32: three blocks, the last one ragged.
    for dt in [DType::F32, DType::F16] {
        let (rows, len) = (75, 128);
        let k = softmax_kernel("softmax".into(), dt, rows, len, false).unwrap();
        check_rows(&k, &[(dt, rows * len)], dt, rows * len);
    }
    // A row whose length is no multiple of 8 (padded in the UB), and log-softmax.
    let (rows, len) = (9, 300);
    let k = softmax_kernel("log_softmax".into(), DType::F32, rows, len, true).unwrap();
    check_rows(&k, &[(DType::F32, rows * len)], DType::F32, rows * len);
}

#[test]
fn layer_norm_rows_run_on_the_vector_unit_with_scale_and_bias() {
    let (rows, len) = (13, 768);
    let k = layer_norm_kernel(
        "layer_norm".into(),
        DType::F16,
        (DType::F16, Some(DType::F16)),
        rows,
        len,
        1e-5,
    )
    .unwrap();
    let ins = [
        (DType::F16, rows * len),
        (DType::F16, len),
        (DType::F16, len),
    ];
    check_rows(&k, &ins, DType::F16, rows * len);
    // f32 without a bias, an f32 scale on f32 data, rows of 100 (padded to 104).
    let (rows, len) = (50, 100);
    let k =
        layer_norm_kernel("ln".into(), DType::F32, (DType::F32, None), rows, len, 1e-3).unwrap();
    check_rows(
        &k,
        &[(DType::F32, rows * len), (DType::F32, len)],
        DType::F32,
        rows * len,
    );
}

/// Checks the transpose of `dims` by `perm` in `dt` byte for byte against the interpreter;
/// `turned` says whether the tiles must be turned over by the DMA.
fn check_transpose(dt: DType, dims: &[u64], perm: &[usize], turned: bool) {
    let k = transpose_kernel("transpose".into(), dt, dims, perm).unwrap();
    let n: u64 = dims.iter().product();
    let args = vec![
        data(dt, n, 3),
        vec![0u8; (dt.bits() as u64 / 8 * n) as usize],
    ];
    let want = interpret(&k, &args);
    let needs: &[&str] = if turned {
        &["transpose", "DMA UB->GM"]
    } else {
        &["DMA GM->UB", "DMA UB->GM"]
    };
    for chip in [NPU_SIM, NPU_SIM_LITE] {
        for mode in [Mode::Functional, Mode::Cycle] {
            let got = run(chip, &k, &args, mode, needs);
            assert!(
                got[1] == want,
                "transpose {dims:?} by {perm:?} in {dt} differs from the interpreter"
            );
            if !turned {
                let asm = NpuSim::from_toml(chip, "t").unwrap().assembly(&k).unwrap();
                assert!(!asm.contains("transpose"), "{asm}");
            }
        }
    }
}

#[test]
fn transposes_move_tiles_with_strided_and_transposing_dmas() {
    // BERT's head split of Q and V (rows keep their last axis), of K (last axis turned into
    // rows) and the merge of the context, at small sizes with ragged tiles.
    check_transpose(DType::F16, &[1, 40, 3, 24], &[0, 2, 1, 3], false);
    check_transpose(DType::F16, &[1, 40, 3, 24], &[0, 2, 3, 1], true);
    check_transpose(DType::F32, &[1, 3, 40, 24], &[0, 2, 1, 3], false);
    // A plain 2-D transpose over several tiles each way, and other dtypes.
    check_transpose(DType::F32, &[700, 600], &[1, 0], true);
    check_transpose(DType::I64, &[5, 6, 7], &[2, 0, 1], true);
    check_transpose(DType::U8, &[4, 33, 5], &[1, 0, 2], false);
    // Nothing to transpose (unit axes only move): lowering keeps its copy kernel.
    assert!(transpose_kernel("t".into(), DType::F32, &[1, 8, 1], &[2, 1, 0]).is_none());
}
