//! The one place the frontend calls into graph-IR passes (folding, ordering, inference,
//! verification) and the op table's list of shape-deciding operands, so a change in those
//! APIs touches one file.

use tessera_ir::{ConstEval, Graph, Op};

pub use tessera_ir::error::IrError;

/// Operand positions whose contents decide a result's shape (bound inputs feed these).
pub fn shape_operands(op: Op) -> &'static [usize] {
    tessera_ir::op::shape_operands(op)
}

/// Runs the graph-IR passes over a freshly imported, topologically ordered graph: fold what is
/// known at compile time with `folder` (only the data-free nodes when `None`), re-order
/// (folding removes nodes), infer every type, verify.
pub fn run_passes(graph: &mut Graph, folder: Option<&dyn ConstEval>) -> Result<(), IrError> {
    tessera_ir::fold::fold_constants(graph, folder.unwrap_or(&tessera_ir::NoEval))?;
    tessera_ir::verify::topo_sort(graph)?;
    tessera_ir::infer::infer_shapes(graph)?;
    tessera_ir::verify::verify(graph)
}
