//! Lowering of elementwise ops: arithmetic, logic, comparisons, activations, casts. One section per op.
//!
//! Every op here is one launch of the shared skeleton [`emit_elementwise`]: the op contributes
//! only a *body*, a function from the loaded operands (narrow floats already widened to f32)
//! to the result. Operands broadcast against the output with numpy rules. Bodies are written
//! lane-generically (selects, not branches; constants through [`konst_like`]) so the skeleton
//! can run them on vectors.

use crate::util::{compute_dtype, emit_elementwise, konst_like, EwOperand};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op, ValueId};
use tessera_kir::{BinOp, CastMode, CmpOp, Execution, KernelBuilder, MathFn, UnOp, Val};

type Body = Box<dyn Fn(&mut KernelBuilder, &[Val]) -> Val>;

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    use Op::*;
    let op = node.op;
    let body: Body = match op {
        Add | Sub | Mul | Div | Pow | Mod | BitShift | BitwiseAnd | BitwiseOr | BitwiseXor
        | And | Or | Xor => binary(cx, node)?,
        Equal | Less | LessOrEqual | Greater | GreaterOrEqual => compare(op),
        Max | Min | Sum | Mean => variadic(cx, node)?,
        Where => Box::new(|b, v| b.select(v[0], v[1], v[2])),
        PRelu => Box::new(|b, v| {
            let zero = konst_like(b, v[0], 0.0);
            let neg = b.cmp(CmpOp::Lt, v[0], zero);
            let scaled = b.mul(v[0], v[1]);
            b.select(neg, scaled, v[0])
        }),
        Clip => clip(node),
        Cast | CastLike => cast(cx, node)?,
        _ => unary(cx, node)?,
    };
    // CastLike's second operand only names the target type; it is not read.
    let inputs: Vec<ValueId> = if op == CastLike {
        node.input(0).into_iter().collect()
    } else {
        node.inputs.iter().flatten().copied().collect()
    };
    map(cx, node, &inputs, body)
}

/// Lowers `node` as one elementwise kernel over `inputs`, each broadcast to output 0.
fn map(cx: &mut LowerCx, node: &Node, inputs: &[ValueId], body: Body) -> Result<Execution> {
    let out = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("no output"))?;
    let out_dims = cx.dims(out)?;
    let out_dtype = cx.dtype(out)?;
    let mut operands = Vec::new();
    for &v in inputs {
        operands.push(EwOperand::broadcast(cx, v, &out_dims)?);
    }
    if operands.is_empty() {
        return Err(cx.invalid("no operands"));
    }
    let out_buf = cx.buffer(out)?;
    let name = node.op.name().to_ascii_lowercase();
    emit_elementwise(cx, &name, &operands, out_buf, out_dtype, &out_dims, &*body)?;
    Ok(Execution::Kernel)
}

fn input_dtype(cx: &LowerCx, node: &Node, i: usize) -> Result<DType> {
    let v = node
        .input(i)
        .ok_or_else(|| cx.invalid(format!("operand {i} is missing")))?;
    cx.dtype(v)
}

fn require_float(cx: &LowerCx, node: &Node) -> Result<()> {
    let d = input_dtype(cx, node, 0)?;
    if d.is_float() {
        Ok(())
    } else {
        Err(cx.unsupported(format!("{} on {d} (only float types are defined)", node.op)))
    }
}

// ==== Add Sub Mul Div Pow Mod, bitwise and logical binary ops ====

fn binary(cx: &LowerCx, node: &Node) -> Result<Body> {
    use Op::*;
    let a_dt = input_dtype(cx, node, 0)?;
    let b_dt = input_dtype(cx, node, 1)?;
    if node.op != Pow && a_dt != b_dt {
        return Err(cx.invalid(format!("operands have different dtypes {a_dt} and {b_dt}")));
    }
    let simple = |op: BinOp| -> Body { Box::new(move |b, v| b.binary(op, v[0], v[1])) };
    Ok(match node.op {
        Add => simple(BinOp::Add),
        Sub => simple(BinOp::Sub),
        Mul => simple(BinOp::Mul),
        // Kernel-IR int division truncates toward zero, as ONNX's reference (true division,
        // then a cast back to the int type) does.
        Div => simple(BinOp::Div),
        And | BitwiseAnd => simple(BinOp::And),
        Or | BitwiseOr => simple(BinOp::Or),
        Xor | BitwiseXor => simple(BinOp::Xor),
        Mod => {
            let fmod = node.attr_int("fmod", 0) != 0;
            if fmod {
                // C fmod / truncating remainder: the sign of the dividend.
                simple(BinOp::Rem)
            } else {
                // Python/numpy mod: the sign of the divisor. Fix up a truncating remainder
                // whose sign differs from the divisor's by adding the divisor once.
                Box::new(|b, v| {
                    let r = b.binary(BinOp::Rem, v[0], v[1]);
                    let zero = konst_like(b, r, 0.0);
                    let nonzero = b.cmp(CmpOp::Ne, r, zero);
                    let r_neg = b.cmp(CmpOp::Lt, r, zero);
                    let d_neg = b.cmp(CmpOp::Lt, v[1], zero);
                    let differ = b.binary(BinOp::Xor, r_neg, d_neg);
                    let fix = b.binary(BinOp::And, nonzero, differ);
                    let adjusted = b.add(r, v[1]);
                    b.select(fix, adjusted, r)
                })
            }
        }
        Pow => {
            // The result has the base's dtype; the exponent may be any numeric type. An int
            // base is raised in f64 and truncated back, like the reference's numpy power.
            let base_compute = compute_dtype(a_dt);
            let via = if a_dt.is_float() {
                base_compute
            } else {
                DType::F64
            };
            Box::new(move |b, v| {
                let x = b.cast(v[0], via, CastMode { saturate: false });
                let y = b.cast(v[1], via, CastMode { saturate: false });
                b.math(MathFn::Pow, &[x, y])
            })
        }
        BitShift => {
            let left = match node.attr_str("direction") {
                Some("LEFT") => true,
                Some("RIGHT") => false,
                other => {
                    return Err(cx.invalid(format!(
                        "BitShift direction must be LEFT or RIGHT, got {other:?}"
                    )))
                }
            };
            let bits = a_dt.bits();
            let signed = a_dt.is_signed_int();
            // Kernel IR takes the shift amount modulo the width. ONNX instead shifts every bit
            // out for a negative amount or one of the width or more: the result is what sign
            // extension alone gives, -1 for a right shift of a negative signed value, else 0.
            Box::new(move |b, v| {
                let shifted = b.binary(if left { BinOp::Shl } else { BinOp::Shr }, v[0], v[1]);
                let w = konst_like(b, v[1], bits as f64);
                let zero_amt = konst_like(b, v[1], 0.0);
                let too_far = b.cmp(CmpOp::Ge, v[1], w);
                let negative = b.cmp(CmpOp::Lt, v[1], zero_amt);
                let out_of_range = b.binary(BinOp::Or, too_far, negative);
                let zero = konst_like(b, v[0], 0.0);
                let fill = if signed && !left {
                    let minus_one = konst_like(b, v[0], -1.0);
                    let neg_x = b.cmp(CmpOp::Lt, v[0], zero);
                    b.select(neg_x, minus_one, zero)
                } else {
                    zero
                };
                b.select(out_of_range, fill, shifted)
            })
        }
        op => return Err(cx.unsupported(format!("{op} is not a binary op"))),
    })
}

// ==== Equal Less LessOrEqual Greater GreaterOrEqual ====

fn compare(op: Op) -> Body {
    let c = match op {
        Op::Equal => CmpOp::Eq,
        Op::Less => CmpOp::Lt,
        Op::LessOrEqual => CmpOp::Le,
        Op::Greater => CmpOp::Gt,
        _ => CmpOp::Ge,
    };
    Box::new(move |b, v| b.cmp(c, v[0], v[1]))
}

// ==== Max Min Sum Mean (variadic) ====

fn variadic(cx: &LowerCx, node: &Node) -> Result<Body> {
    let n = node.inputs.iter().flatten().count();
    let d0 = input_dtype(cx, node, 0)?;
    for i in 0..node.inputs.len() {
        if node.input(i).is_some() && input_dtype(cx, node, i)? != d0 {
            return Err(cx.invalid("operands have different dtypes"));
        }
    }
    // Float max/min in kernel IR propagate NaN, as numpy's maximum/minimum do.
    let op = match node.op {
        Op::Max => BinOp::Max,
        Op::Min => BinOp::Min,
        _ => BinOp::Add,
    };
    let mean = node.op == Op::Mean;
    Ok(Box::new(move |b, v| {
        let mut acc = v[0];
        for &x in &v[1..] {
            acc = b.binary(op, acc, x);
        }
        if mean {
            let count = konst_like(b, acc, n as f64);
            acc = b.div(acc, count);
        }
        acc
    }))
}

// ==== Clip ====

fn clip(node: &Node) -> Body {
    // Absent bounds are absent operands; the present ones follow `input` in order.
    let has_min = node.input(1).is_some();
    let has_max = node.input(2).is_some();
    Box::new(move |b, v| {
        let mut x = v[0];
        let mut next = 1;
        if has_min {
            x = b.max(x, v[next]);
            next += 1;
        }
        if has_max {
            x = b.min(x, v[next]);
        }
        x
    })
}

// ==== Cast CastLike ====

fn cast(cx: &LowerCx, node: &Node) -> Result<Body> {
    let from = input_dtype(cx, node, 0)?;
    // The result's inferred dtype: inference read `to` (an ONNX code or a dtype name).
    let out = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("Cast has no result"))?;
    let to = cx.dtype(out)?;
    if from == DType::String || to == DType::String {
        return Err(cx.unsupported(format!(
            "Cast from {from} to {to}: string casts have no kernel lowering"
        )));
    }
    let out = node
        .outputs
        .first()
        .copied()
        .ok_or_else(|| cx.invalid("no output"))?;
    if cx.dtype(out)? != to {
        return Err(cx.invalid(format!(
            "output dtype {} differs from the cast's target {to}",
            cx.dtype(out)?
        )));
    }
    // saturate only matters for float8 targets; ONNX's default is 1.
    let mode = CastMode {
        saturate: node.attr_int("saturate", 1) != 0,
    };
    // ONNX casts floats to the sub-byte ints by converting to an integer and keeping the low
    // bits (-9 becomes 7 in int4), not by saturating as kernel IR's float->int cast does; so
    // go through i64 and let the int->int cast wrap.
    if from.is_float() && to.is_int() && to.is_sub_byte() {
        return Ok(Box::new(move |b, v| {
            let wide = b.cast(v[0], DType::I64, mode);
            b.cast(wide, to, mode)
        }));
    }
    // The skeleton widens narrow floats to f32 first, which is exact, so one rounding remains.
    Ok(Box::new(move |b, v| b.cast(v[0], to, mode)))
}

// ==== Unary arithmetic, math and activations ====

fn unary(cx: &LowerCx, node: &Node) -> Result<Body> {
    use Op::*;
    let dt = input_dtype(cx, node, 0)?;
    let math = |f: MathFn| -> Body { Box::new(move |b, v| b.math(f, &[v[0]])) };
    let un = |u: UnOp| -> Body { Box::new(move |b, v| b.unary(u, v[0])) };
    // Ops defined on every numeric type.
    match node.op {
        Abs => return Ok(un(UnOp::Abs)),
        Neg => return Ok(un(UnOp::Neg)),
        Not | BitwiseNot => return Ok(un(UnOp::Not)),
        Relu => {
            return Ok(Box::new(|b, v| {
                let zero = konst_like(b, v[0], 0.0);
                b.max(v[0], zero)
            }))
        }
        Sign => {
            return Ok(Box::new(|b, v| {
                let x = v[0];
                let zero = konst_like(b, x, 0.0);
                let one = konst_like(b, x, 1.0);
                let gt = b.cmp(CmpOp::Gt, x, zero);
                let lt = b.cmp(CmpOp::Lt, x, zero);
                // x * 0 keeps a NaN a NaN (numpy's sign(nan) is nan) and is 0 otherwise.
                let rest = b.mul(x, zero);
                let minus_one = if b.ty(x).elem.is_unsigned_int() {
                    zero
                } else {
                    b.unary(UnOp::Neg, one)
                };
                let r = b.select(lt, minus_one, rest);
                b.select(gt, one, r)
            }));
        }
        Shrink => {
            let bias = node.attr_float("bias", 0.0) as f64;
            let lambd = node.attr_float("lambd", 0.5) as f64;
            // Ints are shrunk in f64 and truncated back.
            let via = if dt.is_float() {
                compute_dtype(dt)
            } else {
                DType::F64
            };
            return Ok(Box::new(move |b, v| {
                let x = b.cast(v[0], via, CastMode { saturate: false });
                let lo = konst_like(b, x, -lambd);
                let hi = konst_like(b, x, lambd);
                let bv = konst_like(b, x, bias);
                let zero = konst_like(b, x, 0.0);
                let below = b.cmp(CmpOp::Lt, x, lo);
                let above = b.cmp(CmpOp::Gt, x, hi);
                let plus = b.add(x, bv);
                let minus = b.sub(x, bv);
                let r = b.select(above, minus, zero);
                b.select(below, plus, r)
            }));
        }
        _ => {}
    }
    require_float(cx, node)?;
    Ok(match node.op {
        Reciprocal => Box::new(|b, v| {
            let one = konst_like(b, v[0], 1.0);
            b.div(one, v[0])
        }),
        Sqrt => un(UnOp::Sqrt),
        Floor => un(UnOp::Floor),
        Ceil => un(UnOp::Ceil),
        Round => un(UnOp::Round),
        Exp => math(MathFn::Exp),
        Log => math(MathFn::Log),
        Erf => math(MathFn::Erf),
        Sin => math(MathFn::Sin),
        Cos => math(MathFn::Cos),
        Tan => math(MathFn::Tan),
        Asin => math(MathFn::Asin),
        Acos => math(MathFn::Acos),
        Atan => math(MathFn::Atan),
        Sinh => math(MathFn::Sinh),
        Cosh => math(MathFn::Cosh),
        Asinh => math(MathFn::Asinh),
        Acosh => math(MathFn::Acosh),
        Atanh => math(MathFn::Atanh),
        Tanh => math(MathFn::Tanh),
        Sigmoid => math(MathFn::Sigmoid),
        IsNaN => Box::new(|b, v| b.cmp(CmpOp::Ne, v[0], v[0])),
        IsInf => {
            let neg = node.attr_int("detect_negative", 1) != 0;
            let pos = node.attr_int("detect_positive", 1) != 0;
            Box::new(move |b, v| {
                let x = v[0];
                let pinf = konst_like(b, x, f64::INFINITY);
                let ninf = konst_like(b, x, f64::NEG_INFINITY);
                let is_p = b.cmp(CmpOp::Eq, x, pinf);
                let is_n = b.cmp(CmpOp::Eq, x, ninf);
                let no = konst_like(b, is_p, 0.0);
                let p = if pos { is_p } else { no };
                let n = if neg { is_n } else { no };
                b.binary(BinOp::Or, p, n)
            })
        }
        LeakyRelu => {
            let alpha = node.attr_float("alpha", 0.01) as f64;
            Box::new(move |b, v| {
                let x = v[0];
                let zero = konst_like(b, x, 0.0);
                let a = konst_like(b, x, alpha);
                let neg = b.cmp(CmpOp::Lt, x, zero);
                let s = b.mul(x, a);
                b.select(neg, s, x)
            })
        }
        Elu => {
            let alpha = node.attr_float("alpha", 1.0) as f64;
            Box::new(move |b, v| {
                let x = v[0];
                let zero = konst_like(b, x, 0.0);
                let one = konst_like(b, x, 1.0);
                let a = konst_like(b, x, alpha);
                let e = b.math(MathFn::Exp, &[x]);
                let em1 = b.sub(e, one);
                let s = b.mul(a, em1);
                let neg = b.cmp(CmpOp::Lt, x, zero);
                b.select(neg, s, x)
            })
        }
        Selu => {
            let alpha = node.attr_float("alpha", 1.673_263_2) as f64;
            let gamma = node.attr_float("gamma", 1.050_701) as f64;
            Box::new(move |b, v| {
                let x = v[0];
                let zero = konst_like(b, x, 0.0);
                let a = konst_like(b, x, alpha);
                let g = konst_like(b, x, gamma);
                let e = b.math(MathFn::Exp, &[x]);
                let ae = b.mul(a, e);
                let neg_part = b.sub(ae, a);
                let le = b.cmp(CmpOp::Le, x, zero);
                let r = b.select(le, neg_part, x);
                b.mul(g, r)
            })
        }
        Celu => {
            let alpha = node.attr_float("alpha", 1.0) as f64;
            Box::new(move |b, v| {
                // max(0, x) + min(0, alpha * (exp(x / alpha) - 1))
                let x = v[0];
                let zero = konst_like(b, x, 0.0);
                let one = konst_like(b, x, 1.0);
                let a = konst_like(b, x, alpha);
                let xa = b.div(x, a);
                let e = b.math(MathFn::Exp, &[xa]);
                let em1 = b.sub(e, one);
                let s = b.mul(a, em1);
                let lo = b.min(zero, s);
                let hi = b.max(zero, x);
                b.add(hi, lo)
            })
        }
        ThresholdedRelu => {
            let alpha = node.attr_float("alpha", 1.0) as f64;
            Box::new(move |b, v| {
                let x = v[0];
                let zero = konst_like(b, x, 0.0);
                let a = konst_like(b, x, alpha);
                let gt = b.cmp(CmpOp::Gt, x, a);
                b.select(gt, x, zero)
            })
        }
        Gelu => {
            let tanh = match node.attr_str("approximate").unwrap_or("none") {
                "none" => false,
                "tanh" => true,
                other => {
                    return Err(cx.invalid(format!(
                        "Gelu approximate must be none or tanh, got `{other}`"
                    )))
                }
            };
            Box::new(move |b, v| gelu(b, v[0], tanh))
        }
        HardSigmoid | HardSwish => {
            let (a, beta) = if node.op == HardSwish {
                (1.0 / 6.0, 0.5)
            } else {
                (
                    node.attr_float("alpha", 0.2) as f64,
                    node.attr_float("beta", 0.5) as f64,
                )
            };
            let swish = node.op == HardSwish;
            Box::new(move |b, v| {
                // max(0, min(1, alpha * x + beta)), times x for HardSwish
                let x = v[0];
                let zero = konst_like(b, x, 0.0);
                let one = konst_like(b, x, 1.0);
                let av = konst_like(b, x, a);
                let bv = konst_like(b, x, beta);
                let ax = b.mul(av, x);
                let l = b.add(ax, bv);
                let l = b.min(one, l);
                let l = b.max(zero, l);
                if swish {
                    b.mul(x, l)
                } else {
                    l
                }
            })
        }
        Softplus => Box::new(|b, v| softplus(b, v[0])),
        Softsign => Box::new(|b, v| {
            let x = v[0];
            let one = konst_like(b, x, 1.0);
            let ax = b.unary(UnOp::Abs, x);
            let d = b.add(one, ax);
            b.div(x, d)
        }),
        Mish => Box::new(|b, v| {
            let x = v[0];
            let sp = softplus(b, x);
            let t = b.math(MathFn::Tanh, &[sp]);
            b.mul(x, t)
        }),
        op => return Err(cx.unsupported(format!("no elementwise lowering for {op}"))),
    })
}

/// log(1 + exp(x)) without overflow: max(x, 0) + log(1 + exp(-|x|)).
/// GELU of `x` (a scalar, vector or tile): `0.5·x·(1 + erf(x/√2))`, or with `tanh` the
/// approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`. The Gelu op and FusedMatMul's
/// GELU epilogue both emit this, so they compute the same.
pub(crate) fn gelu(b: &mut KernelBuilder, x: Val, tanh: bool) -> Val {
    let half = konst_like(b, x, 0.5);
    let one = konst_like(b, x, 1.0);
    let inner = if tanh {
        let k = konst_like(b, x, (2.0 / std::f64::consts::PI).sqrt());
        let c = konst_like(b, x, 0.044715);
        let x2 = b.mul(x, x);
        let x3 = b.mul(x2, x);
        let cx3 = b.mul(c, x3);
        let s = b.add(x, cx3);
        let ks = b.mul(k, s);
        b.math(MathFn::Tanh, &[ks])
    } else {
        let k = konst_like(b, x, std::f64::consts::FRAC_1_SQRT_2);
        let xs = b.mul(x, k);
        b.math(MathFn::Erf, &[xs])
    };
    let t = b.add(one, inner);
    let hx = b.mul(half, x);
    b.mul(hx, t)
}

fn softplus(b: &mut KernelBuilder, x: Val) -> Val {
    let zero = konst_like(b, x, 0.0);
    let one = konst_like(b, x, 1.0);
    let ax = b.unary(UnOp::Abs, x);
    let nax = b.unary(UnOp::Neg, ax);
    let e = b.math(MathFn::Exp, &[nax]);
    let e1 = b.add(one, e);
    let l = b.math(MathFn::Log, &[e1]);
    let m = b.max(x, zero);
    b.add(m, l)
}
