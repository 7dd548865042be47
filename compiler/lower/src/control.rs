//! Control flow: `If`, `Loop` and `Scan` become plan steps ([`Step::If`], [`Step::Loop`])
//! whose bodies are lowered like any graph, into kernels of the same program. The runtime
//! decides the condition, the trip count and the carried values at run time, so every target
//! runs control flow the same way. Start at [`lower`].
//!
//! Body inputs get their own scratch buffers (iteration number, condition, carried values,
//! scan slices); captured outer values are passed as the outer buffers themselves. Results are
//! copied out by plan copies. An `If` on a condition known at compile time lowers only the
//! branch taken, inline.

use crate::{lower_nodes, LowerCx, Result};
use std::collections::HashMap;
use tessera_ir::{Attr, DType, Graph, Node, Op, ValueId};
use tessera_kir::{BufferId, Execution, LoopSlice, LoopStep, Step, Trip};

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    match node.op {
        Op::If => lower_if(cx, node),
        Op::Loop => lower_loop(cx, node),
        Op::Scan => lower_scan(cx, node),
        op => Err(cx.invalid(format!("{op} is not control flow"))),
    }
}

fn body<'n>(cx: &LowerCx, node: &'n Node, name: &str) -> Result<&'n Graph> {
    match node.attr(name) {
        Some(Attr::Graph(g)) => Ok(g),
        _ => Err(cx.invalid(format!("attribute `{name}` is not a subgraph"))),
    }
}

/// The capture operands (the node's last `captures` operands) as buffers.
fn capture_buffers(cx: &mut LowerCx, node: &Node) -> Result<Vec<BufferId>> {
    let k = node.attr_int("captures", 0).max(0) as usize;
    let first = node
        .inputs
        .len()
        .checked_sub(k)
        .ok_or_else(|| cx.invalid("more captures than operands"))?;
    (first..node.inputs.len())
        .map(|i| {
            let v = node
                .input(i)
                .ok_or_else(|| cx.invalid(format!("capture operand {i} is omitted")))?;
            cx.buffer(v)
        })
        .collect()
}

/// A scratch buffer shaped like body input `v`.
fn param_buffer(cx: &mut LowerCx, g: &Graph, v: ValueId) -> Result<BufferId> {
    let ty = g
        .ty(v)
        .ok_or_else(|| cx.invalid(format!("body input `{}` has no type", g.value(v).name)))?;
    let dims = ty.shape.as_static().ok_or_else(|| {
        cx.unsupported(format!(
            "body input `{}` has symbolic shape {}",
            g.value(v).name,
            ty.shape
        ))
    })?;
    Ok(cx.scratch(&g.value(v).name, ty.dtype, dims))
}

/// Lowers `g` with its inputs bound to `params`, into steps of its own (not appended to the
/// plan) plus the buffers holding its results. Kernels go into the same program.
fn lower_body(
    cx: &mut LowerCx,
    g: &Graph,
    what: &str,
    params: &[BufferId],
) -> Result<(Vec<Step>, Vec<BufferId>)> {
    if g.inputs.len() != params.len() {
        return Err(cx.invalid(format!(
            "{what} takes {} inputs, {} given",
            g.inputs.len(),
            params.len()
        )));
    }
    let label = format!("{what} of {}", cx.node_label);
    let mut program = std::mem::take(&mut cx.program);
    let outer_steps = std::mem::take(&mut program.plan.steps);
    let mut child = LowerCx {
        graph: g,
        desc: cx.desc,
        program,
        buffers: g
            .inputs
            .iter()
            .copied()
            .zip(params.iter().copied())
            .collect::<HashMap<_, _>>(),
        node_label: String::new(),
        kernel_names: std::mem::take(&mut cx.kernel_names),
        dynamic: Default::default(),
    };
    let r = lower_nodes(&mut child, &g.nodes, &label).and_then(|_| {
        child.node_label = label.clone();
        g.outputs
            .iter()
            .map(|&v| child.buffer(v))
            .collect::<Result<Vec<_>>>()
    });
    cx.kernel_names = std::mem::take(&mut child.kernel_names);
    cx.program = child.program;
    let steps = std::mem::replace(&mut cx.program.plan.steps, outer_steps);
    Ok((steps, r?))
}

/// Copies each body result into the node result it becomes.
fn copy_out(
    cx: &mut LowerCx,
    steps: &mut Vec<Step>,
    results: &[BufferId],
    outs: &[ValueId],
) -> Result<()> {
    for (&r, &o) in results.iter().zip(outs) {
        let dst = cx.buffer(o)?;
        steps.push(Step::Copy { src: r, dst });
    }
    Ok(())
}

// ==== If ====

fn lower_if(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let cond = node
        .input(0)
        .ok_or_else(|| cx.invalid("missing condition"))?;
    let caps = capture_buffers(cx, node)?;
    let known = cx
        .konst(cond)
        .and_then(|t| t.to_i64_vec())
        .and_then(|v| v.first().copied());
    if let Some(c) = known {
        // Only the branch taken was typed; it runs inline.
        let name = if c != 0 { "then_branch" } else { "else_branch" };
        let (mut steps, results) = lower_body(cx, body(cx, node, name)?, name, &caps)?;
        copy_out(cx, &mut steps, &results, &node.outputs)?;
        cx.program.plan.steps.extend(steps);
        return Ok(Execution::Host);
    }
    let cond = cx.buffer(cond)?;
    let (mut then_steps, then_results) =
        lower_body(cx, body(cx, node, "then_branch")?, "then_branch", &caps)?;
    copy_out(cx, &mut then_steps, &then_results, &node.outputs)?;
    let (mut else_steps, else_results) =
        lower_body(cx, body(cx, node, "else_branch")?, "else_branch", &caps)?;
    copy_out(cx, &mut else_steps, &else_results, &node.outputs)?;
    cx.program.plan.steps.push(Step::If {
        cond,
        then_steps,
        else_steps,
    });
    Ok(Execution::Host)
}

// ==== Loop ====

fn lower_loop(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let g = body(cx, node, "body")?;
    let caps = capture_buffers(cx, node)?;
    let k = caps.len();
    let n = node.inputs.len() - 2 - k;
    if g.inputs.len() != 2 + n + k {
        return Err(cx.invalid("the body's inputs do not match the operands"));
    }
    let iter = param_buffer(cx, g, g.inputs[0])?;
    let cond_in = param_buffer(cx, g, g.inputs[1])?;
    let mut params = vec![iter, cond_in];
    for j in 0..n {
        let p = param_buffer(cx, g, g.inputs[2 + j])?;
        let init = node
            .input(2 + j)
            .ok_or_else(|| cx.invalid(format!("carried value {j} is omitted")))?;
        let init = cx.buffer(init)?;
        cx.copy(init, p);
        params.push(p);
    }
    params.extend(caps);
    let (steps, results) = lower_body(cx, g, "body", &params)?;
    let trip = match node.input(0) {
        None => Trip::Unbounded,
        Some(m) => match cx
            .konst(m)
            .and_then(|t| t.to_i64_vec())
            .and_then(|v| v.first().copied())
        {
            Some(m) => Trip::Fixed(m.max(0) as u64),
            None if cx.dtype(m)? == DType::I64 => Trip::Buffer(cx.buffer(m)?),
            None => return Err(cx.unsupported("a trip count that is not int64")),
        },
    };
    let cond = match node.input(1) {
        Some(c) => Some(cx.buffer(c)?),
        None => None,
    };
    let mut scan_out = Vec::new();
    for (j, &o) in node.outputs.iter().enumerate().skip(n) {
        let whole = cx.buffer(o)?;
        let part = *results
            .get(1 + j)
            .ok_or_else(|| cx.invalid("the body has too few results"))?;
        scan_out.push(LoopSlice {
            whole,
            part,
            reverse: false,
        });
    }
    let carried = (0..n).map(|j| (results[1 + j], params[2 + j])).collect();
    cx.program.plan.steps.push(Step::Loop(Box::new(LoopStep {
        trip,
        cond,
        iter: Some(iter),
        cond_in: Some(cond_in),
        cond_out: Some(results[0]),
        body: steps,
        carried,
        scan_in: Vec::new(),
        scan_out,
    })));
    for j in 0..n {
        let out = cx.buffer(node.outputs[j])?;
        cx.copy(params[2 + j], out);
    }
    Ok(Execution::Host)
}

// ==== Scan ====

fn lower_scan(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let g = body(cx, node, "body")?;
    let caps = capture_buffers(cx, node)?;
    let k = caps.len();
    let m = node.attr_int("num_scan_inputs", 0).max(0) as usize;
    let n = node.inputs.len() - k - m;
    let s = node.outputs.len() - n;
    for attr in ["scan_input_axes", "scan_output_axes"] {
        if node
            .attr_ints(attr)
            .is_some_and(|v| v.iter().any(|&a| a != 0))
        {
            return Err(cx.unsupported(format!("`{attr}` other than 0")));
        }
    }
    let directions = |attr: &str, count: usize| -> Vec<bool> {
        let v = node.attr_ints(attr).unwrap_or(&[]);
        (0..count)
            .map(|i| v.get(i).is_some_and(|&d| d == 1))
            .collect()
    };
    let in_rev = directions("scan_input_directions", m);
    let out_rev = directions("scan_output_directions", s);
    let mut params = Vec::with_capacity(n + m + k);
    for j in 0..n {
        let p = param_buffer(cx, g, g.inputs[j])?;
        let init = node
            .input(j)
            .ok_or_else(|| cx.invalid(format!("state {j} is omitted")))?;
        let init = cx.buffer(init)?;
        cx.copy(init, p);
        params.push(p);
    }
    let mut scan_in = Vec::with_capacity(m);
    let mut len = 0;
    for i in 0..m {
        let part = param_buffer(cx, g, g.inputs[n + i])?;
        let x = node
            .input(n + i)
            .ok_or_else(|| cx.invalid(format!("scan input {i} is omitted")))?;
        len = cx.dims(x)?.first().copied().unwrap_or(0);
        let whole = cx.buffer(x)?;
        scan_in.push(LoopSlice {
            whole,
            part,
            reverse: in_rev[i],
        });
        params.push(part);
    }
    params.extend(caps);
    let (steps, results) = lower_body(cx, g, "body", &params)?;
    let mut scan_out = Vec::with_capacity(s);
    for j in 0..s {
        let whole = cx.buffer(node.outputs[n + j])?;
        scan_out.push(LoopSlice {
            whole,
            part: results[n + j],
            reverse: out_rev[j],
        });
    }
    let carried = (0..n).map(|j| (results[j], params[j])).collect();
    cx.program.plan.steps.push(Step::Loop(Box::new(LoopStep {
        trip: Trip::Fixed(len),
        cond: None,
        iter: None,
        cond_in: None,
        cond_out: None,
        body: steps,
        carried,
        scan_in,
        scan_out,
    })));
    for j in 0..n {
        let out = cx.buffer(node.outputs[j])?;
        cx.copy(params[j], out);
    }
    Ok(Execution::Host)
}
