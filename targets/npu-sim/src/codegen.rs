//! Kernel IR (the backend subset) → npu-sim ISA. Start at [`compile`]; then every kernel-IR
//! construct has one section below, headed ``// ==== `name` ====``, in the order of `InstKind`.
//!
//! The model is a "values in the Unified Buffer" machine, the way a first backend for a
//! Da Vinci-style core is written:
//! - **Every SSA value has a home slot in the UB**, 32-byte aligned (the UB's access rule), of
//!   `lanes × element size` bytes. A bool lane is one byte, 0 or 1. Constants are written once
//!   in a prologue; `bitcast` results and `for` results share their operand's slot.
//! - **f32 arithmetic runs on the Vector unit** (`VEC`/`VRED` on the slots, one instruction per
//!   kernel-IR instruction, `len` = lanes), so it is exact IEEE f32. **Integers, bools and
//!   indices run on the scalar unit**, lane by lane: `LD` the operands from their slots into
//!   64-bit registers (sign- or zero-extended from their width), compute, `ST` the low bits back,
//!   which is exactly kernel IR's wrap-around semantics.
//! - **Loads and stores** of kernel buffers are scalar `LD`/`ST` of GM, element by element. The
//!   parameters live at GM addresses fixed at compile time (the blob records them), so
//!   addresses are immediates. Local and shared buffers live in the UB after the slots, or in
//!   GM scratch when the UB is full; they are zeroed at the start of every program instance.
//! - **The grid** is a loop nest around the body: one program, one core.
//! - **Synchronisation**: the scalar unit issues in order, so anything it writes before a VEC
//!   instruction is visible to it; the reverse needs a `BARRIER`. The generator tracks which UB
//!   bytes Vector instructions touched since the last barrier and emits one before the scalar
//!   unit reads or writes any of them, and at control-flow edges where Vector work is pending.
//!
//! - **The Cube**: a buffer `mma` whose dtype pair the chip has, on parameters with unit column
//!   stride that fit the buffers (`cube_mma_ok`), is kept by the compiler and becomes DMA of A and
//!   B into L1 (zero-padded to tile multiples) and on to L0A/L0B, one `MMA`, the product copied
//!   L0C → UB and added to the old C on the Vector unit, and a DMA back to GM, with a flag pair
//!   between each pipe and the next. From C = 0 this is exactly `mma`'s meaning; otherwise C is
//!   added once at the end, a reassociation within f32 tolerance (exact for i32).
//!
//! f64 values are refused (the chip has no f64 unit), as is anything that does not fit the UB.

use std::collections::HashMap;

use tessera_ir::DType as KDType;
use tessera_kir::{
    BinOp, Block, Buf, CmpOp, Inst, InstKind, Kernel, ReduceOp, Scalar, Space, TileRef, Ty, UnOp,
    Val,
};

use crate::blob::{Blob, ParamSlot};
use crate::config::TargetConfig;
use crate::isa::{AluOp, Cond, DType, Instr, Mem, RedOp, VecForm, VecOp};
use crate::{GM_BASE, GM_BUFFER_ALIGN};

/// Why a kernel did not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgError {
    /// Unsupported on this target: a dtype the chip lacks, or a kernel too big for its buffers.
    #[error("{0}")]
    Unsupported(String),
    /// A compiler bug: the kernel is outside the backend subset or malformed.
    #[error("internal: {0}")]
    Internal(String),
}

type R<T> = Result<T, CgError>;

/// Registers the generated code reserves. `r0` holds 0 for the whole program.
const ZERO: u8 = 0;
/// Operand registers of VEC/VRED: dst, src1, src2, len, cond.
const V_DST: u8 = 1;
const V_SRC1: u8 = 2;
const V_SRC2: u8 = 3;
const V_LEN: u8 = 4;
const V_COND: u8 = 5;
/// Scalar temporaries.
const T0: u8 = 6;
const T1: u8 = 7;
const T2: u8 = 8;
const T3: u8 = 9;
/// Grid counters, one per axis, and their limits.
const GRID: [u8; 3] = [28, 29, 30];
const GRID_LIM: u8 = 27;

const SLOT_ALIGN: u64 = 32;

/// Where a kernel buffer lives.
#[derive(Clone, Copy, Debug)]
struct Place {
    mem: Mem,
    addr: u64,
    bytes: u64,
}

/// The ISA dtype a kernel-IR element is loaded and stored as (f32 as its bits).
fn isa_dtype(d: KDType) -> R<DType> {
    Ok(match d {
        KDType::Bool | KDType::U8 => DType::U8,
        KDType::I8 => DType::I8,
        KDType::I16 => DType::I16,
        KDType::U16 => DType::U16,
        KDType::I32 => DType::I32,
        KDType::U32 => DType::U32,
        KDType::I64 => DType::I64,
        KDType::U64 => DType::U64,
        KDType::F32 => DType::F32,
        KDType::F64 => {
            return Err(CgError::Unsupported(
                "f64 values: the npu-sim Vector unit has no f64".into(),
            ))
        }
        other => {
            return Err(CgError::Internal(format!(
                "a {other} value outside the backend subset"
            )))
        }
    })
}

/// An operand of a generated DMA: an immediate, or a register holding the address.
#[derive(Clone, Copy)]
enum Opnd {
    Imm(u64),
    Reg(u8),
}

/// The ISA dtype of a Cube operand.
fn isa_dtype_narrow(d: KDType) -> R<DType> {
    Ok(match d {
        KDType::F16 => DType::F16,
        KDType::BF16 => DType::Bf16,
        KDType::I8 => DType::I8,
        other => return Err(CgError::Internal(format!("no Cube operand dtype {other}"))),
    })
}

/// Whether the buffer `mma` `inst` can run on the Cube of `cfg` as one `MMA`: its dtype pair
/// is in the chip's `[mma]` table, its operands are kernel parameters (in GM) with unit column
/// stride and row strides no shorter than the rows, and the padded blocks fit L1, L0A, L0B,
/// L0C and a quarter of the UB. Otherwise `expand-mma` makes loops of it (on the Vector unit).
pub fn cube_mma_ok(k: &Kernel, inst: &Inst, cfg: &TargetConfig) -> bool {
    let InstKind::Mma {
        a,
        b,
        c,
        m,
        n,
        k: kk,
        a_ty,
        b_ty,
        acc,
    } = &inst.kind
    else {
        return false;
    };
    let Some(s) = cfg.desc.mma_pair(*a_ty, *b_ty, *acc) else {
        return false;
    };
    let (Ok(adt), Ok(cdt)) = (isa_dtype_narrow(*a_ty), isa_dtype(*acc)) else {
        return false;
    };
    let params = k.num_params as u32;
    let unit = [a, b, c]
        .iter()
        .all(|t| t.buf.0 < params && t.col_stride == 1);
    let (m, n, kk) = (*m as u64, *n as u64, *kk as u64);
    let rows_ok = a.row_stride >= kk as i64 && b.row_stride >= n as i64 && c.row_stride >= n as i64;
    let (mp, np, kp) = (
        m.div_ceil(s.m as u64) * s.m as u64,
        n.div_ceil(s.n as u64) * s.n as u64,
        kk.div_ceil(s.k as u64) * s.k as u64,
    );
    let (asz, csz) = (adt.size(), cdt.size());
    let fits = mp * kp * asz + 32 + kp * np * asz <= cfg.mem(Mem::L1).size
        && mp * kp * asz <= cfg.mem(Mem::L0a).size
        && kp * np * asz <= cfg.mem(Mem::L0b).size
        && mp * np * csz <= cfg.mem(Mem::L0c).size
        && 2 * m * n * csz <= cfg.mem(Mem::Ub).size / 4;
    unit && rows_ok && fits && m > 0 && n > 0 && kk > 0
}

/// The GM place of every parameter of `k` (from `GM_BASE`, each on a `GM_BUFFER_ALIGN`
/// boundary) and the first free GM byte after them.
pub(crate) fn param_slots(k: &Kernel) -> (Vec<ParamSlot>, u64) {
    let mut params = Vec::new();
    let mut gm_top = GM_BASE;
    for d in k.params() {
        let bytes = d.dtype.storage_bytes(d.len);
        params.push(ParamSlot {
            addr: gm_top,
            bytes,
            written: d.access != tessera_kir::Access::Read,
        });
        gm_top = (gm_top + bytes.max(1)).div_ceil(GM_BUFFER_ALIGN) * GM_BUFFER_ALIGN;
    }
    (params, gm_top)
}

/// Element bytes in a slot.
fn elem_bytes(d: KDType) -> u64 {
    (d.bits() as u64).div_ceil(8)
}

/// A label, bound to a pc later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Label(usize);

struct Gen<'k> {
    k: &'k Kernel,
    target: String,
    code: Vec<Instr>,
    /// Branch instructions whose target is a label: (pc, label).
    fixups: Vec<(usize, Label)>,
    labels: Vec<Option<u32>>,
    slots: HashMap<Val, u64>,
    places: Vec<Place>,
    /// A UB area for Vector temporaries, as big as the widest value.
    scratch: u64,
    /// A 32-byte slot of zeros (an f32 0.0 and a u8 0 at its start).
    zero: u64,
    /// UB byte ranges Vector instructions touched since the last barrier.
    vec_dirty: Vec<(u64, u64)>,
    ub_top: u64,
    ub_size: u64,
    /// What `LI` last put in the VEC operand registers r1..r5, where known.
    vreg_known: [Option<i32>; 6],
    /// The Cube's tile shapes: (a dtype, acc dtype, m, n, k).
    cube: Vec<(KDType, KDType, u64, u64, u64)>,
}

/// Compiles `k` (in the backend subset) for the chip `cfg` describes.
pub fn compile(k: &Kernel, cfg: &TargetConfig) -> R<Blob> {
    let mut g = Gen {
        k,
        target: cfg.name.clone(),
        code: Vec::new(),
        fixups: Vec::new(),
        labels: Vec::new(),
        slots: HashMap::new(),
        places: Vec::new(),
        scratch: 0,
        zero: 0,
        vec_dirty: Vec::new(),
        ub_top: 0,
        ub_size: 0,
        vreg_known: [None; 6],
        cube: cfg
            .desc
            .mma_pairs()
            .iter()
            .map(|p| (p.a, p.acc, p.m as u64, p.n as u64, p.k as u64))
            .collect(),
    };
    // Slots first: every value, then the shared areas.
    let mut consts = Vec::new();
    g.assign_slots(&k.body, &mut consts)?;
    let widest = k.vals.iter().map(|t| t.lanes as u64 * 8).max().unwrap_or(8);
    g.scratch = g.alloc_ub(widest);
    g.zero = g.alloc_ub(SLOT_ALIGN);
    let ub_size = cfg.mem(Mem::Ub).size;
    g.ub_size = ub_size;
    g.check_ub()?;
    // Parameters in GM at fixed addresses; local buffers in the UB while they fit, else in GM.
    let (params, mut gm_top) = param_slots(k);
    for p in &params {
        g.places.push(Place {
            mem: Mem::Gm,
            addr: p.addr,
            bytes: p.bytes,
        });
    }
    for d in &k.bufs[k.num_params..] {
        let bytes = d.dtype.storage_bytes(d.len).div_ceil(8) * 8;
        if g.ub_top + bytes.div_ceil(SLOT_ALIGN) * SLOT_ALIGN <= ub_size {
            let addr = g.alloc_ub(bytes);
            g.places.push(Place {
                mem: Mem::Ub,
                addr,
                bytes,
            });
        } else {
            if d.space == Space::Shared {
                return Err(CgError::Unsupported(format!(
                    "shared buffer `{}` ({bytes} bytes) does not fit the UB of target `{}` ({ub_size} bytes, {} used by values)",
                    d.name, g.target, g.ub_top
                )));
            }
            g.places.push(Place {
                mem: Mem::Gm,
                addr: gm_top,
                bytes,
            });
            gm_top = (gm_top + bytes.max(1)).div_ceil(GM_BUFFER_ALIGN) * GM_BUFFER_ALIGN;
        }
    }
    let gm_size = cfg.mem(Mem::Gm).size;
    if gm_top > gm_size {
        return Err(CgError::Unsupported(format!(
            "its buffers need {gm_top} bytes of GM, target `{}` has {gm_size}",
            g.target
        )));
    }

    // Prologue: r0 = 0, the zero slot, every constant.
    g.li(ZERO, 0);
    for off in (0..SLOT_ALIGN).step_by(8) {
        g.emit(Instr::St {
            mem: Mem::Ub,
            dt: DType::U64,
            rs: ZERO,
            base: ZERO,
            offset: (g.zero + off) as i32,
        });
    }
    for (v, c) in consts {
        g.constant(v, c)?;
    }
    // The grid loop nest around the body.
    let grid: Vec<u64> = (0..3)
        .map(|i| k.grid.get(i).copied().unwrap_or(1))
        .collect();
    let mut heads = Vec::new();
    for (axis, &n) in grid.iter().enumerate() {
        if n == 0 {
            g.emit(Instr::Halt);
            return g.finish(params, gm_top);
        }
        g.li(GRID[axis], 0);
        let head = g.new_label();
        g.bind(head);
        heads.push(head);
    }
    g.zero_locals()?;
    g.block(&k.body)?;
    g.sync_boundary();
    for axis in (0..3).rev() {
        g.alui(AluOp::Add, GRID[axis], GRID[axis], 1);
        g.li64(GRID_LIM, grid[axis] as i64);
        g.branch(Cond::Lt, GRID[axis], GRID_LIM, heads[axis]);
    }
    g.emit(Instr::Halt);
    g.finish(params, gm_top)
}

impl<'k> Gen<'k> {
    fn check_ub(&self) -> R<()> {
        if self.ub_top > self.ub_size {
            return Err(CgError::Unsupported(format!(
                "its values need {} bytes of UB (one slot per SSA value), target `{}` has {}",
                self.ub_top, self.target, self.ub_size
            )));
        }
        Ok(())
    }

    fn finish(mut self, params: Vec<ParamSlot>, gm_top: u64) -> R<Blob> {
        self.check_ub()?;
        for &(pc, l) in &self.fixups {
            let t = self.labels[l.0].ok_or_else(|| CgError::Internal("unbound label".into()))?;
            match &mut self.code[pc] {
                Instr::Branch { target, .. } | Instr::Jmp { target } => *target = t,
                _ => return Err(CgError::Internal("fixup on a non-branch".into())),
            }
        }
        Ok(Blob {
            params,
            gm_bytes: gm_top,
            program: self.code,
        })
    }

    fn emit(&mut self, i: Instr) {
        self.code.push(i);
    }

    fn new_label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.code.len() as u32);
        // Control may arrive here from elsewhere: forget what the VEC operand registers hold.
        self.vreg_known = [None; 6];
    }

    /// `LI` into a VEC operand register, skipped when it already holds `v` (only `LI` writes
    /// those registers, and the knowledge is dropped at every label).
    fn li_vreg(&mut self, rd: u8, v: i32) {
        if self.vreg_known[rd as usize] != Some(v) {
            self.li(rd, v);
            self.vreg_known[rd as usize] = Some(v);
        }
    }

    fn branch(&mut self, cond: Cond, rs1: u8, rs2: u8, l: Label) {
        self.fixups.push((self.code.len(), l));
        self.emit(Instr::Branch {
            cond,
            rs1,
            rs2,
            target: 0,
        });
    }

    fn jmp(&mut self, l: Label) {
        self.fixups.push((self.code.len(), l));
        self.emit(Instr::Jmp { target: 0 });
    }

    fn li(&mut self, rd: u8, imm: i32) {
        self.emit(Instr::Li { rd, imm });
    }

    /// Loads any 64-bit constant: `LI` when it fits, else built from two halves.
    fn li64(&mut self, rd: u8, v: i64) {
        if let Ok(i) = i32::try_from(v) {
            self.li(rd, i);
            return;
        }
        self.li(rd, (v >> 32) as i32);
        self.alui(AluOp::Shl, rd, rd, 32);
        self.li(T3, v as i32);
        self.alui(AluOp::Shl, T3, T3, 32);
        self.alui(AluOp::Shr, T3, T3, 32);
        self.emit(Instr::Alu {
            op: AluOp::Or,
            rd,
            rs1: rd,
            rs2: T3,
        });
    }

    fn alu(&mut self, op: AluOp, rd: u8, rs1: u8, rs2: u8) {
        self.emit(Instr::Alu { op, rd, rs1, rs2 });
    }

    fn alui(&mut self, op: AluOp, rd: u8, rs1: u8, imm: i32) {
        self.emit(Instr::AluI { op, rd, rs1, imm });
    }

    fn alloc_ub(&mut self, bytes: u64) -> u64 {
        let at = self.ub_top;
        self.ub_top += bytes.max(1).div_ceil(SLOT_ALIGN) * SLOT_ALIGN;
        at
    }

    fn ty(&self, v: Val) -> Ty {
        self.k.ty(v)
    }

    fn slot(&self, v: Val) -> R<u64> {
        self.slots
            .get(&v)
            .copied()
            .ok_or_else(|| CgError::Internal(format!("value %{} has no slot", v.0)))
    }

    fn slot_bytes(&self, v: Val) -> u64 {
        let t = self.ty(v);
        t.lanes as u64 * elem_bytes(t.elem)
    }

    /// Gives every value a slot; `bitcast` and `for` results share their source's. Slots are
    /// reused: a value's slot is free once its live range (below) has ended.
    fn assign_slots(&mut self, b: &Block, consts: &mut Vec<(Val, Scalar)>) -> R<()> {
        let mut lv = Liveness::default();
        lv.walk(self.k, b, &mut Vec::new(), consts)?;
        let ranges = lv.ranges();
        // Linear scan in order of definition; a slot is free for values defined strictly after
        // the last use of its previous value (never in the same instruction: lane-wise scalar
        // code may write a result lane before it reads every operand lane).
        let mut order: Vec<(u32, u32, Val, u64)> = ranges
            .iter()
            .map(|(&root, &(d, e))| (d, e, root, lv.bytes(self.k, root)))
            .collect();
        order.sort_by_key(|&(d, e, v, _)| (d, e, v));
        let mut active: Vec<(u32, u64, u64)> = Vec::new(); // (last use, size, addr)
        let mut free: Vec<(u64, u64)> = Vec::new(); // (size, addr)
        for (d, e, root, bytes) in order {
            let size = bytes.max(1).div_ceil(SLOT_ALIGN) * SLOT_ALIGN;
            active.retain(|&(end, sz, addr)| {
                if end < d {
                    free.push((sz, addr));
                    false
                } else {
                    true
                }
            });
            let addr = match free.iter().position(|&(sz, _)| sz == size) {
                Some(i) => free.swap_remove(i).1,
                None => self.alloc_ub(size),
            };
            active.push((e, size, addr));
            self.slots.insert(root, addr);
        }
        for (&v, &root) in &lv.root {
            let s = self.slot(root)?;
            self.slots.insert(v, s);
        }
        Ok(())
    }

    // ---- synchronisation between the scalar unit and the Vector pipe ----

    fn vec_touch(&mut self, addr: u64, bytes: u64) {
        self.vec_dirty.push((addr, addr + bytes.max(1)));
    }

    /// Before the scalar unit touches UB bytes `[addr, addr + bytes)`.
    fn scalar_touch(&mut self, addr: u64, bytes: u64) {
        let end = addr + bytes.max(1);
        if self.vec_dirty.iter().any(|&(s, e)| s < end && addr < e) {
            self.emit(Instr::Barrier);
            self.vec_dirty.clear();
        }
    }

    /// At a control-flow edge: code on the other side assumes no Vector work is pending.
    fn sync_boundary(&mut self) {
        if !self.vec_dirty.is_empty() {
            self.emit(Instr::Barrier);
            self.vec_dirty.clear();
        }
    }

    // ---- scalar access to slots ----

    /// `LD` lane `lane` of `v` into `rd`.
    fn ld_lane(&mut self, rd: u8, v: Val, lane: u64) -> R<()> {
        let t = self.ty(v);
        let eb = elem_bytes(t.elem);
        let addr = self.slot(v)? + if t.lanes == 1 { 0 } else { lane * eb };
        self.scalar_touch(addr, eb);
        self.emit(Instr::Ld {
            mem: Mem::Ub,
            dt: isa_dtype(t.elem)?,
            rd,
            base: ZERO,
            offset: addr as i32,
        });
        Ok(())
    }

    /// `ST` `rs` into lane `lane` of `v`.
    fn st_lane(&mut self, rs: u8, v: Val, lane: u64) -> R<()> {
        let t = self.ty(v);
        let eb = elem_bytes(t.elem);
        let addr = self.slot(v)? + lane * eb;
        self.scalar_touch(addr, eb);
        self.emit(Instr::St {
            mem: Mem::Ub,
            dt: isa_dtype(t.elem)?,
            rs,
            base: ZERO,
            offset: addr as i32,
        });
        Ok(())
    }

    /// Copies value `src` into the slot of `dst` (same type).
    fn copy_val(&mut self, dst: Val, src: Val) -> R<()> {
        let (ds, ss) = (self.slot(dst)?, self.slot(src)?);
        self.copy_slot(ds, ss, self.ty(src))
    }

    /// Copies a value of type `t` between slots: f32 on the Vector unit, the rest on the scalar unit.
    fn copy_slot(&mut self, ds: u64, ss: u64, t: Ty) -> R<()> {
        if ds == ss {
            return Ok(());
        }
        let n = t.lanes as u64 * elem_bytes(t.elem);
        if t.elem == KDType::F32 {
            return self.vec_raw(
                VecOp::Mov,
                VecForm::Unary,
                DType::U8,
                DType::U8,
                ds,
                ss,
                None,
                n,
                None,
            );
        }
        self.move_bytes(ds, ss, n)
    }

    // ---- Vector instructions on slots ----

    #[allow(clippy::too_many_arguments)]
    fn vec_raw(
        &mut self,
        op: VecOp,
        form: VecForm,
        sdt: DType,
        ddt: DType,
        dst: u64,
        src1: u64,
        src2: Option<u64>,
        len: u64,
        cond: Option<u64>,
    ) -> R<()> {
        self.li_vreg(V_DST, dst as i32);
        self.li_vreg(V_SRC1, src1 as i32);
        if let Some(s2) = src2 {
            self.li_vreg(V_SRC2, s2 as i32);
        }
        if let Some(c) = cond {
            self.li_vreg(V_COND, c as i32);
        }
        self.li_vreg(V_LEN, len as i32);
        self.emit(Instr::Vec {
            op,
            form,
            sdt,
            ddt,
            dst: V_DST,
            src1: V_SRC1,
            src2: src2.map(|_| V_SRC2),
            len: V_LEN,
            mask: None,
            cond: cond.map(|_| V_COND),
        });
        let (ss, ds) = (sdt.size(), ddt.size());
        self.vec_touch(dst, len * ds);
        self.vec_touch(src1, if op == VecOp::Dup { ss } else { len * ss });
        match form {
            VecForm::VV => self.vec_touch(src2.unwrap_or(0), len * ss),
            VecForm::VS => self.vec_touch(src2.unwrap_or(0), ss),
            VecForm::Unary => {}
        }
        if let Some(c) = cond {
            self.vec_touch(c, len);
        }
        Ok(())
    }

    /// An f32 elementwise VEC on whole values.
    fn vec_vals(&mut self, op: VecOp, r: Val, a: Val, b: Option<Val>) -> R<()> {
        let lanes = self.ty(r).lanes as u64;
        let (rs, as_) = (self.slot(r)?, self.slot(a)?);
        let (form, bs) = match b {
            Some(b) => (VecForm::VV, Some(self.slot(b)?)),
            None => (VecForm::Unary, None),
        };
        let ddt = if op.is_compare() {
            DType::U8
        } else {
            DType::F32
        };
        self.vec_raw(op, form, DType::F32, ddt, rs, as_, bs, lanes, None)
    }

    fn block(&mut self, b: &Block) -> R<()> {
        for inst in &b.insts {
            let res = |i: usize| inst.results[i];
            match &inst.kind {
                // ==== `const` ====
                // Written once in the prologue (see `constant`).
                InstKind::Const(_) => {}

                // ==== `program_id` ====
                InstKind::ProgramId(axis) => {
                    let r = GRID
                        .get(*axis as usize)
                        .copied()
                        .ok_or_else(|| CgError::Internal(format!("grid axis {axis}")))?;
                    self.st_lane(r, res(0), 0)?;
                }

                // ==== `unary` ====
                InstKind::Unary(op, x) => self.unary(*op, res(0), *x)?,

                // ==== `binary` ====
                InstKind::Binary(op, a, b) => self.binary(*op, res(0), *a, *b)?,

                // ==== `cmp` ====
                InstKind::Cmp(op, a, b) => self.cmp(*op, res(0), *a, *b)?,

                // ==== `select` ====
                InstKind::Select(c, a, b) => self.select(res(0), *c, *a, *b)?,

                // ==== `cast` ====
                InstKind::Cast(x, _) => self.cast(res(0), *x)?,

                // ==== `bitcast` ====
                // Same bytes, another type: the result shares the operand's slot.
                InstKind::Bitcast(_) => {}

                // ==== `splat` ====
                InstKind::Splat(x) => {
                    let r = res(0);
                    let t = self.ty(r);
                    if t.elem == KDType::F32 {
                        let (rs, xs) = (self.slot(r)?, self.slot(*x)?);
                        self.vec_raw(
                            VecOp::Dup,
                            VecForm::Unary,
                            DType::F32,
                            DType::F32,
                            rs,
                            xs,
                            None,
                            t.lanes as u64,
                            None,
                        )?;
                    } else {
                        self.ld_lane(T0, *x, 0)?;
                        for l in 0..t.lanes as u64 {
                            self.st_lane(T0, r, l)?;
                        }
                    }
                }

                // ==== `extract` ====
                InstKind::Extract(x, lane) => {
                    self.ld_lane(T0, *x, *lane as u64)?;
                    self.st_lane(T0, res(0), 0)?;
                }

                // ==== `reduce` ====
                InstKind::ReduceLanes(op, x) => self.reduce(*op, res(0), *x)?,

                // ==== `load` ====
                InstKind::Load { buf, index } => {
                    let r = res(0);
                    let t = self.ty(r);
                    let dt = isa_dtype(t.elem)?;
                    let eb = elem_bytes(t.elem);
                    let p = self.address(*buf, *index, eb)?;
                    if p.mem == Mem::Ub {
                        self.scalar_touch(p.addr, p.bytes);
                    }
                    for l in 0..t.lanes as u64 {
                        self.emit(Instr::Ld {
                            mem: p.mem,
                            dt,
                            rd: T0,
                            base: T1,
                            offset: (l * eb) as i32,
                        });
                        self.st_lane(T0, r, l)?;
                    }
                }

                // ==== `store` ====
                InstKind::Store { buf, index, value } => {
                    let t = self.ty(*value);
                    let dt = isa_dtype(t.elem)?;
                    let eb = elem_bytes(t.elem);
                    let p = self.address(*buf, *index, eb)?;
                    if p.mem == Mem::Ub {
                        self.scalar_touch(p.addr, p.bytes);
                    }
                    for l in 0..t.lanes as u64 {
                        self.ld_lane(T0, *value, l)?;
                        self.emit(Instr::St {
                            mem: p.mem,
                            dt,
                            rs: T0,
                            base: T1,
                            offset: (l * eb) as i32,
                        });
                    }
                }

                // ==== `for` ====
                InstKind::For {
                    lo,
                    hi,
                    step,
                    iv,
                    iter,
                    init,
                    body,
                } => {
                    for (&it, &v) in iter.iter().zip(init) {
                        self.copy_val(it, v)?;
                    }
                    self.ld_lane(T0, *lo, 0)?;
                    self.st_lane(T0, *iv, 0)?;
                    self.sync_boundary();
                    let (head, exit) = (self.new_label(), self.new_label());
                    self.bind(head);
                    self.ld_lane(T0, *iv, 0)?;
                    self.ld_lane(T1, *hi, 0)?;
                    self.branch(Cond::Ge, T0, T1, exit);
                    self.block_with_yield(body, iter)?;
                    self.ld_lane(T0, *iv, 0)?;
                    self.ld_lane(T1, *step, 0)?;
                    self.alu(AluOp::Add, T0, T0, T1);
                    self.st_lane(T0, *iv, 0)?;
                    self.sync_boundary();
                    self.jmp(head);
                    self.bind(exit);
                }

                // ==== `if` ====
                InstKind::If {
                    cond,
                    then_blk,
                    else_blk,
                } => {
                    self.ld_lane(T0, *cond, 0)?;
                    self.sync_boundary();
                    let (els, done) = (self.new_label(), self.new_label());
                    self.branch(Cond::Eq, T0, ZERO, els);
                    self.block_with_yield(then_blk, &inst.results)?;
                    self.sync_boundary();
                    self.jmp(done);
                    self.bind(els);
                    self.block_with_yield(else_blk, &inst.results)?;
                    self.sync_boundary();
                    self.bind(done);
                }

                // ==== `yield` ====
                // Handled by the enclosing `for`/`if` (`block_with_yield`).
                InstKind::Yield(_) => {
                    return Err(CgError::Internal("`yield` outside a for or if body".into()))
                }

                // ==== `mma` ====
                // Kept only when `cube_mma_ok` holds (else `expand-mma` made loops of it): DMA of
                // A and B to L1 and on to L0A/L0B, one Cube `MMA`, and the old C added on the
                // Vector unit.
                InstKind::Mma {
                    a,
                    b,
                    c,
                    m,
                    n,
                    k,
                    a_ty,
                    acc,
                    ..
                } => self.mma(a, b, c, (*m, *n, *k), *a_ty, *acc)?,

                // ==== `trap` ====
                // The value and code into the trap registers, the flag set, and `HALT`: the grid
                // loop runs instances in row-major order, so the first instance to trap is the
                // one reported.
                InstKind::Trap { cond, code, value } => {
                    let [value_reg, code_reg, fired_reg] = crate::blob::TRAP_REGS;
                    self.ld_lane(T0, *cond, 0)?;
                    let skip = self.new_label();
                    self.branch(Cond::Eq, T0, ZERO, skip);
                    self.ld_lane(value_reg, *value, 0)?;
                    self.li64(code_reg, *code as i64);
                    self.li(fired_reg, 1);
                    self.emit(Instr::Halt);
                    self.bind(skip);
                }

                // ==== `math` ====
                // The shared passes expand it before code generation.
                InstKind::Math(..) => {
                    return Err(CgError::Internal(
                        "a math routine survived `to_backend_subset`".into(),
                    ))
                }

                // ==== tile instructions ====
                // `scalarize-tiles` (in `to_backend_subset`) rewrites them into the subset; Cube
                // and DMA lowering of tile `mma`/`copy` is the next step for this backend.
                _ => {
                    return Err(CgError::Internal(format!(
                        "`{}` survived `to_backend_subset`",
                        tessera_kir::text::inst_head(self.k, inst)
                    )))
                }
            }
        }
        Ok(())
    }

    /// A `for` body or `if` branch: its instructions, then its `yield` copied into `dsts`.
    fn block_with_yield(&mut self, b: &Block, dsts: &[Val]) -> R<()> {
        let (last, body) = match b.insts.split_last() {
            Some((l, rest)) if matches!(l.kind, InstKind::Yield(_)) => (Some(l), rest),
            _ => (None, &b.insts[..]),
        };
        self.block(&Block {
            insts: body.to_vec(),
        })?;
        let vals = match last.map(|l| &l.kind) {
            Some(InstKind::Yield(v)) => v.clone(),
            _ => Vec::new(),
        };
        if vals.len() != dsts.len() {
            return Err(CgError::Internal(format!(
                "yield of {} values into {}",
                vals.len(),
                dsts.len()
            )));
        }
        // A parallel copy: when a yielded value sits in another destination's slot (values
        // swapped between iterations), stage every value through a fresh slot first.
        let mut srcs = Vec::new();
        for &v in &vals {
            srcs.push(self.slot(v)?);
        }
        let mut dslots = Vec::new();
        for &d in dsts {
            dslots.push(self.slot(d)?);
        }
        let clash = srcs
            .iter()
            .enumerate()
            .any(|(i, s)| dslots.iter().enumerate().any(|(j, d)| i != j && s == d));
        if clash {
            for (i, &v) in vals.iter().enumerate() {
                let tmp = self.alloc_ub(self.slot_bytes(v));
                self.copy_slot(tmp, srcs[i], self.ty(v))?;
                srcs[i] = tmp;
            }
        }
        for (i, &d) in dsts.iter().enumerate() {
            self.copy_slot(dslots[i], srcs[i], self.ty(d))?;
        }
        Ok(())
    }

    /// Copies `n` bytes between UB addresses with the scalar unit (both 32-byte aligned).
    fn move_bytes(&mut self, dst: u64, src: u64, n: u64) -> R<()> {
        self.scalar_touch(src, n);
        self.scalar_touch(dst, n);
        let mut off = 0;
        while off < n {
            let w = if n - off >= 8 {
                8
            } else if n - off >= 4 {
                4
            } else if n - off >= 2 {
                2
            } else {
                1
            };
            let dt = match w {
                8 => DType::U64,
                4 => DType::U32,
                2 => DType::U16,
                _ => DType::U8,
            };
            self.emit(Instr::Ld {
                mem: Mem::Ub,
                dt,
                rd: T0,
                base: ZERO,
                offset: (src + off) as i32,
            });
            self.emit(Instr::St {
                mem: Mem::Ub,
                dt,
                rs: T0,
                base: ZERO,
                offset: (dst + off) as i32,
            });
            off += w;
        }
        Ok(())
    }

    /// Puts the byte address of element `index` of `buf` in `T1`.
    fn address(&mut self, buf: Buf, index: Val, eb: u64) -> R<Place> {
        let p = *self
            .places
            .get(buf.0 as usize)
            .ok_or_else(|| CgError::Internal(format!("buffer {}", buf.0)))?;
        self.ld_lane(T1, index, 0)?;
        if eb != 1 {
            self.alui(AluOp::Mul, T1, T1, eb as i32);
        }
        self.li64(T2, p.addr as i64);
        self.alu(AluOp::Add, T1, T1, T2);
        Ok(p)
    }

    /// Zeroes the local and shared buffers, as every program instance starts.
    fn zero_locals(&mut self) -> R<()> {
        for i in self.k.num_params..self.places.len() {
            let p = self.places[i];
            match p.mem {
                Mem::Ub => self.vec_raw(
                    VecOp::Dup,
                    VecForm::Unary,
                    DType::U8,
                    DType::U8,
                    p.addr,
                    self.zero,
                    None,
                    p.bytes,
                    None,
                )?,
                _ => {
                    // A loop of 8-byte stores over GM scratch (sizes are multiples of 8).
                    self.li64(T1, p.addr as i64);
                    self.li64(T2, (p.addr + p.bytes) as i64);
                    let l = self.new_label();
                    self.bind(l);
                    self.emit(Instr::St {
                        mem: Mem::Gm,
                        dt: DType::U64,
                        rs: ZERO,
                        base: T1,
                        offset: 0,
                    });
                    self.alui(AluOp::Add, T1, T1, 8);
                    self.branch(Cond::Lt, T1, T2, l);
                }
            }
        }
        Ok(())
    }

    // ==== `mma` (the Cube) ====
    fn mma(
        &mut self,
        a: &TileRef,
        b: &TileRef,
        c: &TileRef,
        (m, n, k): (u32, u32, u32),
        a_ty: KDType,
        acc: KDType,
    ) -> R<()> {
        let cfg_shape = self
            .cube
            .iter()
            .find(|s| s.0 == a_ty && s.1 == acc)
            .copied();
        let Some((_, _, tm, tn, tk)) = cfg_shape else {
            return Err(CgError::Internal(format!(
                "mma {a_ty}->{acc} kept without a Cube shape"
            )));
        };
        let (adt, cdt) = (isa_dtype_narrow(a_ty)?, isa_dtype(acc)?);
        let (m, n, k) = (m as u64, n as u64, k as u64);
        let (mp, np, kp) = (
            m.div_ceil(tm) * tm,
            n.div_ceil(tn) * tn,
            k.div_ceil(tk) * tk,
        );
        let (asz, csz) = (adt.size(), cdt.size());
        let l1_b = (mp * kp * asz).div_ceil(SLOT_ALIGN) * SLOT_ALIGN;
        let ub_c = self.alloc_ub(m * n * csz);
        let ub_p = self.alloc_ub(m * n * csz);
        // Everything the scalar unit or the Vector unit did so far is complete before the DMAs.
        self.emit(Instr::Barrier);
        self.vec_dirty.clear();
        // GM addresses of the three operands, in r18..r20.
        for (reg, t) in [(18u8, a), (19, b), (20, c)] {
            let eb = if reg == 20 { csz } else { asz };
            self.address(t.buf, t.offset, eb)?;
            self.alui(AluOp::Add, reg, T1, 0);
        }
        let (rsa, rsb, rsc) = (
            a.row_stride as u64,
            b.row_stride as u64,
            c.row_stride as u64,
        );
        // A and B, zero-padded to Cube tile multiples, into L1, then L0A and L0B.
        self.dma(
            Mem::Gm,
            Mem::L1,
            adt,
            adt,
            Opnd::Imm(0),
            Opnd::Reg(18),
            [m, k, rsa, kp, mp, kp],
        )?;
        self.dma(
            Mem::Gm,
            Mem::L1,
            adt,
            adt,
            Opnd::Imm(l1_b),
            Opnd::Reg(19),
            [k, n, rsb, np, kp, np],
        )?;
        self.flag(crate::isa::Pipe::Mte2, crate::isa::Pipe::Mte1);
        self.dma(
            Mem::L1,
            Mem::L0a,
            adt,
            adt,
            Opnd::Imm(0),
            Opnd::Imm(0),
            [mp, kp, kp, kp, mp, kp],
        )?;
        self.dma(
            Mem::L1,
            Mem::L0b,
            adt,
            adt,
            Opnd::Imm(0),
            Opnd::Imm(l1_b),
            [kp, np, np, np, kp, np],
        )?;
        self.flag(crate::isa::Pipe::Mte1, crate::isa::Pipe::Cube);
        let regs = [10u8, 11, 12, 13, 14, 15, 16];
        for (r, v) in regs.iter().zip([0, 0, 0, mp / tm, np / tn, kp / tk, 1]) {
            self.li64(*r, v as i64);
        }
        self.emit(Instr::Mma { adt, cdt, regs });
        self.flag(crate::isa::Pipe::Cube, crate::isa::Pipe::Vec);
        // The product to the UB (on the Vector pipe), the old C from GM, their sum back to GM.
        self.dma(
            Mem::L0c,
            Mem::Ub,
            cdt,
            cdt,
            Opnd::Imm(ub_p),
            Opnd::Imm(0),
            [m, n, np, n, m, n],
        )?;
        self.dma(
            Mem::Gm,
            Mem::Ub,
            cdt,
            cdt,
            Opnd::Imm(ub_c),
            Opnd::Reg(20),
            [m, n, rsc, n, m, n],
        )?;
        self.flag(crate::isa::Pipe::Mte2, crate::isa::Pipe::Vec);
        self.vec_raw(
            VecOp::Add,
            VecForm::VV,
            cdt,
            cdt,
            ub_c,
            ub_c,
            Some(ub_p),
            m * n,
            None,
        )?;
        self.flag(crate::isa::Pipe::Vec, crate::isa::Pipe::Mte3);
        self.dma(
            Mem::Ub,
            Mem::Gm,
            cdt,
            cdt,
            Opnd::Reg(20),
            Opnd::Imm(ub_c),
            [m, n, n, rsc, m, n],
        )?;
        self.emit(Instr::Barrier);
        self.vec_dirty.clear();
        Ok(())
    }

    /// `SET_FLAG src, dst, 0` then `WAIT_FLAG src, dst, 0`: `dst` waits for all of `src`'s work.
    fn flag(&mut self, src: crate::isa::Pipe, dst: crate::isa::Pipe) {
        self.emit(Instr::SetFlag { src, dst, id: 0 });
        self.emit(Instr::WaitFlag { src, dst, id: 0 });
    }

    /// A DMA with `dims` = rows, cols, src stride, dst stride, dst rows, dst cols (elements).
    #[allow(clippy::too_many_arguments)]
    fn dma(
        &mut self,
        src_mem: Mem,
        dst_mem: Mem,
        sdt: DType,
        ddt: DType,
        dst: Opnd,
        src: Opnd,
        dims: [u64; 6],
    ) -> R<()> {
        let regs = [10u8, 11, 12, 13, 14, 15, 16, 17];
        for (r, o) in [(regs[0], dst), (regs[1], src)] {
            match o {
                Opnd::Imm(v) => self.li64(r, v as i64),
                Opnd::Reg(x) => self.alui(AluOp::Add, r, x, 0),
            }
        }
        for (r, v) in regs[2..].iter().zip(dims) {
            self.li64(*r, v as i64);
        }
        self.emit(Instr::Dma {
            transpose: false,
            src_mem,
            dst_mem,
            sdt,
            ddt,
            regs,
            scale: None,
        });
        Ok(())
    }

    // ==== `const` (prologue) ====
    fn constant(&mut self, v: Val, c: Scalar) -> R<()> {
        let t = self.ty(v);
        let bits: i64 = match (t.elem, c) {
            (KDType::F32, Scalar::Float(f)) => (f as f32).to_bits() as i64,
            (KDType::F32, Scalar::Int(i)) => (i as f32).to_bits() as i64,
            (_, Scalar::Int(i)) => i,
            (e, Scalar::Float(f)) if e.is_int() || e == KDType::Bool => f as i64,
            (e, _) => return Err(CgError::Internal(format!("a {e} constant"))),
        };
        self.li64(T0, bits);
        for l in 0..t.lanes as u64 {
            self.st_lane(T0, v, l)?;
        }
        Ok(())
    }

    // ==== `unary` ====
    fn unary(&mut self, op: UnOp, r: Val, x: Val) -> R<()> {
        let t = self.ty(r);
        if t.elem == KDType::F32 {
            let vop = f32_unary_vec_op(op)
                .ok_or_else(|| CgError::Internal(format!("`{op:?}` of f32")))?;
            return self.vec_vals(vop, r, x, None);
        }
        for l in 0..t.lanes as u64 {
            self.ld_lane(T0, x, l)?;
            match op {
                UnOp::Neg => self.alu(AluOp::Sub, T0, ZERO, T0),
                UnOp::Abs if t.elem.is_signed_int() => {
                    let skip = self.new_label();
                    self.branch(Cond::Ge, T0, ZERO, skip);
                    self.alu(AluOp::Sub, T0, ZERO, T0);
                    self.bind(skip);
                }
                UnOp::Not if t.elem == KDType::Bool => self.alui(AluOp::Xor, T0, T0, 1),
                UnOp::Not => self.alui(AluOp::Xor, T0, T0, -1),
                // Rounding an integer, or |x| of an unsigned one, is the identity.
                UnOp::Abs | UnOp::Floor | UnOp::Ceil | UnOp::Round | UnOp::Trunc => {}
                UnOp::Sqrt => return Err(CgError::Internal(format!("`sqrt` of {}", t.elem))),
            }
            self.st_lane(T0, r, l)?;
        }
        Ok(())
    }

    // ==== `binary` ====
    fn binary(&mut self, op: BinOp, r: Val, a: Val, b: Val) -> R<()> {
        let t = self.ty(r);
        if t.elem == KDType::F32 {
            let vop = f32_binary_vec_op(op)
                .ok_or_else(|| CgError::Internal(format!("`{op:?}` of f32")))?;
            return self.vec_vals(vop, r, a, Some(b));
        }
        let e = t.elem;
        let signed = e.is_signed_int();
        let width = e.bits() as i32;
        for l in 0..t.lanes as u64 {
            self.ld_lane(T0, a, l)?;
            self.ld_lane(T1, b, l)?;
            if e == KDType::Bool {
                let aop = match op {
                    BinOp::And | BinOp::Min | BinOp::Mul => Some(AluOp::And),
                    BinOp::Or | BinOp::Max => Some(AluOp::Or),
                    BinOp::Xor | BinOp::Add | BinOp::Sub => Some(AluOp::Xor),
                    _ => None,
                };
                match aop {
                    Some(o) => self.alu(o, T0, T0, T1),
                    None => self.li(T0, 0),
                }
                self.st_lane(T0, r, l)?;
                continue;
            }
            match op {
                BinOp::Add => self.alu(AluOp::Add, T0, T0, T1),
                BinOp::Sub => self.alu(AluOp::Sub, T0, T0, T1),
                BinOp::Mul => self.alu(AluOp::Mul, T0, T0, T1),
                BinOp::Div | BinOp::Rem => {
                    // x / 0 and x % 0 are 0 in kernel IR; the ALU would fault.
                    let (zero, done) = (self.new_label(), self.new_label());
                    self.branch(Cond::Eq, T1, ZERO, zero);
                    let o = match (op, signed) {
                        (BinOp::Div, true) => AluOp::Div,
                        (BinOp::Div, false) => AluOp::Divu,
                        (_, true) => AluOp::Rem,
                        (_, false) => AluOp::Remu,
                    };
                    self.alu(o, T0, T0, T1);
                    self.jmp(done);
                    self.bind(zero);
                    self.li(T0, 0);
                    self.bind(done);
                }
                BinOp::Min => self.alu(if signed { AluOp::Min } else { AluOp::Minu }, T0, T0, T1),
                BinOp::Max => self.alu(if signed { AluOp::Max } else { AluOp::Maxu }, T0, T0, T1),
                BinOp::And => self.alu(AluOp::And, T0, T0, T1),
                BinOp::Or => self.alu(AluOp::Or, T0, T0, T1),
                BinOp::Xor => self.alu(AluOp::Xor, T0, T0, T1),
                BinOp::Shl | BinOp::Shr => {
                    self.alui(AluOp::And, T1, T1, width - 1);
                    let o = match (op, signed) {
                        (BinOp::Shl, _) => AluOp::Shl,
                        (_, true) => AluOp::Sra,
                        (_, false) => AluOp::Shr,
                    };
                    self.alu(o, T0, T0, T1);
                }
            }
            self.st_lane(T0, r, l)?;
        }
        Ok(())
    }

    // ==== `cmp` ====
    fn cmp(&mut self, op: CmpOp, r: Val, a: Val, b: Val) -> R<()> {
        let t = self.ty(a);
        if t.elem == KDType::F32 {
            let vop = match op {
                CmpOp::Eq => VecOp::CmpEq,
                CmpOp::Ne => VecOp::CmpNe,
                CmpOp::Lt => VecOp::CmpLt,
                CmpOp::Le => VecOp::CmpLe,
                CmpOp::Gt => VecOp::CmpGt,
                CmpOp::Ge => VecOp::CmpGe,
            };
            return self.vec_vals(vop, r, a, Some(b));
        }
        let signed = t.elem.is_signed_int();
        let (lt, ge) = if signed {
            (Cond::Lt, Cond::Ge)
        } else {
            (Cond::Ltu, Cond::Geu)
        };
        // (condition, swap operands)
        let (c, swap) = match op {
            CmpOp::Eq => (Cond::Eq, false),
            CmpOp::Ne => (Cond::Ne, false),
            CmpOp::Lt => (lt, false),
            CmpOp::Ge => (ge, false),
            CmpOp::Gt => (lt, true),
            CmpOp::Le => (ge, true),
        };
        for l in 0..t.lanes as u64 {
            self.ld_lane(T0, a, l)?;
            self.ld_lane(T1, b, l)?;
            let (x, y) = if swap { (T1, T0) } else { (T0, T1) };
            let holds = self.new_label();
            self.li(T2, 1);
            self.branch(c, x, y, holds);
            self.li(T2, 0);
            self.bind(holds);
            self.st_lane(T2, r, l)?;
        }
        Ok(())
    }

    // ==== `select` ====
    fn select(&mut self, r: Val, c: Val, a: Val, b: Val) -> R<()> {
        let t = self.ty(r);
        let ct = self.ty(c);
        if t.elem == KDType::F32 {
            let lanes = t.lanes as u64;
            let mut cs = self.slot(c)?;
            if ct.lanes == 1 && lanes > 1 {
                self.vec_raw(
                    VecOp::Dup,
                    VecForm::Unary,
                    DType::U8,
                    DType::U8,
                    self.scratch,
                    cs,
                    None,
                    lanes,
                    None,
                )?;
                cs = self.scratch;
            }
            let (rs, as_, bs) = (self.slot(r)?, self.slot(a)?, self.slot(b)?);
            return self.vec_raw(
                VecOp::Sel,
                VecForm::VV,
                DType::F32,
                DType::F32,
                rs,
                as_,
                Some(bs),
                lanes,
                Some(cs),
            );
        }
        // r = b + (a - b) * c, with c 0 or 1: exact in wrapping arithmetic, no branch.
        for l in 0..t.lanes as u64 {
            self.ld_lane(T0, a, l)?;
            self.ld_lane(T1, b, l)?;
            self.ld_lane(T2, c, if ct.lanes == 1 { 0 } else { l })?;
            self.alu(AluOp::Sub, T0, T0, T1);
            self.alu(AluOp::Mul, T0, T0, T2);
            self.alu(AluOp::Add, T0, T0, T1);
            self.st_lane(T0, r, l)?;
        }
        Ok(())
    }

    // ==== `cast` ====
    fn cast(&mut self, r: Val, x: Val) -> R<()> {
        let (from, to) = (self.ty(x).elem, self.ty(r).elem);
        let lanes = self.ty(r).lanes as u64;
        let (rs, xs) = (self.slot(r)?, self.slot(x)?);
        match (from == KDType::F32, to == KDType::F32) {
            (true, true) => self.copy_val(r, x),
            // int/bool → f32 rounds to nearest even on the Vector unit.
            (false, true) => self.vec_raw(
                VecOp::Cast,
                VecForm::Unary,
                isa_dtype(from)?,
                DType::F32,
                rs,
                xs,
                None,
                lanes,
                None,
            ),
            (true, false) if to == KDType::Bool => self.vec_raw(
                VecOp::CmpNe,
                VecForm::VS,
                DType::F32,
                DType::U8,
                rs,
                xs,
                Some(self.zero),
                lanes,
                None,
            ),
            // f32 → int truncates toward zero, then the cast saturates (NaN → 0).
            (true, false) => {
                self.vec_raw(
                    VecOp::Trunc,
                    VecForm::Unary,
                    DType::F32,
                    DType::F32,
                    self.scratch,
                    xs,
                    None,
                    lanes,
                    None,
                )?;
                self.vec_raw(
                    VecOp::Cast,
                    VecForm::Unary,
                    DType::F32,
                    isa_dtype(to)?,
                    rs,
                    self.scratch,
                    None,
                    lanes,
                    None,
                )
            }
            (false, false) => {
                for l in 0..lanes {
                    self.ld_lane(T0, x, l)?;
                    if to == KDType::Bool {
                        let nz = self.new_label();
                        self.li(T1, 1);
                        self.branch(Cond::Ne, T0, ZERO, nz);
                        self.li(T1, 0);
                        self.bind(nz);
                        self.st_lane(T1, r, l)?;
                    } else {
                        // The load extended from the source width; the store keeps the low bits.
                        self.st_lane(T0, r, l)?;
                    }
                }
                Ok(())
            }
        }
    }

    // ==== `reduce` ====
    fn reduce(&mut self, op: ReduceOp, r: Val, x: Val) -> R<()> {
        let t = self.ty(x);
        if t.elem == KDType::F32 {
            let rop = match op {
                ReduceOp::Add => RedOp::Sum,
                ReduceOp::Mul => RedOp::Prod,
                ReduceOp::Min => RedOp::Min,
                ReduceOp::Max => RedOp::Max,
            };
            let (rs, xs) = (self.slot(r)?, self.slot(x)?);
            self.li_vreg(V_DST, rs as i32);
            self.li_vreg(V_SRC1, xs as i32);
            self.li_vreg(V_LEN, t.lanes as i32);
            self.emit(Instr::Vred {
                op: rop,
                dt: DType::F32,
                dst: V_DST,
                src: V_SRC1,
                len: V_LEN,
            });
            self.vec_touch(rs, 4);
            self.vec_touch(xs, t.lanes as u64 * 4);
            return Ok(());
        }
        let signed = t.elem.is_signed_int();
        let o = match (op, t.elem == KDType::Bool) {
            (ReduceOp::Add, true) => AluOp::Xor,
            (ReduceOp::Mul | ReduceOp::Min, true) => AluOp::And,
            (ReduceOp::Max, true) => AluOp::Or,
            (ReduceOp::Add, _) => AluOp::Add,
            (ReduceOp::Mul, _) => AluOp::Mul,
            (ReduceOp::Min, _) => {
                if signed {
                    AluOp::Min
                } else {
                    AluOp::Minu
                }
            }
            (ReduceOp::Max, _) => {
                if signed {
                    AluOp::Max
                } else {
                    AluOp::Maxu
                }
            }
        };
        self.ld_lane(T0, x, 0)?;
        for l in 1..t.lanes as u64 {
            self.ld_lane(T1, x, l)?;
            self.alu(o, T0, T0, T1);
        }
        self.st_lane(T0, r, 0)
    }
}

/// Live ranges of the values of a kernel body, as positions of a pre-order walk. A value
/// defined outside a loop and used inside it lives to the loop's end (the next iteration reads
/// it again); `iv` and loop-carried values live through their loop; `if` results from the `if`
/// on (the branches write them). Constants live for the whole program (the prologue writes them
/// once). Aliases (`bitcast` and `for` results) share their root's range.
#[derive(Default)]
struct Liveness {
    pos: u32,
    def: HashMap<Val, u32>,
    root: HashMap<Val, Val>,
    loops: Vec<(u32, u32)>,
    /// (root, position, enclosing loops, outermost first)
    uses: Vec<(Val, u32, Vec<usize>)>,
    pinned: Vec<Val>,
    members: HashMap<Val, Vec<Val>>,
}

impl Liveness {
    fn root_of(&self, v: Val) -> Val {
        self.root.get(&v).copied().unwrap_or(v)
    }

    fn def_at(&mut self, v: Val, p: u32) {
        self.def.entry(v).or_insert(p);
        self.members.entry(v).or_default().push(v);
    }

    fn alias(&mut self, v: Val, of: Val) {
        let r = self.root_of(of);
        self.root.insert(v, r);
        self.members.entry(r).or_default().push(v);
    }

    fn use_at(&mut self, v: Val, p: u32, stack: &[usize]) {
        let r = self.root_of(v);
        self.uses.push((r, p, stack.to_vec()));
    }

    fn walk(
        &mut self,
        k: &Kernel,
        b: &Block,
        stack: &mut Vec<usize>,
        consts: &mut Vec<(Val, Scalar)>,
    ) -> R<()> {
        for inst in &b.insts {
            for &r in &inst.results {
                isa_dtype(k.ty(r).elem)?;
                if k.ty(r).is_tile() {
                    return Err(CgError::Internal(format!(
                        "a tile value %{} after `to_backend_subset`",
                        r.0
                    )));
                }
            }
            self.pos += 1;
            let p = self.pos;
            let uses: Vec<Val> = match &inst.kind {
                InstKind::Const(c) => {
                    consts.push((inst.results[0], *c));
                    self.def_at(inst.results[0], 0);
                    self.pinned.push(inst.results[0]);
                    continue;
                }
                InstKind::Bitcast(x) => {
                    self.use_at(*x, p, stack);
                    self.alias(inst.results[0], *x);
                    continue;
                }
                InstKind::For {
                    lo,
                    hi,
                    step,
                    iv,
                    iter,
                    init,
                    body,
                } => {
                    for &v in std::iter::once(lo).chain(init) {
                        self.use_at(v, p, stack);
                    }
                    let id = self.loops.len();
                    self.loops.push((p, 0));
                    for &v in std::iter::once(iv).chain(iter) {
                        self.def_at(v, p);
                    }
                    for (&r, &it) in inst.results.iter().zip(iter) {
                        self.alias(r, it);
                    }
                    stack.push(id);
                    self.walk(k, body, stack, consts)?;
                    stack.pop();
                    self.pos += 1;
                    let end = self.pos;
                    self.loops[id].1 = end;
                    // `hi` and `step` are read again by every iteration.
                    for &v in [iv, hi, step].into_iter().chain(iter) {
                        self.use_at(v, end, stack);
                    }
                    continue;
                }
                InstKind::If {
                    cond,
                    then_blk,
                    else_blk,
                } => {
                    self.use_at(*cond, p, stack);
                    for &r in &inst.results {
                        self.def_at(r, p);
                    }
                    self.walk(k, then_blk, stack, consts)?;
                    self.walk(k, else_blk, stack, consts)?;
                    self.pos += 1;
                    let end = self.pos;
                    for &r in &inst.results {
                        self.use_at(r, end, stack);
                    }
                    continue;
                }
                InstKind::ProgramId(_) => vec![],
                InstKind::Unary(_, x)
                | InstKind::Cast(x, _)
                | InstKind::Splat(x)
                | InstKind::Extract(x, _)
                | InstKind::ReduceLanes(_, x) => vec![*x],
                InstKind::Binary(_, a, b) | InstKind::Cmp(_, a, b) => vec![*a, *b],
                InstKind::Select(c, a, b) | InstKind::Fma(c, a, b) => vec![*c, *a, *b],
                InstKind::Load { index, .. } => vec![*index],
                InstKind::Store { index, value, .. } => vec![*index, *value],
                InstKind::Yield(vals) => vals.clone(),
                InstKind::Mma { a, b, c, .. } => vec![a.offset, b.offset, c.offset],
                InstKind::Trap { cond, value, .. } => vec![*cond, *value],
                _ => {
                    return Err(CgError::Internal(format!(
                        "`{}` survived `to_backend_subset`",
                        tessera_kir::text::inst_head(k, inst)
                    )))
                }
            };
            for v in uses {
                self.use_at(v, p, stack);
            }
            for &r in &inst.results {
                self.def_at(r, p);
            }
        }
        Ok(())
    }

    /// Every root's (definition, last use).
    fn ranges(&self) -> HashMap<Val, (u32, u32)> {
        let mut out: HashMap<Val, (u32, u32)> = HashMap::new();
        for (&v, &d) in &self.def {
            if !self.root.contains_key(&v) {
                out.insert(v, (d, d));
            }
        }
        for (r, p, stack) in &self.uses {
            let Some(&d) = self.def.get(r) else { continue };
            // The outermost enclosing loop that the value was defined before.
            let end = stack
                .iter()
                .map(|&l| self.loops[l])
                .find(|&(start, _)| d < start)
                .map_or(*p, |(_, e)| e.max(*p));
            if let Some(x) = out.get_mut(r) {
                x.1 = x.1.max(end);
            }
        }
        for v in &self.pinned {
            if let Some(x) = out.get_mut(v) {
                x.1 = u32::MAX;
            }
        }
        out
    }

    /// Bytes the slot of `root` needs: the widest of the values sharing it.
    fn bytes(&self, k: &Kernel, root: Val) -> u64 {
        let size = |v: Val| {
            let t = k.ty(v);
            t.lanes as u64 * elem_bytes(t.elem)
        };
        self.members
            .get(&root)
            .map(|m| m.iter().map(|&v| size(v)).max().unwrap_or(0))
            .unwrap_or(0)
            .max(size(root))
    }
}

/// The Vector-unit instruction of an f32 unary op (`not` has none).
pub(crate) fn f32_unary_vec_op(op: UnOp) -> Option<VecOp> {
    Some(match op {
        UnOp::Neg => VecOp::Neg,
        UnOp::Abs => VecOp::Abs,
        UnOp::Sqrt => VecOp::Sqrt,
        UnOp::Floor => VecOp::Floor,
        UnOp::Ceil => VecOp::Ceil,
        UnOp::Round => VecOp::Round,
        UnOp::Trunc => VecOp::Trunc,
        UnOp::Not => return None,
    })
}

/// The Vector-unit instruction of an f32 binary op (the bitwise ops have none).
pub(crate) fn f32_binary_vec_op(op: BinOp) -> Option<VecOp> {
    Some(match op {
        BinOp::Add => VecOp::Add,
        BinOp::Sub => VecOp::Sub,
        BinOp::Mul => VecOp::Mul,
        BinOp::Div => VecOp::Div,
        BinOp::Rem => VecOp::Rem,
        BinOp::Min => VecOp::Min,
        BinOp::Max => VecOp::Max,
        _ => return None,
    })
}
