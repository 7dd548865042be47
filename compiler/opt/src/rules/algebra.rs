//! Algebra and layout rules: chains of transposes, reshape-like ops (Reshape, Flatten,
//! Squeeze, Unsqueeze), identity ops and casts that cancel. They never change numerics: every
//! rewrite here moves or relabels the same bits.
//!
//! | rule | from | to |
//! |---|---|---|
//! | `transpose-transpose` | `Transpose{q}(Transpose{p}(x))` | `Transpose{p∘q}(x)` |
//! | `transpose-identity` | `Transpose{0,1,…}(x)` | `x` |
//! | `reshape-chain` | reshape-like of reshape-like of `x` | `Reshape(x, dims)` |
//! | `reshape-noop` | reshape-like op whose result type is its operand's | `x` |
//! | `identity` | `Identity(x)`, inference `Dropout(x)` | `x` |
//! | `cast-cast` | `Cast{to=t}(Cast{to=w}(x: t))`, `w` holds every value of `t` | `x` |
//! | `cast-noop` | `Cast{to=t}(x: t)` | `x` |
//! | `expand-broadcast` | `op(Expand(x, s), y)`, `op` a broadcasting binary op whose result is the same without the Expand | `op(x, y)` |

use super::{arg, dims, dtype, konst, node, nodes, shape_const, ty, Expr, Rule};
use crate::analysis::EGraph;
use egg::Id;
use std::sync::Arc;
use tessera_ir::{Attr, DType, Op, OpKey};

pub fn rules() -> Vec<Arc<dyn Rule>> {
    vec![
        Arc::new(TransposeTranspose),
        Arc::new(TransposeIdentity),
        Arc::new(ReshapeChain),
        Arc::new(ReshapeNoop),
        Arc::new(Identity),
        Arc::new(CastCast),
        Arc::new(CastNoop),
        Arc::new(ExpandBroadcast),
    ]
}

/// A Transpose's permutation (the default reverses the axes).
fn perm(eg: &EGraph, key: &OpKey, x: Id) -> Option<Vec<usize>> {
    let rank = ty(eg, x)?.shape.rank();
    match key.attr_ints("perm") {
        Some(p) => {
            let p: Vec<usize> = p.iter().map(|&a| a as usize).collect();
            (p.len() == rank && p.iter().all(|&a| a < rank)).then_some(p)
        }
        None => Some((0..rank).rev().collect()),
    }
}

fn is_identity(p: &[usize]) -> bool {
    p.iter().enumerate().all(|(i, &a)| i == a)
}

// ==== transpose-transpose ====

struct TransposeTranspose;

impl Rule for TransposeTranspose {
    fn name(&self) -> &'static str {
        "transpose-transpose"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        let mut out = Vec::new();
        for (k2, ch) in nodes(eg, id, Op::Transpose) {
            let y = ch[0];
            let Some((k1, ch1)) = node(eg, y, Op::Transpose) else {
                continue;
            };
            let x = ch1[0];
            let (Some(p1), Some(p2)) = (perm(eg, k1, x), perm(eg, k2, y)) else {
                continue;
            };
            // z[i] = y[p2[i]] = x[p1[p2[i]]].
            let q: Vec<usize> = p2.iter().map(|&i| p1[i]).collect();
            out.push(if is_identity(&q) {
                Expr::Class(x)
            } else {
                let q: Vec<i64> = q.iter().map(|&a| a as i64).collect();
                Expr::Node(
                    OpKey::with(Op::Transpose, &[("perm", Attr::Ints(q))]),
                    vec![Expr::Class(x)],
                )
            });
        }
        out
    }
}

// ==== transpose-identity ====

struct TransposeIdentity;

impl Rule for TransposeIdentity {
    fn name(&self) -> &'static str {
        "transpose-identity"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        nodes(eg, id, Op::Transpose)
            .filter(|(k, ch)| perm(eg, k, ch[0]).is_some_and(|p| is_identity(&p)))
            .map(|(_, ch)| Expr::Class(ch[0]))
            .take(1)
            .collect()
    }
}

// ==== reshape-chain, reshape-noop ====

const RESHAPE_LIKE: [Op; 4] = [Op::Reshape, Op::Flatten, Op::Squeeze, Op::Unsqueeze];

/// The reshape-like nodes of class `id`, as their data operand.
fn reshapes(eg: &EGraph, id: Id) -> Vec<Id> {
    RESHAPE_LIKE
        .iter()
        .flat_map(|&op| nodes(eg, id, op).map(|(_, ch)| ch[0]))
        .collect()
}

struct ReshapeChain;

impl Rule for ReshapeChain {
    fn name(&self) -> &'static str {
        "reshape-chain"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        let Some(out) = dims(eg, id) else {
            return vec![];
        };
        for y in reshapes(eg, id) {
            for x in reshapes(eg, y) {
                let already =
                    nodes(eg, id, Op::Reshape).any(|(_, ch)| eg.find(ch[0]) == eg.find(x));
                if dims(eg, x).is_some() && !already {
                    return vec![Expr::op(
                        Op::Reshape,
                        vec![Expr::Class(x), shape_const(&out)],
                    )];
                }
            }
        }
        vec![]
    }
}

struct ReshapeNoop;

impl Rule for ReshapeNoop {
    fn name(&self) -> &'static str {
        "reshape-noop"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        let Some(t) = ty(eg, id) else { return vec![] };
        reshapes(eg, id)
            .into_iter()
            .filter(|&x| ty(eg, x) == Some(t) && eg.find(x) != eg.find(id))
            .map(Expr::Class)
            .take(1)
            .collect()
    }
}

// ==== identity ====

struct Identity;

impl Rule for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        if let Some((_, ch)) = node(eg, id, Op::Identity) {
            if eg.find(ch[0]) != eg.find(id) {
                return vec![Expr::Class(ch[0])];
            }
        }
        // Dropout in inference (no training_mode, or a false one) passes its input through.
        for (_, ch) in nodes(eg, id, Op::Dropout).filter(|(k, _)| k.n_outputs == 1) {
            let training =
                arg(ch, eg, 2).map(|t| konst(eg, t).and_then(|t| t.get_i64(0)).map(|v| v != 0));
            if matches!(training, None | Some(Some(false))) && eg.find(ch[0]) != eg.find(id) {
                return vec![Expr::Class(ch[0])];
            }
        }
        vec![]
    }
}

// ==== cast-cast, cast-noop ====

/// Whether every value of `from` is exactly representable in `to`.
pub fn widens(from: DType, to: DType) -> bool {
    use DType::*;
    if from == to {
        return true;
    }
    match (from, to) {
        (F16 | BF16, F32 | F64) | (F32, F64) => true,
        (I8, I16 | I32 | I64) | (I16, I32 | I64) | (I32, I64) => true,
        (U8, I16 | I32 | I64 | U16 | U32 | U64) | (U16, I32 | I64 | U32 | U64) => true,
        (U32, I64 | U64) => true,
        (I8 | U8 | I16 | U16, F32 | F64) | (I32 | U32, F64) => true,
        (I8 | U8, F16) | (I8 | U8, BF16) => true,
        (Bool, _) => to.is_int() || to.is_float(),
        _ => false,
    }
}

struct CastCast;

impl Rule for CastCast {
    fn name(&self) -> &'static str {
        "cast-cast"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        for (_, ch) in nodes(eg, id, Op::Cast) {
            let Some((_, ch1)) = node(eg, ch[0], Op::Cast) else {
                continue;
            };
            let x = ch1[0];
            let (Some(t), Some(w), Some(out)) = (dtype(eg, x), dtype(eg, ch[0]), dtype(eg, id))
            else {
                continue;
            };
            if out == t && widens(t, w) && eg.find(x) != eg.find(id) {
                return vec![Expr::Class(x)];
            }
        }
        vec![]
    }
}

struct CastNoop;

impl Rule for CastNoop {
    fn name(&self) -> &'static str {
        "cast-noop"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        for (_, ch) in nodes(eg, id, Op::Cast) {
            let x = ch[0];
            if dtype(eg, x).is_some() && dtype(eg, x) == dtype(eg, id) && eg.find(x) != eg.find(id)
            {
                return vec![Expr::Class(x)];
            }
        }
        vec![]
    }
}

// ==== expand-broadcast ====

/// Binary elementwise ops that broadcast their operands numpy-style: an operand materialised
/// by `Expand` is read as well through the op's own broadcast.
const BROADCASTING: [Op; 14] = [
    Op::Add,
    Op::Sub,
    Op::Mul,
    Op::Div,
    Op::Max,
    Op::Min,
    Op::Pow,
    Op::And,
    Op::Or,
    Op::Xor,
    Op::Equal,
    Op::Less,
    Op::Greater,
    Op::Where,
];

/// The numpy broadcast of two static shapes.
fn broadcast(a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = a.len().checked_sub(r - i).map_or(1, |j| a[j]);
            let db = b.len().checked_sub(r - i).map_or(1, |j| b[j]);
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

struct ExpandBroadcast;

impl Rule for ExpandBroadcast {
    fn name(&self) -> &'static str {
        "expand-broadcast"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        let Some(out) = dims(eg, id) else {
            return vec![];
        };
        for op in BROADCASTING {
            for (k, ch) in nodes(eg, id, op) {
                for (i, &c) in ch.iter().enumerate() {
                    let Some((_, ech)) = node(eg, c, Op::Expand) else {
                        continue;
                    };
                    let x = ech[0];
                    // The result's shape with `x` in place of the Expand: every operand's
                    // static shape broadcast together must still be `out`.
                    let mut shape = Some(Vec::new());
                    for (j, &o) in ch.iter().enumerate() {
                        let d = dims(eg, if j == i { x } else { o });
                        shape = match (shape, d) {
                            (Some(s), Some(d)) => broadcast(&s, &d),
                            _ => None,
                        };
                    }
                    if shape.as_ref() != Some(&out) {
                        continue;
                    }
                    let args = ch
                        .iter()
                        .enumerate()
                        .map(|(j, &o)| Expr::Class(if j == i { x } else { o }))
                        .collect();
                    return vec![Expr::Node(k.clone(), args)];
                }
            }
        }
        vec![]
    }
}
