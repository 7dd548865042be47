//! Selections whose result size depends on the data (NonZero, Compress, Unique,
//! NonMaxSuppression) become host steps of the plan ([`Step::Host`]): the runtime computes
//! them and the size they produce. Each result is allocated at its largest possible size;
//! only graph outputs may have such a size (a later kernel would need a static one).

use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op};
use tessera_kir::{Execution, HostOp, Step};

/// The dtypes the runtime's host ops read.
fn host_readable(d: DType) -> bool {
    use DType::*;
    matches!(d, F64 | F32 | F16 | BF16 | I64 | I32 | I16 | I8 | U64 | U32 | U16 | U8 | Bool)
}

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    for v in node.inputs.iter().flatten() {
        let d = cx.dtype(*v)?;
        if !host_readable(d) {
            return Err(cx.unsupported(format!("dtype {d} in a host op")));
        }
    }
    let x = node.input(0).ok_or_else(|| cx.invalid("missing operand 0"))?;
    let dims = cx.dims(x)?;
    let numel: u64 = dims.iter().product();
    let axis = match node.attr("axis") {
        Some(tessera_ir::Attr::Int(a)) => {
            let r = dims.len() as i64;
            let a2 = if *a < 0 { a + r } else { *a };
            if a2 < 0 || a2 >= r {
                return Err(cx.invalid(format!("axis {a} is out of range for rank {r}")));
            }
            Some(a2 as usize)
        }
        _ => None,
    };
    let (op, capacity): (HostOp, Vec<Vec<u64>>) = match node.op {
        Op::NonZero => (HostOp::NonZero, vec![vec![dims.len().max(1) as u64, numel]]),
        Op::Compress => {
            let c = node.input(1).ok_or_else(|| cx.invalid("missing condition"))?;
            let c = cx.numel(c)?;
            let cap = match axis {
                Some(a) => {
                    let mut d = dims.clone();
                    d[a] = d[a].min(c);
                    d
                }
                None => vec![numel.min(c)],
            };
            (HostOp::Compress { axis: axis.map(|a| a as i64) }, vec![cap])
        }
        Op::Unique => {
            let (y, d) = match axis {
                Some(a) => (dims.clone(), dims[a]),
                None => (vec![numel], numel),
            };
            let sorted = node.attr_int("sorted", 1) != 0;
            (HostOp::Unique { axis: axis.map(|a| a as i64), sorted }, vec![y, vec![d], vec![d], vec![d]])
        }
        Op::NonMaxSuppression => {
            let s = node.input(1).ok_or_else(|| cx.invalid("missing scores"))?;
            let sd = cx.dims(s)?;
            let most: u64 = sd.iter().product();
            (HostOp::NonMaxSuppression { center_point_box: node.attr_int("center_point_box", 0) != 0 }, vec![vec![most, 3]])
        }
        op => return Err(cx.invalid(format!("{op} is not a host selection"))),
    };
    let inputs = cx.operand_buffers(node)?;
    let mut outputs = Vec::with_capacity(node.outputs.len());
    for (&o, cap) in node.outputs.iter().zip(capacity) {
        outputs.push(cx.dynamic_buffer(o, cap)?);
    }
    cx.program.plan.steps.push(Step::Host { op, inputs, outputs });
    Ok(Execution::Host)
}
