//! The streaming path (`src/stream.rs`): elementwise kernels of the shape `tessera-lower`'s
//! `emit_elementwise` writes (a flat loop storing `out[i]`, operands loaded at `i`, at `0` or
//! at `i mod P` for a broadcast row), compiled for npu-sim and npu-sim-lite. Each must stream
//! through the UB (the assembly has `DMA GM->UB` and no scalar GM access), match the
//! interpreter within the chip's tolerance in functional mode on ragged lengths that take
//! several chunks, and run without a simulator hard error in cycle mode.

use tessera_ir::DType;
use tessera_kir::{Access, BinOp, CastMode, CmpOp, Kernel, KernelBuilder, MathFn, UnOp, Val};
use tessera_npu_sim::{Mode, NpuSim, NpuSimDevice, TargetConfig};
use tessera_runtime::{Device, KernelArg};
use tessera_target::Target;

const NPU_SIM: &str = include_str!("../target.toml");
const NPU_SIM_LITE: &str = include_str!("../../npu-sim-lite/target.toml");
const NO_SAT: CastMode = CastMode { saturate: false };

/// An elementwise kernel over `n` outputs of `out_dt`: `inputs` are (dtype, length) and are
/// loaded at `i mod length`, widened to f32; `body` maps them to the value stored.
fn ew(
    n: u64,
    inputs: &[(DType, u64)],
    out_dt: DType,
    body: &dyn Fn(&mut KernelBuilder, &[Val]) -> Val,
) -> Kernel {
    let mut b = KernelBuilder::new("ew");
    let bufs: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, &(dt, len))| b.param(format!("in{i}"), dt, len, Access::Read))
        .collect();
    let out = b.param("out", out_dt, n, Access::Write);
    b.set_grid(&[1]);
    let zero = b.index(0);
    let hi = b.index(n as i64);
    let one = b.index(1);
    b.for_loop(zero, hi, one, &[], |b, i, _| {
        let mut vals = Vec::new();
        for (k, &(dt, len)) in inputs.iter().enumerate() {
            let idx = if len == n {
                i
            } else {
                let p = b.index(len as i64);
                b.binary(BinOp::Rem, i, p)
            };
            let v = b.load(bufs[k], idx, 1);
            vals.push(if dt == DType::F32 || dt == DType::Bool {
                v
            } else {
                b.cast(v, DType::F32, NO_SAT)
            });
        }
        let r = body(b, &vals);
        let r = if b.ty(r).elem == out_dt {
            r
        } else {
            b.cast(r, out_dt, NO_SAT)
        };
        b.store(out, i, r);
        Vec::new()
    });
    b.finish()
}

fn data(dt: DType, n: u64, seed: u64) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let v = ((i * 29 + seed * 7) % 97) as f32 / 8.0 - 6.0;
            match dt {
                DType::F16 => half::f16::from_f32(v).to_bits().to_le_bytes().to_vec(),
                DType::BF16 => half::bf16::from_f32(v).to_bits().to_le_bytes().to_vec(),
                DType::Bool => vec![(i % 3 == 0) as u8],
                _ => v.to_le_bytes().to_vec(),
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
        DType::BF16 => bytes
            .chunks(2)
            .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        _ => bytes.iter().map(|&b| b as f32).collect(),
    }
}

/// Runs `k` on the chip of `toml` in `mode` after checking that it streams.
fn run(toml: &str, k: &Kernel, inputs: &[Vec<u8>], mode: Mode) -> Vec<Vec<u8>> {
    let npu = NpuSim::from_toml(toml, "target.toml").unwrap();
    let asm = npu.assembly(k).unwrap();
    assert!(asm.contains("DMA GM->UB"), "not streamed:\n{asm}");
    assert!(!asm.contains("LD GM"), "scalar GM loads:\n{asm}");
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
    got
}

/// Checks `k` against the interpreter on both chips, in both modes.
fn check(k: &Kernel, inputs: &[(DType, u64)], out_dt: DType, n: u64) {
    let out_bytes = (out_dt.bits() as u64 / 8) * n;
    let mut args: Vec<Vec<u8>> = inputs
        .iter()
        .enumerate()
        .map(|(s, &(dt, len))| data(dt, len, s as u64 + 1))
        .collect();
    args.push(vec![0u8; out_bytes as usize]);
    let mut want = args.clone();
    let mut refs: Vec<&mut [u8]> = want.iter_mut().map(|v| v.as_mut_slice()).collect();
    tessera_kir::run_kernel(k, &mut refs).unwrap();
    let want = floats(out_dt, want.last().unwrap());
    let (rel, abs) = match out_dt {
        DType::F16 => (4e-3, 1e-3),
        DType::BF16 => (3e-2, 1e-2),
        _ => (1e-5, 1e-6),
    };
    for chip in [NPU_SIM, NPU_SIM_LITE] {
        for mode in [Mode::Functional, Mode::Cycle] {
            let got = run(chip, k, &args, mode);
            let got = floats(out_dt, got.last().unwrap());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let ok =
                    (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= abs + rel * w.abs();
                assert!(ok, "element {i} of {n}: got {g}, the interpreter {w}");
            }
        }
    }
}

#[test]
fn a_gelu_with_a_bias_row_and_a_scalar_streams_in_f16() {
    // Several chunks and a ragged tail; the bias row has 48 f16 (96 bytes).
    let n = 48 * 700 + 48;
    let inputs = [(DType::F16, n), (DType::F16, 48), (DType::F32, 1)];
    let k = ew(n, &inputs, DType::F16, &|b, v| {
        let x = b.add(v[0], v[1]);
        let s = b.div(x, v[2]);
        let e = b.math(MathFn::Erf, &[s]);
        let one = b.const_float(tessera_kir::Ty::F32, 1.0);
        let e1 = b.add(one, e);
        let half = b.const_float(tessera_kir::Ty::F32, 0.5);
        let h = b.mul(half, x);
        b.mul(h, e1)
    });
    check(&k, &inputs, DType::F16, n);
}

#[test]
fn f32_arithmetic_math_and_selects_match_the_interpreter() {
    let n = 20001;
    let inputs = [(DType::F32, n), (DType::F32, n)];
    let k = ew(n, &inputs, DType::F32, &|b, v| {
        let t = tessera_kir::Ty::F32;
        let one = b.const_float(t, 1.0);
        let r = b.div(one, v[1]);
        let d = b.sub(v[0], r);
        let m = b.max(d, v[1]);
        let a = b.unary(UnOp::Abs, m);
        let q = b.unary(UnOp::Sqrt, a);
        let l = b.math(MathFn::Log, &[a]);
        let e = b.math(MathFn::Exp, &[v[1]]);
        let s = b.math(MathFn::Sigmoid, &[v[0]]);
        let f = b.unary(UnOp::Floor, v[0]);
        let two = b.const_float(t, 2.5);
        let rem = b.binary(BinOp::Rem, v[0], two);
        let c = b.cmp(CmpOp::Lt, two, v[1]);
        let w = b.select(c, q, l);
        let x = b.add(w, e);
        let x = b.mul(x, s);
        let x = b.add(x, f);
        let x = b.min(x, v[0]);
        b.add(x, rem)
    });
    check(&k, &inputs, DType::F32, n);
}

#[test]
fn erf_on_the_vector_unit_is_within_f32_tolerance_everywhere() {
    let n = 5000;
    let inputs = [(DType::F32, n)];
    let k = ew(n, &inputs, DType::F32, &|b, v| b.math(MathFn::Erf, &[v[0]]));
    check(&k, &inputs, DType::F32, n);
}

#[test]
fn comparisons_store_bools_and_where_selects_bf16() {
    let n = 3001;
    let inputs = [(DType::F32, n), (DType::F32, 1)];
    let k = ew(n, &inputs, DType::Bool, &|b, v| {
        b.cmp(CmpOp::Ge, v[0], v[1])
    });
    check(&k, &inputs, DType::Bool, n);
    let inputs = [(DType::Bool, n), (DType::BF16, n), (DType::F32, 1)];
    let k = ew(n, &inputs, DType::BF16, &|b, v| b.select(v[0], v[1], v[2]));
    let npu = NpuSim::from_toml(NPU_SIM, "target.toml").unwrap();
    // npu-sim-lite has no bf16: the select is checked to stream on npu-sim.
    assert!(npu.assembly(&k).unwrap().contains("VSEL"));
}

#[test]
fn a_kernel_outside_the_shape_keeps_the_scalar_path() {
    // An index that is not `i mod P` (a transpose-like gather) is not streamed.
    let n = 64;
    let mut b = KernelBuilder::new("gather");
    let x = b.param("x", DType::F32, n, Access::Read);
    let out = b.param("out", DType::F32, n, Access::Write);
    b.set_grid(&[1]);
    let zero = b.index(0);
    let hi = b.index(n as i64);
    let one = b.index(1);
    b.for_loop(zero, hi, one, &[], |b, i, _| {
        let last = b.index(n as i64 - 1);
        let j = b.sub(last, i);
        let v = b.load(x, j, 1);
        b.store(out, i, v);
        Vec::new()
    });
    let k = b.finish();
    let npu = NpuSim::from_toml(NPU_SIM, "target.toml").unwrap();
    let asm = npu.assembly(&k).unwrap();
    assert!(!asm.contains("DMA GM->UB"), "{asm}");
    // Loops that leave part of the output alone (another kernel writes it) are not streamed.
    let mut b = KernelBuilder::new("part");
    let x = b.param("x", DType::F32, n, Access::Read);
    let out = b.param("out", DType::F32, n, Access::Write);
    b.set_grid(&[1]);
    let zero = b.index(0);
    let hi = b.index(n as i64 - 3);
    let one = b.index(1);
    b.for_loop(zero, hi, one, &[], |b, i, _| {
        let v = b.load(x, i, 1);
        b.store(out, i, v);
        Vec::new()
    });
    let asm = npu.assembly(&b.finish()).unwrap();
    assert!(!asm.contains("DMA GM->UB"), "{asm}");
}

#[test]
fn a_single_f16_operation_runs_on_f16_and_matches_the_interpreter_bit_for_bit() {
    // `cast(widen(a) op widen(b))` is one VEC on f16: the Vector unit rounds its f32 result
    // once to f16, as the kernel's narrowing cast does. A bias row, a scalar and two streams.
    let n = 48 * 400 + 16;
    for (inputs, op) in [
        ([(DType::F16, n), (DType::F16, 48)], BinOp::Add),
        ([(DType::F16, n), (DType::F16, 1)], BinOp::Div),
        ([(DType::F16, n), (DType::F16, n)], BinOp::Mul),
        ([(DType::F16, 1), (DType::F16, n)], BinOp::Sub),
    ] {
        let k = ew(n, &inputs, DType::F16, &|b, v| b.binary(op, v[0], v[1]));
        let npu = NpuSim::from_toml(NPU_SIM, "target.toml").unwrap();
        let asm = npu.assembly(&k).unwrap();
        assert!(!asm.contains("VCAST"), "{op:?} widens:\n{asm}");
        let mut args: Vec<Vec<u8>> = inputs
            .iter()
            .enumerate()
            .map(|(s, &(dt, len))| data(dt, len, s as u64 + 3))
            .collect();
        args.push(vec![0u8; 2 * n as usize]);
        let mut want = args.clone();
        let mut refs: Vec<&mut [u8]> = want.iter_mut().map(|v| v.as_mut_slice()).collect();
        tessera_kir::run_kernel(&k, &mut refs).unwrap();
        for chip in [NPU_SIM, NPU_SIM_LITE] {
            let got = run(chip, &k, &args, Mode::Functional);
            assert!(
                got.last() == want.last(),
                "{op:?} on f16 differs from the interpreter"
            );
        }
    }
}

#[test]
fn erf_stays_within_a_few_f32_ulp_on_a_dense_grid() {
    // 40,001 points of [-5, 5] (both branches, their boundary at 0.84375, the tail to 1).
    let n = 40001u64;
    let k = ew(n, &[(DType::F32, n)], DType::F32, &|b, v| {
        b.math(MathFn::Erf, &[v[0]])
    });
    let xs: Vec<f32> = (0..n)
        .map(|i| -5.0 + 10.0 * i as f32 / (n - 1) as f32)
        .collect();
    let args = vec![
        xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        vec![0u8; 4 * n as usize],
    ];
    let got = floats(
        DType::F32,
        run(NPU_SIM, &k, &args, Mode::Functional).last().unwrap(),
    );
    let mut worst = 0f64;
    for (x, g) in xs.iter().zip(&got) {
        let want = tessera_kir::interp::math(MathFn::Erf, *x as f64, 0.0);
        let ulp = (want.abs() as f32).max(f32::MIN_POSITIVE);
        let ulp = (f32::from_bits(ulp.to_bits() + 1) - ulp) as f64;
        worst = worst.max((*g as f64 - want).abs() / ulp);
    }
    eprintln!("erf: at most {worst:.2} f32 ulp from the interpreter");
    assert!(worst <= 5.0, "erf is {worst:.2} ulp off somewhere");
}

/// The f16 or bf16 bits `g` and `w` as ordered integers' distance (NaN only equals NaN).
fn narrow_ulps(dt: DType, g: u16, w: u16) -> u32 {
    let nan = |b: u16| match dt {
        DType::F16 => half::f16::from_bits(b).is_nan(),
        _ => half::bf16::from_bits(b).is_nan(),
    };
    if nan(g) || nan(w) {
        return if nan(g) && nan(w) { 0 } else { u32::MAX };
    }
    let ord = |b: u16| {
        if b & 0x8000 != 0 {
            -((b & 0x7fff) as i32)
        } else {
            b as i32
        }
    };
    ord(g).abs_diff(ord(w))
}

#[test]
fn erf_rounded_to_f16_or_bf16_is_one_polynomial_within_one_narrow_ulp_of_every_input() {
    // Every bit pattern of the narrow dtype (infinities and NaNs included), on both chips.
    for dt in [DType::F16, DType::BF16] {
        let n = 1u64 << 16;
        let k = ew(n, &[(dt, n)], dt, &|b, v| b.math(MathFn::Erf, &[v[0]]));
        let xs: Vec<u8> = (0..n as u32)
            .flat_map(|b| (b as u16).to_le_bytes())
            .collect();
        let mut want = vec![xs.clone(), vec![0u8; 2 * n as usize]];
        let mut refs: Vec<&mut [u8]> = want.iter_mut().map(|v| v.as_mut_slice()).collect();
        tessera_kir::run_kernel(&k, &mut refs).unwrap();
        // npu-sim-lite has no bf16.
        let chips: &[&str] = if dt == DType::F16 {
            &[NPU_SIM, NPU_SIM_LITE]
        } else {
            &[NPU_SIM]
        };
        for &chip in chips {
            let asm = NpuSim::from_toml(chip, "target.toml")
                .unwrap()
                .assembly(&k)
                .unwrap();
            // The narrow form: Horner by VMADD, and no exp (the f32 form's second branch).
            assert!(asm.contains("VMADDS f32"), "{asm}");
            assert!(!asm.contains("VEXP"), "{asm}");
            let args = vec![xs.clone(), vec![0u8; 2 * n as usize]];
            let got = run(chip, &k, &args, Mode::Functional);
            let (mut off, mut worst) = (0, 0);
            for (g, w) in got[1].chunks(2).zip(want[1].chunks(2)) {
                let d = narrow_ulps(
                    dt,
                    u16::from_le_bytes([g[0], g[1]]),
                    u16::from_le_bytes([w[0], w[1]]),
                );
                worst = worst.max(d);
                off += (d > 0) as u32;
            }
            eprintln!("erf to {dt}: {off} of {n} inputs one ulp off, at most {worst}");
            assert!(worst <= 1, "erf to {dt} is {worst} ulp off somewhere");
            // 284 f16 and 236 bf16 inputs lie where erf is within ~1e-5 of a rounding boundary.
            assert!(off <= 300, "erf to {dt}: {off} inputs off by an ulp");
        }
    }
}

#[test]
fn a_launch_past_the_devices_step_limit_stops_and_says_how_to_raise_it() {
    let n = 5000;
    let k = ew(n, &[(DType::F32, n)], DType::F32, &|b, v| {
        b.math(MathFn::Erf, &[v[0]])
    });
    let npu = NpuSim::from_toml(NPU_SIM, "target.toml").unwrap();
    let blob = npu.compile(&k).unwrap();
    let dev = NpuSimDevice::new(TargetConfig::from_toml(NPU_SIM).unwrap()).with_max_steps(50);
    let loaded = dev.load(&blob.name, &blob.code).unwrap();
    let mut bufs = [vec![0u8; 4 * n as usize], vec![0u8; 4 * n as usize]];
    // SAFETY: both buffers outlive the launch and do not overlap.
    let args: Vec<KernelArg> = bufs
        .iter_mut()
        .map(|v| unsafe { KernelArg::new(v.as_mut_ptr(), v.len()) })
        .collect();
    let e = loaded.launch(&args).unwrap_err().to_string();
    assert!(e.contains("step limit of 50 instructions"), "{e}");
    assert!(e.contains("TESSERA_NPU_SIM_MAX_STEPS"), "{e}");
    // The default limit runs it.
    let dev = NpuSimDevice::new(TargetConfig::from_toml(NPU_SIM).unwrap());
    dev.load(&blob.name, &blob.code)
        .unwrap()
        .launch(&args)
        .unwrap();
}
