//! What the pipe instructions do to memory: DMA, MMA, VEC and VRED semantics,
//! with their bounds, alignment and initialisation checks. Timing lives in `sim.rs`.

use half::{bf16, f16};

use crate::config::TargetConfig;
use crate::error::{Result, SimError};
use crate::isa::{DType, Mem, RedOp, VecForm, VecOp};
use crate::mem::{two_mut, MemBuf, REAL, WRITTEN};

/// Names the instruction in errors.
pub struct ErrCtx<'a> {
    pub pc: usize,
    pub instr: &'a str,
}

impl ErrCtx<'_> {
    pub fn bad(&self, msg: impl Into<String>) -> SimError {
        SimError::BadOperand {
            pc: self.pc,
            instr: self.instr.to_string(),
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
                instr: self.instr.to_string(),
                mem: m.kind.name(),
                addr,
                align,
            });
        }
        let end = addr.saturating_add(len);
        if end > m.len() {
            return Err(SimError::OutOfBounds {
                pc: self.pc,
                instr: self.instr.to_string(),
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

fn read_f32(dt: DType, b: &[u8]) -> f32 {
    match dt {
        DType::F16 => f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        DType::Bf16 => bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        DType::I8 => b[0] as i8 as f32,
        DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
    }
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

/// Checks that a DMA's dtype pair (and scale) is a legal transfer.
pub fn check_dma_types(a: &DmaArgs, ctx: &ErrCtx) -> Result<()> {
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
    let span = |rows: u64, cols: u64, stride: u64, sz: u64| -> u64 {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1)
                .saturating_mul(stride)
                .saturating_add(cols)
                .saturating_mul(sz)
        }
    };
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
                    instr: ctx.instr.to_string(),
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
                instr: ctx.instr.to_string(),
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
        VecOp::Mov => sdt == ddt,
        _ => sdt == ddt && sdt.is_float(),
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
    let (ss, ds) = (ss as usize, ds as usize);
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
        if a.op == VecOp::Cast || a.op == VecOp::Mov {
            if a.op == VecOp::Mov || (a.sdt == a.ddt) {
                ub.data.copy_within(si..si + ss, di);
            } else if a.sdt == DType::I32 && a.ddt == DType::I8 {
                let v = i32::from_le_bytes([
                    ub.data[si],
                    ub.data[si + 1],
                    ub.data[si + 2],
                    ub.data[si + 3],
                ]);
                ub.data[di] = v.clamp(-128, 127) as i8 as u8;
            } else {
                let x = read_f32(a.sdt, &ub.data[si..si + ss]);
                write_f32(a.ddt, x, &mut ub.data[di..di + ds]);
            }
            continue;
        }
        let x = read_f32(a.sdt, &ub.data[si..si + ss]);
        let y = match a.form {
            VecForm::VV => read_f32(a.sdt, &ub.data[a.src2 as usize + i * ss..]),
            _ => scalar,
        };
        let v = match a.op {
            VecOp::Add => x + y,
            VecOp::Sub => x - y,
            VecOp::Mul => x * y,
            VecOp::Div => x / y,
            VecOp::Max => x.max(y),
            VecOp::Min => x.min(y),
            VecOp::Abs => x.abs(),
            VecOp::Exp => x.exp(),
            VecOp::Ln => x.ln(),
            VecOp::Sqrt => x.sqrt(),
            VecOp::Rsqrt => 1.0 / x.sqrt(),
            VecOp::Recip => 1.0 / x,
            VecOp::Relu => x.max(0.0),
            VecOp::Mov | VecOp::Cast => x,
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
    let d = a.dst as usize;
    ub.tag[d..d + s].fill(WRITTEN | REAL);
    if data {
        let vals = (0..a.len as usize).map(|i| read_f32(a.dt, &ub.data[a.src as usize + i * s..]));
        // Sequential order keeps the result bit-reproducible.
        let r = match a.op {
            RedOp::Sum => vals.fold(0.0f32, |acc, v| acc + v),
            RedOp::Max => vals.fold(f32::NEG_INFINITY, f32::max),
        };
        write_f32(a.dt, r, &mut ub.data[d..d + s]);
    }
    Ok(())
}
