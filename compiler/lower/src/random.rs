//! Lowerings of the random ops: RandomUniform, RandomNormal, their `…Like` forms, Bernoulli,
//! Multinomial, and Dropout's training mode. Start at [`lower`].
//!
//! Every random value is a pure function of the node's seed and the element's index: a
//! counter-based generator ([`bits`]: the SplitMix64 output function applied to
//! `key + (counter + 1) · φ`, where `key` mixes the seed), so kernels need no state, any
//! target computes the same numbers, every run of an artifact gives the same outputs, and the
//! elements can be computed in any order and on any number of threads. The seed is the
//! `seed` attribute (its f32 bits); a node without one gets a seed derived from its name, so
//! two unseeded nodes draw different streams and a model is still deterministic. None of
//! this reproduces numpy's or onnxruntime's generators, whose exact outputs the ONNX node
//! tests expect (docs/ops.md).
//!
//! - Uniform: the top 24 bits scaled by 2⁻²⁴ (53 bits for f64), in `[0, 1)`, then
//!   `low + u · (high − low)`.
//! - Normal: Box–Muller on two draws, `sqrt(−2 ln u₁) · cos(2π u₂)` with `u₁` in `(0, 1]`.
//! - Bernoulli: `u < p`. Dropout: `mask = u ≥ ratio`, `y = x · mask / (1 − ratio)`.
//! - Multinomial: per sample, the first class whose cumulative `exp(logit − max)` exceeds
//!   `u · Σ`.

use crate::movement::{chunking, for_each_item, operand, result};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op, ValueId};
use tessera_kir::{
    Access, BinOp, CastMode, CmpOp, Execution, KernelBuilder, MathFn, Ty, UnOp, Val,
};

const NO_SAT: CastMode = CastMode { saturate: false };

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    match node.op {
        Op::RandomUniform | Op::RandomUniformLike => fill(cx, node, Dist::Uniform),
        Op::RandomNormal | Op::RandomNormalLike => fill(cx, node, Dist::Normal),
        Op::Bernoulli => bernoulli(cx, node),
        Op::Multinomial => multinomial(cx, node),
        op => Err(cx.unsupported(format!("no lowering for op {op}"))),
    }
}

/// The 64-bit key of `node`'s stream: its `seed` attribute's bits, or a hash of its name.
pub(crate) fn node_key(node: &Node) -> u64 {
    let raw = match node.attr("seed") {
        Some(_) => node.attr_float("seed", 0.0).to_bits() as u64 | 1 << 32,
        None => node.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
            (h ^ c as u64).wrapping_mul(0x0100_0000_01b3)
        }),
    };
    mix(raw)
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Kernel code for 64 random bits of draw `counter` (an index) in the stream `key`: the same
/// function as [`mix`] of `key + (counter + 1) · φ`.
pub(crate) fn bits(b: &mut KernelBuilder, key: u64, counter: Val) -> Val {
    let u64t = Ty::scalar(DType::U64);
    let c = b.cast(counter, DType::U64, NO_SAT);
    let one = b.const_int(u64t, 1);
    let c1 = b.binary(BinOp::Add, c, one);
    let phi = b.const_int(u64t, 0x9e37_79b9_7f4a_7c15u64 as i64);
    let step = b.binary(BinOp::Mul, c1, phi);
    let k = b.const_int(u64t, key as i64);
    let mut z = b.binary(BinOp::Add, k, step);
    for (shift, mul) in [(30, 0xbf58_476d_1ce4_e5b9u64), (27, 0x94d0_49bb_1331_11eb)] {
        let s = b.const_int(u64t, shift);
        let t = b.binary(BinOp::Shr, z, s);
        let x = b.binary(BinOp::Xor, z, t);
        let m = b.const_int(u64t, mul as i64);
        z = b.binary(BinOp::Mul, x, m);
    }
    let s = b.const_int(u64t, 31);
    let t = b.binary(BinOp::Shr, z, s);
    b.binary(BinOp::Xor, z, t)
}

/// A uniform value in `[0, 1)` of float type `ft` (f64: 53 bits, else 24) from draw `counter`;
/// `open_low` shifts it to `(0, 1]`.
pub(crate) fn uniform(
    b: &mut KernelBuilder,
    key: u64,
    counter: Val,
    ft: DType,
    open_low: bool,
) -> Val {
    let z = bits(b, key, counter);
    let width = if ft == DType::F64 { 53 } else { 24 };
    let s = b.const_int(Ty::scalar(DType::U64), 64 - width);
    let mut top = b.binary(BinOp::Shr, z, s);
    if open_low {
        let one = b.const_int(Ty::scalar(DType::U64), 1);
        top = b.binary(BinOp::Add, top, one);
    }
    let f = b.cast(top, ft, NO_SAT);
    let scale = b.const_float(Ty::scalar(ft), 2f64.powi(-(width as i32)));
    b.binary(BinOp::Mul, f, scale)
}

#[derive(Clone, Copy)]
enum Dist {
    Uniform,
    Normal,
}

/// The float type the generator computes a result of `dt` in.
fn calc_type(dt: DType) -> DType {
    if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

fn fill(cx: &mut LowerCx, node: &Node, dist: Dist) -> Result<Execution> {
    let y = result(cx, node, 0)?;
    let dt = cx.dtype(y)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("{} producing {dt} (floats only)", node.op)));
    }
    let total = cx.numel(y)?;
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let key = node_key(node);
    let (p0, p1) = match dist {
        Dist::Uniform => (
            node.attr_float("low", 0.0) as f64,
            node.attr_float("high", 1.0) as f64,
        ),
        Dist::Normal => (
            node.attr_float("mean", 0.0) as f64,
            node.attr_float("scale", 1.0) as f64,
        ),
    };
    let yb = cx.buffer(y)?;
    let mut kb = KernelBuilder::new(cx.kernel_name(&node.op.name().to_ascii_lowercase()));
    let dst = kb.param("y", dt, total, Access::Write);
    let (_, chunk) = chunking(total, 16384, dt);
    let ft = calc_type(dt);
    for_each_item(&mut kb, total, chunk, |b, e| {
        let v = match dist {
            Dist::Uniform => {
                let u = uniform(b, key, e, ft, false);
                let span = b.const_float(Ty::scalar(ft), p1 - p0);
                let lo = b.const_float(Ty::scalar(ft), p0);
                let s = b.binary(BinOp::Mul, u, span);
                b.binary(BinOp::Add, lo, s)
            }
            Dist::Normal => {
                // Draws 2e and 2e + 1 feed one Box–Muller pair; element e keeps the cosine.
                let two = b.index(2);
                let c0 = b.mul(e, two);
                let one = b.index(1);
                let c1 = b.add(c0, one);
                let u1 = uniform(b, key, c0, ft, true);
                let u2 = uniform(b, key, c1, ft, false);
                let l = b.math(MathFn::Log, &[u1]);
                let m2 = b.const_float(Ty::scalar(ft), -2.0);
                let r2 = b.binary(BinOp::Mul, m2, l);
                let r = b.unary(UnOp::Sqrt, r2);
                let tau = b.const_float(Ty::scalar(ft), std::f64::consts::TAU);
                let a = b.binary(BinOp::Mul, tau, u2);
                let c = b.math(MathFn::Cos, &[a]);
                let n = b.binary(BinOp::Mul, r, c);
                let sc = b.const_float(Ty::scalar(ft), p1);
                let mean = b.const_float(Ty::scalar(ft), p0);
                let sn = b.binary(BinOp::Mul, n, sc);
                b.binary(BinOp::Add, mean, sn)
            }
        };
        let v = b.cast(v, dt, NO_SAT);
        b.store(dst, e, v);
    });
    cx.launch(kb.finish(), vec![yb]);
    Ok(Execution::Kernel)
}

fn bernoulli(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = (operand(cx, node, 0)?, result(cx, node, 0)?);
    let (xt, dt) = (cx.dtype(x)?, cx.dtype(y)?);
    if !xt.is_float() {
        return Err(cx.unsupported(format!("Bernoulli of {xt} probabilities")));
    }
    let total = cx.numel(y)?;
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let key = node_key(node);
    let args = vec![cx.buffer(x)?, cx.buffer(y)?];
    let mut kb = KernelBuilder::new(cx.kernel_name("bernoulli"));
    let src = kb.param("p", xt, total, Access::Read);
    let dst = kb.param("y", dt, total, Access::Write);
    let (_, chunk) = chunking(total, 16384, dt);
    let ft = calc_type(xt);
    for_each_item(&mut kb, total, chunk, |b, e| {
        let p = b.load(src, e, 1);
        let p = b.cast(p, ft, NO_SAT);
        let u = uniform(b, key, e, ft, false);
        let hit = b.cmp(CmpOp::Lt, u, p);
        let v = b.cast(hit, dt, NO_SAT);
        b.store(dst, e, v);
    });
    cx.launch(kb.finish(), args);
    Ok(Execution::Kernel)
}

fn multinomial(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = (operand(cx, node, 0)?, result(cx, node, 0)?);
    let (xd, yd) = (cx.dims(x)?, cx.dims(y)?);
    let (xt, dt) = (cx.dtype(x)?, cx.dtype(y)?);
    if xd.len() != 2 || yd.len() != 2 || yd[0] != xd[0] {
        return Err(cx.invalid(format!(
            "Multinomial needs input [batch, classes] and output [batch, sample_size]; got {xd:?} -> {yd:?}"
        )));
    }
    if !xt.is_float() || !matches!(dt, DType::I32 | DType::I64) {
        return Err(cx.unsupported(format!("Multinomial of {xt} into {dt}")));
    }
    let (batch, classes, samples) = (xd[0], xd[1], yd[1]);
    let total = batch * samples;
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    if classes == 0 {
        return Err(cx.invalid("Multinomial over 0 classes"));
    }
    let key = node_key(node);
    let args = vec![cx.buffer(x)?, cx.buffer(y)?];
    let mut kb = KernelBuilder::new(cx.kernel_name("multinomial"));
    let src = kb.param("logits", xt, batch * classes, Access::Read);
    let dst = kb.param("y", dt, total, Access::Write);
    let ft = calc_type(xt);
    let f = Ty::scalar(ft);
    kb.set_grid(&[total]);
    let b = &mut kb;
    let e = b.program_id(0);
    let sv = b.index(samples as i64);
    let row = b.div(e, sv);
    let cv = b.index(classes as i64);
    let base = b.mul(row, cv);
    let (lo, hi, one) = (b.index(0), b.index(classes as i64), b.index(1));
    let load = |b: &mut KernelBuilder, j: Val| {
        let i = b.add(base, j);
        let v = b.load(src, i, 1);
        b.cast(v, ft, NO_SAT)
    };
    // max, then Σ exp(logit − max), then the first class whose running sum exceeds u · Σ.
    let ninf = b.const_float(f, f64::NEG_INFINITY);
    let mx = b.for_loop(lo, hi, one, &[ninf], |b, j, acc| {
        let v = load(b, j);
        vec![b.binary(BinOp::Max, acc[0], v)]
    })[0];
    let zero = b.const_float(f, 0.0);
    let sum = b.for_loop(lo, hi, one, &[zero], |b, j, acc| {
        let v = load(b, j);
        let d = b.binary(BinOp::Sub, v, mx);
        let p = b.math(MathFn::Exp, &[d]);
        vec![b.binary(BinOp::Add, acc[0], p)]
    })[0];
    let u = uniform(b, key, e, ft, false);
    let target = b.binary(BinOp::Mul, u, sum);
    // (running sum, chosen class); `classes` means none chosen yet, and a sum that rounding
    // leaves short of the target picks the last class.
    let none = b.index(classes as i64);
    let picked = b.for_loop(lo, hi, one, &[zero, none], |b, j, acc| {
        let v = load(b, j);
        let d = b.binary(BinOp::Sub, v, mx);
        let p = b.math(MathFn::Exp, &[d]);
        let run = b.binary(BinOp::Add, acc[0], p);
        let open = b.cmp(CmpOp::Eq, acc[1], none);
        let past = b.cmp(CmpOp::Gt, run, target);
        let now = b.binary(BinOp::And, open, past);
        vec![run, b.select(now, j, acc[1])]
    })[1];
    let last = b.index(classes as i64 - 1);
    let found = b.min(picked, last);
    let v = b.cast(found, dt, NO_SAT);
    b.store(dst, e, v);
    cx.launch(kb.finish(), args);
    Ok(Execution::Kernel)
}

/// Dropout in training mode: `y = x · mask / (1 − ratio)` and `mask = u ≥ ratio`. The ratio
/// (operand 1, default 0.5) may be a constant or a run-time value, which must lie in `[0, 1)`
/// (else the launch traps, naming the input). `train` says whether the mode is decided at run
/// time (`None`: always on); when it is off, `y = x` and the mask is all true.
pub(crate) fn dropout_training(
    cx: &mut LowerCx,
    node: &Node,
    train: Option<ValueId>,
) -> Result<Execution> {
    let (x, y) = (operand(cx, node, 0)?, result(cx, node, 0)?);
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("Dropout of {dt} in training mode")));
    }
    let ratio_in = node.input(1);
    let known = match ratio_in {
        None => Some(0.5),
        Some(r) => cx.konst(r).and_then(|t| t.get_f64(0)),
    };
    if let Some(r) = known {
        if !(0.0..1.0).contains(&r) {
            return Err(cx.invalid(format!("Dropout ratio {r} is outside [0, 1)")));
        }
    }
    let total = cx.numel(y)?;
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let key = node_key(node);
    let mask = node.outputs.get(1).copied();
    let run_ratio = match (known, ratio_in) {
        (None, Some(r)) => Some((r, cx.dtype(r)?)),
        _ => None,
    };
    let code = run_ratio.map(|_| cx.trap_site(node, "ratio", "outside [0, 1)"));
    let mut args = vec![cx.buffer(x)?];
    if let Some((r, _)) = run_ratio {
        args.push(cx.buffer(r)?);
    }
    if let Some(t) = train {
        args.push(cx.buffer(t)?);
    }
    args.push(cx.buffer(y)?);
    if let Some(m) = mask {
        args.push(cx.buffer(m)?);
    }
    let mut kb = KernelBuilder::new(cx.kernel_name("dropout"));
    let src = kb.param("x", dt, total, Access::Read);
    let rb = run_ratio.map(|(_, rt)| kb.param("ratio", rt, 1, Access::Read));
    let tb = train.map(|_| kb.param("training_mode", DType::Bool, 1, Access::Read));
    let dst = kb.param("y", dt, total, Access::Write);
    let mb = mask.map(|_| kb.param("mask", DType::Bool, total, Access::Write));
    let (_, chunk) = chunking(total, 16384, dt);
    let ft = calc_type(dt);
    let f = Ty::scalar(ft);
    let b = &mut kb;
    // The ratio, the scale of kept elements, and whether training is on, once per instance.
    let r = match (rb, code) {
        (Some(rb), Some(code)) => {
            let z = b.index(0);
            let r = b.load(rb, z, 1);
            let r = b.cast(r, ft, NO_SAT);
            let (zero, one) = (b.const_float(f, 0.0), b.const_float(f, 1.0));
            let ge = b.cmp(CmpOp::Ge, r, zero);
            let lt = b.cmp(CmpOp::Lt, r, one);
            let ok = b.binary(BinOp::And, ge, lt);
            let bad = b.unary(UnOp::Not, ok);
            b.trap_if(bad, code, z);
            r
        }
        _ => b.const_float(f, known.unwrap_or(0.5)),
    };
    let one = b.const_float(f, 1.0);
    let kept_frac = b.binary(BinOp::Sub, one, r);
    let mut scale = b.binary(BinOp::Div, one, kept_frac);
    let on = tb.map(|tb| {
        let z = b.index(0);
        b.load(tb, z, 1)
    });
    if let Some(on) = on {
        scale = b.select(on, scale, one);
    }
    for_each_item(b, total, chunk, |b, e| {
        let xv = b.load(src, e, 1);
        let xv = b.cast(xv, ft, NO_SAT);
        let u = uniform(b, key, e, ft, false);
        let mut keep = b.cmp(CmpOp::Ge, u, r);
        if let Some(on) = on {
            let off = b.unary(UnOp::Not, on);
            keep = b.binary(BinOp::Or, keep, off);
        }
        let kept = b.binary(BinOp::Mul, xv, scale);
        let zero = b.const_float(f, 0.0);
        let v = b.select(keep, kept, zero);
        let v = b.cast(v, dt, NO_SAT);
        b.store(dst, e, v);
        if let Some(mb) = mb {
            b.store(mb, e, keep);
        }
    });
    cx.launch(kb.finish(), args);
    Ok(Execution::Kernel)
}
