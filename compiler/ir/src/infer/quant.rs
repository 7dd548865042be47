//! Inference for quantization: `QuantizeLinear` takes its result dtype from the zero point
//! (or `output_dtype`, else u8), `DequantizeLinear` from `output_dtype` or the scale.

use super::{Cx, Result};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::Op;
use crate::shape::Shape;

pub(super) fn infer(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    match cx.op() {
        Op::QuantizeLinear => {
            let scale = cx.ty(1)?;
            if !scale.dtype.is_float() {
                return Err(
                    cx.dtype_err(scale.dtype, "operand 1 (`y_scale`), which must be a float")
                );
            }
            let attr = cx.attr_dtype("output_dtype")?;
            let zp = cx.opt_ty(2)?.map(|t| t.dtype);
            let out = match (zp, attr) {
                (Some(z), Some(a)) if z != a => {
                    return Err(cx.bad_attr(
                        "output_dtype",
                        format!("is {a}, but operand 2 (`y_zero_point`) is {z}"),
                    ))
                }
                (Some(z), _) => z,
                (None, Some(a)) => a,
                (None, None) => DType::U8,
            };
            if out.is_float() && out.bits() > 8 || out == DType::String || out == DType::Bool {
                return Err(cx.dtype_err(out, "the quantized result"));
            }
            Ok(vec![TensorType::new(out, x.shape.clone())])
        }
        Op::DequantizeLinear => {
            let scale = cx.ty(1)?;
            if !scale.dtype.is_float() {
                return Err(
                    cx.dtype_err(scale.dtype, "operand 1 (`x_scale`), which must be a float")
                );
            }
            if let Some(zp) = cx.opt_ty(2)? {
                if zp.dtype != x.dtype {
                    return Err(cx.dtype_err(
                        zp.dtype,
                        format!("{} (operand 0 is {})", cx.describe(2), x.dtype),
                    ));
                }
            }
            let out = cx.attr_dtype("output_dtype")?.unwrap_or(scale.dtype);
            Ok(vec![TensorType::new(out, x.shape.clone())])
        }
        // DynamicQuantizeLinear: y, y_scale, y_zero_point.
        _ => Ok(vec![
            TensorType::new(DType::U8, x.shape.clone()),
            TensorType::new(DType::F32, Shape::default()),
            TensorType::new(DType::U8, Shape::default()),
        ]),
    }
}
