//! Inference for shape changes and data movement: `Reshape` (0, -1, `allowzero`),
//! `Flatten`, `Transpose`, `Squeeze`/`Unsqueeze`, `Concat`, `Split`, `Slice` (ONNX's
//! clamping rules), the gathers and scatters, `Expand`, `Pad`, `Tile`, `Resize` and friends.

use super::{dim_add, dim_mul, dims_product, fixed, Cx, Result};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::Op;
use crate::shape::{Dim, Shape};

pub(super) fn infer(cx: &Cx) -> Result<Vec<TensorType>> {
    use Op::*;
    // `Op::Shape` must not shadow the shape type.
    use crate::shape::Shape;
    let x = cx.ty(0)?;
    let r = x.shape.rank();
    let same = |s: Shape| Ok(vec![TensorType::new(x.dtype, s)]);
    match cx.op() {
        Reshape => same(reshape(cx, &x.shape)?),
        Flatten => {
            let a = cx.attr_int("axis", 1)?;
            let a = if a < 0 { a + r as i64 } else { a };
            if a < 0 || a > r as i64 {
                return Err(cx.shape_err(format!(
                    "axis {} is out of range for rank {r}",
                    cx.attr_int("axis", 1)?
                )));
            }
            let (lo, hi) = x.shape.0.split_at(a as usize);
            same(Shape(vec![dims_product(lo), dims_product(hi)]))
        }
        Transpose => {
            let perm = match cx.attr_ints("perm")? {
                Some(p) => p,
                None => (0..r as i64).rev().collect(),
            };
            let mut seen = vec![false; r];
            let mut out = Vec::with_capacity(r);
            for &p in &perm {
                let slot = usize::try_from(p)
                    .ok()
                    .filter(|&p| p < r)
                    .and_then(|p| seen.get_mut(p));
                match slot {
                    Some(s) if !*s => *s = true,
                    _ => {
                        return Err(
                            cx.bad_attr("perm", format!("{perm:?} is not a permutation of 0..{r}"))
                        )
                    }
                }
                out.push(x.shape.0[p as usize].clone());
            }
            if perm.len() != r {
                return Err(cx.bad_attr("perm", format!("{perm:?} is not a permutation of 0..{r}")));
            }
            same(Shape(out))
        }
        Squeeze => match cx.ints(1)? {
            None => same(Shape(
                x.shape
                    .0
                    .iter()
                    .filter(|d| **d != Dim::Fixed(1))
                    .cloned()
                    .collect(),
            )),
            Some(axes) => {
                let axes = cx.axes(&axes, r, "axis")?;
                for &a in &axes {
                    if let Dim::Fixed(d) = x.shape.0[a] {
                        if d != 1 {
                            return Err(cx.shape_err(format!(
                                "cannot squeeze axis {a} of {}: its size is {d}",
                                cx.describe(0)
                            )));
                        }
                    }
                }
                same(Shape(
                    x.shape
                        .0
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !axes.contains(i))
                        .map(|(_, d)| d.clone())
                        .collect(),
                ))
            }
        },
        Unsqueeze => {
            let axes = cx.req_ints(1)?;
            let out_r = r + axes.len();
            let axes = cx.axes(&axes, out_r, "axis")?;
            let mut src = x.shape.0.iter();
            let out = (0..out_r)
                .map(|i| {
                    if axes.contains(&i) {
                        Dim::Fixed(1)
                    } else {
                        src.next().cloned().unwrap_or(Dim::Fixed(1))
                    }
                })
                .collect();
            same(Shape(out))
        }
        Concat => concat(cx),
        Split => split(cx),
        Slice => {
            let params = slice_params(cx, &x.shape)?;
            let out = params
                .iter()
                .enumerate()
                .map(|(i, p)| match p {
                    None => x.shape.0[i].clone(),
                    // A symbolic dim sliced in a way that depends on its size.
                    Some(p) if p.count < 0 => cx.fresh(0, i),
                    Some(p) => fixed(p.count),
                })
                .collect();
            same(Shape(out))
        }
        Gather => {
            let ind = cx.ty(1)?;
            index_dtype(cx, ind.dtype)?;
            if r == 0 {
                return Err(cx.shape_err(format!("{} must not be a scalar", cx.describe(0))));
            }
            let axis = cx.axis(cx.attr_int("axis", 0)?, r, "axis")?;
            let mut out = x.shape.0[..axis].to_vec();
            out.extend(ind.shape.0.iter().cloned());
            out.extend(x.shape.0[axis + 1..].iter().cloned());
            same(Shape(out))
        }
        GatherElements => {
            let ind = cx.ty(1)?;
            index_dtype(cx, ind.dtype)?;
            if ind.shape.rank() != r {
                return Err(cx.shape_err(format!(
                    "{} must have the rank of {}",
                    cx.describe(1),
                    cx.describe(0)
                )));
            }
            cx.axis(cx.attr_int("axis", 0)?, r, "axis")?;
            same(ind.shape.clone())
        }
        GatherND => {
            let ind = cx.ty(1)?;
            index_dtype(cx, ind.dtype)?;
            let q = ind.shape.rank();
            let b = cx.attr_int("batch_dims", 0)?;
            let last =
                ind.shape.0.last().ok_or_else(|| {
                    cx.shape_err(format!("{} must not be a scalar", cx.describe(1)))
                })?;
            let last =
                last.fixed()
                    .ok_or_else(|| cx.symbolic("the index depth", last))? as usize;
            let b = usize::try_from(b)
                .map_err(|_| cx.bad_attr("batch_dims", "must not be negative"))?;
            if b >= q || b.saturating_add(last) > r {
                return Err(cx.shape_err(format!(
                    "batch_dims {b} plus index depth {last} do not fit {} and {}",
                    cx.describe(0),
                    cx.describe(1)
                )));
            }
            let mut out = ind.shape.0[..q - 1].to_vec();
            out.extend(x.shape.0[b + last..].iter().cloned());
            same(Shape(out))
        }
        ScatterElements | ScatterND => {
            index_dtype(cx, cx.ty(1)?.dtype)?;
            let u = cx.ty(2)?;
            if u.dtype != x.dtype {
                return Err(
                    cx.dtype_err(u.dtype, format!("{} (data is {})", cx.describe(2), x.dtype))
                );
            }
            same(x.shape.clone())
        }
        Expand => {
            let shape = cx.req_ints(1)?;
            if shape.iter().any(|&d| d < 0) {
                return Err(cx.bad_operand(1, &format!("is {shape:?}; sizes must not be negative")));
            }
            let target = Shape(shape.iter().map(|&d| Dim::Fixed(d as u64)).collect());
            let out = super::broadcast_pair(&x.shape, &target).map_err(|(a, b)| {
                crate::IrError::Broadcast {
                    node: cx.label(),
                    lhs: cx.describe(0),
                    rhs: format!("the shape {shape:?} in operand 1 (`shape`)"),
                    lhs_dim: a.to_string(),
                    rhs_dim: b.to_string(),
                }
            })?;
            same(out)
        }
        Pad => {
            let pads = cx.req_ints(1)?;
            let axes = match cx.ints(3)? {
                Some(a) => cx.axes(&a, r, "axis")?,
                None => (0..r).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return Err(cx.bad_operand(
                    1,
                    &format!(
                        "has {} values; expected {} (2 per padded axis)",
                        pads.len(),
                        2 * axes.len()
                    ),
                ));
            }
            if let Some(cv) = cx.opt_ty(2)? {
                if cv.dtype != x.dtype {
                    return Err(cx.dtype_err(
                        cv.dtype,
                        format!("{} (data is {})", cx.describe(2), x.dtype),
                    ));
                }
            }
            let mode = cx.attr_str("mode")?.unwrap_or("constant");
            if !matches!(mode, "constant" | "reflect" | "edge" | "wrap") {
                return Err(cx.bad_attr(
                    "mode",
                    format!("is `{mode}`; expected constant, reflect, edge or wrap"),
                ));
            }
            let mut out = x.shape.0.clone();
            let n = axes.len();
            for (k, &a) in axes.iter().enumerate() {
                let total = pads[k].saturating_add(pads[k + n]);
                out[a] = match &out[a] {
                    Dim::Fixed(d) => {
                        let v = (*d as i64).saturating_add(total);
                        if v < 0 {
                            return Err(cx.bad_operand(
                                1,
                                &format!("removes more than the {d} elements of axis {a}"),
                            ));
                        }
                        fixed(v)
                    }
                    d if total == 0 => d.clone(),
                    d if total > 0 => dim_add(d, &Dim::Fixed(total as u64)),
                    _ => cx.fresh(0, a),
                };
            }
            same(Shape(out))
        }
        Tile => {
            let reps = cx.req_ints(1)?;
            if reps.len() != r {
                return Err(cx.bad_operand(
                    1,
                    &format!(
                        "has {} values, but {} has rank {r}",
                        reps.len(),
                        cx.describe(0)
                    ),
                ));
            }
            if reps.iter().any(|&v| v < 0) {
                return Err(
                    cx.bad_operand(1, &format!("is {reps:?}; repeats must not be negative"))
                );
            }
            same(Shape(
                x.shape
                    .0
                    .iter()
                    .zip(&reps)
                    .map(|(d, &k)| dim_mul(d, &Dim::Fixed(k as u64)))
                    .collect(),
            ))
        }
        Identity | Trilu => {
            if cx.op() == Trilu && r < 2 {
                return Err(cx.shape_err(format!("{} needs rank >= 2", cx.describe(0))));
            }
            Ok(vec![x.clone()])
        }
        Dropout => Ok(vec![
            x.clone(),
            TensorType::new(DType::Bool, x.shape.clone()),
        ]),
        DepthToSpace | SpaceToDepth => {
            if r != 4 {
                return Err(cx.shape_err(format!("{} must be 4-D (N, C, H, W)", cx.describe(0))));
            }
            let mode = cx.attr_str("mode")?.unwrap_or("DCR");
            if !matches!(mode, "DCR" | "CRD") {
                return Err(cx.bad_attr("mode", format!("is `{mode}`; expected DCR or CRD")));
            }
            let b = cx.attr_int("blocksize", 0)?;
            if b < 1 {
                return Err(cx.bad_attr("blocksize", format!("must be positive, got {b}")));
            }
            let b = b as u64;
            let bb = b.saturating_mul(b);
            let d = &x.shape.0;
            let div = |dim: &Dim, by: u64, what: &str, axis: usize| -> Result<Dim> {
                match dim {
                    Dim::Fixed(v) if v % by == 0 => Ok(Dim::Fixed(v / by)),
                    Dim::Fixed(v) => {
                        Err(cx.shape_err(format!("{what} ({v}) is not divisible by {by}")))
                    }
                    Dim::Sym(_) => Ok(cx.fresh(0, axis)),
                }
            };
            let out = if cx.op() == DepthToSpace {
                vec![
                    d[0].clone(),
                    div(&d[1], bb, "the channel count", 1)?,
                    dim_mul(&d[2], &Dim::Fixed(b)),
                    dim_mul(&d[3], &Dim::Fixed(b)),
                ]
            } else {
                vec![
                    d[0].clone(),
                    dim_mul(&d[1], &Dim::Fixed(bb)),
                    div(&d[2], b, "the height", 2)?,
                    div(&d[3], b, "the width", 3)?,
                ]
            };
            same(Shape(out))
        }
        OneHot => {
            index_dtype_or_float(cx, x.dtype)?;
            let depth = match cx.floats(1)?.as_deref() {
                Some([d]) => *d,
                Some(v) => {
                    return Err(cx.bad_operand(1, &format!("must hold one value, not {}", v.len())))
                }
                None => return Err(cx.missing(1)),
            };
            if !(0.0..1e18).contains(&depth) {
                return Err(
                    cx.bad_operand(1, &format!("is {depth}; depth must be a non-negative size"))
                );
            }
            let values = cx.ty(2)?;
            let axis = cx.axis(cx.attr_int("axis", -1)?, r + 1, "axis")?;
            let mut out = x.shape.0.clone();
            out.insert(axis, Dim::Fixed(depth as u64));
            Ok(vec![TensorType::new(values.dtype, Shape(out))])
        }
        EyeLike => {
            if r != 2 {
                return Err(cx.shape_err(format!("{} must be 2-D", cx.describe(0))));
            }
            let dt = cx.attr_dtype("dtype")?.unwrap_or(x.dtype);
            Ok(vec![TensorType::new(dt, x.shape.clone())])
        }
        Resize => same(resize(cx, &x.shape)?),
        _ => Ok(vec![x.clone()]),
    }
}

fn index_dtype(cx: &Cx, d: DType) -> Result<()> {
    if d == DType::I64 || d == DType::I32 {
        Ok(())
    } else {
        Err(cx.dtype_err(d, "operand 1 (`indices`), which must be i32 or i64"))
    }
}

fn index_dtype_or_float(cx: &Cx, d: DType) -> Result<()> {
    if d.is_numeric() {
        Ok(())
    } else {
        Err(cx.dtype_err(d, "operand 0 (`indices`)"))
    }
}

/// Factors a dim list into (product of fixed dims, symbols).
fn factor(dims: &[Dim]) -> (u64, Vec<String>) {
    let mut p: u64 = 1;
    let mut syms = Vec::new();
    for d in dims {
        match d {
            Dim::Fixed(v) => p = p.saturating_mul(*v),
            Dim::Sym(s) => syms.push(s.clone()),
        }
    }
    syms.sort();
    (p, syms)
}

fn reshape(cx: &Cx, input: &Shape) -> Result<Shape> {
    let target = cx.req_ints(1)?;
    let allowzero = cx.attr_int("allowzero", 0)? != 0;
    let mut out: Vec<Option<Dim>> = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        out.push(match t {
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                None
            }
            -1 => {
                return Err(cx.bad_operand(
                    1,
                    &format!("is {target:?}; at most one dimension may be -1"),
                ))
            }
            0 if !allowzero => Some(input.0.get(i).cloned().ok_or_else(|| {
                cx.bad_operand(
                    1,
                    &format!(
                        "is {target:?}; the 0 at index {i} copies a dim the input (rank {}) lacks",
                        input.rank()
                    ),
                )
            })?),
            t if t < 0 => {
                return Err(cx.bad_operand(1, &format!("is {target:?}; {t} is not a size")))
            }
            t => Some(Dim::Fixed(t as u64)),
        });
    }
    if allowzero && infer_at.is_some() && target.contains(&0) {
        return Err(cx.bad_operand(
            1,
            &format!("is {target:?}; with allowzero a 0 cannot be combined with -1"),
        ));
    }
    let (p_in, s_in) = factor(&input.0);
    let known: Vec<Dim> = out.iter().flatten().cloned().collect();
    let (p_out, s_out) = factor(&known);
    let mismatch = || cx.shape_err(format!("cannot reshape {} into {target:?}", cx.describe(0)));
    match infer_at {
        None => {
            if s_in.is_empty() && s_out.is_empty() && p_in != p_out {
                return Err(mismatch());
            }
        }
        Some(at) => {
            // Remove the output's symbols from the input's; what is left, times the fixed
            // quotient, is the inferred dim.
            let mut rest = s_in.clone();
            let mut all_found = true;
            for s in &s_out {
                match rest.iter().position(|x| x == s) {
                    Some(p) => {
                        rest.remove(p);
                    }
                    None => all_found = false,
                }
            }
            let d = if !all_found {
                cx.fresh(0, at)
            } else if p_out == 0 {
                if p_in == 0 {
                    return Err(cx.bad_operand(
                        1,
                        &format!("is {target:?}; -1 is ambiguous with a zero-sized dim"),
                    ));
                }
                return Err(mismatch());
            } else if p_in % p_out != 0 {
                if rest.is_empty() {
                    return Err(mismatch());
                }
                cx.fresh(0, at)
            } else {
                let q = Dim::Fixed(p_in / p_out);
                rest.iter()
                    .fold(q, |acc, s| dim_mul(&acc, &Dim::Sym(s.clone())))
            };
            out[at] = Some(d);
        }
    }
    Ok(Shape(
        out.into_iter()
            .map(|d| d.unwrap_or(Dim::Fixed(0)))
            .collect(),
    ))
}

fn concat(cx: &Cx) -> Result<Vec<TensorType>> {
    let first = cx.ty(0)?;
    let r = first.shape.rank();
    let axis_attr = match cx.node.attr("axis") {
        Some(_) => cx.attr_int("axis", 0)?,
        None => return Err(cx.bad_attr("axis", "is required")),
    };
    let axis = cx.axis(axis_attr, r, "axis")?;
    let mut out = first.shape.0.clone();
    for i in 1..cx.n_inputs() {
        let t = cx.ty(i)?;
        if t.dtype != first.dtype {
            return Err(cx.dtype_err(
                t.dtype,
                format!("{} (operand 0 is {})", cx.describe(i), first.dtype),
            ));
        }
        if t.shape.rank() != r {
            return Err(cx.shape_err(format!(
                "{} and {} must have the same rank",
                cx.describe(0),
                cx.describe(i)
            )));
        }
        for (k, d) in t.shape.0.iter().enumerate() {
            if k == axis {
                out[k] = dim_add(&out[k], d);
            } else if let (Dim::Fixed(a), Dim::Fixed(b)) = (&out[k], d) {
                if a != b {
                    return Err(cx.shape_err(format!(
                        "{} differs from operand 0 in dim {k} ({b} vs {a}); only axis {axis} may differ",
                        cx.describe(i)
                    )));
                }
            } else if let Dim::Fixed(_) = d {
                out[k] = d.clone();
            }
        }
    }
    Ok(vec![TensorType::new(first.dtype, Shape(out))])
}

fn split(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let r = x.shape.rank();
    let axis = cx.axis(cx.attr_int("axis", 0)?, r, "axis")?;
    let n_out = cx.node.outputs.len();
    let dim = &x.shape.0[axis];
    let sizes: Vec<Dim> = match cx.ints(1)? {
        Some(split) => {
            if split.len() != n_out {
                return Err(
                    cx.bad_operand(1, &format!("has {} sizes for {n_out} results", split.len()))
                );
            }
            if split.iter().any(|&s| s < 0) {
                return Err(cx.bad_operand(1, &format!("is {split:?}; sizes must not be negative")));
            }
            let total = split.iter().fold(0i64, |a, &b| a.saturating_add(b));
            if let Dim::Fixed(d) = dim {
                if total as u64 != *d {
                    return Err(cx.bad_operand(
                        1,
                        &format!("is {split:?}, which sums to {total}, but axis {axis} has {d}"),
                    ));
                }
            }
            split.iter().map(|&s| fixed(s)).collect()
        }
        None => {
            let n = match cx.node.attr("num_outputs") {
                Some(_) => cx.attr_int("num_outputs", 0)?,
                None => n_out as i64,
            };
            if n < 1 || n as usize != n_out {
                return Err(cx.bad_attr(
                    "num_outputs",
                    format!("is {n}, but the node has {n_out} results"),
                ));
            }
            let n = n as u64;
            match dim {
                Dim::Fixed(d) => {
                    let chunk = d.div_ceil(n);
                    let before_last = chunk.saturating_mul(n - 1);
                    if before_last > *d {
                        return Err(cx.shape_err(format!(
                            "axis {axis} ({d}) is too small to split into {n} parts"
                        )));
                    }
                    (0..n)
                        .map(|i| Dim::Fixed(if i + 1 == n { d - before_last } else { chunk }))
                        .collect()
                }
                Dim::Sym(_) if n == 1 => vec![dim.clone()],
                Dim::Sym(_) => (0..n_out).map(|k| cx.fresh(k, axis)).collect(),
            }
        }
    };
    Ok(sizes
        .into_iter()
        .map(|s| {
            let mut d = x.shape.0.clone();
            d[axis] = s;
            TensorType::new(x.dtype, Shape(d))
        })
        .collect())
}

/// One sliced axis: the first index, the step and the number of elements taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SliceAxis {
    pub start: i64,
    pub step: i64,
    pub count: i64,
}

/// Clamps `start`/`end` as ONNX Slice does for an axis of size `d`.
pub(crate) fn slice_axis(d: i64, start: i64, end: i64, step: i64) -> SliceAxis {
    // i128 so that extreme starts, ends and steps (i64::MIN/MAX are common) cannot overflow.
    let (d, step128) = (d as i128, step as i128);
    let norm = |v: i64| if v < 0 { v as i128 + d } else { v as i128 };
    let (s, e) = (norm(start), norm(end));
    let (s, count) = if step128 > 0 {
        let s = s.clamp(0, d);
        let e = e.clamp(0, d);
        (
            s,
            if e > s {
                (e - s + step128 - 1) / step128
            } else {
                0
            },
        )
    } else {
        let s = s.clamp(-1, d - 1);
        let e = e.clamp(-1, d - 1);
        let neg = -step128;
        (s, if s > e { (s - e + neg - 1) / neg } else { 0 })
    };
    SliceAxis {
        start: s as i64,
        step,
        count: count as i64,
    }
}

/// Per-axis slice parameters for `Slice`; `None` for an axis left whole. A symbolic axis
/// sliced as `0..end-of-axis` step 1 stays whole; any other slice of a symbolic axis has
/// an unknown count, marked -1.
pub(crate) fn slice_params(cx: &Cx, shape: &Shape) -> Result<Vec<Option<SliceAxis>>> {
    let r = shape.rank();
    let starts = cx.req_ints(1)?;
    let ends = cx.req_ints(2)?;
    if starts.len() != ends.len() {
        return Err(cx.bad_operand(
            2,
            &format!(
                "has {} values, but `starts` has {}",
                ends.len(),
                starts.len()
            ),
        ));
    }
    let axes = match cx.ints(3)? {
        Some(a) => {
            if a.len() != starts.len() {
                return Err(cx.bad_operand(
                    3,
                    &format!("has {} values, but `starts` has {}", a.len(), starts.len()),
                ));
            }
            cx.axes(&a, r, "axis")?
        }
        None => {
            if starts.len() > r {
                return Err(cx.bad_operand(
                    1,
                    &format!("has {} values for a rank-{r} input", starts.len()),
                ));
            }
            (0..starts.len()).collect()
        }
    };
    let steps = match cx.ints(4)? {
        Some(s) if s.len() != starts.len() => {
            return Err(cx.bad_operand(
                4,
                &format!("has {} values, but `starts` has {}", s.len(), starts.len()),
            ))
        }
        Some(s) => s,
        None => vec![1; starts.len()],
    };
    let mut out = vec![None; r];
    for (k, &a) in axes.iter().enumerate() {
        let (st, en, sp) = (starts[k], ends[k], steps[k]);
        if sp == 0 {
            return Err(cx.bad_operand(4, "contains a zero step"));
        }
        match &shape.0[a] {
            Dim::Fixed(d) => {
                out[a] = Some(slice_axis((*d).min(i64::MAX as u64) as i64, st, en, sp))
            }
            // The whole of a symbolic axis: the dim stays the symbol.
            Dim::Sym(_) if st == 0 && sp == 1 && en >= i32::MAX as i64 => {}
            Dim::Sym(_) => {
                out[a] = Some(SliceAxis {
                    start: 0,
                    step: sp,
                    count: -1,
                })
            }
        }
    }
    Ok(out)
}

fn resize(cx: &Cx, input: &Shape) -> Result<Shape> {
    let r = input.rank();
    let axes = match cx.attr_ints("axes")? {
        Some(a) => cx.axes(&a, r, "axis")?,
        None => (0..r).collect(),
    };
    // An empty tensor stands for an omitted operand (older exporters write one).
    let sizes = cx.ints(3)?.filter(|v| !v.is_empty());
    let scales = if sizes.is_none() {
        cx.floats(2)?.filter(|v| !v.is_empty())
    } else {
        None
    };
    let mut out = input.0.clone();
    if let Some(sizes) = sizes {
        if sizes.len() != axes.len() {
            return Err(cx.bad_operand(
                3,
                &format!("has {} values for {} axes", sizes.len(), axes.len()),
            ));
        }
        if sizes.iter().any(|&s| s < 0) {
            return Err(cx.bad_operand(3, &format!("is {sizes:?}; sizes must not be negative")));
        }
        let policy = cx
            .attr_str("keep_aspect_ratio_policy")?
            .unwrap_or("stretch");
        match policy {
            "stretch" => {
                for (k, &a) in axes.iter().enumerate() {
                    out[a] = fixed(sizes[k]);
                }
            }
            "not_larger" | "not_smaller" => {
                let mut scale: Option<f64> = None;
                for (k, &a) in axes.iter().enumerate() {
                    let d = input.0[a]
                        .fixed()
                        .ok_or_else(|| cx.symbolic("keep_aspect_ratio_policy", &input.0[a]))?;
                    let s = sizes[k] as f64 / d as f64;
                    scale = Some(match scale {
                        None => s,
                        Some(x) if policy == "not_larger" => x.min(s),
                        Some(x) => x.max(s),
                    });
                }
                let scale = scale.unwrap_or(1.0);
                for &a in &axes {
                    if let Dim::Fixed(d) = input.0[a] {
                        out[a] = Dim::Fixed((scale * d as f64).round() as u64);
                    }
                }
            }
            p => {
                return Err(cx.bad_attr(
                    "keep_aspect_ratio_policy",
                    format!("is `{p}`; expected stretch, not_larger or not_smaller"),
                ))
            }
        }
    } else if let Some(scales) = scales {
        if scales.len() != axes.len() {
            return Err(cx.bad_operand(
                2,
                &format!("has {} values for {} axes", scales.len(), axes.len()),
            ));
        }
        for (k, &a) in axes.iter().enumerate() {
            let s = scales[k];
            if !(s > 0.0 && s.is_finite()) {
                return Err(cx.bad_operand(2, &format!("is {scales:?}; scales must be positive")));
            }
            out[a] = match &input.0[a] {
                Dim::Fixed(d) => {
                    let v = (*d as f64 * s).floor();
                    if v > u64::MAX as f64 / 2.0 {
                        Dim::Fixed(u64::MAX)
                    } else {
                        Dim::Fixed(v as u64)
                    }
                }
                d if s == 1.0 => d.clone(),
                _ => cx.fresh(0, a),
            };
        }
    } else {
        return Err(
            cx.shape_err("one of operand 2 (`scales`) and operand 3 (`sizes`) must be given")
        );
    }
    Ok(Shape(out))
}
