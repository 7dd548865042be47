//! Inference for dense ops: matrix products (numpy `matmul` rules, Gemm's transposes),
//! convolutions and pooling (pads, strides, dilations, `auto_pad`, `ceil_mode`), and
//! normalisations, whose results keep the input's shape.

use super::{broadcast_pair, fixed, Cx, Result};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::Op;
use crate::shape::{Dim, Shape};

pub(super) fn infer(cx: &Cx) -> Result<Vec<TensorType>> {
    use Op::*;
    // `Op::Shape` must not shadow the shape type.
    use crate::shape::Shape;
    match cx.op() {
        MatMul => Ok(vec![TensorType::new(cx.ty(0)?.dtype, matmul(cx, false)?)]),
        MatMulInteger => Ok(vec![TensorType::new(DType::I32, matmul(cx, false)?)]),
        // Always f32: integer products are scaled, f16/bf16 ones accumulate in f32.
        FusedMatMul => {
            let tb = cx.attr_int("transB", 0)? != 0;
            Ok(vec![TensorType::new(DType::F32, matmul(cx, tb)?)])
        }
        Gemm => gemm(cx),
        Conv | FusedConv => Ok(vec![TensorType::new(cx.ty(0)?.dtype, conv(cx)?)]),
        ConvInteger => Ok(vec![TensorType::new(DType::I32, conv(cx)?)]),
        ConvTranspose => conv_transpose(cx),
        MaxPool | AveragePool | LpPool => pool(cx),
        GlobalAveragePool | GlobalMaxPool | GlobalLpPool => {
            let x = cx.ty(0)?;
            if x.shape.rank() < 2 {
                return Err(cx.shape_err(format!("{} needs rank >= 2 (N, C, ...)", cx.describe(0))));
            }
            let mut dims = x.shape.0[..2].to_vec();
            dims.extend(std::iter::repeat_n(Dim::Fixed(1), x.shape.rank() - 2));
            Ok(vec![TensorType::new(x.dtype, Shape(dims))])
        }
        BatchNormalization => {
            let x = cx.ty(0)?;
            if x.shape.rank() < 2 {
                return Err(cx.shape_err(format!("{} needs rank >= 2 (N, C, ...)", cx.describe(0))));
            }
            let c = x.shape.0[1].clone();
            for i in 1..5 {
                let t = cx.ty(i)?;
                if t.shape.rank() != 1 || !compatible(&t.shape.0[0], &c) {
                    return Err(cx.shape_err(format!("{} must have shape [{c}]", cx.describe(i))));
                }
            }
            let mean_ty = cx.ty(3)?.clone();
            let var_ty = cx.ty(4)?.clone();
            Ok(vec![x.clone(), mean_ty, var_ty])
        }
        LayerNormalization => {
            let x = cx.ty(0)?;
            let r = x.shape.rank();
            let axis = cx.axis(cx.attr_int("axis", -1)?, r, "axis")?;
            let stash = match cx.attr_int("stash_type", 1)? {
                1 => DType::F32,
                code => i32::try_from(code)
                    .ok()
                    .and_then(DType::from_onnx)
                    .ok_or_else(|| {
                        cx.bad_attr("stash_type", format!("is {code}, not a dtype code"))
                    })?,
            };
            let mut stat = x.shape.0.clone();
            for d in stat.iter_mut().skip(axis) {
                *d = Dim::Fixed(1);
            }
            let st = TensorType::new(stash, Shape(stat));
            Ok(vec![x.clone(), st.clone(), st])
        }
        Softmax | LogSoftmax | Hardmax | LpNormalization => {
            let x = cx.ty(0)?;
            if x.shape.rank() > 0 {
                cx.axis(cx.attr_int("axis", -1)?, x.shape.rank(), "axis")?;
            }
            Ok(vec![x.clone()])
        }
        // InstanceNormalization, GroupNormalization, RMSNormalization,
        // MeanVarianceNormalization: the result has the input's type.
        _ => Ok(vec![cx.ty(0)?.clone()]),
    }
}

/// Whether two dims may be equal (a symbol may be anything).
fn compatible(a: &Dim, b: &Dim) -> bool {
    match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) => x == y,
        _ => true,
    }
}

/// numpy `matmul`: 1-D operands are promoted (a leading 1 on A, a trailing 1 on B) and
/// the promoted dims dropped from the result; batch dims broadcast.
/// MatMul's result shape; `trans_b` (FusedMatMul's `transB`): B holds its last two dims
/// swapped, the weights of a Gemm with `transB = 1`.
fn matmul(cx: &Cx, trans_b: bool) -> Result<Shape> {
    let a = &cx.ty(0)?.shape;
    let b = &cx.ty(1)?.shape;
    if a.rank() == 0 || b.rank() == 0 {
        return Err(cx.shape_err(format!(
            "{} and {} must not be scalars",
            cx.describe(0),
            cx.describe(1)
        )));
    }
    if trans_b && b.rank() < 2 {
        return Err(cx.shape_err(format!("transB needs {} of rank 2 or more", cx.describe(1))));
    }
    let mut a2 = a.0.clone();
    let mut b2 = b.0.clone();
    if trans_b {
        let r = b2.len();
        b2.swap(r - 1, r - 2);
    }
    if a.rank() == 1 {
        a2.insert(0, Dim::Fixed(1));
    }
    if b.rank() == 1 {
        b2.push(Dim::Fixed(1));
    }
    let (ka, kb) = (&a2[a2.len() - 1], &b2[b2.len() - 2]);
    if !compatible(ka, kb) {
        return Err(cx.shape_err(format!(
            "inner dimensions differ: {} has K = {ka}, {} has K = {kb}",
            cx.describe(0),
            cx.describe(1)
        )));
    }
    let batch_a = Shape(a2[..a2.len() - 2].to_vec());
    let batch_b = Shape(b2[..b2.len() - 2].to_vec());
    let batch = broadcast_pair(&batch_a, &batch_b).map_err(|(x, y)| crate::IrError::Broadcast {
        node: cx.label(),
        lhs: format!("the batch dims of {}", cx.describe(0)),
        rhs: format!("the batch dims of {}", cx.describe(1)),
        lhs_dim: x.to_string(),
        rhs_dim: y.to_string(),
    })?;
    let mut out = batch.0;
    if a.rank() > 1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if b.rank() > 1 {
        out.push(b2[b2.len() - 1].clone());
    }
    Ok(Shape(out))
}

fn gemm(cx: &Cx) -> Result<Vec<TensorType>> {
    let a = cx.ty(0)?;
    let b = cx.ty(1)?;
    for i in 0..2 {
        if cx.ty(i)?.shape.rank() != 2 {
            return Err(cx.shape_err(format!("{} must be 2-D", cx.describe(i))));
        }
    }
    let ta = cx.attr_int("transA", 0)? != 0;
    let tb = cx.attr_int("transB", 0)? != 0;
    let (m, ka) = if ta {
        (&a.shape.0[1], &a.shape.0[0])
    } else {
        (&a.shape.0[0], &a.shape.0[1])
    };
    let (kb, n) = if tb {
        (&b.shape.0[1], &b.shape.0[0])
    } else {
        (&b.shape.0[0], &b.shape.0[1])
    };
    if !compatible(ka, kb) {
        return Err(cx.shape_err(format!(
            "inner dimensions differ: {} gives K = {ka}, {} gives K = {kb} (transA = {}, transB = {})",
            cx.describe(0),
            cx.describe(1),
            ta as u8,
            tb as u8
        )));
    }
    let out = Shape(vec![m.clone(), n.clone()]);
    if let Some(c) = cx.opt_ty(2)? {
        // C broadcasts unidirectionally to [M, N].
        let ok = broadcast_pair(&c.shape, &out)
            .map(|s| s.rank() == 2 && fits(&s, &out))
            .unwrap_or(false);
        if !ok {
            return Err(cx.shape_err(format!(
                "{} cannot be broadcast to the result shape {out}",
                cx.describe(2)
            )));
        }
    }
    Ok(vec![TensorType::new(a.dtype, out)])
}

/// Whether a broadcast result equals `target` wherever `target` is fixed.
fn fits(s: &Shape, target: &Shape) -> bool {
    s.0.iter().zip(&target.0).all(|(x, y)| compatible(x, y))
}

/// Attributes shared by convolutions and pools, normalised for `n` spatial dims.
struct Window {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    /// `[begin_0, .., begin_n-1, end_0, .., end_n-1]`.
    pads: Vec<i64>,
    auto_pad: String,
}

fn window(cx: &Cx, n: usize, kernel: Vec<i64>) -> Result<Window> {
    let list = |name: &str, len: usize, default: i64| -> Result<Vec<i64>> {
        match cx.attr_ints(name)? {
            None => Ok(vec![default; len]),
            Some(v) if v.len() == len => Ok(v),
            Some(v) => Err(cx.bad_attr(
                name,
                format!("has {} values, but the input has {n} spatial dims", v.len()),
            )),
        }
    };
    if kernel.len() != n {
        return Err(cx.bad_attr(
            "kernel_shape",
            format!(
                "has {} values, but the input has {n} spatial dims",
                kernel.len()
            ),
        ));
    }
    let strides = list("strides", n, 1)?;
    let dilations = list("dilations", n, 1)?;
    let pads = list("pads", 2 * n, 0)?;
    for (name, v) in [
        ("strides", &strides),
        ("dilations", &dilations),
        ("kernel_shape", &kernel),
    ] {
        if v.iter().any(|&x| x < 1) {
            return Err(cx.bad_attr(name, format!("must be positive, got {v:?}")));
        }
    }
    if pads.iter().any(|&p| p < 0) {
        return Err(cx.bad_attr("pads", format!("must not be negative, got {pads:?}")));
    }
    let auto_pad = cx.attr_str("auto_pad")?.unwrap_or("NOTSET").to_string();
    if !matches!(
        auto_pad.as_str(),
        "NOTSET" | "SAME_UPPER" | "SAME_LOWER" | "VALID"
    ) {
        return Err(cx.bad_attr(
            "auto_pad",
            format!("is `{auto_pad}`; expected NOTSET, SAME_UPPER, SAME_LOWER or VALID"),
        ));
    }
    Ok(Window {
        kernel,
        strides,
        dilations,
        pads,
        auto_pad,
    })
}

/// The output size of one spatial dim of a convolution or pool.
fn window_out(
    cx: &Cx,
    w: &Window,
    i: usize,
    input: &Dim,
    ceil_mode: bool,
    k_out: usize,
    axis: usize,
) -> Result<Dim> {
    let Dim::Fixed(x) = input else {
        return Ok(cx.fresh(k_out, axis));
    };
    // i128 throughout: attributes are user data and may be absurd.
    let x = *x as i128;
    let (k, s, d) = (
        w.kernel[i] as i128,
        w.strides[i] as i128,
        w.dilations[i] as i128,
    );
    let ek = (k - 1) * d + 1;
    let out: i128 = match w.auto_pad.as_str() {
        "SAME_UPPER" | "SAME_LOWER" => (x + s - 1) / s,
        "VALID" => {
            let span = x - ek;
            if span < 0 {
                -1
            } else if ceil_mode {
                (span + s - 1) / s + 1
            } else {
                span / s + 1
            }
        }
        _ => {
            let (pb, pe) = (w.pads[i] as i128, w.pads[i + w.kernel.len()] as i128);
            let span = x + pb + pe - ek;
            if span < 0 {
                -1
            } else if ceil_mode {
                let mut o = (span + s - 1) / s + 1;
                // The last window must start inside the input or its leading padding
                // (ONNX >= 1.16 and PyTorch drop a window that starts in the end padding).
                if (o - 1) * s >= x + pb {
                    o -= 1;
                }
                o
            } else {
                span / s + 1
            }
        }
    };
    if out < 0 {
        return Err(cx.shape_err(format!(
            "spatial dim {i} of {} is {x}, smaller than the dilated kernel ({ek}) plus padding",
            cx.describe(0)
        )));
    }
    Ok(Dim::Fixed(out.clamp(0, u64::MAX as i128) as u64))
}

fn conv(cx: &Cx) -> Result<Shape> {
    let x = &cx.ty(0)?.shape;
    let w = &cx.ty(1)?.shape;
    if x.rank() < 3 {
        return Err(cx.shape_err(format!(
            "{} needs rank >= 3 (N, C, spatial...)",
            cx.describe(0)
        )));
    }
    if w.rank() != x.rank() {
        return Err(cx.shape_err(format!(
            "{} must have the same rank as {}",
            cx.describe(1),
            cx.describe(0)
        )));
    }
    let n = x.rank() - 2;
    let group = cx.attr_int("group", 1)?;
    if group < 1 {
        return Err(cx.bad_attr("group", format!("must be positive, got {group}")));
    }
    if let (Dim::Fixed(c), Dim::Fixed(wc)) = (&x.0[1], &w.0[1]) {
        if *c != wc.saturating_mul(group as u64) {
            return Err(cx.shape_err(format!(
                "{} has {c} channels, but {} expects {wc} x group {group}",
                cx.describe(0),
                cx.describe(1)
            )));
        }
    }
    let kernel = match cx.attr_ints("kernel_shape")? {
        Some(k) => k,
        None => w.0[2..]
            .iter()
            .map(|d| {
                d.fixed()
                    .map(|v| v as i64)
                    .ok_or_else(|| cx.symbolic("the kernel shape", d))
            })
            .collect::<Result<_>>()?,
    };
    let win = window(cx, n, kernel)?;
    if let (Some(b), Dim::Fixed(m)) = (cx.opt_ty(2)?, &w.0[0]) {
        if b.shape.rank() != 1 || !compatible(&b.shape.0[0], &Dim::Fixed(*m)) {
            return Err(cx.shape_err(format!("{} must have shape [{m}]", cx.describe(2))));
        }
    }
    let mut out = vec![x.0[0].clone(), w.0[0].clone()];
    for i in 0..n {
        out.push(window_out(cx, &win, i, &x.0[i + 2], false, 0, i + 2)?);
    }
    Ok(Shape(out))
}

fn conv_transpose(cx: &Cx) -> Result<Vec<TensorType>> {
    let xt = cx.ty(0)?;
    let x = &xt.shape;
    let w = &cx.ty(1)?.shape;
    if x.rank() < 3 || w.rank() != x.rank() {
        return Err(cx.shape_err(format!(
            "{} needs rank >= 3 and {} the same rank",
            cx.describe(0),
            cx.describe(1)
        )));
    }
    let n = x.rank() - 2;
    let group = cx.attr_int("group", 1)?;
    if group < 1 {
        return Err(cx.bad_attr("group", format!("must be positive, got {group}")));
    }
    let kernel = match cx.attr_ints("kernel_shape")? {
        Some(k) => k,
        None => w.0[2..]
            .iter()
            .map(|d| {
                d.fixed()
                    .map(|v| v as i64)
                    .ok_or_else(|| cx.symbolic("the kernel shape", d))
            })
            .collect::<Result<_>>()?,
    };
    let win = window(cx, n, kernel)?;
    let out_pad = match cx.attr_ints("output_padding")? {
        None => vec![0; n],
        Some(v) if v.len() == n => v,
        Some(v) => {
            return Err(cx.bad_attr(
                "output_padding",
                format!("has {} values for {n} spatial dims", v.len()),
            ))
        }
    };
    let m = super::dim_mul(&w.0[1], &Dim::Fixed(group as u64));
    let mut out = vec![x.0[0].clone(), m];
    if let Some(os) = cx.attr_ints("output_shape")? {
        // `output_shape` may list only the spatial dims or the whole shape.
        let spatial = if os.len() == n + 2 { &os[2..] } else { &os[..] };
        if spatial.len() != n || spatial.iter().any(|&v| v < 0) {
            return Err(cx.bad_attr(
                "output_shape",
                format!("{os:?} does not give {n} spatial sizes"),
            ));
        }
        out.extend(spatial.iter().map(|&v| fixed(v)));
        return Ok(vec![TensorType::new(xt.dtype, Shape(out))]);
    }
    #[allow(clippy::needless_range_loop)] // `i` indexes five parallel lists.
    for i in 0..n {
        let Dim::Fixed(xi) = &x.0[i + 2] else {
            out.push(cx.fresh(0, i + 2));
            continue;
        };
        let xi = *xi as i128;
        let (k, s, d) = (
            win.kernel[i] as i128,
            win.strides[i] as i128,
            win.dilations[i] as i128,
        );
        let o: i128 = match win.auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => xi * s,
            _ => {
                let (pb, pe) = if win.auto_pad == "VALID" {
                    (0, 0)
                } else {
                    (win.pads[i] as i128, win.pads[i + n] as i128)
                };
                s * (xi - 1) + out_pad[i] as i128 + ((k - 1) * d + 1) - pb - pe
            }
        };
        if o < 0 {
            return Err(cx.shape_err(format!(
                "spatial dim {i} of the result would be negative ({o})"
            )));
        }
        out.push(Dim::Fixed(o.clamp(0, u64::MAX as i128) as u64));
    }
    Ok(vec![TensorType::new(xt.dtype, Shape(out))])
}

fn pool(cx: &Cx) -> Result<Vec<TensorType>> {
    let xt = cx.ty(0)?;
    let x = &xt.shape;
    if x.rank() < 3 {
        return Err(cx.shape_err(format!(
            "{} needs rank >= 3 (N, C, spatial...)",
            cx.describe(0)
        )));
    }
    let n = x.rank() - 2;
    let kernel = cx
        .attr_ints("kernel_shape")?
        .ok_or_else(|| cx.bad_attr("kernel_shape", "is required"))?;
    let win = window(cx, n, kernel)?;
    let ceil_mode = cx.attr_int("ceil_mode", 0)? != 0;
    let mut out = vec![x.0[0].clone(), x.0[1].clone()];
    for i in 0..n {
        out.push(window_out(cx, &win, i, &x.0[i + 2], ceil_mode, 0, i + 2)?);
    }
    let shape = Shape(out);
    let mut tys = vec![TensorType::new(xt.dtype, shape.clone())];
    if cx.op() == Op::MaxPool {
        tys.push(TensorType::new(DType::I64, shape));
    }
    Ok(tys)
}
