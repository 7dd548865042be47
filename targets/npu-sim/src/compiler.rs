//! [`NpuSim`]: the compiler side of the npu-sim targets. It checks what the chip cannot run
//! (dtypes its description lacks), sends contraction tile programs the Cube can run down the
//! tile-level path ([`crate::cube`]), brings every other kernel into the backend subset with the
//! shared passes (math routines in f32, as the chip has no f64) for [`crate::codegen`], and wraps
//! the program in a [`crate::blob`]. One `NpuSim`
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
        let cfg = TargetConfig::from_desc(desc).map_err(|e| TargetError::Desc {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        Ok(NpuSim { cfg })
    }

    /// The simulator's view of the description.
    pub fn config(&self) -> &TargetConfig {
        &self.cfg
    }

    fn name(&self) -> String {
        self.cfg.name.clone()
    }

    /// The program for `kernel`: a contraction tile program the Cube can run goes down the
    /// tile-level path ([`crate::cube`]); everything else is brought into the backend subset
    /// and compiled by [`crate::codegen`].
    fn program(&self, kernel: &Kernel) -> Result<crate::blob::Blob, TargetError> {
        self.check(kernel)?;
        if let Some(g) = crate::cube::recognise(kernel, &self.cfg) {
            return crate::cube::compile(kernel, &g, &self.cfg)
                .map_err(|e| self.cg_error(kernel, e));
        }
        // A grid of tile copies (a transpose) moves each tile with two DMAs through the UB.
        if let Some(c) = crate::tcopy::recognise(kernel) {
            match crate::tcopy::compile(kernel, &c, &self.cfg) {
                Ok(blob) => return Ok(blob),
                Err(CgError::Unsupported(_)) => {}
                Err(e) => return Err(self.cg_error(kernel, e)),
            }
        }
        // A row tile program (softmax, layer norm) streams blocks of rows through the UB; one
        // whose block does not fit is scalarised instead.
        if let Some(rows) = crate::rows::recognise(kernel) {
            match crate::rows::compile(kernel, &rows, &self.cfg) {
                Ok(blob) => return Ok(blob),
                Err(CgError::Unsupported(_)) => {}
                Err(e) => return Err(self.cg_error(kernel, e)),
            }
        }
        // An elementwise kernel streams through the UB; one whose chunk does not fit is
        // scalarised instead.
        if let Some(st) = crate::stream::recognise(kernel) {
            match crate::stream::compile(kernel, &st, &self.cfg) {
                Ok(blob) => return Ok(blob),
                Err(CgError::Unsupported(_)) => {}
                Err(e) => return Err(self.cg_error(kernel, e)),
            }
        }
        let k = self.prepare(kernel)?;
        codegen::compile(&k, &self.cfg).map_err(|e| self.cg_error(kernel, e))
    }

    /// What every kernel must meet: the verifier, and only dtypes the chip has.
    fn check(&self, kernel: &Kernel) -> Result<(), TargetError> {
        tessera_kir::verify(kernel).map_err(|e| TargetError::Codegen {
            target: self.name(),
            kernel: kernel.name.clone(),
            message: format!("the kernel fails the verifier: {e}"),
        })?;
        for b in &kernel.bufs {
            if !self.cfg.desc.has_dtype(b.dtype) {
                return Err(TargetError::Unsupported {
                    target: self.name(),
                    kernel: kernel.name.clone(),
                    message: format!(
                        "buffer `{}` holds {}, which the chip does not have",
                        b.name, b.dtype
                    ),
                });
            }
        }
        Ok(())
    }

    fn prepare(&self, kernel: &Kernel) -> Result<Kernel, TargetError> {
        let codegen_err = |message: String| TargetError::Codegen {
            target: self.name(),
            kernel: kernel.name.clone(),
            message,
        };
        let mut k = kernel.clone();
        // `to_backend_subset`, with the math routines computed in f32: the chip has no f64.
        // A buffer `mma` the Cube can run stays (see `codegen::cube_mma_ok`); if any cannot, all
        // are expanded into loops.
        let cfg = &self.cfg;
        let subset = |k: &mut Kernel| -> Result<(), KirError> {
            use tessera_kir::passes::*;
            // An f32 tile product becomes multiply-add loops in f32 (the exact expansion
            // needs f64, which the chip lacks).
            // Tiles become vectors as wide as the Vector unit's row (one VEC each).
            let opts = ScalarizeOptions {
                vector_bytes: cfg.desc.vector_bytes,
                blocked_f32_mma: true,
                blocked_i32_mma: false,
                block_rows: 4,
                block_vectors: 1,
                dot_block: (0, 0),
                l1_bytes: 0,
                k_unroll: 1,
                fma: false,
                // Tile operands are staged in on-chip buffers, never read from GM in place.
                in_place_operands: false,
                int_dot: 0,
                // Row sums keep the interpreter's order (the cycle model counts each step).
                lane_reductions: false,
            };
            scalarize_tiles(k, &opts)?;
            let mut mmas = Vec::new();
            collect_mma(&k.body, &mut mmas);
            let cube = !mmas.is_empty() && mmas.iter().all(|i| codegen::cube_mma_ok(k, i, cfg));
            if !cube {
                expand_mma(k)?;
            }
            expand_math_without_f64(k)?;
            expand_math(k)?;
            // A Cube `mma` reads its f16/bf16 operands as they are in GM, so the low-precision
            // pass has nothing to do for it; it sees the operands by their storage view while it
            // runs, and their dtypes are put back after.
            let types = retype_mma(&mut k.body, &mut None);
            legalize_low_precision(k)?;
            retype_mma(&mut k.body, &mut Some(types.into_iter()));
            tessera_kir::verify(k)?;
            if cube {
                Ok(())
            } else {
                check_backend_subset(k)
            }
        };
        subset(&mut k).map_err(|e| match e {
            KirError::Unsupported { .. } => TargetError::Unsupported {
                target: self.name(),
                kernel: kernel.name.clone(),
                message: e.to_string(),
            },
            other => codegen_err(format!("`to_backend_subset`: {other}")),
        })?;
        Ok(k)
    }

    /// The program npu-sim makes of `kernel`, as assembly text.
    pub fn assembly(&self, kernel: &Kernel) -> Result<String, TargetError> {
        Ok(crate::asm::disassemble(&self.program(kernel)?.program))
    }

    fn cg_error(&self, kernel: &Kernel, e: CgError) -> TargetError {
        match e {
            CgError::Unsupported(message) => TargetError::Unsupported {
                target: self.name(),
                kernel: kernel.name.clone(),
                message,
            },
            CgError::Internal(message) => TargetError::Codegen {
                target: self.name(),
                kernel: kernel.name.clone(),
                message,
            },
        }
    }
}

impl Target for NpuSim {
    fn disassemble(&self, kernel: &Kernel) -> Result<Option<String>, TargetError> {
        self.assembly(kernel).map(Some)
    }

    fn desc(&self) -> &TargetDesc {
        &self.cfg.desc
    }

    fn compile(&self, kernel: &Kernel) -> Result<KernelBlob, TargetError> {
        let blob = self.program(kernel)?;
        Ok(KernelBlob {
            name: kernel.name.clone(),
            code: blob.encode(),
        })
    }
}

/// Every buffer `mma` of a block, nested blocks included.
fn collect_mma(b: &tessera_kir::Block, out: &mut Vec<tessera_kir::Inst>) {
    for i in &b.insts {
        match &i.kind {
            tessera_kir::InstKind::Mma { .. } => out.push(i.clone()),
            tessera_kir::InstKind::For { body, .. } => collect_mma(body, out),
            tessera_kir::InstKind::If {
                then_blk, else_blk, ..
            } => {
                collect_mma(then_blk, out);
                collect_mma(else_blk, out);
            }
            _ => {}
        }
    }
}

/// With `restore` `None`: renames every `mma`'s narrow float operand dtypes to their storage
/// view and returns the originals, in walk order. With `Some`, puts those originals back.
fn retype_mma(
    b: &mut tessera_kir::Block,
    restore: &mut Option<std::vec::IntoIter<(tessera_ir::DType, tessera_ir::DType)>>,
) -> Vec<(tessera_ir::DType, tessera_ir::DType)> {
    let mut out = Vec::new();
    for i in &mut b.insts {
        match &mut i.kind {
            tessera_kir::InstKind::Mma { a_ty, b_ty, .. } => match restore {
                Some(it) => {
                    if let Some((a, bt)) = it.next() {
                        (*a_ty, *b_ty) = (a, bt);
                    }
                }
                None => {
                    out.push((*a_ty, *b_ty));
                    *a_ty = tessera_kir::storage_view(*a_ty).unwrap_or(*a_ty);
                    *b_ty = tessera_kir::storage_view(*b_ty).unwrap_or(*b_ty);
                }
            },
            tessera_kir::InstKind::For { body, .. } => out.extend(retype_mma(body, restore)),
            tessera_kir::InstKind::If {
                then_blk, else_blk, ..
            } => {
                out.extend(retype_mma(then_blk, restore));
                out.extend(retype_mma(else_blk, restore));
            }
            _ => {}
        }
    }
    out
}
