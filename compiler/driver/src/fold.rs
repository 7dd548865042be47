//! The constant folder's evaluator: [`InterpFolder`] computes a node whose operands are all
//! known at compile time by lowering it, alone, with the normal lowering for the `interp`
//! target and running the plan on the kernel-IR interpreter (host steps included), so a folded
//! result is exactly what the reference semantics compute, for every op that has a lowering.
//!
//! *Which* nodes fold, and the size bound, is `tessera_ir::fold`'s decision
//! ([`tessera_ir::fold::foldable`]); this file only computes. A node whose lowering or run
//! fails (no lowering, an index out of range that traps) is left to run
//! time, where its kernel reports the failure as it would have without folding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tessera_ir::{Attr, ConstEval, Graph, Node, Op, Tensor, TensorType, ValueId};
use tessera_runtime::artifact::StoredKernel;
use tessera_runtime::{Artifact, Model};
use tessera_target::Target;

/// Evaluates one node on the interpreter (see the module documentation). Results are cached
/// by the SHA-256 of the node's op, attributes and operands, so asking twice (the e-graph
/// analysis and the pass after the optimizer see the same nodes) costs one evaluation.
pub struct InterpFolder {
    target: crate::targets::Interp,
    cache: Mutex<HashMap<[u8; 32], Option<Vec<Tensor>>>>,
}

impl std::fmt::Debug for InterpFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InterpFolder")
    }
}

impl Default for InterpFolder {
    fn default() -> Self {
        InterpFolder::new()
    }
}

impl InterpFolder {
    pub fn new() -> InterpFolder {
        InterpFolder {
            target: crate::targets::Interp::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A folder shared by the stages of one compile.
    pub fn shared() -> Arc<dyn ConstEval> {
        Arc::new(InterpFolder::new())
    }

    /// The one-node graph: every operand a constant value, every result a graph output. A
    /// `CastLike`, whose second operand is read only for its dtype (and may be a runtime value),
    /// becomes the `Cast` it means.
    fn scratch(g: &Graph, node: &Node, tys: &[TensorType]) -> Option<Graph> {
        let mut s = Graph::new("fold");
        let (mut op, mut attrs) = (node.op, node.attrs.clone());
        let mut operands: &[Option<ValueId>] = &node.inputs;
        if node.op == Op::CastLike {
            let to = tys.first()?.dtype.to_onnx();
            attrs.insert("to".into(), Attr::Int(to as i64));
            op = Op::Cast;
            operands = node.inputs.get(..1)?;
        }
        let mut inputs = Vec::with_capacity(operands.len());
        for id in operands {
            inputs.push(match id {
                None => None,
                Some(id) => {
                    let v = g.values.get(id.0 as usize)?;
                    let t = v.konst.clone()?;
                    let ty = TensorType::fixed(t.dtype, &t.dims);
                    let n = s.add_value(v.name.clone(), Some(ty));
                    s.value_mut(n).konst = Some(t);
                    Some(n)
                }
            });
        }
        let mut outputs = Vec::with_capacity(tys.len());
        for (k, ty) in tys.iter().enumerate() {
            let name = node
                .outputs
                .get(k)
                .and_then(|o| g.values.get(o.0 as usize))
                .map_or_else(|| format!("out{k}"), |v| v.name.clone());
            outputs.push(s.add_value(name, Some(ty.clone())));
        }
        s.outputs = outputs.clone();
        s.nodes.push(Node {
            name: node.name.clone(),
            op,
            inputs,
            outputs,
            attrs,
        });
        Some(s)
    }

    /// Evaluates `node` of `g` (every present operand known, `tys` its static result types)
    /// without the cache, saying why when it cannot: what [`ConstEval::eval`] does, for
    /// diagnostics and tests.
    pub fn evaluate(
        &self,
        g: &Graph,
        node: &Node,
        tys: &[TensorType],
    ) -> Result<Vec<Tensor>, String> {
        let s = Self::scratch(g, node, tys).ok_or("an operand is not known")?;
        self.run(&s, tys)
    }

    /// Lowers and runs the one-node graph.
    fn run(&self, s: &Graph, tys: &[TensorType]) -> Result<Vec<Tensor>, String> {
        let str = |e: &dyn std::fmt::Display| e.to_string();
        let program = tessera_lower::lower(s, self.target.desc()).map_err(|e| str(&e))?;
        let mut kernels = Vec::with_capacity(program.kernels.len());
        for k in &program.kernels {
            tessera_kir::verify::verify(k).map_err(|e| str(&e))?;
            let blob = self.target.compile(k).map_err(|e| str(&e))?;
            kernels.push(StoredKernel {
                name: k.name.clone(),
                param_bytes: k
                    .params()
                    .iter()
                    .map(|p| p.dtype.storage_bytes(p.len))
                    .collect(),
                blob: blob.code,
            });
        }
        let artifact = Artifact {
            target: "interp".into(),
            fingerprint: self.target.fingerprint(),
            source: "the constant folder".into(),
            plan: program.plan,
            kernels,
        };
        let model =
            Model::load(artifact, Arc::new(tessera_interp::InterpDevice)).map_err(|e| str(&e))?;
        let outs = model.run(&[]).map_err(|e| str(&e))?;
        // A run-time-sized result comes back at its actual size, which may differ from the
        // capacity inference gave; such a node stays a runtime op.
        let same = outs.len() == tys.len()
            && outs.iter().zip(tys).all(|(t, ty)| {
                t.dtype == ty.dtype && ty.shape.as_static().is_some_and(|d| d == t.dims)
            });
        if !same {
            return Err("the results' sizes are known only at run time".into());
        }
        Ok(outs)
    }
}

/// The cache key: op, attributes (by their exact text), result types and operand contents.
fn key(node: &Node, g: &Graph, tys: &[TensorType]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(tessera_ir::OpKey::of(node).to_string().as_bytes());
    for ty in tys {
        h.update(format!("->{ty};").as_bytes());
    }
    for (i, id) in node.inputs.iter().enumerate() {
        if tessera_ir::fold::reads_type_only(node.op, i) {
            // Read for its dtype only, which the result types above already say.
            h.update(b"type-only;");
            continue;
        }
        match id.and_then(|id| g.konst(id)) {
            None => h.update(b"absent;"),
            Some(t) => {
                h.update(format!("{}{:?}:{}:", t.dtype, t.dims, t.bytes.len()).as_bytes());
                h.update(t.bytes.as_slice());
                for s in t.strings.iter() {
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
            }
        }
    }
    h.finalize().into()
}

impl ConstEval for InterpFolder {
    fn eval(&self, g: &Graph, node: &Node, tys: &[TensorType]) -> Option<Vec<Tensor>> {
        let k = key(node, g, tys);
        if let Some(hit) = self.cache.lock().ok()?.get(&k) {
            return hit.clone();
        }
        let r = self.evaluate(g, node, tys).ok();
        if let Ok(mut c) = self.cache.lock() {
            c.insert(k, r.clone());
        }
        r
    }
}
