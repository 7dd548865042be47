//! End-to-end tests of the host target: kernels built with `KernelBuilder` are compiled with
//! Cranelift, loaded on `HostDevice` and run, and every output buffer is compared with what
//! the reference interpreter (`tessera_kir::run_kernel`) writes for the same inputs. Start at
//! [`check`].

use std::sync::OnceLock;

use tessera_host::{Host, HostDevice};
use tessera_ir::DType;
use tessera_kir::{
    Access, BinOp, CastMode, CmpOp, Kernel, KernelBuilder, MathFn, ReduceOp, Scalar, Space, TileAt,
    TileRef, Ty, UnOp, Val,
};
use tessera_runtime::{Device, KernelArg};
use tessera_target::{Target, TargetError};

fn host() -> &'static Host {
    static H: OnceLock<Host> = OnceLock::new();
    H.get_or_init(|| Host::native().expect("this test machine is x86_64 with SSE4.1"))
}

/// A buffer with the 16-byte alignment `KernelArg` promises kernels.
struct Aligned {
    words: Vec<u128>,
    len: usize,
}

impl Aligned {
    fn from(bytes: &[u8]) -> Aligned {
        let mut words = vec![0u128; bytes.len().div_ceil(16).max(1)];
        // SAFETY: `words` holds at least `bytes.len()` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                words.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            )
        };
        Aligned {
            words,
            len: bytes.len(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        // SAFETY: as in `from`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }.to_vec()
    }

    fn arg(&mut self) -> KernelArg {
        // SAFETY: the buffer outlives every launch in these tests, and each is passed once.
        unsafe { KernelArg::new(self.words.as_mut_ptr().cast(), self.len) }
    }
}

/// Compiles, loads and runs `k` on the host device over copies of `inputs`.
fn run_host_with(device: &HostDevice, k: &Kernel, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let blob = host().compile(k).unwrap_or_else(|e| panic!("{e}"));
    let loaded = device
        .load(&blob.name, &blob.code)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut bufs: Vec<Aligned> = inputs.iter().map(|b| Aligned::from(b)).collect();
    let args: Vec<KernelArg> = bufs.iter_mut().map(|b| b.arg()).collect();
    loaded.launch(&args).unwrap_or_else(|e| panic!("{e}"));
    bufs.iter().map(|b| b.bytes()).collect()
}

fn run_interp(k: &Kernel, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut bufs: Vec<Vec<u8>> = inputs.to_vec();
    let mut slices: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    tessera_kir::run_kernel(k, &mut slices).unwrap_or_else(|e| panic!("{e}"));
    bufs
}

/// Runs `k` on the host and on the interpreter; asserts that every buffer ends up the same
/// (floats bit for bit, except that any NaN matches any NaN) and returns the host's buffers.
fn check(k: &Kernel, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    check_on(&HostDevice::new(), k, inputs)
}

fn check_on(device: &HostDevice, k: &Kernel, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let got = run_host_with(device, k, inputs);
    let want = run_interp(k, inputs);
    for (p, (g, w)) in k.params().iter().zip(got.iter().zip(&want)) {
        let size = (p.dtype.bits() / 8).max(1) as usize;
        for (i, (ge, we)) in g.chunks(size).zip(w.chunks(size)).enumerate() {
            let same = ge == we
                || match p.dtype {
                    DType::F32 => {
                        f32::from_le_bytes(ge.try_into().unwrap()).is_nan()
                            && f32::from_le_bytes(we.try_into().unwrap()).is_nan()
                    }
                    DType::F64 => {
                        f64::from_le_bytes(ge.try_into().unwrap()).is_nan()
                            && f64::from_le_bytes(we.try_into().unwrap()).is_nan()
                    }
                    _ => false,
                };
            assert!(
                same,
                "kernel `{}`, buffer `{}`, element {i}: host {ge:?}, interpreter {we:?}",
                k.name, p.name
            );
        }
    }
    got
}

// ---- data helpers ----

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn i32s(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn to_f32s(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
fn to_i32s(b: &[u8]) -> Vec<i32> {
    b.chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
fn to_i64s(b: &[u8]) -> Vec<i64> {
    b.chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Deterministic pseudo-random bytes (a 64-bit LCG).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

/// Deterministic f32 values in [-8, 8).
fn floats(n: usize, seed: u64) -> Vec<f32> {
    noise(2 * n, seed)
        .chunks(2)
        .map(|c| (u16::from_le_bytes([c[0], c[1]]) as f32 / 4096.0) - 8.0)
        .collect()
}

/// Interesting values of each dtype, padded with noise to `n` elements.
fn edge_values(d: DType, n: usize, seed: u64) -> Vec<u8> {
    let size = (d.bits() / 8) as usize;
    let mut out: Vec<u8> = match d {
        DType::F32 => f32s(&[
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            1.5,
            2.5,
            -2.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3e9,
            -3e9,
            1e-40,
            f32::MAX,
            f32::MIN_POSITIVE,
            255.5,
            256.0,
            -129.0,
            65535.9,
            4.2e19,
            -1e20,
        ]),
        DType::F64 => f64s(&[
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            1.5,
            2.5,
            -2.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            3e9,
            -3e9,
            1e-310,
            f64::MAX,
            1e300,
            2.0f64.powi(63),
            -(2.0f64.powi(63)),
            1.8e19,
        ]),
        DType::I64 | DType::U64 => i64s(&[0, 1, -1, i64::MIN, i64::MAX, 7, -7, 3, 64, 65]),
        DType::I32 | DType::U32 => i32s(&[0, 1, -1, i32::MIN, i32::MAX, 7, -7, 3, 32, 33]),
        DType::I16 | DType::U16 => [0i16, 1, -1, i16::MIN, i16::MAX, 7, -7, 3, 16, 17]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I8 | DType::U8 => vec![0, 1, 0xff, 0x80, 0x7f, 7, 0xf9, 3, 8, 9],
        DType::Bool => vec![0, 1, 1, 0, 2, 0, 1, 1],
        _ => Vec::new(),
    };
    out.truncate(n * size);
    let mut extra = noise(n * size - out.len(), seed);
    if d == DType::Bool {
        extra.iter_mut().for_each(|b| *b &= 1);
    }
    out.extend(extra);
    out
}

/// `z = op(x, y)` elementwise over `n` elements of `d` in vectors of `lanes`, one vector per
/// grid point.
fn elementwise(
    name: &str,
    d: DType,
    lanes: u16,
    n: u64,
    f: impl Fn(&mut KernelBuilder, Val, Val) -> Val,
) -> Kernel {
    let mut b = KernelBuilder::new(name);
    let x = b.param("x", d, n, Access::Read);
    let y = b.param("y", d, n, Access::Read);
    let probe = {
        // The result dtype is whatever `f` produces; build once to learn it.
        let mut t = KernelBuilder::new("probe");
        let px = t.param("x", d, n, Access::Read);
        let i = t.index(0);
        let a = t.load(px, i, lanes);
        let r = f(&mut t, a, a);
        t.ty(r).elem
    };
    let z = b.param("z", probe, n, Access::Write);
    b.set_grid(&[n / lanes as u64]);
    let pid = b.program_id(0);
    let l = b.index(lanes as i64);
    let i = b.mul(pid, l);
    let a = b.load(x, i, lanes);
    let c = b.load(y, i, lanes);
    let r = f(&mut b, a, c);
    b.store(z, i, r);
    b.finish()
}

fn run_elementwise(
    d: DType,
    lanes: u16,
    n: u64,
    f: impl Fn(&mut KernelBuilder, Val, Val) -> Val + Copy,
) {
    let k = elementwise("ew", d, lanes, n, f);
    let size = (d.bits() / 8) as usize;
    let out = k.params()[2].dtype.storage_bytes(n) as usize;
    let x = edge_values(d, n as usize, 1);
    // y: the same edge values rotated, so that every pair of edge values meets somewhere.
    let mut y = edge_values(d, n as usize, 2);
    y.rotate_left(3 * size);
    check(&k, &[x, y, vec![0u8; out]]);
}

const ALL_OPS: [BinOp; 12] = [
    BinOp::Add,
    BinOp::Sub,
    BinOp::Mul,
    BinOp::Div,
    BinOp::Rem,
    BinOp::Min,
    BinOp::Max,
    BinOp::And,
    BinOp::Or,
    BinOp::Xor,
    BinOp::Shl,
    BinOp::Shr,
];

fn ops_for(d: DType) -> Vec<BinOp> {
    match d {
        DType::Bool => vec![BinOp::And, BinOp::Or, BinOp::Xor, BinOp::Min, BinOp::Max],
        d if d.is_float() => ALL_OPS[..7].to_vec(),
        _ => ALL_OPS.to_vec(),
    }
}

// ---- elementwise arithmetic ----

#[test]
fn elementwise_add_and_mul_f32_scalar_and_vector() {
    for lanes in [1, 4, 8, 3] {
        let k = elementwise("axpy", DType::F32, lanes, 48, |b, x, y| {
            let p = b.mul(x, y);
            b.add(p, x)
        });
        let (x, y) = (floats(48, 1), floats(48, 2));
        let out = check(&k, &[f32s(&x), f32s(&y), vec![0; 192]]);
        let z = to_f32s(&out[2]);
        for i in 0..48 {
            assert_eq!(z[i], x[i] * y[i] + x[i], "lanes {lanes}, element {i}");
        }
    }
}

#[test]
fn elementwise_add_and_mul_i32_vectors() {
    let k = elementwise("iaxpy", DType::I32, 4, 16, |b, x, y| {
        let p = b.mul(x, y);
        b.add(p, x)
    });
    let x: Vec<i32> = (0..16).map(|i| i * 3 - 20).collect();
    let y: Vec<i32> = (0..16).map(|i| 7 - i).collect();
    let out = check(&k, &[i32s(&x), i32s(&y), vec![0; 64]]);
    let want: Vec<i32> = (0..16).map(|i| x[i] * y[i] + x[i]).collect();
    assert_eq!(to_i32s(&out[2]), want);
}

#[test]
fn every_binary_op_on_every_dtype_and_shape_matches_the_interpreter() {
    let dtypes = [
        DType::F32,
        DType::F64,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::Bool,
    ];
    for d in dtypes {
        for lanes in [1u16, 2, 3, 4, 8, 16] {
            for op in ops_for(d) {
                run_elementwise(d, lanes, 48, move |b, x, y| b.binary(op, x, y));
            }
        }
    }
}

#[test]
fn every_comparison_on_every_dtype_and_shape_matches_the_interpreter() {
    let ops = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ];
    for d in [
        DType::F32,
        DType::F64,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::Bool,
    ] {
        for lanes in [1u16, 2, 4, 16] {
            for op in ops {
                run_elementwise(d, lanes, 32, move |b, x, y| b.cmp(op, x, y));
                // The same comparison consumed by a select (the mask path) and by a cast.
                run_elementwise(d, lanes, 32, move |b, x, y| {
                    let c = b.cmp(op, x, y);
                    b.select(c, x, y)
                });
                run_elementwise(d, lanes, 32, move |b, x, y| {
                    let c = b.cmp(op, x, y);
                    b.cast(c, DType::I32, CastMode { saturate: false })
                });
            }
        }
    }
}

#[test]
fn int_division_by_zero_and_min_by_minus_one() {
    let x = [7, -7, i32::MIN, i32::MIN, 5, 0, i32::MAX, -1];
    let y = [0, 0, -1, 0, -1, 0, 2, -1];
    for op in [BinOp::Div, BinOp::Rem] {
        for lanes in [1, 4] {
            let k = elementwise("divrem", DType::I32, lanes, 8, move |b, x, y| {
                b.binary(op, x, y)
            });
            let out = check(&k, &[i32s(&x), i32s(&y), vec![0; 32]]);
            let want: Vec<i32> = match op {
                BinOp::Div => vec![0, 0, i32::MIN, 0, -5, 0, i32::MAX / 2, 1],
                _ => vec![0, 0, 0, 0, 0, 0, 1, 0],
            };
            assert_eq!(to_i32s(&out[2]), want, "{op:?} lanes {lanes}");
        }
    }
    let k = elementwise("div64", DType::I64, 2, 4, |b, x, y| b.div(x, y));
    let out = check(
        &k,
        &[
            i64s(&[i64::MIN, 9, 1, 2]),
            i64s(&[-1, 0, 0, 2]),
            vec![0; 32],
        ],
    );
    assert_eq!(to_i64s(&out[2]), [i64::MIN, 0, 0, 1]);
}

#[test]
fn float_min_max_propagate_nan() {
    for lanes in [1, 4] {
        for op in [BinOp::Min, BinOp::Max] {
            let k = elementwise("minmax", DType::F32, lanes, 8, move |b, x, y| {
                b.binary(op, x, y)
            });
            let x = [f32::NAN, 1.0, 2.0, f32::NAN, -0.0, 0.0, 3.0, -5.0];
            let y = [1.0, f32::NAN, 3.0, f32::NAN, 0.0, -0.0, f32::INFINITY, -5.0];
            let out = to_f32s(&check(&k, &[f32s(&x), f32s(&y), vec![0; 32]])[2]);
            assert!(
                out[0].is_nan() && out[1].is_nan() && out[3].is_nan(),
                "{op:?} {out:?}"
            );
            let (lo, hi) = (op == BinOp::Min, op == BinOp::Max);
            assert_eq!(out[2], if lo { 2.0 } else { 3.0 });
            // -0 < +0, as IEEE 754-2019 minimum/maximum say.
            assert_eq!(
                out[4].to_bits(),
                if lo {
                    (-0.0f32).to_bits()
                } else {
                    0.0f32.to_bits()
                }
            );
            assert_eq!(
                out[5].to_bits(),
                if hi {
                    0.0f32.to_bits()
                } else {
                    (-0.0f32).to_bits()
                }
            );
        }
    }
}

#[test]
fn float_rem_is_exact_fmod() {
    let x = [
        5.5f32,
        -5.5,
        1e30,
        7.0,
        1e-40,
        3.0,
        f32::INFINITY,
        2.0,
        -0.0,
        1.0,
        16777217.0,
        0.1,
    ];
    let y = [
        2.0f32,
        2.0,
        3.0,
        -7.0,
        3e-41,
        f32::NAN,
        2.0,
        0.0,
        1.0,
        f32::INFINITY,
        3.0,
        0.03,
    ];
    for lanes in [1, 4] {
        let k = elementwise("fmod", DType::F32, lanes, 12, |b, x, y| {
            b.binary(BinOp::Rem, x, y)
        });
        let out = to_f32s(&check(&k, &[f32s(&x), f32s(&y), vec![0; 48]])[2]);
        for i in 0..12 {
            let want = x[i] % y[i];
            assert!(
                out[i].to_bits() == want.to_bits() || (out[i].is_nan() && want.is_nan()),
                "{i}: {} vs {want}",
                out[i]
            );
        }
    }
    let x = [5.5f64, -1e300, 1e-310, 123456789.123, -0.0, 7.0];
    let y = [2.0f64, 3.3, 7e-311, 0.001, 2.0, 7.0];
    let k = elementwise("fmod64", DType::F64, 2, 6, |b, x, y| {
        b.binary(BinOp::Rem, x, y)
    });
    let out = check(&k, &[f64s(&x), f64s(&y), vec![0; 48]]);
    let got: Vec<f64> = out[2]
        .chunks(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for i in 0..6 {
        assert_eq!(got[i].to_bits(), (x[i] % y[i]).to_bits(), "{i}");
    }
}

#[test]
fn every_unary_op_matches_the_interpreter() {
    let ops = [
        UnOp::Neg,
        UnOp::Abs,
        UnOp::Not,
        UnOp::Sqrt,
        UnOp::Floor,
        UnOp::Ceil,
        UnOp::Round,
        UnOp::Trunc,
    ];
    for d in [
        DType::F32,
        DType::F64,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::Bool,
    ] {
        for lanes in [1u16, 2, 4, 16] {
            for op in ops {
                let ok = match op {
                    UnOp::Neg
                    | UnOp::Abs
                    | UnOp::Floor
                    | UnOp::Ceil
                    | UnOp::Round
                    | UnOp::Trunc => d != DType::Bool,
                    UnOp::Not => !d.is_float(),
                    UnOp::Sqrt => d.is_float(),
                };
                if ok {
                    run_elementwise(d, lanes, 32, move |b, x, _| b.unary(op, x));
                }
            }
        }
    }
}

#[test]
fn round_is_half_to_even() {
    let k = elementwise("round", DType::F32, 4, 8, |b, x, _| b.unary(UnOp::Round, x));
    let x = [0.5f32, 1.5, 2.5, -0.5, -1.5, 2.4999998, 3.5, -2.5];
    let out = to_f32s(&check(&k, &[f32s(&x), f32s(&x), vec![0; 32]])[2]);
    assert_eq!(out, [0.0, 2.0, 2.0, -0.0, -2.0, 2.0, 4.0, -2.0]);
}

// ---- casts and bitcasts ----

#[test]
fn every_cast_matches_the_interpreter() {
    let dtypes = [
        DType::F32,
        DType::F64,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::Bool,
    ];
    for from in dtypes {
        for to in dtypes {
            // 8 and 16 lanes fill whole registers of 16- and 8-bit ints, which widen and
            // narrow in registers (`int_vector_resize`); 4 lanes of them go lane by lane.
            for lanes in [1u16, 4, 8, 16] {
                run_elementwise(from, lanes, 32, move |b, x, _| {
                    b.cast(x, to, CastMode { saturate: false })
                });
            }
        }
    }
}

#[test]
fn float_to_int_casts_saturate_and_send_nan_to_zero() {
    let k = elementwise("f2i", DType::F32, 4, 8, |b, x, _| {
        b.cast(x, DType::I8, CastMode { saturate: false })
    });
    let x = [
        f32::NAN,
        1e10,
        -1e10,
        127.9,
        -128.9,
        -0.9,
        f32::INFINITY,
        3.7,
    ];
    let out = check(&k, &[f32s(&x), f32s(&x), vec![0; 8]]);
    assert_eq!(
        out[2].iter().map(|&b| b as i8).collect::<Vec<_>>(),
        [0, 127, -128, 127, -128, 0, 127, 3]
    );
    let k = elementwise("f2u", DType::F32, 1, 4, |b, x, _| {
        b.cast(x, DType::U32, CastMode { saturate: false })
    });
    let x = [f32::NAN, -5.0, 5e9, 4e9];
    let out = check(&k, &[f32s(&x), f32s(&x), vec![0; 16]]);
    assert_eq!(
        to_i32s(&out[2])
            .iter()
            .map(|&v| v as u32)
            .collect::<Vec<_>>(),
        [0, 0, u32::MAX, 4_000_000_000]
    );
}

#[test]
fn bitcasts_between_shapes_match_the_interpreter() {
    let cases: [(Ty, Ty); 7] = [
        (Ty::scalar(DType::F32), Ty::scalar(DType::I32)),
        (Ty::scalar(DType::I64), Ty::scalar(DType::F64)),
        (Ty::vector(DType::F32, 4), Ty::vector(DType::I32, 4)),
        (Ty::vector(DType::F32, 4), Ty::vector(DType::F64, 2)),
        (Ty::vector(DType::U8, 16), Ty::vector(DType::I32, 4)),
        (Ty::vector(DType::I16, 4), Ty::vector(DType::I32, 2)),
        (Ty::vector(DType::U8, 8), Ty::scalar(DType::F64)),
    ];
    for (from, to) in cases {
        let n = 64 / (from.elem.bits() as u64 / 8);
        let mut b = KernelBuilder::new("bitcast");
        let x = b.param("x", from.elem, n, Access::Read);
        let on = 64 / (to.elem.bits() as u64 / 8);
        let z = b.param("z", to.elem, on, Access::Write);
        let per = (from.elem.bits() as u64 * from.lanes as u64) / 8;
        b.set_grid(&[64 / per]);
        let p = b.program_id(0);
        let fl = b.index(from.lanes as i64);
        let tl = b.index(to.lanes as i64);
        let i = b.mul(p, fl);
        let o = b.mul(p, tl);
        let v = b.load(x, i, from.lanes);
        let c = b.bitcast(v, to);
        b.store(z, o, c);
        let k = b.finish();
        check(&k, &[noise(64, 9), vec![0; 64]]);
    }
}

// ---- vectors: splat, extract, reduce, bools ----

#[test]
fn splat_extract_and_reduce_lanes() {
    for (d, lanes) in [
        (DType::F32, 4u16),
        (DType::F32, 8),
        (DType::F32, 3),
        (DType::I32, 4),
        (DType::U8, 16),
        (DType::F64, 2),
        (DType::Bool, 16),
    ] {
        for op in [ReduceOp::Add, ReduceOp::Mul, ReduceOp::Min, ReduceOp::Max] {
            if d == DType::Bool && matches!(op, ReduceOp::Add | ReduceOp::Mul) {
                continue;
            }
            let n = lanes as u64 * 4;
            let mut b = KernelBuilder::new("reduce");
            let x = b.param("x", d, n, Access::Read);
            let z = b.param("z", d, 4, Access::Write);
            let w = b.param("w", d, n, Access::Write);
            b.set_grid(&[4]);
            let p = b.program_id(0);
            let l = b.index(lanes as i64);
            let i = b.mul(p, l);
            let v = b.load(x, i, lanes);
            let r = b.reduce_lanes(op, v);
            b.store(z, p, r);
            // w = splat(lane (lanes-1)) + v, or lane-wise max for bools.
            let e = b.extract(v, lanes - 1);
            let s = b.splat(e, lanes);
            let sum = if d == DType::Bool {
                b.max(s, v)
            } else {
                b.add(s, v)
            };
            b.store(w, i, sum);
            let k = b.finish();
            let sz = (d.bits() / 8) as u64;
            check(
                &k,
                &[
                    edge_values(d, n as usize, 4),
                    vec![0; (4 * sz) as usize],
                    vec![0; (n * sz) as usize],
                ],
            );
        }
    }
}

#[test]
fn bool_vectors_load_combine_and_store() {
    for lanes in [4u16, 16] {
        let k = elementwise("bools", DType::Bool, lanes, 64, |b, x, y| {
            let a = b.binary(BinOp::And, x, y);
            let n = b.unary(UnOp::Not, a);
            let o = b.binary(BinOp::Or, n, x);
            b.binary(BinOp::Xor, o, y)
        });
        check(
            &k,
            &[
                edge_values(DType::Bool, 64, 5),
                edge_values(DType::Bool, 64, 6),
                vec![0; 64],
            ],
        );
    }
    // A bool vector from a comparison, combined with one loaded from memory, selects floats.
    let mut b = KernelBuilder::new("mask_mix");
    let x = b.param("x", DType::F32, 16, Access::Read);
    let m = b.param("m", DType::Bool, 16, Access::Read);
    let z = b.param("z", DType::F32, 16, Access::Write);
    b.set_grid(&[4]);
    let p = b.program_id(0);
    let four = b.index(4);
    let i = b.mul(p, four);
    let v = b.load(x, i, 4);
    let mv = b.load(m, i, 4);
    let zero = b.const_float(Ty::vector(DType::F32, 4), 0.0);
    let pos = b.cmp(CmpOp::Gt, v, zero);
    let both = b.binary(BinOp::And, pos, mv);
    let neg = b.unary(UnOp::Neg, v);
    let r = b.select(both, v, neg);
    b.store(z, i, r);
    let k = b.finish();
    check(
        &k,
        &[
            f32s(&floats(16, 3)),
            edge_values(DType::Bool, 16, 7),
            vec![0; 64],
        ],
    );
}

// ---- control flow ----

#[test]
fn loop_with_carried_sum() {
    let mut b = KernelBuilder::new("sum");
    let x = b.param("x", DType::F32, 100, Access::Read);
    let y = b.param("y", DType::F32, 2, Access::Write);
    let zero = b.const_float(Ty::F32, 0.0);
    let one = b.const_float(Ty::F32, 1.0);
    // Two carried values: the running sum and a product that stays 1.
    let r = b.range_fold(0, 100, &[zero, one], |b, i, acc| {
        let v = b.load(x, i, 1);
        let s = b.add(acc[0], v);
        let p = b.mul(acc[1], one);
        vec![s, p]
    });
    let at0 = b.index(0);
    let at1 = b.index(1);
    b.store(y, at0, r[0]);
    b.store(y, at1, r[1]);
    let k = b.finish();
    let xs = floats(100, 11);
    let out = to_f32s(&check(&k, &[f32s(&xs), vec![0; 8]])[1]);
    assert_eq!(out[0], xs.iter().fold(0.0f32, |a, &v| a + v));
    assert_eq!(out[1], 1.0);
}

#[test]
fn loops_with_steps_empty_ranges_and_vector_carries() {
    let mut b = KernelBuilder::new("steps");
    let x = b.param("x", DType::F32, 64, Access::Read);
    let y = b.param("y", DType::F32, 12, Access::Write);
    let c = b.param("c", DType::I64, 3, Access::Write);
    let zero4 = b.const_float(Ty::vector(DType::F32, 4), 0.0);
    let count0 = b.index(0);
    // Step 4 over 0..61 carrying a vector: trips at 0, 4, …, 56 (57..61 would overrun).
    let (lo, hi, step) = (b.index(0), b.index(57), b.index(4));
    let r = b.for_loop(lo, hi, step, &[zero4, count0], |b, i, acc| {
        let v = b.load(x, i, 4);
        let one = b.index(1);
        vec![b.add(acc[0], v), b.add(acc[1], one)]
    });
    let at = b.index(0);
    b.store(y, at, r[0]);
    b.store(c, at, r[1]);
    // An empty range keeps the initial values.
    let (lo, hi, step) = (b.index(5), b.index(5), b.index(1));
    let seven = b.const_float(Ty::vector(DType::F32, 4), 7.0);
    let e = b.for_loop(lo, hi, step, &[seven], |b, i, acc| {
        let v = b.load(x, i, 4);
        vec![b.add(acc[0], v)]
    });
    let at4 = b.index(4);
    b.store(y, at4, e[0]);
    // A step that does not divide the range, counting trips: 3, 6, 9 → 3 trips.
    let (lo, hi, step) = (b.index(3), b.index(11), b.index(3));
    let z = b.index(0);
    let t = b.for_loop(lo, hi, step, &[z], |b, _, acc| {
        let one = b.index(1);
        vec![b.add(acc[0], one)]
    });
    let at1 = b.index(1);
    b.store(c, at1, t[0]);
    let k = b.finish();
    let out = check(&k, &[f32s(&floats(64, 12)), vec![0; 48], vec![0; 24]]);
    assert_eq!(to_i64s(&out[2])[..2], [15, 3]);
    assert_eq!(to_f32s(&out[1])[4..8], [7.0; 4]);
}

/// Counts the trips of `for iv = lo; iv < hi; iv += step` with bounds read from memory, and
/// sums the induction variable (wrapping).
fn dynamic_loop() -> Kernel {
    let mut b = KernelBuilder::new("dynloop");
    let bounds = b.param("bounds", DType::I64, 3, Access::Read);
    let out = b.param("out", DType::I64, 2, Access::Write);
    let (i0, i1, i2) = (b.index(0), b.index(1), b.index(2));
    let lo = b.load(bounds, i0, 1);
    let hi = b.load(bounds, i1, 1);
    let step = b.load(bounds, i2, 1);
    let zero = b.index(0);
    let r = b.for_loop(lo, hi, step, &[zero, zero], |b, iv, acc| {
        let one = b.index(1);
        vec![b.add(acc[0], one), b.add(acc[1], iv)]
    });
    b.store(out, i0, r[0]);
    b.store(out, i1, r[1]);
    b.finish()
}

#[test]
fn loops_with_bounds_known_only_at_run_time() {
    let k = dynamic_loop();
    let cases: [([i64; 3], i64); 7] = [
        ([0, 10, 1], 10),
        ([-10, -3, 3], 3),
        ([5, 4, 1], 0),
        ([0, 10, 20], 1),
        ([i64::MIN, i64::MIN + 6, 2], 3),
        // The interpreter stops where the next step would pass i64::MAX.
        ([i64::MAX - 5, i64::MAX, 4], 2),
        ([i64::MIN, i64::MAX, i64::MAX], 3),
    ];
    for (bounds, trips) in cases {
        let out = check(&k, &[i64s(&bounds), vec![0; 16]]);
        assert_eq!(to_i64s(&out[1])[0], trips, "{bounds:?}");
    }
    // A step that is not positive: the interpreter traps; compiled code runs no trip
    // rather than looping forever.
    for step in [0, -1] {
        let out = run_host_with(&HostDevice::new(), &k, &[i64s(&[0, 10, step]), vec![0; 16]]);
        assert_eq!(to_i64s(&out[1]), [0, 0]);
    }
}

#[test]
fn if_yielding_vectors_and_comparison_masks() {
    let mut b = KernelBuilder::new("ifvec");
    let x = b.param("x", DType::F32, 16, Access::Read);
    let y = b.param("y", DType::F32, 16, Access::Write);
    let m = b.param("m", DType::Bool, 16, Access::Write);
    b.set_grid(&[2, 2, 1]);
    let p0 = b.program_id(0);
    let p1 = b.program_id(1);
    let two = b.index(2);
    let four = b.index(4);
    let lin = b.mul(p0, two);
    let lin = b.add(lin, p1);
    let i = b.mul(lin, four);
    let v = b.load(x, i, 4);
    let zero = b.index(0);
    let odd = b.cmp(CmpOp::Ne, p1, zero);
    let t4 = Ty::vector(DType::F32, 4);
    let r = b.if_else(
        odd,
        &[t4, Ty::vector(DType::Bool, 4)],
        |b| {
            let z = b.const_float(t4, 0.0);
            let c = b.cmp(CmpOp::Lt, v, z);
            vec![b.unary(UnOp::Abs, v), c]
        },
        |b| {
            let one = b.const_float(t4, 1.0);
            let c = b.cmp(CmpOp::Ge, v, one);
            vec![b.add(v, one), c]
        },
    );
    b.store(y, i, r[0]);
    b.store(m, i, r[1]);
    let k = b.finish();
    check(&k, &[f32s(&floats(16, 51)), vec![0; 64], vec![0; 16]]);
}

#[test]
fn small_matmul_with_nested_loops() {
    let (m, n, kk) = (8u64, 12u64, 16u64);
    let mut b = KernelBuilder::new("matmul");
    let a = b.param("a", DType::F32, m * kk, Access::Read);
    let bb = b.param("b", DType::F32, kk * n, Access::Read);
    let c = b.param("c", DType::F32, m * n, Access::Write);
    b.set_grid(&[m]);
    let i = b.program_id(0);
    b.range(0, n as i64, |b, j| {
        let zero = b.const_float(Ty::F32, 0.0);
        let acc = b.range_fold(0, kk as i64, &[zero], |b, k, acc| {
            let kdim = b.index(kk as i64);
            let ndim = b.index(n as i64);
            let ai = b.mul(i, kdim);
            let ai = b.add(ai, k);
            let bi = b.mul(k, ndim);
            let bi = b.add(bi, j);
            let x = b.load(a, ai, 1);
            let y = b.load(bb, bi, 1);
            let p = b.mul(x, y);
            vec![b.add(acc[0], p)]
        });
        let ndim = b.index(n as i64);
        let ci = b.mul(i, ndim);
        let ci = b.add(ci, j);
        b.store(c, ci, acc[0]);
    });
    let k = b.finish();
    let (av, bv) = (floats((m * kk) as usize, 21), floats((kk * n) as usize, 22));
    let out = to_f32s(&check(&k, &[f32s(&av), f32s(&bv), vec![0; (m * n * 4) as usize]])[2]);
    for r in 0..m as usize {
        for col in 0..n as usize {
            let mut s = 0.0f32;
            for x in 0..kk as usize {
                s += av[r * kk as usize + x] * bv[x * n as usize + col];
            }
            assert_eq!(out[r * n as usize + col], s);
        }
    }
}

#[test]
fn if_else_with_results_and_if_without() {
    let mut b = KernelBuilder::new("branches");
    let x = b.param("x", DType::I32, 16, Access::Read);
    let y = b.param("y", DType::I32, 16, Access::Write);
    let f = b.param("f", DType::F32, 16, Access::Write);
    b.set_grid(&[16]);
    let i = b.program_id(0);
    let v = b.load(x, i, 1);
    let zero = b.const_int(Ty::scalar(DType::I32), 0);
    let neg = b.cmp(CmpOp::Lt, v, zero);
    let r = b.if_else(
        neg,
        &[Ty::scalar(DType::I32), Ty::F32],
        |b| {
            let n = b.unary(UnOp::Neg, v);
            let h = b.const_float(Ty::F32, -0.5);
            vec![n, h]
        },
        |b| {
            let two = b.const_int(Ty::scalar(DType::I32), 2);
            let d = b.mul(v, two);
            let h = b.const_float(Ty::F32, 0.5);
            vec![d, h]
        },
    );
    b.store(y, i, r[0]);
    b.store(f, i, r[1]);
    let big = b.const_int(Ty::scalar(DType::I32), 5);
    let gt = b.cmp(CmpOp::Gt, v, big);
    b.if_then(gt, |b| {
        let t = b.const_float(Ty::F32, 9.0);
        b.store(f, i, t);
    });
    let k = b.finish();
    let xs: Vec<i32> = (0..16).map(|i| i - 8).collect();
    let out = check(&k, &[i32s(&xs), vec![0; 64], vec![0; 64]]);
    assert_eq!(to_i32s(&out[1])[..3], [8, 7, 6]);
    assert_eq!(to_f32s(&out[2])[15], 9.0);
}

#[test]
fn select_with_scalar_and_vector_conditions() {
    for lanes in [1u16, 4, 2, 16] {
        for d in [DType::F32, DType::F64, DType::I32, DType::U8, DType::I64] {
            run_elementwise(d, lanes, 32, |b, x, y| {
                let c = b.cmp(CmpOp::Le, x, y);
                b.select(c, y, x)
            });
            // A scalar condition choosing between whole vectors.
            run_elementwise(d, lanes, 32, move |b, x, y| {
                let e0 = if lanes > 1 { b.extract(x, 0) } else { x };
                let e1 = if lanes > 1 { b.extract(y, 0) } else { y };
                let c = b.cmp(CmpOp::Lt, e0, e1);
                b.select(c, x, y)
            });
        }
    }
}

#[test]
fn program_ids_over_a_2d_grid() {
    let (g0, g1) = (5u64, 7u64);
    let mut b = KernelBuilder::new("grid2d");
    let y = b.param("y", DType::I64, g0 * g1, Access::Write);
    b.set_grid(&[g0, g1]);
    let p0 = b.program_id(0);
    let p1 = b.program_id(1);
    let p2 = b.program_id(2);
    let w = b.index(g1 as i64);
    let row = b.mul(p0, w);
    let at = b.add(row, p1);
    let hundred = b.index(100);
    let v = b.mul(p0, hundred);
    let v = b.add(v, p1);
    let v = b.add(v, p2);
    b.store(y, at, v);
    let k = b.finish();
    let out = to_i64s(&check(&k, &[vec![0; (g0 * g1 * 8) as usize]])[0]);
    for a in 0..g0 as i64 {
        for c in 0..g1 as i64 {
            assert_eq!(out[(a * g1 as i64 + c) as usize], a * 100 + c);
        }
    }
}

#[test]
fn local_buffers_start_zeroed_in_every_instance() {
    for len in [8u64, 200] {
        let mut b = KernelBuilder::new("locals");
        let y = b.param("y", DType::I32, 6, Access::Write);
        let t = b.local("t", Space::Local, DType::I32, len);
        b.set_grid(&[6]);
        let p = b.program_id(0);
        // Read what is there, then scribble on it: the next instance must see zeros again.
        let at = b.index(len as i64 - 1);
        let old = b.load(t, at, 1);
        let pi = b.cast(p, DType::I32, CastMode { saturate: false });
        let v = b.add(old, pi);
        b.store(y, p, v);
        let junk = b.const_int(Ty::scalar(DType::I32), 1000);
        b.store(t, at, junk);
        let k = b.finish();
        let out = to_i32s(&check(&k, &[vec![0; 24]])[0]);
        assert_eq!(out, [0, 1, 2, 3, 4, 5]);
    }
}

#[test]
fn a_large_grid_runs_on_several_threads_like_the_interpreter() {
    let n = 1u64 << 16;
    let k = elementwise("wide", DType::F32, 4, n, |b, x, y| {
        // Enough work per instance that the launch goes parallel.
        let mut acc = x;
        for _ in 0..16 {
            let p = b.mul(acc, y);
            acc = b.add(p, x);
        }
        acc
    });
    let inputs = [
        f32s(&floats(n as usize, 31)),
        f32s(&floats(n as usize, 32)),
        vec![0; (n * 4) as usize],
    ];
    check_on(&HostDevice::with_threads(4), &k, &inputs);
    check_on(&HostDevice::with_threads(1), &k, &inputs);
}

#[test]
fn many_concurrent_launches_from_several_threads_match_the_interpreter() {
    // Launches big enough to use the device's worker pool, from several threads at once on
    // one device and one loaded kernel: each must still get the interpreter's result, whether
    // it gets the pool or runs on its own thread while another launch has it.
    let n = 1u64 << 14;
    let k = elementwise("pooled", DType::F32, 4, n, |b, x, y| {
        let mut acc = x;
        for _ in 0..16 {
            let p = b.mul(acc, y);
            acc = b.add(p, x);
        }
        acc
    });
    let device = HostDevice::with_threads(4);
    let blob = host().compile(&k).unwrap();
    let loaded = device.load(&blob.name, &blob.code).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (k, loaded) = (&k, &loaded);
            s.spawn(move || {
                for i in 0..25u64 {
                    let seed = 100 + t * 1000 + i;
                    let inputs = [
                        f32s(&floats(n as usize, seed)),
                        f32s(&floats(n as usize, seed + 500)),
                        vec![0; (n * 4) as usize],
                    ];
                    let want = run_interp(k, &inputs);
                    let mut bufs: Vec<Aligned> = inputs.iter().map(|b| Aligned::from(b)).collect();
                    let args: Vec<KernelArg> = bufs.iter_mut().map(|b| b.arg()).collect();
                    loaded.launch(&args).unwrap_or_else(|e| panic!("{e}"));
                    let got: Vec<Vec<u8>> = bufs.iter().map(|b| b.bytes()).collect();
                    assert!(
                        got == want,
                        "thread {t}, launch {i}: host and interpreter differ"
                    );
                }
            });
        }
    });
    // The pool outlives the device while a kernel holds it, and stops with the last of them.
    drop(device);
    check_on(
        &HostDevice::with_threads(3),
        &k,
        &[
            f32s(&floats(n as usize, 7)),
            f32s(&floats(n as usize, 8)),
            vec![0; (n * 4) as usize],
        ],
    );
    drop(loaded);
}

// ---- refusals ----

fn tiny_kernel() -> Kernel {
    elementwise("tiny", DType::F32, 1, 4, |b, x, y| b.add(x, y))
}

#[test]
fn corrupt_and_truncated_blobs_are_refused() {
    let blob = host().compile(&tiny_kernel()).unwrap();
    let device = HostDevice::new();
    let err = |bytes: &[u8]| match device.load("tiny", bytes) {
        Ok(_) => panic!("a bad blob was accepted"),
        Err(e) => e,
    };
    for len in [0, 10, 63, blob.code.len() - 1] {
        let e = err(&blob.code[..len]);
        assert_eq!(e.kernel, "tiny");
        assert!(e.message.contains("truncated"), "{}", e.message);
    }
    let mut bad = blob.code.clone();
    bad[1] ^= 0xff;
    assert_eq!(
        err(&bad).to_string(),
        "kernel `tiny`: not a host code blob (bad magic)"
    );
    let mut bad = blob.code.clone();
    // Version 1 blobs had no trap slot in their entry point: running one would be unsound.
    bad[4] = 1;
    assert_eq!(
        err(&bad).to_string(),
        "kernel `tiny`: host code blob has format version 1, this runtime reads version 2"
    );
    let mut long = blob.code.clone();
    long.push(0);
    assert!(err(&long).message.contains("truncated or padded"));
}

#[test]
fn launches_with_wrong_arguments_are_refused() {
    let blob = host().compile(&tiny_kernel()).unwrap();
    let loaded = HostDevice::new().load("tiny", &blob.code).unwrap();
    let mut a = Aligned::from(&[0u8; 16]);
    let mut short = Aligned::from(&[0u8; 12]);
    let e = loaded.launch(&[a.arg()]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel `tiny`: takes 3 buffers, but 1 were passed"
    );
    let (mut b, mut c) = (Aligned::from(&[0u8; 16]), Aligned::from(&[0u8; 16]));
    let e = loaded.launch(&[b.arg(), short.arg(), c.arg()]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel `tiny`: buffer 1 has 12 bytes, but the kernel uses 16"
    );
}

/// Like [`check`], but the interpreter runs the kernel after `to_backend_subset`: for math
/// routines, whose expansion is not bit-identical to the interpreter's libm.
fn check_expanded(k: &Kernel, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut e = k.clone();
    tessera_kir::passes::to_backend_subset(&mut e).unwrap_or_else(|err| panic!("{err}"));
    let got = run_host_with(&HostDevice::new(), k, inputs);
    let want = run_interp(&e, inputs);
    for (p, (g, w)) in k.params().iter().zip(got.iter().zip(&want)) {
        let nan =
            |b: &[u8]| p.dtype == DType::F32 && f32::from_le_bytes(b.try_into().unwrap()).is_nan();
        for (i, (ge, we)) in g.chunks(4).zip(w.chunks(4)).enumerate() {
            assert!(
                ge == we || (nan(ge) && nan(we)),
                "`{}` {}[{i}]: {ge:?} vs {we:?}",
                k.name,
                p.name
            );
        }
    }
    got
}

#[test]
fn math_routines_run_as_the_shared_expansion_says() {
    for f in MathFn::ALL {
        for lanes in [1u16, 4] {
            let k = elementwise("math", DType::F32, lanes, 16, move |b, x, y| {
                let args: Vec<Val> = if f.arity() == 2 { vec![x, y] } else { vec![x] };
                b.math(f, &args)
            });
            // Small positive and negative arguments, so every routine has a finite answer.
            let x: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 9.0).collect();
            let y: Vec<f32> = (0..16).map(|i| 0.25 + i as f32 / 8.0).collect();
            let out = to_f32s(&check_expanded(&k, &[f32s(&x), f32s(&y), vec![0; 64]])[2]);
            // And close to the true function, which the interpreter evaluates with libm.
            let exact = to_f32s(&run_interp(&k, &[f32s(&x), f32s(&y), vec![0; 64]])[2]);
            for i in 0..16 {
                let (g, w) = (out[i], exact[i]);
                assert!(
                    (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-5 + 1e-5 * w.abs(),
                    "{f:?}({}, {}): {g} vs {w}",
                    x[i],
                    y[i]
                );
            }
        }
    }
}

#[test]
fn low_precision_and_sub_byte_dtypes_match_the_interpreter() {
    let narrow = [
        DType::F16,
        DType::BF16,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::F4E2M1,
        DType::I4,
        DType::U4,
        DType::I2,
        DType::U2,
    ];
    for d in narrow {
        // Sub-byte buffers are accessed a byte at a time, so instances own whole bytes:
        // one instance per element would race on shared bytes, hence a single instance.
        let mut b = KernelBuilder::new("narrow");
        let n = 64u64;
        let x = b.param("x", d, n, Access::Read);
        let y = b.param("y", d, n, Access::Read);
        let z = b.param("z", d, n, Access::Write);
        let w = b.param("w", DType::F32, n, Access::Write);
        let lanes = if d.is_sub_byte() { 1 } else { 4 };
        let (lo, hi, step) = (b.index(0), b.index(n as i64), b.index(lanes as i64));
        b.for_loop(lo, hi, step, &[], |b, i, _| {
            let a = b.load(x, i, lanes);
            let c = b.load(y, i, lanes);
            let s = b.mul(a, c);
            let s = b.add(s, a);
            b.store(z, i, s);
            let f = b.cast(s, DType::F32, CastMode { saturate: false });
            b.store(w, i, f);
            Vec::new()
        });
        let k = b.finish();
        let bytes = d.storage_bytes(n) as usize;
        check(
            &k,
            &[
                noise(bytes, 61),
                noise(bytes, 62),
                vec![0; bytes],
                vec![0; 256],
            ],
        );
    }
}

#[test]
fn mma_runs_through_its_expansion() {
    for (a_ty, acc) in [
        (DType::F32, DType::F32),
        (DType::F16, DType::F32),
        (DType::I8, DType::I32),
    ] {
        let (m, n, kk) = (4u32, 8u32, 16u32);
        let mut b = KernelBuilder::new("mma");
        let a = b.param("a", a_ty, (2 * m * kk) as u64, Access::Read);
        let bm = b.param("b", a_ty, (kk * n) as u64, Access::Read);
        let c = b.param("c", acc, (2 * m * n) as u64, Access::ReadWrite);
        b.set_grid(&[2]);
        let p = b.program_id(0);
        let (am, cm) = (b.index((m * kk) as i64), b.index((m * n) as i64));
        let ao = b.mul(p, am);
        let co = b.mul(p, cm);
        let zero = b.index(0);
        let tile = |buf, offset, cols: u32| TileRef {
            buf,
            offset,
            row_stride: cols as i64,
            col_stride: 1,
        };
        b.mma(tile(a, ao, kk), tile(bm, zero, n), tile(c, co, n), m, n, kk);
        let k = b.finish();
        let bytes = |d: DType, len: u32| d.storage_bytes(len as u64) as usize;
        // Small integers in every format, so that products and sums are exact.
        let small = |d: DType, len: u32, seed: u64| -> Vec<u8> {
            let v: Vec<f32> = noise(len as usize, seed)
                .iter()
                .map(|&x| (x % 7) as f32 - 3.0)
                .collect();
            match d {
                DType::F32 => f32s(&v),
                DType::F16 => v
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
                _ => v.iter().map(|&x| x as i8 as u8).collect(),
            }
        };
        let inputs = [
            small(a_ty, 2 * m * kk, 71),
            small(a_ty, kk * n, 72),
            vec![0; bytes(acc, 2 * m * n)],
        ];
        check(&k, &inputs);
    }
}

#[test]
fn what_the_shared_passes_refuse_is_unsupported() {
    // Vector access to a sub-byte buffer: the passes want it scalarised first.
    let k = elementwise("nibbles", DType::I4, 2, 8, |b, x, y| b.add(x, y));
    match host().compile(&k) {
        Err(TargetError::Unsupported {
            target,
            kernel,
            message,
        }) => {
            assert_eq!((target.as_str(), kernel.as_str()), ("host", "nibbles"));
            assert!(
                message.contains("a vector load of a sub-byte dtype"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn four_lane_f32_code_is_sse_vector_code() {
    let k = elementwise("vec4", DType::F32, 4, 16, |b, x, y| {
        let p = b.mul(x, y);
        let c = b.cmp(CmpOp::Gt, p, x);
        b.select(c, p, y)
    });
    let clif = host().clif(&k).unwrap();
    // One 128-bit load per operand, vector arithmetic, a lane-mask blend and one store.
    for want in ["load.f32x4", "fmul", "fcmp gt", "bitselect", "store"] {
        assert!(clif.contains(want), "no `{want}` in\n{clif}");
    }
    assert!(
        !clif.contains("extractlane"),
        "the vector was split into lanes:\n{clif}"
    );
}

#[test]
fn invalid_kernels_are_errors_not_panics() {
    let mut k = tiny_kernel();
    // Use a value that nothing defines.
    k.body
        .insts
        .retain(|i| !matches!(i.kind, tessera_kir::InstKind::ProgramId(_)));
    match host().compile(&k) {
        Err(TargetError::Codegen { message, .. }) => {
            assert!(message.contains("verifier"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fingerprint_names_the_features_and_this_cpu_passes_it() {
    let fp = host().fingerprint();
    assert!(fp.starts_with("x86_64:") && fp.contains("sse4.1"), "{fp}");
    HostDevice::new().check_fingerprint(&fp).unwrap();
    let portable = Host::portable().unwrap().fingerprint();
    assert_eq!(
        portable,
        "x86_64:sse3,ssse3,sse4.1,sse4.2,popcnt,cmpxchg16b"
    );
    assert_eq!(
        HostDevice::new()
            .check_fingerprint("riscv64:v")
            .unwrap_err(),
        "code was compiled for `riscv64:v`, not for x86_64"
    );
}

#[test]
fn portable_code_runs_the_same() {
    let k = elementwise("portable", DType::F32, 4, 32, |b, x, y| {
        let f = b.unary(UnOp::Floor, x);
        b.binary(BinOp::Max, f, y)
    });
    let blob = Host::portable().unwrap().compile(&k).unwrap();
    let loaded = HostDevice::new().load("portable", &blob.code).unwrap();
    let inputs = [f32s(&floats(32, 41)), f32s(&floats(32, 42)), vec![0; 128]];
    let mut bufs: Vec<Aligned> = inputs.iter().map(|b| Aligned::from(b)).collect();
    let args: Vec<KernelArg> = bufs.iter_mut().map(|b| b.arg()).collect();
    loaded.launch(&args).unwrap();
    assert_eq!(bufs[2].bytes(), run_interp(&k, &inputs)[2]);
}

#[test]
fn desc_parses_and_names_the_target() {
    let d = tessera_host::desc().unwrap();
    assert_eq!(
        (d.name.as_str(), d.isa.as_str(), d.launch, d.vector_bytes),
        ("host", "x86_64", tessera_target::Launch::Threads, 16)
    );
    assert!(!d.dtypes.contains(&DType::String));
    assert_eq!(d.dtypes.len(), DType::ALL.len() - 1);
    assert_eq!(d.tolerance["f32"], [1e-3, 1e-5]);
}

// ==== `trap` ====

/// A grid of `n` instances, each checking `idx[p]` against an axis of 4 (code 9) and copying
/// `data[idx[p]]`; enough work per instance that big grids spread over threads.
fn checked_gather(n: u64) -> Kernel {
    let mut b = KernelBuilder::new("checked_gather");
    let data = b.param("data", DType::F32, 4, Access::Read);
    let idx = b.param("idx", DType::I64, n, Access::Read);
    let out = b.param("out", DType::F32, n, Access::Write);
    b.set_grid(&[n]);
    let p = b.program_id(0);
    let raw = b.load(idx, p, 1);
    let at = b.checked_index(raw, 4, 9);
    let v0 = b.load(data, at, 1);
    let acc = b.range_fold(0, 64, &[v0], |b, _, a| vec![b.add(a[0], v0)]);
    b.store(out, p, acc[0]);
    b.finish()
}

fn i64_bytes(xs: &[i64]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn trap_reports_the_first_instance_in_grid_order_like_the_interpreter() {
    let n = 4096u64;
    let k = checked_gather(n);
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    // In range (negative indices wrap): host and interpreter agree.
    let ok: Vec<i64> = (0..n as i64).map(|i| (i % 8) - 4).collect();
    check(
        &k,
        &[data.clone(), i64_bytes(&ok), vec![0u8; 4 * n as usize]],
    );

    // Several bad values: both report the first in grid order, on 1 thread and on many.
    let mut bad = ok.clone();
    for (at, v) in [(3000usize, 77i64), (1234, -5), (4000, 4)] {
        bad[at] = v;
    }
    let blob = host().compile(&k).unwrap();
    for device in [HostDevice::with_threads(1), HostDevice::with_threads(4)] {
        let loaded = device.load(&blob.name, &blob.code).unwrap();
        for _ in 0..20 {
            let mut bufs: Vec<Aligned> = [data.clone(), i64_bytes(&bad), vec![0u8; 4 * n as usize]]
                .iter()
                .map(|b| Aligned::from(b))
                .collect();
            let args: Vec<KernelArg> = bufs.iter_mut().map(|b| b.arg()).collect();
            let e = loaded.launch(&args).unwrap_err();
            assert_eq!(
                e.trapped,
                Some(tessera_runtime::Trapped { code: 9, value: -5 }),
                "{e}"
            );
            assert!(
                e.to_string().contains("data check 9 failed on value -5"),
                "{e}"
            );
        }
    }
    let mut bufs = vec![data, i64_bytes(&bad), vec![0u8; 4 * n as usize]];
    let mut slices: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    let e = tessera_kir::run_kernel(&k, &mut slices).unwrap_err();
    assert!(
        matches!(
            e,
            tessera_kir::InterpError::Data {
                code: 9,
                value: -5,
                ..
            }
        ),
        "{e}"
    );
}

/// `Y = A · unpack(Bp)` through `tile.dot` (u8 A `m × k`, i16 B packed in pairs of k), one
/// program instance, shapes off the vector and block multiples.
fn tile_dot_kernel(m: u64, n: u64, k: u64) -> Kernel {
    let mut b = KernelBuilder::new("tile_dot");
    let a = b.param("a", DType::U8, m * k, Access::Read);
    let bp = b.param("bp", DType::I16, k * n, Access::Read);
    let y = b.param("y", DType::I32, m * n, Access::Write);
    let zero = b.index(0);
    let acc = b.acc_tile(DType::I32, m as u16, n as u16, 0.0);
    let ta = b.tile_load(
        TileAt::row_major(a, zero, &[m, k], &[zero, zero]),
        m as u16,
        k as u16,
        Scalar::Int(0),
    );
    let tb = b.tile_load(
        TileAt::row_major(bp, zero, &[k / 2, n * 2], &[zero, zero]),
        (k / 2) as u16,
        (n * 2) as u16,
        Scalar::Int(0),
    );
    let r = b.tile_dot(ta, tb, acc);
    b.tile_store(TileAt::row_major(y, zero, &[m, n], &[zero, zero]), r);
    b.finish()
}

#[test]
fn tile_dot_runs_on_pmaddwd_and_matches_the_interpreter() {
    let (m, n, k) = (7u64, 21u64, 30u64);
    let kern = tile_dot_kernel(m, n, k);
    let asm = host().assembly(&kern).unwrap();
    assert!(asm.contains("pmaddwd"), "{asm}");
    // u8 extremes against i16 weights of 8-bit values minus a zero point (|b| <= 255).
    let a: Vec<u8> = (0..m * k)
        .map(|i| [0u8, 255, 7, 128][(i % 4) as usize] ^ (i as u8))
        .collect();
    let bv: Vec<u8> = (0..k * n)
        .flat_map(|i| (((i * 37) % 511) as i16 - 255).to_le_bytes())
        .collect();
    let out = check(&kern, &[a, bv, vec![0u8; (m * n * 4) as usize]]);
    assert!(to_i32s(&out[2]).iter().any(|&v| v != 0));
}
