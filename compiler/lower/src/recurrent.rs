//! Lowering of the recurrent ops RNN, GRU and LSTM.
//!
//! One kernel; each program instance owns one `(direction, batch entry)` pair and walks the
//! whole sequence, keeping the hidden (and cell) state and the gate pre-activations in local
//! buffers. Steps at or past the entry's `sequence_lens` leave the state unchanged and write
//! zeros to `Y`.

use crate::util::compute_dtype;
use crate::{LowerCx, Result};
use tessera_ir::{Attr, DType, Node, Op, ValueId};
use tessera_kir::{
    Access, Buf, BufferId, CastMode, CmpOp, Execution, KernelBuilder, MathFn, Space, Ty, Val,
};

const NO_SAT: CastMode = CastMode { saturate: false };

/// An activation function with its alpha and beta.
#[derive(Clone, Copy, Debug)]
enum Act {
    Tanh,
    Sigmoid,
    Relu,
    Affine(f64, f64),
    LeakyRelu(f64),
    ThresholdedRelu(f64),
    ScaledTanh(f64, f64),
    HardSigmoid(f64, f64),
    Elu(f64),
    Softsign,
    Softplus,
}

fn apply(b: &mut KernelBuilder, act: Act, x: Val) -> Val {
    let t = b.ty(x);
    let k = |b: &mut KernelBuilder, v: f64| b.const_float(t, v);
    match act {
        Act::Tanh => b.math(MathFn::Tanh, &[x]),
        Act::Sigmoid => b.math(MathFn::Sigmoid, &[x]),
        Act::Relu => {
            let z = k(b, 0.0);
            b.max(x, z)
        }
        Act::Affine(a, c) => {
            let a = k(b, a);
            let c = k(b, c);
            let m = b.mul(a, x);
            b.add(m, c)
        }
        Act::LeakyRelu(a) => {
            let z = k(b, 0.0);
            let a = k(b, a);
            let neg = b.cmp(CmpOp::Lt, x, z);
            let m = b.mul(a, x);
            b.select(neg, m, x)
        }
        Act::ThresholdedRelu(a) => {
            let z = k(b, 0.0);
            let a = k(b, a);
            let gt = b.cmp(CmpOp::Gt, x, a);
            b.select(gt, x, z)
        }
        Act::ScaledTanh(a, c) => {
            let a = k(b, a);
            let c = k(b, c);
            let m = b.mul(c, x);
            let th = b.math(MathFn::Tanh, &[m]);
            b.mul(a, th)
        }
        Act::HardSigmoid(a, c) => {
            let a = k(b, a);
            let c = k(b, c);
            let z = k(b, 0.0);
            let one = k(b, 1.0);
            let m = b.mul(a, x);
            let m = b.add(m, c);
            let m = b.max(m, z);
            b.min(m, one)
        }
        Act::Elu(a) => {
            let z = k(b, 0.0);
            let a = k(b, a);
            let one = k(b, 1.0);
            let e = b.math(MathFn::Exp, &[x]);
            let e = b.sub(e, one);
            let e = b.mul(a, e);
            let neg = b.cmp(CmpOp::Lt, x, z);
            b.select(neg, e, x)
        }
        Act::Softsign => {
            let one = k(b, 1.0);
            let a = b.unary(tessera_kir::UnOp::Abs, x);
            let d = b.add(one, a);
            b.div(x, d)
        }
        Act::Softplus => {
            let one = k(b, 1.0);
            let e = b.math(MathFn::Exp, &[x]);
            let s = b.add(one, e);
            b.math(MathFn::Log, &[s])
        }
    }
}

/// Parses the `activations` attribute (with alphas/betas consumed in order by the functions
/// that take them), or the op's defaults.
fn activations(cx: &LowerCx, node: &Node, per_dir: usize, dirs: usize) -> Result<Vec<Act>> {
    let defaults: &[Act] = match node.op {
        Op::RNN => &[Act::Tanh],
        Op::GRU => &[Act::Sigmoid, Act::Tanh],
        _ => &[Act::Sigmoid, Act::Tanh, Act::Tanh],
    };
    let names: Vec<String> = match node.attr("activations") {
        None => return Ok((0..dirs).flat_map(|_| defaults.iter().copied()).collect()),
        Some(Attr::Strings(v)) => v.clone(),
        Some(Attr::String(s)) => vec![s.clone()],
        Some(_) => return Err(cx.invalid("activations must be a list of strings")),
    };
    let floats = |n: &str| -> Vec<f64> {
        match node.attr(n) {
            Some(Attr::Floats(v)) => v.iter().map(|&x| x as f64).collect(),
            Some(Attr::Float(x)) => vec![*x as f64],
            _ => Vec::new(),
        }
    };
    let (alphas, betas) = (floats("activation_alpha"), floats("activation_beta"));
    let (mut ai, mut bi) = (0, 0);
    let mut alpha = |d: f64| {
        let v = alphas.get(ai).copied().unwrap_or(d);
        ai += 1;
        v
    };
    let mut beta = |d: f64| {
        let v = betas.get(bi).copied().unwrap_or(d);
        bi += 1;
        v
    };
    let mut out = Vec::new();
    for n in &names {
        out.push(match n.to_ascii_lowercase().as_str() {
            "tanh" => Act::Tanh,
            "sigmoid" => Act::Sigmoid,
            "relu" => Act::Relu,
            "affine" => Act::Affine(alpha(1.0), beta(0.0)),
            "leakyrelu" => Act::LeakyRelu(alpha(0.01)),
            "thresholdedrelu" => Act::ThresholdedRelu(alpha(1.0)),
            "scaledtanh" => Act::ScaledTanh(alpha(1.0), beta(1.0)),
            "hardsigmoid" => Act::HardSigmoid(alpha(0.2), beta(0.5)),
            "elu" => Act::Elu(alpha(1.0)),
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            other => return Err(cx.unsupported(format!("activation \"{other}\""))),
        });
    }
    if out.len() == per_dir && dirs == 2 {
        let again = out.clone();
        out.extend(again);
    }
    if out.len() != per_dir * dirs {
        return Err(cx.invalid(format!(
            "{} activations given, expected {}",
            out.len(),
            per_dir * dirs
        )));
    }
    Ok(out)
}

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let op = node.op;
    let gates: u64 = match op {
        Op::RNN => 1,
        Op::GRU => 3,
        _ => 4,
    };
    let x = node.input(0).ok_or_else(|| cx.invalid("missing X"))?;
    let w = node.input(1).ok_or_else(|| cx.invalid("missing W"))?;
    let r = node.input(2).ok_or_else(|| cx.invalid("missing R"))?;
    let bias = node.input(3);
    let seq_lens = node.input(4);
    let init_h = node.input(5);
    let init_c = if op == Op::LSTM { node.input(6) } else { None };
    let peep = if op == Op::LSTM { node.input(7) } else { None };
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("{op} on {dt}")));
    }
    let xd = cx.dims(x)?;
    if xd.len() != 3 {
        return Err(cx.invalid("X must be 3-D"));
    }
    let layout = node.attr_int("layout", 0);
    let (s, batch, inp) = match layout {
        0 => (xd[0], xd[1], xd[2]),
        1 => (xd[1], xd[0], xd[2]),
        l => return Err(cx.invalid(format!("layout {l}"))),
    };
    let direction = node.attr_str("direction").unwrap_or("forward").to_string();
    let dirs: u64 = match direction.as_str() {
        "forward" | "reverse" => 1,
        "bidirectional" => 2,
        d => return Err(cx.invalid(format!("direction \"{d}\""))),
    };
    let wd = cx.dims(w)?;
    if wd.len() != 3 || wd[0] != dirs || wd[1] % gates != 0 || wd[2] != inp {
        return Err(cx.invalid(format!("W has shape {wd:?}")));
    }
    let h = wd[1] / gates;
    if node.attr("hidden_size").is_some() && node.attr_int("hidden_size", 0) as u64 != h {
        return Err(cx.invalid("hidden_size disagrees with W"));
    }
    if cx.dims(r)? != [dirs, gates * h, h] {
        return Err(cx.invalid(format!("R must be [{dirs}, {}, {h}]", gates * h)));
    }
    let check = |cx: &LowerCx, v: Option<ValueId>, want: Vec<u64>, what: &str| -> Result<()> {
        if let Some(v) = v {
            if cx.dims(v)? != want || cx.dtype(v)? != dt {
                return Err(cx.invalid(format!("{what} must be {want:?} of {dt}")));
            }
        }
        Ok(())
    };
    check(cx, bias, vec![dirs, 2 * gates * h], "B")?;
    let state_dims = if layout == 0 {
        vec![dirs, batch, h]
    } else {
        vec![batch, dirs, h]
    };
    check(cx, init_h, state_dims.clone(), "initial_h")?;
    check(cx, init_c, state_dims.clone(), "initial_c")?;
    check(cx, peep, vec![dirs, 3 * h], "P")?;
    if let Some(sl) = seq_lens {
        if cx.dims(sl)? != [batch] || !cx.dtype(sl)?.is_int() {
            return Err(cx.invalid(format!("sequence_lens must be [{batch}] integers")));
        }
    }
    if op == Op::LSTM && node.attr_int("input_forget", 0) != 0 {
        return Err(cx.unsupported("LSTM with input_forget=1"));
    }
    let per_dir = match op {
        Op::RNN => 1,
        Op::GRU => 2,
        _ => 3,
    };
    let acts = activations(cx, node, per_dir, dirs as usize)?;
    let clip = node
        .attr("clip")
        .map(|_| node.attr_float("clip", 0.0) as f64);
    let lbr = op == Op::GRU && node.attr_int("linear_before_reset", 0) != 0;

    // Outputs (each optional).
    let y_dims = if layout == 0 {
        vec![s, dirs, batch, h]
    } else {
        vec![batch, s, dirs, h]
    };
    let mut outs: Vec<Option<BufferId>> = Vec::new();
    for (k, want) in [y_dims.clone(), state_dims.clone(), state_dims.clone()]
        .into_iter()
        .enumerate()
    {
        let Some(&o) = node.outputs.get(k) else {
            outs.push(None);
            continue;
        };
        if cx.dims(o)? != want || cx.dtype(o)? != dt {
            return Err(cx.invalid(format!("result {k} must be {want:?} of {dt}")));
        }
        outs.push(Some(cx.buffer(o)?));
    }
    if dirs * batch == 0 {
        return Ok(Execution::Kernel);
    }

    let acc = compute_dtype(dt);
    let at = Ty::scalar(acc);
    let name = cx.kernel_name(&op.name().to_ascii_lowercase());
    let mut b = KernelBuilder::new(name);
    let mut args = Vec::new();
    let xp = cx.bind_param(&mut b, &mut args, x, "x", Access::Read)?;
    let wp = cx.bind_param(&mut b, &mut args, w, "w", Access::Read)?;
    let rp = cx.bind_param(&mut b, &mut args, r, "r", Access::Read)?;
    let bp = bias
        .map(|v| cx.bind_param(&mut b, &mut args, v, "b", Access::Read))
        .transpose()?;
    let slp = seq_lens
        .map(|v| cx.bind_param(&mut b, &mut args, v, "seq_lens", Access::Read))
        .transpose()?;
    let ihp = init_h
        .map(|v| cx.bind_param(&mut b, &mut args, v, "initial_h", Access::Read))
        .transpose()?;
    let icp = init_c
        .map(|v| cx.bind_param(&mut b, &mut args, v, "initial_c", Access::Read))
        .transpose()?;
    let pp = peep
        .map(|v| cx.bind_param(&mut b, &mut args, v, "p", Access::Read))
        .transpose()?;
    let y_len: u64 = y_dims.iter().product();
    let st_len: u64 = state_dims.iter().product();
    let mut outp = Vec::new();
    for (k, o) in outs.iter().enumerate() {
        outp.push(o.map(|o| {
            args.push(o);
            b.param(
                format!("out{k}"),
                dt,
                if k == 0 { y_len } else { st_len },
                Access::Write,
            )
        }));
    }
    let hs = b.local("h", Space::Local, acc, h.max(1));
    let cs = b.local("c", Space::Local, acc, h.max(1));
    let gs = b.local("gates", Space::Local, acc, (gates * h).max(1));
    b.set_grid(&[dirs, batch]);
    let d = b.program_id(0);
    let bi = b.program_id(1);

    let iv = |b: &mut KernelBuilder, v: u64| b.index(v as i64);
    // Flat index of state element (d, bi, j).
    let state_at = move |b: &mut KernelBuilder, j: Val| -> Val {
        let (a0, a1, n1) = if layout == 0 {
            (d, bi, batch)
        } else {
            (bi, d, dirs)
        };
        let n1v = b.index(n1 as i64);
        let t = b.mul(a0, n1v);
        let t = b.add(t, a1);
        let hv = b.index(h as i64);
        let t = b.mul(t, hv);
        b.add(t, j)
    };
    let ld = |b: &mut KernelBuilder, buf: Buf, at: Val| {
        let v = b.load(buf, at, 1);
        b.cast(v, acc, NO_SAT)
    };
    // Initial state.
    b.range(0, h as i64, |b, j| {
        let z = b.const_float(at, 0.0);
        let hv = match ihp {
            Some(p) => {
                let a = state_at(b, j);
                ld(b, p, a)
            }
            None => z,
        };
        b.store(hs, j, hv);
        let cv = match icp {
            Some(p) => {
                let a = state_at(b, j);
                ld(b, p, a)
            }
            None => z,
        };
        b.store(cs, j, cv);
    });
    let len = match slp {
        Some(p) => {
            // A runtime length, clamped to 0..=seq so no step reads or writes out of bounds.
            let l = b.load(p, bi, 1);
            let l = b.cast(l, DType::I64, NO_SAT);
            let lo = iv(&mut b, 0);
            let hi = iv(&mut b, s);
            let l = b.max(l, lo);
            b.min(l, hi)
        }
        None => iv(&mut b, s),
    };
    let reverse_all = direction == "reverse";
    let is_rev = if dirs == 2 {
        let one = iv(&mut b, 1);
        b.cmp(CmpOp::Eq, d, one)
    } else {
        b.const_int(Ty::BOOL, reverse_all as i64)
    };
    // Activation selection by direction (both directions' lists may differ).
    let act = |b: &mut KernelBuilder, k: usize, x: Val| -> Val {
        let x = match clip {
            Some(c) => {
                let hi = b.const_float(at, c);
                let lo = b.const_float(at, -c);
                let x = b.min(x, hi);
                b.max(x, lo)
            }
            None => x,
        };
        if dirs == 2 {
            let f = apply(b, acts[k], x);
            let r = apply(b, acts[per_dir + k], x);
            b.select(is_rev, r, f)
        } else {
            apply(b, acts[k], x)
        }
    };
    let xt_at = move |b: &mut KernelBuilder, t: Val, i: Val| -> Val {
        // X[t, bi, i] (layout 0) or X[bi, t, i] (layout 1).
        let (a0, a1, n1) = if layout == 0 {
            (t, bi, batch)
        } else {
            (bi, t, s)
        };
        let n1v = b.index(n1 as i64);
        let q = b.mul(a0, n1v);
        let q = b.add(q, a1);
        let iv = b.index(inp as i64);
        let q = b.mul(q, iv);
        b.add(q, i)
    };
    let gh = gates * h;
    // W[d, g, i], R[d, g, k], B[d, g] (Wb) and B[d, gh + g] (Rb).
    let mat_at = move |b: &mut KernelBuilder, g: Val, cols: u64, c: Val| -> Val {
        let ghv = b.index(gh as i64);
        let row = b.mul(d, ghv);
        let row = b.add(row, g);
        let cv = b.index(cols as i64);
        let q = b.mul(row, cv);
        b.add(q, c)
    };
    let bias_at = move |b: &mut KernelBuilder, g: Val, rb: bool| -> Val {
        let two = b.index((2 * gh) as i64);
        let q = b.mul(d, two);
        let q = b.add(q, g);
        if rb {
            let o = b.index(gh as i64);
            b.add(q, o)
        } else {
            q
        }
    };

    b.range(0, s as i64, |b, step| {
        // Reverse walks from the entry's last valid step: t = len - 1 - step.
        let t = {
            let one = iv(b, 1);
            let lm1 = b.sub(len, one);
            let rl = b.sub(lm1, step);
            b.select(is_rev, rl, step)
        };
        // Steps past the entry's length: for reverse, t < 0.
        let zi = iv(b, 0);
        let ge0 = b.cmp(CmpOp::Ge, t, zi);
        let ltl = b.cmp(CmpOp::Lt, t, len);
        let active = b.binary(tessera_kir::BinOp::And, ge0, ltl);
        // Y position: the step's time index; inactive steps (past the entry's length) write
        // their zeros at `step`, which for reverse is then also past the length.
        let ypos = b.select(active, t, step);
        b.if_then(active, |b| {
            // Pre-activations of every gate row (GRU's hidden gate handled after r).
            let direct_rows = if op == Op::GRU { 2 * h } else { gh };
            let ghr = |b: &mut KernelBuilder, g: Val, with_h: bool| -> Val {
                let z = b.const_float(at, 0.0);
                let xs = b.range_fold(0, inp as i64, &[z], |b, i, a| {
                    let xa = xt_at(b, t, i);
                    let xv = ld(b, xp, xa);
                    let wa = mat_at(b, g, inp, i);
                    let wv = ld(b, wp, wa);
                    let m = b.mul(xv, wv);
                    vec![b.add(a[0], m)]
                })[0];
                let mut acc_v = xs;
                if with_h {
                    let hsum = b.range_fold(0, h as i64, &[z], |b, k, a| {
                        let hv = b.load(hs, k, 1);
                        let ra = mat_at(b, g, h, k);
                        let rv = ld(b, rp, ra);
                        let m = b.mul(hv, rv);
                        vec![b.add(a[0], m)]
                    })[0];
                    acc_v = b.add(acc_v, hsum);
                }
                if let Some(bp) = bp {
                    let wa = bias_at(b, g, false);
                    let wb = ld(b, bp, wa);
                    acc_v = b.add(acc_v, wb);
                    if with_h {
                        let ra = bias_at(b, g, true);
                        let rb = ld(b, bp, ra);
                        acc_v = b.add(acc_v, rb);
                    }
                }
                acc_v
            };
            b.range(0, direct_rows as i64, |b, g| {
                let v = ghr(b, g, true);
                b.store(gs, g, v);
            });
            match op {
                Op::RNN => {
                    b.range(0, h as i64, |b, j| {
                        let v = b.load(gs, j, 1);
                        let v = act(b, 0, v);
                        b.store(hs, j, v);
                    });
                }
                Op::GRU => {
                    // z (rows 0..h) and r (rows h..2h) activated in place.
                    b.range(0, (2 * h) as i64, |b, g| {
                        let v = b.load(gs, g, 1);
                        let v = act(b, 0, v);
                        b.store(gs, g, v);
                    });
                    // Hidden gate rows 2h..3h.
                    b.range(0, h as i64, |b, j| {
                        let h2 = iv(b, 2 * h);
                        let g = b.add(h2, j);
                        let xw = ghr(b, g, false);
                        let z = b.const_float(at, 0.0);
                        let hv = iv(b, h);
                        let rj = b.add(hv, j);
                        let rgate = b.load(gs, rj, 1);
                        let rec = b.range_fold(0, h as i64, &[z], |b, k, a| {
                            let hk = b.load(hs, k, 1);
                            let hk = if lbr {
                                hk
                            } else {
                                let rk = b.add(hv, k);
                                let rk = b.load(gs, rk, 1);
                                b.mul(rk, hk)
                            };
                            let ra = mat_at(b, g, h, k);
                            let rv = ld(b, rp, ra);
                            let m = b.mul(hk, rv);
                            vec![b.add(a[0], m)]
                        })[0];
                        let rec = match bp {
                            Some(bp) => {
                                let ra = bias_at(b, g, true);
                                let rb = ld(b, bp, ra);
                                b.add(rec, rb)
                            }
                            None => rec,
                        };
                        let rec = if lbr { b.mul(rgate, rec) } else { rec };
                        let pre = b.add(xw, rec);
                        let hh = act(b, 1, pre);
                        // Stash h~ in the r slot's partner: rows 2h..3h.
                        b.store(gs, g, hh);
                    });
                    b.range(0, h as i64, |b, j| {
                        let zt = b.load(gs, j, 1);
                        let h2 = iv(b, 2 * h);
                        let g = b.add(h2, j);
                        let hh = b.load(gs, g, 1);
                        let hp = b.load(hs, j, 1);
                        let one = b.const_float(at, 1.0);
                        let omz = b.sub(one, zt);
                        let a = b.mul(omz, hh);
                        let c = b.mul(zt, hp);
                        let v = b.add(a, c);
                        b.store(hs, j, v);
                    });
                }
                _ => {
                    // Gate rows: i, o, f, c; peepholes P = [i, o, f].
                    b.range(0, h as i64, |b, j| {
                        let row = |b: &mut KernelBuilder, k: u64| {
                            let o = iv(b, k * h);
                            let g = b.add(o, j);
                            b.load(gs, g, 1)
                        };
                        let peep = |b: &mut KernelBuilder, k: u64, c: Val, v: Val| -> Val {
                            match pp {
                                Some(pp) => {
                                    let dv = iv(b, 3 * h);
                                    let base = b.mul(d, dv);
                                    let o = iv(b, k * h);
                                    let a = b.add(base, o);
                                    let a = b.add(a, j);
                                    let p = ld(b, pp, a);
                                    let m = b.mul(p, c);
                                    b.add(v, m)
                                }
                                None => v,
                            }
                        };
                        let cp = b.load(cs, j, 1);
                        let pi = row(b, 0);
                        let po = row(b, 1);
                        let pf = row(b, 2);
                        let pc = row(b, 3);
                        let pi = peep(b, 0, cp, pi);
                        let it = act(b, 0, pi);
                        let pf = peep(b, 2, cp, pf);
                        let ft = act(b, 0, pf);
                        let ct = act(b, 1, pc);
                        let a = b.mul(ft, cp);
                        let c2 = b.mul(it, ct);
                        let cn = b.add(a, c2);
                        let po = peep(b, 1, cn, po);
                        let ot = act(b, 0, po);
                        let hc = act(b, 2, cn);
                        let hn = b.mul(ot, hc);
                        b.store(cs, j, cn);
                        b.store(hs, j, hn);
                    });
                }
            }
        });
        if let Some(yp) = outp[0] {
            b.range(0, h as i64, |b, j| {
                let z = b.const_float(at, 0.0);
                let hv = b.load(hs, j, 1);
                let v = b.select(active, hv, z);
                let v = b.cast(v, dt, NO_SAT);
                // Y[t, d, bi, j] (layout 0) or Y[bi, t, d, j] (layout 1).
                let (a0, a1, a2, n1, n2) = if layout == 0 {
                    (ypos, d, bi, dirs, batch)
                } else {
                    (bi, ypos, d, s, dirs)
                };
                let n1v = iv(b, n1);
                let n2v = iv(b, n2);
                let q = b.mul(a0, n1v);
                let q = b.add(q, a1);
                let q = b.mul(q, n2v);
                let q = b.add(q, a2);
                let hv = iv(b, h);
                let q = b.mul(q, hv);
                let q = b.add(q, j);
                b.store(yp, q, v);
            });
        }
    });
    for (k, src) in [(1usize, hs), (2, cs)] {
        if let Some(p) = outp[k] {
            b.range(0, h as i64, |b, j| {
                let v = b.load(src, j, 1);
                let v = b.cast(v, dt, NO_SAT);
                let a = state_at(b, j);
                b.store(p, a, v);
            });
        }
    }
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}
