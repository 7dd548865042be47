//! Unit tests of the interpreter: arithmetic edge cases per dtype, casts, loops, vectors,
//! `mma` and run-time errors.

use super::*;
use crate::builder::KernelBuilder;
use tessera_ir::numeric::load_as_i64;

/// Packs ints into storage of dtype `d`.
fn pack_ints(d: DType, xs: &[i64]) -> Vec<u8> {
    let mut b = vec![0u8; d.storage_bytes(xs.len() as u64) as usize];
    for (i, &x) in xs.iter().enumerate() {
        write_elem(d, &mut b, i, norm_int(d, x as u64));
    }
    b
}

fn unpack_ints(d: DType, b: &[u8], n: usize) -> Vec<i64> {
    (0..n as u64)
        .map(|i| load_as_i64(d, b, i).unwrap())
        .collect()
}

fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A kernel computing `out[i] = a[i] op b[i]` over `n` elements of dtype `d`.
fn binop_kernel(d: DType, op: BinOp, n: u64) -> Kernel {
    let mut b = KernelBuilder::new("binop");
    let x = b.param("a", d, n, Access::Read);
    let y = b.param("b", d, n, Access::Read);
    let o = b.param("out", d, n, Access::Write);
    b.range(0, n as i64, |b, i| {
        let u = b.load(x, i, 1);
        let v = b.load(y, i, 1);
        let r = b.binary(op, u, v);
        b.store(o, i, r);
    });
    b.finish()
}

fn run_int_binop(d: DType, op: BinOp, a: &[i64], bb: &[i64]) -> Vec<i64> {
    let k = binop_kernel(d, op, a.len() as u64);
    let (mut x, mut y) = (pack_ints(d, a), pack_ints(d, bb));
    let mut o = vec![0u8; d.storage_bytes(a.len() as u64) as usize];
    run_kernel(&k, &mut [&mut x, &mut y, &mut o]).unwrap();
    unpack_ints(d, &o, a.len())
}

#[test]
fn int_division_edge_cases() {
    let min = i32::MIN as i64;
    assert_eq!(
        run_int_binop(
            DType::I32,
            BinOp::Div,
            &[7, -7, 5, min, min],
            &[2, 2, 0, -1, 1]
        ),
        vec![3, -3, 0, min, min]
    );
    assert_eq!(
        run_int_binop(DType::I32, BinOp::Rem, &[7, -7, 5, min], &[2, 2, 0, -1]),
        vec![1, -1, 0, 0]
    );
    assert_eq!(
        run_int_binop(DType::I64, BinOp::Div, &[i64::MIN, 9], &[-1, 0]),
        vec![i64::MIN, 0]
    );
    assert_eq!(
        run_int_binop(DType::I8, BinOp::Div, &[-128], &[-1]),
        vec![-128]
    );
    assert_eq!(
        run_int_binop(DType::U8, BinOp::Div, &[200, 9], &[0, 4]),
        vec![0, 2]
    );
    assert_eq!(
        run_int_binop(DType::U32, BinOp::Rem, &[200, 9], &[0, 4]),
        vec![0, 1]
    );
}

#[test]
fn ints_wrap_at_their_width() {
    assert_eq!(
        run_int_binop(DType::I8, BinOp::Add, &[127, -128], &[1, -1]),
        vec![-128, 127]
    );
    assert_eq!(
        run_int_binop(DType::I4, BinOp::Add, &[7, -8, 3], &[1, -1, 2]),
        vec![-8, 7, 5]
    );
    assert_eq!(
        run_int_binop(DType::U4, BinOp::Add, &[15, 0, 3], &[1, -1, 2]),
        vec![0, 15, 5]
    );
    assert_eq!(
        run_int_binop(DType::I2, BinOp::Mul, &[1, -2, -1], &[1, -1, -1]),
        vec![1, -2, 1]
    );
    assert_eq!(
        run_int_binop(DType::U2, BinOp::Sub, &[0, 3], &[1, 1]),
        vec![3, 2]
    );
    assert_eq!(
        run_int_binop(DType::U16, BinOp::Mul, &[300], &[300]),
        vec![(300 * 300) % 65536]
    );
    assert_eq!(
        run_int_binop(DType::I64, BinOp::Add, &[i64::MAX], &[1]),
        vec![i64::MIN]
    );
}

#[test]
fn shifts_take_the_amount_modulo_the_width() {
    assert_eq!(
        run_int_binop(DType::I32, BinOp::Shl, &[1, 1], &[33, 31]),
        vec![2, i32::MIN as i64]
    );
    assert_eq!(
        run_int_binop(DType::I8, BinOp::Shr, &[-128, -1, 64], &[3, 7, 9]),
        vec![-16, -1, 32]
    );
    assert_eq!(run_int_binop(DType::U8, BinOp::Shr, &[128], &[3]), vec![16]);
    assert_eq!(run_int_binop(DType::U8, BinOp::Shl, &[0x81], &[1]), vec![2]);
    assert_eq!(run_int_binop(DType::I4, BinOp::Shl, &[3], &[2]), vec![-4]);
}

#[test]
fn bitwise_and_minmax() {
    assert_eq!(
        run_int_binop(DType::I16, BinOp::Xor, &[-1, 0x0f0f], &[0x00ff, 0x00ff]),
        vec![-256, 0x0ff0]
    );
    assert_eq!(
        run_int_binop(DType::U64, BinOp::Max, &[-1, 5], &[3, 2]),
        vec![-1, 5]
    ); // u64::MAX as i64
    assert_eq!(
        run_int_binop(DType::I64, BinOp::Min, &[-1, 5], &[3, 2]),
        vec![-1, 2]
    );
}

fn run_f32_binop(op: BinOp, a: &[f32], b: &[f32]) -> Vec<f32> {
    let k = binop_kernel(DType::F32, op, a.len() as u64);
    let (mut x, mut y) = (f32_bytes(a), f32_bytes(b));
    let mut o = vec![0u8; a.len() * 4];
    run_kernel(&k, &mut [&mut x, &mut y, &mut o]).unwrap();
    bytes_f32(&o)
}

#[test]
fn float_min_max_propagate_nan_and_order_zeros() {
    let r = run_f32_binop(
        BinOp::Min,
        &[1.0, f32::NAN, 2.0, 0.0],
        &[f32::NAN, 1.0, -3.0, -0.0],
    );
    assert!(r[0].is_nan() && r[1].is_nan());
    assert_eq!(r[2], -3.0);
    assert!(r[3] == 0.0 && r[3].is_sign_negative());
    let r = run_f32_binop(BinOp::Max, &[1.0, -0.0], &[f32::NAN, 0.0]);
    assert!(r[0].is_nan());
    assert!(r[1] == 0.0 && r[1].is_sign_positive());
}

#[test]
fn f32_arithmetic_is_done_in_f32() {
    // 16777216 + 1 is 16777216 in f32 (it would be exact in f64 and then round the same), and
    // (0.1 + 0.2) must be the f32 sum, not the f64 sum rounded.
    let r = run_f32_binop(BinOp::Add, &[16777216.0, 0.1], &[1.0, 0.2]);
    assert_eq!(r, vec![16777216.0, 0.1f32 + 0.2f32]);
    let r = run_f32_binop(BinOp::Rem, &[-7.5, 7.5], &[2.0, -2.0]);
    assert_eq!(r, vec![-1.5, 1.5]);
}

#[test]
fn f16_and_bf16_round_after_every_op() {
    let d = DType::F16;
    let k = binop_kernel(d, BinOp::Add, 3);
    let h = |x: f32| half::f16::from_f32(x).to_bits().to_le_bytes();
    let mut a: Vec<u8> = [2048.0, 2048.0, 65504.0]
        .iter()
        .flat_map(|&x| h(x))
        .collect();
    let mut b: Vec<u8> = [1.0, 3.0, 32.0].iter().flat_map(|&x| h(x)).collect();
    let mut o = vec![0u8; 6];
    run_kernel(&k, &mut [&mut a, &mut b, &mut o]).unwrap();
    let r: Vec<f32> = o
        .chunks(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    assert_eq!(r[0], 2048.0); // tie to even
    assert_eq!(r[1], 2052.0);
    assert_eq!(r[2], f32::INFINITY); // 65536 overflows f16

    let k = binop_kernel(DType::BF16, BinOp::Mul, 1);
    let bf = |x: f32| half::bf16::from_f32(x).to_bits().to_le_bytes();
    let (mut a, mut b, mut o) = (
        bf(1.0 + 1.0 / 128.0).to_vec(),
        bf(1.0 + 1.0 / 128.0).to_vec(),
        vec![0u8; 2],
    );
    run_kernel(&k, &mut [&mut a, &mut b, &mut o]).unwrap();
    // (1 + 2^-7)^2 = 1 + 2^-6 + 2^-14 rounds to 1 + 2^-6 in bf16.
    assert_eq!(
        half::bf16::from_le_bytes([o[0], o[1]]).to_f32(),
        1.0 + 1.0 / 64.0
    );
}

/// Runs `cast` of every input element from `from` to `to`.
fn run_cast(from: DType, to: DType, sat: bool, input: &[u8], n: u64) -> Vec<u8> {
    let mut b = KernelBuilder::new("cast");
    let x = b.param("x", from, n, Access::Read);
    let y = b.param("y", to, n, Access::Write);
    b.range(0, n as i64, |b, i| {
        let v = b.load(x, i, 1);
        let c = b.cast(v, to, CastMode { saturate: sat });
        b.store(y, i, c);
    });
    let k = b.finish();
    let mut inp = input.to_vec();
    let mut out = vec![0u8; to.storage_bytes(n) as usize];
    run_kernel(&k, &mut [&mut inp, &mut out]).unwrap();
    out
}

#[test]
fn float_to_int_casts_truncate_and_saturate() {
    let xs = [
        300.7f32,
        -300.7,
        f32::NAN,
        -0.9,
        2.9,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let o = run_cast(DType::F32, DType::I8, false, &f32_bytes(&xs), 7);
    assert_eq!(
        unpack_ints(DType::I8, &o, 7),
        vec![127, -128, 0, 0, 2, 127, -128]
    );
    let o = run_cast(DType::F32, DType::U8, false, &f32_bytes(&xs), 7);
    assert_eq!(unpack_ints(DType::U8, &o, 7), vec![255, 0, 0, 0, 2, 255, 0]);
    let o = run_cast(DType::F32, DType::I4, false, &f32_bytes(&xs), 7);
    assert_eq!(unpack_ints(DType::I4, &o, 7), vec![7, -8, 0, 0, 2, 7, -8]);
    let o = run_cast(DType::F32, DType::I64, false, &f32_bytes(&[1e30, -1e30]), 2);
    assert_eq!(unpack_ints(DType::I64, &o, 2), vec![i64::MAX, i64::MIN]);
    let o = run_cast(
        DType::F32,
        DType::Bool,
        false,
        &f32_bytes(&[0.0, -0.0, f32::NAN, 0.1]),
        4,
    );
    assert_eq!(o, vec![0, 0, 1, 1]);
}

#[test]
fn int_casts_wrap_and_round_to_float() {
    let o = run_cast(
        DType::I32,
        DType::I8,
        false,
        &pack_ints(DType::I32, &[300, -129, 127]),
        3,
    );
    assert_eq!(unpack_ints(DType::I8, &o, 3), vec![44, 127, 127]);
    let o = run_cast(
        DType::I8,
        DType::U4,
        false,
        &pack_ints(DType::I8, &[-1, 17]),
        2,
    );
    assert_eq!(unpack_ints(DType::U4, &o, 2), vec![15, 1]);
    // 2^24 + 1 rounds to even in f32; i64 → f16 rounds once (2049 → 2048, 2051 → 2052).
    let o = run_cast(
        DType::I64,
        DType::F32,
        false,
        &pack_ints(DType::I64, &[16777217, 16777219]),
        2,
    );
    assert_eq!(bytes_f32(&o), vec![16777216.0, 16777220.0]);
    let o = run_cast(
        DType::I64,
        DType::F16,
        false,
        &pack_ints(DType::I64, &[2049, 2051, 70000]),
        3,
    );
    let h: Vec<f32> = o
        .chunks(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    assert_eq!(h, vec![2048.0, 2052.0, f32::INFINITY]);
    // A 64-bit value whose f64 rounding would create a false tie for bf16.
    let v: i64 = (1 << 62) + (1 << 54) + 1; // just above the bf16 midpoint 2^62 + 2^54
    let o = run_cast(
        DType::I64,
        DType::BF16,
        false,
        &pack_ints(DType::I64, &[v]),
        1,
    );
    assert_eq!(
        half::bf16::from_le_bytes([o[0], o[1]]).to_f32(),
        (1u64 << 62) as f32 + (1u64 << 55) as f32
    );
}

#[test]
fn float8_casts_follow_saturate() {
    let xs = [1000.0f32, -1000.0, 0.3, f32::INFINITY, f32::NAN, 1e-9];
    let sat = run_cast(DType::F32, DType::F8E4M3FN, true, &f32_bytes(&xs), 6);
    let f = MiniFloat::of(DType::F8E4M3FN).unwrap();
    let dec: Vec<f32> = sat.iter().map(|&b| f.decode(b as u32)).collect();
    assert_eq!(dec[..4], [448.0, -448.0, 0.3125, 448.0]);
    assert!(dec[4].is_nan());
    assert_eq!(dec[5], 0.0);
    let nosat = run_cast(DType::F32, DType::F8E4M3FN, false, &f32_bytes(&xs), 6);
    assert!(f.decode(nosat[0] as u32).is_nan() && f.decode(nosat[3] as u32).is_nan());
    let e5 = MiniFloat::of(DType::F8E5M2).unwrap();
    let o = run_cast(
        DType::F32,
        DType::F8E5M2,
        false,
        &f32_bytes(&[1e6, -1e6]),
        2,
    );
    assert_eq!(
        [e5.decode(o[0] as u32), e5.decode(o[1] as u32)],
        [f32::INFINITY, f32::NEG_INFINITY]
    );
    let o = run_cast(DType::F32, DType::F8E5M2, true, &f32_bytes(&[1e6]), 1);
    assert_eq!(e5.decode(o[0] as u32), 57344.0);
    // Every f8e4m3fn pattern decodes to f32 exactly and back to itself.
    let all: Vec<u8> = (0..=255u8).collect();
    let wide = run_cast(DType::F8E4M3FN, DType::F32, false, &all, 256);
    let back = run_cast(DType::F32, DType::F8E4M3FN, false, &wide, 256);
    for (i, (&a, &b)) in all.iter().zip(back.iter()).enumerate() {
        let x = f.decode(a as u32);
        assert!(
            a == b || (x.is_nan() && f.decode(b as u32).is_nan()),
            "pattern {i:#x}"
        );
    }
    // f4e2m1 packs two to a byte.
    let o = run_cast(
        DType::F32,
        DType::F4E2M1,
        false,
        &f32_bytes(&[2.5, -6.0, 100.0]),
        3,
    );
    assert_eq!(o, vec![0x4 | (0xf << 4), 0x7]);
}

#[test]
fn f64_to_narrow_rounds_once() {
    // Halfway between two f16 values plus a tiny bit that f64 → f32 would drop.
    let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
    let o = run_cast(DType::F64, DType::F16, false, &x.to_le_bytes(), 1);
    assert_eq!(
        half::f16::from_le_bytes([o[0], o[1]]).to_f64(),
        1.0 + 2f64.powi(-10)
    );
    let o = run_cast(DType::F64, DType::F32, false, &1e300f64.to_le_bytes(), 1);
    assert_eq!(bytes_f32(&o), vec![f32::INFINITY]);
}

#[test]
fn loops_carry_values_and_yield_permutations() {
    // Fibonacci by swapping two carried values: (a, b) <- (b, a + b).
    let mut b = KernelBuilder::new("fib");
    let out = b.param("out", DType::I64, 2, Access::Write);
    let a0 = b.index(0);
    let b0 = b.index(1);
    let r = b.range_fold(0, 10, &[a0, b0], |b, _i, c| {
        let s = b.add(c[0], c[1]);
        vec![c[1], s]
    });
    let (z, one) = (b.index(0), b.index(1));
    b.store(out, z, r[0]);
    b.store(out, one, r[1]);
    let k = b.finish();
    let mut o = vec![0u8; 16];
    run_kernel(&k, &mut [&mut o]).unwrap();
    assert_eq!(unpack_ints(DType::I64, &o, 2), vec![55, 89]);
}

#[test]
fn nested_loops_if_and_grid() {
    // out[p0][p1] = sum_{i<p0+1} (i odd ? i : 0) + 10*p1 over a 3x2 grid.
    let mut b = KernelBuilder::new("grid");
    let out = b.param("out", DType::I32, 6, Access::Write);
    b.set_grid(&[3, 2]);
    let p0 = b.program_id(0);
    let p1 = b.program_id(1);
    let one = b.index(1);
    let hi = b.add(p0, one);
    let lo = b.index(0);
    let zero = b.const_int(Ty::scalar(DType::I32), 0);
    let s = b.for_loop(lo, hi, one, &[zero], |b, i, acc| {
        let two = b.index(2);
        let r = b.binary(BinOp::Rem, i, two);
        let odd = b.cmp(CmpOp::Eq, r, one);
        let i32v = b.cast(i, DType::I32, CastMode { saturate: false });
        let t = b.if_else(
            odd,
            &[Ty::scalar(DType::I32)],
            |b| vec![b.add(acc[0], i32v)],
            |_| vec![acc[0]],
        );
        vec![t[0]]
    })[0];
    let ten = b.index(10);
    let t = b.mul(p1, ten);
    let t = b.cast(t, DType::I32, CastMode { saturate: false });
    let v = b.add(s, t);
    let two = b.index(2);
    let at = b.mul(p0, two);
    let at = b.add(at, p1);
    b.store(out, at, v);
    let k = b.finish();
    let mut o = vec![0u8; 24];
    run_kernel(&k, &mut [&mut o]).unwrap();
    assert_eq!(unpack_ints(DType::I32, &o, 6), vec![0, 10, 1, 11, 1, 11]);
}

#[test]
fn vector_ops() {
    let mut b = KernelBuilder::new("vec");
    let x = b.param("x", DType::F32, 8, Access::Read);
    let y = b.param("y", DType::F32, 8, Access::Write);
    let s = b.param("s", DType::F32, 3, Access::Write);
    let u = b.param("u", DType::U32, 1, Access::Write);
    let i0 = b.index(0);
    let i4 = b.index(4);
    let v0 = b.load(x, i0, 4);
    let v1 = b.load(x, i4, 4);
    let two = b.const_float(Ty::F32, 2.0);
    let two4 = b.splat(two, 4);
    let p = b.mul(v0, two4);
    let gt = b.cmp(CmpOp::Gt, v0, v1);
    let m = b.select(gt, p, v1);
    b.store(y, i0, m);
    b.store(y, i4, p);
    let r = b.reduce_lanes(ReduceOp::Add, v0);
    let mx = b.reduce_lanes(ReduceOp::Max, v1);
    let e = b.extract(v1, 2);
    let (i1, i2) = (b.index(1), b.index(2));
    b.store(s, i0, r);
    b.store(s, i1, mx);
    b.store(s, i2, e);
    let bytes = b.const_int(Ty::vector(DType::U8, 4), 0);
    let c1 = b.const_int(Ty::vector(DType::U8, 4), 1);
    let bytes = b.add(bytes, c1);
    let w = b.bitcast(bytes, Ty::scalar(DType::U32));
    b.store(u, i0, w);
    let k = b.finish();
    let mut xb = f32_bytes(&[1.0, 5.0, 3.0, -1.0, 2.0, 4.0, 9.0, f32::NAN]);
    let (mut yb, mut sb, mut ub) = (vec![0u8; 32], vec![0u8; 12], vec![0u8; 4]);
    run_kernel(&k, &mut [&mut xb, &mut yb, &mut sb, &mut ub]).unwrap();
    let yv = bytes_f32(&yb);
    assert_eq!(yv[..3], [2.0, 10.0, 9.0]);
    assert!(yv[3].is_nan());
    assert_eq!(yv[4..], [2.0, 10.0, 6.0, -2.0]);
    let sv = bytes_f32(&sb);
    assert_eq!(sv[0], 8.0);
    assert!(sv[1].is_nan());
    assert_eq!(sv[2], 9.0);
    assert_eq!(u32::from_le_bytes(ub.try_into().unwrap()), 0x01010101);
}

#[test]
fn subbyte_stores_keep_neighbours() {
    let mut b = KernelBuilder::new("nibbles");
    let y = b.param("y", DType::U4, 5, Access::ReadWrite);
    b.range(0, 5, |b, i| {
        let one = b.index(1);
        let r = b.binary(BinOp::And, i, one);
        let z = b.index(0);
        let odd = b.cmp(CmpOp::Ne, r, z);
        b.if_then(odd, |b| {
            let v = b.cast(i, DType::U4, CastMode { saturate: false });
            b.store(y, i, v);
        });
    });
    let k = b.finish();
    let mut o = vec![0xffu8, 0xff, 0xff];
    run_kernel(&k, &mut [&mut o]).unwrap();
    assert_eq!(unpack_ints(DType::U4, &o, 6), vec![15, 1, 15, 3, 15, 15]);
}

fn naive_mma(a: &[f32], bm: &[f32], c: &mut [f32], m: usize, n: usize, k: usize, bt: bool) {
    for i in 0..m {
        for j in 0..n {
            let mut s = c[i * n + j];
            for kk in 0..k {
                let bv = if bt { bm[j * k + kk] } else { bm[kk * n + j] };
                s = a[i * k + kk].mul_add(bv, s);
            }
            c[i * n + j] = s;
        }
    }
}

#[test]
fn mma_f16_f32_and_i8_i32() {
    let (m, n, kk) = (4u32, 3u32, 5u32);
    // B is given transposed (n x k, row stride 1, col stride k) to exercise strides.
    let mut b = KernelBuilder::new("mma");
    let a = b.param("a", DType::F16, (m * kk) as u64, Access::Read);
    let bb = b.param("b", DType::F16, (kk * n) as u64, Access::Read);
    let c = b.param("c", DType::F32, (m * n) as u64, Access::ReadWrite);
    let z = b.index(0);
    b.mma(
        TileRef {
            buf: a,
            offset: z,
            row_stride: kk as i64,
            col_stride: 1,
        },
        TileRef {
            buf: bb,
            offset: z,
            row_stride: 1,
            col_stride: kk as i64,
        },
        TileRef {
            buf: c,
            offset: z,
            row_stride: n as i64,
            col_stride: 1,
        },
        m,
        n,
        kk,
    );
    let k = b.finish();
    let av: Vec<f32> = (0..m * kk)
        .map(|i| half::f16::from_f32(i as f32 * 0.37 - 3.0).to_f32())
        .collect();
    let bv: Vec<f32> = (0..kk * n)
        .map(|i| half::f16::from_f32(1.3 - i as f32 * 0.11).to_f32())
        .collect();
    let h = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect()
    };
    let mut cv: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.5).collect();
    let (mut ab, mut bbb, mut cb) = (h(&av), h(&bv), f32_bytes(&cv));
    run_kernel(&k, &mut [&mut ab, &mut bbb, &mut cb]).unwrap();
    naive_mma(&av, &bv, &mut cv, m as usize, n as usize, kk as usize, true);
    assert_eq!(bytes_f32(&cb), cv);

    let mut b = KernelBuilder::new("mma_i8");
    let a = b.param("a", DType::I8, 4, Access::Read);
    let bb = b.param("b", DType::I8, 4, Access::Read);
    let c = b.param("c", DType::I32, 4, Access::ReadWrite);
    let z = b.index(0);
    let t = |buf| TileRef {
        buf,
        offset: z,
        row_stride: 2,
        col_stride: 1,
    };
    b.mma(t(a), t(bb), t(c), 2, 2, 2);
    let k = b.finish();
    let (mut ab, mut bbb) = (
        pack_ints(DType::I8, &[-128, 127, 3, -4]),
        pack_ints(DType::I8, &[-128, 1, 127, 2]),
    );
    let mut cb = pack_ints(DType::I32, &[1, 2, 3, 4]);
    run_kernel(&k, &mut [&mut ab, &mut bbb, &mut cb]).unwrap();
    assert_eq!(
        unpack_ints(DType::I32, &cb, 4),
        vec![
            1 + 16384 + 127 * 127,
            2 - 128 + 254,
            3 - 384 - 508,
            4 + 3 - 8
        ]
    );
}

#[test]
fn out_of_bounds_load_is_an_error_naming_everything() {
    let mut b = KernelBuilder::new("oob");
    let x = b.param("x", DType::F32, 4, Access::Read);
    let y = b.param("y", DType::F32, 4, Access::Write);
    b.range(0, 4, |b, i| {
        let one = b.index(1);
        let j = b.add(i, one);
        let v = b.load(x, j, 1);
        b.store(y, i, v);
    });
    let k = b.finish();
    let (mut xb, mut yb) = (vec![0u8; 16], vec![0u8; 16]);
    let e = run_kernel(&k, &mut [&mut xb, &mut yb]).unwrap_err();
    assert!(
        matches!(
            e,
            InterpError::OutOfBounds {
                first: 4,
                end: 5,
                len: 4,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert_eq!(
        msg,
        "kernel `oob`, program (0), instruction #3 > body #2 `%6 = load %x[%5] : f32`: loads elements 4..5 of buffer `x`, which has 4"
    );
}

#[test]
fn vector_store_past_the_end_and_bad_args_are_errors() {
    let mut b = KernelBuilder::new("vs");
    let y = b.param("y", DType::F32, 6, Access::Write);
    let z = b.const_float(Ty::vector(DType::F32, 4), 1.0);
    let at = b.index(3);
    b.store(y, at, z);
    let k = b.finish();
    let mut yb = vec![0u8; 24];
    let e = run_kernel(&k, &mut [&mut yb]).unwrap_err();
    assert!(
        matches!(
            e,
            InterpError::OutOfBounds {
                first: 3,
                end: 7,
                ..
            }
        ),
        "{e}"
    );
    let mut short = vec![0u8; 20];
    let e = run_kernel(&k, &mut [&mut short]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel `vs`: buffer passed for parameter `y` (f32[6]) has 20 bytes, expected 24"
    );
    let e = run_kernel(&k, &mut []).unwrap_err();
    assert!(matches!(
        e,
        InterpError::ArgCount {
            expected: 1,
            got: 0,
            ..
        }
    ));
}

#[test]
fn math_routines_round_to_the_value_type() {
    let mut b = KernelBuilder::new("math");
    let x = b.param("x", DType::F32, 3, Access::Read);
    let y = b.param("y", DType::F32, 9, Access::Write);
    b.range(0, 3, |b, i| {
        let v = b.load(x, i, 1);
        let three = b.index(3);
        let base = b.mul(i, three);
        for (j, f) in [MathFn::Exp, MathFn::Erf, MathFn::Sigmoid]
            .into_iter()
            .enumerate()
        {
            let r = b.math(f, &[v]);
            let o = b.index(j as i64);
            let at = b.add(base, o);
            b.store(y, at, r);
        }
    });
    let k = b.finish();
    let xs = [0.5f32, -1.0, 3.0];
    let (mut xb, mut yb) = (f32_bytes(&xs), vec![0u8; 36]);
    run_kernel(&k, &mut [&mut xb, &mut yb]).unwrap();
    let r = bytes_f32(&yb);
    for (i, &x) in xs.iter().enumerate() {
        let x = x as f64;
        assert_eq!(r[3 * i], libm::exp(x) as f32);
        assert_eq!(r[3 * i + 1], libm::erf(x) as f32);
        assert_eq!(r[3 * i + 2], (1.0 / (1.0 + (-x).exp())) as f32);
    }
}

#[test]
fn non_positive_step_traps() {
    let mut b = KernelBuilder::new("step");
    let (lo, hi, st) = (b.index(0), b.index(4), b.index(0));
    b.for_loop(lo, hi, st, &[], |_, _, _| Vec::new());
    let k = b.finish();
    let e = run_kernel(&k, &mut []).unwrap_err();
    assert!(e.to_string().contains("loop step 0 is not positive"), "{e}");
}

#[test]
fn local_buffers_are_zeroed_per_program() {
    let mut b = KernelBuilder::new("scratch");
    let y = b.param("y", DType::I32, 2, Access::Write);
    let t = b.local("t", Space::Shared, DType::I32, 1);
    b.set_grid(&[2]);
    let p = b.program_id(0);
    let z = b.index(0);
    let old = b.load(t, z, 1);
    let one = b.const_int(Ty::scalar(DType::I32), 1);
    let new = b.add(old, one);
    b.store(t, z, new);
    b.store(y, p, old);
    let k = b.finish();
    let mut yb = vec![9u8; 8];
    run_kernel(&k, &mut [&mut yb]).unwrap();
    assert_eq!(unpack_ints(DType::I32, &yb, 2), vec![0, 0]);
}

#[test]
fn round_to_odd_helpers() {
    assert_eq!(f64_to_f32_odd(1.0), 1.0);
    let x = 1.0 + 2f64.powi(-30);
    assert_eq!(f64_to_f32_odd(x).to_bits(), 1.0f32.to_bits() | 1);
    assert_eq!(f64_to_f32_odd(1e300), f32::MAX);
    assert_eq!(
        add_round_odd(1.0, 2f64.powi(-60)).to_bits(),
        1.0f64.to_bits() | 1
    );
    assert_eq!(
        add_round_odd(1.0, -(2f64.powi(-60))).to_bits(),
        (1.0f64.to_bits() - 1) | 1
    );
}

/// `out[i] = data[checked(idx[i])]` over 3 indices into 4 elements, with trap code 5.
fn gather_kernel() -> Kernel {
    let mut b = KernelBuilder::new("gather");
    let data = b.param("data", DType::F32, 4, Access::Read);
    let idx = b.param("idx", DType::I64, 3, Access::Read);
    let out = b.param("out", DType::F32, 3, Access::Write);
    b.range(0, 3, |b, i| {
        let raw = b.load(idx, i, 1);
        let at = b.checked_index(raw, 4, 5);
        let v = b.load(data, at, 1);
        b.store(out, i, v);
    });
    b.finish()
}

#[test]
fn trap_reports_the_first_bad_value_and_negative_indices_wrap() {
    let k = gather_kernel();
    // The text form round-trips the trap.
    let text = crate::text::print_kernel(&k);
    assert!(text.contains("trap %"), "{text}");
    assert_eq!(crate::text::parse_kernel(&text).unwrap(), k);

    let mut data = f32_bytes(&[10.0, 11.0, 12.0, 13.0]);
    let mut out = vec![0u8; 12];
    let mut idx = pack_ints(DType::I64, &[1, -1, -4]);
    run_kernel(&k, &mut [&mut data, &mut idx, &mut out]).unwrap();
    assert_eq!(bytes_f32(&out), vec![11.0, 13.0, 10.0]);

    let mut idx = pack_ints(DType::I64, &[0, 4, -5]);
    let e = run_kernel(&k, &mut [&mut data, &mut idx, &mut out]).unwrap_err();
    assert_eq!(
        e,
        InterpError::Data {
            kernel: "gather".into(),
            program: "(0)".into(),
            code: 5,
            value: 4
        }
    );
    assert_eq!(
        e.to_string(),
        "kernel `gather`, program (0): data check 5 failed on value 4"
    );
}

#[test]
fn verifier_wants_a_bool_condition_and_an_index_value() {
    let src = "kernel @t(%x: global i64[1] read) grid [] {\n  %0 = const 0 : i64\n  %1 = load %x[%0] : i64\n  trap %1, 0, %1\n}\n";
    let e = crate::text::parse_kernel(src).unwrap_err().to_string();
    assert!(
        e.contains("trap condition is i64; expected a scalar bool"),
        "{e}"
    );
}

/// `fma` rounds once: `x·x - x·x` computed as `fma(x, x, -(x·x))` is the rounding error of the
/// product, which two roundings would make 0. It round-trips as text, and the verifier refuses
/// it on integers.
#[test]
fn fma_rounds_once_round_trips_and_is_float_only() {
    let mut b = KernelBuilder::new("fma");
    let x = b.param("x", DType::F32, 4, Access::Read);
    let o = b.param("out", DType::F32, 4, Access::Write);
    let z = b.index(0);
    let v = b.load(x, z, 4);
    let p = b.mul(v, v);
    let zero = b.const_float(Ty::vector(DType::F32, 4), 0.0);
    let np = b.sub(zero, p);
    let e = b.fma(v, v, np);
    b.store(o, z, e);
    let k = b.finish();
    crate::verify::verify(&k).unwrap();
    let text = crate::text::print_kernel(&k);
    assert!(text.contains("fma %"), "{text}");
    let back = crate::text::parse_kernel(&text).unwrap();
    assert_eq!(crate::text::print_kernel(&back), text);
    let xs = [1.0f32 + f32::EPSILON, 3.0, 0.1, 1.0 / 3.0];
    let mut xb: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut ob = vec![0u8; 16];
    run_kernel(&back, &mut [&mut xb, &mut ob]).unwrap();
    for (i, (&x, c)) in xs.iter().zip(ob.chunks(4)).enumerate() {
        let got = f32::from_le_bytes(c.try_into().unwrap());
        let want = ((x as f64) * (x as f64) - ((x * x) as f64)) as f32;
        assert_eq!(got, want, "lane {i}");
    }
    assert_ne!(f32::from_le_bytes(ob[..4].try_into().unwrap()), 0.0);

    let mut b = KernelBuilder::new("fma_int");
    let x = b.param("x", DType::I32, 1, Access::ReadWrite);
    let z = b.index(0);
    let v = b.load(x, z, 1);
    let e = b.fma(v, v, v);
    b.store(x, z, e);
    let err = crate::verify::verify(&b.finish()).unwrap_err().to_string();
    assert!(err.contains("expected f32 or f64"), "{err}");
}
