//! Lowering of custom ops: the hand-written kernel of an `Op::Custom` node (its `source`
//! attribute, see `tessera_ir::custom`) is instantiated for the node's shapes, parsed and
//! verified as kernel IR, checked against the signature, and launched on the inputs and
//! outputs. The kernel then goes through each target's backend like any lowered kernel.

use crate::{LowerCx, Result};
use tessera_ir::custom::CustomOp;
use tessera_ir::{Attr, Node};
use tessera_kir::{Access, Execution};

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let src = match node.attr("source") {
        Some(Attr::String(s)) => s.clone(),
        _ => return Err(cx.invalid("custom op node without its `source` attribute")),
    };
    let op = CustomOp::parse(&src).map_err(|e| cx.invalid(format!("custom op source: {e}")))?;
    let mut ins = Vec::new();
    let mut args = Vec::new();
    for (i, v) in node.inputs.iter().enumerate() {
        let v =
            v.ok_or_else(|| cx.invalid(format!("custom op {}: input {i} is omitted", op.op_type)))?;
        ins.push((cx.dtype(v)?, cx.dims(v)?));
        args.push(cx.buffer(v)?);
    }
    let env = op
        .bind(&ins)
        .map_err(|e| cx.invalid(format!("custom op {}: {e}", op.op_type)))?;
    let text = op
        .instantiate(&env)
        .map_err(|e| cx.invalid(format!("custom op {}: {e}", op.op_type)))?;
    let mut kernel = tessera_kir::parse_kernel(&text)
        .map_err(|e| cx.invalid(format!("the kernel of custom op {}: {e}", op.op_type)))?;
    // The kernel's parameters are the inputs in order, then the outputs, with their dtypes
    // and element counts; outputs are written.
    let mut want = Vec::new();
    for (i, &(dt, ref dims)) in ins.iter().enumerate() {
        want.push((
            op.inputs[i].name.clone(),
            dt,
            dims.iter().product::<u64>(),
            false,
        ));
    }
    for (k, &o) in node.outputs.iter().enumerate() {
        let name = op
            .outputs
            .get(k)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        want.push((name, cx.dtype(o)?, cx.numel(o)?, true));
        args.push(cx.buffer(o)?);
    }
    if kernel.num_params != want.len() {
        return Err(cx.invalid(format!(
            "the kernel of custom op {} has {} parameters; its signature has {} inputs and outputs",
            op.op_type,
            kernel.num_params,
            want.len()
        )));
    }
    for (p, (name, dt, len, out)) in kernel.params().iter().zip(&want) {
        if p.dtype != *dt
            || p.len != (*len).max(1) && p.len != *len
            || (*out && p.access == Access::Read)
        {
            return Err(cx.invalid(format!(
                "the kernel of custom op {}: parameter `{}` is {} {}[{}] {}, but `{name}` needs {dt}[{len}]{}",
                op.op_type,
                p.name,
                p.space.name(),
                p.dtype,
                p.len,
                p.access.name(),
                if *out { " written" } else { "" }
            )));
        }
    }
    kernel.name = cx.kernel_name(&format!("custom_{}", op.op_type.to_ascii_lowercase()));
    cx.launch(kernel, args);
    Ok(Execution::Kernel)
}
