//! Lowering of the linear-attention and quantized ops added last: LinearAttention (one
//! kernel, one grid point per state column),
//! CausalConvWithState (one grid point per channel),
//! QLinearMatMul (one grid point per output element),
//! TensorScatter (a copy, then one grid point per update element),
//! DeformConv (2-D; one grid point per output element, bilinear sampling),
//! RoiAlign (one grid point per output element), QLinearConv (2-D; one grid point per output
//! element).

use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op, ValueId};
use tessera_kir::{Access, Buf, CastMode, Execution, KernelBuilder, MathFn, Space, Ty, Val};

const NO_SAT: CastMode = CastMode { saturate: false };

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    match node.op {
        Op::LinearAttention => linear_attention(cx, node),
        Op::CausalConvWithState => causal_conv(cx, node),
        Op::QLinearMatMul => qlinear_matmul(cx, node),
        Op::TensorScatter => tensor_scatter(cx, node),
        Op::DeformConv => deform_conv(cx, node),
        Op::RoiAlign => roi_align(cx, node),
        Op::QLinearConv => qlinear_conv(cx, node),
        op => Err(cx.unsupported(format!("{op} is not lowered by extra.rs"))),
    }
}

/// Operand `i`, which must be present.
fn req(cx: &LowerCx, node: &Node, i: usize, what: &str) -> Result<ValueId> {
    node.input(i)
        .ok_or_else(|| cx.invalid(format!("missing {what}")))
}

/// Loads element `at` of `buf` and widens it to f32.
fn ld32(b: &mut KernelBuilder, buf: Buf, at: Val) -> Val {
    let v = b.load(buf, at, 1);
    b.cast(v, DType::F32, NO_SAT)
}

/// `a * n + c` on indices.
fn mad(b: &mut KernelBuilder, a: Val, n: u64, c: Val) -> Val {
    let nv = b.index(n as i64);
    let t = b.mul(a, nv);
    b.add(t, c)
}

// ==== LinearAttention ====

fn linear_attention(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let q = req(cx, node, 0, "query")?;
    let k = req(cx, node, 1, "key")?;
    let v = req(cx, node, 2, "value")?;
    let past = node.input(3);
    let decay = node.input(4);
    let beta = node.input(5);
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing output"))?;
    let present = node.outputs.get(1).copied();
    let (qd, kd, vd) = (cx.dims(q)?, cx.dims(k)?, cx.dims(v)?);
    if qd.len() != 3 || kd.len() != 3 || vd.len() != 3 {
        return Err(cx.invalid("query, key and value must be rank 3"));
    }
    let hq = node.attr_int("q_num_heads", 0);
    let hkv = node.attr_int("kv_num_heads", 0);
    if hq <= 0 || hkv <= 0 || hq % hkv != 0 {
        return Err(cx.invalid("q_num_heads must be a positive multiple of kv_num_heads"));
    }
    let (hq, hkv) = (hq as u64, hkv as u64);
    let group = hq / hkv;
    let (bn, t) = (qd[0], qd[1]);
    if qd[2] % hq != 0 || vd[2] % hkv != 0 {
        return Err(cx.invalid("packed head dims are not multiples of the head counts"));
    }
    let dk = qd[2] / hq;
    let dv = vd[2] / hkv;
    if kd != [bn, t, hkv * dk] || vd[..2] != [bn, t] {
        return Err(cx.invalid(format!(
            "key {kd:?} and value {vd:?} do not match query {qd:?}"
        )));
    }
    let rule = node
        .attr_str("update_rule")
        .unwrap_or("gated_delta")
        .to_string();
    let gating = matches!(rule.as_str(), "gated" | "gated_delta");
    let delta = matches!(rule.as_str(), "delta" | "gated_delta");
    if !matches!(rule.as_str(), "linear" | "gated" | "delta" | "gated_delta") {
        return Err(cx.invalid(format!("update_rule `{rule}`")));
    }
    if gating != decay.is_some() {
        return Err(cx.invalid(format!(
            "update_rule `{rule}` {} decay",
            if gating { "requires" } else { "forbids" }
        )));
    }
    if delta != beta.is_some() {
        return Err(cx.invalid(format!(
            "update_rule `{rule}` {} beta",
            if delta { "requires" } else { "forbids" }
        )));
    }
    for x in [Some(q), Some(k), Some(v), past, decay, beta]
        .into_iter()
        .flatten()
    {
        let dt = cx.dtype(x)?;
        if !dt.is_float() {
            return Err(cx.unsupported(format!("LinearAttention on {dt}")));
        }
    }
    let state_dims = vec![bn, hkv, dk, dv];
    if let Some(p) = past {
        if cx.dims(p)? != state_dims {
            return Err(cx.invalid(format!("past_state must be {state_dims:?}")));
        }
    }
    // Decay is per head (last dim H_kv) or per key dim (H_kv * d_k).
    let decay_last = match decay {
        Some(g) => {
            let gd = cx.dims(g)?;
            if gd.len() != 3 || gd[..2] != [bn, t] || (gd[2] != hkv && gd[2] != hkv * dk) {
                return Err(cx.invalid(format!(
                    "decay {gd:?} must be [B, T, H_kv] or [B, T, H_kv*d_k]"
                )));
            }
            gd[2]
        }
        None => 0,
    };
    let beta_last = match beta {
        Some(bt) => {
            let bd = cx.dims(bt)?;
            if bd.len() != 3 || bd[..2] != [bn, t] || (bd[2] != hkv && bd[2] != 1) {
                return Err(cx.invalid(format!("beta {bd:?} must be [B, T, H_kv] or [B, T, 1]")));
            }
            bd[2]
        }
        None => 0,
    };
    let out_dt = cx.dtype(y)?;
    if cx.dims(y)? != [bn, t, hq * dv] {
        return Err(cx.invalid("output shape differs from [B, T, H_q*d_v]"));
    }
    let scale_attr = node.attr_float("scale", 0.0) as f64;
    let scale = if scale_attr == 0.0 {
        1.0 / (dk as f64).sqrt()
    } else {
        scale_attr
    };

    let mut args = Vec::new();
    let name = cx.kernel_name("linear_attention");
    let mut b = KernelBuilder::new(name);
    let qp = cx.bind_param(&mut b, &mut args, q, "q", Access::Read)?;
    let kp = cx.bind_param(&mut b, &mut args, k, "k", Access::Read)?;
    let vp = cx.bind_param(&mut b, &mut args, v, "v", Access::Read)?;
    let pp = past
        .map(|x| cx.bind_param(&mut b, &mut args, x, "past", Access::Read))
        .transpose()?;
    let gp = decay
        .map(|x| cx.bind_param(&mut b, &mut args, x, "decay", Access::Read))
        .transpose()?;
    let bp = beta
        .map(|x| cx.bind_param(&mut b, &mut args, x, "beta", Access::Read))
        .transpose()?;
    let yp = cx.bind_param(&mut b, &mut args, y, "y", Access::Write)?;
    let sp = present
        .map(|x| cx.bind_param(&mut b, &mut args, x, "present", Access::Write))
        .transpose()?;
    let state_dt = match present {
        Some(p) => {
            if cx.dims(p)? != state_dims {
                return Err(cx.invalid(format!("present_state must be {state_dims:?}")));
            }
            cx.dtype(p)?
        }
        None => out_dt,
    };
    if bn * hkv * dv == 0 {
        return Ok(Execution::Kernel);
    }
    let f32t = Ty::scalar(DType::F32);
    let st = b.local("state", Space::Local, DType::F32, dk.max(1));
    b.set_grid(&[bn * hkv * dv]);
    let pid = b.program_id(0);
    let dvv = b.index(dv as i64);
    let bh = b.div(pid, dvv);
    let t0 = b.mul(bh, dvv);
    let m = b.sub(pid, t0);
    let hkvv = b.index(hkv as i64);
    let bi = b.div(bh, hkvv);
    let t0 = b.mul(bi, hkvv);
    let h = b.sub(bh, t0);
    // Flat index of state element (bi, h, d, m): (bh * dk + d) * dv + m.
    let state_at = move |b: &mut KernelBuilder, d: Val| -> Val {
        let r = mad(b, bh, dk, d);
        mad(b, r, dv, m)
    };
    b.range(0, dk as i64, |b, d| {
        let init = match pp {
            Some(p) => {
                let at = state_at(b, d);
                ld32(b, p, at)
            }
            None => b.const_float(f32t, 0.0),
        };
        b.store(st, d, init);
    });
    b.range(0, t as i64, |b, ti| {
        let row = mad(b, bi, t, ti);
        let hk0 = b.index(0);
        let kbase = mad(b, row, hkv * dk, hk0);
        let kbase = mad(b, h, dk, kbase);
        if let Some(g) = gp {
            let gbase = mad(b, row, decay_last, hk0);
            if decay_last == hkv {
                let at = b.add(gbase, h);
                let gv = ld32(b, g, at);
                let e = b.math(MathFn::Exp, &[gv]);
                b.range(0, dk as i64, |b, d| {
                    let s = b.load(st, d, 1);
                    let s = b.mul(s, e);
                    b.store(st, d, s);
                });
            } else {
                let gbase = mad(b, h, dk, gbase);
                b.range(0, dk as i64, |b, d| {
                    let at = b.add(gbase, d);
                    let gv = ld32(b, g, at);
                    let e = b.math(MathFn::Exp, &[gv]);
                    let s = b.load(st, d, 1);
                    let s = b.mul(s, e);
                    b.store(st, d, s);
                });
            }
        }
        let vat = mad(b, row, hkv * dv, hk0);
        let vat = mad(b, h, dv, vat);
        let vat = b.add(vat, m);
        let mut vv = ld32(b, vp, vat);
        if let Some(bp) = bp {
            let z = b.const_float(f32t, 0.0);
            let r = b.range_fold(0, dk as i64, &[z], |b, d, a| {
                let s = b.load(st, d, 1);
                let at = b.add(kbase, d);
                let kv = ld32(b, kp, at);
                let p = b.mul(s, kv);
                vec![b.add(a[0], p)]
            })[0];
            let bat = mad(b, row, beta_last, hk0);
            let bat = if beta_last == 1 { bat } else { b.add(bat, h) };
            let be = ld32(b, bp, bat);
            let diff = b.sub(vv, r);
            vv = b.mul(be, diff);
        }
        b.range(0, dk as i64, |b, d| {
            let at = b.add(kbase, d);
            let kv = ld32(b, kp, at);
            let s = b.load(st, d, 1);
            let p = b.mul(kv, vv);
            let s = b.add(s, p);
            b.store(st, d, s);
        });
        b.range(0, group as i64, |b, gi| {
            let qh = mad(b, h, group, gi);
            let qbase = mad(b, row, hq * dk, hk0);
            let qbase = mad(b, qh, dk, qbase);
            let z = b.const_float(f32t, 0.0);
            let o = b.range_fold(0, dk as i64, &[z], |b, d, a| {
                let s = b.load(st, d, 1);
                let at = b.add(qbase, d);
                let qv = ld32(b, qp, at);
                let p = b.mul(s, qv);
                vec![b.add(a[0], p)]
            })[0];
            let sc = b.const_float(f32t, scale);
            let o = b.mul(o, sc);
            let o = b.cast(o, out_dt, NO_SAT);
            let yat = mad(b, row, hq * dv, hk0);
            let yat = mad(b, qh, dv, yat);
            let yat = b.add(yat, m);
            b.store(yp, yat, o);
        });
    });
    if let Some(sp) = sp {
        b.range(0, dk as i64, |b, d| {
            let s = b.load(st, d, 1);
            let s = b.cast(s, state_dt, NO_SAT);
            let at = state_at(b, d);
            b.store(sp, at, s);
        });
    }
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}

// ==== CausalConvWithState ====

fn causal_conv(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = req(cx, node, 0, "input")?;
    let w = req(cx, node, 1, "weight")?;
    let bias = node.input(2);
    let past = node.input(3);
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing output"))?;
    let present = node.outputs.get(1).copied();
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("CausalConvWithState on {dt}")));
    }
    let xd = cx.dims(x)?;
    let wd = cx.dims(w)?;
    if xd.len() != 3 || wd.len() != 3 || wd[0] != xd[1] || wd[1] != 1 || wd[2] == 0 {
        return Err(cx.invalid(format!(
            "input {xd:?} and weight {wd:?} must be [B, C, L] and [C, 1, K]"
        )));
    }
    let (bn, c, l, kk) = (xd[0], xd[1], xd[2], wd[2]);
    let carry = kk - 1;
    for (v, want) in [(bias, vec![c]), (past, vec![bn, c, carry])] {
        if let Some(v) = v {
            if cx.dims(v)? != want {
                return Err(cx.invalid(format!(
                    "operand `{}` must be {want:?}",
                    cx.graph.value(v).name
                )));
            }
            if cx.dtype(v)? != dt {
                return Err(cx.invalid("all operands must share the input's dtype"));
            }
        }
    }
    if cx.dtype(w)? != dt || cx.dtype(y)? != dt || cx.dims(y)? != xd {
        return Err(cx.invalid("weight and output must share the input's dtype and shape"));
    }
    if let Some(p) = present {
        if cx.dims(p)? != [bn, c, carry] || cx.dtype(p)? != dt {
            return Err(cx.invalid("present_state must be [B, C, K-1] of the input's dtype"));
        }
    }
    let silu = match node.attr_str("activation").unwrap_or("none") {
        "none" => false,
        "silu" | "swish" => true,
        a => return Err(cx.invalid(format!("activation `{a}` is not none, silu or swish"))),
    };
    let mut args = Vec::new();
    let name = cx.kernel_name("causal_conv_with_state");
    let mut b = KernelBuilder::new(name);
    let xp = cx.bind_param(&mut b, &mut args, x, "x", Access::Read)?;
    let wp = cx.bind_param(&mut b, &mut args, w, "w", Access::Read)?;
    let bp = bias
        .map(|v| cx.bind_param(&mut b, &mut args, v, "bias", Access::Read))
        .transpose()?;
    let pp = past
        .map(|v| cx.bind_param(&mut b, &mut args, v, "past", Access::Read))
        .transpose()?;
    let yp = cx.bind_param(&mut b, &mut args, y, "y", Access::Write)?;
    let sp = present
        .map(|v| cx.bind_param(&mut b, &mut args, v, "present", Access::Write))
        .transpose()?;
    if bn * c == 0 {
        return Ok(Execution::Kernel);
    }
    let f32t = Ty::scalar(DType::F32);
    b.set_grid(&[bn * c]);
    let row = b.program_id(0);
    let cv = b.index(c as i64);
    let t0 = b.div(row, cv);
    let t0 = b.mul(t0, cv);
    let ch = b.sub(row, t0);
    let zero = b.index(0);
    let xbase = mad(&mut b, row, l, zero);
    let pbase = mad(&mut b, row, carry, zero);
    let wbase = mad(&mut b, ch, kk, zero);
    // Element `p` of the left-padded row [past | x] (raw dtype). Both loads use clamped
    // indices, so neither can leave its buffer; the select keeps the right one.
    let padded = move |b: &mut KernelBuilder, p: Val| -> Val {
        let cv = b.index(carry as i64);
        let z = b.index(0);
        let xi = b.sub(p, cv);
        let xi = b.max(xi, z);
        let xi = b.add(xbase, xi);
        let xv = b.load(xp, xi, 1);
        if carry == 0 {
            return xv;
        }
        let last = b.index(carry as i64 - 1);
        let pi = b.min(p, last);
        let pi = b.add(pbase, pi);
        let pv = match pp {
            Some(pp) => b.load(pp, pi, 1),
            None => b.const_num(Ty::scalar(dt), 0.0),
        };
        let in_past = b.cmp(tessera_kir::CmpOp::Lt, p, cv);
        b.select(in_past, pv, xv)
    };
    b.range(0, l as i64, |b, li| {
        let init = match bp {
            Some(bp) => ld32(b, bp, ch),
            None => b.const_float(f32t, 0.0),
        };
        let acc = b.range_fold(0, kk as i64, &[init], |b, ki, a| {
            let p = b.add(li, ki);
            let xv = padded(b, p);
            let xv = b.cast(xv, DType::F32, NO_SAT);
            let wi = b.add(wbase, ki);
            let wv = ld32(b, wp, wi);
            let m = b.mul(xv, wv);
            vec![b.add(a[0], m)]
        })[0];
        // The convolution rounds to the output dtype before the activation, as the
        // reference does.
        let r = b.cast(acc, dt, NO_SAT);
        let r = if silu {
            let r32 = b.cast(r, DType::F32, NO_SAT);
            let s = b.math(MathFn::Sigmoid, &[r32]);
            let r32 = b.mul(r32, s);
            b.cast(r32, dt, NO_SAT)
        } else {
            r
        };
        let at = b.add(xbase, li);
        b.store(yp, at, r);
    });
    if let Some(sp) = sp {
        b.range(0, carry as i64, |b, j| {
            let lv = b.index(l as i64);
            let p = b.add(lv, j);
            let v = padded(b, p);
            let at = b.add(pbase, j);
            b.store(sp, at, v);
        });
    }
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}

// ==== QLinearMatMul ====

/// The representable range of an 8-bit output.
fn int8_bounds(cx: &LowerCx, dt: DType) -> Result<(f64, f64)> {
    match dt {
        DType::I8 => Ok((-128.0, 127.0)),
        DType::U8 => Ok((0.0, 255.0)),
        _ => Err(cx.unsupported(format!("quantized output dtype {dt}"))),
    }
}

fn qlinear_matmul(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let a = req(cx, node, 0, "a")?;
    let bv = req(cx, node, 3, "b")?;
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing output"))?;
    let (ad, bd, yd) = (cx.dims(a)?, cx.dims(bv)?, cx.dims(y)?);
    let out_dt = cx.dtype(y)?;
    let (lo, hi) = int8_bounds(cx, out_dt)?;
    for v in [a, bv] {
        let dt = cx.dtype(v)?;
        if !matches!(dt, DType::I8 | DType::U8) {
            return Err(cx.unsupported(format!("QLinearMatMul on {dt}")));
        }
    }
    let (ar, br, yr) = (ad.len(), bd.len(), yd.len());
    if ar < 2 || br < 2 || yr < 2 {
        return Err(cx.invalid("a, b and the output must have rank 2 or more"));
    }
    let (m, kk, n) = (ad[ar - 2], ad[ar - 1], bd[br - 1]);
    if bd[br - 2] != kk || yd[yr - 2] != m || yd[yr - 1] != n {
        return Err(cx.invalid(format!("shapes {ad:?} x {bd:?} -> {yd:?} do not match")));
    }
    // Scales and zero points: one value each (per-row and per-column forms are not lowered).
    let scales: Vec<ValueId> = [1, 4, 6]
        .iter()
        .map(|&i| req(cx, node, i, "scale"))
        .collect::<Result<_>>()?;
    let sdt = cx.dtype(scales[0])?;
    for &s in &scales {
        if cx.numel(s)? != 1 {
            return Err(cx.unsupported("per-axis QLinearMatMul scales"));
        }
        if cx.dtype(s)? != sdt || !sdt.is_float() {
            return Err(cx.unsupported("QLinearMatMul scales must share one float dtype"));
        }
    }
    let zps: Vec<Option<ValueId>> = [2, 5, 7].iter().map(|&i| node.input(i)).collect();
    for z in zps.iter().flatten() {
        if cx.numel(*z)? != 1 {
            return Err(cx.unsupported("per-axis QLinearMatMul zero points"));
        }
        let dt = cx.dtype(*z)?;
        if !matches!(dt, DType::I8 | DType::U8) {
            return Err(cx.invalid(format!("zero point of dtype {dt}")));
        }
    }
    let out_batch = &yd[..yr - 2];
    let a_bs: Vec<u64> = crate::util::broadcast_strides(&ad[..ar - 2], out_batch)
        .iter()
        .map(|s| s * m * kk)
        .collect();
    let b_bs: Vec<u64> = crate::util::broadcast_strides(&bd[..br - 2], out_batch)
        .iter()
        .map(|s| s * kk * n)
        .collect();
    if ar - 2 > yr - 2 || br - 2 > yr - 2 {
        return Err(cx.invalid("operand batch rank exceeds the output's"));
    }
    let mut args = Vec::new();
    let name = cx.kernel_name("qlinear_matmul");
    let mut b = KernelBuilder::new(name);
    let ap = cx.bind_param(&mut b, &mut args, a, "a", Access::Read)?;
    let bp = cx.bind_param(&mut b, &mut args, bv, "b", Access::Read)?;
    let mut sp = Vec::new();
    for (k, &s) in scales.iter().enumerate() {
        sp.push(cx.bind_param(&mut b, &mut args, s, &format!("scale{k}"), Access::Read)?);
    }
    let mut zp = Vec::new();
    for (k, z) in zps.iter().enumerate() {
        zp.push(
            z.map(|z| cx.bind_param(&mut b, &mut args, z, &format!("zero{k}"), Access::Read))
                .transpose()?,
        );
    }
    let yp = cx.bind_param(&mut b, &mut args, y, "y", Access::Write)?;
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let i32t = Ty::scalar(DType::I32);
    let f64t = Ty::scalar(DType::F64);
    b.set_grid(&[total]);
    let pid = b.program_id(0);
    let coords = crate::util::unravel(&mut b, pid, &yd);
    let (mi, ni) = (coords[yr - 2], coords[yr - 1]);
    let a0 = crate::util::linear_index(&mut b, &coords[..yr - 2], &a_bs);
    let a0 = mad(&mut b, mi, kk, a0);
    let b0 = crate::util::linear_index(&mut b, &coords[..yr - 2], &b_bs);
    let b0 = b.add(b0, ni);
    let zero = b.index(0);
    let mut zv = Vec::new();
    for z in &zp {
        zv.push(match z {
            Some(z) => {
                let v = b.load(*z, zero, 1);
                b.cast(v, DType::I32, NO_SAT)
            }
            None => b.const_int(i32t, 0),
        });
    }
    let init = b.const_int(i32t, 0);
    let acc = b.range_fold(0, kk as i64, &[init], |b, ki, acc| {
        let ai = b.add(a0, ki);
        let av = b.load(ap, ai, 1);
        let av = b.cast(av, DType::I32, NO_SAT);
        let av = b.sub(av, zv[0]);
        let bi = mad(b, ki, n, b0);
        let bvv = b.load(bp, bi, 1);
        let bvv = b.cast(bvv, DType::I32, NO_SAT);
        let bvv = b.sub(bvv, zv[1]);
        let p = b.mul(av, bvv);
        vec![b.add(acc[0], p)]
    })[0];
    // The combined scale is computed in the scales' own precision, as the reference does.
    let sv: Vec<Val> = sp.iter().map(|&s| ld32(&mut b, s, zero)).collect();
    let f = b.mul(sv[0], sv[1]);
    let f = b.cast(f, sdt, NO_SAT);
    let f = b.cast(f, DType::F32, NO_SAT);
    let f = b.div(f, sv[2]);
    let f = b.cast(f, sdt, NO_SAT);
    let f = b.cast(f, DType::F64, NO_SAT);
    let d = b.cast(acc, DType::F64, NO_SAT);
    let d = b.mul(d, f);
    let d = b.unary(tessera_kir::UnOp::Round, d);
    let yz = b.cast(zv[2], DType::F64, NO_SAT);
    let d = b.add(d, yz);
    let lov = b.const_float(f64t, lo);
    let hiv = b.const_float(f64t, hi);
    let d = b.max(d, lov);
    let d = b.min(d, hiv);
    let d = b.cast(d, out_dt, NO_SAT);
    b.store(yp, pid, d);
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}

// ==== TensorScatter ====

fn tensor_scatter(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let past = req(cx, node, 0, "past_cache")?;
    let upd = req(cx, node, 1, "update")?;
    let wi = node.input(2);
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing output"))?;
    let (pd, ud) = (cx.dims(past)?, cx.dims(upd)?);
    let dt = cx.dtype(past)?;
    if cx.dtype(upd)? != dt || cx.dtype(y)? != dt || cx.dims(y)? != pd {
        return Err(cx.invalid("update and output must match past_cache's dtype"));
    }
    let r = pd.len() as i64;
    let axis = node.attr_int("axis", -2);
    let axis = if axis < 0 { axis + r } else { axis };
    if axis < 1 || axis >= r || ud.len() != pd.len() {
        return Err(cx.invalid(format!("axis {axis} must name a non-batch dim of rank {r}")));
    }
    let axis = axis as usize;
    for i in 0..pd.len() {
        if (i != axis && ud[i] != pd[i]) || (i == axis && ud[i] > pd[i]) {
            return Err(cx.invalid(format!("update {ud:?} does not fit past_cache {pd:?}")));
        }
    }
    let circular = match node.attr_str("mode").unwrap_or("linear") {
        "linear" => false,
        "circular" => true,
        m => return Err(cx.invalid(format!("mode `{m}` is not linear or circular"))),
    };
    if let Some(w) = wi {
        let wdt = cx.dtype(w)?;
        if cx.dims(w)? != [pd[0]] || !matches!(wdt, DType::I64 | DType::I32) {
            return Err(cx.invalid(format!("write_indices must be an integer [{}]", pd[0])));
        }
    }
    let (pb, ub, yb) = (cx.buffer(past)?, cx.buffer(upd)?, cx.buffer(y)?);
    cx.copy(pb, yb);
    let total: u64 = ud.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let mut args = vec![ub];
    let mut b = KernelBuilder::new(cx.kernel_name("tensor_scatter"));
    let up = b.param("update", dt, total, Access::Read);
    let wp = match wi {
        Some(w) => {
            args.push(cx.buffer(w)?);
            Some(b.param("write_indices", cx.dtype(w)?, pd[0], Access::Read))
        }
        None => None,
    };
    args.push(yb);
    let yp = b.param("y", dt, pd.iter().product::<u64>(), Access::ReadWrite);
    b.set_grid(&[total]);
    let pid = b.program_id(0);
    let coords = crate::util::unravel(&mut b, pid, &ud);
    let start = match wp {
        Some(wp) => {
            let v = b.load(wp, coords[0], 1);
            b.cast(v, DType::I64, NO_SAT)
        }
        None => b.index(0),
    };
    let len = b.index(pd[axis] as i64);
    let ci = b.add(start, coords[axis]);
    let ci = if circular {
        // Python's `%`: the result takes the divisor's sign, so it is always in 0..len.
        let r = b.binary(tessera_kir::BinOp::Rem, ci, len);
        let r = b.add(r, len);
        b.binary(tessera_kir::BinOp::Rem, r, len)
    } else {
        ci
    };
    // A runtime write index: out-of-range positions are skipped, never written.
    let z = b.index(0);
    let ge = b.cmp(tessera_kir::CmpOp::Ge, ci, z);
    let lt = b.cmp(tessera_kir::CmpOp::Lt, ci, len);
    let ok = b.binary(tessera_kir::BinOp::And, ge, lt);
    let safe = b.max(ci, z);
    let last = b.index(pd[axis] as i64 - 1);
    let safe = b.min(safe, last);
    let mut oc = coords.clone();
    oc[axis] = safe;
    let st = crate::util::strides(&pd);
    let yi = crate::util::linear_index(&mut b, &oc, &st);
    let v = b.load(up, pid, 1);
    b.if_then(ok, |b| b.store(yp, yi, v));
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}

// ==== DeformConv ====

/// Bilinear sample of the `ih x iw` plane at `base` in `buf` at float position (`ph`, `pw`)
/// with zeros outside, in f32. Positions are clamped before the integer cast, so every load
/// index stays in bounds whatever the (runtime) offsets hold.
#[allow(clippy::too_many_arguments)]
fn bilinear_zero(
    b: &mut KernelBuilder,
    buf: Buf,
    base: Val,
    ih: u64,
    iw: u64,
    ph: Val,
    pw: Val,
) -> Val {
    let f32t = Ty::scalar(DType::F32);
    let clampf = |b: &mut KernelBuilder, v: Val, hi: u64| {
        let lo = b.const_float(f32t, -2.0);
        let hi = b.const_float(f32t, hi as f64 + 1.0);
        let v = b.max(v, lo);
        b.min(v, hi)
    };
    let ph = clampf(b, ph, ih);
    let pw = clampf(b, pw, iw);
    let h0f = b.unary(tessera_kir::UnOp::Floor, ph);
    let w0f = b.unary(tessera_kir::UnOp::Floor, pw);
    let lh = b.sub(ph, h0f);
    let lw = b.sub(pw, w0f);
    let one = b.const_float(f32t, 1.0);
    let hh = b.sub(one, lh);
    let hw = b.sub(one, lw);
    let h0 = b.cast(h0f, DType::I64, NO_SAT);
    let w0 = b.cast(w0f, DType::I64, NO_SAT);
    let mut acc = b.const_float(f32t, 0.0);
    for (dh, wy) in [(0i64, hh), (1, lh)] {
        for (dw, wx) in [(0i64, hw), (1, lw)] {
            let o = b.index(dh);
            let hi = b.add(h0, o);
            let o = b.index(dw);
            let wi = b.add(w0, o);
            let z = b.index(0);
            let hn = b.index(ih as i64);
            let wn = b.index(iw as i64);
            let c1 = b.cmp(tessera_kir::CmpOp::Ge, hi, z);
            let c2 = b.cmp(tessera_kir::CmpOp::Lt, hi, hn);
            let c3 = b.cmp(tessera_kir::CmpOp::Ge, wi, z);
            let c4 = b.cmp(tessera_kir::CmpOp::Lt, wi, wn);
            let ok = b.binary(tessera_kir::BinOp::And, c1, c2);
            let ok = b.binary(tessera_kir::BinOp::And, ok, c3);
            let ok = b.binary(tessera_kir::BinOp::And, ok, c4);
            let hl = b.index(ih.max(1) as i64 - 1);
            let wl = b.index(iw.max(1) as i64 - 1);
            let hs = b.max(hi, z);
            let hs = b.min(hs, hl);
            let ws = b.max(wi, z);
            let ws = b.min(ws, wl);
            let at = mad(b, hs, iw, ws);
            let at = b.add(base, at);
            let v = ld32(b, buf, at);
            let zf = b.const_float(f32t, 0.0);
            let v = b.select(ok, v, zf);
            let wgt = b.mul(wy, wx);
            let t = b.mul(v, wgt);
            acc = b.add(acc, t);
        }
    }
    acc
}

fn deform_conv(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = req(cx, node, 0, "X")?;
    let w = req(cx, node, 1, "W")?;
    let off = req(cx, node, 2, "offset")?;
    let bias = node.input(3);
    let mask = node.input(4);
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing output"))?;
    let (xd, wd, od, yd) = (cx.dims(x)?, cx.dims(w)?, cx.dims(off)?, cx.dims(y)?);
    if xd.len() != 4 {
        return Err(cx.unsupported("DeformConv other than 2-D"));
    }
    let dt = cx.dtype(x)?;
    for v in [Some(w), Some(off), bias, mask, Some(y)]
        .into_iter()
        .flatten()
    {
        if cx.dtype(v)? != dt {
            return Err(cx.invalid("all operands must share X's dtype"));
        }
    }
    if !dt.is_float() {
        return Err(cx.unsupported(format!("DeformConv on {dt}")));
    }
    let (n, ic, ih, iw) = (xd[0], xd[1], xd[2], xd[3]);
    if wd.len() != 4 || yd.len() != 4 {
        return Err(cx.invalid("W and Y must be 4-D"));
    }
    let (oc, icpg, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    let (oh, ow) = (yd[2], yd[3]);
    let group = node.attr_int("group", 1);
    let ogroups = node.attr_int("offset_group", 1);
    if group < 1 || ogroups < 1 {
        return Err(cx.invalid("group and offset_group must be positive"));
    }
    let (group, ogroups) = (group as u64, ogroups as u64);
    if icpg * group != ic || oc % group != 0 || ic % ogroups != 0 || yd[..2] != [n, oc] {
        return Err(cx.invalid(format!(
            "X {xd:?}, W {wd:?} and group {group} are inconsistent"
        )));
    }
    if od != [n, ogroups * kh * kw * 2, oh, ow] {
        return Err(cx.invalid(format!(
            "offset {od:?} must be [{n}, {}, {oh}, {ow}]",
            ogroups * kh * kw * 2
        )));
    }
    if let Some(m) = mask {
        if cx.dims(m)? != [n, ogroups * kh * kw, oh, ow] {
            return Err(cx.invalid("mask must be [N, offset_group*kH*kW, oH, oW]"));
        }
    }
    if let Some(bv) = bias {
        if cx.dims(bv)? != [oc] {
            return Err(cx.invalid("B must be [M]"));
        }
    }
    if ih == 0 || iw == 0 {
        return Err(cx.unsupported("DeformConv on an empty image"));
    }
    let ocpg = oc / group;
    let icpog = ic / ogroups;
    let list = |name: &str, len: usize, d: i64| -> Vec<i64> {
        node.attr_ints(name)
            .filter(|v| v.len() == len)
            .map(|v| v.to_vec())
            .unwrap_or_else(|| vec![d; len])
    };
    let st = list("strides", 2, 1);
    let dil = list("dilations", 2, 1);
    let pads = list("pads", 4, 0);
    let mut args = Vec::new();
    let mut b = KernelBuilder::new(cx.kernel_name("deform_conv"));
    let xp = cx.bind_param(&mut b, &mut args, x, "x", Access::Read)?;
    let wp = cx.bind_param(&mut b, &mut args, w, "w", Access::Read)?;
    let op = cx.bind_param(&mut b, &mut args, off, "offset", Access::Read)?;
    let bp = bias
        .map(|v| cx.bind_param(&mut b, &mut args, v, "bias", Access::Read))
        .transpose()?;
    let mp = mask
        .map(|v| cx.bind_param(&mut b, &mut args, v, "mask", Access::Read))
        .transpose()?;
    let yp = cx.bind_param(&mut b, &mut args, y, "y", Access::Write)?;
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let f32t = Ty::scalar(DType::F32);
    b.set_grid(&[total]);
    let pid = b.program_id(0);
    let c = crate::util::unravel(&mut b, pid, &yd);
    let (ni, oci, i, j) = (c[0], c[1], c[2], c[3]);
    let ocpgv = b.index(ocpg as i64);
    let g = b.div(oci, ocpgv);
    let init = match bp {
        Some(bp) => ld32(&mut b, bp, oci),
        None => b.const_float(f32t, 0.0),
    };
    // Top-left corner of the kernel window, as floats.
    let to_f = |b: &mut KernelBuilder, v: Val| b.cast(v, DType::F32, NO_SAT);
    let sh = b.index(st[0]);
    let hc = b.mul(i, sh);
    let p0 = b.index(-pads[0]);
    let hc = b.add(hc, p0);
    let sw = b.index(st[1]);
    let wc = b.mul(j, sw);
    let p1 = b.index(-pads[1]);
    let wc = b.add(wc, p1);
    let zero = b.index(0);
    let ospat = mad(&mut b, i, ow, j);
    let acc = b.range_fold(0, icpg as i64, &[init], |b, icl, a| {
        let ic_ = mad(b, g, icpg, icl);
        let icpogv = b.index(icpog as i64);
        let og = b.div(ic_, icpogv);
        let xplane = mad(b, ni, ic, ic_);
        let xbase = mad(b, xplane, ih * iw, zero);
        let wrow = mad(b, oci, icpg, icl);
        b.range_fold(0, kh as i64, &[a[0]], |b, ki, a| {
            b.range_fold(0, kw as i64, &[a[0]], |b, kj, a| {
                // Kernel tap index within the offset group.
                let tap = mad(b, og, kh, ki);
                let tap = mad(b, tap, kw, kj);
                let ch = mad(b, tap, 2, zero);
                let nch = mad(b, ni, ogroups * kh * kw * 2, ch);
                let oh_at = mad(b, nch, oh * ow, ospat);
                let one = b.index(1);
                let nch1 = b.add(nch, one);
                let ow_at = mad(b, nch1, oh * ow, ospat);
                let dh = ld32(b, op, oh_at);
                let dw = ld32(b, op, ow_at);
                let kdh = b.index(dil[0]);
                let kh_off = b.mul(ki, kdh);
                let hp = b.add(hc, kh_off);
                let hp = to_f(b, hp);
                let hp = b.add(hp, dh);
                let kdw = b.index(dil[1]);
                let kw_off = b.mul(kj, kdw);
                let wpp = b.add(wc, kw_off);
                let wpp = to_f(b, wpp);
                let wpp = b.add(wpp, dw);
                let v = bilinear_zero(b, xp, xbase, ih, iw, hp, wpp);
                let wat = mad(b, wrow, kh, ki);
                let wat = mad(b, wat, kw, kj);
                let wv = ld32(b, wp, wat);
                let mut t = b.mul(v, wv);
                if let Some(mp) = mp {
                    let mch = mad(b, ni, ogroups * kh * kw, tap);
                    let mat = mad(b, mch, oh * ow, ospat);
                    let mv = ld32(b, mp, mat);
                    t = b.mul(t, mv);
                }
                vec![b.add(a[0], t)]
            })
        })
    })[0];
    let r = b.cast(acc, dt, NO_SAT);
    b.store(yp, pid, r);
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}

// ==== RoiAlign ====

/// The most sampling points per bin side when `sampling_ratio` is 0 and the count comes from
/// the (runtime) roi size: bounds the kernel's loops whatever the rois hold.
const ROI_MAX_GRID: i64 = 1024;

fn roi_align(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = req(cx, node, 0, "X")?;
    let rois = req(cx, node, 1, "rois")?;
    let bidx = req(cx, node, 2, "batch_indices")?;
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing output"))?;
    let (xd, rd, bd, yd) = (cx.dims(x)?, cx.dims(rois)?, cx.dims(bidx)?, cx.dims(y)?);
    let dt = cx.dtype(x)?;
    if !dt.is_float() || !cx.dtype(rois)?.is_float() {
        return Err(cx.unsupported(format!("RoiAlign on {dt}")));
    }
    let bdt = cx.dtype(bidx)?;
    if !matches!(bdt, DType::I64 | DType::I32) {
        return Err(cx.invalid(format!("batch_indices of dtype {bdt}")));
    }
    if xd.len() != 4
        || rd.len() != 2
        || rd[1] != 4
        || bd != [rd[0]]
        || yd.len() != 4
        || yd[..2] != [rd[0], xd[1]]
    {
        return Err(cx.invalid(format!(
            "X {xd:?}, rois {rd:?}, batch_indices {bd:?} and Y {yd:?} are inconsistent"
        )));
    }
    if cx.dtype(y)? != dt {
        return Err(cx.invalid("Y must have X's dtype"));
    }
    let (nb, c, h, w) = (xd[0], xd[1], xd[2], xd[3]);
    let (oh, ow) = (yd[2], yd[3]);
    if h == 0 || w == 0 || nb == 0 {
        return Err(cx.unsupported("RoiAlign on an empty image"));
    }
    let half_pixel = match node
        .attr_str("coordinate_transformation_mode")
        .unwrap_or("half_pixel")
    {
        "half_pixel" => true,
        "output_half_pixel" => false,
        m => return Err(cx.invalid(format!("coordinate_transformation_mode `{m}`"))),
    };
    let max_mode = match node.attr_str("mode").unwrap_or("avg") {
        "avg" => false,
        "max" => true,
        m => return Err(cx.invalid(format!("mode `{m}`"))),
    };
    let ratio = node.attr_int("sampling_ratio", 0);
    let scale = node.attr_float("spatial_scale", 1.0) as f64;
    let mut args = Vec::new();
    let batch_code = cx.trap_site(
        node,
        "batch_indices",
        format!(
            "not a batch of `X`, which has {nb} (valid: 0 to {})",
            nb.saturating_sub(1)
        ),
    );
    let mut b = KernelBuilder::new(cx.kernel_name("roi_align"));
    let xp = cx.bind_param(&mut b, &mut args, x, "x", Access::Read)?;
    let rp = cx.bind_param(&mut b, &mut args, rois, "rois", Access::Read)?;
    let bp = cx.bind_param(&mut b, &mut args, bidx, "batch_indices", Access::Read)?;
    let yp = cx.bind_param(&mut b, &mut args, y, "y", Access::Write)?;
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let f32t = Ty::scalar(DType::F32);
    let fc = |b: &mut KernelBuilder, v: f64| b.const_float(f32t, v);
    b.set_grid(&[total]);
    let pid = b.program_id(0);
    let co = crate::util::unravel(&mut b, pid, &yd);
    let (r, ci, ph, pw) = (co[0], co[1], co[2], co[3]);
    let zero = b.index(0);
    let mut rv = Vec::new();
    for k in 0..4 {
        let kv = b.index(k);
        let at = mad(&mut b, r, 4, kv);
        let v = ld32(&mut b, rp, at);
        let s = fc(&mut b, scale);
        let v = b.mul(v, s);
        let o = fc(&mut b, if half_pixel { 0.5 } else { 0.0 });
        rv.push(b.sub(v, o));
    }
    let (sw, sh) = (rv[0], rv[1]);
    let mut rw = b.sub(rv[2], sw);
    let mut rh = b.sub(rv[3], sh);
    if !half_pixel {
        let one = fc(&mut b, 1.0);
        rw = b.max(rw, one);
        rh = b.max(rh, one);
    }
    let ohf = fc(&mut b, oh as f64);
    let owf = fc(&mut b, ow as f64);
    let bin_h = b.div(rh, ohf);
    let bin_w = b.div(rw, owf);
    // Samples per bin side: fixed, or ceil(roi size / output size) clamped to 0..=ROI_MAX_GRID.
    let grid = |b: &mut KernelBuilder, bin: Val| -> Val {
        if ratio > 0 {
            return b.index(ratio.min(ROI_MAX_GRID));
        }
        let g = b.unary(tessera_kir::UnOp::Ceil, bin);
        let g = b.cast(g, DType::I64, NO_SAT);
        let z = b.index(0);
        let cap = b.index(ROI_MAX_GRID);
        let g = b.max(g, z);
        b.min(g, cap)
    };
    let gh = grid(&mut b, bin_h);
    let gw = grid(&mut b, bin_w);
    let ghf = b.cast(gh, DType::F32, NO_SAT);
    let gwf = b.cast(gw, DType::F32, NO_SAT);
    // The batch index is runtime data: one out of range is a data error.
    let bi = b.load(bp, r, 1);
    let bi = b.cast(bi, DType::I64, NO_SAT);
    let bi = b.checked_below(bi, nb, batch_code);
    let plane = mad(&mut b, bi, c, ci);
    let base = mad(&mut b, plane, h * w, zero);
    let phf = b.cast(ph, DType::F32, NO_SAT);
    let pwf = b.cast(pw, DType::F32, NO_SAT);
    let y0 = b.mul(phf, bin_h);
    let y0 = b.add(sh, y0);
    let x0 = b.mul(pwf, bin_w);
    let x0 = b.add(sw, x0);
    let init = fc(&mut b, if max_mode { f64::NEG_INFINITY } else { 0.0 });
    let one_i = b.index(1);
    let acc = b.for_loop(zero, gh, one_i, &[init], |b, iy, a| {
        let one_i = b.index(1);
        let zero = b.index(0);
        b.for_loop(zero, gw, one_i, &[a[0]], |b, ix, a| {
            let half = fc(b, 0.5);
            let iyf = b.cast(iy, DType::F32, NO_SAT);
            let iyf = b.add(iyf, half);
            let t = b.mul(iyf, bin_h);
            let t = b.div(t, ghf);
            let yy = b.add(y0, t);
            let ixf = b.cast(ix, DType::F32, NO_SAT);
            let ixf = b.add(ixf, half);
            let t = b.mul(ixf, bin_w);
            let t = b.div(t, gwf);
            let xx = b.add(x0, t);
            // Outside [-1, size] on either axis the sample is 0.
            let m1 = fc(b, -1.0);
            let hf = fc(b, h as f64);
            let wf = fc(b, w as f64);
            let o1 = b.cmp(tessera_kir::CmpOp::Lt, yy, m1);
            let o2 = b.cmp(tessera_kir::CmpOp::Gt, yy, hf);
            let o3 = b.cmp(tessera_kir::CmpOp::Lt, xx, m1);
            let o4 = b.cmp(tessera_kir::CmpOp::Gt, xx, wf);
            let oob = b.binary(tessera_kir::BinOp::Or, o1, o2);
            let oob = b.binary(tessera_kir::BinOp::Or, oob, o3);
            let oob = b.binary(tessera_kir::BinOp::Or, oob, o4);
            let zf = fc(b, 0.0);
            let axis = |b: &mut KernelBuilder, v: Val, size: u64| -> (Val, Val, Val) {
                // Returns (low index, high index, fraction toward high).
                let zf = b.const_float(f32t, 0.0);
                let topf = b.const_float(f32t, size as f64 + 1.0);
                let v = b.max(v, zf);
                let v = b.min(v, topf);
                let lo = b.unary(tessera_kir::UnOp::Floor, v);
                let lo = b.cast(lo, DType::I64, NO_SAT);
                let last = b.index(size as i64 - 1);
                let edge = b.cmp(tessera_kir::CmpOp::Ge, lo, last);
                let one = b.index(1);
                let lo1 = b.add(lo, one);
                let hi = b.select(edge, last, lo1);
                let lo = b.min(lo, last);
                let z = b.index(0);
                let lo = b.max(lo, z);
                let hi = b.max(hi, z);
                let lastf = b.const_float(f32t, size as f64 - 1.0);
                let v = b.select(edge, lastf, v);
                let lof = b.cast(lo, DType::F32, NO_SAT);
                (lo, hi, b.sub(v, lof))
            };
            let (yl, yh, ly) = axis(b, yy, h);
            let (xl, xh, lx) = axis(b, xx, w);
            let one = fc(b, 1.0);
            let hy = b.sub(one, ly);
            let hx = b.sub(one, lx);
            let mut terms = Vec::new();
            for (yi, wy) in [(yl, hy), (yh, ly)] {
                for (xi, wx) in [(xl, hx), (xh, lx)] {
                    let at = mad(b, yi, w, xi);
                    let at = b.add(base, at);
                    let v = ld32(b, xp, at);
                    let wt = b.mul(wy, wx);
                    let wt = b.select(oob, zf, wt);
                    terms.push(b.mul(wt, v));
                }
            }
            let next = if max_mode {
                let m = b.max(terms[0], terms[1]);
                let m = b.max(m, terms[2]);
                let m = b.max(m, terms[3]);
                b.max(a[0], m)
            } else {
                let s = b.add(terms[0], terms[1]);
                let s = b.add(s, terms[2]);
                let s = b.add(s, terms[3]);
                b.add(a[0], s)
            };
            vec![next]
        })
    })[0];
    let n_samples = b.mul(gh, gw);
    let res = if max_mode {
        let z = b.index(0);
        let none = b.cmp(tessera_kir::CmpOp::Eq, n_samples, z);
        let zf = fc(&mut b, 0.0);
        b.select(none, zf, acc)
    } else {
        let one = b.index(1);
        let cnt = b.max(n_samples, one);
        let cnt = b.cast(cnt, DType::F32, NO_SAT);
        b.div(acc, cnt)
    };
    let res = b.cast(res, dt, NO_SAT);
    b.store(yp, pid, res);
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}

// ==== QLinearConv ====

fn qlinear_conv(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = req(cx, node, 0, "x")?;
    let w = req(cx, node, 3, "w")?;
    let bias = node.input(8);
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing output"))?;
    let (xd, wd, yd) = (cx.dims(x)?, cx.dims(w)?, cx.dims(y)?);
    if xd.len() != 4 || wd.len() != 4 || yd.len() != 4 {
        return Err(cx.unsupported("QLinearConv other than 2-D"));
    }
    let out_dt = cx.dtype(y)?;
    let (lo, hi) = int8_bounds(cx, out_dt)?;
    for v in [x, w] {
        let dt = cx.dtype(v)?;
        if !matches!(dt, DType::I8 | DType::U8) {
            return Err(cx.unsupported(format!("QLinearConv on {dt}")));
        }
    }
    let (n, c, ih, iw) = (xd[0], xd[1], xd[2], xd[3]);
    let (m, cpg, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    let (oh, ow) = (yd[2], yd[3]);
    let group = node.attr_int("group", 1);
    if group < 1 {
        return Err(cx.invalid("group must be positive"));
    }
    let group = group as u64;
    if cpg * group != c || m % group != 0 || yd[..2] != [n, m] {
        return Err(cx.invalid(format!(
            "x {xd:?}, w {wd:?} and group {group} are inconsistent"
        )));
    }
    if ih == 0 || iw == 0 {
        return Err(cx.unsupported("QLinearConv on an empty image"));
    }
    let mpg = m / group;
    let list = |name: &str, len: usize, d: i64| -> Vec<i64> {
        node.attr_ints(name)
            .filter(|v| v.len() == len)
            .map(|v| v.to_vec())
            .unwrap_or_else(|| vec![d; len])
    };
    let st = list("strides", 2, 1);
    let dil = list("dilations", 2, 1);
    let mut pads = list("pads", 4, 0);
    match node.attr_str("auto_pad").unwrap_or("NOTSET") {
        "NOTSET" => {}
        "VALID" => pads = vec![0; 4],
        a @ ("SAME_UPPER" | "SAME_LOWER") => {
            for (i, (&xi, &o)) in [ih, iw].iter().zip(&[oh, ow]).enumerate() {
                let span = (wd[i + 2] as i64 - 1) * dil[i] + 1;
                let total = ((o as i64 - 1) * st[i] + span - xi as i64).max(0);
                let begin = if a == "SAME_UPPER" {
                    total / 2
                } else {
                    total - total / 2
                };
                pads[i] = begin;
                pads[i + 2] = total - begin;
            }
        }
        a => return Err(cx.invalid(format!("auto_pad `{a}`"))),
    }
    // Scales: x and y per tensor; w per tensor or per output channel (zero points alike).
    let scales: Vec<ValueId> = [1, 4, 6]
        .iter()
        .map(|&i| req(cx, node, i, "scale"))
        .collect::<Result<_>>()?;
    let sdt = cx.dtype(scales[0])?;
    for (k, &s) in scales.iter().enumerate() {
        let cnt = cx.numel(s)?;
        if !(cnt == 1 || (k == 1 && cnt == m)) {
            return Err(cx.unsupported("QLinearConv scale shape"));
        }
        if cx.dtype(s)? != sdt || !sdt.is_float() {
            return Err(cx.unsupported("QLinearConv scales must share one float dtype"));
        }
    }
    let zps: Vec<Option<ValueId>> = [2, 5, 7].iter().map(|&i| node.input(i)).collect();
    for (k, z) in zps.iter().enumerate() {
        if let Some(z) = z {
            let cnt = cx.numel(*z)?;
            if !(cnt == 1 || (k == 1 && cnt == m)) {
                return Err(cx.unsupported("QLinearConv zero point shape"));
            }
            let dt = cx.dtype(*z)?;
            if !matches!(dt, DType::I8 | DType::U8) {
                return Err(cx.invalid(format!("zero point of dtype {dt}")));
            }
        }
    }
    if let Some(bv) = bias {
        if cx.dims(bv)? != [m] || cx.dtype(bv)? != DType::I32 {
            return Err(cx.invalid("B must be int32 [M]"));
        }
    }
    let mut args = Vec::new();
    let mut b = KernelBuilder::new(cx.kernel_name("qlinear_conv"));
    let xp = cx.bind_param(&mut b, &mut args, x, "x", Access::Read)?;
    let wp = cx.bind_param(&mut b, &mut args, w, "w", Access::Read)?;
    let mut sp = Vec::new();
    for (k, &s) in scales.iter().enumerate() {
        let cnt = cx.numel(s)?;
        sp.push((
            cx.bind_param(&mut b, &mut args, s, &format!("scale{k}"), Access::Read)?,
            cnt > 1,
        ));
    }
    let mut zp = Vec::new();
    for (k, z) in zps.iter().enumerate() {
        let per = match z {
            Some(z) => cx.numel(*z)? > 1,
            None => false,
        };
        zp.push(
            z.map(|z| cx.bind_param(&mut b, &mut args, z, &format!("zero{k}"), Access::Read))
                .transpose()?
                .map(|p| (p, per)),
        );
    }
    let bp = bias
        .map(|v| cx.bind_param(&mut b, &mut args, v, "bias", Access::Read))
        .transpose()?;
    let yp = cx.bind_param(&mut b, &mut args, y, "y", Access::Write)?;
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let i32t = Ty::scalar(DType::I32);
    let f64t = Ty::scalar(DType::F64);
    b.set_grid(&[total]);
    let pid = b.program_id(0);
    let co = crate::util::unravel(&mut b, pid, &yd);
    let (ni, mi, oi, oj) = (co[0], co[1], co[2], co[3]);
    let zero = b.index(0);
    let mut zv = Vec::new();
    for z in &zp {
        zv.push(match z {
            Some((z, per)) => {
                let at = if *per { mi } else { zero };
                let v = b.load(*z, at, 1);
                b.cast(v, DType::I32, NO_SAT)
            }
            None => b.const_int(i32t, 0),
        });
    }
    let mpgv = b.index(mpg as i64);
    let g = b.div(mi, mpgv);
    let init = match bp {
        Some(bp) => b.load(bp, mi, 1),
        None => b.const_int(i32t, 0),
    };
    let sh = b.index(st[0]);
    let h0 = b.mul(oi, sh);
    let p0 = b.index(pads[0]);
    let h0 = b.sub(h0, p0);
    let sw = b.index(st[1]);
    let w0 = b.mul(oj, sw);
    let p1 = b.index(pads[1]);
    let w0 = b.sub(w0, p1);
    let acc = b.range_fold(0, cpg as i64, &[init], |b, cl, a| {
        let ci = mad(b, g, cpg, cl);
        let plane = mad(b, ni, c, ci);
        let xbase = mad(b, plane, ih * iw, zero);
        let wrow = mad(b, mi, cpg, cl);
        b.range_fold(0, kh as i64, &[a[0]], |b, ki, a| {
            b.range_fold(0, kw as i64, &[a[0]], |b, kj, a| {
                let dh = b.index(dil[0]);
                let t = b.mul(ki, dh);
                let hi_ = b.add(h0, t);
                let dw = b.index(dil[1]);
                let t = b.mul(kj, dw);
                let wi_ = b.add(w0, t);
                let z = b.index(0);
                let hn = b.index(ih as i64);
                let wn = b.index(iw as i64);
                let c1 = b.cmp(tessera_kir::CmpOp::Ge, hi_, z);
                let c2 = b.cmp(tessera_kir::CmpOp::Lt, hi_, hn);
                let c3 = b.cmp(tessera_kir::CmpOp::Ge, wi_, z);
                let c4 = b.cmp(tessera_kir::CmpOp::Lt, wi_, wn);
                let ok = b.binary(tessera_kir::BinOp::And, c1, c2);
                let ok = b.binary(tessera_kir::BinOp::And, ok, c3);
                let ok = b.binary(tessera_kir::BinOp::And, ok, c4);
                let hl = b.index(ih as i64 - 1);
                let wl = b.index(iw as i64 - 1);
                let hs = b.max(hi_, z);
                let hs = b.min(hs, hl);
                let ws = b.max(wi_, z);
                let ws = b.min(ws, wl);
                let at = mad(b, hs, iw, ws);
                let at = b.add(xbase, at);
                let xv = b.load(xp, at, 1);
                let xv = b.cast(xv, DType::I32, NO_SAT);
                let xv = b.sub(xv, zv[0]);
                let wat = mad(b, wrow, kh, ki);
                let wat = mad(b, wat, kw, kj);
                let wv = b.load(wp, wat, 1);
                let wv = b.cast(wv, DType::I32, NO_SAT);
                let wv = b.sub(wv, zv[1]);
                let p = b.mul(xv, wv);
                let zi = b.const_int(i32t, 0);
                let p = b.select(ok, p, zi);
                vec![b.add(a[0], p)]
            })
        })
    })[0];
    // The combined scale in the scales' own precision, as the reference computes it.
    let sv: Vec<Val> = sp
        .iter()
        .map(|&(s, per)| {
            let at = if per { mi } else { zero };
            ld32(&mut b, s, at)
        })
        .collect();
    let f = b.mul(sv[0], sv[1]);
    let f = b.cast(f, sdt, NO_SAT);
    let f = b.cast(f, DType::F32, NO_SAT);
    let f = b.div(f, sv[2]);
    let f = b.cast(f, sdt, NO_SAT);
    let f = b.cast(f, DType::F64, NO_SAT);
    let d = b.cast(acc, DType::F64, NO_SAT);
    let d = b.mul(d, f);
    let yz = b.cast(zv[2], DType::F64, NO_SAT);
    let d = b.add(d, yz);
    let lov = b.const_float(f64t, lo);
    let hiv = b.const_float(f64t, hi);
    let d = b.max(d, lov);
    let d = b.min(d, hiv);
    let d = b.unary(tessera_kir::UnOp::Round, d);
    let d = b.cast(d, out_dt, NO_SAT);
    b.store(yp, pid, d);
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}
