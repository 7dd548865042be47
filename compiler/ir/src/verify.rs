//! The graph verifier ([`verify`], [`verify_structure`]) and [`topo_sort`]. Every pass's
//! output must pass [`verify`]: values defined once, references in range, nodes in
//! topological order, arities and attribute names as the op table declares them, and
//! (after inference) every result typed.

use crate::error::IrError;
use crate::graph::{Graph, Node, ValueId};
use crate::op::{operand_name, Arity, ANY};
use std::collections::{BTreeSet, HashMap};

type Result<T> = std::result::Result<T, IrError>;

/// Full verification, for graphs after shape inference: [`verify_structure`] plus a type
/// on every node result.
pub fn verify(g: &Graph) -> Result<()> {
    verify_structure(g)?;
    for node in &g.nodes {
        for &o in &node.outputs {
            if g.ty(o).is_none() {
                return Err(IrError::UntypedResult {
                    node: node.label(),
                    value: value_name(g, o),
                });
            }
        }
        // Subgraphs are verified like graphs; an If on a known condition types only the
        // branch it takes, so an untyped branch there is not an error.
        for a in node.attrs.values() {
            if let crate::graph::Attr::Graph(b) = a {
                if b.nodes
                    .iter()
                    .all(|n| n.outputs.iter().all(|&o| b.ty(o).is_some()))
                {
                    verify(b)?;
                } else {
                    verify_structure(b)?;
                }
            }
        }
    }
    Ok(())
}

/// Verification that does not need types (for graphs fresh from a frontend or parser).
pub fn verify_structure(g: &Graph) -> Result<()> {
    let n_values = g.values.len();
    let in_range = |id: ValueId| (id.0 as usize) < n_values;
    for (what, list) in [
        ("graph input", &g.inputs),
        ("graph output", &g.outputs),
        ("bound input", &g.bound_inputs),
    ] {
        for (k, &id) in list.iter().enumerate() {
            if !in_range(id) {
                return Err(IrError::Dangling {
                    user: format!("{what} {k}"),
                    value: id.to_string(),
                });
            }
        }
    }
    // Names are how the text format and error messages refer to values.
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, v) in g.values.iter().enumerate() {
        if let Some(first) = names.insert(v.name.as_str(), i) {
            return Err(IrError::Duplicate {
                value: v.name.clone(),
                first: format!("value #{first}"),
                second: format!("value #{i}"),
            });
        }
    }
    let defs = definitions(g)?;
    for &b in &g.bound_inputs {
        if !g.inputs.contains(&b) {
            return Err(IrError::Dangling {
                user: "the bound-input list".into(),
                value: format!("%{}", value_name(g, b)),
            });
        }
    }
    // Walk in order: every operand must be defined before its user.
    let mut defined: Vec<bool> = (0..n_values)
        .map(|i| matches!(defs[i], Some(Def::Input) | Some(Def::Const)))
        .collect();
    for node in &g.nodes {
        check_node_signature(node)?;
        for (i, inp) in node.inputs.iter().enumerate() {
            let Some(id) = *inp else { continue };
            let user = format!(
                "operand {i} (`{}`) of {}",
                operand_name(node.op, i),
                node.label()
            );
            match defs.get(id.0 as usize) {
                None => {
                    return Err(IrError::Dangling {
                        user,
                        value: id.to_string(),
                    })
                }
                Some(None) => {
                    return Err(IrError::Dangling {
                        user,
                        value: format!("%{}", value_name(g, id)),
                    })
                }
                Some(Some(Def::Node(p))) if !defined[id.0 as usize] => {
                    if let Some(err) = cycle_error(g) {
                        return Err(err);
                    }
                    return Err(IrError::UseBeforeDef {
                        user,
                        value: value_name(g, id),
                        def: g.nodes.get(*p).map(Node::label).unwrap_or_default(),
                    });
                }
                Some(Some(_)) => {}
            }
        }
        for &o in &node.outputs {
            defined[o.0 as usize] = true;
        }
    }
    for (k, &o) in g.outputs.iter().enumerate() {
        if defs[o.0 as usize].is_none() {
            return Err(IrError::Dangling {
                user: format!("graph output {k}"),
                value: format!("%{}", value_name(g, o)),
            });
        }
    }
    Ok(())
}

/// Checks one node against the op table: operand and result counts, required operands
/// present, and attribute names.
pub fn check_node_signature(node: &Node) -> Result<()> {
    let info = node.op.info();
    if !info.inputs.allows(node.inputs.len()) {
        return Err(IrError::Arity {
            node: node.label(),
            what: "operands",
            expected: arity_text(info.inputs),
            got: node.inputs.len(),
        });
    }
    if !info.outputs.allows(node.outputs.len()) {
        return Err(IrError::Arity {
            node: node.label(),
            what: "results",
            expected: arity_text(info.outputs),
            got: node.outputs.len(),
        });
    }
    for i in 0..info.inputs.min.min(node.inputs.len()) {
        if node.inputs[i].is_none() {
            return Err(IrError::MissingOperand {
                node: node.label(),
                index: i,
                operand: operand_name(node.op, i).to_string(),
            });
        }
    }
    for name in node.attrs.keys() {
        if !info.attrs.contains(&name.as_str()) {
            let known = if info.attrs.is_empty() {
                "none".to_string()
            } else {
                info.attrs.join(", ")
            };
            return Err(IrError::UnknownAttr {
                node: node.label(),
                op: info.name.to_string(),
                attr: name.clone(),
                known,
            });
        }
    }
    Ok(())
}

fn arity_text(a: Arity) -> String {
    if a.min == a.max {
        format!("exactly {}", a.min)
    } else if a.max == ANY {
        format!("at least {}", a.min)
    } else {
        format!("{} to {}", a.min, a.max)
    }
}

fn value_name(g: &Graph, id: ValueId) -> String {
    g.values
        .get(id.0 as usize)
        .map(|v| v.name.clone())
        .unwrap_or_else(|| id.to_string())
}

/// How a value comes to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Def {
    Input,
    /// An initializer or folded constant that no node produces.
    Const,
    Node(usize),
}

/// Who defines each value (`None`: nobody). Refuses a value defined twice and ids out of
/// range in nodes.
fn definitions(g: &Graph) -> Result<Vec<Option<Def>>> {
    let mut defs: Vec<Option<Def>> = vec![None; g.values.len()];
    let describe = |g: &Graph, d: Def| match d {
        Def::Input => "the graph inputs".to_string(),
        Def::Const => "a constant".to_string(),
        Def::Node(i) => g.nodes.get(i).map(Node::label).unwrap_or_default(),
    };
    for &i in &g.inputs {
        if let Some(slot) = defs.get_mut(i.0 as usize) {
            if slot.is_some() {
                return Err(IrError::Duplicate {
                    value: value_name(g, i),
                    first: "the graph inputs".into(),
                    second: "the graph inputs".into(),
                });
            }
            *slot = Some(Def::Input);
        }
    }
    for (ni, node) in g.nodes.iter().enumerate() {
        for (k, &o) in node.outputs.iter().enumerate() {
            let Some(slot) = defs.get_mut(o.0 as usize) else {
                return Err(IrError::Dangling {
                    user: format!("result {k} of {}", node.label()),
                    value: o.to_string(),
                });
            };
            if let Some(first) = *slot {
                return Err(IrError::Duplicate {
                    value: value_name(g, o),
                    first: describe(g, first),
                    second: node.label(),
                });
            }
            *slot = Some(Def::Node(ni));
        }
        for (i, inp) in node.inputs.iter().enumerate() {
            if let Some(id) = inp {
                if id.0 as usize >= g.values.len() {
                    return Err(IrError::Dangling {
                        user: format!(
                            "operand {i} (`{}`) of {}",
                            operand_name(node.op, i),
                            node.label()
                        ),
                        value: id.to_string(),
                    });
                }
            }
        }
    }
    for (i, v) in g.values.iter().enumerate() {
        if defs[i].is_none() && v.konst.is_some() {
            defs[i] = Some(Def::Const);
        }
    }
    Ok(defs)
}

/// The producing node of every value, if any.
fn producers(g: &Graph) -> Result<Vec<Option<usize>>> {
    Ok(definitions(g)?
        .into_iter()
        .map(|d| {
            if let Some(Def::Node(n)) = d {
                Some(n)
            } else {
                None
            }
        })
        .collect())
}

/// Finds a cycle among the nodes and describes it, if there is one.
fn cycle_error(g: &Graph) -> Option<IrError> {
    let prod = producers(g).ok()?;
    let order = kahn(g, &prod);
    if order.len() == g.nodes.len() {
        return None;
    }
    let placed: BTreeSet<usize> = order.into_iter().collect();
    let remaining: Vec<usize> = (0..g.nodes.len()).filter(|i| !placed.contains(i)).collect();
    Some(describe_cycle(g, &prod, &remaining))
}

/// Stable topological order (Kahn's algorithm, always taking the lowest-numbered ready
/// node). Nodes on or behind a cycle are left out.
fn kahn(g: &Graph, prod: &[Option<usize>]) -> Vec<usize> {
    let n = g.nodes.len();
    let mut indeg = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (ni, node) in g.nodes.iter().enumerate() {
        for id in node.inputs.iter().flatten() {
            if let Some(Some(p)) = prod.get(id.0 as usize) {
                indeg[ni] += 1;
                users[*p].push(ni);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.insert(u);
            }
        }
    }
    order
}

/// Walks producer edges from a node that could not be ordered until a node repeats; the
/// repeated stretch is a cycle.
fn describe_cycle(g: &Graph, prod: &[Option<usize>], remaining: &[usize]) -> IrError {
    let rem: BTreeSet<usize> = remaining.iter().copied().collect();
    let mut path: Vec<usize> = Vec::new();
    let mut cur = remaining.first().copied().unwrap_or(0);
    loop {
        if let Some(pos) = path.iter().position(|&p| p == cur) {
            let mut cyc: Vec<usize> = path[pos..].to_vec();
            // Present the cycle in dataflow order, starting from its earliest node.
            cyc.reverse();
            let start = cyc
                .iter()
                .enumerate()
                .min_by_key(|(_, &n)| n)
                .map(|(i, _)| i)
                .unwrap_or(0);
            cyc.rotate_left(start);
            let mut labels: Vec<String> = cyc.iter().map(|&i| g.nodes[i].label()).collect();
            let first = labels.first().cloned().unwrap_or_default();
            labels.push(first.clone());
            return IrError::Cycle {
                node: first,
                path: labels.join(" -> "),
            };
        }
        path.push(cur);
        let next = g.nodes[cur]
            .inputs
            .iter()
            .flatten()
            .filter_map(|id| prod.get(id.0 as usize).copied().flatten())
            .find(|p| rem.contains(p));
        match next {
            Some(p) => cur = p,
            // Every unplaced node has an unplaced producer, so this is unreachable in
            // practice; report the node anyway rather than loop.
            None => {
                let l = g.nodes[cur].label();
                return IrError::Cycle {
                    node: l.clone(),
                    path: l,
                };
            }
        }
    }
}

/// Reorders the nodes topologically, keeping the existing order wherever the dataflow
/// allows, or reports a cycle naming the nodes on it.
pub fn topo_sort(g: &mut Graph) -> Result<()> {
    let prod = producers(g)?;
    let order = kahn(g, &prod);
    if order.len() != g.nodes.len() {
        let placed: BTreeSet<usize> = order.iter().copied().collect();
        let remaining: Vec<usize> = (0..g.nodes.len()).filter(|i| !placed.contains(i)).collect();
        return Err(describe_cycle(g, &prod, &remaining));
    }
    let mut old: Vec<Option<Node>> = std::mem::take(&mut g.nodes).into_iter().map(Some).collect();
    g.nodes = order
        .into_iter()
        .filter_map(|i| old.get_mut(i).and_then(Option::take))
        .collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::B;
    use crate::{Attr, Op};

    fn err(g: &Graph) -> String {
        verify(g)
            .map(|_| "ok".into())
            .unwrap_or_else(|e| format!("{}: {e}", e.kind()))
    }

    #[test]
    fn cycles_are_reported_with_their_nodes() {
        let mut b = B::new();
        let x = b.input("x", "f32[2]");
        let a = b.node1(Op::Add, &[x, x], &[]);
        let r = b.node1(Op::Relu, &[a], &[]);
        let n = b.node1(Op::Neg, &[r], &[]);
        b.g.nodes[0].inputs[1] = Some(n);
        b.g.outputs = vec![n];
        assert_eq!(
            err(&b.g),
            "cycle: the graph has a cycle through Add node \"n0\": Add node \"n0\" -> Relu node \"n1\" -> Neg node \"n2\" -> Add node \"n0\""
        );
        assert_eq!(topo_sort(&mut b.g).unwrap_err().kind(), "cycle");
    }

    #[test]
    fn topo_sort_repairs_order() {
        let mut b = B::new();
        let x = b.input("x", "f32[2]");
        let a = b.node1(Op::Relu, &[x], &[]);
        let c = b.node1(Op::Neg, &[a], &[]);
        let d = b.node1(Op::Abs, &[x], &[]);
        b.g.outputs = vec![c, d];
        b.g.nodes.swap(0, 1);
        assert_eq!(err(&b.g), "use-before-def: operand 0 (`input`) of Neg node \"n1\" uses value %n0_0 before Relu node \"n0\", which defines it");
        topo_sort(&mut b.g).unwrap();
        let names: Vec<&str> = b.g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec!["n0", "n1", "n2"]);
        crate::infer_shapes(&mut b.g).unwrap();
        assert_eq!(err(&b.g), "ok");
    }

    #[test]
    fn dangling_references() {
        let mut b = B::new();
        let x = b.input("x", "f32[2]");
        let y = b.node1(Op::Relu, &[x], &[]);
        b.g.outputs = vec![y];
        b.g.nodes[0].inputs[0] = Some(ValueId(99));
        assert_eq!(
            err(&b.g),
            "dangling: operand 0 (`input`) of Relu node \"n0\" refers to value v99, which is never defined"
        );
        let orphan = b.g.add_value("orphan", None);
        b.g.nodes[0].inputs[0] = Some(orphan);
        assert_eq!(
            err(&b.g),
            "dangling: operand 0 (`input`) of Relu node \"n0\" refers to value %orphan, which is never defined"
        );
        b.g.nodes[0].inputs[0] = Some(x);
        b.g.outputs.push(orphan);
        assert_eq!(
            err(&b.g),
            "dangling: graph output 1 refers to value %orphan, which is never defined"
        );
    }

    #[test]
    fn arity_attributes_duplicates_and_types() {
        let mut b = B::new();
        let x = b.input("x", "f32[2]");
        let y = b.node1(Op::Relu, &[x], &[]);
        b.g.outputs = vec![y];
        assert_eq!(
            err(&b.g),
            "untyped-result: result %n0_0 of Relu node \"n0\" has no type"
        );
        b.g.nodes[0].inputs.push(Some(x));
        assert_eq!(
            err(&b.g),
            "arity: Relu node \"n0\" takes exactly 1 operands, but has 2"
        );
        b.g.nodes[0].inputs.pop();
        b.g.nodes[0].attrs.insert("axis".into(), Attr::Int(0));
        assert!(
            err(&b.g).starts_with("unknown-attr: Relu node \"n0\" has unknown attribute `axis`")
        );
        b.g.nodes[0].attrs.clear();
        b.g.nodes[0].outputs = vec![x];
        assert_eq!(
            err(&b.g),
            "duplicate: value %x is defined twice: by the graph inputs and by Relu node \"n0\""
        );
        let mut b = B::new();
        let x = b.input("x", "f32[2]");
        let c = b.node(Op::Clip, &[None, Some(x)], 1, &[]);
        b.g.outputs = c;
        assert_eq!(
            err(&b.g),
            "missing-operand: operand 0 (`input`) of Clip node \"n0\" is required but omitted"
        );
    }
}
