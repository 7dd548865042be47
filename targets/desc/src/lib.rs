//! `tessera-target`: what a backend is, on the compiler side. [`TargetDesc`] is a chip described
//! as data (parsed from the backend's `target.toml`); [`Target`] is the one trait a backend
//! implements to turn kernel IR into a code blob. Cost models and tiling read only the desc.

use serde::Deserialize;
use std::collections::BTreeMap;
use tessera_kir::Kernel;

/// A target's capabilities, as written in its `target.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetDesc {
    /// kebab-case name, e.g. `host`.
    pub name: String,
    pub description: String,
    /// ISA or triple, e.g. `x86_64`, `kernel-ir`.
    pub isa: String,
    /// Launch model: `serial` (one instance at a time), `threads` (grid points over CPU
    /// threads), `simt` (GPU), `npu-core` (one NPU core per program).
    pub launch: String,
    /// Widest vector register in bytes (0: no vectors).
    pub vector_bytes: u32,
    /// Dtypes the target can hold in buffers.
    pub dtypes: Vec<String>,
    /// Matrix-unit tile shapes per dtype pair, e.g. `"f16xf16->f32" = [16, 16, 16]` (m, n, k).
    #[serde(default)]
    pub mma: BTreeMap<String, [u32; 3]>,
    /// Default tile sizes lowering uses for matrix products on this target (m, n, k).
    pub matmul_tile: [u32; 3],
    /// On-chip buffers.
    #[serde(default)]
    pub memory: Vec<MemoryDesc>,
    /// Peak operations per cycle, per dtype.
    #[serde(default)]
    pub peak_ops_per_cycle: BTreeMap<String, u64>,
    /// Clock in GHz (0 where meaningless).
    #[serde(default)]
    pub clock_ghz: f64,
    /// Output tolerances: relative and absolute, per dtype name.
    #[serde(default)]
    pub tolerance: BTreeMap<String, [f64; 2]>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemoryDesc {
    pub name: String,
    pub bytes: u64,
    pub align: u32,
    pub role: String,
    /// Bytes per cycle into this memory (0: unknown).
    #[serde(default)]
    pub bandwidth: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target description `{path}`: {message}")]
    Desc { path: String, message: String },
    /// The kernel uses something the target cannot run (a dtype, an mma pair, a construct).
    #[error("target `{target}` cannot compile kernel `{kernel}`: {message}")]
    Unsupported {
        target: String,
        kernel: String,
        message: String,
    },
    #[error("target `{target}` failed to compile kernel `{kernel}`: {message}")]
    Codegen {
        target: String,
        kernel: String,
        message: String,
    },
}

impl TargetDesc {
    /// Parses a `target.toml`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<TargetDesc, TargetError> {
        toml::from_str(text).map_err(|e| TargetError::Desc {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// Whether the matrix unit runs `a x b -> acc` natively.
    pub fn has_mma(&self, a: &str, b: &str, acc: &str) -> bool {
        self.mma.contains_key(&format!("{a}x{b}->{acc}"))
    }
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
}
