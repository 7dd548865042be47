//! Inference for selections whose result size depends on the data: NonZero, Compress, Unique,
//! NonMaxSuppression. That size is a fresh symbolic dim; lowering gives such a result its
//! largest possible size and the runtime reports the size produced (see
//! `tessera_kir::HostOp`). Nothing is folded here: the inputs are run-time data.

use super::{dims_product, Cx, Result};
use crate::dtype::DType;
use crate::graph::{Attr, TensorType};
use crate::op::Op;
use crate::shape::{Dim, Shape};

pub(super) fn infer(cx: &Cx) -> Option<Result<Vec<TensorType>>> {
    Some(match cx.op() {
        Op::NonZero => nonzero(cx),
        Op::Compress => compress(cx),
        Op::Unique => unique(cx),
        Op::NonMaxSuppression => nms(cx),
        _ => return None,
    })
}

fn nonzero(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let rank = x.shape.rank().max(1) as u64;
    Ok(vec![TensorType::new(DType::I64, Shape(vec![Dim::Fixed(rank), cx.fresh(0, 1)]))])
}

/// The input's dims with the `axis` attribute's dim replaced by `count`, or `[count]` without
/// an axis (the flattened input).
fn along_axis(cx: &Cx, x: &TensorType, count: Dim) -> Result<Shape> {
    Ok(match cx.node.attr("axis") {
        None => Shape(vec![count]),
        Some(Attr::Int(a)) => {
            let a = cx.axis(*a, x.shape.rank(), "axis")?;
            let mut d = x.shape.0.clone();
            d[a] = count;
            Shape(d)
        }
        Some(_) => return Err(cx.bad_attr("axis", "must be an int")),
    })
}

fn compress(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let c = cx.ty(1)?;
    if c.dtype != DType::Bool || c.shape.rank() != 1 {
        return Err(cx.shape_err(format!("the condition must be a 1-D bool tensor, not {c}")));
    }
    Ok(vec![TensorType::new(x.dtype, along_axis(cx, x, cx.fresh(0, 0))?)])
}

fn unique(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let count = cx.fresh(0, 0);
    let y = TensorType::new(x.dtype, along_axis(cx, x, count.clone())?);
    let scanned = match cx.node.attr("axis") {
        Some(Attr::Int(a)) => x.shape.0[cx.axis(*a, x.shape.rank(), "axis")?].clone(),
        _ => dims_product(&x.shape.0),
    };
    let list = |d: Dim| TensorType::new(DType::I64, Shape(vec![d]));
    Ok(vec![y, list(count.clone()), list(scanned), list(count)])
}

fn nms(cx: &Cx) -> Result<Vec<TensorType>> {
    let b = cx.ty(0)?;
    let s = cx.ty(1)?;
    if b.shape.rank() != 3 || s.shape.rank() != 3 {
        return Err(cx.shape_err(format!("boxes must be [batch, boxes, 4] and scores [batch, classes, boxes], not {b} and {s}")));
    }
    Ok(vec![TensorType::new(DType::I64, Shape(vec![cx.fresh(0, 0), Dim::Fixed(3)]))])
}
