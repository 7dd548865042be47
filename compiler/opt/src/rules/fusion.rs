//! Fusion rules: matrix products with their epilogues become one FusedMatMul kernel, and the
//! decomposed forms exporters write (and the ONNX `_expanded` node tests hold) of GELU,
//! LayerNorm, RMSNorm and softmax become the single ops, which lower to one kernel each.
//! At the `exact` policy these change numerics only by f32 reassociation: the fused op computes
//! the same formula in one pass.
//!
//! | rule | from | to |
//! |---|---|---|
//! | `matmul-bias` | `Add(MatMul(a, b), bias[N])` (f32) | `FusedMatMul(a, b, bias)` |
//! | `matmul-relu` | `Relu(MatMul(a, b))`, `Relu(FusedMatMul(…))` | `FusedMatMul{activation = "Relu"}` |
//! | `matmul-activation` | `Gelu`, `Sigmoid` or `Tanh` of a product | `FusedMatMul{activation = "Gelu" \| "GeluTanh" \| "Sigmoid" \| "Tanh"}` |
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
        Arc::new(MatMulBias),
        Arc::new(MATMUL_RELU),
        Arc::new(MATMUL_ACTIVATION),
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

/// A FusedMatMul's operands, padded to its six positions.
fn fused_args(ch: &[Id]) -> Vec<Expr> {
    (0..6)
        .map(|i| ch.get(i).map_or(Expr::Absent, |&c| Expr::Class(c)))
        .collect()
}

fn fused_key(activation: Option<&str>) -> OpKey {
    match activation {
        Some(a) => OpKey::with(Op::FusedMatMul, &[("activation", Attr::String(a.into()))]),
        None => OpKey::plain(Op::FusedMatMul),
    }
}

/// The f32 products of class `id` open to an epilogue, as FusedMatMul operand lists: plain
/// f32 MatMuls, and FusedMatMuls with no activation (and, if `need_no_bias`, no bias).
fn products(eg: &EGraph, id: Id, need_no_bias: bool) -> Vec<Vec<Id>> {
    let mut v = Vec::new();
    if dtype(eg, id) != Some(DType::F32) {
        return v;
    }
    for (_, ch) in nodes(eg, id, Op::MatMul) {
        let ok = |c: Id| ty(eg, c).is_some_and(|t| t.dtype == DType::F32 && t.shape.rank() >= 2);
        if ok(ch[0]) && ok(ch[1]) {
            v.push(ch.to_vec());
        }
    }
    for (k, ch) in nodes(eg, id, Op::FusedMatMul) {
        if k.attr("activation").is_none() && !(need_no_bias && arg(ch, eg, 2).is_some()) {
            v.push(ch.to_vec());
        }
    }
    v
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
        let n = out.last().copied().unwrap_or(0);
        for (_, ch) in nodes(eg, id, Op::Add) {
            for (p, bias) in [(ch[0], ch[1]), (ch[1], ch[0])] {
                let Some(bd) = dims(eg, bias) else { continue };
                let per_column = bd.last() == Some(&n)
                    && bd.iter().rev().skip(1).all(|&d| d == 1)
                    && bd.len() <= out.len();
                if !per_column
                    || dtype(eg, bias) != Some(DType::F32)
                    || dims(eg, p) != Some(out.clone())
                {
                    continue;
                }
                if !only_user(eg, p, id) {
                    continue;
                }
                // Every product form the class has (a float one, an integer one from
                // `qdq-matmul`, …) gets its fused alternative; the cost model picks.
                return products(eg, p, true)
                    .iter()
                    .map(|args| {
                        let mut a = fused_args(args);
                        a[2] = Expr::Class(bias);
                        Expr::Node(fused_key(None), a)
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
                    .map(|args| Expr::Node(fused_key(Some(act)), fused_args(args)))
                    .collect();
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
