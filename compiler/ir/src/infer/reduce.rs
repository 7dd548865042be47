//! Inference for reductions: `Reduce*` (axes operand, `keepdims`, `noop_with_empty_axes`),
//! `ArgMax`/`ArgMin`, `CumSum` and `TopK`.

use super::{fixed, Cx, Result};
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
    match cx.op() {
        ArgMax | ArgMin => {
            let keep = cx.attr_int("keepdims", 1)? != 0;
            let axis = if r == 0 {
                None
            } else {
                Some(cx.axis(cx.attr_int("axis", 0)?, r, "axis")?)
            };
            let axes: Vec<usize> = axis.into_iter().collect();
            Ok(vec![TensorType::new(
                DType::I64,
                reduced(&x.shape, &axes, keep),
            )])
        }
        CumSum => {
            if let Some(t) = cx.opt_ty(1)? {
                if !t.dtype.is_int() {
                    return Err(
                        cx.dtype_err(t.dtype, "operand 1 (`axis`), which must be an integer")
                    );
                }
            }
            Ok(vec![x.clone()])
        }
        TopK => {
            let k = cx.req_scalar_int(1)?;
            if r == 0 {
                return Err(cx.shape_err(format!("{} must not be a scalar", cx.describe(0))));
            }
            let axis = cx.axis(cx.attr_int("axis", -1)?, r, "axis")?;
            if k < 0 {
                return Err(cx.bad_operand(1, &format!("is {k}; K must not be negative")));
            }
            if let Dim::Fixed(d) = &x.shape.0[axis] {
                if k as u64 > *d {
                    return Err(cx.bad_operand(
                        1,
                        &format!("is {k}, more than the {d} elements along axis {axis}"),
                    ));
                }
            }
            let mut dims = x.shape.0.clone();
            dims[axis] = fixed(k);
            let s = Shape(dims);
            Ok(vec![
                TensorType::new(x.dtype, s.clone()),
                TensorType::new(DType::I64, s),
            ])
        }
        // Reduce*.
        _ => {
            let keep = cx.attr_int("keepdims", 1)? != 0;
            let noop = cx.attr_int("noop_with_empty_axes", 0)? != 0;
            let axes = cx.ints(1)?.unwrap_or_default();
            if axes.is_empty() {
                if noop {
                    return Ok(vec![x.clone()]);
                }
                let all: Vec<usize> = (0..r).collect();
                return Ok(vec![TensorType::new(
                    x.dtype,
                    reduced(&x.shape, &all, keep),
                )]);
            }
            let axes = cx.axes(&axes, r, "axis")?;
            Ok(vec![TensorType::new(
                x.dtype,
                reduced(&x.shape, &axes, keep),
            )])
        }
    }
}

/// `shape` with `axes` reduced: set to 1 with `keep`, else removed.
fn reduced(shape: &Shape, axes: &[usize], keep: bool) -> Shape {
    let mut out = Vec::with_capacity(shape.rank());
    for (i, d) in shape.0.iter().enumerate() {
        if axes.contains(&i) {
            if keep {
                out.push(Dim::Fixed(1));
            }
        } else {
            out.push(d.clone());
        }
    }
    Shape(out)
}
