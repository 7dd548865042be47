//! Tests of the shared passes: each pass's output verifies, and interpreting it gives what
//! interpreting the original gives (bit for bit, or within the stated ulp bounds for math).

use super::*;
use crate::builder::KernelBuilder;
use crate::interp::{read_elem, run_kernel, to_f64};
use crate::testutil::kitchen_sink;
use tessera_ir::DType;

/// A small deterministic generator (no dependency needed).
pub(crate) struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let x = self.0;
        (x ^ (x >> 29)).wrapping_mul(0xbf58476d1ce4e5b9) ^ (x >> 32)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Runs `k` on copies of `inputs` (one per parameter) and returns the buffers afterwards.
fn run(k: &Kernel, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut bufs: Vec<Vec<u8>> = inputs.to_vec();
    let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    if let Err(e) = run_kernel(k, &mut refs) {
        panic!("{e}\n{}", crate::text::print_kernel(k));
    }
    bufs
}

/// Applies `pass`, checks the result verifies, and returns it.
fn passed(k: &Kernel, pass: fn(&mut Kernel) -> Result<(), KirError>) -> Kernel {
    let mut k2 = k.clone();
    pass(&mut k2).unwrap();
    if let Err(e) = verify(&k2) {
        panic!("{e}\n{}", crate::text::print_kernel(&k2));
    }
    k2
}

/// Element-wise equality of two buffers of `d`, treating any two NaNs as equal.
fn same_elems(d: DType, a: &[u8], b: &[u8], n: usize) -> Result<(), String> {
    for i in 0..n {
        let (x, y) = (read_elem(d, a, i), read_elem(d, b, i));
        if x != y {
            if d.is_float() && to_f64(d, x).is_nan() && to_f64(d, y).is_nan() {
                continue;
            }
            return Err(format!(
                "element {i}: {x:#x} vs {y:#x} ({} vs {})",
                fmt_lane(d, x),
                fmt_lane(d, y)
            ));
        }
    }
    Ok(())
}

fn fmt_lane(d: DType, x: u64) -> String {
    if d.is_float() {
        format!("{:e}", to_f64(d, x))
    } else {
        format!("{}", x as i64)
    }
}

// ================================================================================================
// expand-math
// ================================================================================================

/// `y[i] = f(x[i] (, z[i]))` over `n` elements of type `ty` (lanes per access).
fn math_kernel(f: MathFn, d: DType, lanes: u16, n: u64) -> Kernel {
    let mut b = KernelBuilder::new("math");
    let x = b.param("x", d, n, Access::Read);
    let z = b.param("z", d, n, Access::Read);
    let y = b.param("y", d, n, Access::Write);
    let (lo, hi, st) = (b.index(0), b.index(n as i64), b.index(lanes as i64));
    b.for_loop(lo, hi, st, &[], |b, i, _| {
        let xv = b.load(x, i, lanes);
        let zv = b.load(z, i, lanes);
        let args = if f.arity() == 2 {
            vec![xv, zv]
        } else {
            vec![xv]
        };
        let r = b.math(f, &args);
        b.store(y, i, r);
        Vec::new()
    });
    b.finish()
}

fn ord32(x: f32) -> i64 {
    let b = x.to_bits() as i32;
    if b < 0 {
        i32::MIN as i64 - b as i64
    } else {
        b as i64
    }
}

fn ord64(x: f64) -> i128 {
    let b = x.to_bits() as i64;
    if b < 0 {
        i64::MIN as i128 - b as i128
    } else {
        b as i128
    }
}

/// Sample points for `f`: specials, then random points over the function's interesting range.
fn points(f: MathFn, rng: &mut Lcg, n: usize) -> Vec<f64> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        2.0,
        -2.0,
        1e-30,
        -1e-30,
        1e-40,
        -1e-40,
        1e-310,
        3.0,
        10.0,
        -10.0,
        20.0,
        -20.0,
        88.7,
        -88.7,
        89.5,
        -103.5,
        -104.5,
        700.0,
        -700.0,
        709.7,
        710.0,
        -745.0,
        -746.0,
        1e5,
        -1e5,
        1e30,
        -1e30,
        1e300,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        0.84375,
        1.25,
        2.857,
        6.0,
        22.0,
        0.99999,
        -0.99999,
        1.00001,
        0.4375,
        0.6875,
        1.1875,
        2.4375,
        std::f64::consts::PI,
        std::f64::consts::FRAC_PI_2,
        1e-8,
        3e8,
        268435457.0,
    ];
    while v.len() < n {
        let u = rng.unit();
        let s = if rng.next() & 1 == 0 { 1.0 } else { -1.0 };
        let x = match f {
            MathFn::Asin | MathFn::Acos | MathFn::Atanh => s * u,
            MathFn::Acosh => 1.0 + 10f64.powf(6.0 * u - 5.0),
            MathFn::Sin | MathFn::Cos | MathFn::Tan => s * 10f64.powf(8.0 * u - 4.0),
            MathFn::Exp | MathFn::Sinh | MathFn::Cosh => s * 90.0 * u,
            MathFn::Log => 10f64.powf(60.0 * u - 30.0),
            MathFn::Pow => 10f64.powf(4.0 * u - 2.0),
            _ => s * 10f64.powf(6.0 * u - 3.0),
        };
        v.push(x);
    }
    v
}

/// Runs `f` on the points before and after `expand-math`; returns the max ulp error (over
/// finite references) and where.
fn math_error(f: MathFn, d: DType, lanes: u16) -> (f64, f64, f64) {
    let mut rng = Lcg(f as u64 * 77 + d as u64);
    let n = 2048usize;
    let xs = points(f, &mut rng, n);
    let zs: Vec<f64> = (0..n)
        .map(|i| match i % 4 {
            0 => (rng.unit() * 8.0 - 4.0).round(),
            1 => rng.unit() * 6.0 - 3.0,
            2 => [
                0.0,
                -0.0,
                0.5,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
                1.0,
                -1.0,
                3.0,
                -3.0,
            ][i % 10],
            _ => rng.unit() * 40.0 - 20.0,
        })
        .collect();
    let enc = |v: &[f64]| -> Vec<u8> {
        if d == DType::F32 {
            v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()
        } else {
            v.iter().flat_map(|&x| x.to_le_bytes()).collect()
        }
    };
    // Pow: mix negative bases in.
    let xs: Vec<f64> = if f == MathFn::Pow {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| if i % 3 == 0 { -x } else { x })
            .collect()
    } else {
        xs
    };
    let k = math_kernel(f, d, lanes, n as u64);
    let e = passed(&k, expand_math);
    assert!(check_no_math(&e), "math left after expand-math");
    let out_bytes = d.storage_bytes(n as u64) as usize;
    let inputs = vec![enc(&xs), enc(&zs), vec![0u8; out_bytes]];
    let r0 = run(&k, &inputs);
    let r1 = run(&e, &inputs);
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        // The documented limit of the trig reduction: beyond 2^20·π/2 only range is promised.
        if matches!(f, MathFn::Sin | MathFn::Cos | MathFn::Tan) && xs[i].abs() > 1.6e6 {
            let b = to_f64(d, read_elem(d, &r1[2], i));
            assert!(
                b.is_nan() || f == MathFn::Tan || b.abs() <= 1.0,
                "{f:?}({}) = {b}",
                xs[i]
            );
            continue;
        }
        let (a, b) = (read_elem(d, &r0[2], i), read_elem(d, &r1[2], i));
        let (fa, fb) = (to_f64(d, a), to_f64(d, b));
        let err = if fa.is_nan() || fb.is_nan() {
            if fa.is_nan() && fb.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else if d == DType::F32 {
            (ord32(fa as f32) - ord32(fb as f32)).abs() as f64
        } else {
            (ord64(fa) - ord64(fb)).abs() as f64
        };
        if err > worst.0 {
            worst = (err, xs[i], zs[i]);
        }
    }
    worst
}

fn check_no_math(k: &Kernel) -> bool {
    fn walk(b: &Block) -> bool {
        b.insts.iter().all(|i| match &i.kind {
            InstKind::Math(..) => false,
            InstKind::For { body, .. } => walk(body),
            InstKind::If {
                then_blk, else_blk, ..
            } => walk(then_blk) && walk(else_blk),
            _ => true,
        })
    }
    walk(&k.body)
}

/// The bound each routine meets, in ulp of its type (checked, and reported by the test).
fn ulp_bound(f: MathFn, d: DType) -> f64 {
    match (f, d) {
        (MathFn::Pow, DType::F64) => 256.0,
        (MathFn::Sin | MathFn::Cos | MathFn::Tan, DType::F64) => 8.0,
        (_, DType::F64) => 4.0,
        (MathFn::Tanh | MathFn::Sigmoid | MathFn::Exp | MathFn::Log, _) => 4.0,
        (MathFn::Erf, _) => 2.0,
        _ => 1.0,
    }
}

#[test]
fn math_routines_match_libm() {
    let mut report = String::new();
    let mut failures = Vec::new();
    for d in [DType::F32, DType::F64] {
        for f in MathFn::ALL {
            let (err, x, z) = math_error(f, d, 1);
            report.push_str(&format!(
                "{d} {:>8}: max {err} ulp (at x={x:e}, y={z:e})\n",
                crate::text::math_name(f)
            ));
            if err > ulp_bound(f, d) {
                failures.push(format!("{d} {f:?}: {err} ulp at x={x:e} y={z:e}"));
            }
        }
    }
    eprintln!("{report}");
    assert!(failures.is_empty(), "{failures:#?}\n{report}");
}

#[test]
fn f32_erf_is_within_two_ulp_on_a_dense_sweep() {
    // The fitted pieces meet at |x| = 1 and the tail is clamped at 4: sweep [-5, 5] densely
    // (65,536 points, both pieces and both seams) plus tiny and subnormal inputs.
    let n = 65_536usize;
    let mut xs: Vec<f32> = (0..n - 64)
        .map(|i| -5.0 + 10.0 * i as f32 / (n - 65) as f32)
        .collect();
    xs.extend((0..64).map(|i| 10f32.powi(-(i as i32) * 45 / 64)));
    let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
    let k = math_kernel(MathFn::Erf, DType::F32, 4, n as u64);
    let e = passed(&k, expand_math);
    let out = run(&e, &[bytes.clone(), bytes, vec![0u8; 4 * n]]);
    let mut worst = (0i64, 0f32);
    for (i, &x) in xs.iter().enumerate() {
        let got = f32::from_le_bytes(out[2][4 * i..4 * i + 4].try_into().unwrap());
        let want = libm::erf(x as f64) as f32;
        let err = (ord32(got) - ord32(want)).abs();
        if err > worst.0 {
            worst = (err, x);
        }
    }
    assert!(worst.0 <= 2, "erf: {} ulp at x = {:e}", worst.0, worst.1);
}

#[test]
fn math_routines_work_on_vectors_and_narrow_types() {
    for f in [MathFn::Exp, MathFn::Erf, MathFn::Pow, MathFn::Sin] {
        let (err, x, _) = math_error(f, DType::F32, 4);
        assert!(
            err <= ulp_bound(f, DType::F32),
            "{f:?} on vec<4xf32>: {err} ulp at {x}"
        );
    }
    // f16: the routine runs in f64 and rounds once, like the interpreter.
    let n = 512u64;
    for f in MathFn::ALL {
        let k = math_kernel(f, DType::F16, 1, n);
        let e = passed(&k, expand_math);
        let mut rng = Lcg(f as u64);
        let inputs = vec![
            rng.bytes(2 * n as usize),
            rng.bytes(2 * n as usize),
            vec![0; 2 * n as usize],
        ];
        let (r0, r1) = (run(&k, &inputs), run(&e, &inputs));
        let mut bad = 0;
        for i in 0..n as usize {
            let (a, b) = (
                to_f64(DType::F16, read_elem(DType::F16, &r0[2], i)),
                to_f64(DType::F16, read_elem(DType::F16, &r1[2], i)),
            );
            if !(a == b || (a.is_nan() && b.is_nan())) {
                bad += 1;
            }
        }
        // Double rounding can differ only in rare ties.
        assert!(bad <= 2, "{f:?} on f16: {bad} of {n} differ");
    }
}

// ================================================================================================
// expand-mma
// ================================================================================================

fn mma_kernel(a_ty: DType, b_ty: DType, acc: DType, m: u32, n: u32, k: u32) -> Kernel {
    let mut b = KernelBuilder::new("mma");
    let a = b.param("a", a_ty, (m * k) as u64 + 3, Access::Read);
    let bb = b.param("b", b_ty, (k * n) as u64, Access::Read);
    let c = b.param("c", acc, (m * n) as u64, Access::ReadWrite);
    let off = b.index(3);
    let z = b.index(0);
    b.mma(
        TileRef {
            buf: a,
            offset: off,
            row_stride: k as i64,
            col_stride: 1,
        },
        TileRef {
            buf: bb,
            offset: z,
            row_stride: 1,
            col_stride: k as i64,
        },
        TileRef {
            buf: c,
            offset: z,
            row_stride: n as i64,
            col_stride: 1,
        },
        m,
        n,
        k,
    );
    b.finish()
}

/// Random finite values of `d` as bytes (floats drawn as values, not bit patterns).
fn random_values(d: DType, n: usize, rng: &mut Lcg) -> Vec<u8> {
    let mut out = vec![0u8; d.storage_bytes(n as u64) as usize];
    for i in 0..n {
        let v = rng.unit() * 8.0 - 4.0;
        let bits = if d.is_float() {
            crate::interp::from_f64(d, v * 10f64.powi((rng.next() % 5) as i32 - 2))
        } else {
            crate::interp::norm_int(d, rng.next())
        };
        crate::interp::write_elem(d, &mut out, i, bits);
    }
    out
}

#[test]
fn expand_mma_matches_the_interpreter_bit_for_bit() {
    let cases = [
        (DType::F16, DType::F16, DType::F32),
        (DType::F32, DType::F32, DType::F32),
        (DType::BF16, DType::BF16, DType::F32),
        (DType::F16, DType::F16, DType::F16),
        (DType::F8E4M3FN, DType::F8E5M2, DType::F32),
        (DType::I8, DType::I8, DType::I32),
        (DType::U8, DType::I8, DType::I32),
        (DType::I32, DType::I32, DType::I32),
        (DType::F32, DType::F32, DType::F64),
        (DType::I8, DType::I8, DType::F32),
    ];
    let mut rng = Lcg(5);
    for (a, b, acc) in cases {
        let k = mma_kernel(a, b, acc, 3, 5, 7);
        let e = passed(&k, expand_mma);
        for _ in 0..4 {
            let inputs = vec![
                random_values(a, 24, &mut rng),
                random_values(b, 35, &mut rng),
                random_values(acc, 15, &mut rng),
            ];
            let (r0, r1) = (run(&k, &inputs), run(&e, &inputs));
            same_elems(acc, &r0[2], &r1[2], 15)
                .unwrap_or_else(|m| panic!("{a} x {b} -> {acc}: {m}"));
        }
    }
}

// ================================================================================================
// legalize-low-precision
// ================================================================================================

/// `y[i] = cast(x[i])` from `f` to `t`.
fn cast_kernel(f: DType, t: DType, sat: bool, n: u64) -> Kernel {
    let mut b = KernelBuilder::new("cast");
    let x = b.param("x", f, n, Access::Read);
    let y = b.param("y", t, n, Access::Write);
    b.range(0, n as i64, |b, i| {
        let v = b.load(x, i, 1);
        let c = b.cast(v, t, CastMode { saturate: sat });
        b.store(y, i, c);
    });
    b.finish()
}

fn check_legalized_cast(f: DType, t: DType, sat: bool, input: Vec<u8>, n: usize) {
    let k = cast_kernel(f, t, sat, n as u64);
    let l = passed(&k, legalize_low_precision);
    check_backend_subset(&l).unwrap();
    let inputs = vec![input, vec![0u8; t.storage_bytes(n as u64) as usize]];
    let (r0, r1) = (run(&k, &inputs), run(&l, &inputs));
    same_elems(t, &r0[1], &r1[1], n).unwrap_or_else(|m| panic!("cast {f} -> {t} (sat {sat}): {m}"));
}

const NARROW: [DType; 7] = [
    DType::F16,
    DType::BF16,
    DType::F8E4M3FN,
    DType::F8E4M3FNUZ,
    DType::F8E5M2,
    DType::F8E5M2FNUZ,
    DType::F4E2M1,
];

#[test]
fn decoding_every_bit_pattern_matches() {
    for d in NARROW {
        let n = 1usize << d.bits();
        let mut bytes = vec![0u8; d.storage_bytes(n as u64) as usize];
        for i in 0..n {
            crate::interp::write_elem(d, &mut bytes, i, i as u64);
        }
        check_legalized_cast(d, DType::F32, false, bytes.clone(), n);
        check_legalized_cast(d, DType::F64, false, bytes, n);
    }
}

/// f32 inputs that probe rounding: every value of the format, the midpoints between neighbours
/// and one f32 ulp either side, specials, and a stride over all f32 bit patterns.
fn rounding_probes(d: DType) -> Vec<f32> {
    let mut v = Vec::new();
    let n = 1u32 << d.bits();
    let vals: Vec<f32> = (0..n)
        .map(|b| crate::interp::to_f32(d, b as u64))
        .filter(|x| x.is_finite())
        .collect();
    let mut sorted = vals.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for w in sorted.windows(2) {
        let mid = ((w[0] as f64 + w[1] as f64) / 2.0) as f32;
        for x in [
            w[0],
            mid,
            f32::from_bits(mid.to_bits().wrapping_add(1)),
            f32::from_bits(mid.to_bits().wrapping_sub(1)),
        ] {
            v.push(x);
        }
    }
    let max = sorted.last().copied().unwrap_or(0.0);
    for x in [
        max,
        max * 1.0625,
        max * 1.03,
        max * 2.0,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        0.0,
        -0.0,
        1e-45,
        -1e-45,
    ] {
        v.push(x);
        v.push(-x);
    }
    let stride = if d.bits() >= 16 { 4099 } else { 65537 };
    let mut b = 0u64;
    while b < 1 << 32 {
        v.push(f32::from_bits(b as u32));
        b += stride;
    }
    v
}

#[test]
fn rounding_f32_to_narrow_matches_numeric_and_half() {
    for d in NARROW {
        let xs = rounding_probes(d);
        let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        for sat in [false, true] {
            check_legalized_cast(DType::F32, d, sat, bytes.clone(), xs.len());
        }
    }
}

#[test]
fn casts_between_narrow_wide_and_int_types() {
    let mut rng = Lcg(11);
    let srcs = [
        DType::F64,
        DType::I64,
        DType::U64,
        DType::I32,
        DType::U32,
        DType::I16,
        DType::U8,
        DType::Bool,
        DType::I4,
        DType::U2,
    ];
    for f in srcs {
        for t in NARROW
            .iter()
            .copied()
            .chain([DType::I4, DType::U4, DType::I2, DType::U2])
        {
            let n = 600usize;
            let mut input = rng.bytes(f.storage_bytes(n as u64) as usize);
            if f == DType::Bool {
                input.iter_mut().for_each(|b| *b &= 1);
            }
            if f == DType::F64 {
                // Mix in values near the narrow ranges, not only random bit patterns.
                for i in 0..n / 2 {
                    let x = (rng.unit() * 2.0 - 1.0) * 10f64.powi((rng.next() % 12) as i32 - 6);
                    input[8 * i..8 * i + 8].copy_from_slice(&x.to_le_bytes());
                }
            }
            for sat in [false, true] {
                check_legalized_cast(f, t, sat, input.clone(), n);
            }
        }
    }
    // From narrow and sub-byte types to everything.
    for f in NARROW
        .iter()
        .copied()
        .chain([DType::I4, DType::U4, DType::I2, DType::U2])
    {
        for t in [
            DType::F32,
            DType::F64,
            DType::I64,
            DType::I8,
            DType::U16,
            DType::Bool,
            DType::I4,
            DType::U2,
            DType::F16,
            DType::F8E4M3FN,
        ] {
            let n = 300usize;
            let input = rng.bytes(f.storage_bytes(n as u64) as usize);
            check_legalized_cast(f, t, true, input.clone(), n);
            check_legalized_cast(f, t, false, input, n);
        }
    }
}

/// `c[i] = a[i] op b[i]` in dtype `d`, then its negation and a comparison, then a reduction.
fn arith_kernel(d: DType, op: BinOp, n: u64) -> Kernel {
    let mut b = KernelBuilder::new("arith");
    let x = b.param("a", d, n, Access::Read);
    let y = b.param("b", d, n, Access::Read);
    let o = b.param("c", d, n, Access::Write);
    let flags = b.param("lt", DType::Bool, n, Access::Write);
    b.range(0, n as i64, |b, i| {
        let u = b.load(x, i, 1);
        let v = b.load(y, i, 1);
        let r = b.binary(op, u, v);
        let lt = b.cmp(CmpOp::Lt, r, u);
        b.store(flags, i, lt);
        let r = if d.is_float() || d.is_signed_int() {
            b.unary(UnOp::Neg, r)
        } else {
            b.unary(UnOp::Not, r)
        };
        b.store(o, i, r);
    });
    b.finish()
}

#[test]
fn narrow_arithmetic_rounds_after_every_op() {
    let mut rng = Lcg(3);
    let n = 700u64;
    for d in NARROW {
        for op in [
            BinOp::Add,
            BinOp::Sub,
            BinOp::Mul,
            BinOp::Div,
            BinOp::Rem,
            BinOp::Min,
            BinOp::Max,
        ] {
            let k = arith_kernel(d, op, n);
            let l = passed(&k, legalize_low_precision);
            check_backend_subset(&l).unwrap();
            let sz = d.storage_bytes(n) as usize;
            let inputs = vec![
                rng.bytes(sz),
                rng.bytes(sz),
                vec![0; sz],
                vec![0; n as usize],
            ];
            let (r0, r1) = (run(&k, &inputs), run(&l, &inputs));
            same_elems(d, &r0[2], &r1[2], n as usize).unwrap_or_else(|m| panic!("{d} {op:?}: {m}"));
            assert_eq!(r0[3], r1[3], "{d} {op:?} comparisons");
        }
    }
}

#[test]
fn sub_byte_int_arithmetic_wraps() {
    let mut rng = Lcg(4);
    let n = 301u64;
    for d in [DType::I4, DType::U4, DType::I2, DType::U2] {
        for op in [
            BinOp::Add,
            BinOp::Sub,
            BinOp::Mul,
            BinOp::Div,
            BinOp::Rem,
            BinOp::Min,
            BinOp::Max,
            BinOp::And,
            BinOp::Xor,
            BinOp::Shl,
            BinOp::Shr,
        ] {
            let k = arith_kernel(d, op, n);
            let l = passed(&k, legalize_low_precision);
            check_backend_subset(&l).unwrap();
            let sz = d.storage_bytes(n) as usize;
            let inputs = vec![
                rng.bytes(sz),
                rng.bytes(sz),
                rng.bytes(sz),
                vec![0; n as usize],
            ];
            let (r0, r1) = (run(&k, &inputs), run(&l, &inputs));
            assert_eq!(r0[2], r1[2], "{d} {op:?}");
            assert_eq!(r0[3], r1[3], "{d} {op:?} comparisons");
        }
    }
}

#[test]
fn narrow_loops_ifs_vectors_reductions_and_bitcasts() {
    // sum_i x[i] in f16 with a carried f16 accumulator, clamped by an if; plus vector work.
    for d in [DType::F16, DType::BF16, DType::F8E5M2] {
        let mut b = KernelBuilder::new("loop");
        let x = b.param("x", d, 64, Access::Read);
        let y = b.param("y", d, 4, Access::Write);
        let u = b.param("u", DType::U16, 16, Access::Write);
        let z = b.const_float(Ty::scalar(d), 0.0);
        let s = b.range_fold(0, 64, &[z], |b, i, acc| {
            let v = b.load(x, i, 1);
            let s = b.add(acc[0], v);
            let big = b.const_float(Ty::scalar(d), 100.0);
            let over = b.cmp(CmpOp::Gt, s, big);
            let r = b.if_else(over, &[Ty::scalar(d)], |_| vec![big], |_| vec![s]);
            vec![r[0]]
        })[0];
        let i0 = b.index(0);
        b.store(y, i0, s);
        let v = b.load(x, i0, 8);
        let two = b.const_float(Ty::vector(d, 8), 1.5);
        let p = b.mul(v, two);
        let r = b.reduce_lanes(ReduceOp::Add, p);
        let i1 = b.index(1);
        b.store(y, i1, r);
        let mx = b.reduce_lanes(ReduceOp::Max, p);
        let i2 = b.index(2);
        b.store(y, i2, mx);
        let four = b.index(4);
        let w = b.load(y, i0, 4);
        let _ = four;
        if d.bits() == 16 {
            let bits = b.bitcast(w, Ty::vector(DType::U16, 4));
            b.store(u, i0, bits);
            let back = b.bitcast(bits, Ty::vector(d, 4));
            let e = b.extract(back, 1);
            let i3 = b.index(3);
            b.store(y, i3, e);
        }
        let k = b.finish();
        let l = passed(&k, legalize_low_precision);
        check_backend_subset(&l).unwrap();
        let mut rng = Lcg(d as u64);
        for _ in 0..8 {
            let inputs = vec![
                random_values(d, 64, &mut rng),
                vec![0; d.storage_bytes(4) as usize],
                vec![0; 32],
            ];
            let (r0, r1) = (run(&k, &inputs), run(&l, &inputs));
            same_elems(d, &r0[1], &r1[1], 4).unwrap_or_else(|m| panic!("{d}: {m}"));
            assert_eq!(r0[2], r1[2]);
        }
    }
}

#[test]
fn sub_byte_stores_read_modify_write_their_byte() {
    let mut b = KernelBuilder::new("nib");
    let x = b.param("x", DType::I4, 9, Access::Read);
    let y = b.param("y", DType::I4, 9, Access::ReadWrite);
    b.range(0, 9, |b, i| {
        let two = b.index(2);
        let r = b.binary(BinOp::Rem, i, two);
        let one = b.index(1);
        let odd = b.cmp(CmpOp::Eq, r, one);
        b.if_then(odd, |b| {
            let v = b.load(x, i, 1);
            let w = b.add(v, v);
            b.store(y, i, w);
        });
    });
    let k = b.finish();
    let l = passed(&k, legalize_low_precision);
    let inputs = vec![
        vec![0x9f, 0x73, 0x1c, 0xe8, 0x05],
        vec![0xab, 0xcd, 0xef, 0x12, 0x34],
    ];
    let (r0, r1) = (run(&k, &inputs), run(&l, &inputs));
    assert_eq!(r0[1], r1[1]);
    // Even elements kept their old nibbles.
    assert_eq!(r0[1][0] & 0x0f, 0x0b);
}

#[test]
fn legalize_refuses_what_it_cannot_do() {
    let mut b = KernelBuilder::new("vec_nibbles");
    let x = b.param("x", DType::U4, 8, Access::Read);
    let i = b.index(0);
    b.load(x, i, 4);
    let mut k = b.finish();
    let e = legalize_low_precision(&mut k).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel `vec_nibbles`: pass `legalize-low-precision` does not support a vector load of a sub-byte dtype (`%1 = load %x[%0] : vec<4xu32>`)"
    );
}

// ================================================================================================
// The whole pipeline.
// ================================================================================================

#[test]
fn to_backend_subset_preserves_meaning() {
    let k = kitchen_sink();
    let mut s = k.clone();
    to_backend_subset(&mut s).unwrap();
    check_backend_subset(&s).unwrap();
    // The text of the result round-trips too.
    let t = crate::text::print_kernel(&s);
    assert_eq!(
        crate::text::print_kernel(&crate::text::parse_kernel(&t).unwrap()),
        t
    );
    let mut rng = Lcg(9);
    for _ in 0..6 {
        let inputs: Vec<Vec<u8>> = k
            .params()
            .iter()
            .map(|p| random_values(p.dtype, p.len as usize, &mut rng))
            .collect();
        let (r0, r1) = (run(&k, &inputs), run(&s, &inputs));
        for (j, p) in k.params().iter().enumerate() {
            for i in 0..p.len as usize {
                let (a, b) = (
                    to_f64(p.dtype, read_elem(p.dtype, &r0[j], i)),
                    to_f64(p.dtype, read_elem(p.dtype, &r1[j], i)),
                );
                let ok = a == b
                    || (a.is_nan() && b.is_nan())
                    || (a - b).abs() <= 1e-5 * a.abs().max(b.abs());
                assert!(ok, "param {} [{i}]: {a} vs {b}", p.name);
            }
        }
    }
    assert!(check_backend_subset(&k).is_err());
}
