//! Registry lines for optionals on plain tensors. Graph IR values are tensors, never empty
//! optionals, so these resolve at import: `OptionalHasElement` of a tensor is true and of an
//! omitted input false (a constant), `OptionalGetElement` and `Optional` of a tensor are the
//! tensor itself. Optional-typed graph inputs and an empty `Optional()` are refused.

use super::{up, Entry};
use crate::error::Result;
use crate::import::Ctx;
use tessera_ir::{Node, Op, Tensor, TensorType};

pub(crate) const OPS: &[Entry] = &[
    up(
        "OptionalHasElement",
        Op::Identity,
        &[(i64::MAX, has_element)],
    ),
    up("OptionalGetElement", Op::Identity, &[(i64::MAX, of_tensor)]),
    up("Optional", Op::Identity, &[(i64::MAX, of_tensor)]),
];

fn has_element(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    let present = node.input(0).is_some();
    let &[out] = node.outputs.as_slice() else {
        return Err(ctx.bad(&node, "expects one result"));
    };
    let v = ctx.b.graph.value_mut(out);
    v.ty = Some(TensorType::fixed(tessera_ir::DType::Bool, &[]));
    v.konst = Some(Tensor::new(
        tessera_ir::DType::Bool,
        vec![],
        vec![u8::from(present)],
    ));
    Ok(Vec::new())
}

fn of_tensor(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    if node.input(0).is_none() {
        return Err(ctx.unsupported(&node, "an empty optional (graph IR has no optional values)"));
    }
    // `Optional`'s `type` attribute only matters for an empty optional.
    node.attrs.clear();
    Ok(vec![node])
}
