//! Inference for ops that produce constants and shapes: `Shape` (start/end), `Size`,
//! `Constant` (every `value*` attribute), `ConstantOfShape` and `Range`.

use super::{fixed, Cx, Result};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::Op;
use crate::shape::{Dim, Shape};

pub(super) fn infer(cx: &Cx) -> Result<Vec<TensorType>> {
    match cx.op() {
        Op::Shape => {
            let r = cx.ty(0)?.shape.rank();
            let (s, e) = shape_range(cx, r)?;
            Ok(vec![TensorType::new(
                DType::I64,
                Shape(vec![Dim::Fixed((e - s) as u64)]),
            )])
        }
        Op::Size => {
            cx.ty(0)?;
            Ok(vec![TensorType::new(DType::I64, Shape::default())])
        }
        Op::Constant => {
            let t = crate::fold::constant_value(cx.node)?;
            Ok(vec![TensorType::fixed(t.dtype, &t.dims)])
        }
        Op::ConstantOfShape => {
            let t = cx.ty(0)?;
            if t.shape.rank() != 1 {
                return Err(cx.shape_err(format!("{} must be 1-D", cx.describe(0))));
            }
            let dims = cx.req_ints(0)?;
            if dims.iter().any(|&d| d < 0) {
                return Err(cx.bad_operand(0, &format!("is {dims:?}; sizes must not be negative")));
            }
            let dtype = crate::fold::constant_of_shape_fill(cx.node)?.dtype;
            Ok(vec![TensorType::new(
                dtype,
                Shape(dims.iter().map(|&d| fixed(d)).collect()),
            )])
        }
        // Range.
        _ => {
            let dtype = cx.ty(0)?.dtype;
            for i in 0..3 {
                let t = cx.ty(i)?;
                if t.dtype != dtype {
                    return Err(cx.dtype_err(
                        t.dtype,
                        format!("{} (operand 0 is {dtype})", cx.describe(i)),
                    ));
                }
                if t.shape.num_elements() != Some(1) {
                    return Err(cx.shape_err(format!("{} must be a scalar", cx.describe(i))));
                }
            }
            if !(dtype.is_int() || dtype.is_float()) {
                return Err(cx.dtype_err(dtype, "operand 0 (`start`)"));
            }
            let n = range_count(cx)?;
            Ok(vec![TensorType::new(dtype, Shape(vec![Dim::Fixed(n)]))])
        }
    }
}

/// `Shape`'s `start`/`end` attributes, clamped to `0..=rank`.
pub(crate) fn shape_range(cx: &Cx, rank: usize) -> Result<(usize, usize)> {
    let r = rank as i64;
    let clamp = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
    let s = clamp(cx.attr_int("start", 0)?);
    let e = clamp(cx.attr_int("end", r)?);
    Ok((s, e.max(s)))
}

/// The element count of `Range`: `max(ceil((limit - start) / delta), 0)`, computed exactly
/// for integers and in f64 for floats.
pub(crate) fn range_count(cx: &Cx) -> Result<u64> {
    let dtype = cx.ty(0)?.dtype;
    let one = |i: usize| -> Result<f64> {
        match cx.floats(i)?.as_deref() {
            Some([v]) => Ok(*v),
            _ => Err(cx.bad_operand(i, "must hold exactly one value")),
        }
    };
    if dtype.is_int() {
        let one_i = |i: usize| -> Result<i128> { Ok(cx.req_scalar_int(i)? as i128) };
        let (s, l, d) = (one_i(0)?, one_i(1)?, one_i(2)?);
        if d == 0 {
            return Err(cx.bad_operand(2, "is 0"));
        }
        let num = l - s;
        let q = num / d
            + if num % d != 0 && ((num > 0) == (d > 0)) {
                1
            } else {
                0
            };
        return Ok(q.clamp(0, u64::MAX as i128) as u64);
    }
    let (s, l, d) = (one(0)?, one(1)?, one(2)?);
    if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
        return Err(cx.bad_operand(
            2,
            &format!("gives an undefined count (start {s}, limit {l}, delta {d})"),
        ));
    }
    let n = ((l - s) / d).ceil();
    Ok(if n <= 0.0 {
        0
    } else if n >= u64::MAX as f64 {
        u64::MAX
    } else {
        n as u64
    })
}
