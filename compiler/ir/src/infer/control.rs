//! Shape inference for control flow: `If`, `Loop` and `Scan`. Start at [`infer`].
//!
//! A body (`then_branch`, `else_branch`, `body`) is a closed [`Graph`]: every outer value it
//! reads is an explicit *capture*. The node's last `captures` operands are those outer values,
//! and the body's last `captures` inputs receive them, in the same order. So
//! - `If(cond, c1..cK)`: each branch has inputs `c1..cK`;
//! - `Loop(M, cond, v1..vN, c1..cK)`: the body has inputs `iter, cond, v1..vN, c1..cK` and
//!   results `cond, v1..vN, s1..sS`; the node's results are `v1..vN, s1..sS`;
//! - `Scan(v1..vN, x1..xM, c1..cK)` (`M = num_scan_inputs`): inputs `v1..vN, x1..xM` slices,
//!   `c1..cK`; results `v1..vN, y1..yS`.
//!
//! Inference types each body from the operands (a captured constant stays constant inside, so
//! bodies fold like graphs), then types the node's results. The plan is static, so a
//! loop-carried value must keep its shape across iterations and the branches of an `If` on a
//! runtime condition must agree in shape; otherwise the node is [`IrError::Unsupported`]. An
//! `If` whose condition is known at compile time types (and later lowers) only the branch taken.

use crate::dtype::DType;
use crate::error::IrError;
use crate::fold::ConstEval;
use crate::graph::{Attr, Graph, TensorType, ValueId};
use crate::op::Op;
use crate::shape::{Dim, Shape};
use crate::tensor::Tensor;

type Result<T> = std::result::Result<T, IrError>;

/// Whether `op` is control flow, typed by [`infer`] rather than by the per-node walk.
pub fn is_control(op: Op) -> bool {
    matches!(op, Op::If | Op::Loop | Op::Scan)
}

/// What a body input receives: a type, and contents when known at compile time.
type Param = (TensorType, Option<Tensor>);

/// Types node `ni` (an If, Loop or Scan) and its bodies in place. Returns the result types and,
/// when every result is known at compile time, their contents.
pub(crate) fn infer(
    g: &mut Graph,
    ni: usize,
    ev: &dyn ConstEval,
) -> Result<(Vec<TensorType>, Option<Vec<Tensor>>)> {
    crate::verify::check_node_signature(&g.nodes[ni])?;
    let op = g.nodes[ni].op;
    let names: &[&str] = match op {
        Op::If => &["then_branch", "else_branch"],
        _ => &["body"],
    };
    let mut bodies = Vec::with_capacity(2);
    for &n in names {
        match g.nodes[ni].attrs.remove(n) {
            Some(Attr::Graph(b)) => bodies.push(b),
            _ => {
                return Err(IrError::BadAttr {
                    node: g.nodes[ni].label(),
                    attr: n.into(),
                    msg: "must be a subgraph".into(),
                })
            }
        }
    }
    let r = match op {
        Op::If => infer_if(g, ni, &mut bodies, ev),
        Op::Loop => infer_loop(g, ni, &mut bodies[0], ev),
        _ => infer_scan(g, ni, &mut bodies[0], ev),
    };
    for (n, b) in names.iter().zip(bodies) {
        g.nodes[ni].attrs.insert((*n).to_string(), Attr::Graph(b));
    }
    r
}

/// The number of trailing capture operands, checked against the operand count.
fn captures(g: &Graph, ni: usize, fixed: usize) -> Result<usize> {
    let node = &g.nodes[ni];
    let k = node.attr_int("captures", 0);
    if k < 0 || k as usize + fixed > node.inputs.len() {
        return Err(IrError::BadAttr {
            node: node.label(),
            attr: "captures".into(),
            msg: format!("is {k}, but the node has {} operands", node.inputs.len()),
        });
    }
    Ok(k as usize)
}

/// The type (and contents) of operand `i`.
fn operand(g: &Graph, ni: usize, i: usize) -> Result<Param> {
    let node = &g.nodes[ni];
    let v = node.input(i).ok_or_else(|| IrError::MissingOperand {
        node: node.label(),
        index: i,
        operand: crate::op::operand_name(node.op, i).into(),
    })?;
    let ty = g.ty(v).cloned().ok_or_else(|| IrError::UntypedOperand {
        node: node.label(),
        index: i,
        operand: crate::op::operand_name(node.op, i).into(),
        value: g.value(v).name.clone(),
    })?;
    Ok((ty, g.konst(v).cloned()))
}

fn scalar(dtype: DType) -> TensorType {
    TensorType::fixed(dtype, &[])
}

/// Gives the body's inputs their types and contents, then types (and folds) the body.
fn type_body(
    g: &Graph,
    ni: usize,
    what: &str,
    body: &mut Graph,
    params: Vec<Param>,
    ev: &dyn ConstEval,
) -> Result<()> {
    if body.inputs.len() != params.len() {
        return Err(IrError::ShapeMismatch {
            node: g.nodes[ni].label(),
            msg: format!(
                "its {what} takes {} inputs, but {} are passed to it",
                body.inputs.len(),
                params.len()
            ),
        });
    }
    for (&id, (ty, konst)) in body.inputs.clone().iter().zip(params) {
        let v = body.value_mut(id);
        v.ty = Some(ty);
        v.konst = konst;
    }
    // Inside a body, an operand that must be known at compile time but is not depends on the
    // iteration or on run-time data: a static plan cannot express that node.
    crate::fold::fold_constants(body, ev).map_err(|e| match e {
        IrError::NotConstant { .. } => IrError::Unsupported {
            node: g.nodes[ni].label(),
            what: format!("in its {what}: {e} (there it depends on run-time values)"),
        },
        e => e,
    })?;
    crate::verify::verify(body)
}

/// The type of body result `k`.
fn result_ty(g: &Graph, ni: usize, what: &str, body: &Graph, k: usize) -> Result<TensorType> {
    let id: ValueId = *body.outputs.get(k).ok_or_else(|| IrError::ShapeMismatch {
        node: g.nodes[ni].label(),
        msg: format!(
            "its {what} has {} results, fewer than the node needs",
            body.outputs.len()
        ),
    })?;
    body.ty(id).cloned().ok_or_else(|| IrError::UntypedResult {
        node: format!("the {what} of {}", g.nodes[ni].label()),
        value: body.value(id).name.clone(),
    })
}

fn capture_params(g: &Graph, ni: usize, first: usize, k: usize) -> Result<Vec<Param>> {
    (first..first + k).map(|i| operand(g, ni, i)).collect()
}

fn infer_if(
    g: &mut Graph,
    ni: usize,
    bodies: &mut [Box<Graph>],
    ev: &dyn ConstEval,
) -> Result<(Vec<TensorType>, Option<Vec<Tensor>>)> {
    let k = captures(g, ni, 1)?;
    let (cond_ty, cond) = operand(g, ni, 0)?;
    if cond_ty.dtype != DType::Bool || cond_ty.shape.num_elements() != Some(1) {
        return Err(IrError::ShapeMismatch {
            node: g.nodes[ni].label(),
            msg: format!("the condition must be one bool, not {cond_ty}"),
        });
    }
    let params = capture_params(g, ni, 1, k)?;
    let n = g.nodes[ni].outputs.len();
    let results = |g: &Graph, what: &str, b: &Graph| -> Result<Vec<TensorType>> {
        if b.outputs.len() != n {
            return Err(IrError::ShapeMismatch {
                node: g.nodes[ni].label(),
                msg: format!(
                    "its {what} has {} results, but the node has {n}",
                    b.outputs.len()
                ),
            });
        }
        (0..n).map(|j| result_ty(g, ni, what, b, j)).collect()
    };
    // A known condition: only the branch taken is typed (the other may not even fit).
    if let Some(c) = cond.as_ref().and_then(|t| t.to_i64_vec()) {
        let (what, idx) = if c.first().is_some_and(|&v| v != 0) {
            ("then_branch", 0)
        } else {
            ("else_branch", 1)
        };
        type_body(g, ni, what, &mut bodies[idx], params, ev)?;
        let tys = results(g, what, &bodies[idx])?;
        let b = &bodies[idx];
        let konsts: Option<Vec<Tensor>> = b.outputs.iter().map(|&o| b.konst(o).cloned()).collect();
        return Ok((tys, konsts));
    }
    type_body(g, ni, "then_branch", &mut bodies[0], params.clone(), ev)?;
    type_body(g, ni, "else_branch", &mut bodies[1], params, ev)?;
    let then_tys = results(g, "then_branch", &bodies[0])?;
    let else_tys = results(g, "else_branch", &bodies[1])?;
    for (j, (t, e)) in then_tys.iter().zip(&else_tys).enumerate() {
        if t != e {
            let what = format!("result {j} is {t} from then_branch but {e} from else_branch; a plan's shapes are static");
            if t.dtype != e.dtype {
                return Err(IrError::ShapeMismatch {
                    node: g.nodes[ni].label(),
                    msg: what,
                });
            }
            return Err(IrError::Unsupported {
                node: g.nodes[ni].label(),
                what,
            });
        }
    }
    Ok((then_tys, None))
}

/// Checks that each carried value's body result has the type it came in with.
fn check_carried(
    g: &Graph,
    ni: usize,
    body: &Graph,
    first_result: usize,
    carried: &[Param],
) -> Result<()> {
    for (j, (ty, _)) in carried.iter().enumerate() {
        let got = result_ty(g, ni, "body", body, first_result + j)?;
        if got.dtype != ty.dtype {
            return Err(IrError::ShapeMismatch {
                node: g.nodes[ni].label(),
                msg: format!("loop-carried value {j} enters as {ty} but the body returns {got}"),
            });
        }
        if got.shape != ty.shape {
            return Err(IrError::Unsupported {
                node: g.nodes[ni].label(),
                what: format!("loop-carried value {j} changes shape across iterations ({ty} to {got}); a plan's shapes are static"),
            });
        }
    }
    Ok(())
}

fn infer_loop(
    g: &mut Graph,
    ni: usize,
    body: &mut Graph,
    ev: &dyn ConstEval,
) -> Result<(Vec<TensorType>, Option<Vec<Tensor>>)> {
    let k = captures(g, ni, 2)?;
    let node = &g.nodes[ni];
    let n = node.inputs.len() - 2 - k;
    let label = node.label();
    let s = node
        .outputs
        .len()
        .checked_sub(n)
        .ok_or_else(|| IrError::ShapeMismatch {
            node: label.clone(),
            msg: format!(
                "it carries {n} values but has only {} results",
                node.outputs.len()
            ),
        })?;
    let trip = match node.input(0) {
        None => None,
        Some(_) => {
            let (ty, t) = operand(g, ni, 0)?;
            if ty.shape.num_elements() != Some(1) || !ty.dtype.is_int() {
                return Err(IrError::ShapeMismatch {
                    node: label,
                    msg: format!("the trip count must be one integer, not {ty}"),
                });
            }
            Some(
                t.and_then(|t| t.to_i64_vec())
                    .and_then(|v| v.first().copied()),
            )
        }
    };
    if node.input(1).is_some() {
        let (ty, _) = operand(g, ni, 1)?;
        if ty.dtype != DType::Bool || ty.shape.num_elements() != Some(1) {
            return Err(IrError::ShapeMismatch {
                node: label,
                msg: format!("the condition must be one bool, not {ty}"),
            });
        }
    }
    let carried: Vec<Param> = (2..2 + n)
        .map(|i| operand(g, ni, i).map(|(t, _)| (t, None)))
        .collect::<Result<_>>()?;
    let mut params = vec![(scalar(DType::I64), None), (scalar(DType::Bool), None)];
    params.extend(carried.iter().cloned());
    params.extend(capture_params(g, ni, 2 + n, k)?);
    type_body(g, ni, "body", body, params, ev)?;
    if body.outputs.len() != 1 + n + s {
        return Err(IrError::ShapeMismatch {
            node: g.nodes[ni].label(),
            msg: format!("its body has {} results; a condition, {n} carried values and {s} scan outputs were expected", body.outputs.len()),
        });
    }
    let c = result_ty(g, ni, "body", body, 0)?;
    if c.dtype != DType::Bool || c.shape.num_elements() != Some(1) {
        return Err(IrError::ShapeMismatch {
            node: g.nodes[ni].label(),
            msg: format!("the body's condition must be one bool, not {c}"),
        });
    }
    check_carried(g, ni, body, 1, &carried)?;
    let mut tys: Vec<TensorType> = carried.into_iter().map(|(t, _)| t).collect();
    for j in 0..s {
        let t = result_ty(g, ni, "body", body, 1 + n + j)?;
        let m = match trip {
            Some(Some(m)) => m.max(0) as u64,
            Some(None) => return Err(IrError::NotConstant { node: g.nodes[ni].label(), index: 0, operand: "M".into() }),
            None => {
                return Err(IrError::Unsupported {
                    node: g.nodes[ni].label(),
                    what: "scan outputs of a Loop without a trip count (their length is only known at run time)".into(),
                })
            }
        };
        let mut dims = vec![Dim::Fixed(m)];
        dims.extend(t.shape.0.iter().cloned());
        tys.push(TensorType::new(t.dtype, Shape(dims)));
    }
    Ok((tys, None))
}

/// An axis attribute list (default all zero), normalised against `rank(i)`.
fn axes(
    g: &Graph,
    ni: usize,
    attr: &str,
    count: usize,
    rank: impl Fn(usize) -> usize,
) -> Result<Vec<usize>> {
    let node = &g.nodes[ni];
    let given = node
        .attr_ints(attr)
        .map(|v| v.to_vec())
        .unwrap_or_else(|| vec![0; count]);
    if given.len() != count {
        return Err(IrError::BadAttr {
            node: node.label(),
            attr: attr.into(),
            msg: format!("has {} entries for {count} tensors", given.len()),
        });
    }
    given
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let r = rank(i) as i64;
            let a2 = if a < 0 { a + r } else { a };
            if a2 < 0 || a2 >= r {
                return Err(IrError::BadAttr {
                    node: node.label(),
                    attr: attr.into(),
                    msg: format!("entry {i} ({a}) is out of range for rank {r}"),
                });
            }
            Ok(a2 as usize)
        })
        .collect()
}

fn infer_scan(
    g: &mut Graph,
    ni: usize,
    body: &mut Graph,
    ev: &dyn ConstEval,
) -> Result<(Vec<TensorType>, Option<Vec<Tensor>>)> {
    let k = captures(g, ni, 0)?;
    let node = &g.nodes[ni];
    let label = node.label();
    let m = node.attr_int("num_scan_inputs", -1);
    let explicit = node.inputs.len() - k;
    if m < 1 || m as usize > explicit {
        return Err(IrError::BadAttr {
            node: label,
            attr: "num_scan_inputs".into(),
            msg: format!("is {m}, with {explicit} operands"),
        });
    }
    let m = m as usize;
    let n = explicit - m;
    let s = node
        .outputs
        .len()
        .checked_sub(n)
        .ok_or_else(|| IrError::ShapeMismatch {
            node: label.clone(),
            msg: format!(
                "it carries {n} states but has only {} results",
                node.outputs.len()
            ),
        })?;
    let states: Vec<Param> = (0..n)
        .map(|i| operand(g, ni, i).map(|(t, _)| (t, None)))
        .collect::<Result<_>>()?;
    let scans: Vec<Param> = (n..n + m)
        .map(|i| operand(g, ni, i))
        .collect::<Result<_>>()?;
    let in_axes = axes(g, ni, "scan_input_axes", m, |i| scans[i].0.shape.rank())?;
    let mut len: Option<u64> = None;
    let mut params = states.clone();
    for (i, ((ty, _), &ax)) in scans.iter().zip(&in_axes).enumerate() {
        let d = match ty.shape.0.get(ax) {
            Some(Dim::Fixed(d)) => *d,
            Some(Dim::Sym(sym)) => {
                return Err(IrError::Symbolic {
                    node: label,
                    what: format!("scan input {i}'s sequence length"),
                    dim: sym.clone(),
                })
            }
            None => {
                return Err(IrError::ShapeMismatch {
                    node: label,
                    msg: format!("scan input {i} ({ty}) has no axis {ax}"),
                })
            }
        };
        if len.is_some_and(|l| l != d) {
            return Err(IrError::ShapeMismatch {
                node: label,
                msg: format!(
                    "scan inputs have different sequence lengths ({} and {d})",
                    len.unwrap_or(0)
                ),
            });
        }
        len = Some(d);
        let mut dims = ty.shape.0.clone();
        dims.remove(ax);
        params.push((TensorType::new(ty.dtype, Shape(dims)), None));
    }
    let len = len.unwrap_or(0);
    params.extend(capture_params(g, ni, n + m, k)?);
    type_body(g, ni, "body", body, params, ev)?;
    if body.outputs.len() != n + s {
        return Err(IrError::ShapeMismatch {
            node: g.nodes[ni].label(),
            msg: format!(
                "its body has {} results; {n} states and {s} scan outputs were expected",
                body.outputs.len()
            ),
        });
    }
    check_carried(g, ni, body, 0, &states)?;
    let outs: Vec<TensorType> = (0..s)
        .map(|j| result_ty(g, ni, "body", body, n + j))
        .collect::<Result<_>>()?;
    let out_axes = axes(g, ni, "scan_output_axes", s, |j| outs[j].shape.rank() + 1)?;
    let mut tys: Vec<TensorType> = states.into_iter().map(|(t, _)| t).collect();
    for (t, &ax) in outs.iter().zip(&out_axes) {
        let mut dims = t.shape.0.clone();
        dims.insert(ax, Dim::Fixed(len));
        tys.push(TensorType::new(t.dtype, Shape(dims)));
    }
    Ok((tys, None))
}
