//! `tessera-kir`: the kernel IR, Tessera's portable kernel language. A [`Kernel`] is a function
//! over buffers in memory spaces, with a launch grid and a body of structured loops over SSA
//! values of every dtype, vectors, math routines and a tile `mma`. The [`plan`] module holds the
//! plan that launches kernels. The interpreter (the `interp` target) defines what it all means.
//!
//! Start with [`kernel`] for the instruction set, then [`builder`] for how kernels are made,
//! [`interp`] for what they mean, [`verify`] for the rules, [`text`] for the text format and
//! [`passes`] for the shared rewrites that bring a kernel down to what a simple backend needs.

pub mod builder;
pub mod constants;
pub mod error;
pub mod interp;
pub mod kernel;
pub mod passes;
pub mod plan;
pub mod text;
pub mod verify;

#[cfg(test)]
mod testutil;

pub use builder::KernelBuilder;
pub use error::KirError;
pub use interp::{run_kernel, Interp, InterpError};
pub use kernel::*;
pub use plan::{
    BufferId, BufferKind, Execution, HostOp, HostValues, LoopSlice, LoopStep, NodeRecord, Plan,
    PlanBuffer, PlanIo, Program, Step, TrapSite, TreeEnsemble, Trip,
};
pub use text::{parse_kernel, parse_program, print_kernel, print_program};
pub use verify::verify;
