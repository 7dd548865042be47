//! The row path of the npu-sim code generator: a *row tile program* (the one
//! `tessera-lower`'s `rows.rs` writes for Softmax, LogSoftmax and LayerNormalization along the
//! last axis) compiled to blocks of rows that stream through the Unified Buffer, with every
//! reduction one row-form `VRED` and every elementwise step one `VEC` over the whole block,
//! instead of lane by lane on the scalar unit. Start at [`recognise`], then [`compile`].
//!
//! **What is recognised.** A kernel of parameters only with a 1-D grid whose body is index
//! arithmetic and, on tiles: `tile.load`s of `R × L` blocks of rows (a view `[N, L]`, strides
//! `[L, 1]`, at `[program_id 0 · R, 0]`) and of one `1 × L` parameter row (at `[0, 0]`);
//! splatted f32 constants; f32 tile arithmetic (`add sub mul div rem min max`, `neg abs sqrt
//! floor ceil round trunc`, `exp`, `log`), float casts; `tile.reduce add/mul/min/max rows` of
//! a block (an `R × 1` column); `tile.broadcast` of a column or of the parameter row; and
//! `tile.store`s of blocks (or columns) into views of the same rows. Anything else returns
//! `None` and the kernel is scalarised ([`crate::codegen`]), which is exact.
//!
//! **What is generated.** Values are classified by where they come from: *uniform* (the
//! constants: one element each), *invariant* (the parameter row and what is computed from it
//! only: replicated to all `R` rows once, in a prologue), *block* values (`R` rows of `Lp`
//! elements: `L` rounded up to 32 bytes of f32, the padding zero-filled by the DMA that loads
//! the rows) and *column* values (`R` elements 32 bytes apart: the layout the row forms write
//! and read). For every block of rows, MTE2 copies the rows GM → UB in one 2-D DMA per loaded
//! parameter, the Vector unit runs one `VEC` per elementwise operation over the whole block
//! (uniform operands as the `VS` form), one row-form `VRED` (ISA 0.4: a reduction per row, the
//! results 32 bytes apart) for a reduction, and one row-broadcast `VEC` (ISA 0.4: row `j` meets
//! column element `j`) where a column is broadcast along its rows; MTE3 copies each stored block
//! UB → GM.
//! Loaded and stored blocks have two UB slots each with "full" and "free" flags between the
//! pipes (as in [`crate::stream`]), so the loads, arithmetic and stores of neighbouring blocks
//! overlap; other block and column values share single slots by liveness. The block is the
//! kernel's `R` rows, halved until its layout fits the chip's UB.
//!
//! Exactness: each f32 operation is the Vector unit's IEEE operation, casts are `VCAST`
//! (round to nearest even), `exp`/`log` are `VEXP`/`VLN` (within an f32 ulp, as on the
//! streaming path). `VRED` folds a row in increasing column order as `tile.reduce` does; its
//! sum starts from +0.0 where `tile.reduce` starts from the first element, which differs only
//! in the sign of the sum of a row of negative zeros.

use std::collections::HashMap;

use tessera_ir::DType as KDType;
use tessera_kir::{Access, Axis, BinOp, InstKind, Kernel, MathFn, ReduceOp, Scalar, Val, View};

use crate::blob::Blob;
use crate::codegen::{param_slots, CgError};
use crate::config::TargetConfig;
use crate::cube::Asm;
use crate::isa::{AluOp, Cond, DType, Instr, Mem, Pipe, RedOp, VecForm, VecOp};
use crate::stream::{dma, round32, vec};

type R<T> = Result<T, CgError>;

/// Column values sit this many elements apart (32 bytes of f32).
const COL_STRIDE: u64 = 8;

/// Where a value's elements are, and so how wide an operation on it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Class {
    Uniform,
    Invariant,
    Column,
    Block,
}

#[derive(Clone, Debug)]
enum Op {
    /// `R` rows of parameter `param` (a block).
    LoadRows(usize),
    /// The `1 × L` row of parameter `param`, replicated to `R` rows (invariant).
    LoadRow(usize),
    Const(f32),
    Bin(VecOp, usize, usize),
    /// A block operand and a column broadcast along its rows: one `VS` per row.
    RowBin(VecOp, usize, usize),
    Un(VecOp, usize),
    Red(RedOp, usize),
}

#[derive(Clone, Debug)]
struct Node {
    op: Op,
    dt: DType,
    class: Class,
}

/// A recognised row tile program.
#[derive(Clone, Debug)]
pub struct Rows {
    nodes: Vec<Node>,
    /// (parameter, node) of every `tile.store`.
    stores: Vec<(usize, usize)>,
    /// Rows in all, elements per row, rows per block.
    n: u64,
    l: u64,
    r: u64,
}

fn isa(d: KDType) -> Option<DType> {
    match d {
        KDType::F32 => Some(DType::F32),
        KDType::F16 => Some(DType::F16),
        KDType::BF16 => Some(DType::Bf16),
        _ => None,
    }
}

/// A tile value as the builder sees it: a node, or a column broadcast along the rows.
#[derive(Clone, Copy, Debug)]
enum Ref {
    Node(usize),
    Bcast(usize),
}

struct Builder<'k> {
    k: &'k Kernel,
    defs: HashMap<Val, &'k InstKind>,
    nodes: Vec<Node>,
    map: HashMap<Val, Ref>,
    n: u64,
    l: u64,
    r: u64,
}

impl Builder<'_> {
    fn eval(&self, v: Val, pid: i64, depth: u32) -> Option<i64> {
        if depth > 64 || !self.k.ty(v).is_scalar() {
            return None;
        }
        match self.defs.get(&v)? {
            InstKind::Const(Scalar::Int(x)) => Some(*x),
            InstKind::ProgramId(0) => Some(pid),
            InstKind::Binary(op, a, b) => {
                let (a, b) = (
                    self.eval(*a, pid, depth + 1)?,
                    self.eval(*b, pid, depth + 1)?,
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

    /// Whether `v` equals `pid · coef` at every grid point.
    fn is(&self, v: Val, coef: i64, grid: u64) -> bool {
        (0..grid as i64).all(|p| self.eval(v, p, 0) == Some(p * coef))
    }

    fn push(&mut self, op: Op, dt: DType) -> usize {
        let class = match &op {
            Op::LoadRows(_) => Class::Block,
            Op::LoadRow(_) => Class::Invariant,
            Op::Const(_) => Class::Uniform,
            Op::Bin(_, a, b) => self.nodes[*a].class.max(self.nodes[*b].class),
            Op::RowBin(..) => Class::Block,
            Op::Un(_, a) => self.nodes[*a].class,
            Op::Red(..) => Class::Column,
        };
        self.nodes.push(Node { op, dt, class });
        self.nodes.len() - 1
    }

    fn node(&self, v: Val) -> Option<usize> {
        match self.map.get(&v)? {
            Ref::Node(n) => Some(*n),
            Ref::Bcast(_) => None,
        }
    }

    /// Whether `view` with `origin` is the block of rows of a `[N, L]` buffer this instance
    /// owns (`rows = true`: `R × L` at `[pid · R, 0]`; `cols = 1` for a column of one element per
    /// row), or the parameter row (`rows = false`: `1 × L` at `[0, 0]`).
    fn view_ok(&self, view: &View, origin: &[Val], cols: u64, rows: bool) -> bool {
        let grid = self.k.grid.first().copied().unwrap_or(1);
        let zero = |v: Val| self.is(v, 0, grid);
        let (dims, strides): (Vec<u64>, Vec<i64>) = if rows {
            (vec![self.n, cols], vec![cols as i64, 1])
        } else {
            (vec![1, self.l], vec![self.l as i64, 1])
        };
        let param = view.buf.0 as usize;
        let decl = &self.k.bufs[param];
        let need = dims[0] * dims[1];
        param < self.k.num_params
            && view.dims == dims
            && (view.strides == strides || !rows && view.strides[1] == 1)
            && zero(view.offset)
            && origin.len() == 2
            && zero(origin[1])
            && if rows {
                self.is(origin[0], self.r as i64, grid)
            } else {
                zero(origin[0])
            }
            && decl.len >= need
    }

    fn inst(&mut self, kind: &InstKind, res: Option<Val>) -> Option<()> {
        let ty = res.map(|r| self.k.ty(r));
        let f32_tile = ty.is_some_and(|t| t.elem == KDType::F32 && !t.is_scalar());
        let node = match kind {
            InstKind::Const(_) | InstKind::ProgramId(_) => return Some(()),
            InstKind::Binary(..) if ty.is_some_and(|t| t.is_scalar()) => return Some(()),
            InstKind::Splat(s) => {
                let Some(InstKind::Const(c)) = self.defs.get(s) else {
                    return None;
                };
                if self.k.ty(*s) != tessera_kir::Ty::F32 {
                    return None;
                }
                let f = match c {
                    Scalar::Float(f) => *f as f32,
                    Scalar::Int(i) => *i as f32,
                };
                Ref::Node(self.push(Op::Const(f), DType::F32))
            }
            InstKind::TileLoad { src, .. } => {
                let t = ty?;
                let dt = isa(t.elem)?;
                let param = src.view.buf.0 as usize;
                if self.k.bufs.get(param)?.dtype != t.elem
                    || self.k.bufs[param].access != Access::Read
                {
                    return None;
                }
                let (rows, cols) = t.tile_shape()?;
                if cols as u64 != self.l {
                    return None;
                }
                if rows as u64 == self.r && self.view_ok(&src.view, &src.origin, self.l, true) {
                    Ref::Node(self.push(Op::LoadRows(param), dt))
                } else if rows == 1 && self.view_ok(&src.view, &src.origin, self.l, false) {
                    Ref::Node(self.push(Op::LoadRow(param), dt))
                } else {
                    return None;
                }
            }
            InstKind::Binary(op, a, b) if f32_tile => {
                let vop = crate::codegen::f32_binary_vec_op(*op)?;
                let commutes = matches!(op, BinOp::Add | BinOp::Mul | BinOp::Min | BinOp::Max);
                match (*self.map.get(a)?, *self.map.get(b)?) {
                    (Ref::Node(x), Ref::Node(y)) => {
                        // A uniform first operand goes second where that is the same operation.
                        let (x, y) = if commutes
                            && self.nodes[x].class == Class::Uniform
                            && self.nodes[y].class != Class::Uniform
                        {
                            (y, x)
                        } else {
                            (x, y)
                        };
                        let (cx, cy) = (self.nodes[x].class, self.nodes[y].class);
                        // Blocks and columns meet only through a broadcast.
                        let ok = cx == cy
                            || cx == Class::Uniform
                            || cy == Class::Uniform
                            || (cx.max(cy) == Class::Block && cx.min(cy) == Class::Invariant);
                        if !ok {
                            return None;
                        }
                        Ref::Node(self.push(Op::Bin(vop, x, y), DType::F32))
                    }
                    (Ref::Node(x), Ref::Bcast(c)) | (Ref::Bcast(c), Ref::Node(x))
                        if matches!(self.map.get(a), Some(Ref::Node(_))) || commutes =>
                    {
                        if self.nodes[x].class != Class::Block || self.nodes[c].dt != DType::F32 {
                            return None;
                        }
                        Ref::Node(self.push(Op::RowBin(vop, x, c), DType::F32))
                    }
                    _ => return None,
                }
            }
            InstKind::Unary(op, a) if f32_tile => {
                let vop = crate::codegen::f32_unary_vec_op(*op)?;
                let a = self.node(*a)?;
                Ref::Node(self.push(Op::Un(vop, a), DType::F32))
            }
            InstKind::Math(f, args) if f32_tile && args.len() == 1 => {
                let vop = match f {
                    MathFn::Exp => VecOp::Exp,
                    MathFn::Log => VecOp::Ln,
                    _ => return None,
                };
                let a = self.node(args[0])?;
                Ref::Node(self.push(Op::Un(vop, a), DType::F32))
            }
            // `saturate` changes only casts into float8/float4, which `isa` refuses: between
            // f32, f16 and bf16 it is `VCAST`'s rounding either way.
            InstKind::Cast(x, _) => {
                let (from, to) = (self.k.ty(*x), ty?);
                let (fd, td) = (isa(from.elem)?, isa(to.elem)?);
                let a = self.node(*x)?;
                if fd == td {
                    Ref::Node(a)
                } else {
                    Ref::Node(self.push(Op::Un(VecOp::Cast, a), td))
                }
            }
            InstKind::TileReduce(op, Axis::Rows, x) if f32_tile => {
                let a = self.node(*x)?;
                if self.nodes[a].class != Class::Block {
                    return None;
                }
                let rop = match op {
                    ReduceOp::Add => RedOp::Sum,
                    ReduceOp::Mul => RedOp::Prod,
                    ReduceOp::Min => RedOp::Min,
                    ReduceOp::Max => RedOp::Max,
                };
                Ref::Node(self.push(Op::Red(rop, a), DType::F32))
            }
            InstKind::TileBroadcast(x) => {
                let t = ty?;
                let a = self.node(*x)?;
                if (t.rows as u64, t.lanes as u64) != (self.r, self.l) {
                    return None;
                }
                match self.nodes[a].class {
                    Class::Column => Ref::Bcast(a),
                    Class::Invariant | Class::Uniform => Ref::Node(a),
                    Class::Block => return None,
                }
            }
            _ => return None,
        };
        self.map.insert(res?, node);
        Some(())
    }
}

/// Whether the row path takes `kernel` (see the module doc), and its program.
pub fn recognise(kernel: &Kernel) -> Option<Rows> {
    if kernel.bufs.len() != kernel.num_params || kernel.grid.len() != 1 {
        return None;
    }
    // The shape: the first block load gives R and L; its view gives N.
    let (n, l, r) = kernel.body.insts.iter().find_map(|i| match &i.kind {
        InstKind::TileLoad { src, .. } => {
            let (rows, cols) = kernel.ty(*i.results.first()?).tile_shape()?;
            (rows > 1 || src.view.dims.first() != Some(&1)).then_some(())?;
            let n = *src.view.dims.first()?;
            Some((n, cols as u64, rows as u64))
        }
        _ => None,
    })?;
    if n == 0 || l == 0 || r == 0 || kernel.grid[0] != n.div_ceil(r) {
        return None;
    }
    let mut b = Builder {
        k: kernel,
        defs: HashMap::new(),
        nodes: Vec::new(),
        map: HashMap::new(),
        n,
        l,
        r,
    };
    let mut stores = Vec::new();
    for inst in &kernel.body.insts {
        let res = inst.results.first().copied();
        match &inst.kind {
            InstKind::Const(_) | InstKind::ProgramId(_) | InstKind::Binary(..)
                if res.is_some_and(|v| kernel.ty(v).is_scalar()) =>
            {
                b.defs.insert(res?, &inst.kind);
                b.inst(&inst.kind, res)?;
            }
            InstKind::TileStore { dst, value } => {
                let v = b.node(*value)?;
                let param = dst.view.buf.0 as usize;
                let decl = kernel.bufs.get(param)?;
                let t = kernel.ty(*value);
                let cols = match b.nodes[v].class {
                    Class::Block => l,
                    Class::Column => 1,
                    _ => return None,
                };
                if decl.access == Access::Read
                    || matches!(b.nodes[v].op, Op::LoadRows(_))
                    || isa(decl.dtype)? != b.nodes[v].dt
                    || t.tile_shape()? != (r as u32, cols as u32)
                    || !b.view_ok(&dst.view, &dst.origin, cols, true)
                    || stores.iter().any(|&(p, _)| p == param)
                {
                    return None;
                }
                stores.push((param, v));
            }
            k => b.inst(k, res)?,
        }
    }
    if stores.is_empty() {
        return None;
    }
    Some(Rows {
        nodes: b.nodes,
        stores,
        n,
        l,
        r,
    })
}

/// Registers of the generated program.
mod reg {
    pub const ZERO: u8 = 0;
    pub const ONE: u8 = 1;
    pub const BASE: u8 = 2;
    pub const LEN: u8 = 3;
    pub const N: u8 = 4;
    pub const RB: u8 = 5;
    pub const T: u8 = 6;
    pub const D: u8 = 7;
    pub const S1: u8 = 8;
    pub const S2: u8 = 9;
    pub const C: u8 = 10;
    pub const L: u8 = 11;
    pub const LP: u8 = 12;
    pub const WBLOCK: u8 = 13;
    pub const WCOL: u8 = 14;
    pub const CS: u8 = 15;
}

/// Where a node's value lives in the UB.
#[derive(Clone, Copy, Debug)]
enum Home {
    At(u64),
    /// One of two slots by block parity (loaded and stored blocks).
    Pair([u64; 2]),
}

struct Layout {
    home: Vec<Home>,
    /// A copy of a uniform node at the width of a class, for a first operand.
    dup: HashMap<(usize, Class), u64>,
    /// Column buffers and their dtypes (zeroed once, so their padding lanes are defined).
    cols: Vec<(u64, DType)>,
    /// A zeroed slot.
    zero: u64,
    bytes: u64,
}

impl Rows {
    fn lp(&self) -> u64 {
        self.l.div_ceil(COL_STRIDE) * COL_STRIDE
    }

    fn width(&self, c: Class) -> u64 {
        match c {
            Class::Uniform => 1,
            Class::Column => self.r * COL_STRIDE,
            Class::Invariant | Class::Block => self.r * self.lp(),
        }
    }

    fn operands(op: &Op) -> Vec<usize> {
        match op {
            Op::Bin(_, a, b) | Op::RowBin(_, a, b) => vec![*a, *b],
            Op::Un(_, a) | Op::Red(_, a) => vec![*a],
            _ => vec![],
        }
    }

    fn layout(&self) -> Layout {
        let mut top = 0u64;
        let mut alloc = |bytes: u64| {
            let a = top;
            top += round32(bytes);
            a
        };
        let zero = alloc(32);
        let stored: Vec<usize> = self.stores.iter().map(|s| s.1).collect();
        let mut last_use = vec![0usize; self.nodes.len()];
        for (i, nd) in self.nodes.iter().enumerate() {
            for o in Self::operands(&nd.op) {
                last_use[o] = i;
            }
        }
        let mut dying: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (i, &l) in last_use.iter().enumerate() {
            if l > i && !stored.contains(&i) {
                dying[l].push(i);
            }
        }
        let mut dup = HashMap::new();
        let mut home = Vec::with_capacity(self.nodes.len());
        let mut cols = Vec::new();
        let mut free: HashMap<(Class, u64), Vec<u64>> = HashMap::new();
        let mut pooled = vec![false; self.nodes.len()];
        for (i, nd) in self.nodes.iter().enumerate() {
            let bytes = self.width(nd.class) * nd.dt.size();
            // A uniform first operand of a wider op needs a copy at that width.
            if let Op::Bin(_, a, _) = nd.op {
                if self.nodes[a].class == Class::Uniform && nd.class != Class::Uniform {
                    dup.entry((a, nd.class))
                        .or_insert_with(|| alloc(self.width(nd.class) * 4));
                }
            }
            let h = if matches!(nd.op, Op::LoadRows(_)) || stored.contains(&i) {
                Home::Pair([alloc(bytes), alloc(bytes)])
            } else if matches!(nd.class, Class::Uniform | Class::Invariant) {
                Home::At(alloc(bytes))
            } else {
                for &d in &dying[i] {
                    if pooled[d] {
                        if let Home::At(a) = home[d] {
                            let key = (self.nodes[d].class, self.nodes[d].dt.size());
                            free.entry(key).or_default().push(a);
                        }
                    }
                }
                pooled[i] = true;
                let key = (nd.class, nd.dt.size());
                Home::At(match free.get_mut(&key).and_then(|f| f.pop()) {
                    Some(a) => a,
                    None => alloc(bytes),
                })
            };
            if nd.class == Class::Column {
                match h {
                    Home::At(a) => cols.push((a, nd.dt)),
                    Home::Pair(p) => cols.extend(p.map(|a| (a, nd.dt))),
                }
            }
            home.push(h);
        }
        cols.sort_unstable_by_key(|c| c.0);
        cols.dedup_by_key(|c| c.0);
        Layout {
            home,
            dup,
            cols,
            zero,
            bytes: top,
        }
    }
}

/// The program for a recognised row tile program `s` of `kernel`.
pub fn compile(kernel: &Kernel, s: &Rows, cfg: &TargetConfig) -> R<Blob> {
    use reg::*;
    use Pipe::{Mte2, Mte3, Vec as VecPipe};
    let (params, gm_top) = param_slots(kernel);
    if gm_top > cfg.mem(Mem::Gm).size {
        return Err(CgError::Unsupported(format!(
            "its buffers need {gm_top} bytes of GM, target `{}` has {}",
            cfg.name,
            cfg.mem(Mem::Gm).size
        )));
    }
    let ub = cfg.mem(Mem::Ub).size;
    // The instance's rows are the kernel's business; the block the UB holds is this
    // backend's: halved until its layout fits.
    let mut s = s.clone();
    let lay = loop {
        let lay = s.layout();
        if lay.bytes <= ub {
            break lay;
        }
        if s.r == 1 {
            return Err(CgError::Unsupported(format!(
                "a row of {} elements needs {} bytes of UB, target `{}` has {ub}",
                s.l, lay.bytes, cfg.name
            )));
        }
        s.r = s.r.div_ceil(2);
    };
    let s = &s;
    let lp = s.lp();
    let home = |i: usize, slot: usize| match lay.home[i] {
        Home::At(a) => a,
        Home::Pair(p) => p[slot],
    };
    let mut a = Asm::new();
    a.li(ZERO, 0)?;
    a.li(ONE, 1)?;
    a.li(N, s.n as i64)?;
    a.li(RB, s.r as i64)?;
    a.li(L, s.l as i64)?;
    a.li(LP, lp as i64)?;
    a.li(WBLOCK, s.width(Class::Block) as i64)?;
    a.li(WCOL, s.width(Class::Column) as i64)?;
    let width_reg = |c: Class| match c {
        Class::Uniform => ONE,
        Class::Column => WCOL,
        _ => WBLOCK,
    };
    // Prologue: the zero slot, zeroed column buffers, constants, parameter rows (MTE2).
    a.li(T, 0)?;
    a.li(D, lay.zero as i64)?;
    a.emit(Instr::St {
        mem: Mem::Ub,
        dt: DType::F32,
        rs: T,
        base: D,
        offset: 0,
    });
    for &(c, dt) in &lay.cols {
        a.li(D, c as i64)?;
        a.li(S1, lay.zero as i64)?;
        // The zero slot's first element is zero in every float dtype.
        a.emit(Instr::Vec {
            op: VecOp::Dup,
            form: VecForm::Unary,
            sdt: dt,
            ddt: dt,
            dst: D,
            src1: S1,
            src2: None,
            len: WCOL,
            mask: None,
            cond: None,
        });
    }
    for (i, nd) in s.nodes.iter().enumerate() {
        if let Op::Const(f) = nd.op {
            a.li(T, f.to_bits() as i32 as i64)?;
            a.li(D, home(i, 0) as i64)?;
            a.emit(Instr::St {
                mem: Mem::Ub,
                dt: DType::F32,
                rs: T,
                base: D,
                offset: 0,
            });
        }
    }
    let mut pro_dma = false;
    for (i, nd) in s.nodes.iter().enumerate() {
        if let Op::LoadRow(p) = nd.op {
            // The row, once per block row, zero-padded to `Lp`.
            for r in 0..s.r {
                a.li(D, (home(i, 0) + r * lp * nd.dt.size()) as i64)?;
                a.li(T, params[p].addr as i64)?;
                dma(
                    &mut a,
                    Mem::Gm,
                    Mem::Ub,
                    nd.dt,
                    [D, T, ONE, L, L, LP, ONE, LP],
                );
            }
            pro_dma = true;
        }
    }
    if pro_dma {
        a.set(Mte2, VecPipe, 2);
        a.wait(Mte2, VecPipe, 2);
    }
    // The scalar unit's stores above must land before the Vector unit reads them.
    a.emit(Instr::Barrier);
    for (&(u, c), &addr) in &lay.dup {
        vec(
            &mut a,
            VecOp::Dup,
            VecForm::Unary,
            DType::F32,
            DType::F32,
            addr,
            home(u, 0),
            None,
            width_reg(c),
            None,
        )?;
    }
    for (i, nd) in s.nodes.iter().enumerate() {
        if matches!(nd.class, Class::Uniform | Class::Invariant) {
            op(&mut a, s, &lay, i, 0, &home, width_reg)?;
        }
    }
    let loads: Vec<(usize, usize)> = s
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, nd)| match nd.op {
            Op::LoadRows(p) => Some((p, i)),
            _ => None,
        })
        .collect();
    for slot in 0..2 {
        if !loads.is_empty() {
            a.set(VecPipe, Mte2, slot);
        }
        a.set(Mte3, VecPipe, slot);
    }
    a.li(BASE, 0)?;
    let top = a.label();
    let done = a.label();
    a.bind(top);
    for slot in 0..2usize {
        let id = slot as u32;
        a.branch(Cond::Ge, BASE, N, done);
        a.alu(AluOp::Sub, LEN, N, BASE);
        a.alu(AluOp::Min, LEN, LEN, RB);
        if !loads.is_empty() {
            a.wait(VecPipe, Mte2, id);
            for &(p, i) in &loads {
                let dt = s.nodes[i].dt;
                a.alui(AluOp::Mul, T, BASE, (s.l * dt.size()) as i64)?;
                a.alui(AluOp::Add, T, T, params[p].addr as i64)?;
                a.li(D, home(i, slot) as i64)?;
                // The real rows, zero-filled to `R × Lp`.
                dma(&mut a, Mem::Gm, Mem::Ub, dt, [D, T, LEN, L, L, LP, RB, LP]);
            }
            a.set(Mte2, VecPipe, id);
            a.wait(Mte2, VecPipe, id);
        }
        a.wait(Mte3, VecPipe, id);
        for (i, nd) in s.nodes.iter().enumerate() {
            if matches!(nd.class, Class::Block | Class::Column) && !matches!(nd.op, Op::LoadRows(_))
            {
                op(&mut a, s, &lay, i, slot, &home, width_reg)?;
            }
        }
        if !loads.is_empty() {
            a.set(VecPipe, Mte2, id);
        }
        a.set(VecPipe, Mte3, id);
        a.wait(VecPipe, Mte3, id);
        for &(p, i) in &s.stores {
            let nd = &s.nodes[i];
            let (cols, sstride) = if nd.class == Class::Block {
                (s.l, lp)
            } else {
                (1, COL_STRIDE)
            };
            a.alui(AluOp::Mul, T, BASE, (cols * nd.dt.size()) as i64)?;
            a.alui(AluOp::Add, T, T, params[p].addr as i64)?;
            a.li(D, home(i, slot) as i64)?;
            a.li(C, cols as i64)?;
            a.li(CS, sstride as i64)?;
            dma(
                &mut a,
                Mem::Ub,
                Mem::Gm,
                nd.dt,
                [T, D, LEN, C, CS, C, LEN, C],
            );
        }
        a.set(Mte3, VecPipe, id);
        a.alu(AluOp::Add, BASE, BASE, RB);
    }
    a.branch(Cond::Eq, ZERO, ZERO, top);
    a.bind(done);
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

/// Node `i` computed into its home for block parity `slot`.
fn op(
    a: &mut Asm,
    s: &Rows,
    lay: &Layout,
    i: usize,
    slot: usize,
    home: &dyn Fn(usize, usize) -> u64,
    width: impl Fn(Class) -> u8,
) -> R<()> {
    use reg::*;
    let nd = &s.nodes[i];
    let dst = home(i, slot);
    match &nd.op {
        Op::LoadRows(_) | Op::LoadRow(_) | Op::Const(_) => Ok(()),
        Op::Bin(vop, x, y) => {
            let (cx, cy) = (s.nodes[*x].class, s.nodes[*y].class);
            let src1 = if cx == Class::Uniform && nd.class != Class::Uniform {
                *lay.dup
                    .get(&(*x, nd.class))
                    .ok_or_else(|| CgError::Internal(format!("row node {x} has no copy")))?
            } else {
                home(*x, slot)
            };
            let form = if cy == Class::Uniform && nd.class != Class::Uniform {
                VecForm::VS
            } else {
                VecForm::VV
            };
            vec(
                a,
                *vop,
                form,
                DType::F32,
                nd.dt,
                dst,
                src1,
                Some(home(*y, slot)),
                width(nd.class),
                None,
            )
        }
        Op::RowBin(vop, x, c) => {
            // One row-broadcast `VEC` (ISA 0.4) over the block: row `j` of `Lp` elements
            // meets column element `j`, 32 bytes apart.
            a.li(D, dst as i64)?;
            a.li(S1, home(*x, slot) as i64)?;
            a.li(S2, home(*c, slot) as i64)?;
            a.emit(Instr::Vrow {
                op: *vop,
                dt: DType::F32,
                dst: D,
                src1: S1,
                src2: S2,
                len: WBLOCK,
                row: LP,
            });
            Ok(())
        }
        Op::Un(vop, x) => {
            let sdt = s.nodes[*x].dt;
            vec(
                a,
                *vop,
                VecForm::Unary,
                sdt,
                nd.dt,
                dst,
                home(*x, slot),
                None,
                width(nd.class),
                None,
            )
        }
        Op::Red(rop, x) => {
            // One row-form `VRED` (ISA 0.4): `R` rows of `L` elements `Lp` apart, one result
            // per 32 bytes of the column.
            a.li(D, dst as i64)?;
            a.li(S1, home(*x, slot) as i64)?;
            a.emit(Instr::VredRows {
                op: *rop,
                dt: DType::F32,
                dst: D,
                src: S1,
                len: L,
                rows: RB,
                stride: LP,
            });
            Ok(())
        }
    }
}
