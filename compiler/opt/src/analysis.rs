//! The e-class analysis: every class carries its result types, found by the op table's type
//! rule ([`OpKey::infer`]), and its contents when the one constant folder
//! ([`OpKey::fold`], i.e. `tessera_ir::fold` with [`Types::folder`]) computes them. A folded class gets a
//! [`TNode::Const`] node, which extraction prefers. The analysis also owns the constant table,
//! the counts of rules fired and the first malformed intermediate a rule built.

use crate::lang::TNode;
use egg::{DidMerge, Id};
use std::collections::BTreeMap;
use tessera_ir::{Tensor, TensorType};

pub type EGraph = egg::EGraph<TNode, Types>;

/// Operand contents up to this many elements are shown to the type rule and the folder (shape
/// operands are small; large weights are never folded, so copying them would be waste).
const SMALL_KONST: u64 = 4096;

/// What the analysis knows of a class.
#[derive(Clone, Debug, Default)]
pub struct Data {
    /// The result types: one for a value, several for the tuple of a multi-result op; empty
    /// when unknown (an omitted operand, or a node the type rule refused).
    pub tys: Vec<TensorType>,
    /// The class's contents, as an index into [`Types::konst`].
    pub konst: Option<u32>,
    /// Whether the class holds a runtime input (bound inputs have contents, but stay inputs).
    pub input: bool,
    /// Why the type rule refused the class's first node, if it did.
    pub err: Option<String>,
}

/// The analysis state shared by the whole e-graph.
#[derive(Debug, Default)]
pub struct Types {
    /// Types of the graph's runtime inputs.
    pub inputs: Vec<TensorType>,
    /// Contents of bound runtime inputs, by input position.
    pub bound: BTreeMap<u32, u32>,
    /// The constant table [`TNode::Const`] indexes.
    pub konst: Vec<Tensor>,
    /// How many times each rule merged a new alternative into a class.
    pub fired: BTreeMap<String, usize>,
    /// The first malformed intermediate a rule built: (rule, message).
    pub error: Option<(String, String)>,
    /// The classes of the graph's outputs (not canonical: compare through `find`).
    pub roots: Vec<Id>,
    /// What computes a class whose operands are all known (`None`: only the data-free nodes).
    pub folder: Option<std::sync::Arc<dyn tessera_ir::ConstEval>>,
    /// The constants rules made, by a hash of their contents: a rule that builds the same
    /// constant again (it runs every iteration) gets the same node, so its alternative is
    /// already in the class and the e-graph does not grow.
    pub made: std::collections::HashMap<u64, Vec<u32>>,
}

impl Types {
    pub fn add_const(&mut self, t: Tensor) -> u32 {
        self.konst.push(t);
        (self.konst.len() - 1) as u32
    }

    /// [`Types::add_const`] for a constant a rule made: the same contents give the same index.
    pub fn add_made_const(&mut self, t: Tensor) -> u32 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            t.dtype.to_onnx(),
            &t.dims,
            t.bytes.as_slice(),
            t.strings.as_slice(),
        )
            .hash(&mut h);
        let key = h.finish();
        if let Some(&i) = self
            .made
            .get(&key)
            .and_then(|v| v.iter().find(|&&i| self.konst[i as usize] == t))
        {
            return i;
        }
        let i = self.add_const(t);
        self.made.entry(key).or_default().push(i);
        i
    }
}

fn small(t: &Tensor) -> bool {
    t.num_elements() <= SMALL_KONST
}

impl egg::Analysis<TNode> for Types {
    type Data = Data;

    fn make(eg: &mut EGraph, node: &TNode, _id: Id) -> Data {
        match node {
            TNode::Input(i) => Data {
                tys: eg
                    .analysis
                    .inputs
                    .get(*i as usize)
                    .cloned()
                    .into_iter()
                    .collect(),
                konst: eg.analysis.bound.get(i).copied(),
                input: true,
                err: None,
            },
            TNode::Const(c) => Data {
                tys: eg
                    .analysis
                    .konst
                    .get(*c as usize)
                    .map(|t| TensorType::fixed(t.dtype, &t.dims))
                    .into_iter()
                    .collect(),
                konst: Some(*c),
                input: false,
                err: None,
            },
            TNode::Absent => Data::default(),
            TNode::Proj(k, [t]) => Data {
                tys: eg[*t]
                    .data
                    .tys
                    .get(*k as usize)
                    .cloned()
                    .into_iter()
                    .collect(),
                ..Data::default()
            },
            TNode::Op(key, ch) => {
                let mut tys: Vec<Option<TensorType>> = Vec::with_capacity(ch.len());
                let mut ks: Vec<Option<u32>> = Vec::with_capacity(ch.len());
                let mut unknown = false;
                for &c in ch {
                    let d = &eg[c].data;
                    let absent = eg[c].nodes.iter().any(|n| matches!(n, TNode::Absent));
                    if absent {
                        tys.push(None);
                        ks.push(None);
                        continue;
                    }
                    match d.tys.first() {
                        Some(t) if d.tys.len() == 1 => tys.push(Some(t.clone())),
                        _ => {
                            unknown = true;
                            tys.push(None);
                        }
                    }
                    ks.push(d.konst);
                }
                if unknown {
                    return Data::default();
                }
                let table = &eg.analysis.konst;
                let konst_of =
                    |k: Option<u32>| k.and_then(|i| table.get(i as usize)).filter(|t| small(t));
                let operands: Vec<tessera_ir::key::Operand> = tys
                    .iter()
                    .zip(&ks)
                    .map(|(t, k)| t.as_ref().map(|t| (t, konst_of(*k))))
                    .collect();
                let out = match key.infer(&operands) {
                    Ok(t) => t,
                    Err(e) => {
                        return Data {
                            err: Some(e.to_string()),
                            ..Data::default()
                        }
                    }
                };
                let all_known = tys
                    .iter()
                    .zip(&ks)
                    .all(|(t, k)| t.is_none() || konst_of(*k).is_some());
                let folded = if all_known && out.len() == 1 && !ch.is_empty() {
                    key.fold(
                        &operands,
                        eg.analysis.folder.as_deref().unwrap_or(&tessera_ir::NoEval),
                    )
                    .ok()
                    .flatten()
                } else {
                    None
                };
                let konst = folded
                    .and_then(|mut v| v.pop())
                    .map(|t| eg.analysis.add_const(t));
                Data {
                    tys: out,
                    konst,
                    input: false,
                    err: None,
                }
            }
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed_a = false;
        if a.tys.is_empty() && !b.tys.is_empty() {
            a.tys = b.tys.clone();
            changed_a = true;
        }
        if a.konst.is_none() && b.konst.is_some() {
            a.konst = b.konst;
            changed_a = true;
        }
        if !a.input && b.input {
            a.input = true;
            changed_a = true;
        }
        let changed_b = (b.tys.is_empty() && !a.tys.is_empty())
            || (b.konst.is_none() && a.konst.is_some())
            || (!b.input && a.input);
        DidMerge(changed_a, changed_b)
    }

    fn modify(eg: &mut EGraph, id: Id) {
        let d = &eg[id].data;
        if d.input {
            return;
        }
        let Some(c) = d.konst else { return };
        if eg[id].nodes.iter().any(|n| matches!(n, TNode::Const(_))) {
            return;
        }
        let k = eg.add(TNode::Const(c));
        eg.union(id, k);
    }
}
