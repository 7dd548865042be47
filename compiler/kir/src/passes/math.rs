//! The `expand-math` pass and the math routines, written once as kernel IR: [`expand_math`]
//! replaces every `math` instruction with primitive instructions emitted by the routines below
//! (one emitter function per routine, lane-generic: vector values work because every constant
//! is a splatted literal of the value's type). Start at `expand_one`.
//!
//! How each type is computed:
//! - f32 `exp`, `log`, `tanh` and `sigmoid` (the hot ones: softmax, activations) run in f32,
//!   with Cody–Waite range reduction and polynomials; they are within a few ulp of libm. f32
//!   `erf` (GELU) runs in f32 too, from two fitted polynomials and one `exp` ([`erf_f32`]).
//! - Every other f32 routine, and every routine on f16/bf16/f8/f4, converts to f64, runs the
//!   f64 routine and rounds back once: within an ulp of libm in practice.
//! - f64 routines run in f64 with polynomials of f64 degree. Their error is a few ulp, except
//!   for `pow`, which is `exp(y·log|x|)` in f64: its relative error grows with `|y·log x|`, up
//!   to about 1e-13 for results near the f64 range; and `sin`/`cos`/`tan`, whose Cody–Waite
//!   reduction is exact only for |x| < 2^20·π/2 ≈ 1.6e6, for f32 inputs too: beyond that
//!   `sin` and `cos` are bounded by 1 but inaccurate (a Payne–Hanek reduction is missing).
//!
//! The routines use only backend-subset instructions on f32/f64 and i32/i64, so a backend gets
//! them for free.

// The polynomial and split constants are fdlibm's, with the digits it publishes.
#![allow(clippy::excessive_precision)]

use super::rewrite::{rewrite, Action};
use crate::builder::KernelBuilder;
use crate::error::KirError;
use crate::kernel::*;
use tessera_ir::DType;

/// Replaces every `math` instruction of `k` with primitive instructions.
pub fn expand_math(k: &mut Kernel) -> Result<(), KirError> {
    rewrite(k, &mut |b, inst| {
        let InstKind::Math(f, args) = &inst.kind else {
            return Ok(Action::Keep);
        };
        Ok(Action::Replace(vec![expand_one(b, *f, args)]))
    })
}

/// Emits routine `f` on `args` (all of one float type) and returns the result.
pub(crate) fn expand_one(b: &mut KernelBuilder, f: MathFn, args: &[Val]) -> Val {
    expand_one_in(b, f, args, DType::F64)
}

/// [`expand_one`], with the non-native routines computed in `wide` (f64, or f32 on a target
/// without f64).
fn expand_one_in(b: &mut KernelBuilder, f: MathFn, args: &[Val], wide_ty: DType) -> Val {
    let t = b.ty(args[0]);
    if wide_ty == DType::F32 && t.elem == DType::F32 {
        let mut m = Mx::new(b, t);
        return routine(&mut m, f, args);
    }
    let native_f32 = matches!(
        f,
        MathFn::Exp | MathFn::Log | MathFn::Tanh | MathFn::Sigmoid | MathFn::Erf
    );
    if t.elem == DType::F64 || (t.elem == DType::F32 && native_f32) {
        let mut m = Mx::new(b, t);
        return routine(&mut m, f, args);
    }
    // Through f64 (or f32): one rounding back to the value's type at the end.
    let no_sat = CastMode { saturate: false };
    let wide: Vec<Val> = args.iter().map(|&a| b.cast(a, wide_ty, no_sat)).collect();
    let mut m = Mx::new(b, t.with_elem(wide_ty));
    let r = routine(&mut m, f, &wide);
    b.cast(r, t.elem, no_sat)
}

fn routine(m: &mut Mx<'_>, f: MathFn, a: &[Val]) -> Val {
    let x = a[0];
    match f {
        MathFn::Exp => exp(m, x),
        MathFn::Log => log(m, x),
        MathFn::Pow => pow(m, x, a.get(1).copied().unwrap_or(x)),
        MathFn::Tanh => tanh(m, x),
        MathFn::Erf if !m.is_f64() => erf_f32(m, x),
        MathFn::Erf => erf(m, x),
        MathFn::Sigmoid => sigmoid(m, x),
        MathFn::Sin => sin_cos_tan(m, x, Trig::Sin),
        MathFn::Cos => sin_cos_tan(m, x, Trig::Cos),
        MathFn::Tan => sin_cos_tan(m, x, Trig::Tan),
        MathFn::Asin => asin(m, x),
        MathFn::Acos => acos(m, x),
        MathFn::Atan => atan(m, x),
        MathFn::Sinh => sinh(m, x),
        MathFn::Cosh => cosh(m, x),
        MathFn::Asinh => asinh(m, x),
        MathFn::Acosh => acosh(m, x),
        MathFn::Atanh => atanh(m, x),
    }
}

// ================================================================================================
// The emitter: lane-generic float and int helpers over one float type (f32 or f64) and the
// int type of its width.
// ================================================================================================

/// Emits float code of type `ty` (f32 or f64, any lanes) and int code of the same width.
pub(crate) struct Mx<'a> {
    pub b: &'a mut KernelBuilder,
    pub ty: Ty,
    pub ity: Ty,
}

impl<'a> Mx<'a> {
    pub fn new(b: &'a mut KernelBuilder, ty: Ty) -> Mx<'a> {
        let ie = if ty.elem == DType::F64 {
            DType::I64
        } else {
            DType::I32
        };
        Mx {
            b,
            ty,
            ity: ty.with_elem(ie),
        }
    }

    pub fn is_f64(&self) -> bool {
        self.ty.elem == DType::F64
    }

    /// Mantissa bits, exponent bias.
    fn layout(&self) -> (i64, i64) {
        if self.is_f64() {
            (52, 1023)
        } else {
            (23, 127)
        }
    }

    pub fn c(&mut self, v: f64) -> Val {
        self.b.const_float(self.ty, v)
    }

    pub fn ci(&mut self, v: i64) -> Val {
        self.b.const_int(self.ity, v)
    }

    pub fn add(&mut self, a: Val, b: Val) -> Val {
        self.b.add(a, b)
    }
    pub fn sub(&mut self, a: Val, b: Val) -> Val {
        self.b.sub(a, b)
    }
    pub fn mul(&mut self, a: Val, b: Val) -> Val {
        self.b.mul(a, b)
    }
    pub fn div(&mut self, a: Val, b: Val) -> Val {
        self.b.div(a, b)
    }
    pub fn min(&mut self, a: Val, b: Val) -> Val {
        self.b.min(a, b)
    }
    pub fn max(&mut self, a: Val, b: Val) -> Val {
        self.b.max(a, b)
    }
    pub fn addc(&mut self, a: Val, c: f64) -> Val {
        let c = self.c(c);
        self.add(a, c)
    }
    pub fn mulc(&mut self, a: Val, c: f64) -> Val {
        let c = self.c(c);
        self.mul(a, c)
    }
    pub fn un(&mut self, op: UnOp, a: Val) -> Val {
        self.b.unary(op, a)
    }
    pub fn neg(&mut self, a: Val) -> Val {
        self.un(UnOp::Neg, a)
    }
    pub fn abs(&mut self, a: Val) -> Val {
        self.un(UnOp::Abs, a)
    }
    pub fn cmp(&mut self, op: CmpOp, a: Val, b: Val) -> Val {
        self.b.cmp(op, a, b)
    }
    pub fn cmpc(&mut self, op: CmpOp, a: Val, c: f64) -> Val {
        let c = self.c(c);
        self.cmp(op, a, c)
    }
    pub fn sel(&mut self, c: Val, a: Val, b: Val) -> Val {
        self.b.select(c, a, b)
    }
    pub fn and(&mut self, a: Val, b: Val) -> Val {
        self.b.binary(BinOp::And, a, b)
    }
    pub fn not(&mut self, a: Val) -> Val {
        self.b.unary(UnOp::Not, a)
    }
    pub fn is_nan(&mut self, x: Val) -> Val {
        self.cmp(CmpOp::Ne, x, x)
    }
    pub fn bits(&mut self, x: Val) -> Val {
        self.b.bitcast(x, self.ity)
    }
    pub fn float_from_bits(&mut self, i: Val) -> Val {
        self.b.bitcast(i, self.ty)
    }
    pub fn int_of(&mut self, x: Val) -> Val {
        self.b.cast(x, self.ity.elem, CastMode { saturate: false })
    }
    pub fn float_of(&mut self, i: Val) -> Val {
        self.b.cast(i, self.ty.elem, CastMode { saturate: false })
    }
    pub fn ibin(&mut self, op: BinOp, a: Val, c: i64) -> Val {
        let c = self.ci(c);
        self.b.binary(op, a, c)
    }

    /// `c[0] + x*(c[1] + x*(c[2] + …))`.
    pub fn poly(&mut self, x: Val, c: &[f64]) -> Val {
        let mut acc = self.c(c[c.len() - 1]);
        for &ci in c[..c.len() - 1].iter().rev() {
            let t = self.mul(acc, x);
            acc = self.addc(t, ci);
        }
        acc
    }

    /// `|mag|` with the sign bit of `sign`.
    pub fn copysign(&mut self, mag: Val, sign: Val) -> Val {
        let (mb, sb) = (self.bits(mag), self.bits(sign));
        let top = if self.is_f64() {
            i64::MIN
        } else {
            i32::MIN as i64
        };
        let m = self.ibin(BinOp::And, mb, !top);
        let s = self.ibin(BinOp::And, sb, top);
        let r = self.b.binary(BinOp::Or, m, s);
        self.float_from_bits(r)
    }

    /// 2^n for an int `n` in the normal exponent range.
    pub fn pow2i(&mut self, n: Val) -> Val {
        let (mant, bias) = self.layout();
        let e = self.ibin(BinOp::Add, n, bias);
        let e = self.ibin(BinOp::Shl, e, mant);
        self.float_from_bits(e)
    }
}

/// `1/k!` for k in 0..n.
fn inv_factorials(n: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(n);
    let mut f = 1.0f64;
    for k in 0..n {
        if k > 0 {
            f *= k as f64;
        }
        v.push(1.0 / f);
    }
    v
}

// ================================================================================================
// exp, expm1, log, log1p: the building blocks, native in f32 and f64.
// ================================================================================================

/// exp(x): n = round(x/ln2), r = x − n·ln2 (in two parts), e^r by its Taylor polynomial
/// (|r| ≤ ln2/2), times 2^n built from bits in two halves so that subnormal results round
/// once and overflow gives inf.
pub(crate) fn exp(m: &mut Mx<'_>, x: Val) -> Val {
    let f64p = m.is_f64();
    let (ln2hi, ln2lo, lo, hi, terms) = if f64p {
        (
            6.93147180369123816490e-01,
            1.90821492927058770002e-10,
            -746.0,
            710.0,
            14,
        )
    } else {
        (0.693145751953125, 1.428606765330187045e-06, -104.0, 89.0, 8)
    };
    let xc = m.cmpc(CmpOp::Lt, x, lo);
    let lo_v = m.c(lo);
    let xl = m.sel(xc, lo_v, x);
    let hc = m.cmpc(CmpOp::Gt, xl, hi);
    let hi_v = m.c(hi);
    let xc = m.sel(hc, hi_v, xl);
    let t = m.mulc(xc, std::f64::consts::LOG2_E);
    let n = m.un(UnOp::Round, t);
    let a = m.mulc(n, ln2hi);
    let r = m.sub(xc, a);
    let bq = m.mulc(n, ln2lo);
    let r = m.sub(r, bq);
    let p = m.poly(r, &inv_factorials(terms));
    let ni = m.int_of(n);
    let n1 = m.ibin(BinOp::Shr, ni, 1);
    let n2 = m.b.sub(ni, n1);
    let s1 = m.pow2i(n1);
    let s2 = m.pow2i(n2);
    let y = m.mul(p, s1);
    m.mul(y, s2)
}

/// exp(x) − 1, accurate near 0: the Taylor series of e^x − 1 for |x| < ln2/2, else exp − 1.
pub(crate) fn expm1(m: &mut Mx<'_>, x: Val) -> Val {
    let terms = if m.is_f64() { 15 } else { 9 };
    let c: Vec<f64> = inv_factorials(terms + 1)[1..].to_vec(); // 1, 1/2, 1/6, …
    let p = m.poly(x, &c);
    let small = m.mul(x, p);
    let e = exp(m, x);
    let e1 = m.addc(e, -1.0);
    let ax = m.abs(x);
    let is_small = m.cmpc(CmpOp::Lt, ax, 0.34657359027997264);
    m.sel(is_small, small, e1)
}

/// log(x): x = 2^e·m with m in [√½, √2], log(m) = f − f²/2 + s·(f²/2 + R(s²)) with f = m − 1 and
/// s = f/(2 + f) (R is the atanh series), plus e·ln2 in two parts. Subnormals are scaled first.
pub(crate) fn log(m: &mut Mx<'_>, x: Val) -> Val {
    let f64p = m.is_f64();
    let (mant, bias) = m.layout();
    let (min_normal, up, up_e) = if f64p {
        (f64::MIN_POSITIVE, 2f64.powi(54), 54)
    } else {
        (f32::MIN_POSITIVE as f64, 2f64.powi(24), 24)
    };
    let (ln2hi, ln2lo) = if f64p {
        (6.93147180369123816490e-01, 1.90821492927058770002e-10)
    } else {
        (0.693145751953125, 1.428606765330187045e-06)
    };
    let k = if f64p { 10 } else { 5 };
    let sub = m.cmpc(CmpOp::Lt, x, min_normal);
    let xs_up = m.mulc(x, up);
    let xs = m.sel(sub, xs_up, x);
    let bits = m.bits(xs);
    let eb = m.ibin(BinOp::Shr, bits, mant);
    let eb = m.ibin(BinOp::And, eb, (1 << (if f64p { 11 } else { 8 })) - 1);
    let e = m.ibin(BinOp::Sub, eb, bias);
    let e_adj = m.ibin(BinOp::Sub, e, up_e);
    let e = m.sel(sub, e_adj, e);
    let mb = m.ibin(BinOp::And, bits, (1i64 << mant) - 1);
    let mb = m.ibin(BinOp::Or, mb, bias << mant);
    let mm = m.float_from_bits(mb);
    let big = m.cmpc(CmpOp::Gt, mm, std::f64::consts::SQRT_2);
    let half = m.mulc(mm, 0.5);
    let mm = m.sel(big, half, mm);
    let e1 = m.ibin(BinOp::Add, e, 1);
    let e = m.sel(big, e1, e);
    let f = m.addc(mm, -1.0);
    let two_f = m.addc(f, 2.0);
    let s = m.div(f, two_f);
    let z = m.mul(s, s);
    let coef: Vec<f64> = (1..=k).map(|i| 2.0 / (2 * i + 1) as f64).collect();
    let rp = m.poly(z, &coef);
    let r = m.mul(z, rp);
    let ff = m.mul(f, f);
    let hfsq = m.mulc(ff, 0.5);
    let t = m.add(hfsq, r);
    let st = m.mul(s, t);
    let fh = m.sub(f, hfsq);
    let logm = m.add(fh, st);
    let ef = m.float_of(e);
    let lo_part = m.mulc(ef, ln2lo);
    let y = m.add(logm, lo_part);
    let hi_part = m.mulc(ef, ln2hi);
    let y = m.add(y, hi_part);
    // Special values: log(±0) = −inf, log(x<0) = NaN, log(inf) = inf, log(NaN) = NaN.
    let zero = m.cmpc(CmpOp::Eq, x, 0.0);
    let ninf = m.c(f64::NEG_INFINITY);
    let y = m.sel(zero, ninf, y);
    let neg = m.cmpc(CmpOp::Lt, x, 0.0);
    let nan = m.c(f64::NAN);
    let y = m.sel(neg, nan, y);
    let inf = m.cmpc(CmpOp::Eq, x, f64::INFINITY);
    let y = m.sel(inf, x, y);
    let isnan = m.is_nan(x);
    m.sel(isnan, x, y)
}

/// log(1 + y), accurate near 0: log(u)·(y/(u − 1)) with u = 1 + y (Goldberg), y when u == 1.
pub(crate) fn log1p(m: &mut Mx<'_>, y: Val) -> Val {
    let u = m.addc(y, 1.0);
    let lu = log(m, u);
    let um1 = m.addc(u, -1.0);
    let q = m.div(y, um1);
    let r = m.mul(lu, q);
    let one = m.cmpc(CmpOp::Eq, u, 1.0);
    let r = m.sel(one, y, r);
    let inf = m.cmpc(CmpOp::Eq, y, f64::INFINITY);
    m.sel(inf, y, r)
}

// ================================================================================================
// Built on exp/log.
// ================================================================================================

/// tanh(x) = sign(x)·(−e/(e + 2)) with e = expm1(−2|x|).
fn tanh(m: &mut Mx<'_>, x: Val) -> Val {
    let a = m.abs(x);
    let t = m.mulc(a, -2.0);
    let e = expm1(m, t);
    let d = m.addc(e, 2.0);
    let q = m.div(e, d);
    let r = m.neg(q);
    m.copysign(r, x)
}

/// sigmoid(x) = 1/(1 + e^−x), computed from e = exp(−|x|) so neither side overflows.
fn sigmoid(m: &mut Mx<'_>, x: Val) -> Val {
    let a = m.abs(x);
    let na = m.neg(a);
    let e = exp(m, na);
    let d = m.addc(e, 1.0);
    let one = m.c(1.0);
    let r = m.div(one, d);
    let rn = m.mul(e, r);
    let neg = m.cmpc(CmpOp::Lt, x, 0.0);
    m.sel(neg, rn, r)
}

/// pow(x, y) = ±exp(y·log|x|) with C99's special cases (see the file doc for its accuracy).
fn pow(m: &mut Mx<'_>, x: Val, y: Val) -> Val {
    let ax = m.abs(x);
    let l = log(m, ax);
    let t = m.mul(y, l);
    let r = exp(m, t);
    // y an integer, and an odd one.
    let fy = m.un(UnOp::Floor, y);
    let yint = m.cmp(CmpOp::Eq, fy, y);
    let hy = m.mulc(y, 0.5);
    let fhy = m.un(UnOp::Floor, hy);
    let even = m.cmp(CmpOp::Eq, fhy, hy);
    let not_even = m.not(even);
    let yodd = m.and(yint, not_even);
    // A negative base (sign bit set, so −0 counts) to an odd power is negative.
    let xb = m.bits(x);
    let zero_i = m.ci(0);
    let xneg = m.b.cmp(CmpOp::Lt, xb, zero_i);
    let flip = m.and(xneg, yodd);
    let nr = m.neg(r);
    let r = m.sel(flip, nr, r);
    // A finite negative base to a non-integer power is NaN.
    let lt0 = m.cmpc(CmpOp::Lt, x, 0.0);
    let fin = m.cmpc(CmpOp::Gt, x, f64::NEG_INFINITY);
    let nint = m.not(yint);
    let bad = m.and(lt0, fin);
    let bad = m.and(bad, nint);
    let nan = m.c(f64::NAN);
    let r = m.sel(bad, nan, r);
    // pow(±1, ±inf) = 1, pow(1, y) = 1, pow(x, ±0) = 1.
    let one = m.c(1.0);
    let ax1 = m.cmpc(CmpOp::Eq, ax, 1.0);
    let ay = m.abs(y);
    let yinf = m.cmpc(CmpOp::Eq, ay, f64::INFINITY);
    let c1 = m.and(ax1, yinf);
    let r = m.sel(c1, one, r);
    let x1 = m.cmpc(CmpOp::Eq, x, 1.0);
    let r = m.sel(x1, one, r);
    let y0 = m.cmpc(CmpOp::Eq, y, 0.0);
    m.sel(y0, one, r)
}

/// sinh: (t + t/(t + 1))/2 with t = expm1(|x|) below 22, (h/2)·h with h = e^{|x|/2} above.
fn sinh(m: &mut Mx<'_>, x: Val) -> Val {
    let a = m.abs(x);
    let t = expm1(m, a);
    let t1 = m.addc(t, 1.0);
    let q = m.div(t, t1);
    let s = m.add(t, q);
    let small = m.mulc(s, 0.5);
    let big = half_exp_squared(m, a);
    let is_small = m.cmpc(CmpOp::Lt, a, 22.0);
    let r = m.sel(is_small, small, big);
    m.copysign(r, x)
}

/// e^a / 2 as (e^{a/2}/2)·e^{a/2}, which overflows only when the result does.
fn half_exp_squared(m: &mut Mx<'_>, a: Val) -> Val {
    let ha = m.mulc(a, 0.5);
    let h = exp(m, ha);
    let hh = m.mulc(h, 0.5);
    m.mul(hh, h)
}

/// cosh: (e + 1/e)/2 below 22, (h/2)·h above.
fn cosh(m: &mut Mx<'_>, x: Val) -> Val {
    let a = m.abs(x);
    let e = exp(m, a);
    let one = m.c(1.0);
    let inv = m.div(one, e);
    let s = m.add(e, inv);
    let small = m.mulc(s, 0.5);
    let big = half_exp_squared(m, a);
    let is_small = m.cmpc(CmpOp::Lt, a, 22.0);
    m.sel(is_small, small, big)
}

/// asinh: log1p(a + a²/(1 + √(1 + a²))), or log(a) + ln2 for a > 2^28; odd.
fn asinh(m: &mut Mx<'_>, x: Val) -> Val {
    let a = m.abs(x);
    let a2 = m.mul(a, a);
    let s = m.addc(a2, 1.0);
    let s = m.un(UnOp::Sqrt, s);
    let d = m.addc(s, 1.0);
    let q = m.div(a2, d);
    let y = m.add(a, q);
    let small = log1p(m, y);
    let la = log(m, a);
    let big = m.addc(la, std::f64::consts::LN_2);
    let is_big = m.cmpc(CmpOp::Gt, a, 268435456.0);
    let r = m.sel(is_big, big, small);
    m.copysign(r, x)
}

/// acosh: log1p(t + √(2t + t²)) with t = x − 1, or log(x) + ln2 for x > 2^28; NaN below 1.
fn acosh(m: &mut Mx<'_>, x: Val) -> Val {
    let t = m.addc(x, -1.0);
    let t2 = m.mul(t, t);
    let tt = m.add(t, t);
    let u = m.add(tt, t2);
    let s = m.un(UnOp::Sqrt, u);
    let y = m.add(t, s);
    let small = log1p(m, y);
    let lx = log(m, x);
    let big = m.addc(lx, std::f64::consts::LN_2);
    let is_big = m.cmpc(CmpOp::Gt, x, 268435456.0);
    let r = m.sel(is_big, big, small);
    let below = m.cmpc(CmpOp::Lt, x, 1.0);
    let nan = m.c(f64::NAN);
    m.sel(below, nan, r)
}

/// atanh: log1p(2a/(1 − a))/2; odd.
fn atanh(m: &mut Mx<'_>, x: Val) -> Val {
    let a = m.abs(x);
    let one = m.c(1.0);
    let d = m.sub(one, a);
    let n = m.add(a, a);
    let q = m.div(n, d);
    let l = log1p(m, q);
    let r = m.mulc(l, 0.5);
    m.copysign(r, x)
}

// ================================================================================================
// Trigonometry: Cody–Waite reduction by π/2 in three parts, Taylor polynomials on [−π/4, π/4].
// ================================================================================================

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trig {
    Sin,
    Cos,
    Tan,
}

fn sin_cos_tan(m: &mut Mx<'_>, x: Val, which: Trig) -> Val {
    // fdlibm's π/2 split into 33-bit pieces: n·PIO2_k is exact for |n| < 2^20.
    const PIO2_1: f64 = 1.57079632673412561417e+00;
    const PIO2_2: f64 = 6.07710050630396597660e-11;
    const PIO2_3: f64 = 2.02226624871116645580e-21;
    const PIO2_3T: f64 = 8.47842766036889956997e-32;
    let t = m.mulc(x, std::f64::consts::FRAC_2_PI);
    let n = m.un(UnOp::Round, t);
    let mut r = x;
    for p in [PIO2_1, PIO2_2, PIO2_3, PIO2_3T] {
        let np = m.mulc(n, p);
        r = m.sub(r, np);
    }
    // Beyond the reduction's exact range r is meaningless; keep it in [−π/4, π/4] so the
    // result is at least bounded (see the file doc).
    let lim = m.c(0.786);
    let nlim = m.c(-0.786);
    let r = m.min(r, lim);
    let r = m.max(r, nlim);
    let z = m.mul(r, r);
    // sin r = r·(1 − z/3! + z²/5! − …), cos r = 1 − z/2! + z²/4! − …
    let (ns, nc) = if m.is_f64() { (10, 10) } else { (6, 6) };
    let f = inv_factorials(2 * ns.max(nc) + 2);
    let sc: Vec<f64> = (0..ns)
        .map(|k| {
            if k % 2 == 0 {
                f[2 * k + 1]
            } else {
                -f[2 * k + 1]
            }
        })
        .collect();
    let cc: Vec<f64> = (0..nc)
        .map(|k| if k % 2 == 0 { f[2 * k] } else { -f[2 * k] })
        .collect();
    let sp = m.poly(z, &sc);
    let s = m.mul(r, sp);
    let c = m.poly(z, &cc);
    let q = m.int_of(n);
    let q1 = m.ibin(BinOp::And, q, 1);
    let zi = m.ci(0);
    let odd = m.b.cmp(CmpOp::Ne, q1, zi);
    let res = match which {
        Trig::Sin | Trig::Cos => {
            let (a, b, shift) = if which == Trig::Sin {
                (c, s, 0)
            } else {
                (s, c, 1)
            };
            let v = m.sel(odd, a, b);
            let qs = m.ibin(BinOp::Add, q, shift);
            let q2 = m.ibin(BinOp::And, qs, 2);
            let neg = m.b.cmp(CmpOp::Ne, q2, zi);
            let nv = m.neg(v);
            m.sel(neg, nv, v)
        }
        Trig::Tan => {
            let tq = m.div(s, c);
            let cq = m.div(c, s);
            let ncq = m.neg(cq);
            m.sel(odd, ncq, tq)
        }
    };
    if which == Trig::Cos {
        res
    } else {
        // Keep the sign of zero: sin(−0) = tan(−0) = −0.
        let z0 = m.cmpc(CmpOp::Eq, x, 0.0);
        m.sel(z0, x, res)
    }
}

/// atan, after fdlibm: reduction to |t| < 7/16 around atan(0.5), atan(1), atan(1.5), atan(inf),
/// then an odd polynomial of degree 23.
fn atan(m: &mut Mx<'_>, x: Val) -> Val {
    const ATANHI: [f64; 4] = [
        4.63647609000806093515e-01,
        std::f64::consts::FRAC_PI_4,
        9.82793723247329054082e-01,
        std::f64::consts::FRAC_PI_2,
    ];
    const ATANLO: [f64; 4] = [
        2.26987774529616870924e-17,
        3.06161699786838301793e-17,
        1.39033110312309984516e-17,
        6.12323399573676603587e-17,
    ];
    const AT: [f64; 11] = [
        3.33333333333329318027e-01,
        -1.99999999998764832476e-01,
        1.42857142725034663711e-01,
        -1.11111104054623557880e-01,
        9.09088713343650656196e-02,
        -7.69187620504482999495e-02,
        6.66107313738753120669e-02,
        -5.83357013379057348645e-02,
        4.97687799461593236017e-02,
        -3.65315727442169155270e-02,
        1.62858201153657823623e-02,
    ];
    let a = m.abs(x);
    // The four reduced arguments.
    let two_a = m.mulc(a, 2.0);
    let n0 = m.addc(two_a, -1.0);
    let d0 = m.addc(a, 2.0);
    let t0 = m.div(n0, d0);
    let n1 = m.addc(a, -1.0);
    let d1 = m.addc(a, 1.0);
    let t1 = m.div(n1, d1);
    let n2 = m.addc(a, -1.5);
    let a15 = m.mulc(a, 1.5);
    let d2 = m.addc(a15, 1.0);
    let t2 = m.div(n2, d2);
    let mone = m.c(-1.0);
    let t3 = m.div(mone, a);
    let c0 = m.cmpc(CmpOp::Lt, a, 0.6875);
    let c1 = m.cmpc(CmpOp::Lt, a, 1.1875);
    let c2 = m.cmpc(CmpOp::Lt, a, 2.4375);
    let pick = |m: &mut Mx<'_>, v: [Val; 4]| {
        let s = m.sel(c2, v[2], v[3]);
        let s = m.sel(c1, v[1], s);
        m.sel(c0, v[0], s)
    };
    let t = pick(m, [t0, t1, t2, t3]);
    let his: Vec<Val> = ATANHI.iter().map(|&h| m.c(h)).collect();
    let los: Vec<Val> = ATANLO.iter().map(|&l| m.c(l)).collect();
    let hi = pick(m, [his[0], his[1], his[2], his[3]]);
    let lo = pick(m, [los[0], los[1], los[2], los[3]]);
    let small = m.cmpc(CmpOp::Lt, a, 0.4375);
    let t = m.sel(small, a, t);
    let z = m.mul(t, t);
    let w = m.mul(z, z);
    let p1 = m.poly(w, &[AT[0], AT[2], AT[4], AT[6], AT[8], AT[10]]);
    let s1 = m.mul(z, p1);
    let p2 = m.poly(w, &[AT[1], AT[3], AT[5], AT[7], AT[9]]);
    let s2 = m.mul(w, p2);
    let s12 = m.add(s1, s2);
    let ts = m.mul(t, s12);
    let r_small = m.sub(t, ts);
    let u = m.sub(ts, lo);
    let u = m.sub(u, t);
    let r_big = m.sub(hi, u);
    let r = m.sel(small, r_small, r_big);
    let r = m.copysign(r, x);
    let isnan = m.is_nan(x);
    m.sel(isnan, x, r)
}

/// asin(x) = atan(x/√((1 − x)(1 + x))).
fn asin(m: &mut Mx<'_>, x: Val) -> Val {
    let one = m.c(1.0);
    let a = m.sub(one, x);
    let b = m.addc(x, 1.0);
    let p = m.mul(a, b);
    let s = m.un(UnOp::Sqrt, p);
    let q = m.div(x, s);
    atan(m, q)
}

/// acos(x) = 2·atan(√((1 − x)/(1 + x))).
fn acos(m: &mut Mx<'_>, x: Val) -> Val {
    let one = m.c(1.0);
    let a = m.sub(one, x);
    let b = m.addc(x, 1.0);
    let q = m.div(a, b);
    let s = m.un(UnOp::Sqrt, q);
    let t = atan(m, s);
    m.mulc(t, 2.0)
}

// ================================================================================================
// erf, after fdlibm's s_erf.c: rational approximations on [0, 0.84375), [0.84375, 1.25),
// [1.25, 1/0.35), [1/0.35, 6); 1 beyond. Run in f64.
// ================================================================================================

/// fdlibm's `erf` constants: `erx` and the rational approximations of its three ranges
/// (shared with backends that evaluate `erf` themselves, such as npu-sim's streaming path).
pub const ERF_ERX: f64 = 8.45062911510467529297e-01;
pub const ERF_PP: [f64; 5] = [
    1.28379167095512558561e-01,
    -3.25042107247001499370e-01,
    -2.84817495755985104766e-02,
    -5.77027029648944159157e-03,
    -2.37630166566501626084e-05,
];
pub const ERF_QQ: [f64; 6] = [
    1.0,
    3.97917223959155352819e-01,
    6.50222499887672944485e-02,
    5.08130628187576562776e-03,
    1.32494738004321644526e-04,
    -3.96022827877536812320e-06,
];
pub const ERF_PA: [f64; 7] = [
    -2.36211856075265944077e-03,
    4.14856118683748331666e-01,
    -3.72207876035701323847e-01,
    3.18346619901161753674e-01,
    -1.10894694282396677476e-01,
    3.54783043256182359371e-02,
    -2.16637559486879084300e-03,
];
pub const ERF_QA: [f64; 7] = [
    1.0,
    1.06420880400844228286e-01,
    5.40397917702171048937e-01,
    7.18286544141962662868e-02,
    1.26171219808761642112e-01,
    1.36370839120290507362e-02,
    1.19844998467991074170e-02,
];
pub const ERF_RA: [f64; 8] = [
    -9.86494403484714822705e-03,
    -6.93858572707181764372e-01,
    -1.05586262253232909814e+01,
    -6.23753324503260060396e+01,
    -1.62396669462573470355e+02,
    -1.84605092906711035994e+02,
    -8.12874355063065934246e+01,
    -9.81432934416914548592e+00,
];
pub const ERF_SA: [f64; 9] = [
    1.0,
    1.96512716674392571292e+01,
    1.37657754143519042600e+02,
    4.34565877475229228821e+02,
    6.45387271733267880336e+02,
    4.29008140027567833386e+02,
    1.08635005541779435134e+02,
    6.57024977031928170135e+00,
    -6.04244152148580987438e-02,
];
pub const ERF_RB: [f64; 7] = [
    -9.86494292470009928597e-03,
    -7.99283237680523006574e-01,
    -1.77579549177547519889e+01,
    -1.60636384855821916062e+02,
    -6.37566443368389627722e+02,
    -1.02509513161107724954e+03,
    -4.83519191608651397019e+02,
];
pub const ERF_SB: [f64; 8] = [
    1.0,
    3.03380607434824582924e+01,
    3.25792512996573918826e+02,
    1.53672958608443695994e+03,
    3.19985821950859553908e+03,
    2.55305040643316442583e+03,
    4.74528541206955367215e+02,
    -2.24409524465858183362e+01,
];

fn erf(m: &mut Mx<'_>, x: Val) -> Val {
    let a = m.abs(x);
    // [0, 0.84375): a + a·P(a²)/Q(a²).
    let z = m.mul(a, a);
    let r = m.poly(z, &ERF_PP);
    let s = m.poly(z, &ERF_QQ);
    let y = m.div(r, s);
    let ay = m.mul(a, y);
    let y_a = m.add(a, ay);
    // [0.84375, 1.25): erx + P(a − 1)/Q(a − 1).
    let s1 = m.addc(a, -1.0);
    let p = m.poly(s1, &ERF_PA);
    let q = m.poly(s1, &ERF_QA);
    let pq = m.div(p, q);
    let y_b = m.addc(pq, ERF_ERX);
    // [1.25, 6): 1 − exp(−z² − 0.5625)·exp((z − a)(z + a) + R/S)/a with z = a rounded to 32
    // bits, so that z² is exact.
    let one = m.c(1.0);
    let aa = m.mul(a, a);
    let s = m.div(one, aa);
    let ra = m.poly(s, &ERF_RA);
    let sa = m.poly(s, &ERF_SA);
    let rb = m.poly(s, &ERF_RB);
    let sb = m.poly(s, &ERF_SB);
    let in_c = m.cmpc(CmpOp::Lt, a, 1.0 / 0.35);
    let rr = m.sel(in_c, ra, rb);
    let ss = m.sel(in_c, sa, sb);
    let ab = m.bits(a);
    let zb = m.ibin(BinOp::And, ab, -0x1_0000_0000);
    let zz = m.float_from_bits(zb);
    let z2 = m.mul(zz, zz);
    let nz2 = m.neg(z2);
    let e1a = m.addc(nz2, -0.5625);
    let e1 = exp(m, e1a);
    let zma = m.sub(zz, a);
    let zpa = m.add(zz, a);
    let prod = m.mul(zma, zpa);
    let rs = m.div(rr, ss);
    let e2a = m.add(prod, rs);
    let e2 = exp(m, e2a);
    let ee = m.mul(e1, e2);
    let erfc = m.div(ee, a);
    let y_c = m.sub(one, erfc);
    let lt_a = m.cmpc(CmpOp::Lt, a, 0.84375);
    let lt_b = m.cmpc(CmpOp::Lt, a, 1.25);
    let lt_c = m.cmpc(CmpOp::Lt, a, 6.0);
    let y = m.sel(lt_c, y_c, one);
    let y = m.sel(lt_b, y_b, y);
    let y = m.sel(lt_a, y_a, y);
    let y = m.copysign(y, x);
    let isnan = m.is_nan(x);
    m.sel(isnan, x, y)
}

/// erf(x)/x − 1 on [0, 1] as a polynomial in x² (a least-squares fit on Chebyshev nodes, made
/// for Tessera; max error 1.3e-9 relative).
const ERF32_SMALL: [f64; 7] = [
    0.1283791656893223,
    -0.3761262556739927,
    0.11283582247993218,
    -0.02685369109972613,
    0.005188098889422815,
    -0.0008008189323365084,
    7.847259127659323e-05,
];

/// ln(erfc(x)) + x² on [1, 4] as a polynomial in x − 2.5 (fitted likewise; max error 6.5e-9).
const ERF32_TAIL: [f64; 10] = [
    -1.5568152770519288,
    -0.35268074038547653,
    0.056106359727481125,
    -0.010858165530448632,
    0.0021651603097310734,
    -0.00042070693904167105,
    7.73944255355874e-05,
    -1.2976133195419267e-05,
    1.6140616092563675e-06,
    -6.582858082992111e-08,
];

/// f32 erf in f32, about 60 instructions and no division (fdlibm's routine, run in f64, is
/// about 200 and six divisions; it dominated GELU). Two pieces, both computed and selected:
/// - |x| < 1: `a + a·P(a²)`, where P is erf(a)/a − 1 (adding the small part to `a` last keeps
///   the rounding error near half an ulp);
/// - |x| ≥ 1: `1 − exp(−a² + G(a))`, where G fits ln(erfc(a)) + a² on [1, 4] (a clamped to 4,
///   where erf is 1 in f32). The exponent's rounding error is relative to erfc, which is at
///   most 0.16 here, so it shrinks in the result.
///
/// Simulated in f32 over 2·10⁶ points of [−6, 6] and tiny inputs down to 1e-40: at most 1.3
/// ulp from the correctly rounded value (the test bounds it by 2).
fn erf_f32(m: &mut Mx<'_>, x: Val) -> Val {
    let a = m.abs(x);
    let z = m.mul(a, a);
    let p = m.poly(z, &ERF32_SMALL);
    let ap = m.mul(a, p);
    let small = m.add(a, ap);
    let four = m.c(4.0);
    let ac = m.min(a, four);
    let u = m.addc(ac, -2.5);
    let g = m.poly(u, &ERF32_TAIL);
    let ac2 = m.mul(ac, ac);
    let arg = m.sub(g, ac2);
    let e = exp(m, arg);
    let one = m.c(1.0);
    let tail = m.sub(one, e);
    let lt1 = m.cmpc(CmpOp::Lt, a, 1.0);
    let y = m.sel(lt1, small, tail);
    let y = m.copysign(y, x);
    let isnan = m.is_nan(x);
    m.sel(isnan, x, y)
}

/// `expand-math` for a target without f64 (npu-sim): every f32 routine runs natively in f32,
/// and the narrow float formats go through f32 instead of f64. The same routines, evaluated in
/// f32: a few f32 ulp from libm rather than within one.
pub fn expand_math_without_f64(k: &mut Kernel) -> Result<(), KirError> {
    rewrite(k, &mut |b, inst| {
        let InstKind::Math(f, args) = &inst.kind else {
            return Ok(Action::Keep);
        };
        if b.ty(args[0]).elem == DType::F64 {
            return Ok(Action::Keep);
        }
        Ok(Action::Replace(vec![expand_one_in(
            b,
            *f,
            args,
            DType::F32,
        )]))
    })
}
