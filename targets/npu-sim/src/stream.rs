//! The streaming path of the npu-sim code generator: an elementwise kernel (the shape
//! `tessera-lower`'s `emit_elementwise` writes for Add, Mul, Div, Erf, Relu, Cast, Where, …)
//! compiled to chunks that stream through the Unified Buffer, instead of lane by lane on the
//! scalar unit. Start at [`recognise`], which reads the kernel and says whether this path can
//! take it; then [`compile`], which writes the double-buffered program.
//!
//! **What is recognised.** A kernel of parameters only, whose body is index arithmetic and
//! `for` loops without carried values, the last of them with step 1, all with the same
//! instruction sequence (the vector loop and the scalar tail of one elementwise body). The
//! last loop defines the kernel: `out[i] = f(…)` for every `i` in `0..len(out)`, where each
//! operand is a `load` of a parameter at an index that is exactly `i mod P` for every `i`
//! (checked by evaluating the index arithmetic at every `i`): `P = 1` is a scalar, `P = len`
//! a stream, anything between a broadcast row (a bias) whose bytes are a multiple of 32. `f`
//! is a dataflow graph of f32 arithmetic (`add sub mul div rem min max`, `neg abs sqrt floor
//! ceil round trunc`), f32 comparisons, selects, float casts (saturating or not: `saturate`
//! changes only casts into float8/float4) and the math routines `exp`,
//! `log`, `erf` and `sigmoid`; loads and the store are f32, f16, bf16 or bool. Anything else
//! returns `None`, and the kernel takes the scalarised path ([`crate::codegen`]).
//!
//! **What is generated.** Values are classified: *uniform* (constants, scalar loads and what
//! is computed from them only, one element each), *invariant* (broadcast rows, replicated
//! to a whole chunk once), and *varying* (everything that depends on a stream). Uniform and
//! invariant values are computed once in a prologue. Then the output is cut into chunks of
//! `C` elements (`C` a multiple of every row period, as large as the UB allows), each:
//! MTE2 copies the streamed inputs GM → UB in one contiguous DMA each, the Vector unit runs
//! one `VEC` per operation over the chunk (uniform operands as the `VS` scalar form), and
//! MTE3 copies the result UB → GM. Streamed inputs and the output have two UB slots each,
//! with "full" and "free" flags between the pipes, so loads, arithmetic and stores of
//! neighbouring chunks overlap; intermediates share single-buffered slots by liveness.
//!
//! A stored `cast(widen(a) op widen(b))` on f16 or bf16 operands becomes one `VEC` on the narrow
//! dtype (the Vector unit computes it in f32 and rounds once to the narrow dtype: the same two
//! roundings), and nodes the output does not depend on are dropped.
//!
//! Exactness: every f32 operation is the IEEE operation of the Vector unit, as on the
//! scalarised path; casts are `VCAST` (round to nearest even); `exp`, `log` are `VEXP`/`VLN`,
//! `erf` is a fitted polynomial `x · S(x²)` below 0.84375 and Abramowitz & Stegun 7.1.26 (a
//! polynomial in `1/(1 + p·|x|)` times `exp(−x²)`) above, evaluated with `VEC` operations
//! (Horner's rule as `VMADD`s, ISA 0.5), `sigmoid` is `1 / (1 + exp(−x))`: within a few f32 ulp
//! (erf within 4), inside npu-sim's f32 tolerance. An `erf` whose every use is a cast to f16 or
//! bf16 needs only that precision: it is one clamped polynomial (`Builder::erf_narrow`), within
//! one ulp of the narrow dtype's correctly rounded erf.

use std::collections::{HashMap, HashSet};

use tessera_ir::DType as KDType;
use tessera_kir::{BinOp, CmpOp, Inst, InstKind, Kernel, MathFn, Scalar, Val};

use crate::blob::Blob;
use crate::codegen::{param_slots, CgError};
use crate::config::TargetConfig;
use crate::cube::Asm;
use crate::isa::{AluOp, Cond, DType, Instr, Mem, Pipe, VecForm, VecOp};

type R<T> = Result<T, CgError>;

/// The largest output this path evaluates index arithmetic for, element by element.
const MAX_ELEMS: u64 = 1 << 22;
/// The largest chunk, in elements.
const MAX_CHUNK: u64 = 16384;
/// Chunks are not made smaller than this to get more of them.
const MIN_SPLIT: u64 = 4096;

/// How often a node's value changes along the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Uniform,
    Invariant,
    Varying,
}

#[derive(Clone, Debug)]
enum Op {
    /// A load of parameter `param` at `i mod period`.
    Load {
        param: usize,
        period: u64,
    },
    Const(f32),
    Bin(VecOp, usize, usize),
    Un(VecOp, usize),
    Sel(usize, usize, usize),
    /// `x · m + y`, rounded once (*0.5* `VMADD`; `y` uniform is its `VS` form's scalar).
    Madd(usize, usize, usize),
}

#[derive(Clone, Debug)]
struct Node {
    op: Op,
    dt: DType,
    kind: Kind,
}

/// A recognised elementwise kernel: its dataflow graph and the node stored to `out`.
#[derive(Clone, Debug)]
pub struct Stream {
    nodes: Vec<Node>,
    out: usize,
    out_param: usize,
    n: u64,
}

fn isa(d: KDType) -> Option<DType> {
    match d {
        KDType::F32 => Some(DType::F32),
        KDType::F16 => Some(DType::F16),
        KDType::BF16 => Some(DType::Bf16),
        KDType::Bool => Some(DType::U8),
        _ => None,
    }
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::Bf16)
}

/// Builds the graph from the kernel's defining loop.
struct Builder<'k> {
    k: &'k Kernel,
    defs: HashMap<Val, &'k Inst>,
    iv: Val,
    nodes: Vec<Node>,
    map: HashMap<Val, usize>,
    consts: HashMap<u32, usize>,
    n: u64,
    /// f32 values whose every use is a cast to f16 or bf16 (they need only that precision).
    narrowed: HashSet<Val>,
}

impl<'k> Builder<'k> {
    fn push(&mut self, op: Op, dt: DType) -> usize {
        let kind = match &op {
            Op::Const(_) => Kind::Uniform,
            Op::Load { period, .. } => {
                if *period == 1 {
                    Kind::Uniform
                } else if *period >= self.n {
                    Kind::Varying
                } else {
                    Kind::Invariant
                }
            }
            Op::Bin(_, a, b) => self.nodes[*a].kind.max(self.nodes[*b].kind),
            Op::Un(_, a) => self.nodes[*a].kind,
            Op::Sel(c, a, b) | Op::Madd(c, a, b) => self.nodes[*c]
                .kind
                .max(self.nodes[*a].kind)
                .max(self.nodes[*b].kind),
        };
        self.nodes.push(Node { op, dt, kind });
        self.nodes.len() - 1
    }

    fn c(&mut self, v: f64) -> usize {
        let f = v as f32;
        if let Some(&n) = self.consts.get(&f.to_bits()) {
            return n;
        }
        let n = self.push(Op::Const(f), DType::F32);
        self.consts.insert(f.to_bits(), n);
        n
    }
    fn bin(&mut self, op: VecOp, a: usize, b: usize) -> usize {
        // A uniform first operand goes second where that is the same operation, so that it
        // can be the `VS` form's scalar.
        let (op, a, b) = if self.nodes[a].kind == Kind::Uniform
            && self.nodes[b].kind != Kind::Uniform
        {
            match op {
                VecOp::Add | VecOp::Mul | VecOp::Max | VecOp::Min | VecOp::CmpEq | VecOp::CmpNe => {
                    (op, b, a)
                }
                VecOp::CmpLt => (VecOp::CmpGt, b, a),
                VecOp::CmpGt => (VecOp::CmpLt, b, a),
                VecOp::CmpLe => (VecOp::CmpGe, b, a),
                VecOp::CmpGe => (VecOp::CmpLe, b, a),
                _ => (op, a, b),
            }
        } else {
            (op, a, b)
        };
        let dt = if op.is_compare() {
            DType::U8
        } else {
            DType::F32
        };
        self.push(Op::Bin(op, a, b), dt)
    }
    fn binc(&mut self, op: VecOp, a: usize, c: f64) -> usize {
        let c = self.c(c);
        self.bin(op, a, c)
    }
    fn un(&mut self, op: VecOp, a: usize) -> usize {
        self.push(Op::Un(op, a), DType::F32)
    }
    /// `c[0] + x·(c[1] + x·(…))` by Horner's rule, one `VMADD` (`acc · x + cᵢ`, rounded once)
    /// per coefficient after the last.
    fn poly(&mut self, x: usize, c: &[f64]) -> usize {
        let mut acc = self.c(c[c.len() - 1]);
        for &ci in c[..c.len() - 1].iter().rev() {
            let ci = self.c(ci);
            // The varying operand first: it is `VMADD`'s `src1`, the constant its multiplier.
            acc = if self.nodes[acc].kind == Kind::Uniform {
                self.push(Op::Madd(x, acc, ci), DType::F32)
            } else {
                self.push(Op::Madd(acc, x, ci), DType::F32)
            };
        }
        acc
    }
    fn exp(&mut self, x: usize) -> usize {
        self.un(VecOp::Exp, x)
    }

    /// `erf` on the Vector unit: below 0.84375, `a · S(a²)` with `S` a degree-6 polynomial fitted
    /// to `erf(a)/a` (Lawson-weighted least squares for relative error on Chebyshev nodes of
    /// `[0, 0.84375²]`: within 2.5 f32 ulp of erf as evaluated here); above it Abramowitz &
    /// Stegun 7.1.26, `1 − t·A(t)·exp(−a²)` with `t = 1/(1 + p·a)` (absolute error at most 1.5e-7:
    /// within 4 f32 ulp as evaluated here, where erf is at least 0.77). Two polynomials and one
    /// `exp`: 26 Vector operations with the polynomials as `VMADD`s (36 without; fdlibm's four
    /// rational branches take 130), at most 3.5 f32 ulp from the interpreter on a dense grid of
    /// `[−5, 5]` (`tests/stream.rs`).
    fn erf(&mut self, x: usize) -> usize {
        const S: [f64; 7] = [
            1.128_379_166_957_455_4,
            -0.376_126_370_378_534_6,
            0.112_837_501_668_892_31,
            -0.026_862_681_420_020_6,
            0.005_209_887_341_841_093_5,
            -0.000_825_223_660_901_722_2,
            8.876_218_304_789_546e-5,
        ];
        const P: f64 = 0.327_591_1;
        const A: [f64; 5] = [
            0.254_829_592,
            -0.284_496_736,
            1.421_413_741,
            -1.453_152_027,
            1.061_405_429,
        ];
        let a = self.un(VecOp::Abs, x);
        // [0, 0.84375): a · S(a²).
        let z = self.bin(VecOp::Mul, a, a);
        let p = self.poly(z, &S);
        let y_a = self.bin(VecOp::Mul, a, p);
        // [0.84375, ∞): 1 − t·A(t)·exp(−a²); 1 exactly from about 4 on, and for a = ∞.
        let pa = self.binc(VecOp::Mul, a, P);
        let d = self.binc(VecOp::Add, pa, 1.0);
        let one = self.c(1.0);
        let t = self.bin(VecOp::Div, one, d);
        let q = self.poly(t, &A);
        let tq = self.bin(VecOp::Mul, t, q);
        let nz = self.un(VecOp::Neg, z);
        let e = self.exp(nz);
        let te = self.bin(VecOp::Mul, tq, e);
        let y_c = self.bin(VecOp::Sub, one, te);
        // A NaN fails the compare and comes through the second branch as NaN.
        let lt_a = self.binc(VecOp::CmpLt, a, 0.84375);
        let y = self.push(Op::Sel(lt_a, y_a, y_c), DType::F32);
        // The sign of x (erf is odd).
        let neg = self.binc(VecOp::CmpLt, x, 0.0);
        let ny = self.un(VecOp::Neg, y);
        self.push(Op::Sel(neg, ny, y), DType::F32)
    }

    /// `erf` whose result is only ever rounded to f16 or bf16: one odd polynomial on the clamped
    /// argument, `x · P(x²)` for `x` in `[−2.7, 2.7]`, `P` of degree 8 fitted to `erf(x)/x`
    /// (Lawson-weighted least squares for relative error on Chebyshev nodes of `[0, 2.7]`;
    /// outside the clamp erf is within 1.4e-4 of ±1, which rounds to ±1 in f16 and bf16).
    /// Evaluated in f32 with `VMADD`, it is within 1 f16 ulp of the correctly rounded erf for
    /// every f16 input (off by that ulp for 284 of the 63,488 finite ones, where erf lies within
    /// about 1e-5 of a rounding boundary) and within 1 bf16 ulp for every bf16 input. 12 Vector
    /// operations (two clamps, `x²`, eight `VMADD`s, the product), where the f32 form takes 26.
    /// NaN passes the clamps (`VMAX`/`VMIN` propagate it) and comes out NaN.
    fn erf_narrow(&mut self, x: usize) -> usize {
        const C: f64 = 2.7;
        const P: [f64; 9] = [
            1.128_372_430_801_391_6,
            -0.375_989_854_335_784_9,
            0.112_356_364_727_020_26,
            -0.026_184_668_764_472_008,
            0.004_719_991_702_586_412,
            -0.000_633_855_699_561_536_3,
            5.875_629_722_140_729_4e-5,
            -3.295_898_295_618_826_5e-6,
            8.318_351_518_710_188e-8,
        ];
        let lo = self.binc(VecOp::Max, x, -C);
        let a = self.binc(VecOp::Min, lo, C);
        let z = self.bin(VecOp::Mul, a, a);
        let p = self.poly(z, &P);
        self.bin(VecOp::Mul, a, p)
    }

    /// The node of `v`, translating constants defined outside the loop.
    fn get(&mut self, v: Val) -> Option<usize> {
        if let Some(&n) = self.map.get(&v) {
            return Some(n);
        }
        let inst = *self.defs.get(&v)?;
        match &inst.kind {
            InstKind::Const(s) if self.k.ty(v) == tessera_kir::Ty::F32 => {
                let f = match s {
                    Scalar::Float(f) => *f,
                    Scalar::Int(i) => *i as f64,
                };
                let n = self.c(f);
                self.map.insert(v, n);
                Some(n)
            }
            _ => None,
        }
    }

    /// The index arithmetic of `v` at `iv = i`.
    fn eval(&self, v: Val, i: i64, depth: u32) -> Option<i64> {
        self.eval_at(v, i, None, depth)
    }

    /// The index arithmetic of `v` at `iv = i` and, when `pid` is given, `program_id 0 = pid`.
    fn eval_at(&self, v: Val, i: i64, pid: Option<i64>, depth: u32) -> Option<i64> {
        if v == self.iv {
            return Some(i);
        }
        if depth > 64 {
            return None;
        }
        let inst = self.defs.get(&v)?;
        if !self.k.ty(v).elem.is_int() || self.k.ty(v).lanes != 1 {
            return None;
        }
        match &inst.kind {
            InstKind::Const(Scalar::Int(c)) => Some(*c),
            InstKind::ProgramId(0) => pid,
            InstKind::Binary(op, a, b) => {
                let (a, b) = (
                    self.eval_at(*a, i, pid, depth + 1)?,
                    self.eval_at(*b, i, pid, depth + 1)?,
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

    /// `P` such that the index `v` is `i mod P` for every `i < n`, if there is one.
    fn period(&self, v: Val, n: u64) -> Option<u64> {
        let mut p = n;
        for i in 1..n {
            if self.eval(v, i as i64, 0)? == 0 {
                p = i;
                break;
            }
        }
        (0..n)
            .all(|i| self.eval(v, i as i64, 0) == Some((i % p) as i64))
            .then_some(p)
    }

    fn inst(&mut self, inst: &Inst) -> Option<()> {
        let r = inst.results.first().copied();
        let f32_result = r.map(|r| self.k.ty(r) == tessera_kir::Ty::F32);
        let node = match &inst.kind {
            InstKind::Const(_) => {
                // Index constants are read by `eval`; float ones become nodes when used.
                return Some(());
            }
            InstKind::Binary(_, _, _)
                if r.map(|r| self.k.ty(r)) == Some(tessera_kir::Ty::INDEX) =>
            {
                return Some(());
            }
            InstKind::Load { buf, index } => {
                let param = buf.0 as usize;
                let d = self.k.bufs.get(param)?;
                if param >= self.k.num_params || d.access != tessera_kir::Access::Read {
                    return None;
                }
                let dt = isa(d.dtype)?;
                if self.k.ty(r?).lanes != 1 || self.k.ty(r?).elem != d.dtype {
                    return None;
                }
                let n = self.k.params().last()?.len;
                let period = self.period(*index, n)?;
                if period > d.len || (period > 1 && period < n && (period * dt.size()) % 32 != 0) {
                    return None;
                }
                self.push(Op::Load { param, period }, dt)
            }
            InstKind::Binary(op, a, b) if f32_result == Some(true) => {
                let vop = crate::codegen::f32_binary_vec_op(*op)?;
                let (a, b) = (self.get(*a)?, self.get(*b)?);
                self.bin(vop, a, b)
            }
            InstKind::Unary(op, a) if f32_result == Some(true) => {
                let vop = crate::codegen::f32_unary_vec_op(*op)?;
                let a = self.get(*a)?;
                self.un(vop, a)
            }
            InstKind::Cmp(op, a, b) if self.k.ty(*a) == tessera_kir::Ty::F32 => {
                let vop = match op {
                    CmpOp::Eq => VecOp::CmpEq,
                    CmpOp::Ne => VecOp::CmpNe,
                    CmpOp::Lt => VecOp::CmpLt,
                    CmpOp::Le => VecOp::CmpLe,
                    CmpOp::Gt => VecOp::CmpGt,
                    CmpOp::Ge => VecOp::CmpGe,
                };
                let (a, b) = (self.get(*a)?, self.get(*b)?);
                self.bin(vop, a, b)
            }
            InstKind::Select(c, a, b) if self.k.ty(*c) == tessera_kir::Ty::BOOL => {
                let dt = isa(self.k.ty(r?).elem)?;
                if self.k.ty(r?).lanes != 1 {
                    return None;
                }
                let (c, a, b) = (self.get(*c)?, self.get(*a)?, self.get(*b)?);
                if self.nodes[c].dt != DType::U8 || self.nodes[a].dt != dt || self.nodes[b].dt != dt
                {
                    return None;
                }
                self.push(Op::Sel(c, a, b), dt)
            }
            // `saturate` changes only casts into float8/float4 (kernel IR's `CastMode`), dtypes
            // this path never takes: to f16 and bf16 it is `VCAST`'s rounding either way.
            InstKind::Cast(x, _) => {
                let (from, to) = (self.k.ty(*x), self.k.ty(r?));
                if from.lanes != 1 || to.lanes != 1 {
                    return None;
                }
                let (fd, td) = (isa(from.elem)?, isa(to.elem)?);
                let x = self.get(*x)?;
                if fd == td {
                    x
                } else if !is_float(td) {
                    return None;
                } else {
                    self.push(Op::Un(VecOp::Cast, x), td)
                }
            }
            InstKind::Math(f, args) if f32_result == Some(true) && args.len() == 1 => {
                let x = self.get(args[0])?;
                match f {
                    MathFn::Exp => self.exp(x),
                    MathFn::Log => self.un(VecOp::Ln, x),
                    MathFn::Erf if self.narrowed.contains(&r?) => self.erf_narrow(x),
                    MathFn::Erf => self.erf(x),
                    MathFn::Sigmoid => {
                        let nx = self.un(VecOp::Neg, x);
                        let e = self.exp(nx);
                        let d = self.binc(VecOp::Add, e, 1.0);
                        let one = self.c(1.0);
                        self.bin(VecOp::Div, one, d)
                    }
                    _ => return None,
                }
            }
            _ => return None,
        };
        // Every value the graph holds is a scalar of a dtype it has.
        self.map.insert(r?, node);
        Some(())
    }
}

/// A structural signature of a loop body: instruction kinds and ops, without values or
/// lanes (`splat`s dropped), to check that every loop computes the same thing.
fn signature(b: &tessera_kir::Block) -> Vec<String> {
    b.insts
        .iter()
        .filter(|i| !matches!(i.kind, InstKind::Splat(_) | InstKind::Yield(_)))
        .map(|i| {
            let s = format!("{:?}", i.kind);
            s.split(['(', ' ', '{']).next().unwrap_or("").to_string()
                + &match &i.kind {
                    InstKind::Binary(op, ..) => format!("{op:?}"),
                    InstKind::Unary(op, ..) => format!("{op:?}"),
                    InstKind::Cmp(op, ..) => format!("{op:?}"),
                    InstKind::Math(f, ..) => format!("{f:?}"),
                    InstKind::Load { buf, .. } | InstKind::Store { buf, .. } => {
                        format!("{}", buf.0)
                    }
                    _ => String::new(),
                }
        })
        .collect()
}

/// The f32 values of loop body `body` whose every use is a cast to f16 or bf16: a value the
/// kernel only ever rounds to a narrow dtype needs no more than that dtype's precision.
fn narrowed(k: &Kernel, body: &tessera_kir::Block) -> HashSet<Val> {
    let mut narrow = HashSet::new();
    let mut wide = HashSet::new();
    for inst in &body.insts {
        let to_narrow = match &inst.kind {
            InstKind::Cast(_, _) => inst.results.first().is_some_and(|r| {
                let t = k.ty(*r);
                t.lanes == 1 && matches!(t.elem, KDType::F16 | KDType::BF16)
            }),
            _ => false,
        };
        for v in inst_operands(&inst.kind) {
            if to_narrow {
                narrow.insert(v);
            } else {
                wide.insert(v);
            }
        }
    }
    narrow
        .into_iter()
        .filter(|v| !wide.contains(v) && k.ty(*v) == tessera_kir::Ty::F32)
        .collect()
}

/// The values an instruction of a streamed loop body reads (the kinds [`Builder::inst`] takes,
/// stores and yields; any other kind makes the kernel leave this path anyway).
fn inst_operands(kind: &InstKind) -> Vec<Val> {
    match kind {
        InstKind::Binary(_, a, b) | InstKind::Cmp(_, a, b) => vec![*a, *b],
        InstKind::Unary(_, a) | InstKind::Cast(a, _) => vec![*a],
        InstKind::Select(c, a, b) => vec![*c, *a, *b],
        InstKind::Math(_, args) => args.clone(),
        InstKind::Load { index, .. } => vec![*index],
        InstKind::Store { index, value, .. } => vec![*index, *value],
        InstKind::Yield(vs) => vs.clone(),
        _ => Vec::new(),
    }
}

/// Whether the streaming path takes `kernel` (see the module doc), and its graph.
pub fn recognise(kernel: &Kernel) -> Option<Stream> {
    if kernel.bufs.len() != kernel.num_params || kernel.grid.len() > 1 {
        return None;
    }
    let out_param = kernel.num_params.checked_sub(1)?;
    let out = &kernel.bufs[out_param];
    let n = out.len;
    if n == 0 || n > MAX_ELEMS || out.access == tessera_kir::Access::Read {
        return None;
    }
    let out_dt = isa(out.dtype)?;
    let mut defs = HashMap::new();
    let mut loops = Vec::new();
    for inst in &kernel.body.insts {
        match &inst.kind {
            InstKind::For {
                iter, init, body, ..
            } if iter.is_empty() && init.is_empty() => loops.push((inst, body)),
            InstKind::Const(_) | InstKind::ProgramId(_) | InstKind::Binary(..) => {
                for &r in &inst.results {
                    defs.insert(r, inst);
                }
            }
            _ => return None,
        }
    }
    let (last, body) = *loops.last()?;
    let InstKind::For { step, iv, .. } = &last.kind else {
        return None;
    };
    let sig = signature(body);
    if loops.iter().any(|(_, b)| signature(b) != sig) {
        return None;
    }
    match defs.get(step).map(|i| &i.kind) {
        Some(InstKind::Const(Scalar::Int(1))) => {}
        _ => return None,
    }
    for inst in &body.insts {
        if matches!(inst.kind, InstKind::For { .. } | InstKind::If { .. }) {
            return None;
        }
        for &r in &inst.results {
            defs.insert(r, inst);
        }
    }
    let mut b = Builder {
        k: kernel,
        defs,
        iv: *iv,
        nodes: Vec::new(),
        map: HashMap::new(),
        consts: HashMap::new(),
        n,
        narrowed: narrowed(kernel, body),
    };
    // The loops must cover `0..n` exactly, in order: each instance's first loop starts where
    // the previous instance's last loop ended, and each loop where the one before it ended.
    let grid = kernel.grid.first().copied().unwrap_or(1).max(1);
    let mut at = 0i64;
    for pid in 0..grid as i64 {
        for (l, _) in &loops {
            let InstKind::For { lo, hi, .. } = &l.kind else {
                return None;
            };
            let (lo, hi) = (
                b.eval_at(*lo, 0, Some(pid), 0)?,
                b.eval_at(*hi, 0, Some(pid), 0)?,
            );
            if lo != at || hi < lo {
                return None;
            }
            at = hi;
        }
    }
    if at != n as i64 {
        return None;
    }
    let mut stored = None;
    for inst in &body.insts {
        match &inst.kind {
            InstKind::Store { buf, index, value } => {
                if stored.is_some() || buf.0 as usize != out_param || index != iv {
                    return None;
                }
                let v = b.get(*value)?;
                if b.nodes[v].dt != out_dt {
                    return None;
                }
                stored = Some(v);
            }
            InstKind::Yield(v) if v.is_empty() => {}
            _ => b.inst(inst)?,
        }
    }
    let (nodes, out) = live(narrow(b.nodes, stored?), stored?);
    Some(Stream {
        nodes,
        out,
        out_param,
        n,
    })
}

/// The operands of a node.
fn operands(op: &Op) -> Vec<usize> {
    match op {
        Op::Bin(_, a, b) => vec![*a, *b],
        Op::Un(_, a) => vec![*a],
        Op::Sel(c, a, b) | Op::Madd(c, a, b) => vec![*c, *a, *b],
        Op::Load { .. } | Op::Const(_) => vec![],
    }
}

/// A stored `cast f32→f16(x op y)` whose operands are both widened f16 (or bf16) values becomes
/// one `VEC` on the narrow dtype: the Vector unit computes narrow operands in f32 and rounds the
/// result once to the narrow dtype, which is exactly the kernel's widening casts, its f32
/// operation and its narrowing cast, at half the Vector cycles and without the three passes.
fn narrow(mut nodes: Vec<Node>, out: usize) -> Vec<Node> {
    let (Op::Un(VecOp::Cast, y), odt) = (nodes[out].op.clone(), nodes[out].dt) else {
        return nodes;
    };
    let Op::Bin(vop, a, b) = nodes[y].op.clone() else {
        return nodes;
    };
    if !matches!(odt, DType::F16 | DType::Bf16) || nodes[y].dt != DType::F32 || vop.converts() {
        return nodes;
    }
    let widened = |n: usize| match nodes[n].op {
        Op::Un(VecOp::Cast, x) if nodes[x].dt == odt => Some(x),
        _ => None,
    };
    if let (Some(x), Some(z)) = (widened(a), widened(b)) {
        nodes[out].op = Op::Bin(vop, x, z);
    }
    nodes
}

/// The nodes `out` depends on, in order, and `out`'s new index.
fn live(nodes: Vec<Node>, out: usize) -> (Vec<Node>, usize) {
    let mut keep = vec![false; nodes.len()];
    keep[out] = true;
    for i in (0..nodes.len()).rev() {
        if keep[i] {
            for o in operands(&nodes[i].op) {
                keep[o] = true;
            }
        }
    }
    let mut index = vec![usize::MAX; nodes.len()];
    let mut kept = Vec::new();
    for (i, mut nd) in nodes.into_iter().enumerate() {
        if !keep[i] {
            continue;
        }
        nd.op = match nd.op {
            Op::Bin(v, a, b) => Op::Bin(v, index[a], index[b]),
            Op::Un(v, a) => Op::Un(v, index[a]),
            Op::Sel(c, a, b) => Op::Sel(index[c], index[a], index[b]),
            Op::Madd(x, m, y) => Op::Madd(index[x], index[m], index[y]),
            other => other,
        };
        index[i] = kept.len();
        kept.push(nd);
    }
    (kept, index[out])
}

/// Registers of the generated program.
mod reg {
    pub const ZERO: u8 = 0;
    pub const ONE: u8 = 1;
    pub const BASE: u8 = 2;
    pub const LEN: u8 = 3;
    pub const N: u8 = 4;
    pub const CH: u8 = 5;
    pub const T: u8 = 6;
    pub const D: u8 = 7;
    pub const S1: u8 = 8;
    pub const S2: u8 = 9;
    pub const C: u8 = 10;
}

/// Where a node's value lives in the UB.
#[derive(Clone, Copy, Debug)]
enum Home {
    /// One slot (uniform or invariant values, or single-buffered temporaries).
    At(u64),
    /// One of two slots by chunk parity (streamed inputs, the output).
    Pair([u64; 2]),
}

/// `x` rounded up to the UB's 32-byte alignment (also the row path's).
pub(crate) fn round32(x: u64) -> u64 {
    x.div_ceil(32) * 32
}

/// The UB layout for chunks of `c` elements, or `None` when it does not fit.
struct Layout {
    home: Vec<Option<Home>>,
    /// A chunk-wide copy of a uniform node, for operand positions that need one.
    dup: HashMap<usize, u64>,
    /// The output's two slots.
    out: [u64; 2],
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Stream {
    /// Whether node `op`'s operand `pos` may be a uniform scalar read by the `VS` form: a binary
    /// op's second operand, `VMADD`'s addend (its third).
    fn vs_ok(&self, node: usize, pos: usize) -> bool {
        match &self.nodes[node].op {
            Op::Bin(_, a, b) => {
                let (a, b) = (&self.nodes[*a], &self.nodes[*b]);
                pos == 1 && b.kind == Kind::Uniform && a.kind != Kind::Uniform
            }
            Op::Madd(x, _, y) => {
                let (x, y) = (&self.nodes[*x], &self.nodes[*y]);
                pos == 2 && y.kind == Kind::Uniform && x.kind != Kind::Uniform
            }
            _ => false,
        }
    }

    /// Uniform nodes read at chunk width somewhere (they get a duplicated copy).
    fn needs_dup(&self) -> Vec<usize> {
        let mut need = vec![false; self.nodes.len()];
        for (i, nd) in self.nodes.iter().enumerate() {
            if nd.kind == Kind::Uniform {
                continue;
            }
            let ops = operands(&nd.op);
            for (pos, o) in ops.into_iter().enumerate() {
                if self.nodes[o].kind == Kind::Uniform && !self.vs_ok(i, pos) {
                    need[o] = true;
                }
            }
        }
        if self.nodes[self.out].kind == Kind::Uniform {
            need[self.out] = true;
        }
        (0..self.nodes.len()).filter(|&i| need[i]).collect()
    }

    /// Lays out the UB for chunks of `c` elements; returns the layout and the bytes used.
    fn layout(&self, c: u64) -> (Layout, u64) {
        let mut top = 0u64;
        let mut alloc = |bytes: u64| {
            let a = top;
            top += round32(bytes);
            a
        };
        let mut home = vec![None; self.nodes.len()];
        let mut dup = HashMap::new();
        let mut streams: HashMap<usize, [u64; 2]> = HashMap::new();
        for (i, nd) in self.nodes.iter().enumerate() {
            match (nd.kind, &nd.op) {
                (Kind::Uniform, _) => home[i] = Some(Home::At(alloc(nd.dt.size()))),
                (_, Op::Load { param, period }) if *period >= self.n => {
                    let p = *streams
                        .entry(*param)
                        .or_insert_with(|| [alloc(c * nd.dt.size()), alloc(c * nd.dt.size())]);
                    home[i] = Some(Home::Pair(p));
                }
                (_, Op::Load { .. }) => home[i] = Some(Home::At(alloc(c * nd.dt.size()))),
                _ => {}
            }
        }
        for u in self.needs_dup() {
            dup.insert(u, alloc(c * self.nodes[u].dt.size()));
        }
        let out_dt = self.nodes[self.out].dt;
        let out_pair = [alloc(c * out_dt.size()), alloc(c * out_dt.size())];
        // Invariant nodes keep their slot for the whole program; varying temporaries share
        // slots of their element size by liveness.
        let mut last_use = vec![0usize; self.nodes.len()];
        for (i, nd) in self.nodes.iter().enumerate() {
            match &nd.op {
                Op::Bin(_, a, b) => {
                    last_use[*a] = i;
                    last_use[*b] = i;
                }
                Op::Un(_, a) => last_use[*a] = i,
                Op::Sel(x, a, b) | Op::Madd(x, a, b) => {
                    last_use[*x] = i;
                    last_use[*a] = i;
                    last_use[*b] = i;
                }
                _ => {}
            }
        }
        last_use[self.out] = usize::MAX;
        let mut free: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut dying: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (i, &l) in last_use.iter().enumerate() {
            if l != usize::MAX && l > i {
                dying[l].push(i);
            }
        }
        for (i, nd) in self.nodes.iter().enumerate() {
            if home[i].is_some() {
                continue;
            }
            if i == self.out {
                home[i] = Some(Home::Pair(out_pair));
                continue;
            }
            if nd.kind == Kind::Invariant {
                home[i] = Some(Home::At(alloc(c * nd.dt.size())));
                continue;
            }
            // Operands dying here may hand their slot to the result (in place is allowed).
            for &d in &dying[i] {
                if let (Some(Home::At(a)), Kind::Varying, false) = (
                    home[d],
                    self.nodes[d].kind,
                    matches!(self.nodes[d].op, Op::Load { .. }),
                ) {
                    free.entry(self.nodes[d].dt.size()).or_default().push(a);
                }
            }
            let sz = nd.dt.size();
            let a = match free.get_mut(&sz).and_then(|f| f.pop()) {
                Some(a) => a,
                None => alloc(c * sz),
            };
            home[i] = Some(Home::At(a));
        }
        (
            Layout {
                home,
                dup,
                out: out_pair,
            },
            top,
        )
    }
}

/// The program for a recognised elementwise kernel `s` of `kernel`.
pub fn compile(kernel: &Kernel, s: &Stream, cfg: &TargetConfig) -> R<Blob> {
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
    // The chunk: a multiple of every row period, as large as fits.
    let mut unit = 1u64;
    for nd in &s.nodes {
        if let Op::Load { period, .. } = nd.op {
            if period > 1 && period < s.n {
                unit = unit / gcd(unit, period) * period;
            }
        }
    }
    // The largest multiple of `unit` up to the cap whose layout fits (the bytes grow with the
    // chunk): fewer chunks pay fewer `VEC` start-ups. The cap keeps about a dozen chunks (of
    // at least `MIN_SPLIT` elements) where the output allows, so that the DMAs of neighbouring
    // chunks overlap the Vector work for most of the kernel.
    let split = s.n.div_ceil(12).max(MIN_SPLIT);
    let cap = MAX_CHUNK
        .min(split)
        .max(unit)
        .min(s.n.div_ceil(unit) * unit)
        / unit;
    let fits = |m: u64| s.layout(m * unit).1 <= ub;
    if cap == 0 || !fits(1) {
        return Err(CgError::Unsupported(format!(
            "an elementwise chunk does not fit the {ub}-byte UB of target `{}`",
            cfg.name
        )));
    }
    let (mut lo, mut hi) = (1u64, cap);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let c = lo * unit;
    let layout = s.layout(c).0;
    let home = |i: usize, slot: usize| -> R<u64> {
        match layout.home[i] {
            Some(Home::At(a)) => Ok(a),
            Some(Home::Pair(p)) => Ok(p[slot]),
            None => Err(CgError::Internal(format!("stream node {i} has no UB slot"))),
        }
    };
    let mut a = Asm::new();
    a.li(ZERO, 0)?;
    a.li(ONE, 1)?;
    a.li(N, s.n as i64)?;
    a.li(CH, c as i64)?;
    let streamed: Vec<(usize, usize)> = {
        let mut seen = Vec::new();
        for (i, nd) in s.nodes.iter().enumerate() {
            if let Op::Load { param, period } = nd.op {
                if period >= s.n
                    && nd.kind == Kind::Varying
                    && !seen.iter().any(|&(p, _)| p == param)
                {
                    seen.push((param, i));
                }
            }
        }
        seen
    };
    // Prologue: scalar and row loads (MTE2), then constants (scalar stores).
    let mut pro_dma = false;
    for (i, nd) in s.nodes.iter().enumerate() {
        let Op::Load { param, period } = nd.op else {
            continue;
        };
        if period >= s.n && nd.kind == Kind::Varying {
            continue;
        }
        let src = params[param].addr;
        let dst = home(i, 0)?;
        let reps = if period == 1 { 1 } else { c / period };
        for r in 0..reps {
            a.li(D, (dst + r * period * nd.dt.size()) as i64)?;
            a.li(T, src as i64)?;
            a.li(C, period as i64)?;
            dma(
                &mut a,
                Mem::Gm,
                Mem::Ub,
                nd.dt,
                [D, T, ONE, C, C, C, ONE, C],
            );
        }
        pro_dma = true;
    }
    if pro_dma {
        a.set(Mte2, VecPipe, 2);
        a.wait(Mte2, VecPipe, 2);
    }
    for (i, nd) in s.nodes.iter().enumerate() {
        if let Op::Const(f) = nd.op {
            a.li(T, f.to_bits() as i32 as i64)?;
            a.li(D, home(i, 0)? as i64)?;
            a.emit(Instr::St {
                mem: Mem::Ub,
                dt: DType::F32,
                rs: T,
                base: D,
                offset: 0,
            });
        }
    }
    // Uniform nodes (one element), their chunk-wide copies, then invariant nodes.
    for (i, nd) in s.nodes.iter().enumerate() {
        if nd.kind == Kind::Uniform {
            op(&mut a, s, &layout, i, 0, ONE, &home)?;
        }
    }
    for (&u, &addr) in &layout.dup {
        vec(
            &mut a,
            VecOp::Dup,
            VecForm::Unary,
            s.nodes[u].dt,
            s.nodes[u].dt,
            addr,
            home(u, 0)?,
            None,
            CH,
            None,
        )?;
    }
    for (i, nd) in s.nodes.iter().enumerate() {
        if nd.kind == Kind::Invariant && !matches!(nd.op, Op::Load { .. }) {
            op(&mut a, s, &layout, i, 0, CH, &home)?;
        }
    }
    // Free tokens: one per slot of each double-buffered ring.
    for slot in 0..2 {
        if !streamed.is_empty() {
            a.set(VecPipe, Mte2, slot);
        }
        a.set(Mte3, VecPipe, slot);
    }
    let out_dt = s.nodes[s.out].dt;
    let out_addr = params[s.out_param].addr;
    a.li(BASE, 0)?;
    let top = a.label();
    let done = a.label();
    a.bind(top);
    for slot in 0..2usize {
        let id = slot as u32;
        a.branch(Cond::Ge, BASE, N, done);
        a.alu(AluOp::Sub, LEN, N, BASE);
        a.alu(AluOp::Min, LEN, LEN, CH);
        if !streamed.is_empty() {
            a.wait(VecPipe, Mte2, id);
            for &(param, i) in &streamed {
                let dt = s.nodes[i].dt;
                a.alui(AluOp::Mul, T, BASE, dt.size() as i64)?;
                a.alui(AluOp::Add, T, T, params[param].addr as i64)?;
                a.li(D, home(i, slot)? as i64)?;
                dma(
                    &mut a,
                    Mem::Gm,
                    Mem::Ub,
                    dt,
                    [D, T, ONE, LEN, LEN, LEN, ONE, LEN],
                );
            }
            a.set(Mte2, VecPipe, id);
            a.wait(Mte2, VecPipe, id);
        }
        a.wait(Mte3, VecPipe, id);
        for (i, nd) in s.nodes.iter().enumerate() {
            if nd.kind == Kind::Varying && !matches!(nd.op, Op::Load { .. }) {
                op(&mut a, s, &layout, i, slot, LEN, &home)?;
            }
        }
        // The stored value computed outside the chunk (a load, an invariant or a uniform):
        // copied into the output slot.
        let on = &s.nodes[s.out];
        if on.kind != Kind::Varying || matches!(on.op, Op::Load { .. }) {
            let src = match layout.dup.get(&s.out) {
                Some(&d) => d,
                None => match layout.home[s.out] {
                    Some(Home::Pair(p)) if matches!(on.op, Op::Load { .. }) => p[slot],
                    Some(Home::At(x)) => x,
                    _ => return Err(CgError::Internal("stream output without a slot".into())),
                },
            };
            let dst = layout.out[slot];
            vec(
                &mut a,
                VecOp::Mov,
                VecForm::Unary,
                out_dt,
                out_dt,
                dst,
                src,
                None,
                LEN,
                None,
            )?;
        }
        if !streamed.is_empty() {
            a.set(VecPipe, Mte2, id);
        }
        a.set(VecPipe, Mte3, id);
        a.wait(VecPipe, Mte3, id);
        a.alui(AluOp::Mul, T, BASE, out_dt.size() as i64)?;
        a.alui(AluOp::Add, T, T, out_addr as i64)?;
        a.li(D, layout.out[slot] as i64)?;
        dma(
            &mut a,
            Mem::Ub,
            Mem::Gm,
            out_dt,
            [T, D, ONE, LEN, LEN, LEN, ONE, LEN],
        );
        a.set(Mte3, VecPipe, id);
        a.alu(AluOp::Add, BASE, BASE, CH);
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

/// A same-dtype DMA (also the row path's, `rows.rs`).
pub(crate) fn dma(a: &mut Asm, src: Mem, dst: Mem, dt: DType, regs: [u8; 8]) {
    a.emit(Instr::Dma {
        src_mem: src,
        dst_mem: dst,
        sdt: dt,
        ddt: dt,
        regs,
        scale: None,
        transpose: false,
    });
}

/// One `VEC` with immediate UB addresses and the length in register `len` (the row path's
/// too: both paths put the address operands in `D`, `S1`, `S2`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn vec(
    a: &mut Asm,
    op: VecOp,
    form: VecForm,
    sdt: DType,
    ddt: DType,
    dst: u64,
    src1: u64,
    src2: Option<u64>,
    len: u8,
    cond: Option<u64>,
) -> R<()> {
    use reg::*;
    a.li(D, dst as i64)?;
    a.li(S1, src1 as i64)?;
    if let Some(s2) = src2 {
        a.li(S2, s2 as i64)?;
    }
    if let Some(c) = cond {
        a.li(C, c as i64)?;
    }
    a.emit(Instr::Vec {
        op,
        form,
        sdt,
        ddt,
        dst: D,
        src1: S1,
        src2: src2.map(|_| S2),
        len,
        mask: None,
        cond: cond.map(|_| C),
    });
    Ok(())
}

/// Node `i` computed at width `len` (a register) into its home for chunk parity `slot`.
fn op(
    a: &mut Asm,
    s: &Stream,
    l: &Layout,
    i: usize,
    slot: usize,
    len: u8,
    home: &dyn Fn(usize, usize) -> R<u64>,
) -> R<()> {
    let nd = &s.nodes[i];
    let wide = nd.kind != Kind::Uniform;
    // An operand's address at this width: a uniform operand of a chunk-wide op is read from
    // its duplicated copy.
    let at = |o: usize| -> R<u64> {
        if wide && s.nodes[o].kind == Kind::Uniform {
            l.dup
                .get(&o)
                .copied()
                .ok_or_else(|| CgError::Internal(format!("stream node {o} has no copy")))
        } else {
            home(o, slot)
        }
    };
    let dst = home(i, slot)?;
    match &nd.op {
        Op::Load { .. } | Op::Const(_) => Ok(()),
        Op::Bin(vop, x, y) => {
            let sdt = s.nodes[*x].dt;
            if s.vs_ok(i, 1) {
                let src2 = home(*y, slot)?;
                vec(
                    a,
                    *vop,
                    VecForm::VS,
                    sdt,
                    nd.dt,
                    dst,
                    at(*x)?,
                    Some(src2),
                    len,
                    None,
                )
            } else {
                vec(
                    a,
                    *vop,
                    VecForm::VV,
                    sdt,
                    nd.dt,
                    dst,
                    at(*x)?,
                    Some(at(*y)?),
                    len,
                    None,
                )
            }
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
                at(*x)?,
                None,
                len,
                None,
            )
        }
        // `dst = x · m + y`: `m` is the `r5` operand, `y` the `VS` scalar when uniform.
        Op::Madd(x, m, y) => {
            let (form, src2) = if s.vs_ok(i, 2) {
                (VecForm::VS, home(*y, slot)?)
            } else {
                (VecForm::VV, at(*y)?)
            };
            vec(
                a,
                VecOp::Madd,
                form,
                nd.dt,
                nd.dt,
                dst,
                at(*x)?,
                Some(src2),
                len,
                Some(at(*m)?),
            )
        }
        Op::Sel(c, x, y) => vec(
            a,
            VecOp::Sel,
            VecForm::VV,
            nd.dt,
            nd.dt,
            dst,
            at(*x)?,
            Some(at(*y)?),
            len,
            Some(at(*c)?),
        ),
    }
}
