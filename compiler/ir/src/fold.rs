//! Constant folding of *shape computations only*. [`fold_constants`] evaluates `Constant`,
//! `Shape`, `Size`, small `ConstantOfShape`, and the small chains exporters and ONNX
//! function bodies emit to compute shapes and scale factors (`Gather`, `Concat`,
//! `Unsqueeze`, `Slice`, `Expand`, `Transpose`, `Split`, `Cast`, integer arithmetic, `Mod`,
//! comparisons, logic, `Where`, `ReduceProd`, integer `Range` …) whose operands are all known
//! at compile time.
//!
//! What "known" means is the safety rule: a value is known if it is an initializer, a
//! `Constant`, the result of `Shape`/`Size` (which read only types), an input bound at
//! compile time because it decides a shape, or a folded result of known values. A runtime
//! input's contents are never known, so nothing that reads them is folded.
//!
//! How much is folded depends on the kind of work (see `limit`):
//! - integer and bool tensors up to [`SMALL_INT`] elements (shape arithmetic);
//! - float conversions, float data movement and float `ConstantOfShape` up to [`SMALL`];
//! - float *arithmetic* only on scalars ([`SMALL_FLOAT`]), for scale factors such as
//!   `1 / sqrt(cast(head_size))`; float `Range` is never folded.
//!
//! Dense float work is a kernel's job: conformance numbers must come from kernels that compute.
//!
//! Start at [`eval_node`], which decides what is foldable and computes it.

use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Attr, Graph, Node, TensorType};
use crate::infer::Cx;
use crate::op::Op;
use crate::tensor::Tensor;

type Result<T> = std::result::Result<T, IrError>;

/// The largest float tensor (in elements) the folder converts, moves or fills.
pub const SMALL: u64 = 64;
/// The largest integer or bool tensor (in elements) the folder computes.
pub const SMALL_INT: u64 = 4096;
/// The largest float tensor (in elements) the folder does arithmetic on: scalars only.
pub const SMALL_FLOAT: u64 = 1;

/// Infers types (see [`crate::infer_shapes`]), which also evaluates every foldable node,
/// then removes the folded nodes; their results keep their contents in
/// [`crate::Value::konst`]. Returns how many nodes were removed.
pub fn fold_constants(g: &mut Graph) -> Result<usize> {
    crate::infer::infer_shapes(g)?;
    let mut folded = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        // Inference already evaluated every foldable node: a node is folded exactly when
        // all its results are known.
        let done = !node.outputs.is_empty() && node.outputs.iter().all(|o| g.konst(*o).is_some());
        folded.push(done);
    }
    let before = g.nodes.len();
    let mut it = folded.into_iter();
    g.nodes.retain(|_| !it.next().unwrap_or(false));
    Ok(before - g.nodes.len())
}

/// One element of a known tensor: integers (and bools) exactly, floats widened to f64.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    I(i64),
    F(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::I(v) => v as f64,
            Num::F(v) => v,
        }
    }

    fn int(self) -> Option<i64> {
        match self {
            Num::I(v) => Some(v),
            Num::F(_) => None,
        }
    }

    fn truthy(self) -> bool {
        match self {
            Num::I(v) => v != 0,
            Num::F(v) => v != 0.0,
        }
    }
}

/// A known operand: dtype, dims and elements.
struct Known {
    dtype: DType,
    dims: Vec<u64>,
    vals: Vec<Num>,
}

/// The shape of the computation an op does, which decides how it is evaluated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Elementwise with numpy broadcasting (conversions included).
    Map,
    /// Moves elements without computing on them.
    Move,
    /// Integer `Range`.
    Range,
    /// `Reduce*` over the `axes` operand.
    Reduce,
}

fn kind(op: Op) -> Option<Kind> {
    use Op::*;
    Some(match op {
        Add | Sub | Mul | Div | Mod | Max | Min | Sum | Neg | Abs | Sign | Sqrt | Reciprocal
        | Floor | Ceil | Round | Equal | Less | LessOrEqual | Greater | GreaterOrEqual | And
        | Or | Xor | Not | Where | Cast | CastLike | Relu => Kind::Map,
        Gather | Concat | Unsqueeze | Squeeze | Reshape | Flatten | Identity | Slice | Expand
        | Transpose => Kind::Move,
        Range => Kind::Range,
        ReduceProd | ReduceSum | ReduceMax | ReduceMin => Kind::Reduce,
        _ => return None,
    })
}

/// The largest operand or result (in elements) folded for `op`, given whether floats are
/// involved: see the module documentation.
fn limit(op: Op, k: Kind, floats: bool) -> u64 {
    if !floats {
        SMALL_INT
    } else if k == Kind::Move || matches!(op, Op::Cast | Op::CastLike) {
        SMALL
    } else {
        SMALL_FLOAT
    }
}

/// Float dtypes the folder can produce (narrow float formats are left to kernels).
fn float_out_ok(d: DType) -> bool {
    matches!(d, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
}

/// Evaluates `node` at compile time if it is a foldable shape computation whose operands
/// are known; `Ok(None)` if it is not foldable. `tys` are the node's inferred result types.
pub fn eval_node(g: &Graph, node: &Node, tys: &[TensorType]) -> Result<Option<Vec<Tensor>>> {
    let cx = Cx { g, node };
    let out_ty = match tys.first() {
        Some(t) => t,
        None => return Ok(None),
    };
    let out_n = out_ty.shape.num_elements();
    match node.op {
        Op::Constant => return Ok(Some(vec![constant_value(node)?])),
        Op::Shape => {
            let t = cx.ty(0)?;
            let Some(dims) = t.shape.as_static() else {
                return Ok(None);
            };
            let (s, e) = crate::infer::meta::shape_range(&cx, dims.len())?;
            let v: Vec<i64> = dims[s..e].iter().map(|&d| d as i64).collect();
            return Ok(Some(vec![Tensor::from_i64(vec![v.len() as u64], &v)]));
        }
        Op::Size => {
            let Some(n) = cx.ty(0)?.shape.num_elements() else {
                return Ok(None);
            };
            return Ok(Some(vec![Tensor::from_i64(vec![], &[n as i64])]));
        }
        Op::ConstantOfShape => {
            let int_like = out_ty.dtype.is_int() || out_ty.dtype == DType::Bool;
            let lim = if int_like { SMALL_INT } else { SMALL };
            if out_n.is_none_or(|n| n > lim) {
                return Ok(None);
            }
            let fill = constant_of_shape_fill(node)?;
            let dims = out_ty.shape.as_static().unwrap_or_default();
            let n = out_n.unwrap_or(0) as usize;
            let t = if fill.dtype == DType::String {
                let s = fill.strings.first().cloned().unwrap_or_default();
                Tensor::from_strings(dims, vec![s; n])
            } else {
                let bits = fill.dtype.bits() as usize;
                // Sub-byte fills are repeated element by element; byte-sized ones by bytes.
                if bits >= 8 {
                    let w = bits / 8;
                    let one = fill
                        .bytes
                        .get(..w)
                        .map(|b| b.to_vec())
                        .unwrap_or_else(|| vec![0; w]);
                    Tensor::new(fill.dtype, dims, one.repeat(n))
                } else {
                    let v = fill.get_i64(0).unwrap_or(0);
                    Tensor::new(fill.dtype, dims, encode_ints(fill.dtype, &vec![v; n]))
                }
            };
            return Ok(Some(vec![t]));
        }
        Op::Split => return eval_split(&cx, tys),
        _ => {}
    }
    let Some(k) = kind(node.op) else {
        return Ok(None);
    };
    let Some(out_dims) = out_ty.shape.as_static() else {
        return Ok(None);
    };
    let Some(out_n) = out_n else { return Ok(None) };
    if tys.len() != 1 || out_ty.dtype == DType::String {
        return Ok(None);
    }
    if out_ty.dtype.is_float() && (!float_out_ok(out_ty.dtype) || k == Kind::Range) {
        return Ok(None);
    }
    // Every present operand must be known (CastLike reads only its second operand's dtype).
    let mut args: Vec<Option<Known>> = Vec::with_capacity(node.inputs.len());
    for i in 0..node.inputs.len() {
        let Some(id) = cx.opt_id(i)? else {
            args.push(None);
            continue;
        };
        if node.op == Op::CastLike && i == 1 {
            args.push(None);
            continue;
        }
        let Some(t) = g.konst(id) else {
            return Ok(None);
        };
        if t.dtype == DType::String || t.num_elements() > SMALL_INT {
            return Ok(None);
        }
        let vals: Option<Vec<Num>> = if t.dtype.is_float() {
            t.to_f64_vec().map(|v| v.into_iter().map(Num::F).collect())
        } else {
            t.to_i64_vec().map(|v| v.into_iter().map(Num::I).collect())
        };
        let Some(vals) = vals else { return Ok(None) };
        // u64 values past i64::MAX do not survive the i64 arithmetic below.
        if t.dtype == DType::U64 && vals.iter().any(|v| matches!(v, Num::I(x) if *x < 0)) {
            return Ok(None);
        }
        args.push(Some(Known {
            dtype: t.dtype,
            dims: t.dims.clone(),
            vals,
        }));
    }
    let floats = out_ty.dtype.is_float() || args.iter().flatten().any(|a| a.dtype.is_float());
    let lim = limit(node.op, k, floats);
    if out_n > lim || args.iter().flatten().any(|a| a.vals.len() as u64 > lim) {
        return Ok(None);
    }
    let vals = match k {
        Kind::Map => eval_map(&cx, &args, &out_dims)?,
        Kind::Move => eval_move(&cx, &args, &out_dims)?,
        Kind::Range => eval_range(&args, out_n),
        Kind::Reduce => eval_reduce(&cx, &args, &out_dims)?,
    };
    let Some(vals) = vals else { return Ok(None) };
    if vals.len() as u64 != out_n {
        return Ok(None);
    }
    Ok(encode(out_ty.dtype, out_dims, &vals).map(|t| vec![t]))
}

/// `Split` of a known integer tensor (exporters split shape vectors into dims); the part
/// sizes come from the inferred result types.
fn eval_split(cx: &Cx, tys: &[TensorType]) -> Result<Option<Vec<Tensor>>> {
    let Some(id) = cx.opt_id(0)? else {
        return Ok(None);
    };
    let Some(t) = cx.g.konst(id) else {
        return Ok(None);
    };
    if !(t.dtype.is_int() || t.dtype == DType::Bool) || t.num_elements() > SMALL_INT {
        return Ok(None);
    }
    let Some(vals) = t.to_i64_vec() else {
        return Ok(None);
    };
    let r = t.dims.len();
    let axis = cx.axis(cx.attr_int("axis", 0)?, r, "axis")?;
    let d = t.dims[axis];
    let outer: u64 = t.dims[..axis].iter().product();
    let inner: u64 = t.dims[axis + 1..].iter().product();
    let mut start = 0u64;
    let mut outs = Vec::with_capacity(tys.len());
    for ty in tys {
        let Some(dims) = ty.shape.as_static() else {
            return Ok(None);
        };
        let Some(&len) = dims.get(axis) else {
            return Ok(None);
        };
        if start + len > d {
            return Ok(None);
        }
        let mut part = Vec::with_capacity((outer * len * inner) as usize);
        for o in 0..outer {
            for j in start..start + len {
                let at = ((o * d + j) * inner) as usize;
                part.extend_from_slice(vals.get(at..at + inner as usize).unwrap_or(&[]));
            }
        }
        start += len;
        outs.push(Tensor::new(t.dtype, dims, encode_ints(t.dtype, &part)));
    }
    Ok(Some(outs))
}

/// Packs folded elements as `dtype` (a cast: floats truncate toward zero into integers, and
/// round to nearest even into narrower floats). `None` where the result is undefined (a NaN
/// or infinity cast to an integer).
fn encode(dtype: DType, dims: Vec<u64>, vals: &[Num]) -> Option<Tensor> {
    if dtype.is_int() || dtype == DType::Bool {
        let ints: Option<Vec<i64>> = vals
            .iter()
            .map(|v| match *v {
                Num::I(x) => Some(x),
                Num::F(x) if dtype == DType::Bool => Some((x != 0.0) as i64),
                Num::F(x) if x.is_finite() => Some(x.trunc() as i64),
                Num::F(_) => None,
            })
            .collect();
        return Some(Tensor::new(dtype, dims, encode_ints(dtype, &ints?)));
    }
    let fs = vals.iter().map(|v| v.f());
    let bytes: Vec<u8> = match dtype {
        DType::F64 => fs.flat_map(|v| v.to_le_bytes()).collect(),
        DType::F32 => fs.flat_map(|v| (v as f32).to_le_bytes()).collect(),
        DType::F16 => fs
            .flat_map(|v| half::f16::from_f64(v).to_le_bytes())
            .collect(),
        DType::BF16 => fs
            .flat_map(|v| half::bf16::from_f64(v).to_le_bytes())
            .collect(),
        _ => return None,
    };
    Some(Tensor::new(dtype, dims, bytes))
}

/// Elementwise ops with numpy broadcasting.
fn eval_map(cx: &Cx, args: &[Option<Known>], out_dims: &[u64]) -> Result<Option<Vec<Num>>> {
    let op = cx.node.op;
    let fmod = op == Op::Mod && cx.attr_int("fmod", 0)? != 0;
    let ins: Vec<&Known> = args.iter().flatten().collect();
    if ins.is_empty() {
        return Ok(None);
    }
    let n_out: u64 = out_dims.iter().product();
    let mut out = Vec::with_capacity(n_out as usize);
    let mut v = Vec::with_capacity(ins.len());
    for flat in 0..n_out {
        let idx = unravel(flat, out_dims);
        v.clear();
        for t in &ins {
            match t.vals.get(broadcast_index(&idx, &t.dims) as usize) {
                Some(x) => v.push(*x),
                None => return Ok(None),
            }
        }
        match apply(op, fmod, &v) {
            Some(r) => out.push(r),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// One element of an elementwise op. Integer operands compute in i64, wrapping as the
/// result's width will (the encoder truncates); floats compute in f64 and are rounded to
/// the result dtype once, which for these operations equals computing in that dtype.
/// `None` leaves the node to a kernel (division by zero, ill-typed cases).
fn apply(op: Op, fmod: bool, v: &[Num]) -> Option<Num> {
    use Num::{F, I};
    let b = |x: bool| I(x as i64);
    let any_f = v.iter().any(|x| matches!(x, F(_)));
    Some(match (op, v) {
        (Op::Cast | Op::CastLike, [x]) => *x,
        (Op::Add, [I(x), I(y)]) => I(x.wrapping_add(*y)),
        (Op::Sub, [I(x), I(y)]) => I(x.wrapping_sub(*y)),
        (Op::Mul, [I(x), I(y)]) => I(x.wrapping_mul(*y)),
        (Op::Div | Op::Mod, [I(_), I(0)]) => return None,
        (Op::Div, [I(x), I(y)]) => I(x.wrapping_div(*y)),
        (Op::Mod, [I(x), I(y)]) => {
            let r = x.wrapping_rem(*y);
            // Without fmod the remainder takes the divisor's sign (Python's %).
            I(if !fmod && r != 0 && ((r < 0) != (*y < 0)) {
                r + y
            } else {
                r
            })
        }
        (Op::Add, [x, y]) => F(x.f() + y.f()),
        (Op::Sub, [x, y]) => F(x.f() - y.f()),
        (Op::Mul, [x, y]) => F(x.f() * y.f()),
        (Op::Div, [x, y]) => F(x.f() / y.f()),
        // Float Mod requires fmod=1 (C's fmod, which Rust's `%` on floats is).
        (Op::Mod, [x, y]) if fmod => F(x.f() % y.f()),
        (Op::Max | Op::Min | Op::Sum, vs) if !any_f => {
            let it = vs.iter().filter_map(|x| x.int());
            I(match op {
                Op::Max => it.max()?,
                Op::Min => it.min()?,
                _ => it.fold(0i64, |a, x| a.wrapping_add(x)),
            })
        }
        (Op::Max | Op::Min | Op::Sum, vs) => {
            let fs: Vec<f64> = vs.iter().map(|x| x.f()).collect();
            if op != Op::Sum && fs.iter().any(|x| x.is_nan()) {
                F(f64::NAN)
            } else {
                F(match op {
                    Op::Max => fs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    Op::Min => fs.iter().copied().fold(f64::INFINITY, f64::min),
                    _ => fs.iter().sum(),
                })
            }
        }
        (Op::Equal, [x, y]) => b(if any_f { x.f() == y.f() } else { x == y }),
        (Op::Less, [x, y]) => b(if any_f {
            x.f() < y.f()
        } else {
            x.int() < y.int()
        }),
        (Op::LessOrEqual, [x, y]) => b(if any_f {
            x.f() <= y.f()
        } else {
            x.int() <= y.int()
        }),
        (Op::Greater, [x, y]) => b(if any_f {
            x.f() > y.f()
        } else {
            x.int() > y.int()
        }),
        (Op::GreaterOrEqual, [x, y]) => b(if any_f {
            x.f() >= y.f()
        } else {
            x.int() >= y.int()
        }),
        (Op::And, [x, y]) => b(x.truthy() && y.truthy()),
        (Op::Or, [x, y]) => b(x.truthy() || y.truthy()),
        (Op::Xor, [x, y]) => b(x.truthy() != y.truthy()),
        (Op::Not, [x]) => b(!x.truthy()),
        (Op::Where, [c, x, y]) => {
            if c.truthy() {
                *x
            } else {
                *y
            }
        }
        (Op::Neg, [I(x)]) => I(x.wrapping_neg()),
        (Op::Neg, [x]) => F(-x.f()),
        (Op::Abs, [I(x)]) => I(x.wrapping_abs()),
        (Op::Abs, [x]) => F(x.f().abs()),
        (Op::Sign, [I(x)]) => I(x.signum()),
        (Op::Sign, [x]) => {
            let x = x.f();
            F(if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x // 0, -0 or NaN
            })
        }
        (Op::Sqrt, [F(x)]) => F(x.sqrt()),
        (Op::Reciprocal, [F(x)]) => F(1.0 / x),
        (Op::Floor, [F(x)]) => F(x.floor()),
        (Op::Ceil, [F(x)]) => F(x.ceil()),
        (Op::Relu, [I(x)]) => I((*x).max(0)),
        // NaN stays NaN, as the kernel's compare-and-select gives.
        (Op::Relu, [F(x)]) => F(if *x < 0.0 { 0.0 } else { *x }),
        (Op::Round, [F(x)]) => F(x.round_ties_even()),
        _ => return None,
    })
}

/// Ops that move elements: the reshapes, `Gather`, `Concat`, `Slice` and `Expand`.
fn eval_move(cx: &Cx, args: &[Option<Known>], out_dims: &[u64]) -> Result<Option<Vec<Num>>> {
    let arg = |i: usize| args.get(i).and_then(|a| a.as_ref());
    let Some(a) = arg(0) else { return Ok(None) };
    let n_out: u64 = out_dims.iter().product();
    Ok(Some(match cx.node.op {
        Op::Unsqueeze | Op::Squeeze | Op::Reshape | Op::Flatten | Op::Identity => a.vals.clone(),
        Op::Transpose => {
            let r = a.dims.len();
            let perm: Vec<usize> = match cx.node.attr_ints("perm") {
                Some(p) => p
                    .iter()
                    .map(|&x| x.rem_euclid(r.max(1) as i64) as usize)
                    .collect(),
                None => (0..r).rev().collect(),
            };
            if perm.len() != r || out_dims.len() != r {
                return Ok(None);
            }
            (0..n_out)
                .map(|flat| {
                    // Result index j reads source index i with i[perm[k]] = j[k].
                    let j = unravel(flat, out_dims);
                    let mut i = vec![0; r];
                    for (k, &p) in perm.iter().enumerate() {
                        i[p] = j[k];
                    }
                    a.vals
                        .get(ravel(&i, &a.dims) as usize)
                        .copied()
                        .unwrap_or(Num::I(0))
                })
                .collect()
        }
        Op::Expand => (0..n_out)
            .map(|flat| {
                let i = broadcast_index(&unravel(flat, out_dims), &a.dims);
                a.vals.get(i as usize).copied().unwrap_or(Num::I(0))
            })
            .collect(),
        Op::Gather => {
            let Some(ind) = arg(1) else { return Ok(None) };
            let r = a.dims.len();
            let axis = cx.axis(cx.attr_int("axis", 0)?, r, "axis")?;
            let d = a.dims[axis];
            let outer: u64 = a.dims[..axis].iter().product();
            let inner: u64 = a.dims[axis + 1..].iter().product();
            let mut out = Vec::with_capacity(n_out as usize);
            for o in 0..outer {
                for ix in &ind.vals {
                    let Some(ix) = ix.int() else { return Ok(None) };
                    let j = if ix < 0 { ix + d as i64 } else { ix };
                    if j < 0 || j as u64 >= d {
                        return Err(cx.bad_operand(
                            1,
                            &format!("holds index {ix}, out of range for axis {axis} of size {d}"),
                        ));
                    }
                    for k in 0..inner {
                        out.push(
                            a.vals
                                .get(((o * d + j as u64) * inner + k) as usize)
                                .copied()
                                .unwrap_or(Num::I(0)),
                        );
                    }
                }
            }
            out
        }
        Op::Concat => {
            let r = a.dims.len();
            let axis = cx.axis(cx.attr_int("axis", 0)?, r, "axis")?;
            let outer: u64 = a.dims[..axis].iter().product();
            let mut out = Vec::with_capacity(n_out as usize);
            for o in 0..outer {
                for t in args.iter().flatten() {
                    let chunk: u64 = t.dims.get(axis..).unwrap_or(&[]).iter().product();
                    let start = (o * chunk) as usize;
                    out.extend_from_slice(t.vals.get(start..start + chunk as usize).unwrap_or(&[]));
                }
            }
            out
        }
        Op::Slice => {
            let in_shape = crate::shape::Shape::from_static(&a.dims);
            let params = crate::infer::movement::slice_params(cx, &in_shape)?;
            let mut out = Vec::with_capacity(n_out as usize);
            for flat in 0..n_out {
                let idx = unravel(flat, out_dims);
                let src: Vec<u64> = idx
                    .iter()
                    .enumerate()
                    .map(|(ax, &i)| match params.get(ax).copied().flatten() {
                        Some(p) => p.start.wrapping_add((i as i64).wrapping_mul(p.step)) as u64,
                        None => i,
                    })
                    .collect();
                out.push(
                    a.vals
                        .get(ravel(&src, &a.dims) as usize)
                        .copied()
                        .unwrap_or(Num::I(0)),
                );
            }
            out
        }
        _ => return Ok(None),
    }))
}

/// Integer `Range`: `start + i * delta` (inference already computed the count).
fn eval_range(args: &[Option<Known>], n_out: u64) -> Option<Vec<Num>> {
    let scalar = |i: usize| args.get(i)?.as_ref()?.vals.first()?.int();
    let (s, d) = (scalar(0)?, scalar(2)?);
    Some(
        (0..n_out as i64)
            .map(|i| Num::I(s.wrapping_add(i.wrapping_mul(d))))
            .collect(),
    )
}

/// `ReduceProd`, `ReduceSum`, `ReduceMax` and `ReduceMin` over the `axes` operand (all axes
/// when it is omitted or empty, unless `noop_with_empty_axes`), honouring `keepdims`.
fn eval_reduce(cx: &Cx, args: &[Option<Known>], out_dims: &[u64]) -> Result<Option<Vec<Num>>> {
    let Some(Some(a)) = args.first() else {
        return Ok(None);
    };
    let r = a.dims.len();
    let keep = cx.attr_int("keepdims", 1)? != 0;
    let axes: Vec<i64> = match args.get(1).and_then(|x| x.as_ref()) {
        Some(t) => match t.vals.iter().map(|v| v.int()).collect::<Option<Vec<_>>>() {
            Some(v) => v,
            None => return Ok(None),
        },
        None => Vec::new(),
    };
    if axes.is_empty() && cx.attr_int("noop_with_empty_axes", 0)? != 0 {
        return Ok(Some(a.vals.clone()));
    }
    let axes = if axes.is_empty() {
        (0..r).collect()
    } else {
        cx.axes(&axes, r, "axis")?
    };
    let op = cx.node.op;
    let bin = match op {
        Op::ReduceProd => Op::Mul,
        Op::ReduceSum => Op::Add,
        Op::ReduceMax => Op::Max,
        _ => Op::Min,
    };
    // Max and Min start from their first element (an empty one is left to the kernel);
    // Prod and Sum from their identity.
    let init = match op {
        Op::ReduceProd => Some(Num::I(1)),
        Op::ReduceSum => Some(Num::I(0)),
        _ => None,
    };
    let mut acc = vec![init; out_dims.iter().product::<u64>() as usize];
    for (flat, &x) in a.vals.iter().enumerate() {
        let idx = unravel(flat as u64, &a.dims);
        let o: Vec<u64> = idx
            .iter()
            .enumerate()
            .filter_map(|(ax, &i)| match (axes.contains(&ax), keep) {
                (false, _) => Some(i),
                (true, true) => Some(0),
                (true, false) => None,
            })
            .collect();
        let Some(slot) = acc.get_mut(ravel(&o, out_dims) as usize) else {
            return Ok(None);
        };
        *slot = match *slot {
            None => Some(x),
            Some(s) => apply(bin, false, &[s, x]),
        };
        if slot.is_none() {
            return Ok(None);
        }
    }
    Ok(acc.into_iter().collect())
}

fn unravel(mut flat: u64, dims: &[u64]) -> Vec<u64> {
    let mut idx = vec![0; dims.len()];
    for (k, &d) in dims.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = flat % d;
            flat /= d;
        }
    }
    idx
}

fn ravel(idx: &[u64], dims: &[u64]) -> u64 {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// The flat index into a tensor of `dims` that numpy broadcasting reads for result index `idx`.
fn broadcast_index(idx: &[u64], dims: &[u64]) -> u64 {
    let off = idx.len().saturating_sub(dims.len());
    dims.iter().enumerate().fold(0, |acc, (k, &d)| {
        let i = if d == 1 {
            0
        } else {
            idx.get(k + off).copied().unwrap_or(0)
        };
        acc * d + i
    })
}

pub use crate::numeric::encode_ints;

/// The tensor a `Constant` node produces, from whichever `value*` attribute it has.
pub fn constant_value(node: &Node) -> Result<Tensor> {
    let bad = |msg: String| IrError::BadAttr {
        node: node.label(),
        attr: "value".into(),
        msg,
    };
    if node.attrs.len() != 1 {
        let names: Vec<&str> = node.attrs.keys().map(|k| k.as_str()).collect();
        return Err(bad(format!(
            "(or one other value_* attribute) must be given exactly once; found {names:?}"
        )));
    }
    let Some((name, attr)) = node.attrs.iter().next() else {
        return Err(bad("is missing".into()));
    };
    let wrong = || IrError::BadAttr {
        node: node.label(),
        attr: name.clone(),
        msg: "has the wrong kind of value".into(),
    };
    Ok(match (name.as_str(), attr) {
        ("value", Attr::Tensor(t)) => t.clone(),
        ("value_float", Attr::Float(v)) => Tensor::from_f32(vec![], &[*v]),
        ("value_floats", Attr::Floats(v)) => Tensor::from_f32(vec![v.len() as u64], v),
        ("value_int", Attr::Int(v)) => Tensor::from_i64(vec![], &[*v]),
        ("value_ints", Attr::Ints(v)) => Tensor::from_i64(vec![v.len() as u64], v),
        ("value_string", Attr::String(s)) => Tensor::from_strings(vec![], vec![s.clone()]),
        ("value_strings", Attr::Strings(v)) => {
            Tensor::from_strings(vec![v.len() as u64], v.clone())
        }
        _ => return Err(wrong()),
    })
}

/// The one-element fill value of a `ConstantOfShape` node (f32 zero by default).
pub fn constant_of_shape_fill(node: &Node) -> Result<Tensor> {
    match node.attr("value") {
        None => Ok(Tensor::from_f32(vec![], &[0.0])),
        Some(Attr::Tensor(t)) if t.dims.iter().all(|&d| d == 1) => Ok(t.clone()),
        Some(_) => Err(IrError::BadAttr {
            node: node.label(),
            attr: "value".into(),
            msg: "must be a one-element tensor".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::B;
    use crate::Attr;

    #[test]
    fn shape_chain_folds_and_nodes_are_removed() {
        let mut b = B::new();
        let x = b.input("x", "f32[2,3,4]");
        let sh = b.node1(Op::Shape, &[x], &[]);
        let idx = b.konst("idx", Tensor::from_i64(vec![1], &[0]));
        let n = b.node1(Op::Gather, &[sh, idx], &[]);
        let m1 = b.ints("m1", &[-1]);
        let cat = b.node1(Op::Concat, &[n, m1], &[("axis", Attr::Int(0))]);
        let prod = b.node1(Op::Mul, &[cat, cat], &[]);
        let r = b.node1(Op::Reshape, &[x, cat], &[]);
        let y = b.node1(Op::Relu, &[r], &[]);
        b.g.outputs = vec![y, prod];
        assert_eq!(fold_constants(&mut b.g).unwrap(), 4);
        let ops: Vec<Op> = b.g.nodes.iter().map(|n| n.op).collect();
        assert_eq!(ops, vec![Op::Reshape, Op::Relu]);
        assert_eq!(b.g.konst(prod).unwrap().to_i64_vec(), Some(vec![4, 1]));
        crate::verify(&b.g).unwrap();
    }

    #[test]
    fn dense_and_runtime_work_is_never_folded() {
        let mut b = B::new();
        let x = b.input("x", "i64[2]");
        let c = b.konst("c", Tensor::from_f32(vec![2], &[1.0, 2.0]));
        let fa = b.node1(Op::Add, &[c, c], &[]);
        let i = b.ints("i", &[1, 2]);
        let ra = b.node1(Op::Add, &[x, i], &[]);
        let big = b.ints("big", &[8, 9]);
        let cos = b.node1(Op::ConstantOfShape, &[big], &[]);
        let small = b.ints("small", &[2, 2]);
        let cos2 = b.node1(
            Op::ConstantOfShape,
            &[small],
            &[("value", Attr::Tensor(Tensor::from_i64(vec![1], &[7])))],
        );
        let zero = b.ints("zero", &[0, 1]);
        let div = b.node1(Op::Div, &[i, zero], &[]);
        b.g.outputs = vec![fa, ra, cos, cos2, div];
        assert_eq!(fold_constants(&mut b.g).unwrap(), 1);
        assert!(
            b.g.konst(fa).is_none()
                && b.g.konst(ra).is_none()
                && b.g.konst(cos).is_none()
                && b.g.konst(div).is_none()
        );
        assert_eq!(b.g.konst(cos2).unwrap().to_i64_vec(), Some(vec![7; 4]));
    }

    #[test]
    fn ranges_slices_and_casts() {
        let mut b = B::new();
        let s = b.konst("s", Tensor::from_i64(vec![], &[10]));
        let l = b.konst("l", Tensor::from_i64(vec![], &[0]));
        let d = b.konst("d", Tensor::from_i64(vec![], &[-3]));
        let r = b.node1(Op::Range, &[s, l, d], &[]);
        let st = b.ints("st", &[-1]);
        let en = b.ints("en", &[i64::MIN]);
        let ax = b.ints("ax", &[0]);
        let sp = b.ints("sp", &[-2]);
        let sl = b.node1(Op::Slice, &[r, st, en, ax, sp], &[]);
        let c = b.node1(Op::Cast, &[sl], &[("to", Attr::Int(6))]);
        let f = b.konst("f", Tensor::from_f32(vec![2], &[2.7, -1.5]));
        let fc = b.node1(Op::Cast, &[f], &[("to", Attr::Int(7))]);
        let fs = b.konst("fs", Tensor::from_f32(vec![], &[0.0]));
        let fl = b.konst("fl", Tensor::from_f32(vec![], &[3.0]));
        let fd = b.konst("fd", Tensor::from_f32(vec![], &[1.0]));
        let fr = b.node1(Op::Range, &[fs, fl, fd], &[]);
        b.g.outputs = vec![c, fc, fr];
        assert_eq!(fold_constants(&mut b.g).unwrap(), 4);
        assert_eq!(b.g.konst(r).unwrap().to_i64_vec(), Some(vec![10, 7, 4, 1]));
        assert_eq!(b.g.konst(sl).unwrap().to_i64_vec(), Some(vec![1, 7]));
        let ct = b.g.konst(c).unwrap();
        assert_eq!((ct.dtype, ct.to_i64_vec()), (DType::I32, Some(vec![1, 7])));
        assert_eq!(b.g.konst(fc).unwrap().to_i64_vec(), Some(vec![2, -1]));
        assert!(b.g.konst(fr).is_none(), "float Range is a kernel's work");
    }

    #[test]
    fn gather_index_out_of_range_is_an_error() {
        let mut b = B::new();
        let x = b.input("x", "f32[2,3]");
        let sh = b.node1(Op::Shape, &[x], &[]);
        let idx = b.ints("idx", &[5]);
        let g = b.node1(Op::Gather, &[sh, idx], &[]);
        b.g.outputs = vec![g];
        let err = fold_constants(&mut b.g).unwrap_err();
        assert_eq!(
            err.to_string(),
            "operand 1 (`indices`) of Gather node \"n1\" holds index 5, out of range for axis 0 of size 2"
        );
    }

    /// The GQA check of ONNX's Attention function body: every value comes from input shapes.
    #[test]
    fn mod_equal_where_shape_chain_folds() {
        let mut b = B::new();
        let q = b.input("q", "f32[2,6,4,8]");
        let k = b.input("k", "f32[2,3,4,8]");
        let heads = |b: &mut B, x| {
            b.node1(
                Op::Shape,
                &[x],
                &[("start", Attr::Int(1)), ("end", Attr::Int(2))],
            )
        };
        let (qh, kh) = (heads(&mut b, q), heads(&mut b, k));
        let zero = b.ints("zero", &[0]);
        let one = b.ints("one", &[1]);
        let same = b.node1(Op::Equal, &[qh, kh], &[]);
        let gqa1 = b.node1(Op::Not, &[same], &[]);
        let rem = b.node1(Op::Mod, &[qh, kh], &[]);
        let gqa2 = b.node1(Op::Equal, &[rem, zero], &[]);
        let gqa = b.node1(Op::And, &[gqa1, gqa2], &[]);
        let div = b.node1(Op::Div, &[qh, kh], &[]);
        let inter = b.node1(Op::Where, &[gqa, div, one], &[]);
        let dims = b.node1(Op::Shape, &[k], &[]);
        let batch = b.node1(Op::Slice, &[dims, zero, one], &[]);
        let rest = b.ints("rest", &[4, 8]);
        let shape = b.node1(
            Op::Concat,
            &[batch, kh, inter, rest],
            &[("axis", Attr::Int(0))],
        );
        let two = b.ints("two", &[2]);
        let ku = b.node1(Op::Unsqueeze, &[k, two], &[]);
        let ke = b.node1(Op::Expand, &[ku, shape], &[]);
        let prod = b.node1(Op::ReduceProd, &[shape], &[("keepdims", Attr::Int(0))]);
        let less = b.node1(Op::Less, &[kh, qh], &[]);
        b.g.outputs = vec![ke, prod, less];
        fold_constants(&mut b.g).unwrap();
        assert_eq!(
            b.g.konst(shape).unwrap().to_i64_vec(),
            Some(vec![2, 3, 2, 4, 8])
        );
        assert_eq!(b.g.ty(ke).unwrap().to_string(), "f32[2,3,2,4,8]");
        assert_eq!(b.g.konst(prod).unwrap().to_i64_vec(), Some(vec![384]));
        assert_eq!(b.g.konst(less).unwrap().to_i64_vec(), Some(vec![1]));
        let ops: Vec<Op> = b.g.nodes.iter().map(|n| n.op).collect();
        assert_eq!(ops, vec![Op::Unsqueeze, Op::Expand]);
        crate::verify(&b.g).unwrap();
    }

    #[test]
    fn a_runtime_inputs_values_are_never_folded() {
        let mut b = B::new();
        let x = b.input("x", "i64[2]");
        let y = b.input("y", "f32[3,4]");
        let two = b.ints("two", &[2]);
        let m = b.node1(Op::Mod, &[x, two], &[]);
        let zero = b.ints("zero", &[0]);
        let e = b.node1(Op::Equal, &[m, zero], &[]);
        // Mixed with a known shape, the result still reads x.
        let sh = b.node1(Op::Shape, &[y], &[]);
        let w = b.node1(Op::Where, &[e, sh, two], &[]);
        let c = b.node1(Op::Cast, &[x], &[("to", Attr::Int(1))]);
        b.g.outputs = vec![w, c];
        assert_eq!(fold_constants(&mut b.g).unwrap(), 1, "only Shape folds");
        assert!([m, e, w, c].iter().all(|v| b.g.konst(*v).is_none()));
        // So a shape operand computed from it is refused.
        let r = b.node1(Op::Expand, &[y, w], &[]);
        b.g.outputs = vec![r];
        let err = crate::infer_shapes(&mut b.g).unwrap_err();
        assert_eq!(
            err.to_string(),
            "operand 1 (`shape`) of Expand node \"n5\" must be known at compile time"
        );
    }

    #[test]
    fn scalar_float_scale_folds_but_float_tensors_do_not() {
        let mut b = B::new();
        let q = b.input("q", "f16[1,2,3,8]");
        let hs = b.node1(Op::Shape, &[q], &[("start", Attr::Int(3))]);
        let hf = b.node1(Op::Cast, &[hs], &[("to", Attr::Int(1))]);
        let sq = b.node1(Op::Sqrt, &[hf], &[]);
        let one = b.konst("one", Tensor::from_f32(vec![1], &[1.0]));
        let scale = b.node1(Op::Div, &[one, sq], &[]);
        let half = b.node1(Op::CastLike, &[scale, q], &[]);
        let y = b.node1(Op::Mul, &[q, half], &[]);
        let v = b.konst("v", Tensor::from_f32(vec![2], &[4.0, 9.0]));
        let vs = b.node1(Op::Sqrt, &[v], &[]);
        b.g.outputs = vec![y, vs];
        assert_eq!(fold_constants(&mut b.g).unwrap(), 5);
        assert_eq!(
            b.g.konst(scale).unwrap().to_f64_vec(),
            Some(vec![(1.0 / 8f32.sqrt()) as f64])
        );
        let h = b.g.konst(half).unwrap();
        assert_eq!(
            (h.dtype, h.to_f64_vec()),
            (
                DType::F16,
                Some(vec![half::f16::from_f32(1.0 / 8f32.sqrt()).to_f64()])
            )
        );
        assert!(b.g.konst(y).is_none() && b.g.konst(vs).is_none());
        let ops: Vec<Op> = b.g.nodes.iter().map(|n| n.op).collect();
        assert_eq!(ops, vec![Op::Mul, Op::Sqrt]);
    }

    /// The window functions' bodies: `Range(0, Cast(size), 1)` in float, with `size` bound.
    #[test]
    fn bound_size_through_float_cast_decides_a_range() {
        let mut b = B::new();
        let size = b.input("size", "i64[]");
        b.g.value_mut(size).konst = Some(Tensor::from_i64(vec![], &[10]));
        b.g.bound_inputs.push(size);
        let sf = b.node1(Op::Cast, &[size], &[("to", Attr::Int(1))]);
        let onef = b.konst("one", Tensor::from_f32(vec![], &[1.0]));
        let sym = b.node1(Op::Sub, &[sf, onef], &[]);
        let zero = b.konst("zero", Tensor::from_f32(vec![], &[0.0]));
        let r = b.node1(Op::Range, &[zero, sf, onef], &[]);
        b.g.outputs = vec![r, sym];
        assert_eq!(fold_constants(&mut b.g).unwrap(), 2);
        assert_eq!(b.g.ty(r).unwrap().to_string(), "f32[10]");
        assert_eq!(b.g.konst(sym).unwrap().to_f64_vec(), Some(vec![9.0]));
        assert!(b.g.konst(r).is_none(), "float Range stays a kernel");
    }

    #[test]
    fn integer_semantics() {
        let mut b = B::new();
        let a = b.ints("a", &[-7, 7, -7, 7]);
        let d = b.ints("d", &[3, -3, -3, 3]);
        let m = b.node1(Op::Mod, &[a, d], &[]);
        let f = b.node1(Op::Mod, &[a, d], &[("fmod", Attr::Int(1))]);
        let q = b.node1(Op::Div, &[a, d], &[]);
        let z = b.ints("z", &[0]);
        let mz = b.node1(Op::Mod, &[a, z], &[]);
        let mx = b.node1(Op::Max, &[a, d, z], &[]);
        let ge = b.node1(Op::GreaterOrEqual, &[a, d], &[]);
        let x = b.node1(Op::Xor, &[ge, ge], &[]);
        let sh = b.ints("sh", &[2, 4]);
        let ex = b.node1(Op::Expand, &[d, sh], &[]);
        let ax = b.ints("ax", &[0]);
        let rs = b.node1(Op::ReduceSum, &[ex, ax], &[]);
        let c8 = b.node1(Op::Cast, &[a], &[("to", Attr::Int(2))]);
        b.g.outputs = vec![m, f, q, mz, mx, x, rs, c8];
        fold_constants(&mut b.g).unwrap();
        let k = |v| b.g.konst(v).and_then(|t| t.to_i64_vec());
        assert_eq!(k(m), Some(vec![2, -2, -1, 1]));
        assert_eq!(k(f), Some(vec![-1, 1, -1, 1]));
        assert_eq!(k(q), Some(vec![-2, -2, 2, 2]));
        assert_eq!(k(mz), None, "modulo by zero is left to the kernel");
        assert_eq!(k(mx), Some(vec![3, 7, 0, 7]));
        assert_eq!(k(x), Some(vec![0; 4]));
        assert_eq!(k(rs), Some(vec![6, -6, -6, 6]));
        assert_eq!(b.g.ty(rs).unwrap().to_string(), "i64[1,4]");
        assert_eq!(k(c8), Some(vec![249, 7, 249, 7]), "u8 wraps");
    }

    #[test]
    fn sub_byte_and_bool_encoding() {
        assert_eq!(encode_ints(DType::I4, &[1, -1, 7]), vec![0xf1, 0x07]);
        assert_eq!(
            encode_ints(DType::U2, &[3, 0, 1, 2, 1]),
            vec![0b1001_0011, 0x01]
        );
        assert_eq!(encode_ints(DType::Bool, &[0, 5]), vec![0, 1]);
        assert_eq!(encode_ints(DType::I16, &[-2]), vec![0xfe, 0xff]);
    }
}
