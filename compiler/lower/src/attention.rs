//! Lowering of Attention and RotaryEmbedding.
//!
//! Attention runs as up to three kernels: one each that assembles `present_key` and
//! `present_value` (past cache followed by the new keys/values, in the 4-D
//! `(batch, kv_heads, seq, head)` layout), then one whose program instances each own one
//! query row `(batch, head, i)`: scores against every key into a local buffer, the additive
//! bias (mask, causal, window, padding), a guarded softmax, and the weighted sum of values.

use crate::util::{compute_dtype, strides};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op, ValueId};
use tessera_kir::{
    Access, Buf, BufferId, CastMode, CmpOp, Execution, KernelBuilder, MathFn, Space, Ty, Val,
};

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    match node.op {
        Op::Attention => attention(cx, node),
        Op::RotaryEmbedding => rotary(cx, node),
        op => Err(cx.unsupported(format!("{op} is not lowered by attention.rs"))),
    }
}

const NO_SAT: CastMode = CastMode { saturate: false };

fn idx(b: &mut KernelBuilder, v: u64) -> Val {
    b.index(v as i64)
}

/// `base + i * s`.
fn madd(b: &mut KernelBuilder, base: Val, i: Val, s: u64) -> Val {
    if s == 0 {
        return base;
    }
    let sv = idx(b, s);
    let t = b.mul(i, sv);
    b.add(base, t)
}

fn input(node: &Node, i: usize) -> Option<ValueId> {
    node.input(i)
}

/// Element strides of a `(batch, heads, seq, head)` view of a 3-D `(batch, seq, heads*head)`
/// or a 4-D `(batch, heads, seq, head)` tensor.
fn bhsd_strides(dims: &[u64], heads: u64, head: u64) -> [u64; 3] {
    if dims.len() == 4 {
        let s = strides(dims);
        [s[0], s[1], s[2]]
    } else {
        [dims[1] * heads * head, head, heads * head]
    }
}

// ==== Attention ====

fn attention(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let q = input(node, 0).ok_or_else(|| cx.invalid("missing Q"))?;
    let k = input(node, 1).ok_or_else(|| cx.invalid("missing K"))?;
    let v = input(node, 2).ok_or_else(|| cx.invalid("missing V"))?;
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing Y"))?;
    let dt = cx.dtype(q)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("Attention on {dt}")));
    }
    if cx.dtype(k)? != dt || cx.dtype(v)? != dt {
        return Err(cx.invalid("Q, K and V must share a dtype"));
    }
    let (qd, kd, vd) = (cx.dims(q)?, cx.dims(k)?, cx.dims(v)?);
    let rank = qd.len();
    if !(rank == 3 || rank == 4) || kd.len() != rank || vd.len() != rank {
        return Err(cx.invalid("Q, K and V must all be 3-D or all 4-D"));
    }
    let batch = qd[0];
    if kd[0] != batch || vd[0] != batch {
        return Err(cx.invalid("Q, K and V disagree on the batch size"));
    }
    // (q heads, q seq, q head size, kv heads, kv seq, k head size, v head size)
    let (hq, sq, dq, hkv, skv, dk, dv) = if rank == 4 {
        if kd[1] != vd[1] || kd[2] != vd[2] {
            return Err(cx.invalid("K and V disagree on heads or sequence length"));
        }
        (qd[1], qd[2], qd[3], kd[1], kd[2], kd[3], vd[3])
    } else {
        let nq = node.attr_int("q_num_heads", 0);
        let nkv = node.attr_int("kv_num_heads", 0);
        if nq <= 0 || nkv <= 0 {
            return Err(cx.invalid("3-D Attention needs positive q_num_heads and kv_num_heads"));
        }
        let (nq, nkv) = (nq as u64, nkv as u64);
        if qd[2] % nq != 0 || kd[2] % nkv != 0 || vd[2] % nkv != 0 || kd[1] != vd[1] {
            return Err(cx.invalid("hidden sizes are not multiples of the head counts"));
        }
        (nq, qd[1], qd[2] / nq, nkv, kd[1], kd[2] / nkv, vd[2] / nkv)
    };
    if dq != dk {
        return Err(cx.invalid(format!("Q head size {dq} differs from K head size {dk}")));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(cx.unsupported(format!("{hq} query heads over {hkv} key/value heads")));
    }
    let group = hq / hkv;

    // Past cache.
    let (pk, pv) = (input(node, 4), input(node, 5));
    if pk.is_some() != pv.is_some() {
        return Err(cx.invalid("past_key and past_value must be given together"));
    }
    let past = match pk {
        Some(p) => {
            let d = cx.dims(p)?;
            if d != [batch, hkv, d.get(2).copied().unwrap_or(0), dk] {
                return Err(cx.invalid(format!(
                    "past_key has shape {d:?}, expected [{batch}, {hkv}, P, {dk}]"
                )));
            }
            d[2]
        }
        None => 0,
    };
    if let Some(p) = pv {
        if cx.dims(p)? != [batch, hkv, past, dv] {
            return Err(cx.invalid("past_value's shape does not match past_key's"));
        }
    }
    let total = past + skv;
    let nonpad = input(node, 6);
    if nonpad.is_some() && pk.is_some() {
        return Err(cx.invalid("nonpad_kv_seqlen cannot be combined with past_key/past_value"));
    }
    if let Some(np) = nonpad {
        if cx.dims(np)? != [batch] || !cx.dtype(np)?.is_int() {
            return Err(cx.invalid(format!(
                "nonpad_kv_seqlen must be an integer tensor of shape [{batch}]"
            )));
        }
    }

    // present_key / present_value: the outputs when requested, else scratch.
    let kst = bhsd_strides(&kd, hkv, dk);
    let vst = bhsd_strides(&vd, hkv, dv);
    let present = |cx: &mut LowerCx, slot: usize, name: &str, d: u64| -> Result<BufferId> {
        match node.outputs.get(slot) {
            Some(&o) => {
                if cx.dims(o)? != [batch, hkv, total, d] || cx.dtype(o)? != dt {
                    return Err(cx.invalid(format!("{name} has the wrong type")));
                }
                cx.buffer(o)
            }
            None => Ok(cx.scratch(name, dt, vec![batch, hkv, total, d])),
        }
    };
    let kb = present(cx, 1, "present_key", dk)?;
    let vb = present(cx, 2, "present_value", dv)?;
    let k_in = cx.buffer(k)?;
    let v_in = cx.buffer(v)?;
    let pk_b = match pk {
        Some(p) => Some(cx.buffer(p)?),
        None => None,
    };
    let pv_b = match pv {
        Some(p) => Some(cx.buffer(p)?),
        None => None,
    };
    let kn: u64 = kd.iter().product();
    let vn: u64 = vd.iter().product();
    assemble_cache(
        cx,
        "attn_present_key",
        dt,
        (batch, hkv, past, skv, dk),
        kst,
        kn,
        k_in,
        pk_b,
        kb,
    );
    assemble_cache(
        cx,
        "attn_present_value",
        dt,
        (batch, hkv, past, skv, dv),
        vst,
        vn,
        v_in,
        pv_b,
        vb,
    );

    // Mask.
    let mask = input(node, 3);
    let mask_info = match mask {
        Some(m) => {
            let md = cx.dims(m)?;
            let mdt = cx.dtype(m)?;
            if !(mdt == DType::Bool || mdt.is_float()) {
                return Err(cx.unsupported(format!("attn_mask of dtype {mdt}")));
            }
            if md.is_empty() || md.len() > 4 {
                return Err(cx.invalid(format!("attn_mask of rank {}", md.len())));
            }
            let last = md[md.len() - 1];
            if last > total {
                return Err(cx.invalid(format!(
                    "attn_mask's last dim {last} exceeds the key length {total}"
                )));
            }
            // Strides against (batch, q heads, q seq), right-aligned, size-1 dims broadcast.
            let target = [batch, hq, sq];
            let ms = strides(&md);
            let mut st = [0u64; 3];
            let lead = md.len() - 1;
            for a in 0..3 {
                let Some(mi) = (a + lead).checked_sub(3) else {
                    continue;
                };
                let d = md[mi];
                if d == 1 {
                    continue;
                }
                if d != target[a] {
                    return Err(cx.invalid(format!(
                        "attn_mask shape {md:?} does not broadcast to {target:?}"
                    )));
                }
                st[a] = ms[mi];
            }
            Some((cx.buffer(m)?, mdt, md.iter().product::<u64>(), st, last))
        }
        None => None,
    };
    let np_b = match nonpad {
        Some(n) => Some((cx.buffer(n)?, cx.dtype(n)?)),
        None => None,
    };

    // Outputs.
    let y_dims = cx.dims(y)?;
    let y_want: Vec<u64> = if rank == 4 {
        vec![batch, hq, sq, dv]
    } else {
        vec![batch, sq, hq * dv]
    };
    if y_dims != y_want || cx.dtype(y)? != dt {
        return Err(cx.invalid("Y has the wrong type"));
    }
    let yst = bhsd_strides(&y_dims, hq, dv);
    let yb = cx.buffer(y)?;
    let qk = match node.outputs.get(3) {
        Some(&o) => {
            if cx.dims(o)? != [batch, hq, sq, total] || cx.dtype(o)? != dt {
                return Err(cx.invalid("qk_matmul_output has the wrong type"));
            }
            Some(cx.buffer(o)?)
        }
        None => None,
    };
    let mode = node.attr_int("qk_matmul_output_mode", 0);
    if !(0..=3).contains(&mode) {
        return Err(cx.invalid(format!("qk_matmul_output_mode {mode}")));
    }
    let qst = bhsd_strides(&qd, hq, dq);
    let qb = cx.buffer(q)?;
    let qn: u64 = qd.iter().product();

    let scale = match node.attr("scale") {
        Some(_) => node.attr_float("scale", 1.0) as f64,
        None => 1.0 / (dq as f64).sqrt(),
    };
    let sqrt_scale = scale.sqrt();
    let softcap = node.attr_float("softcap", 0.0) as f64;
    let is_causal = node.attr_int("is_causal", 0) != 0;
    let left = node.attr_int("left_window_size", -1);
    let right = node.attr_int("right_window_size", -1);
    if batch * hq * sq == 0 {
        return Ok(Execution::Kernel);
    }

    let acc = compute_dtype(dt);
    let at = Ty::scalar(acc);
    let name = cx.kernel_name("attention");
    let mut b = KernelBuilder::new(name);
    let mut args = vec![qb, kb, vb];
    let qp = b.param("q", dt, qn, Access::Read);
    let kp = b.param("k", dt, batch * hkv * total * dk, Access::Read);
    let vp = b.param("v", dt, batch * hkv * total * dv, Access::Read);
    let mp = mask_info.map(|(mb, mdt, mn, _, _)| {
        args.push(mb);
        b.param("mask", mdt, mn, Access::Read)
    });
    let npp = np_b.map(|(nb, ndt)| {
        args.push(nb);
        b.param("nonpad", ndt, batch, Access::Read)
    });
    let yp = b.param("y", dt, y_dims.iter().product(), Access::Write);
    args.push(yb);
    let qkp = qk.map(|qb| {
        args.push(qb);
        b.param("qk", dt, batch * hq * sq * total, Access::Write)
    });
    let sc = b.local("scores", Space::Local, acc, total.max(1));
    b.set_grid(&[batch * hq, sq]);

    let bh = b.program_id(0);
    let i = b.program_id(1);
    let hqv = idx(&mut b, hq);
    let bi = b.div(bh, hqv);
    let t = b.mul(bi, hqv);
    let h = b.sub(bh, t);
    let gv = idx(&mut b, group);
    let g = b.div(h, gv);
    // Q row base, K/V slab bases (present layout), qk row base.
    let z = idx(&mut b, 0);
    let qbase = madd(&mut b, z, bi, qst[0]);
    let qbase = madd(&mut b, qbase, h, qst[1]);
    let qbase = madd(&mut b, qbase, i, qst[2]);
    let hkvv = idx(&mut b, hkv);
    let slab = b.mul(bi, hkvv);
    let slab = b.add(slab, g);
    let kbase = madd(&mut b, z, slab, total * dk);
    let vbase = madd(&mut b, z, slab, total * dv);
    let rowq = madd(&mut b, z, bh, sq);
    let rowq = b.add(rowq, i);
    let qkbase = madd(&mut b, z, rowq, total);
    let ybase = madd(&mut b, z, bi, yst[0]);
    let ybase = madd(&mut b, ybase, h, yst[1]);
    let ybase = madd(&mut b, ybase, i, yst[2]);
    let mbase = mask_info.map(|(_, _, _, st, _)| {
        let m = madd(&mut b, z, bi, st[0]);
        let m = madd(&mut b, m, h, st[1]);
        madd(&mut b, m, i, st[2])
    });
    // The causal / window frontier offset: past length, or nonpad[b] - q_len.
    let offset = match npp {
        Some(p) => {
            let n = b.load(p, bi, 1);
            let n = b.cast(n, DType::I64, NO_SAT);
            let sqv = idx(&mut b, sq);
            Some((b.sub(n, sqv), n))
        }
        None => None,
    };
    let offset_v = match offset {
        Some((o, _)) => o,
        None => idx(&mut b, past),
    };
    let pos = b.add(i, offset_v);

    let ninf = b.const_float(at, f64::NEG_INFINITY);
    let zero = b.const_float(at, 0.0);
    let sqs = b.const_float(at, round_to(dt, sqrt_scale));
    let lowp = dt.is_low_precision_float();

    // Pass 1: scores + bias; running max of both.
    let res = b.range_fold(0, total as i64, &[ninf, ninf], |b, j, carried| {
        let dot = b.range_fold(0, dq as i64, &[zero], |b, d, a| {
            let qi = b.add(qbase, d);
            let qv = b.load(qp, qi, 1);
            let qv = b.cast(qv, acc, NO_SAT);
            let qv = b.mul(qv, sqs);
            let kj = madd(b, kbase, j, dk);
            let ki = b.add(kj, d);
            let kv = b.load(kp, ki, 1);
            let kv = b.cast(kv, acc, NO_SAT);
            let kv = b.mul(kv, sqs);
            let p = b.mul(qv, kv);
            vec![b.add(a[0], p)]
        })[0];
        let mut s = dot;
        if lowp {
            s = round_through(b, s, dt);
        }
        if softcap > 0.0 {
            let c = b.const_float(at, softcap);
            let x = b.div(s, c);
            let th = b.math(MathFn::Tanh, &[x]);
            s = b.mul(th, c);
        }
        // Additive bias.
        let mut bias = zero;
        if let (Some(mp), Some(mbase), Some((_, mdt, _, _, last))) = (mp, mbase, mask_info) {
            let mv = if last == 0 {
                ninf
            } else {
                let lm1 = idx(b, last - 1);
                let jc = b.min(j, lm1);
                let mi = b.add(mbase, jc);
                let raw = b.load(mp, mi, 1);
                let val = if mdt == DType::Bool {
                    b.select(raw, zero, ninf)
                } else {
                    b.cast(raw, acc, NO_SAT)
                };
                if last < total {
                    let lv = idx(b, last);
                    let inside = b.cmp(CmpOp::Lt, j, lv);
                    b.select(inside, val, ninf)
                } else {
                    val
                }
            };
            bias = b.add(bias, mv);
        }
        if is_causal {
            let ok = b.cmp(CmpOp::Le, j, pos);
            let c = b.select(ok, zero, ninf);
            bias = b.add(bias, c);
        }
        if left >= 0 || right >= 0 {
            let diff = b.sub(pos, j);
            let t = b.const_int(Ty::BOOL, 1);
            let mut ok = t;
            if left >= 0 {
                let l = b.index(left);
                let c = b.cmp(CmpOp::Le, diff, l);
                ok = b.binary(tessera_kir::BinOp::And, ok, c);
            }
            if right >= 0 {
                let r = b.index(right);
                let zi = b.index(0);
                let nd = b.sub(zi, diff);
                let c = b.cmp(CmpOp::Le, nd, r);
                ok = b.binary(tessera_kir::BinOp::And, ok, c);
            }
            let w = b.select(ok, zero, ninf);
            bias = b.add(bias, w);
        }
        if let Some((_, n)) = offset {
            let ok = b.cmp(CmpOp::Lt, j, n);
            let p = b.select(ok, zero, ninf);
            bias = b.add(bias, p);
        }
        let x = b.add(s, bias);
        let at_j = b.add(qkbase, j);
        if let Some(qkp) = qkp {
            let out = match mode {
                0 | 1 => Some(s),
                2 => Some(x),
                _ => None,
            };
            if let Some(o) = out {
                let o = b.cast(o, dt, NO_SAT);
                b.store(qkp, at_j, o);
            }
        }
        b.store(sc, j, x);
        let mx = b.max(carried[0], x);
        let mb = b.max(carried[1], bias);
        vec![mx, mb]
    });
    let (mx, mb) = (res[0], res[1]);
    let all_masked = b.cmp(CmpOp::Eq, mb, ninf);
    let max_inf = b.cmp(CmpOp::Eq, mx, ninf);
    let safe = b.select(max_inf, zero, mx);
    // Pass 2: exponentials and their sum.
    let sum = b.range_fold(0, total as i64, &[zero], |b, j, a| {
        let x = b.load(sc, j, 1);
        let d = b.sub(x, safe);
        let e = b.math(MathFn::Exp, &[d]);
        b.store(sc, j, e);
        vec![b.add(a[0], e)]
    })[0];
    let one = b.const_float(at, 1.0);
    let is0 = b.cmp(CmpOp::Eq, sum, zero);
    let sum = b.select(is0, one, sum);
    // Pass 3: probabilities, zeroed for fully masked rows.
    b.range(0, total as i64, |b, j| {
        let e = b.load(sc, j, 1);
        let p = b.div(e, sum);
        let mut p = b.select(all_masked, zero, p);
        if lowp {
            p = round_through(b, p, dt);
        }
        b.store(sc, j, p);
        if let (Some(qkp), 3) = (qkp, mode) {
            let at_j = b.add(qkbase, j);
            let o = b.cast(p, dt, NO_SAT);
            b.store(qkp, at_j, o);
        }
    });
    // Pass 4: weighted sum of values.
    b.range(0, dv as i64, |b, d| {
        let r = b.range_fold(0, total as i64, &[zero], |b, j, a| {
            let p = b.load(sc, j, 1);
            let vj = madd(b, vbase, j, dv);
            let vi = b.add(vj, d);
            let vv = b.load(vp, vi, 1);
            let vv = b.cast(vv, acc, NO_SAT);
            let m = b.mul(p, vv);
            vec![b.add(a[0], m)]
        })[0];
        let yi = b.add(ybase, d);
        let r = b.cast(r, dt, NO_SAT);
        b.store(yp, yi, r);
    });
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}

/// `v` rounded to the nearest `dt` value (for constants the reference computes in `dt`).
fn round_to(dt: DType, v: f64) -> f64 {
    match dt {
        DType::F32 => v as f32 as f64,
        _ => v,
    }
}

/// Rounds a compute-dtype value through `dt` and back.
fn round_through(b: &mut KernelBuilder, v: Val, dt: DType) -> Val {
    let acc = b.ty(v).elem;
    let r = b.cast(v, dt, NO_SAT);
    b.cast(r, acc, NO_SAT)
}

/// Writes `present[b, h, t, d]` = `past[b, h, t, d]` for `t < past`, else the new tensor's
/// element `(b, h, t - past, d)` read through `st` (its `(batch, heads, seq)` strides).
#[allow(clippy::too_many_arguments)]
fn assemble_cache(
    cx: &mut LowerCx,
    name: &str,
    dt: DType,
    (batch, heads, past, seq, d): (u64, u64, u64, u64, u64),
    st: [u64; 3],
    new_len: u64,
    new: BufferId,
    past_buf: Option<BufferId>,
    out: BufferId,
) {
    let total = past + seq;
    if batch * heads * total * d == 0 {
        return;
    }
    let kname = cx.kernel_name(name);
    let mut b = KernelBuilder::new(kname);
    let np = b.param("new", dt, new_len, Access::Read);
    let mut args = vec![new];
    let pp = past_buf.map(|p| {
        args.push(p);
        b.param("past", dt, batch * heads * past * d, Access::Read)
    });
    let op = b.param("present", dt, batch * heads * total * d, Access::Write);
    args.push(out);
    b.set_grid(&[batch * heads, total]);
    let bh = b.program_id(0);
    let t = b.program_id(1);
    let hv = idx(&mut b, heads);
    let bi = b.div(bh, hv);
    let m = b.mul(bi, hv);
    let h = b.sub(bh, m);
    let z = idx(&mut b, 0);
    let row = madd(&mut b, z, bh, total);
    let row = b.add(row, t);
    let obase = madd(&mut b, z, row, d);
    let ty = Ty::scalar(dt);
    let load_new = move |b: &mut KernelBuilder, dd: Val| -> Val {
        let pv = idx(b, past);
        let tn = b.sub(t, pv);
        let z = idx(b, 0);
        let base = madd(b, z, bi, st[0]);
        let base = madd(b, base, h, st[1]);
        let base = madd(b, base, tn, st[2]);
        let at = b.add(base, dd);
        b.load(np, at, 1)
    };
    b.range(0, d as i64, |b, dd| {
        let v = match pp {
            Some(pp) if past > 0 => {
                let pv = idx(b, past);
                let is_past = b.cmp(CmpOp::Lt, t, pv);
                b.if_else(
                    is_past,
                    &[ty],
                    |b| {
                        let z = idx(b, 0);
                        let base = madd(b, z, bh, past);
                        let base = b.add(base, t);
                        let base = madd(b, z, base, d);
                        let at = b.add(base, dd);
                        vec![b.load(pp, at, 1)]
                    },
                    |b| vec![load_new(b, dd)],
                )[0]
            }
            _ => load_new(b, dd),
        };
        let o = b.add(obase, dd);
        b.store(op, o, v);
    });
    cx.launch(b.finish(), args);
}

// ==== RotaryEmbedding ====

fn rotary(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = input(node, 0).ok_or_else(|| cx.invalid("missing input"))?;
    let cos = input(node, 1).ok_or_else(|| cx.invalid("missing cos_cache"))?;
    let sin = input(node, 2).ok_or_else(|| cx.invalid("missing sin_cache"))?;
    let pos = input(node, 3);
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing output"))?;
    let dt = cx.dtype(x)?;
    if !dt.is_float() || cx.dtype(cos)? != dt || cx.dtype(sin)? != dt {
        return Err(cx.unsupported(format!("RotaryEmbedding on {dt}")));
    }
    let xd = cx.dims(x)?;
    if cx.dims(y)? != xd || cx.dtype(y)? != dt {
        return Err(cx.invalid("output type differs from the input's"));
    }
    // View as (batch, seq, heads, head) with element strides.
    let (batch, seq, heads, head, st) = match xd.len() {
        4 => {
            let s = strides(&xd);
            (xd[0], xd[2], xd[1], xd[3], [s[0], s[2], s[1]])
        }
        3 => {
            let nh = node.attr_int("num_heads", 0);
            if nh <= 0 || xd[2] % nh as u64 != 0 {
                return Err(cx.invalid("3-D input needs num_heads dividing the hidden size"));
            }
            let nh = nh as u64;
            let hs = xd[2] / nh;
            (xd[0], xd[1], nh, hs, [xd[1] * xd[2], xd[2], hs])
        }
        r => return Err(cx.invalid(format!("input of rank {r}"))),
    };
    let rd = match node.attr_int("rotary_embedding_dim", 0) {
        0 => head,
        r if r > 0 && (r as u64) <= head && r % 2 == 0 => r as u64,
        r => return Err(cx.invalid(format!("rotary_embedding_dim {r} for head size {head}"))),
    };
    let half = rd / 2;
    let interleaved = node.attr_int("interleaved", 0) != 0;
    let cd = cx.dims(cos)?;
    if cx.dims(sin)? != cd || cd.last().copied() != Some(half) {
        return Err(cx.invalid(format!(
            "cos/sin caches must end in rotary_embedding_dim/2 = {half}"
        )));
    }
    // Cache rows: by position id (cache (max_pos, half)) or per (batch, seq).
    let max_pos = match pos {
        Some(p) => {
            if cd.len() != 2 || cx.dims(p)? != [batch, seq] || !cx.dtype(p)?.is_int() {
                return Err(
                    cx.invalid("position_ids must be (batch, seq) integers with a 2-D cache")
                );
            }
            cd[0]
        }
        None => {
            if cd != [batch, seq, half] {
                return Err(
                    cx.invalid("without position_ids the caches must be (batch, seq, dim/2)")
                );
            }
            0
        }
    };
    let n: u64 = xd.iter().product();
    if n == 0 {
        return Ok(Execution::Kernel);
    }
    let xb = cx.buffer(x)?;
    let cb = cx.buffer(cos)?;
    let sb = cx.buffer(sin)?;
    let yb = cx.buffer(y)?;
    let mut args = vec![xb, cb, sb];
    let acc = compute_dtype(dt);
    let pos_code = cx.trap_site(
        node,
        "position_ids",
        format!(
            "past the cos/sin caches, which have {max_pos} rows (valid: 0 to {})",
            max_pos.saturating_sub(1)
        ),
    );
    let name = cx.kernel_name("rotary_embedding");
    let mut b = KernelBuilder::new(name);
    let xp = b.param("x", dt, n, Access::Read);
    let cl: u64 = cd.iter().product();
    let cp = b.param("cos", dt, cl, Access::Read);
    let sp = b.param("sin", dt, cl, Access::Read);
    let pp = match pos {
        Some(p) => {
            args.push(cx.buffer(p)?);
            Some(b.param("pos", cx.dtype(p)?, batch * seq, Access::Read))
        }
        None => None,
    };
    let yp = b.param("y", dt, n, Access::Write);
    args.push(yb);
    // One instance per (batch, seq, head) row.
    b.set_grid(&[batch * seq, heads]);
    let bs = b.program_id(0);
    let hh = b.program_id(1);
    let sv = idx(&mut b, seq);
    let bi = b.div(bs, sv);
    let m = b.mul(bi, sv);
    let si = b.sub(bs, m);
    let z = idx(&mut b, 0);
    let base = madd(&mut b, z, bi, st[0]);
    let base = madd(&mut b, base, si, st[1]);
    let base = madd(&mut b, base, hh, st[2]);
    let crow = match pp {
        Some(pp) => {
            // A runtime position id; one past the caches is a data error.
            let p = b.load(pp, bs, 1);
            let p = b.cast(p, DType::I64, NO_SAT);
            let p = b.checked_below(p, max_pos, pos_code);
            madd(&mut b, z, p, half)
        }
        None => madd(&mut b, z, bs, half),
    };
    let ld = |b: &mut KernelBuilder, buf: Buf, at: Val| {
        let v = b.load(buf, at, 1);
        b.cast(v, acc, NO_SAT)
    };
    b.range(0, half as i64, |b, kk| {
        let (i1, i2) = if interleaved {
            let two = idx(b, 2);
            let a = b.mul(kk, two);
            let one = idx(b, 1);
            (a, b.add(a, one))
        } else {
            let hv = idx(b, half);
            (kk, b.add(kk, hv))
        };
        let a1 = b.add(base, i1);
        let a2 = b.add(base, i2);
        let x1 = ld(b, xp, a1);
        let x2 = ld(b, xp, a2);
        let ci = b.add(crow, kk);
        let c = ld(b, cp, ci);
        let s = ld(b, sp, ci);
        let cx1 = b.mul(c, x1);
        let sx2 = b.mul(s, x2);
        let real = b.sub(cx1, sx2);
        let sx1 = b.mul(s, x1);
        let cx2 = b.mul(c, x2);
        let imag = b.add(sx1, cx2);
        let real = b.cast(real, dt, NO_SAT);
        let imag = b.cast(imag, dt, NO_SAT);
        b.store(yp, a1, real);
        b.store(yp, a2, imag);
    });
    b.range(rd as i64, head as i64, |b, d| {
        let a = b.add(base, d);
        let v = b.load(xp, a, 1);
        b.store(yp, a, v);
    });
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}
