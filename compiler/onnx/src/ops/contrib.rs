//! Registry lines for onnxruntime's `com.microsoft` contrib ops that quantized and optimized
//! models carry. Each is written out at import as standard graph ops with the same meaning
//! (so each lowers to kernels like any graph): the QLinear* ops as DequantizeLinear → the float
//! op → QuantizeLinear, the fused ones as their parts. Tested against onnxruntime by
//! `tests/python/make_contrib_tests.py`.

use super::{Entry, Upgrade};
use crate::error::Result;
use crate::import::Ctx;
use tessera_ir::{Attr, Attrs, Node, Op, Tensor, ValueId};

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
    ms!("QGemm", Op::MatMulInteger, qgemm),
    ms!(
        "DynamicQuantizeMatMul",
        Op::MatMulInteger,
        dynamic_quantize_matmul
    ),
    ms!(
        "DynamicQuantizeLSTM",
        Op::MatMulInteger,
        dynamic_quantize_lstm
    ),
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

/// Operand `k`, named from the op's operand list `names` in the error when it is missing.
fn required(ctx: &Ctx, node: &Node, k: usize, names: &[&str]) -> Result<ValueId> {
    node.input(k).ok_or_else(|| {
        let name = names.get(k).copied().unwrap_or("?");
        ctx.bad(node, &format!("operand {k} (`{name}`) is required"))
    })
}

const QGEMM_IN: &[&str] = &[
    "A",
    "a_scale",
    "a_zero_point",
    "B",
    "b_scale",
    "b_zero_point",
];
const DQMM_IN: &[&str] = &["A", "B", "b_scale"];
const DQLSTM_IN: &[&str] = &[
    "X",
    "W",
    "R",
    "B",
    "sequence_lens",
    "initial_h",
    "initial_c",
    "P",
    "W_scale",
    "W_zero_point",
    "R_scale",
    "R_zero_point",
];

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

/// `float(acc) · (scale_a · scale_b)`, plus `bias` when given, into `y`: the int32 product of a
/// quantized matrix product scaled back to float with one multiplier per column, in the order
/// onnxruntime's output processor uses (the multiplier first, then the product).
fn scale_to_float(
    ctx: &mut Ctx,
    node: &Node,
    acc: ValueId,
    (sa, sb): (ValueId, ValueId),
    bias: Option<ValueId>,
    y: ValueId,
    out: &mut Vec<Node>,
) {
    let fl = emit(ctx, node, out, Op::CastLike, &[acc, sa], Attrs::new());
    let scale = emit(ctx, node, out, Op::Mul, &[sa, sb], Attrs::new());
    let (op, ins) = match bias {
        None => (Op::Mul, vec![Some(fl), Some(scale)]),
        Some(b) => {
            let scaled = emit(ctx, node, out, Op::Mul, &[fl, scale], Attrs::new());
            (Op::Add, vec![Some(scaled), Some(b)])
        }
    };
    out.push(mk(node, op, ins, vec![y], Attrs::new()));
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
    let y = result(ctx, &node)?;
    scale_to_float(ctx, &node, acc, (sa, sb), node.input(6), y, &mut out);
    Ok(out)
}

/// `DynamicQuantizeMatMul(A, B, b_scale, b_zp?, bias?)`: A (float) quantized to u8 per tensor
/// as DynamicQuantizeLinear does (onnxruntime's own rule: the range widened to include 0,
/// `scale = range / 255`, the zero point rounded half to even), then MatMulIntegerToFloat.
///
/// onnxruntime on x86 CPUs with AVX2 but no VNNI computes u8·s8 products with `vpmaddubsw`,
/// which saturates each sum of two adjacent products to int16 (its documented "saturation
/// issue"); this write-out computes the exact int32 sum, so it matches onnxruntime wherever
/// those pair sums stay within ±32767 (always for a u8 B).
fn dynamic_quantize_matmul(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    let a = required(ctx, &node, 0, DQMM_IN)?;
    let b = required(ctx, &node, 1, DQMM_IN)?;
    let sb = required(ctx, &node, 2, DQMM_IN)?;
    let mut out = Vec::new();
    let (aq, sa, za) = dynamic_quantize(ctx, &node, &mut out, a);
    let acc = ctx.tmp("int_product");
    out.push(mk(
        &node,
        Op::MatMulInteger,
        vec![Some(aq), Some(b), Some(za), node.input(3)],
        vec![acc],
        Attrs::new(),
    ));
    let y = result(ctx, &node)?;
    scale_to_float(ctx, &node, acc, (sa, sb), node.input(4), y, &mut out);
    Ok(out)
}

/// DynamicQuantizeLinear of `a`: its u8 form, scale and zero point.
fn dynamic_quantize(
    ctx: &mut Ctx,
    node: &Node,
    out: &mut Vec<Node>,
    a: ValueId,
) -> (ValueId, ValueId, ValueId) {
    let (aq, sa, za) = (
        ctx.tmp("quantized"),
        ctx.tmp("dynamic_scale"),
        ctx.tmp("dynamic_zero_point"),
    );
    out.push(mk(
        node,
        Op::DynamicQuantizeLinear,
        vec![Some(a)],
        vec![aq, sa, za],
        Attrs::new(),
    ));
    (aq, sa, za)
}

/// `QGemm(A, a_scale, a_zp, B, b_scale, b_zp, C?, y_scale?, y_zp?)` as onnxruntime computes
/// it: `acc = C + Σ (A - a_zp)(B - b_zp)` in int32 (C, an int32 bias, is added before scaling, so
/// `alpha` scales it too), then `float(acc) · m` with the one multiplier per column
/// `m = alpha · a_scale · b_scale [/ y_scale]`. With `y_zero_point` the result is quantized:
/// `saturate(round_half_even(float(acc) · m) + y_zp)`; without it, it is that float.
fn qgemm(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    let mut a = required(ctx, &node, 0, QGEMM_IN)?;
    let sa = required(ctx, &node, 1, QGEMM_IN)?;
    let mut b = required(ctx, &node, 3, QGEMM_IN)?;
    let sb = required(ctx, &node, 4, QGEMM_IN)?;
    let (y_scale, y_zp) = (node.input(7), node.input(8));
    if y_scale.is_none() && y_zp.is_some() {
        return Err(ctx.bad(
            &node,
            "y_zero_point (operand 8) is given without y_scale (operand 7)",
        ));
    }
    let mut out = Vec::new();
    let swap = || Attrs::from([("perm".to_string(), Attr::Ints(vec![1, 0]))]);
    if node.attr_int("transA", 0) != 0 {
        a = emit(ctx, &node, &mut out, Op::Transpose, &[a], swap());
    }
    if node.attr_int("transB", 0) != 0 {
        b = emit(ctx, &node, &mut out, Op::Transpose, &[b], swap());
    }
    let mut acc = ctx.tmp("int_product");
    out.push(mk(
        &node,
        Op::MatMulInteger,
        vec![Some(a), Some(b), node.input(2), node.input(5)],
        vec![acc],
        Attrs::new(),
    ));
    if let Some(c) = node.input(6) {
        acc = emit(ctx, &node, &mut out, Op::Add, &[acc, c], Attrs::new());
    }
    // The multiplier is `(alpha · a_scale) · b_scale`, then divided by y_scale, in
    // onnxruntime's order; scale_to_float multiplies its two scales, so with y_scale the
    // first is 1.
    let alpha = node.attr_float("alpha", 1.0);
    let mut s1 = sa;
    if alpha != 1.0 {
        let c = ctx.scalar_like("alpha", alpha as f64, sa);
        out.append(&mut ctx.pre);
        s1 = emit(ctx, &node, &mut out, Op::Mul, &[c, sa], Attrs::new());
    }
    let mut s2 = sb;
    if let Some(ys) = y_scale {
        let m = emit(ctx, &node, &mut out, Op::Mul, &[s1, sb], Attrs::new());
        s2 = emit(ctx, &node, &mut out, Op::Div, &[m, ys], Attrs::new());
        s1 = ctx.scalar_like("unit", 1.0, sa);
        out.append(&mut ctx.pre);
    }
    let y = result(ctx, &node)?;
    let Some(zp) = y_zp else {
        scale_to_float(ctx, &node, acc, (s1, s2), None, y, &mut out);
        return Ok(out);
    };
    let f = ctx.tmp("requantized_float");
    scale_to_float(ctx, &node, acc, (s1, s2), None, f, &mut out);
    let one = ctx.scalar_like("unit_scale", 1.0, sa);
    out.append(&mut ctx.pre);
    out.push(mk(
        &node,
        Op::QuantizeLinear,
        vec![Some(f), Some(one), Some(zp)],
        vec![y],
        Attrs::new(),
    ));
    Ok(out)
}

/// Appends `op(inputs)` with one fresh result and returns it.
fn emit(
    ctx: &mut Ctx,
    node: &Node,
    out: &mut Vec<Node>,
    op: Op,
    inputs: &[ValueId],
    attrs: Attrs,
) -> ValueId {
    let v = ctx.tmp(op.name());
    let ins = inputs.iter().copied().map(Some).collect();
    out.push(mk(node, op, ins, vec![v], attrs));
    v
}

/// `a · (B - zp) · s` for a float `a` quantized per tensor at run time, as onnxruntime's
/// quantized RNN GEMM does: `float(acc) · (a_scale · s)`.
fn dynamic_qmm(
    ctx: &mut Ctx,
    node: &Node,
    out: &mut Vec<Node>,
    a: ValueId,
    (b, s, zp): (ValueId, ValueId, ValueId),
) -> ValueId {
    let (aq, sa, za) = dynamic_quantize(ctx, node, out, a);
    let acc = emit(
        ctx,
        node,
        out,
        Op::MatMulInteger,
        &[aq, b, za, zp],
        Attrs::new(),
    );
    let y = ctx.tmp("scaled_product");
    scale_to_float(ctx, node, acc, (sa, s), None, y, out);
    y
}

/// `Gather(v, d)` along axis 0 with a constant index: one direction's slice of a weight.
fn pick(ctx: &mut Ctx, node: &Node, out: &mut Vec<Node>, v: ValueId, d: i64) -> ValueId {
    let i = ctx.konst("direction", Tensor::from_i64(vec![], &[d]));
    let attrs = Attrs::from([("axis".to_string(), Attr::Int(0))]);
    emit(ctx, node, out, Op::Gather, &[v, i], attrs)
}

/// `v[.., lo..hi]` along `axis`.
fn slice(
    ctx: &mut Ctx,
    node: &Node,
    out: &mut Vec<Node>,
    v: ValueId,
    axis: i64,
    (lo, hi): (i64, i64),
) -> ValueId {
    let (s, e, a) = (
        ctx.ints("starts", &[lo]),
        ctx.ints("ends", &[hi]),
        ctx.ints("axes", &[axis]),
    );
    emit(ctx, node, out, Op::Slice, &[v, s, e, a], Attrs::new())
}

/// The longest sequence DynamicQuantizeLSTM is unrolled over (each step is about 25 nodes).
const MAX_UNROLLED_STEPS: i64 = 1024;

/// `DynamicQuantizeLSTM(X, W, R, B?, sequence_lens?, initial_h?, initial_c?, P?, W_scale,
/// W_zero_point, R_scale, R_zero_point)`, unrolled over the (static) sequence as onnxruntime
/// computes it: `X · W` for all steps at once with X quantized per tensor at run time, then per
/// step `H_{t-1} · R` with `H_{t-1}` quantized per tensor at run time (both as
/// DynamicQuantizeLinear → MatMulInteger → float scale), the fused bias `Wb + Rb`, and the
/// standard gates (iofc order, sigmoid/tanh). W is `[dirs, input, 4·hidden]` and R
/// `[dirs, hidden, 4·hidden]` (transposed from LSTM's), scales and zero points per tensor
/// `[dirs]` or per output channel `[dirs, 4·hidden]`. Dequantizing W and R into the standard
/// LSTM would skip the run-time quantization of X and H and differ from onnxruntime by about
/// 1e-2; this write-out matches it to float rounding. Peepholes, sequence_lens, clip,
/// input_forget, layout 1 and other activations are refused.
fn dynamic_quantize_lstm(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    for k in [4, 7] {
        if node.input(k).is_some() {
            let what = if k == 4 {
                "sequence_lens"
            } else {
                "peepholes (P)"
            };
            return Err(ctx.unsupported(&node, &format!("DynamicQuantizeLSTM with {what}")));
        }
    }
    // The default activations, spelled out or not, are the only ones accepted.
    let default_acts = match node.attr("activations") {
        None => true,
        Some(Attr::Strings(v)) => v.chunks(3).all(|c| {
            c.len() == 3
                && c[0].eq_ignore_ascii_case("sigmoid")
                && c[1..].iter().all(|a| a.eq_ignore_ascii_case("tanh"))
        }),
        Some(_) => false,
    };
    if !default_acts
        || node.attr("clip").is_some()
        || node.attr_int("input_forget", 0) != 0
        || node.attr_int("layout", 0) != 0
    {
        return Err(ctx.unsupported(
            &node,
            "DynamicQuantizeLSTM with activations, clip, input_forget or layout=1",
        ));
    }
    let hidden = node.attr_int("hidden_size", 0);
    if hidden <= 0 || hidden > i64::from(i32::MAX) {
        return Err(ctx.bad(&node, "attribute `hidden_size` must be in 1..2^31"));
    }
    let dirs: &[bool] = match node.attr_str("direction").unwrap_or("forward") {
        "forward" => &[false],
        "reverse" => &[true],
        "bidirectional" => &[false, true],
        other => return Err(ctx.bad(&node, &format!("direction `{other}`"))),
    };
    let x = required(ctx, &node, 0, DQLSTM_IN)?;
    let dims = ctx
        .b
        .graph
        .ty(x)
        .and_then(|t| t.shape.as_static())
        .ok_or_else(|| ctx.unsupported(&node, "DynamicQuantizeLSTM on an X of unknown shape"))?;
    let &[seq, batch, input] = dims.as_slice() else {
        return Err(ctx.bad(
            &node,
            &format!("X must be [seq, batch, input], not {dims:?}"),
        ));
    };
    let (seq, batch, input) = (seq as i64, batch as i64, input as i64);
    if seq > MAX_UNROLLED_STEPS {
        return Err(ctx.unsupported(
            &node,
            &format!("DynamicQuantizeLSTM over {seq} steps (it is unrolled; at most {MAX_UNROLLED_STEPS})"),
        ));
    }
    // W and R must have the shapes `hidden_size` and X imply (checked here, before anything
    // is sized from them).
    let n_dirs = dirs.len() as u64;
    let (h, inp) = (hidden as u64, input as u64);
    for (k, want) in [(1, [n_dirs, inp, 4 * h]), (2, [n_dirs, h, 4 * h])] {
        let v = required(ctx, &node, k, DQLSTM_IN)?;
        let Some(got) = ctx.b.graph.ty(v).and_then(|t| t.shape.as_static()) else {
            let what = format!(
                "DynamicQuantizeLSTM with a {} of unknown shape",
                DQLSTM_IN[k]
            );
            return Err(ctx.unsupported(&node, &what));
        };
        if got != want {
            return Err(ctx.bad(
                &node,
                &format!(
                    "operand {k} (`{}`) must be {want:?} (directions, rows, 4 · hidden_size), not {got:?}",
                    DQLSTM_IN[k]
                ),
            ));
        }
    }
    let (w, r) = (
        required(ctx, &node, 1, DQLSTM_IN)?,
        required(ctx, &node, 2, DQLSTM_IN)?,
    );
    let q: Vec<ValueId> = (8..12)
        .map(|k| required(ctx, &node, k, DQLSTM_IN))
        .collect::<Result<_>>()?;
    let h4 = 4 * hidden;
    let mut out = Vec::new();
    let no_attrs = Attrs::new;
    let rows = seq
        .checked_mul(batch)
        .ok_or_else(|| ctx.bad(&node, &format!("X of shape {dims:?} is too large")))?;
    let flat = ctx.ints("shape", &[rows, input]);
    let x2 = emit(ctx, &node, &mut out, Op::Reshape, &[x, flat], no_attrs());
    let (mut ys, mut hs, mut cs) = (Vec::new(), Vec::new(), Vec::new());
    for (d, &reverse) in dirs.iter().enumerate() {
        let d = d as i64;
        let wq = [w, q[0], q[1]].map(|v| pick(ctx, &node, &mut out, v, d));
        let rq = [r, q[2], q[3]].map(|v| pick(ctx, &node, &mut out, v, d));
        let xw = dynamic_qmm(ctx, &node, &mut out, x2, (wq[0], wq[1], wq[2]));
        let steps = ctx.ints("shape", &[seq, batch, h4]);
        let xw = emit(ctx, &node, &mut out, Op::Reshape, &[xw, steps], no_attrs());
        let bias = match node.input(3) {
            Some(b) => {
                let bd = pick(ctx, &node, &mut out, b, d);
                let wb = slice(ctx, &node, &mut out, bd, 0, (0, h4));
                let rb = slice(ctx, &node, &mut out, bd, 0, (h4, 2 * h4));
                Some(emit(ctx, &node, &mut out, Op::Add, &[wb, rb], no_attrs()))
            }
            None => None,
        };
        let mut h = match node.input(5) {
            Some(h0) => Some(pick(ctx, &node, &mut out, h0, d)),
            None => None,
        };
        let mut c = match node.input(6) {
            Some(c0) => pick(ctx, &node, &mut out, c0, d),
            None => {
                // Expanded at run time, so a large declared batch allocates nothing here.
                let zero = ctx.konst("zero", Tensor::from_f32(vec![], &[0.0]));
                let shape = ctx.ints("shape", &[batch, hidden]);
                emit(ctx, &node, &mut out, Op::Expand, &[zero, shape], no_attrs())
            }
        };
        let mut per_step = vec![None; seq as usize];
        for step in 0..seq {
            let t = if reverse { seq - 1 - step } else { step };
            let xt = pick(ctx, &node, &mut out, xw, t);
            // A zero initial state contributes exactly 0 in onnxruntime too (its quantized
            // form is all zero points), so the first product is skipped without one.
            let mut g = match h {
                Some(h) => {
                    let hr = dynamic_qmm(ctx, &node, &mut out, h, (rq[0], rq[1], rq[2]));
                    emit(ctx, &node, &mut out, Op::Add, &[xt, hr], no_attrs())
                }
                None => xt,
            };
            if let Some(b) = bias {
                g = emit(ctx, &node, &mut out, Op::Add, &[g, b], no_attrs());
            }
            let gate = |ctx: &mut Ctx, out: &mut Vec<Node>, k: i64, op: Op| {
                let v = slice(ctx, &node, out, g, 1, (k * hidden, (k + 1) * hidden));
                emit(ctx, &node, out, op, &[v], Attrs::new())
            };
            let i = gate(ctx, &mut out, 0, Op::Sigmoid);
            let o = gate(ctx, &mut out, 1, Op::Sigmoid);
            let f = gate(ctx, &mut out, 2, Op::Sigmoid);
            let cand = gate(ctx, &mut out, 3, Op::Tanh);
            let kept = emit(ctx, &node, &mut out, Op::Mul, &[f, c], no_attrs());
            let new = emit(ctx, &node, &mut out, Op::Mul, &[i, cand], no_attrs());
            c = emit(ctx, &node, &mut out, Op::Add, &[kept, new], no_attrs());
            let tc = emit(ctx, &node, &mut out, Op::Tanh, &[c], no_attrs());
            let hn = emit(ctx, &node, &mut out, Op::Mul, &[o, tc], no_attrs());
            h = Some(hn);
            per_step[t as usize] = Some(hn);
        }
        let lead = ctx.ints("axes", &[0]);
        let up = |ctx: &mut Ctx, out: &mut Vec<Node>, v: ValueId| {
            emit(ctx, &node, out, Op::Unsqueeze, &[v, lead], Attrs::new())
        };
        let h_last =
            h.ok_or_else(|| ctx.unsupported(&node, "DynamicQuantizeLSTM on an empty sequence"))?;
        hs.push(up(ctx, &mut out, h_last));
        cs.push(up(ctx, &mut out, c));
        ys.push(per_step.into_iter().flatten().collect::<Vec<_>>());
    }
    // Y is [seq, dirs, batch, hidden]: each step's [dirs, batch, hidden] stacked.
    let cat = |axis: i64| Attrs::from([("axis".to_string(), Attr::Int(axis))]);
    let lead = ctx.ints("axes", &[0]);
    let mut steps = Vec::new();
    for t in 0..seq as usize {
        let mut per_dir = Vec::new();
        for y in &ys {
            per_dir.push(emit(
                ctx,
                &node,
                &mut out,
                Op::Unsqueeze,
                &[y[t], lead],
                no_attrs(),
            ));
        }
        let stacked = emit(ctx, &node, &mut out, Op::Concat, &per_dir, cat(0));
        steps.push(emit(
            ctx,
            &node,
            &mut out,
            Op::Unsqueeze,
            &[stacked, lead],
            no_attrs(),
        ));
    }
    for (k, parts) in [steps, hs, cs].into_iter().enumerate() {
        if let Some(&y) = node.outputs.get(k) {
            let ins = parts.into_iter().map(Some).collect();
            out.push(mk(&node, Op::Concat, ins, vec![y], cat(0)));
        }
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
