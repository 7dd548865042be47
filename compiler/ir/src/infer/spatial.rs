//! Inference for the spatial ops: ConvInteger (whose zero points are not a bias), MaxUnpool,
//! LRN, ReverseSequence, CenterCropPad, Col2Im, GridSample and AffineGrid. Resize,
//! ConvTranspose and the scatters are inferred with their families (`movement.rs`, `dense.rs`).
//!
//! [`infer`] answers `None` for ops that are not this file's, so the dispatcher can try it
//! before the per-family files.

use super::{fixed, Cx, Result};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::Op;
use crate::shape::{Dim, Shape};

pub(super) fn infer(cx: &Cx) -> Option<Result<Vec<TensorType>>> {
    use Op::*;
    Some(match cx.op() {
        ConvInteger => conv_integer(cx),
        MaxUnpool => max_unpool(cx),
        LRN | ReverseSequence => cx.ty(0).map(|t| vec![t.clone()]),
        CenterCropPad => center_crop_pad(cx),
        Col2Im => col2im(cx),
        GridSample => grid_sample(cx),
        AffineGrid => affine_grid(cx),
        _ => return None,
    })
}

/// An ints attribute with `len` entries (default `default` each).
fn list(cx: &Cx, name: &str, len: usize, default: i64) -> Result<Vec<i64>> {
    match cx.attr_ints(name)? {
        None => Ok(vec![default; len]),
        Some(v) if v.len() == len => Ok(v),
        Some(v) => Err(cx.bad_attr(name, format!("has {} values; expected {len}", v.len()))),
    }
}

fn spatial_input<'a>(cx: &Cx<'a>) -> Result<&'a TensorType> {
    let x = cx.ty(0)?;
    if x.shape.rank() < 3 {
        return Err(cx.shape_err(format!(
            "{} needs rank >= 3 (N, C, spatial...)",
            cx.describe(0)
        )));
    }
    Ok(x)
}

fn conv_integer(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = &spatial_input(cx)?.shape;
    let w = &cx.ty(1)?.shape;
    if w.rank() != x.rank() {
        return Err(cx.shape_err(format!(
            "{} must have the same rank as {}",
            cx.describe(1),
            cx.describe(0)
        )));
    }
    let n = x.rank() - 2;
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
    if kernel.len() != n {
        return Err(cx.bad_attr(
            "kernel_shape",
            format!("has {} values for {n} spatial dims", kernel.len()),
        ));
    }
    let st = list(cx, "strides", n, 1)?;
    let dil = list(cx, "dilations", n, 1)?;
    let pads = list(cx, "pads", 2 * n, 0)?;
    if st.iter().chain(&dil).chain(&kernel).any(|&v| v < 1) || pads.iter().any(|&p| p < 0) {
        return Err(cx.shape_err(
            "strides, dilations and kernel_shape must be positive and pads not negative",
        ));
    }
    let auto_pad = cx.attr_str("auto_pad")?.unwrap_or("NOTSET");
    let mut out = vec![x.0[0].clone(), w.0[0].clone()];
    for i in 0..n {
        let Dim::Fixed(xi) = x.0[i + 2] else {
            out.push(cx.fresh(0, i + 2));
            continue;
        };
        let (xi, s) = (xi as i128, st[i] as i128);
        let ek = (kernel[i] as i128 - 1) * dil[i] as i128 + 1;
        let o = match auto_pad {
            "SAME_UPPER" | "SAME_LOWER" => (xi + s - 1) / s,
            "VALID" => (xi - ek).div_euclid(s) + 1,
            "NOTSET" => (xi + pads[i] as i128 + pads[i + n] as i128 - ek).div_euclid(s) + 1,
            p => return Err(cx.bad_attr("auto_pad", format!("is `{p}`"))),
        };
        if o < 0 {
            return Err(cx.shape_err(format!(
                "spatial dim {i} is smaller than the dilated kernel"
            )));
        }
        out.push(Dim::Fixed(o.min(u64::MAX as i128) as u64));
    }
    Ok(vec![TensorType::new(DType::I32, Shape(out))])
}

fn max_unpool(cx: &Cx) -> Result<Vec<TensorType>> {
    let xt = spatial_input(cx)?;
    let x = &xt.shape;
    let n = x.rank() - 2;
    if let Some(os) = cx.ints(2)? {
        if os.len() != x.rank() || os.iter().any(|&v| v < 0) {
            return Err(cx.bad_operand(2, &format!("is {os:?}; expected {} sizes", x.rank())));
        }
        return Ok(vec![TensorType::new(
            xt.dtype,
            Shape(os.iter().map(|&v| fixed(v)).collect()),
        )]);
    }
    let kernel = cx
        .attr_ints("kernel_shape")?
        .ok_or_else(|| cx.bad_attr("kernel_shape", "is required"))?;
    if kernel.len() != n {
        return Err(cx.bad_attr(
            "kernel_shape",
            format!("has {} values for {n} spatial dims", kernel.len()),
        ));
    }
    let st = list(cx, "strides", n, 1)?;
    let pads = list(cx, "pads", 2 * n, 0)?;
    let mut out = x.0[..2].to_vec();
    for i in 0..n {
        let Dim::Fixed(xi) = x.0[i + 2] else {
            out.push(cx.fresh(0, i + 2));
            continue;
        };
        let o = (xi as i128 - 1) * st[i] as i128 + kernel[i] as i128
            - pads[i] as i128
            - pads[i + n] as i128;
        if o < 0 {
            return Err(cx.shape_err(format!(
                "spatial dim {i} of the result would be negative ({o})"
            )));
        }
        out.push(Dim::Fixed(o.min(u64::MAX as i128) as u64));
    }
    Ok(vec![TensorType::new(xt.dtype, Shape(out))])
}

fn center_crop_pad(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let r = x.shape.rank();
    let shape = cx.req_ints(1)?;
    let axes = match cx.attr_ints("axes")? {
        Some(a) => cx.axes(&a, r, "axis")?,
        None => (0..r).collect(),
    };
    if shape.len() != axes.len() || shape.iter().any(|&v| v < 0) {
        return Err(cx.bad_operand(1, &format!("is {shape:?}; expected {} sizes", axes.len())));
    }
    let mut out = x.shape.0.clone();
    for (k, &a) in axes.iter().enumerate() {
        out[a] = fixed(shape[k]);
    }
    Ok(vec![TensorType::new(x.dtype, Shape(out))])
}

fn col2im(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    if x.shape.rank() != 3 {
        return Err(cx.shape_err(format!(
            "{} must be [N, C*prod(block_shape), L]",
            cx.describe(0)
        )));
    }
    let img = cx.req_ints(1)?;
    let block = cx.req_ints(2)?;
    if img.len() != block.len() || img.is_empty() || img.iter().chain(&block).any(|&v| v < 1) {
        return Err(cx.shape_err(format!(
            "image_shape {img:?} and block_shape {block:?} must be positive and of equal length"
        )));
    }
    let kt: u64 = block.iter().fold(1u64, |a, &b| a.saturating_mul(b as u64));
    let c = match &x.shape.0[1] {
        Dim::Fixed(v) if v % kt == 0 => Dim::Fixed(v / kt),
        Dim::Fixed(v) => {
            return Err(cx.shape_err(format!(
                "{v} channels are not a multiple of the block size {kt}"
            )))
        }
        _ => cx.fresh(0, 1),
    };
    let mut out = vec![x.shape.0[0].clone(), c];
    out.extend(img.iter().map(|&v| fixed(v)));
    Ok(vec![TensorType::new(x.dtype, Shape(out))])
}

fn grid_sample(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = spatial_input(cx)?;
    let g = cx.ty(1)?;
    let r = x.shape.rank();
    if g.shape.rank() != r || g.shape.0[r - 1] != Dim::Fixed((r - 2) as u64) {
        return Err(cx.shape_err(format!(
            "{} must be [N, spatial..., {}]",
            cx.describe(1),
            r - 2
        )));
    }
    let mut out = vec![x.shape.0[0].clone(), x.shape.0[1].clone()];
    out.extend(g.shape.0[1..r - 1].iter().cloned());
    Ok(vec![TensorType::new(x.dtype, Shape(out))])
}

fn affine_grid(cx: &Cx) -> Result<Vec<TensorType>> {
    let theta = cx.ty(0)?;
    let size = cx.req_ints(1)?;
    if !(size.len() == 4 || size.len() == 5) || size.iter().any(|&v| v < 0) {
        return Err(cx.bad_operand(
            1,
            &format!("is {size:?}; expected [N, C, H, W] or [N, C, D, H, W]"),
        ));
    }
    let sd = size.len() - 2;
    let mut out = vec![fixed(size[0])];
    out.extend(size[2..].iter().map(|&v| fixed(v)));
    out.push(Dim::Fixed(sd as u64));
    Ok(vec![TensorType::new(theta.dtype, Shape(out))])
}
