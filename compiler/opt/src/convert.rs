//! Graph IR ⇄ e-graph. [`to_egraph`] adds every value of a graph as an e-class (inputs,
//! constants, then the nodes in order); [`from_egraph`] rebuilds a graph from the node an
//! extractor chose in each class reachable from the outputs. Values keep their source names
//! where their class had one (inputs first, then outputs, then the rest in value order), and
//! each rebuilt node records the source nodes it stands for (its *origin*, for the report).

use crate::analysis::{EGraph, Types};
use crate::lang::TNode;
use crate::OptError;
use egg::Id;
use egg::Language;
use std::collections::{BTreeSet, HashMap};
use tessera_ir::{Graph, OpKey, TensorType, ValueId};

/// A graph loaded into an e-graph.
pub struct Loaded {
    pub egraph: EGraph,
    /// The class of each value of the source graph (`None` for values nothing defines).
    pub class: Vec<Option<Id>>,
    pub roots: Vec<Id>,
}

/// Adds `g` to a fresh e-graph.
pub fn to_egraph(
    g: &Graph,
    folder: Option<std::sync::Arc<dyn tessera_ir::ConstEval>>,
) -> Result<Loaded, OptError> {
    let mut types = Types {
        folder,
        ..Types::default()
    };
    for (i, &v) in g.inputs.iter().enumerate() {
        let ty = g
            .ty(v)
            .cloned()
            .ok_or_else(|| OptError::Internal(format!("input %{} has no type", g.value(v).name)))?;
        types.inputs.push(ty);
        if let Some(k) = g.konst(v) {
            let c = types.add_const(k.clone());
            types.bound.insert(i as u32, c);
        }
    }
    let mut eg = EGraph::new(types);
    let mut class: Vec<Option<Id>> = vec![None; g.values.len()];
    for (i, &v) in g.inputs.iter().enumerate() {
        class[v.0 as usize] = Some(eg.add(TNode::Input(i as u32)));
    }
    let produced: BTreeSet<ValueId> = g.nodes.iter().flat_map(|n| n.outputs.clone()).collect();
    for (i, v) in g.values.iter().enumerate() {
        if class[i].is_some() || produced.contains(&ValueId(i as u32)) {
            continue;
        }
        if let Some(k) = &v.konst {
            let c = eg.analysis.add_const(k.clone());
            class[i] = Some(eg.add(TNode::Const(c)));
        }
    }
    let absent = eg.add(TNode::Absent);
    for node in &g.nodes {
        if node.outputs.is_empty() {
            continue;
        }
        let mut ch = Vec::with_capacity(node.inputs.len());
        for inp in &node.inputs {
            ch.push(match inp {
                None => absent,
                Some(v) => class.get(v.0 as usize).copied().flatten().ok_or_else(|| {
                    OptError::Internal(format!(
                        "{} reads %{} before it is defined",
                        node.label(),
                        g.values.get(v.0 as usize).map_or("?", |x| x.name.as_str())
                    ))
                })?,
            });
        }
        let id = eg.add(TNode::Op(OpKey::of(node), ch));
        let tys: Option<Vec<TensorType>> = node.outputs.iter().map(|&o| g.ty(o).cloned()).collect();
        // Ops the per-node type rule cannot type (control flow) keep the types whole-graph
        // inference gave them.
        if eg[id].data.tys.is_empty() {
            if let Some(t) = &tys {
                eg[id].data.tys = t.clone();
            }
        }
        if node.outputs.len() == 1 {
            class[node.outputs[0].0 as usize] = Some(id);
        } else {
            for (k, &o) in node.outputs.iter().enumerate() {
                let p = eg.add(TNode::Proj(k as u32, [id]));
                if eg[p].data.tys.is_empty() {
                    if let Some(t) = g.ty(o) {
                        eg[p].data.tys = vec![t.clone()];
                    }
                }
                class[o.0 as usize] = Some(p);
            }
        }
    }
    eg.rebuild();
    let mut roots = Vec::with_capacity(g.outputs.len());
    for &o in &g.outputs {
        roots.push(class.get(o.0 as usize).copied().flatten().ok_or_else(|| {
            OptError::Internal(format!("output %{} is not defined", g.value(o).name))
        })?);
    }
    eg.analysis.roots = roots.clone();
    Ok(Loaded {
        egraph: eg,
        class,
        roots,
    })
}

/// A rebuilt node and the source nodes it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The rebuilt node's label (`FusedMatMul node "fc1"`).
    pub node: String,
    /// Labels of the source nodes it replaces, in source order.
    pub from: Vec<String>,
}

/// Rebuilds a graph from `choice`, the node chosen in each class.
pub fn from_egraph(
    src: &Graph,
    loaded: &Loaded,
    choice: &dyn Fn(Id) -> TNode,
) -> Result<(Graph, Vec<Origin>), OptError> {
    let eg = &loaded.egraph;
    let find = |id: Id| eg.find(id);
    // Class names: inputs, then outputs, then every other value in order.
    let mut names: HashMap<Id, String> = HashMap::new();
    let mut order: Vec<ValueId> = src.inputs.clone();
    order.extend(&src.outputs);
    order.extend((0..src.values.len() as u32).map(ValueId));
    for v in order {
        if let Some(Some(c)) = loaded.class.get(v.0 as usize) {
            names
                .entry(find(*c))
                .or_insert_with(|| src.value(v).name.clone());
        }
    }
    let mut used: BTreeSet<String> = src.values.iter().map(|v| v.name.clone()).collect();
    let mut fresh = 0usize;
    let mut fresh_name = |used: &mut BTreeSet<String>| loop {
        fresh += 1;
        let n = format!("opt.{fresh}");
        if used.insert(n.clone()) {
            return n;
        }
    };
    // Source nodes by the class of their (first) result, for origins and node names.
    let mut producers: HashMap<Id, Vec<usize>> = HashMap::new();
    for (i, n) in src.nodes.iter().enumerate() {
        for o in &n.outputs {
            if let Some(Some(c)) = loaded.class.get(o.0 as usize) {
                let e = producers.entry(find(*c)).or_default();
                if !e.contains(&i) {
                    e.push(i);
                }
            }
        }
    }

    let mut g = Graph::new(src.name.clone());
    let mut built: HashMap<Id, Vec<ValueId>> = HashMap::new();
    for (i, &v) in src.inputs.iter().enumerate() {
        let val = src.value(v);
        let id = g.add_value(val.name.clone(), val.ty.clone());
        g.value_mut(id).konst = val.konst.clone();
        g.inputs.push(id);
        if let Some(c) = eg.lookup(TNode::Input(i as u32)) {
            built.insert(find(c), vec![id]);
        }
        if src.bound_inputs.contains(&v) {
            g.bound_inputs.push(id);
        }
    }
    let mut made: Vec<(usize, Id)> = Vec::new();
    // Post-order over the chosen nodes, with an explicit stack (graphs can be deep).
    for &root in &loaded.roots {
        let mut stack: Vec<(Id, bool)> = vec![(find(root), false)];
        let mut on_path: BTreeSet<Id> = BTreeSet::new();
        while let Some((id, expanded)) = stack.pop() {
            if built.contains_key(&id) {
                continue;
            }
            let node = choice(id);
            if !expanded {
                if !on_path.insert(id) {
                    return Err(OptError::Internal(format!(
                        "extraction chose a cycle through `{node}`"
                    )));
                }
                stack.push((id, true));
                for &c in node.children() {
                    let c = find(c);
                    if !built.contains_key(&c) && !matches!(choice(c), TNode::Absent) {
                        stack.push((c, false));
                    }
                }
                continue;
            }
            on_path.remove(&id);
            let tys = &eg[id].data.tys;
            let name_for =
                |used: &mut BTreeSet<String>,
                 fresh: &mut dyn FnMut(&mut BTreeSet<String>) -> String| {
                    names.get(&id).cloned().unwrap_or_else(|| fresh(used))
                };
            let vals = match &node {
                TNode::Input(_) | TNode::Absent => {
                    return Err(OptError::Internal(format!(
                        "class {id} has no value to build"
                    )))
                }
                TNode::Const(c) => {
                    let t = eg.analysis.konst.get(*c as usize).cloned().ok_or_else(|| {
                        OptError::Internal(format!("constant {c} is not in the table"))
                    })?;
                    let name = name_for(&mut used, &mut fresh_name);
                    vec![g.add_const(name, t)]
                }
                TNode::Proj(k, [t]) => {
                    let outs = built.get(&find(*t)).ok_or_else(|| {
                        OptError::Internal(format!("projection of unbuilt class {t}"))
                    })?;
                    let v = *outs.get(*k as usize).ok_or_else(|| {
                        OptError::Internal(format!(
                            "projection {k} of a {}-result node",
                            outs.len()
                        ))
                    })?;
                    vec![v]
                }
                TNode::Op(key, ch) => {
                    let mut inputs = Vec::with_capacity(ch.len());
                    for &c in ch {
                        let c = find(c);
                        if matches!(choice(c), TNode::Absent) {
                            inputs.push(None);
                        } else {
                            let v = built.get(&c).and_then(|v| v.first().copied()).ok_or_else(
                                || OptError::Internal(format!("operand class {c} was not built")),
                            )?;
                            inputs.push(Some(v));
                        }
                    }
                    let n = key.n_outputs as usize;
                    let mut outs = Vec::with_capacity(n);
                    for k in 0..n {
                        let name = if n == 1 {
                            name_for(&mut used, &mut fresh_name)
                        } else {
                            // The projection's name, where extraction built the value of
                            // its class from this projection (and not from another node, which
                            // then carries the name).
                            eg.lookup(TNode::Proj(k as u32, [id]))
                                .map(find)
                                .filter(|&p| matches!(choice(p), TNode::Proj(..)))
                                .and_then(|p| names.get(&p).cloned())
                                .unwrap_or_else(|| fresh_name(&mut used))
                        };
                        outs.push(g.add_value(name, tys.get(k).cloned()));
                    }
                    let node_name = producers
                        .get(&id)
                        .and_then(|p| p.first())
                        .map(|&i| src.nodes[i].name.clone())
                        .unwrap_or_default();
                    g.nodes.push(key.node(&node_name, inputs, outs.clone()));
                    made.push((g.nodes.len() - 1, id));
                    outs
                }
            };
            built.insert(id, vals);
        }
    }
    for (&o, &root) in src.outputs.iter().zip(&loaded.roots) {
        let want = &src.value(o).name;
        let v = built
            .get(&find(root))
            .and_then(|v| v.first().copied())
            .ok_or_else(|| OptError::Internal(format!("output %{want} was not built")))?;
        if &g.value(v).name == want && !g.outputs.contains(&v) && !g.inputs.contains(&v) {
            g.outputs.push(v);
        } else {
            // The output's class already has another name (an input, another output): copy.
            let id = g.add_value(want.clone(), g.ty(v).cloned());
            g.nodes
                .push(OpKey::plain(tessera_ir::Op::Identity).node("", vec![Some(v)], vec![id]));
            g.outputs.push(id);
        }
    }
    // Origins: a rebuilt node stands for the source nodes of its class, and for those of
    // classes below it that the result no longer holds.
    let kept: BTreeSet<Id> = built.keys().copied().collect();
    let mut origins = Vec::with_capacity(made.len());
    for &(ni, id) in &made {
        let mut from: BTreeSet<usize> = BTreeSet::new();
        let mut work: Vec<usize> = producers.get(&id).cloned().unwrap_or_default();
        while let Some(i) = work.pop() {
            if !from.insert(i) {
                continue;
            }
            for inp in src.nodes[i].inputs.iter().flatten() {
                if let Some(Some(c)) = loaded.class.get(inp.0 as usize) {
                    let c = find(*c);
                    if !kept.contains(&c) {
                        work.extend(producers.get(&c).cloned().unwrap_or_default());
                    }
                }
            }
        }
        origins.push(Origin {
            node: g.nodes[ni].label(),
            from: from.iter().map(|&i| src.nodes[i].label()).collect(),
        });
    }
    Ok((g, origins))
}
