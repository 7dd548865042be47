//! What is known about a kernel's values without running it: the integer constants, for
//! passes and launchers that estimate work from loop bounds (the host's thread heuristic, the
//! fuzz targets' work bound), and indices that are another value plus a constant, which code
//! generators fold into an address's displacement.

use crate::kernel::{BinOp, Block, InstKind, Scalar, Ty, Val};
use std::collections::HashMap;

/// Every value of `b` (and the blocks nested in it) defined by an integer `const`.
pub fn int_constants(b: &Block) -> HashMap<Val, i64> {
    fn walk(b: &Block, out: &mut HashMap<Val, i64>) {
        for i in &b.insts {
            match &i.kind {
                InstKind::Const(Scalar::Int(v)) => {
                    if let Some(&r) = i.results.first() {
                        out.insert(r, *v);
                    }
                }
                InstKind::For { body, .. } => walk(body, out),
                InstKind::If {
                    then_blk, else_blk, ..
                } => {
                    walk(then_blk, out);
                    walk(else_blk, out);
                }
                _ => {}
            }
        }
    }
    let mut out = HashMap::new();
    walk(b, &mut out);
    out
}

/// Every `i64` value of `b` (and the blocks nested in it) that is `x + c` (or `x - c`) for a
/// constant `c`, through chains of such adds, as `(x, c)` with `x` not itself of that form.
/// Code generators address `x + c` as `x` plus a displacement, so loads that differ by a
/// constant share one address computation. `types` gives each value's type.
pub fn index_offsets(b: &Block, types: &dyn Fn(Val) -> Option<Ty>) -> HashMap<Val, (Val, i64)> {
    fn walk(
        b: &Block,
        consts: &HashMap<Val, i64>,
        types: &dyn Fn(Val) -> Option<Ty>,
        out: &mut HashMap<Val, (Val, i64)>,
    ) {
        for i in &b.insts {
            match &i.kind {
                InstKind::Binary(op @ (BinOp::Add | BinOp::Sub), x, y) => {
                    let Some(&r) = i.results.first() else {
                        continue;
                    };
                    if types(r) != Some(Ty::INDEX) {
                        continue;
                    }
                    let (base, c) = match (consts.get(x), consts.get(y), op) {
                        (_, Some(&c), BinOp::Add) => (*x, c),
                        (Some(&c), _, BinOp::Add) => (*y, c),
                        (_, Some(&c), BinOp::Sub) => match c.checked_neg() {
                            Some(n) => (*x, n),
                            None => continue,
                        },
                        _ => continue,
                    };
                    if consts.contains_key(&base) {
                        continue;
                    }
                    let (root, c0) = out.get(&base).copied().unwrap_or((base, 0));
                    if let Some(sum) = c0.checked_add(c) {
                        out.insert(r, (root, sum));
                    }
                }
                InstKind::For { body, .. } => walk(body, consts, types, out),
                InstKind::If {
                    then_blk, else_blk, ..
                } => {
                    walk(then_blk, consts, types, out);
                    walk(else_blk, consts, types, out);
                }
                _ => {}
            }
        }
    }
    let consts = int_constants(b);
    let mut out = HashMap::new();
    walk(b, &consts, types, &mut out);
    out
}
