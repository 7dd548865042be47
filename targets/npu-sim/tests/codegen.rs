//! The npu-sim target end to end: kernels built with `KernelBuilder` are compiled by `NpuSim`,
//! run by `NpuSimDevice` on the simulator, and must give the interpreter's bytes exactly (f32
//! on the Vector unit is exact IEEE; integers are exact). Also: what the chip refuses, and that
//! a simulator hard error reaches the caller as an error.

use tessera_ir::DType;
use tessera_kir::{
    Access, BinOp, CastMode, CmpOp, KernelBuilder, ReduceOp, Scalar, Space, Ty, UnOp,
};
use tessera_npu_sim::blob::{Blob, ParamSlot};
use tessera_npu_sim::{Instr, Mode, NpuSim, NpuSimDevice, TargetConfig};
use tessera_runtime::{Device, KernelArg};
use tessera_target::{Target, TargetError};

fn npu_sim() -> NpuSim {
    NpuSim::from_toml(
        include_str!("../target.toml"),
        "targets/npu-sim/target.toml",
    )
    .unwrap()
}

fn device(mode: Mode) -> NpuSimDevice {
    NpuSimDevice::new(TargetConfig::default_target().unwrap()).with_mode(mode)
}

/// Runs `k` on the interpreter and on npu-sim from the same inputs; returns both results.
fn run_both(k: &tessera_kir::Kernel, inputs: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut want: Vec<Vec<u8>> = inputs.to_vec();
    {
        let mut refs: Vec<&mut [u8]> = want.iter_mut().map(|v| v.as_mut_slice()).collect();
        tessera_kir::run_kernel(k, &mut refs).unwrap();
    }
    let blob = npu_sim().compile(k).unwrap();
    let dev = device(Mode::Functional);
    let loaded = dev.load(&blob.name, &blob.code).unwrap();
    let mut got: Vec<Vec<u8>> = inputs.to_vec();
    // SAFETY: every buffer outlives the launch and they do not overlap.
    let args: Vec<KernelArg> = got
        .iter_mut()
        .map(|v| unsafe { KernelArg::new(v.as_mut_ptr(), v.len()) })
        .collect();
    loaded.launch(&args).unwrap();
    (want, got)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn f32_vectors_match_the_interpreter_bit_for_bit() {
    // y[4i..4i+4] = select(x > 0, floor(x * 2.5), -x) + min(x, 1) ; s[i] = sum of lanes;
    // z = f32(i32(x)) (truncation, saturation); w = sqrt(|x|) max x, rem 0.75.
    let n = 64u64;
    let mut b = KernelBuilder::new("f32_mix");
    let x = b.param("x", DType::F32, n, Access::Read);
    let y = b.param("y", DType::F32, n, Access::Write);
    let s = b.param("s", DType::F32, n / 4, Access::Write);
    let z = b.param("z", DType::F32, n, Access::Write);
    b.set_grid(&[n / 4]);
    let i = b.program_id(0);
    let four = b.index(4);
    let base = b.mul(i, four);
    let v = b.load(x, base, 4);
    let zero = b.const_float(Ty::vector(DType::F32, 4), 0.0);
    let pos = b.cmp(CmpOp::Gt, v, zero);
    let k = b.const_float(Ty::vector(DType::F32, 4), 2.5);
    let m = b.mul(v, k);
    let fl = b.unary(UnOp::Floor, m);
    let ng = b.unary(UnOp::Neg, v);
    let sel = b.select(pos, fl, ng);
    let one = b.const_float(Ty::vector(DType::F32, 4), 1.0);
    let mn = b.min(v, one);
    let r = b.add(sel, mn);
    let ab = b.unary(UnOp::Abs, r);
    let sq = b.unary(UnOp::Sqrt, ab);
    let mx = b.max(sq, v);
    let q = b.const_float(Ty::vector(DType::F32, 4), 0.75);
    let rm = b.binary(BinOp::Rem, mx, q);
    b.store(y, base, rm);
    let sum = b.reduce_lanes(ReduceOp::Add, rm);
    b.store(s, i, sum);
    let vi = b.cast(m, DType::I32, CastMode { saturate: false });
    let back = b.cast(vi, DType::F32, CastMode { saturate: false });
    b.store(z, base, back);
    let k = b.finish();
    let xs: Vec<f32> = (0..n)
        .map(|i| (i as f32 - 30.0) * 0.37 + if i == 7 { f32::NAN } else { 0.0 })
        .collect();
    let (want, got) = run_both(
        &k,
        &[
            f32_bytes(&xs),
            vec![0; 4 * n as usize],
            vec![0; n as usize],
            vec![0; 4 * n as usize],
        ],
    );
    assert_eq!(got, want);
}

#[test]
fn integer_ops_match_the_interpreter() {
    // Over i32, u8, i64 and u64 lanes: division by zero, MIN / -1, shifts past the width,
    // unsigned min/max and compares, casts that wrap, bool logic.
    let n = 16u64;
    let mut b = KernelBuilder::new("ints");
    let a = b.param("a", DType::I32, n, Access::Read);
    let c = b.param("c", DType::I32, n, Access::Read);
    let out = b.param("out", DType::I64, 8 * n, Access::Write);
    let bytes = b.param("bytes", DType::U8, n, Access::Write);
    b.set_grid(&[n]);
    let i = b.program_id(0);
    let x = b.load(a, i, 1);
    let y = b.load(c, i, 1);
    let eight = b.index(8);
    let o = b.mul(i, eight);
    let put = |b: &mut KernelBuilder, k: i64, v| {
        let kk = b.index(k);
        let at = b.add(o, kk);
        let w = b.cast(v, DType::I64, CastMode { saturate: false });
        b.store(out, at, w);
    };
    let d = b.div(x, y);
    put(&mut b, 0, d);
    let r = b.binary(BinOp::Rem, x, y);
    put(&mut b, 1, r);
    let sh = b.binary(BinOp::Shl, x, y);
    put(&mut b, 2, sh);
    let sr = b.binary(BinOp::Shr, x, y);
    put(&mut b, 3, sr);
    let xu = b.cast(x, DType::U64, CastMode { saturate: false });
    let yu = b.cast(y, DType::U64, CastMode { saturate: false });
    let mu = b.min(xu, yu);
    let mu = b.bitcast(mu, Ty::scalar(DType::I64));
    put(&mut b, 4, mu);
    let du = b.div(xu, yu);
    let du = b.bitcast(du, Ty::scalar(DType::I64));
    put(&mut b, 5, du);
    let lt = b.cmp(CmpOp::Lt, xu, yu);
    let le = b.cmp(CmpOp::Le, x, y);
    let both = b.binary(BinOp::Xor, lt, le);
    let pick = b.select(both, x, y);
    put(&mut b, 6, pick);
    let ab = b.unary(UnOp::Abs, x);
    let nt = b.unary(UnOp::Not, ab);
    put(&mut b, 7, nt);
    let narrow = b.cast(x, DType::U8, CastMode { saturate: false });
    b.store(bytes, i, narrow);
    let k = b.finish();
    let xs: Vec<i32> = vec![
        7,
        -7,
        i32::MIN,
        100,
        -1,
        0,
        255,
        256,
        31,
        -31,
        1 << 30,
        5,
        -100000,
        3,
        9,
        12,
    ];
    let ys: Vec<i32> = vec![2, 2, -1, 0, 33, 5, -3, 64, 31, 4, -2, 0, 7, -40, 1, 12];
    let inb = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (want, got) = run_both(
        &k,
        &[
            inb(&xs),
            inb(&ys),
            vec![0; 64 * n as usize],
            vec![0; n as usize],
        ],
    );
    assert_eq!(got, want);
}

#[test]
fn loops_ifs_locals_and_swapped_carries_match_the_interpreter() {
    // Fibonacci by swapping two carried values, a running f32 sum, an if with a result and
    // a local buffer (zeroed per instance) used as scratch.
    let n = 8u64;
    let mut b = KernelBuilder::new("loops");
    let out = b.param("out", DType::I64, n, Access::Write);
    let fo = b.param("fo", DType::F32, n, Access::Write);
    let tmp = b.local("tmp", Space::Local, DType::F32, 16);
    b.set_grid(&[n]);
    let i = b.program_id(0);
    let (z, o) = (b.index(0), b.index(1));
    let f0 = b.const_float(Ty::F32, 0.5);
    let (lo, st) = (b.index(0), b.index(1));
    let hi = b.add(i, o);
    let res = b.for_loop(lo, hi, st, &[z, o, f0], |b, iv, c| {
        let next = b.add(c[0], c[1]);
        let fv = b.cast(iv, DType::F32, CastMode { saturate: false });
        let prev = b.load(tmp, iv, 1);
        let acc = b.add(c[2], fv);
        let acc = b.add(acc, prev);
        b.store(tmp, iv, acc);
        vec![c[1], next, acc]
    });
    let three = b.index(3);
    let big = b.cmp(CmpOp::Gt, i, three);
    let picked = b.if_else(
        big,
        &[Ty::INDEX],
        |b| vec![b.mul(res[0], res[1])],
        |_| vec![res[0]],
    );
    b.store(out, i, picked[0]);
    b.store(fo, i, res[2]);
    let k = b.finish();
    let (want, got) = run_both(&k, &[vec![0; 8 * n as usize], vec![0; 4 * n as usize]]);
    assert_eq!(got, want);
}

fn unsupported_message(e: TargetError) -> String {
    match e {
        TargetError::Unsupported {
            target,
            kernel,
            message,
        } => format!("{target}|{kernel}|{message}"),
        other => panic!("expected Unsupported, got {other}"),
    }
}

#[test]
fn what_the_chip_lacks_is_refused_naming_kernel_buffer_dtype_and_target() {
    let mut b = KernelBuilder::new("dbl");
    let x = b.param("x", DType::F64, 4, Access::Read);
    let y = b.param("y", DType::F64, 4, Access::Write);
    let i = b.index(0);
    let v = b.load(x, i, 1);
    b.store(y, i, v);
    let e = unsupported_message(npu_sim().compile(&b.finish()).unwrap_err());
    assert_eq!(
        e,
        "npu-sim|dbl|buffer `x` holds f64, which the chip does not have"
    );

    // f64 arithmetic inside a kernel on f32 buffers.
    let mut b = KernelBuilder::new("wide");
    let x = b.param("x", DType::F32, 4, Access::Read);
    let y = b.param("y", DType::F32, 4, Access::Write);
    let i = b.index(0);
    let v = b.load(x, i, 1);
    let w = b.cast(v, DType::F64, CastMode { saturate: false });
    let w = b.add(w, w);
    let v = b.cast(w, DType::F32, CastMode { saturate: false });
    b.store(y, i, v);
    let e = unsupported_message(npu_sim().compile(&b.finish()).unwrap_err());
    assert_eq!(
        e,
        "npu-sim|wide|f64 values: the npu-sim Vector unit has no f64"
    );

    // A shared buffer larger than the UB.
    let mut b = KernelBuilder::new("huge");
    let y = b.param("y", DType::F32, 4, Access::Write);
    let big = b.local("big", Space::Shared, DType::F32, 100_000);
    let i = b.index(0);
    let v = b.load(big, i, 1);
    b.store(y, i, v);
    let e = unsupported_message(npu_sim().compile(&b.finish()).unwrap_err());
    assert!(e.starts_with("npu-sim|huge|shared buffer `big` (400000 bytes) does not fit the UB of target `npu-sim` (196608 bytes"), "{e}");

    // bf16 on the chip without it.
    let lite = NpuSim::from_toml(
        include_str!("../../npu-sim-lite/target.toml"),
        "targets/npu-sim-lite/target.toml",
    )
    .unwrap();
    let mut b = KernelBuilder::new("bf");
    let x = b.param("x", DType::BF16, 4, Access::Read);
    let y = b.param("y", DType::BF16, 4, Access::Write);
    let i = b.index(0);
    let v = b.load(x, i, 1);
    b.store(y, i, v);
    let e = unsupported_message(lite.compile(&b.finish()).unwrap_err());
    assert_eq!(
        e,
        "npu-sim-lite|bf|buffer `x` holds bf16, which the chip does not have"
    );
}

#[test]
fn a_simulator_hard_error_reaches_the_caller_as_an_error() {
    // A blob whose program reads UB nothing wrote: the device must fail, naming the kernel,
    // the instruction and that it is a code generator bug, and never return data.
    let blob = Blob {
        params: vec![ParamSlot {
            addr: 0x1000,
            bytes: 4,
            written: true,
        }],
        gm_bytes: 0x1004,
        program: vec![
            Instr::Li { rd: 1, imm: 64 },
            Instr::Ld {
                mem: tessera_npu_sim::Mem::Ub,
                dt: tessera_npu_sim::DType::I32,
                rd: 2,
                base: 1,
                offset: 0,
            },
            Instr::Halt,
        ],
    };
    let dev = device(Mode::Functional);
    let k = dev.load("bad", &blob.encode()).unwrap();
    let mut buf = [9u8; 4];
    // SAFETY: `buf` outlives the launch.
    let e = k
        .launch(&[unsafe { KernelArg::new(buf.as_mut_ptr(), 4) }])
        .unwrap_err();
    assert_eq!(e.kernel, "bad");
    assert!(
        e.message.contains("compiler bug")
            && e.message.contains("read of uninitialised UB at 0x40"),
        "{}",
        e.message
    );
    assert_eq!(buf, [9; 4], "nothing is written back after an error");
    // A damaged blob is refused on load.
    let mut bytes = blob.encode();
    bytes.truncate(bytes.len() - 3);
    assert!(dev.load("cut", &bytes).is_err());
}

#[test]
fn cycle_mode_records_one_report_per_launch() {
    let mut b = KernelBuilder::new("scale");
    let x = b.param("x", DType::F32, 32, Access::ReadWrite);
    b.set_grid(&[8]);
    let i = b.program_id(0);
    let four = b.index(4);
    let at = b.mul(i, four);
    let v = b.load(x, at, 4);
    let two = b.constant(Ty::vector(DType::F32, 4), Scalar::Float(2.0));
    let v = b.mul(v, two);
    b.store(x, at, v);
    let blob = npu_sim().compile(&b.finish()).unwrap();
    let dev = device(Mode::Cycle);
    let k = dev.load(&blob.name, &blob.code).unwrap();
    let mut xs = f32_bytes(&[1.5; 32]);
    // SAFETY: `xs` outlives the launches.
    let args = [unsafe { KernelArg::new(xs.as_mut_ptr(), xs.len()) }];
    k.launch(&args).unwrap();
    k.launch(&args).unwrap();
    assert_eq!(xs, f32_bytes(&[6.0; 32]));
    let reps = dev.take_reports();
    assert_eq!(reps.len(), 2);
    let r = &reps[0].report;
    assert_eq!(reps[0].kernel, "scale");
    // One VMUL per instance, and the pipes' time adds up.
    assert_eq!(r.pipe(tessera_npu_sim::Pipe::Vec).unwrap().instructions, 8);
    for p in &r.pipes {
        assert_eq!(p.busy + p.stall + p.idle, r.total_cycles);
    }
    assert!(dev.take_reports().is_empty());
}

#[test]
fn ub_slots_are_reused_by_live_range_and_loop_invariants_survive() {
    // 7000 chained vec<4 x f32> values need 224 000 bytes of slots if none is reused, more than
    // the 196 608-byte UB; reusing dead slots, the kernel fits. `base` and `hi` are defined
    // before the loop and read by every iteration while the body makes many temporaries.
    let mut b = KernelBuilder::new("chain");
    let x = b.param("x", DType::F32, 4, Access::Read);
    let y = b.param("y", DType::F32, 12, Access::Write);
    let z = b.index(0);
    let base = b.load(x, z, 4);
    let mut v = base;
    let step = b.const_float(Ty::vector(DType::F32, 4), 0.5);
    for _ in 0..7000 {
        v = b.add(v, step);
    }
    b.store(y, z, v);
    let (lo, hi, st) = (b.index(1), b.index(3), b.index(1));
    b.for_loop(lo, hi, st, &[], |b, iv, _| {
        let mut t = base;
        for _ in 0..50 {
            t = b.mul(t, base);
        }
        let four = b.index(4);
        let at = b.mul(iv, four);
        b.store(y, at, t);
        Vec::new()
    });
    let k = b.finish();
    let (want, got) = run_both(&k, &[f32_bytes(&[1.0, -1.0, 0.999, 1.001]), vec![0; 48]]);
    assert_eq!(got, want);
}

/// A batched `C[g] += A[g] · B[g]` kernel over a grid of `g` instances, with ragged shapes.
fn batched_mma(a_ty: DType, acc: DType, (g, m, n, k): (u64, u64, u64, u64)) -> tessera_kir::Kernel {
    use tessera_kir::TileRef;
    let mut b = KernelBuilder::new("bmm");
    let a = b.param("a", a_ty, g * m * k, Access::Read);
    let bb = b.param("b", a_ty, g * k * n, Access::Read);
    let c = b.param("c", acc, g * m * n, Access::ReadWrite);
    b.set_grid(&[g]);
    let i = b.program_id(0);
    let off = |b: &mut KernelBuilder, size: u64| {
        let s = b.index(size as i64);
        b.mul(i, s)
    };
    let (oa, ob, oc) = (off(&mut b, m * k), off(&mut b, k * n), off(&mut b, m * n));
    let t = |buf, offset, row| TileRef {
        buf,
        offset,
        row_stride: row as i64,
        col_stride: 1,
    };
    b.mma(
        t(a, oa, k),
        t(bb, ob, n),
        t(c, oc, n),
        m as u32,
        n as u32,
        k as u32,
    );
    b.finish()
}

#[test]
fn buffer_mma_runs_on_the_cube_exactly_for_i8_and_f16_from_zero() {
    let npu = npu_sim();
    let (g, m, n, k) = (2u64, 20, 24, 40);
    // i8 x i8 -> i32: exact whatever C holds.
    let kern = batched_mma(DType::I8, DType::I32, (g, m, n, k));
    let asm = npu.assembly(&kern).unwrap();
    assert!(
        asm.contains("MMA i8->i32") && asm.contains("DMA GM->L1 i8"),
        "{asm}"
    );
    let a: Vec<u8> = (0..g * m * k).map(|i| (i * 37 % 251) as u8).collect();
    let bv: Vec<u8> = (0..g * k * n).map(|i| (i * 91 % 253) as u8).collect();
    let c: Vec<u8> = (0..g * m * n)
        .flat_map(|i| (i as i32 * 1000 - 7).to_le_bytes())
        .collect();
    let (want, got) = run_both(&kern, &[a, bv, c]);
    assert_eq!(got, want);
    // f16 x f16 -> f32 from C = 0: the Cube adds the exact products in k order, as `mma` means.
    let kern = batched_mma(DType::F16, DType::F32, (g, m, n, k));
    assert!(npu.assembly(&kern).unwrap().contains("MMA f16->f32"));
    let h = |i: u64| {
        half::f16::from_f32(((i * 29 % 61) as f32 - 30.0) / 16.0)
            .to_bits()
            .to_le_bytes()
    };
    let a: Vec<u8> = (0..g * m * k).flat_map(h).collect();
    let bv: Vec<u8> = (0..g * k * n).flat_map(|i| h(i + 5)).collect();
    let (want, got) = run_both(
        &kern,
        &[a.clone(), bv.clone(), vec![0; (4 * g * m * n) as usize]],
    );
    assert_eq!(got, want);
    // The cycle report counts the Cube's work: useful MACs are exactly g·m·n·k.
    let blob = npu.compile(&kern).unwrap();
    let dev = device(Mode::Cycle);
    let loaded = dev.load(&blob.name, &blob.code).unwrap();
    let mut bufs = [a, bv, vec![0u8; (4 * g * m * n) as usize]];
    // SAFETY: the buffers outlive the launch and do not overlap.
    let args: Vec<KernelArg> = bufs
        .iter_mut()
        .map(|v| unsafe { KernelArg::new(v.as_mut_ptr(), v.len()) })
        .collect();
    loaded.launch(&args).unwrap();
    let r = dev.take_reports().remove(0).report;
    assert_eq!(r.macs_useful, g * m * n * k);
    assert_eq!(r.macs_issued, g * 32 * 32 * 48);
    // 32 x 32 x 48 padded is 2 x 2 x 3 tiles of 16 x 16 x 16 per instance.
    assert_eq!(r.cube_tiles, g * 12);
    assert!(r.cube_utilisation > 0.0);
    assert!(
        r.edge(tessera_npu_sim::Mem::L1, tessera_npu_sim::Mem::L0a)
            .unwrap()
            .bytes
            == g * 32 * 48 * 2
    );
}

#[test]
fn an_f32_mma_is_never_computed_in_f16() {
    // f32 x f32 -> f32 is not in npu-sim's [mma] table, and its exact expansion needs f64
    // products, which the chip lacks: refused, naming why, rather than run on the Cube in f16.
    let kern = batched_mma(DType::F32, DType::F32, (1, 5, 7, 9));
    let e = unsupported_message(npu_sim().compile(&kern).unwrap_err());
    assert_eq!(
        e,
        "npu-sim|bmm|f64 values: the npu-sim Vector unit has no f64"
    );
}

#[test]
fn a_fired_trap_stops_the_launch_with_the_first_instance_in_grid_order() {
    // y[i] = x[checked(idx[i])]: instances 2 and 4 hold bad indices; instance 2 is reported,
    // and no output is handed back.
    let mut b = KernelBuilder::new("gather");
    let x = b.param("x", DType::F32, 4, Access::Read);
    let idx = b.param("idx", DType::I64, 6, Access::Read);
    let y = b.param("y", DType::F32, 6, Access::Write);
    b.set_grid(&[6]);
    let i = b.program_id(0);
    let j = b.load(idx, i, 1);
    let j = b.checked_below(j, 4, 7);
    let v = b.load(x, j, 1);
    b.store(y, i, v);
    let k = b.finish();
    let blob = npu_sim().compile(&k).unwrap();
    let dev = device(Mode::Functional);
    let loaded = dev.load(&blob.name, &blob.code).unwrap();
    let mut xs = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    let mut is: Vec<u8> = [0i64, 3, 9, 1, -5, 2]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut ys = vec![0u8; 24];
    // SAFETY: the buffers outlive the launch and do not overlap.
    let args = unsafe {
        [
            KernelArg::new(xs.as_mut_ptr(), xs.len()),
            KernelArg::new(is.as_mut_ptr(), is.len()),
            KernelArg::new(ys.as_mut_ptr(), ys.len()),
        ]
    };
    let e = loaded.launch(&args).unwrap_err();
    let t = e.trapped.expect("a data check, not a device failure");
    assert_eq!((t.code, t.value), (7, 9));
    assert_eq!(ys, vec![0u8; 24], "no output is written back after a trap");
    // The interpreter agrees on which check fired.
    let mut bufs = [xs.clone(), is.clone(), vec![0u8; 24]];
    let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(|v| v.as_mut_slice()).collect();
    let ie = tessera_kir::run_kernel(&k, &mut refs)
        .unwrap_err()
        .to_string();
    assert!(ie.contains('7') && ie.contains('9'), "{ie}");
}
