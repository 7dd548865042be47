//! Row kernels and transposes as tile programs, for targets whose description has a
//! vector-unit buffer (a memory of role `vector`, an NPU's Unified Buffer); Softmax's also for
//! CPUs with SIMD registers ([`softmax_as_tiles`]).
//!
//! **Rows.** Softmax/LogSoftmax and LayerNormalization along the last, contiguous axis, written
//! with tiles (`tile.load` of a block of rows, elementwise tile
//! arithmetic, `tile.reduce … rows`, `tile.broadcast`, `tile.store`) for targets whose
//! description has a vector-unit buffer (a memory of role `vector`, an NPU's Unified Buffer).
//!
//! The lowering says *what* each program instance computes: `R` whole rows of `L` elements at
//! a time (`R · L` about [`ROW_TILE_ELEMS`]), with every reduction along the tile's rows in
//! increasing column order and the same operations, in the same order, as the scalar row loops
//! of `reduce.rs` and `dense.rs`. A backend with a vector unit maps the tiles onto it (npu-sim:
//! `targets/npu-sim/src/rows.rs`); any other target, or a program the backend cannot place,
//! gets them scalarised by `scalarize-tiles`, which is exact. Every other case (another axis, a
//! scale that is not one value per element of the row, Hardmax, RMS or statistics outputs)
//! keeps the scalar row kernel.
//!
//! **Transposes.** [`transpose_kernel`]: after dropping unit axes and merging axes contiguous in
//! both tensors, each program instance moves one tile between a strided view of the input and a
//! view of the output: rows along the longest output axis and columns along the output's last
//! axis when that axis is the input's contiguous one (both views have unit column stride), or
//! else rows along the input's contiguous axis (the input view then has unit *row* stride: a
//! transposed view). A backend with a transposing copy moves each tile with two DMAs (npu-sim:
//! `targets/npu-sim/src/tcopy.rs`); everything else scalarises it.

use crate::util::{compute_dtype, linear_index, strides, unravel};
use crate::LowerCx;
use tessera_ir::DType;
use tessera_kir::{
    Access, Axis, Buf, CastMode, Kernel, KernelBuilder, MathFn, ReduceOp, Scalar, TileAt, UnOp, Val,
};
use tessera_target::MemoryRole;

/// About how many elements one program instance's tile of rows holds.
pub const ROW_TILE_ELEMS: u64 = 4096;

/// The longest row written as one tile (a tile holds at most 65,536 elements).
const MAX_ROW: u64 = 8192;

const NO_SAT: CastMode = CastMode { saturate: false };

/// Whether the target keeps row tiles: it has a buffer for its vector unit.
pub fn wants_row_tiles(cx: &LowerCx) -> bool {
    cx.desc.memory.iter().any(|m| m.role == MemoryRole::Vector)
}

/// Whether Softmax/LogSoftmax take the row tile program: on a target with a vector-unit
/// buffer, and on one with SIMD registers (`vector_bytes` ≥ 16), where `scalarize-tiles`
/// turns each elementwise tile step into a vector loop over the rows and `exp` runs once per
/// element instead of the scalar kernel's twice (host: 1.8× fewer instructions on BERT's
/// [12, 128, 128] softmax). LayerNormalization takes it on a CPU whose code generator has a
/// loop vectorizer (the LLVM targets), where the tiles' row sums fold in vector partials and
/// the scalar kernel's sums run one element at a time (BERT's LayerNorm 0.22 → 0.10 ms on
/// llvm-x86_64); host (Cranelift) keeps the scalar kernel, where the tiles' extra passes cost
/// more than they save (1.4× more instructions).
pub fn softmax_as_tiles(cx: &LowerCx) -> bool {
    wants_row_tiles(cx) || cx.desc.vector_bytes >= 16
}

/// The tile shape for `rows` rows of `len` elements: (rows per instance, instances), or `None`
/// when a row is too long for one tile.
fn shape(rows: u64, len: u64) -> Option<(u64, u64)> {
    if len == 0 || len > MAX_ROW || rows == 0 {
        return None;
    }
    let r = (ROW_TILE_ELEMS / len).clamp(1, rows);
    Some((r, rows.div_ceil(r)))
}

/// The tile of rows `r0 .. r0 + r` of a `rows × len` row-major buffer.
fn rows_at(buf: Buf, zero: Val, rows: u64, len: u64, r0: Val) -> TileAt {
    TileAt::row_major(buf, zero, &[rows, len], &[r0, zero])
}

/// Starts a row kernel: the first row of this instance and the index 0.
fn begin(b: &mut KernelBuilder, r: u64, grid: u64) -> (Val, Val) {
    b.set_grid(&[grid]);
    let pid = b.program_id(0);
    let rv = b.index(r as i64);
    let r0 = b.mul(pid, rv);
    let zero = b.index(0);
    (r0, zero)
}

fn widen(b: &mut KernelBuilder, t: Val) -> Val {
    let d = b.ty(t).elem;
    let c = compute_dtype(d);
    if c == d {
        t
    } else {
        b.cast(t, c, NO_SAT)
    }
}

fn narrow(b: &mut KernelBuilder, t: Val, to: DType) -> Val {
    if b.ty(t).elem == to {
        t
    } else {
        b.cast(t, to, NO_SAT)
    }
}

fn ftile(b: &mut KernelBuilder, rows: u64, cols: u64, v: f64) -> Val {
    b.const_tile(DType::F32, rows as u16, cols as u16, v)
}

/// Softmax (`log = false`) or LogSoftmax along the last axis of `rows × len` elements of
/// float dtype `dt` (f32, f16 or bf16): the scalar kernel's steps (row maximum, `exp` of the
/// difference, its sum, then `e · (1 / sum)` or `d − log(sum)`) on tiles. `None` where the
/// row does not fit one tile.
pub fn softmax_kernel(name: String, dt: DType, rows: u64, len: u64, log: bool) -> Option<Kernel> {
    if !matches!(dt, DType::F32 | DType::F16 | DType::BF16) {
        return None;
    }
    let (r, grid) = shape(rows, len)?;
    let mut b = KernelBuilder::new(name);
    let x = b.param("x", dt, rows * len, Access::Read);
    let y = b.param("y", dt, rows * len, Access::Write);
    let (r0, zero) = begin(&mut b, r, grid);
    let (ru, lu) = (r as u16, len as u16);
    let t = b.tile_load(rows_at(x, zero, rows, len, r0), ru, lu, Scalar::Float(0.0));
    let xf = widen(&mut b, t);
    let m = b.tile_reduce(ReduceOp::Max, Axis::Rows, xf);
    let mb = b.tile_broadcast(m, ru, lu);
    let d = b.sub(xf, mb);
    let e = b.math(MathFn::Exp, &[d]);
    let s = b.tile_reduce(ReduceOp::Add, Axis::Rows, e);
    let res = if log {
        let ls = b.math(MathFn::Log, &[s]);
        let lb = b.tile_broadcast(ls, ru, lu);
        b.sub(d, lb)
    } else {
        let one = ftile(&mut b, r, 1, 1.0);
        let inv = b.div(one, s);
        let ib = b.tile_broadcast(inv, ru, lu);
        b.mul(e, ib)
    };
    let out = narrow(&mut b, res, dt);
    b.tile_store(rows_at(y, zero, rows, len, r0), out);
    Some(b.finish())
}

/// LayerNormalization along the last axis (`(x − mean) · 1/sqrt(var + eps) · scale + bias`,
/// the variance from the centred values), with `scale` and `bias` (if any) holding one value
/// per element of the row, of dtype `pdt`. Parameters: x, scale, [bias], y.
pub fn layer_norm_kernel(
    name: String,
    dt: DType,
    pdt: (DType, Option<DType>),
    rows: u64,
    len: u64,
    eps: f64,
) -> Option<Kernel> {
    let floats = |d: DType| matches!(d, DType::F32 | DType::F16 | DType::BF16);
    if !floats(dt) || !floats(pdt.0) || pdt.1.is_some_and(|d| !floats(d)) {
        return None;
    }
    let (r, grid) = shape(rows, len)?;
    let mut b = KernelBuilder::new(name);
    let x = b.param("x", dt, rows * len, Access::Read);
    let sc = b.param("scale", pdt.0, len, Access::Read);
    let bi = pdt.1.map(|d| b.param("bias", d, len, Access::Read));
    let y = b.param("y", dt, rows * len, Access::Write);
    let (r0, zero) = begin(&mut b, r, grid);
    let (ru, lu) = (r as u16, len as u16);
    let t = b.tile_load(rows_at(x, zero, rows, len, r0), ru, lu, Scalar::Float(0.0));
    let xf = widen(&mut b, t);
    let n = ftile(&mut b, r, 1, len as f64);
    let s1 = b.tile_reduce(ReduceOp::Add, Axis::Rows, xf);
    let mean = b.div(s1, n);
    let mb = b.tile_broadcast(mean, ru, lu);
    let d = b.sub(xf, mb);
    let sq = b.mul(d, d);
    let s2 = b.tile_reduce(ReduceOp::Add, Axis::Rows, sq);
    let var = b.div(s2, n);
    let e = ftile(&mut b, r, 1, eps);
    let ve = b.add(var, e);
    let sd = b.unary(UnOp::Sqrt, ve);
    let one = ftile(&mut b, r, 1, 1.0);
    let inv = b.div(one, sd);
    let ib = b.tile_broadcast(inv, ru, lu);
    let mut v = b.mul(d, ib);
    let param = |b: &mut KernelBuilder, buf: Buf| {
        let p = b.tile_load(
            TileAt::row_major(buf, zero, &[1, len], &[zero, zero]),
            1,
            lu,
            Scalar::Float(0.0),
        );
        let p = widen(b, p);
        b.tile_broadcast(p, ru, lu)
    };
    let s = param(&mut b, sc);
    v = b.mul(v, s);
    if let Some(bi) = bi {
        let c = param(&mut b, bi);
        v = b.add(v, c);
    }
    let out = narrow(&mut b, v, dt);
    b.tile_store(rows_at(y, zero, rows, len, r0), out);
    Some(b.finish())
}

/// Bytes of one transpose tile.
const COPY_TILE_BYTES: u64 = 32768;

/// Transpose of a `dims` tensor of `dt` by `perm` as a grid of tile copies (see the module
/// doc). Parameters: src, dst. `None` where the permutation moves whole contiguous rows only
/// (fewer than two axes remain after merging) or the dtype is narrower than a byte.
pub fn transpose_kernel(name: String, dt: DType, dims: &[u64], perm: &[usize]) -> Option<Kernel> {
    if !dt.bits().is_multiple_of(8) || dt == DType::String || perm.len() != dims.len() {
        return None;
    }
    let st = strides(dims);
    let out: Vec<u64> = perm.iter().map(|&p| dims[p]).collect();
    let ost = strides(&out);
    // Output axes as (extent, input stride, output stride), unit axes dropped, neighbours
    // contiguous in both merged.
    let mut ax: Vec<(u64, u64, u64)> = Vec::new();
    for j in 0..out.len() {
        if out[j] == 1 {
            continue;
        }
        let a = (out[j], st[perm[j]], ost[j]);
        match ax.last_mut() {
            Some(l) if l.1 == a.1 * a.0 && l.2 == a.2 * a.0 => *l = (l.0 * a.0, a.1, a.2),
            _ => ax.push(a),
        }
    }
    let last = ax.len().checked_sub(1)?;
    if last == 0 {
        return None;
    }
    let contiguous = ax.iter().position(|a| a.1 == 1)?;
    let (rax, cax) = if contiguous == last {
        ((0..last).max_by_key(|&j| (ax[j].0, j))?, last)
    } else {
        (contiguous, last)
    };
    let (re, ce) = (ax[rax].0, ax[cax].0);
    let elems = (COPY_TILE_BYTES / (dt.bits() as u64 / 8)).min(65536);
    let tc = ce.min(512).min(elems);
    let tr = re.min((elems / tc).max(1));
    let outer: Vec<(u64, u64, u64)> = (0..ax.len())
        .filter(|&j| j != rax && j != cax)
        .map(|j| ax[j])
        .collect();
    let outer_n: u64 = outer.iter().map(|a| a.0).product();
    let total: u64 = dims.iter().product();
    let mut b = KernelBuilder::new(name);
    let src = b.param("src", dt, total, Access::Read);
    let dst = b.param("dst", dt, total, Access::Write);
    b.set_grid(&[outer_n, re.div_ceil(tr), ce.div_ceil(tc)]);
    let p0 = b.program_id(0);
    let p1 = b.program_id(1);
    let p2 = b.program_id(2);
    let coords = unravel(&mut b, p0, &outer.iter().map(|a| a.0).collect::<Vec<_>>());
    let soff = linear_index(
        &mut b,
        &coords,
        &outer.iter().map(|a| a.1).collect::<Vec<_>>(),
    );
    let doff = linear_index(
        &mut b,
        &coords,
        &outer.iter().map(|a| a.2).collect::<Vec<_>>(),
    );
    let trv = b.index(tr as i64);
    let i0 = b.mul(p1, trv);
    let tcv = b.index(tc as i64);
    let j0 = b.mul(p2, tcv);
    let view = |buf: Buf, off: Val, sr: u64, sc: u64| TileAt {
        view: tessera_kir::View {
            buf,
            offset: off,
            dims: vec![re, ce],
            strides: vec![sr as i64, sc as i64],
        },
        origin: vec![i0, j0],
    };
    let fill = if dt.is_float() {
        Scalar::Float(0.0)
    } else {
        Scalar::Int(0)
    };
    let t = b.tile_load(
        view(src, soff, ax[rax].1, ax[cax].1),
        tr as u16,
        tc as u16,
        fill,
    );
    b.tile_store(view(dst, doff, ax[rax].2, ax[cax].2), t);
    Some(b.finish())
}
