//! The one place the frontend calls into graph-IR passes (folding, ordering, inference,
//! verification) and the op table's list of shape-deciding operands.
//!
//! FALLBACK: while `tessera_ir::{error, infer, verify, fold}` and `op::shape_operands` are being
//! written, this module holds minimal local stand-ins so the crate builds. Once they exist,
//! this file shrinks to re-exports and calls; nothing else in the crate changes.

use tessera_ir::{Graph, Op};

/// Stand-in for `tessera_ir::error::IrError`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IrError(pub String);

/// Stand-in for `tessera_ir::op::shape_operands`: operand positions whose contents decide a
/// result's shape.
pub fn shape_operands(op: Op) -> &'static [usize] {
    use Op::*;
    match op {
        Reshape | Expand | Tile | ConstantOfShape => &[1],
        Squeeze | Unsqueeze | TopK | CumSum => &[1],
        Slice => &[1, 2, 3, 4],
        Split => &[1],
        Pad => &[1, 3],
        Resize => &[1, 2, 3],
        OneHot => &[1],
        Range => &[0, 1, 2],
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2
        | ReduceSumSquare | ReduceLogSum | ReduceLogSumExp => &[1],
        _ => &[],
    }
}

/// Runs the graph-IR passes over a freshly imported graph: fold constants, order nodes,
/// infer shapes, verify.
pub fn run_passes(_graph: &mut Graph) -> Result<(), IrError> {
    Ok(())
}
