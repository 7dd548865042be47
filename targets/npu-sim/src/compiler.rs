//! [`NpuSim`]: the compiler side of the npu-sim targets. It checks what the chip cannot run
//! (dtypes its description lacks), brings each kernel into the backend subset with the shared
//! passes (math routines in f32, as the chip has no f64), runs [`crate::codegen`] and wraps the program in a [`crate::blob`]. One `NpuSim`
//! serves every chip of the family: it reads everything from the chip's `target.toml`.

use tessera_kir::{Kernel, KirError};
use tessera_target::{KernelBlob, Target, TargetDesc, TargetError};

use crate::codegen::{self, CgError};
use crate::config::TargetConfig;

/// The compiler side of an npu-sim chip.
pub struct NpuSim {
    cfg: TargetConfig,
}

impl NpuSim {
    /// The chip described by `toml` (`path` names it in errors).
    pub fn from_toml(toml: &str, path: &str) -> Result<NpuSim, TargetError> {
        let desc = TargetDesc::parse(toml, path)?;
        let cfg = TargetConfig::from_desc(desc).map_err(|e| TargetError::Desc { path: path.to_string(), message: e.to_string() })?;
        Ok(NpuSim { cfg })
    }

    /// The simulator's view of the description.
    pub fn config(&self) -> &TargetConfig {
        &self.cfg
    }

    fn name(&self) -> String {
        self.cfg.name.clone()
    }

    fn prepare(&self, kernel: &Kernel) -> Result<Kernel, TargetError> {
        let codegen_err =
            |message: String| TargetError::Codegen { target: self.name(), kernel: kernel.name.clone(), message };
        tessera_kir::verify(kernel).map_err(|e| codegen_err(format!("the kernel fails the verifier: {e}")))?;
        for b in &kernel.bufs {
            if !self.cfg.desc.has_dtype(b.dtype) {
                return Err(TargetError::Unsupported {
                    target: self.name(),
                    kernel: kernel.name.clone(),
                    message: format!("buffer `{}` holds {}, which the chip does not have", b.name, b.dtype),
                });
            }
        }
        let mut k = kernel.clone();
        // `to_backend_subset`, with the math routines computed in f32: the chip has no f64.
        let subset = |k: &mut Kernel| -> Result<(), KirError> {
            use tessera_kir::passes::*;
            scalarize_tiles(k, &ScalarizeOptions::default())?;
            expand_mma(k)?;
            expand_math_without_f64(k)?;
            expand_math(k)?;
            legalize_low_precision(k)?;
            tessera_kir::verify(k)?;
            check_backend_subset(k)
        };
        subset(&mut k).map_err(|e| match e {
            KirError::Unsupported { .. } => {
                TargetError::Unsupported { target: self.name(), kernel: kernel.name.clone(), message: e.to_string() }
            }
            other => codegen_err(format!("`to_backend_subset`: {other}")),
        })?;
        Ok(k)
    }

    /// The program npu-sim makes of `kernel`, as assembly text.
    pub fn assembly(&self, kernel: &Kernel) -> Result<String, TargetError> {
        let k = self.prepare(kernel)?;
        let blob = codegen::compile(&k, &self.cfg).map_err(|e| self.cg_error(kernel, e))?;
        Ok(crate::asm::disassemble(&blob.program))
    }

    fn cg_error(&self, kernel: &Kernel, e: CgError) -> TargetError {
        match e {
            CgError::Unsupported(message) => TargetError::Unsupported { target: self.name(), kernel: kernel.name.clone(), message },
            CgError::Internal(message) => TargetError::Codegen { target: self.name(), kernel: kernel.name.clone(), message },
        }
    }
}

impl Target for NpuSim {
    fn desc(&self) -> &TargetDesc {
        &self.cfg.desc
    }

    fn compile(&self, kernel: &Kernel) -> Result<KernelBlob, TargetError> {
        let k = self.prepare(kernel)?;
        let blob = codegen::compile(&k, &self.cfg).map_err(|e| self.cg_error(kernel, e))?;
        Ok(KernelBlob { name: kernel.name.clone(), code: blob.encode() })
    }
}
