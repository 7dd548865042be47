//! The e-graph language, generated from the op table: one generic e-node [`TNode::Op`] labelled
//! by an [`OpKey`] (op, attributes, result count), so every op of `tessera_ir::op::OPS` is an
//! e-node and none is listed twice. Leaves are graph inputs, constants and omitted optional
//! operands; [`TNode::Proj`] picks one result of a multi-result node.

use egg::{Id, Language};
use std::fmt;
use tessera_ir::OpKey;

/// One e-node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TNode {
    /// Runtime input `i` of the graph (in `Graph::inputs` order).
    Input(u32),
    /// Constant `i` of the analysis's constant table ([`crate::analysis::Types::konst`]).
    Const(u32),
    /// An omitted optional operand (`_` in the text format).
    Absent,
    /// A graph op applied to its operands. A multi-result op's class is the tuple of its
    /// results, read through [`TNode::Proj`].
    Op(OpKey, Vec<Id>),
    /// Result `k` of a multi-result op.
    Proj(u32, [Id; 1]),
}

impl TNode {
    pub fn key(&self) -> Option<&OpKey> {
        match self {
            TNode::Op(k, _) => Some(k),
            _ => None,
        }
    }
}

impl Language for TNode {
    type Discriminant = std::mem::Discriminant<TNode>;

    fn discriminant(&self) -> Self::Discriminant {
        std::mem::discriminant(self)
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (TNode::Input(a), TNode::Input(b)) | (TNode::Const(a), TNode::Const(b)) => a == b,
            (TNode::Absent, TNode::Absent) => true,
            (TNode::Op(a, x), TNode::Op(b, y)) => a == b && x.len() == y.len(),
            (TNode::Proj(a, _), TNode::Proj(b, _)) => a == b,
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            TNode::Op(_, c) => c,
            TNode::Proj(_, c) => c,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            TNode::Op(_, c) => c,
            TNode::Proj(_, c) => c,
            _ => &mut [],
        }
    }
}

impl fmt::Display for TNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TNode::Input(i) => write!(f, "input{i}"),
            TNode::Const(i) => write!(f, "const{i}"),
            TNode::Absent => f.write_str("_"),
            TNode::Op(k, _) => write!(f, "{k}"),
            TNode::Proj(k, _) => write!(f, "proj{k}"),
        }
    }
}
