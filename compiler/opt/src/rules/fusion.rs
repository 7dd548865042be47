//! Fusion rules: matrix products with their epilogues become one FusedMatMul kernel, and the
//! decomposed forms exporters write (and the ONNX `_expanded` node tests hold) of GELU,
//! LayerNorm, RMSNorm and softmax become the single ops, which lower to one kernel each.
//! At the `exact` policy these change numerics only by f32 reassociation: the fused op computes
//! the same formula in one pass (`conv-batchnorm` and `conv-bias` fold constants in f64 and round
//! once to f32).
//!
//! | rule | from | to |
//! |---|---|---|
//! | `gemm-matmul` | `Gemm(a, b, c)` with α = β = 1, no `transA`, `c` absent or one value per column (f32) | `FusedMatMul{transB}(a, b, c)`, open to the epilogue rules below |
//! | `matmul-bias` | `Add(MatMul(a, b), bias[N])` (f32) | `FusedMatMul(a, b, bias)` |
//! | `matmul-relu` | `Relu(MatMul(a, b))`, `Relu(FusedMatMul(…))` | `FusedMatMul{activation = "Relu"}` |
//! | `matmul-activation` | `Gelu`, `Sigmoid` or `Tanh` of a product | `FusedMatMul{activation = "Gelu" \| "GeluTanh" \| "Sigmoid" \| "Tanh"}` |
//! | `matmul-residual` | `Add(product, z)`, `z` of the product's shape (f32) | `FusedMatMul(…, residual = z)` |
//! | `conv-batchnorm` | inference `BatchNormalization(Conv(x, w, b))`, constant w, b and BN parameters (f32) | `Conv(x, w·s, (b − mean)·s + β)`, `s = γ / √(var + ε)` |
//! | `conv-bias` | `Add(Conv(x, w), c)`, constant `c` of one value per output channel (f32) | `Conv(x, w, c)` (summed with a constant bias) |
//! | `conv-residual` | `Add(Conv(…), z)`, `z` of the Conv's shape (f32) | `FusedConv(x, w, b, z)` |
//! | `conv-activation` | `Relu`, `Gelu`, `Sigmoid` or `Tanh` of a Conv or FusedConv | `FusedConv{activation}` |
//! | `gelu-erf` | `x · 0.5 · (1 + erf(x / √2))`, any order | `Gelu(x)` |
//! | `gelu-tanh` | `x · 0.5 · (1 + tanh(√(2/π) (x + 0.044715 x³)))` | `Gelu{approximate = "tanh"}(x)` |
//! | `layernorm` | `(x − mean) / √(var + ε) · γ + β` over the last axis | `LayerNormalization` |
//! | `rmsnorm` | `x / √(mean(x²) + ε) · γ` over the last axis | `RMSNormalization` |
//! | `softmax` | `exp(x − max) / Σ exp(x − max)` (or without the max) | `Softmax` |

use super::{
    arg, dims, dtype, factors, konst, node, nodes, only_user, only_user_within, reduces_last_axis,
    scalar, ty, Expr, Rule,
};
use crate::analysis::EGraph;
use egg::Id;
use std::sync::Arc;
use tessera_ir::{Attr, DType, Op, OpKey, Tensor};

pub fn rules() -> Vec<Arc<dyn Rule>> {
    vec![
        Arc::new(GemmMatMul),
        Arc::new(MatMulBias),
        Arc::new(MATMUL_RELU),
        Arc::new(MATMUL_ACTIVATION),
        Arc::new(MatMulResidual),
        Arc::new(ConvBatchNorm),
        Arc::new(ConvBias),
        Arc::new(ConvResidual),
        Arc::new(ConvActivation),
        Arc::new(GeluErf),
        Arc::new(GeluTanh),
        Arc::new(LayerNorm),
        Arc::new(RmsNorm),
        Arc::new(Softmax),
    ]
}

/// Within 1e-4 relative: exporters round these constants.
fn close(v: f64, want: f64) -> bool {
    (v - want).abs() <= 1e-4 * want.abs()
}

fn is_const(eg: &EGraph, id: Id, want: f64) -> bool {
    scalar(eg, id).is_some_and(|v| close(v, want))
}

/// A FusedMatMul's operands, padded to six positions (the residual, the seventh, is kept
/// where `ch` has one).
fn fused_args(ch: &[Id]) -> Vec<Expr> {
    (0..ch.len().max(6))
        .map(|i| ch.get(i).map_or(Expr::Absent, |&c| Expr::Class(c)))
        .collect()
}

/// FusedMatMul's key: its activation, and `transB` for a product whose B is held transposed
/// (a Gemm's weights).
fn fused_key(activation: Option<&str>, trans_b: bool) -> OpKey {
    let mut attrs = Vec::new();
    if let Some(a) = activation {
        attrs.push(("activation", Attr::String(a.into())));
    }
    if trans_b {
        attrs.push(("transB", Attr::Int(1)));
    }
    OpKey::with(Op::FusedMatMul, &attrs)
}

/// A product open to an epilogue: its FusedMatMul operands, and whether B is transposed.
struct Product {
    args: Vec<Id>,
    trans_b: bool,
}

/// The f32 products of class `id` open to an epilogue: plain f32 MatMuls, and FusedMatMuls
/// with no activation (and, if `need_no_bias`, no bias).
fn products(eg: &EGraph, id: Id, need_no_bias: bool) -> Vec<Product> {
    let mut v = Vec::new();
    if dtype(eg, id) != Some(DType::F32) {
        return v;
    }
    for (_, ch) in nodes(eg, id, Op::MatMul) {
        let ok = |c: Id| ty(eg, c).is_some_and(|t| t.dtype == DType::F32 && t.shape.rank() >= 2);
        if ok(ch[0]) && ok(ch[1]) {
            v.push(Product {
                args: ch.to_vec(),
                trans_b: false,
            });
        }
    }
    for (k, ch) in nodes(eg, id, Op::FusedMatMul) {
        if k.attr("activation").is_none() && !(need_no_bias && arg(ch, eg, 2).is_some()) {
            v.push(Product {
                args: ch.to_vec(),
                trans_b: k.attr_int("transB", 0) != 0,
            });
        }
    }
    v
}

/// Whether class `c` is an f32 bias of one value per column of a result of dims `out`
/// (`[N]`, `[1, N]`, …, of no higher rank than the result): FusedMatMul's bias operand.
fn per_column_bias(eg: &EGraph, c: Id, out: &[u64]) -> bool {
    let Some(cd) = dims(eg, c) else {
        return false;
    };
    dtype(eg, c) == Some(DType::F32)
        && cd.last() == Some(out.last().unwrap_or(&0))
        && cd.iter().rev().skip(1).all(|&d| d == 1)
        && cd.len() <= out.len()
}

// ==== gemm-matmul ====

/// `Gemm(a, b, c)` → `FusedMatMul{transB}(a, b, c)` when it is a plain product plus a
/// per-column bias (α = β = 1, A not transposed: what a Linear layer exports as), so a Gemm
/// takes its activation and residual epilogues like a MatMul does. The weights keep their
/// layout: FusedMatMul reads a transposed B as the Gemm did.
struct GemmMatMul;

impl Rule for GemmMatMul {
    fn name(&self) -> &'static str {
        "gemm-matmul"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        let Some(out) = dims(eg, id) else {
            return vec![];
        };
        for (k, ch) in nodes(eg, id, Op::Gemm) {
            let float = |name: &str| match k.attr(name) {
                None => Some(1.0),
                Some(Attr::Float(v)) => Some(*v),
                _ => None,
            };
            let trans_b = k.attr_int("transB", 0);
            if k.attr_int("transA", 0) != 0 || float("alpha") != Some(1.0) || trans_b > 1 {
                continue;
            }
            let matrix =
                |c: Id| ty(eg, c).is_some_and(|t| t.dtype == DType::F32 && t.shape.rank() == 2);
            if !matrix(ch[0]) || !matrix(ch[1]) || out.len() != 2 {
                continue;
            }
            let mut args = vec![ch[0], ch[1]];
            if let Some(c) = arg(ch, eg, 2) {
                if float("beta") != Some(1.0) || !per_column_bias(eg, c, &out) {
                    continue;
                }
                args.push(c);
            }
            return vec![Expr::Node(fused_key(None, trans_b == 1), fused_args(&args))];
        }
        vec![]
    }
}

// ==== matmul-bias ====

struct MatMulBias;

impl Rule for MatMulBias {
    fn name(&self) -> &'static str {
        "matmul-bias"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        let Some(out) = dims(eg, id) else {
            return vec![];
        };
        for (_, ch) in nodes(eg, id, Op::Add) {
            for (p, bias) in [(ch[0], ch[1]), (ch[1], ch[0])] {
                if !per_column_bias(eg, bias, &out) || dims(eg, p) != Some(out.clone()) {
                    continue;
                }
                if !only_user(eg, p, id) {
                    continue;
                }
                // Every product form the class has (a float one, an integer one from
                // `qdq-matmul`, …) gets its fused alternative; the cost model picks.
                return products(eg, p, true)
                    .iter()
                    .map(|p| {
                        let mut a = fused_args(&p.args);
                        a[2] = Expr::Class(bias);
                        Expr::Node(fused_key(None, p.trans_b), a)
                    })
                    .collect();
            }
        }
        vec![]
    }
}

// ==== matmul-relu, matmul-activation ====

/// `act(product)` → `FusedMatMul{activation = …}`: Relu (`matmul-relu`), or GELU (either
/// form), Sigmoid and Tanh (`matmul-activation`). The activation runs on the result tile in
/// the product's epilogue, so the product's result is never written and read back.
struct MatMulActivation {
    name: &'static str,
    ops: &'static [Op],
}

const MATMUL_RELU: MatMulActivation = MatMulActivation {
    name: "matmul-relu",
    ops: &[Op::Relu],
};

const MATMUL_ACTIVATION: MatMulActivation = MatMulActivation {
    name: "matmul-activation",
    ops: &[Op::Gelu, Op::Sigmoid, Op::Tanh],
};

impl Rule for MatMulActivation {
    fn name(&self) -> &'static str {
        self.name
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        for &op in self.ops {
            for (k, ch) in nodes(eg, id, op) {
                if !only_user_within(eg, ch[0], id) {
                    continue;
                }
                // The activation's name is FusedMatMul's (lowering's `Activation`).
                let act = match (op, k.attr("approximate")) {
                    (Op::Gelu, Some(Attr::String(a))) if a == "tanh" => "GeluTanh",
                    (Op::Gelu, Some(Attr::String(a))) if a != "none" => continue,
                    (op, _) => op.name(),
                };
                return products(eg, ch[0], false)
                    .iter()
                    .map(|p| Expr::Node(fused_key(Some(act), p.trans_b), fused_args(&p.args)))
                    .collect();
            }
        }
        vec![]
    }
}

// ==== matmul-residual ====

/// The `(p, z)` operand pairs of class `id`'s f32 `Add`s where `z` has the shape of `p` and of
/// the sum, and `p` is read only by the Add: a residual `z` that `p`'s producer can add in its
/// epilogue. (`z` cannot depend on `p`, whose one reader is the Add.)
fn residual_adds(eg: &EGraph, id: Id) -> Vec<(Id, Id)> {
    let Some(out) = dims(eg, id) else {
        return vec![];
    };
    let mut v = Vec::new();
    for (_, ch) in nodes(eg, id, Op::Add) {
        for (p, z) in [(ch[0], ch[1]), (ch[1], ch[0])] {
            if eg.find(p) != eg.find(z)
                && dims(eg, z).as_ref() == Some(&out)
                && dims(eg, p).as_ref() == Some(&out)
                && dtype(eg, z) == Some(DType::F32)
                && only_user(eg, p, id)
            {
                v.push((p, z));
            }
        }
    }
    v
}

/// `Add(product, z)` with `z` of the product's shape: the residual connection of transformer
/// blocks (and ResNet's, as products) read in the product's epilogue instead of a second pass.
struct MatMulResidual;

impl Rule for MatMulResidual {
    fn name(&self) -> &'static str {
        "matmul-residual"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        for (p, z) in residual_adds(eg, id) {
            // Float products only: the integer kernels (`qdq-matmul`'s) have no residual.
            let alts: Vec<Expr> = products(eg, p, false)
                .iter()
                .filter(|p| {
                    p.args
                        .iter()
                        .take(2)
                        .all(|&c| dtype(eg, c) == Some(DType::F32))
                        && arg(&p.args, eg, 6).is_none()
                })
                .map(|p| {
                    let mut a = fused_args(&p.args);
                    a.truncate(6);
                    a.push(Expr::Class(z));
                    Expr::Node(fused_key(None, p.trans_b), a)
                })
                .collect();
            if !alts.is_empty() {
                return alts;
            }
        }
        vec![]
    }
}

// ==== conv-batchnorm, conv-bias, conv-residual, conv-activation ====

/// The attributes a FusedConv takes from its Conv, with `activation` set or not.
fn fused_conv_key(conv: &OpKey, activation: Option<&str>) -> OpKey {
    let mut attrs = conv.attrs().clone();
    attrs.remove("activation");
    if let Some(a) = activation {
        attrs.insert("activation".into(), Attr::String(a.into()));
    }
    OpKey::new(Op::FusedConv, attrs, 1)
}

/// The f32 convolutions of class `id` open to an epilogue, as (key, operands padded to X, W, B,
/// Z): Conv, and FusedConv with no activation (and, if `need_no_residual`, no residual).
fn convs(eg: &EGraph, id: Id, need_no_residual: bool) -> Vec<(OpKey, Vec<Expr>)> {
    let mut v = Vec::new();
    if dtype(eg, id) != Some(DType::F32) {
        return v;
    }
    let pad = |ch: &[Id]| -> Vec<Expr> {
        (0..4)
            .map(|i| arg(ch, eg, i).map_or(Expr::Absent, Expr::Class))
            .collect()
    };
    for (k, ch) in nodes(eg, id, Op::Conv) {
        if dtype(eg, ch[0]) == Some(DType::F32) {
            v.push((k.clone(), pad(ch)));
        }
    }
    for (k, ch) in nodes(eg, id, Op::FusedConv) {
        if k.attr("activation").is_none() && !(need_no_residual && arg(ch, eg, 3).is_some()) {
            v.push((k.clone(), pad(ch)));
        }
    }
    v
}

/// The f32 values of constant class `id` with `len` elements.
fn f32_values(eg: &EGraph, id: Id, len: usize) -> Option<Vec<f64>> {
    if dtype(eg, id) != Some(DType::F32) {
        return None;
    }
    konst(eg, id)?.to_f64_vec().filter(|v| v.len() == len)
}

/// An f32 constant of `dims` from f64 values, each rounded once.
fn f32_const(dims: Vec<u64>, v: &[f64]) -> Expr {
    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Expr::Const(Tensor::from_f32(dims, &v))
}

/// Inference BatchNormalization of a Conv with constant weights: the normalisation folds into
/// the weights and bias, `w'[m] = w[m]·s[m]`, `b'[m] = (b[m] − mean[m])·s[m] + β[m]` with `s =
/// γ / √(var + ε)`, so the BN kernel disappears. Constants are folded in f64 and rounded once.
struct ConvBatchNorm;

impl Rule for ConvBatchNorm {
    fn name(&self) -> &'static str {
        "conv-batchnorm"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        let Some((k, ch)) = node(eg, id, Op::BatchNormalization) else {
            return vec![];
        };
        if k.attr_int("training_mode", 0) != 0 || ch.len() < 5 || !only_user(eg, ch[0], id) {
            return vec![];
        }
        let eps = k.attr_float("epsilon", 1e-5) as f64;
        let Some(m) = dims(eg, ch[0]).and_then(|d| d.get(1).copied()) else {
            return vec![];
        };
        let mu = m as usize;
        let param = |i: usize| f32_values(eg, ch[i], mu);
        let (Some(g), Some(beta), Some(mean), Some(var)) = (param(1), param(2), param(3), param(4))
        else {
            return vec![];
        };
        let s: Vec<f64> = g
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + eps).sqrt())
            .collect();
        let mut out = Vec::new();
        for (ck, cch) in nodes(eg, ch[0], Op::Conv) {
            let Some(wd) = dims(eg, cch[1]) else { continue };
            let wl: u64 = wd.iter().product();
            let Some(w) = f32_values(eg, cch[1], wl as usize) else {
                continue;
            };
            if wd.first() != Some(&m) || dtype(eg, cch[0]) != Some(DType::F32) {
                continue;
            }
            let b = match arg(cch, eg, 2) {
                Some(b) => match f32_values(eg, b, mu) {
                    Some(b) => b,
                    None => continue,
                },
                None => vec![0.0; mu],
            };
            let per = (wl / m) as usize;
            let w2: Vec<f64> = w.iter().enumerate().map(|(i, &x)| x * s[i / per]).collect();
            let b2: Vec<f64> = (0..mu).map(|i| (b[i] - mean[i]) * s[i] + beta[i]).collect();
            out.push(Expr::Node(
                ck.clone(),
                vec![
                    Expr::Class(cch[0]),
                    f32_const(wd, &w2),
                    f32_const(vec![m], &b2),
                ],
            ));
        }
        out
    }
}

/// `Add(Conv(x, w, [b]), c)` with a constant `c` of one value per output channel (`[M, 1, …]`
/// or `[1, M, 1, …]`): the Conv's own bias.
struct ConvBias;

impl Rule for ConvBias {
    fn name(&self) -> &'static str {
        "conv-bias"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        let Some(out) = dims(eg, id) else {
            return vec![];
        };
        let Some(&m) = out.get(1) else {
            return vec![];
        };
        for (_, ch) in nodes(eg, id, Op::Add) {
            for (p, c) in [(ch[0], ch[1]), (ch[1], ch[0])] {
                let Some(cd) = dims(eg, c) else { continue };
                // Broadcast against [N, M, spatial…]: M on axis 1 of the result.
                let lead = out.len().saturating_sub(cd.len());
                let per_channel = cd.len() <= out.len()
                    && cd.len() + 1 >= out.len()
                    && cd.iter().enumerate().all(
                        |(i, &d)| {
                            if i + lead == 1 {
                                d == m
                            } else {
                                d == 1
                            }
                        },
                    );
                let Some(cv) = f32_values(eg, c, m as usize) else {
                    continue;
                };
                if !per_channel || dims(eg, p).as_ref() != Some(&out) || !only_user(eg, p, id) {
                    continue;
                }
                let mut alts = Vec::new();
                for (ck, cch) in nodes(eg, p, Op::Conv) {
                    let bias = match arg(cch, eg, 2) {
                        Some(b) => match f32_values(eg, b, m as usize) {
                            Some(b) => b.iter().zip(&cv).map(|(x, y)| x + y).collect(),
                            None => continue,
                        },
                        None => cv.clone(),
                    };
                    if dtype(eg, cch[0]) != Some(DType::F32) {
                        continue;
                    }
                    alts.push(Expr::Node(
                        ck.clone(),
                        vec![
                            Expr::Class(cch[0]),
                            Expr::Class(cch[1]),
                            f32_const(vec![m], &bias),
                        ],
                    ));
                }
                if !alts.is_empty() {
                    return alts;
                }
            }
        }
        vec![]
    }
}

/// `Add(conv, z)` with `z` of the Conv's shape: a ResNet block's shortcut added in the Conv's
/// epilogue (before the activation that usually follows, which `conv-activation` then adds).
struct ConvResidual;

impl Rule for ConvResidual {
    fn name(&self) -> &'static str {
        "conv-residual"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        for (p, z) in residual_adds(eg, id) {
            let alts: Vec<Expr> = convs(eg, p, true)
                .into_iter()
                .map(|(k, mut a)| {
                    a[3] = Expr::Class(z);
                    Expr::Node(fused_conv_key(&k, None), a)
                })
                .collect();
            if !alts.is_empty() {
                return alts;
            }
        }
        vec![]
    }
}

/// `act(conv)` → `FusedConv{activation}`, the activations FusedMatMul has.
struct ConvActivation;

impl Rule for ConvActivation {
    fn name(&self) -> &'static str {
        "conv-activation"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        for op in [Op::Relu, Op::Gelu, Op::Sigmoid, Op::Tanh] {
            for (k, ch) in nodes(eg, id, op) {
                if !only_user_within(eg, ch[0], id) {
                    continue;
                }
                let act = match (op, k.attr("approximate")) {
                    (Op::Gelu, Some(Attr::String(a))) if a == "tanh" => "GeluTanh",
                    (Op::Gelu, Some(Attr::String(a))) if a != "none" => continue,
                    (op, _) => op.name(),
                };
                let alts: Vec<Expr> = convs(eg, ch[0], false)
                    .into_iter()
                    .map(|(k, a)| Expr::Node(fused_conv_key(&k, Some(act)), a))
                    .collect();
                if !alts.is_empty() {
                    return alts;
                }
            }
        }
        vec![]
    }
}

// ==== gelu-erf, gelu-tanh ====

/// Matches `x · 0.5 · (1 + f(inner))` at class `id`, where `f` is `op`; returns (x, inner).
fn half_x_one_plus(eg: &EGraph, id: Id, op: Op) -> Option<(Id, Id)> {
    let (fs, c) = factors(eg, id, 3);
    if fs.len() != 2 || !close(c, 0.5) {
        return None;
    }
    for (x, e) in [(fs[0], fs[1]), (fs[1], fs[0])] {
        for (_, ch) in nodes(eg, e, Op::Add) {
            for (f, one) in [(ch[0], ch[1]), (ch[1], ch[0])] {
                if !is_const(eg, one, 1.0) {
                    continue;
                }
                if let Some((_, fch)) = node(eg, f, op) {
                    return Some((x, fch[0]));
                }
            }
        }
    }
    None
}

fn is_float_value(eg: &EGraph, id: Id) -> bool {
    dtype(eg, id).is_some_and(|d| d.is_float())
}

struct GeluErf;

impl Rule for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        if !is_float_value(eg, id) || node(eg, id, Op::Gelu).is_some() {
            return vec![];
        }
        let Some((x, u)) = half_x_one_plus(eg, id, Op::Erf) else {
            return vec![];
        };
        let (ufs, uc) = factors(eg, u, 2);
        if ufs == [eg.find(x)] && close(uc, std::f64::consts::FRAC_1_SQRT_2) {
            return vec![Expr::op(Op::Gelu, vec![Expr::Class(x)])];
        }
        vec![]
    }
}

struct GeluTanh;

impl Rule for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        if !is_float_value(eg, id) || node(eg, id, Op::Gelu).is_some() {
            return vec![];
        }
        let Some((x, v)) = half_x_one_plus(eg, id, Op::Tanh) else {
            return vec![];
        };
        let x = eg.find(x);
        let (vfs, vc) = factors(eg, v, 2);
        if vfs.len() != 1 || !close(vc, (2.0 / std::f64::consts::PI).sqrt()) {
            return vec![];
        }
        let cubic = |t: Id| {
            let (tfs, tc) = factors(eg, t, 3);
            if !close(tc, 0.044715) {
                return false;
            }
            let pow3 = |p: Id| {
                nodes(eg, p, Op::Pow).any(|(_, pc)| eg.find(pc[0]) == x && is_const(eg, pc[1], 3.0))
            };
            tfs == [x, x, x] || (tfs.len() == 1 && pow3(tfs[0]))
        };
        for (_, ch) in nodes(eg, vfs[0], Op::Add) {
            for (a, t) in [(ch[0], ch[1]), (ch[1], ch[0])] {
                if eg.find(a) == x && cubic(t) {
                    let key =
                        OpKey::with(Op::Gelu, &[("approximate", Attr::String("tanh".into()))]);
                    return vec![Expr::Node(key, vec![Expr::Class(x)])];
                }
            }
        }
        vec![]
    }
}

// ==== layernorm, rmsnorm ====

/// `d / √(var + ε)` or `d · (1 / √(var + ε))` at class `id`: returns (d, var, ε).
fn over_rms(eg: &EGraph, id: Id) -> Option<(Id, Id, f64)> {
    let denom = |s: Id| -> Option<(Id, f64)> {
        let (_, sch) = node(eg, s, Op::Sqrt)?;
        let (_, ach) = node(eg, sch[0], Op::Add)?;
        for (var, e) in [(ach[0], ach[1]), (ach[1], ach[0])] {
            if let Some(eps) = scalar(eg, e) {
                return Some((var, eps));
            }
        }
        None
    };
    if let Some((_, ch)) = node(eg, id, Op::Div) {
        if let Some((var, eps)) = denom(ch[1]) {
            return Some((ch[0], var, eps));
        }
    }
    for (_, ch) in nodes(eg, id, Op::Mul) {
        for (d, r) in [(ch[0], ch[1]), (ch[1], ch[0])] {
            if let Some((_, rch)) = node(eg, r, Op::Reciprocal) {
                if let Some((var, eps)) = denom(rch[0]) {
                    return Some((d, var, eps));
                }
            }
        }
    }
    None
}

/// Whether `v` is the mean over the last axis of `d²` (`Pow(d, 2)` or `d · d`).
fn mean_of_square(eg: &EGraph, v: Id, d: Id) -> bool {
    let d = eg.find(d);
    nodes(eg, v, Op::ReduceMean)
        .filter(|(k, ch)| reduces_last_axis(eg, k, ch))
        .any(|(_, ch)| {
            let sq = ch[0];
            nodes(eg, sq, Op::Pow).any(|(_, p)| eg.find(p[0]) == d && is_const(eg, p[1], 2.0))
                || nodes(eg, sq, Op::Mul).any(|(_, m)| eg.find(m[0]) == d && eg.find(m[1]) == d)
        })
}

/// The affine tail of a normalisation at class `id`: (normalised, γ, β), where the result is
/// `n · γ + β`, `n · γ` or `n` itself.
fn affine(eg: &EGraph, id: Id) -> Vec<(Id, Option<Id>, Option<Id>)> {
    let mut v = Vec::new();
    for (_, ch) in nodes(eg, id, Op::Add) {
        for (m, beta) in [(ch[0], ch[1]), (ch[1], ch[0])] {
            for (_, mch) in nodes(eg, m, Op::Mul) {
                for (n, gamma) in [(mch[0], mch[1]), (mch[1], mch[0])] {
                    v.push((n, Some(gamma), Some(beta)));
                }
            }
        }
    }
    for (_, mch) in nodes(eg, id, Op::Mul) {
        for (n, gamma) in [(mch[0], mch[1]), (mch[1], mch[0])] {
            v.push((n, Some(gamma), None));
        }
    }
    v.push((id, None, None));
    v
}

/// Whether `p` is a per-channel parameter of `x`'s last axis (dims `[C]`).
fn per_channel(eg: &EGraph, p: Id, x: Id) -> bool {
    let (Some(pd), Some(xd)) = (dims(eg, p), dims(eg, x)) else {
        return false;
    };
    pd.len() == 1 && xd.last() == pd.first() && dtype(eg, p) == dtype(eg, x)
}

fn ones_like_channels(eg: &EGraph, x: Id) -> Option<Expr> {
    let c = *dims(eg, x)?.last()?;
    (dtype(eg, x) == Some(DType::F32) && c > 0)
        .then(|| Expr::Const(Tensor::from_f32(vec![c], &vec![1.0; c as usize])))
}

fn norm_key(op: Op, eps: f64) -> OpKey {
    OpKey::with(
        op,
        &[
            ("axis", Attr::Int(-1)),
            ("epsilon", Attr::Float(eps as f32)),
        ],
    )
}

struct LayerNorm;

impl Rule for LayerNorm {
    fn name(&self) -> &'static str {
        "layernorm"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        if dtype(eg, id) != Some(DType::F32) || node(eg, id, Op::LayerNormalization).is_some() {
            return vec![];
        }
        for (n, gamma, beta) in affine(eg, id) {
            let Some((d, var, eps)) = over_rms(eg, n) else {
                continue;
            };
            if !mean_of_square(eg, var, d) {
                continue;
            }
            let Some((_, sch)) = node(eg, d, Op::Sub) else {
                continue;
            };
            let x = sch[0];
            let centred = nodes(eg, sch[1], Op::ReduceMean)
                .any(|(k, mch)| reduces_last_axis(eg, k, mch) && eg.find(mch[0]) == eg.find(x));
            if !centred || dims(eg, x) != dims(eg, id) {
                continue;
            }
            if gamma.is_some_and(|g| !per_channel(eg, g, x))
                || beta.is_some_and(|b| !per_channel(eg, b, x))
            {
                continue;
            }
            let scale = match gamma {
                Some(g) => Expr::Class(g),
                None => match ones_like_channels(eg, x) {
                    Some(e) => e,
                    None => continue,
                },
            };
            let mut args = vec![Expr::Class(x), scale];
            if let Some(b) = beta {
                args.push(Expr::Class(b));
            }
            return vec![Expr::Node(norm_key(Op::LayerNormalization, eps), args)];
        }
        vec![]
    }
}

struct RmsNorm;

impl Rule for RmsNorm {
    fn name(&self) -> &'static str {
        "rmsnorm"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        if dtype(eg, id) != Some(DType::F32) || node(eg, id, Op::RMSNormalization).is_some() {
            return vec![];
        }
        for (n, gamma, beta) in affine(eg, id) {
            if beta.is_some() {
                continue;
            }
            let Some((x, var, eps)) = over_rms(eg, n) else {
                continue;
            };
            if !mean_of_square(eg, var, x) || dims(eg, x) != dims(eg, id) {
                continue;
            }
            // A centred operand is LayerNorm's business.
            if node(eg, x, Op::Sub).is_some_and(|(_, s)| {
                nodes(eg, s[1], Op::ReduceMean).any(|(_, m)| eg.find(m[0]) == eg.find(s[0]))
            }) {
                continue;
            }
            let scale = match gamma {
                Some(g) if per_channel(eg, g, x) => Expr::Class(g),
                Some(_) => continue,
                None => match ones_like_channels(eg, x) {
                    Some(e) => e,
                    None => continue,
                },
            };
            return vec![Expr::Node(
                norm_key(Op::RMSNormalization, eps),
                vec![Expr::Class(x), scale],
            )];
        }
        vec![]
    }
}

// ==== softmax ====

struct Softmax;

impl Rule for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        if !is_float_value(eg, id) || node(eg, id, Op::Softmax).is_some() {
            return vec![];
        }
        for (_, ch) in nodes(eg, id, Op::Div) {
            let (e, s) = (eg.find(ch[0]), ch[1]);
            let summed = nodes(eg, s, Op::ReduceSum)
                .any(|(k, sch)| reduces_last_axis(eg, k, sch) && eg.find(sch[0]) == e);
            if !summed {
                continue;
            }
            let Some((_, ech)) = node(eg, e, Op::Exp) else {
                continue;
            };
            let mut x = ech[0];
            if let Some((_, sub)) = node(eg, x, Op::Sub) {
                let max = nodes(eg, sub[1], Op::ReduceMax)
                    .any(|(k, m)| reduces_last_axis(eg, k, m) && eg.find(m[0]) == eg.find(sub[0]));
                if max {
                    x = sub[0];
                }
            }
            if dims(eg, x) == dims(eg, id) && konst(eg, x).is_none() {
                let key = OpKey::with(Op::Softmax, &[("axis", Attr::Int(-1))]);
                return vec![Expr::Node(key, vec![Expr::Class(x)])];
            }
        }
        vec![]
    }
}
