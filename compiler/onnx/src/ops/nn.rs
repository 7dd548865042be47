//! Registry lines for dense ops: matrix products, convolutions, pooling, normalisations,
//! softmax, and Dropout (an inference no-op, but ONNX lists it with the NN ops).

use super::{drop_attrs, op, set_operand, take, take_float, up, Entry};
use crate::error::Result;
use crate::import::Ctx;
use tessera_ir::{Attr, Attrs, Node, Op, Tensor};

pub(crate) const OPS: &[Entry] = &[
    op("MatMul", Op::MatMul),
    op("MatMulInteger", Op::MatMulInteger),
    up("Gemm", Op::Gemm, &[(7, gemm_drop_broadcast)]),
    op("Conv", Op::Conv),
    op("ConvInteger", Op::ConvInteger),
    op("ConvTranspose", Op::ConvTranspose),
    op("MaxPool", Op::MaxPool),
    op("AveragePool", Op::AveragePool),
    up("LpPool", Op::LpPool, &[(2, lp_float_p)]),
    op("GlobalAveragePool", Op::GlobalAveragePool),
    op("GlobalMaxPool", Op::GlobalMaxPool),
    up("GlobalLpPool", Op::GlobalLpPool, &[(2, lp_float_p)]),
    // onnxruntime's contrib schema in the default domain: RMS normalisation.
    op("SimplifiedLayerNormalization", Op::RMSNormalization),
    up(
        "BatchNormalization",
        Op::BatchNormalization,
        &[(14, batchnorm_legacy), (i64::MAX, batchnorm_training)],
    ),
    op("LayerNormalization", Op::LayerNormalization),
    op("InstanceNormalization", Op::InstanceNormalization),
    up(
        "GroupNormalization",
        Op::GroupNormalization,
        &[(21, group_norm_per_group)],
    ),
    op("RMSNormalization", Op::RMSNormalization),
    op("LpNormalization", Op::LpNormalization),
    op("MeanVarianceNormalization", Op::MeanVarianceNormalization),
    up("Softmax", Op::Softmax, &[(13, coerce_2d)]),
    up("LogSoftmax", Op::LogSoftmax, &[(13, coerce_2d)]),
    up("Hardmax", Op::Hardmax, &[(13, coerce_2d)]),
    up("Dropout", Op::Dropout, &[(12, dropout_ratio_attr)]),
    // added: sequence and attention ops
    op("Attention", Op::Attention),
    op("RotaryEmbedding", Op::RotaryEmbedding),
    op("NegativeLogLikelihoodLoss", Op::NegativeLogLikelihoodLoss),
    op("SoftmaxCrossEntropyLoss", Op::SoftmaxCrossEntropyLoss),
    op("Einsum", Op::Einsum),
    op("RNN", Op::RNN),
    op("GRU", Op::GRU),
    op("LSTM", Op::LSTM),
    op("Det", Op::Det),
    op("BlackmanWindow", Op::BlackmanWindow),
    op("HannWindow", Op::HannWindow),
    op("HammingWindow", Op::HammingWindow),
    // added: spatial ops
    op("MaxUnpool", Op::MaxUnpool),
    op("LRN", Op::LRN),
    // added: linear attention and quantized ops
    op("LinearAttention", Op::LinearAttention),
    op("CausalConvWithState", Op::CausalConvWithState),
    op("DeformConv", Op::DeformConv),
    op("RoiAlign", Op::RoiAlign),
];

/// Opset < 7: Gemm's `broadcast` flag; newer Gemm always broadcasts C.
fn gemm_drop_broadcast(_ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    drop_attrs(&mut node, &["broadcast"]);
    Ok(vec![node])
}

/// Opset 1: `p` was a float; it became an int.
fn lp_float_p(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    if let Some(p) = take_float(ctx, &mut node, "p")? {
        if p.fract() != 0.0 {
            return Err(ctx.unsupported(&node, "a non-integer `p`"));
        }
        node.attrs.insert("p".into(), Attr::Int(p as i64));
    }
    Ok(vec![node])
}

/// Opset < 14: `spatial`, `is_test` and `consumed_inputs` go; the extra results
/// (running and saved statistics) are training outputs that inference does not produce.
fn batchnorm_legacy(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    if let Some(Attr::Int(0)) = take(&mut node, "spatial") {
        return Err(ctx.unsupported(&node, "spatial=0 (per-element statistics)"));
    }
    if let Some(Attr::Int(0)) = take(&mut node, "is_test") {
        if ctx.opset < 7 && node.outputs.len() > 1 {
            return Err(ctx.unsupported(&node, "training mode (is_test=0)"));
        }
    }
    drop_attrs(&mut node, &["momentum"]);
    node.outputs.truncate(1);
    Ok(vec![node])
}

/// Opset 14+: `training_mode=1` normalises with the batch's own statistics (population
/// variance over every axis but 1) and also returns the updated running mean and variance.
/// That is written out as graph ops (reductions and elementwise kernels).
fn batchnorm_training(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    match take(&mut node, "training_mode") {
        None | Some(Attr::Int(0)) => return Ok(vec![node]),
        Some(Attr::Int(_)) => {}
        Some(_) => return Err(ctx.bad(&node, "attribute `training_mode` must be an int")),
    }
    let eps = take_float(ctx, &mut node, "epsilon")?.unwrap_or(1e-5) as f64;
    let momentum = take_float(ctx, &mut node, "momentum")?.unwrap_or(0.9) as f64;
    let operand = |k: usize, ctx: &Ctx| {
        node.input(k)
            .ok_or_else(|| ctx.bad(&node, &format!("operand {k} is required")))
    };
    let (x, scale, bias, mean_in, var_in) = (
        operand(0, ctx)?,
        operand(1, ctx)?,
        operand(2, ctx)?,
        operand(3, ctx)?,
        operand(4, ctx)?,
    );
    let Some(rank) = ctx.b.graph.ty(x).map(|t| t.shape.rank() as i64) else {
        return Err(ctx.unsupported(&node, "training mode on an input of unknown rank"));
    };
    if rank < 2 {
        return Err(ctx.bad(&node, "the input needs a channel axis"));
    }
    let mut out: Vec<Node> = Vec::new();
    let mut mk =
        |op: Op, inputs: &[tessera_ir::ValueId], output: tessera_ir::ValueId, attrs: Attrs| {
            out.push(Node {
                name: String::new(),
                op,
                inputs: inputs.iter().map(|&v| Some(v)).collect(),
                outputs: vec![output],
                attrs,
            });
        };
    let keep = |k: i64| Attrs::from([("keepdims".to_string(), Attr::Int(k))]);
    let axes: Vec<i64> = std::iter::once(0).chain(2..rank).collect();
    let axes = ctx.ints("bn_axes", &axes);
    let (mean, d, sq, var) = (
        ctx.tmp("bn_mean"),
        ctx.tmp("bn_centered"),
        ctx.tmp("bn_sq"),
        ctx.tmp("bn_var"),
    );
    mk(Op::ReduceMean, &[x, axes], mean, keep(1));
    mk(Op::Sub, &[x, mean], d, Attrs::new());
    mk(Op::Mul, &[d, d], sq, Attrs::new());
    mk(Op::ReduceMean, &[sq, axes], var, keep(1));
    let eps_c = ctx.scalar_like("bn_eps", eps, x);
    let (ve, sd, norm) = (ctx.tmp("bn_var_eps"), ctx.tmp("bn_std"), ctx.tmp("bn_norm"));
    mk(Op::Add, &[var, eps_c], ve, Attrs::new());
    mk(Op::Sqrt, &[ve], sd, Attrs::new());
    mk(Op::Div, &[d, sd], norm, Attrs::new());
    // [C] scale and bias align with axis 1 once they have rank - 2 trailing unit dims.
    let per_channel =
        |ctx: &mut Ctx,
         v,
         mk: &mut dyn FnMut(Op, &[tessera_ir::ValueId], tessera_ir::ValueId, Attrs)| {
            if rank == 2 {
                return v;
            }
            let t: Vec<i64> = (1..rank - 1).collect();
            let t = ctx.ints("bn_unsqueeze", &t);
            let o = ctx.tmp("bn_per_channel");
            mk(Op::Unsqueeze, &[v, t], o, Attrs::new());
            o
        };
    let sc = per_channel(ctx, scale, &mut mk);
    let bi = per_channel(ctx, bias, &mut mk);
    let scaled = ctx.tmp("bn_scaled");
    mk(Op::Mul, &[norm, sc], scaled, Attrs::new());
    let y = node.outputs[0];
    mk(Op::Add, &[scaled, bi], y, Attrs::new());
    // Running statistics: input * momentum + batch statistic * (1 - momentum).
    let mom = ctx.scalar_like("bn_momentum", momentum, mean_in);
    let rest = ctx.scalar_like("bn_one_minus_momentum", 1.0 - momentum, mean_in);
    // The batch mean is the mean of x, the batch variance the mean of the squared deviations.
    for (k, (of, running)) in [(x, mean_in), (sq, var_in)].into_iter().enumerate() {
        let Some(&result) = node.outputs.get(k + 1) else {
            continue;
        };
        let batch = ctx.tmp("bn_batch_stat");
        mk(Op::ReduceMean, &[of, axes], batch, keep(0));
        let (a, b) = (ctx.tmp("bn_running_part"), ctx.tmp("bn_batch_part"));
        mk(Op::Mul, &[running, mom], a, Attrs::new());
        mk(Op::Mul, &[batch, rest], b, Attrs::new());
        mk(Op::Add, &[a, b], result, Attrs::new());
    }
    drop(mk);
    ctx.pre.extend(out);
    Ok(Vec::new())
}

/// Opset 18-20: scale and bias had one entry per group, not per channel. There is no way
/// to express that without knowing the channel count, so it is refused.
fn group_norm_per_group(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    Err(ctx.unsupported(
        &node,
        "per-group scale and bias (GroupNormalization before opset 21)",
    ))
}

/// Opset < 13: Softmax, LogSoftmax and Hardmax flattened the input to 2-D at `axis`
/// (default 1) and normalised each row. With `axis = -1` that equals the new per-axis
/// semantics; otherwise the node becomes `Shape`, `Flatten`, the op on axis 1, `Reshape`.
fn coerce_2d(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    let axis = match take(&mut node, "axis") {
        None => 1,
        Some(Attr::Int(a)) => a,
        Some(_) => return Err(ctx.bad(&node, "attribute `axis` must be an int")),
    };
    let x = node
        .input(0)
        .ok_or_else(|| ctx.bad(&node, "missing input"))?;
    let rank = ctx.b.graph.ty(x).map(|t| t.shape.rank() as i64);
    let same = axis == -1 || rank.is_some_and(|r| axis == r - 1 || (r == 2 && axis == 1));
    if same {
        node.attrs.insert("axis".into(), Attr::Int(-1));
        return Ok(vec![node]);
    }
    let &[y] = node.outputs.as_slice() else {
        return Err(ctx.bad(&node, "expects one result"));
    };
    let shape = ctx.tmp("coerce_shape");
    let flat = ctx.tmp("coerce_flat");
    let normed = ctx.tmp("coerce_2d");
    let name = |suffix: &str| {
        if node.name.is_empty() {
            String::new()
        } else {
            format!("{}/{suffix}", node.name)
        }
    };
    let mk = |name: String, op: Op, inputs: Vec<_>, out, attrs: Attrs| Node {
        name,
        op,
        inputs: inputs.into_iter().map(Some).collect(),
        outputs: vec![out],
        attrs,
    };
    Ok(vec![
        mk(name("shape"), Op::Shape, vec![x], shape, Attrs::new()),
        mk(
            name("flatten"),
            Op::Flatten,
            vec![x],
            flat,
            Attrs::from([("axis".to_string(), Attr::Int(axis))]),
        ),
        mk(
            node.name.clone(),
            node.op,
            vec![flat],
            normed,
            Attrs::from([("axis".to_string(), Attr::Int(1))]),
        ),
        mk(
            name("reshape"),
            Op::Reshape,
            vec![normed, shape],
            y,
            Attrs::new(),
        ),
    ])
}

/// Opset < 12: `ratio` was an attribute (and before 7 there was `is_test`); it became
/// operand 1. Inference ignores it, but keeping it keeps the node faithful.
fn dropout_ratio_attr(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    drop_attrs(&mut node, &["is_test"]);
    if let Some(r) = take_float(ctx, &mut node, "ratio")? {
        let c = ctx.konst("dropout_ratio", Tensor::from_f32(vec![], &[r]));
        set_operand(&mut node, 1, Some(c));
    }
    Ok(vec![node])
}
