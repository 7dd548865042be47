//! `tessera-target`: what a backend is, on the compiler side. [`TargetDesc`] is a chip described
//! as data (parsed from the backend's `target.toml`); [`Target`] is the one trait a backend
//! implements to turn kernel IR into a code blob. Cost models and tiling read only the desc.

use tessera_kir::Kernel;

mod desc;
pub use desc::*;

/// Everything a target can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Bad input: a `target.toml` that does not parse or contradicts itself.
    #[error("target description `{path}`: {message}")]
    Desc { path: String, message: String },
    /// The kernel uses something the target cannot run (a dtype, an mma pair, a construct).
    #[error("target `{target}` cannot compile kernel `{kernel}`: {message}")]
    Unsupported {
        target: String,
        kernel: String,
        message: String,
    },
    /// A compiler bug: code generation failed on a verified kernel.
    #[error("target `{target}` failed to compile kernel `{kernel}`: {message}")]
    Codegen {
        target: String,
        kernel: String,
        message: String,
    },
}

/// A compiled kernel: the bytes a device loads, plus what the runtime needs to call it.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelBlob {
    pub name: String,
    pub code: Vec<u8>,
}

/// The compiler side of a backend: kernel IR in, code blob out.
///
/// A backend may run shared passes from `tessera-kir` (math expansion, low-precision
/// legalization, tile expansion) before its own code generation.
pub trait Target: Send + Sync {
    fn desc(&self) -> &TargetDesc;

    /// Compiles one kernel. The kernel has passed the verifier.
    fn compile(&self, kernel: &Kernel) -> Result<KernelBlob, TargetError>;

    /// A fingerprint of whatever the code depends on beyond the target name (CPU features,
    /// compute capability); the runtime refuses an artifact whose fingerprint it cannot run.
    fn fingerprint(&self) -> String {
        String::new()
    }

    /// The code this target makes of `kernel`, as readable text (machine instructions, or the
    /// chip's assembly), for `tessera compile --emit asm`. `None`: the target has no text form.
    fn disassemble(&self, kernel: &Kernel) -> Result<Option<String>, TargetError> {
        let _ = kernel;
        Ok(None)
    }
}
