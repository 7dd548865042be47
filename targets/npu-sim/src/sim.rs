//! The simulator engine: the scalar unit issuing in order into five in-order
//! pipes (MTE2, MTE1, Cube, Vector, MTE3), flags as counting semaphores between
//! them, and the cycle accounting. Data semantics are in `exec.rs`.
//!
//! Every pipe instruction captures its register operands when the scalar unit
//! issues it. A pipe starts its head instruction as soon as nothing blocks it;
//! only a `WAIT_FLAG` with no token can block. Start time is the latest of: the
//! pipe being free, the issue time, and (for a wait) the time the token was set.
//! The memory effects therefore happen in an order the flags allow, which is the
//! hardware's order for any correctly synchronised kernel.

use std::collections::VecDeque;

use crate::asm::format_instr;
use crate::config::TargetConfig;
use crate::error::{Result, SimError};
use crate::exec::{self, DmaArgs, ErrCtx, MmaArgs, Scratch, VecArgs, VredArgs};
use crate::isa::{AluOp, Cond, Instr, Mem, Pipe, VecForm};
use crate::mem::MemBuf;
use crate::report::{CycleReport, EdgeReport, PipeReport};

/// How to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exact results, with every hard error checked; no cycle report.
    Functional,
    /// Functional plus the cycle-approximate timing report.
    Cycle,
    /// Timing and all checks, but no arithmetic: for large benchmark shapes.
    /// Memory contents are not computed, so outputs are meaningless.
    TimingOnly,
}

/// The five queued pipes, in report order.
pub const PIPES: [Pipe; 5] = [Pipe::Mte2, Pipe::Mte1, Pipe::Cube, Pipe::Vec, Pipe::Mte3];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlagKey {
    src: Pipe,
    dst: Pipe,
    id: u32,
}

enum Work {
    Dma(DmaArgs),
    Mma(MmaArgs),
    Vec(VecArgs),
    Vred(VredArgs),
    /// *0.4*: the row form of `VRED`: rows, row stride (elements).
    VredRows(VredArgs, u64, u64),
    /// *0.4*: the row-broadcast form of `VEC`: the row length.
    Vrow(VecArgs, u64),
    Set(FlagKey),
    Wait(FlagKey),
}

struct Pending {
    seq: u64,
    pc: usize,
    issue_t: u64,
    work: Work,
}

#[derive(Default)]
struct PipeState {
    queue: VecDeque<Pending>,
    free_at: u64,
    busy: u64,
    stall: u64,
    issued: u64,
    started: u64,
    /// Start times of the most recently started instructions (queue-slot model).
    recent_starts: VecDeque<u64>,
}

/// A core: registers, memories, pipes and counters.
pub struct Machine<'t> {
    cfg: &'t TargetConfig,
    pub mems: Vec<MemBuf>,
    pub regs: [u64; 32],
    data: bool,
    pipes: Vec<PipeState>,
    flags: Vec<VecDeque<u64>>,
    scratch: Scratch,
    scalar_t: u64,
    seq: u64,
    steps: u64,
    edge_bytes: Vec<(Mem, Mem, u64, u64)>,
    macs_issued: u64,
    macs_useful: u64,
    ideal_cube_cycles: f64,
    cube_tiles: u64,
    /// Safety net against runaway loops: the most instructions one run may issue
    /// ([`DEFAULT_MAX_STEPS`] unless the device was given another limit).
    pub max_steps: u64,
}

/// The default step limit of one run (one kernel launch): 2×10⁹ issued instructions.
pub const DEFAULT_MAX_STEPS: u64 = 2_000_000_000;

fn pidx(p: Pipe) -> usize {
    p as usize
}

impl<'t> Machine<'t> {
    /// A core with on-chip memories of the configured sizes and `gm_bytes` of GM.
    pub fn new(cfg: &'t TargetConfig, gm_bytes: u64, mode: Mode) -> Result<Self> {
        let gm_max = cfg.mem(Mem::Gm).size;
        if gm_bytes > gm_max {
            return Err(SimError::Args(format!(
                "kernel buffers need {gm_bytes} bytes of GM, the target has {gm_max}"
            )));
        }
        let mems = Mem::ALL
            .iter()
            .map(|&m| {
                MemBuf::new(
                    m,
                    if m == Mem::Gm {
                        gm_bytes as usize
                    } else {
                        cfg.mem(m).size as usize
                    },
                )
            })
            .collect();
        let nflags = 6 * 6 * cfg.flag_ids as usize;
        Ok(Machine {
            cfg,
            mems,
            regs: [0; 32],
            data: mode != Mode::TimingOnly,
            pipes: (0..6).map(|_| PipeState::default()).collect(),
            flags: vec![VecDeque::new(); nflags],
            scratch: Scratch::default(),
            scalar_t: 0,
            seq: 0,
            steps: 0,
            edge_bytes: cfg
                .edges()
                .into_iter()
                .map(|(s, d, _)| (s, d, 0, 0))
                .collect(),
            macs_issued: 0,
            macs_useful: 0,
            ideal_cube_cycles: 0.0,
            cube_tiles: 0,
            max_steps: DEFAULT_MAX_STEPS,
        })
    }

    fn flag_slot(&self, k: FlagKey) -> usize {
        (pidx(k.src) * 6 + pidx(k.dst)) * self.cfg.flag_ids as usize + k.id as usize
    }

    /// Runs `prog` from pc 0 to HALT and returns the cycle report.
    pub fn run(&mut self, prog: &[Instr]) -> Result<CycleReport> {
        let texts = |pc: usize| prog.get(pc).map(format_instr).unwrap_or_default();
        let mut pc = 0usize;
        loop {
            let ins = prog.get(pc).ok_or(SimError::PcOutOfRange { pc })?;
            self.steps += 1;
            if self.steps > self.max_steps {
                return Err(SimError::StepLimit {
                    pc,
                    limit: self.max_steps,
                });
            }
            let r = |i: u8| self.regs[i as usize];
            let bad = |msg: String| SimError::BadOperand {
                pc,
                instr: texts(pc),
                msg,
            };
            let mut next = pc + 1;
            match ins {
                Instr::Nop => {}
                Instr::Halt | Instr::Barrier => {
                    self.drain(prog)?;
                    self.check_drained(prog, "the program reached HALT/BARRIER")?;
                    let done = self.pipes.iter().map(|p| p.free_at).max().unwrap_or(0);
                    self.scalar_t = self.scalar_t.max(done);
                    if matches!(ins, Instr::Halt) {
                        return Ok(self.report());
                    }
                }
                Instr::Li { rd, imm } => self.regs[*rd as usize] = *imm as i64 as u64,
                Instr::Alu { op, rd, rs1, rs2 } => {
                    let v = alu(*op, r(*rs1) as i64, r(*rs2) as i64)
                        .ok_or_else(|| bad(format!("{op} by zero")))?;
                    self.regs[*rd as usize] = v as u64;
                }
                Instr::AluI { op, rd, rs1, imm } => {
                    let v = alu(*op, r(*rs1) as i64, *imm as i64)
                        .ok_or_else(|| bad(format!("{op} by zero")))?;
                    self.regs[*rd as usize] = v as u64;
                }
                Instr::Branch {
                    cond,
                    rs1,
                    rs2,
                    target,
                } => {
                    let (a, b) = (r(*rs1) as i64, r(*rs2) as i64);
                    let take = match cond {
                        Cond::Eq => a == b,
                        Cond::Ne => a != b,
                        Cond::Lt => a < b,
                        Cond::Ge => a >= b,
                        Cond::Ltu => (a as u64) < (b as u64),
                        Cond::Geu => (a as u64) >= (b as u64),
                    };
                    if take {
                        next = *target as usize;
                    }
                }
                Instr::Jmp { target } => next = *target as usize,
                Instr::Ld {
                    mem,
                    dt,
                    rd,
                    base,
                    offset,
                }
                | Instr::St {
                    mem,
                    dt,
                    rs: rd,
                    base,
                    offset,
                } => {
                    let ctx = ErrCtx { pc, instr: ins };
                    let a = exec::ScalarAccess {
                        mem: *mem,
                        dt: *dt,
                        addr: (r(*base) as i64).wrapping_add(*offset as i64),
                    };
                    let m = &mut self.mems[*mem as usize];
                    if matches!(ins, Instr::Ld { .. }) {
                        self.regs[*rd as usize] = exec::scalar_load(m, &a, &ctx)?;
                    } else {
                        exec::scalar_store(m, &a, r(*rd), &ctx)?;
                    }
                    self.scalar_t += if *mem == Mem::Gm {
                        self.cfg.gm_access_cycles
                    } else {
                        self.cfg.ub_access_cycles
                    };
                }
                Instr::Dbnz { rd, target } => {
                    let v = r(*rd).wrapping_sub(1);
                    self.regs[*rd as usize] = v;
                    if v != 0 {
                        next = *target as usize;
                    }
                }
                _ => {
                    let (pipe, work) = self.resolve(ins, pc, &texts)?;
                    self.issue(prog, pc, pipe, work)?;
                }
            }
            self.scalar_t += self.cfg.issue_cycles;
            pc = next;
        }
    }

    /// Reads register operands and picks the pipe.
    fn resolve(
        &self,
        ins: &Instr,
        pc: usize,
        texts: &dyn Fn(usize) -> String,
    ) -> Result<(Pipe, Work)> {
        let r = |i: u8| self.regs[i as usize];
        let bad = |msg: String| SimError::BadOperand {
            pc,
            instr: texts(pc),
            msg,
        };
        // Register values are unsigned quantities here; a negative one is a bug in the kernel.
        let u = |i: u8, what: &str| -> Result<u64> {
            let v = r(i);
            if (v as i64) < 0 {
                Err(bad(format!("{what} (r{i}) is negative: {}", v as i64)))
            } else {
                Ok(v)
            }
        };
        Ok(match ins {
            Instr::SetFlag { src, dst, id } | Instr::WaitFlag { src, dst, id } => {
                if *src == Pipe::S || *dst == Pipe::S || src == dst {
                    return Err(bad("flags join two different queued pipes".into()));
                }
                if *id >= self.cfg.flag_ids {
                    return Err(bad(format!(
                        "flag id {id} is not below {}",
                        self.cfg.flag_ids
                    )));
                }
                let k = FlagKey {
                    src: *src,
                    dst: *dst,
                    id: *id,
                };
                if matches!(ins, Instr::SetFlag { .. }) {
                    (*src, Work::Set(k))
                } else {
                    (*dst, Work::Wait(k))
                }
            }
            Instr::Dma {
                src_mem,
                dst_mem,
                sdt,
                ddt,
                regs,
                scale,
                transpose,
            } => {
                let edge = self.cfg.edge(*src_mem, *dst_mem).ok_or_else(|| {
                    bad(format!("no DMA edge {src_mem}->{dst_mem} on this target"))
                })?;
                let names = [
                    "dst",
                    "src",
                    "rows",
                    "cols",
                    "src_stride",
                    "dst_stride",
                    "dst_rows",
                    "dst_cols",
                ];
                let mut v = [0u64; 8];
                for i in 0..8 {
                    v[i] = u(regs[i], names[i])?;
                }
                let args = DmaArgs {
                    src_mem: *src_mem,
                    dst_mem: *dst_mem,
                    sdt: *sdt,
                    ddt: *ddt,
                    dst: v[0],
                    src: v[1],
                    rows: v[2],
                    cols: v[3],
                    src_stride: v[4],
                    dst_stride: v[5],
                    dst_rows: v[6],
                    dst_cols: v[7],
                    scale: scale.map(|s| f32::from_bits(r(s) as u32)),
                    transpose: *transpose,
                };
                exec::check_dma_types(&args, &ErrCtx { pc, instr: ins })?;
                (edge.pipe, Work::Dma(args))
            }
            Instr::Mma { adt, cdt, regs } => {
                let args = MmaArgs {
                    adt: *adt,
                    cdt: *cdt,
                    c: u(regs[0], "c")?,
                    a: u(regs[1], "a")?,
                    b: u(regs[2], "b")?,
                    m: u(regs[3], "m")?,
                    n: u(regs[4], "n")?,
                    k: u(regs[5], "k")?,
                    init: r(regs[6]) != 0,
                };
                (Pipe::Cube, Work::Mma(args))
            }
            Instr::Vec {
                op,
                form,
                sdt,
                ddt,
                dst,
                src1,
                src2,
                len,
                mask,
                cond,
            } => {
                let args = VecArgs {
                    op: *op,
                    form: *form,
                    sdt: *sdt,
                    ddt: *ddt,
                    dst: u(*dst, "dst")?,
                    src1: u(*src1, "src1")?,
                    src2: match (form, src2) {
                        (VecForm::Unary, _) | (_, None) => 0,
                        (_, Some(s)) => u(*s, "src2")?,
                    },
                    len: u(*len, "len")?,
                    mask: mask.map(r).unwrap_or(u64::MAX),
                    cond: match cond {
                        Some(c) => u(*c, "cond")?,
                        None => 0,
                    },
                };
                (Pipe::Vec, Work::Vec(args))
            }
            Instr::Vred {
                op,
                dt,
                dst,
                src,
                len,
            } => {
                let args = VredArgs {
                    op: *op,
                    dt: *dt,
                    dst: u(*dst, "dst")?,
                    src: u(*src, "src")?,
                    len: u(*len, "len")?,
                };
                (Pipe::Vec, Work::Vred(args))
            }
            Instr::VredRows {
                op,
                dt,
                dst,
                src,
                len,
                rows,
                stride,
            } => {
                let args = VredArgs {
                    op: *op,
                    dt: *dt,
                    dst: u(*dst, "dst")?,
                    src: u(*src, "src")?,
                    len: u(*len, "len")?,
                };
                let (rows, stride) = (u(*rows, "rows")?, u(*stride, "stride")?);
                (Pipe::Vec, Work::VredRows(args, rows, stride))
            }
            Instr::Vrow {
                op,
                dt,
                dst,
                src1,
                src2,
                len,
                row,
            } => {
                let args = VecArgs {
                    op: *op,
                    form: VecForm::VS,
                    sdt: *dt,
                    ddt: *dt,
                    dst: u(*dst, "dst")?,
                    src1: u(*src1, "src1")?,
                    src2: u(*src2, "src2")?,
                    len: u(*len, "len")?,
                    mask: u64::MAX,
                    cond: 0,
                };
                (Pipe::Vec, Work::Vrow(args, u(*row, "row")?))
            }
            other => {
                return Err(bad(format!(
                    "`{}` is not a pipe instruction",
                    format_instr(other)
                )))
            }
        })
    }

    /// Pushes one instruction into its pipe's queue, stalling the scalar unit while the queue is full.
    fn issue(&mut self, prog: &[Instr], pc: usize, pipe: Pipe, work: Work) -> Result<()> {
        let depth = self.cfg.queue_depth as u64;
        let p = pidx(pipe);
        if self.pipes[p].issued - self.pipes[p].started >= depth {
            self.drain(prog)?;
            if self.pipes[p].issued - self.pipes[p].started >= depth {
                let head = &self.pipes[p].queue[0];
                return Err(SimError::Deadlock {
                    pc: head.pc,
                    instr: format_instr(&prog[head.pc]),
                    detail: format!(
                        "the {pipe} queue is full behind this wait and the scalar unit cannot issue the flag it needs (issuing pc {pc})"
                    ),
                });
            }
        }
        let ps = &self.pipes[p];
        let n = ps.issued;
        if n >= depth {
            // The slot frees when instruction n - depth leaves the queue (starts).
            let oldest_kept = ps.started - ps.recent_starts.len() as u64;
            let idx = (n - depth - oldest_kept) as usize;
            self.scalar_t = self.scalar_t.max(ps.recent_starts[idx]);
        }
        let seq = self.seq;
        self.seq += 1;
        let is_set = matches!(work, Work::Set(_));
        let ps = &mut self.pipes[p];
        ps.issued += 1;
        ps.queue.push_back(Pending {
            seq,
            pc,
            issue_t: self.scalar_t,
            work,
        });
        if is_set {
            return self.drain(prog);
        }
        // Every startable head was started before this push, and only a SET can unblock another
        // pipe; so only this pipe may move now, and only if the new instruction is its head.
        if self.pipes[p].queue.len() == 1 {
            while self.try_start(prog, pipe)? {}
        }
        Ok(())
    }

    /// Starts every head instruction that nothing blocks, until no pipe can move.
    fn drain(&mut self, prog: &[Instr]) -> Result<()> {
        loop {
            let mut progress = false;
            for pipe in PIPES {
                while self.try_start(prog, pipe)? {
                    progress = true;
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    fn try_start(&mut self, prog: &[Instr], pipe: Pipe) -> Result<bool> {
        let p = pidx(pipe);
        let Some(head) = self.pipes[p].queue.front() else {
            return Ok(false);
        };
        let ready = self.pipes[p].free_at.max(head.issue_t);
        let mut start = ready;
        if let Work::Wait(k) = head.work {
            let slot = self.flag_slot(k);
            match self.flags[slot].pop_front() {
                Some(t) => start = start.max(t),
                None => return Ok(false),
            }
        }
        let Some(head) = self.pipes[p].queue.pop_front() else {
            return Ok(false);
        };
        let ctx = ErrCtx {
            pc: head.pc,
            instr: &prog[head.pc],
        };
        let cfg = self.cfg;
        let dur = match &head.work {
            Work::Wait(_) => cfg.flag_cycles,
            Work::Set(k) => {
                let slot = self.flag_slot(*k);
                if self.flags[slot].len() as u64 >= cfg.flag_max_count as u64 {
                    return Err(ctx.bad(format!(
                        "flag {}->{} {} overflows its count of {}",
                        k.src, k.dst, k.id, cfg.flag_max_count
                    )));
                }
                // The token is visible once the SET (and so all before it on this pipe) completes.
                self.flags[slot].push_back(start + cfg.flag_cycles);
                cfg.flag_cycles
            }
            Work::Dma(a) => {
                exec::dma(cfg, &mut self.mems, a, self.data, &ctx)?;
                let edge = cfg
                    .edge(a.src_mem, a.dst_mem)
                    .ok_or_else(|| ctx.bad("DMA edge vanished"))?;
                let bytes = a.bytes();
                if let Some(e) = self
                    .edge_bytes
                    .iter_mut()
                    .find(|e| e.0 == a.src_mem && e.1 == a.dst_mem)
                {
                    e.2 += bytes;
                    e.3 += 1;
                }
                edge.setup_cycles + bytes.div_ceil(edge.bytes_per_cycle)
            }
            Work::Mma(a) => {
                let out = exec::mma(cfg, &mut self.mems, a, self.data, &mut self.scratch, &ctx)?;
                let shape = cfg
                    .mma_shape(a.adt, a.cdt)
                    .ok_or_else(|| ctx.bad("MMA shape vanished"))?;
                self.macs_issued += out.macs_issued;
                self.macs_useful += out.macs_useful;
                self.cube_tiles += out.tiles;
                let macs_per_cycle =
                    (shape.m * shape.n * shape.k) as f64 / cfg.cube_cycles_per_tile as f64;
                self.ideal_cube_cycles += out.macs_useful as f64 / macs_per_cycle;
                cfg.cube_startup_cycles + out.tiles * cfg.cube_cycles_per_tile
            }
            Work::Vec(a) => {
                exec::vec(cfg, &mut self.mems[Mem::Ub as usize], a, self.data, &ctx)?;
                let bytes = a.len * a.sdt.size().max(a.ddt.size());
                cfg.vector_startup_cycles + bytes.div_ceil(cfg.vector_bytes_per_cycle)
            }
            Work::Vred(a) => {
                exec::vred(cfg, &mut self.mems[Mem::Ub as usize], a, self.data, &ctx)?;
                cfg.vector_startup_cycles
                    + (a.len * a.dt.size()).div_ceil(cfg.vector_bytes_per_cycle)
            }
            Work::VredRows(a, rows, stride) => {
                let ub = &mut self.mems[Mem::Ub as usize];
                exec::vred_rows(cfg, ub, a, *rows, *stride, self.data, &ctx)?;
                // One start-up; each row takes its own vector cycles.
                cfg.vector_startup_cycles
                    + rows
                        .saturating_mul((a.len * a.dt.size()).div_ceil(cfg.vector_bytes_per_cycle))
            }
            Work::Vrow(a, row) => {
                exec::vec_rows(
                    cfg,
                    &mut self.mems[Mem::Ub as usize],
                    a,
                    *row,
                    self.data,
                    &ctx,
                )?;
                cfg.vector_startup_cycles
                    + (a.len * a.sdt.size()).div_ceil(cfg.vector_bytes_per_cycle)
            }
        };
        let ps = &mut self.pipes[p];
        ps.stall += start - ready;
        ps.busy += dur;
        ps.free_at = start + dur;
        ps.started += 1;
        ps.recent_starts.push_back(start);
        if ps.recent_starts.len() > cfg.queue_depth {
            ps.recent_starts.pop_front();
        }
        Ok(true)
    }

    /// After a drain, any instruction still queued waits on a flag nobody will set.
    fn check_drained(&self, prog: &[Instr], why: &str) -> Result<()> {
        let stuck = self
            .pipes
            .iter()
            .filter_map(|p| p.queue.front())
            .min_by_key(|h| h.seq);
        if let Some(h) = stuck {
            return Err(SimError::Deadlock {
                pc: h.pc,
                instr: format_instr(&prog[h.pc]),
                detail: format!(
                    "{why} while this wait has no matching SET_FLAG, so it can never be satisfied"
                ),
            });
        }
        Ok(())
    }

    fn report(&self) -> CycleReport {
        let total = self.scalar_t;
        CycleReport {
            total_cycles: total,
            clock_ghz: self.cfg.clock_ghz,
            scalar_instructions: self.steps,
            pipes: PIPES
                .iter()
                .map(|&p| {
                    let s = &self.pipes[pidx(p)];
                    PipeReport {
                        pipe: p,
                        instructions: s.started,
                        busy: s.busy,
                        stall: s.stall,
                        idle: total.saturating_sub(s.busy + s.stall),
                    }
                })
                .collect(),
            edges: self
                .edge_bytes
                .iter()
                .map(|&(src, dst, bytes, transfers)| EdgeReport {
                    src,
                    dst,
                    bytes,
                    transfers,
                })
                .collect(),
            macs_issued: self.macs_issued,
            macs_useful: self.macs_useful,
            cube_tiles: self.cube_tiles,
            ideal_cube_cycles: self.ideal_cube_cycles,
            cube_utilisation: if total == 0 {
                0.0
            } else {
                self.ideal_cube_cycles / total as f64
            },
        }
    }
}

fn alu(op: AluOp, a: i64, b: i64) -> Option<i64> {
    Some(match op {
        AluOp::Add => a.wrapping_add(b),
        AluOp::Sub => a.wrapping_sub(b),
        AluOp::Mul => a.wrapping_mul(b),
        // MIN / -1 wraps to MIN (and its remainder is 0); only a zero divisor is an error.
        AluOp::Div if b == 0 => return None,
        AluOp::Div => a.wrapping_div(b),
        AluOp::Rem if b == 0 => return None,
        AluOp::Rem => a.wrapping_rem(b),
        AluOp::Divu => (a as u64).checked_div(b as u64)? as i64,
        AluOp::Remu => (a as u64).checked_rem(b as u64)? as i64,
        AluOp::Sra => a.wrapping_shr(b as u32 & 63),
        AluOp::Minu => (a as u64).min(b as u64) as i64,
        AluOp::Maxu => (a as u64).max(b as u64) as i64,
        AluOp::Min => a.min(b),
        AluOp::Max => a.max(b),
        AluOp::Shl => a.wrapping_shl(b as u32 & 63),
        AluOp::Shr => ((a as u64) >> (b as u32 & 63)) as i64,
        AluOp::And => a & b,
        AluOp::Or => a | b,
        AluOp::Xor => a ^ b,
    })
}
