//! [`Host`]: the compiler side of the host target. It configures one Cranelift ISA for this
//! CPU (or a portable x86-64-v2 baseline), runs [`crate::codegen`] on each kernel and wraps
//! the machine code in a [`crate::blob`].

use crate::{blob, codegen, cpu, NAME};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use tessera_kir::{Kernel, KirError};
use tessera_target::{KernelBlob, Target, TargetDesc, TargetError};

/// The target description, embedded so the crate needs no files at run time.
pub const TARGET_TOML: &str = include_str!("../target.toml");

/// The parsed `target.toml`.
pub fn desc() -> Result<TargetDesc, TargetError> {
    TargetDesc::parse(TARGET_TOML, "targets/host/target.toml")
}

/// The compiler side of the host target: one Cranelift ISA, configured once.
pub struct Host {
    desc: TargetDesc,
    isa: OwnedTargetIsa,
    fingerprint: String,
}

impl Host {
    /// Code for this machine's CPU, using every extension it has. Artifacts run only on
    /// CPUs with the same extensions (the fingerprint records them).
    pub fn native() -> Result<Host, TargetError> {
        Host::build(true)
    }

    /// Code for any x86-64-v2 CPU (SSE4.2, POPCNT): somewhat slower, but artifacts move
    /// between machines.
    pub fn portable() -> Result<Host, TargetError> {
        Host::build(false)
    }

    fn build(native: bool) -> Result<Host, TargetError> {
        let desc = desc()?;
        let fail = |message: String| TargetError::Unsupported {
            target: NAME.to_string(),
            kernel: "(any)".to_string(),
            message,
        };
        if !cfg!(target_arch = "x86_64") {
            return Err(fail(format!(
                "the host target generates {} code, and this machine is not one",
                cpu::ISA
            )));
        }
        let mut flags = settings::builder();
        let settings_err = |e: settings::SetError| fail(format!("Cranelift setting: {e}"));
        flags.set("opt_level", "speed").map_err(settings_err)?;
        // Verifying the generated IR turns a code generator bug into an error, not bad code.
        flags.enable("enable_verifier").map_err(settings_err)?;
        flags.enable("is_pic").map_err(settings_err)?;
        // Large frames (bitcasts of long vectors) probe the stack inline, never via a libcall.
        flags.enable("enable_probestack").map_err(settings_err)?;
        flags
            .set("probestack_strategy", "inline")
            .map_err(settings_err)?;
        let mut isa_builder = cranelift_native::builder_with_options(native)
            .map_err(|e| fail(format!("Cranelift cannot target this machine: {e}")))?;
        if !native {
            for f in cpu::PORTABLE {
                isa_builder.enable(f).map_err(settings_err)?;
            }
        }
        let isa = isa_builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| fail(format!("Cranelift ISA: {e}")))?;
        let enabled: Vec<&'static str> = isa
            .isa_flags()
            .iter()
            .filter(|v| v.as_bool() == Some(true))
            .map(|v| v.name)
            .collect();
        // With SSE4.1, floor/ceil/round/trunc and the byte-lane ops are instructions; without
        // it Cranelift would call libm, and blobs may not call anything.
        if !enabled.contains(&"has_sse41") {
            return Err(fail("the host target needs a CPU with SSE4.1".to_string()));
        }
        let fingerprint = cpu::fingerprint(enabled.iter().copied());
        Ok(Host {
            desc,
            isa,
            fingerprint,
        })
    }

    /// Brings a kernel into the backend subset that [`codegen`] handles: the shared passes
    /// expand `mma` and math routines and legalise low-precision dtypes.
    fn prepare(&self, kernel: &Kernel) -> Result<Kernel, TargetError> {
        let codegen_err = |message: String| TargetError::Codegen {
            target: NAME.to_string(),
            kernel: kernel.name.clone(),
            message,
        };
        tessera_kir::verify(kernel)
            .map_err(|e| codegen_err(format!("the kernel fails the verifier: {e}")))?;
        let mut k = kernel.clone();
        // Register blocking is this backend's choice: tiles become vectors of the desc's width,
        // and `tile.mma` a block of `block_rows × block_vectors` f32 vector accumulators (the
        // desc's `[cpu] register_block`, 8 × 1). One vector wide, each broadcast A element
        // feeds one product, so Cranelift folds its load into `vbroadcastss` from memory (a
        // load-port operation; a value used twice is not folded, and a register broadcast
        // competes with the arithmetic for port 5). With FMA each step is one `vfmadd213ps`
        // into the broadcast's register and a register move back on the loop edge, which
        // the CPU eliminates at rename. The dot-product form (B held transposed) keeps 4 A
        // and 2 B vectors, which with 8 accumulators fits the 16 xmm registers.
        let (block_rows, block_vectors) = self.desc.register_block().unwrap_or((8, 1));
        let opts = tessera_kir::passes::ScalarizeOptions {
            vector_bytes: self.desc.vector_bytes,
            blocked_f32_mma: true,
            blocked_i32_mma: true,
            block_rows,
            block_vectors,
            dot_block: (4, 2),
            // A B tile in panels that fits half the L1 stays there while A's row blocks pass.
            l1_bytes: self.desc.cache_bytes().map_or(0, |(l1, _)| l1),
            // Two k steps a trip: Cranelift's FMA overwrites a multiplicand, and every other
            // step its results land back in the accumulators' registers.
            k_unroll: 2,
            fma: crate::cpu::has_fma(&*self.isa),
            in_place_operands: true,
            // `dot` of i16 pairs (SSE2 `pmaddwd`) for the integer products of `tile.dot`.
            int_dot: 2,
            // Row sums in vector partials: reassociated within the f32 tolerance target.toml
            // declares (as the blocked product's rounding is).
            lane_reductions: true,
        };
        tessera_kir::passes::scalarize_tiles(&mut k, &opts)
            .and_then(|()| tessera_kir::passes::to_backend_subset(&mut k))
            .map_err(|e| match e {
                KirError::Unsupported { .. } => TargetError::Unsupported {
                    target: NAME.to_string(),
                    kernel: kernel.name.clone(),
                    message: e.to_string(),
                },
                other => codegen_err(format!("`to_backend_subset`: {other}")),
            })?;
        Ok(k)
    }
}

impl Host {
    /// The machine instructions the host target makes of `kernel`, as text.
    pub fn assembly(&self, kernel: &Kernel) -> Result<String, TargetError> {
        let k = self.prepare(kernel)?;
        codegen::disassembly(&*self.isa, &k).map_err(|e| cg_error(kernel, e))
    }

    /// The Cranelift IR the host target makes of `kernel` (after the shared passes, before
    /// Cranelift's optimisations), as text.
    pub fn clif(&self, kernel: &Kernel) -> Result<String, TargetError> {
        let k = self.prepare(kernel)?;
        codegen::clif(&*self.isa, &k).map_err(|e| cg_error(kernel, e))
    }
}

/// A code generator error as the `Target` trait reports it.
fn cg_error(kernel: &Kernel, e: codegen::CgError) -> TargetError {
    match e {
        codegen::CgError::Unsupported(message) => TargetError::Unsupported {
            target: NAME.to_string(),
            kernel: kernel.name.clone(),
            message,
        },
        codegen::CgError::Internal(message) => TargetError::Codegen {
            target: NAME.to_string(),
            kernel: kernel.name.clone(),
            message,
        },
    }
}

impl Target for Host {
    fn disassemble(&self, kernel: &Kernel) -> Result<Option<String>, TargetError> {
        self.assembly(kernel).map(Some)
    }

    fn desc(&self) -> &TargetDesc {
        &self.desc
    }

    fn compile(&self, kernel: &Kernel) -> Result<KernelBlob, TargetError> {
        let k = self.prepare(kernel)?;
        let c = codegen::compile(&*self.isa, &k).map_err(|e| cg_error(kernel, e))?;
        let header = blob::BlobHeader {
            grid: c.grid,
            scratch_bytes: c.scratch_bytes,
            work: c.work,
            param_bytes: c.param_bytes,
        };
        Ok(KernelBlob {
            name: kernel.name.clone(),
            code: header.encode(&c.code),
        })
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}
