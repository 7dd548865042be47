//! The `legalize-low-precision` pass: [`legalize_low_precision`] removes every value of a dtype
//! a simple backend lacks (f16, bf16, the float8s, f4e2m1 and the sub-byte ints), so that
//! kernels compute only in the backend subset's types. Start at `legalize_inst`.
//!
//! What it does, and how a backend then sees the kernel:
//! - **Values.** Narrow-float values become f32 values that hold exactly the narrow value; after
//!   every operation the result is rounded back to the narrow format (round to nearest even,
//!   overflow to inf where the format has one, else NaN; f4e2m1 clamps), by integer bit
//!   manipulation written as kernel IR (`quantize`). Sub-byte int values become i32 (signed)
//!   or u32 (unsigned) values, wrapped back to their width (sign-extended or masked) after every
//!   operation. This is exactly the interpreter's semantics.
//! - **Buffers keep their dtypes.** Loads and stores go through the buffer's storage view (see
//!   [`crate::kernel::storage_view`]): f16/bf16 elements are loaded and stored as `u16` bit
//!   patterns and float8 ones as `u8`, converted by kernel-IR routines (`decode`, `encode`) that
//!   match `tessera_ir::numeric` and `half` bit for bit (tested exhaustively). **A backend sees
//!   a sub-byte buffer as bytes**: a sub-byte element is read with a `u8` load of its byte plus
//!   shift and mask, and written with a read-modify-write of that byte. Two program instances
//!   must therefore never write elements that share a byte: lowering must give each instance
//!   whole bytes of a sub-byte output. The byte access also means an out-of-range sub-byte index
//!   whose byte exists (the unused half of the last byte) is not caught on a backend.
//! - **Limits** (reported as `Unsupported`): vector loads and stores of sub-byte dtypes (no
//!   instruction builds a vector lane by lane; scalarize first), bitcasts that change the lane
//!   count across a narrow or sub-byte type, math routines on narrow types (run `expand-math`
//!   first) and `mma` on narrow types (run `expand-mma` first). `to_backend_subset` runs those
//!   first.

use super::math::Mx;
use super::rewrite::{rewrite, Action};
use crate::builder::KernelBuilder;
use crate::error::KirError;
use crate::interp::{const_bits, norm_int, to_f32};
use crate::kernel::*;
use std::collections::HashMap;
use tessera_ir::numeric::{MiniFloat, Special};
use tessera_ir::DType;

/// Narrow floats: computed as f32.
pub(crate) fn is_narrow_float(d: DType) -> bool {
    d.is_float() && d.bits() < 32
}

/// Sub-byte ints: computed as i32/u32.
pub(crate) fn is_sub_byte_int(d: DType) -> bool {
    d.is_int() && d.bits() < 8
}

/// The type a value of element type `d` is computed in after legalization.
pub(crate) fn wide(d: DType) -> DType {
    if is_narrow_float(d) {
        DType::F32
    } else if is_sub_byte_int(d) {
        if d.is_signed_int() {
            DType::I32
        } else {
            DType::U32
        }
    } else {
        d
    }
}

/// Rewrites `k` so that it computes only in backend-subset types (see the file doc).
pub fn legalize_low_precision(k: &mut Kernel) -> Result<(), KirError> {
    let orig: Vec<Ty> = k.vals.clone();
    for t in k.vals.iter_mut() {
        t.elem = wide(t.elem);
    }
    let name = k.name.clone();
    // The narrow (semantic) type of the values that replace old ones.
    let mut sem_new: HashMap<u32, Ty> = HashMap::new();
    rewrite(k, &mut |b, inst| {
        // Every operand of an original instruction is an original value or a replacement, so
        // the fallback is never used.
        let act = {
            let sem = |v: Val| -> Ty {
                orig.get(v.0 as usize)
                    .copied()
                    .or_else(|| sem_new.get(&v.0).copied())
                    .unwrap_or(Ty::INDEX)
            };
            legalize_inst(b, inst, &sem, &name)?
        };
        if let Action::Replace(new) = &act {
            for (&old, &n) in inst.results.iter().zip(new.iter()) {
                if let Some(&t) = orig.get(old.0 as usize) {
                    sem_new.insert(n.0, t);
                }
            }
        }
        Ok(act)
    })
}

fn unsupported(kernel: &str, b: &KernelBuilder, inst: &Inst, what: &str) -> KirError {
    KirError::Unsupported {
        kernel: kernel.to_string(),
        pass: "legalize-low-precision".into(),
        what: format!("{what} (`{}`)", crate::text::inst_head(b.kernel(), inst)),
    }
}

fn needs(d: DType) -> bool {
    is_narrow_float(d) || is_sub_byte_int(d)
}

fn legalize_inst(
    b: &mut KernelBuilder,
    inst: &Inst,
    sem: &dyn Fn(Val) -> Ty,
    kname: &str,
) -> Result<Action, KirError> {
    use InstKind::*;
    let rt = inst.results.first().map(|&r| sem(r));
    let t = rt.map(|t| t.elem).unwrap_or(DType::Bool);
    let wty = rt.map(|t| t.with_elem(wide(t.elem))).unwrap_or(Ty::BOOL);
    let rep = |v: Val| Ok(Action::Replace(vec![v]));
    match &inst.kind {
        Const(c) if needs(t) => {
            let bits = const_bits(t, *c);
            if is_narrow_float(t) {
                rep(b.const_float(wty, to_f32(t, bits) as f64))
            } else {
                rep(b.const_int(wty, norm_int(t, bits) as i64))
            }
        }
        Unary(op, x) if needs(t) => {
            let r = b.unary(*op, *x);
            rep(round_back(b, t, r))
        }
        Binary(op, x, y) if needs(t) => {
            let y = if matches!(op, BinOp::Shl | BinOp::Shr) && is_sub_byte_int(t) {
                // The shift amount is taken modulo the narrow width.
                let m = b.const_int(b.ty(*y), t.bits() as i64 - 1);
                b.binary(BinOp::And, *y, m)
            } else {
                *y
            };
            let r = b.binary(*op, *x, y);
            rep(round_back(b, t, r))
        }
        ReduceLanes(op, x) if needs(t) => {
            let lanes = b.ty(*x).lanes;
            let bop = op.binop();
            let mut acc = b.extract(*x, 0);
            for l in 1..lanes {
                let e = b.extract(*x, l);
                let s = b.binary(bop, acc, e);
                acc = round_back(b, t, s);
            }
            rep(acc)
        }
        Cast(x, mode) => {
            let f = sem(*x).elem;
            if !needs(f) && !needs(t) {
                return Ok(Action::Keep);
            }
            rep(cast(b, *x, f, t, mode.saturate))
        }
        Bitcast(x) => {
            let (ft, tt) = (sem(*x), rt.unwrap_or(Ty::BOOL));
            if !needs(ft.elem) && !needs(tt.elem) {
                return Ok(Action::Keep);
            }
            if ft.lanes != tt.lanes {
                return Err(unsupported(
                    kname,
                    b,
                    inst,
                    "a bitcast that changes the lane count across a narrow type",
                ));
            }
            // To the bit pattern as i32, then to the target.
            let bits = to_bits(b, *x, ft.elem);
            rep(from_bits(b, bits, tt.elem))
        }
        Math(..) if is_narrow_float(t) => Err(unsupported(
            kname,
            b,
            inst,
            "a math routine on a narrow float; run expand-math first",
        )),
        Mma {
            a_ty, b_ty, acc, ..
        } if needs(*a_ty) || needs(*b_ty) || needs(*acc) => Err(unsupported(
            kname,
            b,
            inst,
            "mma on narrow types; run expand-mma first",
        )),
        Load { buf, index } if needs(t) => {
            let d = b.buf_decl(*buf).dtype;
            let lanes = wty.lanes;
            if d.is_sub_byte() {
                if lanes != 1 {
                    return Err(unsupported(
                        kname,
                        b,
                        inst,
                        "a vector load of a sub-byte dtype",
                    ));
                }
                let (byte, shift) = byte_and_shift(b, d, *index);
                let raw = b.emit_inst(
                    Load {
                        buf: *buf,
                        index: byte,
                    },
                    &[Ty::scalar(DType::U8)],
                )[0];
                let raw = b.cast(raw, DType::I32, NO_SAT);
                let v = b.binary(BinOp::Shr, raw, shift);
                let mask = b.const_int(Ty::scalar(DType::I32), (1 << d.bits()) - 1);
                let code = b.binary(BinOp::And, v, mask);
                rep(from_bits(b, code, d))
            } else {
                let view = storage_view(d).unwrap_or(DType::U8);
                let raw = b.emit_inst(
                    Load {
                        buf: *buf,
                        index: *index,
                    },
                    &[Ty::vector(view, lanes)],
                )[0];
                let code = b.cast(raw, DType::I32, NO_SAT);
                rep(from_bits(b, code, d))
            }
        }
        Store { buf, index, value } if needs(sem(*value).elem) => {
            let d = b.buf_decl(*buf).dtype;
            let vt = b.ty(*value);
            let code = to_bits(b, *value, d);
            if d.is_sub_byte() {
                if vt.lanes != 1 {
                    return Err(unsupported(
                        kname,
                        b,
                        inst,
                        "a vector store of a sub-byte dtype",
                    ));
                }
                let (byte, shift) = byte_and_shift(b, d, *index);
                let i32t = Ty::scalar(DType::I32);
                let mask = b.const_int(i32t, (1 << d.bits()) - 1);
                let code = b.binary(BinOp::And, code, mask);
                let code = b.binary(BinOp::Shl, code, shift);
                let hole = b.binary(BinOp::Shl, mask, shift);
                let keep = b.unary(UnOp::Not, hole);
                let old = b.emit_inst(
                    InstKind::Load {
                        buf: *buf,
                        index: byte,
                    },
                    &[Ty::scalar(DType::U8)],
                )[0];
                let old = b.cast(old, DType::I32, NO_SAT);
                let old = b.binary(BinOp::And, old, keep);
                let new = b.binary(BinOp::Or, old, code);
                let new = b.cast(new, DType::U8, NO_SAT);
                b.store(*buf, byte, new);
            } else {
                let view = storage_view(d).unwrap_or(DType::U8);
                let raw = b.cast(code, view, NO_SAT);
                b.store(*buf, *index, raw);
            }
            Ok(Action::Replace(Vec::new()))
        }
        _ => Ok(Action::Keep),
    }
}

const NO_SAT: CastMode = CastMode { saturate: false };

/// For a sub-byte element index: the byte index (i64) and the bit shift within it (i32).
fn byte_and_shift(b: &mut KernelBuilder, d: DType, index: Val) -> (Val, Val) {
    let per_byte = 8 / d.bits() as i64;
    let lg = per_byte.trailing_zeros() as i64;
    let lgv = b.index(lg);
    let byte = b.binary(BinOp::Shr, index, lgv);
    let m = b.index(per_byte - 1);
    let within = b.binary(BinOp::And, index, m);
    let bits = b.index(d.bits() as i64);
    let shift = b.mul(within, bits);
    let shift = b.cast(shift, DType::I32, NO_SAT);
    (byte, shift)
}

/// Rounds a freshly computed wide value back to narrow type `t` (quantize or wrap).
fn round_back(b: &mut KernelBuilder, t: DType, v: Val) -> Val {
    if is_narrow_float(t) {
        quantize(b, t, v, false)
    } else {
        wrap(b, t, v)
    }
}

/// Wraps an i32/u32 value to the width of sub-byte int `t`.
fn wrap(b: &mut KernelBuilder, t: DType, v: Val) -> Val {
    let vt = b.ty(v);
    let bits = t.bits() as i64;
    if t.is_signed_int() {
        let sh = b.const_int(vt, 32 - bits);
        let l = b.binary(BinOp::Shl, v, sh);
        b.binary(BinOp::Shr, l, sh)
    } else {
        let m = b.const_int(vt, (1 << bits) - 1);
        b.binary(BinOp::And, v, m)
    }
}

/// The layout of a narrow float: exponent bits, mantissa bits, bias, special encodings.
struct Fmt {
    e: u32,
    m: u32,
    bias: i32,
    special: Special,
    max: f32,
}

fn fmt(d: DType) -> Fmt {
    match d {
        DType::F16 => Fmt {
            e: 5,
            m: 10,
            bias: 15,
            special: Special::Ieee,
            max: 65504.0,
        },
        DType::BF16 => Fmt {
            e: 8,
            m: 7,
            bias: 127,
            special: Special::Ieee,
            max: half::bf16::MAX.to_f32(),
        },
        _ => {
            let f = MiniFloat::of(d)
                .or(MiniFloat::of(DType::F4E2M1))
                .expect("f4e2m1 is a mini float");
            Fmt {
                e: f.exp_bits,
                m: f.man_bits,
                bias: f.bias,
                special: f.special,
                max: f.max_finite(),
            }
        }
    }
}

/// Rounds an f32 value to narrow float `t` (RNE; overflow per `saturate` as `MiniFloat::encode`
/// and `half` do) and returns the rounded value as f32.
fn quantize(b: &mut KernelBuilder, t: DType, x: Val, saturate: bool) -> Val {
    let ty = b.ty(x);
    let mut m = Mx::new(b, ty);
    let xb = m.bits(x);
    let isnan = m.is_nan(x);
    if t == DType::BF16 {
        // Round the f32 bit pattern to its top 16 bits; NaN keeps its top bits, made quiet.
        let hi = m.ibin(BinOp::Shr, xb, 16);
        let lsb = m.ibin(BinOp::And, hi, 1);
        let r = m.ibin(BinOp::Add, xb, 0x7fff);
        let r = m.b.add(r, lsb);
        let r = m.ibin(BinOp::And, r, -65536);
        let nb = m.ibin(BinOp::And, xb, -65536);
        let nb = m.ibin(BinOp::Or, nb, 0x0040_0000);
        let r = m.sel(isnan, nb, r);
        return m.float_from_bits(r);
    }
    let f = fmt(t);
    let sat = saturate && t != DType::F16;
    let a = m.abs(x);
    // Normal range: round the f32 significand to f.m bits, ties to even, on the bit pattern.
    let ab = m.bits(a);
    let sh = 23 - f.m as i64;
    let lsb = m.ibin(BinOp::Shr, ab, sh);
    let lsb = m.ibin(BinOp::And, lsb, 1);
    let r = m.ibin(BinOp::Add, ab, (1 << (sh - 1)) - 1);
    let r = m.b.add(r, lsb);
    let r = m.ibin(BinOp::And, r, !((1i64 << sh) - 1));
    let vn = m.float_from_bits(r);
    // Subnormal range: round to a multiple of the smallest subnormal.
    let q_exp = 1 - f.bias - f.m as i32;
    let up = m.mulc(a, 2f64.powi(-q_exp));
    let rq = m.un(UnOp::Round, up);
    let vs = m.mulc(rq, 2f64.powi(q_exp));
    let min_normal = 2f64.powi(1 - f.bias);
    let is_sub = m.cmpc(CmpOp::Lt, a, min_normal);
    let v = m.sel(is_sub, vs, vn);
    // Overflow (infinite inputs included).
    let over = m.cmpc(CmpOp::Gt, v, f.max as f64);
    let ov = if sat || f.special == Special::FiniteOnly {
        f.max as f64
    } else if f.special == Special::Ieee {
        f64::INFINITY
    } else {
        f64::NAN
    };
    let ovv = m.c(ov);
    let v = m.sel(over, ovv, v);
    let v = m.copysign(v, x);
    let v = if f.special == Special::FiniteNanNegZero {
        let z = m.cmpc(CmpOp::Eq, v, 0.0);
        let pz = m.c(0.0);
        m.sel(z, pz, v)
    } else {
        v
    };
    // NaN: stays NaN (with its bits, as `half` keeps them), except in f4e2m1, which encodes +0.
    let nan_v = if f.special == Special::FiniteOnly {
        m.c(0.0)
    } else {
        x
    };
    m.sel(isnan, nan_v, v)
}

/// The bit pattern (as i32, in the low bits) of value `x` of semantic type `t`: for narrow
/// floats the encoding of a representable f32 value (rounding first, so any f32 works), for
/// sub-byte ints the value masked to its width, for other types their bits.
fn to_bits(b: &mut KernelBuilder, x: Val, t: DType) -> Val {
    let ty = b.ty(x);
    let i32t = ty.with_elem(DType::I32);
    if is_sub_byte_int(t) {
        let v = b.cast(x, DType::I32, NO_SAT);
        let mk = b.const_int(i32t, (1 << t.bits()) - 1);
        return b.binary(BinOp::And, v, mk);
    }
    if !is_narrow_float(t) {
        // A backend type of at most 32 bits (the only bitcast partners of narrow types).
        let v = if t.is_float() {
            b.bitcast(x, ty.with_elem(DType::I32))
        } else {
            b.cast(x, DType::I32, NO_SAT)
        };
        if t.bits() < 32 {
            let mk = b.const_int(i32t, (1i64 << t.bits()) - 1);
            return b.binary(BinOp::And, v, mk);
        }
        return v;
    }
    let v = quantize(b, t, x, false);
    let mut m = Mx::new(b, ty);
    let vb = m.bits(v);
    let isnan = m.is_nan(v);
    if t == DType::BF16 {
        let h = m.ibin(BinOp::Shr, vb, 16);
        let h = m.ibin(BinOp::And, h, 0xffff);
        let nh = m.ibin(BinOp::Or, h, 0x40);
        return m.sel(isnan, nh, h);
    }
    let f = fmt(t);
    let a = m.abs(v);
    let ab = m.bits(a);
    // Normal: rebias the exponent, keep the top f.m mantissa bits.
    let e = m.ibin(BinOp::Shr, ab, 23);
    let e = m.ibin(BinOp::Add, e, f.bias as i64 - 127);
    let e = m.ibin(BinOp::Shl, e, f.m as i64);
    let mm = m.ibin(BinOp::Shr, ab, 23 - f.m as i64);
    let mm = m.ibin(BinOp::And, mm, (1 << f.m) - 1);
    let cn = m.b.binary(BinOp::Or, e, mm);
    // Subnormal: the value in units of the smallest subnormal (2^m exactly for the smallest
    // normal, which is its code too).
    let q_exp = 1 - f.bias - f.m as i32;
    let s = m.mulc(a, 2f64.powi(-q_exp));
    let cs = m.int_of(s);
    let is_sub = m.cmpc(CmpOp::Lt, a, 2f64.powi(1 - f.bias));
    let code = m.sel(is_sub, cs, cn);
    let code = if f.special == Special::Ieee {
        let inf = m.cmpc(CmpOp::Eq, a, f64::INFINITY);
        let ic = m.ci((((1 << f.e) - 1) << f.m) as i64);
        m.sel(inf, ic, code)
    } else {
        code
    };
    let sign = m.ibin(BinOp::Shr, vb, 31);
    let sign = m.ibin(BinOp::And, sign, 1);
    let sign = m.ibin(BinOp::Shl, sign, (f.e + f.m) as i64);
    let code = m.b.binary(BinOp::Or, code, sign);
    let code = if f.special == Special::FiniteNanNegZero {
        let z = m.cmpc(CmpOp::Eq, a, 0.0);
        let zc = m.ci(0);
        m.sel(z, zc, code)
    } else {
        code
    };
    let nan_code = match f.special {
        // f16 keeps the NaN's sign and top payload bits, made quiet, as `half` does.
        Special::Ieee if t == DType::F16 => {
            let p = m.ibin(BinOp::Shr, vb, 13);
            let p = m.ibin(BinOp::And, p, 0x3ff);
            let p = m.ibin(BinOp::Or, p, 0x7e00);
            m.b.binary(BinOp::Or, p, sign)
        }
        Special::Ieee => m.ci(((((1 << f.e) - 1) << f.m) | 1) as i64),
        Special::FiniteNanOnes => m.ci(((1 << (f.e + f.m)) - 1) as i64),
        Special::FiniteNanNegZero => m.ci(1 << (f.e + f.m)),
        Special::FiniteOnly => m.ci(0),
    };
    m.sel(isnan, nan_code, code)
}

/// The value of type `t` whose bit pattern is `code` (an i32 value, pattern in the low bits):
/// an f32 for narrow floats, an i32/u32 for sub-byte ints, else a value of `t`.
fn from_bits(b: &mut KernelBuilder, code: Val, t: DType) -> Val {
    let ity = b.ty(code);
    if is_sub_byte_int(t) {
        let v = wrap(b, t, code);
        return b.cast(v, wide(t), NO_SAT);
    }
    if !is_narrow_float(t) {
        return if t.is_float() {
            b.bitcast(code, ity.with_elem(t))
        } else {
            b.cast(code, t, NO_SAT)
        };
    }
    let fty = ity.with_elem(DType::F32);
    let mut m = Mx::new(b, fty);
    if t == DType::BF16 {
        let c = m.ibin(BinOp::And, code, 0xffff);
        let c = m.ibin(BinOp::Shl, c, 16);
        return m.float_from_bits(c);
    }
    if t == DType::F16 {
        return f16_from_bits(&mut m, code);
    }
    let f = fmt(t);
    let e = m.ibin(BinOp::Shr, code, f.m as i64);
    let e = m.ibin(BinOp::And, e, (1 << f.e) - 1);
    let mm = m.ibin(BinOp::And, code, (1 << f.m) - 1);
    let sign = m.ibin(BinOp::Shr, code, (f.e + f.m) as i64);
    let sign = m.ibin(BinOp::And, sign, 1);
    // Normal: rebias into an f32 pattern.
    let fe = m.ibin(BinOp::Add, e, 127 - f.bias as i64);
    let fe = m.ibin(BinOp::Shl, fe, 23);
    let fm = m.ibin(BinOp::Shl, mm, 23 - f.m as i64);
    let fb = m.b.binary(BinOp::Or, fe, fm);
    let vn = m.float_from_bits(fb);
    // Subnormal (and zero): mantissa times the smallest subnormal.
    let mf = m.float_of(mm);
    let vs = m.mulc(mf, 2f64.powi(1 - f.bias - f.m as i32));
    let zi = m.ci(0);
    let e0 = m.b.cmp(CmpOp::Eq, e, zi);
    let v = m.sel(e0, vs, vn);
    let neg = m.b.cmp(CmpOp::Ne, sign, zi);
    let nv = m.neg(v);
    let v = m.sel(neg, nv, v);
    let emax = m.ci((1 << f.e) - 1);
    let mmax = m.ci((1 << f.m) - 1);
    match f.special {
        Special::Ieee => {
            let top = m.b.cmp(CmpOp::Eq, e, emax);
            let m0 = m.b.cmp(CmpOp::Eq, mm, zi);
            let inf = m.c(f64::INFINITY);
            let ninf = m.c(f64::NEG_INFINITY);
            let sinf = m.sel(neg, ninf, inf);
            // f16 NaNs keep sign and payload (quiet bit set), as `half` decodes them; the
            // float8 NaN decodes to f32's NaN with the sign.
            let nan = if t == DType::F16 {
                let p = m.ibin(BinOp::Shl, mm, 13);
                let p = m.ibin(BinOp::Or, p, 0x7fc0_0000);
                let s = m.ibin(BinOp::Shl, sign, 31);
                let p = m.b.binary(BinOp::Or, p, s);
                m.float_from_bits(p)
            } else {
                let n = m.c(f64::NAN);
                let nn = m.neg(n);
                m.sel(neg, nn, n)
            };
            let special = m.sel(m0, sinf, nan);
            m.sel(top, special, v)
        }
        Special::FiniteNanOnes => {
            let top = m.b.cmp(CmpOp::Eq, e, emax);
            let mt = m.b.cmp(CmpOp::Eq, mm, mmax);
            let isnan = m.and(top, mt);
            let nan = m.c(f64::NAN);
            m.sel(isnan, nan, v)
        }
        Special::FiniteNanNegZero => {
            let c = m.ibin(BinOp::And, code, (1 << (f.e + f.m + 1)) - 1);
            let sb = m.ci(1 << (f.e + f.m));
            let isnan = m.b.cmp(CmpOp::Eq, c, sb);
            let nan = m.c(f64::NAN);
            m.sel(isnan, nan, v)
        }
        Special::FiniteOnly => v,
    }
}

/// The f32 holding the f16 whose bit pattern is `code`, in a dozen branch-free integer and
/// float operations (so it vectorises; weights stored as f16 are decoded this way on every
/// load). The magnitude bits shifted into an f32's exponent and mantissa fields read as the
/// f32 `v · 2^-112` for every finite f16 `v`, subnormals included (the shifted pattern is then an
/// f32 subnormal, which an IEEE multiply handles exactly), so one multiply by `2^112` rebiases.
/// Infinities and NaNs (magnitude ≥ 0x7c00) get f32's all-ones exponent with their payload;
/// NaNs are made quiet, as `half` decodes them.
fn f16_from_bits(m: &mut Mx, code: Val) -> Val {
    let mag = m.ibin(BinOp::And, code, 0x7fff);
    let shifted = m.ibin(BinOp::Shl, mag, 13);
    let scaled = m.float_from_bits(shifted);
    let finite = m.mulc(scaled, 2f64.powi(112));
    let finite = m.bits(finite);
    let special = m.ibin(BinOp::Or, shifted, 0x7f80_0000);
    let quiet = m.ibin(BinOp::Or, shifted, 0x7fc0_0000);
    let inf_code = m.ci(0x7c00);
    let is_nan = m.b.cmp(CmpOp::Gt, mag, inf_code);
    let special = m.sel(is_nan, quiet, special);
    let is_special = m.b.cmp(CmpOp::Ge, mag, inf_code);
    let v = m.sel(is_special, special, finite);
    let sign = m.ibin(BinOp::And, code, 0x8000);
    let sign = m.ibin(BinOp::Shl, sign, 16);
    let v = m.b.binary(BinOp::Or, v, sign);
    m.float_from_bits(v)
}

/// A cast from semantic type `f` to `t` where at least one is narrow or sub-byte; `x` is
/// already in its wide form.
fn cast(b: &mut KernelBuilder, x: Val, f: DType, t: DType, saturate: bool) -> Val {
    let xt = b.ty(x);
    if is_narrow_float(t) {
        // To an f32 holding the exact source value or its value rounded to odd, then quantize.
        let v = match f {
            _ if is_narrow_float(f) || f == DType::F32 => x,
            _ if is_sub_byte_int(f) => b.cast(x, DType::F32, NO_SAT),
            DType::Bool | DType::I8 | DType::U8 | DType::I16 | DType::U16 => {
                b.cast(x, DType::F32, NO_SAT)
            }
            DType::I32 | DType::U32 => {
                let d = b.cast(x, DType::F64, NO_SAT);
                f64_to_f32_odd(b, d)
            }
            DType::F64 => f64_to_f32_odd(b, x),
            _ => {
                let d = int64_to_f64_odd(b, x, f.is_signed_int());
                f64_to_f32_odd(b, d)
            }
        };
        return quantize(b, t, v, saturate);
    }
    if is_sub_byte_int(t) {
        let it = wide(t);
        if f.is_float() {
            // Truncate and saturate into the narrow range (NaN gives 0).
            let v = b.cast(x, it, NO_SAT);
            let (lo, hi) = if t.is_signed_int() {
                (-(1i64 << (t.bits() - 1)), (1i64 << (t.bits() - 1)) - 1)
            } else {
                (0, (1i64 << t.bits()) - 1)
            };
            let lo = b.const_int(xt.with_elem(it), lo);
            let hi = b.const_int(xt.with_elem(it), hi);
            let v = b.min(v, hi);
            return b.max(v, lo);
        }
        let v = b.cast(x, it, NO_SAT);
        return wrap(b, t, v);
    }
    // From a narrow or sub-byte type into a backend type: the wide value converts exactly as
    // the narrow one would.
    b.cast(x, t, NO_SAT)
}

/// f64 → f32 rounded to odd, as kernel IR (see `interp::f64_to_f32_odd`).
fn f64_to_f32_odd(b: &mut KernelBuilder, x: Val) -> Val {
    let xt = b.ty(x);
    let f = b.cast(x, DType::F32, NO_SAT);
    let back = b.cast(f, DType::F64, NO_SAT);
    let inexact = b.cmp(CmpOp::Ne, back, x);
    let notnan = b.cmp(CmpOp::Eq, x, x);
    let fix = b.binary(BinOp::And, inexact, notnan);
    let ab = b.unary(UnOp::Abs, back);
    let ax = b.unary(UnOp::Abs, x);
    let away = b.cmp(CmpOp::Gt, ab, ax);
    let i32t = xt.with_elem(DType::I32);
    let fb = b.bitcast(f, i32t);
    let one = b.const_int(i32t, 1);
    let dec = b.sub(fb, one);
    let tb = b.select(away, dec, fb);
    let odd = b.binary(BinOp::Or, tb, one);
    let r = b.select(fix, odd, fb);
    b.bitcast(r, xt.with_elem(DType::F32))
}

/// A 64-bit int → f64 rounded to odd, as kernel IR.
fn int64_to_f64_odd(b: &mut KernelBuilder, v: Val, signed: bool) -> Val {
    let vt = b.ty(v);
    let f64t = vt.with_elem(DType::F64);
    let f = b.cast(v, DType::F64, NO_SAT);
    let back = b.cast(f, vt.elem, NO_SAT);
    let limit = b.const_float(
        f64t,
        if signed {
            9223372036854775808.0
        } else {
            18446744073709551616.0
        },
    );
    let big = b.cmp(CmpOp::Ge, f, limit);
    let ne = b.cmp(CmpOp::Ne, back, v);
    let inexact = b.binary(BinOp::Or, ne, big);
    let gt = b.cmp(CmpOp::Gt, back, v);
    let away_pos = b.binary(BinOp::Or, big, gt);
    let away = if signed {
        let zero = b.const_int(vt, 0);
        let nonneg = b.cmp(CmpOp::Ge, v, zero);
        let lt = b.cmp(CmpOp::Lt, back, v);
        b.select(nonneg, away_pos, lt)
    } else {
        away_pos
    };
    let i64t = vt.with_elem(DType::I64);
    let fb = b.bitcast(f, i64t);
    let one = b.const_int(i64t, 1);
    let dec = b.sub(fb, one);
    let tb = b.select(away, dec, fb);
    let odd = b.binary(BinOp::Or, tb, one);
    let r = b.select(inexact, odd, fb);
    b.bitcast(r, f64t)
}
