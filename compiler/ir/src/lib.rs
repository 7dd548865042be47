//! `tessera-ir`: the graph IR. Dtypes ([`DType`]), shapes ([`Shape`]), constant tensors
//! ([`Tensor`]), the op table ([`op::OPS`]), the graph ([`Graph`]), its verifier, shape
//! inference and text format. This crate depends on no other crate of the workspace.
//!
//! Start with [`graph`], then [`op`] for what ops exist. The passes are [`infer_shapes`],
//! [`fold_constants`], [`verify`]/[`topo_sort`]; [`text::print`] and [`text::parse`] are the
//! text format. Every failure is an [`IrError`].
//!
//! ```
//! let mut g = tessera_ir::text::parse(
//!     "graph @g(%x: f32[N,6]) -> (%y) {\n\
//!        const %shape = dense<i64[3]: [0, 2, -1]>\n\
//!        %y = Reshape(%x, %shape)\n\
//!      }\n",
//! )?;
//! tessera_ir::infer_shapes(&mut g)?;
//! tessera_ir::verify(&g)?;
//! assert!(tessera_ir::text::print(&g).contains("%y: f32[N,2,3] = Reshape(%x, %shape)"));
//! # Ok::<(), tessera_ir::IrError>(())
//! ```

pub mod custom;
pub mod dtype;
pub mod error;
pub mod fold;
pub mod graph;
pub mod infer;
pub mod key;
pub mod numeric;
pub mod op;
pub mod shape;
pub mod tensor;
pub mod text;
pub mod verify;

#[cfg(test)]
pub(crate) mod testutil;

pub use dtype::DType;
pub use error::IrError;
pub use fold::fold_constants;
pub use graph::{Attr, Attrs, AttrsExt, Graph, Node, TensorType, Value, ValueId};
pub use infer::infer_shapes;
pub use key::OpKey;
pub use op::{operand_name, shape_operands, Family, Op, OpInfo, OPS};
pub use shape::{Dim, Shape, MAX_ELEMENTS};
pub use tensor::Tensor;
pub use verify::{topo_sort, verify, verify_structure};
