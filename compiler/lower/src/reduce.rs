//! Lowering of reductions along axes, ArgMax/ArgMin, CumSum, TopK, and
//! Softmax/LogSoftmax/Hardmax. One section per op.
//!
//! All of them share one shape of kernel: the input's axes are split into *kept* axes (one
//! output element, or one row, per point) and *reduced* axes (walked by nested loops inside
//! one program instance). Program instances take contiguous chunks of output elements, so
//! every instance writes its own elements and nothing needs atomics. Narrow floats (f16,
//! bf16, float8) accumulate in f32 and are rounded once at the store.

use crate::util::{compute_dtype, linear_index, strides, unravel, widen, EW_CHUNK};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op};
use tessera_kir::{
    Access, BinOp, Buf, CastMode, CmpOp, Execution, KernelBuilder, MathFn, Ty, UnOp, Val,
};

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    use Op::*;
    match node.op {
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2
        | ReduceSumSquare | ReduceLogSum | ReduceLogSumExp => reduce(cx, node),
        ArgMax | ArgMin => arg_reduce(cx, node),
        Softmax | LogSoftmax | Hardmax => softmax(cx, node),
        CumSum => cumsum(cx, node),
        TopK => topk(cx, node),
        op => Err(cx.unsupported(format!("no reduction lowering for {op}"))),
    }
}

// ==== Shared: axis split and nested loops ====

/// An input's axes split into kept and reduced ones, each as (extent, element stride) with
/// size-1 axes dropped and contiguous neighbours merged.
struct AxisSplit {
    kept: Vec<(u64, u64)>,
    reduced: Vec<(u64, u64)>,
}

impl AxisSplit {
    fn new(dims: &[u64], reduced_axes: &[usize]) -> AxisSplit {
        let st = strides(dims);
        let mut kept = Vec::new();
        let mut reduced = Vec::new();
        for (ax, (&d, &s)) in dims.iter().zip(&st).enumerate() {
            let list: &mut Vec<(u64, u64)> = if reduced_axes.contains(&ax) {
                &mut reduced
            } else {
                &mut kept
            };
            if d == 1 {
                continue;
            }
            match list.last_mut() {
                // Merge with the previous axis of the same group when it steps right over
                // this one (true exactly when they are adjacent in memory).
                Some(last) if last.1 == s * d => *last = (last.0 * d, s),
                _ => list.push((d, s)),
            }
        }
        AxisSplit { kept, reduced }
    }

    fn kept_count(&self) -> u64 {
        self.kept.iter().map(|a| a.0).product()
    }

    fn reduced_count(&self) -> u64 {
        self.reduced.iter().map(|a| a.0).product()
    }
}

/// Nested loops over `axes` starting at element offset `base`, carrying `init`; `f` gets the
/// element offset and the carried values and returns their next values.
fn fold_axes(
    b: &mut KernelBuilder,
    axes: &[(u64, u64)],
    base: Val,
    init: &[Val],
    f: &dyn Fn(&mut KernelBuilder, Val, &[Val]) -> Vec<Val>,
) -> Vec<Val> {
    match axes.split_first() {
        None => f(b, base, init),
        Some((&(extent, stride), rest)) => b.range_fold(0, extent as i64, init, |b, i, acc| {
            let s = b.index(stride as i64);
            let step = b.mul(i, s);
            let off = b.add(base, step);
            fold_axes(b, rest, off, acc, f)
        }),
    }
}

/// Sets a 1-D grid over `rows` rows of `row_len` elements each, about [`EW_CHUNK`] elements
/// per program instance, and emits the loop over this instance's rows. `f` gets the row
/// number.
fn for_each_row(
    b: &mut KernelBuilder,
    rows: u64,
    row_len: u64,
    f: &dyn Fn(&mut KernelBuilder, Val),
) {
    let per = (EW_CHUNK / row_len.max(1)).clamp(1, rows.max(1));
    b.set_grid(&[rows.div_ceil(per)]);
    let pid = b.program_id(0);
    let perv = b.index(per as i64);
    let start = b.mul(pid, perv);
    let start_plus = b.add(start, perv);
    let total = b.index(rows as i64);
    let end = b.min(start_plus, total);
    let one = b.index(1);
    b.for_loop(start, end, one, &[], |b, r, _| {
        f(b, r);
        Vec::new()
    });
}

/// The element offset of the first element of kept-row `row`.
fn row_base(b: &mut KernelBuilder, row: Val, kept: &[(u64, u64)]) -> Val {
    let dims: Vec<u64> = kept.iter().map(|a| a.0).collect();
    let st: Vec<u64> = kept.iter().map(|a| a.1).collect();
    let coords = unravel(b, row, &dims);
    linear_index(b, &coords, &st)
}

/// Normalises a possibly negative axis against `rank` (a scalar has no axis to name).
fn norm_axis(cx: &LowerCx, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(cx.invalid(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// The smallest and largest values of an int (or bool) dtype, as kernel-IR literal bits.
fn int_range(d: DType) -> (i64, i64) {
    match d {
        DType::Bool => (0, 1),
        DType::U64 => (0, -1), // all ones: u64::MAX as a two's-complement pattern
        DType::I64 => (i64::MIN, i64::MAX),
        d if d.is_unsigned_int() => (0, (1i64 << d.bits()) - 1),
        d => (-(1i64 << (d.bits() - 1)), (1i64 << (d.bits() - 1)) - 1),
    }
}

fn io(cx: &LowerCx, node: &Node) -> Result<(tessera_ir::ValueId, tessera_ir::ValueId)> {
    let x = node
        .input(0)
        .ok_or_else(|| cx.invalid("operand 0 is missing"))?;
    let y = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("no output"))?;
    Ok((x, y))
}

fn check_out_count(cx: &LowerCx, out_dims: &[u64], expected: u64) -> Result<()> {
    let n: u64 = out_dims.iter().product();
    if n != expected {
        return Err(cx.invalid(format!(
            "output shape {out_dims:?} does not match the reduction ({expected} elements)"
        )));
    }
    Ok(())
}

// ==== ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceSumSquare ReduceLogSum ReduceLogSumExp ====

fn reduce(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    use Op::*;
    let (x, y) = io(cx, node)?;
    let dims = cx.dims(x)?;
    let dt = cx.dtype(x)?;
    let out_dims = cx.dims(y)?;
    let out_dt = cx.dtype(y)?;
    let rank = dims.len();
    let axes = match cx.const_ints(node, 1)? {
        Some(a) => a,
        None => node
            .attr_ints("axes")
            .map(|a| a.to_vec())
            .unwrap_or_default(),
    };
    let xb = cx.buffer(x)?;
    let yb = cx.buffer(y)?;
    if axes.is_empty() && node.attr_int("noop_with_empty_axes", 0) != 0 {
        // No axes and the noop flag: the identity.
        if cx.numel(y)? != cx.numel(x)? || dt != out_dt {
            return Err(cx.invalid("noop reduction changes the shape or dtype"));
        }
        if cx.numel(y)? > 0 {
            cx.copy(xb, yb);
        }
        return Ok(Execution::Host);
    }
    let mut red: Vec<usize> = Vec::new();
    if axes.is_empty() {
        red = (0..rank).collect();
    } else {
        for &a in &axes {
            let a = norm_axis(cx, a, rank)?;
            if !red.contains(&a) {
                red.push(a);
            }
        }
    }
    let split = AxisSplit::new(&dims, &red);
    let out_n = split.kept_count();
    check_out_count(cx, &out_dims, out_n)?;
    if out_n == 0 {
        return Ok(Execution::Kernel);
    }
    let count = split.reduced_count();
    let op = node.op;
    if dt == DType::Bool && !matches!(op, ReduceMax | ReduceMin) {
        return Err(cx.unsupported(format!("{op} on bool")));
    }
    // The accumulator: f32 for narrow floats; f64 for ints under a float-valued finish.
    let acc_dt =
        if !dt.is_float() && matches!(op, ReduceL2 | ReduceLogSum | ReduceLogSumExp | ReduceMean) {
            if op == ReduceMean {
                dt // an int mean is the truncated quotient of the exact int sum
            } else {
                DType::F64
            }
        } else {
            compute_dtype(dt)
        };
    let acc_ty = Ty::scalar(acc_dt);
    let name = cx.kernel_name(&op.name().to_ascii_lowercase());
    let mut b = KernelBuilder::new(name);
    let inp = b.param("x", dt, dims.iter().product(), Access::Read);
    let out = b.param("y", out_dt, out_n, Access::Write);
    let split_ref = &split;
    for_each_row(&mut b, out_n, count, &|b, row| {
        let base = row_base(b, row, &split_ref.kept);
        let load = |b: &mut KernelBuilder, off: Val| {
            let v = b.load(inp, off, 1);
            let v = widen(b, v);
            b.cast(v, acc_dt, CastMode { saturate: false })
        };
        // LogSumExp subtracts the maximum first so exp never overflows.
        let shift = if op == ReduceLogSumExp {
            let init = b.const_float(acc_ty, f64::NEG_INFINITY);
            let m = fold_axes(b, &split_ref.reduced, base, &[init], &|b, off, acc| {
                let v = load(b, off);
                vec![b.max(acc[0], v)]
            })[0];
            // An infinite or NaN maximum cannot be subtracted (inf - inf); shift by 0 then.
            let zero = b.const_float(acc_ty, 0.0);
            let d = b.sub(m, m);
            let finite = b.cmp(CmpOp::Eq, d, zero);
            Some(b.select(finite, m, zero))
        } else {
            None
        };
        let init = match op {
            ReduceProd => b.const_num(acc_ty, 1.0),
            ReduceMax if acc_dt.is_float() => b.const_float(acc_ty, f64::NEG_INFINITY),
            ReduceMin if acc_dt.is_float() => b.const_float(acc_ty, f64::INFINITY),
            ReduceMax => b.const_int(acc_ty, int_range(acc_dt).0),
            ReduceMin => b.const_int(acc_ty, int_range(acc_dt).1),
            _ => b.const_num(acc_ty, 0.0),
        };
        let acc = fold_axes(b, &split_ref.reduced, base, &[init], &|b, off, acc| {
            let v = load(b, off);
            let a = acc[0];
            let next = match op {
                ReduceProd => b.mul(a, v),
                ReduceMax if acc_dt == DType::Bool => b.binary(BinOp::Or, a, v),
                ReduceMin if acc_dt == DType::Bool => b.binary(BinOp::And, a, v),
                ReduceMax => b.max(a, v),
                ReduceMin => b.min(a, v),
                ReduceL1 => {
                    let av = b.unary(UnOp::Abs, v);
                    b.add(a, av)
                }
                ReduceL2 | ReduceSumSquare => {
                    let sq = b.mul(v, v);
                    b.add(a, sq)
                }
                ReduceLogSumExp => {
                    let d = b.sub(v, shift.unwrap_or(v));
                    let e = b.math(MathFn::Exp, &[d]);
                    b.add(a, e)
                }
                _ => b.add(a, v),
            };
            vec![next]
        })[0];
        let r = match op {
            ReduceMean => {
                let n = b.const_num(acc_ty, count as f64);
                b.div(acc, n)
            }
            ReduceL2 => b.unary(UnOp::Sqrt, acc),
            ReduceLogSum => b.math(MathFn::Log, &[acc]),
            ReduceLogSumExp => {
                let l = b.math(MathFn::Log, &[acc]);
                b.add(l, shift.unwrap_or(l))
            }
            _ => acc,
        };
        // Float-valued finishes on ints round toward zero, as the reference's astype does.
        let r = b.cast(r, out_dt, CastMode { saturate: false });
        b.store(out, row, r);
    });
    cx.launch(b.finish(), vec![xb, yb]);
    Ok(Execution::Kernel)
}

// ==== ArgMax ArgMin ====

/// Emits the running arg-max/min update along one axis: returns the winning index (i64).
/// Ties keep the first index, or the last with `last`; a NaN wins over numbers and the first
/// NaN is kept (the last with `last`), as numpy's argmax does.
fn emit_arg(
    b: &mut KernelBuilder,
    inp: Buf,
    base: Val,
    (extent, stride): (u64, u64),
    max: bool,
    last: bool,
    is_float: bool,
) -> Val {
    let first = b.load(inp, base, 1);
    let first = widen(b, first);
    let zero = b.index(0);
    let one = b.index(1);
    let hi = b.index(extent as i64);
    let res = b.for_loop(one, hi, one, &[first, zero], |b, i, acc| {
        let (best, best_i) = (acc[0], acc[1]);
        let s = b.index(stride as i64);
        let off = b.mul(i, s);
        let off = b.add(base, off);
        let v = b.load(inp, off, 1);
        let v = widen(b, v);
        let better = b.cmp(if max { CmpOp::Gt } else { CmpOp::Lt }, v, best);
        let take = if last {
            let eq = b.cmp(CmpOp::Eq, v, best);
            b.binary(BinOp::Or, better, eq)
        } else {
            better
        };
        let take = if is_float {
            let v_nan = b.cmp(CmpOp::Ne, v, v);
            let best_nan = b.cmp(CmpOp::Ne, best, best);
            let best_num = b.unary(UnOp::Not, best_nan);
            // first: a NaN replaces a number; last: a NaN replaces anything.
            let nan_take = if last {
                v_nan
            } else {
                b.binary(BinOp::And, v_nan, best_num)
            };
            let num_take = b.binary(BinOp::And, take, best_num);
            b.binary(BinOp::Or, num_take, nan_take)
        } else {
            take
        };
        let nb = b.select(take, v, best);
        let ni = b.select(take, i, best_i);
        vec![nb, ni]
    });
    res[1]
}

fn arg_reduce(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = io(cx, node)?;
    let dims = cx.dims(x)?;
    let dt = cx.dtype(x)?;
    let out_dims = cx.dims(y)?;
    if cx.dtype(y)? != DType::I64 {
        return Err(cx.invalid("output must be i64"));
    }
    let axis = norm_axis(cx, node.attr_int("axis", 0), dims.len())?;
    let last = node.attr_int("select_last_index", 0) != 0;
    let max = node.op == Op::ArgMax;
    let xb = cx.buffer(x)?;
    let yb = cx.buffer(y)?;
    let split = AxisSplit::new(&dims, &[axis]);
    let out_n = split.kept_count();
    check_out_count(cx, &out_dims, out_n)?;
    if out_n == 0 {
        return Ok(Execution::Kernel);
    }
    let extent = dims.get(axis).copied().unwrap_or(1);
    if extent == 0 {
        return Err(cx.invalid(format!("{} over an empty axis has no answer", node.op)));
    }
    let stride = strides(&dims).get(axis).copied().unwrap_or(1);
    let name = cx.kernel_name(&node.op.name().to_ascii_lowercase());
    let mut b = KernelBuilder::new(name);
    let inp = b.param("x", dt, dims.iter().product(), Access::Read);
    let out = b.param("y", DType::I64, out_n, Access::Write);
    let split_ref = &split;
    for_each_row(&mut b, out_n, extent, &|b, row| {
        let base = row_base(b, row, &split_ref.kept);
        let idx = emit_arg(b, inp, base, (extent, stride), max, last, dt.is_float());
        b.store(out, row, idx);
    });
    cx.launch(b.finish(), vec![xb, yb]);
    Ok(Execution::Kernel)
}

// ==== Softmax LogSoftmax Hardmax ====

fn softmax(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = io(cx, node)?;
    let dims = cx.dims(x)?;
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("{} on {dt}", node.op)));
    }
    if cx.dims(y)? != dims || cx.dtype(y)? != dt {
        return Err(cx.invalid("output type differs from the input's"));
    }
    let axis = norm_axis(cx, node.attr_int("axis", -1), dims.len())?;
    let xb = cx.buffer(x)?;
    let yb = cx.buffer(y)?;
    let n: u64 = dims.iter().product();
    if n == 0 {
        return Ok(Execution::Kernel);
    }
    let extent = dims.get(axis).copied().unwrap_or(1);
    let stride = strides(&dims).get(axis).copied().unwrap_or(1);
    // Keep the axis itself even when it has size 1, so the row loops below always run.
    let kept = AxisSplit::new(&dims, &[axis]).kept;
    let rows = n / extent;
    let op = node.op;
    // Along the last axis, on a target with a vector-unit buffer: a tile program of rows.
    if axis + 1 == dims.len() && op != Op::Hardmax && crate::rows::softmax_as_tiles(cx) {
        let log = op == Op::LogSoftmax;
        if let Some(mut k) = crate::rows::softmax_kernel(String::new(), dt, rows, extent, log) {
            k.name = cx.kernel_name(&op.name().to_ascii_lowercase());
            cx.launch(k, vec![xb, yb]);
            return Ok(Execution::Kernel);
        }
    }
    let acc_dt = compute_dtype(dt);
    let acc_ty = Ty::scalar(acc_dt);
    let name = cx.kernel_name(&op.name().to_ascii_lowercase());
    let mut b = KernelBuilder::new(name);
    let inp = b.param("x", dt, n, Access::Read);
    let out = b.param("y", dt, n, Access::Write);
    let axis_loop = [(extent, stride)];
    for_each_row(&mut b, rows, extent, &|b, row| {
        let base = row_base(b, row, &kept);
        let load = |b: &mut KernelBuilder, off: Val| {
            let v = b.load(inp, off, 1);
            widen(b, v)
        };
        let store = |b: &mut KernelBuilder, off: Val, v: Val| {
            let v = b.cast(v, dt, CastMode { saturate: false });
            b.store(out, off, v);
        };
        if op == Op::Hardmax {
            // 1 at the first maximum of the row, 0 elsewhere.
            let idx = emit_arg(b, inp, base, (extent, stride), true, false, true);
            let s = b.index(stride as i64);
            let hot = b.mul(idx, s);
            let hot = b.add(base, hot);
            fold_axes(b, &axis_loop, base, &[], &|b, off, _| {
                let is_hot = b.cmp(CmpOp::Eq, off, hot);
                let one = b.const_float(acc_ty, 1.0);
                let zero = b.const_float(acc_ty, 0.0);
                let v = b.select(is_hot, one, zero);
                store(b, off, v);
                Vec::new()
            });
            return;
        }
        // Numerically stable: subtract the row maximum before exp.
        let ninf = b.const_float(acc_ty, f64::NEG_INFINITY);
        let m = fold_axes(b, &axis_loop, base, &[ninf], &|b, off, acc| {
            let v = load(b, off);
            vec![b.max(acc[0], v)]
        })[0];
        let zero = b.const_float(acc_ty, 0.0);
        let sum = fold_axes(b, &axis_loop, base, &[zero], &|b, off, acc| {
            let v = load(b, off);
            let d = b.sub(v, m);
            let e = b.math(MathFn::Exp, &[d]);
            vec![b.add(acc[0], e)]
        })[0];
        if op == Op::LogSoftmax {
            let ls = b.math(MathFn::Log, &[sum]);
            fold_axes(b, &axis_loop, base, &[], &|b, off, _| {
                let v = load(b, off);
                let d = b.sub(v, m);
                let r = b.sub(d, ls);
                store(b, off, r);
                Vec::new()
            });
        } else {
            let one = b.const_float(acc_ty, 1.0);
            let inv = b.div(one, sum);
            fold_axes(b, &axis_loop, base, &[], &|b, off, _| {
                let v = load(b, off);
                let d = b.sub(v, m);
                let e = b.math(MathFn::Exp, &[d]);
                let r = b.mul(e, inv);
                store(b, off, r);
                Vec::new()
            });
        }
    });
    cx.launch(b.finish(), vec![xb, yb]);
    Ok(Execution::Kernel)
}

// ==== CumSum ====

fn cumsum(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = io(cx, node)?;
    let dims = cx.dims(x)?;
    let dt = cx.dtype(x)?;
    if cx.dims(y)? != dims || cx.dtype(y)? != dt {
        return Err(cx.invalid("output type differs from the input's"));
    }
    if dt == DType::Bool {
        return Err(cx.unsupported("CumSum on bool"));
    }
    let axis = match cx.const_ints(node, 1)?.as_deref() {
        Some([a]) => *a,
        _ => return Err(cx.invalid("axis must be a scalar")),
    };
    let axis = norm_axis(cx, axis, dims.len())?;
    let exclusive = node.attr_int("exclusive", 0) != 0;
    let reverse = node.attr_int("reverse", 0) != 0;
    let xb = cx.buffer(x)?;
    let yb = cx.buffer(y)?;
    let n: u64 = dims.iter().product();
    if n == 0 {
        return Ok(Execution::Kernel);
    }
    let extent = dims[axis];
    let stride = strides(&dims)[axis] as i64;
    let kept = AxisSplit::new(&dims, &[axis]).kept;
    let acc_ty = Ty::scalar(compute_dtype(dt));
    let name = cx.kernel_name("cumsum");
    let mut b = KernelBuilder::new(name);
    let inp = b.param("x", dt, n, Access::Read);
    let out = b.param("y", dt, n, Access::Write);
    for_each_row(&mut b, n / extent, extent, &|b, row| {
        let base = row_base(b, row, &kept);
        let zero = b.const_num(acc_ty, 0.0);
        b.range_fold(0, extent as i64, &[zero], |b, i, acc| {
            // Walk the axis backwards for `reverse`.
            let j = if reverse {
                let last = b.index(extent as i64 - 1);
                b.sub(last, i)
            } else {
                i
            };
            let s = b.index(stride);
            let off = b.mul(j, s);
            let off = b.add(base, off);
            let v = b.load(inp, off, 1);
            let v = widen(b, v);
            let next = b.add(acc[0], v);
            let r = if exclusive { acc[0] } else { next };
            let r = b.cast(r, dt, CastMode { saturate: false });
            b.store(out, off, r);
            vec![next]
        });
    });
    cx.launch(b.finish(), vec![xb, yb]);
    Ok(Execution::Kernel)
}

// ==== TopK ====

fn topk(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, vals) = io(cx, node)?;
    let idxs = *node
        .outputs
        .get(1)
        .ok_or_else(|| cx.invalid("TopK needs two outputs"))?;
    let dims = cx.dims(x)?;
    let dt = cx.dtype(x)?;
    let k = match cx.const_ints(node, 1)?.as_deref() {
        Some([k]) if *k >= 0 => *k as u64,
        _ => return Err(cx.invalid("K must be one non-negative integer")),
    };
    let axis = norm_axis(cx, node.attr_int("axis", -1), dims.len())?;
    let largest = node.attr_int("largest", 1) != 0;
    let extent = dims.get(axis).copied().unwrap_or(1);
    if k > extent {
        return Err(cx.invalid(format!("K = {k} exceeds the axis length {extent}")));
    }
    let mut out_dims = dims.clone();
    if let Some(d) = out_dims.get_mut(axis) {
        *d = k;
    }
    if cx.dims(vals)? != out_dims || cx.dims(idxs)? != out_dims || cx.dtype(idxs)? != DType::I64 {
        return Err(cx.invalid("output shapes or dtypes do not match TopK's"));
    }
    let xb = cx.buffer(x)?;
    let vb = cx.buffer(vals)?;
    let ib = cx.buffer(idxs)?;
    let out_n: u64 = out_dims.iter().product();
    if out_n == 0 {
        return Ok(Execution::Kernel);
    }
    let in_stride = strides(&dims)[axis] as i64;
    let out_stride = strides(&out_dims)[axis] as i64;
    // Rows are enumerated over the kept axes of the output; map a row to both layouts.
    let kept_in = AxisSplit::new(&dims, &[axis]).kept;
    let kept_out = AxisSplit::new(&out_dims, &[axis]).kept;
    let rows = out_n / k;
    let name = cx.kernel_name("topk");
    let mut b = KernelBuilder::new(name);
    let inp = b.param("x", dt, dims.iter().product(), Access::Read);
    // The outputs double as the insertion buffer, so they are read as well as written.
    let vout = b.param("values", dt, out_n, Access::ReadWrite);
    let iout = b.param("indices", DType::I64, out_n, Access::ReadWrite);
    let is_float = dt.is_float();
    for_each_row(&mut b, rows, extent * k, &|b, row| {
        let in_base = row_base(b, row, &kept_in);
        let out_base = row_base(b, row, &kept_out);
        let ins = b.index(in_stride);
        let outs = b.index(out_stride);
        let kv = b.index(k as i64);
        // Insertion into the output itself, which holds the best `filled` elements sorted.
        // Elements arrive in index order and go after equal ones, so ties keep the lower
        // index first, as ONNX requires. NaN counts as larger than every number.
        let zero = b.index(0);
        b.range_fold(0, extent as i64, &[zero], |b, i, acc| {
            let filled = acc[0];
            let off = b.mul(i, ins);
            let off = b.add(in_base, off);
            let v = b.load(inp, off, 1);
            let wv = widen(b, v);
            // before(a, b): a ranks strictly ahead of b.
            let before = |b: &mut KernelBuilder, a: Val, c: Val| -> Val {
                let ahead = b.cmp(if largest { CmpOp::Gt } else { CmpOp::Lt }, a, c);
                if !is_float {
                    return ahead;
                }
                let a_nan = b.cmp(CmpOp::Ne, a, a);
                let c_nan = b.cmp(CmpOp::Ne, c, c);
                let c_num = b.unary(UnOp::Not, c_nan);
                let a_num = b.unary(UnOp::Not, a_nan);
                let (first, second) = if largest {
                    (a_nan, c_num)
                } else {
                    (a_num, c_nan)
                };
                let nan_order = b.binary(BinOp::And, first, second);
                b.binary(BinOp::Or, ahead, nan_order)
            };
            // pos = number of kept entries ranking at or ahead of v.
            let one = b.index(1);
            let pos = b.for_loop(zero, filled, one, &[zero], |b, j, cnt| {
                let o = b.mul(j, outs);
                let o = b.add(out_base, o);
                let e = b.load(vout, o, 1);
                let e = widen(b, e);
                let v_ahead = before(b, wv, e);
                let stays = b.unary(UnOp::Not, v_ahead);
                let inc = b.add(cnt[0], one);
                vec![b.select(stays, inc, cnt[0])]
            })[0];
            let fits = b.cmp(CmpOp::Lt, pos, kv);
            b.if_then(fits, |b| {
                // Shift entries pos..min(filled, k-1) down by one, from the back.
                let km1 = b.sub(kv, one);
                let top = b.min(filled, km1);
                let count = b.sub(top, pos);
                b.for_loop(zero, count, one, &[], |b, t, _| {
                    let dst = b.sub(top, t);
                    let src = b.sub(dst, one);
                    let so = b.mul(src, outs);
                    let so = b.add(out_base, so);
                    let dso = b.mul(dst, outs);
                    let dso = b.add(out_base, dso);
                    let ev = b.load(vout, so, 1);
                    let ei = b.load(iout, so, 1);
                    b.store(vout, dso, ev);
                    b.store(iout, dso, ei);
                    Vec::new()
                });
                let po = b.mul(pos, outs);
                let po = b.add(out_base, po);
                b.store(vout, po, v);
                b.store(iout, po, i);
            });
            let inc = b.add(filled, one);
            vec![b.min(inc, kv)]
        });
    });
    cx.launch(b.finish(), vec![xb, vb, ib]);
    Ok(Execution::Kernel)
}
