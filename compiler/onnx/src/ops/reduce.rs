//! Registry lines for reductions, arg-reductions, CumSum and TopK.

use super::{axes_to_operand, op, set_operand, take, up, Entry};
use crate::error::Result;
use crate::import::Ctx;
use tessera_ir::{Attr, Node, Op};

pub(crate) const OPS: &[Entry] = &[
    // `axes` moved from attribute to operand 1: at opset 13 for ReduceSum, 18 for the rest.
    up("ReduceSum", Op::ReduceSum, &[(13, axes_to_operand)]),
    up("ReduceMean", Op::ReduceMean, &[(18, axes_to_operand)]),
    up("ReduceMax", Op::ReduceMax, &[(18, axes_to_operand)]),
    up("ReduceMin", Op::ReduceMin, &[(18, axes_to_operand)]),
    up("ReduceProd", Op::ReduceProd, &[(18, axes_to_operand)]),
    up("ReduceL1", Op::ReduceL1, &[(18, axes_to_operand)]),
    up("ReduceL2", Op::ReduceL2, &[(18, axes_to_operand)]),
    up(
        "ReduceSumSquare",
        Op::ReduceSumSquare,
        &[(18, axes_to_operand)],
    ),
    up("ReduceLogSum", Op::ReduceLogSum, &[(18, axes_to_operand)]),
    up(
        "ReduceLogSumExp",
        Op::ReduceLogSumExp,
        &[(18, axes_to_operand)],
    ),
    op("ArgMax", Op::ArgMax),
    op("ArgMin", Op::ArgMin),
    op("CumSum", Op::CumSum),
    up("TopK", Op::TopK, &[(10, topk_k_attr)]),
    // added: sequence and attention ops
    op("CumProd", Op::CumProd),
];

/// Opset < 10: `k` was an attribute; it became a 1-element i64 operand.
fn topk_k_attr(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    match take(&mut node, "k") {
        Some(Attr::Int(k)) => {
            let c = ctx.ints("topk_k", &[k]);
            set_operand(&mut node, 1, Some(c));
            Ok(vec![node])
        }
        _ => Err(ctx.bad(&node, "needs an int attribute `k`")),
    }
}
