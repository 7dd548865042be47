//! `tessera-kir`: the kernel IR, Tessera's portable kernel language. A [`Kernel`] is a function
//! over buffers in memory spaces, with a launch grid and a body of structured loops over SSA
//! values of every dtype, vectors, math routines and a tile `mma`. The [`plan`] module holds the
//! plan that launches kernels. The interpreter (the `interp` target) defines what it all means.
//!
//! Start with [`kernel`] for the instruction set, then [`builder`] for how kernels are made.

pub mod builder;
pub mod kernel;
pub mod plan;

pub use builder::KernelBuilder;
pub use kernel::*;
pub use plan::{BufferId, BufferKind, Execution, NodeRecord, Plan, PlanBuffer, PlanIo, Program, Step};
