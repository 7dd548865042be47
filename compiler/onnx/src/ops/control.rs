//! Registry lines for control flow (`If`, `Loop`, `Scan`) and the import of their bodies.
//!
//! ONNX bodies see every value of the enclosing graphs by name. Graph IR bodies are closed
//! instead: [`import_bodies`] finds the outer names a node's bodies read (their free
//! variables, nested bodies included), passes those values as trailing operands of the node,
//! and gives each body matching trailing inputs. The `captures` attribute counts them.

use super::{op, up, Entry};
use crate::error::{OnnxError, Result};
use crate::import::{import_nodes, node_desc, order_nodes, Builder, Ctx, Opsets};
use crate::proto::{attribute_proto::AttributeType, GraphProto, NodeProto};
use std::collections::BTreeSet;
use std::path::Path;
use tessera_ir::{Attr, Attrs, Node, Op, ValueId};

pub(crate) const OPS: &[Entry] = &[
    op("If", Op::If),
    op("Loop", Op::Loop),
    up("Scan", Op::Scan, &[(9, scan_batched)]),
];

/// Opset 8's Scan had a batch axis and a `sequence_lens` operand; opset 9 dropped both.
fn scan_batched(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    Err(ctx.unsupported(
        &node,
        "Scan before opset 9 (a batch axis and `sequence_lens`)",
    ))
}

/// Whether `op` has subgraph attributes that [`import_bodies`] imports.
pub(crate) fn has_bodies(op: Op) -> bool {
    matches!(op, Op::If | Op::Loop | Op::Scan)
}

/// The subgraphs of a node's attributes, with their attribute names.
fn bodies(np: &NodeProto) -> impl Iterator<Item = (&str, &GraphProto)> {
    np.attribute.iter().filter_map(|a| {
        let is_graph = a.r#type == AttributeType::Graph as i32 || (a.r#type == 0 && a.g.is_some());
        a.g.as_ref()
            .filter(|_| is_graph)
            .map(|g| (a.name.as_str(), g))
    })
}

/// The names a graph reads but does not define (nested bodies included), in first-use order.
fn free_names(g: &GraphProto, out: &mut Vec<String>) {
    let mut defined: BTreeSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    defined.extend(g.initializer.iter().map(|t| t.name.as_str()));
    defined.extend(
        g.node
            .iter()
            .flat_map(|n| n.output.iter().map(|o| o.as_str())),
    );
    let add = |name: &str, out: &mut Vec<String>| {
        if !name.is_empty() && !defined.contains(name) && !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    };
    for n in &g.node {
        for i in &n.input {
            add(i, out);
        }
        for (_, sub) in bodies(n) {
            let mut inner = Vec::new();
            free_names(sub, &mut inner);
            for name in &inner {
                add(name, out);
            }
        }
    }
    for o in &g.output {
        add(&o.name, out);
    }
}

/// Imports every subgraph attribute of `np` into `attrs` (plus `captures`) and returns the
/// outer values the bodies capture, to append to the node's operands.
pub(crate) fn import_bodies(
    b: &mut Builder,
    np: &NodeProto,
    opsets: &Opsets,
    model_dir: Option<&Path>,
    attrs: &mut Attrs,
) -> Result<Vec<ValueId>> {
    let mut names = Vec::new();
    for (_, g) in bodies(np) {
        free_names(g, &mut names);
    }
    let mut captured = Vec::with_capacity(names.len());
    for name in &names {
        let id = b.lookup(name).ok_or_else(|| {
            OnnxError::BadModel(format!(
                "a subgraph of {} reads \"{name}\", which no enclosing graph defines",
                node_desc(np)
            ))
        })?;
        captured.push(id);
    }
    for (attr, g) in bodies(np) {
        let body = import_body(b, g, &names, &captured, opsets, model_dir)
            .map_err(|e| in_body(e, &format!("subgraph `{attr}` of {}", node_desc(np))))?;
        attrs.insert(attr.to_string(), Attr::Graph(Box::new(body)));
    }
    attrs.insert("captures".into(), Attr::Int(captured.len() as i64));
    Ok(captured)
}

/// Says where a body's bad-model error happened; other errors name their node already.
fn in_body(e: OnnxError, at: &str) -> OnnxError {
    match e {
        OnnxError::BadModel(m) => OnnxError::BadModel(format!("{at}: {m}")),
        other => other,
    }
}

/// One body: its own inputs, initializers and nodes, then one input per captured name.
fn import_body(
    outer: &Builder,
    g: &GraphProto,
    names: &[String],
    captured: &[ValueId],
    opsets: &Opsets,
    model_dir: Option<&Path>,
) -> Result<tessera_ir::Graph> {
    let mut b = Builder::new(&g.name);
    for tp in &g.initializer {
        let t = crate::tensor::tensor_from_proto(tp, model_dir)?;
        let id = b.graph.add_const(tp.name.clone(), t);
        b.define(&tp.name, id, "an initializer")?;
    }
    for vi in &g.input {
        if b.lookup(&vi.name).is_some() {
            continue;
        }
        let ty = b.value_type(vi, "subgraph input")?;
        let id = b.graph.add_value(vi.name.clone(), ty);
        b.define(&vi.name, id, "a subgraph input")?;
        b.graph.inputs.push(id);
    }
    for (name, &outer_id) in names.iter().zip(captured) {
        let id = b
            .graph
            .add_value(name.clone(), outer.graph.ty(outer_id).cloned());
        b.define(name, id, "a captured value")?;
        b.graph.inputs.push(id);
    }
    for n in &g.node {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            let id = b.graph.add_value(o.clone(), None);
            b.define(o, id, &node_desc(n))?;
        }
    }
    for vi in g.value_info.iter().chain(&g.output) {
        if let Some(id) = b.lookup(&vi.name) {
            if b.graph.value(id).ty.is_none() {
                if let Ok(Some(ty)) = b.value_type(vi, "value") {
                    b.graph.value_mut(id).ty = Some(ty);
                }
            }
        }
    }
    import_nodes(&mut b, &g.node, opsets, model_dir)?;
    for vi in &g.output {
        let id = b.lookup(&vi.name).ok_or_else(|| {
            OnnxError::BadModel(format!("output \"{}\" is never defined", vi.name))
        })?;
        b.graph.outputs.push(id);
    }
    let mut graph = b.graph;
    order_nodes(&mut graph)?;
    Ok(graph)
}
