//! End-to-end tests of `llvm-x86_64`: kernels built with `KernelBuilder` are compiled through
//! LLVM, loaded on the host target's device (the one CPU runtime) and run, and every output
//! buffer is compared with what the reference interpreter writes for the same inputs. Start
//! at [`same_as_interp`].

use std::sync::OnceLock;

use tessera_host::HostDevice;
use tessera_ir::DType;
use tessera_kir::{Access, BinOp, CastMode, CmpOp, Kernel, KernelBuilder, ReduceOp, Ty, UnOp};
use tessera_llvm::LlvmCpu;
use tessera_runtime::{Device, KernelArg};
use tessera_target::{Target, TargetError};

fn target() -> &'static LlvmCpu {
    static T: OnceLock<LlvmCpu> = OnceLock::new();
    T.get_or_init(|| LlvmCpu::native().expect("LLVM initialises for this x86_64 machine"))
}

fn device() -> HostDevice {
    HostDevice::new().for_target(tessera_llvm::X86_64)
}

/// Runs `k` compiled by `t` on the device over copies of `inputs` (8-byte aligned words).
fn run_on(t: &LlvmCpu, k: &Kernel, inputs: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let blob = t.compile(k).map_err(|e| e.to_string())?;
    let dev = device();
    dev.check_fingerprint(&t.fingerprint())?;
    let loaded = dev
        .load(&blob.name, &blob.code)
        .map_err(|e| e.to_string())?;
    let mut words: Vec<Vec<u64>> = inputs
        .iter()
        .map(|b| {
            let mut w = vec![0u64; b.len().div_ceil(8).max(1)];
            for (i, x) in b.iter().enumerate() {
                w[i / 8] |= (*x as u64) << (8 * (i % 8));
            }
            w
        })
        .collect();
    let args: Vec<KernelArg> = words
        .iter_mut()
        .zip(inputs)
        // SAFETY: every buffer outlives the launch, and each is passed once.
        .map(|(w, b)| unsafe { KernelArg::new(w.as_mut_ptr().cast(), b.len()) })
        .collect();
    loaded.launch(&args).map_err(|e| e.to_string())?;
    Ok(words
        .iter()
        .zip(inputs)
        .map(|(w, b)| {
            w.iter()
                .flat_map(|x| x.to_le_bytes())
                .take(b.len())
                .collect()
        })
        .collect())
}

/// Asserts that `k` leaves every buffer as the interpreter does (floats bit for bit, any NaN
/// matching any NaN) and returns the buffers.
fn same_as_interp(k: &Kernel, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let got = run_on(target(), k, inputs).unwrap_or_else(|e| panic!("{e}"));
    let mut want: Vec<Vec<u8>> = inputs.to_vec();
    let mut slices: Vec<&mut [u8]> = want.iter_mut().map(|b| &mut b[..]).collect();
    tessera_kir::run_kernel(k, &mut slices).unwrap_or_else(|e| panic!("{e}"));
    for (p, (g, w)) in k.params().iter().zip(got.iter().zip(&want)) {
        let size = (p.dtype.bits() / 8).max(1) as usize;
        for (i, (ge, we)) in g.chunks(size).zip(w.chunks(size)).enumerate() {
            let nan = |b: &[u8]| match p.dtype {
                DType::F32 => f32::from_le_bytes(b.try_into().unwrap()).is_nan(),
                DType::F64 => f64::from_le_bytes(b.try_into().unwrap()).is_nan(),
                _ => false,
            };
            assert!(
                ge == we || (nan(ge) && nan(we)),
                "kernel `{}`, buffer `{}`, element {i}: llvm {ge:?}, interpreter {we:?}",
                k.name,
                p.name
            );
        }
    }
    got
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i32s(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A float kernel over 8-lane vectors: arithmetic, min/max with NaN, fmod, rounding, sqrt,
/// comparisons and selects, a lane reduction, casts to saturating ints.
#[test]
fn float_vectors_match_the_interpreter() {
    let mut b = KernelBuilder::new("floats");
    let x = b.param("x", DType::F32, 32, Access::Read);
    let y = b.param("y", DType::F32, 32, Access::Read);
    let o = b.param("o", DType::F32, 32 * 8, Access::Write);
    let q = b.param("q", DType::I32, 32, Access::Write);
    let s = b.param("s", DType::F32, 4, Access::Write);
    b.set_grid(&[4]);
    let p = b.program_id(0);
    let eight = b.index(8);
    let at = b.mul(p, eight);
    let xv = b.load(x, at, 8);
    let yv = b.load(y, at, 8);
    let outs = [
        b.binary(BinOp::Add, xv, yv),
        b.binary(BinOp::Mul, xv, yv),
        b.binary(BinOp::Div, xv, yv),
        b.binary(BinOp::Min, xv, yv),
        b.binary(BinOp::Max, xv, yv),
        b.binary(BinOp::Rem, xv, yv),
        b.unary(UnOp::Round, xv),
        b.unary(UnOp::Sqrt, yv),
    ];
    for (j, v) in outs.into_iter().enumerate() {
        let base = b.index(32 * j as i64);
        let a = b.add(base, at);
        b.store(o, a, v);
    }
    let lt = b.cmp(CmpOp::Lt, xv, yv);
    let sel = b.select(lt, xv, yv);
    let qi = b.cast(sel, DType::I32, CastMode { saturate: false });
    b.store(q, at, qi);
    let sum = b.reduce_lanes(ReduceOp::Add, xv);
    // A fused multiply-add rounds once, as the interpreter's does.
    let fused = b.fma(xv, yv, xv);
    let fsum = b.reduce_lanes(ReduceOp::Max, fused);
    let both = b.add(sum, fsum);
    b.store(s, p, both);
    let k = b.finish();
    let xs: Vec<f32> = (0..32)
        .map(|i| match i {
            3 => f32::NAN,
            5 => 3e10,
            7 => -0.0,
            _ => (i as f32 - 13.5) * 0.7,
        })
        .collect();
    let ys: Vec<f32> = (0..32)
        .map(|i| if i == 9 { 0.0 } else { 0.3 + i as f32 * 0.25 })
        .collect();
    same_as_interp(
        &k,
        &[
            f32s(&xs),
            f32s(&ys),
            vec![0; 32 * 8 * 4],
            vec![0; 128],
            vec![0; 16],
        ],
    );
}

/// Float vectors (f32 and f64, 16 lanes) cast to every int width, signed and unsigned: the
/// truncating, saturating conversion with NaN → 0 that the `.sat` intrinsics define, which
/// the backend writes as compares, selects and a plain conversion of the in-range lanes. The
/// values sit on and around each type's bounds.
#[test]
fn vector_float_to_int_casts_saturate_as_the_interpreter() {
    let big = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.99,
        -0.99,
        -1.5,
        127.9,
        128.0,
        -128.0,
        -129.5,
        255.9,
        256.0,
        32767.5,
        -32769.0,
        65535.0,
        65536.0,
        2147483520.0,
        2147483648.0,
        -2147483648.0,
        -2147483904.0,
        4294967040.0,
        4294967296.0,
        9.223372036854775e18,
        -9.223372036854776e18,
        1.8446744073709552e19,
        3e30,
        -3e30,
        1e-40,
        42.7,
        -42.7,
        0.5,
    ];
    for from in [DType::F32, DType::F64] {
        for to in [
            DType::I8,
            DType::U8,
            DType::I16,
            DType::U16,
            DType::I32,
            DType::U32,
            DType::I64,
            DType::U64,
        ] {
            let mut b = KernelBuilder::new(format!("cast_{from}_{to}"));
            let x = b.param("x", from, 32, Access::Read);
            let y = b.param("y", to, 32, Access::Write);
            b.set_grid(&[2]);
            let p = b.program_id(0);
            let sixteen = b.index(16);
            let at = b.mul(p, sixteen);
            let v = b.load(x, at, 16);
            let c = b.cast(v, to, CastMode { saturate: false });
            b.store(y, at, c);
            let k = b.finish();
            let xs: Vec<u8> = match from {
                DType::F32 => big.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
                _ => big.iter().flat_map(|&v| v.to_le_bytes()).collect(),
            };
            let out = vec![0u8; 32 * (to.bits() / 8) as usize];
            same_as_interp(&k, &[xs, out]);
        }
    }
}

/// Integer division, remainder and shifts with kernel IR's total semantics (x / 0 = 0,
/// MIN / -1 = MIN, shift amounts modulo the width), in a loop with a carried value.
#[test]
fn integer_edge_cases_match_the_interpreter() {
    let mut b = KernelBuilder::new("ints");
    let x = b.param("x", DType::I32, 8, Access::Read);
    let y = b.param("y", DType::I32, 8, Access::Read);
    let o = b.param("o", DType::I32, 8 * 4, Access::Write);
    let acc = b.param("acc", DType::I32, 1, Access::Write);
    let zero = b.index(0);
    let xv = b.load(x, zero, 8);
    let yv = b.load(y, zero, 8);
    let outs = [
        b.binary(BinOp::Div, xv, yv),
        b.binary(BinOp::Rem, xv, yv),
        b.binary(BinOp::Shl, xv, yv),
        b.binary(BinOp::Shr, xv, yv),
    ];
    for (j, v) in outs.into_iter().enumerate() {
        let a = b.index(8 * j as i64);
        b.store(o, a, v);
    }
    let init = b.const_int(Ty::scalar(DType::I32), 7);
    let total = b.range_fold(0, 8, &[init], |b, i, carried| {
        let v = b.load(x, i, 1);
        let m = b.binary(BinOp::Mul, carried[0], v);
        vec![b.binary(BinOp::Xor, m, v)]
    });
    b.store(acc, zero, total[0]);
    let k = b.finish();
    let xs = [i32::MIN, 7, -7, 100, 5, -1, 1 << 30, 12345];
    let ys = [-1, 0, 2, 33, -3, 31, 1, -40];
    same_as_interp(&k, &[i32s(&xs), i32s(&ys), vec![0; 8 * 4 * 4], vec![0; 4]]);
}

/// A kernel-IR trap stops the launch with its code and value, as on host.
#[test]
fn traps_are_reported() {
    let mut b = KernelBuilder::new("trap");
    let x = b.param("x", DType::I64, 4, Access::Read);
    let y = b.param("y", DType::I64, 4, Access::Write);
    b.set_grid(&[4]);
    let p = b.program_id(0);
    let v = b.load(x, p, 1);
    let limit = b.index(10);
    let bad = b.cmp(CmpOp::Ge, v, limit);
    b.trap_if(bad, 3, v);
    b.store(y, p, v);
    let k = b.finish();
    let xs: Vec<u8> = [1i64, 2, 42, 3]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let err = run_on(target(), &k, &[xs, vec![0; 32]]).unwrap_err();
    assert!(err.contains('3') && err.contains("42"), "{err}");
}

/// A portable level compiles and records its features; a fingerprint naming a feature this
/// CPU lacks is refused with the feature named.
#[test]
fn cpu_levels_and_fingerprints() {
    let v3 = LlvmCpu::with_cpu(Some("x86-64-v3")).unwrap();
    assert!(v3.fingerprint().starts_with("x86_64:sse3,"));
    assert!(v3.fingerprint().contains(",avx2,"));
    assert_eq!(v3.desc().vector_bytes, 32);
    let mut b = KernelBuilder::new("copy");
    let x = b.param("x", DType::F32, 16, Access::Read);
    let y = b.param("y", DType::F32, 16, Access::Write);
    let zero = b.index(0);
    let v = b.load(x, zero, 16);
    b.store(y, zero, v);
    let k = b.finish();
    let xs: Vec<f32> = (0..16).map(|i| i as f32).collect();
    if tessera_host::cpu::check(&v3.fingerprint()).is_ok() {
        let out = run_on(&v3, &k, &[f32s(&xs), vec![0; 64]]).unwrap();
        assert_eq!(out[1], f32s(&xs));
    }
    let err = device()
        .check_fingerprint("x86_64:sse3,teleport")
        .unwrap_err();
    assert_eq!(
        err,
        "code needs CPU feature `teleport`, which this runtime does not know"
    );
    match LlvmCpu::with_cpu(Some("z80")) {
        Err(TargetError::Unsupported { message, .. }) => {
            assert!(message.contains("unknown CPU `z80`"), "{message}")
        }
        other => panic!("expected an unsupported CPU, got {:?}", other.err()),
    }
}

/// A corrupt blob is refused by the loader, never run.
#[test]
fn corrupt_blobs_are_refused() {
    let mut b = KernelBuilder::new("tiny");
    let y = b.param("y", DType::F32, 1, Access::Write);
    let zero = b.index(0);
    let one = b.const_float(Ty::F32, 1.0);
    b.store(y, zero, one);
    let blob = target().compile(&b.finish()).unwrap();
    let mut bad = blob.code.clone();
    bad.truncate(bad.len() - 1);
    let err = device().load("tiny", &bad).err().unwrap().to_string();
    assert!(err.contains("truncated"), "{err}");
    let mut bad = blob.code;
    bad[0] = b'X';
    let err = device().load("tiny", &bad).err().unwrap().to_string();
    assert!(err.contains("bad magic"), "{err}");
}

/// `y = dot(acc, a, b)` on 8 i32 lanes, `a` and `b` of `8·g` lanes of `ad` and `bd`.
fn dot_kernel(g: u16, (ad, bd): (DType, DType)) -> Kernel {
    let n = 8 * g;
    let src = format!(
        "kernel @dot(%acc: global i32[8] read, %a: global {ad}[{n}] read, %b: global {bd}[{n}] read, %y: global i32[8] write) grid [] {{
  %0 = const 0 : i64
  %1 = load %acc[%0] : vec<8xi32>
  %2 = load %a[%0] : vec<{n}x{ad}>
  %3 = load %b[%0] : vec<{n}x{bd}>
  %4 = dot %1, %2, %3 : vec<8xi32>
  store %4, %y[%0]
}}
"
    );
    tessera_kir::parse_kernel(&src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

#[test]
fn dot_pairs_use_vpmaddwd_and_quads_the_portable_form_exactly() {
    // i16 pairs at their extremes (-32768² twice wraps), and u8 × i8 quads (255 · -128 four
    // times, past i16: exact, no saturation).
    let k = dot_kernel(2, (DType::I16, DType::I16));
    let asm = target().assembly(&k).unwrap();
    // `vpmaddwd`, or on a CPU with AVX-VNNI or AVX-512 VNNI the
    // multiply-add that LLVM fuses it with its add into, `vpdpwssd` (wrapping, as `dot` is).
    assert!(
        asm.contains("vpmaddwd") || asm.contains("vpdpwssd"),
        "{asm}"
    );
    assert!(!asm.contains("vpdpwssds"), "a saturating form: {asm}");
    let a: Vec<u8> = (0..16i16)
        .flat_map(|i| if i < 2 { i16::MIN } else { i * 1000 - 7000 }.to_le_bytes())
        .collect();
    let acc = i32s(&[i32::MAX, -1, 0, 5, i32::MIN, 7, 8, 9]);
    let out = same_as_interp(&k, &[acc.clone(), a.clone(), a, vec![0u8; 32]]);
    assert_eq!(to_i32(&out[3])[0], i32::MAX.wrapping_add(i32::MIN));
    let k = dot_kernel(4, (DType::U8, DType::I8));
    let a: Vec<u8> = (0..32u8)
        .map(|i| if i < 4 { 255 } else { i.wrapping_mul(7) })
        .collect();
    let b: Vec<u8> = (0..32u8)
        .map(|i| if i < 4 { 0x80 } else { i.wrapping_mul(13) })
        .collect();
    let out = same_as_interp(&k, &[acc, a, b, vec![0u8; 32]]);
    assert_eq!(to_i32(&out[3])[0], i32::MAX.wrapping_add(4 * 255 * -128));
}

fn to_i32(b: &[u8]) -> Vec<i32> {
    b.chunks(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
