//! Registry lines for elementwise arithmetic, logic, activations and casts.

use super::{op, set_operand, take, take_float, trim, up, Entry};
use crate::error::Result;
use crate::import::Ctx;
use crate::proto::tensor_proto::DataType;
use tessera_ir::{Attr, Node, Op};

pub(crate) const OPS: &[Entry] = &[
    // binary arithmetic and comparisons; before opset 7 they had `broadcast`/`axis`.
    up("Add", Op::Add, &[(7, legacy_broadcast)]),
    up("Sub", Op::Sub, &[(7, legacy_broadcast)]),
    up("Mul", Op::Mul, &[(7, legacy_broadcast)]),
    up("Div", Op::Div, &[(7, legacy_broadcast)]),
    up("Pow", Op::Pow, &[(7, legacy_broadcast)]),
    op("Mod", Op::Mod),
    up("And", Op::And, &[(7, legacy_broadcast)]),
    up("Or", Op::Or, &[(7, legacy_broadcast)]),
    up("Xor", Op::Xor, &[(7, legacy_broadcast)]),
    up("Equal", Op::Equal, &[(7, legacy_broadcast)]),
    up("Less", Op::Less, &[(7, legacy_broadcast)]),
    op("LessOrEqual", Op::LessOrEqual),
    up("Greater", Op::Greater, &[(7, legacy_broadcast)]),
    op("GreaterOrEqual", Op::GreaterOrEqual),
    op("BitShift", Op::BitShift),
    op("BitwiseAnd", Op::BitwiseAnd),
    op("BitwiseOr", Op::BitwiseOr),
    op("BitwiseXor", Op::BitwiseXor),
    op("BitwiseNot", Op::BitwiseNot),
    up("PRelu", Op::PRelu, &[(7, prelu_per_channel)]),
    op("Where", Op::Where),
    // variadic
    op("Max", Op::Max),
    op("Min", Op::Min),
    op("Sum", Op::Sum),
    op("Mean", Op::Mean),
    // unary
    op("Abs", Op::Abs),
    op("Neg", Op::Neg),
    op("Reciprocal", Op::Reciprocal),
    op("Sqrt", Op::Sqrt),
    op("Exp", Op::Exp),
    op("Log", Op::Log),
    op("Erf", Op::Erf),
    op("Sin", Op::Sin),
    op("Cos", Op::Cos),
    op("Tan", Op::Tan),
    op("Asin", Op::Asin),
    op("Acos", Op::Acos),
    op("Atan", Op::Atan),
    op("Sinh", Op::Sinh),
    op("Cosh", Op::Cosh),
    op("Asinh", Op::Asinh),
    op("Acosh", Op::Acosh),
    op("Atanh", Op::Atanh),
    op("Tanh", Op::Tanh),
    op("Sigmoid", Op::Sigmoid),
    op("Relu", Op::Relu),
    op("LeakyRelu", Op::LeakyRelu),
    op("Elu", Op::Elu),
    op("Selu", Op::Selu),
    op("Celu", Op::Celu),
    op("ThresholdedRelu", Op::ThresholdedRelu),
    op("Gelu", Op::Gelu),
    op("HardSigmoid", Op::HardSigmoid),
    op("HardSwish", Op::HardSwish),
    op("Softplus", Op::Softplus),
    op("Softsign", Op::Softsign),
    op("Mish", Op::Mish),
    op("Shrink", Op::Shrink),
    op("Floor", Op::Floor),
    op("Ceil", Op::Ceil),
    op("Round", Op::Round),
    op("Sign", Op::Sign),
    op("Not", Op::Not),
    op("IsNaN", Op::IsNaN),
    op("IsInf", Op::IsInf),
    up("Clip", Op::Clip, &[(11, clip_attrs_to_operands)]),
    up(
        "Cast",
        Op::Cast,
        &[(6, cast_to_string), (i64::MAX, cast_check_to)],
    ),
    op("CastLike", Op::CastLike),
    // added: sequence and attention ops
    op("Swish", Op::Swish),
    op("SwiGLU", Op::SwiGLU),
    op("BitCast", Op::BitCast),
];

/// Opset < 7: `broadcast=1` without `axis` is numpy suffix broadcasting, which newer opsets
/// subsume. With `axis`, operand B aligns at that axis of A instead of at A's end: B gets
/// trailing unit dims (an `Unsqueeze` placed first) so that suffix broadcasting aligns it the
/// same way. That needs both ranks at import; without them the node is refused.
fn legacy_broadcast(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    let broadcast = matches!(take(&mut node, "broadcast"), Some(Attr::Int(1)));
    let axis = take(&mut node, "axis");
    if !broadcast {
        return Ok(vec![node]);
    }
    let Some(axis) = axis else {
        return Ok(vec![node]);
    };
    let Attr::Int(axis) = axis else {
        return Err(ctx.bad(&node, "attribute `axis` must be an int"));
    };
    let (Some(a), Some(b)) = (node.input(0), node.input(1)) else {
        return Err(ctx.bad(&node, "legacy broadcasting needs two operands"));
    };
    let rank = |ctx: &Ctx, v| ctx.b.graph.ty(v).map(|t| t.shape.rank() as i64);
    let (Some(ra), Some(rb)) = (rank(ctx, a), rank(ctx, b)) else {
        return Err(ctx.unsupported(
            &node,
            "legacy broadcasting with an `axis` attribute on operands of unknown rank",
        ));
    };
    let axis = if axis < 0 { axis + ra } else { axis };
    if axis < 0 || axis + rb > ra {
        return Err(ctx.bad(
            &node,
            &format!(
                "`axis` {axis} does not place operand B (rank {rb}) inside operand A (rank {ra})"
            ),
        ));
    }
    let b = trailing_unit_dims(ctx, &node, b, rb, ra - axis - rb);
    set_operand(&mut node, 1, Some(b));
    Ok(vec![node])
}

/// Opset < 7: PRelu's slope was per channel (dimension 1 of X), not broadcast from the end.
/// A 1-D slope of more than one element gets trailing unit dims so the new semantics agree.
fn prelu_per_channel(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    let (Some(x), Some(slope)) = (node.input(0), node.input(1)) else {
        return Err(ctx.bad(&node, "PRelu needs two operands"));
    };
    let (Some(tx), Some(ts)) = (ctx.b.graph.ty(x).cloned(), ctx.b.graph.ty(slope).cloned()) else {
        return Err(ctx.unsupported(
            &node,
            "a per-channel PRelu slope on operands of unknown shape",
        ));
    };
    let rx = tx.shape.rank() as i64;
    let single = ts
        .shape
        .as_static()
        .is_some_and(|d| d.iter().product::<u64>() == 1);
    if ts.shape.rank() == 1 && !single && rx >= 3 {
        let s = trailing_unit_dims(ctx, &node, slope, 1, rx - 2);
        set_operand(&mut node, 1, Some(s));
    }
    Ok(vec![node])
}

/// `v` (of rank `rank`) with `extra` unit dims appended, by an `Unsqueeze` placed before
/// `node`; `v` itself when `extra` is 0.
fn trailing_unit_dims(
    ctx: &mut Ctx,
    node: &Node,
    v: tessera_ir::ValueId,
    rank: i64,
    extra: i64,
) -> tessera_ir::ValueId {
    if extra <= 0 {
        return v;
    }
    let axes: Vec<i64> = (rank..rank + extra).collect();
    let axes = ctx.ints("legacy_axes", &axes);
    let out = ctx.tmp("legacy_unsqueezed");
    ctx.pre.push(Node {
        name: if node.name.is_empty() {
            String::new()
        } else {
            format!("{}/unsqueeze", node.name)
        },
        op: Op::Unsqueeze,
        inputs: vec![Some(v), Some(axes)],
        outputs: vec![out],
        attrs: tessera_ir::Attrs::new(),
    });
    out
}

/// Opset < 11: `min`/`max` were float attributes; they became operands of the input's type.
fn clip_attrs_to_operands(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    let min = take_float(ctx, &mut node, "min")?;
    let max = take_float(ctx, &mut node, "max")?;
    let x = node
        .input(0)
        .ok_or_else(|| ctx.bad(&node, "missing input"))?;
    if let Some(v) = min {
        let c = ctx.scalar_like("clip_min", v as f64, x);
        set_operand(&mut node, 1, Some(c));
    }
    if let Some(v) = max {
        let c = ctx.scalar_like("clip_max", v as f64, x);
        set_operand(&mut node, 2, Some(c));
    }
    trim(&mut node);
    Ok(vec![node])
}

/// Opset < 6: `to` was a string naming the type ("FLOAT"); it became the type's code.
fn cast_to_string(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    if let Some(Attr::String(s)) = node.attrs.get("to") {
        let code = DataType::from_str_name(&s.to_ascii_uppercase())
            .ok_or_else(|| ctx.bad(&node, &format!("unknown type name \"{s}\" in `to`")))?;
        node.attrs.insert("to".into(), Attr::Int(code as i64));
    }
    cast_check_to(ctx, node)
}

/// A target type graph IR has no dtype for (float8e8m0, complex) makes the model
/// unsupported, not broken.
fn cast_check_to(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    if let Some(Attr::Int(code)) = node.attrs.get("to") {
        let code = i32::try_from(*code).unwrap_or(0);
        if crate::dtype::dtype_from_onnx(code).is_none() {
            let what = format!("casting to {}", crate::dtype::onnx_code_name(code));
            return Err(ctx.unsupported(&node, &what));
        }
    }
    Ok(vec![node])
}
