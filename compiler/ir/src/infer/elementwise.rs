//! Inference for elementwise ops: numpy broadcasting of the operands, and the result dtype
//! (the operands' dtype, bool for comparisons and predicates, `to` for casts).

use super::{Cx, Result};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::Op;

pub(super) fn infer(cx: &Cx) -> Result<Vec<TensorType>> {
    use Op::*;
    let op = cx.op();
    let ty = match op {
        Add | Sub | Mul | Div | Mod | BitwiseAnd | BitwiseOr | BitwiseXor | BitShift | PRelu => {
            let a = same_dtype(cx, &[0, 1])?;
            if matches!(op, BitwiseAnd | BitwiseOr | BitwiseXor | BitShift) && !a.is_int() {
                return Err(cx.dtype_err(a, "operand 0 (`A`); bitwise ops need integers"));
            }
            if matches!(op, Add | Sub | Mul | Div | Mod | PRelu) && !a.is_numeric() {
                return Err(cx.dtype_err(a, "operand 0 (`A`)"));
            }
            TensorType::new(a, cx.broadcast(&[0, 1])?)
        }
        Pow => {
            // The exponent may have its own dtype; the result has the base's.
            let a = cx.ty(0)?.dtype;
            cx.ty(1)?;
            TensorType::new(a, cx.broadcast(&[0, 1])?)
        }
        And | Or | Xor => {
            let a = same_dtype(cx, &[0, 1])?;
            if a != DType::Bool {
                return Err(cx.dtype_err(a, "operand 0 (`A`); logical ops need bool"));
            }
            TensorType::new(DType::Bool, cx.broadcast(&[0, 1])?)
        }
        Equal | Less | LessOrEqual | Greater | GreaterOrEqual => {
            same_dtype(cx, &[0, 1])?;
            TensorType::new(DType::Bool, cx.broadcast(&[0, 1])?)
        }
        Where => {
            let c = cx.ty(0)?.dtype;
            if c != DType::Bool {
                return Err(cx.dtype_err(c, "operand 0 (`condition`), which must be bool"));
            }
            let x = same_dtype(cx, &[1, 2])?;
            TensorType::new(x, cx.broadcast(&[0, 1, 2])?)
        }
        Max | Min | Sum | Mean => {
            let all: Vec<usize> = (0..cx.n_inputs()).collect();
            let d = same_dtype(cx, &all)?;
            TensorType::new(d, cx.broadcast(&all)?)
        }
        Not => {
            let t = cx.ty(0)?;
            if t.dtype != DType::Bool {
                return Err(cx.dtype_err(t.dtype, "operand 0 (`X`), which must be bool"));
            }
            t.clone()
        }
        BitwiseNot => {
            let t = cx.ty(0)?;
            if !t.dtype.is_int() {
                return Err(cx.dtype_err(t.dtype, "operand 0 (`X`), which must be an integer"));
            }
            t.clone()
        }
        IsNaN | IsInf => {
            let t = cx.ty(0)?;
            TensorType::new(DType::Bool, t.shape.clone())
        }
        Clip => {
            let t = cx.ty(0)?;
            for i in 1..3 {
                if let Some(b) = cx.opt_ty(i)? {
                    if b.dtype != t.dtype {
                        return Err(cx.dtype_err(
                            b.dtype,
                            format!("{} (the input is {})", cx.describe(i), t.dtype),
                        ));
                    }
                    if b.shape.rank() > 1 || b.shape.num_elements().is_some_and(|n| n != 1) {
                        return Err(cx.shape_err(format!("{} must be a scalar", cx.describe(i))));
                    }
                }
            }
            t.clone()
        }
        Cast => {
            let t = cx.ty(0)?;
            let to = cx
                .attr_dtype("to")?
                .ok_or_else(|| cx.bad_attr("to", "is required"))?;
            TensorType::new(to, t.shape.clone())
        }
        CastLike => {
            let t = cx.ty(0)?;
            TensorType::new(cx.ty(1)?.dtype, t.shape.clone())
        }
        // Unary ops that keep their operand's type.
        _ => {
            let t = cx.ty(0)?;
            if t.dtype == DType::String {
                return Err(cx.dtype_err(t.dtype, "operand 0"));
            }
            t.clone()
        }
    };
    Ok(vec![ty])
}

/// Checks that the listed (present) operands share one dtype and returns it.
fn same_dtype(cx: &Cx, operands: &[usize]) -> Result<DType> {
    let mut first: Option<(usize, DType)> = None;
    for &i in operands {
        let Some(t) = cx.opt_ty(i)? else { continue };
        match first {
            None => first = Some((i, t.dtype)),
            Some((j, d)) if d != t.dtype => {
                return Err(cx.shape_err(format!(
                    "{} and {} must have the same dtype",
                    cx.describe(j),
                    cx.describe(i)
                )))
            }
            Some(_) => {}
        }
    }
    first
        .map(|(_, d)| d)
        .ok_or_else(|| cx.missing(operands.first().copied().unwrap_or(0)))
}
