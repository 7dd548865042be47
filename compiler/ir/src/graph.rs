//! The graph IR proper: values, nodes with attributes, and the graph that owns them.
//! A [`Graph`] is a typed tensor dataflow graph whose nodes are kept in topological order.

use crate::dtype::DType;
use crate::op::Op;
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::fmt;

/// Index of a value in [`Graph::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A tensor's element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Shape) -> TensorType {
        TensorType { dtype, shape }
    }

    pub fn fixed(dtype: DType, dims: &[u64]) -> TensorType {
        TensorType {
            dtype,
            shape: Shape::from_static(dims),
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

/// An SSA tensor value: a graph input, an initializer, or a node result.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// The name it had in the source model; unique within a graph.
    pub name: String,
    /// Known after shape inference; may be `None` before it.
    pub ty: Option<TensorType>,
    /// Compile-time contents: initializers, folded constants, and inputs bound at compile
    /// time (see [`Graph::bound_inputs`]).
    pub konst: Option<Tensor>,
}

/// An attribute value, as ONNX defines them.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    String(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strings(Vec<String>),
    Tensor(Tensor),
    /// A subgraph (If branches, Loop and Scan bodies). It is closed: every outer value it
    /// reads is an explicit capture (see `crate::infer::control`).
    Graph(Box<Graph>),
}

pub type Attrs = BTreeMap<String, Attr>;

/// Typed reads of an attribute list, with the default when it is absent ([`Node`] and
/// [`crate::OpKey`] both read through these).
pub trait AttrsExt {
    fn attr_int(&self, name: &str, default: i64) -> i64;
    fn attr_float(&self, name: &str, default: f32) -> f32;
    fn attr_ints(&self, name: &str) -> Option<&[i64]>;
    fn attr_str(&self, name: &str) -> Option<&str>;
}

impl AttrsExt for Attrs {
    fn attr_int(&self, name: &str, default: i64) -> i64 {
        match self.get(name) {
            Some(Attr::Int(v)) => *v,
            _ => default,
        }
    }

    fn attr_float(&self, name: &str, default: f32) -> f32 {
        match self.get(name) {
            Some(Attr::Float(v)) => *v,
            Some(Attr::Int(v)) => *v as f32,
            _ => default,
        }
    }

    fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        match self.get(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }

    fn attr_str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Attr::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// One op application.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The source model's node name, possibly empty; errors name nodes by it.
    pub name: String,
    pub op: Op,
    /// Operands in the op's order; `None` is an omitted optional operand.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    pub attrs: Attrs,
}

impl Node {
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

    /// The operand at `i`, if present.
    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }

    /// A readable label for error messages: `Conv node "conv1"`.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("{} node (unnamed)", self.op)
        } else {
            format!("{} node \"{}\"", self.op, self.name)
        }
    }
}

/// A tensor dataflow graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub values: Vec<Value>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Runtime inputs, in the source model's order (initializers excluded).
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Runtime inputs whose contents were bound at compile time (they feed shape-like
    /// operands such as Reshape's `shape`). The runtime checks that the value given at run
    /// time equals the bound one.
    pub bound_inputs: Vec<ValueId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    pub fn add_value(&mut self, name: impl Into<String>, ty: Option<TensorType>) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(Value {
            name: name.into(),
            ty,
            konst: None,
        });
        id
    }

    pub fn add_const(&mut self, name: impl Into<String>, t: Tensor) -> ValueId {
        let ty = TensorType::fixed(t.dtype, &t.dims);
        let id = self.add_value(name, Some(ty));
        self.values[id.0 as usize].konst = Some(t);
        id
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0 as usize]
    }

    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.0 as usize]
    }

    pub fn ty(&self, id: ValueId) -> Option<&TensorType> {
        self.values.get(id.0 as usize).and_then(|v| v.ty.as_ref())
    }

    pub fn konst(&self, id: ValueId) -> Option<&Tensor> {
        self.values
            .get(id.0 as usize)
            .and_then(|v| v.konst.as_ref())
    }

    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.values
            .iter()
            .position(|v| v.name == name)
            .map(|i| ValueId(i as u32))
    }
}
