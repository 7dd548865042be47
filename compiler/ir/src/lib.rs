//! `tessera-ir`: the graph IR. Dtypes ([`DType`]), shapes ([`Shape`]), constant tensors
//! ([`Tensor`]), the op table ([`op::OPS`]), the graph ([`Graph`]), its verifier, shape
//! inference and text format. This crate depends on no other crate of the workspace.
//!
//! Start with [`graph`], then [`op`] for what ops exist.

pub mod dtype;
pub mod graph;
pub mod numeric;
pub mod op;
pub mod shape;
pub mod tensor;

pub use dtype::DType;
pub use graph::{Attr, Attrs, Graph, Node, TensorType, Value, ValueId};
pub use op::{Family, Op, OpInfo, OPS};
pub use shape::{Dim, Shape, MAX_ELEMENTS};
pub use tensor::Tensor;
