//! Registry lines for onnxruntime's `com.microsoft` contrib ops that quantized and optimized
//! models carry. Each is written out at import as standard graph ops with the same meaning
//! (so each lowers to kernels like any graph): the QLinear* ops as DequantizeLinear → the float
//! op → QuantizeLinear, the fused ones as their parts. Tested against onnxruntime by
//! `tests/python/make_contrib_tests.py`.

use super::{Entry, Upgrade};
use crate::error::Result;
use crate::import::Ctx;
use tessera_ir::{Attr, Attrs, Node, Op, ValueId};

const MS: &str = "com.microsoft";

/// A contrib line: always rewritten (every opset of the domain).
macro_rules! ms {
    ($onnx:literal, $op:expr, $f:expr) => {
        Entry {
            domain: MS,
            onnx: $onnx,
            op: $op,
            upgrades: &[(i64::MAX, $f as Upgrade)],
        }
    };
}

pub(crate) const OPS: &[Entry] = &[
    ms!("Gelu", Op::Gelu, gelu),
    ms!("FastGelu", Op::Gelu, fast_gelu),
    ms!("BiasGelu", Op::Gelu, bias_gelu),
    ms!("FusedMatMul", Op::MatMul, fused_matmul),
    ms!("FusedConv", Op::Conv, fused_conv),
    ms!(
        "SkipLayerNormalization",
        Op::LayerNormalization,
        skip_layer_norm
    ),
    ms!(
        "SkipSimplifiedLayerNormalization",
        Op::RMSNormalization,
        skip_layer_norm
    ),
    ms!("QLinearAdd", Op::Add, qlinear_binary),
    ms!("QLinearMul", Op::Mul, qlinear_mul),
    ms!("QLinearSigmoid", Op::Sigmoid, qlinear_unary),
    ms!("QLinearLeakyRelu", Op::LeakyRelu, qlinear_unary),
    ms!("QLinearConcat", Op::Concat, qlinear_concat),
    ms!(
        "MatMulIntegerToFloat",
        Op::MatMulInteger,
        matmul_integer_to_float
    ),
    ms!(
        "QLinearGlobalAveragePool",
        Op::GlobalAveragePool,
        qlinear_unary
    ),
    ms!("QLinearAveragePool", Op::AveragePool, qlinear_unary),
    ms!("RotaryEmbedding", Op::RotaryEmbedding, rotary_embedding),
    ms!("MultiHeadAttention", Op::Attention, multi_head_attention),
];

/// A new node named after `of`.
fn mk(
    of: &Node,
    op: Op,
    inputs: Vec<Option<ValueId>>,
    outputs: Vec<ValueId>,
    attrs: Attrs,
) -> Node {
    let name = if of.name.is_empty() {
        String::new()
    } else {
        format!("{}/{}", of.name, op.name())
    };
    Node {
        name,
        op,
        inputs,
        outputs,
        attrs,
    }
}

fn operand(ctx: &Ctx, node: &Node, k: usize) -> Result<ValueId> {
    node.input(k)
        .ok_or_else(|| ctx.bad(node, &format!("operand {k} is required")))
}

fn result(ctx: &Ctx, node: &Node) -> Result<ValueId> {
    node.outputs
        .first()
        .copied()
        .ok_or_else(|| ctx.bad(node, "expects a result"))
}

fn gelu(_ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    Ok(vec![Node {
        attrs: Attrs::new(),
        ..node
    }])
}

/// `x + bias` (when a bias is given) before the op, into a fresh value.
fn with_bias(
    ctx: &mut Ctx,
    node: &Node,
    x: ValueId,
    bias: Option<ValueId>,
    out: &mut Vec<Node>,
) -> ValueId {
    match bias {
        None => x,
        Some(b) => {
            let s = ctx.tmp("biased");
            out.push(mk(
                node,
                Op::Add,
                vec![Some(x), Some(b)],
                vec![s],
                Attrs::new(),
            ));
            s
        }
    }
}

/// The tanh approximation of Gelu, after an optional bias.
fn fast_gelu(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    let x = with_bias(ctx, &node, operand(ctx, &node, 0)?, node.input(1), &mut out);
    let y = result(ctx, &node)?;
    out.push(mk(
        &node,
        Op::Gelu,
        vec![Some(x)],
        vec![y],
        Attrs::from([("approximate".to_string(), Attr::String("tanh".into()))]),
    ));
    Ok(out)
}

fn bias_gelu(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    let x = with_bias(
        ctx,
        &node,
        operand(ctx, &node, 0)?,
        Some(operand(ctx, &node, 1)?),
        &mut out,
    );
    let y = result(ctx, &node)?;
    out.push(mk(&node, Op::Gelu, vec![Some(x)], vec![y], Attrs::new()));
    Ok(out)
}

/// The last two axes of `v` swapped (its rank must be known at import).
fn transpose_last(ctx: &mut Ctx, node: &Node, v: ValueId, out: &mut Vec<Node>) -> Result<ValueId> {
    let r = ctx
        .b
        .graph
        .ty(v)
        .map(|t| t.shape.rank())
        .ok_or_else(|| ctx.unsupported(node, "transA/transB on an operand of unknown rank"))?;
    if r < 2 {
        return Err(ctx.bad(node, "transA/transB need operands of rank 2 or more"));
    }
    let mut perm: Vec<i64> = (0..r as i64).collect();
    perm.swap(r - 2, r - 1);
    let t = ctx.tmp("transposed");
    out.push(mk(
        node,
        Op::Transpose,
        vec![Some(v)],
        vec![t],
        Attrs::from([("perm".to_string(), Attr::Ints(perm))]),
    ));
    Ok(t)
}

/// `alpha · op(A) · op(B)` with op an optional transpose of the last two axes.
fn fused_matmul(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    if node.attr_int("transBatchA", 0) != 0 || node.attr_int("transBatchB", 0) != 0 {
        return Err(ctx.unsupported(&node, "FusedMatMul with transBatchA/transBatchB"));
    }
    let mut out = Vec::new();
    let mut a = operand(ctx, &node, 0)?;
    let mut b = operand(ctx, &node, 1)?;
    if node.attr_int("transA", 0) != 0 {
        a = transpose_last(ctx, &node, a, &mut out)?;
    }
    if node.attr_int("transB", 0) != 0 {
        b = transpose_last(ctx, &node, b, &mut out)?;
    }
    let y = result(ctx, &node)?;
    let alpha = node.attr_float("alpha", 1.0);
    if alpha == 1.0 {
        out.push(mk(
            &node,
            Op::MatMul,
            vec![Some(a), Some(b)],
            vec![y],
            Attrs::new(),
        ));
    } else {
        let p = ctx.tmp("product");
        out.push(mk(
            &node,
            Op::MatMul,
            vec![Some(a), Some(b)],
            vec![p],
            Attrs::new(),
        ));
        let c = ctx.scalar_like("alpha", alpha as f64, a);
        out.append(&mut ctx.pre);
        out.push(mk(
            &node,
            Op::Mul,
            vec![Some(p), Some(c)],
            vec![y],
            Attrs::new(),
        ));
    }
    Ok(out)
}

/// Conv followed by its `activation` (Relu, Tanh, Sigmoid, LeakyRelu); an optional 4th
/// operand (a residual `Z`) is added before the activation.
fn fused_conv(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    let act = match node.attrs.remove("activation") {
        Some(Attr::String(s)) => s,
        None => String::new(),
        Some(_) => return Err(ctx.bad(&node, "attribute `activation` must be a string")),
    };
    let params = match node.attrs.remove("activation_params") {
        Some(Attr::Floats(f)) => f,
        _ => Vec::new(),
    };
    let z = node.inputs.get(3).copied().flatten();
    node.inputs.truncate(3);
    let (op, attrs) = match act.as_str() {
        "" => {
            return Ok(vec![Node {
                op: Op::Conv,
                ..node
            }])
        }
        "Relu" => (Op::Relu, Attrs::new()),
        "Tanh" => (Op::Tanh, Attrs::new()),
        "Sigmoid" => (Op::Sigmoid, Attrs::new()),
        "LeakyRelu" => (
            Op::LeakyRelu,
            Attrs::from([(
                "alpha".to_string(),
                Attr::Float(params.first().copied().unwrap_or(0.01)),
            )]),
        ),
        other => return Err(ctx.unsupported(&node, &format!("FusedConv activation `{other}`"))),
    };
    let y = result(ctx, &node)?;
    let c = ctx.tmp("conv");
    let conv = Node {
        op: Op::Conv,
        outputs: vec![c],
        ..node.clone()
    };
    let mut out = vec![conv];
    let pre_act = with_bias(ctx, &node, c, z, &mut out);
    out.push(mk(&node, op, vec![Some(pre_act)], vec![y], attrs));
    Ok(out)
}

/// `input + skip (+ bias)`, then LayerNormalization (or RMSNormalization for the simplified
/// form) over the last axis. Results: output, mean, inverse std-dev, and the sum.
fn skip_layer_norm(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    let simplified = node.op == Op::RMSNormalization;
    let x = operand(ctx, &node, 0)?;
    let skip = operand(ctx, &node, 1)?;
    let gamma = operand(ctx, &node, 2)?;
    let (beta, bias) = if simplified {
        (None, node.input(3))
    } else {
        (node.input(3), node.input(4))
    };
    let eps = node.attr_float("epsilon", 1e-12);
    let mut out = Vec::new();
    let sum = match node.outputs.get(3) {
        Some(&s) => s,
        None => ctx.tmp("skip_sum"),
    };
    let s1 = if bias.is_some() {
        ctx.tmp("skip_sum_partial")
    } else {
        sum
    };
    out.push(mk(
        &node,
        Op::Add,
        vec![Some(x), Some(skip)],
        vec![s1],
        Attrs::new(),
    ));
    if let Some(b) = bias {
        out.push(mk(
            &node,
            Op::Add,
            vec![Some(s1), Some(b)],
            vec![sum],
            Attrs::new(),
        ));
    }
    let attrs = Attrs::from([
        ("axis".to_string(), Attr::Int(-1)),
        ("epsilon".to_string(), Attr::Float(eps)),
    ]);
    let y = result(ctx, &node)?;
    if simplified {
        if node.outputs.get(1..3).is_some_and(|s| {
            s.iter()
                .any(|&v| !ctx.b.graph.value(v).name.contains("_unused"))
        }) {
            return Err(ctx.unsupported(
                &node,
                "the mean and inverse std-dev results of SkipSimplifiedLayerNormalization",
            ));
        }
        out.push(mk(
            &node,
            Op::RMSNormalization,
            vec![Some(sum), Some(gamma)],
            vec![y],
            attrs,
        ));
    } else {
        let mut outs = vec![y];
        outs.extend(
            node.outputs
                .get(1..3.min(node.outputs.len()))
                .unwrap_or(&[])
                .iter()
                .copied(),
        );
        out.push(mk(
            &node,
            Op::LayerNormalization,
            vec![Some(sum), Some(gamma), beta],
            outs,
            attrs,
        ));
    }
    Ok(out)
}

/// DequantizeLinear of operand triple `(x, scale, zero_point)` at `k`.
fn dequant(ctx: &mut Ctx, node: &Node, k: usize, out: &mut Vec<Node>) -> Result<ValueId> {
    let x = operand(ctx, node, k)?;
    let s = operand(ctx, node, k + 1)?;
    let z = node.input(k + 2);
    let f = ctx.tmp("dequantized");
    out.push(mk(
        node,
        Op::DequantizeLinear,
        vec![Some(x), Some(s), z],
        vec![f],
        Attrs::new(),
    ));
    Ok(f)
}

/// QuantizeLinear of `f` with the operands `(scale, zero_point)` at `k` into the node's result.
fn quant(ctx: &mut Ctx, node: &Node, f: ValueId, k: usize, out: &mut Vec<Node>) -> Result<()> {
    let s = operand(ctx, node, k)?;
    let z = node.input(k + 1);
    let y = result(ctx, node)?;
    out.push(mk(
        node,
        Op::QuantizeLinear,
        vec![Some(f), Some(s), z],
        vec![y],
        Attrs::new(),
    ));
    Ok(())
}

/// `QLinearAdd/Mul(A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp)`.
fn qlinear_binary(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    let a = dequant(ctx, &node, 0, &mut out)?;
    let b = dequant(ctx, &node, 3, &mut out)?;
    let f = ctx.tmp("qlinear_float");
    out.push(mk(
        &node,
        node.op,
        vec![Some(a), Some(b)],
        vec![f],
        Attrs::new(),
    ));
    quant(ctx, &node, f, 6, &mut out)?;
    Ok(out)
}

/// `x - zero_point` in the scale's float type (the zero point defaults to 0).
fn centered(ctx: &mut Ctx, node: &Node, k: usize, out: &mut Vec<Node>) -> Result<ValueId> {
    let x = operand(ctx, node, k)?;
    let s = operand(ctx, node, k + 1)?;
    let xf = ctx.tmp("as_float");
    out.push(mk(
        node,
        Op::CastLike,
        vec![Some(x), Some(s)],
        vec![xf],
        Attrs::new(),
    ));
    let Some(z) = node.input(k + 2) else {
        return Ok(xf);
    };
    let zf = ctx.tmp("zero_as_float");
    out.push(mk(
        node,
        Op::CastLike,
        vec![Some(z), Some(s)],
        vec![zf],
        Attrs::new(),
    ));
    let c = ctx.tmp("centered");
    out.push(mk(
        node,
        Op::Sub,
        vec![Some(xf), Some(zf)],
        vec![c],
        Attrs::new(),
    ));
    Ok(c)
}

/// `QLinearMul`: as onnxruntime computes it, `(a - za)(b - zb)` times the one multiplier
/// `a_scale · (b_scale / c_scale)`, rounded and offset by `c_zp` (a different rounding order than
/// dequantize-multiply-quantize, which can differ in the last unit).
fn qlinear_mul(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    let mut out = Vec::new();
    let a = centered(ctx, &node, 0, &mut out)?;
    let b = centered(ctx, &node, 3, &mut out)?;
    let (sa, sb, sc) = (
        operand(ctx, &node, 1)?,
        operand(ctx, &node, 4)?,
        operand(ctx, &node, 6)?,
    );
    let (bc, m, p, scaled) = (
        ctx.tmp("scale_bc"),
        ctx.tmp("multiplier"),
        ctx.tmp("product"),
        ctx.tmp("scaled"),
    );
    out.push(mk(
        &node,
        Op::Div,
        vec![Some(sb), Some(sc)],
        vec![bc],
        Attrs::new(),
    ));
    out.push(mk(
        &node,
        Op::Mul,
        vec![Some(sa), Some(bc)],
        vec![m],
        Attrs::new(),
    ));
    out.push(mk(
        &node,
        Op::Mul,
        vec![Some(a), Some(b)],
        vec![p],
        Attrs::new(),
    ));
    out.push(mk(
        &node,
        Op::Mul,
        vec![Some(p), Some(m)],
        vec![scaled],
        Attrs::new(),
    ));
    let one = ctx.scalar_like("unit_scale", 1.0, sc);
    out.append(&mut ctx.pre);
    let y = result(ctx, &node)?;
    out.push(mk(
        &node,
        Op::QuantizeLinear,
        vec![Some(scaled), Some(one), node.input(7)],
        vec![y],
        Attrs::new(),
    ));
    Ok(out)
}

/// `QLinearSigmoid/LeakyRelu/GlobalAveragePool/AveragePool(X, X_scale, X_zp, Y_scale, Y_zp)`;
/// the float op keeps the node's attributes (channels-first layout only).
fn qlinear_unary(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    let mut attrs = node.attrs.clone();
    if matches!(attrs.remove("channels_last"), Some(Attr::Int(v)) if v != 0) {
        return Err(ctx.unsupported(&node, "channels_last=1"));
    }
    let mut out = Vec::new();
    let x = dequant(ctx, &node, 0, &mut out)?;
    let f = ctx.tmp("qlinear_float");
    out.push(mk(&node, node.op, vec![Some(x)], vec![f], attrs));
    quant(ctx, &node, f, 3, &mut out)?;
    Ok(out)
}

/// `QLinearConcat(Y_scale, Y_zp, (X, X_scale, X_zp)…)` along `axis`.
fn qlinear_concat(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    let n = node.inputs.len();
    if n < 5 || (n - 2) % 3 != 0 {
        return Err(ctx.bad(
            &node,
            &format!("takes Y_scale, Y_zero_point and triples of operands, not {n} operands"),
        ));
    }
    let mut out = Vec::new();
    let mut parts = Vec::new();
    for k in (2..n).step_by(3) {
        parts.push(Some(dequant(ctx, &node, k, &mut out)?));
    }
    let f = ctx.tmp("qlinear_float");
    out.push(mk(
        &node,
        Op::Concat,
        parts,
        vec![f],
        Attrs::from([("axis".to_string(), Attr::Int(node.attr_int("axis", 0)))]),
    ));
    let s = operand(ctx, &node, 0)?;
    let y = result(ctx, &node)?;
    out.push(mk(
        &node,
        Op::QuantizeLinear,
        vec![Some(f), Some(s), node.input(1)],
        vec![y],
        Attrs::new(),
    ));
    Ok(out)
}

/// `MatMulIntegerToFloat(A, B, a_scale, b_scale, a_zp?, b_zp?, bias?)`: the integer product,
/// cast to the scales' type, times `a_scale · b_scale`, plus the bias.
fn matmul_integer_to_float(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    let a = operand(ctx, &node, 0)?;
    let b = operand(ctx, &node, 1)?;
    let sa = operand(ctx, &node, 2)?;
    let sb = operand(ctx, &node, 3)?;
    let mut out = Vec::new();
    let acc = ctx.tmp("int_product");
    out.push(mk(
        &node,
        Op::MatMulInteger,
        vec![Some(a), Some(b), node.input(4), node.input(5)],
        vec![acc],
        Attrs::new(),
    ));
    let fl = ctx.tmp("float_product");
    out.push(mk(
        &node,
        Op::CastLike,
        vec![Some(acc), Some(sa)],
        vec![fl],
        Attrs::new(),
    ));
    let scale = ctx.tmp("scale");
    out.push(mk(
        &node,
        Op::Mul,
        vec![Some(sa), Some(sb)],
        vec![scale],
        Attrs::new(),
    ));
    let y = result(ctx, &node)?;
    let scaled = if node.input(6).is_some() {
        ctx.tmp("scaled")
    } else {
        y
    };
    out.push(mk(
        &node,
        Op::Mul,
        vec![Some(fl), Some(scale)],
        vec![scaled],
        Attrs::new(),
    ));
    if let Some(bias) = node.input(6) {
        out.push(mk(
            &node,
            Op::Add,
            vec![Some(scaled), Some(bias)],
            vec![y],
            Attrs::new(),
        ));
    }
    Ok(out)
}

/// The contrib `RotaryEmbedding(input, position_ids, cos_cache, sin_cache)` is the standard op
/// (opset 23) with its operands in another order; `scale` must be 1.
fn rotary_embedding(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    if node.attr_float("scale", 1.0) != 1.0 || node.attr_int("is_packed_batching", 0) != 0 {
        return Err(ctx.unsupported(
            &node,
            "RotaryEmbedding with `scale` other than 1 or packed batching",
        ));
    }
    let (x, pos, cos, sin) = (
        operand(ctx, &node, 0)?,
        operand(ctx, &node, 1)?,
        operand(ctx, &node, 2)?,
        operand(ctx, &node, 3)?,
    );
    node.inputs = vec![Some(x), Some(cos), Some(sin), Some(pos)];
    node.attrs.retain(|k, _| {
        matches!(
            k.as_str(),
            "interleaved" | "num_heads" | "rotary_embedding_dim"
        )
    });
    Ok(vec![node])
}

/// `MultiHeadAttention(query, key, value)` on `[batch, seq, heads · head_size]` tensors is the
/// standard Attention (opset 23) with `num_heads` query and key/value heads. Biases, masks and
/// past state are refused.
fn multi_head_attention(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    if node.inputs.iter().skip(3).any(Option::is_some) || node.outputs.len() > 1 {
        return Err(ctx.unsupported(
            &node,
            "MultiHeadAttention with bias, masks or past key/value",
        ));
    }
    let heads = node.attr_int("num_heads", 0);
    if heads <= 0 {
        return Err(ctx.bad(&node, "attribute `num_heads` must be positive"));
    }
    let mut attrs = Attrs::from([
        ("q_num_heads".to_string(), Attr::Int(heads)),
        ("kv_num_heads".to_string(), Attr::Int(heads)),
    ]);
    if let Some(Attr::Float(s)) = node.attr("scale") {
        if *s != 0.0 {
            attrs.insert("scale".into(), Attr::Float(*s));
        }
    }
    if node.attr_int("unidirectional", 0) != 0 {
        attrs.insert("is_causal".into(), Attr::Int(1));
    }
    let inputs = node.inputs[..3].to_vec();
    Ok(vec![mk(
        &node,
        Op::Attention,
        inputs,
        node.outputs.clone(),
        attrs,
    )])
}
