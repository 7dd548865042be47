//! `tessera-runtime`: loads `.tsa` artifacts, binds inputs, executes the plan on a [`Device`]
//! and returns outputs. It depends on no compiler crate: only on `tessera-kir` for the plan
//! and for the interpreter the `interp` device runs (and, through it, on the dtype vocabulary
//! of `tessera-ir`).
//!
//! Start at [`Model`]; [`artifact`] documents the file format.

pub mod artifact;
pub mod device;
pub mod interp;
pub mod model;
mod select;
mod strings;

pub use artifact::Artifact;
pub use device::{Device, DeviceError, KernelArg, LoadedKernel};
pub use interp::InterpDevice;
pub use model::Model;

/// Everything that can go wrong loading or running a model. Messages name the file, input or
/// kernel concerned.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid artifact: {0}")]
    BadArtifact(String),
    #[error("the artifact was compiled for target `{artifact}`, but the device runs `{device}`")]
    WrongTarget { artifact: String, device: String },
    #[error("this machine cannot run the artifact: {0}")]
    IncompatibleDevice(String),
    #[error("input `{input}`: {message}")]
    Input { input: String, message: String },
    #[error("{0}")]
    Device(DeviceError),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    /// The model's data took a path the compiled plan cannot follow (bad input at run time):
    /// a loop that ran a different number of iterations than its scan outputs were sized for.
    #[error("{0}")]
    Execution(String),
}
