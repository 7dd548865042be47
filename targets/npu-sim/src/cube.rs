//! The tile-level path of the npu-sim code generator: a contraction tile program (the one
//! `tessera-lower`'s `contraction.rs` emits for MatMul, Gemm and MatMulInteger) compiled
//! straight to the Cube, with its tiles placed in L1, L0A, L0B, L0C and the UB. Start at
//! [`recognise`], which reads a kernel's tiles and says whether this path can take it; then
//! [`compile`], which writes the double-buffered program.
//!
//! **What is recognised.** A kernel whose body is: index arithmetic on the program ids; an
//! `acc` tile of zeros; one `for` over K that `tile.load`s an A tile (view `[M, K]`, unit column
//! stride, or unit row stride for a transposed A, origin `[i0, k]`) and a B tile (`[K, N]`,
//! likewise, origin `[k, j0]`) and `tile.mma`s them
//! into the carried accumulator; then Gemm's epilogue (a multiply by `alpha`, the add of
//! `beta ·` a C tile that is a full block or a bias row), FusedMatMul's ReLU (a `max` with
//! +0.0, after C; the scalar constants of the splats may be defined after the loop), at most a
//! `cast` of the result and
//! one `tile.store` into a `[M, N]` view at `[i0, j0]`. The tile origins must be `program_id 1 · tm` and
//! `program_id 2 · tn`, and each view's offset an affine function of `program_id 0` (the batch).
//! The dtype pair must be one the chip's `[mma]` table has. Anything else (zero points, a C
//! broadcast along columns, a transposed output, an f32 product) returns `None`, and the kernel goes
//! down the scalarised path on the Vector unit, which is exact: **an f32 product is never run
//! on the Cube**.
//!
//! **What is generated.** The kernel says what each instance computes; how the work is cut is
//! this backend's business, so the program re-blocks the whole product with blocks chosen from
//! the chip's buffer sizes ([`Blocks::choose`]), not the kernel's tile shape:
//! - C is cut into `bm × bn` blocks, each accumulated over all of K in one of two L0C slots;
//!   K is walked in `bk`-wide blocks, one `MMA` each (`init` on the first).
//! - MTE2 copies A and B blocks GM → L1, zero-padded to Cube tile multiples (the masked edges
//!   of the tile loads). When the A panel of a row block fits its L1 ring, it is loaded once and
//!   reused by every column block; B streams through a ring of up to four slots.
//! - MTE1 copies them L1 → L0A/L0B, into one of two slots, while the Cube works on the other.
//!   A transposed operand (Gemm's `transA`/`transB`) is copied into L1 as it lies in GM and
//!   turned over by this copy (`DMA L1->L0B ..., transpose`).
//! - The result leaves through the UB: `DMA L0C->UB` on the Vector pipe, Gemm's `alpha` and
//!   `beta · C` as f32 `VMULS`/`VADD` (C is DMAed GM → UB by MTE2 when its block starts, a bias
//!   row once per block and added row by row), the ReLU as `VMAXS` with +0.0, a `VCAST` to the
//!   output dtype (the kernel's cast, so overflow gives infinity exactly as kernel IR says), and
//!   `DMA UB->GM` on MTE3, with two UB output slots so MTE3 drains one block while the next is
//!   cast.
//!
//! Every ring has a "full" flag from producer to consumer and a "free" flag back, pre-set once
//! per slot, so each pipe runs ahead of its consumer as far as the slots allow. The
//! accumulation order is the kernel's (increasing k, one f32 or wrapping i32 rounding per
//! step), so the result is the interpreter's.

use std::collections::HashMap;

use tessera_ir::DType as KDType;
use tessera_kir::{InstKind, Kernel, Scalar, TileAt, Val, View};

use crate::blob::Blob;
use crate::codegen::{param_slots, CgError};
use crate::config::TargetConfig;
use crate::isa::{AluOp, Cond, DType, Instr, Mem, Pipe, VecForm, VecOp};

type R<T> = Result<T, CgError>;

/// One operand (or the result) of a recognised product: its parameter, the element offset of
/// batch 0, the element stride per batch, and the stride between its rows (its columns are
/// unit-stride), or, when `transposed`, between its columns (its rows are unit-stride: Gemm's
/// `transA`/`transB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Operand {
    param: usize,
    off0: i64,
    batch_stride: i64,
    row_stride: i64,
    transposed: bool,
}

/// A contraction the Cube can run: `Y[b] = A[b] · B[b]` over `batch` products of `m × k` by
/// `k × n`, accumulated in `cdt`, written as `ydt`.
#[derive(Clone, Debug, PartialEq)]
pub struct CubeGemm {
    adt: DType,
    cdt: DType,
    ydt: DType,
    /// The Cube tile of the pair, (m, n, k).
    unit: (u64, u64, u64),
    batch: u64,
    m: u64,
    n: u64,
    k: u64,
    a: Operand,
    b: Operand,
    y: Operand,
    /// Gemm's `alpha`, applied to the f32 accumulator first.
    alpha: Option<f32>,
    c: Option<CTerm>,
    /// FusedMatMul's ReLU, after C: `VMAX` with +0.0 (held at UB 32, `beta`'s slot, which a
    /// product with a ReLU does not use).
    relu: bool,
}

/// Gemm's C term, added after `alpha` as `beta · f32(C)`: a full `[M, N]` block (`row_stride`
/// at least N) or one row broadcast over the rows (`row_stride` 0: a bias of N), with unit
/// column stride, of dtype `dt`.
#[derive(Clone, Debug, PartialEq)]
struct CTerm {
    op: Operand,
    dt: DType,
    beta: Option<f32>,
}

impl CTerm {
    fn is_row(&self) -> bool {
        self.op.row_stride == 0
    }
}

/// What follows the K loop, as the kernel computes it: `alpha`, the C tile load and `beta`,
/// and the stored tile.
struct Tail<'k> {
    alpha: Option<f32>,
    c: Option<(Val, &'k TileAt, Option<f32>)>,
    /// A ReLU (`max` with a splat of +0.0) after the C term: FusedMatMul's epilogue.
    relu: bool,
    store: &'k TileAt,
    value: Val,
}

/// Reads the instructions after the K loop of a contraction tile program: `acc · alpha`,
/// `+ beta · cast(C)`, a ReLU, one cast, one store, each at most once and in that order (the
/// order of `contraction.rs`), and the scalar constants their splats read. `None` for
/// anything else.
fn tail<'k>(defs: &Defs<'k>, acc: Val, post: &[&'k tessera_kir::Inst]) -> Option<Tail<'k>> {
    use tessera_kir::BinOp;
    let mut splats: HashMap<Val, f32> = HashMap::new();
    let mut consts: HashMap<Val, f64> = HashMap::new();
    let (mut cur, mut alpha, mut cload, mut cval, mut beta) = (acc, None, None, None, None);
    let (mut added, mut relu, mut cast, mut store) = (false, false, false, None);
    for inst in post {
        let r = inst.results.first().copied();
        match (&inst.kind, r) {
            (InstKind::Const(Scalar::Float(f)), Some(r)) if defs.k.ty(r).is_scalar() => {
                consts.insert(r, *f);
            }
            (InstKind::Splat(x), Some(r)) => {
                let f = match defs.defs.get(x) {
                    Some(InstKind::Const(Scalar::Float(f))) => Some(*f),
                    _ => consts.get(x).copied(),
                };
                match f {
                    Some(f) if defs.k.ty(r).elem == KDType::F32 => {
                        splats.insert(r, f as f32);
                    }
                    _ => return None,
                }
            }
            (InstKind::Binary(BinOp::Mul, x, y), Some(r))
                if *x == cur && !added && alpha.is_none() && splats.contains_key(y) =>
            {
                alpha = splats.get(y).copied();
                cur = r;
            }
            (InstKind::TileLoad { src, fill }, Some(r)) if cload.is_none() && is_zero(fill) => {
                cload = Some((r, src));
                cval = Some(r);
            }
            (InstKind::Cast(x, _), Some(r)) if Some(*x) == cval && cval == cload.map(|c| c.0) => {
                cval = Some(r)
            }
            (InstKind::Binary(BinOp::Mul, x, y), Some(r))
                if Some(*x) == cval && beta.is_none() && splats.contains_key(y) =>
            {
                beta = splats.get(y).copied();
                cval = Some(r);
            }
            (InstKind::Binary(BinOp::Add, x, y), Some(r))
                if *x == cur && Some(*y) == cval && !added && !relu =>
            {
                added = true;
                cur = r;
            }
            // +0.0 exactly: `max` then keeps -0.0 from the accumulator out, as VMAX does.
            (InstKind::Binary(BinOp::Max, x, y), Some(r))
                if *x == cur
                    && !relu
                    && !cast
                    && splats.get(y).is_some_and(|z| z.to_bits() == 0) =>
            {
                relu = true;
                cur = r;
            }
            (InstKind::Cast(x, _), Some(r)) if *x == cur && !cast => {
                cast = true;
                cur = r;
            }
            (InstKind::TileStore { dst, value }, None) if *value == cur && store.is_none() => {
                store = Some(dst)
            }
            _ => return None,
        }
    }
    // A C that is loaded must be added, and only the accumulator chain is stored.
    if cload.is_some() != added {
        return None;
    }
    Some(Tail {
        alpha,
        relu,
        c: cload.map(|(v, src)| (v, src, beta)),
        store: store?,
        value: cur,
    })
}

/// The scalar definitions of a kernel's top level, to evaluate index expressions.
struct Defs<'k> {
    k: &'k Kernel,
    defs: HashMap<Val, &'k InstKind>,
}

/// Grid points at which index expressions are sampled (any four distinct points do).
const SAMPLES: [[i64; 3]; 4] = [[0, 0, 0], [1, 2, 3], [2, 5, 1], [7, 1, 4]];

impl Defs<'_> {
    /// The value of the `i64` scalar `v` at grid point `pid`, when it is index arithmetic.
    fn eval(&self, v: Val, pid: [i64; 3], depth: u32) -> Option<i64> {
        use tessera_kir::BinOp::*;
        if depth > 64 || !self.k.ty(v).is_scalar() {
            return None;
        }
        match self.defs.get(&v)? {
            InstKind::Const(Scalar::Int(x)) => Some(*x),
            InstKind::ProgramId(a) => pid.get(*a as usize).copied(),
            InstKind::Binary(op, x, y) => {
                let (x, y) = (
                    self.eval(*x, pid, depth + 1)?,
                    self.eval(*y, pid, depth + 1)?,
                );
                match op {
                    Add => x.checked_add(y),
                    Sub => x.checked_sub(y),
                    Mul => x.checked_mul(y),
                    Div => x.checked_div(y),
                    Rem => x.checked_rem(y),
                    Min => Some(x.min(y)),
                    Max => Some(x.max(y)),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn at(&self, v: Val, pid: [i64; 3]) -> Option<i64> {
        self.eval(v, pid, 0)
    }

    /// `v`'s value when it is the same at every grid point.
    fn constant(&self, v: Val) -> Option<i64> {
        let c = self.at(v, SAMPLES[0])?;
        SAMPLES
            .iter()
            .all(|&p| self.at(v, p) == Some(c))
            .then_some(c)
    }

    /// Whether `v` is `program_id axis · coef`.
    fn is_tile_origin(&self, v: Val, axis: usize, coef: i64) -> bool {
        SAMPLES
            .iter()
            .all(|&p| self.at(v, p) == Some(p[axis] * coef))
    }

    /// `(offset at batch 0, stride per batch)` when `v` is affine in `program_id 0` over
    /// `0..batch` and independent of the other axes.
    fn affine_in_batch(&self, v: Val, batch: u64) -> Option<(i64, i64)> {
        let o0 = self.at(v, [0, 0, 0])?;
        let s = self.at(v, [1, 0, 0])?.checked_sub(o0)?;
        (0..batch as i64)
            .all(|p| {
                let want = p.checked_mul(s).and_then(|d| o0.checked_add(d));
                want.is_some() && self.at(v, [p, 3, 5]) == want
            })
            .then_some((o0, s))
    }
}

fn is_zero(s: &Scalar) -> bool {
    matches!(s, Scalar::Int(0)) || matches!(s, Scalar::Float(f) if *f == 0.0)
}

/// The ISA dtype of a Cube operand or result element.
fn isa(d: KDType) -> Option<DType> {
    Some(match d {
        KDType::F16 => DType::F16,
        KDType::BF16 => DType::Bf16,
        KDType::I8 => DType::I8,
        KDType::F32 => DType::F32,
        KDType::I32 => DType::I32,
        _ => return None,
    })
}

/// Whether `kernel` is a contraction tile program the Cube of `cfg` can run exactly, and if so
/// its shape. `None` sends it down the scalarised path (see the module doc).
pub fn recognise(kernel: &Kernel, cfg: &TargetConfig) -> Option<CubeGemm> {
    if kernel.bufs.len() != kernel.num_params || kernel.grid.len() != 3 {
        return None;
    }
    let mut defs = Defs {
        k: kernel,
        defs: HashMap::new(),
    };
    let (mut acc0, mut the_for, mut post) = (None, None, Vec::new());
    for inst in &kernel.body.insts {
        match &inst.kind {
            InstKind::Const(_) | InstKind::ProgramId(_) | InstKind::Binary(..)
                if inst.results.len() == 1 && kernel.ty(inst.results[0]).is_scalar() =>
            {
                defs.defs.insert(inst.results[0], &inst.kind);
            }
            InstKind::Splat(s)
                if the_for.is_none() && acc0.is_none() && inst.results.len() == 1 =>
            {
                acc0 = Some((inst.results[0], *s))
            }
            InstKind::For { .. } if the_for.is_none() => the_for = Some(inst),
            _ if the_for.is_some() => post.push(inst),
            _ => return None,
        }
    }
    let ((acc0, zero), the_for) = (acc0?, the_for?);
    if !matches!(defs.defs.get(&zero), Some(InstKind::Const(s)) if is_zero(s)) {
        return None;
    }
    let InstKind::For {
        lo,
        hi,
        step,
        iv,
        iter,
        init,
        body,
    } = &the_for.kind
    else {
        return None;
    };
    if init.as_slice() != [acc0] || iter.len() != 1 || the_for.results.len() != 1 {
        return None;
    }
    let acc_out = the_for.results[0];
    let tail = tail(&defs, acc_out, &post)?;
    let (ydst, yval) = (tail.store, tail.value);
    if defs.constant(*lo) != Some(0) {
        return None;
    }
    let (tk, kdim) = (defs.constant(*step)?, defs.constant(*hi)?);
    // The loop body: two tile loads, one tile.mma of them onto the carried tile, the yield.
    let [l1, l2, mma, yld] = body.insts.as_slice() else {
        return None;
    };
    let InstKind::TileMma { a, b, acc } = &mma.kind else {
        return None;
    };
    if *acc != iter[0] || mma.results.len() != 1 {
        return None;
    }
    if !matches!(&yld.kind, InstKind::Yield(v) if v.as_slice() == [mma.results[0]]) {
        return None;
    }
    let load_of = |v: Val| {
        [l1, l2].into_iter().find_map(|l| match &l.kind {
            InstKind::TileLoad { src, fill } if l.results.as_slice() == [v] && is_zero(fill) => {
                Some(src)
            }
            _ => None,
        })
    };
    let (asrc, bsrc) = (load_of(*a)?, load_of(*b)?);
    if std::ptr::eq(asrc, bsrc) {
        return None;
    }
    let (aty, bty, cty) = (kernel.ty(*a), kernel.ty(*b), kernel.ty(*acc));
    let (tm, tn) = (cty.rows as i64, cty.lanes as i64);
    let pair = cfg.desc.mma_pair(aty.elem, bty.elem, cty.elem)?;
    let (adt, cdt, ydt) = (isa(aty.elem)?, isa(cty.elem)?, isa(kernel.ty(yval).elem)?);
    // The casts the epilogue can run exactly: the accumulator as it is, or f32 to f16/bf16.
    let cast_ok = ydt == cdt || (cdt == DType::F32 && matches!(ydt, DType::F16 | DType::Bf16));
    // `alpha` and C are f32 arithmetic on the Vector unit.
    let float_tail = tail.alpha.is_none() && tail.c.is_none() && !tail.relu || cdt == DType::F32;
    let beta = tail.c.as_ref().and_then(|c| c.2);
    if tail.relu && beta.is_some() {
        return None;
    }
    if !cast_ok
        || !float_tail
        || aty.rows as i64 != tm
        || aty.lanes as i64 != tk
        || bty.lanes as i64 != tn
    {
        return None;
    }
    let batch = kernel.grid[0];
    if batch == 0 || batch > 1 << 16 {
        return None;
    }
    // Each view: 2-D, one unit stride (the columns', or for an operand the rows'), the other at
    // least as long as the lines it separates.
    let operand = |v: &View, dims: [u64; 2], may_transpose: bool| -> Option<Operand> {
        if v.dims.as_slice() != dims
            || v.strides.len() != 2
            || (v.buf.0 as usize) >= kernel.num_params
        {
            return None;
        }
        let (transposed, row_stride) = if v.strides[1] == 1 && v.strides[0] >= dims[1] as i64 {
            (false, v.strides[0])
        } else if may_transpose && v.strides[0] == 1 && v.strides[1] >= dims[0] as i64 {
            (true, v.strides[1])
        } else {
            return None;
        };
        let (off0, batch_stride) = defs.affine_in_batch(v.offset, batch)?;
        // Every element the DMAs touch must lie in the buffer (the last one of the last batch):
        // a view past its buffer goes down the scalarised path, which checks as it reads.
        let (lines, line) = if transposed {
            (dims[1], dims[0])
        } else {
            (dims[0], dims[1])
        };
        let last = (batch as i64 - 1)
            .checked_mul(batch_stride)?
            .checked_add((lines as i64 - 1).checked_mul(row_stride)?)?
            .checked_add(line as i64 - 1)?
            .checked_add(off0)?;
        let decl = kernel.buf(v.buf);
        let inside = decl.view_len(decl.dtype).is_some_and(|n| (last as u64) < n);
        (off0 >= 0 && batch_stride >= 0 && inside).then_some(Operand {
            param: v.buf.0 as usize,
            off0,
            batch_stride,
            row_stride,
            transposed,
        })
    };
    let (m, k) = (*asrc.view.dims.first()?, kdim.max(0) as u64);
    let n = *bsrc.view.dims.get(1)?;
    let a_op = operand(&asrc.view, [m, k], true)?;
    let b_op = operand(&bsrc.view, [k, n], true)?;
    let y_op = operand(&ydst.view, [m, n], false)?;
    let origin_ok = |o: &[Val], rows: Option<(usize, i64)>, cols: Option<(usize, i64)>| {
        o.len() == 2
            && rows.map_or(o[0] == *iv, |(ax, t)| defs.is_tile_origin(o[0], ax, t))
            && cols.map_or(o[1] == *iv, |(ax, t)| defs.is_tile_origin(o[1], ax, t))
    };
    let shapes_ok = origin_ok(&asrc.origin, Some((1, tm)), None)
        && origin_ok(&bsrc.origin, None, Some((2, tn)))
        && origin_ok(&ydst.origin, Some((1, tm)), Some((2, tn)))
        && kernel.grid[1] == m.div_ceil(tm as u64)
        && kernel.grid[2] == n.div_ceil(tn as u64)
        && tk > 0
        && m > 0
        && n > 0
        && k > 0
        && kernel.bufs[y_op.param].access != tessera_kir::Access::Read;
    if !shapes_ok {
        return None;
    }
    let c = match tail.c {
        None => None,
        Some((cv, csrc, beta)) => {
            // A full block, or a bias row (row stride 0), of f16, bf16 or f32.
            let v = &csrc.view;
            let op = if v.strides.as_slice() == [0, 1] && v.dims.as_slice() == [m, n] {
                let (off0, batch_stride) = defs.affine_in_batch(v.offset, batch)?;
                Operand {
                    param: v.buf.0 as usize,
                    off0,
                    batch_stride,
                    row_stride: 0,
                    transposed: false,
                }
            } else {
                operand(v, [m, n], false)?
            };
            let dt = isa(kernel.ty(cv).elem).filter(|d| d.is_float())?;
            let decl = kernel.buf(v.buf);
            let inside = decl
                .view_len(decl.dtype)
                .is_some_and(|len| op.off0 as u64 + n <= len);
            let ok = op.batch_stride == 0
                && op.off0 >= 0
                && inside
                && (v.buf.0 as usize) < kernel.num_params
                && origin_ok(&csrc.origin, Some((1, tm)), Some((2, tn)));
            if !ok {
                return None;
            }
            Some(CTerm { op, dt, beta })
        }
    };
    Some(CubeGemm {
        adt,
        cdt,
        ydt,
        unit: (pair.m as u64, pair.n as u64, pair.k as u64),
        batch,
        m,
        n,
        k,
        a: a_op,
        b: b_op,
        y: y_op,
        alpha: tail.alpha,
        c,
        relu: tail.relu,
    })
}

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to.max(1)) * to.max(1)
}

/// The blocking of a product and where its buffers live on chip (byte sizes of one slot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocks {
    pub bm: u64,
    pub bn: u64,
    pub bk: u64,
    /// Slots of the A ring and the B ring in L1.
    pub na: u64,
    pub nb: u64,
    pub l1_a: u64,
    pub l1_b: u64,
    pub l0a: u64,
    pub l0b: u64,
    pub l0c: u64,
    /// UB slots: the accumulator copy (one per output slot when no cast is needed, else one
    /// shared), the output, Gemm's C as read (two) and as f32 (one, when it needs a cast).
    pub ub_acc: u64,
    pub ub_out: u64,
    pub ub_c: u64,
    /// UB addresses: `alpha` and `beta` live at 0 and 32, then the slots in this order.
    pub ub_acc_at: u64,
    pub ub_out_at: u64,
    pub ub_c_at: u64,
    pub ub_cf_at: u64,
}

/// UB bytes for `alpha` and `beta`, one 32-byte Vector operand each.
const UB_CONSTS: u64 = 64;

impl Blocks {
    /// The largest blocks (up to 128 × 128, and 256 bytes of K) whose rings fit the chip's
    /// buffers: two L0A, L0B and L0C slots, at least two A and two B slots in L1, and the UB
    /// slots of the epilogue. An error names the kernel's buffer that cannot fit and the target.
    fn choose(g: &CubeGemm, cfg: &TargetConfig, kernel: &Kernel) -> R<Blocks> {
        let (um, un, uk) = g.unit;
        let (asz, csz, ysz) = (g.adt.size(), g.cdt.size(), g.ydt.size());
        let mut bm = round_up(128, um).min(round_up(g.m, um));
        let mut bn = round_up(128, un).min(round_up(g.n, un));
        let mut bk = round_up(256 / asz, uk).min(round_up(g.k, uk));
        let cast = g.ydt != g.cdt;
        let mem = |m: Mem| cfg.mem(m);
        let slot = |bytes: u64, m: Mem| round_up(bytes, mem(m).align.max(32));
        loop {
            let (l0a, l0b, l0c) = (
                slot(bm * bk * asz, Mem::L0a),
                slot(bk * bn * asz, Mem::L0b),
                slot(bm * bn * csz, Mem::L0c),
            );
            let (l1_a, l1_b) = (slot(bm * bk * asz, Mem::L1), slot(bk * bn * asz, Mem::L1));
            let ub_acc = slot(bm * bn * csz, Mem::Ub);
            let ub_out = if cast {
                slot(bm * bn * ysz, Mem::Ub)
            } else {
                ub_acc
            };
            let ub_acc_at = UB_CONSTS;
            let ub_out_at = ub_acc_at + if cast { ub_acc } else { 0 };
            let ub_c_at = ub_out_at + 2 * ub_out;
            let (c_rows, c_sz, c_cast) = match &g.c {
                Some(c) => (
                    if c.is_row() { 1 } else { bm },
                    c.dt.size(),
                    c.dt != DType::F32,
                ),
                None => (0, 0, false),
            };
            let ub_c = slot(c_rows * bn * c_sz, Mem::Ub);
            let ub_cf_at = ub_c_at + 2 * ub_c;
            let ub = ub_cf_at
                + if c_cast {
                    slot(c_rows * bn * 4, Mem::Ub)
                } else {
                    0
                };
            let l1 = mem(Mem::L1).size;
            let fits_l0 = 2 * l0a <= mem(Mem::L0a).size && 2 * l0b <= mem(Mem::L0b).size;
            let fits = fits_l0
                && 2 * l0c <= mem(Mem::L0c).size
                && ub <= mem(Mem::Ub).size
                && 2 * (l1_a + l1_b) <= l1;
            if fits {
                // Up to four B slots in half of L1, the rest for A; two of each always fit.
                let mut nb = (l1 / 2 / l1_b).clamp(2, 4);
                if (l1 - nb * l1_b) / l1_a < 2 {
                    nb = 2;
                }
                let na = ((l1 - nb * l1_b) / l1_a).clamp(2, 16);
                return Ok(Blocks {
                    bm,
                    bn,
                    bk,
                    na,
                    nb,
                    l1_a,
                    l1_b,
                    l0a,
                    l0b,
                    l0c,
                    ub_acc,
                    ub_out,
                    ub_c,
                    ub_acc_at,
                    ub_out_at,
                    ub_c_at,
                    ub_cf_at,
                });
            }
            let half = |b: u64, u: u64| round_up(b / 2, u).max(u);
            if !fits_l0 && bk > uk {
                bk = half(bk, uk);
            } else if bm >= bn && bm > um {
                bm = half(bm, um);
            } else if bn > un {
                bn = half(bn, un);
            } else if bk > uk {
                bk = half(bk, uk);
            } else {
                let name = |o: Operand| kernel.bufs[o.param].name.clone();
                return Err(CgError::Unsupported(format!(
                    "kernel `{}`: two {um}x{un}x{uk} Cube tiles of its product (buffers `{}` x `{}` -> `{}`) do not fit the L1/L0A/L0B/L0C/UB of target `{}`",
                    kernel.name,
                    name(g.a),
                    name(g.b),
                    name(g.y),
                    cfg.name
                )));
            }
        }
    }
}

/// Registers of the generated program. `r0` holds 0.
mod reg {
    pub const ZERO: u8 = 0;
    pub const BI: u8 = 1;
    pub const ABAT: u8 = 2;
    pub const BBAT: u8 = 3;
    pub const YBAT: u8 = 4;
    pub const M0: u8 = 5;
    pub const N0: u8 = 6;
    pub const KI: u8 = 7;
    pub const MR: u8 = 8;
    pub const MP: u8 = 9;
    pub const NR: u8 = 10;
    pub const NP: u8 = 11;
    pub const KR: u8 = 12;
    pub const KP: u8 = 13;
    pub const ABASE: u8 = 14;
    pub const L0S: u8 = 15;
    pub const CS: u8 = 16;
    pub const BS: u8 = 17;
    pub const US: u8 = 18;
    pub const ASLOT: u8 = 19;
    pub const BSLOT: u8 = 20;
    pub const L0A: u8 = 21;
    pub const T: u8 = 22;
    pub const T2: u8 = 23;
    pub const KT: u8 = 24;
    pub const INIT: u8 = 25;
    pub const CADDR: u8 = 26;
    pub const K0: u8 = 27;
    pub const L0B: u8 = 28;
    pub const UACC: u8 = 29;
    pub const UOUT: u8 = 30;
    pub const LEN: u8 = 31;
}

/// A small assembler: instructions, labels and their fix-ups (shared with [`crate::stream`]).
pub(crate) struct Asm {
    code: Vec<Instr>,
    labels: Vec<Option<u32>>,
    fixups: Vec<(usize, usize)>,
}

impl Asm {
    pub(crate) fn new() -> Asm {
        Asm {
            code: Vec::new(),
            labels: Vec::new(),
            fixups: Vec::new(),
        }
    }
    pub(crate) fn emit(&mut self, i: Instr) {
        self.code.push(i);
    }
    pub(crate) fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    pub(crate) fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.code.len() as u32);
    }
    pub(crate) fn branch(&mut self, cond: Cond, rs1: u8, rs2: u8, l: usize) {
        self.fixups.push((self.code.len(), l));
        self.emit(Instr::Branch {
            cond,
            rs1,
            rs2,
            target: 0,
        });
    }
    fn imm(v: i64) -> R<i32> {
        i32::try_from(v).map_err(|_| {
            CgError::Unsupported(format!(
                "the value {v} does not fit a 32-bit immediate of the npu-sim ISA"
            ))
        })
    }
    pub(crate) fn li(&mut self, rd: u8, v: i64) -> R<()> {
        let imm = Self::imm(v)?;
        self.emit(Instr::Li { rd, imm });
        Ok(())
    }
    pub(crate) fn alu(&mut self, op: AluOp, rd: u8, rs1: u8, rs2: u8) {
        self.emit(Instr::Alu { op, rd, rs1, rs2 });
    }
    pub(crate) fn alui(&mut self, op: AluOp, rd: u8, rs1: u8, v: i64) -> R<()> {
        let imm = Self::imm(v)?;
        self.emit(Instr::AluI { op, rd, rs1, imm });
        Ok(())
    }
    /// `if rs < limit goto l`, with `limit` an immediate (uses `T`).
    fn loop_back(&mut self, rs: u8, limit: u64, l: usize) -> R<()> {
        self.li(reg::T, limit as i64)?;
        self.branch(Cond::Lt, rs, reg::T, l);
        Ok(())
    }
    pub(crate) fn set(&mut self, src: Pipe, dst: Pipe, id: u32) {
        self.emit(Instr::SetFlag { src, dst, id });
    }
    pub(crate) fn wait(&mut self, src: Pipe, dst: Pipe, id: u32) {
        self.emit(Instr::WaitFlag { src, dst, id });
    }
    /// A DMA without a cast (the path's casts run on the Vector unit).
    fn dma(&mut self, src: Mem, dst: Mem, dt: DType, regs: [u8; 8], transpose: bool) {
        self.emit(Instr::Dma {
            src_mem: src,
            dst_mem: dst,
            sdt: dt,
            ddt: dt,
            regs,
            scale: None,
            transpose,
        });
    }
    /// `T` = the GM byte address of element (`row`, `col`) of an operand at `base` with row
    /// stride `rs` and `esz`-byte elements, and `T2` = `rs`: the source or destination and the
    /// stride of its DMA.
    fn gm_at(&mut self, base: u8, row: u8, col: u8, rs: i64, esz: i64) -> R<()> {
        self.alui(AluOp::Mul, reg::T, row, rs)?;
        self.alu(AluOp::Add, reg::T, reg::T, col);
        self.alui(AluOp::Mul, reg::T, reg::T, esz)?;
        self.alu(AluOp::Add, reg::T, reg::T, base);
        self.li(reg::T2, rs)
    }
    /// MTE2's copy of one operand block into the L1 slot at `slot`: `rows` and `cols` are the
    /// registers (real extent, padded extent, origin) of the product's axes, which a transposed
    /// operand holds the other way round in GM, and so in L1.
    fn gm_to_l1(
        &mut self,
        op: &Operand,
        base: u8,
        slot: u8,
        rows: [u8; 3],
        cols: [u8; 3],
        dt: DType,
    ) -> R<()> {
        let (r, c) = if op.transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        self.gm_at(base, r[2], c[2], op.row_stride, dt.size() as i64)?;
        let regs = [slot, reg::T, r[0], c[0], reg::T2, c[1], r[1], c[1]];
        self.dma(Mem::Gm, Mem::L1, dt, regs, false);
        Ok(())
    }
    /// MTE1's copy of a padded `rows × cols` block (registers) from L1 into L0A/L0B, turned
    /// over when the operand is transposed (L1 then holds it `cols × rows`).
    fn l1_to_l0(&mut self, l0: Mem, dst: u8, slot: u8, (r, c): (u8, u8), t: bool, dt: DType) {
        let regs = if t {
            [dst, slot, c, r, r, c, r, c]
        } else {
            [dst, slot, r, c, c, c, r, c]
        };
        self.dma(Mem::L1, l0, dt, regs, t);
    }
    /// An f32 Vector op on the UB: `dst = src1 op src2` (`VS`: `src2` is a scalar operand).
    fn vec_f32(&mut self, op: VecOp, form: VecForm, dst: u8, src1: u8, src2: u8, len: u8) {
        self.emit(Instr::Vec {
            op,
            form,
            sdt: DType::F32,
            ddt: DType::F32,
            dst,
            src1,
            src2: Some(src2),
            len,
            mask: None,
            cond: None,
        });
    }
    /// `rd = round_up(rs, unit)`.
    fn pad(&mut self, rd: u8, rs: u8, unit: u64) -> R<()> {
        self.alui(AluOp::Add, rd, rs, unit as i64 - 1)?;
        self.alui(AluOp::Div, rd, rd, unit as i64)?;
        self.alui(AluOp::Mul, rd, rd, unit as i64)
    }
    /// `rd = min(limit - rs, block)`.
    fn remaining(&mut self, rd: u8, rs: u8, limit: u64, block: u64) -> R<()> {
        self.li(rd, limit as i64)?;
        self.alu(AluOp::Sub, rd, rd, rs);
        self.alui(AluOp::Min, rd, rd, block as i64)
    }
    pub(crate) fn finish(mut self) -> R<Vec<Instr>> {
        for &(pc, l) in &self.fixups {
            let t = self.labels[l].ok_or_else(|| CgError::Internal("unbound label".into()))?;
            if let Instr::Branch { target, .. } = &mut self.code[pc] {
                *target = t;
            }
        }
        Ok(self.code)
    }
}

/// The program for a recognised product `g` of `kernel` (see the module doc for its shape).
pub fn compile(kernel: &Kernel, g: &CubeGemm, cfg: &TargetConfig) -> R<Blob> {
    use reg::*;
    use Pipe::{Cube, Mte1, Mte2, Mte3, Vec as VecPipe};
    let bl = Blocks::choose(g, cfg, kernel)?;
    let (params, gm_top) = param_slots(kernel);
    if gm_top > cfg.mem(Mem::Gm).size {
        return Err(CgError::Unsupported(format!(
            "its buffers need {gm_top} bytes of GM, target `{}` has {}",
            cfg.name,
            cfg.mem(Mem::Gm).size
        )));
    }
    let (um, un, uk) = g.unit;
    let (asz, ysz) = (g.adt.size() as i64, g.ydt.size() as i64);
    let kb = g.k.div_ceil(bl.bk);
    let reload = kb > bl.na;
    let cast = g.ydt != g.cdt;
    let b_ring = bl.na * bl.l1_a;
    let mut a = Asm {
        code: Vec::new(),
        labels: Vec::new(),
        fixups: Vec::new(),
    };
    a.li(ZERO, 0)?;
    // One "free" token per slot of each ring.
    let rings = [
        (Mte1, Mte2, 0, bl.na),
        (Mte1, Mte2, 1, bl.nb),
        (Cube, Mte1, 0, 2),
        (VecPipe, Cube, 0, 2),
        (Mte3, VecPipe, 0, 2),
        (VecPipe, Mte2, 1, if g.c.is_some() { 2 } else { 0 }),
    ];
    for (src, dst, id, n) in rings {
        for _ in 0..n {
            a.set(src, dst, id);
        }
    }
    // `alpha` and `beta` as f32 Vector operands at UB 0 and 32.
    let beta = g.c.as_ref().and_then(|c| c.beta);
    let slot32 = beta.or(g.relu.then_some(0.0));
    for (v, at) in [(g.alpha, 0), (slot32, 32)] {
        if let Some(v) = v {
            a.li(T, v.to_bits() as i32 as i64)?;
            a.emit(Instr::St {
                mem: Mem::Ub,
                dt: DType::U32,
                rs: T,
                base: ZERO,
                offset: at,
            });
        }
    }
    for r in [L0S, CS, BS, US, ABASE, BI] {
        a.li(r, 0)?;
    }
    let batch_loop = a.label();
    a.bind(batch_loop);
    // GM byte addresses of this batch's A, B and Y.
    for (r, op, esz) in [(ABAT, g.a, asz), (BBAT, g.b, asz), (YBAT, g.y, ysz)] {
        a.li(T, op.batch_stride * esz)?;
        a.alu(AluOp::Mul, r, BI, T);
        let base = params[op.param].addr as i64 + op.off0 * esz;
        a.alui(AluOp::Add, r, r, base)?;
    }
    a.li(M0, 0)?;
    let m_loop = a.label();
    a.bind(m_loop);
    a.remaining(MR, M0, g.m, bl.bm)?;
    a.pad(MP, MR, um)?;
    a.li(N0, 0)?;
    let n_loop = a.label();
    a.bind(n_loop);
    a.remaining(NR, N0, g.n, bl.bn)?;
    a.pad(NP, NR, un)?;
    if let Some(c) = &g.c {
        // ---- MTE2: Gemm's C block (or bias row) into a free UB slot, rows NP apart.
        a.wait(VecPipe, Mte2, 1);
        a.alui(AluOp::Mul, KP, US, bl.ub_c as i64)?;
        a.alui(AluOp::Add, KP, KP, bl.ub_c_at as i64)?;
        let base = params[c.op.param].addr as i64 + c.op.off0 * c.dt.size() as i64;
        a.gm_at(ZERO, M0, N0, c.op.row_stride, c.dt.size() as i64)?;
        a.alui(AluOp::Add, T, T, base)?;
        let rows = if c.is_row() {
            a.li(KR, 1)?;
            a.alui(AluOp::Add, T2, NP, 0)?;
            KR
        } else {
            MR
        };
        a.dma(
            Mem::Gm,
            Mem::Ub,
            c.dt,
            [KP, T, rows, NR, T2, NP, rows, NP],
            false,
        );
        a.set(Mte2, VecPipe, 1);
    }
    a.li(KI, 0)?;
    let k_loop = a.label();
    a.bind(k_loop);
    a.alui(AluOp::Mul, K0, KI, bl.bk as i64)?;
    a.remaining(KR, K0, g.k, bl.bk)?;
    a.pad(KP, KR, uk)?;
    a.alu(AluOp::Add, ASLOT, ABASE, KI);
    a.alui(AluOp::Rem, ASLOT, ASLOT, bl.na as i64)?;
    a.alui(AluOp::Mul, ASLOT, ASLOT, bl.l1_a as i64)?;
    // ---- MTE2: the A block (on the first column block only, unless the panel is reloaded).
    let a_done = a.label();
    if !reload {
        a.branch(Cond::Ne, N0, ZERO, a_done);
    }
    a.wait(Mte1, Mte2, 0);
    // A transposed operand is copied as it lies (K rows of M) and turned over on its way to
    // L0A (`DMA ... transpose`).
    a.gm_to_l1(&g.a, ABAT, ASLOT, [MR, MP, M0], [KR, KP, K0], g.adt)?;
    a.set(Mte2, Mte1, 0);
    a.bind(a_done);
    // ---- MTE2: the B block into the next ring slot.
    a.wait(Mte1, Mte2, 1);
    a.alui(AluOp::Mul, BSLOT, BS, bl.l1_b as i64)?;
    a.alui(AluOp::Add, BSLOT, BSLOT, b_ring as i64)?;
    a.gm_to_l1(&g.b, BBAT, BSLOT, [KR, KP, K0], [NR, NP, N0], g.adt)?;
    a.set(Mte2, Mte1, 1);
    // ---- MTE1: fill the free L0A/L0B slot.
    a.wait(Cube, Mte1, 0);
    let aw_done = a.label();
    if !reload {
        a.branch(Cond::Ne, N0, ZERO, aw_done);
    }
    a.wait(Mte2, Mte1, 0);
    a.bind(aw_done);
    a.alui(AluOp::Mul, L0A, L0S, bl.l0a as i64)?;
    a.alui(AluOp::Mul, L0B, L0S, bl.l0b as i64)?;
    a.l1_to_l0(Mem::L0a, L0A, ASLOT, (MP, KP), g.a.transposed, g.adt);
    // The A slot is free after the last column block reads it (at once when reloading).
    let rel_done = a.label();
    if !reload {
        a.alui(AluOp::Add, T2, N0, bl.bn as i64)?;
        a.li(T, g.n as i64)?;
        a.branch(Cond::Lt, T2, T, rel_done);
    }
    a.set(Mte1, Mte2, 0);
    a.bind(rel_done);
    a.wait(Mte2, Mte1, 1);
    a.l1_to_l0(Mem::L0b, L0B, BSLOT, (KP, NP), g.b.transposed, g.adt);
    a.set(Mte1, Mte2, 1);
    a.set(Mte1, Cube, 0);
    // ---- Cube: accumulate into the block's L0C slot (init on the first k-block).
    let c_ready = a.label();
    a.branch(Cond::Ne, KI, ZERO, c_ready);
    a.wait(VecPipe, Cube, 0);
    a.bind(c_ready);
    a.wait(Mte1, Cube, 0);
    a.alui(AluOp::Div, T, MP, um as i64)?;
    a.alui(AluOp::Div, T2, NP, un as i64)?;
    a.alui(AluOp::Div, KT, KP, uk as i64)?;
    a.alui(AluOp::Min, INIT, KI, 1)?;
    a.alui(AluOp::Xor, INIT, INIT, 1)?;
    a.alui(AluOp::Mul, CADDR, CS, bl.l0c as i64)?;
    a.emit(Instr::Mma {
        adt: g.adt,
        cdt: g.cdt,
        regs: [CADDR, L0A, L0B, T, T2, KT, INIT],
    });
    a.set(Cube, Mte1, 0);
    a.alui(AluOp::Xor, L0S, L0S, 1)?;
    a.alui(AluOp::Add, BS, BS, 1)?;
    a.alui(AluOp::Rem, BS, BS, bl.nb as i64)?;
    a.alui(AluOp::Add, KI, KI, 1)?;
    a.loop_back(KI, kb, k_loop)?;
    // ---- Epilogue: L0C -> UB on the Vector pipe, the cast, UB -> GM on MTE3.
    a.set(Cube, VecPipe, 0);
    a.wait(Cube, VecPipe, 0);
    // In the UB, rows are NP elements apart (NP is a multiple of 8, so an f32 row starts on a
    // 32-byte boundary for the bias adds), and the padding columns hold the MMA's zeros.
    a.alui(AluOp::Mul, UOUT, US, bl.ub_out as i64)?;
    a.alui(AluOp::Add, UOUT, UOUT, bl.ub_out_at as i64)?;
    if cast {
        a.li(UACC, bl.ub_acc_at as i64)?;
    } else {
        a.alui(AluOp::Add, UACC, UOUT, 0)?;
        a.wait(Mte3, VecPipe, 0);
    }
    a.dma(
        Mem::L0c,
        Mem::Ub,
        g.cdt,
        [UACC, CADDR, MR, NP, NP, NP, MR, NP],
        false,
    );
    a.set(VecPipe, Cube, 0);
    a.alu(AluOp::Mul, LEN, MR, NP);
    if g.alpha.is_some() {
        a.vec_f32(VecOp::Mul, VecForm::VS, UACC, UACC, ZERO, LEN);
    }
    if let Some(c) = &g.c {
        // beta · f32(C), added to every row (a bias row) or to the block.
        a.wait(Mte2, VecPipe, 1);
        a.alui(AluOp::Mul, KP, US, bl.ub_c as i64)?;
        a.alui(AluOp::Add, KP, KP, bl.ub_c_at as i64)?;
        let clen = if c.is_row() { NP } else { LEN };
        let mut x = KP;
        if c.dt != DType::F32 {
            a.li(K0, bl.ub_cf_at as i64)?;
            a.emit(Instr::Vec {
                op: VecOp::Cast,
                form: VecForm::Unary,
                sdt: c.dt,
                ddt: DType::F32,
                dst: K0,
                src1: KP,
                src2: None,
                len: clen,
                mask: None,
                cond: None,
            });
            a.set(VecPipe, Mte2, 1);
            x = K0;
        }
        if c.beta.is_some() {
            a.li(ASLOT, 32)?;
            a.vec_f32(VecOp::Mul, VecForm::VS, x, x, ASLOT, clen);
        }
        if c.is_row() {
            a.alui(AluOp::Add, KI, UACC, 0)?;
            a.alui(AluOp::Add, KR, MR, 0)?;
            a.alui(AluOp::Mul, T2, NP, 4)?;
            let rows = a.label();
            a.bind(rows);
            a.vec_f32(VecOp::Add, VecForm::VV, KI, KI, x, NP);
            a.alu(AluOp::Add, KI, KI, T2);
            a.alui(AluOp::Sub, KR, KR, 1)?;
            a.branch(Cond::Ne, KR, ZERO, rows);
        } else {
            a.vec_f32(VecOp::Add, VecForm::VV, UACC, UACC, x, LEN);
        }
        if c.dt == DType::F32 {
            a.set(VecPipe, Mte2, 1);
        }
    }
    if g.relu {
        a.li(ASLOT, 32)?;
        a.vec_f32(VecOp::Max, VecForm::VS, UACC, UACC, ASLOT, LEN);
    }
    if cast {
        a.wait(Mte3, VecPipe, 0);
        a.emit(Instr::Vec {
            op: VecOp::Cast,
            form: VecForm::Unary,
            sdt: g.cdt,
            ddt: g.ydt,
            dst: UOUT,
            src1: UACC,
            src2: None,
            len: LEN,
            mask: None,
            cond: None,
        });
    }
    a.set(VecPipe, Mte3, 0);
    a.wait(VecPipe, Mte3, 0);
    a.gm_at(YBAT, M0, N0, g.y.row_stride, ysz)?;
    a.dma(
        Mem::Ub,
        Mem::Gm,
        g.ydt,
        [T, UOUT, MR, NR, NP, T2, MR, NR],
        false,
    );
    a.set(Mte3, VecPipe, 0);
    a.alui(AluOp::Xor, CS, CS, 1)?;
    a.alui(AluOp::Xor, US, US, 1)?;
    if reload {
        a.alui(AluOp::Add, ABASE, ABASE, kb as i64)?;
    }
    a.alui(AluOp::Add, N0, N0, bl.bn as i64)?;
    a.loop_back(N0, g.n, n_loop)?;
    if !reload {
        a.alui(AluOp::Add, ABASE, ABASE, kb as i64)?;
    }
    a.alui(AluOp::Add, M0, M0, bl.bm as i64)?;
    a.loop_back(M0, g.m, m_loop)?;
    a.alui(AluOp::Add, BI, BI, 1)?;
    a.loop_back(BI, g.batch, batch_loop)?;
    // The device reads a fired kernel-IR trap from these registers at `HALT`; this program
    // has no traps, so they end at 0.
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
