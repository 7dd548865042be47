//! Inference for the linear-attention and quantized ops added last: LinearAttention,
//! CausalConvWithState, QLinearMatMul, TensorScatter, DeformConv,
//! RoiAlign, QLinearConv.
//!
//! [`infer`] answers `None` for ops that are not this file's, so the dispatcher can try it
//! before the per-family files.

use super::{Cx, Result};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::Op;
use crate::shape::{Dim, Shape};

pub(super) fn infer(cx: &Cx) -> Option<Result<Vec<TensorType>>> {
    Some(match cx.op() {
        Op::LinearAttention => linear_attention(cx),
        Op::CausalConvWithState => causal_conv(cx),
        Op::QLinearMatMul => qlinear_matmul(cx),
        Op::TensorScatter => tensor_scatter(cx),
        Op::DeformConv => deform_conv(cx),
        Op::RoiAlign => roi_align(cx),
        Op::QLinearConv => qlinear_conv(cx),
        _ => return None,
    })
}

/// `a / n` for a packed `heads * head_dim` dim.
fn per_head(cx: &Cx, d: &Dim, n: i64, k: usize, axis: usize) -> Result<Dim> {
    match d {
        Dim::Fixed(x) if n > 0 && x % (n as u64) == 0 => Ok(Dim::Fixed(x / n as u64)),
        Dim::Fixed(x) => {
            Err(cx.shape_err(format!("packed dim {x} is not a multiple of {n} heads")))
        }
        Dim::Sym(_) => Ok(cx.fresh(k, axis)),
    }
}

fn linear_attention(cx: &Cx) -> Result<Vec<TensorType>> {
    let q = cx.ty(0)?;
    let k = cx.ty(1)?;
    let v = cx.ty(2)?;
    if !q.dtype.is_float() {
        return Err(cx.dtype_err(
            q.dtype,
            format!("{}, which must be a float tensor", cx.describe(0)),
        ));
    }
    if q.shape.rank() != 3 || k.shape.rank() != 3 || v.shape.rank() != 3 {
        return Err(cx.shape_err("query, key and value must be rank 3 (B, T, H*D)"));
    }
    let hq = cx.attr_int("q_num_heads", 0)?;
    let hkv = cx.attr_int("kv_num_heads", 0)?;
    if hq <= 0 || hkv <= 0 || hq % hkv != 0 {
        return Err(cx.bad_attr(
            "q_num_heads",
            format!("must be a positive multiple of kv_num_heads ({hq} vs {hkv})"),
        ));
    }
    let rule = cx.attr_str("update_rule")?.unwrap_or("gated_delta");
    if !matches!(rule, "linear" | "gated" | "delta" | "gated_delta") {
        return Err(cx.bad_attr(
            "update_rule",
            format!("`{rule}` is not linear, gated, delta or gated_delta"),
        ));
    }
    let dk = per_head(cx, &q.shape.0[2], hq, 0, 2)?;
    let dv = per_head(cx, &v.shape.0[2], hkv, 2, 2)?;
    let (b, t) = (q.shape.0[0].clone(), q.shape.0[1].clone());
    let out = TensorType::new(
        q.dtype,
        Shape(vec![
            b.clone(),
            t,
            super::dim_mul(&Dim::Fixed(hq as u64), &dv),
        ]),
    );
    let state_dt = cx.opt_ty(3)?.map(|p| p.dtype).unwrap_or(q.dtype);
    let state = TensorType::new(state_dt, Shape(vec![b, Dim::Fixed(hkv as u64), dk, dv]));
    Ok(vec![out, state])
}

fn causal_conv(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let w = cx.ty(1)?;
    if !x.dtype.is_float() {
        return Err(cx.dtype_err(
            x.dtype,
            format!("{}, which must be a float tensor", cx.describe(0)),
        ));
    }
    if x.shape.rank() != 3 || w.shape.rank() != 3 {
        return Err(cx.shape_err("input and weight must be rank 3"));
    }
    let carry = match &w.shape.0[2] {
        Dim::Fixed(0) => return Err(cx.shape_err("the kernel size must be at least 1")),
        Dim::Fixed(k) => Dim::Fixed(k - 1),
        Dim::Sym(_) => cx.fresh(1, 2),
    };
    let state = TensorType::new(
        x.dtype,
        Shape(vec![x.shape.0[0].clone(), x.shape.0[1].clone(), carry]),
    );
    Ok(vec![x.clone(), state])
}

/// 8-bit integer operands of the quantized ops.
fn int8_input<'a>(cx: &Cx<'a>, i: usize) -> Result<&'a TensorType> {
    let t = cx.ty(i)?;
    if !matches!(t.dtype, DType::I8 | DType::U8) {
        return Err(cx.dtype_err(
            t.dtype,
            format!("{}, which must be int8 or uint8", cx.describe(i)),
        ));
    }
    Ok(t)
}

fn qlinear_matmul(cx: &Cx) -> Result<Vec<TensorType>> {
    let a = int8_input(cx, 0)?;
    let b = int8_input(cx, 3)?;
    let (ar, br) = (a.shape.rank(), b.shape.rank());
    if ar < 2 || br < 2 {
        return Err(cx.shape_err("a and b must have rank 2 or more"));
    }
    let (ka, kb) = (&a.shape.0[ar - 1], &b.shape.0[br - 2]);
    if let (Dim::Fixed(x), Dim::Fixed(y)) = (ka, kb) {
        if x != y {
            return Err(cx.shape_err(format!("inner dimensions differ: {x} and {y}")));
        }
    }
    let batch = super::broadcast_pair(
        &Shape(a.shape.0[..ar - 2].to_vec()),
        &Shape(b.shape.0[..br - 2].to_vec()),
    )
    .map_err(|(x, y)| cx.shape_err(format!("batch dims {x} and {y} do not broadcast")))?;
    let mut out = batch.0;
    out.push(a.shape.0[ar - 2].clone());
    out.push(b.shape.0[br - 1].clone());
    let dt = match cx.opt_ty(7)? {
        Some(z) => z.dtype,
        None => a.dtype,
    };
    Ok(vec![TensorType::new(dt, Shape(out))])
}

fn tensor_scatter(cx: &Cx) -> Result<Vec<TensorType>> {
    let past = cx.ty(0)?;
    let upd = cx.ty(1)?;
    if upd.dtype != past.dtype || upd.shape.rank() != past.shape.rank() {
        return Err(cx.shape_err(format!(
            "{} must have the dtype and rank of {}",
            cx.describe(1),
            cx.describe(0)
        )));
    }
    Ok(vec![past.clone()])
}

/// A per-spatial-dim attribute list, `n` long, defaulting to `dflt` everywhere.
fn spatial_list(cx: &Cx, name: &str, n: usize, dflt: i64) -> Result<Vec<i64>> {
    match cx.attr_ints(name)? {
        Some(v) if v.len() == n => Ok(v),
        Some(v) => Err(cx.bad_attr(name, format!("has {} values, expected {n}", v.len()))),
        None => Ok(vec![dflt; n]),
    }
}

fn deform_conv(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let w = cx.ty(1)?;
    if !x.dtype.is_float() {
        return Err(cx.dtype_err(
            x.dtype,
            format!("{}, which must be a float tensor", cx.describe(0)),
        ));
    }
    let r = x.shape.rank();
    if r < 3 || w.shape.rank() != r {
        return Err(cx.shape_err("X and W must have the same rank, at least 3"));
    }
    let n = r - 2;
    let kernel = match cx.attr_ints("kernel_shape")? {
        Some(k) if k.len() == n => k,
        Some(k) => {
            return Err(cx.bad_attr(
                "kernel_shape",
                format!("has {} values for {n} spatial dims", k.len()),
            ))
        }
        None => {
            let mut k = Vec::new();
            for (i, d) in w.shape.0[2..].iter().enumerate() {
                match d {
                    Dim::Fixed(v) => k.push(*v as i64),
                    _ => return Err(cx.symbolic(&format!("kernel dim {i}"), d)),
                }
            }
            k
        }
    };
    let st = spatial_list(cx, "strides", n, 1)?;
    let dil = spatial_list(cx, "dilations", n, 1)?;
    let pads = spatial_list(cx, "pads", 2 * n, 0)?;
    let mut out = vec![x.shape.0[0].clone(), w.shape.0[0].clone()];
    for i in 0..n {
        let Dim::Fixed(xi) = x.shape.0[i + 2] else {
            out.push(cx.fresh(0, i + 2));
            continue;
        };
        if st[i] < 1 || dil[i] < 1 || kernel[i] < 1 {
            return Err(cx.bad_attr(
                "strides",
                "strides, dilations and kernel dims must be positive",
            ));
        }
        let span = (kernel[i] as i128 - 1) * dil[i] as i128 + 1;
        let o = (xi as i128 + pads[i] as i128 + pads[i + n] as i128 - span)
            .div_euclid(st[i] as i128)
            + 1;
        if o < 0 {
            return Err(cx.shape_err(format!(
                "spatial dim {i} of the result would be negative ({o})"
            )));
        }
        out.push(Dim::Fixed(o.min(u64::MAX as i128) as u64));
    }
    Ok(vec![TensorType::new(x.dtype, Shape(out))])
}

fn roi_align(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let rois = cx.ty(1)?;
    if !x.dtype.is_float() {
        return Err(cx.dtype_err(
            x.dtype,
            format!("{}, which must be a float tensor", cx.describe(0)),
        ));
    }
    if x.shape.rank() != 4 || rois.shape.rank() != 2 {
        return Err(cx.shape_err("X must be [N, C, H, W] and rois [R, 4]"));
    }
    let oh = cx.attr_int("output_height", 1)?;
    let ow = cx.attr_int("output_width", 1)?;
    if oh < 1 || ow < 1 {
        return Err(cx.bad_attr("output_height", "output sizes must be positive"));
    }
    let out = vec![
        rois.shape.0[0].clone(),
        x.shape.0[1].clone(),
        Dim::Fixed(oh as u64),
        Dim::Fixed(ow as u64),
    ];
    Ok(vec![TensorType::new(x.dtype, Shape(out))])
}

fn qlinear_conv(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = int8_input(cx, 0)?;
    let w = int8_input(cx, 3)?;
    let r = x.shape.rank();
    if r < 3 || w.shape.rank() != r {
        return Err(cx.shape_err("x and w must have the same rank, at least 3"));
    }
    let n = r - 2;
    let mut kernel = Vec::new();
    for (i, d) in w.shape.0[2..].iter().enumerate() {
        match d {
            Dim::Fixed(v) => kernel.push(*v as i64),
            _ => return Err(cx.symbolic(&format!("kernel dim {i}"), d)),
        }
    }
    if let Some(k) = cx.attr_ints("kernel_shape")? {
        if k != kernel {
            return Err(cx.bad_attr("kernel_shape", format!("{k:?} differs from W's {kernel:?}")));
        }
    }
    let st = spatial_list(cx, "strides", n, 1)?;
    let dil = spatial_list(cx, "dilations", n, 1)?;
    let pads = spatial_list(cx, "pads", 2 * n, 0)?;
    let auto_pad = cx.attr_str("auto_pad")?.unwrap_or("NOTSET");
    let mut out = vec![x.shape.0[0].clone(), w.shape.0[0].clone()];
    for i in 0..n {
        let Dim::Fixed(xi) = x.shape.0[i + 2] else {
            out.push(cx.fresh(0, i + 2));
            continue;
        };
        if st[i] < 1 || dil[i] < 1 {
            return Err(cx.bad_attr("strides", "strides and dilations must be positive"));
        }
        let (xi, s) = (xi as i128, st[i] as i128);
        let span = (kernel[i] as i128 - 1) * dil[i] as i128 + 1;
        let o = match auto_pad {
            "NOTSET" => (xi + pads[i] as i128 + pads[i + n] as i128 - span).div_euclid(s) + 1,
            "VALID" => (xi - span).div_euclid(s) + 1,
            "SAME_UPPER" | "SAME_LOWER" => (xi + s - 1) / s,
            a => {
                return Err(cx.bad_attr(
                    "auto_pad",
                    format!("`{a}` is not NOTSET, VALID, SAME_UPPER or SAME_LOWER"),
                ))
            }
        };
        if o < 0 {
            return Err(cx.shape_err(format!(
                "spatial dim {i} of the result would be negative ({o})"
            )));
        }
        out.push(Dim::Fixed(o.min(u64::MAX as i128) as u64));
    }
    let dt = cx.opt_ty(7)?.map(|z| z.dtype).unwrap_or(x.dtype);
    Ok(vec![TensorType::new(dt, Shape(out))])
}

#[cfg(test)]
mod tests {
    use crate::testutil::B;
    use crate::{Attr, Op};

    /// Infers result `k` of a one-node graph, or renders the error as `kind: message`.
    fn run(inputs: &[&str], op: Op, attrs: &[(&str, Attr)], k: usize, n_out: usize) -> String {
        let mut b = B::new();
        let ids: Vec<_> = inputs
            .iter()
            .enumerate()
            .map(|(j, t)| Some(b.input(&format!("x{j}"), t)))
            .collect();
        let outs = b.node(op, &ids, n_out, attrs);
        match b.infer(outs[k]) {
            Ok(t) => t,
            Err(e) => format!("{}: {e}", e.kind()),
        }
    }

    #[test]
    fn linear_attention_shapes() {
        let heads = [
            ("q_num_heads", Attr::Int(4)),
            ("kv_num_heads", Attr::Int(2)),
            ("update_rule", Attr::String("linear".into())),
        ];
        let ins = ["f16[2,3,32]", "f16[2,3,16]", "f16[2,3,12]"];
        assert_eq!(run(&ins, Op::LinearAttention, &heads, 0, 2), "f16[2,3,24]");
        assert_eq!(run(&ins, Op::LinearAttention, &heads, 1, 2), "f16[2,2,8,6]");
        let bad = [
            ("q_num_heads", Attr::Int(3)),
            ("kv_num_heads", Attr::Int(2)),
        ];
        assert!(run(&ins, Op::LinearAttention, &bad, 0, 1).contains("positive multiple"));
    }

    #[test]
    fn causal_conv_and_scatter_shapes() {
        assert_eq!(
            run(
                &["f32[2,4,7]", "f32[4,1,3]"],
                Op::CausalConvWithState,
                &[],
                1,
                2
            ),
            "f32[2,4,2]"
        );
        assert_eq!(
            run(
                &["f32[2,1,4,5]", "f32[2,1,1,5]", "i64[2]"],
                Op::TensorScatter,
                &[],
                0,
                1
            ),
            "f32[2,1,4,5]"
        );
    }

    #[test]
    fn quantized_and_sampling_shapes() {
        let qmm = [
            "u8[2,2,4]",
            "f32[1]",
            "u8[1]",
            "u8[2,4,3]",
            "f32[1]",
            "u8[1]",
            "f32[1]",
            "i8[1]",
        ];
        assert_eq!(run(&qmm, Op::QLinearMatMul, &[], 0, 1), "i8[2,2,3]");
        let qc = [
            "u8[1,1,7,7]",
            "f32[]",
            "u8[]",
            "u8[2,1,3,3]",
            "f32[1]",
            "u8[1]",
            "f32[]",
            "u8[]",
        ];
        assert_eq!(
            run(
                &qc,
                Op::QLinearConv,
                &[("pads", Attr::Ints(vec![1, 1, 1, 1]))],
                0,
                1
            ),
            "u8[1,2,7,7]"
        );
        let dc = ["f32[1,1,3,3]", "f32[1,1,2,2]", "f32[1,8,2,2]"];
        assert_eq!(run(&dc, Op::DeformConv, &[], 0, 1), "f32[1,1,2,2]");
        let ra = ["f32[1,2,10,10]", "f32[3,4]", "i64[3]"];
        assert_eq!(
            run(
                &ra,
                Op::RoiAlign,
                &[
                    ("output_height", Attr::Int(5)),
                    ("output_width", Attr::Int(4))
                ],
                0,
                1
            ),
            "f32[3,2,5,4]"
        );
    }
}
