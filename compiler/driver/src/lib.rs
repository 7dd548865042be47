//! `tessera-driver`: the pipeline from an ONNX file to a loaded, runnable model, the target
//! registry, the conformance runner and `.npy` I/O. This crate is the API boundary: the CLI
//! and embedders call it, and it is the only crate that knows every stage.
//!
//! ```no_run
//! use tessera_driver::{compile_file, load, CompileOptions};
//! let artifact = compile_file("model.onnx".as_ref(), &CompileOptions::for_target("host")).unwrap();
//! let model = load(artifact, "host").unwrap();
//! println!("{} inputs", model.inputs().len());
//! ```

#[cfg(feature = "llvm")]
pub mod aot;
pub mod conformance;
pub mod fold;
pub mod npy;
pub mod pipeline;
pub mod show;
pub mod targets;

pub use pipeline::{
    compile_bytes, compile_file, compile_graph, compile_graph_traced, import, import_bytes,
    kernel_text, load, load_custom_ops, load_file, load_file_expecting, newer_opsets, optimize,
    write_artifact, write_atomic, CompileOptions, Compiled, KernelText, Progress,
};
pub use tessera_opt::{OptLevel, Precision, Report as OptReport};

/// Every error the driver reports. [`DriverError::exit_code`] maps them to the CLI's codes.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{0}")]
    Onnx(#[from] tessera_onnx::OnnxError),
    #[error("{0}")]
    Lower(#[from] tessera_lower::LowerError),
    #[error("{0}")]
    Opt(#[from] tessera_opt::OptError),
    #[error("{0}")]
    Target(#[from] tessera_target::TargetError),
    #[error("{0}")]
    Runtime(#[from] tessera_runtime::RuntimeError),
    #[error("{0}")]
    Lookup(#[from] targets::LookupError),
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    /// A tool run by the CLI (the npu-sim simulator) failed; the message says how.
    #[error("{0}")]
    Tool(String),
    #[error("internal error (a bug in Tessera): {0}")]
    Internal(String),
    /// `--emit static-lib` could not make the library.
    #[cfg(feature = "llvm")]
    #[error("{0}")]
    Aot(#[from] tessera_llvm::aot::AotError),
}

/// Exit codes of the `tessera` binary.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const UNSUPPORTED: i32 = 3;
}

impl DriverError {
    /// 3 for an unsupported model, op or target feature; 2 for usage errors; 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            DriverError::Onnx(e) if e.is_unsupported() => exit::UNSUPPORTED,
            DriverError::Lower(tessera_lower::LowerError::Unsupported { .. }) => exit::UNSUPPORTED,
            DriverError::Target(tessera_target::TargetError::Unsupported { .. }) => {
                exit::UNSUPPORTED
            }
            DriverError::Lookup(
                targets::LookupError::FeatureDisabled { .. }
                | targets::LookupError::NotYet { .. }
                | targets::LookupError::ForeignIsa { .. },
            ) => exit::UNSUPPORTED,
            #[cfg(feature = "llvm")]
            DriverError::Aot(tessera_llvm::aot::AotError::Unsupported(_)) => exit::UNSUPPORTED,
            #[cfg(feature = "llvm")]
            DriverError::Aot(tessera_llvm::aot::AotError::Target(
                tessera_target::TargetError::Unsupported { .. },
            )) => exit::UNSUPPORTED,
            DriverError::Lookup(targets::LookupError::Unknown(_))
            | DriverError::Usage(_)
            | DriverError::Opt(tessera_opt::OptError::Usage(_)) => exit::USAGE,
            _ => exit::ERROR,
        }
    }

    /// Whether this is an "unsupported" outcome rather than a failure.
    pub fn is_unsupported(&self) -> bool {
        self.exit_code() == exit::UNSUPPORTED
    }
}
