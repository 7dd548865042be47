//! `tessera-abi`: the data the compiler hands the runtime, and nothing else. Element types
//! (`dtype`), constant tensors (`tensor`), the reference decoding of every stored format
//! (`numeric`) and the plan the runtime executes (`plan`). The graph IR and the kernel IR
//! re-export these modules; the runtime, the devices and the C library depend on this crate
//! alone, so no compiler crate is linked into a deployed program.

pub mod dtype;
pub mod numeric;
pub mod plan;
pub mod tensor;

pub use dtype::DType;
pub use plan::{
    BufferId, BufferKind, Execution, HostOp, HostValues, LoopSlice, LoopStep, NodeRecord, Plan,
    PlanBuffer, PlanIo, Step, TrapSite, TreeEnsemble, Trip,
};
pub use tensor::Tensor;

/// The largest tensor Tessera will allocate, in elements (2^36). Larger shapes are refused
/// before anything is allocated, so an absurd dimension in a model is an error, not an abort.
pub const MAX_ELEMENTS: u64 = 1 << 36;
