//! The kernel-IR interpreter: the `interp` target and THE reference semantics of every
//! instruction. Start at [`run_kernel`]; [`Interp`] is the same thing prepared once for many
//! launches. The per-instruction semantics are in `Machine::inst`, one arm per instruction,
//! and the per-lane arithmetic in the free functions below it.
//!
//! Values live in one preallocated register file of `u64` lanes (a value of `n` lanes owns `n`
//! consecutive slots), each lane holding its element in a canonical form: signed ints
//! sign-extended to 64 bits, unsigned ints zero-extended, bools 0 or 1, floats their raw bit
//! pattern (f16/bf16/f8/f4 included). Nothing is allocated per instruction.
//!
//! Decisions the kernel docs leave open, fixed here so every backend can match them:
//! - Float arithmetic on f32 is done in f32 and on f64 in f64. On the narrow floats (f16, bf16,
//!   the f8s, f4e2m1) it is done in f32 and rounded back (RNE) after every operation; for
//!   `+ - * / sqrt` that equals a correctly rounded operation in the narrow type. Overflow in
//!   narrow arithmetic is not saturating: it gives inf where the format has one, else NaN
//!   (f4e2m1 has neither and clamps, as `MiniFloat::encode` does).
//! - Conversions from f64 (and from 64-bit ints) to the narrow floats round once, correctly:
//!   they go through f32 with round-to-odd, which makes the second rounding exact.
//! - `min`/`max` on floats are IEEE 754-2019 `minimum`/`maximum`: NaN if either is NaN, and
//!   -0 < +0.
//! - Math routines evaluate the `libm` crate (musl's libm in Rust: within an ulp, and the same
//!   on every platform) in f64 and round to the value's type; `sigmoid(x) = 1 / (1 + exp(-x))`.
//! - `mma` forms each product exactly and rounds once per accumulation step: an f64
//!   accumulator uses a fused multiply-add; narrower accumulators form the exact product in
//!   f64 and add with round-to-odd before rounding to the accumulator type.
//! - Local and shared buffers are zeroed at the start of every program instance.
//! - A load or store may access a buffer through its storage view (`u16` bit patterns of
//!   f16/bf16, `u8` of float8, `u8` bytes of sub-byte dtypes), as `kernel.rs` allows.

// Errors are cold and carry their whole context for the user; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use crate::error::KirError;
use crate::kernel::*;
use crate::text;
use crate::verify::verify;
use std::sync::OnceLock;
use tessera_ir::numeric::MiniFloat;
use tessera_ir::DType;

/// A kernel that could not run. Each variant's doc says whose fault it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    /// A compiler bug (or a bad hand-written kernel): the kernel fails the verifier.
    #[error("cannot interpret: {0}")]
    Invalid(#[from] KirError),

    /// Bad input from the caller: the wrong number of buffers.
    #[error("kernel `{kernel}` takes {expected} buffers, but {got} were passed")]
    ArgCount {
        kernel: String,
        expected: usize,
        got: usize,
    },

    /// Bad input from the caller: a buffer of the wrong size.
    #[error("kernel `{kernel}`: buffer passed for parameter `{param}` ({dtype}[{len}]) has {got} bytes, expected {expected}")]
    ArgSize {
        kernel: String,
        param: String,
        dtype: DType,
        len: u64,
        expected: u64,
        got: u64,
    },

    /// A limit exceeded: the kernel's scratch buffers are too large to allocate.
    #[error("kernel `{kernel}`: {msg}")]
    Limit { kernel: String, msg: String },

    /// Bad kernel (a lowering bug): a load, store or mma outside its buffer.
    #[error("kernel `{kernel}`, program {program}, {at} `{inst}`: {what} elements {first}..{end} of buffer `{buf}`, which has {len}")]
    OutOfBounds {
        kernel: String,
        program: String,
        at: String,
        inst: String,
        what: &'static str,
        buf: String,
        first: i128,
        end: i128,
        len: u64,
    },

    /// Bad kernel: another run-time fault (a loop step that is not positive, an index that
    /// overflows).
    #[error("kernel `{kernel}`, program {program}, {at} `{inst}`: {msg}")]
    Trap {
        kernel: String,
        program: String,
        at: String,
        inst: String,
        msg: String,
    },

    /// Bad input data: a `trap` instruction fired (an index out of range, a bad size). `code`
    /// is the kernel's check number, which the plan's trap table maps to a node and input.
    #[error("kernel `{kernel}`, program {program}: data check {code} failed on value {value}")]
    Data {
        kernel: String,
        program: String,
        code: u32,
        value: i64,
    },
}

/// Runs `k` once per grid point over the parameter buffers `args`, given in parameter order as
/// raw little-endian bytes (sub-byte dtypes packed, lowest bits first). Verifies the kernel
/// first.
pub fn run_kernel(k: &Kernel, args: &mut [&mut [u8]]) -> Result<(), InterpError> {
    Interp::new(k)?.run(args)
}

/// A verified kernel compiled to a flat list of operations over its register file, ready to
/// be launched many times.
pub struct Interp<'k> {
    k: &'k Kernel,
    /// First register slot of each value.
    off: Vec<u32>,
    nregs: usize,
    ops: Vec<Op<'k>>,
    /// Instruction paths (outermost first) for error messages, indexed by an op's `loc`.
    locs: Vec<Vec<(&'static str, usize)>>,
}

impl<'k> Interp<'k> {
    /// Verifies `k` and lays out its registers.
    pub fn new(k: &'k Kernel) -> Result<Interp<'k>, InterpError> {
        verify(k)?;
        let mut off = Vec::with_capacity(k.vals.len());
        let mut n: usize = 0;
        for t in &k.vals {
            off.push(n as u32);
            n += t.count() as usize;
        }
        if n > u32::MAX as usize {
            return Err(InterpError::Limit {
                kernel: k.name.clone(),
                msg: "too many value lanes".into(),
            });
        }
        let mut c = Compiler {
            k,
            off: &off,
            ops: Vec::new(),
            locs: Vec::new(),
            path: Vec::new(),
        };
        c.block(&k.body, "");
        let (ops, locs) = (c.ops, c.locs);
        Ok(Interp {
            k,
            off,
            nregs: n,
            ops,
            locs,
        })
    }

    /// Runs the kernel over `args` (see [`run_kernel`]).
    pub fn run(&self, args: &mut [&mut [u8]]) -> Result<(), InterpError> {
        let k = self.k;
        if args.len() != k.num_params {
            return Err(InterpError::ArgCount {
                kernel: k.name.clone(),
                expected: k.num_params,
                got: args.len(),
            });
        }
        for (a, d) in args.iter().zip(k.params()) {
            let expected = d.dtype.storage_bytes(d.len);
            if a.len() as u64 != expected {
                return Err(InterpError::ArgSize {
                    kernel: k.name.clone(),
                    param: d.name.clone(),
                    dtype: d.dtype,
                    len: d.len,
                    expected,
                    got: a.len() as u64,
                });
            }
        }
        let mut scratch_bytes: u64 = 0;
        for d in &k.bufs[k.num_params..] {
            scratch_bytes = scratch_bytes.saturating_add(d.dtype.storage_bytes(d.len));
        }
        if scratch_bytes > MAX_SCRATCH_BYTES {
            return Err(InterpError::Limit {
                kernel: k.name.clone(),
                msg: format!("local buffers need {scratch_bytes} bytes; the interpreter allows {MAX_SCRATCH_BYTES}"),
            });
        }
        let mut locals: Vec<Vec<u8>> = k.bufs[k.num_params..]
            .iter()
            .map(|d| vec![0u8; d.dtype.storage_bytes(d.len) as usize])
            .collect();
        let mut bufs: Vec<&mut [u8]> = Vec::with_capacity(k.bufs.len());
        for a in args.iter_mut() {
            bufs.push(&mut a[..]);
        }
        for l in locals.iter_mut() {
            bufs.push(&mut l[..]);
        }
        let mut m = Machine {
            k,
            off: &self.off,
            regs: vec![0u64; self.nregs],
            bufs,
            pid: [0; 3],
            tmp: Vec::new(),
            bytes: Vec::new(),
        };
        // Row-major over the grid axes; an empty grid means one instance.
        let g = &k.grid;
        if g.contains(&0) {
            return Ok(());
        }
        let total: u64 = g.iter().product();
        for lin in 0..total {
            let mut rem = lin;
            for ax in (0..g.len()).rev() {
                m.pid[ax] = (rem % g[ax]) as i64;
                rem /= g[ax];
            }
            if lin > 0 {
                for b in m.bufs[k.num_params..].iter_mut() {
                    b.fill(0);
                }
            }
            if let Err(t) = m.exec(&self.ops, &self.locs) {
                return Err(m.report(t));
            }
        }
        Ok(())
    }
}

// ================================================================================================
// The compiled form: the body flattened into operations with register slots resolved, control
// flow turned into jumps, and the hottest scalar instructions given their own fast arms.
// ================================================================================================

/// One operation of the compiled body. Register operands are slot offsets; `loc` indexes
/// `Interp::locs` for error messages.
enum Op<'k> {
    /// Any instruction but control flow, executed by `Machine::inst`.
    Generic(&'k Inst, u32),
    F32Bin(BinOp, u32, u32, u32),
    F64Bin(BinOp, u32, u32, u32),
    /// Signed ints of 64 or 32 bits (`I32` re-normalises).
    IntBin(BinOp, DType, u32, u32, u32),
    Cmp1(CmpOp, DType, u32, u32, u32),
    Select1(u32, u32, u32, u32),
    /// A scalar load: (dtype, dst, buffer, index slot, buffer length, inst, loc).
    Load1(DType, u32, u32, u32, u64, &'k Inst, u32),
    /// A scalar store: (dtype, value slot, buffer, index slot, buffer length, inst, loc).
    Store1(DType, u32, u32, u32, u64, &'k Inst, u32),
    /// Copies `n` slots.
    Copy {
        from: u32,
        to: u32,
        n: u32,
    },
    /// Copies several values at once, as a parallel assignment (through scratch).
    ParCopy(Vec<(u32, u32, u32)>),
    /// Loop entry: checks the step, sets the induction variable to `lo`, and jumps to `exit`
    /// when the range is empty.
    ForHead {
        lo: u32,
        hi: u32,
        step: u32,
        iv: u32,
        exit: u32,
        inst: &'k Inst,
        loc: u32,
    },
    /// Loop latch: advances the induction variable and jumps back to `body` while in range.
    ForNext {
        hi: u32,
        step: u32,
        iv: u32,
        body: u32,
    },
    JumpIfNot {
        cond: u32,
        to: u32,
    },
    Jump(u32),
}

struct Compiler<'k, 'a> {
    k: &'k Kernel,
    off: &'a [u32],
    ops: Vec<Op<'k>>,
    locs: Vec<Vec<(&'static str, usize)>>,
    path: Vec<(&'static str, usize)>,
}

impl<'k> Compiler<'k, '_> {
    fn o(&self, v: Val) -> u32 {
        self.off[v.0 as usize]
    }

    fn lanes(&self, v: Val) -> u32 {
        self.k.vals[v.0 as usize].count()
    }

    fn loc(&mut self) -> u32 {
        self.locs.push(self.path.clone());
        self.locs.len() as u32 - 1
    }

    /// Compiles a block; returns the values of its closing `yield` (empty if none).
    fn block(&mut self, b: &'k Block, label: &'static str) -> &'k [Val] {
        self.path.push((label, 0));
        let mut yielded: &'k [Val] = &[];
        for (i, inst) in b.insts.iter().enumerate() {
            if let Some(last) = self.path.last_mut() {
                last.1 = i;
            }
            if let InstKind::Yield(vs) = &inst.kind {
                yielded = vs;
                continue;
            }
            self.inst(inst);
        }
        self.path.pop();
        yielded
    }

    /// Emits copies of `from[i]` into `to[i]`, as a parallel assignment when they overlap.
    fn copies(&mut self, from: &[Val], to: &[Val]) {
        let pairs: Vec<(u32, u32, u32)> = from
            .iter()
            .zip(to.iter())
            .map(|(&f, &t)| (self.o(f), self.o(t), self.lanes(f)))
            .filter(|p| p.0 != p.1)
            .collect();
        let overlap = pairs
            .iter()
            .any(|&(f, _, n)| pairs.iter().any(|&(_, t, m)| f < t + m && t < f + n));
        if overlap {
            self.ops.push(Op::ParCopy(pairs));
        } else {
            for (from, to, n) in pairs {
                self.ops.push(Op::Copy { from, to, n });
            }
        }
    }

    fn inst(&mut self, inst: &'k Inst) {
        use InstKind::*;
        let k = self.k;
        match &inst.kind {
            For {
                lo,
                hi,
                step,
                iv,
                iter,
                init,
                body,
            } => {
                self.copies(init, iter);
                let loc = self.loc();
                let head = self.ops.len();
                let (lo, hi, step, iv) = (self.o(*lo), self.o(*hi), self.o(*step), self.o(*iv));
                self.ops.push(Op::ForHead {
                    lo,
                    hi,
                    step,
                    iv,
                    exit: 0,
                    inst,
                    loc,
                });
                let body_start = self.ops.len() as u32;
                let y = self.block(body, "body");
                self.copies(y, iter);
                self.ops.push(Op::ForNext {
                    hi,
                    step,
                    iv,
                    body: body_start,
                });
                let exit = self.ops.len() as u32;
                if let Op::ForHead { exit: e, .. } = &mut self.ops[head] {
                    *e = exit;
                }
                self.copies(iter, &inst.results);
            }
            If {
                cond,
                then_blk,
                else_blk,
            } => {
                let j = self.ops.len();
                self.ops.push(Op::JumpIfNot {
                    cond: self.o(*cond),
                    to: 0,
                });
                let y = self.block(then_blk, "then");
                self.copies(y, &inst.results);
                let jend = self.ops.len();
                self.ops.push(Op::Jump(0));
                let else_start = self.ops.len() as u32;
                let y = self.block(else_blk, "else");
                self.copies(y, &inst.results);
                let end = self.ops.len() as u32;
                if let Op::JumpIfNot { to, .. } = &mut self.ops[j] {
                    *to = else_start;
                }
                if let Op::Jump(to) = &mut self.ops[jend] {
                    *to = end;
                }
            }
            Yield(_) => {}
            Binary(op, a, b) if k.vals[a.0 as usize].is_scalar() => {
                let d = k.vals[a.0 as usize].elem;
                let (r, a, b) = (self.o(inst.results[0]), self.o(*a), self.o(*b));
                self.ops.push(match d {
                    DType::F32 => Op::F32Bin(*op, r, a, b),
                    DType::F64 => Op::F64Bin(*op, r, a, b),
                    DType::I64 | DType::I32 => Op::IntBin(*op, d, r, a, b),
                    _ => Op::Generic(inst, 0),
                });
            }
            Cmp(op, a, b) if k.vals[a.0 as usize].is_scalar() => {
                let d = k.vals[a.0 as usize].elem;
                let (r, a, b) = (self.o(inst.results[0]), self.o(*a), self.o(*b));
                self.ops.push(Op::Cmp1(*op, d, r, a, b));
            }
            Select(c, a, b) if k.vals[a.0 as usize].is_scalar() => {
                let (r, c, a, b) = (self.o(inst.results[0]), self.o(*c), self.o(*a), self.o(*b));
                self.ops.push(Op::Select1(r, c, a, b));
            }
            Load { buf, index } if k.vals[inst.results[0].0 as usize].is_scalar() => {
                let elem = k.vals[inst.results[0].0 as usize].elem;
                let len = k.bufs[buf.0 as usize].view_len(elem).unwrap_or(0);
                let loc = self.loc();
                let (r, i) = (self.o(inst.results[0]), self.o(*index));
                self.ops.push(Op::Load1(elem, r, buf.0, i, len, inst, loc));
            }
            Store { buf, index, value } if k.vals[value.0 as usize].is_scalar() => {
                let elem = k.vals[value.0 as usize].elem;
                let len = k.bufs[buf.0 as usize].view_len(elem).unwrap_or(0);
                let loc = self.loc();
                let (v, i) = (self.o(*value), self.o(*index));
                self.ops.push(Op::Store1(elem, v, buf.0, i, len, inst, loc));
            }
            _ => {
                let loc = self.loc();
                self.ops.push(Op::Generic(inst, loc));
            }
        }
    }
}

impl<'k> Machine<'k, '_> {
    /// Runs the compiled body once.
    fn exec(&mut self, ops: &[Op<'k>], locs: &[Vec<(&'static str, usize)>]) -> Result<(), Trap> {
        let with_loc = |mut t: Trap, loc: u32| {
            t.path = locs.get(loc as usize).cloned().unwrap_or_default();
            t
        };
        let mut pc = 0usize;
        while let Some(op) = ops.get(pc) {
            pc += 1;
            match op {
                Op::F32Bin(o, r, a, b) => {
                    let (x, y) = (
                        f32::from_bits(self.regs[*a as usize] as u32),
                        f32::from_bits(self.regs[*b as usize] as u32),
                    );
                    let v: f32 = match o {
                        BinOp::Add => x + y,
                        BinOp::Sub => x - y,
                        BinOp::Mul => x * y,
                        BinOp::Div => x / y,
                        _ => f32::from_bits(binop(
                            *o,
                            DType::F32,
                            x.to_bits() as u64,
                            y.to_bits() as u64,
                        ) as u32),
                    };
                    self.regs[*r as usize] = v.to_bits() as u64;
                }
                Op::F64Bin(o, r, a, b) => {
                    let (x, y) = (self.regs[*a as usize], self.regs[*b as usize]);
                    self.regs[*r as usize] = binop(*o, DType::F64, x, y);
                }
                Op::IntBin(o, d, r, a, b) => {
                    let (x, y) = (self.regs[*a as usize] as i64, self.regs[*b as usize] as i64);
                    let v = match o {
                        BinOp::Add => x.wrapping_add(y) as u64,
                        BinOp::Sub => x.wrapping_sub(y) as u64,
                        BinOp::Mul => x.wrapping_mul(y) as u64,
                        _ => binop(*o, *d, x as u64, y as u64),
                    };
                    self.regs[*r as usize] = if *d == DType::I64 {
                        v
                    } else {
                        v as i32 as i64 as u64
                    };
                }
                Op::Cmp1(o, d, r, a, b) => {
                    let (x, y) = (self.regs[*a as usize], self.regs[*b as usize]);
                    self.regs[*r as usize] = cmp(*o, *d, x, y) as u64;
                }
                Op::Select1(r, c, a, b) => {
                    let v = if self.regs[*c as usize] != 0 {
                        self.regs[*a as usize]
                    } else {
                        self.regs[*b as usize]
                    };
                    self.regs[*r as usize] = v;
                }
                Op::Load1(d, r, buf, i, len, inst, loc) => {
                    let i = self.regs[*i as usize] as i64;
                    if i < 0 || i as u64 >= *len {
                        let kind = TrapKind::Bounds {
                            what: "loads",
                            buf: *buf,
                            first: i as i128,
                            end: i as i128 + 1,
                        };
                        return Err(with_loc(self.trap(inst, kind), *loc));
                    }
                    self.regs[*r as usize] = read_elem(*d, self.bufs[*buf as usize], i as usize);
                }
                Op::Store1(d, v, buf, i, len, inst, loc) => {
                    let i = self.regs[*i as usize] as i64;
                    if i < 0 || i as u64 >= *len {
                        let kind = TrapKind::Bounds {
                            what: "stores",
                            buf: *buf,
                            first: i as i128,
                            end: i as i128 + 1,
                        };
                        return Err(with_loc(self.trap(inst, kind), *loc));
                    }
                    let v = self.regs[*v as usize];
                    write_elem(*d, self.bufs[*buf as usize], i as usize, v);
                }
                Op::Copy { from, to, n } => {
                    let (f, t, n) = (*from as usize, *to as usize, *n as usize);
                    if n == 1 {
                        self.regs[t] = self.regs[f];
                    } else {
                        self.regs.copy_within(f..f + n, t);
                    }
                }
                Op::ParCopy(pairs) => {
                    self.tmp.clear();
                    for &(f, _, n) in pairs {
                        self.tmp
                            .extend_from_slice(&self.regs[f as usize..(f + n) as usize]);
                    }
                    let mut at = 0;
                    for &(_, t, n) in pairs {
                        self.regs[t as usize..(t + n) as usize]
                            .copy_from_slice(&self.tmp[at..at + n as usize]);
                        at += n as usize;
                    }
                }
                Op::ForHead {
                    lo,
                    hi,
                    step,
                    iv,
                    exit,
                    inst,
                    loc,
                } => {
                    let (l, h, s) = (
                        self.regs[*lo as usize] as i64,
                        self.regs[*hi as usize] as i64,
                        self.regs[*step as usize] as i64,
                    );
                    if l < h {
                        if s <= 0 {
                            let kind = TrapKind::Other(format!("loop step {s} is not positive"));
                            return Err(with_loc(self.trap(inst, kind), *loc));
                        }
                        self.regs[*iv as usize] = l as u64;
                    } else {
                        pc = *exit as usize;
                    }
                }
                Op::ForNext { hi, step, iv, body } => {
                    let (i, h, s) = (
                        self.regs[*iv as usize] as i64,
                        self.regs[*hi as usize] as i64,
                        self.regs[*step as usize] as i64,
                    );
                    if let Some(n) = i.checked_add(s) {
                        if n < h {
                            self.regs[*iv as usize] = n as u64;
                            pc = *body as usize;
                        }
                    }
                }
                Op::JumpIfNot { cond, to } => {
                    if self.regs[*cond as usize] == 0 {
                        pc = *to as usize;
                    }
                }
                Op::Jump(to) => pc = *to as usize,
                Op::Generic(inst, loc) => {
                    if let Err(t) = self.inst(inst) {
                        return Err(with_loc(t, *loc));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The most scratch (local and shared) memory one kernel may ask the interpreter for.
pub const MAX_SCRATCH_BYTES: u64 = 1 << 32;

/// A fault inside the body, with the path to the instruction (outermost first).
struct Trap {
    kind: TrapKind,
    inst: String,
    path: Vec<(&'static str, usize)>,
}

enum TrapKind {
    Bounds {
        what: &'static str,
        buf: u32,
        first: i128,
        end: i128,
    },
    Other(String),
    /// A `trap` instruction fired: bad data, not a bad kernel.
    Data {
        code: u32,
        value: i64,
    },
}

struct Machine<'k, 'a> {
    k: &'k Kernel,
    off: &'k [u32],
    regs: Vec<u64>,
    bufs: Vec<&'a mut [u8]>,
    pid: [i64; 3],
    /// Scratch for loop-carried values in flight.
    tmp: Vec<u64>,
    /// Scratch for bitcasts.
    bytes: Vec<u8>,
}

impl<'k> Machine<'k, '_> {
    fn report(&self, t: Trap) -> InterpError {
        let k = self.k;
        let program = format!(
            "({})",
            self.pid[..k.grid.len().max(1)]
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut at = String::from("instruction ");
        for (i, (label, n)) in t.path.iter().enumerate() {
            if i > 0 {
                at.push_str(" > ");
            }
            if !label.is_empty() {
                at.push_str(label);
                at.push(' ');
            }
            at.push_str(&format!("#{n}"));
        }
        match t.kind {
            TrapKind::Bounds {
                what,
                buf,
                first,
                end,
            } => {
                let d = &k.bufs[buf as usize];
                InterpError::OutOfBounds {
                    kernel: k.name.clone(),
                    program,
                    at,
                    inst: t.inst,
                    what,
                    buf: d.name.clone(),
                    first,
                    end,
                    len: d.len,
                }
            }
            TrapKind::Other(msg) => InterpError::Trap {
                kernel: k.name.clone(),
                program,
                at,
                inst: t.inst,
                msg,
            },
            TrapKind::Data { code, value } => InterpError::Data {
                kernel: k.name.clone(),
                program,
                code,
                value,
            },
        }
    }

    fn trap(&self, inst: &Inst, kind: TrapKind) -> Trap {
        Trap {
            kind,
            inst: text::inst_head(self.k, inst),
            path: Vec::new(),
        }
    }

    #[inline]
    fn o(&self, v: Val) -> usize {
        self.off[v.0 as usize] as usize
    }

    #[inline]
    fn ty(&self, v: Val) -> Ty {
        self.k.vals[v.0 as usize]
    }

    #[inline]
    fn scalar(&self, v: Val) -> u64 {
        self.regs[self.o(v)]
    }

    /// Checks that elements `first..first+n` lie in buffer `b`.
    fn bounds(
        &self,
        inst: &Inst,
        what: &'static str,
        b: Buf,
        elem: DType,
        first: i64,
        n: u64,
    ) -> Result<usize, Trap> {
        let len = self.k.bufs[b.0 as usize].view_len(elem).unwrap_or(0);
        let end = first as i128 + n as i128;
        if first < 0 || end > len as i128 {
            return Err(self.trap(
                inst,
                TrapKind::Bounds {
                    what,
                    buf: b.0,
                    first: first as i128,
                    end,
                },
            ));
        }
        Ok(first as usize)
    }

    /// Executes one instruction other than `for`, `if` and `yield`.
    fn inst(&mut self, inst: &'k Inst) -> Result<(), Trap> {
        use InstKind::*;
        match &inst.kind {
            Const(c) => {
                let r = inst.results[0];
                let t = self.ty(r);
                let bits = const_bits(t.elem, *c);
                let o = self.o(r);
                self.regs[o..o + t.count() as usize].fill(bits);
            }
            ProgramId(axis) => {
                let v = self.pid.get(*axis as usize).copied().unwrap_or(0);
                let o = self.o(inst.results[0]);
                self.regs[o] = v as u64;
            }
            Unary(op, x) => {
                let r = inst.results[0];
                let t = self.ty(r);
                let (xo, ro) = (self.o(*x), self.o(r));
                for l in 0..t.count() as usize {
                    self.regs[ro + l] = unop(*op, t.elem, self.regs[xo + l]);
                }
            }
            Binary(op, a, b) => {
                let r = inst.results[0];
                let t = self.ty(r);
                let (ao, bo, ro) = (self.o(*a), self.o(*b), self.o(r));
                if t.is_scalar() {
                    self.regs[ro] = binop(*op, t.elem, self.regs[ao], self.regs[bo]);
                } else {
                    for l in 0..t.count() as usize {
                        self.regs[ro + l] =
                            binop(*op, t.elem, self.regs[ao + l], self.regs[bo + l]);
                    }
                }
            }
            Cmp(op, a, b) => {
                let t = self.ty(*a);
                let (ao, bo, ro) = (self.o(*a), self.o(*b), self.o(inst.results[0]));
                for l in 0..t.count() as usize {
                    self.regs[ro + l] =
                        cmp(*op, t.elem, self.regs[ao + l], self.regs[bo + l]) as u64;
                }
            }
            Fma(a, b, c) => {
                let r = inst.results[0];
                let t = self.ty(r);
                let (ao, bo, co, ro) = (self.o(*a), self.o(*b), self.o(*c), self.o(r));
                for l in 0..t.count() as usize {
                    let (x, y, z) = (self.regs[ao + l], self.regs[bo + l], self.regs[co + l]);
                    self.regs[ro + l] = if t.elem == DType::F64 {
                        f64::from_bits(x)
                            .mul_add(f64::from_bits(y), f64::from_bits(z))
                            .to_bits()
                    } else {
                        let f = |v: u64| f32::from_bits(v as u32);
                        f(x).mul_add(f(y), f(z)).to_bits() as u64
                    };
                }
            }
            Dot(acc, a, b) => {
                let r = inst.results[0];
                let lanes = self.ty(r).count() as usize;
                let (at, bt) = (self.ty(*a), self.ty(*b));
                let group = at.count() as usize / lanes.max(1);
                let (xo, ao, bo, ro) = (self.o(*acc), self.o(*a), self.o(*b), self.o(r));
                for l in 0..lanes {
                    let mut s = self.regs[xo + l];
                    for g in 0..group {
                        let i = group * l + g;
                        s = mac(
                            DType::I32,
                            at.elem,
                            bt.elem,
                            s,
                            self.regs[ao + i],
                            self.regs[bo + i],
                        );
                    }
                    self.regs[ro + l] = s;
                }
            }
            Select(c, a, b) => {
                let r = inst.results[0];
                let n = self.ty(r).count() as usize;
                let cn = self.ty(*c).count() as usize;
                let (co, ao, bo, ro) = (self.o(*c), self.o(*a), self.o(*b), self.o(r));
                for l in 0..n {
                    let cv = self.regs[co + if cn == 1 { 0 } else { l }];
                    self.regs[ro + l] = if cv != 0 {
                        self.regs[ao + l]
                    } else {
                        self.regs[bo + l]
                    };
                }
            }
            Cast(x, mode) => {
                let r = inst.results[0];
                let (from, to) = (self.ty(*x), self.ty(r));
                let (xo, ro) = (self.o(*x), self.o(r));
                for l in 0..to.count() as usize {
                    self.regs[ro + l] = cast(from.elem, to.elem, self.regs[xo + l], mode.saturate);
                }
            }
            Bitcast(x) => {
                let r = inst.results[0];
                let (from, to) = (self.ty(*x), self.ty(r));
                let (xo, ro) = (self.o(*x), self.o(r));
                let nbytes = from.elem.storage_bytes(from.count() as u64) as usize;
                self.bytes.clear();
                self.bytes.resize(nbytes.max(8), 0);
                for l in 0..from.count() as usize {
                    write_elem(from.elem, &mut self.bytes, l, self.regs[xo + l]);
                }
                for l in 0..to.count() as usize {
                    self.regs[ro + l] = read_elem(to.elem, &self.bytes, l);
                }
            }
            Splat(x) => {
                let r = inst.results[0];
                let n = self.ty(r).count() as usize;
                let v = self.scalar(*x);
                let ro = self.o(r);
                self.regs[ro..ro + n].fill(v);
            }
            Extract(x, lane) => {
                let v = self.regs[self.o(*x) + *lane as usize];
                let ro = self.o(inst.results[0]);
                self.regs[ro] = v;
            }
            ReduceLanes(op, x) => {
                let t = self.ty(*x);
                let xo = self.o(*x);
                let bop = op.binop();
                let mut acc = self.regs[xo];
                for l in 1..t.lanes as usize {
                    acc = binop(bop, t.elem, acc, self.regs[xo + l]);
                }
                let ro = self.o(inst.results[0]);
                self.regs[ro] = acc;
            }
            Math(f, args) => {
                let r = inst.results[0];
                let t = self.ty(r);
                let ro = self.o(r);
                let ao = self.o(args[0]);
                let bo = if args.len() > 1 { self.o(args[1]) } else { ao };
                for l in 0..t.count() as usize {
                    let x = to_f64(t.elem, self.regs[ao + l]);
                    let y = to_f64(t.elem, self.regs[bo + l]);
                    self.regs[ro + l] = from_f64(t.elem, math(*f, x, y));
                }
            }
            Load { buf, index } => {
                let r = inst.results[0];
                let t = self.ty(r);
                let i = self.scalar(*index) as i64;
                let first = self.bounds(inst, "loads", *buf, t.elem, i, t.lanes as u64)?;
                let ro = self.o(r);
                let bytes = &self.bufs[buf.0 as usize];
                let d = t.elem;
                if t.lanes == 1 {
                    self.regs[ro] = read_elem(d, bytes, first);
                } else {
                    for l in 0..t.lanes as usize {
                        self.regs[ro + l] = read_elem(d, bytes, first + l);
                    }
                }
            }
            Store { buf, index, value } => {
                let t = self.ty(*value);
                let i = self.scalar(*index) as i64;
                let first = self.bounds(inst, "stores", *buf, t.elem, i, t.lanes as u64)?;
                let vo = self.o(*value);
                let bytes = &mut self.bufs[buf.0 as usize];
                for l in 0..t.lanes as usize {
                    write_elem(t.elem, bytes, first + l, self.regs[vo + l]);
                }
            }
            // Control flow is compiled into jumps (see `compile`) and never reaches here.
            For { .. } | If { .. } | Yield(_) => {}
            Mma {
                a,
                b,
                c,
                m,
                n,
                k,
                a_ty,
                b_ty,
                acc,
            } => self.mma(inst, a, b, c, (*m, *n, *k), (*a_ty, *b_ty, *acc))?,
            TileLoad { src, fill } => {
                let r = inst.results[0];
                let t = self.ty(r);
                let (rows, cols) = t.tile_shape().unwrap_or((1, 1));
                let fill = const_bits(t.elem, *fill);
                let ro = self.o(r);
                for i in 0..rows {
                    for j in 0..cols {
                        let v = match self.tile_elem(inst, "tile.load reads", src, t.elem, i, j)? {
                            Some(e) => read_elem(t.elem, self.bufs[src.view.buf.0 as usize], e),
                            None => fill,
                        };
                        self.regs[ro + (i * cols + j) as usize] = v;
                    }
                }
            }
            TileStore { dst, value } => {
                let t = self.ty(*value);
                let (rows, cols) = t.tile_shape().unwrap_or((1, 1));
                let vo = self.o(*value);
                for i in 0..rows {
                    for j in 0..cols {
                        if let Some(e) =
                            self.tile_elem(inst, "tile.store writes", dst, t.elem, i, j)?
                        {
                            let v = self.regs[vo + (i * cols + j) as usize];
                            write_elem(t.elem, self.bufs[dst.view.buf.0 as usize], e, v);
                        }
                    }
                }
            }
            TileCopy {
                src,
                dst,
                rows,
                cols,
                fill,
            } => {
                let d = self.k.bufs[src.view.buf.0 as usize].dtype;
                let fill = const_bits(d, *fill);
                for i in 0..*rows {
                    for j in 0..*cols {
                        let Some(de) = self.tile_elem(inst, "tile.copy writes", dst, d, i, j)?
                        else {
                            continue;
                        };
                        let v = match self.tile_elem(inst, "tile.copy reads", src, d, i, j)? {
                            Some(se) => read_elem(d, self.bufs[src.view.buf.0 as usize], se),
                            None => fill,
                        };
                        write_elem(d, self.bufs[dst.view.buf.0 as usize], de, v);
                    }
                }
            }
            TileMma { a, b, acc } => {
                let r = inst.results[0];
                let (at, bt, ct) = (self.ty(*a), self.ty(*b), self.ty(*acc));
                let ((m, kk), (_, n)) = (
                    at.tile_shape().unwrap_or((1, 1)),
                    bt.tile_shape().unwrap_or((1, 1)),
                );
                let (ao, bo, co, ro) = (self.o(*a), self.o(*b), self.o(*acc), self.o(r));
                // Through scratch, so the result may share registers with nothing it reads.
                self.tmp.clear();
                for i in 0..m {
                    for j in 0..n {
                        let mut s = self.regs[co + (i * n + j) as usize];
                        for l in 0..kk {
                            let x = self.regs[ao + (i * kk + l) as usize];
                            let y = self.regs[bo + (l * n + j) as usize];
                            s = mac(ct.elem, at.elem, bt.elem, s, x, y);
                        }
                        self.tmp.push(s);
                    }
                }
                self.regs[ro..ro + self.tmp.len()].copy_from_slice(&self.tmp);
            }
            TileDot { a, b, acc } => {
                let r = inst.results[0];
                let (at, bt, ct) = (self.ty(*a), self.ty(*b), self.ty(*acc));
                let ((m, kk), (_, bc), (_, n)) = (
                    at.tile_shape().unwrap_or((1, 1)),
                    bt.tile_shape().unwrap_or((1, 1)),
                    ct.tile_shape().unwrap_or((1, 1)),
                );
                let g = bc / n.max(1);
                let (ao, bo, co, ro) = (self.o(*a), self.o(*b), self.o(*acc), self.o(r));
                self.tmp.clear();
                for i in 0..m {
                    for j in 0..n {
                        let mut s = self.regs[co + (i * n + j) as usize];
                        for l in 0..kk {
                            let x = self.regs[ao + (i * kk + l) as usize];
                            let y = self.regs[bo + ((l / g) * bc + j * g + l % g) as usize];
                            s = mac(ct.elem, at.elem, bt.elem, s, x, y);
                        }
                        self.tmp.push(s);
                    }
                }
                self.regs[ro..ro + self.tmp.len()].copy_from_slice(&self.tmp);
            }
            TileReduce(op, axis, x) => {
                let t = self.ty(*x);
                let (rows, cols) = t.tile_shape().unwrap_or((1, 1));
                let bop = op.binop();
                let (xo, ro) = (self.o(*x), self.o(inst.results[0]));
                let at = |i: u32, j: u32| xo + (i * cols + j) as usize;
                self.tmp.clear();
                match axis {
                    Axis::Rows => {
                        for i in 0..rows {
                            let mut acc = self.regs[at(i, 0)];
                            for j in 1..cols {
                                acc = binop(bop, t.elem, acc, self.regs[at(i, j)]);
                            }
                            self.tmp.push(acc);
                        }
                    }
                    Axis::Cols => {
                        for j in 0..cols {
                            let mut acc = self.regs[at(0, j)];
                            for i in 1..rows {
                                acc = binop(bop, t.elem, acc, self.regs[at(i, j)]);
                            }
                            self.tmp.push(acc);
                        }
                    }
                }
                self.regs[ro..ro + self.tmp.len()].copy_from_slice(&self.tmp);
            }
            TileBroadcast(x) => {
                let r = inst.results[0];
                let (t, xt) = (self.ty(r), self.ty(*x));
                let ((rows, cols), (xr, xc)) = (
                    t.tile_shape().unwrap_or((1, 1)),
                    xt.tile_shape().unwrap_or((1, 1)),
                );
                let (xo, ro) = (self.o(*x), self.o(r));
                self.tmp.clear();
                for i in 0..rows {
                    for j in 0..cols {
                        let (si, sj) = (if xr == 1 { 0 } else { i }, if xc == 1 { 0 } else { j });
                        self.tmp.push(self.regs[xo + (si * xc + sj) as usize]);
                    }
                }
                self.regs[ro..ro + self.tmp.len()].copy_from_slice(&self.tmp);
            }
            TileTranspose(x) => {
                let xt = self.ty(*x);
                let (rows, cols) = xt.tile_shape().unwrap_or((1, 1));
                let (xo, ro) = (self.o(*x), self.o(inst.results[0]));
                self.tmp.clear();
                for j in 0..cols {
                    for i in 0..rows {
                        self.tmp.push(self.regs[xo + (i * cols + j) as usize]);
                    }
                }
                self.regs[ro..ro + self.tmp.len()].copy_from_slice(&self.tmp);
            }
            TileIndex(axis) => {
                let r = inst.results[0];
                let (rows, cols) = self.ty(r).tile_shape().unwrap_or((1, 1));
                let ro = self.o(r);
                for i in 0..rows {
                    for j in 0..cols {
                        self.regs[ro + (i * cols + j) as usize] = match axis {
                            Axis::Rows => i as u64,
                            Axis::Cols => j as u64,
                        };
                    }
                }
            }
            // Program instances run one at a time, so there is nothing to wait for.
            Barrier => {}
            Trap { cond, code, value } => {
                if self.scalar(*cond) != 0 {
                    return Err(self.trap(
                        inst,
                        TrapKind::Data {
                            code: *code,
                            value: self.scalar(*value) as i64,
                        },
                    ));
                }
            }
        }
        Ok(())
    }

    /// The buffer element behind element (r, c) of a tile at `t`: `None` when the view index is
    /// out of range (a masked lane), an error when an in-range index falls outside the buffer.
    fn tile_elem(
        &self,
        inst: &Inst,
        what: &'static str,
        t: &TileAt,
        elem: DType,
        r: u32,
        c: u32,
    ) -> Result<Option<usize>, Trap> {
        let v = &t.view;
        let rank = v.dims.len();
        let mut e = self.scalar(v.offset) as i64 as i128;
        for d in 0..rank {
            let mut i = self.scalar(t.origin[d]) as i64 as i128;
            if d + 1 == rank {
                i += c as i128;
            } else if d + 2 == rank {
                i += r as i128;
            }
            if i < 0 || i >= v.dims[d] as i128 {
                return Ok(None);
            }
            e += i * v.strides[d] as i128;
        }
        let len = self.k.bufs[v.buf.0 as usize].view_len(elem).unwrap_or(0) as i128;
        if e < 0 || e >= len {
            return Err(self.trap(
                inst,
                TrapKind::Bounds {
                    what,
                    buf: v.buf.0,
                    first: e,
                    end: e + 1,
                },
            ));
        }
        Ok(Some(e as usize))
    }

    /// The first element of a tile, after checking that all its corners lie in the buffer.
    fn tile(
        &self,
        inst: &Inst,
        what: &'static str,
        t: &TileRef,
        rows: u32,
        cols: u32,
    ) -> Result<i64, Trap> {
        let off = self.scalar(t.offset) as i64;
        let len = self.k.bufs[t.buf.0 as usize].len as i128;
        let (r, c) = ((rows as i128 - 1), (cols as i128 - 1));
        let corners = [
            off as i128,
            off as i128 + r * t.row_stride as i128,
            off as i128 + c * t.col_stride as i128,
            off as i128 + r * t.row_stride as i128 + c * t.col_stride as i128,
        ];
        let lo = corners.iter().copied().min().unwrap_or(0);
        let hi = corners.iter().copied().max().unwrap_or(0);
        if lo < 0 || hi >= len {
            return Err(self.trap(
                inst,
                TrapKind::Bounds {
                    what,
                    buf: t.buf.0,
                    first: lo,
                    end: hi + 1,
                },
            ));
        }
        Ok(off)
    }

    #[allow(clippy::too_many_arguments)]
    fn mma(
        &mut self,
        inst: &Inst,
        a: &TileRef,
        b: &TileRef,
        c: &TileRef,
        (m, n, k): (u32, u32, u32),
        (a_ty, b_ty, acc): (DType, DType, DType),
    ) -> Result<(), Trap> {
        let ao = self.tile(inst, "mma reads", a, m, k)?;
        let bo = self.tile(inst, "mma reads", b, k, n)?;
        let co = self.tile(inst, "mma accumulates into", c, m, n)?;
        // Corners are in bounds, so every index below is in 0..len (the tile is affine).
        let idx = |off: i64, t: &TileRef, r: u32, col: u32| {
            (off + r as i64 * t.row_stride + col as i64 * t.col_stride) as usize
        };
        for i in 0..m {
            for j in 0..n {
                let ci = idx(co, c, i, j);
                let mut s = read_elem(acc, self.bufs[c.buf.0 as usize], ci);
                for kk in 0..k {
                    let x = read_elem(a_ty, self.bufs[a.buf.0 as usize], idx(ao, a, i, kk));
                    let y = read_elem(b_ty, self.bufs[b.buf.0 as usize], idx(bo, b, kk, j));
                    s = mac(acc, a_ty, b_ty, s, x, y);
                }
                write_elem(acc, self.bufs[c.buf.0 as usize], ci, s);
            }
        }
        Ok(())
    }
}

// ================================================================================================
// Per-lane semantics. Every function takes and returns canonical lane bits (see the file doc).
// ================================================================================================

/// One multiply-accumulate step of `mma`: `acc + x*y` with the product exact and one rounding.
pub(crate) fn mac(acc: DType, a_ty: DType, b_ty: DType, s: u64, x: u64, y: u64) -> u64 {
    if acc.is_float() {
        let (x, y) = (num_to_f64(a_ty, x), num_to_f64(b_ty, y));
        let s = to_f64(acc, s);
        if acc == DType::F64 {
            x.mul_add(y, s).to_bits()
        } else {
            from_f64(acc, add_round_odd(s, x * y))
        }
    } else {
        let p = (x as i64).wrapping_mul(y as i64);
        norm_int(acc, (s as i64).wrapping_add(p) as u64)
    }
}

/// `a + b` rounded to odd: the f64 next to the exact sum whose last mantissa bit is 1 (or the
/// exact sum). Rounding that to a format with at most 51 mantissa bits is correctly rounded.
pub(crate) fn add_round_odd(a: f64, b: f64) -> f64 {
    let s = a + b;
    if !s.is_finite() {
        return s;
    }
    // TwoSum: s + err == a + b exactly.
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    let bits = s.to_bits();
    if err == 0.0 || bits & 1 == 1 {
        return s;
    }
    if (err > 0.0) == (s > 0.0) {
        f64::from_bits(bits + 1)
    } else {
        f64::from_bits(bits - 1)
    }
}

/// f64 → f32 rounded to odd (see [`add_round_odd`]); used so f64 → narrow float rounds once.
pub(crate) fn f64_to_f32_odd(x: f64) -> f32 {
    let f = x as f32;
    if x.is_nan() || f as f64 == x {
        return f;
    }
    let mut bits = f.to_bits();
    if (f as f64).abs() > x.abs() {
        bits -= 1; // RNE rounded away from zero (maybe to inf): step back toward zero.
    }
    f32::from_bits(bits | 1)
}

/// Decode tables for the float8/float4 formats, indexed by bit pattern.
fn mini_table(d: DType) -> &'static [f32] {
    static T: [OnceLock<Vec<f32>>; 5] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let i = match d {
        DType::F8E4M3FN => 0,
        DType::F8E4M3FNUZ => 1,
        DType::F8E5M2 => 2,
        DType::F8E5M2FNUZ => 3,
        _ => 4,
    };
    T[i].get_or_init(|| {
        let f = MiniFloat::of(d)
            .or(MiniFloat::of(DType::F4E2M1))
            .expect("f4e2m1 is a mini float");
        let n = 1u32 << (1 + f.exp_bits + f.man_bits);
        (0..n).map(|b| f.decode(b)).collect()
    })
}

/// A narrow or f32 float's value as f32 (exact).
#[inline]
pub(crate) fn to_f32(d: DType, bits: u64) -> f32 {
    match d {
        DType::F32 => f32::from_bits(bits as u32),
        DType::F16 => half::f16::from_bits(bits as u16).to_f32(),
        DType::BF16 => half::bf16::from_bits(bits as u16).to_f32(),
        DType::F64 => f64::from_bits(bits) as f32,
        _ => mini_table(d)
            .get(bits as usize)
            .copied()
            .unwrap_or(f32::NAN),
    }
}

/// Any float's value as f64 (exact).
#[inline]
pub(crate) fn to_f64(d: DType, bits: u64) -> f64 {
    if d == DType::F64 {
        f64::from_bits(bits)
    } else {
        to_f32(d, bits) as f64
    }
}

/// Any numeric lane's value as f64 (ints convert as Rust `as` does).
pub(crate) fn num_to_f64(d: DType, bits: u64) -> f64 {
    if d.is_float() {
        to_f64(d, bits)
    } else if d.is_signed_int() {
        bits as i64 as f64
    } else {
        bits as f64
    }
}

/// Rounds an f32 to float type `d` (RNE; f8/f4 overflow per `saturate`).
#[inline]
pub(crate) fn from_f32_sat(d: DType, x: f32, saturate: bool) -> u64 {
    match d {
        DType::F32 => x.to_bits() as u64,
        DType::F64 => (x as f64).to_bits(),
        DType::F16 => half::f16::from_f32(x).to_bits() as u64,
        DType::BF16 => half::bf16::from_f32(x).to_bits() as u64,
        _ => match MiniFloat::of(d) {
            Some(f) => f.encode(x, saturate) as u64,
            None => 0,
        },
    }
}

#[inline]
pub(crate) fn from_f32(d: DType, x: f32) -> u64 {
    from_f32_sat(d, x, false)
}

/// Rounds an f64 to float type `d`, once (RNE; f8/f4 overflow per `saturate`).
#[inline]
pub(crate) fn from_f64_sat(d: DType, x: f64, saturate: bool) -> u64 {
    match d {
        DType::F64 => x.to_bits(),
        DType::F32 => (x as f32).to_bits() as u64,
        _ => from_f32_sat(d, f64_to_f32_odd(x), saturate),
    }
}

#[inline]
pub(crate) fn from_f64(d: DType, x: f64) -> u64 {
    from_f64_sat(d, x, false)
}

/// Wraps an integer to the width of `d`: sign-extends signed types, masks unsigned ones.
#[inline]
pub(crate) fn norm_int(d: DType, v: u64) -> u64 {
    let bits = d.bits();
    if bits >= 64 {
        return v;
    }
    if d.is_signed_int() {
        let sh = 64 - bits;
        (((v << sh) as i64) >> sh) as u64
    } else if d == DType::Bool {
        (v != 0) as u64
    } else {
        v & ((1u64 << bits) - 1)
    }
}

/// The canonical bits of a literal of type `d`.
pub(crate) fn const_bits(d: DType, c: Scalar) -> u64 {
    match c {
        Scalar::Int(i) => {
            if d.is_float() {
                int_to_float(d, i as i128)
            } else {
                norm_int(d, i as u64)
            }
        }
        Scalar::Float(x) => {
            if d.is_float() {
                from_f64(d, x)
            } else {
                float_to_int(d, x)
            }
        }
    }
}

/// An integer converted to float type `d`, rounded once (RNE; overflow not saturating).
pub(crate) fn int_to_float(d: DType, v: i128) -> u64 {
    int_to_float_sat(d, v, false)
}

/// An integer converted to float type `d`, rounded once (RNE; f8/f4 overflow per `saturate`).
pub(crate) fn int_to_float_sat(d: DType, v: i128, saturate: bool) -> u64 {
    match d {
        DType::F64 => (v as f64).to_bits(),
        DType::F32 => (v as f32).to_bits() as u64,
        _ => {
            // Round to odd at 53 bits, then let from_f64 round once more (exactly).
            let neg = v < 0;
            let mag = v.unsigned_abs();
            let lz = mag.leading_zeros();
            let width = 128 - lz;
            let f = if width <= 53 {
                mag as f64
            } else {
                let shift = width - 53;
                let mut m = mag >> shift;
                if mag & ((1u128 << shift) - 1) != 0 {
                    m |= 1;
                }
                m as f64 * 2f64.powi(shift as i32)
            };
            from_f64_sat(d, if neg { -f } else { f }, saturate)
        }
    }
}

/// A float truncated toward zero and saturated into int type `d`; NaN gives 0.
pub(crate) fn float_to_int(d: DType, x: f64) -> u64 {
    if x.is_nan() {
        return 0;
    }
    let bits = d.bits();
    if d == DType::Bool {
        return (x != 0.0) as u64;
    }
    if d.is_signed_int() {
        let v = x as i64; // saturates at the i64 range
        let (lo, hi) = if bits >= 64 {
            (i64::MIN, i64::MAX)
        } else {
            (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
        };
        v.clamp(lo, hi) as u64
    } else {
        let v = x as u64; // saturates at 0 and u64::MAX
        let hi = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        v.min(hi)
    }
}

/// `cast` of one lane, per [`CastMode`].
pub(crate) fn cast(from: DType, to: DType, v: u64, saturate: bool) -> u64 {
    if from == to {
        return v;
    }
    if to == DType::Bool {
        return if from.is_float() {
            (to_f64(from, v) != 0.0) as u64
        } else {
            (v != 0) as u64
        };
    }
    if from == DType::Bool {
        return if to.is_float() {
            int_to_float_sat(to, v as i128, saturate)
        } else {
            v
        };
    }
    match (from.is_float(), to.is_float()) {
        (true, true) => {
            if from == DType::F64 {
                from_f64_sat(to, f64::from_bits(v), saturate)
            } else {
                from_f32_sat(to, to_f32(from, v), saturate)
            }
        }
        (true, false) => float_to_int(to, to_f64(from, v)),
        (false, true) => {
            let i = if from.is_signed_int() {
                v as i64 as i128
            } else {
                v as i128
            };
            int_to_float_sat(to, i, saturate)
        }
        (false, false) => norm_int(to, v),
    }
}

/// IEEE 754-2019 minimum: NaN-propagating, -0 below +0.
#[inline]
fn fmin64(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else if a < b {
        a
    } else {
        b
    }
}

#[inline]
fn fmax64(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        if a.is_sign_positive() {
            a
        } else {
            b
        }
    } else if a > b {
        a
    } else {
        b
    }
}

#[inline]
fn fmin32(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a == b {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else if a < b {
        a
    } else {
        b
    }
}

#[inline]
fn fmax32(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a == b {
        if a.is_sign_positive() {
            a
        } else {
            b
        }
    } else if a > b {
        a
    } else {
        b
    }
}

macro_rules! float_bin {
    ($op:expr, $a:expr, $b:expr, $min:ident, $max:ident) => {
        match $op {
            BinOp::Add => $a + $b,
            BinOp::Sub => $a - $b,
            BinOp::Mul => $a * $b,
            BinOp::Div => $a / $b,
            BinOp::Rem => $a % $b,
            BinOp::Min => $min($a, $b),
            BinOp::Max => $max($a, $b),
            // The verifier allows no bitwise ops or shifts on floats.
            _ => f64::NAN as _,
        }
    };
}

/// A binary op on one lane of type `d`.
#[inline]
pub(crate) fn binop(op: BinOp, d: DType, a: u64, b: u64) -> u64 {
    match d {
        DType::F32 => {
            let (x, y) = (f32::from_bits(a as u32), f32::from_bits(b as u32));
            let r: f32 = float_bin!(op, x, y, fmin32, fmax32);
            r.to_bits() as u64
        }
        DType::F64 => {
            let (x, y) = (f64::from_bits(a), f64::from_bits(b));
            let r: f64 = float_bin!(op, x, y, fmin64, fmax64);
            r.to_bits()
        }
        DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::I4 | DType::I2 => {
            let (x, y) = (a as i64, b as i64);
            let w = d.bits() as u64;
            let r = match op {
                BinOp::Add => x.wrapping_add(y),
                BinOp::Sub => x.wrapping_sub(y),
                BinOp::Mul => x.wrapping_mul(y),
                BinOp::Div => {
                    if y == 0 {
                        0
                    } else {
                        x.wrapping_div(y)
                    }
                }
                BinOp::Rem => {
                    if y == 0 {
                        0
                    } else {
                        x.wrapping_rem(y)
                    }
                }
                BinOp::Min => x.min(y),
                BinOp::Max => x.max(y),
                BinOp::And => x & y,
                BinOp::Or => x | y,
                BinOp::Xor => x ^ y,
                BinOp::Shl => x.wrapping_shl((y as u64 & (w - 1)) as u32),
                BinOp::Shr => x >> (y as u64 & (w - 1)),
            };
            norm_int(d, r as u64)
        }
        DType::U64 | DType::U32 | DType::U16 | DType::U8 | DType::U4 | DType::U2 => {
            let (x, y) = (a, b);
            let w = d.bits() as u64;
            let r = match op {
                BinOp::Add => x.wrapping_add(y),
                BinOp::Sub => x.wrapping_sub(y),
                BinOp::Mul => x.wrapping_mul(y),
                BinOp::Div => x.checked_div(y).unwrap_or(0),
                BinOp::Rem => x.checked_rem(y).unwrap_or(0),
                BinOp::Min => x.min(y),
                BinOp::Max => x.max(y),
                BinOp::And => x & y,
                BinOp::Or => x | y,
                BinOp::Xor => x ^ y,
                BinOp::Shl => x.wrapping_shl((y & (w - 1)) as u32),
                BinOp::Shr => x >> (y & (w - 1)),
            };
            norm_int(d, r)
        }
        DType::Bool => match op {
            BinOp::And | BinOp::Min => a & b,
            BinOp::Or | BinOp::Max => a | b,
            BinOp::Xor => a ^ b,
            // The verifier allows only logic and min/max on bool; others act as on u1.
            BinOp::Add | BinOp::Sub => a ^ b,
            BinOp::Mul => a & b,
            _ => 0,
        },
        DType::String => 0,
        _ => {
            // The narrow floats: compute in f32, round back after the op.
            let (x, y) = (to_f32(d, a), to_f32(d, b));
            let r: f32 = float_bin!(op, x, y, fmin32, fmax32);
            from_f32(d, r)
        }
    }
}

/// A unary op on one lane of type `d`.
pub(crate) fn unop(op: UnOp, d: DType, a: u64) -> u64 {
    if d.is_float() {
        macro_rules! f {
            ($x:expr) => {
                match op {
                    UnOp::Neg => -$x,
                    UnOp::Abs => $x.abs(),
                    UnOp::Sqrt => $x.sqrt(),
                    UnOp::Floor => $x.floor(),
                    UnOp::Ceil => $x.ceil(),
                    UnOp::Round => $x.round_ties_even(),
                    UnOp::Trunc => $x.trunc(),
                    // The verifier allows no `not` on floats.
                    UnOp::Not => $x,
                }
            };
        }
        return match d {
            DType::F64 => f!(f64::from_bits(a)).to_bits(),
            DType::F32 => f!(f32::from_bits(a as u32)).to_bits() as u64,
            _ => from_f32(d, f!(to_f32(d, a))),
        };
    }
    if d == DType::Bool {
        return match op {
            UnOp::Not => a ^ 1,
            _ => a,
        };
    }
    let signed = d.is_signed_int();
    let r = match op {
        UnOp::Neg => (a as i64).wrapping_neg() as u64,
        UnOp::Abs => {
            if signed {
                (a as i64).wrapping_abs() as u64
            } else {
                a
            }
        }
        UnOp::Not => !a,
        _ => a,
    };
    norm_int(d, r)
}

/// A comparison of one lane of type `d`.
#[inline]
pub(crate) fn cmp(op: CmpOp, d: DType, a: u64, b: u64) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = if d.is_float() {
        to_f64(d, a).partial_cmp(&to_f64(d, b))
    } else if d.is_signed_int() {
        Some((a as i64).cmp(&(b as i64)))
    } else {
        Some(a.cmp(&b))
    };
    match (op, ord) {
        (CmpOp::Ne, None) => true,
        (_, None) => false,
        (CmpOp::Eq, Some(o)) => o == Ordering::Equal,
        (CmpOp::Ne, Some(o)) => o != Ordering::Equal,
        (CmpOp::Lt, Some(o)) => o == Ordering::Less,
        (CmpOp::Le, Some(o)) => o != Ordering::Greater,
        (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
        (CmpOp::Ge, Some(o)) => o != Ordering::Less,
    }
}

/// A math routine in f64, evaluated with the `libm` crate (a port of musl's libm: accurate to
/// within an ulp, and the same on every platform, unlike the system libm).
pub fn math(f: MathFn, x: f64, y: f64) -> f64 {
    match f {
        MathFn::Exp => libm::exp(x),
        MathFn::Log => libm::log(x),
        MathFn::Pow => libm::pow(x, y),
        MathFn::Tanh => libm::tanh(x),
        MathFn::Erf => libm::erf(x),
        // 1/(1 + e^-x), evaluated as e^x/(1 + e^x) for negative x so that it does not
        // underflow to 0 early.
        MathFn::Sigmoid => {
            if x < 0.0 {
                let e = libm::exp(x);
                e / (1.0 + e)
            } else {
                1.0 / (1.0 + libm::exp(-x))
            }
        }
        MathFn::Sin => libm::sin(x),
        MathFn::Cos => libm::cos(x),
        MathFn::Tan => libm::tan(x),
        MathFn::Asin => libm::asin(x),
        MathFn::Acos => libm::acos(x),
        MathFn::Atan => libm::atan(x),
        MathFn::Sinh => libm::sinh(x),
        MathFn::Cosh => libm::cosh(x),
        MathFn::Asinh => libm::asinh(x),
        // musl's acosh ignores the sign for x <= -2 and returns garbage; C says NaN below 1.
        MathFn::Acosh => {
            if x < 1.0 {
                f64::NAN
            } else {
                libm::acosh(x)
            }
        }
        MathFn::Atanh => libm::atanh(x),
    }
}

/// Element `i` of packed storage, in canonical lane form. The caller has bounds-checked `i`.
#[inline]
pub(crate) fn read_elem(d: DType, bytes: &[u8], i: usize) -> u64 {
    let raw = match d.bits() {
        64 => u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8])),
        32 => u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4])) as u64,
        16 => u16::from_le_bytes(bytes[i * 2..i * 2 + 2].try_into().unwrap_or([0; 2])) as u64,
        8 => bytes[i] as u64,
        b @ (4 | 2) => {
            let bit = i * b as usize;
            ((bytes[bit / 8] >> (bit % 8)) & ((1u8 << b) - 1)) as u64
        }
        _ => 0,
    };
    if d.is_int() || d == DType::Bool {
        norm_int(d, raw)
    } else {
        raw
    }
}

/// Writes element `i` of packed storage from canonical lane form. The caller has
/// bounds-checked `i`.
#[inline]
pub(crate) fn write_elem(d: DType, bytes: &mut [u8], i: usize, v: u64) {
    match d.bits() {
        64 => bytes[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes()),
        32 => bytes[i * 4..i * 4 + 4].copy_from_slice(&(v as u32).to_le_bytes()),
        16 => bytes[i * 2..i * 2 + 2].copy_from_slice(&(v as u16).to_le_bytes()),
        8 => bytes[i] = v as u8,
        b @ (4 | 2) => {
            let bit = i * b as usize;
            let mask = ((1u8 << b) - 1) << (bit % 8);
            let byte = &mut bytes[bit / 8];
            *byte = (*byte & !mask) | (((v as u8) << (bit % 8)) & mask);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
