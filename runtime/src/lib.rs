//! `tessera-runtime`: loads `.tsa` artifacts, binds inputs, executes the plan on a [`Device`]
//! and returns outputs. It depends on no compiler crate: of the workspace, only on
//! `tessera-abi` (dtypes, tensors, the plan). Devices live with their targets (`tessera-host`,
//! `tessera-npu-sim`, `tessera-interp`).
//!
//! Start at [`Model`]; [`artifact`] documents the file format.

pub mod artifact;
pub mod device;
pub mod model;
mod select;
mod strings;

pub use artifact::Artifact;
pub use device::{Device, DeviceError, KernelArg, LoadedKernel, Trapped};
pub use model::{KernelTime, Model, Profile};

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
    /// Bad input data found while running: a kernel's data check failed (an index out of
    /// range, a bad size). Names the node, its op, the input and the offending value. No
    /// output of the run is returned.
    #[error("{node}: input `{input}` holds {value}, which is {what}")]
    Data {
        node: String,
        op: String,
        input: String,
        value: i64,
        what: String,
    },
    /// The artifact is not the one the caller expects: its SHA-256 digest differs.
    #[error(
        "artifact digest mismatch: expected {expected}, the file has {found}; refusing to load it"
    )]
    DigestMismatch { expected: String, found: String },
    /// A limit exceeded: a run would need more scratch memory than the caller allows.
    #[error("the run needs {need} bytes of scratch memory, more than the limit of {limit} bytes (--max-memory)")]
    MemoryLimit { need: u64, limit: u64 },
    /// A caller-provided output buffer does not fit ([`Model::run_into`]).
    #[error("output `{output}`: {message}")]
    Output { output: String, message: String },
}
