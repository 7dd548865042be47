//! What the pipe instructions do to memory: DMA, MMA, VEC and VRED semantics,
//! with their bounds, alignment and initialisation checks. Timing lives in `sim.rs`.

use half::{bf16, f16};

use crate::asm::format_instr;
use crate::config::TargetConfig;
use crate::error::{Result, SimError};
use crate::isa::{DType, Instr, Mem, RedOp, VecForm, VecOp};
use crate::mem::{two_mut, MemBuf, REAL, WRITTEN};

/// Names the instruction in errors; its text is only formatted when an error is made.
pub struct ErrCtx<'a> {
    pub pc: usize,
    pub instr: &'a Instr,
}

impl ErrCtx<'_> {
    pub fn text(&self) -> String {
        format_instr(self.instr)
    }

    pub fn bad(&self, msg: impl Into<String>) -> SimError {
        SimError::BadOperand {
            pc: self.pc,
            instr: self.text(),
            msg: msg.into(),
        }
    }

    /// Checks that `[addr, addr + len)` lies in `mem` and that `addr` is aligned.
    fn check(&self, cfg: &TargetConfig, m: &MemBuf, addr: u64, len: u64, elem: u64) -> Result<()> {
        let align = cfg.mem(m.kind).align.max(elem);
        // `%` rather than `is_multiple_of`, which is newer than the workspace MSRV (1.85).
        #[allow(clippy::manual_is_multiple_of)]
        if addr % align != 0 {
            return Err(SimError::Misaligned {
                pc: self.pc,
                instr: self.text(),
                mem: m.kind.name(),
                addr,
                align,
            });
        }
        let end = addr.saturating_add(len);
        if end > m.len() {
            return Err(SimError::OutOfBounds {
                pc: self.pc,
                instr: self.text(),
                mem: m.kind.name(),
                addr,
                end,
                size: m.len(),
            });
        }
        Ok(())
    }
}

/// Operand values of a DMA, read from registers at issue.
#[derive(Debug, Clone)]
pub struct DmaArgs {
    pub src_mem: Mem,
    pub dst_mem: Mem,
    pub sdt: DType,
    pub ddt: DType,
    pub dst: u64,
    pub src: u64,
    pub rows: u64,
    pub cols: u64,
    pub src_stride: u64,
    pub dst_stride: u64,
    pub dst_rows: u64,
    pub dst_cols: u64,
    pub scale: Option<f32>,
    /// Write the source box transposed (L1 -> L0A/L0B and GM -> UB only).
    pub transpose: bool,
}

impl DmaArgs {
    /// Bytes the transfer moves along its edge: what lands in the destination,
    /// after the cast and including padding (the cast happens at the source end).
    pub fn bytes(&self) -> u64 {
        self.dst_rows * self.dst_cols * self.ddt.size()
    }
}

/// Operand values of an MMA.
#[derive(Debug, Clone)]
pub struct MmaArgs {
    pub adt: DType,
    pub cdt: DType,
    pub c: u64,
    pub a: u64,
    pub b: u64,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub init: bool,
}

/// Operand values of a VEC instruction.
#[derive(Debug, Clone)]
pub struct VecArgs {
    pub op: VecOp,
    pub form: VecForm,
    pub sdt: DType,
    pub ddt: DType,
    pub dst: u64,
    pub src1: u64,
    pub src2: u64,
    pub len: u64,
    pub mask: u64,
    /// `SEL`: the address of the `u8` condition mask; `MADD` (*0.5*): the multiplier's
    /// address. 0 for every other op.
    pub cond: u64,
}

/// Operand values of a VRED instruction.
#[derive(Debug, Clone)]
pub struct VredArgs {
    pub op: RedOp,
    pub dt: DType,
    pub dst: u64,
    pub src: u64,
    pub len: u64,
}

/// Counts one MMA contributes to the report.
pub struct MmaOutcome {
    pub macs_issued: u64,
    pub macs_useful: u64,
    /// Tile-MMAs (of the dtype's tile shape) issued.
    pub tiles: u64,
}

/// Scratch space reused across MMAs so the hot loop does not allocate.
#[derive(Default)]
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    ai: Vec<i32>,
    bi: Vec<i32>,
    ci: Vec<i32>,
}

/// One element of `dt` as f32.
pub fn read_f32(dt: DType, b: &[u8]) -> f32 {
    match dt {
        DType::F32 => return f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        DType::F16 => return f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        _ => {}
    }
    match read_num(dt, b) {
        Num::F(v) => v,
        // `as` rounds to nearest even: one rounding from the integer.
        Num::I(v) => v as f32,
    }
}

/// One element's value: a float (f16/bf16 widen exactly) or an integer.
#[derive(Clone, Copy)]
enum Num {
    F(f32),
    I(i128),
}

/// Reads one little-endian element of `dt`.
fn read_num(dt: DType, b: &[u8]) -> Num {
    let mut w = [0u8; 8];
    let n = dt.size() as usize;
    w[..n].copy_from_slice(&b[..n]);
    let raw = u64::from_le_bytes(w);
    match dt {
        DType::F16 => Num::F(f16::from_bits(raw as u16).to_f32()),
        DType::Bf16 => Num::F(bf16::from_bits(raw as u16).to_f32()),
        DType::F32 => Num::F(f32::from_bits(raw as u32)),
        DType::I8 => Num::I(raw as u8 as i8 as i128),
        DType::I16 => Num::I(raw as u16 as i16 as i128),
        DType::I32 => Num::I(raw as u32 as i32 as i128),
        DType::I64 => Num::I(raw as i64 as i128),
        DType::U8 | DType::U16 | DType::U32 | DType::U64 => Num::I(raw as i128),
    }
}

/// The integer range of an integer dtype.
fn int_range(dt: DType) -> (i128, i128) {
    let bits = 8 * dt.size() as u32;
    if dt.is_signed_int() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

/// Writes `v` as `dt`, the `CAST` rules: floats round to nearest even (to f16/bf16 past the
/// range: infinity); to an integer a float rounds to nearest even, saturates, and NaN gives 0;
/// an integer saturates to the destination's range.
fn write_num(dt: DType, v: Num, out: &mut [u8]) {
    let n = dt.size() as usize;
    if dt.is_float() {
        let x = match v {
            Num::F(x) => x,
            Num::I(i) => i as f32,
        };
        write_f32(dt, x, out);
        return;
    }
    let (lo, hi) = int_range(dt);
    let i = match v {
        Num::I(i) => i.clamp(lo, hi),
        Num::F(x) if x.is_nan() => 0,
        // Every f32 of magnitude >= 2^24 is an integer, and i128 holds the clamped range.
        Num::F(x) => (x.round_ties_even().clamp(lo as f32, hi as f32) as i128).clamp(lo, hi),
    };
    out[..n].copy_from_slice(&(i as u64).to_le_bytes()[..n]);
}

/// Writes a float into `dt` with round-to-nearest-even; to integers it also saturates.
fn write_f32(dt: DType, v: f32, out: &mut [u8]) {
    match dt {
        DType::F16 => out.copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes()),
        DType::Bf16 => out.copy_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes()),
        DType::F32 => out.copy_from_slice(&v.to_le_bytes()),
        DType::I8 => out[0] = (v.round_ties_even().clamp(-128.0, 127.0)) as i8 as u8,
        DType::I32 => {
            // `as` saturates and maps NaN to 0, which is the defined behaviour.
            out.copy_from_slice(&(v.round_ties_even() as i32).to_le_bytes())
        }
        _ => write_num(dt, Num::F(v), out),
    }
}

/// The casts a DMA may apply on the way out of L0C.
fn dma_cast(sdt: DType, ddt: DType, scale: Option<f32>, src: &[u8], dst: &mut [u8]) {
    match (sdt, ddt) {
        (DType::F32, DType::F16) => {
            let v = read_f32(DType::F32, src);
            // Saturate to the largest finite f16 rather than overflow to infinity.
            let v = if v.is_nan() {
                v
            } else {
                v.clamp(-65504.0, 65504.0)
            };
            write_f32(DType::F16, v, dst)
        }
        (DType::F32, DType::Bf16) => {
            let v = read_f32(DType::F32, src);
            let max = bf16::MAX.to_f32();
            let v = if v.is_nan() { v } else { v.clamp(-max, max) };
            write_f32(DType::Bf16, v, dst)
        }
        (DType::I32, DType::I8) => {
            let acc = i32::from_le_bytes([src[0], src[1], src[2], src[3]]);
            // f64 holds every i32 and the f32 scale exactly, so the product rounds once.
            let v = (acc as f64 * scale.unwrap_or(1.0) as f64)
                .round_ties_even()
                .clamp(-128.0, 127.0);
            dst[0] = v as i8 as u8;
        }
        _ => dst.copy_from_slice(src),
    }
}

/// The bytes a `rows × cols` box of `sz`-byte elements spans at row stride `stride`.
fn span(rows: u64, cols: u64, stride: u64, sz: u64) -> u64 {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1)
            .saturating_mul(stride)
            .saturating_add(cols)
            .saturating_mul(sz)
    }
}

/// Checks that a DMA's dtype pair (and scale) is a legal transfer, and that a transposing
/// DMA moves L1 to L0A or L0B, or (*0.4*) GM to UB.
pub fn check_dma_types(a: &DmaArgs, ctx: &ErrCtx) -> Result<()> {
    let turns = (a.src_mem == Mem::L1 && matches!(a.dst_mem, Mem::L0a | Mem::L0b))
        || (a.src_mem == Mem::Gm && a.dst_mem == Mem::Ub);
    if a.transpose && !turns {
        return Err(ctx.bad(format!(
            "DMA {}->{} cannot transpose: only L1->L0A, L1->L0B and GM->UB do",
            a.src_mem, a.dst_mem
        )));
    }
    let ok = match (a.sdt, a.ddt) {
        (s, d) if s == d => a.scale.is_none(),
        (DType::F32, DType::F16) | (DType::F32, DType::Bf16) => {
            a.src_mem == Mem::L0c && a.scale.is_none()
        }
        (DType::I32, DType::I8) => a.src_mem == Mem::L0c && a.scale.is_some(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ctx.bad(format!(
            "DMA {}->{} cannot convert {}->{}{}: casts are f32->f16, f32->bf16 and i32->i8 (with scale) out of L0C only",
            a.src_mem,
            a.dst_mem,
            a.sdt,
            a.ddt,
            if a.scale.is_some() { " with a scale" } else { "" }
        )))
    }
}

/// Executes a DMA. `data` false skips the byte copy (timing-only runs) but keeps
/// every check and the tags.
pub fn dma(
    cfg: &TargetConfig,
    mems: &mut [MemBuf],
    a: &DmaArgs,
    data: bool,
    ctx: &ErrCtx,
) -> Result<()> {
    check_dma_types(a, ctx)?;
    if a.transpose {
        return dma_transposed(cfg, mems, a, data, ctx);
    }
    if a.dst_rows < a.rows || a.dst_cols < a.cols {
        return Err(ctx.bad(format!(
            "destination {}x{} is smaller than source {}x{}",
            a.dst_rows, a.dst_cols, a.rows, a.cols
        )));
    }
    if a.rows > 0 && a.cols > a.src_stride {
        return Err(ctx.bad(format!(
            "source stride {} is below the row length {}",
            a.src_stride, a.cols
        )));
    }
    if a.dst_rows > 0 && a.dst_cols > a.dst_stride {
        return Err(ctx.bad(format!(
            "destination stride {} is below the row length {}",
            a.dst_stride, a.dst_cols
        )));
    }
    let (ss, ds) = (a.sdt.size(), a.ddt.size());
    let (src_m, dst_m) = two_mut(mems, a.src_mem as usize, a.dst_mem as usize);
    ctx.check(
        cfg,
        src_m,
        a.src,
        span(a.rows, a.cols, a.src_stride, ss),
        ss,
    )?;
    ctx.check(
        cfg,
        dst_m,
        a.dst,
        span(a.dst_rows, a.dst_cols, a.dst_stride, ds),
        ds,
    )?;
    // Reading accumulators that no MMA wrote is an error, not a silent zero.
    if a.src_mem == Mem::L0c {
        for r in 0..a.rows {
            let base = (a.src + r * a.src_stride * ss) as usize;
            let row = &src_m.tag[base..base + (a.cols * ss) as usize];
            if let Some(i) = row.iter().position(|t| t & WRITTEN == 0) {
                return Err(SimError::UninitL0C {
                    pc: ctx.pc,
                    instr: ctx.text(),
                    addr: base as u64 + i as u64,
                });
            }
        }
    }
    let same = a.sdt == a.ddt;
    for r in 0..a.dst_rows {
        let d0 = (a.dst + r * a.dst_stride * ds) as usize;
        let dend = d0 + (a.dst_cols * ds) as usize;
        if r < a.rows {
            let s0 = (a.src + r * a.src_stride * ss) as usize;
            let slen = (a.cols * ss) as usize;
            let dlen = (a.cols * ds) as usize;
            if same {
                if data {
                    dst_m.data[d0..d0 + dlen].copy_from_slice(&src_m.data[s0..s0 + slen]);
                }
                dst_m.tag[d0..d0 + dlen].copy_from_slice(&src_m.tag[s0..s0 + slen]);
            } else {
                for c in 0..a.cols as usize {
                    let (si, di) = (s0 + c * ss as usize, d0 + c * ds as usize);
                    if data {
                        dma_cast(
                            a.sdt,
                            a.ddt,
                            a.scale,
                            &src_m.data[si..si + ss as usize],
                            &mut dst_m.data[di..di + ds as usize],
                        );
                    }
                    let t = src_m.tag[si];
                    dst_m.tag[di..di + ds as usize].fill(t);
                }
            }
            // Padding columns: zeros, written but not real data.
            dst_m.data[d0 + dlen..dend].fill(0);
            dst_m.tag[d0 + dlen..dend].fill(WRITTEN);
        } else {
            dst_m.data[d0..dend].fill(0);
            dst_m.tag[d0..dend].fill(WRITTEN);
        }
    }
    Ok(())
}

/// A transposing DMA (L1 -> L0A/L0B or GM -> UB, same dtype): destination element (r, c) is source
/// element (c, r) where `c < rows` and `r < cols`, else zero padding. The source box is
/// `rows x cols`, so the destination box must be at least `cols x rows`.
fn dma_transposed(
    cfg: &TargetConfig,
    mems: &mut [MemBuf],
    a: &DmaArgs,
    data: bool,
    ctx: &ErrCtx,
) -> Result<()> {
    if a.dst_rows < a.cols || a.dst_cols < a.rows {
        return Err(ctx.bad(format!(
            "transposed destination {}x{} is smaller than the source {}x{} turned over",
            a.dst_rows, a.dst_cols, a.rows, a.cols
        )));
    }
    if (a.rows > 0 && a.cols > a.src_stride) || (a.dst_rows > 0 && a.dst_cols > a.dst_stride) {
        return Err(ctx.bad(format!(
            "a stride ({} source, {} destination) is below its row length",
            a.src_stride, a.dst_stride
        )));
    }
    let sz = a.sdt.size();
    let (src_m, dst_m) = two_mut(mems, a.src_mem as usize, a.dst_mem as usize);
    ctx.check(
        cfg,
        src_m,
        a.src,
        span(a.rows, a.cols, a.src_stride, sz),
        sz,
    )?;
    ctx.check(
        cfg,
        dst_m,
        a.dst,
        span(a.dst_rows, a.dst_cols, a.dst_stride, sz),
        sz,
    )?;
    let sz = sz as usize;
    for r in 0..a.dst_rows {
        for c in 0..a.dst_cols {
            let d = (a.dst + (r * a.dst_stride + c) * sz as u64) as usize;
            if c < a.rows && r < a.cols {
                let s = (a.src + (c * a.src_stride + r) * sz as u64) as usize;
                if data {
                    dst_m.data[d..d + sz].copy_from_slice(&src_m.data[s..s + sz]);
                }
                dst_m.tag[d..d + sz].copy_from_slice(&src_m.tag[s..s + sz]);
            } else {
                dst_m.data[d..d + sz].fill(0);
                dst_m.tag[d..d + sz].fill(WRITTEN);
            }
        }
    }
    Ok(())
}

/// Executes an MMA: C (L0C) = or += A (L0A) x B (L0B), all row-major blocks.
/// Each C element sums its products in ascending k order, in f32 (or wrapping i32).
pub fn mma(
    cfg: &TargetConfig,
    mems: &mut [MemBuf],
    a: &MmaArgs,
    data: bool,
    scratch: &mut Scratch,
    ctx: &ErrCtx,
) -> Result<MmaOutcome> {
    let shape = cfg.mma_shape(a.adt, a.cdt).ok_or_else(|| {
        ctx.bad(format!(
            "the Cube has no {}x{}->{} MMA",
            a.adt, a.adt, a.cdt
        ))
    })?;
    if a.m == 0 || a.n == 0 || a.k == 0 {
        return Err(ctx.bad(format!(
            "tile counts m={} n={} k={} must be > 0",
            a.m, a.n, a.k
        )));
    }
    let big = |v: u64| v > (1 << 20);
    if big(a.m) || big(a.n) || big(a.k) {
        return Err(ctx.bad("tile count too large"));
    }
    let (mm, nn, kk) = (
        (a.m * shape.m) as usize,
        (a.n * shape.n) as usize,
        (a.k * shape.k) as usize,
    );
    let (asz, csz) = (a.adt.size() as usize, a.cdt.size() as usize);
    ctx.check(
        cfg,
        &mems[Mem::L0a as usize],
        a.a,
        (mm * kk * asz) as u64,
        asz as u64,
    )?;
    ctx.check(
        cfg,
        &mems[Mem::L0b as usize],
        a.b,
        (kk * nn * asz) as u64,
        asz as u64,
    )?;
    ctx.check(
        cfg,
        &mems[Mem::L0c as usize],
        a.c,
        (mm * nn * csz) as u64,
        csz as u64,
    )?;
    let c0 = a.c as usize;
    let cbytes = mm * nn * csz;
    if !a.init {
        let tags = &mems[Mem::L0c as usize].tag[c0..c0 + cbytes];
        if let Some(i) = tags.iter().position(|t| t & WRITTEN == 0) {
            return Err(SimError::UninitL0C {
                pc: ctx.pc,
                instr: ctx.text(),
                addr: (c0 + i) as u64,
            });
        }
    }
    // Useful MACs: sum over k of (real A entries in column k) x (real B entries in row k).
    let (a0, b0) = (a.a as usize, a.b as usize);
    let mut useful = 0u64;
    {
        let at = &mems[Mem::L0a as usize].tag;
        let bt = &mems[Mem::L0b as usize].tag;
        for k in 0..kk {
            let ca = (0..mm)
                .filter(|&i| at[a0 + (i * kk + k) * asz] & REAL != 0)
                .count() as u64;
            if ca == 0 {
                continue;
            }
            let rb = bt[b0 + k * nn * asz..b0 + (k + 1) * nn * asz]
                .iter()
                .step_by(asz)
                .filter(|&&t| t & REAL != 0)
                .count() as u64;
            useful += ca * rb;
        }
    }
    if data {
        let l0a = &mems[Mem::L0a as usize].data[a0..a0 + mm * kk * asz];
        let l0b = &mems[Mem::L0b as usize].data[b0..b0 + kk * nn * asz];
        if a.adt.is_float() {
            let conv = |src: &[u8], out: &mut Vec<f32>| {
                out.clear();
                out.extend(src.chunks_exact(asz).map(|b| read_f32(a.adt, b)));
            };
            conv(l0a, &mut scratch.a);
            conv(l0b, &mut scratch.b);
            scratch.c.clear();
            if a.init {
                scratch.c.resize(mm * nn, 0.0);
            } else {
                let l0c = &mems[Mem::L0c as usize].data[c0..c0 + cbytes];
                scratch.c.extend(
                    l0c.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
            let (av, bv, cv) = (&scratch.a, &scratch.b, &mut scratch.c);
            for i in 0..mm {
                let crow = &mut cv[i * nn..(i + 1) * nn];
                let arow = &av[i * kk..(i + 1) * kk];
                for (k, &x) in arow.iter().enumerate() {
                    let brow = &bv[k * nn..(k + 1) * nn];
                    // Products of f16/bf16 values are exact in f32, so this
                    // rounds once per add, in k order, like the hardware adder.
                    for (c, &y) in crow.iter_mut().zip(brow) {
                        *c += x * y;
                    }
                }
            }
            let l0c = &mut mems[Mem::L0c as usize].data[c0..c0 + cbytes];
            for (o, v) in l0c.chunks_exact_mut(4).zip(cv.iter()) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        } else {
            scratch.ai.clear();
            scratch.ai.extend(l0a.iter().map(|&b| b as i8 as i32));
            scratch.bi.clear();
            scratch.bi.extend(l0b.iter().map(|&b| b as i8 as i32));
            scratch.ci.clear();
            if a.init {
                scratch.ci.resize(mm * nn, 0);
            } else {
                let l0c = &mems[Mem::L0c as usize].data[c0..c0 + cbytes];
                scratch.ci.extend(
                    l0c.chunks_exact(4)
                        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
            let (av, bv, cv) = (&scratch.ai, &scratch.bi, &mut scratch.ci);
            for i in 0..mm {
                let crow = &mut cv[i * nn..(i + 1) * nn];
                for k in 0..kk {
                    let x = av[i * kk + k];
                    let brow = &bv[k * nn..(k + 1) * nn];
                    for (c, &y) in crow.iter_mut().zip(brow) {
                        *c = c.wrapping_add(x * y);
                    }
                }
            }
            let l0c = &mut mems[Mem::L0c as usize].data[c0..c0 + cbytes];
            for (o, v) in l0c.chunks_exact_mut(4).zip(cv.iter()) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    mems[Mem::L0c as usize].tag[c0..c0 + cbytes].fill(WRITTEN | REAL);
    Ok(MmaOutcome {
        macs_issued: (mm * nn * kk) as u64,
        macs_useful: useful,
        tiles: a.m * a.n * a.k,
    })
}

fn vec_dtype_ok(op: VecOp, sdt: DType, ddt: DType) -> bool {
    match op {
        VecOp::Cast => true,
        VecOp::Mov | VecOp::Dup | VecOp::Sel => sdt == ddt,
        _ if op.is_compare() => sdt.is_float() && ddt == DType::U8,
        // Integer vector arithmetic: i32, wrapping.
        VecOp::Add | VecOp::Sub | VecOp::Mul | VecOp::Max | VecOp::Min if sdt == DType::I32 => {
            ddt == DType::I32
        }
        _ => sdt == ddt && sdt.is_float(),
    }
}

/// IEEE 754-2019 `maximum`: NaN if either operand is NaN, and +0 above -0.
fn fmax(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else if x == y {
        if x.is_sign_positive() {
            x
        } else {
            y
        }
    } else {
        x.max(y)
    }
}

/// IEEE 754-2019 `minimum`: NaN if either operand is NaN, and -0 below +0.
fn fmin(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else if x == y {
        if x.is_sign_negative() {
            x
        } else {
            y
        }
    } else {
        x.min(y)
    }
}

/// Executes an elementwise VEC instruction on the UB.
pub fn vec(
    cfg: &TargetConfig,
    ub: &mut MemBuf,
    a: &VecArgs,
    data: bool,
    ctx: &ErrCtx,
) -> Result<()> {
    if !vec_dtype_ok(a.op, a.sdt, a.ddt) {
        return Err(ctx.bad(format!(
            "the Vector unit has no {} on {}->{}",
            a.op, a.sdt, a.ddt
        )));
    }
    let (ss, ds) = (a.sdt.size(), a.ddt.size());
    let len = a.len;
    ctx.check(cfg, ub, a.dst, len.saturating_mul(ds), ds)?;
    ctx.check(cfg, ub, a.src1, len.saturating_mul(ss), ss)?;
    match a.form {
        VecForm::VV => ctx.check(cfg, ub, a.src2, len.saturating_mul(ss), ss)?,
        VecForm::VS => ctx.check(cfg, ub, a.src2, ss, ss)?,
        VecForm::Unary => {}
    }
    if a.op == VecOp::Sel {
        ctx.check(cfg, ub, a.cond, len, 1)?;
    }
    if a.op == VecOp::Madd {
        ctx.check(cfg, ub, a.cond, len.saturating_mul(ss), ss)?;
    }
    // Reading an element no instruction wrote is a hard error, never a silent zero.
    let (ss, ds) = (ss as usize, ds as usize);
    let src_len = if a.op == VecOp::Dup { 1 } else { len as usize };
    let mut reads = [(a.src1 as usize, src_len * ss), (0, 0), (0, 0)];
    match a.form {
        VecForm::VV => reads[1] = (a.src2 as usize, len as usize * ss),
        VecForm::VS => reads[1] = (a.src2 as usize, ss),
        VecForm::Unary => {}
    }
    if a.op == VecOp::Sel {
        reads[2] = (a.cond as usize, len as usize);
    }
    if a.op == VecOp::Madd {
        reads[2] = (a.cond as usize, len as usize * ss);
    }
    for (at, n) in reads {
        if let Some(i) = ub.tag[at..at + n].iter().position(|t| t & WRITTEN == 0) {
            return Err(SimError::UninitRead {
                pc: ctx.pc,
                instr: ctx.text(),
                mem: "UB",
                addr: (at + i) as u64,
            });
        }
    }
    let scalar = if a.form == VecForm::VS {
        read_f32(a.sdt, &ub.data[a.src2 as usize..])
    } else {
        0.0
    };
    for i in 0..len as usize {
        if a.mask >> (i % 64) & 1 == 0 {
            continue;
        }
        let di = a.dst as usize + i * ds;
        ub.tag[di..di + ds].fill(WRITTEN | REAL);
        if !data {
            continue;
        }
        let si = a.src1 as usize + i * ss;
        match a.op {
            VecOp::Mov => {
                ub.data.copy_within(si..si + ss, di);
                continue;
            }
            VecOp::Dup => {
                ub.data
                    .copy_within(a.src1 as usize..a.src1 as usize + ss, di);
                continue;
            }
            VecOp::Sel => {
                let from = if ub.data[a.cond as usize + i] != 0 {
                    si
                } else {
                    a.src2 as usize + i * ss
                };
                ub.data.copy_within(from..from + ss, di);
                continue;
            }
            VecOp::Cast => {
                if a.sdt == a.ddt {
                    ub.data.copy_within(si..si + ss, di);
                } else {
                    let v = read_num(a.sdt, &ub.data[si..si + ss]);
                    write_num(a.ddt, v, &mut ub.data[di..di + ds]);
                }
                continue;
            }
            _ => {}
        }
        if a.sdt == DType::I32 {
            let rd = |at: usize| {
                i32::from_le_bytes([
                    ub.data[at],
                    ub.data[at + 1],
                    ub.data[at + 2],
                    ub.data[at + 3],
                ])
            };
            let x = rd(si);
            let y = match a.form {
                VecForm::VV => rd(a.src2 as usize + i * ss),
                _ => rd(a.src2 as usize),
            };
            let v = match a.op {
                VecOp::Add => x.wrapping_add(y),
                VecOp::Sub => x.wrapping_sub(y),
                VecOp::Mul => x.wrapping_mul(y),
                VecOp::Max => x.max(y),
                _ => x.min(y),
            };
            ub.data[di..di + 4].copy_from_slice(&v.to_le_bytes());
            continue;
        }
        let x = read_f32(a.sdt, &ub.data[si..si + ss]);
        let y = match a.form {
            VecForm::VV => read_f32(a.sdt, &ub.data[a.src2 as usize + i * ss..]),
            _ => scalar,
        };
        if a.op.is_compare() {
            let t = match a.op {
                VecOp::CmpEq => x == y,
                VecOp::CmpNe => x != y,
                VecOp::CmpLt => x < y,
                VecOp::CmpLe => x <= y,
                VecOp::CmpGt => x > y,
                _ => x >= y,
            };
            ub.data[di] = t as u8;
            continue;
        }
        let v = match a.op {
            // *0.5*: one rounding of `x · m + y` (IEEE fusedMultiplyAdd in f32).
            VecOp::Madd => x.mul_add(read_f32(a.sdt, &ub.data[a.cond as usize + i * ss..]), y),
            VecOp::Add => x + y,
            VecOp::Sub => x - y,
            VecOp::Mul => x * y,
            VecOp::Div => x / y,
            VecOp::Max => fmax(x, y),
            VecOp::Min => fmin(x, y),
            // C `fmod`: the sign of the dividend, exact.
            VecOp::Rem => x % y,
            VecOp::Neg => -x,
            VecOp::Floor => x.floor(),
            VecOp::Ceil => x.ceil(),
            VecOp::Round => x.round_ties_even(),
            VecOp::Trunc => x.trunc(),
            VecOp::Abs => x.abs(),
            VecOp::Exp => x.exp(),
            VecOp::Ln => x.ln(),
            VecOp::Sqrt => x.sqrt(),
            VecOp::Rsqrt => 1.0 / x.sqrt(),
            VecOp::Recip => 1.0 / x,
            VecOp::Relu => x.max(0.0),
            VecOp::Mov | VecOp::Cast | VecOp::Dup | VecOp::Sel => x,
            _ => unreachable!("comparisons are handled above"),
        };
        write_f32(a.ddt, v, &mut ub.data[di..di + ds]);
    }
    Ok(())
}

/// Executes a reduction over `len` elements into one element at `dst`.
pub fn vred(
    cfg: &TargetConfig,
    ub: &mut MemBuf,
    a: &VredArgs,
    data: bool,
    ctx: &ErrCtx,
) -> Result<()> {
    if !a.dt.is_float() {
        return Err(ctx.bad(format!("the Vector unit has no reduction on {}", a.dt)));
    }
    if a.len == 0 {
        return Err(ctx.bad("reduction of zero elements"));
    }
    let s = a.dt.size();
    ctx.check(cfg, ub, a.src, a.len.saturating_mul(s), s)?;
    ctx.check(cfg, ub, a.dst, s, s)?;
    let s = s as usize;
    let src = a.src as usize;
    if let Some(i) = ub.tag[src..src + a.len as usize * s]
        .iter()
        .position(|t| t & WRITTEN == 0)
    {
        return Err(SimError::UninitRead {
            pc: ctx.pc,
            instr: ctx.text(),
            mem: "UB",
            addr: (src + i) as u64,
        });
    }
    let d = a.dst as usize;
    ub.tag[d..d + s].fill(WRITTEN | REAL);
    if data {
        let vals = (0..a.len as usize).map(|i| read_f32(a.dt, &ub.data[a.src as usize + i * s..]));
        // Sequential order keeps the result bit-reproducible.
        let r = match a.op {
            RedOp::Sum => vals.fold(0.0f32, |acc, v| acc + v),
            RedOp::Max => vals.fold(f32::NEG_INFINITY, fmax),
            RedOp::Min => vals.fold(f32::INFINITY, fmin),
            RedOp::Prod => vals.fold(1.0f32, |acc, v| acc * v),
        };
        write_f32(a.dt, r, &mut ub.data[d..d + s]);
    }
    Ok(())
}

/// Executes the row form of `VRED` (*0.4*): `rows` reductions of `a.len` elements, row `j`
/// read from `a.src + j·stride` elements, its result written at `a.dst + 32·j` bytes. Each row
/// is checked as a plain `VRED`.
pub fn vred_rows(
    cfg: &TargetConfig,
    ub: &mut MemBuf,
    a: &VredArgs,
    rows: u64,
    stride: u64,
    data: bool,
    ctx: &ErrCtx,
) -> Result<()> {
    if rows == 0 {
        return Err(ctx.bad("a row reduction of zero rows"));
    }
    if stride < a.len {
        return Err(ctx.bad(format!(
            "row stride {stride} is below the row length {}",
            a.len
        )));
    }
    for j in 0..rows {
        let row = VredArgs {
            src: stride
                .saturating_mul(j)
                .saturating_mul(a.dt.size())
                .saturating_add(a.src),
            dst: a.dst.saturating_add(32 * j),
            ..a.clone()
        };
        vred(cfg, ub, &row, data, ctx)?;
    }
    Ok(())
}

/// Executes the row-broadcast form of `VEC` (*0.4*): `dst[i] = src1[i] op C[i / row]`, `C[j]`
/// the element at `a.src2 + 32·j` bytes; each row is checked as a `VS` instruction (so each
/// row's addresses must be aligned).
pub fn vec_rows(
    cfg: &TargetConfig,
    ub: &mut MemBuf,
    a: &VecArgs,
    row: u64,
    data: bool,
    ctx: &ErrCtx,
) -> Result<()> {
    if row == 0 {
        return Err(ctx.bad("a row-broadcast VEC with rows of 0 elements"));
    }
    if a.len == 0 {
        return vec(cfg, ub, a, data, ctx);
    }
    let (ss, ds) = (a.sdt.size(), a.ddt.size());
    let (mut i, mut j) = (0u64, 0u64);
    while i < a.len {
        let n = row.min(a.len - i);
        let seg = VecArgs {
            dst: a.dst.saturating_add(i * ds),
            src1: a.src1.saturating_add(i * ss),
            src2: a.src2.saturating_add(32 * j),
            len: n,
            ..a.clone()
        };
        vec(cfg, ub, &seg, data, ctx)?;
        i += n;
        j += 1;
    }
    Ok(())
}

/// A scalar `LD`/`ST` access: `R[base] + offset` in GM or UB, one element of `dt`.
pub struct ScalarAccess {
    pub mem: Mem,
    pub dt: DType,
    pub addr: i64,
}

/// Checks a scalar access: GM or UB only, in bounds, naturally aligned.
fn check_scalar(m: &MemBuf, a: &ScalarAccess, ctx: &ErrCtx) -> Result<usize> {
    if !matches!(a.mem, Mem::Gm | Mem::Ub) {
        return Err(ctx.bad(format!("the scalar unit reaches GM and UB, not {}", a.mem)));
    }
    let size = a.dt.size();
    let end = (a.addr as u64).saturating_add(size);
    if a.addr < 0 || end > m.len() {
        return Err(SimError::OutOfBounds {
            pc: ctx.pc,
            instr: ctx.text(),
            mem: m.kind.name(),
            addr: a.addr as u64,
            end,
            size: m.len(),
        });
    }
    // `%` rather than `is_multiple_of`, which is newer than the workspace MSRV (1.85).
    #[allow(clippy::manual_is_multiple_of)]
    if a.addr as u64 % size != 0 {
        return Err(SimError::Misaligned {
            pc: ctx.pc,
            instr: ctx.text(),
            mem: m.kind.name(),
            addr: a.addr as u64,
            align: size,
        });
    }
    Ok(a.addr as usize)
}

/// Executes `LD`: the element, sign-extended for signed ints and zero-extended otherwise.
pub fn scalar_load(m: &MemBuf, a: &ScalarAccess, ctx: &ErrCtx) -> Result<u64> {
    let at = check_scalar(m, a, ctx)?;
    let n = a.dt.size() as usize;
    if let Some(i) = m.tag[at..at + n].iter().position(|t| t & WRITTEN == 0) {
        return Err(SimError::UninitRead {
            pc: ctx.pc,
            instr: ctx.text(),
            mem: m.kind.name(),
            addr: (at + i) as u64,
        });
    }
    let mut w = [0u8; 8];
    w[..n].copy_from_slice(&m.data[at..at + n]);
    let raw = u64::from_le_bytes(w);
    let bits = 8 * n as u32;
    Ok(if a.dt.is_signed_int() && bits < 64 {
        (((raw << (64 - bits)) as i64) >> (64 - bits)) as u64
    } else {
        raw
    })
}

/// Executes `ST`: the low bytes of `value`.
pub fn scalar_store(m: &mut MemBuf, a: &ScalarAccess, value: u64, ctx: &ErrCtx) -> Result<()> {
    let at = check_scalar(m, a, ctx)?;
    let n = a.dt.size() as usize;
    m.data[at..at + n].copy_from_slice(&value.to_le_bytes()[..n]);
    m.tag[at..at + n].fill(WRITTEN | REAL);
    Ok(())
}
