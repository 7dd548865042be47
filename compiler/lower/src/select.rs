//! Selections whose result size depends on the data (NonZero, Compress, Unique,
//! NonMaxSuppression) become host steps of the plan ([`Step::Host`]): the runtime computes
//! them and the size they produce. The ai.onnx.ml TreeEnsemble is a host step too: its
//! data-dependent branching has no kernel form yet (the report shows it as a dense op on
//! the host). Each result is allocated at its largest possible size;
//! only graph outputs may have such a size (a later kernel would need a static one).

use crate::{LowerCx, Result};
use tessera_ir::{Attr, DType, Node, Op};
use tessera_kir::{Execution, HostOp, Step};

/// The dtypes the runtime's host ops read.
fn host_readable(d: DType) -> bool {
    use DType::*;
    matches!(
        d,
        F64 | F32 | F16 | BF16 | I64 | I32 | I16 | I8 | U64 | U32 | U16 | U8 | Bool
    )
}

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    for v in node.inputs.iter().flatten() {
        let d = cx.dtype(*v)?;
        if !host_readable(d) {
            return Err(cx.unsupported(format!("dtype {d} in a host op")));
        }
    }
    let x = node
        .input(0)
        .ok_or_else(|| cx.invalid("missing operand 0"))?;
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
            let c = node
                .input(1)
                .ok_or_else(|| cx.invalid("missing condition"))?;
            let c = cx.numel(c)?;
            let cap = match axis {
                Some(a) => {
                    let mut d = dims.clone();
                    d[a] = d[a].min(c);
                    d
                }
                None => vec![numel.min(c)],
            };
            (
                HostOp::Compress {
                    axis: axis.map(|a| a as i64),
                },
                vec![cap],
            )
        }
        Op::Unique => {
            let (y, d) = match axis {
                Some(a) => (dims.clone(), dims[a]),
                None => (vec![numel], numel),
            };
            let sorted = node.attr_int("sorted", 1) != 0;
            (
                HostOp::Unique {
                    axis: axis.map(|a| a as i64),
                    sorted,
                },
                vec![y, vec![d], vec![d], vec![d]],
            )
        }
        Op::NonMaxSuppression => {
            let s = node.input(1).ok_or_else(|| cx.invalid("missing scores"))?;
            let sd = cx.dims(s)?;
            let most: u64 = sd.iter().product();
            (
                HostOp::NonMaxSuppression {
                    center_point_box: node.attr_int("center_point_box", 0) != 0,
                },
                vec![vec![most, 3]],
            )
        }
        Op::TreeEnsemble => {
            let out = node
                .outputs
                .first()
                .ok_or_else(|| cx.invalid("no result"))?;
            let t = tree_ensemble(cx, node)?;
            let inputs = cx.operand_buffers(node)?;
            let outputs = vec![cx.buffer(*out)?];
            cx.program.plan.steps.push(Step::Host {
                op: HostOp::TreeEnsemble(Box::new(t)),
                inputs,
                outputs,
            });
            return Ok(Execution::Host);
        }
        op => return Err(cx.invalid(format!("{op} is not a host selection"))),
    };
    let inputs = cx.operand_buffers(node)?;
    let mut outputs = Vec::with_capacity(node.outputs.len());
    for (&o, cap) in node.outputs.iter().zip(capacity) {
        outputs.push(cx.dynamic_buffer(o, cap)?);
    }
    cx.program.plan.steps.push(Step::Host {
        op,
        inputs,
        outputs,
    });
    Ok(Execution::Host)
}

/// A TreeEnsemble's attributes, checked for consistency.
fn tree_ensemble(cx: &LowerCx, node: &Node) -> Result<tessera_kir::TreeEnsemble> {
    if node.attr_int("post_transform", 0) != 0 {
        return Err(cx.unsupported("a TreeEnsemble post_transform other than NONE"));
    }
    let ints = |n: &str| -> Result<Vec<i64>> {
        match node.attr(n) {
            None => Ok(Vec::new()),
            Some(Attr::Ints(v)) => Ok(v.clone()),
            Some(Attr::Tensor(t)) => t
                .to_i64_vec()
                .ok_or_else(|| cx.invalid(format!("`{n}` is not numeric"))),
            Some(_) => Err(cx.invalid(format!("`{n}` must be a list of ints"))),
        }
    };
    let floats = |n: &str| -> Result<Vec<f64>> {
        match node.attr(n) {
            None => Ok(Vec::new()),
            Some(Attr::Floats(v)) => Ok(v.iter().map(|&f| f as f64).collect()),
            Some(Attr::Tensor(t)) => t
                .to_f64_vec()
                .ok_or_else(|| cx.invalid(format!("`{n}` is not numeric"))),
            Some(_) => Err(cx.invalid(format!("`{n}` must be a list of floats"))),
        }
    };
    let t = tessera_kir::TreeEnsemble {
        aggregate: node.attr_int("aggregate_function", 1).clamp(0, 3) as u8,
        n_targets: node.attr_int("n_targets", 1),
        tree_roots: ints("tree_roots")?,
        feature_ids: ints("nodes_featureids")?,
        splits: floats("nodes_splits")?,
        modes: ints("nodes_modes")?,
        true_ids: ints("nodes_truenodeids")?,
        true_leafs: ints("nodes_trueleafs")?,
        false_ids: ints("nodes_falsenodeids")?,
        false_leafs: ints("nodes_falseleafs")?,
        missing_tracks_true: ints("nodes_missing_value_tracks_true")?,
        leaf_targets: ints("leaf_targetids")?,
        leaf_weights: floats("leaf_weights")?,
        membership: floats("membership_values")?,
    };
    let n = t.modes.len();
    for (name, len) in [
        ("nodes_featureids", t.feature_ids.len()),
        ("nodes_splits", t.splits.len()),
        ("nodes_truenodeids", t.true_ids.len()),
        ("nodes_falsenodeids", t.false_ids.len()),
    ] {
        if len != n {
            return Err(cx.invalid(format!("`{name}` has {len} entries for {n} nodes")));
        }
    }
    if t.leaf_targets.len() != t.leaf_weights.len() {
        return Err(cx.invalid("`leaf_targetids` and `leaf_weights` differ in length"));
    }
    Ok(t)
}
