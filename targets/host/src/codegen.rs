//! Kernel IR → Cranelift IR → x86_64 machine code. Start at [`compile`], which wraps the
//! kernel body in a loop over grid points; then every kernel-IR construct has one section
//! below, headed ``// ==== `name` ====``, in the order of `InstKind` (`math` sits with `mma`
//! at the end: the shared passes remove both before code generation).
//!
//! Values. A kernel-IR value of type `vec<L x T>` is held as `parts`: 128-bit Cranelift
//! vectors (`F32X4`, `I8X16`, …) when `L` is a multiple of the lanes that fit in 128 bits,
//! else one scalar per lane. Bools are `I8` 0/1. A bool vector made by a comparison is kept
//! as the comparison's lane masks (all ones / all zeros, [`Repr::mask`]) so that
//! `select(cmp(a, b), x, y)` becomes a compare and a blend; it is turned into 0/1 bytes only
//! where something needs that form.
//!
//! Semantics follow `tessera_kir::kernel` exactly; where Cranelift differs (integer division
//! traps, vector shifts take one amount, no `fmod`) the code says how it is bridged.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::immediates::{Ieee32, Ieee64};
use cranelift_codegen::ir::{
    types, AbiParam, Block as ClBlock, BlockArg, Function, InstBuilder, MemFlagsData, Signature,
    StackSlotData, StackSlotKind, Type, UserFuncName, Value,
};
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use tessera_ir::DType;
use tessera_kir::{
    BinOp, Block, Buf, CmpOp, Inst, InstKind, Kernel, ReduceOp, Scalar, Ty, UnOp, Val,
};

/// Why a kernel did not compile; [`crate::Host`] (and the LLVM CPU targets, which share this
/// type) turn it into a `TargetError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgError {
    /// Unsupported on this target: a construct or dtype outside the backend subset.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A compiler bug: the kernel is malformed (it passed the verifier, so an earlier pass
    /// is wrong), or this code generator or Cranelift failed.
    #[error("internal: {0}")]
    Internal(String),
}

/// A compiled kernel: machine code plus what the launcher needs to know.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub code: Vec<u8>,
    /// Grid extents, missing axes as 1.
    pub grid: [u64; 3],
    /// Bytes of the per-instance scratch area that holds the local and shared buffers.
    pub scratch_bytes: u64,
    /// Minimum byte length of each parameter buffer.
    pub param_bytes: Vec<u64>,
    /// A rough count of operations per program instance.
    pub work: u64,
}

pub type R<T> = Result<T, CgError>;

pub fn unsupported<T>(msg: impl Into<String>) -> R<T> {
    Err(CgError::Unsupported(msg.into()))
}

pub fn internal<T>(msg: impl Into<String>) -> R<T> {
    Err(CgError::Internal(msg.into()))
}

/// Compiles `kernel` (already in the backend subset) for `isa`.
///
/// Cranelift reports most problems as errors but panics when no lowering rule matches; the
/// panic is caught here so that a kernel can never take the compiler down with it.
pub fn compile(isa: &dyn TargetIsa, kernel: &Kernel) -> R<Compiled> {
    guarded(|| {
        let (func, mut compiled) = build(isa, kernel)?;
        compiled.code = machine_code(isa, func)?;
        Ok(compiled)
    })
}

/// The Cranelift IR of `kernel` (before Cranelift's optimisations), as text: for reading what
/// the code generator made of a kernel, and for tests that check it.
pub fn clif(isa: &dyn TargetIsa, kernel: &Kernel) -> R<String> {
    guarded(|| Ok(build(isa, kernel)?.0.display().to_string()))
}

/// The machine code Cranelift makes of `kernel` (already in the backend subset), as the
/// text of its final instructions after register allocation: for reading the inner loops of
/// generated kernels (`examples/asm.rs`).
pub fn disassembly(isa: &dyn TargetIsa, kernel: &Kernel) -> R<String> {
    guarded(|| {
        let (func, _) = build(isa, kernel)?;
        let mut ctx = Context::for_function(func);
        ctx.set_disasm(true);
        let compiled = ctx
            .compile(isa, &mut ControlPlane::default())
            .map_err(|e| CgError::Internal(format!("Cranelift: {:?}", e.inner)))?;
        Ok(compiled.vcode.clone().unwrap_or_default())
    })
}

/// Runs `f`, turning a panic (Cranelift's reaction to a type it cannot lower) into an error.
fn guarded<T>(f: impl FnOnce() -> R<T>) -> R<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            internal(format!("Cranelift panicked: {msg}"))
        }
    }
}

/// Loads and stores never trap (lowering guards every access) and may be unaligned.
fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The byte order every vector bitcast states; Cranelift wants it said when lane counts change.
fn little() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

fn align16(x: u64) -> u64 {
    x.div_ceil(16).saturating_mul(16)
}

/// What every CPU code generator lays out the same way, because the one device reads it from
/// the blob header: the grid (missing axes as 1), the parameter sizes, and the scratch area
/// holding the local and shared buffers, each 16-byte aligned. The LLVM targets use it too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub grid: [u64; 3],
    /// Minimum byte length of each parameter buffer.
    pub param_bytes: Vec<u64>,
    /// Byte offset of each buffer in the scratch area (0 for parameters).
    pub offsets: Vec<u64>,
    /// Bytes of the per-instance scratch area.
    pub scratch_bytes: u64,
}

/// The [`Frame`] of `k`, refusing what no CPU target runs (more than 3 grid axes, string
/// buffers, more than 4 GiB of local buffers per instance).
pub fn frame(k: &Kernel) -> R<Frame> {
    if k.grid.len() > 3 {
        return unsupported(format!("a grid of {} axes (at most 3)", k.grid.len()));
    }
    if k.num_params > k.bufs.len() {
        return internal(format!(
            "{} parameters but {} buffers",
            k.num_params,
            k.bufs.len()
        ));
    }
    // Buffers of every numeric dtype are fine: the backend subset reads a low-precision or
    // sub-byte buffer through its storage view (bit patterns as u8/u16), and `address`
    // checks each access.
    if let Some(b) = k.bufs.iter().find(|b| !b.dtype.is_numeric()) {
        return unsupported(format!("buffer `{}` of dtype {}", b.name, b.dtype));
    }
    let mut grid = [1u64; 3];
    for (g, &e) in grid.iter_mut().zip(&k.grid) {
        *g = e;
    }
    let param_bytes: Vec<u64> = k
        .params()
        .iter()
        .map(|b| b.dtype.storage_bytes(b.len))
        .collect();

    // Local and shared buffers live in the scratch area, each 16-byte aligned.
    let mut offsets = vec![0u64; k.bufs.len()];
    let mut scratch = 0u64;
    for (i, b) in k.bufs.iter().enumerate().skip(k.num_params) {
        offsets[i] = scratch;
        scratch = align16(scratch.saturating_add(b.dtype.storage_bytes(b.len)));
    }
    if scratch > u32::MAX as u64 {
        return unsupported(format!(
            "{scratch} bytes of local buffers per program instance"
        ));
    }

    Ok(Frame {
        grid,
        param_bytes,
        offsets,
        scratch_bytes: scratch,
    })
}

/// Translates `k` into one Cranelift function (see [`crate::blob`] for its signature), and
/// everything but the machine code of its [`Compiled`].
fn build(isa: &dyn TargetIsa, k: &Kernel) -> R<(Function, Compiled)> {
    let Frame {
        grid,
        param_bytes,
        offsets,
        scratch_bytes: scratch,
    } = frame(k)?;

    let ptr = types::I64;
    let mut sig = Signature::new(isa.default_call_conv());
    sig.params.extend([AbiParam::new(ptr); 5]);
    let mut func = Function::with_name_signature(UserFuncName::user(0, 0), sig);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);

    // ---- entry: buffer bases and the first grid point ----
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let fp = b.block_params(entry).to_vec();
    let (args, scratch_ptr, begin, end, trap_slot) = (fp[0], fp[1], fp[2], fp[3], fp[4]);
    // A parameter's base is loaded from the argument array; a local's is the scratch area's,
    // with its offset there folded into each access's displacement (one register for all the
    // locals, however many a tiled kernel has).
    let mut bases = Vec::with_capacity(k.bufs.len());
    for (i, &off) in offsets.iter().enumerate() {
        let base = if i < k.num_params {
            let p = b
                .ins()
                .load(ptr, mem().with_readonly(), args, (8 * i) as i32);
            (p, 0)
        } else {
            (scratch_ptr, off as i64)
        };
        bases.push(base);
    }
    // A zero extent means no instances; the launcher then never calls, and 1 keeps the
    // divisions below well defined.
    let [_, g1, g2] = grid.map(|g| g.max(1));
    let point = b.create_block();
    b.append_block_param(point, ptr);
    let done = b.create_block();
    let any = b.ins().icmp(IntCC::UnsignedLessThan, begin, end);
    b.ins()
        .brif(any, point, &[BlockArg::from(begin)], done, &[]);

    // ---- one grid point ----
    // The loop carries only the linear index; the program ids are divided out of it here
    // (by constants: multiplies and shifts), so they hold registers only while the kernel
    // uses them, not across its whole body.
    b.switch_to_block(point);
    let lin = b.block_params(point)[0];
    let (p0, p1, p2) = if g1 == 1 && g2 == 1 {
        let zero = b.ins().iconst(ptr, 0);
        (lin, zero, zero)
    } else {
        let g12 = b.ins().iconst(ptr, (g1.saturating_mul(g2)) as i64);
        let g2v = b.ins().iconst(ptr, g2 as i64);
        let p0 = b.ins().udiv(lin, g12);
        let rest = b.ins().urem(lin, g12);
        (p0, b.ins().udiv(rest, g2v), b.ins().urem(rest, g2v))
    };
    let index_offsets =
        tessera_kir::constants::index_offsets(&k.body, &|v| k.vals.get(v.0 as usize).copied());
    let movable = tessera_kir::constants::movable_loads(&k.body, &index_offsets);
    let mut cg = Cg {
        k,
        b,
        vals: vec![None; k.vals.len()],
        bases,
        pids: [p0, p1, p2],
        trap_slot,
        has_fma: crate::cpu::has_fma(isa),
        index_offsets,
        movable,
        consts: tessera_kir::constants::int_constants(&k.body),
    };
    cg.zero_scratch(scratch_ptr, scratch);
    if let Some(y) = cg.block(&k.body)? {
        if !y.is_empty() {
            return internal("the kernel body ends with a `yield`");
        }
    }
    // Next grid point.
    let mut b = cg.b;
    let lin1 = b.ins().iadd_imm_s(lin, 1);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, lin1, end);
    b.ins()
        .brif(more, point, &[BlockArg::from(lin1)], done, &[]);
    b.switch_to_block(done);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(isa.frontend_config());
    let compiled = Compiled {
        code: Vec::new(),
        grid,
        scratch_bytes: scratch,
        param_bytes,
        work: estimate_work(k),
    };
    Ok((func, compiled))
}

/// Compiles a function to self-contained machine code.
fn machine_code(isa: &dyn TargetIsa, func: Function) -> R<Vec<u8>> {
    let mut ctx = Context::for_function(func);
    let compiled = ctx
        .compile(isa, &mut ControlPlane::default())
        .map_err(|e| CgError::Internal(format!("Cranelift: {:?}", e.inner)))?;
    let relocs = compiled.buffer.relocs();
    if let Some(r) = relocs.first() {
        // Blobs are stored in artifacts and mapped anywhere later, with no linker.
        return internal(format!(
            "Cranelift emitted {} relocation(s) (first: {:?} at offset {}); host code must be self-contained",
            relocs.len(),
            r.kind,
            r.offset
        ));
    }
    Ok(compiled.code_buffer().to_vec())
}

/// A rough operation count per program instance: loops with constant bounds multiply their
/// body, other loops count 16 trips. The launcher only compares it against a threshold.
pub fn estimate_work(k: &Kernel) -> u64 {
    fn work(b: &Block, c: &HashMap<Val, i64>) -> u64 {
        b.insts.iter().fold(0u64, |acc, i| {
            let w = match &i.kind {
                InstKind::For {
                    lo, hi, step, body, ..
                } => {
                    let trips = match (c.get(lo), c.get(hi), c.get(step)) {
                        (Some(&l), Some(&h), Some(&s)) if s > 0 => {
                            let span = (h as i128 - l as i128).max(0);
                            ((span + s as i128 - 1) / s as i128).min(u64::MAX as i128) as u64
                        }
                        _ => 16,
                    };
                    trips.saturating_mul(work(body, c).saturating_add(2))
                }
                InstKind::If {
                    then_blk, else_blk, ..
                } => 1 + work(then_blk, c).max(work(else_blk, c)),
                _ => 1,
            };
            acc.saturating_add(w)
        })
    }
    let c = tessera_kir::constants::int_constants(&k.body);
    work(&k.body, &c).max(1)
}

/// A float literal of an integer type: truncated, saturated at the type's range, NaN → 0,
/// as a cast would convert it. (The LLVM CPU targets read literals the same way.)
pub fn float_literal_to_int(d: DType, x: f64) -> i64 {
    if x.is_nan() {
        return 0;
    }
    let bits = d.bits();
    if d.is_signed_int() {
        let (lo, hi) = if bits >= 64 {
            (i64::MIN, i64::MAX)
        } else {
            (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
        };
        (x as i64).clamp(lo, hi)
    } else {
        let hi = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        (x as u64).min(hi) as i64
    }
}

/// The Cranelift type of one element of `d`, for the dtypes of the backend subset.
fn elem_type(d: DType) -> R<Type> {
    Ok(match d {
        DType::Bool | DType::I8 | DType::U8 => types::I8,
        DType::I16 | DType::U16 => types::I16,
        DType::I32 | DType::U32 => types::I32,
        DType::I64 | DType::U64 => types::I64,
        DType::F32 => types::F32,
        DType::F64 => types::F64,
        other => return unsupported(format!("dtype {other} (outside the backend subset)")),
    })
}

/// How a kernel-IR type is split into Cranelift values: `parts` values of type `part`, each
/// holding `per` consecutive lanes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Layout {
    part: Type,
    per: u32,
    parts: u32,
}

fn layout(ty: Ty) -> R<Layout> {
    let s = elem_type(ty.elem)?;
    let lanes = ty.lanes as u32;
    if lanes == 0 {
        return internal("a vector of 0 lanes");
    }
    let per = 128 / s.bits();
    if lanes > 1 && lanes % per == 0 {
        match s.by(per) {
            Some(v) => {
                return Ok(Layout {
                    part: v,
                    per,
                    parts: lanes / per,
                })
            }
            None => return internal(format!("no {s}x{per} vector type")),
        }
    }
    Ok(Layout {
        part: s,
        per: 1,
        parts: lanes,
    })
}

/// How one kernel-IR value is held.
#[derive(Clone, Debug)]
struct Repr {
    parts: Vec<Value>,
    /// Bool vectors only: the parts are integer lane masks of a comparison's operand shape
    /// (all ones = true) instead of the canonical layout of 0/1 bytes.
    mask: bool,
}

impl Repr {
    fn plain(parts: Vec<Value>) -> Repr {
        Repr { parts, mask: false }
    }
}

struct Cg<'k, 'f> {
    k: &'k Kernel,
    b: FunctionBuilder<'f>,
    vals: Vec<Option<Repr>>,
    /// Where every buffer starts (parameters, then locals in the scratch area): a base address
    /// and a byte offset from it.
    bases: Vec<(Value, i64)>,
    pids: [Value; 3],
    /// Where a `trap` writes `[1, code, value]` (see [`crate::blob`]).
    trap_slot: Value,
    /// Whether the ISA has a fused multiply-add instruction.
    has_fma: bool,
    /// Indices that are another index plus a constant (`constants::index_offsets`): their
    /// accesses address the other index and put the constant in the displacement, so loads a
    /// constant apart (rows of a register block) share one address computation.
    index_offsets: std::collections::HashMap<Val, (Val, i64)>,
    /// Loads Cranelift may treat as pure (`constants::movable_loads`): marked `readonly` and
    /// `can_move`, so its egraph places each next to its use, where x64 lowering folds it
    /// into the user (a `splat` of a loaded f32 becomes one `vbroadcastss` from memory).
    movable: std::collections::HashSet<Val>,
    /// The kernel's integer constants (`constants::int_constants`): a `for` with constant
    /// bounds carries only its induction variable.
    consts: std::collections::HashMap<Val, i64>,
}

impl Cg<'_, '_> {
    // ---- bookkeeping ----

    fn ty(&self, v: Val) -> R<Ty> {
        match self.k.vals.get(v.0 as usize) {
            Some(&t) => Ok(t),
            None => internal(format!("value %{} is not declared", v.0)),
        }
    }

    fn repr(&self, v: Val) -> R<Repr> {
        match self.vals.get(v.0 as usize) {
            Some(Some(r)) => Ok(r.clone()),
            _ => internal(format!("value %{} is used before it is defined", v.0)),
        }
    }

    fn def(&mut self, v: Val, r: Repr) -> R<()> {
        match self.vals.get_mut(v.0 as usize) {
            Some(slot) => {
                *slot = Some(r);
                Ok(())
            }
            None => internal(format!("value %{} is not declared", v.0)),
        }
    }

    fn result(inst: &Inst, n: usize) -> R<Val> {
        match inst.results.get(n) {
            Some(&v) => Ok(v),
            None => internal(format!("instruction {:?} lacks result {n}", inst.kind)),
        }
    }

    fn vtype(&self, v: Value) -> Type {
        self.b.func.dfg.value_type(v)
    }

    /// An integer constant of scalar type `t`, wrapped to its width.
    fn iconst(&mut self, t: Type, v: i64) -> Value {
        let bits = t.bits();
        let v = if bits < 64 {
            v & ((1i64 << bits) - 1)
        } else {
            v
        };
        self.b.ins().iconst(t, v)
    }

    /// `v` in every lane of `t` (or just `v` when `t` is scalar).
    fn broadcast(&mut self, t: Type, v: Value) -> Value {
        if t.is_vector() {
            self.b.ins().splat(t, v)
        } else {
            v
        }
    }

    /// The integer `v` in every lane of the integer type `t`.
    fn int_splat(&mut self, t: Type, v: i64) -> Value {
        let s = self.iconst(t.lane_type(), v);
        self.broadcast(t, s)
    }

    /// The value in canonical layout (masks turned into 0/1 bytes).
    fn plain(&mut self, v: Val) -> R<Vec<Value>> {
        let r = self.repr(v)?;
        if !r.mask {
            return Ok(r.parts);
        }
        let lay = layout(self.ty(v)?)?;
        let mt = self.vtype(r.parts[0]);
        if lay.part == mt {
            let one = self.int_splat(mt, 1);
            return Ok(r.parts.iter().map(|&p| self.b.ins().band(p, one)).collect());
        }
        let mut lanes = Vec::new();
        for &p in &r.parts {
            for i in 0..mt.lane_count() {
                let e = self.b.ins().extractlane(p, i as u8);
                let e8 = if mt.lane_bits() > 8 {
                    self.b.ins().ireduce(types::I8, e)
                } else {
                    e
                };
                lanes.push(self.b.ins().band_imm_s(e8, 1));
            }
        }
        self.build(lay, lanes)
    }

    /// A scalar value.
    fn scalar(&mut self, v: Val) -> R<Value> {
        let t = self.ty(v)?;
        if t.lanes != 1 {
            return internal(format!(
                "value %{} of type {t} is used where a scalar is expected",
                v.0
            ));
        }
        Ok(self.plain(v)?[0])
    }

    /// Every lane of `parts` as a scalar.
    fn lanes_of(&mut self, parts: &[Value]) -> Vec<Value> {
        let mut out = Vec::new();
        for &p in parts {
            let t = self.vtype(p);
            if t.is_vector() {
                for i in 0..t.lane_count() {
                    out.push(self.b.ins().extractlane(p, i as u8));
                }
            } else {
                out.push(p);
            }
        }
        out
    }

    /// Packs scalar lanes into parts of `lay`.
    fn build(&mut self, lay: Layout, lanes: Vec<Value>) -> R<Vec<Value>> {
        if lanes.len() as u32 != lay.per * lay.parts {
            return internal(format!("{} lanes do not fill {lay:?}", lanes.len()));
        }
        if lay.per == 1 {
            return Ok(lanes);
        }
        let mut out = Vec::new();
        for chunk in lanes.chunks(lay.per as usize) {
            let mut v = self.b.ins().splat(lay.part, chunk[0]);
            for (i, &l) in chunk.iter().enumerate().skip(1) {
                v = self.b.ins().insertlane(v, l, i as u8);
            }
            out.push(v);
        }
        Ok(out)
    }

    /// The bool vector `v` as lane masks shaped like the vector type `vt` (its integer form).
    fn mask_for(&mut self, v: Val, vt: Type) -> R<Vec<Value>> {
        let it = vt.as_int();
        let r = self.repr(v)?;
        if r.mask && self.vtype(r.parts[0]) == it {
            return Ok(r.parts);
        }
        let parts = self.plain(v)?;
        if self.vtype(parts[0]) == it {
            // 0/1 bytes to 0/-1 bytes.
            return Ok(parts.iter().map(|&p| self.b.ins().ineg(p)).collect());
        }
        let lanes = self.lanes_of(&parts);
        let per = it.lane_count();
        if lanes.len() as u32 % per != 0 {
            return internal(format!(
                "a condition of {} lanes for values of type {vt}",
                lanes.len()
            ));
        }
        let lt = it.lane_type();
        let mut masks = Vec::with_capacity(lanes.len());
        for l in lanes {
            let w = if lt.bits() > 8 {
                self.b.ins().uextend(lt, l)
            } else {
                l
            };
            masks.push(self.b.ins().ineg(w));
        }
        let n = masks.len() as u32 / per;
        self.build(
            Layout {
                part: it,
                per,
                parts: n,
            },
            masks,
        )
    }

    /// Zeroes the scratch area, so every program instance starts with zeroed local buffers.
    fn zero_scratch(&mut self, base: Value, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let zero = self.int_splat(types::I8X16, 0);
        if bytes <= 256 {
            for off in (0..bytes).step_by(16) {
                self.b.ins().store(mem(), zero, base, off as i32);
            }
            return;
        }
        let lp = self.b.create_block();
        let after = self.b.create_block();
        self.b.append_block_param(lp, types::I64);
        let start = self.b.ins().iconst(types::I64, 0);
        self.b.ins().jump(lp, &[BlockArg::from(start)]);
        self.b.switch_to_block(lp);
        let off = self.b.block_params(lp)[0];
        let at = self.b.ins().iadd(base, off);
        self.b.ins().store(mem(), zero, at, 0);
        let next = self.b.ins().iadd_imm_s(off, 16);
        let more = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThan, next, bytes as i64);
        self.b
            .ins()
            .brif(more, lp, &[BlockArg::from(next)], after, &[]);
        self.b.switch_to_block(after);
    }

    /// Emits a block; returns the values of its closing `yield`, if it has one.
    fn block(&mut self, blk: &Block) -> R<Option<Vec<Val>>> {
        for (n, inst) in blk.insts.iter().enumerate() {
            if let InstKind::Yield(vals) = &inst.kind {
                if n + 1 != blk.insts.len() {
                    return internal("a `yield` that does not end its block");
                }
                return Ok(Some(vals.clone()));
            }
            self.inst(inst)?;
        }
        Ok(None)
    }

    /// Flattens values into block arguments (canonical layout).
    fn flat(&mut self, vals: &[Val]) -> R<Vec<Value>> {
        let mut out = Vec::new();
        for &v in vals {
            out.extend(self.plain(v)?);
        }
        Ok(out)
    }

    /// Appends block parameters for `vals` to `blk` and returns them.
    fn params_for(&mut self, blk: ClBlock, vals: &[Val]) -> R<Vec<Value>> {
        let mut out = Vec::new();
        for &v in vals {
            let lay = layout(self.ty(v)?)?;
            for _ in 0..lay.parts {
                out.push(self.b.append_block_param(blk, lay.part));
            }
        }
        Ok(out)
    }

    /// Binds `vals` to the flat `params`, in order.
    fn bind(&mut self, vals: &[Val], params: &[Value]) -> R<()> {
        let mut at = 0;
        for &v in vals {
            let n = layout(self.ty(v)?)?.parts as usize;
            match params.get(at..at + n) {
                Some(p) => self.def(v, Repr::plain(p.to_vec()))?,
                None => return internal("block parameters do not match the values they bind"),
            }
            at += n;
        }
        Ok(())
    }

    fn same_types(&self, what: &str, a: &[Val], b: &[Val]) -> R<()> {
        let ta: Vec<Ty> = a.iter().map(|&v| self.ty(v)).collect::<R<_>>()?;
        let tb: Vec<Ty> = b.iter().map(|&v| self.ty(v)).collect::<R<_>>()?;
        if ta != tb {
            return internal(format!("{what}: types {ta:?} do not match {tb:?}"));
        }
        Ok(())
    }

    fn inst(&mut self, inst: &Inst) -> R<()> {
        match &inst.kind {
            InstKind::Const(s) => self.const_(inst, *s),
            InstKind::ProgramId(axis) => self.program_id(inst, *axis),
            InstKind::Unary(op, x) => self.unary(inst, *op, *x),
            InstKind::Binary(op, a, b) => self.binary(inst, *op, *a, *b),
            InstKind::Cmp(op, a, b) => self.cmp(inst, *op, *a, *b),
            InstKind::Select(c, a, b) => self.select(inst, *c, *a, *b),
            InstKind::Fma(a, b, c) => self.fma(inst, *a, *b, *c),
            InstKind::Dot(acc, a, b) => self.dot(inst, *acc, *a, *b),
            InstKind::Cast(x, _mode) => self.cast(inst, *x),
            InstKind::Bitcast(x) => self.bitcast(inst, *x),
            InstKind::Splat(x) => self.splat(inst, *x),
            InstKind::Extract(x, lane) => self.extract(inst, *x, *lane),
            InstKind::ReduceLanes(op, x) => self.reduce_lanes(inst, *op, *x),
            InstKind::Math(f, _) => unsupported(format!(
                "math routine `{f:?}` (the shared `to_backend_subset` pass expands math routines)"
            )),
            InstKind::Load { buf, index } => self.load(inst, *buf, *index),
            InstKind::Store { buf, index, value } => self.store(*buf, *index, *value),
            InstKind::For {
                lo,
                hi,
                step,
                iv,
                iter,
                init,
                body,
            } => self.for_(inst, *lo, *hi, *step, *iv, iter, init, body),
            InstKind::If {
                cond,
                then_blk,
                else_blk,
            } => self.if_(inst, *cond, then_blk, else_blk),
            InstKind::Yield(_) => internal("a `yield` outside the end of a `for` or `if` block"),
            InstKind::Mma { .. } => unsupported("`mma` (the shared `to_backend_subset` pass expands it into loops)"),
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
                unsupported("a tile instruction (`Host::prepare` runs `scalarize-tiles` before code generation)")
            }
            InstKind::Trap { cond, code, value } => self.trap(*cond, *code, *value),
        }
    }

    // ==== `const` ====

    fn scalar_const(&mut self, elem: DType, s: Scalar) -> R<Value> {
        let t = elem_type(elem)?;
        Ok(match (elem, s) {
            (DType::F32, Scalar::Float(f)) => self.b.ins().f32const(Ieee32::with_float(f as f32)),
            (DType::F32, Scalar::Int(i)) => self.b.ins().f32const(Ieee32::with_float(i as f32)),
            (DType::F64, Scalar::Float(f)) => self.b.ins().f64const(Ieee64::with_float(f)),
            (DType::F64, Scalar::Int(i)) => self.b.ins().f64const(Ieee64::with_float(i as f64)),
            (DType::Bool, Scalar::Int(i)) => self.iconst(t, (i != 0) as i64),
            (DType::Bool, Scalar::Float(f)) => self.iconst(t, (f != 0.0) as i64),
            (_, Scalar::Int(i)) => self.iconst(t, i),
            (d, Scalar::Float(f)) => self.iconst(t, float_literal_to_int(d, f)),
        })
    }

    fn const_(&mut self, inst: &Inst, s: Scalar) -> R<()> {
        let r = Self::result(inst, 0)?;
        let ty = self.ty(r)?;
        let lay = layout(ty)?;
        let x = self.scalar_const(ty.elem, s)?;
        let part = self.broadcast(lay.part, x);
        self.def(r, Repr::plain(vec![part; lay.parts as usize]))
    }

    // ==== `program_id` ====

    fn program_id(&mut self, inst: &Inst, axis: u8) -> R<()> {
        let r = Self::result(inst, 0)?;
        match self.pids.get(axis as usize) {
            Some(&p) => self.def(r, Repr::plain(vec![p])),
            None => internal(format!("program_id {axis}: the grid has at most 3 axes")),
        }
    }

    // ==== `unary` ====

    fn unary(&mut self, inst: &Inst, op: UnOp, x: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let elem = self.ty(x)?.elem;
        let xr = self.repr(x)?;
        if xr.mask && op == UnOp::Not {
            // Complementing a mask keeps it a mask.
            let parts = xr.parts.iter().map(|&p| self.b.ins().bnot(p)).collect();
            return self.def(r, Repr { parts, mask: true });
        }
        let mut out = Vec::new();
        for p in self.plain(x)? {
            out.push(self.unary_part(op, elem, p)?);
        }
        self.def(r, Repr::plain(out))
    }

    fn unary_part(&mut self, op: UnOp, elem: DType, p: Value) -> R<Value> {
        let t = self.vtype(p);
        Ok(match op {
            UnOp::Neg if elem.is_float() => self.b.ins().fneg(p),
            UnOp::Neg if elem.is_int() => self.b.ins().ineg(p),
            UnOp::Abs if elem.is_float() => self.b.ins().fabs(p),
            UnOp::Abs if elem.is_signed_int() => {
                if t == types::I64X2 {
                    // Not every x86 has a 64-bit lane abs; select against the negation.
                    let n = self.b.ins().ineg(p);
                    let zero = self.int_splat(t, 0);
                    let neg = self.b.ins().icmp(IntCC::SignedLessThan, p, zero);
                    self.b.ins().bitselect(neg, n, p)
                } else {
                    self.b.ins().iabs(p)
                }
            }
            UnOp::Abs if elem.is_unsigned_int() || elem == DType::Bool => p,
            UnOp::Not if elem == DType::Bool => {
                let one = self.int_splat(t, 1);
                self.b.ins().bxor(p, one)
            }
            UnOp::Not if elem.is_int() => self.b.ins().bnot(p),
            UnOp::Sqrt if elem.is_float() => self.b.ins().sqrt(p),
            UnOp::Floor if elem.is_float() => self.b.ins().floor(p),
            UnOp::Ceil if elem.is_float() => self.b.ins().ceil(p),
            // Cranelift's `nearest` rounds half to even, as kernel IR's `round` does.
            UnOp::Round if elem.is_float() => self.b.ins().nearest(p),
            UnOp::Trunc if elem.is_float() => self.b.ins().trunc(p),
            // Rounding an integer or bool is the identity.
            UnOp::Floor | UnOp::Ceil | UnOp::Round | UnOp::Trunc if !elem.is_float() => p,
            _ => return unsupported(format!("unary `{op:?}` on {elem}")),
        })
    }

    // ==== `fma` ====

    /// One rounding, as kernel IR says: only where the ISA has the instruction (Cranelift would
    /// otherwise call `fmaf`, and blobs may not call anything).
    fn fma(&mut self, inst: &Inst, a: Val, b: Val, c: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        self.same_types("fma operands", &[a, a], &[b, c])?;
        if !self.has_fma {
            return unsupported("`fma` on a CPU without FMA".to_string());
        }
        let (pa, pb, pc) = (self.plain(a)?, self.plain(b)?, self.plain(c)?);
        let mut out = Vec::with_capacity(pa.len());
        for ((x, y), z) in pa.into_iter().zip(pb).zip(pc) {
            out.push(self.b.ins().fma(x, y, z));
        }
        self.def(r, Repr::plain(out))
    }

    // ==== `dot` ====

    /// i16 pairs into i32 lanes: per 128-bit part, the products of the low and high halves
    /// (widened to i32) added pairwise, which Cranelift's x64 backend selects as one `pmaddwd`
    /// (SSE2); then the accumulator is added. Exact: each product fits i32 and the pair's sum
    /// wraps as the instruction's does. Other forms are not this backend's.
    fn dot(&mut self, inst: &Inst, acc: Val, a: Val, b: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let (xt, at, bt) = (self.ty(acc)?, self.ty(a)?, self.ty(b)?);
        let (lx, la, lb) = (layout(xt)?, layout(at)?, layout(bt)?);
        let pairs = at.elem == DType::I16
            && bt.elem == DType::I16
            && at.lanes == 2 * xt.lanes
            && lx.part == types::I32X4
            && la.part == types::I16X8
            && lb.part == types::I16X8
            && lx.parts == la.parts;
        if !pairs {
            return unsupported(format!(
                "`dot` of {at} and {bt} into {xt} (host has i16 pairs into vectors of 4 x i32)"
            ));
        }
        let (px, pa, pb) = (self.plain(acc)?, self.plain(a)?, self.plain(b)?);
        let mut out = Vec::with_capacity(px.len());
        for ((s, x), y) in px.into_iter().zip(pa).zip(pb) {
            let (xl, yl) = (self.b.ins().swiden_low(x), self.b.ins().swiden_low(y));
            let (xh, yh) = (self.b.ins().swiden_high(x), self.b.ins().swiden_high(y));
            let lo = self.b.ins().imul(xl, yl);
            let hi = self.b.ins().imul(xh, yh);
            let d = self.b.ins().iadd_pairwise(lo, hi);
            out.push(self.b.ins().iadd(s, d));
        }
        self.def(r, Repr::plain(out))
    }

    // ==== `binary` ====

    fn binary(&mut self, inst: &Inst, op: BinOp, a: Val, b: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        self.same_types("binary operands", &[a], &[b])?;
        let elem = self.ty(a)?.elem;
        let (ra, rb) = (self.repr(a)?, self.repr(b)?);
        let same_masks = ra.mask
            && rb.mask
            && ra.parts.len() == rb.parts.len()
            && ra
                .parts
                .iter()
                .zip(&rb.parts)
                .all(|(&x, &y)| self.vtype(x) == self.vtype(y));
        if same_masks {
            // Bool ops are bitwise, and all-ones/all-zeros lanes stay masks under them.
            let mut parts = Vec::new();
            for (&x, &y) in ra.parts.iter().zip(&rb.parts) {
                parts.push(self.binary_part(op, elem, x, y)?);
            }
            return self.def(r, Repr { parts, mask: true });
        }
        let (pa, pb) = (self.plain(a)?, self.plain(b)?);
        let mut out = Vec::new();
        for (x, y) in pa.into_iter().zip(pb) {
            out.push(self.binary_part(op, elem, x, y)?);
        }
        self.def(r, Repr::plain(out))
    }

    fn binary_part(&mut self, op: BinOp, elem: DType, a: Value, b: Value) -> R<Value> {
        use BinOp::*;
        let t = self.vtype(a);
        if elem == DType::Bool {
            return Ok(match op {
                And | Min => self.b.ins().band(a, b),
                Or | Max => self.b.ins().bor(a, b),
                Xor => self.b.ins().bxor(a, b),
                _ => return unsupported(format!("binary `{op:?}` on bool")),
            });
        }
        if elem.is_float() {
            return Ok(match op {
                Add => self.b.ins().fadd(a, b),
                Sub => self.b.ins().fsub(a, b),
                Mul => self.b.ins().fmul(a, b),
                Div => self.b.ins().fdiv(a, b),
                // Cranelift's fmin/fmax return NaN when either operand is NaN, as kernel IR's do.
                Min => self.b.ins().fmin(a, b),
                Max => self.b.ins().fmax(a, b),
                Rem if t.is_vector() => {
                    return self.lanewise(a, b, |cg, x, y| cg.binary_part(op, elem, x, y))
                }
                Rem => self.fmod(a, b),
                _ => return unsupported(format!("binary `{op:?}` on {elem}")),
            });
        }
        let signed = elem.is_signed_int();
        Ok(match op {
            Add => self.b.ins().iadd(a, b),
            Sub => self.b.ins().isub(a, b),
            // x86 has no byte-lane multiply, and Cranelift does not emulate one.
            Mul if t == types::I8X16 => {
                return self.lanewise(a, b, |cg, x, y| cg.binary_part(op, elem, x, y))
            }
            Mul => self.b.ins().imul(a, b),
            // x86 has no vector division; a shift's amount is one scalar in Cranelift's
            // vector shifts but per lane in kernel IR. Both go lane by lane.
            Div | Rem | Shl | Shr if t.is_vector() => {
                return self.lanewise(a, b, |cg, x, y| cg.binary_part(op, elem, x, y))
            }
            Div | Rem => self.int_divrem(op == Div, signed, a, b),
            Min if signed => self.b.ins().smin(a, b),
            Min => self.b.ins().umin(a, b),
            Max if signed => self.b.ins().smax(a, b),
            Max => self.b.ins().umax(a, b),
            And => self.b.ins().band(a, b),
            Or => self.b.ins().bor(a, b),
            Xor => self.b.ins().bxor(a, b),
            // Cranelift takes shift amounts modulo the width, as kernel IR does.
            Shl => self.b.ins().ishl(a, b),
            Shr if signed => self.b.ins().sshr(a, b),
            Shr => self.b.ins().ushr(a, b),
        })
    }

    /// Applies a scalar operation to each lane pair of two vectors of the same type.
    fn lanewise(
        &mut self,
        a: Value,
        b: Value,
        mut f: impl FnMut(&mut Self, Value, Value) -> R<Value>,
    ) -> R<Value> {
        let t = self.vtype(a);
        let (la, lb) = (self.lanes_of(&[a]), self.lanes_of(&[b]));
        let mut out = Vec::with_capacity(la.len());
        for (x, y) in la.into_iter().zip(lb) {
            out.push(f(self, x, y)?);
        }
        let lay = Layout {
            part: t,
            per: t.lane_count(),
            parts: 1,
        };
        Ok(self.build(lay, out)?[0])
    }

    /// Scalar integer division or remainder with kernel IR's total semantics: x / 0 = 0,
    /// x % 0 = 0, MIN / -1 = MIN, MIN % -1 = 0. Cranelift's `sdiv`/`udiv` trap on those,
    /// so the divisor is replaced by 1 wherever they would and the result patched.
    fn int_divrem(&mut self, div: bool, signed: bool, a: Value, b: Value) -> Value {
        let t = self.vtype(a);
        let zero = self.iconst(t, 0);
        let one = self.iconst(t, 1);
        let is_zero = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
        if !signed {
            let d = self.b.ins().select(is_zero, one, b);
            return if div {
                let q = self.b.ins().udiv(a, d);
                self.b.ins().select(is_zero, zero, q)
            } else {
                // x % 1 = 0, which is also the answer for x % 0.
                self.b.ins().urem(a, d)
            };
        }
        let m1 = self.iconst(t, -1);
        let is_m1 = self.b.ins().icmp(IntCC::Equal, b, m1);
        let bad = self.b.ins().bor(is_zero, is_m1);
        let d = self.b.ins().select(bad, one, b);
        if div {
            // x / -1 = -x, wrapping MIN to MIN.
            let q = self.b.ins().sdiv(a, d);
            let neg = self.b.ins().ineg(a);
            let q = self.b.ins().select(is_m1, neg, q);
            self.b.ins().select(is_zero, zero, q)
        } else {
            // x % 1 = 0, the answer for both x % 0 and x % -1.
            self.b.ins().srem(a, d)
        }
    }

    /// C `fmod` for a scalar f32 or f64, exactly, without a libcall: musl's integer
    /// long division of the significands, one bit per exponent step.
    fn fmod(&mut self, x: Value, y: Value) -> Value {
        let ft = self.vtype(x);
        let (it, w, mb): (Type, i64, i64) = if ft == types::F32 {
            (types::I32, 32, 23)
        } else {
            (types::I64, 64, 52)
        };
        let sign = if w == 32 { 0x8000_0000 } else { i64::MIN };
        let abs = if w == 32 { 0x7fff_ffff } else { i64::MAX };
        let inf = if w == 32 {
            0x7f80_0000
        } else {
            0x7ff0_0000_0000_0000
        };
        let nan = if w == 32 {
            0x7fc0_0000
        } else {
            0x7ff8_0000_0000_0000
        };
        let implicit = 1i64 << mb;
        let ux = self.b.ins().bitcast(it, MemFlagsData::new(), x);
        let uy = self.b.ins().bitcast(it, MemFlagsData::new(), y);
        let sx = self.b.ins().band_imm_s(ux, sign);
        let ax = self.b.ins().band_imm_s(ux, abs);
        let ay = self.b.ins().band_imm_s(uy, abs);
        // NaN when y is 0 or NaN or x is inf or NaN; x itself when |x| < |y|; ±0 when equal.
        let y0 = self.b.ins().icmp_imm_s(IntCC::Equal, ay, 0);
        let ynan = self.b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, ay, inf);
        let xbad = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, ax, inf);
        let bad = self.b.ins().bor(y0, ynan);
        let bad = self.b.ins().bor(bad, xbad);
        let small = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, ax, ay);
        let equal = self.b.ins().icmp(IntCC::Equal, ax, ay);
        let small_res = self.b.ins().select(equal, sx, ux);
        let nanv = self.iconst(it, nan);
        let early_res = self.b.ins().select(bad, nanv, small_res);
        let early = self.b.ins().bor(bad, small);
        let main = self.b.create_block();
        let done = self.b.create_block();
        let res = self.b.append_block_param(done, it);
        self.b
            .ins()
            .brif(early, done, &[BlockArg::from(early_res)], main, &[]);

        self.b.switch_to_block(main);
        let (mx, ex) = self.fmod_normalize(ax, it, w, mb);
        let (my, ey) = self.fmod_normalize(ay, it, w, mb);
        let hdr = self.b.create_block();
        let body = self.b.create_block();
        let after = self.b.create_block();
        let hm = self.b.append_block_param(hdr, it);
        let he = self.b.append_block_param(hdr, it);
        let am = self.b.append_block_param(after, it);
        let ae = self.b.append_block_param(after, it);
        self.b
            .ins()
            .jump(hdr, &[BlockArg::from(mx), BlockArg::from(ex)]);

        // One quotient bit per exponent step: subtract when it fits, then shift.
        self.b.switch_to_block(hdr);
        let go = self.b.ins().icmp(IntCC::SignedGreaterThan, he, ey);
        self.b.ins().brif(
            go,
            body,
            &[],
            after,
            &[BlockArg::from(hm), BlockArg::from(he)],
        );
        self.b.switch_to_block(body);
        let i = self.b.ins().isub(hm, my);
        let keep = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, i, 0);
        let m2 = self.b.ins().select(keep, i, hm);
        let m3 = self.b.ins().ishl_imm_s(m2, 1);
        let e2 = self.b.ins().iadd_imm_s(he, -1);
        self.b
            .ins()
            .jump(hdr, &[BlockArg::from(m3), BlockArg::from(e2)]);

        self.b.switch_to_block(after);
        let i = self.b.ins().isub(am, my);
        let keep = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, i, 0);
        let m = self.b.ins().select(keep, i, am);
        let is_zero = self.b.ins().icmp_imm_s(IntCC::Equal, m, 0);
        // Renormalise so the leading one sits at the implicit bit.
        let lz = self.b.ins().clz(m);
        let s = self.b.ins().iadd_imm_s(lz, -(w - 1 - mb));
        let m = self.b.ins().ishl(m, s);
        let e = self.b.ins().isub(ae, s);
        let frac = self.b.ins().iadd_imm_s(m, -implicit);
        let expo = self.b.ins().ishl_imm_s(e, mb);
        let normal = self.b.ins().bor(frac, expo);
        let one = self.iconst(it, 1);
        let sh = self.b.ins().isub(one, e);
        let sub = self.b.ins().ushr(m, sh);
        let pos = self.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, e, 0);
        let r = self.b.ins().select(pos, normal, sub);
        let r = self.b.ins().bor(r, sx);
        let r = self.b.ins().select(is_zero, sx, r);
        self.b.ins().jump(done, &[BlockArg::from(r)]);

        self.b.switch_to_block(done);
        self.b.ins().bitcast(ft, MemFlagsData::new(), res)
    }

    /// Significand with the implicit bit made explicit, and exponent, of a finite nonzero
    /// `|x|` given as bits; subnormals are shifted up and get an exponent below 1.
    fn fmod_normalize(&mut self, a: Value, it: Type, w: i64, mb: i64) -> (Value, Value) {
        let e = self.b.ins().ushr_imm_s(a, mb);
        let lz = self.b.ins().clz(a);
        let s = self.b.ins().iadd_imm_s(lz, -(w - 1 - mb));
        let m_sub = self.b.ins().ishl(a, s);
        let one = self.iconst(it, 1);
        let e_sub = self.b.ins().isub(one, s);
        let frac = self.b.ins().band_imm_s(a, (1i64 << mb) - 1);
        let m_norm = self.b.ins().bor_imm_s(frac, 1i64 << mb);
        let is_sub = self.b.ins().icmp_imm_s(IntCC::Equal, e, 0);
        let m = self.b.ins().select(is_sub, m_sub, m_norm);
        let e = self.b.ins().select(is_sub, e_sub, e);
        (m, e)
    }

    // ==== `cmp` ====

    fn cmp(&mut self, inst: &Inst, op: CmpOp, a: Val, b: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        self.same_types("cmp operands", &[a], &[b])?;
        let elem = self.ty(a)?.elem;
        let (pa, pb) = (self.plain(a)?, self.plain(b)?);
        let mut out = Vec::new();
        let mut mask = false;
        for (x, y) in pa.into_iter().zip(pb) {
            mask = self.vtype(x).is_vector();
            out.push(self.cmp_part(op, elem, x, y));
        }
        // Vector compares give lane masks; scalar ones give 0/1, the canonical bool.
        self.def(r, Repr { parts: out, mask })
    }

    fn cmp_part(&mut self, op: CmpOp, elem: DType, a: Value, b: Value) -> Value {
        if elem.is_float() {
            // Ordered compares: false on NaN, except `ne` (Cranelift's `ne` is unordered-or-not-equal).
            let cc = match op {
                CmpOp::Eq => FloatCC::Equal,
                CmpOp::Ne => FloatCC::NotEqual,
                CmpOp::Lt => FloatCC::LessThan,
                CmpOp::Le => FloatCC::LessThanOrEqual,
                CmpOp::Gt => FloatCC::GreaterThan,
                CmpOp::Ge => FloatCC::GreaterThanOrEqual,
            };
            return self.b.ins().fcmp(cc, a, b);
        }
        let signed = elem.is_signed_int();
        let cc = match (op, signed) {
            (CmpOp::Eq, _) => IntCC::Equal,
            (CmpOp::Ne, _) => IntCC::NotEqual,
            (CmpOp::Lt, true) => IntCC::SignedLessThan,
            (CmpOp::Le, true) => IntCC::SignedLessThanOrEqual,
            (CmpOp::Gt, true) => IntCC::SignedGreaterThan,
            (CmpOp::Ge, true) => IntCC::SignedGreaterThanOrEqual,
            (CmpOp::Lt, false) => IntCC::UnsignedLessThan,
            (CmpOp::Le, false) => IntCC::UnsignedLessThanOrEqual,
            (CmpOp::Gt, false) => IntCC::UnsignedGreaterThan,
            (CmpOp::Ge, false) => IntCC::UnsignedGreaterThanOrEqual,
        };
        self.b.ins().icmp(cc, a, b)
    }

    // ==== `select` ====

    fn select(&mut self, inst: &Inst, c: Val, a: Val, b: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        self.same_types("select operands", &[a], &[b])?;
        let cty = self.ty(c)?;
        let vty = self.ty(a)?;
        if cty.elem != DType::Bool || (cty.lanes != 1 && cty.lanes != vty.lanes) {
            return internal(format!(
                "select on a condition of type {cty} for values of type {vty}"
            ));
        }
        let (ra, rb) = (self.repr(a)?, self.repr(b)?);
        let keep_masks = ra.mask && rb.mask && {
            let (ta, tb): (Vec<Type>, Vec<Type>) = (
                ra.parts.iter().map(|&p| self.vtype(p)).collect(),
                rb.parts.iter().map(|&p| self.vtype(p)).collect(),
            );
            ta == tb
        };
        let (pa, pb) = if keep_masks {
            (ra.parts, rb.parts)
        } else {
            (self.plain(a)?, self.plain(b)?)
        };
        let mut out = Vec::with_capacity(pa.len());
        if cty.lanes == 1 {
            let cv = self.scalar(c)?;
            for (x, y) in pa.into_iter().zip(pb) {
                out.push(self.b.ins().select(cv, x, y));
            }
            return self.def(
                r,
                Repr {
                    parts: out,
                    mask: keep_masks,
                },
            );
        }
        let pt = self.vtype(pa[0]);
        if pt.is_vector() {
            let masks = self.mask_for(c, pt)?;
            for ((x, y), m) in pa.into_iter().zip(pb).zip(masks) {
                let m = if pt.lane_type().is_float() {
                    self.b.ins().bitcast(pt, little(), m)
                } else {
                    m
                };
                out.push(self.b.ins().bitselect(m, x, y));
            }
        } else {
            let cp = self.plain(c)?;
            let cl = self.lanes_of(&cp);
            for ((x, y), cv) in pa.into_iter().zip(pb).zip(cl) {
                out.push(self.b.ins().select(cv, x, y));
            }
        }
        self.def(
            r,
            Repr {
                parts: out,
                mask: keep_masks,
            },
        )
    }

    // ==== `cast` ====

    fn cast(&mut self, inst: &Inst, x: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let (from, to) = (self.ty(x)?, self.ty(r)?);
        if from.lanes != to.lanes {
            return internal(format!("cast from {from} to {to} changes the lane count"));
        }
        let (lf, lt) = (layout(from)?, layout(to)?);
        let xr = self.repr(x)?;
        // bool masks to 0/1 of a type with the masks' lane shape: one `and` per part.
        if xr.mask && lt.part.is_vector() && self.vtype(xr.parts[0]).lane_count() == lt.per {
            let mut out = Vec::new();
            for &m in &xr.parts {
                let p = if lt.part.lane_type().is_float() {
                    let one = match lt.part.lane_type() {
                        types::F32 => self.b.ins().f32const(Ieee32::with_float(1.0)),
                        _ => self.b.ins().f64const(Ieee64::with_float(1.0)),
                    };
                    let ones = self.b.ins().splat(lt.part, one);
                    let mf = self.b.ins().bitcast(lt.part, little(), m);
                    self.b.ins().band(mf, ones)
                } else {
                    let one = self.int_splat(lt.part, 1);
                    self.b.ins().band(m, one)
                };
                out.push(p);
            }
            return self.def(r, Repr::plain(out));
        }
        let parts = self.plain(x)?;
        // Same-shaped vectors with a native conversion: int signedness changes are free, and
        // i32x4 <-> f32x4 are single instructions (Cranelift's saturating form sends NaN to 0).
        if lf.part.is_vector() && lf.per == lt.per {
            let same_bits = from.elem.is_int() && to.elem.is_int() && lf.part == lt.part;
            let to_float = (from.elem, to.elem) == (DType::I32, DType::F32);
            let to_int = (from.elem, to.elem) == (DType::F32, DType::I32);
            if same_bits || to_float || to_int {
                let mut out = Vec::new();
                for p in parts {
                    out.push(if same_bits {
                        p
                    } else if to_float {
                        self.b.ins().fcvt_from_sint(lt.part, p)
                    } else {
                        self.b.ins().fcvt_to_sint_sat(lt.part, p)
                    });
                }
                return self.def(r, Repr::plain(out));
            }
        }
        // Int vectors of different widths (the u16 patterns of f16/bf16 loads widened to i32,
        // and narrowed back on stores): whole-register widening and narrowing.
        if lf.part.is_vector() && lt.part.is_vector() && from.elem.is_int() && to.elem.is_int() {
            if let Some(out) = self.int_vector_resize(from.elem, to.elem, parts.clone()) {
                return self.def(r, Repr::plain(out));
            }
        }
        let lanes = self.lanes_of(&parts);
        let mut out = Vec::with_capacity(lanes.len());
        for l in lanes {
            out.push(self.scalar_cast(from.elem, to.elem, l)?);
        }
        let built = self.build(lt, out)?;
        self.def(r, Repr::plain(built))
    }

    /// Kernel IR's wrapping int cast between full 128-bit vectors of different lane widths,
    /// one halving or doubling step at a time: widening sign- or zero-extends by the source's
    /// signedness (`swiden`/`uwiden`, low then high half), narrowing keeps the low bits (each
    /// lane is first reduced to the narrow type's range, so the saturating `snarrow`/`unarrow`
    /// are exact). `None` for pairs it does not handle (64-bit lanes).
    fn int_vector_resize(
        &mut self,
        from: DType,
        to: DType,
        mut parts: Vec<Value>,
    ) -> Option<Vec<Value>> {
        let (fb, tb) = (from.bits(), to.bits());
        if !(8..=32).contains(&fb) || !(8..=32).contains(&tb) || fb == tb {
            return None;
        }
        let mut bits = fb;
        while bits < tb {
            let mut out = Vec::with_capacity(parts.len() * 2);
            for p in parts {
                if from.is_signed_int() {
                    out.push(self.b.ins().swiden_low(p));
                    out.push(self.b.ins().swiden_high(p));
                } else {
                    out.push(self.b.ins().uwiden_low(p));
                    out.push(self.b.ins().uwiden_high(p));
                }
            }
            parts = out;
            bits *= 2;
        }
        while bits > tb {
            let half = bits / 2;
            let wide = self.vtype(parts[0]);
            let reduced: Vec<Value> = parts
                .iter()
                .map(|&p| {
                    if to.is_signed_int() {
                        // Sign-extend the low `half` bits in place.
                        let l = self.b.ins().ishl_imm_s(p, (bits - half) as i64);
                        self.b.ins().sshr_imm_s(l, (bits - half) as i64)
                    } else {
                        let m = self.int_splat(wide, (1i64 << half) - 1);
                        self.b.ins().band(p, m)
                    }
                })
                .collect();
            let mut out = Vec::with_capacity(reduced.len().div_ceil(2));
            for pair in reduced.chunks(2) {
                let (lo, hi) = (pair[0], *pair.get(1)?);
                out.push(if to.is_signed_int() {
                    self.b.ins().snarrow(lo, hi)
                } else {
                    self.b.ins().unarrow(lo, hi)
                });
            }
            parts = out;
            bits = half;
        }
        Some(parts)
    }

    /// Kernel IR's cast rules on one scalar: int→int wraps, int→float rounds to nearest even,
    /// float→int truncates and saturates with NaN → 0, anything→bool is `x != 0`,
    /// bool→anything is 0 or 1.
    fn scalar_cast(&mut self, from: DType, to: DType, v: Value) -> R<Value> {
        let (tf, tt) = (elem_type(from)?, elem_type(to)?);
        if from == to {
            return Ok(v);
        }
        if to == DType::Bool {
            return Ok(if from.is_float() {
                let z = if tf == types::F32 {
                    self.b.ins().f32const(Ieee32::with_float(0.0))
                } else {
                    self.b.ins().f64const(Ieee64::with_float(0.0))
                };
                // `ne` is true for NaN, and NaN != 0.
                self.b.ins().fcmp(FloatCC::NotEqual, v, z)
            } else {
                self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
            });
        }
        // A bool is an unsigned 0 or 1 from here on.
        let signed = from.is_signed_int();
        if !from.is_float() && !to.is_float() {
            let (bf, bt) = (tf.bits(), tt.bits());
            return Ok(if bt > bf {
                if signed {
                    self.b.ins().sextend(tt, v)
                } else {
                    self.b.ins().uextend(tt, v)
                }
            } else if bt < bf {
                self.b.ins().ireduce(tt, v)
            } else {
                v
            });
        }
        if !from.is_float() {
            // int → float. Narrow sources are widened first; every value of a narrow int
            // fits a signed i32, which converts exactly as the source would.
            let (src, as_signed) = match tf.bits() {
                8 | 16 => {
                    let w = if signed {
                        self.b.ins().sextend(types::I32, v)
                    } else {
                        self.b.ins().uextend(types::I32, v)
                    };
                    (w, true)
                }
                _ => (v, signed),
            };
            return Ok(if as_signed {
                self.b.ins().fcvt_from_sint(tt, src)
            } else {
                self.b.ins().fcvt_from_uint(tt, src)
            });
        }
        if to.is_float() {
            return Ok(if tt.bits() > tf.bits() {
                self.b.ins().fpromote(tt, v)
            } else {
                self.b.ins().fdemote(tt, v)
            });
        }
        // float → int: Cranelift's saturating conversions truncate, saturate and send NaN to
        // 0. They exist for 32 and 64 bits; narrower targets convert to i32 and clamp.
        Ok(match (to, tt.bits()) {
            (_, 64) | (_, 32) if to.is_signed_int() => self.b.ins().fcvt_to_sint_sat(tt, v),
            (_, 64) | (_, 32) => self.b.ins().fcvt_to_uint_sat(tt, v),
            (_, bits) => {
                let w = self.b.ins().fcvt_to_sint_sat(types::I32, v);
                let (lo, hi) = if to.is_signed_int() {
                    (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
                } else {
                    (0, (1i64 << bits) - 1)
                };
                let lo = self.iconst(types::I32, lo);
                let hi = self.iconst(types::I32, hi);
                let c = self.b.ins().smax(w, lo);
                let c = self.b.ins().smin(c, hi);
                self.b.ins().ireduce(tt, c)
            }
        })
    }

    // ==== `bitcast` ====

    fn bitcast(&mut self, inst: &Inst, x: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let (from, to) = (self.ty(x)?, self.ty(r)?);
        let (fb, tb) = (
            from.elem.bits() as u64 * from.lanes as u64,
            to.elem.bits() as u64 * to.lanes as u64,
        );
        if fb != tb {
            return internal(format!(
                "bitcast from {from} ({fb} bits) to {to} ({tb} bits)"
            ));
        }
        let (lf, lt) = (layout(from)?, layout(to)?);
        let parts = self.plain(x)?;
        let out = if lf.parts == lt.parts && lf.part.bits() == lt.part.bits() {
            let mut out = Vec::new();
            for p in parts {
                out.push(if lf.part == lt.part {
                    p
                } else if lf.part.is_vector() {
                    self.b.ins().bitcast(lt.part, little(), p)
                } else {
                    self.b.ins().bitcast(lt.part, MemFlagsData::new(), p)
                });
            }
            out
        } else {
            // Different splits of the same bytes: go through a stack slot.
            let size = u32::try_from(fb / 8)
                .map_err(|_| CgError::Unsupported(format!("bitcast of {from}")))?;
            let slot = self.b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                size,
                4,
            ));
            let addr = self.b.ins().stack_addr(types::I64, slot, 0);
            let sb = lf.part.bytes() as i32;
            for (i, p) in parts.into_iter().enumerate() {
                self.b.ins().store(mem(), p, addr, i as i32 * sb);
            }
            let lb = lt.part.bytes() as i32;
            (0..lt.parts as i32)
                .map(|i| self.b.ins().load(lt.part, mem(), addr, i * lb))
                .collect()
        };
        if to.elem == DType::Bool {
            // Bits that are not 0/1 are true when nonzero, as every bool read is.
            let zero = self.int_splat(lt.part, 0);
            let mut parts = Vec::new();
            for p in out {
                parts.push(self.b.ins().icmp(IntCC::NotEqual, p, zero));
            }
            return self.def(
                r,
                Repr {
                    parts,
                    mask: lt.part.is_vector(),
                },
            );
        }
        self.def(r, Repr::plain(out))
    }

    // ==== `splat` ====

    fn splat(&mut self, inst: &Inst, x: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let s = self.scalar(x)?;
        let lay = layout(self.ty(r)?)?;
        let part = self.broadcast(lay.part, s);
        self.def(r, Repr::plain(vec![part; lay.parts as usize]))
    }

    // ==== `extract` ====

    fn extract(&mut self, inst: &Inst, x: Val, lane: u16) -> R<()> {
        let r = Self::result(inst, 0)?;
        let xt = self.ty(x)?;
        if lane >= xt.lanes {
            return internal(format!("extract of lane {lane} from {xt}"));
        }
        let lay = layout(xt)?;
        let parts = self.plain(x)?;
        let (p, l) = ((lane as u32 / lay.per) as usize, lane as u32 % lay.per);
        let v = if lay.per == 1 {
            parts[p]
        } else {
            self.b.ins().extractlane(parts[p], l as u8)
        };
        self.def(r, Repr::plain(vec![v]))
    }

    // ==== `reduce_lanes` ====

    fn reduce_lanes(&mut self, inst: &Inst, op: ReduceOp, x: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let elem = self.ty(x)?.elem;
        let parts = self.plain(x)?;
        let lanes = self.lanes_of(&parts);
        let bop = op.binop();
        // Lane 0 first, then each lane in order, so float sums round as a sequential loop does.
        let mut acc = lanes[0];
        for &l in &lanes[1..] {
            acc = self.binary_part(bop, elem, acc, l)?;
        }
        self.def(r, Repr::plain(vec![acc]))
    }

    // ==== `load` ====

    /// The address of element `index` of `buf` read as `elem`, as a base and a byte
    /// displacement, and the element size in bytes. `elem` is the buffer's dtype or its
    /// storage view (`u16` for f16/bf16, `u8` for the float8s and the bytes of sub-byte
    /// dtypes); the index counts elements of `elem`. An index `x + c` (constant `c`) is
    /// addressed as `x` with `c` elements of displacement, where that fits (with room for the
    /// vector parts after it).
    fn address(&mut self, buf: Buf, index: Val, elem: DType) -> R<(Value, i32, u32)> {
        let Some(decl) = self.k.bufs.get(buf.0 as usize) else {
            return internal(format!("buffer #{} is not declared", buf.0));
        };
        if decl.view_len(elem).is_none() {
            return unsupported(format!(
                "access to buffer `{}` of dtype {} as {elem} (run `to_backend_subset` first)",
                decl.name, decl.dtype
            ));
        }
        let eb = elem.bits() / 8;
        if eb == 0 {
            return unsupported(format!(
                "an access to buffer `{}` as sub-byte {elem}",
                decl.name
            ));
        }
        let it = self.ty(index)?;
        if it != Ty::INDEX {
            return internal(format!("an index of type {it} (indices are i64)"));
        }
        let (base, at) = self.bases[buf.0 as usize];
        let (index, disp) = match self.index_offsets.get(&index) {
            Some(&(x, c)) => match c
                .checked_mul(eb as i64)
                .and_then(|d| d.checked_add(at))
                .filter(|d| d.unsigned_abs() < 1 << 30)
            {
                Some(d) => (x, d),
                None => (index, at),
            },
            None => (index, at),
        };
        let idx = self.scalar(index)?;
        // A shift lets Cranelift fold the scaling into the x86 addressing mode.
        let off = if eb == 1 {
            idx
        } else {
            self.b.ins().ishl_imm_s(idx, eb.trailing_zeros() as i64)
        };
        let addr = self.b.ins().iadd(base, off);
        // A displacement that fits the addressing mode (with room for the vector parts after
        // it) goes there; a larger one is added.
        if disp.unsigned_abs() < 1 << 30 {
            return Ok((addr, disp as i32, eb));
        }
        Ok((self.b.ins().iadd_imm_s(addr, disp), 0, eb))
    }

    fn load(&mut self, inst: &Inst, buf: Buf, index: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let ty = self.ty(r)?;
        let lay = layout(ty)?;
        let (addr, disp, eb) = self.address(buf, index, ty.elem)?;
        let step = (lay.per * eb) as i32;
        let flags = if self.movable.contains(&r) {
            mem().with_readonly().with_can_move()
        } else {
            mem()
        };
        let mut parts = Vec::with_capacity(lay.parts as usize);
        for i in 0..lay.parts as i32 {
            parts.push(self.b.ins().load(lay.part, flags, addr, disp + i * step));
        }
        if ty.elem == DType::Bool {
            // A stored bool byte is true when nonzero; vectors of them become masks.
            let zero = self.int_splat(lay.part, 0);
            let parts = parts
                .into_iter()
                .map(|p| self.b.ins().icmp(IntCC::NotEqual, p, zero))
                .collect();
            return self.def(
                r,
                Repr {
                    parts,
                    mask: lay.part.is_vector(),
                },
            );
        }
        self.def(r, Repr::plain(parts))
    }

    // ==== `store` ====

    fn store(&mut self, buf: Buf, index: Val, value: Val) -> R<()> {
        let vt = self.ty(value)?;
        let lay = layout(vt)?;
        let parts = self.plain(value)?;
        let (addr, disp, eb) = self.address(buf, index, vt.elem)?;
        let step = (lay.per * eb) as i32;
        for (i, p) in parts.into_iter().enumerate() {
            self.b.ins().store(mem(), p, addr, disp + i as i32 * step);
        }
        Ok(())
    }

    // ==== `for` ====

    /// A loop counting its trips down: one trip-count division before the first trip, then
    /// each trip ends with the increment, a decrement and the latch's test, the only branch
    /// back. Neither the induction variable nor the counter is used after its update, so
    /// the back edge needs no register moves. (Constant bounds take [`Self::counted_for`].)
    ///
    /// The trip count `(hi - lo - 1) / step + 1` is exactly the number of trips the
    /// interpreter makes, including a loop that would step past `i64::MAX` (it stops there).
    /// A loop whose step is not positive runs no trip (the interpreter traps on it; the
    /// verifier cannot rule it out). A constant step of 1 or a power of two needs no
    /// division once Cranelift has simplified it.
    #[allow(clippy::too_many_arguments)]
    fn for_(
        &mut self,
        inst: &Inst,
        lo: Val,
        hi: Val,
        step: Val,
        iv: Val,
        iter: &[Val],
        init: &[Val],
        body: &Block,
    ) -> R<()> {
        self.same_types("for init and carried values", iter, init)?;
        self.same_types("for carried values and results", iter, &inst.results)?;
        let bounds = [lo, hi, step].map(|v| self.consts.get(&v).copied());
        if let [Some(l), Some(h), Some(s)] = bounds {
            // Unless the induction variable would step past i64 (the counted form stops
            // there, as the interpreter does).
            if s <= 0 || l >= h || h.checked_add(s).is_some() {
                return self.counted_for(inst, (l, h, s), iv, iter, init, body);
            }
        }
        let (lo, hi, step) = (self.scalar(lo)?, self.scalar(hi)?, self.scalar(step)?);
        let init = self.flat(init)?;
        let latch = self.b.create_block();
        let body_blk = self.b.create_block();
        let exit = self.b.create_block();
        let lv = self.b.append_block_param(latch, types::I64);
        let lcount = self.b.append_block_param(latch, types::I64);
        let lvals = self.params_for(latch, iter)?;
        let outs = self.params_for(exit, &inst.results)?;
        let nonempty = self.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
        let forward = self.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, step, 0);
        let enter = self.b.ins().band(nonempty, forward);
        // Computed on both paths, so the divisor must not be 0 when the loop is skipped.
        let one = self.b.ins().iconst(types::I64, 1);
        let divisor = self.b.ins().select(forward, step, one);
        let span = self.b.ins().isub(hi, lo);
        let span1 = self.b.ins().iadd_imm_s(span, -1);
        let q = self.b.ins().udiv(span1, divisor);
        let trips = self.b.ins().iadd_imm_s(q, 1);
        let zero = self.b.ins().iconst(types::I64, 0);
        let trips = self.b.ins().select(enter, trips, zero);
        let first: Vec<BlockArg> = [lo, trips]
            .into_iter()
            .chain(init.iter().copied())
            .map(BlockArg::from)
            .collect();
        self.b.ins().jump(latch, &first);

        // The latch tests the count, on entry and after each trip. The trip's values reach
        // it as arguments of one jump, so each is used once: Cranelift folds a load into its
        // one consumer (a `splat` into `vbroadcastss` from memory) only when every value
        // computed from it has a single use, and a branch naming a value for both of its
        // targets (the back edge and the exit of a loop tested at its end) uses it twice.
        // The latch is placed after the body, so the body falls into it and each trip still
        // ends with one branch, the one back.
        let next = self.trip(body_blk, (iv, lv), (iter, &lvals), body)?;
        let ivn = self.b.ins().iadd(lv, step);
        let left = self.b.ins().iadd_imm_s(lcount, -1);
        let back: Vec<BlockArg> = [ivn, left]
            .into_iter()
            .chain(next.iter().copied())
            .map(BlockArg::from)
            .collect();
        self.b.ins().jump(latch, &back);

        self.b.switch_to_block(latch);
        let again = self.b.ins().icmp_imm_s(IntCC::NotEqual, lcount, 0);
        let leave: Vec<BlockArg> = lvals.iter().copied().map(BlockArg::from).collect();
        self.b.ins().brif(again, body_blk, &[], exit, &leave);

        self.b.switch_to_block(exit);
        self.bind(&inst.results, &outs)
    }

    /// A `for` whose bounds are constants: its trip count is known here. No trip: the
    /// results are the initial values. Otherwise the loop carries only the induction
    /// variable, which the latch compares with its constant final value (one register
    /// fewer than the counted form above, for the nests of a tiled kernel). As there, the
    /// trip's values reach the latch through one jump, each used once. The caller has
    /// checked that the final value `lo + trips·step` (at most `hi + step - 1`) fits i64.
    fn counted_for(
        &mut self,
        inst: &Inst,
        (lo, hi, step): (i64, i64, i64),
        iv: Val,
        iter: &[Val],
        init: &[Val],
        body: &Block,
    ) -> R<()> {
        let trips = if step > 0 && lo < hi {
            (hi as i128 - lo as i128 - 1) / step as i128 + 1
        } else {
            0
        };
        if trips == 0 {
            // The results are the initial values, representation and all.
            for (&r, &i) in inst.results.iter().zip(init) {
                let rep = self.repr(i)?;
                self.def(r, rep)?;
            }
            return Ok(());
        }
        let Ok(end) = i64::try_from(lo as i128 + trips * step as i128) else {
            return internal("a constant loop whose final induction value overflows i64");
        };
        let init_v = self.flat(init)?;
        let latch = self.b.create_block();
        let body_blk = self.b.create_block();
        let exit = self.b.create_block();
        // The induction variable comes last, so it is stepped after the trip's values.
        let lvals = self.params_for(latch, iter)?;
        let lv = self.b.append_block_param(latch, types::I64);
        let outs = self.params_for(exit, &inst.results)?;
        let lo_v = self.b.ins().iconst(types::I64, lo);
        let first: Vec<BlockArg> = init_v
            .iter()
            .copied()
            .chain(std::iter::once(lo_v))
            .map(BlockArg::from)
            .collect();
        self.b.ins().jump(latch, &first);

        let next = self.trip(body_blk, (iv, lv), (iter, &lvals), body)?;
        let ivn = self.b.ins().iadd_imm_s(lv, step);
        let back: Vec<BlockArg> = next
            .iter()
            .copied()
            .chain(std::iter::once(ivn))
            .map(BlockArg::from)
            .collect();
        self.b.ins().jump(latch, &back);

        self.b.switch_to_block(latch);
        let again = self.b.ins().icmp_imm_s(IntCC::NotEqual, lv, end);
        let leave: Vec<BlockArg> = lvals.iter().copied().map(BlockArg::from).collect();
        self.b.ins().brif(again, body_blk, &[], exit, &leave);

        self.b.switch_to_block(exit);
        self.bind(&inst.results, &outs)
    }

    /// One trip of a loop: the body in `body_blk`, whose one predecessor is the latch, so it
    /// reads the latch's parameters (`lv`, the induction variable, and `lvals`, the carried
    /// values: one set of registers, not two with moves between). Returns the next trip's
    /// carried values.
    fn trip(
        &mut self,
        body_blk: ClBlock,
        (iv, lv): (Val, Value),
        (iter, lvals): (&[Val], &[Value]),
        body: &Block,
    ) -> R<Vec<Value>> {
        self.b.switch_to_block(body_blk);
        self.def(iv, Repr::plain(vec![lv]))?;
        self.bind(iter, lvals)?;
        let Some(yields) = self.block(body)? else {
            return internal("a `for` body that does not end with `yield`");
        };
        self.same_types("for yield and carried values", &yields, iter)?;
        self.flat(&yields)
    }

    // ==== `if` ====

    fn if_(&mut self, inst: &Inst, cond: Val, then_blk: &Block, else_blk: &Block) -> R<()> {
        let c = self.scalar(cond)?;
        let (tb, eb, merge) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        let outs = self.params_for(merge, &inst.results)?;
        self.b.ins().brif(c, tb, &[], eb, &[]);
        for (blk, body) in [(tb, then_blk), (eb, else_blk)] {
            self.b.switch_to_block(blk);
            let yields = self.block(body)?.unwrap_or_default();
            self.same_types("if yield and results", &yields, &inst.results)?;
            let vals = self.flat(&yields)?;
            let args: Vec<BlockArg> = vals.into_iter().map(BlockArg::from).collect();
            self.b.ins().jump(merge, &args);
        }
        self.b.switch_to_block(merge);
        self.bind(&inst.results, &outs)
    }

    // ==== `yield` ====
    // Handled by `block`, which hands a closing `yield`'s values to the enclosing `for` or
    // `if`; a `yield` anywhere else is refused in `inst`.

    // ==== `mma` and `math` ====
    // Not in the backend subset: `to_backend_subset` expands both before code generation,
    // and `inst` refuses them with `Unsupported` if they arrive here.

    // ==== `trap` ====
    // A branch to a cold block that records `[1, code, value]` in the caller's trap slot and
    // returns from the entry point, abandoning the rest of the chunk of grid points: the
    // launcher turns the slot into an error and the plan stops.

    fn trap(&mut self, cond: Val, code: u32, value: Val) -> R<()> {
        let c = self.scalar(cond)?;
        let v = self.scalar(value)?;
        let (fire, cont) = (self.b.create_block(), self.b.create_block());
        self.b.set_cold_block(fire);
        self.b.ins().brif(c, fire, &[], cont, &[]);
        self.b.switch_to_block(fire);
        let one = self.b.ins().iconst(types::I64, 1);
        let code = self.b.ins().iconst(types::I64, code as i64);
        let flags = MemFlagsData::new().with_notrap().with_aligned();
        self.b.ins().store(flags, one, self.trap_slot, 0);
        self.b.ins().store(flags, code, self.trap_slot, 8);
        self.b.ins().store(flags, v, self.trap_slot, 16);
        self.b.ins().return_(&[]);
        self.b.switch_to_block(cont);
        Ok(())
    }
}
