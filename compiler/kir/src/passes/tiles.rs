//! The `scalarize-tiles` pass: [`scalarize_tiles`] rewrites every tile value and tile
//! instruction into loops over scalars and short vectors, so a backend without tiles needs
//! only today's backend subset. Start at [`scalarize_tiles`]; [`Sc::inst`] has one arm per tile
//! construct.
//!
//! How tiles become memory: every tile value gets a local buffer of its `rows × cols` elements,
//! row-major. Tiles of narrow floats (f16, bf16, the float8s, f4) are *widened* there to f32,
//! which holds each of their values exactly: they are converted once, when loaded, and the
//! matrix product then runs on f32 without per-element conversions. Elementwise instructions
//! on such tiles still compute in their own type (each element is narrowed, computed and
//! widened again), so the meaning is unchanged.
//!
//! Buffers are shared where no copy is needed: a `for` result and its carried parameter, a
//! carried parameter and an initial value used nowhere else, and a `tile.mma` result and an
//! accumulator used nowhere else (so the usual `acc = mma(a, b, acc)` chain through a loop
//! accumulates in place).
//!
//! Masked loads and stores test, at run time, whether the whole tile lies in range; if so
//! they run unmasked rows (vectors where the innermost stride is 1). An edge tile, which
//! leaves its view only at the far ends of its last two axes, walks the in-range part of each
//! row in vectors and fills the rest ([`row_runs`]); any other tile goes element by element
//! with the mask.
//!
//! Runs of elementwise tile instructions of one shape are fused into one loop that keeps
//! their values in registers ([`Sc::fused`]), and a backend may let row reductions fold in
//! vector partials ([`ScalarizeOptions::lane_reductions`]).
//!
//! `tile.mma` becomes, where every operand is f32 in memory and the backend asked for it
//! ([`ScalarizeOptions::blocked_f32_mma`]), a register-blocked loop: `block_rows` rows by
//! `block_vectors` vectors of accumulators carried through k, each step a broadcast of one A
//! element times one B vector. Its products of f32 inputs round once more than `mma`'s exact
//! definition (a separate multiply and add), which stays within the f32 tolerance; products of
//! widened narrow floats are exact in f32, so for them it is bit-exact. Otherwise `tile.mma`
//! becomes the buffer `mma`, which `expand-mma` expands exactly.

use crate::builder::KernelBuilder;
use crate::error::KirError;
use crate::kernel::*;
use std::collections::HashMap;
use tessera_ir::DType;

/// What a backend asks of `scalarize-tiles`: its vector width and register blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalarizeOptions {
    /// Bytes of the widest vector the backend maps to registers (0 or 4: scalars only).
    pub vector_bytes: u32,
    /// Use the register-blocked f32 expansion of `tile.mma` (see the module doc).
    pub blocked_f32_mma: bool,
    /// Use the same register-blocked expansion for i32 products (operands and accumulator in
    /// i32, as integer matrix products are after their operand casts).
    pub blocked_i32_mma: bool,
    /// Accumulator rows and vectors per row of that expansion.
    pub block_rows: u32,
    pub block_vectors: u32,
    /// Rows and columns of the dot-product form (a B operand held transposed: `mr` A and
    /// `nc` B vectors, `mr × nc` accumulators); `(0, 0)`: the register block's.
    pub dot_block: (u32, u32),
    /// Bytes of the backend's L1 data cache (0: unknown). A register-blocked product whose B
    /// tile (in panels) fits half of it runs its row blocks outside; see `blocked_mma`.
    pub l1_bytes: u64,
    /// k steps per trip of that expansion's loop (1 or 2; 0 means 1). Two suit a backend whose
    /// FMA overwrites a multiplicand: every other step the results land back in the
    /// accumulators' registers.
    pub k_unroll: u32,
    /// Accumulate that expansion with `fma` (one rounding per step) instead of `mul` then
    /// `add`: for backends whose CPU has a fused multiply-add.
    pub fma: bool,
    /// Let that expansion read an f32 operand tile in place, in the buffer it is loaded from,
    /// when it provably lies in its view (see `direct` in the pass): for CPUs, whose loads
    /// reach any buffer at the same cost.
    pub in_place_operands: bool,
    /// The group size of the backend's integer dot product (`dot`): 0 for none, 2 for i16
    /// pairs (`pmaddwd`), 4 for u8 × i8 quads (`vpdpbusd`; such a backend has pairs too).
    /// With it, `tile.dot` becomes a register-blocked loop of `dot` (`int_dot.rs`), and tiles
    /// of 8- and 16-bit integers load in whole vectors.
    pub int_dot: u32,
    /// Fold each row of a 32-bit `tile.reduce … rows` in vector partial results (up to four
    /// vectors of lanes, combined pairwise, then across the lanes) instead of one element at a
    /// time. Min and max are unchanged by the order; an f32 sum or product is reassociated,
    /// which stays within the f32 tolerance of a target that asks for it (docs/kernel-ir.md).
    pub lane_reductions: bool,
}

impl Default for ScalarizeOptions {
    /// Scalars only and the exact `mma` expansion: what any backend can run.
    fn default() -> Self {
        ScalarizeOptions {
            vector_bytes: 0,
            blocked_f32_mma: false,
            blocked_i32_mma: false,
            block_rows: 1,
            block_vectors: 1,
            dot_block: (0, 0),
            l1_bytes: 0,
            k_unroll: 1,
            fma: false,
            in_place_operands: false,
            int_dot: 0,
            lane_reductions: false,
        }
    }
}

/// Whether `k` holds any tile value or tile instruction.
pub fn has_tiles(k: &Kernel) -> bool {
    fn walk(b: &Block) -> bool {
        b.insts.iter().any(|i| match &i.kind {
            InstKind::For { body, .. } => walk(body),
            InstKind::If {
                then_blk, else_blk, ..
            } => walk(then_blk) || walk(else_blk),
            k => is_tile_inst(k),
        })
    }
    k.vals.iter().any(|t| t.is_tile()) || walk(&k.body)
}

fn is_tile_inst(k: &InstKind) -> bool {
    use InstKind::*;
    matches!(
        k,
        TileLoad { .. }
            | TileStore { .. }
            | TileCopy { .. }
            | TileMma { .. }
            | TileDot { .. }
            | TileReduce(..)
            | TileBroadcast(_)
            | TileTranspose(_)
            | TileIndex(_)
            | Barrier
    )
}

/// The dtype a tile of `elem` is kept in: f32 for the narrow floats, else `elem`.
pub fn tile_storage(elem: DType) -> DType {
    if elem.is_low_precision_float() {
        DType::F32
    } else {
        elem
    }
}

/// Rewrites every tile of `k` into loops over local buffers (see the module doc). A kernel
/// without tiles is left as it is.
pub fn scalarize_tiles(k: &mut Kernel, opts: &ScalarizeOptions) -> Result<(), KirError> {
    if !has_tiles(k) {
        return Ok(());
    }
    let taken = std::mem::replace(
        k,
        Kernel {
            name: String::new(),
            bufs: Vec::new(),
            num_params: 0,
            grid: Vec::new(),
            body: Block::default(),
            vals: Vec::new(),
        },
    );
    let mut uses = vec![0u32; taken.vals.len()];
    count_uses(&taken.body, &mut uses);
    let mut scope = vec![0u32; taken.vals.len()];
    def_scopes(&taken.body, 0, &mut 0, &mut scope);
    let tile_vals: Vec<Val> = (0..taken.vals.len() as u32)
        .map(Val)
        .filter(|v| taken.vals[v.0 as usize].is_tile())
        .collect();
    let mut mma_b_uses = vec![0u32; taken.vals.len()];
    count_mma_b_uses(&taken.body, &mut mma_b_uses);
    let mut f32_mma = [Default::default(), Default::default()];
    f32_mma_operands(&taken.body, &taken.vals, &mut f32_mma);
    let [f32_mma_a, f32_mma_b] = f32_mma;
    let mut ranges = HashMap::new();
    value_ranges(&taken.body, &taken.grid, &mut ranges);
    let (b, body) = KernelBuilder::resume(taken);
    let mut sc = Sc {
        transposed: Default::default(),
        mma_b_uses,
        f32_mma_a,
        f32_mma_b,
        paneled: HashMap::new(),
        ranges,
        direct: HashMap::new(),
        b,
        opts: *opts,
        uses,
        scope,
        scopes: vec![0],
        next_scope: 0,
        tbuf: HashMap::new(),
        next_buf: 0,
    };
    sc.block(body)?;
    // Tile values no longer appear in any instruction; give them scalar types so the value
    // table describes only what backends see.
    for v in tile_vals {
        let t = sc.b.ty(v);
        sc.b.set_ty(v, Ty::scalar(t.elem));
    }
    *k = sc.b.finish();
    crate::verify::verify(k)
}

/// Numbers the loop bodies in program order (the kernel body is 0) and records, for each
/// value, the loop body that defines it. `if` branches belong to their enclosing body: they
/// run at most once per run of it.
fn def_scopes(b: &Block, cur: u32, next: &mut u32, scope: &mut [u32]) {
    for inst in &b.insts {
        for &r in &inst.results {
            if let Some(s) = scope.get_mut(r.0 as usize) {
                *s = cur;
            }
        }
        match &inst.kind {
            InstKind::For { iv, iter, body, .. } => {
                *next += 1;
                let id = *next;
                for v in std::iter::once(iv).chain(iter.iter()) {
                    if let Some(s) = scope.get_mut(v.0 as usize) {
                        *s = id;
                    }
                }
                def_scopes(body, id, next, scope);
            }
            InstKind::If {
                then_blk, else_blk, ..
            } => {
                def_scopes(then_blk, cur, next, scope);
                def_scopes(else_blk, cur, next, scope);
            }
            _ => {}
        }
    }
}

fn count_mma_b_uses(b: &Block, n: &mut [u32]) {
    for inst in &b.insts {
        match &inst.kind {
            InstKind::TileMma { b: bt, .. } => {
                if let Some(u) = n.get_mut(bt.0 as usize) {
                    *u += 1;
                }
            }
            InstKind::For { body, .. } => count_mma_b_uses(body, n),
            InstKind::If {
                then_blk, else_blk, ..
            } => {
                count_mma_b_uses(then_blk, n);
                count_mma_b_uses(else_blk, n);
            }
            _ => {}
        }
    }
}

/// Collects the operands of the `tile.mma`s of `b` that the register-blocked expansion runs:
/// a and b held in f32, the accumulator f32 (`out[0]`: the a operands, `out[1]`: the b ones).
fn f32_mma_operands(b: &Block, vals: &[Ty], out: &mut [std::collections::HashSet<Val>; 2]) {
    for inst in &b.insts {
        match &inst.kind {
            InstKind::TileMma { a, b: bt, acc } => {
                let elem = |v: &Val| vals.get(v.0 as usize).map(|t| t.elem);
                let held = |v: &Val| elem(v).is_some_and(|e| tile_storage(e) == DType::F32);
                if held(a) && held(bt) && elem(acc) == Some(DType::F32) {
                    out[0].insert(*a);
                    out[1].insert(*bt);
                }
            }
            InstKind::For { body, .. } => f32_mma_operands(body, vals, out),
            InstKind::If {
                then_blk, else_blk, ..
            } => {
                f32_mma_operands(then_blk, vals, out);
                f32_mma_operands(else_blk, vals, out);
            }
            _ => {}
        }
    }
}

/// Records the ranges `[lo, hi]` of the index values of `b` that are known at compile time:
/// constants, program ids (from the grid), `for` induction variables with constant bounds, and
/// sums and products of those.
fn value_ranges(b: &Block, grid: &[u64], out: &mut HashMap<Val, (i64, i64)>) {
    for inst in &b.insts {
        let r = inst.results.first().copied();
        let got = |v: &Val| out.get(v).copied();
        let range = match &inst.kind {
            InstKind::Const(Scalar::Int(c)) => Some((*c, *c)),
            InstKind::ProgramId(d) => grid
                .get(*d as usize)
                .filter(|&&g| g > 0 && g < i64::MAX as u64)
                .map(|&g| (0, g as i64 - 1)),
            InstKind::Binary(op @ (BinOp::Add | BinOp::Mul), x, y) => {
                got(x).zip(got(y)).and_then(|((a, b), (c, d))| {
                    if *op == BinOp::Add {
                        Some((a.checked_add(c)?, b.checked_add(d)?))
                    } else {
                        let ps = [
                            a.checked_mul(c)?,
                            a.checked_mul(d)?,
                            b.checked_mul(c)?,
                            b.checked_mul(d)?,
                        ];
                        Some((*ps.iter().min()?, *ps.iter().max()?))
                    }
                })
            }
            InstKind::For {
                lo,
                hi,
                step,
                iv,
                body,
                ..
            } => {
                if let (Some((l, l2)), Some((h, h2)), Some((st, st2))) =
                    (got(lo), got(hi), got(step))
                {
                    if l == l2 && h == h2 && st == st2 && st > 0 && h > l {
                        out.insert(*iv, (l, l + (h - 1 - l) / st * st));
                    }
                }
                value_ranges(body, grid, out);
                None
            }
            InstKind::If {
                then_blk, else_blk, ..
            } => {
                value_ranges(then_blk, grid, out);
                value_ranges(else_blk, grid, out);
                None
            }
            _ => None,
        };
        if let (Some(r), Some(rg)) = (r, range) {
            out.insert(r, rg);
        }
    }
}

fn count_uses(b: &Block, uses: &mut [u32]) {
    for inst in &b.insts {
        for v in operands(&inst.kind) {
            if let Some(u) = uses.get_mut(v.0 as usize) {
                *u += 1;
            }
        }
        match &inst.kind {
            InstKind::For { body, .. } => count_uses(body, uses),
            InstKind::If {
                then_blk, else_blk, ..
            } => {
                count_uses(then_blk, uses);
                count_uses(else_blk, uses);
            }
            _ => {}
        }
    }
}

/// The pass's state: the builder (which keeps every old value id), and the buffer of each
/// tile value.
struct Sc {
    b: KernelBuilder,
    opts: ScalarizeOptions,
    uses: Vec<u32>,
    /// The loop body defining each value, and the stack of bodies being rewritten (numbered
    /// as `def_scopes` numbers them).
    scope: Vec<u32>,
    scopes: Vec<u32>,
    next_scope: u32,
    tbuf: HashMap<Val, Buf>,
    /// Tiles kept transposed (column-major) in their buffer: B operands of `tile.mma` loaded
    /// from a transposed view, so that both the load and the product read memory in order.
    transposed: std::collections::HashSet<Val>,
    /// How often each value is read as the `b` operand of a `tile.mma`.
    mma_b_uses: Vec<u32>,
    /// A and B operands of a `tile.mma` that the register-blocked expansion would run (see
    /// [`f32_mma_operands`]).
    f32_mma_a: std::collections::HashSet<Val>,
    f32_mma_b: std::collections::HashSet<Val>,
    /// The values known to lie in a range at compile time (see [`value_ranges`]).
    ranges: HashMap<Val, (i64, i64)>,
    /// Tiles read in place (see [`Direct`]): f32 operands of the register-blocked `tile.mma`
    /// whose tile lies wholly inside its view, rows contiguous, for every program instance
    /// and loop step; their buffer is the one loaded from.
    direct: HashMap<Val, (Buf, Val, i64)>,
    /// Tiles kept in column panels of the given width (see [`Panel`]): B operands of the
    /// register-blocked `tile.mma`, so that its micro-kernel streams B contiguously.
    paneled: HashMap<Val, u32>,
    next_buf: u32,
}

impl Sc {
    fn ty(&self, v: Val) -> Ty {
        self.b.ty(v)
    }

    fn is_tile(&self, v: Val) -> bool {
        self.ty(v).is_tile()
    }

    fn uses(&self, v: Val) -> u32 {
        self.uses.get(v.0 as usize).copied().unwrap_or(0)
    }

    /// Whether `v` is read only once, by an instruction of the loop body that defines it: its
    /// buffer may then be taken over by that instruction's result.
    fn last_use_here(&self, v: Val) -> bool {
        self.uses(v) == 1 && self.scope.get(v.0 as usize).copied() == self.scopes.last().copied()
    }

    /// A fresh buffer for a tile of type `t`.
    fn new_buf(&mut self, t: Ty) -> Buf {
        let n = self.next_buf;
        self.next_buf += 1;
        let name = format!("tile.{n}");
        self.b
            .local(name, Space::Local, tile_storage(t.elem), t.count() as u64)
    }

    /// The buffer of tile `v`, made on first use (a definition).
    fn buf(&mut self, v: Val) -> Buf {
        if let Some(&b) = self.tbuf.get(&v) {
            return b;
        }
        let t = self.ty(v);
        let b = self.new_buf(t);
        self.tbuf.insert(v, b);
        b
    }

    fn count(&self, v: Val) -> u32 {
        self.ty(v).count()
    }

    /// Vector lanes for elementwise work on `storage` elements (1: scalars).
    fn lanes_for(&self, storage: DType) -> u16 {
        match storage {
            DType::F32 | DType::I32 | DType::U32 if self.opts.vector_bytes >= 8 => {
                (self.opts.vector_bytes / 4) as u16
            }
            _ => 1,
        }
    }

    /// Lanes per vector of a `tile.load` of `elem`: f32-held tiles load whole vectors, and
    /// 2-byte floats (f16, bf16) as many lanes as fill one vector of their 16-bit storage, so
    /// that their decode runs on full registers (twice the f32 lanes, widened in registers).
    fn load_lanes(&self, elem: DType) -> u16 {
        match elem {
            DType::F16 | DType::BF16 if self.opts.vector_bytes >= 8 => {
                (self.opts.vector_bytes / 2) as u16
            }
            _ if tile_storage(elem) == DType::F32 => self.lanes_for(DType::F32),
            DType::I8 | DType::U8 | DType::I16 | DType::U16
                if self.opts.int_dot > 0 && self.opts.vector_bytes >= 8 =>
            {
                (self.opts.vector_bytes / (elem.bits() / 8)) as u16
            }
            _ => 1,
        }
    }

    /// Where tile load `r` of `rows × cols` at `t` can be read in place (see `direct`): its
    /// buffer, the index of its (0, 0) and its row stride, computed here.
    fn direct_at(&mut self, r: Val, t: &TileAt, rows: u32, cols: u32) -> Option<(Buf, Val, i64)> {
        let b_uses = self.mma_b_uses.get(r.0 as usize).copied();
        let rank = t.view.dims.len();
        // A is read one element per row and k step, so its rows may lie anywhere; B a vector
        // per row and k step, so only a tile that is one contiguous block (rows `cols` apart,
        // as packed weights are) is read in place: a far-strided B streams better copied.
        let contiguous = rank >= 2 && t.view.strides[rank - 2] == cols as i64;
        let operand = (self.f32_mma_a.contains(&r) && b_uses == Some(0))
            || (self.f32_mma_b.contains(&r) && b_uses == Some(1) && contiguous);
        if !self.opts.blocked_f32_mma
            || !self.opts.in_place_operands
            || !operand
            || self.uses(r) != 1
            || self.ty(r).elem != DType::F32
            || self.transposed.contains(&r)
            || rank < 2
            || t.view.strides[rank - 1] != 1
        {
            return None;
        }
        for d in 0..rank {
            let ext = if d + 1 == rank {
                cols
            } else if d + 2 == rank {
                rows
            } else {
                1
            } as i64;
            let (lo, hi) = self.ranges.get(&t.origin[d]).copied()?;
            if lo < 0 || hi.checked_add(ext)? > t.view.dims[d] as i64 {
                return None;
            }
        }
        let base = origin_index(&mut self.b, t);
        Some((t.view.buf, base, t.view.strides[rank - 2]))
    }

    /// Element(s) `i..i+lanes` of tile `v`, in `v`'s element type.
    fn get(&mut self, v: Val, i: Val, lanes: u16) -> Val {
        let buf = self.buf(v);
        let x = self.b.load(buf, i, lanes);
        self.b.cast(x, self.ty(v).elem, NO_SAT)
    }

    /// Rewrites a block. Runs of two or more consecutive elementwise tile instructions of one
    /// shape (see [`Sc::fusible`]) become one loop ([`Sc::fused`]); the rest go one by one.
    fn block(&mut self, blk: Block) -> Result<(), KirError> {
        let mut run: Vec<Inst> = Vec::new();
        let mut shape = None;
        for inst in blk.insts {
            let f = self.fusible(&inst);
            if f.is_some() && f == shape {
                run.push(inst);
                continue;
            }
            // A scalar computation (a constant for a `splat`, say) reads no value of the run
            // and writes no memory: it goes before the run's loop, which stays whole.
            if !run.is_empty() && self.pure_scalar(&inst) {
                self.inst(inst)?;
                continue;
            }
            self.flush(&mut run, shape)?;
            shape = f;
            if f.is_some() {
                run.push(inst);
            } else {
                self.inst(inst)?;
            }
        }
        self.flush(&mut run, shape)
    }

    fn flush(
        &mut self,
        run: &mut Vec<Inst>,
        shape: Option<(u32, u32, u16)>,
    ) -> Result<(), KirError> {
        match (run.len(), shape) {
            (0, _) => Ok(()),
            (1, _) | (_, None) => {
                for inst in run.drain(..) {
                    self.inst(inst)?;
                }
                Ok(())
            }
            (_, Some(shape)) => {
                let insts = std::mem::take(run);
                self.fused(insts, shape);
                Ok(())
            }
        }
    }

    /// Whether `inst` computes scalars only, from scalars only, without touching memory.
    fn pure_scalar(&self, inst: &Inst) -> bool {
        use InstKind::*;
        let kind_ok = matches!(
            inst.kind,
            Const(_) | Unary(..) | Binary(..) | Cmp(..) | Cast(..) | Select(..) | Fma(..)
        );
        kind_ok
            && inst.results.iter().all(|&r| !self.is_tile(r))
            && !uses_tile(&inst.kind, |v| self.is_tile(v))
    }

    /// Whether `inst` may join a fused elementwise run, and the run's `(rows, cols, lanes)`:
    /// a unary, binary, `fma`, `math`, `cast`, `const`, `splat`, a `select` on a scalar
    /// condition, or a `tile.broadcast` (when the tile's rows are whole vectors), whose result
    /// and tile operands are 32-bit tiles held in their own type and computed in vectors of
    /// the same lanes. Operands kept in a special layout (transposed, in panels, read in
    /// place) are left to the one-by-one rewrite.
    fn fusible(&self, inst: &Inst) -> Option<(u32, u32, u16)> {
        use InstKind::*;
        let [r] = inst.results[..] else {
            return None;
        };
        if !self.is_tile(r) {
            return None;
        }
        let broadcast = matches!(inst.kind, TileBroadcast(_));
        let kind_ok = match &inst.kind {
            Unary(..) | Binary(..) | Fma(..) | Math(..) | Const(_) | Splat(_) | Cast(..) => true,
            Select(c, ..) => !self.is_tile(*c),
            TileBroadcast(_) => true,
            _ => false,
        };
        let rt = self.ty(r);
        let lanes = self.lanes_for(rt.elem);
        if !kind_ok || tile_storage(rt.elem) != rt.elem || lanes <= 1 {
            return None;
        }
        for v in operands(&inst.kind) {
            if !self.is_tile(v) {
                continue;
            }
            let t = self.ty(v);
            let special = self.transposed.contains(&v)
                || self.paneled.contains_key(&v)
                || self.direct.contains_key(&v);
            if tile_storage(t.elem) != t.elem || self.lanes_for(t.elem) != lanes || special {
                return None;
            }
        }
        let (rows, cols) = rt.tile_shape()?;
        if broadcast && cols % lanes as u32 != 0 {
            return None;
        }
        Some((rows, cols, lanes))
    }

    /// One loop for a run of fusible instructions (the same `rows × cols` tiles, `lanes` per
    /// vector): each trip computes a vector of every instruction in order, keeping the run's
    /// values in registers, and stores only the results read after the run. Each element is
    /// computed as the one-by-one rewrite computes it, so the result is the same bit for bit;
    /// only the passes over the tiles' buffers go.
    fn fused(&mut self, run: Vec<Inst>, (rows, cols, lanes): (u32, u32, u16)) {
        use InstKind::*;
        let mut inner: HashMap<Val, u32> = HashMap::new();
        for inst in &run {
            for v in operands(&inst.kind) {
                *inner.entry(v).or_default() += 1;
            }
        }
        let index: HashMap<Val, usize> = run
            .iter()
            .enumerate()
            .map(|(i, inst)| (inst.results[0], i))
            .collect();
        // Where each tile operand comes from: a value of the run or a buffer.
        #[derive(Clone, Copy)]
        enum Src {
            Run(usize),
            Buf(Buf),
            Scalar(Val),
        }
        let src = |sc: &mut Sc, v: Val| -> Src {
            if let Some(&i) = index.get(&v) {
                Src::Run(i)
            } else if sc.is_tile(v) {
                Src::Buf(sc.buf(v))
            } else {
                Src::Scalar(v)
            }
        };
        enum Step {
            Op(Vec<Src>, InstKind),
            /// A broadcast of a `xr × xc` tile in `buf`.
            Broadcast(Buf, u32, u32),
        }
        let mut steps = Vec::new();
        let mut stores = Vec::new();
        for inst in &run {
            let r = inst.results[0];
            let step = match &inst.kind {
                TileBroadcast(x) => {
                    let (xr, xc) = self.ty(*x).tile_shape().expect("a tile");
                    Step::Broadcast(self.buf(*x), xr, xc)
                }
                k => Step::Op(
                    operands(k).into_iter().map(|v| src(self, v)).collect(),
                    k.clone(),
                ),
            };
            steps.push((step, self.ty(r).elem));
            let stored = self.uses(r) > inner.get(&r).copied().unwrap_or(0);
            stores.push(stored.then(|| self.buf(r)));
        }
        // A scalar as `l` lanes (the scalar itself in the single-element tail).
        let widen = |b: &mut KernelBuilder, x: Val, l: u16| if l > 1 { b.splat(x, l) } else { x };
        let body = |b: &mut KernelBuilder, row: Val, col: Val, e: Val, l: u16| {
            let mut vals: Vec<Val> = Vec::with_capacity(steps.len());
            for (i, (step, elem)) in steps.iter().enumerate() {
                let vty = Ty::vector(*elem, l);
                let v = match step {
                    Step::Broadcast(buf, xr, xc) => {
                        let (xr, xc) = (*xr, *xc);
                        if xc == 1 {
                            let at = if xr == 1 { b.index(0) } else { row };
                            let x = b.load(*buf, at, 1);
                            widen(b, x, l)
                        } else {
                            // A row (1 × cols), or the whole tile.
                            let at = if xr == 1 { col } else { e };
                            b.load(*buf, at, l)
                        }
                    }
                    Step::Op(args, kind) => {
                        let a: Vec<Val> = args
                            .iter()
                            .map(|s| match *s {
                                Src::Run(j) => vals[j],
                                Src::Buf(buf) => b.load(buf, e, l),
                                Src::Scalar(v) => v,
                            })
                            .collect();
                        match kind {
                            Const(c) => {
                                let s = b.constant(Ty::scalar(*elem), *c);
                                widen(b, s, l)
                            }
                            Splat(_) => widen(b, a[0], l),
                            Unary(op, _) => b.unary(*op, a[0]),
                            Binary(op, ..) => b.binary(*op, a[0], a[1]),
                            Fma(..) => b.fma(a[0], a[1], a[2]),
                            Math(f, _) => b.math(*f, &a),
                            Cast(_, mode) => b.cast(a[0], *elem, *mode),
                            Select(..) => b.select(a[0], a[1], a[2]),
                            other => unreachable!("not fusible: {other:?}"),
                        }
                    }
                };
                debug_assert_eq!(b.ty(v), vty);
                if let Some(rb) = stores[i] {
                    b.store(rb, e, v);
                }
                vals.push(v);
            }
        };
        let l = lanes as u32;
        let two_d = steps.iter().any(|(s, _)| matches!(s, Step::Broadcast(..)));
        if two_d {
            // Rows of whole vectors (`fusible` checked): a broadcast reads its row or column.
            let (lo, hi, one) = (self.b.index(0), self.b.index(rows as i64), self.b.index(1));
            let cols_v = self.b.index(cols as i64);
            self.b.for_loop(lo, hi, one, &[], |b, i, _| {
                let (lo, step) = (b.index(0), b.index(l as i64));
                b.for_loop(lo, cols_v, step, &[], |b, j, _| {
                    let t = b.mul(i, cols_v);
                    let e = b.add(t, j);
                    body(b, i, j, e, lanes);
                    Vec::new()
                });
                Vec::new()
            });
        } else {
            let zero = self.b.index(0);
            self.for_each(rows * cols, lanes, |b, e, l| body(b, zero, zero, e, l));
        }
    }

    /// Copies tile `from` into the buffer of `to`, unless they share it.
    fn copy_tile(&mut self, from: Val, to_buf: Buf) {
        let fb = self.buf(from);
        if fb == to_buf {
            return;
        }
        let n = self.count(from);
        let st = tile_storage(self.ty(from).elem);
        let lanes = self.lanes_for(st);
        self.for_each(n, lanes, |b, i, l| {
            let x = b.load(fb, i, l);
            b.store(to_buf, i, x);
        });
    }

    /// Runs `f(builder, index, lanes)` over `0..n`: vectors of `lanes` while they fit, then
    /// single elements.
    fn for_each(&mut self, n: u32, lanes: u16, mut f: impl FnMut(&mut KernelBuilder, Val, u16)) {
        let l = lanes.max(1) as u32;
        let full = n / l * l;
        if full > 0 {
            let (lo, hi, step) = (
                self.b.index(0),
                self.b.index(full as i64),
                self.b.index(l as i64),
            );
            self.b.for_loop(lo, hi, step, &[], |b, i, _| {
                f(b, i, l as u16);
                Vec::new()
            });
        }
        if full < n {
            let (lo, hi, step) = (
                self.b.index(full as i64),
                self.b.index(n as i64),
                self.b.index(1),
            );
            self.b.for_loop(lo, hi, step, &[], |b, i, _| {
                f(b, i, 1);
                Vec::new()
            });
        }
    }

    fn inst(&mut self, mut inst: Inst) -> Result<(), KirError> {
        use InstKind::*;
        let tile_result = inst.results.iter().any(|&r| self.is_tile(r));
        match inst.kind {
            For {
                lo,
                hi,
                step,
                iv,
                iter,
                init,
                body,
            } => return self.for_loop(inst.results, lo, hi, step, iv, iter, init, body),
            If {
                cond,
                then_blk,
                else_blk,
            } => return self.if_else(inst.results, cond, then_blk, else_blk),
            Yield(_) => {
                // Yields are rewritten by their owner (`for_loop` / `if_else`).
                self.b.push_inst(inst);
                return Ok(());
            }
            _ => {}
        }
        if !tile_result && !is_tile_inst(&inst.kind) && !uses_tile(&inst.kind, |v| self.is_tile(v))
        {
            self.b.push_inst(inst);
            return Ok(());
        }
        let r = inst.results.first().copied();
        match std::mem::replace(&mut inst.kind, Barrier) {
            // ==== elementwise on tiles ====
            Const(c) => {
                let r = r.expect("const defines a value");
                let s = self.b.constant(self.ty(r).element(), c);
                self.fill(r, s);
            }
            Splat(x) => self.fill(r.expect("splat defines a value"), x),
            Unary(op, x) => self.map(r.expect("unary defines a value"), &[x], move |b, a| {
                b.unary(op, a[0])
            }),
            Binary(op, x, y) => {
                self.map(r.expect("binary defines a value"), &[x, y], move |b, a| {
                    b.binary(op, a[0], a[1])
                })
            }
            Cmp(op, x, y) => self.map(r.expect("cmp defines a value"), &[x, y], move |b, a| {
                b.cmp(op, a[0], a[1])
            }),
            Fma(x, y, z) => self.map(r.expect("fma defines a value"), &[x, y, z], |b, a| {
                b.fma(a[0], a[1], a[2])
            }),
            Select(c, x, y) => {
                let r = r.expect("select defines a value");
                if self.is_tile(c) {
                    self.map(r, &[c, x, y], |b, a| b.select(a[0], a[1], a[2]));
                } else {
                    self.map(r, &[x, y], move |b, a| b.select(c, a[0], a[1]));
                }
            }
            Cast(x, mode) => {
                let r = r.expect("cast defines a value");
                let to = self.ty(r).elem;
                self.map(r, &[x], move |b, a| b.cast(a[0], to, mode));
            }
            Bitcast(x) => {
                let r = r.expect("bitcast defines a value");
                let to = self.ty(r).element();
                self.map(r, &[x], move |b, a| {
                    b.bitcast(
                        a[0],
                        Ty {
                            lanes: b.ty(a[0]).lanes,
                            ..to
                        },
                    )
                });
            }
            Math(f, args) => self.map(r.expect("math defines a value"), &args, move |b, a| {
                b.math(f, a)
            }),
            Extract(x, lane) => {
                let r = r.expect("extract defines a value");
                let i = self.b.index(lane as i64);
                let v = self.get(x, i, 1);
                self.alias(r, v);
            }
            // ==== `tile.load` ====
            TileLoad { src, fill } => {
                let r = r.expect("tile.load defines a value");
                let (rows, cols) = self.ty(r).tile_shape().expect("a tile");
                // A B operand read down its columns: keep it transposed, read along rows.
                let rank = src.view.dims.len();
                let (mut src, mut rows, mut cols) = (src, rows, cols);
                if self.opts.blocked_f32_mma
                    && rank >= 2
                    && src.view.strides[rank - 1] != 1
                    && src.view.strides[rank - 2] == 1
                    && self.mma_b_uses.get(r.0 as usize) == Some(&1)
                    && self.uses(r) == 1
                    && tile_storage(self.ty(r).elem) == DType::F32
                {
                    src.view.dims.swap(rank - 1, rank - 2);
                    src.view.strides.swap(rank - 1, rank - 2);
                    src.origin.swap(rank - 1, rank - 2);
                    std::mem::swap(&mut rows, &mut cols);
                    self.transposed.insert(r);
                }
                let elem = self.ty(r).elem;
                // An f32 operand of a register-blocked product, read once, whose tile lies in
                // its view for every instance and step, rows contiguous: read in place.
                if let Some(d) = self.direct_at(r, &src, rows, cols) {
                    self.direct.insert(r, d);
                    return Ok(());
                }
                // The B operand of a register-blocked f32 product, read once: kept in column
                // panels one register block wide.
                let width = self.opts.block_vectors.max(1) * self.lanes_for(DType::F32) as u32;
                let panel = (self.opts.blocked_f32_mma
                    && !self.transposed.contains(&r)
                    && self.mma_b_uses.get(r.0 as usize) == Some(&1)
                    && self.uses(r) == 1
                    && self.f32_mma_b.contains(&r)
                    && width > 1
                    && cols > width)
                    .then_some(Panel { width, rows, cols });
                if let Some(p) = panel {
                    self.paneled.insert(r, p.width);
                }
                let rb = self.buf(r);
                let fillv = self.b.constant(Ty::scalar(elem), fill);
                let lanes = self.load_lanes(elem);
                self.masked(&src, rows, cols, lanes, panel, |b, at, t, lanes| match at {
                    Some(e) => {
                        let x = b.load(src.view.buf, e, lanes);
                        let x = b.cast(x, tile_storage(elem), NO_SAT);
                        b.store(rb, t, x);
                    }
                    None => {
                        let x = b.cast(fillv, tile_storage(elem), NO_SAT);
                        b.store(rb, t, x);
                    }
                });
            }
            // ==== `tile.store` ====
            TileStore { dst, value } => {
                let (rows, cols) = self.ty(value).tile_shape().expect("a tile");
                let elem = self.ty(value).elem;
                let vb = self.buf(value);
                let lanes = if tile_storage(elem) == DType::F32 {
                    self.lanes_for(DType::F32)
                } else {
                    1
                };
                self.masked(&dst, rows, cols, lanes, None, |b, at, t, lanes| {
                    if let Some(e) = at {
                        let x = b.load(vb, t, lanes);
                        let x = b.cast(x, elem, NO_SAT);
                        b.store(dst.view.buf, e, x);
                    }
                });
            }
            // ==== `tile.copy` ====
            TileCopy {
                src,
                dst,
                rows,
                cols,
                fill,
            } => {
                let d = self.b.buf_decl(src.view.buf).dtype;
                let fillv = self.b.constant(Ty::scalar(d), fill);
                let cols_v = self.b.index(cols as i64);
                // Row by row, each element masked on both sides.
                let (lo, hi, one) = (self.b.index(0), self.b.index(rows as i64), self.b.index(1));
                self.b.for_loop(lo, hi, one, &[], |b, i, _| {
                    let (lo, hi) = (b.index(0), cols_v);
                    b.for_loop(lo, hi, one, &[], |b, j, _| {
                        let (din, de) = tile_index(b, &dst, i, j);
                        b.if_then(din, |b| {
                            let (sin, se) = tile_index(b, &src, i, j);
                            let x = b.if_else(
                                sin,
                                &[Ty::scalar(d)],
                                |b| vec![b.load(src.view.buf, se, 1)],
                                |_| vec![fillv],
                            )[0];
                            b.store(dst.view.buf, de, x);
                        });
                        Vec::new()
                    });
                    Vec::new()
                });
            }
            // ==== `tile.mma` ====
            TileMma { a, b: bt, acc } => {
                let r = r.expect("tile.mma defines a value");
                // Accumulate in place when nothing else reads the accumulator.
                if self.last_use_here(acc) && acc != a && acc != bt {
                    let ab = self.buf(acc);
                    self.tbuf.insert(r, ab);
                } else {
                    let rb = self.buf(r);
                    self.copy_tile(acc, rb);
                }
                self.mma(a, bt, r);
            }
            // ==== `tile.dot` (int_dot.rs) ====
            TileDot { a, b: bt, acc } => {
                let r = r.expect("tile.dot defines a value");
                if self.last_use_here(acc) && acc != a && acc != bt {
                    let ab = self.buf(acc);
                    self.tbuf.insert(r, ab);
                } else {
                    let rb = self.buf(r);
                    self.copy_tile(acc, rb);
                }
                let (at, btt) = (self.ty(a), self.ty(bt));
                let ((m, k), (_, n)) = (
                    at.tile_shape().expect("a tile"),
                    self.ty(r).tile_shape().expect("a tile"),
                );
                let g = btt.lanes as u32 / n.max(1);
                let apack = self.new_buf(Ty::tile(DType::I32, m as u16, (k / g) as u16));
                let bufs = (self.buf(a), self.buf(bt), self.buf(r), apack);
                let opts = self.opts;
                super::int_dot::expand(&mut self.b, bufs, (at.elem, btt.elem), (m, n, k, g), &opts);
            }
            // ==== `tile.reduce` ====
            TileReduce(op, axis, x) => {
                let r = r.expect("tile.reduce defines a value");
                let (rows, cols) = self.ty(x).tile_shape().expect("a tile");
                let bop = op.binop();
                let elem = self.ty(x).elem;
                let lanes = self.lanes_for(elem) as u32;
                let vector = lanes > 1 && tile_storage(elem) == elem;
                if vector && axis == Axis::Cols && cols % lanes == 0 {
                    self.reduce_cols(op, x, r, lanes as u16);
                    return Ok(());
                }
                if vector && axis == Axis::Rows && self.opts.lane_reductions && cols >= 2 * lanes {
                    self.reduce_rows(op, x, r, lanes as u16);
                    return Ok(());
                }
                let (outer, inner) = match axis {
                    Axis::Rows => (rows, cols),
                    Axis::Cols => (cols, rows),
                };
                let (xb, rb) = (self.buf(x), self.buf(r));
                let (lo, hi, one) = (self.b.index(0), self.b.index(outer as i64), self.b.index(1));
                let cols_v = self.b.index(cols as i64);
                self.b.for_loop(lo, hi, one, &[], |b, o, _| {
                    // Element (o, i) of the walk: (o, i) for rows, (i, o) for columns.
                    let at = |b: &mut KernelBuilder, i: Val| match axis {
                        Axis::Rows => {
                            let t = b.mul(o, cols_v);
                            b.add(t, i)
                        }
                        Axis::Cols => {
                            let t = b.mul(i, cols_v);
                            b.add(t, o)
                        }
                    };
                    let z = b.index(0);
                    let e0 = at(b, z);
                    let x0 = b.load(xb, e0, 1);
                    let x0 = b.cast(x0, elem, NO_SAT);
                    let (lo, hi) = (b.index(1), b.index(inner as i64));
                    let s = b.for_loop(lo, hi, one, &[x0], |b, i, s| {
                        let e = at(b, i);
                        let x = b.load(xb, e, 1);
                        let x = b.cast(x, elem, NO_SAT);
                        vec![b.binary(bop, s[0], x)]
                    })[0];
                    let s = b.cast(s, tile_storage(elem), NO_SAT);
                    b.store(rb, o, s);
                    Vec::new()
                });
            }
            // ==== `tile.broadcast` and `tile.transpose` ====
            TileBroadcast(x) => {
                let r = r.expect("tile.broadcast defines a value");
                let ((rows, cols), (xr, xc)) = (
                    self.ty(r).tile_shape().expect("a tile"),
                    self.ty(x).tile_shape().expect("a tile"),
                );
                let (xb, rb) = (self.buf(x), self.buf(r));
                self.grid2(rows, cols, |b, i, j, e| {
                    let si = if xr == 1 { b.index(0) } else { i };
                    let sj = if xc == 1 { b.index(0) } else { j };
                    let xcv = b.index(xc as i64);
                    let t = b.mul(si, xcv);
                    let se = b.add(t, sj);
                    let v = b.load(xb, se, 1);
                    b.store(rb, e, v);
                });
            }
            TileTranspose(x) => {
                let r = r.expect("tile.transpose defines a value");
                let (rows, cols) = self.ty(r).tile_shape().expect("a tile");
                let (xb, rb) = (self.buf(x), self.buf(r));
                // Result (i, j) is x (j, i); x has `rows` columns.
                self.grid2(rows, cols, |b, i, j, e| {
                    let rv = b.index(rows as i64);
                    let t = b.mul(j, rv);
                    let se = b.add(t, i);
                    let v = b.load(xb, se, 1);
                    b.store(rb, e, v);
                });
            }
            TileIndex(axis) => {
                let r = r.expect("tile.index defines a value");
                let (rows, cols) = self.ty(r).tile_shape().expect("a tile");
                let rb = self.buf(r);
                self.grid2(rows, cols, |b, i, j, e| {
                    let v = match axis {
                        Axis::Rows => i,
                        Axis::Cols => j,
                    };
                    b.store(rb, e, v);
                });
            }
            // Program instances of a scalarized kernel share no on-chip memory.
            Barrier => {}
            other => {
                return Err(KirError::Unsupported {
                    kernel: self.b.kernel().name.clone(),
                    pass: "scalarize-tiles".into(),
                    what: format!("{other:?} on tiles"),
                })
            }
        }
        Ok(())
    }

    /// `tile.reduce … cols` of a 32-bit tile whose width is a whole number of vectors: each
    /// vector of `lanes` columns is folded down the rows, in row order, so every column's
    /// result is the scalar walk's, bit for bit.
    fn reduce_cols(&mut self, op: ReduceOp, x: Val, r: Val, lanes: u16) {
        let (rows, cols) = self.ty(x).tile_shape().expect("a tile");
        let (xb, rb) = (self.buf(x), self.buf(r));
        let bop = op.binop();
        let (lo, hi, step) = (
            self.b.index(0),
            self.b.index(cols as i64),
            self.b.index(lanes as i64),
        );
        let cols_v = self.b.index(cols as i64);
        self.b.for_loop(lo, hi, step, &[], |b, j, _| {
            let x0 = b.load(xb, j, lanes);
            let (lo, hi, one) = (b.index(1), b.index(rows as i64), b.index(1));
            let s = b.for_loop(lo, hi, one, &[x0], |b, i, s| {
                let t = b.mul(i, cols_v);
                let e = b.add(t, j);
                let v = b.load(xb, e, lanes);
                vec![b.binary(bop, s[0], v)]
            })[0];
            b.store(rb, j, s);
            Vec::new()
        });
    }

    /// `tile.reduce … rows` of a 32-bit tile at least two vectors wide, for a backend that
    /// allows it ([`ScalarizeOptions::lane_reductions`]): each row is folded in up to four
    /// vector partial results (vector `v` of the row into partial `v mod P`), the partials
    /// pairwise, then the lanes, and the last `cols mod lanes` elements in order.
    fn reduce_rows(&mut self, op: ReduceOp, x: Val, r: Val, lanes: u16) {
        let (rows, cols) = self.ty(x).tile_shape().expect("a tile");
        let (xb, rb) = (self.buf(x), self.buf(r));
        let bop = op.binop();
        let l = lanes as u32;
        let full = cols / l;
        let parts = full.min(4);
        let groups = full / parts;
        let (lo, hi, one) = (self.b.index(0), self.b.index(rows as i64), self.b.index(1));
        let cols_v = self.b.index(cols as i64);
        self.b.for_loop(lo, hi, one, &[], |b, o, _| {
            let base = b.mul(o, cols_v);
            let at = |b: &mut KernelBuilder, off: Val, v: u32| {
                let c = b.index((v * l) as i64);
                let t = b.add(base, off);
                b.add(t, c)
            };
            let z = b.index(0);
            let init: Vec<Val> = (0..parts)
                .map(|p| {
                    let e = at(b, z, p);
                    b.load(xb, e, lanes)
                })
                .collect();
            // Groups 1.. of `parts` vectors each, partial p taking the group's vector p.
            let mut acc = if groups > 1 {
                let (glo, ghi, gstep) = (
                    b.index((parts * l) as i64),
                    b.index((groups * parts * l) as i64),
                    b.index((parts * l) as i64),
                );
                b.for_loop(glo, ghi, gstep, &init, |b, g, s| {
                    (0..parts)
                        .map(|p| {
                            let e = at(b, g, p);
                            let v = b.load(xb, e, lanes);
                            b.binary(bop, s[p as usize], v)
                        })
                        .collect()
                })
            } else {
                init
            };
            // The vectors after the last whole group.
            for v in groups * parts..full {
                let e = at(b, z, v);
                let x = b.load(xb, e, lanes);
                let p = (v % parts) as usize;
                acc[p] = b.binary(bop, acc[p], x);
            }
            while acc.len() > 1 {
                let pairs: Vec<Val> = acc
                    .chunks(2)
                    .map(|c| {
                        if c.len() == 2 {
                            b.binary(bop, c[0], c[1])
                        } else {
                            c[0]
                        }
                    })
                    .collect();
                acc = pairs;
            }
            let mut s = b.reduce_lanes(op, acc[0]);
            for c in full * l..cols {
                let ci = b.index(c as i64);
                let t = b.add(base, ci);
                let x = b.load(xb, t, 1);
                s = b.binary(bop, s, x);
            }
            b.store(rb, o, s);
            Vec::new()
        });
    }

    /// Makes old value `r` (a scalar) stand for new value `v`, through a copy: the pass keeps
    /// every old id, so the scalar is re-defined as `v + 0` is not possible for every type;
    /// a one-branch `select` on `true` is.
    fn alias(&mut self, r: Val, v: Val) {
        let t = self.b.constant(Ty::BOOL, Scalar::Int(1));
        self.b.push_inst(Inst {
            results: vec![r],
            kind: InstKind::Select(t, v, v),
        });
    }

    /// Fills tile `r` with scalar `s`.
    fn fill(&mut self, r: Val, s: Val) {
        let n = self.count(r);
        let st = tile_storage(self.ty(r).elem);
        let lanes = self.lanes_for(st);
        let rb = self.buf(r);
        let s = self.b.cast(s, st, NO_SAT);
        let mut splats: HashMap<u16, Val> = HashMap::new();
        splats.insert(1, s);
        if lanes > 1 {
            let v = self.b.splat(s, lanes);
            splats.insert(lanes, v);
        }
        self.for_each(n, lanes, |b, i, l| b.store(rb, i, splats[&l]));
    }

    /// Tile `r` = `f` applied element by element to tiles `args` (scalars where a tile has
    /// the same element type as its storage, vectors where the backend has them).
    fn map(&mut self, r: Val, args: &[Val], f: impl Fn(&mut KernelBuilder, &[Val]) -> Val) {
        let n = self.count(r);
        let rt = self.ty(r);
        let all_native = args
            .iter()
            .chain(std::iter::once(&r))
            .all(|&v| tile_storage(self.ty(v).elem) == self.ty(v).elem);
        let same_width = args
            .iter()
            .all(|&v| self.lanes_for(self.ty(v).elem) == self.lanes_for(rt.elem));
        let lanes = if all_native && same_width {
            self.lanes_for(rt.elem)
        } else {
            1
        };
        let bufs: Vec<(Buf, DType)> = args
            .iter()
            .map(|&v| (self.buf(v), self.ty(v).elem))
            .collect();
        let rb = self.buf(r);
        let rst = tile_storage(rt.elem);
        self.for_each(n, lanes, |b, i, l| {
            let xs: Vec<Val> = bufs
                .iter()
                .map(|&(buf, elem)| {
                    let x = b.load(buf, i, l);
                    b.cast(x, elem, NO_SAT)
                })
                .collect();
            let y = f(b, &xs);
            let y = b.cast(y, rst, NO_SAT);
            b.store(rb, i, y);
        });
    }

    /// Runs `f(b, i, j, i * cols + j)` over a `rows × cols` grid.
    fn grid2(&mut self, rows: u32, cols: u32, f: impl Fn(&mut KernelBuilder, Val, Val, Val)) {
        let (lo, hi, one) = (self.b.index(0), self.b.index(rows as i64), self.b.index(1));
        let cols_v = self.b.index(cols as i64);
        self.b.for_loop(lo, hi, one, &[], |b, i, _| {
            let lo = b.index(0);
            b.for_loop(lo, cols_v, one, &[], |b, j, _| {
                let t = b.mul(i, cols_v);
                let e = b.add(t, j);
                f(b, i, j, e);
                Vec::new()
            });
            Vec::new()
        });
    }

    /// Walks a `rows × cols` tile at `t`: `f(b, Some(buffer index) or None, tile index,
    /// lanes)` for each element (or run of `lanes` elements). When the whole tile is in range
    /// it walks unmasked rows, with vectors of `lanes` where the innermost stride is 1;
    /// otherwise it tests every element.
    ///
    /// With `panel`, the tile index is that of [`Panel`]'s layout instead of row-major.
    fn masked(
        &mut self,
        t: &TileAt,
        rows: u32,
        cols: u32,
        lanes: u16,
        panel: Option<Panel>,
        f: impl Fn(&mut KernelBuilder, Option<Val>, Val, u16),
    ) {
        let b = &mut self.b;
        let rank = t.view.dims.len();
        // Whether every axis of the tile is in range.
        let mut full = b.constant(Ty::BOOL, Scalar::Int(1));
        for d in 0..rank {
            let ext = if d + 1 == rank {
                cols
            } else if d + 2 == rank {
                rows
            } else {
                1
            };
            let o = t.origin[d];
            let zero = b.index(0);
            let lo_ok = b.cmp(CmpOp::Ge, o, zero);
            let ev = b.index(ext as i64);
            let end = b.add(o, ev);
            let dim = b.index(t.view.dims[d] as i64);
            let hi_ok = b.cmp(CmpOp::Le, end, dim);
            let ok = b.binary(BinOp::And, lo_ok, hi_ok);
            full = b.binary(BinOp::And, full, ok);
        }
        let last_stride = t.view.strides[rank - 1];
        let row_stride = if rank >= 2 {
            t.view.strides[rank - 2]
        } else {
            0
        };
        let lanes = if last_stride == 1 { lanes } else { 1 };
        let (one, cols_v) = (b.index(1), b.index(cols as i64));
        b.if_else(
            full,
            &[],
            |b| {
                let base = origin_index(b, t);
                let (lo, hi) = (b.index(0), b.index(rows as i64));
                b.for_loop(lo, hi, one, &[], |b, i, _| {
                    let rs = b.index(row_stride);
                    let ro = b.mul(i, rs);
                    let row = b.add(base, ro);
                    let tr = b.mul(i, cols_v);
                    let l = lanes.max(1) as u32;
                    let full_cols = cols / l * l;
                    // Columns `from..to` (step `step`, `w` lanes) of a run starting at column
                    // `j0` of the view, written from tile index `t0` on.
                    let walk = |b: &mut KernelBuilder,
                                (j0, t0): (Val, Val),
                                (from, to, step): (u32, u32, u32),
                                w: u16| {
                        if from >= to {
                            return;
                        }
                        let (lo, hi, st) = (
                            b.index(from as i64),
                            b.index(to as i64),
                            b.index(step as i64),
                        );
                        b.for_loop(lo, hi, st, &[], |b, c, _| {
                            let j = b.add(j0, c);
                            let ls = b.index(last_stride);
                            let co = b.mul(j, ls);
                            let e = b.add(row, co);
                            let te = b.add(t0, c);
                            f(b, Some(e), te, w);
                            Vec::new()
                        });
                    };
                    let zero = b.index(0);
                    match panel {
                        None => {
                            walk(b, (zero, tr), (0, full_cols, l), l as u16);
                            walk(b, (zero, tr), (full_cols, cols, 1), 1);
                        }
                        Some(p) => {
                            // Full panels (width a multiple of `l`), then the last one.
                            let (pw, full) = (p.width, p.cols / p.width);
                            if full > 0 {
                                let (lo, hi) = (b.index(0), b.index(full as i64));
                                b.for_loop(lo, hi, one, &[], |b, q, _| {
                                    let pwv = b.index(pw as i64);
                                    let j0 = b.mul(q, pwv);
                                    let t0 = p.start(b, q, i, pw);
                                    let wl = if pw % l == 0 { l } else { 1 };
                                    walk(b, (j0, t0), (0, pw, wl), wl as u16);
                                    Vec::new()
                                });
                            }
                            let rest = p.cols - full * pw;
                            if rest > 0 {
                                let q = b.index(full as i64);
                                let j0 = b.index((full * pw) as i64);
                                let t0 = p.start(b, q, i, rest);
                                let rv = rest / l * l;
                                walk(b, (j0, t0), (0, rv, l), l as u16);
                                walk(b, (j0, t0), (rv, rest, 1), 1);
                            }
                        }
                    }
                    Vec::new()
                });
                Vec::new()
            },
            |b| {
                if rank >= 2 {
                    // Only the ends of rows, or whole rows, outside the view (every origin at
                    // least 0, the axes before the last two in range): each row in range is
                    // walked as runs, its in-range columns in vectors.
                    let zero = b.index(0);
                    let mut ok = b.constant(Ty::BOOL, Scalar::Int(1));
                    for d in 0..rank {
                        let o = t.origin[d];
                        let ge = b.cmp(CmpOp::Ge, o, zero);
                        ok = b.binary(BinOp::And, ok, ge);
                        if d + 2 < rank {
                            let end = b.add(o, one);
                            let dim = b.index(t.view.dims[d] as i64);
                            let le = b.cmp(CmpOp::Le, end, dim);
                            ok = b.binary(BinOp::And, ok, le);
                        }
                    }
                    b.if_else(
                        ok,
                        &[],
                        |b| {
                            row_runs(b, t, (rows, cols), lanes, panel, &f);
                            Vec::new()
                        },
                        |b| {
                            each_element(b, t, (rows, cols), panel, &f);
                            Vec::new()
                        },
                    );
                } else {
                    each_element(b, t, (rows, cols), panel, &f);
                }
                Vec::new()
            },
        );
    }

    /// Copies the `rows × cols` f32 tile `v`, read in place at `base` of `src` with row stride
    /// `rs`, into its own tile buffer, and returns that buffer.
    fn materialize(
        &mut self,
        v: Val,
        src: Buf,
        base: Val,
        rs: i64,
        (rows, cols): (u32, u32),
    ) -> Buf {
        let dst = self.buf(v);
        let lanes = self.lanes_for(DType::F32).max(1) as u32;
        let whole = cols / lanes * lanes;
        let b = &mut self.b;
        let (zero, one) = (b.index(0), b.index(1));
        let hi = b.index(rows as i64);
        b.for_loop(zero, hi, one, &[], |b, i, _| {
            let rsv = b.index(rs);
            let off = b.mul(i, rsv);
            let row = b.add(base, off);
            let cv = b.index(cols as i64);
            let drow = b.mul(i, cv);
            let copy = |b: &mut KernelBuilder, from: u32, to: u32, l: u32| {
                if from >= to {
                    return;
                }
                let (f, t, st) = (b.index(from as i64), b.index(to as i64), b.index(l as i64));
                b.for_loop(f, t, st, &[], |b, j, _| {
                    let si = b.add(row, j);
                    let x = b.load(src, si, l as u16);
                    let di = b.add(drow, j);
                    b.store(dst, di, x);
                    Vec::new()
                });
            };
            copy(b, 0, whole, lanes);
            copy(b, whole, cols, 1);
            Vec::new()
        });
        dst
    }

    /// Accumulates `a · b` into the buffer of `r` (which already holds the accumulator).
    fn mma(&mut self, a: Val, bt: Val, r: Val) {
        let (at, btt, rt) = (self.ty(a), self.ty(bt), self.ty(r));
        let ((m, k), (_, n)) = (
            at.tile_shape().expect("a tile"),
            btt.tile_shape().expect("a tile"),
        );
        let (da, db) = (self.direct.get(&a).copied(), self.direct.get(&bt).copied());
        let ab = da.map_or_else(|| self.buf(a), |d| d.0);
        let bb = db.map_or_else(|| self.buf(bt), |d| d.0);
        let rb = self.buf(r);
        let in_place = (da.map(|d| (d.1, d.2)), db.map(|d| (d.1, d.2)));
        let b_transposed = self.transposed.contains(&bt);
        let f32_all = [at.elem, btt.elem, rt.elem]
            .iter()
            .all(|&e| tile_storage(e) == DType::F32);
        let lanes = self.lanes_for(DType::F32).max(1) as u32;
        let (mr, nv) = (self.opts.block_rows.max(1), self.opts.block_vectors.max(1));
        let i32_all = [at.elem, btt.elem, rt.elem]
            .iter()
            .all(|&e| tile_storage(e) == DType::I32);
        let paneled = self.paneled.get(&bt).copied();
        if self.opts.blocked_i32_mma && i32_all && !b_transposed && paneled.is_none() {
            let lanes = self.lanes_for(DType::I32).max(1) as u32;
            let sh = (m, n, k);
            let np = (None, None);
            blocked_mma(
                &mut self.b,
                (ab, bb, rb),
                sh,
                lanes,
                (mr, nv),
                (false, self.opts.k_unroll),
                (false, 0),
                np,
            );
            return;
        }
        if self.opts.blocked_f32_mma && f32_all && rt.elem == DType::F32 {
            let fma = self.opts.fma;
            if b_transposed {
                // The dot-product form reads A from a tile buffer: an A left in place (its
                // load was skipped before B's layout was known) is copied in here.
                let ab = match da {
                    Some((src, base, rs)) => self.materialize(a, src, base, rs, (m, k)),
                    None => ab,
                };
                let (dr, dc) = match self.opts.dot_block {
                    (0, _) | (_, 0) => (mr, nv),
                    d => d,
                };
                dot_mma(&mut self.b, (ab, bb, rb), (m, n, k), lanes, dr, dc, fma);
            } else {
                // Panels are one register block wide (`width` at the tile's load).
                debug_assert!(paneled.is_none_or(|w| w == nv * lanes));
                let sh = (m, n, k);
                let p = paneled.is_some();
                let bufs = (ab, bb, rb);
                let (l1, u) = (self.opts.l1_bytes, self.opts.k_unroll);
                blocked_mma(
                    &mut self.b,
                    bufs,
                    sh,
                    lanes,
                    (mr, nv),
                    (fma, u),
                    (p, l1),
                    in_place,
                );
            }
            return;
        }
        debug_assert!(paneled.is_none(), "a paneled B reaches the exact mma");
        debug_assert!(
            da.is_none() && db.is_none(),
            "an in-place tile reaches the exact mma"
        );
        // The exact buffer `mma` (on the storage types, which hold the same values).
        let zero = self.b.index(0);
        let tr = |buf, rs: u32, cs: u32| TileRef {
            buf,
            offset: zero,
            row_stride: rs as i64,
            col_stride: cs as i64,
        };
        let b_ref = if b_transposed {
            tr(bb, 1, k)
        } else {
            tr(bb, n, 1)
        };
        self.b.mma(tr(ab, k, 1), b_ref, tr(rb, n, 1), m, n, k);
    }

    #[allow(clippy::too_many_arguments)]
    fn for_loop(
        &mut self,
        results: Vec<Val>,
        lo: Val,
        hi: Val,
        step: Val,
        iv: Val,
        iter: Vec<Val>,
        init: Vec<Val>,
        body: Block,
    ) -> Result<(), KirError> {
        // Tile slots get a buffer shared by the parameter and the result; the initial value
        // shares it too when nothing else reads it.
        let mut keep = Vec::new();
        for (j, (&p, &i0)) in iter.iter().zip(init.iter()).enumerate() {
            if !self.is_tile(p) {
                keep.push(j);
                continue;
            }
            let pb = if self.last_use_here(i0) {
                let b = self.buf(i0);
                self.tbuf.insert(p, b);
                b
            } else {
                let b = self.buf(p);
                self.copy_tile(i0, b);
                b
            };
            self.tbuf.insert(results[j], pb);
        }
        let mut body = body;
        let yields = match body.insts.pop() {
            Some(Inst {
                kind: InstKind::Yield(vs),
                ..
            }) => vs,
            other => {
                body.insts.extend(other);
                Vec::new()
            }
        };
        self.next_scope += 1;
        self.scopes.push(self.next_scope);
        self.b.open_block();
        self.block(body)?;
        self.yield_into(&yields, &iter, &keep);
        let new_body = self.b.close_block();
        self.scopes.pop();
        let pick = |xs: &[Val]| keep.iter().map(|&j| xs[j]).collect::<Vec<_>>();
        self.b.push_inst(Inst {
            results: pick(&results),
            kind: InstKind::For {
                lo,
                hi,
                step,
                iv,
                iter: pick(&iter),
                init: pick(&init),
                body: new_body,
            },
        });
        Ok(())
    }

    /// Ends a block that yields `ys` into `targets`: tile values are copied into the targets'
    /// buffers (through temporaries when one target's buffer is another yielded tile's), and
    /// the scalar slots `keep` are yielded.
    fn yield_into(&mut self, ys: &[Val], targets: &[Val], keep: &[usize]) {
        let pairs: Vec<(Val, Val)> = ys
            .iter()
            .copied()
            .zip(targets.iter().copied())
            .filter(|&(_, t)| self.is_tile(t))
            .collect();
        let tiles: Vec<(Val, Buf)> = pairs.into_iter().map(|(y, t)| (y, self.buf(t))).collect();
        let hazard = tiles.iter().any(|&(y, tb)| {
            tiles
                .iter()
                .any(|&(y2, _)| y2 != y && self.tbuf.get(&y2) == Some(&tb))
        });
        if hazard {
            let mut staged = Vec::new();
            for &(y, tb) in &tiles {
                let t = self.ty(y);
                let tmp = self.new_buf(t);
                self.copy_tile(y, tmp);
                staged.push((tmp, tb, t));
            }
            for (tmp, tb, t) in staged {
                let lanes = self.lanes_for(tile_storage(t.elem));
                self.for_each(t.count(), lanes, |b, i, l| {
                    let x = b.load(tmp, i, l);
                    b.store(tb, i, x);
                });
            }
        } else {
            for &(y, tb) in &tiles {
                self.copy_tile(y, tb);
            }
        }
        let vs = keep.iter().map(|&j| ys[j]).collect();
        self.b.push_inst(Inst {
            results: Vec::new(),
            kind: InstKind::Yield(vs),
        });
    }

    fn if_else(
        &mut self,
        results: Vec<Val>,
        cond: Val,
        then_blk: Block,
        else_blk: Block,
    ) -> Result<(), KirError> {
        let keep: Vec<usize> = (0..results.len())
            .filter(|&j| !self.is_tile(results[j]))
            .collect();
        for &r in &results {
            if self.is_tile(r) {
                self.buf(r);
            }
        }
        let arm = |sc: &mut Sc, mut blk: Block| -> Result<Block, KirError> {
            let ys = match blk.insts.pop() {
                Some(Inst {
                    kind: InstKind::Yield(vs),
                    ..
                }) => vs,
                other => {
                    blk.insts.extend(other);
                    Vec::new()
                }
            };
            sc.b.open_block();
            sc.block(blk)?;
            sc.yield_into(&ys, &results, &keep);
            Ok(sc.b.close_block())
        };
        let then_blk = arm(self, then_blk)?;
        let else_blk = arm(self, else_blk)?;
        let picked = keep.iter().map(|&j| results[j]).collect();
        self.b.push_inst(Inst {
            results: picked,
            kind: InstKind::If {
                cond,
                then_blk,
                else_blk,
            },
        });
        Ok(())
    }
}

const NO_SAT: CastMode = CastMode { saturate: false };

/// Every value an instruction reads (not those of nested blocks).
fn operands(kind: &InstKind) -> Vec<Val> {
    let mut k = kind.clone();
    let found = std::cell::RefCell::new(Vec::new());
    super::rewrite::map_operands(&mut k, |v| {
        found.borrow_mut().push(v);
        v
    });
    found.into_inner()
}

/// Whether an instruction reads a tile operand.
fn uses_tile(kind: &InstKind, is_tile: impl Fn(Val) -> bool) -> bool {
    operands(kind).into_iter().any(is_tile)
}

/// For element (i, j) of a tile at `t`: whether its view index is in range, and its buffer
/// element index (meaningful only when in range).
fn tile_index(b: &mut KernelBuilder, t: &TileAt, i: Val, j: Val) -> (Val, Val) {
    let rank = t.view.dims.len();
    let mut ok = b.constant(Ty::BOOL, Scalar::Int(1));
    let mut e = t.view.offset;
    for d in 0..rank {
        let mut x = t.origin[d];
        if d + 1 == rank {
            x = b.add(x, j);
        } else if d + 2 == rank {
            x = b.add(x, i);
        }
        let zero = b.index(0);
        let lo = b.cmp(CmpOp::Ge, x, zero);
        let dim = b.index(t.view.dims[d] as i64);
        let hi = b.cmp(CmpOp::Lt, x, dim);
        let in_d = b.binary(BinOp::And, lo, hi);
        ok = b.binary(BinOp::And, ok, in_d);
        let s = b.index(t.view.strides[d]);
        let xs = b.mul(x, s);
        e = b.add(e, xs);
    }
    (ok, e)
}

/// Where a tile read in place lies: the element index of its (0, 0) in the loaded buffer, and
/// its row stride there (`None`: the tile has its own row-major buffer).
type Direct = Option<(Val, i64)>;

/// The buffer index of element (0, 0) of the tile at `t`: offset + Σ origin·stride.
fn origin_index(b: &mut KernelBuilder, t: &TileAt) -> Val {
    let mut base = t.view.offset;
    for (&o, &st) in t.origin.iter().zip(&t.view.strides) {
        let sv = b.index(st);
        let x = b.mul(o, sv);
        base = b.add(base, x);
    }
    base
}

/// The masked walk of `masked` element by element: each element of the `rows × cols` tile at
/// `t` tested against every axis of its view.
fn each_element(
    b: &mut KernelBuilder,
    t: &TileAt,
    (rows, cols): (u32, u32),
    panel: Option<Panel>,
    f: &impl Fn(&mut KernelBuilder, Option<Val>, Val, u16),
) {
    let (lo, hi, one) = (b.index(0), b.index(rows as i64), b.index(1));
    let cols_v = b.index(cols as i64);
    b.for_loop(lo, hi, one, &[], |b, i, _| {
        let lo = b.index(0);
        b.for_loop(lo, cols_v, one, &[], |b, j, _| {
            let te = match panel {
                None => {
                    let tr = b.mul(i, cols_v);
                    b.add(tr, j)
                }
                Some(p) => p.index(b, i, j),
            };
            let (inr, e) = tile_index(b, t, i, j);
            b.if_else(
                inr,
                &[],
                |b| {
                    f(b, Some(e), te, 1);
                    Vec::new()
                },
                |b| {
                    f(b, None, te, 1);
                    Vec::new()
                },
            );
            Vec::new()
        });
        Vec::new()
    });
}

/// The masked walk of `masked` when only the last two axes can leave the view, at their far
/// ends (the caller checked): `rv` rows and `cv` columns are in range, computed once. Each
/// row walks its runs (the whole row, or each panel's part of it) as vectors of `lanes` over
/// the in-range columns, single elements for the rest of them, and fills the columns and rows
/// beyond.
fn row_runs(
    b: &mut KernelBuilder,
    t: &TileAt,
    (rows, cols): (u32, u32),
    lanes: u16,
    panel: Option<Panel>,
    f: &impl Fn(&mut KernelBuilder, Option<Val>, Val, u16),
) {
    let rank = t.view.dims.len();
    let (zero, one) = (b.index(0), b.index(1));
    let in_range = |b: &mut KernelBuilder, d: usize, ext: u32| {
        let dim = b.index(t.view.dims[d] as i64);
        let left = b.sub(dim, t.origin[d]);
        let left = b.max(left, zero);
        let ext = b.index(ext as i64);
        b.min(left, ext)
    };
    let rv = in_range(b, rank - 2, rows);
    let cv = in_range(b, rank - 1, cols);
    let base = origin_index(b, t);
    let (rs, ls) = (b.index(t.view.strides[rank - 2]), t.view.strides[rank - 1]);
    let l = lanes.max(1) as i64;
    let lv = b.index(l);
    // The runs of row `i`: (first column, tile index of it, width).
    let runs = |b: &mut KernelBuilder, i: Val| -> Vec<(Val, Val, u32)> {
        match panel {
            None => {
                let cv_ = b.index(cols as i64);
                let t0 = b.mul(i, cv_);
                vec![(zero, t0, cols)]
            }
            Some(p) => {
                let full = p.cols / p.width;
                let mut v: Vec<(Val, Val, u32)> = (0..full)
                    .map(|q| {
                        let qv = b.index(q as i64);
                        let j0 = b.index((q * p.width) as i64);
                        (j0, p.start(b, qv, i, p.width), p.width)
                    })
                    .collect();
                let rest = p.cols - full * p.width;
                if rest > 0 {
                    let qv = b.index(full as i64);
                    let j0 = b.index((full * p.width) as i64);
                    v.push((j0, p.start(b, qv, i, rest), rest));
                }
                v
            }
        }
    };
    let (lo, hi) = (b.index(0), b.index(rows as i64));
    b.for_loop(lo, hi, one, &[], |b, i, _| {
        let row_in = b.cmp(CmpOp::Lt, i, rv);
        let ro = b.mul(i, rs);
        let row = b.add(base, ro);
        let segs = runs(b, i);
        b.if_else(
            row_in,
            &[],
            |b| {
                for &(j0, t0, w) in &segs {
                    // Columns of this run in range: clamp(cv − j0, 0, w).
                    let left = b.sub(cv, j0);
                    let left = b.max(left, zero);
                    let wv = b.index(w as i64);
                    let valid = b.min(left, wv);
                    let step_of = |b: &mut KernelBuilder, c: Val, w: u16, inside: bool| {
                        let te = b.add(t0, c);
                        if inside {
                            let j = b.add(j0, c);
                            let lsv = b.index(ls);
                            let co = b.mul(j, lsv);
                            let e = b.add(row, co);
                            f(b, Some(e), te, w);
                        } else {
                            f(b, None, te, 1);
                        }
                    };
                    let mut from = zero;
                    if l > 1 {
                        let q = b.div(valid, lv);
                        let vend = b.mul(q, lv);
                        b.for_loop(zero, vend, lv, &[], |b, c, _| {
                            step_of(b, c, l as u16, true);
                            Vec::new()
                        });
                        from = vend;
                    }
                    b.for_loop(from, valid, one, &[], |b, c, _| {
                        step_of(b, c, 1, true);
                        Vec::new()
                    });
                    b.for_loop(valid, wv, one, &[], |b, c, _| {
                        step_of(b, c, 1, false);
                        Vec::new()
                    });
                }
                Vec::new()
            },
            |b| {
                for &(_, t0, w) in &segs {
                    let wv = b.index(w as i64);
                    b.for_loop(zero, wv, one, &[], |b, c, _| {
                        let te = b.add(t0, c);
                        f(b, None, te, 1);
                        Vec::new()
                    });
                }
                Vec::new()
            },
        );
        Vec::new()
    });
}

/// A tile of `rows × cols` kept in column panels `width` wide: panel `q` holds columns
/// `q·width ..` (the last one the `cols mod width` left over), each panel row-major and the
/// panels one after another, so that element (i, j) of panel q (of width wq) is at
/// `q·width·rows + i·wq + (j − q·width)`. A register-blocked product reading one panel per
/// block of columns then walks its B operand contiguously.
#[derive(Clone, Copy, Debug)]
struct Panel {
    width: u32,
    rows: u32,
    cols: u32,
}

impl Panel {
    /// The index of element (i, q·width) of a panel q of width `wq`.
    fn start(&self, b: &mut KernelBuilder, q: Val, i: Val, wq: u32) -> Val {
        let size = b.index((self.width * self.rows) as i64);
        let at = b.mul(q, size);
        let wv = b.index(wq as i64);
        let row = b.mul(i, wv);
        b.add(at, row)
    }

    /// The index of element (i, j), for any j.
    fn index(&self, b: &mut KernelBuilder, i: Val, j: Val) -> Val {
        let (w, full) = (self.width, self.cols / self.width);
        let wv = b.index(w as i64);
        let q = b.div(j, wv);
        let qw = b.mul(q, wv);
        let c = b.sub(j, qw);
        let size = b.index((w * self.rows) as i64);
        let at = b.mul(q, size);
        let rest = self.cols - full * w;
        let wq = if rest == 0 {
            wv
        } else {
            let fv = b.index(full as i64);
            let in_full = b.cmp(CmpOp::Lt, q, fv);
            let rv = b.index(rest as i64);
            b.select(in_full, wv, rv)
        };
        let row = b.mul(i, wq);
        let e = b.add(at, row);
        b.add(e, c)
    }
}

/// `R += A · B` on f32 buffers A (m × k, row-major), B (k × n: row-major, or with `panels` in
/// [`Panel`]s one block of `nv` vectors wide) and R (m × n, row-major), register-blocked: `mr`
/// rows by `nv` vectors of `lanes` accumulators per step of k.
///
/// Row-major B runs row blocks outside and column blocks inside (a block of A rows stays in
/// L1 while B streams). Paneled B runs column blocks outside, one panel (`k × nv·lanes`,
/// contiguous) staying in L1 while every block of A rows passes it (BLIS's order), unless
/// the whole B tile fits half of `l1` (the backend's L1 bytes): then row blocks run outside
/// too, a block of A rows and all of B stay in L1, and A's tile, the larger one, streams from
/// L2 once per step instead of once per panel.
#[allow(clippy::too_many_arguments)]
fn blocked_mma(
    b: &mut KernelBuilder,
    (ab, bb, rb): (Buf, Buf, Buf),
    (m, n, k): (u32, u32, u32),
    lanes: u32,
    (mr, nv): (u32, u32),
    (fma, unroll): (bool, u32),
    (panels, l1): (bool, u64),
    (a_at, b_direct): (Direct, Direct),
) {
    // Column segments: blocks of nv vectors, then single vectors, then single elements.
    let wide = nv * lanes;
    let n_wide = n / wide * wide;
    let n_vec = n_wide + (n - n_wide) / lanes * lanes;
    let bufs = (ab, bb, rb);
    let a_at = a_at.map_or((None, k as i64), |(base, rs)| (Some(base), rs));
    // Where B's column j0 starts and its row stride: row-major (in its tile, or where the
    // tile lies in B's own buffer), or in its panel.
    let b_at = |b: &mut KernelBuilder, j0: Val, j: Option<u32>| -> (Val, i64) {
        if let Some((base, rs)) = b_direct {
            return (b.add(base, j0), rs);
        }
        if !panels {
            return (j0, n as i64);
        }
        match j {
            // A full panel: it starts at j0·k and is `wide` columns wide.
            None => {
                let kk = b.index(k as i64);
                (b.mul(j0, kk), wide as i64)
            }
            // Column j of the last, narrower panel.
            Some(j) => {
                let at = n_wide * k + (j - n_wide);
                (b.index(at as i64), (n - n_wide) as i64)
            }
        }
    };
    // The columns past the full blocks, for rows i0..i0+rows.
    let rest = |b: &mut KernelBuilder, i0: Val, rows: u32| {
        if lanes > 1 {
            for j in (n_wide..n_vec).step_by(lanes as usize) {
                let j0 = b.index(j as i64);
                let bt = b_at(b, j0, Some(j));
                micro(
                    b,
                    bufs,
                    (n, k),
                    (i0, rows),
                    (j0, bt),
                    (1, lanes),
                    (fma, unroll),
                    a_at,
                );
            }
        }
        for j in n_vec..n {
            let j0 = b.index(j as i64);
            let bt = b_at(b, j0, Some(j));
            micro(
                b,
                bufs,
                (n, k),
                (i0, rows),
                (j0, bt),
                (1, 1),
                (fma, unroll),
                a_at,
            );
        }
    };
    // One whole register block at rows `i0..i0+rows`, columns from `j0`.
    let wide_block = |b: &mut KernelBuilder, i0: Val, rows: u32, j0: Val| {
        let bt = b_at(b, j0, None);
        micro(
            b,
            bufs,
            (n, k),
            (i0, rows),
            (j0, bt),
            (nv, lanes),
            (fma, unroll),
            a_at,
        )
    };
    let b_tile_fits = (k as u64 * n as u64 * 4).saturating_mul(2) <= l1;
    if panels && !b_tile_fits {
        blocks(b, n_wide, wide, &|b, j0, _| {
            blocks(b, m, mr, &|b, i0, rows| wide_block(b, i0, rows, j0));
        });
        blocks(b, m, mr, &|b, i0, rows| rest(b, i0, rows));
    } else {
        blocks(b, m, mr, &|b, i0, rows| {
            blocks(b, n_wide, wide, &|b, j0, _| wide_block(b, i0, rows, j0));
            rest(b, i0, rows);
        });
    }
}

/// `x + c` for an index `x`, or `x` itself when `c` is 0.
pub(super) fn plus(b: &mut KernelBuilder, x: Val, c: i64) -> Val {
    if c == 0 {
        x
    } else {
        let cv = b.index(c);
        b.add(x, cv)
    }
}

/// `acc + x·y`: one `fma`, or a `mul` and an `add`.
fn mul_add(b: &mut KernelBuilder, x: Val, y: Val, acc: Val, fma: bool) -> Val {
    if fma {
        b.fma(x, y, acc)
    } else {
        let p = b.mul(x, y);
        b.add(acc, p)
    }
}

/// Calls `f(b, start, count)` over `0..n` in blocks of `blk`: a loop over the full blocks
/// (`count == blk`), then once for the remainder if there is one.
pub(super) fn blocks(
    b: &mut KernelBuilder,
    n: u32,
    blk: u32,
    f: &dyn Fn(&mut KernelBuilder, Val, u32),
) {
    let full = n / blk * blk;
    if full > 0 {
        let (lo, hi, st) = (b.index(0), b.index(full as i64), b.index(blk as i64));
        b.for_loop(lo, hi, st, &[], |b, x, _| {
            f(b, x, blk);
            Vec::new()
        });
    }
    if full < n {
        let x = b.index(full as i64);
        f(b, x, n - full);
    }
}

/// One register block: rows `i0..i0+rows`, columns `j0..j0+nv·lanes`; B's element (kv, j0)
/// is at `b_base + kv·b_stride` (its row-major or panel layout, see [`blocked_mma`]), and A's
/// (i, kv) at `a_base + i·a_rs + kv`.
#[allow(clippy::too_many_arguments)]
fn micro(
    b: &mut KernelBuilder,
    (ab, bb, rb): (Buf, Buf, Buf),
    (n, k): (u32, u32),
    (i0, rows): (Val, u32),
    (j0, (b_base, b_stride)): (Val, (Val, i64)),
    (nv, lanes): (u32, u32),
    (fma, unroll): (bool, u32),
    (a_base, a_rs): (Option<Val>, i64),
) {
    let l = lanes as u16;
    let nn = b.index(n as i64);
    let mut r_at = Vec::new();
    // A's element (i0, 0): row-major in its tile, or where the tile lies in A's own buffer.
    let ars = b.index(a_rs);
    let a0 = b.mul(i0, ars);
    let a0 = match a_base {
        Some(base) => b.add(base, a0),
        None => a0,
    };
    for r in 0..rows {
        let rv = b.index(r as i64);
        let i = b.add(i0, rv);
        let ri = b.mul(i, nn);
        for g in 0..nv {
            let gv = b.index((g * lanes) as i64);
            let j = b.add(j0, gv);
            r_at.push(b.add(ri, j));
        }
    }
    // One step of k: A's column at `ak + da` and B's row at `b0 + db`; the block's other
    // elements are constants away, which backends fold into the addresses' displacements.
    let step = |b: &mut KernelBuilder, acc: &[Val], ak: Val, b0: Val, (da, db): (i64, i64)| {
        let bv: Vec<Val> = (0..nv)
            .map(|g| {
                let e = plus(b, b0, db + (g * lanes) as i64);
                b.load(bb, e, l)
            })
            .collect();
        let mut next = Vec::with_capacity(acc.len());
        for r in 0..rows as usize {
            let e = plus(b, ak, da + r as i64 * a_rs);
            let x = b.load(ab, e, 1);
            let xs = if l > 1 { b.splat(x, l) } else { x };
            for g in 0..nv as usize {
                next.push(mul_add(b, xs, bv[g], acc[r * nv as usize + g], fma));
            }
        }
        next
    };
    // The loop makes `unroll` steps a trip (1 or 2; the k % unroll left follow it). It
    // carries one index into A and one into B, each stepped by an add (carried, they stay two
    // registers whatever a backend's optimizer makes of the arithmetic that set them up),
    // after the accumulators: a backend that computes the next trip's values in order then
    // steps them after their last use. Two steps a trip let a backend whose FMA overwrites a
    // multiplicand (Cranelift's x64 `vfmadd213ps`) end each trip with every accumulator back
    // in its register, without a move.
    let u = unroll.clamp(1, 2);
    let mut init: Vec<Val> = r_at.iter().map(|&e| b.load(rb, e, l)).collect();
    let nacc = init.len();
    init.extend([a0, b_base]);
    let (lo, hi, one) = (b.index(0), b.index((k / u) as i64), b.index(1));
    let out = b.for_loop(lo, hi, one, &init, |b, _kv, carried| {
        let (mut acc, ak, b0) = (carried[..nacc].to_vec(), carried[nacc], carried[nacc + 1]);
        for s in 0..u as i64 {
            acc = step(b, &acc, ak, b0, (s, s * b_stride));
        }
        acc.push(plus(b, ak, u as i64));
        acc.push(plus(b, b0, u as i64 * b_stride));
        acc
    });
    let mut accs = out[..nacc].to_vec();
    for s in 0..(k % u) as i64 {
        accs = step(b, &accs, out[nacc], out[nacc + 1], (s, s * b_stride));
    }
    for (&e, &v) in r_at.iter().zip(accs.iter()) {
        b.store(rb, e, v);
    }
}

/// `R += A · Bᵀᵀ` on row-major f32 buffers A (m × k), Bt (n × k: B transposed) and R (m × n),
/// as dot products along k: `mr` rows by `nc` columns of vector accumulators, each summing
/// `lanes` interleaved partial products that are added up at the end.
fn dot_mma(
    b: &mut KernelBuilder,
    (ab, bb, rb): (Buf, Buf, Buf),
    (m, n, k): (u32, u32, u32),
    lanes: u32,
    mr: u32,
    nc: u32,
    fma: bool,
) {
    // `mr × nc` vector accumulators, plus `mr` A vectors and `nc` B vectors, live at once.
    blocks(b, m, mr, &|b, i0, rows| {
        blocks(b, n, nc, &|b, j0, cols| {
            dot_micro(b, (ab, bb, rb), (n, k), i0, rows, j0, cols, lanes, fma)
        })
    });
}

/// One block of `rows × cols` dot products at (i0, j0).
#[allow(clippy::too_many_arguments)]
fn dot_micro(
    b: &mut KernelBuilder,
    (ab, bb, rb): (Buf, Buf, Buf),
    (n, k): (u32, u32),
    i0: Val,
    rows: u32,
    j0: Val,
    cols: u32,
    lanes: u32,
    fma: bool,
) {
    let kk = b.index(k as i64);
    let nn = b.index(n as i64);
    let row_base = |b: &mut KernelBuilder, base: Val, r: u32| {
        let rv = b.index(r as i64);
        let i = b.add(base, rv);
        b.mul(i, kk)
    };
    let a_rows: Vec<Val> = (0..rows).map(|r| row_base(b, i0, r)).collect();
    let b_rows: Vec<Val> = (0..cols).map(|c| row_base(b, j0, c)).collect();
    let k_vec = k / lanes * lanes;
    let l = lanes as u16;
    let zero = b.const_float(Ty::vector(DType::F32, l), 0.0);
    let (a0, b0) = (a_rows[0], b_rows[0]);
    let mut sums: Vec<Val> = if lanes > 1 && k_vec > 0 {
        let init = vec![zero; (rows * cols) as usize];
        let (lo, hi, st) = (b.index(0), b.index(k_vec as i64), b.index(lanes as i64));
        let accs = b.for_loop(lo, hi, st, &init, |b, kv, acc| {
            // One index into A and one into B per step; the other rows are constants away
            // (rows are `k` apart), which backends fold into the addresses' displacements.
            let ak = b.add(a0, kv);
            let bk = b.add(b0, kv);
            let av: Vec<Val> = (0..rows)
                .map(|r| {
                    let e = plus(b, ak, r as i64 * k as i64);
                    b.load(ab, e, l)
                })
                .collect();
            let bv: Vec<Val> = (0..cols)
                .map(|c| {
                    let e = plus(b, bk, c as i64 * k as i64);
                    b.load(bb, e, l)
                })
                .collect();
            let mut next = Vec::with_capacity(acc.len());
            for r in 0..rows as usize {
                for c in 0..cols as usize {
                    next.push(mul_add(b, av[r], bv[c], acc[r * cols as usize + c], fma));
                }
            }
            next
        });
        accs.iter()
            .map(|&v| b.reduce_lanes(ReduceOp::Add, v))
            .collect()
    } else {
        vec![b.const_float(Ty::F32, 0.0); (rows * cols) as usize]
    };
    let tail = if lanes > 1 { k_vec } else { 0 };
    if tail < k {
        let (lo, hi, one) = (b.index(tail as i64), b.index(k as i64), b.index(1));
        sums = b.for_loop(lo, hi, one, &sums, |b, kv, acc| {
            let mut next = Vec::with_capacity(acc.len());
            for r in 0..rows as usize {
                let ea = b.add(a_rows[r], kv);
                let x = b.load(ab, ea, 1);
                for c in 0..cols as usize {
                    let eb = b.add(b_rows[c], kv);
                    let y = b.load(bb, eb, 1);
                    next.push(mul_add(b, x, y, acc[r * cols as usize + c], fma));
                }
            }
            next
        });
    }
    for r in 0..rows {
        let rv = b.index(r as i64);
        let i = b.add(i0, rv);
        let ri = b.mul(i, nn);
        for c in 0..cols {
            let cv = b.index(c as i64);
            let j = b.add(j0, cv);
            let e = b.add(ri, j);
            let old = b.load(rb, e, 1);
            let s = b.add(old, sums[(r * cols + c) as usize]);
            b.store(rb, e, s);
        }
    }
}
