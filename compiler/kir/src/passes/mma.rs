//! The `expand-mma` pass: [`expand_mma`] rewrites every `mma` into loops over m, n and k with
//! the exact semantics of the instruction (each product exact, one rounding per accumulation
//! step in k order), so a backend without a matrix unit needs only scalar loads, stores and
//! arithmetic.
//!
//! How a step `acc + a·b` is emitted:
//! - int accumulators: both inputs cast (wrapping) to the accumulator type, multiplied and
//!   added there; this equals the interpreter's wrap of the exact sum.
//! - float accumulators where the product is exact in the accumulator type (f16/f8 or small
//!   int inputs with an f32 accumulator; inputs of at most f32 precision with an f64 one): cast,
//!   multiply, add — one rounding, as specified.
//! - f64 accumulators otherwise (f64 inputs): multiply then add, two roundings where the
//!   interpreter fuses them. **This is the one case where the expansion may differ from the
//!   interpreter in the last bit.**
//! - narrow or f32 accumulators otherwise (f32, bf16 or wide int inputs): the product is formed
//!   in f64 and added to the accumulator in f64 *rounded to odd* (TwoSum plus a last-bit fix-up),
//!   then cast to the accumulator type: exactly one correct rounding, bit for bit the
//!   interpreter's result.

use super::math::Mx;
use super::rewrite::{rewrite, Action};
use crate::builder::KernelBuilder;
use crate::error::KirError;
use crate::kernel::*;
use tessera_ir::DType;

/// Replaces every `mma` of `k` with loops.
pub fn expand_mma(k: &mut Kernel) -> Result<(), KirError> {
    rewrite(k, &mut |b, inst| {
        let InstKind::Mma {
            a,
            b: bt,
            c,
            m,
            n,
            k,
            a_ty,
            b_ty,
            acc,
        } = &inst.kind
        else {
            return Ok(Action::Keep);
        };
        emit(b, a, bt, c, (*m, *n, *k), (*a_ty, *b_ty, *acc));
        Ok(Action::Replace(Vec::new()))
    })
}

/// Significand bits and the exponent of the smallest positive value, for the exactness test.
fn precision(d: DType) -> Option<(i32, i32)> {
    Some(match d {
        DType::F64 => (53, -1074),
        DType::F32 => (24, -149),
        DType::F16 => (11, -24),
        DType::BF16 => (8, -133),
        DType::F8E4M3FN => (4, -9),
        DType::F8E4M3FNUZ => (4, -10),
        DType::F8E5M2 => (3, -16),
        DType::F8E5M2FNUZ => (3, -17),
        DType::F4E2M1 => (2, -1),
        DType::Bool => (1, 0),
        d if d.is_int() => (d.bits() as i32, 0),
        _ => return None,
    })
}

/// Whether every product of an `a` and a `b` is exactly representable in `acc`.
fn product_exact_in(a: DType, b: DType, acc: DType) -> bool {
    let (Some((pa, ea)), Some((pb, eb)), Some((pc, _))) =
        (precision(a), precision(b), precision(acc))
    else {
        return false;
    };
    // The smallest product must be a normal number of the accumulator: exponents above its
    // minimum normal exponent.
    let min_normal = match acc {
        DType::F64 => -1022,
        DType::F32 => -126,
        _ => return false,
    };
    pa + pb <= pc && ea + eb >= min_normal
}

fn emit(
    b: &mut KernelBuilder,
    a: &TileRef,
    bt: &TileRef,
    c: &TileRef,
    (m, n, k): (u32, u32, u32),
    (a_ty, b_ty, acc): (DType, DType, DType),
) {
    let no_sat = CastMode { saturate: false };
    b.range(0, m as i64, |b, i| {
        b.range(0, n as i64, |b, j| {
            let ci = tile_index(b, c, i, j);
            let s0 = b.load(c.buf, ci, 1);
            let s = b.range_fold(0, k as i64, &[s0], |b, kk, s| {
                let ai = tile_index(b, a, i, kk);
                let bi = tile_index(b, bt, kk, j);
                let x = b.load(a.buf, ai, 1);
                let y = b.load(bt.buf, bi, 1);
                let s = s[0];
                let r = if acc.is_int()
                    || (acc.is_float() && (acc == DType::F64 || product_exact_in(a_ty, b_ty, acc)))
                {
                    let x = b.cast(x, acc, no_sat);
                    let y = b.cast(y, acc, no_sat);
                    let p = b.mul(x, y);
                    b.add(s, p)
                } else {
                    let x = b.cast(x, DType::F64, no_sat);
                    let y = b.cast(y, DType::F64, no_sat);
                    let p = b.mul(x, y);
                    let s64 = b.cast(s, DType::F64, no_sat);
                    let mut mx = Mx::new(b, Ty::scalar(DType::F64));
                    let t = add_round_odd(&mut mx, s64, p);
                    b.cast(t, acc, no_sat)
                };
                vec![r]
            })[0];
            b.store(c.buf, ci, s);
        });
    });
}

/// `offset + r·row_stride + c·col_stride`.
fn tile_index(b: &mut KernelBuilder, t: &TileRef, r: Val, c: Val) -> Val {
    let rs = b.index(t.row_stride);
    let cs = b.index(t.col_stride);
    let x = b.mul(r, rs);
    let y = b.mul(c, cs);
    let s = b.add(t.offset, x);
    b.add(s, y)
}

/// `a + b` in f64 rounded to odd (see `interp::add_round_odd`), as kernel IR.
pub(crate) fn add_round_odd(m: &mut Mx<'_>, a: Val, b: Val) -> Val {
    let s = m.add(a, b);
    let bb = m.sub(s, a);
    let sb = m.sub(s, bb);
    let e1 = m.sub(a, sb);
    let e2 = m.sub(b, bb);
    let err = m.add(e1, e2);
    let bits = m.bits(s);
    let lsb = m.ibin(BinOp::And, bits, 1);
    let zero_i = m.ci(0);
    let even = m.b.cmp(CmpOp::Eq, lsb, zero_i);
    let inexact = m.cmpc(CmpOp::Ne, err, 0.0);
    let abs_s = m.abs(s);
    let finite = m.cmpc(CmpOp::Lt, abs_s, f64::INFINITY);
    let fix = m.and(even, inexact);
    let fix = m.and(fix, finite);
    let err_pos = m.cmpc(CmpOp::Gt, err, 0.0);
    let s_pos = m.cmpc(CmpOp::Gt, s, 0.0);
    let up = m.cmp(CmpOp::Eq, err_pos, s_pos);
    let plus = m.ibin(BinOp::Add, bits, 1);
    let minus = m.ibin(BinOp::Sub, bits, 1);
    let nb = m.sel(up, plus, minus);
    let adj = m.float_from_bits(nb);
    m.sel(fix, adj, s)
}
