//! Inference for the random ops: RandomUniform and RandomNormal (shape and dtype from
//! attributes), RandomUniformLike and RandomNormalLike (the input's shape; its dtype unless
//! `dtype` says otherwise), Bernoulli (likewise) and Multinomial (`[batch, sample_size]` of
//! i32 or i64).
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
        RandomUniform | RandomNormal => from_attrs(cx),
        RandomUniformLike | RandomNormalLike | Bernoulli => like(cx),
        Multinomial => multinomial(cx),
        _ => return None,
    })
}

fn float_result(cx: &Cx, dt: DType) -> Result<DType> {
    if dt.is_float() {
        Ok(dt)
    } else {
        Err(cx.dtype_err(dt, "the result, which must be a float type"))
    }
}

fn from_attrs(cx: &Cx) -> Result<Vec<TensorType>> {
    let dt = float_result(cx, cx.attr_dtype("dtype")?.unwrap_or(DType::F32))?;
    let Some(shape) = cx.attr_ints("shape")? else {
        return Err(cx.shape_err("the `shape` attribute is required"));
    };
    if let Some(d) = shape.iter().find(|&&d| d < 0) {
        return Err(cx.shape_err(format!("`shape` has a negative dimension {d}")));
    }
    Ok(vec![TensorType::new(
        dt,
        Shape(shape.iter().map(|&d| fixed(d)).collect()),
    )])
}

fn like(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    if cx.op() == Op::Bernoulli && !x.dtype.is_float() {
        return Err(cx.dtype_err(
            x.dtype,
            format!("{}, which must hold float probabilities", cx.describe(0)),
        ));
    }
    let dt = cx.attr_dtype("dtype")?.unwrap_or(x.dtype);
    let dt = if cx.op() == Op::Bernoulli {
        dt
    } else {
        float_result(cx, dt)?
    };
    Ok(vec![TensorType::new(dt, x.shape.clone())])
}

fn multinomial(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    if !x.dtype.is_float() {
        return Err(cx.dtype_err(
            x.dtype,
            format!(
                "{}, which must hold float log-probabilities",
                cx.describe(0)
            ),
        ));
    }
    if x.shape.0.len() != 2 {
        return Err(cx.shape_err(format!("{} must be [batch, classes]", cx.describe(0))));
    }
    let dt = cx.attr_dtype("dtype")?.unwrap_or(DType::I32);
    if !matches!(dt, DType::I32 | DType::I64) {
        return Err(cx.dtype_err(dt, "the result, which must be i32 or i64"));
    }
    let n = cx.attr_int("sample_size", 1)?;
    if n < 1 {
        return Err(cx.shape_err(format!("sample_size {n} must be positive")));
    }
    let batch: Dim = x.shape.0[0].clone();
    Ok(vec![TensorType::new(dt, Shape(vec![batch, fixed(n)]))])
}
