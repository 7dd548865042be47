//! Lowering of elementwise ops: arithmetic, logic, comparisons, activations, casts. One section per op.

use crate::{LowerCx, Result};
use tessera_ir::Node;
use tessera_kir::Execution;

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    Err(cx.unsupported(format!("no lowering for op {}", node.op)))
}
