//! The plan, as kernel IR sees it: the runtime's plan types (defined in `tessera-abi`, so the
//! runtime links no compiler crate) plus [`Program`], what lowering produces.

pub use tessera_abi::plan::*;

use crate::kernel::Kernel;

/// What lowering produces: the kernels and the plan that launches them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Program {
    pub kernels: Vec<Kernel>,
    pub plan: Plan,
}
