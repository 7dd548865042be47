//! Lowering of the smaller ops added with the sequence and attention work: CumProd, Swish,
//! SwiGLU, Einsum (one loop-nest kernel), the window generators, Det and BitCast.

use crate::util::{
    compute_dtype, emit_elementwise, konst_like, linear_index, strides, unravel, EwOperand,
};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op};
use tessera_kir::{
    Access, CastMode, CmpOp, Execution, KernelBuilder, MathFn, Space, Ty, UnOp, Val,
};

const NO_SAT: CastMode = CastMode { saturate: false };

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    match node.op {
        Op::CumProd => cumprod(cx, node),
        Op::Swish | Op::SwiGLU => swish(cx, node),
        Op::Einsum => einsum(cx, node),
        Op::BlackmanWindow | Op::HannWindow | Op::HammingWindow => window(cx, node),
        Op::Det => det(cx, node),
        Op::BitCast => bitcast(cx, node),
        op => Err(cx.unsupported(format!("{op} is not lowered by misc.rs"))),
    }
}

fn io(cx: &LowerCx, node: &Node) -> Result<(tessera_ir::ValueId, tessera_ir::ValueId)> {
    let x = node.input(0).ok_or_else(|| cx.invalid("missing input"))?;
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing output"))?;
    Ok((x, y))
}

// ==== CumProd ====

fn cumprod(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = io(cx, node)?;
    let dims = cx.dims(x)?;
    let dt = cx.dtype(x)?;
    if cx.dims(y)? != dims || cx.dtype(y)? != dt {
        return Err(cx.invalid("output type differs from the input's"));
    }
    if !dt.is_numeric() || dt == DType::Bool {
        return Err(cx.unsupported(format!("CumProd on {dt}")));
    }
    let axis = match cx.const_ints(node, 1)?.as_deref() {
        Some([a]) => *a,
        _ => return Err(cx.invalid("axis must hold one value")),
    };
    let r = dims.len() as i64;
    let axis = if axis < 0 { axis + r } else { axis };
    if !(0..r.max(1)).contains(&axis) {
        return Err(cx.invalid(format!("axis {axis} out of range for rank {r}")));
    }
    let axis = axis as usize;
    let n: u64 = dims.iter().product();
    let xb = cx.buffer(x)?;
    let yb = cx.buffer(y)?;
    if n == 0 {
        return Ok(Execution::Kernel);
    }
    let extent = dims.get(axis).copied().unwrap_or(1);
    let inner: u64 = dims.iter().skip(axis + 1).product();
    let rows = n / extent;
    let exclusive = node.attr_int("exclusive", 0) != 0;
    let reverse = node.attr_int("reverse", 0) != 0;
    let acc = Ty::scalar(compute_dtype(dt));
    let name = cx.kernel_name("cumprod");
    let mut b = KernelBuilder::new(name);
    let inp = b.param("x", dt, n, Access::Read);
    let out = b.param("y", dt, n, Access::Write);
    b.set_grid(&[rows]);
    let row = b.program_id(0);
    let iv = b.index(inner as i64);
    let o = b.div(row, iv);
    let t = b.mul(o, iv);
    let inn = b.sub(row, t);
    let ev = b.index((extent * inner) as i64);
    let base = b.mul(o, ev);
    let base = b.add(base, inn);
    let one = b.const_num(acc, 1.0);
    b.range_fold(0, extent as i64, &[one], |b, i, a| {
        let j = if reverse {
            let last = b.index(extent as i64 - 1);
            b.sub(last, i)
        } else {
            i
        };
        let off = b.mul(j, iv);
        let off = b.add(base, off);
        let v = b.load(inp, off, 1);
        let v = b.cast(v, acc.elem, NO_SAT);
        let next = b.mul(a[0], v);
        let r = if exclusive { a[0] } else { next };
        let r = b.cast(r, dt, NO_SAT);
        b.store(out, off, r);
        vec![next]
    });
    cx.launch(b.finish(), vec![xb, yb]);
    Ok(Execution::Kernel)
}

// ==== Swish, SwiGLU ====

fn swish(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = io(cx, node)?;
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("{} on {dt}", node.op)));
    }
    let out_dims = cx.dims(y)?;
    if cx.dims(x)? != out_dims || cx.dtype(y)? != dt {
        return Err(cx.invalid("output type differs from the input's"));
    }
    let alpha = node.attr_float("alpha", 1.0) as f64;
    let mut ops = vec![EwOperand::broadcast(cx, x, &out_dims)?];
    if node.op == Op::SwiGLU {
        let bv = node.input(1).ok_or_else(|| cx.invalid("missing B"))?;
        if cx.dims(bv)? != out_dims || cx.dtype(bv)? != dt {
            return Err(cx.invalid("A and B must have the same type"));
        }
        ops.push(EwOperand::broadcast(cx, bv, &out_dims)?);
    }
    let yb = cx.buffer(y)?;
    let name = node.op.name().to_ascii_lowercase();
    emit_elementwise(cx, &name, &ops, yb, dt, &out_dims, &|b, v| {
        let a = konst_like(b, v[0], alpha);
        let ax = b.mul(v[0], a);
        let s = b.math(MathFn::Sigmoid, &[ax]);
        let r = b.mul(v[0], s);
        if v.len() > 1 {
            b.mul(r, v[1])
        } else {
            r
        }
    })?;
    Ok(Execution::Kernel)
}

// ==== Einsum ====

fn einsum(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing output"))?;
    let eq = node
        .attr_str("equation")
        .ok_or_else(|| cx.invalid("missing equation"))?
        .to_string();
    let ins: Vec<_> = node
        .inputs
        .iter()
        .map(|i| i.ok_or_else(|| cx.invalid("omitted operand")))
        .collect::<Result<_>>()?;
    let dt = cx.dtype(y)?;
    if !dt.is_numeric() || dt == DType::Bool {
        return Err(cx.unsupported(format!("Einsum on {dt}")));
    }
    let mut shapes = Vec::new();
    for &v in &ins {
        if cx.dtype(v)? != dt {
            return Err(cx.invalid("operands must share the output's dtype"));
        }
        shapes.push(cx.dims(v)?);
    }
    let sym: Vec<Vec<tessera_ir::Dim>> = shapes
        .iter()
        .map(|s| s.iter().map(|&d| tessera_ir::Dim::Fixed(d)).collect())
        .collect();
    let (terms, out_term, ell, _) = tessera_ir::infer::seq::einsum_plan(&eq, &sym)
        .map_err(|m| cx.invalid(format!("equation: {m}")))?;
    let ell: Vec<u64> = ell
        .iter()
        .map(|d| {
            if let tessera_ir::Dim::Fixed(x) = d {
                *x
            } else {
                1
            }
        })
        .collect();
    // Letters: named ones, then one per ellipsis dim ('0', '1', ...).
    let ell_names: Vec<char> = (0..ell.len())
        .map(|k| char::from(b'0' + (k as u8 % 10)))
        .collect();
    if ell.len() > 10 {
        return Err(cx.unsupported("more than 10 ellipsis dims"));
    }
    let expand = |term: &[char], rank: usize| -> Vec<char> {
        let named = term.iter().filter(|&&c| c != '*').count();
        let er = rank.saturating_sub(named);
        let mut v = Vec::new();
        for &c in term {
            if c == '*' {
                v.extend_from_slice(&ell_names[ell.len() - er..]);
            } else {
                v.push(c);
            }
        }
        v
    };
    let out_letters = expand(
        &out_term,
        out_term.iter().filter(|&&c| c != '*').count() + ell.len(),
    );
    let in_letters: Vec<Vec<char>> = terms
        .iter()
        .zip(&shapes)
        .map(|(t, s)| expand(t, s.len()))
        .collect();
    // Each letter's size (the largest seen: others are 1 and broadcast).
    let mut size: Vec<(char, u64)> = Vec::new();
    for (ls, s) in in_letters.iter().zip(&shapes) {
        for (&c, &d) in ls.iter().zip(s) {
            match size.iter_mut().find(|(l, _)| *l == c) {
                Some((_, v)) => *v = (*v).max(d),
                None => size.push((c, d)),
            }
        }
    }
    let size_of = |c: char| size.iter().find(|(l, _)| *l == c).map(|x| x.1).unwrap_or(1);
    let out_dims: Vec<u64> = out_letters.iter().map(|&c| size_of(c)).collect();
    if cx.dims(y)? != out_dims {
        return Err(cx.invalid(format!(
            "output shape {:?} differs from the equation's {out_dims:?}",
            cx.dims(y)?
        )));
    }
    let red: Vec<char> = size
        .iter()
        .map(|x| x.0)
        .filter(|c| !out_letters.contains(c))
        .collect();
    let red_dims: Vec<u64> = red.iter().map(|&c| size_of(c)).collect();
    // Per input, the element stride of each output letter and each reduced letter.
    let letter_stride = |k: usize, c: char| -> u64 {
        let st = strides(&shapes[k]);
        in_letters[k]
            .iter()
            .enumerate()
            .filter(|(p, &l)| l == c && shapes[k][*p] != 1)
            .map(|(p, _)| st[p])
            .sum()
    };
    let out_st: Vec<Vec<u64>> = (0..ins.len())
        .map(|k| out_letters.iter().map(|&c| letter_stride(k, c)).collect())
        .collect();
    let red_st: Vec<Vec<u64>> = (0..ins.len())
        .map(|k| red.iter().map(|&c| letter_stride(k, c)).collect())
        .collect();
    let n: u64 = out_dims.iter().product();
    let yb = cx.buffer(y)?;
    if n == 0 {
        return Ok(Execution::Kernel);
    }
    let rn: u64 = red_dims.iter().product();
    let mut args = Vec::new();
    let name = cx.kernel_name("einsum");
    let mut b = KernelBuilder::new(name);
    let mut ps = Vec::new();
    for (k, &v) in ins.iter().enumerate() {
        args.push(cx.buffer(v)?);
        ps.push(b.param(
            format!("in{k}"),
            dt,
            shapes[k].iter().product(),
            Access::Read,
        ));
    }
    let yp = b.param("y", dt, n, Access::Write);
    args.push(yb);
    let acc = Ty::scalar(compute_dtype(dt));
    const CH: u64 = 256;
    b.set_grid(&[n.div_ceil(CH)]);
    let pid = b.program_id(0);
    let ch = b.index(CH as i64);
    let start = b.mul(pid, ch);
    let end = b.add(start, ch);
    let nv = b.index(n as i64);
    let end = b.min(end, nv);
    let one = b.index(1);
    b.for_loop(start, end, one, &[], |b, e, _| {
        let oc = unravel(b, e, &out_dims);
        let bases: Vec<Val> = out_st.iter().map(|s| linear_index(b, &oc, s)).collect();
        let zero = b.const_num(acc, 0.0);
        let r = b.range_fold(0, rn.max(1) as i64, &[zero], |b, ri, a| {
            let rc = if red_dims.is_empty() {
                Vec::new()
            } else {
                unravel(b, ri, &red_dims)
            };
            let mut prod: Option<Val> = None;
            for (k, &p) in ps.iter().enumerate() {
                let off = linear_index(b, &rc, &red_st[k]);
                let at = b.add(bases[k], off);
                let v = b.load(p, at, 1);
                let v = b.cast(v, acc.elem, NO_SAT);
                prod = Some(match prod {
                    Some(q) => b.mul(q, v),
                    None => v,
                });
            }
            let p = prod.unwrap_or(zero);
            vec![b.add(a[0], p)]
        })[0];
        let r = b.cast(r, dt, NO_SAT);
        b.store(yp, e, r);
        Vec::new()
    });
    cx.launch(b.finish(), args);
    Ok(Execution::Kernel)
}

// ==== BlackmanWindow, HannWindow, HammingWindow ====

fn window(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing output"))?;
    let dt = cx.dtype(y)?;
    let n = cx.numel(y)?;
    if !dt.is_numeric() || dt == DType::Bool {
        return Err(cx.unsupported(format!("a window of dtype {dt}")));
    }
    let yb = cx.buffer(y)?;
    if n == 0 {
        return Ok(Execution::Kernel);
    }
    let periodic = node.attr_int("periodic", 1) != 0;
    let denom = if periodic {
        n as f64
    } else {
        (n as f64 - 1.0).max(1.0)
    };
    let w = 2.0 * std::f64::consts::PI / denom;
    // a0 - a1 cos(w n) + a2 cos(2 w n)
    let (a0, a1, a2) = match node.op {
        Op::HannWindow => (0.5, 0.5, 0.0),
        Op::HammingWindow => (25.0 / 46.0, 21.0 / 46.0, 0.0),
        _ => (0.42, 0.5, 0.08),
    };
    let ct = if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let at = Ty::scalar(ct);
    let name = cx.kernel_name(&node.op.name().to_ascii_lowercase());
    let mut b = KernelBuilder::new(name);
    let yp = b.param("y", dt, n, Access::Write);
    b.range(0, n as i64, |b, k| {
        let kf = b.cast(k, ct, NO_SAT);
        let wv = b.const_float(at, w);
        let ang = b.mul(kf, wv);
        let c1 = b.math(MathFn::Cos, &[ang]);
        let two = b.const_float(at, 2.0);
        let ang2 = b.mul(ang, two);
        let c2 = b.math(MathFn::Cos, &[ang2]);
        let k0 = b.const_float(at, a0);
        let k1 = b.const_float(at, a1);
        let k2 = b.const_float(at, a2);
        let t1 = b.mul(k1, c1);
        let t2 = b.mul(k2, c2);
        let r = b.sub(k0, t1);
        let r = b.add(r, t2);
        let r = b.cast(r, dt, NO_SAT);
        b.store(yp, k, r);
    });
    cx.launch(b.finish(), vec![yb]);
    Ok(Execution::Kernel)
}

// ==== Det ====

fn det(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = io(cx, node)?;
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("Det on {dt}")));
    }
    let xd = cx.dims(x)?;
    let r = xd.len();
    if r < 2 || xd[r - 1] != xd[r - 2] || cx.dims(y)? != xd[..r - 2] || cx.dtype(y)? != dt {
        return Err(cx.invalid("Det needs (..., M, M) and a (...) result"));
    }
    let m = xd[r - 1];
    let count: u64 = xd[..r - 2].iter().product();
    let xb = cx.buffer(x)?;
    let yb = cx.buffer(y)?;
    if count == 0 {
        return Ok(Execution::Kernel);
    }
    let ct = if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let at = Ty::scalar(ct);
    let name = cx.kernel_name("det");
    let mut b = KernelBuilder::new(name);
    let xp = b.param("x", dt, count * m * m, Access::Read);
    let yp = b.param("y", dt, count, Access::Write);
    let a = b.local("lu", Space::Local, ct, (m * m).max(1));
    b.set_grid(&[count]);
    let pid = b.program_id(0);
    let mm = b.index((m * m) as i64);
    let base = b.mul(pid, mm);
    b.range(0, (m * m) as i64, |b, i| {
        let at_x = b.add(base, i);
        let v = b.load(xp, at_x, 1);
        let v = b.cast(v, ct, NO_SAT);
        b.store(a, i, v);
    });
    let mv = b.index(m as i64);
    let at_rc = move |b: &mut KernelBuilder, r: Val, c: Val| {
        let t = b.mul(r, mv);
        b.add(t, c)
    };
    let one = b.const_float(at, 1.0);
    // Gaussian elimination with partial pivoting; the determinant accumulates as we go.
    let det = b.range_fold(0, m as i64, &[one], |b, k, acc| {
        let zero = b.const_float(at, 0.0);
        let neg1 = b.const_float(at, -1.0);
        let step = b.index(1);
        let hi = b.index(m as i64);
        let kv = at_rc(b, k, k);
        let d0 = b.load(a, kv, 1);
        let ad0 = b.unary(UnOp::Abs, d0);
        let piv = b.for_loop(k, hi, step, &[ad0, k], |b, r, c| {
            let i = at_rc(b, r, k);
            let v = b.load(a, i, 1);
            let av = b.unary(UnOp::Abs, v);
            let gt = b.cmp(CmpOp::Gt, av, c[0]);
            vec![b.select(gt, av, c[0]), b.select(gt, r, c[1])]
        })[1];
        // Swap rows k and piv.
        let lo = b.index(0);
        b.for_loop(lo, hi, step, &[], |b, c, _| {
            let i = at_rc(b, k, c);
            let j = at_rc(b, piv, c);
            let vi = b.load(a, i, 1);
            let vj = b.load(a, j, 1);
            b.store(a, i, vj);
            b.store(a, j, vi);
            Vec::new()
        });
        let swapped = b.cmp(CmpOp::Ne, piv, k);
        let sign = b.select(swapped, neg1, one);
        let p = b.load(a, kv, 1);
        let next = b.mul(acc[0], sign);
        let next = b.mul(next, p);
        let is0 = b.cmp(CmpOp::Eq, p, zero);
        let safe_p = b.select(is0, one, p);
        let k1 = b.add(k, step);
        b.for_loop(k1, hi, step, &[], |b, r, _| {
            let ri = at_rc(b, r, k);
            let f = b.load(a, ri, 1);
            let f = b.div(f, safe_p);
            b.for_loop(k, hi, step, &[], |b, c, _| {
                let rc = at_rc(b, r, c);
                let kc = at_rc(b, k, c);
                let x = b.load(a, rc, 1);
                let y = b.load(a, kc, 1);
                let t = b.mul(f, y);
                let v = b.sub(x, t);
                b.store(a, rc, v);
                Vec::new()
            });
            Vec::new()
        });
        vec![next]
    })[0];
    let r = b.cast(det, dt, NO_SAT);
    b.store(yp, pid, r);
    cx.launch(b.finish(), vec![xb, yb]);
    Ok(Execution::Kernel)
}

// ==== BitCast ====

fn bitcast(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = io(cx, node)?;
    let (xt, yt) = (cx.dtype(x)?, cx.dtype(y)?);
    if xt.bits() != yt.bits() || cx.dims(x)? != cx.dims(y)? {
        return Err(cx.invalid(format!(
            "BitCast from {xt} to {yt} changes the bit width or shape"
        )));
    }
    // Same bytes, another dtype: storage is shared.
    cx.alias(y, x)?;
    Ok(Execution::Alias)
}
