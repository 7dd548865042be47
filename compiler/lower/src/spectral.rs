//! Lowering of the spectral ops (DFT, STFT, MelWeightMatrix), the optimizer steps of
//! `ai.onnx.preview.training` (Momentum, Adagrad, Adam) and the `ai.onnx.ml` ops Binarizer and
//! ArrayFeatureExtractor. Start at [`lower`]; DFT and STFT share one direct-sum kernel
//! ([`dft_kernel`]), the others are elementwise or gather kernels.

use crate::util::{emit_elementwise, konst_like, EwOperand};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op, ValueId};
use tessera_kir::{
    Access, BinOp, CastMode, CmpOp, Execution, KernelBuilder, MathFn, Ty, UnOp, Val,
};

const NO_SAT: CastMode = CastMode { saturate: false };

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    match node.op {
        Op::DFT => dft(cx, node),
        Op::STFT => stft(cx, node),
        Op::MelWeightMatrix => mel_weight_matrix(cx, node),
        Op::Momentum | Op::Adagrad | Op::Adam => optimizer(cx, node),
        Op::Binarizer => binarizer(cx, node),
        Op::ArrayFeatureExtractor => array_feature_extractor(cx, node),
        op => Err(cx.unsupported(format!("{op} is not lowered by spectral.rs"))),
    }
}

fn output(cx: &LowerCx, node: &Node, k: usize) -> Result<ValueId> {
    node.outputs
        .get(k)
        .copied()
        .ok_or_else(|| cx.invalid(format!("missing result {k}")))
}

fn input(cx: &LowerCx, node: &Node, i: usize) -> Result<ValueId> {
    node.input(i)
        .ok_or_else(|| cx.invalid(format!("missing operand {i}")))
}

/// Operand `i` as one compile-time integer, if present.
fn const_scalar(cx: &LowerCx, node: &Node, i: usize) -> Result<Option<i64>> {
    match cx.const_ints(node, i)?.as_deref() {
        None => Ok(None),
        Some([v]) => Ok(Some(*v)),
        Some(v) => Err(cx.invalid(format!("operand {i} must hold one value, not {}", v.len()))),
    }
}

// ==== the direct-sum DFT kernel (DFT, STFT) ====

/// What the summation computes.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `Y[k] = sum_n x[n] e^{-2 pi i k n / N}`.
    Forward,
    /// `y[n] = 1/N sum_k X[k] e^{+2 pi i k n / N}`, complex result.
    Inverse,
    /// The inverse of a one-sided spectrum: the Hermitian extension is summed implicitly
    /// (weights 1 for bin 0 and bin N/2, 2 otherwise) and only the real part is produced.
    InverseReal,
}

/// The geometry of one DFT launch. An output element is addressed by (outer `o`, middle `j`,
/// bin `k`); its input run starts at `o*in_o + j*in_j` with element `n` at `+ n*in_n`, each
/// element having `comps` (1 or 2) interleaved parts.
struct DftPlan {
    mode: Mode,
    /// The transform length N.
    n: u64,
    /// Input elements summed per output (the input run, truncated or zero-padded to N).
    terms: u64,
    /// Output bins per run.
    bins: u64,
    outer: u64,
    middle: u64,
    comps: u64,
    in_o: u64,
    in_j: u64,
    in_n: u64,
    /// Output strides of `o`, `j` and `k`; each element has `out_comps` parts.
    out_o: u64,
    out_j: u64,
    out_k: u64,
    out_comps: u64,
}

/// Emits and launches the direct-sum DFT: O(N * terms) per run, exact enough for the
/// lengths models use on the way to a real FFT. Angles are reduced as integers (`k*n mod N`)
/// before scaling, so they stay in `[0, 2 pi)` whatever the length.
fn dft_kernel(
    cx: &mut LowerCx,
    name: &str,
    p: &DftPlan,
    x: ValueId,
    window: Option<ValueId>,
    y: ValueId,
) -> Result<()> {
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("{name} on {dt}")));
    }
    // Sums run in f64: the sine of a multiple of pi must come out near enough to zero that
    // bins the reference computes as exact zeros stay within tolerance.
    let ct = DType::F64;
    let at = Ty::scalar(ct);
    let xn = cx.numel(x)?;
    let yn = cx.numel(y)?;
    let xb = cx.buffer(x)?;
    let wb = match window {
        Some(w) => Some((cx.buffer(w)?, cx.dtype(w)?, cx.numel(w)?)),
        None => None,
    };
    let yb = cx.buffer(y)?;
    if yn == 0 {
        return Ok(());
    }
    let kname = cx.kernel_name(name);
    let mut b = KernelBuilder::new(kname);
    let xp = b.param("x", dt, xn, Access::Read);
    let wp = wb.map(|(_, wdt, wn)| b.param("window", wdt, wn, Access::Read));
    let yp = b.param("y", dt, yn, Access::Write);
    let mut args = vec![xb];
    if let Some((w, _, _)) = wb {
        args.push(w);
    }
    args.push(yb);
    let step = 2.0 * std::f64::consts::PI / p.n as f64;
    let scale = if p.mode == Mode::Forward {
        1.0
    } else {
        1.0 / p.n as f64
    };
    // `%` rather than `is_multiple_of`, which is newer than the workspace MSRV (1.85).
    #[allow(clippy::manual_is_multiple_of)]
    let even = p.n % 2 == 0;
    b.range(0, p.outer as i64, |b, o| {
        b.range(0, p.middle as i64, |b, j| {
            b.range(0, p.bins as i64, |b, k| {
                let c_in_o = b.index(p.in_o as i64);
                let c_in_j = b.index(p.in_j as i64);
                let base_o = b.mul(o, c_in_o);
                let base_j = b.mul(j, c_in_j);
                let base = b.add(base_o, base_j);
                let zero = b.const_float(at, 0.0);
                let acc = b.range_fold(0, p.terms as i64, &[zero, zero], |b, n, acc| {
                    let c_in_n = b.index(p.in_n as i64);
                    let off = b.mul(n, c_in_n);
                    let at_n = b.add(base, off);
                    let xr = b.load(xp, at_n, 1);
                    let mut xr = b.cast(xr, ct, NO_SAT);
                    let mut xi = if p.comps == 2 {
                        let one = b.index(1);
                        let at_i = b.add(at_n, one);
                        let v = b.load(xp, at_i, 1);
                        b.cast(v, ct, NO_SAT)
                    } else {
                        b.const_float(at, 0.0)
                    };
                    if let Some(wp) = wp {
                        let w = b.load(wp, n, 1);
                        let w = b.cast(w, ct, NO_SAT);
                        xr = b.mul(xr, w);
                        xi = b.mul(xi, w);
                    }
                    let kn = b.mul(k, n);
                    let nn = b.index(p.n as i64);
                    let m = b.binary(BinOp::Rem, kn, nn);
                    let mf = b.cast(m, ct, NO_SAT);
                    let sv = b.const_float(at, step);
                    let ang = b.mul(mf, sv);
                    let c = b.math(MathFn::Cos, &[ang]);
                    let s = b.math(MathFn::Sin, &[ang]);
                    let rc = b.mul(xr, c);
                    let is = b.mul(xi, s);
                    let ic = b.mul(xi, c);
                    let rs = b.mul(xr, s);
                    match p.mode {
                        Mode::Forward => {
                            // (xr + i xi)(c - i s)
                            let re = b.add(rc, is);
                            let im = b.sub(ic, rs);
                            let re = b.add(acc[0], re);
                            let im = b.add(acc[1], im);
                            vec![re, im]
                        }
                        Mode::Inverse => {
                            // (xr + i xi)(c + i s)
                            let re = b.sub(rc, is);
                            let im = b.add(rs, ic);
                            let re = b.add(acc[0], re);
                            let im = b.add(acc[1], im);
                            vec![re, im]
                        }
                        Mode::InverseReal => {
                            let re = b.sub(rc, is);
                            // Bin 0 and (for even N) bin N/2 appear once in the full
                            // spectrum; every other bin of the half spectrum twice.
                            let zero_i = b.index(0);
                            let first = b.cmp(CmpOp::Eq, n, zero_i);
                            let half = b.index(if even { (p.n / 2) as i64 } else { -1 });
                            let mid = b.cmp(CmpOp::Eq, n, half);
                            let once = b.binary(BinOp::Or, first, mid);
                            let one = b.const_float(at, 1.0);
                            let two = b.const_float(at, 2.0);
                            let w = b.select(once, one, two);
                            let re = b.mul(re, w);
                            let re = b.add(acc[0], re);
                            vec![re, acc[1]]
                        }
                    }
                });
                let c_out_o = b.index(p.out_o as i64);
                let c_out_j = b.index(p.out_j as i64);
                let c_out_k = b.index(p.out_k as i64);
                let a = b.mul(o, c_out_o);
                let bj = b.mul(j, c_out_j);
                let ck = b.mul(k, c_out_k);
                let at_o = b.add(a, bj);
                let at_o = b.add(at_o, ck);
                let sc = b.const_float(at, scale);
                let re = b.mul(acc[0], sc);
                let re = b.cast(re, dt, NO_SAT);
                b.store(yp, at_o, re);
                if p.out_comps == 2 {
                    let im = b.mul(acc[1], sc);
                    let im = b.cast(im, dt, NO_SAT);
                    let one = b.index(1);
                    let at_i = b.add(at_o, one);
                    b.store(yp, at_i, im);
                }
            });
        });
    });
    cx.launch(b.finish(), args);
    Ok(())
}

// ==== DFT ====

fn dft(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = input(cx, node, 0)?;
    let y = output(cx, node, 0)?;
    let xd = cx.dims(x)?;
    let yd = cx.dims(y)?;
    let r = xd.len();
    if r < 2 || yd.len() != r {
        return Err(
            cx.invalid("DFT needs an input of rank 2 or more and a result of the same rank")
        );
    }
    let axis = const_scalar(cx, node, 2)?.unwrap_or(-2);
    let a = axis.rem_euclid(r as i64) as usize;
    if a > r - 2 {
        return Err(cx.invalid(format!("axis {axis} is the complex-pair axis")));
    }
    let inverse = node.attr_int("inverse", 0) != 0;
    let onesided = node.attr_int("onesided", 0) != 0;
    let len = xd[a];
    let n = match const_scalar(cx, node, 1)? {
        Some(n) if n >= 1 => n as u64,
        Some(n) => return Err(cx.invalid(format!("dft_length {n} is not positive"))),
        None if inverse && onesided => 2 * len.saturating_sub(1),
        None => len,
    };
    if n == 0 {
        return Err(cx.unsupported("a DFT of length 0"));
    }
    let mode = match (inverse, onesided) {
        (false, _) => Mode::Forward,
        (true, false) => Mode::Inverse,
        (true, true) => Mode::InverseReal,
    };
    let bins = yd[a];
    let terms = if mode == Mode::InverseReal {
        len.min(n / 2 + 1)
    } else {
        len.min(n)
    };
    let comps = xd[r - 1];
    let out_comps = yd[r - 1];
    let outer: u64 = xd[..a].iter().product();
    let middle: u64 = xd[a + 1..r - 1].iter().product();
    let plan = DftPlan {
        mode,
        n,
        terms,
        bins,
        outer,
        middle,
        comps,
        in_o: len * middle * comps,
        in_j: comps,
        in_n: middle * comps,
        out_o: bins * middle * out_comps,
        out_j: out_comps,
        out_k: middle * out_comps,
        out_comps,
    };
    dft_kernel(cx, "dft", &plan, x, None, y)?;
    Ok(Execution::Kernel)
}

// ==== STFT ====

fn stft(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = input(cx, node, 0)?;
    let y = output(cx, node, 0)?;
    let xd = cx.dims(x)?;
    let yd = cx.dims(y)?;
    if xd.len() != 3 || yd.len() != 4 {
        return Err(cx.invalid("STFT needs a [batch, length, 1 or 2] signal and a 4-D result"));
    }
    let step = const_scalar(cx, node, 1)?.ok_or_else(|| cx.invalid("missing frame_step"))?;
    let window = node.input(2);
    let wlen = match window {
        Some(w) => Some(cx.numel(w)?),
        None => None,
    };
    let n = match const_scalar(cx, node, 3)? {
        Some(n) => n.max(0) as u64,
        None => wlen.unwrap_or(xd[1]),
    };
    if let Some(w) = wlen {
        if w != n {
            return Err(cx.unsupported(format!("a window of {w} samples with frame_length {n}")));
        }
    }
    if n == 0 || step < 1 {
        return Err(cx.invalid("frame length and frame step must be positive"));
    }
    let (frames, bins) = (yd[1], yd[2]);
    let comps = xd[2];
    let plan = DftPlan {
        mode: Mode::Forward,
        n,
        terms: n,
        bins,
        outer: xd[0],
        middle: frames,
        comps,
        in_o: xd[1] * comps,
        in_j: step as u64 * comps,
        in_n: comps,
        out_o: frames * bins * 2,
        out_j: bins * 2,
        out_k: 2,
        out_comps: 2,
    };
    dft_kernel(cx, "stft", &plan, x, window, y)?;
    Ok(Execution::Kernel)
}

// ==== MelWeightMatrix ====

fn mel_weight_matrix(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let y = output(cx, node, 0)?;
    let dt = cx.dtype(y)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("MelWeightMatrix producing {dt}")));
    }
    let yd = cx.dims(y)?;
    let n = const_scalar(cx, node, 1)?.ok_or_else(|| cx.invalid("missing dft_length"))?;
    let (rows, bins) = match yd.as_slice() {
        [r, b] => (*r, *b),
        _ => return Err(cx.invalid("MelWeightMatrix needs a 2-D result")),
    };
    // sample_rate and the edge frequencies are runtime scalars, read by the kernel.
    let mut params = Vec::new();
    for i in 2..5 {
        let v = input(cx, node, i)?;
        if cx.numel(v)? != 1 {
            return Err(cx.invalid(format!("operand {i} must be a scalar")));
        }
        params.push((cx.buffer(v)?, cx.dtype(v)?));
    }
    let yb = cx.buffer(y)?;
    if rows * bins == 0 {
        return Ok(Execution::Kernel);
    }
    let ct = DType::F64;
    let at = Ty::scalar(ct);
    let name = cx.kernel_name("mel_weight_matrix");
    let mut b = KernelBuilder::new(name);
    let ps: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(k, (_, d))| b.param(format!("s{k}"), *d, 1, Access::Read))
        .collect();
    let yp = b.param("y", dt, rows * bins, Access::Write);
    let zero_i = b.index(0);
    let mut sc = Vec::new();
    for &p in &ps {
        let v = b.load(p, zero_i, 1);
        sc.push(b.cast(v, ct, NO_SAT));
    }
    let (sr, lo_hz, hi_hz) = (sc[0], sc[1], sc[2]);
    let ln10 = std::f64::consts::LN_10;
    // hz -> mel: 2595 log10(1 + hz / 700).
    let to_mel = |b: &mut KernelBuilder, hz: Val| {
        let c700 = b.const_float(at, 700.0);
        let one = b.const_float(at, 1.0);
        let q = b.div(hz, c700);
        let q = b.add(one, q);
        let l = b.math(MathFn::Log, &[q]);
        let k = b.const_float(at, 2595.0 / ln10);
        b.mul(l, k)
    };
    let lo_mel = to_mel(&mut b, lo_hz);
    let hi_mel = to_mel(&mut b, hi_hz);
    let span = b.sub(hi_mel, lo_mel);
    let cnt = b.const_float(at, (bins + 2) as f64);
    let mel_step = b.div(span, cnt);
    let np1 = b.const_float(at, (n + 1) as f64);
    // The spectrogram bin of mel point `t`: floor((N + 1) * hz(t) / sample_rate).
    let point = |b: &mut KernelBuilder, t: Val| {
        let tf = b.cast(t, ct, NO_SAT);
        let m = b.mul(tf, mel_step);
        let m = b.add(m, lo_mel);
        let k = b.const_float(at, ln10 / 2595.0);
        let e = b.mul(m, k);
        let e = b.math(MathFn::Exp, &[e]);
        let one = b.const_float(at, 1.0);
        let e = b.sub(e, one);
        let c700 = b.const_float(at, 700.0);
        let hz = b.mul(e, c700);
        let v = b.mul(np1, hz);
        let v = b.div(v, sr);
        b.unary(UnOp::Floor, v)
    };
    b.range(0, bins as i64, |b, i| {
        let one_i = b.index(1);
        let two_i = b.index(2);
        let i1 = b.add(i, one_i);
        let i2 = b.add(i, two_i);
        let lo = point(b, i);
        let c = point(b, i1);
        let hi = point(b, i2);
        b.range(0, rows as i64, |b, j| {
            let jf = b.cast(j, ct, NO_SAT);
            let zero = b.const_float(at, 0.0);
            let one = b.const_float(at, 1.0);
            // Rising edge on [lo, c] (a single 1 at c when lo == c) ...
            let ge_lo = b.cmp(CmpOp::Ge, jf, lo);
            let le_c = b.cmp(CmpOp::Le, jf, c);
            let in_rise = b.binary(BinOp::And, ge_lo, le_c);
            let rise_w = b.sub(c, lo);
            let flat = b.cmp(CmpOp::Eq, rise_w, zero);
            let rise_d = b.select(flat, one, rise_w);
            let rise_n = b.sub(jf, lo);
            let rise = b.div(rise_n, rise_d);
            let rise = b.select(flat, one, rise);
            let v = b.select(in_rise, rise, zero);
            // ... then the falling edge on [c, hi) overwrites, as the reference does.
            let ge_c = b.cmp(CmpOp::Ge, jf, c);
            let lt_hi = b.cmp(CmpOp::Lt, jf, hi);
            let in_fall = b.binary(BinOp::And, ge_c, lt_hi);
            let fall_w = b.sub(hi, c);
            let pos = b.cmp(CmpOp::Gt, fall_w, zero);
            let in_fall = b.binary(BinOp::And, in_fall, pos);
            let fall_d = b.select(pos, fall_w, one);
            let fall_n = b.sub(hi, jf);
            let fall = b.div(fall_n, fall_d);
            let v = b.select(in_fall, fall, v);
            let v = b.cast(v, dt, NO_SAT);
            let bins_i = b.index(bins as i64);
            let row = b.mul(j, bins_i);
            let at_o = b.add(row, i);
            b.store(yp, at_o, v);
        });
    });
    let mut args: Vec<_> = params.iter().map(|(bf, _)| *bf).collect();
    args.push(yb);
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}

// ==== Momentum, Adagrad, Adam (ai.onnx.preview.training) ====

/// One optimizer step: each result is an elementwise kernel over (R, T, X, G, states...) of
/// one tensor, recomputing the shared terms (they are a handful of flops).
fn optimizer(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let op = node.op;
    let per = if op == Op::Adam { 4 } else { 3 };
    let rest = node
        .inputs
        .len()
        .checked_sub(2)
        .filter(|r| *r > 0 && r % per == 0);
    let n = rest
        .ok_or_else(|| cx.invalid("operands do not form R, T and whole groups of tensors"))?
        / per;
    let r = input(cx, node, 0)?;
    let t = input(cx, node, 1)?;
    if cx.numel(r)? != 1 || cx.numel(t)? != 1 {
        return Err(cx.invalid("R and T must be scalars"));
    }
    let f = |name: &str, default: f32| node.attr_float(name, default) as f64;
    let mode_nesterov = match node.attr_str("mode") {
        None | Some("standard") => false,
        Some("nesterov") => true,
        Some(m) => return Err(cx.unsupported(format!("Momentum mode `{m}`"))),
    };
    for j in 0..n {
        let x = input(cx, node, 2 + j)?;
        let dt = cx.dtype(x)?;
        if !dt.is_float() {
            return Err(cx.unsupported(format!("{op} on {dt}")));
        }
        let dims = cx.dims(x)?;
        let rb = cx.buffer(r)?;
        let (rdt, tdt) = (cx.dtype(r)?, cx.dtype(t)?);
        let tb = cx.buffer(t)?;
        let mut operands = vec![
            EwOperand::scalar(rb, rdt, 1, dims.len()),
            EwOperand::scalar(tb, tdt, 1, dims.len()),
        ];
        for k in 0..per {
            let v = input(cx, node, 2 + k * n + j)?;
            if cx.dims(v)? != dims {
                return Err(cx.invalid(format!(
                    "operand {} does not have the shape of X",
                    2 + k * n + j
                )));
            }
            operands.push(EwOperand::broadcast(cx, v, &dims)?);
        }
        for k in 0..per - 1 {
            let Some(&out) = node.outputs.get(k * n + j) else {
                continue;
            };
            let ob = cx.buffer(out)?;
            let odt = cx.dtype(out)?;
            let name = format!("{}_{}", op.name().to_ascii_lowercase(), k);
            let body = |b: &mut KernelBuilder, v: &[Val]| -> Val {
                let (r, x, g) = (v[0], v[2], v[3]);
                let ft = b.ty(x).elem;
                let t = b.cast(v[1], ft, NO_SAT);
                let c = |b: &mut KernelBuilder, c: f64| konst_like(b, x, c);
                let norm = c(b, f("norm_coefficient", 0.0));
                let nx = b.mul(norm, x);
                let greg = b.add(nx, g);
                match op {
                    Op::Momentum => {
                        let zero = c(b, 0.0);
                        let pos = b.cmp(CmpOp::Gt, t, zero);
                        let beta = c(b, f("beta", 0.0));
                        let one = c(b, 1.0);
                        let beta = b.select(pos, beta, one);
                        let alpha = c(b, f("alpha", 0.0));
                        let av = b.mul(alpha, v[4]);
                        let bg = b.mul(beta, greg);
                        let v_new = b.add(av, bg);
                        if k == 1 {
                            return v_new;
                        }
                        let step = if mode_nesterov {
                            let av = b.mul(alpha, v_new);
                            b.add(greg, av)
                        } else {
                            v_new
                        };
                        let rs = b.mul(r, step);
                        b.sub(x, rs)
                    }
                    Op::Adagrad => {
                        let decay = c(b, f("decay_factor", 0.0));
                        let one = c(b, 1.0);
                        let td = b.mul(t, decay);
                        let den = b.add(one, td);
                        let r_adj = b.div(r, den);
                        let gg = b.mul(greg, greg);
                        let h_new = b.add(v[4], gg);
                        if k == 1 {
                            return h_new;
                        }
                        let sq = b.unary(tessera_kir::UnOp::Sqrt, h_new);
                        let eps = c(b, f("epsilon", 0.0));
                        let sq = b.add(sq, eps);
                        let rg = b.mul(r_adj, greg);
                        let d = b.div(rg, sq);
                        b.sub(x, d)
                    }
                    _ => {
                        // Adam.
                        let alpha = f("alpha", 0.9);
                        let beta = f("beta", 0.999);
                        let one = c(b, 1.0);
                        let a = c(b, alpha);
                        let a1 = c(b, 1.0 - alpha);
                        let av = b.mul(a, v[4]);
                        let ag = b.mul(a1, greg);
                        let v_new = b.add(av, ag);
                        if k == 1 {
                            return v_new;
                        }
                        let bt = c(b, beta);
                        let b1 = c(b, 1.0 - beta);
                        let bh = b.mul(bt, v[5]);
                        let gg = b.mul(greg, greg);
                        let bg = b.mul(b1, gg);
                        let h_new = b.add(bh, bg);
                        if k == 2 {
                            return h_new;
                        }
                        let sq = b.unary(tessera_kir::UnOp::Sqrt, h_new);
                        let eps = c(b, f("epsilon", 0.0));
                        let sq = b.add(sq, eps);
                        // Bias correction once a step has been taken (T > 0).
                        let at_ = b.math(MathFn::Pow, &[a, t]);
                        let bt_ = b.math(MathFn::Pow, &[bt, t]);
                        let one_b = b.sub(one, bt_);
                        let one_b = b.unary(tessera_kir::UnOp::Sqrt, one_b);
                        let one_a = b.sub(one, at_);
                        let corr = b.div(one_b, one_a);
                        let rc = b.mul(r, corr);
                        let zero = c(b, 0.0);
                        let pos = b.cmp(CmpOp::Gt, t, zero);
                        let r_adj = b.select(pos, rc, r);
                        let q = b.div(v_new, sq);
                        let d = b.mul(r_adj, q);
                        let x_new = b.sub(x, d);
                        let post = c(b, 1.0 - f("norm_coefficient_post", 0.0));
                        b.mul(post, x_new)
                    }
                }
            };
            emit_elementwise(cx, &name, &operands, ob, odt, &dims, &body)?;
        }
    }
    Ok(Execution::Kernel)
}

// ==== Binarizer, ArrayFeatureExtractor (ai.onnx.ml) ====

fn binarizer(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = input(cx, node, 0)?;
    let y = output(cx, node, 0)?;
    let dt = cx.dtype(x)?;
    if !dt.is_numeric() || dt == DType::Bool {
        return Err(cx.unsupported(format!("Binarizer on {dt}")));
    }
    let dims = cx.dims(x)?;
    let threshold = node.attr_float("threshold", 0.0) as f64;
    let xo = EwOperand::broadcast(cx, x, &dims)?;
    let yb = cx.buffer(y)?;
    let body = |b: &mut KernelBuilder, v: &[Val]| -> Val {
        let th = konst_like(b, v[0], threshold);
        let gt = b.cmp(CmpOp::Gt, v[0], th);
        let one = konst_like(b, v[0], 1.0);
        let zero = konst_like(b, v[0], 0.0);
        b.select(gt, one, zero)
    };
    emit_elementwise(cx, "binarizer", &[xo], yb, dt, &dims, &body)?;
    Ok(Execution::Kernel)
}

fn array_feature_extractor(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = input(cx, node, 0)?;
    let idx = input(cx, node, 1)?;
    let y = output(cx, node, 0)?;
    let dt = cx.dtype(x)?;
    let xd = cx.dims(x)?;
    let last = *xd
        .last()
        .ok_or_else(|| cx.invalid("X must have rank 1 or more"))?;
    let rows: u64 = xd[..xd.len() - 1].iter().product();
    let m = cx.numel(idx)?;
    if cx.dtype(idx)? != DType::I64 {
        return Err(cx.invalid("the indices must be int64"));
    }
    if cx.numel(y)? != rows * m {
        return Err(cx.invalid("the result does not hold one element per row and index"));
    }
    let xb = cx.buffer(x)?;
    let ib = cx.buffer(idx)?;
    let yb = cx.buffer(y)?;
    if rows * m == 0 {
        return Ok(Execution::Kernel);
    }
    // ai.onnx.ml's ArrayFeatureExtractor takes non-negative indices only.
    let code = cx.trap_site(
        node,
        "Y",
        format!(
            "out of range for the last axis of `X`, of size {last} (valid: 0 to {})",
            last.saturating_sub(1)
        ),
    );
    let name = cx.kernel_name("array_feature_extractor");
    let mut b = KernelBuilder::new(name);
    let xp = b.param("x", dt, rows * last, Access::Read);
    let ip = b.param("indices", DType::I64, m, Access::Read);
    let yp = b.param("y", dt, rows * m, Access::Write);
    b.range(0, m as i64, |b, k| {
        let iv = b.load(ip, k, 1);
        // An index out of range stops the run with a data error.
        let iv = b.checked_below(iv, last, code);
        let lim = b.index(last as i64);
        b.range(0, rows as i64, |b, rw| {
            let row = b.mul(rw, lim);
            let at_x = b.add(row, iv);
            let v = b.load(xp, at_x, 1);
            let mi = b.index(m as i64);
            let orow = b.mul(rw, mi);
            let at_y = b.add(orow, k);
            b.store(yp, at_y, v);
        });
    });
    cx.launch(b.finish(), vec![xb, ib, yb]);
    Ok(Execution::Kernel)
}
