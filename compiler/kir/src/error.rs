//! [`KirError`]: the one error type of `tessera-kir` for everything but running a kernel (the
//! interpreter's run-time traps are [`crate::interp::InterpError`]). Every message names the
//! kernel and, where there is one, the instruction, so a bad kernel can be found without a
//! debugger.

use thiserror::Error;

/// What can go wrong while verifying, parsing or transforming kernel IR. Each variant's doc
/// says whose fault it is.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KirError {
    /// A compiler bug (or a bad hand-written kernel): the kernel breaks a rule of the IR.
    /// `at` is the instruction's path in the body, e.g. `#4 > body #1`, and `inst` its text.
    #[error("kernel `{kernel}`: {at} `{inst}`: {msg}")]
    Invalid {
        kernel: String,
        at: String,
        inst: String,
        msg: String,
    },

    /// A compiler bug (or a bad hand-written kernel): a rule about the kernel as a whole
    /// (its buffers, grid or value table) is broken.
    #[error("kernel `{kernel}`: {msg}")]
    InvalidKernel { kernel: String, msg: String },

    /// Bad input: kernel text that does not parse. `line` and `col` are 1-based.
    #[error("{line}:{col}: {msg}")]
    Parse {
        line: usize,
        col: usize,
        msg: String,
    },

    /// Unsupported: a pass met a construct it cannot rewrite (named in `what`).
    #[error("kernel `{kernel}`: pass `{pass}` does not support {what}")]
    Unsupported {
        kernel: String,
        pass: String,
        what: String,
    },
}
