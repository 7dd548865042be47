//! Sibling fusion: matrix products that share their A operand and take constant weights (the
//! Q, K and V projections of an attention block) become one product over the concatenated
//! weights, whose result a `Split` hands back in pieces. The merged kernel reads A once and
//! is one launch instead of several; the split is one copy of the results. Whether that pays
//! is the cost model's call per target: a launch-bound target (small products, costly
//! launches) takes it, a bandwidth-bound one keeps the separate products.
//!
//! | rule | from | to |
//! |---|---|---|
//! | `matmul-merge` | `n ≥ 2` f32 `MatMul(x, w_i)`, or `FusedMatMul(x, w_i, b_i)` of one key, constant `w_i` (and `b_i`) of one K | `Proj_i(Split{axis = −1}(P(x, Concat(w…), Concat(b…)), [N_1, …, N_n]))` |
//!
//! Each member's own result columns are computed by the same dot products as before, so the
//! merge is exact. The concatenations are of constants, which the driver folds after the
//! optimizer; [`crate::cost`] counts them as free and shares the merged product and its split
//! among the projections that read them.

use super::{arg, dims, dtype, is_absent, konst, nodes, Expr, Rule};
use crate::analysis::EGraph;
use egg::Id;
use std::sync::Arc;
use tessera_ir::{Attr, DType, Op, OpKey, Tensor};

pub fn rules() -> Vec<Arc<dyn Rule>> {
    vec![Arc::new(MatMulMerge)]
}

/// At most this many siblings are merged into one product (a wider fan-out of one activation
/// is a different pattern, such as a mixture of experts, and its concatenated weights grow).
const MAX_MEMBERS: usize = 8;

/// One product of a sibling set.
#[derive(Clone, Debug)]
struct Member {
    class: Id,
    /// The weights and the bias, when there is one.
    w: Id,
    bias: Option<Id>,
    /// The constant-table indices of the weights and the bias: what orders the set, the same
    /// in every iteration whatever the class ids are by then.
    order: (u32, u32),
    /// Result columns.
    n: u64,
}

/// The form of a product that merges: its op key and its A operand.
fn form_of(eg: &EGraph, key: &OpKey, ch: &[Id]) -> Option<(OpKey, Id)> {
    match key.op {
        Op::MatMul => Some((key.clone(), ch[0])),
        // A FusedMatMul with its bias (or none) and activation, but no scales or residual: each
        // member's epilogue is then the merged product's, column by column.
        Op::FusedMatMul if (3..ch.len()).all(|i| is_absent(eg, ch[i])) => {
            Some((key.clone(), ch[0]))
        }
        _ => None,
    }
}

/// Class `c`'s product of `form` on A `x`, as a member, when its weights (and bias) are f32
/// constants of rank 2 (rank 1) with `k` rows of reduction.
fn member(eg: &EGraph, c: Id, form: &OpKey, x: Id, k: u64) -> Option<Member> {
    let c = eg.find(c);
    let trans_b = form.attr_int("transB", 0) != 0;
    nodes(eg, c, form.op).find_map(|(key, ch)| {
        if key != form || eg.find(ch[0]) != x || form_of(eg, key, ch).is_none() {
            return None;
        }
        let w = eg.find(ch[1]);
        // Weights that are already a concatenation are a merged product's: merging it again
        // with its own members would grow the e-graph every iteration.
        if nodes(eg, w, Op::Concat).next().is_some() {
            return None;
        }
        let wd = dims(eg, w)?;
        let wi = eg[w].data.konst?;
        if wd.len() != 2 || dtype(eg, w) != Some(DType::F32) || konst(eg, w).is_none() {
            return None;
        }
        let (wk, n) = if trans_b {
            (wd[1], wd[0])
        } else {
            (wd[0], wd[1])
        };
        if wk != k {
            return None;
        }
        let bias = arg(ch, eg, 2).map(|b| eg.find(b));
        let bi = match bias {
            Some(b) => {
                let ok = dims(eg, b) == Some(vec![n]) && dtype(eg, b) == Some(DType::F32);
                let i = eg[b].data.konst.filter(|_| ok && konst(eg, b).is_some())?;
                i + 1
            }
            None => 0,
        };
        Some(Member {
            class: c,
            w,
            bias,
            order: (wi, bi),
            n,
        })
    })
}

/// `matmul-merge`: see the module table.
struct MatMulMerge;

impl Rule for MatMulMerge {
    fn name(&self) -> &'static str {
        "matmul-merge"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        let id = eg.find(id);
        let mut out = Vec::new();
        let Some(ydims) = dims(eg, id) else {
            return out;
        };
        if dtype(eg, id) != Some(DType::F32) || ydims.len() < 2 {
            return out;
        }
        let candidates: Vec<(OpKey, Id)> = [Op::MatMul, Op::FusedMatMul]
            .into_iter()
            .flat_map(|op| nodes(eg, id, op))
            .filter_map(|(key, ch)| form_of(eg, key, ch))
            .collect();
        for (form, x) in candidates {
            let x = eg.find(x);
            let Some(xd) = dims(eg, x) else { continue };
            if dtype(eg, x) != Some(DType::F32) || xd.len() < 2 {
                continue;
            }
            let k = xd[xd.len() - 1];
            let Some(me) = member(eg, id, &form, x, k) else {
                continue;
            };
            // The siblings: every class reading x through a product of the same form.
            let mut set: Vec<Member> = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for p in eg[x].parents() {
                let p = eg.find(p);
                if !seen.insert(p) {
                    continue;
                }
                if let Some(m) = member(eg, p, &form, x, k) {
                    if m.bias.is_some() == me.bias.is_some() && dims(eg, p).is_some() {
                        set.push(m);
                    }
                }
            }
            set.sort_by_key(|m| m.order);
            set.dedup_by_key(|m| m.order);
            if set.len() < 2 || set.len() > MAX_MEMBERS {
                continue;
            }
            let Some(pos) = set.iter().position(|m| m.order == me.order) else {
                continue;
            };
            // Every member's result must be x's rows by its own columns.
            let lead = &ydims[..ydims.len() - 1];
            if set.iter().any(|m| {
                dims(eg, m.class)
                    .is_none_or(|d| &d[..d.len() - 1] != lead || d.last() != Some(&m.n))
            }) {
                continue;
            }
            out.push(merged(&form, x, &set, pos));
        }
        out
    }
}

/// Result `pos` of the split of the product of `form` over the set's concatenated weights.
fn merged(form: &OpKey, x: Id, set: &[Member], pos: usize) -> Expr {
    let trans_b = form.attr_int("transB", 0) != 0;
    let concat = |axis: i64, parts: Vec<Expr>| {
        Expr::Node(OpKey::with(Op::Concat, &[("axis", Attr::Int(axis))]), parts)
    };
    let w = concat(
        if trans_b { 0 } else { 1 },
        set.iter().map(|m| Expr::Class(m.w)).collect(),
    );
    let mut args = vec![Expr::Class(x), w];
    if form.op == Op::FusedMatMul {
        let bias = match set[0].bias {
            Some(_) => concat(
                0,
                set.iter().filter_map(|m| m.bias.map(Expr::Class)).collect(),
            ),
            None => Expr::Absent,
        };
        args.push(bias);
        args.extend((3..6).map(|_| Expr::Absent));
    }
    let product = Expr::Node(form.clone(), args);
    let sizes: Vec<i64> = set.iter().map(|m| m.n as i64).collect();
    let split = OpKey::new(
        Op::Split,
        [("axis".to_string(), Attr::Int(-1))].into_iter().collect(),
        set.len(),
    );
    let sizes = Expr::Const(Tensor::from_i64(vec![sizes.len() as u64], &sizes));
    Expr::Proj(
        pos as u32,
        Box::new(Expr::Node(split, vec![product, sizes])),
    )
}
