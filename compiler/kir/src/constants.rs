//! What is known about a kernel's values without running it: the integer constants, for
//! passes and launchers that estimate work from loop bounds (the host's thread heuristic, the
//! fuzz targets' work bound).

use crate::kernel::{Block, InstKind, Scalar, Val};
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
