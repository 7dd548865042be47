//! The tile-copy path of the npu-sim code generator: a kernel whose every program instance
//! moves one tile from a strided view of its input to a view of its output (the transpose
//! `tessera-lower`'s `rows.rs` writes) compiled to two DMAs per tile through the Unified
//! Buffer, instead of lane-by-lane scalar loads and stores. Start at [`recognise`], then
//! [`compile`].
//!
//! **What is recognised.** Two parameters (a `read` source and a `write` destination), a grid
//! of at most [`MAX_POINTS`] points, and a body of index arithmetic on the program ids, one
//! `tile.load` of a 2-D view of the source and one `tile.store` of that tile into a 2-D view
//! of the destination with the same dims and origin (so the two masks agree). The destination
//! view must have unit column stride; the source view unit column stride, or unit row stride
//! (a transposed view). Every offset and origin is evaluated at every grid point when the
//! kernel is compiled, and every element a DMA touches must lie inside its buffer. Anything
//! else returns `None` and the kernel is scalarised ([`crate::codegen`]).
//!
//! **What is generated.** For each grid point with a non-empty tile, in grid order: MTE2 copies
//! the in-range `rows × cols` box GM → UB (`DMA GM->UB`, with `transpose` for a transposed
//! source view: the box is read as it lies, `cols` lines of `rows` contiguous elements, and
//! written turned over), then MTE3 copies it UB → GM at the destination's row stride. The tile
//! has two UB slots with a full flag MTE2→MTE3 and a free flag back, so MTE2 loads one tile while
//! MTE3 stores the previous one. The copy moves bits: it is exact for every dtype.

use std::collections::HashMap;

use tessera_ir::DType as KDType;
use tessera_kir::{Access, BinOp, InstKind, Kernel, Scalar, TileAt, Val};

use crate::blob::Blob;
use crate::codegen::{param_slots, CgError};
use crate::config::TargetConfig;
use crate::cube::Asm;
use crate::isa::{DType, Instr, Mem, Pipe};

type R<T> = Result<T, CgError>;

/// The most grid points this path unrolls.
pub const MAX_POINTS: u64 = 4096;

/// One tile move: element offsets of the boxes' first elements, their extents, the source's
/// line stride (between rows, or between columns when transposed), the destination's row
/// stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Move {
    src: u64,
    dst: u64,
    rows: u64,
    cols: u64,
    src_stride: u64,
    dst_stride: u64,
}

/// A recognised tile copy.
#[derive(Clone, Debug)]
pub struct TileCopy {
    dt: DType,
    transposed: bool,
    /// The tile's rows and columns.
    tile: (u64, u64),
    moves: Vec<Move>,
}

fn isa(d: KDType) -> Option<DType> {
    Some(match d {
        KDType::F32 => DType::F32,
        KDType::F16 => DType::F16,
        KDType::BF16 => DType::Bf16,
        KDType::I8 => DType::I8,
        KDType::U8 | KDType::Bool => DType::U8,
        KDType::I16 => DType::I16,
        KDType::U16 => DType::U16,
        KDType::I32 => DType::I32,
        KDType::U32 => DType::U32,
        KDType::I64 => DType::I64,
        KDType::U64 => DType::U64,
        _ => return None,
    })
}

fn eval(defs: &HashMap<Val, &InstKind>, v: Val, pid: [i64; 3], depth: u32) -> Option<i64> {
    if depth > 64 {
        return None;
    }
    match defs.get(&v)? {
        InstKind::Const(Scalar::Int(x)) => Some(*x),
        InstKind::ProgramId(a) => pid.get(*a as usize).copied(),
        InstKind::Binary(op, a, b) => {
            let (a, b) = (
                eval(defs, *a, pid, depth + 1)?,
                eval(defs, *b, pid, depth + 1)?,
            );
            match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                BinOp::Div if b != 0 => a.checked_div(b),
                BinOp::Rem if b != 0 => a.checked_rem(b),
                BinOp::Min => Some(a.min(b)),
                BinOp::Max => Some(a.max(b)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether the copy path takes `kernel` (see the module doc), and its moves.
pub fn recognise(kernel: &Kernel) -> Option<TileCopy> {
    if kernel.bufs.len() != kernel.num_params || kernel.num_params != 2 || kernel.grid.len() > 3 {
        return None;
    }
    let (sd, dd) = (&kernel.bufs[0], &kernel.bufs[1]);
    if sd.access != Access::Read || dd.access == Access::Read || sd.dtype != dd.dtype {
        return None;
    }
    let dt = isa(sd.dtype)?;
    let points: u64 = kernel.grid.iter().product();
    if points == 0 || points > MAX_POINTS {
        return None;
    }
    let mut defs = HashMap::new();
    let (mut load, mut store): (Option<(&TileAt, Val)>, Option<&TileAt>) = (None, None);
    for inst in &kernel.body.insts {
        let res = inst.results.first().copied();
        match &inst.kind {
            InstKind::Const(_) | InstKind::ProgramId(_) | InstKind::Binary(..)
                if res.is_some_and(|v| kernel.ty(v) == tessera_kir::Ty::INDEX) =>
            {
                defs.insert(res?, &inst.kind);
            }
            InstKind::TileLoad { src, .. } if load.is_none() && src.view.buf.0 == 0 => {
                load = Some((src, res?));
            }
            InstKind::TileStore { dst, value }
                if store.is_none() && dst.view.buf.0 == 1 && Some(*value) == load.map(|l| l.1) =>
            {
                store = Some(dst);
            }
            _ => return None,
        }
    }
    let ((src, t), dst) = (load?, store?);
    let ty = kernel.ty(t);
    let (tr, tc) = ty.tile_shape()?;
    let (tr, tc) = (tr as u64, tc as u64);
    if ty.elem != sd.dtype
        || src.view.dims.len() != 2
        || src.view.dims != dst.view.dims
        || src.origin.len() != 2
        || dst.origin != src.origin
        || dst.view.strides[1] != 1
    {
        return None;
    }
    let transposed = match (src.view.strides[0], src.view.strides[1]) {
        (_, 1) => false,
        (1, _) => true,
        _ => return None,
    };
    let (d0, d1) = (src.view.dims[0] as i64, src.view.dims[1] as i64);
    let g = |a: usize| kernel.grid.get(a).copied().unwrap_or(1) as i64;
    let mut moves = Vec::new();
    for p0 in 0..g(0) {
        for p1 in 0..g(1) {
            for p2 in 0..g(2) {
                let pid = [p0, p1, p2];
                let at = |v: Val| eval(&defs, v, pid, 0);
                let (i0, j0) = (at(src.origin[0])?, at(src.origin[1])?);
                if i0 < 0 || j0 < 0 {
                    return None;
                }
                let rows = (d0 - i0).clamp(0, tr as i64) as u64;
                let cols = (d1 - j0).clamp(0, tc as i64) as u64;
                if rows == 0 || cols == 0 {
                    continue;
                }
                let (so, doff) = (at(src.view.offset)?, at(dst.view.offset)?);
                let (s0, s1) = (src.view.strides[0], src.view.strides[1]);
                let t0 = dst.view.strides[0];
                if so < 0 || doff < 0 || s0 < 0 || s1 < 0 || t0 < 0 {
                    return None;
                }
                let first_src = so + i0 * s0 + j0 * s1;
                let last_src = first_src + (rows as i64 - 1) * s0 + (cols as i64 - 1) * s1;
                let first_dst = doff + i0 * t0 + j0;
                let last_dst = first_dst + (rows as i64 - 1) * t0 + cols as i64 - 1;
                if last_src as u64 >= sd.len || last_dst as u64 >= dd.len {
                    return None;
                }
                // The DMA's line strides (a line: a row, or a column when transposed) must
                // reach past the line; a single line takes its own length.
                let (lines, line, ls) = if transposed {
                    (cols, rows, s1 as u64)
                } else {
                    (rows, cols, s0 as u64)
                };
                let src_stride = if lines == 1 { line } else { ls };
                let dst_stride = if rows == 1 { cols } else { t0 as u64 };
                if src_stride < line || dst_stride < cols {
                    return None;
                }
                moves.push(Move {
                    src: first_src as u64,
                    dst: first_dst as u64,
                    rows,
                    cols,
                    src_stride,
                    dst_stride,
                });
            }
        }
    }
    Some(TileCopy {
        dt,
        transposed,
        tile: (tr, tc),
        moves,
    })
}

/// Registers of the generated program.
mod reg {
    pub const ZERO: u8 = 0;
    pub const UB: u8 = 1;
    pub const GM: u8 = 2;
    pub const ROWS: u8 = 3;
    pub const COLS: u8 = 4;
    pub const SSTR: u8 = 5;
    pub const DSTR: u8 = 6;
    pub const TC: u8 = 7;
}

/// The program for a recognised tile copy `c` of `kernel`.
pub fn compile(kernel: &Kernel, c: &TileCopy, cfg: &TargetConfig) -> R<Blob> {
    use reg::*;
    use Pipe::{Mte2, Mte3};
    let (params, gm_top) = param_slots(kernel);
    if gm_top > cfg.mem(Mem::Gm).size {
        return Err(CgError::Unsupported(format!(
            "its buffers need {gm_top} bytes of GM, target `{}` has {}",
            cfg.name,
            cfg.mem(Mem::Gm).size
        )));
    }
    let sz = c.dt.size();
    let slot_bytes = (c.tile.0 * c.tile.1 * sz).div_ceil(32) * 32;
    if 2 * slot_bytes > cfg.mem(Mem::Ub).size {
        return Err(CgError::Unsupported(format!(
            "two {}x{} tiles need {} bytes of UB, target `{}` has {}",
            c.tile.0,
            c.tile.1,
            2 * slot_bytes,
            cfg.name,
            cfg.mem(Mem::Ub).size
        )));
    }
    let (sa, da) = (params[0].addr, params[1].addr);
    let mut a = Asm::new();
    a.li(ZERO, 0)?;
    a.li(TC, c.tile.1 as i64)?;
    for slot in 0..2 {
        a.set(Mte3, Mte2, slot);
    }
    for (k, m) in c.moves.iter().enumerate() {
        let slot = (k % 2) as u32;
        let ub = slot as u64 * slot_bytes;
        // MTE2: GM -> UB, into a `rows x cols` box at the tile's row stride.
        a.wait(Mte3, Mte2, slot);
        a.li(UB, ub as i64)?;
        a.li(GM, (sa + m.src * sz) as i64)?;
        a.li(ROWS, m.rows as i64)?;
        a.li(COLS, m.cols as i64)?;
        a.li(SSTR, m.src_stride as i64)?;
        let regs = if c.transposed {
            // The source box is `cols` lines of `rows` elements, written turned over.
            [UB, GM, COLS, ROWS, SSTR, TC, ROWS, COLS]
        } else {
            [UB, GM, ROWS, COLS, SSTR, TC, ROWS, COLS]
        };
        a.emit(Instr::Dma {
            src_mem: Mem::Gm,
            dst_mem: Mem::Ub,
            sdt: c.dt,
            ddt: c.dt,
            regs,
            scale: None,
            transpose: c.transposed,
        });
        a.set(Mte2, Mte3, slot);
        // MTE3: UB -> GM at the destination's row stride.
        a.wait(Mte2, Mte3, slot);
        a.li(GM, (da + m.dst * sz) as i64)?;
        a.li(DSTR, m.dst_stride as i64)?;
        a.emit(Instr::Dma {
            src_mem: Mem::Ub,
            dst_mem: Mem::Gm,
            sdt: c.dt,
            ddt: c.dt,
            regs: [GM, UB, ROWS, COLS, TC, DSTR, ROWS, COLS],
            scale: None,
            transpose: false,
        });
        a.set(Mte3, Mte2, slot);
    }
    for r in crate::blob::TRAP_REGS {
        a.li(r, 0)?;
    }
    a.emit(Instr::Halt);
    Ok(Blob {
        params,
        gm_bytes: gm_top,
        program: a.finish()?,
    })
}
