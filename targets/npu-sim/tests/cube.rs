//! The tile-level path (`src/cube.rs`): contraction tile programs, built here the way
//! `tessera-lower`'s `contraction.rs` builds them, compiled for npu-sim and npu-sim-lite. Each
//! must run on the Cube (the assembly has `MMA`), give the interpreter's bytes exactly in
//! functional mode, and run without a simulator hard error in cycle mode, where the report's
//! useful MACs must be exactly the product's. What the path cannot take falls back to the
//! Vector unit, and an f32 product never reaches the Cube.

use tessera_ir::DType;
use tessera_kir::{Access, CastMode, Kernel, KernelBuilder, Scalar, TileAt, View};
use tessera_npu_sim::{Mode, NpuSim, NpuSimDevice, TargetConfig};
use tessera_runtime::{Device, KernelArg};
use tessera_target::Target;

const NPU_SIM: &str = include_str!("../target.toml");
const NPU_SIM_LITE: &str = include_str!("../../npu-sim-lite/target.toml");

/// The shape of a product: batch, m, n, k, and whether B is shared by every batch.
#[derive(Clone, Copy)]
struct Shape {
    batch: u64,
    m: u64,
    n: u64,
    k: u64,
    shared_b: bool,
    /// A stored as `[K, M]`, B as `[N, K]` (Gemm's `transA`, `transB`).
    trans_a: bool,
    trans_b: bool,
    /// Gemm's epilogue: `alpha`, and C (its dtype, whether it is a bias row of N) with `beta`.
    alpha: f64,
    c: Option<(DType, bool)>,
    beta: f64,
    /// FusedMatMul's ReLU after C, as `fused.rs` writes it: a `max` with a splat of a scalar
    /// +0.0 defined after the K loop.
    relu: bool,
}

fn shape(batch: u64, m: u64, n: u64, k: u64, shared_b: bool) -> Shape {
    Shape {
        batch,
        m,
        n,
        k,
        shared_b,
        trans_a: false,
        trans_b: false,
        alpha: 1.0,
        c: None,
        beta: 1.0,
        relu: false,
    }
}

/// `Y[g] = cast(A[g] · B[g])` as one tile program: instance (g, i, j) owns a `tm × tn` tile of
/// Y[g] and walks K in steps of `tk` with masked tile loads and `tile.mma`.
fn tile_matmul(
    a_ty: DType,
    acc: DType,
    y_ty: DType,
    s: Shape,
    (tm, tn, tk): (u16, u16, u16),
) -> Kernel {
    let mut kb = KernelBuilder::new("matmul");
    let b = &mut kb;
    let bsz = if s.shared_b { 1 } else { s.batch };
    let abuf = b.param("a", a_ty, s.batch * s.m * s.k, Access::Read);
    let bbuf = b.param("b", a_ty, bsz * s.k * s.n, Access::Read);
    let cbuf = s.c.map(|(dt, row)| {
        let len = if row { s.n } else { s.m * s.n };
        b.param("c", dt, len, Access::Read)
    });
    let ybuf = b.param("y", y_ty, s.batch * s.m * s.n, Access::Write);
    b.set_grid(&[s.batch, s.m.div_ceil(tm as u64), s.n.div_ceil(tn as u64)]);
    let p0 = b.program_id(0);
    let off = |b: &mut KernelBuilder, size: u64| {
        let v = b.index(size as i64);
        b.mul(p0, v)
    };
    let a_off = off(b, s.m * s.k);
    let b_off = if s.shared_b {
        b.index(0)
    } else {
        off(b, s.k * s.n)
    };
    let y_off = off(b, s.m * s.n);
    let (p1, p2) = (b.program_id(1), b.program_id(2));
    let (tmv, tnv) = (b.index(tm as i64), b.index(tn as i64));
    let i0 = b.mul(p1, tmv);
    let j0 = b.mul(p2, tnv);
    let view = |buf, offset, dims: [u64; 2], strides: [u64; 2]| View {
        buf,
        offset,
        dims: dims.to_vec(),
        strides: strides.iter().map(|&x| x as i64).collect(),
    };
    let ast = if s.trans_a { [1, s.m] } else { [s.k, 1] };
    let bst = if s.trans_b { [1, s.k] } else { [s.n, 1] };
    let av = view(abuf, a_off, [s.m, s.k], ast);
    let bv = view(bbuf, b_off, [s.k, s.n], bst);
    let fill = if a_ty.is_float() {
        Scalar::Float(0.0)
    } else {
        Scalar::Int(0)
    };
    let acc0 = b.acc_tile(acc, tm, tn, 0.0);
    let (lo, hi, step) = (b.index(0), b.index(s.k as i64), b.index(tk as i64));
    let accv = b.for_loop(lo, hi, step, &[acc0], |b, k0, acc| {
        let ta = b.tile_load(
            TileAt {
                view: av.clone(),
                origin: vec![i0, k0],
            },
            tm,
            tk,
            fill,
        );
        let tb = b.tile_load(
            TileAt {
                view: bv.clone(),
                origin: vec![k0, j0],
            },
            tk,
            tn,
            fill,
        );
        vec![b.tile_mma(ta, tb, acc[0])]
    })[0];
    let mut out = accv;
    if s.alpha != 1.0 {
        let a = b.const_tile(acc, tm, tn, s.alpha);
        out = b.mul(out, a);
    }
    if let (Some((_, row)), Some(cb)) = (s.c, cbuf) {
        let zero = b.index(0);
        let rs = if row { 0 } else { s.n };
        let ct = b.tile_load(
            TileAt {
                view: view(cb, zero, [s.m, s.n], [rs, 1]),
                origin: vec![i0, j0],
            },
            tm,
            tn,
            Scalar::Float(0.0),
        );
        let mut ct = b.cast(ct, acc, CastMode { saturate: false });
        if s.beta != 1.0 {
            let bt = b.const_tile(acc, tm, tn, s.beta);
            ct = b.mul(ct, bt);
        }
        out = b.add(out, ct);
    }
    if s.relu {
        let z = b.const_float(tessera_kir::Ty::scalar(acc), 0.0);
        let zt = b.splat_tile(z, tm, tn);
        out = b.max(out, zt);
    }
    let out = b.cast(out, y_ty, CastMode { saturate: false });
    let yv = view(ybuf, y_off, [s.m, s.n], [s.n, 1]);
    b.tile_store(
        TileAt {
            view: yv,
            origin: vec![i0, j0],
        },
        out,
    );
    kb.finish()
}

/// Deterministic operand bytes of `n` elements of `dt`.
fn data(dt: DType, n: u64, seed: u64) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let v = ((i * 29 + seed * 7) % 61) as f32 - 30.0;
            match dt {
                DType::F16 => half::f16::from_f32(v / 16.0)
                    .to_bits()
                    .to_le_bytes()
                    .to_vec(),
                DType::BF16 => half::bf16::from_f32(v / 8.0)
                    .to_bits()
                    .to_le_bytes()
                    .to_vec(),
                _ => vec![(v as i8 * 4) as u8],
            }
        })
        .collect()
}

/// Compiles `k` for the chip of `toml`, runs it in `mode`, and returns the outputs and the
/// cycle report (cycle mode) after checking the assembly uses the Cube.
fn run(
    toml: &str,
    k: &Kernel,
    inputs: &[Vec<u8>],
    mode: Mode,
) -> (Vec<Vec<u8>>, Option<tessera_npu_sim::CycleReport>) {
    let npu = NpuSim::from_toml(toml, "target.toml").unwrap();
    let asm = npu.assembly(k).unwrap();
    assert!(asm.contains("MMA "), "not on the Cube:\n{asm}");
    let blob = npu.compile(k).unwrap();
    let dev = NpuSimDevice::new(TargetConfig::from_toml(toml).unwrap()).with_mode(mode);
    let loaded = dev.load(&blob.name, &blob.code).unwrap();
    let mut got = inputs.to_vec();
    // SAFETY: every buffer outlives the launch and they do not overlap.
    let args: Vec<KernelArg> = got
        .iter_mut()
        .map(|v| unsafe { KernelArg::new(v.as_mut_ptr(), v.len()) })
        .collect();
    loaded.launch(&args).unwrap();
    let rep = dev.take_reports().pop().map(|r| r.report);
    (got, rep)
}

fn interp(k: &Kernel, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut want = inputs.to_vec();
    let mut refs: Vec<&mut [u8]> = want.iter_mut().map(|v| v.as_mut_slice()).collect();
    tessera_kir::run_kernel(k, &mut refs).unwrap();
    want
}

/// Checks one product on one chip, in both modes.
fn check(toml: &str, a_ty: DType, acc: DType, y_ty: DType, s: Shape, tiles: (u16, u16, u16)) {
    let k = tile_matmul(a_ty, acc, y_ty, s, tiles);
    let bsz = if s.shared_b { 1 } else { s.batch };
    let ysz = (y_ty.bits() as u64 / 8) * s.batch * s.m * s.n;
    let mut inputs = vec![
        data(a_ty, s.batch * s.m * s.k, 1),
        data(a_ty, bsz * s.k * s.n, 2),
    ];
    if let Some((cdt, row)) = s.c {
        let len = if row { s.n } else { s.m * s.n };
        inputs.push(match cdt {
            DType::F32 => (0..len)
                .flat_map(|i| (i as f32 * 0.37 - 5.0).to_le_bytes())
                .collect(),
            dt => data(dt, len, 3),
        });
    }
    inputs.push(vec![0u8; ysz as usize]);
    let want = interp(&k, &inputs);
    let (got, _) = run(toml, &k, &inputs, Mode::Functional);
    assert!(
        got == want,
        "{a_ty}->{y_ty} {s:?}: the Cube differs from the interpreter",
        s = (s.batch, s.m, s.n, s.k)
    );
    let (_, rep) = run(toml, &k, &inputs, Mode::Cycle);
    let rep = rep.unwrap();
    assert_eq!(rep.macs_useful, s.batch * s.m * s.n * s.k);
}

/// [`check`] on npu-sim and on npu-sim-lite, from the same tile program.
fn check_both(a_ty: DType, acc: DType, y_ty: DType, s: Shape) {
    for chip in [NPU_SIM, NPU_SIM_LITE] {
        check(chip, a_ty, acc, y_ty, s, (16, 16, 64));
    }
}

#[test]
fn f16_products_run_on_the_cube_exactly_with_ragged_edges() {
    let s = shape(1, 37, 45, 70, false);
    check_both(DType::F16, DType::F32, DType::F16, s);
}

#[test]
fn blocks_larger_than_one_cube_block_and_batches_with_a_shared_b() {
    // 300 x 260 x 530 crosses every block edge (128 rows and columns, 128 k) with remainders;
    // a shared B has batch stride 0.
    check_both(
        DType::F16,
        DType::F32,
        DType::F16,
        shape(2, 300, 260, 530, true),
    );
    // K of 2100 spans more k-blocks than the L1 ring of A holds (12 on npu-sim, 16 on
    // npu-sim-lite), so the A panel is reloaded for every column block.
    check_both(
        DType::F16,
        DType::F32,
        DType::F16,
        shape(1, 40, 150, 2100, false),
    );
}

#[test]
fn transposed_operands_are_turned_over_by_the_l1_to_l0_dma() {
    for (ta, tb) in [(false, true), (true, false), (true, true)] {
        let s = Shape {
            trans_a: ta,
            trans_b: tb,
            ..shape(2, 150, 70, 200, false)
        };
        check_both(DType::F16, DType::F32, DType::F16, s);
        check_both(DType::I8, DType::I32, DType::I32, s);
    }
}

#[test]
fn gemm_alpha_beta_and_c_run_on_the_vector_unit_after_the_cube() {
    for (c, alpha, beta) in [
        (Some((DType::F16, true)), 1.0, 1.0),
        (Some((DType::F32, false)), 0.5, -2.0),
        (Some((DType::F16, false)), 1.0, 0.25),
        (Some((DType::F32, true)), 3.0, 1.0),
        (None, -1.5, 1.0),
    ] {
        let s = Shape {
            alpha,
            c,
            beta,
            trans_b: true,
            ..shape(1, 140, 90, 75, false)
        };
        check_both(DType::F16, DType::F32, DType::F16, s);
    }
}

#[test]
fn a_relu_after_the_bias_runs_on_the_vector_unit_after_the_cube() {
    // A Linear layer with a ReLU (FusedMatMul from Gemm + Relu): weights [N, K], an f32 bias
    // row, half the outputs negative; without C too.
    for c in [Some((DType::F32, true)), None] {
        let s = Shape {
            c,
            relu: true,
            trans_b: true,
            ..shape(1, 40, 90, 75, false)
        };
        check_both(DType::F16, DType::F32, DType::F16, s);
        check(
            NPU_SIM,
            DType::BF16,
            DType::F32,
            DType::F32,
            s,
            (16, 16, 64),
        );
    }
}

#[test]
fn i8_products_accumulate_exactly_in_i32() {
    let s = shape(3, 20, 33, 100, false);
    check_both(DType::I8, DType::I32, DType::I32, s);
}

#[test]
fn bf16_products_run_on_npu_sim_and_fall_back_on_lite_which_has_no_bf16() {
    let s = shape(1, 19, 17, 40, false);
    check(
        NPU_SIM,
        DType::BF16,
        DType::F32,
        DType::BF16,
        s,
        (16, 16, 64),
    );
    let k = tile_matmul(DType::BF16, DType::F32, DType::BF16, s, (16, 16, 64));
    let lite = NpuSim::from_toml(NPU_SIM_LITE, "lite.toml").unwrap();
    let e = lite.compile(&k).unwrap_err().to_string();
    assert!(e.contains("bf16") && e.contains("npu-sim-lite"), "{e}");
}

#[test]
fn the_f32_accumulator_is_cast_like_kernel_ir_so_overflow_gives_infinity() {
    // 8 · 300 · 30 = 72000 is past f16's largest finite value: kernel IR's cast (and the
    // Vector unit's VCAST) give +inf, where the L0C->GM DMA cast would saturate.
    let s = shape(1, 4, 4, 300, false);
    let k = tile_matmul(DType::F16, DType::F32, DType::F16, s, (16, 16, 64));
    let v = |x: f32, n: u64| -> Vec<u8> {
        (0..n)
            .flat_map(|_| half::f16::from_f32(x).to_bits().to_le_bytes())
            .collect()
    };
    let inputs = vec![v(8.0, 4 * 300), v(30.0, 300 * 4), vec![0; 32]];
    let want = interp(&k, &inputs);
    let (got, _) = run(NPU_SIM, &k, &inputs, Mode::Functional);
    assert_eq!(got, want);
    assert_eq!(&got[2][..2], &half::f16::INFINITY.to_bits().to_le_bytes());
}

#[test]
fn an_f32_tile_product_stays_on_the_vector_unit() {
    let s = shape(1, 5, 6, 7, false);
    let k = tile_matmul(DType::F32, DType::F32, DType::F32, s, (8, 8, 8));
    let asm = NpuSim::from_toml(NPU_SIM, "t.toml")
        .unwrap()
        .assembly(&k)
        .unwrap();
    assert!(!asm.contains("MMA "), "{asm}");
}

#[test]
fn a_chip_too_small_for_two_cube_tiles_is_refused_naming_kernel_buffers_and_target() {
    // An L0A of 512 bytes holds one 16 x 16 f16 tile, not the two slots of the ring.
    let small = NPU_SIM.replacen("bytes = 65536", "bytes = 512", 1);
    let npu = NpuSim::from_toml(&small, "small.toml").unwrap();
    let s = shape(1, 16, 16, 16, false);
    let k = tile_matmul(DType::F16, DType::F32, DType::F16, s, (16, 16, 16));
    match npu.compile(&k).unwrap_err() {
        tessera_target::TargetError::Unsupported {
            target,
            kernel,
            message,
        } => {
            assert_eq!((target.as_str(), kernel.as_str()), ("npu-sim", "matmul"));
            assert_eq!(
                message,
                "kernel `matmul`: two 16x16x16 Cube tiles of its product (buffers `a` x `b` -> `y`) do not fit the L1/L0A/L0B/L0C/UB of target `npu-sim`"
            );
        }
        other => panic!("not an unsupported error: {other}"),
    }
}

#[test]
fn a_view_past_its_buffer_is_left_to_the_checked_scalar_path() {
    // The Cube's DMAs would read past `a`; the scalarised path reads element by element.
    let mut k = tile_matmul(
        DType::F16,
        DType::F32,
        DType::F16,
        shape(1, 20, 20, 20, false),
        (16, 16, 16),
    );
    k.bufs[0].len -= 1;
    let asm = NpuSim::from_toml(NPU_SIM, "t.toml")
        .unwrap()
        .assembly(&k)
        .unwrap();
    assert!(!asm.contains("MMA "), "{asm}");
}

#[test]
fn a_small_l1_shares_itself_between_the_a_and_b_rings() {
    // 72 KiB of L1 with 32 KiB A blocks and 4 KiB B blocks (N = 16): two A slots leave room
    // for two B slots only, not the four a larger L1 would get.
    let small = NPU_SIM.replacen("bytes = 524288", "bytes = 73728", 1);
    let s = shape(1, 128, 16, 300, false);
    check(&small, DType::F16, DType::F32, DType::F16, s, (16, 16, 64));
}
