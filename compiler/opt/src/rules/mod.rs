//! The rewrite rules, one family per file: `algebra.rs` (transpose, reshape, identity and cast
//! chains), `fusion.rs` (matrix-product epilogues; LayerNorm, GELU, softmax and RMSNorm
//! recognised from their decomposed forms), `merge.rs` (sibling products sharing their A
//! operand, such as Q/K/V, as one product), `lowprec.rs` (QDQ → integer products, Q/DQ pairs,
//! f16/bf16 products). Start at [`Rule`].
//!
//! A rule looks at one e-class and returns alternatives ([`Expr`]) equal to it; the adapter
//! [`Adapt`] makes it an egg searcher and applier, adds the alternatives and merges them into
//! the class. An alternative whose type differs from the class's is a bug in the rule: it is
//! not merged, and the optimizer fails naming the rule.

pub mod algebra;
pub mod fusion;
pub mod lowprec;
pub mod merge;

use crate::analysis::EGraph;
use crate::lang::TNode;
use crate::Precision;
use egg::{Id, Rewrite, SearchMatches, Subst, Symbol};
use std::sync::Arc;
use tessera_ir::{Attr, DType, Op, OpKey, Tensor, TensorType};

/// An expression to add to the e-graph: existing classes, new constants and new op nodes.
#[derive(Clone, Debug)]
pub enum Expr {
    Class(Id),
    Absent,
    Const(Tensor),
    Node(OpKey, Vec<Expr>),
    /// Result `k` of a multi-result node.
    Proj(u32, Box<Expr>),
}

impl Expr {
    pub fn op(op: Op, args: Vec<Expr>) -> Expr {
        Expr::Node(OpKey::plain(op), args)
    }
}

/// One rewrite rule.
pub trait Rule: Send + Sync {
    /// kebab-case, as the report prints it.
    fn name(&self) -> &'static str;
    /// Alternatives equal to class `id`; empty when the rule does not apply.
    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr>;
}

/// Every rule the policy allows, in a fixed order (the order rules are run in).
pub fn all(precision: Precision) -> Vec<Arc<dyn Rule>> {
    let mut v = algebra::rules();
    v.extend(fusion::rules());
    v.extend(merge::rules());
    v.extend(lowprec::rules(precision));
    v
}

/// A [`Rule`] as an egg rewrite.
pub struct Adapt(pub Arc<dyn Rule>);

impl Adapt {
    pub fn rewrite(rule: Arc<dyn Rule>) -> Rewrite<TNode, crate::analysis::Types> {
        let name = rule.name();
        // The name is unique and both halves are our own types, so this cannot fail; if it
        // did, egg would report it, never silently drop the rule.
        Rewrite::new(name, Adapt(rule.clone()), Adapt(rule)).expect("rule names are unique")
    }
}

impl egg::Searcher<TNode, crate::analysis::Types> for Adapt {
    fn search_eclass_with_limit(
        &self,
        eg: &EGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, TNode>> {
        if limit == 0 || self.0.find(eg, eclass).is_empty() {
            return None;
        }
        Some(SearchMatches {
            eclass,
            substs: vec![Subst::with_capacity(0)],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<egg::Var> {
        vec![]
    }
}

impl egg::Applier<TNode, crate::analysis::Types> for Adapt {
    fn apply_one(
        &self,
        eg: &mut EGraph,
        eclass: Id,
        _subst: &Subst,
        _ast: Option<&egg::PatternAst<TNode>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        let mut changed = Vec::new();
        for e in self.0.find(eg, eclass) {
            let new = add_expr(eg, &e);
            let want = eg[eclass].data.tys.clone();
            let got = eg[new].data.tys.clone();
            if got != want {
                if eg.analysis.error.is_none() {
                    let message = match &eg[new].data.err {
                        Some(e) if got.is_empty() => e.clone(),
                        _ => format!(
                            "built {} for a value of type {}",
                            types_text(&got),
                            types_text(&want)
                        ),
                    };
                    eg.analysis.error = Some((self.0.name().to_string(), message));
                }
                continue;
            }
            if eg.union(eclass, new) {
                *eg.analysis
                    .fired
                    .entry(self.0.name().to_string())
                    .or_default() += 1;
                changed.push(eclass);
            }
        }
        changed
    }
}

fn types_text(t: &[TensorType]) -> String {
    if t.is_empty() {
        return "an untyped value".into();
    }
    t.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds `e`, returning its class.
pub fn add_expr(eg: &mut EGraph, e: &Expr) -> Id {
    match e {
        Expr::Class(id) => *id,
        Expr::Absent => eg.add(TNode::Absent),
        Expr::Const(t) => {
            let c = eg.analysis.add_made_const(t.clone());
            eg.add(TNode::Const(c))
        }
        Expr::Node(k, args) => {
            let ch: Vec<Id> = args.iter().map(|a| add_expr(eg, a)).collect();
            eg.add(TNode::Op(k.clone(), ch))
        }
        Expr::Proj(k, t) => {
            let t = add_expr(eg, t);
            eg.add(TNode::Proj(*k, [t]))
        }
    }
}

// ==== matching helpers ====

/// The op nodes of class `id` with op `op`, as (key, operands).
pub fn nodes<'a>(eg: &'a EGraph, id: Id, op: Op) -> impl Iterator<Item = (&'a OpKey, &'a [Id])> {
    eg[id].nodes.iter().filter_map(move |n| match n {
        TNode::Op(k, ch) if k.op == op => Some((k, ch.as_slice())),
        _ => None,
    })
}

/// The first node of class `id` with op `op` and one result.
pub fn node(eg: &EGraph, id: Id, op: Op) -> Option<(&OpKey, &[Id])> {
    nodes(eg, id, op).find(|(k, _)| k.n_outputs == 1)
}

/// Whether class `c` is read only by class `user` (and is no graph output): fusing it into
/// `user` then removes it rather than computing it twice.
pub fn only_user(eg: &EGraph, c: Id, user: Id) -> bool {
    let (c, user) = (eg.find(c), eg.find(user));
    !eg.analysis.roots.iter().any(|&r| eg.find(r) == c)
        && eg[c].parents().all(|p| eg.find(p) == user)
}

/// Whether every use of class `c` leads into class `user`: `c` is no graph output, and each
/// class that reads it is `user` or (within a few steps) reads only into `user`. This is
/// [`only_user`] for an op recognised from a decomposed form, whose input still has the
/// decomposition's nodes as readers (GELU's `x` is read by `x/√2` and by `x·…`): once `user`
/// takes their place, nothing else reads `c`.
pub fn only_user_within(eg: &EGraph, c: Id, user: Id) -> bool {
    let (c, user) = (eg.find(c), eg.find(user));
    let is_root = |x: Id| eg.analysis.roots.iter().any(|&r| eg.find(r) == x);
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(c, 0u32)];
    while let Some((x, depth)) = stack.pop() {
        if is_root(x) {
            return false;
        }
        let mut any = false;
        for p in eg[x].parents() {
            let p = eg.find(p);
            any = true;
            if p == user || !seen.insert(p) {
                continue;
            }
            // Bounded: a use farther than this from `user`, or a wide fan-out, counts as a
            // use elsewhere.
            if depth >= 8 || seen.len() > 64 {
                return false;
            }
            stack.push((p, depth + 1));
        }
        if !any && x != c {
            // A class nothing reads that is no output: a dead remnant, harmless.
            continue;
        }
    }
    true
}

/// The single type of class `id`.
pub fn ty(eg: &EGraph, id: Id) -> Option<&TensorType> {
    let t = &eg[id].data.tys;
    if t.len() == 1 {
        t.first()
    } else {
        None
    }
}

pub fn dtype(eg: &EGraph, id: Id) -> Option<DType> {
    ty(eg, id).map(|t| t.dtype)
}

/// Static dims of class `id`.
pub fn dims(eg: &EGraph, id: Id) -> Option<Vec<u64>> {
    ty(eg, id).and_then(|t| t.shape.as_static())
}

/// The contents of class `id`, when known.
pub fn konst(eg: &EGraph, id: Id) -> Option<&Tensor> {
    let d = &eg[id].data;
    if d.input {
        return None;
    }
    d.konst.and_then(|c| eg.analysis.konst.get(c as usize))
}

/// The value of a constant whose elements are all equal (a scalar, or a splat).
pub fn scalar(eg: &EGraph, id: Id) -> Option<f64> {
    let t = konst(eg, id)?;
    let v = t.to_f64_vec()?;
    let first = *v.first()?;
    v.iter().all(|&x| x == first).then_some(first)
}

/// Whether class `id` is the constant `want`, to a relative tolerance of 1e-6.
pub fn is_scalar(eg: &EGraph, id: Id, want: f64) -> bool {
    scalar(eg, id).is_some_and(|v| (v - want).abs() <= 1e-6 * want.abs().max(1e-30))
}

/// Whether class `id` is omitted.
pub fn is_absent(eg: &EGraph, id: Id) -> bool {
    eg[id].nodes.iter().any(|n| matches!(n, TNode::Absent))
}

/// Operand `i`, if present.
pub fn arg(ch: &[Id], eg: &EGraph, i: usize) -> Option<Id> {
    ch.get(i).copied().filter(|&c| !is_absent(eg, c))
}

/// The reduction axes of a Reduce* node, normalised to the operand's rank (None if unknown).
pub fn reduce_axes(eg: &EGraph, key: &OpKey, ch: &[Id]) -> Option<Vec<usize>> {
    let rank = ty(eg, ch[0])?.shape.rank() as i64;
    let raw: Vec<i64> = match arg(ch, eg, 1) {
        Some(a) => konst(eg, a)?.to_i64_vec()?,
        None => key.attr_ints("axes")?.to_vec(),
    };
    let mut v: Vec<usize> = raw
        .iter()
        .map(|&a| if a < 0 { a + rank } else { a })
        .filter(|&a| a >= 0 && a < rank)
        .map(|a| a as usize)
        .collect();
    v.sort_unstable();
    v.dedup();
    (v.len() == raw.len()).then_some(v)
}

/// Whether a Reduce* node reduces only the last axis and keeps it.
pub fn reduces_last_axis(eg: &EGraph, key: &OpKey, ch: &[Id]) -> bool {
    let Some(rank) = ty(eg, ch[0]).map(|t| t.shape.rank()) else {
        return false;
    };
    key.attr_int("keepdims", 1) == 1
        && rank > 0
        && reduce_axes(eg, key, ch).is_some_and(|a| a == [rank - 1])
}

/// The factors of a product tree rooted at `id` (Mul nodes, up to `depth` levels; Div by a
/// constant counts as a factor 1/c): the non-constant factors and the product of constants.
pub fn factors(eg: &EGraph, id: Id, depth: u32) -> (Vec<Id>, f64) {
    let mut out = Vec::new();
    let mut c = 1.0;
    collect_factors(eg, id, depth, &mut out, &mut c);
    out.sort();
    (out, c)
}

fn collect_factors(eg: &EGraph, id: Id, depth: u32, out: &mut Vec<Id>, c: &mut f64) {
    let id = eg.find(id);
    if let Some(v) = scalar_f32(eg, id) {
        *c *= v;
        return;
    }
    if depth > 0 {
        if let Some((_, ch)) = node(eg, id, Op::Mul) {
            collect_factors(eg, ch[0], depth - 1, out, c);
            collect_factors(eg, ch[1], depth - 1, out, c);
            return;
        }
        if let Some((_, ch)) = node(eg, id, Op::Div) {
            if let Some(v) = scalar_f32(eg, ch[1]).filter(|v| *v != 0.0) {
                *c /= v;
                collect_factors(eg, ch[0], depth - 1, out, c);
                return;
            }
        }
    }
    out.push(id);
}

/// A float scalar constant (one element).
fn scalar_f32(eg: &EGraph, id: Id) -> Option<f64> {
    let t = konst(eg, id)?;
    (t.dtype.is_float() && t.num_elements() == 1)
        .then(|| t.get_f64(0))
        .flatten()
}

/// An i64 shape constant.
pub fn shape_const(dims: &[u64]) -> Expr {
    let v: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    Expr::Const(Tensor::from_i64(vec![v.len() as u64], &v))
}

/// An attribute list for [`OpKey::with`].
pub fn int_attr(name: &str, v: i64) -> (&str, Attr) {
    (name, Attr::Int(v))
}
