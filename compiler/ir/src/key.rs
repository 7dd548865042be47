//! The op table's hashable form: an [`OpKey`] is a node without its operands (op, attributes,
//! result count), with equality, hashing and order over the attributes' exact text, so that
//! it can label e-graph nodes (compiler/opt). [`OpKey::infer`] is the type rule of one node and
//! [`OpKey::fold`] the constant folder's view of it: both call the one implementation
//! ([`crate::infer`], [`crate::fold`]) on a one-node scratch graph, so nothing is written twice.

use crate::error::IrError;
use crate::graph::{Attr, Attrs, AttrsExt, Graph, Node, TensorType, ValueId};
use crate::op::Op;
use crate::tensor::Tensor;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A node's op, attributes and result count, hashable and totally ordered.
///
/// Attributes compare by their text form ([`crate::text`]), which round-trips exactly (floats
/// by their bits, subgraphs as printed), so two keys are equal exactly when the nodes are.
#[derive(Clone, Debug)]
pub struct OpKey {
    pub op: Op,
    pub n_outputs: u32,
    attrs: Arc<Attrs>,
    text: Arc<str>,
}

/// One operand as the type rule sees it: its type and, when known, its contents.
pub type Operand<'a> = Option<(&'a TensorType, Option<&'a Tensor>)>;

impl OpKey {
    pub fn new(op: Op, attrs: Attrs, n_outputs: usize) -> OpKey {
        let text = crate::text::attrs_text(&attrs);
        OpKey {
            op,
            n_outputs: n_outputs as u32,
            attrs: Arc::new(attrs),
            text: text.into(),
        }
    }

    /// An op with no attributes and one result.
    pub fn plain(op: Op) -> OpKey {
        OpKey::new(op, Attrs::new(), 1)
    }

    /// An op with `attrs` and one result.
    pub fn with(op: Op, attrs: &[(&str, Attr)]) -> OpKey {
        let attrs = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        OpKey::new(op, attrs, 1)
    }

    /// The key of an existing node.
    pub fn of(node: &Node) -> OpKey {
        OpKey::new(node.op, node.attrs.clone(), node.outputs.len())
    }

    pub fn attrs(&self) -> &Attrs {
        &self.attrs
    }

    /// The attributes as text, ` {perm = [1, 0]}` (empty when there are none).
    pub fn attrs_text(&self) -> &str {
        &self.text
    }

    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.get(name)
    }

    pub fn attr_int(&self, name: &str, default: i64) -> i64 {
        self.attrs.attr_int(name, default)
    }

    pub fn attr_float(&self, name: &str, default: f32) -> f32 {
        self.attrs.attr_float(name, default)
    }

    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        self.attrs.attr_ints(name)
    }

    pub fn attr_str(&self, name: &str) -> Option<&str> {
        self.attrs.attr_str(name)
    }

    /// A node applying this key to `inputs`, writing `outputs`.
    pub fn node(&self, name: &str, inputs: Vec<Option<ValueId>>, outputs: Vec<ValueId>) -> Node {
        Node {
            name: name.to_string(),
            op: self.op,
            inputs,
            outputs,
            attrs: (*self.attrs).clone(),
        }
    }

    /// A one-node graph over `operands`, for the type rule and the folder.
    fn scratch(&self, operands: &[Operand]) -> (Graph, Node) {
        let mut g = Graph::new("key");
        let mut inputs = Vec::with_capacity(operands.len());
        for (i, o) in operands.iter().enumerate() {
            inputs.push(o.map(|(ty, k)| {
                let id = g.add_value(format!("in{i}"), Some(ty.clone()));
                g.value_mut(id).konst = k.cloned();
                id
            }));
        }
        let outputs = (0..self.n_outputs)
            .map(|k| g.add_value(format!("out{k}"), None))
            .collect();
        let node = self.node("", inputs, outputs);
        (g, node)
    }

    /// The type rule: the result types of this op on `operands`.
    pub fn infer(&self, operands: &[Operand]) -> Result<Vec<TensorType>, IrError> {
        let (g, node) = self.scratch(operands);
        crate::infer::infer_node_types(&g, &node)
    }

    /// The results' contents when the folder computes them at compile time with `ev` (see
    /// [`crate::fold::eval_node`] for what it folds), with their types.
    pub fn fold(
        &self,
        operands: &[Operand],
        ev: &dyn crate::fold::ConstEval,
    ) -> Result<Option<Vec<Tensor>>, IrError> {
        let (g, node) = self.scratch(operands);
        let tys = crate::infer::infer_node_types(&g, &node)?;
        crate::fold::eval_node(&g, &node, &tys, ev)
    }
}

impl PartialEq for OpKey {
    fn eq(&self, other: &OpKey) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for OpKey {}

impl Hash for OpKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.op.hash(state);
        self.n_outputs.hash(state);
        self.text.hash(state);
    }
}

impl PartialOrd for OpKey {
    fn partial_cmp(&self, other: &OpKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OpKey {
    fn cmp(&self, other: &OpKey) -> Ordering {
        (self.op, self.n_outputs, &*self.text).cmp(&(other.op, other.n_outputs, &*other.text))
    }
}

impl std::fmt::Display for OpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.op)?;
        f.write_str(&self.text)?;
        if self.n_outputs != 1 {
            write!(f, " ->{}", self.n_outputs)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    #[test]
    fn keys_compare_by_attribute_text_and_type_nodes() {
        let a = OpKey::with(Op::Transpose, &[("perm", Attr::Ints(vec![1, 0]))]);
        let b = OpKey::with(Op::Transpose, &[("perm", Attr::Ints(vec![1, 0]))]);
        let c = OpKey::with(Op::Transpose, &[("perm", Attr::Ints(vec![0, 1]))]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "Transpose {perm = [1, 0]}");
        let x = TensorType::fixed(DType::F32, &[2, 3]);
        let t = a.infer(&[Some((&x, None))]).unwrap();
        assert_eq!(t[0].to_string(), "f32[3,2]");
    }
}
