//! `tessera-ir`: the graph IR. Dtypes ([`DType`]), shapes ([`Shape`]), constant tensors
//! ([`Tensor`]), the op table ([`op::OPS`]), the graph ([`Graph`]), its verifier, shape
//! inference and text format. Of the workspace, this crate depends only on `tessera-abi`,
//! whose dtypes, tensors and scalar formats it re-exports.
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
pub mod error;
pub mod fold;
pub mod graph;
pub mod infer;
pub mod key;
pub mod op;
pub mod shape;
pub mod text;
pub mod verify;

#[cfg(test)]
pub(crate) mod testutil;

pub use dtype::DType;
pub use error::IrError;
pub use fold::fold_constants;
pub use fold::{ConstEval, NoEval};
pub use graph::{Attr, Attrs, AttrsExt, Graph, Node, TensorType, Value, ValueId};
pub use infer::{infer_shapes, infer_shapes_with};
pub use key::OpKey;
pub use op::{operand_name, shape_operands, Family, Op, OpInfo, OPS};
pub use shape::{Dim, Shape, MAX_ELEMENTS};
pub use tensor::Tensor;
pub use tessera_abi::{dtype, numeric, tensor};
pub use verify::{topo_sort, verify, verify_structure};
