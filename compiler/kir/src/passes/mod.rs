//! Shared passes that bring a kernel down to the *backend subset*: the instructions a simple
//! backend must implement. Start at [`to_backend_subset`]; each pass has its own file:
//! [`expand_mma`] (tile multiply-accumulate → loops), [`expand_math`] (math routines → primitive
//! instructions, written once as kernel IR) and [`legalize_low_precision`] (f16/bf16/f8/f4 and
//! sub-byte ints → f32/i32 arithmetic on bit patterns).
//!
//! **The backend subset**: `const`, `program_id`, unary, binary, `cmp`, `select`, `cast` and
//! `bitcast` with every value of element type bool, i8, i16, i32, i64, u8, u16, u32, u64, f32
//! or f64 (scalars or vectors); `splat`, `extract`, `reduce`; `load`/`store` of those dtypes
//! (a buffer of another dtype is accessed through loads and stores of its bytes, as `u8`, or of
//! its bit patterns, as `u16`/`u8`: see [`legalize_low_precision`]); `for`, `if`, `yield`;
//! and `fma` and `dot` only where the backend asked `scalarize-tiles` for them
//! (`ScalarizeOptions::fma`, `ScalarizeOptions::int_dot`).
//! [`check_backend_subset`] says whether a kernel is in it.
//!
//! Every pass keeps the kernel's buffers (and their dtypes) as they are, and its output passes
//! the verifier.

mod int_dot;
mod lowp;
pub mod math;
mod mma;
pub(crate) mod rewrite;
mod tiles;

pub use lowp::legalize_low_precision;
pub use math::{expand_math, expand_math_without_f64};
pub use mma::expand_mma;
pub use tiles::{has_tiles, scalarize_tiles, tile_storage, ScalarizeOptions};

use crate::error::KirError;
use crate::kernel::*;
use crate::verify::verify;
use tessera_ir::DType;

/// Runs the shared passes in order — `scalarize-tiles` (with the default options: scalars and
/// the exact `mma`; a backend wanting vectors runs it first with its own), `expand-mma` (its expansion may use narrow floats),
/// `expand-math` (its routines may compute in narrow types only through casts), then
/// `legalize-low-precision` — and verifies the result, which is in the backend subset.
pub fn to_backend_subset(k: &mut Kernel) -> Result<(), KirError> {
    scalarize_tiles(k, &ScalarizeOptions::default())?;
    expand_mma(k)?;
    expand_math(k)?;
    legalize_low_precision(k)?;
    verify(k)?;
    check_backend_subset(k)
}

/// Whether `d` is an element type the backend subset computes with.
pub fn is_backend_dtype(d: DType) -> bool {
    use DType::*;
    matches!(
        d,
        Bool | I8 | I16 | I32 | I64 | U8 | U16 | U32 | U64 | F32 | F64
    )
}

/// Checks that every instruction of `k` is in the backend subset (see the module doc). A load
/// or store of a buffer whose dtype is outside the subset is allowed when it reads or writes
/// the buffer's storage as `u8` (bytes) or as the unsigned int of the dtype's width.
pub fn check_backend_subset(k: &Kernel) -> Result<(), KirError> {
    fn walk(k: &Kernel, b: &Block) -> Result<(), KirError> {
        for inst in &b.insts {
            let bad = |what: String| KirError::Unsupported {
                kernel: k.name.clone(),
                pass: "backend-subset".into(),
                what: format!("{what} in `{}`", crate::text::inst_head(k, inst)),
            };
            for &r in &inst.results {
                if k.ty(r).is_tile() {
                    return Err(bad(format!("a {} value (run scalarize-tiles)", k.ty(r))));
                }
                if !is_backend_dtype(k.ty(r).elem) {
                    return Err(bad(format!("a {} value", k.ty(r).elem)));
                }
            }
            match &inst.kind {
                InstKind::Store { value, .. } if !is_backend_dtype(k.ty(*value).elem) => {
                    return Err(bad(format!("a store of {}", k.ty(*value).elem)))
                }
                InstKind::Math(..) => return Err(bad("a math routine".into())),
                InstKind::Mma { .. } => return Err(bad("mma".into())),
                InstKind::TileLoad { .. }
                | InstKind::TileStore { .. }
                | InstKind::TileCopy { .. }
                | InstKind::TileMma { .. }
                | InstKind::TileDot { .. }
                | InstKind::TileReduce(..)
                | InstKind::TileBroadcast(_)
                | InstKind::TileTranspose(_)
                | InstKind::TileIndex(_)
                | InstKind::Barrier => {
                    return Err(bad("a tile instruction (run scalarize-tiles)".into()))
                }
                InstKind::For { body, .. } => walk(k, body)?,
                InstKind::If {
                    then_blk, else_blk, ..
                } => {
                    walk(k, then_blk)?;
                    walk(k, else_blk)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
    walk(k, &k.body)
}

#[cfg(test)]
mod tests;
