//! Kernels shared by the unit tests of several modules (text round trips, pass equivalence):
//! small but covering every instruction kind. Test-only.

use crate::builder::KernelBuilder;
use crate::kernel::*;
use tessera_ir::DType;

/// A kernel that uses every instruction kind at least once, with odd names and literals.
pub fn kitchen_sink() -> Kernel {
    let mut b = KernelBuilder::new("sink");
    let x = b.param("x", DType::F32, 16, Access::Read);
    let h = b.param("h.in/0", DType::F16, 16, Access::Read);
    let q = b.param("q", DType::I4, 16, Access::Read);
    let y = b.param("y", DType::F32, 16, Access::Write);
    let c = b.param("acc", DType::F32, 16, Access::ReadWrite);
    let t = b.local("tmp", Space::Shared, DType::F32, 16);
    let l = b.local("priv \"q\"", Space::Local, DType::I32, 4);
    b.set_grid(&[2, 1]);
    let p = b.program_id(0);
    let _p1 = b.program_id(1);
    let nan = b.const_float(Ty::F32, f64::from_bits(0x7ff8_0000_0000_0001));
    let tiny = b.const_float(Ty::F32, 1e-40);
    let neg0 = b.const_float(Ty::F32, -0.0);
    let inf = b.const_float(Ty::scalar(DType::F64), f64::NEG_INFINITY);
    let third = b.const_float(Ty::scalar(DType::F64), 1.0 / 3.0);
    let _ = (nan, inf, third);
    let eight = b.index(8);
    let base = b.mul(p, eight);
    let zero_f = b.const_float(Ty::F32, 0.0);
    let s = b.range_fold(0, 8, &[zero_f, neg0], |b, i, acc| {
        let at = b.add(base, i);
        let v = b.load(x, at, 1);
        let hv = b.load(h, at, 1);
        let hw = b.cast(hv, DType::F32, CastMode { saturate: false });
        let qv = b.load(q, at, 1);
        let qf = b.cast(qv, DType::F32, CastMode { saturate: false });
        let m = b.mul(v, hw);
        let m = b.add(m, qf);
        let e = b.math(MathFn::Exp, &[m]);
        let pw = b.math(MathFn::Pow, &[e, v]);
        let a = b.unary(UnOp::Abs, pw);
        let n = b.unary(UnOp::Neg, a);
        let sq = b.unary(UnOp::Sqrt, a);
        let fl = b.unary(UnOp::Floor, sq);
        let ce = b.unary(UnOp::Ceil, fl);
        let ro = b.unary(UnOp::Round, ce);
        let tr = b.unary(UnOp::Trunc, ro);
        let mx = b.max(tr, n);
        let mn = b.min(mx, tiny);
        let r = b.binary(BinOp::Rem, mn, v);
        let d = b.div(r, v);
        let sb = b.sub(d, acc[1]);
        let lt = b.cmp(CmpOp::Lt, sb, zero_f);
        let sel = b.select(lt, sb, m);
        b.store(t, i, sel);
        vec![b.add(acc[0], sel), sb]
    });
    let z = b.index(0);
    b.store(y, base, s[0]);
    // Vector work: load 4 lanes, splat, compare, reduce, extract, bitcast, f8 cast.
    let four = b.index(4);
    let v = b.load(x, four, 4);
    let sp = b.splat(s[1], 4);
    let w = b.mul(v, sp);
    let ge = b.cmp(CmpOp::Ge, w, v);
    let nge = b.unary(UnOp::Not, ge);
    let sel = b.select(nge, w, v);
    let red = b.reduce_lanes(ReduceOp::Add, sel);
    let mxr = b.reduce_lanes(ReduceOp::Max, sel);
    let ex = b.extract(sel, 3);
    let bits = b.bitcast(sel, Ty::vector(DType::U32, 4));
    let sh = b.const_int(Ty::vector(DType::U32, 4), 3);
    let bits = b.binary(BinOp::Shr, bits, sh);
    let bits = b.binary(BinOp::Xor, bits, sh);
    let bi = b.bitcast(bits, Ty::vector(DType::I32, 4));
    let bi = b.extract(bi, 0);
    b.store(l, z, bi);
    let f8 = b.cast(red, DType::F8E4M3FN, CastMode { saturate: true });
    let f8b = b.cast(f8, DType::F32, CastMode { saturate: false });
    let sum = b.add(f8b, mxr);
    let sum = b.add(sum, ex);
    let pos = b.cmp(CmpOp::Gt, sum, zero_f);
    let r = b.if_else(
        pos,
        &[Ty::F32],
        |b| vec![b.math(MathFn::Tanh, &[sum])],
        |b| vec![b.math(MathFn::Erf, &[sum])],
    );
    let one = b.index(1);
    let at = b.add(base, one);
    b.store(y, at, r[0]);
    b.if_then(pos, |b| {
        let w = b.load(t, z, 4);
        let two = b.index(2);
        let at = b.add(base, two);
        b.store(y, at, w);
    });
    let off = b.index(0);
    let _ = off;
    b.mma(
        TileRef {
            buf: x,
            offset: base,
            row_stride: 4,
            col_stride: 1,
        },
        TileRef {
            buf: x,
            offset: z,
            row_stride: 1,
            col_stride: 4,
        },
        TileRef {
            buf: c,
            offset: base,
            row_stride: 4,
            col_stride: 1,
        },
        2,
        4,
        4,
    );
    b.finish()
}
