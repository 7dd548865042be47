//! Lowering of QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear. One section per op.
//!
//! Quantize and dequantize are elementwise kernels built on the shared skeleton; what is
//! particular to them is how the scale and zero point are indexed: one value for the whole
//! tensor, one per slice along `axis`, or one per block of `block_size` elements along
//! `axis`. Arithmetic runs in f32 (f64 where an operand is f64 or int32, so the quotient is
//! exact enough), with ONNX's round-half-to-even and saturation to the output range.

use crate::util::{emit_elementwise, konst_like, strides, EwOperand};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op, ValueId};
use tessera_kir::{Access, CastMode, CmpOp, Execution, KernelBuilder, Ty, UnOp, Val};

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    match node.op {
        Op::QuantizeLinear => quantize(cx, node),
        Op::DequantizeLinear => dequantize(cx, node),
        Op::DynamicQuantizeLinear => dynamic_quantize(cx, node),
        op => Err(cx.unsupported(format!("no quantization lowering for {op}"))),
    }
}

// ==== Shared: scale and zero-point layouts ====

/// How the scale (or zero point) `p` of a (de)quantization of a tensor of `x_dims` is read:
/// per tensor, per axis, or blocked, from its shape and the node's `axis`/`block_size`.
fn param_operand(cx: &mut LowerCx, node: &Node, p: ValueId, x_dims: &[u64]) -> Result<EwOperand> {
    let p_dims = cx.dims(p)?;
    let dtype = cx.dtype(p)?;
    let len: u64 = p_dims.iter().product();
    let rank = x_dims.len();
    let buffer = cx.buffer(p)?;
    let name = cx.graph.value(p).name.clone();
    let block = node.attr_int("block_size", 0);
    if len == 1 && p_dims.len() <= 1 {
        return Ok(EwOperand::scalar(buffer, dtype, len, rank));
    }
    let axis = node.attr_int("axis", 1);
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(cx.invalid(format!("axis {axis} is out of range for rank {rank}")));
    }
    let axis = if axis < 0 { axis + r } else { axis } as usize;
    if block > 0 {
        // Blocked: same rank as x, the axis shrunk to ceil(len / block_size).
        let want: Vec<u64> = x_dims
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                if i == axis {
                    d.div_ceil(block as u64)
                } else {
                    d
                }
            })
            .collect();
        if p_dims != want {
            return Err(cx.invalid(format!(
                "`{name}` has shape {p_dims:?}; blocked quantization with block_size {block} along axis {axis} needs {want:?}"
            )));
        }
        return Ok(EwOperand {
            buffer,
            dtype,
            len,
            strides: strides(&p_dims),
            block: Some((axis, block as u64)),
        });
    }
    if p_dims.len() != 1 || p_dims[0] != x_dims[axis] {
        return Err(cx.invalid(format!(
            "`{name}` has shape {p_dims:?}; per-axis quantization along axis {axis} needs [{}]",
            x_dims[axis]
        )));
    }
    let mut st = vec![0u64; rank];
    st[axis] = 1;
    Ok(EwOperand {
        buffer,
        dtype,
        len,
        strides: st,
        block: None,
    })
}

/// The representable range of an int dtype, for saturation.
fn int_bounds(d: DType) -> (f64, f64) {
    // Computed in f64 so 64-bit types do not overflow the shift.
    let bits = d.bits() as i32;
    if d.is_unsigned_int() {
        (0.0, 2f64.powi(bits) - 1.0)
    } else {
        let h = 2f64.powi(bits - 1);
        (-h, h - 1.0)
    }
}

// ==== QuantizeLinear ====

fn quantize(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = node
        .input(0)
        .ok_or_else(|| cx.invalid("operand x is missing"))?;
    let scale = node
        .input(1)
        .ok_or_else(|| cx.invalid("operand y_scale is missing"))?;
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("no output"))?;
    let x_dims = cx.dims(x)?;
    let x_dt = cx.dtype(x)?;
    let s_dt = cx.dtype(scale)?;
    let out_dt = cx.dtype(y)?;
    if cx.dims(y)? != x_dims {
        return Err(cx.invalid("output shape differs from the input's"));
    }
    if !(out_dt.is_int() || (out_dt.is_float() && out_dt.bits() <= 8)) {
        return Err(cx.unsupported(format!("QuantizeLinear to {out_dt}")));
    }
    let mut operands = vec![
        EwOperand::broadcast(cx, x, &x_dims)?,
        param_operand(cx, node, scale, &x_dims)?,
    ];
    let zp = node.input(2);
    if let Some(z) = zp {
        if cx.dtype(z)? != out_dt {
            return Err(cx.invalid(format!(
                "zero point dtype {} differs from the output's {out_dt}",
                cx.dtype(z)?
            )));
        }
        operands.push(param_operand(cx, node, z, &x_dims)?);
    }
    let ct = if x_dt == DType::F64 || s_dt == DType::F64 || x_dt == DType::I32 {
        DType::F64
    } else {
        DType::F32
    };
    let saturate = node.attr_int("saturate", 1) != 0;
    let yb = cx.buffer(y)?;
    let has_zp = zp.is_some();
    let mode = CastMode { saturate: false };
    let body = move |b: &mut KernelBuilder, v: &[Val]| -> Val {
        let xv = b.cast(v[0], ct, mode);
        let sv = b.cast(v[1], ct, mode);
        let q = b.div(xv, sv);
        if out_dt.is_float() {
            // float8/float4: no rounding step; the cast rounds (and saturates if asked).
            let q = if has_zp {
                let z = b.cast(v[2], ct, mode);
                b.add(q, z)
            } else {
                q
            };
            return b.cast(q, out_dt, CastMode { saturate });
        }
        let q = b.unary(UnOp::Round, q);
        let q = if has_zp {
            let z = b.cast(v[2], ct, mode);
            b.add(q, z)
        } else {
            q
        };
        let (lo, hi) = int_bounds(out_dt);
        let lo = konst_like(b, q, lo);
        let hi = konst_like(b, q, hi);
        let q = b.max(q, lo);
        b.min(q, hi)
    };
    emit_elementwise(cx, "quantizelinear", &operands, yb, out_dt, &x_dims, &body)?;
    Ok(Execution::Kernel)
}

// ==== DequantizeLinear ====

fn dequantize(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = node
        .input(0)
        .ok_or_else(|| cx.invalid("operand x is missing"))?;
    let scale = node
        .input(1)
        .ok_or_else(|| cx.invalid("operand x_scale is missing"))?;
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("no output"))?;
    let x_dims = cx.dims(x)?;
    let x_dt = cx.dtype(x)?;
    let s_dt = cx.dtype(scale)?;
    let out_dt = cx.dtype(y)?;
    if cx.dims(y)? != x_dims {
        return Err(cx.invalid("output shape differs from the input's"));
    }
    if !out_dt.is_float() || !s_dt.is_float() {
        return Err(cx.unsupported(format!("DequantizeLinear with scale {s_dt} to {out_dt}")));
    }
    let mut operands = vec![
        EwOperand::broadcast(cx, x, &x_dims)?,
        param_operand(cx, node, scale, &x_dims)?,
    ];
    let zp = node.input(2);
    if let Some(z) = zp {
        if cx.dtype(z)? != x_dt {
            return Err(cx.invalid(format!(
                "zero point dtype {} differs from the input's {x_dt}",
                cx.dtype(z)?
            )));
        }
        operands.push(param_operand(cx, node, z, &x_dims)?);
    }
    let ct = if s_dt == DType::F64 || out_dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let yb = cx.buffer(y)?;
    let has_zp = zp.is_some();
    let mode = CastMode { saturate: false };
    // y = (x - zero_point) * scale
    let body = move |b: &mut KernelBuilder, v: &[Val]| -> Val {
        let xv = b.cast(v[0], ct, mode);
        let d = if has_zp {
            let z = b.cast(v[2], ct, mode);
            b.sub(xv, z)
        } else {
            xv
        };
        let sv = b.cast(v[1], ct, mode);
        b.mul(d, sv)
    };
    emit_elementwise(
        cx,
        "dequantizelinear",
        &operands,
        yb,
        out_dt,
        &x_dims,
        &body,
    )?;
    Ok(Execution::Kernel)
}

// ==== DynamicQuantizeLinear ====

fn dynamic_quantize(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = node
        .input(0)
        .ok_or_else(|| cx.invalid("operand x is missing"))?;
    let (y, s, z) = match node.outputs[..] {
        [y, s, z] => (y, s, z),
        _ => return Err(cx.invalid("DynamicQuantizeLinear has three outputs")),
    };
    let x_dims = cx.dims(x)?;
    let x_dt = cx.dtype(x)?;
    if !x_dt.is_float()
        || cx.dtype(y)? != DType::U8
        || cx.dtype(s)? != x_dt
        || cx.dtype(z)? != DType::U8
    {
        return Err(cx.unsupported(format!(
            "DynamicQuantizeLinear on {x_dt} (x is a float, y and y_zero_point u8)"
        )));
    }
    if cx.numel(s)? != 1 || cx.numel(z)? != 1 || cx.dims(y)? != x_dims {
        return Err(cx.invalid("output shapes do not match DynamicQuantizeLinear's"));
    }
    let n: u64 = x_dims.iter().product();
    let xb = cx.buffer(x)?;
    let yb = cx.buffer(y)?;
    let sb = cx.buffer(s)?;
    let zb = cx.buffer(z)?;

    // Kernel 1, one instance: the range of x widened to include 0, then
    // scale = (max - min) / 255 and zero_point = saturate(round(-min / scale)).
    let name = cx.kernel_name("dynamicquantizelinear_range");
    let mut b = KernelBuilder::new(name);
    let xin = b.param("x", x_dt, n, Access::Read);
    let sout = b.param("y_scale", x_dt, 1, Access::Write);
    let zout = b.param("y_zero_point", DType::U8, 1, Access::Write);
    let f = Ty::F32;
    let zero = b.const_float(f, 0.0);
    let mm = b.range_fold(0, n as i64, &[zero, zero], |b, i, acc| {
        let v = b.load(xin, i, 1);
        let v = b.cast(v, DType::F32, CastMode { saturate: false });
        vec![b.min(acc[0], v), b.max(acc[1], v)]
    });
    let (lo, hi) = (mm[0], mm[1]);
    let range = b.sub(hi, lo);
    let qmax = b.const_float(f, 255.0);
    let scale = b.div(range, qmax);
    let neg_lo = b.unary(UnOp::Neg, lo);
    let zq = b.div(neg_lo, scale);
    let zq = b.unary(UnOp::Round, zq);
    let zq = b.max(zq, zero);
    let zq = b.min(zq, qmax);
    // An all-zero input has scale 0; its zero point is 0 rather than 0/0.
    let is_zero = b.cmp(CmpOp::Eq, scale, zero);
    let zq = b.select(is_zero, zero, zq);
    let at = b.index(0);
    let scale_out = b.cast(scale, x_dt, CastMode { saturate: false });
    b.store(sout, at, scale_out);
    let zq = b.cast(zq, DType::U8, CastMode { saturate: false });
    b.store(zout, at, zq);
    b.set_grid(&[1]);
    cx.launch(b.finish(), vec![xb, sb, zb]);

    // Kernel 2, elementwise: y = saturate(round(x / scale) + zero_point).
    let rank = x_dims.len();
    let operands = [
        EwOperand::broadcast(cx, x, &x_dims)?,
        EwOperand::scalar(sb, x_dt, 1, rank),
        EwOperand::scalar(zb, DType::U8, 1, rank),
    ];
    let body = |b: &mut KernelBuilder, v: &[Val]| -> Val {
        let q = b.div(v[0], v[1]);
        let q = b.unary(UnOp::Round, q);
        let ct = b.ty(q).elem;
        let zp = b.cast(v[2], ct, CastMode { saturate: false });
        let q = b.add(q, zp);
        let lo = konst_like(b, q, 0.0);
        let hi = konst_like(b, q, 255.0);
        let q = b.max(q, lo);
        let q = b.min(q, hi);
        // A zero scale sends x / 0 to NaN or inf; NaN casts to 0.
        q
    };
    emit_elementwise(
        cx,
        "dynamicquantizelinear",
        &operands,
        yb,
        DType::U8,
        &x_dims,
        &body,
    )?;
    Ok(Execution::Kernel)
}
