//! Lowering of shape changes and data movement: reshapes (aliases), transposes, concat, split,
//! slice, gather, pad, tile, and the meta ops left after folding. One section per op.
//!
//! Start at [`lower`]. Most ops here are one instance of the *gather-style copy* skeleton
//! ([`CopySpec`], [`copy_kernel`]): for every point of an iteration space, the source element is
//! found through one [`AxisMap`] per axis and written to an affine destination position. That
//! one kernel shape implements Transpose, Slice, Expand, Tile, Pad, Concat (one launch per input),
//! Split (one launch per output) and DepthToSpace/SpaceToDepth.

use crate::util::{broadcast_strides, linear_index, strides, unravel};
use crate::{LowerCx, Result};
use tessera_ir::{Attr, DType, Node, Op, Tensor, ValueId};
use tessera_kir::{
    Access, BinOp, BufferId, CastMode, CmpOp, Execution, Kernel, KernelBuilder, Scalar, Ty, Val,
};

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    match node.op {
        Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze | Op::Identity => {
            alias_op(cx, node)
        }
        Op::Dropout => dropout(cx, node),
        Op::Transpose => transpose(cx, node),
        Op::Concat => concat(cx, node),
        Op::Split => split(cx, node),
        Op::Slice => slice(cx, node),
        Op::Gather => gather(cx, node),
        Op::GatherElements => gather_elements(cx, node),
        Op::GatherND => gather_nd(cx, node),
        Op::Expand => expand(cx, node),
        Op::Pad => pad(cx, node),
        Op::Tile => tile(cx, node),
        Op::DepthToSpace => depth_to_space(cx, node),
        Op::SpaceToDepth => space_to_depth(cx, node),
        Op::Trilu => trilu(cx, node),
        Op::OneHot => one_hot(cx, node),
        Op::EyeLike => eye_like(cx, node),
        Op::Shape | Op::Size | Op::Constant => literal_op(cx, node),
        Op::ConstantOfShape => constant_of_shape(cx, node),
        Op::Range => range(cx, node),
        op => Err(cx.unsupported(format!("no lowering for op {op}"))),
    }
}

// ==== Shared helpers ====

/// Operand `i`, or an error naming it as missing.
pub(crate) fn operand(cx: &LowerCx, node: &Node, i: usize) -> Result<ValueId> {
    node.input(i).ok_or_else(|| {
        cx.invalid(format!(
            "missing operand {i} (`{}`)",
            tessera_ir::op::operand_name(node.op, i)
        ))
    })
}

/// Result `i`, or an error naming it as missing.
pub(crate) fn result(cx: &LowerCx, node: &Node, i: usize) -> Result<ValueId> {
    node.outputs
        .get(i)
        .copied()
        .ok_or_else(|| cx.invalid(format!("missing result {i}")))
}

/// Normalises a possibly negative axis against `rank`.
pub(crate) fn norm_axis(cx: &LowerCx, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(cx.invalid(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// A literal of dtype `dtype` equal to `v` (ints and bools by bit pattern, floats by value).
pub(crate) fn scalar_of(dtype: DType, v: f64) -> Scalar {
    if dtype.is_float() {
        Scalar::Float(v)
    } else if dtype == DType::Bool {
        Scalar::Int((v != 0.0) as i64)
    } else {
        Scalar::Int(v as i64)
    }
}

/// Element `i` of a constant tensor as a literal of its own dtype.
pub(crate) fn tensor_scalar(t: &Tensor, i: u64) -> Option<Scalar> {
    if t.dtype.is_float() {
        t.get_f64(i).map(Scalar::Float)
    } else {
        t.get_i64(i).map(Scalar::Int)
    }
}

/// How many program instances a kernel over `total` work items uses, and how many items each
/// takes: about `per` items each. Sub-byte outputs use one instance, so no two instances ever
/// write the same byte.
pub(crate) fn chunking(total: u64, per: u64, dtype: DType) -> (u64, u64) {
    if total == 0 {
        return (0, 1);
    }
    let chunk = if dtype.is_sub_byte() {
        total
    } else {
        per.max(1).min(total)
    };
    (total.div_ceil(chunk), chunk)
}

/// Sets a 1-D grid and emits `for item in [pid*chunk, min(total, (pid+1)*chunk))`, calling `f`
/// for each item.
pub(crate) fn for_each_item(
    b: &mut KernelBuilder,
    total: u64,
    chunk: u64,
    f: impl FnOnce(&mut KernelBuilder, Val),
) {
    b.set_grid(&[total.div_ceil(chunk.max(1))]);
    let pid = b.program_id(0);
    let c = b.index(chunk as i64);
    let lo = b.mul(pid, c);
    let hi0 = b.add(lo, c);
    let t = b.index(total as i64);
    let hi = b.min(hi0, t);
    let one = b.index(1);
    b.for_loop(lo, hi, one, &[], |b, i, _| {
        f(b, i);
        Vec::new()
    });
}

/// `a && b` where either may be absent (absent = true).
fn and_opt(b: &mut KernelBuilder, x: Option<Val>, y: Option<Val>) -> Option<Val> {
    match (x, y) {
        (Some(x), Some(y)) => Some(b.binary(BinOp::And, x, y)),
        (x, None) => x,
        (None, y) => y,
    }
}

// ==== The gather-style copy skeleton ====

/// How `Pad` maps an out-of-range coordinate back into the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// Out-of-range elements read the fill value.
    Constant,
    /// Mirror without repeating the edge element (numpy `reflect`).
    Reflect,
    /// Repeat the edge element.
    Edge,
    /// Wrap around (numpy `wrap`).
    Wrap,
}

/// How one axis of the iteration space maps to a source coordinate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AxisMap {
    /// `coord * mul + add`; the caller guarantees it stays in range.
    Affine { mul: i64, add: i64 },
    /// `coord % n` (Tile).
    Modulo { n: u64 },
    /// `coord - before`, brought back into `0..n` by `mode`.
    Pad { before: i64, n: u64, mode: PadMode },
}

/// Where `Pad`'s constant comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fill {
    Value(Scalar),
    /// A one-element buffer passed as the kernel's third parameter.
    Operand,
}

/// A gather-style copy: for every point `c` of `dims`, `dst[dst_offset + Σ c[i]*dst_strides[i]]
/// = src[src_offset + Σ map_i(c[i]) * src[i].1]` (or the fill value where a `Pad` map falls
/// outside its source in constant mode).
#[derive(Clone, Debug)]
pub struct CopySpec {
    pub dims: Vec<u64>,
    /// Per axis: the coordinate map and the source stride (elements).
    pub src: Vec<(AxisMap, i64)>,
    pub src_offset: i64,
    pub dst_strides: Vec<u64>,
    pub dst_offset: u64,
    pub fill: Fill,
}

impl CopySpec {
    /// A copy whose destination is the whole iteration space, row-major.
    pub fn dense(dims: Vec<u64>, src: Vec<(AxisMap, i64)>) -> CopySpec {
        let dst_strides = strides(&dims);
        CopySpec {
            dims,
            src,
            src_offset: 0,
            dst_strides,
            dst_offset: 0,
            fill: Fill::Value(Scalar::Int(0)),
        }
    }
}

/// The source coordinate of `coord` under `m`, and whether it is inside the source (absent:
/// always). The coordinate is always a valid index, even where the flag is false.
fn map_coord(b: &mut KernelBuilder, coord: Val, m: AxisMap) -> (Val, Option<Val>) {
    match m {
        AxisMap::Affine { mul, add } => {
            let mut v = coord;
            if mul != 1 {
                let k = b.index(mul);
                v = b.mul(v, k);
            }
            if add != 0 {
                let k = b.index(add);
                v = b.add(v, k);
            }
            (v, None)
        }
        AxisMap::Modulo { n } => {
            let k = b.index(n as i64);
            (b.binary(BinOp::Rem, coord, k), None)
        }
        AxisMap::Pad { before, n, mode } => {
            let bv = b.index(before);
            let i = b.sub(coord, bv);
            let n_i = n as i64;
            match mode {
                PadMode::Constant => {
                    let zero = b.index(0);
                    let nv = b.index(n_i);
                    let ge = b.cmp(CmpOp::Ge, i, zero);
                    let lt = b.cmp(CmpOp::Lt, i, nv);
                    let ok = b.binary(BinOp::And, ge, lt);
                    (b.select(ok, i, zero), Some(ok))
                }
                PadMode::Edge => {
                    let zero = b.index(0);
                    let last = b.index(n_i - 1);
                    let lo = b.max(i, zero);
                    (b.min(lo, last), None)
                }
                PadMode::Wrap => {
                    let nv = b.index(n_i);
                    let r = b.binary(BinOp::Rem, i, nv);
                    let r2 = b.add(r, nv);
                    (b.binary(BinOp::Rem, r2, nv), None)
                }
                PadMode::Reflect => {
                    if n_i <= 1 {
                        return (b.index(0), None);
                    }
                    // Reflection has period 2(n-1); fold into one period, then mirror.
                    let p = b.index(2 * (n_i - 1));
                    let r = b.binary(BinOp::Rem, i, p);
                    let r2 = b.add(r, p);
                    let t = b.binary(BinOp::Rem, r2, p);
                    let nv = b.index(n_i);
                    let past = b.cmp(CmpOp::Ge, t, nv);
                    let mirrored = b.sub(p, t);
                    (b.select(past, mirrored, t), None)
                }
            }
        }
    }
}

/// Builds the copy kernel for `spec`: parameters `src`, `dst` (and `fill` for
/// [`Fill::Operand`]). The grid runs over chunks of rows (all axes but the last); each row is
/// an inner loop, vectorised for contiguous f32 rows when `vector` is set.
pub fn copy_kernel(
    name: String,
    dtype: DType,
    src_len: u64,
    dst_len: u64,
    spec: &CopySpec,
    vector: bool,
) -> Kernel {
    let mut spec = spec.clone();
    if spec.dims.is_empty() {
        spec.dims = vec![1];
        spec.src = vec![(AxisMap::Affine { mul: 0, add: 0 }, 0)];
        spec.dst_strides = vec![0];
    }
    let mut b = KernelBuilder::new(name);
    let src = b.param("src", dtype, src_len.max(1), Access::Read);
    let dst = b.param("dst", dtype, dst_len, Access::Write);
    let fill_buf =
        matches!(spec.fill, Fill::Operand).then(|| b.param("fill", dtype, 1, Access::Read));
    let rank = spec.dims.len();
    let outer = spec.dims[..rank - 1].to_vec();
    let inner = spec.dims[rank - 1];
    let rows: u64 = outer.iter().product();
    let (_, chunk) = chunking(rows, (16384 / inner.max(1)).max(1), dtype);
    let (last_map, last_stride) = spec.src[rank - 1];
    let last_dst = spec.dst_strides[rank - 1];
    let any_pad = spec.src.iter().any(|(m, _)| {
        matches!(
            m,
            AxisMap::Pad {
                mode: PadMode::Constant,
                ..
            }
        )
    });
    let contiguous =
        matches!(last_map, AxisMap::Affine { mul: 1, .. }) && last_stride == 1 && last_dst == 1;
    let use_vec = vector && dtype == DType::F32 && contiguous && !any_pad && inner >= 4;
    let empty_src = src_len == 0;
    for_each_item(&mut b, rows, chunk, |b, r| {
        let coords = unravel(b, r, &outer);
        let mut sbase = b.index(spec.src_offset);
        let mut valid = None;
        for (i, &c) in coords.iter().enumerate() {
            let (m, st) = spec.src[i];
            let (s, v) = map_coord(b, c, m);
            if st != 0 {
                let stv = b.index(st);
                let t = b.mul(s, stv);
                sbase = b.add(sbase, t);
            }
            valid = and_opt(b, valid, v);
        }
        let dlin = linear_index(b, &coords, &spec.dst_strides[..rank - 1]);
        let doff = b.index(spec.dst_offset as i64);
        let dbase = b.add(dlin, doff);
        let fill_val = |b: &mut KernelBuilder| match spec.fill {
            Fill::Value(s) => b.constant(Ty::scalar(dtype), s),
            Fill::Operand => {
                let z = b.index(0);
                b.load(
                    fill_buf.expect("fill operand declared for Fill::Operand"),
                    z,
                    1,
                )
            }
        };
        let mut j_lo = b.index(0);
        if use_vec {
            let AxisMap::Affine { add, .. } = last_map else {
                unreachable!("checked contiguous above")
            };
            let addv = b.index(add);
            let sb = b.add(sbase, addv);
            let hi = b.index((inner / 4 * 4) as i64);
            let step = b.index(4);
            b.for_loop(j_lo, hi, step, &[], |b, j, _| {
                let si = b.add(sb, j);
                let v = b.load(src, si, 4);
                let di = b.add(dbase, j);
                b.store(dst, di, v);
                Vec::new()
            });
            j_lo = hi;
        }
        let hi = b.index(inner as i64);
        let one = b.index(1);
        b.for_loop(j_lo, hi, one, &[], |b, j, _| {
            let di = if last_dst == 1 {
                b.add(dbase, j)
            } else {
                let k = b.index(last_dst as i64);
                let t = b.mul(j, k);
                b.add(dbase, t)
            };
            let value = if empty_src {
                fill_val(b)
            } else {
                let (s, v) = map_coord(b, j, last_map);
                let si = if last_stride == 0 {
                    sbase
                } else {
                    let k = b.index(last_stride);
                    let t = b.mul(s, k);
                    b.add(sbase, t)
                };
                let x = b.load(src, si, 1);
                match and_opt(b, valid, v) {
                    Some(ok) => {
                        let f = fill_val(b);
                        b.select(ok, x, f)
                    }
                    None => x,
                }
            };
            b.store(dst, di, value);
            Vec::new()
        });
    });
    b.finish()
}

/// Launches the copy `spec` from value `src` into value `dst` (nothing when the space is
/// empty). `fill` is the buffer of a runtime pad value, for [`Fill::Operand`].
pub fn launch_copy(
    cx: &mut LowerCx,
    base: &str,
    src: ValueId,
    dst: ValueId,
    spec: &CopySpec,
    fill: Option<BufferId>,
) -> Result<()> {
    if spec.dims.iter().product::<u64>() == 0 {
        return Ok(());
    }
    let dtype = cx.dtype(dst)?;
    if cx.dtype(src)? != dtype {
        return Err(cx.invalid("result must have the operand's dtype"));
    }
    let (src_len, dst_len) = (cx.numel(src)?, cx.numel(dst)?);
    let (sb, db) = (cx.buffer(src)?, cx.buffer(dst)?);
    let name = cx.kernel_name(base);
    let vector = cx.desc.vector_bytes >= 16;
    let k = copy_kernel(name, dtype, src_len, dst_len, spec, vector);
    let mut args = vec![sb, db];
    args.extend(fill);
    cx.launch(k, args);
    Ok(())
}

// ==== Reshape / Flatten / Squeeze / Unsqueeze / Identity ====

fn alias_op(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    if cx.dtype(x)? != cx.dtype(y)? || cx.numel(x)? != cx.numel(y)? {
        return Err(cx.invalid("result must have the operand's dtype and element count"));
    }
    cx.alias(y, x)?;
    Ok(Execution::Alias)
}

// ==== Dropout ====

fn dropout(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    // Training mode (on, or decided at run time) draws a seeded mask (random.rs).
    if let Some(t) = node.input(2) {
        let mode = cx.konst(t).and_then(|t| t.get_i64(0));
        if mode != Some(0) {
            let at_run_time = if mode.is_none() { Some(t) } else { None };
            return crate::random::dropout_training(cx, node, at_run_time);
        }
    }
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    cx.alias(y, x)?;
    if let Some(&mask) = node.outputs.get(1) {
        fill_value(cx, mask, Scalar::Int(1))?;
        return Ok(Execution::Kernel);
    }
    Ok(Execution::Alias)
}

// ==== Transpose ====

fn transpose(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    let dims = cx.dims(x)?;
    let rank = dims.len();
    let perm: Vec<usize> = match node.attr_ints("perm") {
        Some(p) => p
            .iter()
            .map(|&a| norm_axis(cx, a, rank))
            .collect::<Result<_>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    if perm.len() != rank || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true)) {
        return Err(cx.invalid(format!("perm {perm:?} is not a permutation of 0..{rank}")));
    }
    // On a target with a vector-unit buffer: a grid of tile copies.
    let total: u64 = dims.iter().product();
    if total > 0 && crate::rows::wants_row_tiles(cx) {
        let dt = cx.dtype(y)?;
        if cx.dtype(x)? != dt {
            return Err(cx.invalid("result must have the operand's dtype"));
        }
        if let Some(mut k) = crate::rows::transpose_kernel(String::new(), dt, &dims, &perm) {
            k.name = cx.kernel_name("transpose");
            let args = vec![cx.buffer(x)?, cx.buffer(y)?];
            cx.launch(k, args);
            return Ok(Execution::Kernel);
        }
    }
    let st = strides(&dims);
    let out_dims: Vec<u64> = perm.iter().map(|&p| dims[p]).collect();
    let spec = CopySpec::dense(
        out_dims,
        perm.iter()
            .map(|&p| (AxisMap::Affine { mul: 1, add: 0 }, st[p] as i64))
            .collect(),
    );
    launch_copy(cx, "transpose", x, y, &spec, None)?;
    Ok(Execution::Kernel)
}

// ==== Concat ====

fn concat(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let y = result(cx, node, 0)?;
    let out = cx.dims(y)?;
    let axis = norm_axis(cx, node.attr_int("axis", 0), out.len())?;
    let ost = strides(&out);
    let mut off = 0u64;
    for i in 0..node.inputs.len() {
        let Some(x) = node.input(i) else { continue };
        let dims = cx.dims(x)?;
        if dims.len() != out.len() {
            return Err(cx.invalid(format!(
                "input {i} has rank {}, expected {}",
                dims.len(),
                out.len()
            )));
        }
        let st = strides(&dims);
        let mut spec = CopySpec::dense(
            dims.clone(),
            st.iter()
                .map(|&s| (AxisMap::Affine { mul: 1, add: 0 }, s as i64))
                .collect(),
        );
        spec.dst_strides = ost.clone();
        spec.dst_offset = off * ost[axis];
        launch_copy(cx, "concat", x, y, &spec, None)?;
        off += dims[axis];
    }
    if off != out[axis] {
        return Err(cx.invalid(format!(
            "inputs sum to {off} along axis {axis}, result has {}",
            out[axis]
        )));
    }
    Ok(Execution::Kernel)
}

// ==== Split ====

fn split(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    // Result shapes (from inference) already encode `split` / `num_outputs`; each result is a
    // slice of the input starting where the previous one ended.
    let x = operand(cx, node, 0)?;
    let dims = cx.dims(x)?;
    let axis = norm_axis(cx, node.attr_int("axis", 0), dims.len())?;
    let st = strides(&dims);
    let mut off = 0u64;
    for &y in &node.outputs {
        let od = cx.dims(y)?;
        if od.len() != dims.len() {
            return Err(cx.invalid("results must have the input's rank"));
        }
        let src = (0..dims.len())
            .map(|i| {
                (
                    AxisMap::Affine {
                        mul: 1,
                        add: if i == axis { off as i64 } else { 0 },
                    },
                    st[i] as i64,
                )
            })
            .collect();
        let spec = CopySpec::dense(od.clone(), src);
        launch_copy(cx, "split", x, y, &spec, None)?;
        off += od[axis];
    }
    if off > dims[axis] {
        return Err(cx.invalid(format!(
            "results take {off} along axis {axis}, input has {}",
            dims[axis]
        )));
    }
    Ok(Execution::Kernel)
}

// ==== Slice ====

fn slice(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    let dims = cx.dims(x)?;
    let out = cx.dims(y)?;
    let rank = dims.len();
    let starts = cx
        .const_ints(node, 1)?
        .ok_or_else(|| cx.invalid("missing `starts`"))?;
    let axes: Vec<usize> = match cx.const_ints(node, 3)? {
        Some(a) => a
            .iter()
            .map(|&a| norm_axis(cx, a, rank))
            .collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = cx
        .const_ints(node, 4)?
        .unwrap_or_else(|| vec![1; starts.len()]);
    if axes.len() != starts.len() || steps.len() != starts.len() || out.len() != rank {
        return Err(cx.invalid("starts, axes and steps must have the same length"));
    }
    let st = strides(&dims);
    let mut maps: Vec<(AxisMap, i64)> = (0..rank)
        .map(|i| (AxisMap::Affine { mul: 1, add: 0 }, st[i] as i64))
        .collect();
    if out.iter().product::<u64>() == 0 {
        return Ok(Execution::Kernel);
    }
    for (j, &a) in axes.iter().enumerate() {
        let n = dims[a] as i64;
        let step = steps[j];
        if step == 0 {
            return Err(cx.invalid("slice step 0"));
        }
        let mut s = starts[j];
        if s < 0 {
            s = s.saturating_add(n);
        }
        s = if step > 0 {
            s.max(0).min(n)
        } else {
            s.max(0).min(n - 1)
        };
        // The last element read must be in range (inference computed the count).
        let last = s as i128 + (out[a] as i128 - 1) * step as i128;
        if last < 0 || last >= n as i128 {
            return Err(cx.invalid(format!("slice along axis {a} reads outside the input")));
        }
        maps[a].0 = AxisMap::Affine { mul: step, add: s };
    }
    let spec = CopySpec::dense(out, maps);
    launch_copy(cx, "slice", x, y, &spec, None)?;
    Ok(Execution::Kernel)
}

// ==== Expand ====

fn expand(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    let dims = cx.dims(x)?;
    let out = cx.dims(y)?;
    if dims.len() > out.len() {
        return Err(cx.invalid("result rank is below the input's"));
    }
    let bs = broadcast_strides(&dims, &out);
    let spec = CopySpec::dense(
        out,
        bs.iter()
            .map(|&s| (AxisMap::Affine { mul: 1, add: 0 }, s as i64))
            .collect(),
    );
    launch_copy(cx, "expand", x, y, &spec, None)?;
    Ok(Execution::Kernel)
}

// ==== Tile ====

fn tile(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    let dims = cx.dims(x)?;
    let out = cx.dims(y)?;
    if dims.len() != out.len() {
        return Err(cx.invalid("result rank differs from the input's"));
    }
    let st = strides(&dims);
    let spec = CopySpec::dense(
        out,
        (0..dims.len())
            .map(|i| (AxisMap::Modulo { n: dims[i].max(1) }, st[i] as i64))
            .collect(),
    );
    launch_copy(cx, "tile", x, y, &spec, None)?;
    Ok(Execution::Kernel)
}

// ==== Pad ====

fn pad(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    let dims = cx.dims(x)?;
    let out = cx.dims(y)?;
    let rank = dims.len();
    let dtype = cx.dtype(x)?;
    let pads = cx
        .const_ints(node, 1)?
        .ok_or_else(|| cx.invalid("missing `pads`"))?;
    let axes: Vec<usize> = match cx.const_ints(node, 3)? {
        Some(a) => a
            .iter()
            .map(|&a| norm_axis(cx, a, rank))
            .collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() || out.len() != rank {
        return Err(cx.invalid(format!(
            "pads has {} entries for {} axes",
            pads.len(),
            axes.len()
        )));
    }
    let mode = match node.attr_str("mode").unwrap_or("constant") {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => return Err(cx.unsupported(format!("Pad mode `{m}`"))),
    };
    let st = strides(&dims);
    let mut maps: Vec<(AxisMap, i64)> = (0..rank)
        .map(|i| (AxisMap::Affine { mul: 1, add: 0 }, st[i] as i64))
        .collect();
    for (j, &a) in axes.iter().enumerate() {
        let before = pads[j];
        let expect = dims[a] as i64 + before + pads[j + axes.len()];
        if expect != out[a] as i64 {
            return Err(cx.invalid(format!(
                "padded axis {a} has {} elements, expected {expect}",
                out[a]
            )));
        }
        if mode != PadMode::Constant && dims[a] == 0 && out[a] > 0 {
            return Err(cx.invalid(format!("cannot pad empty axis {a} in this mode")));
        }
        maps[a].0 = AxisMap::Pad {
            before,
            n: dims[a],
            mode,
        };
    }
    let mut spec = CopySpec::dense(out, maps);
    let mut fill_buf = None;
    if let Some(cv) = node.input(2) {
        match cx.konst(cv) {
            Some(t) => {
                if let Some(s) = tensor_scalar(t, 0) {
                    spec.fill = Fill::Value(s);
                }
            }
            None => {
                if cx.dtype(cv)? != dtype {
                    return Err(cx.invalid("constant_value must have the data's dtype"));
                }
                spec.fill = Fill::Operand;
                fill_buf = Some(cx.buffer(cv)?);
            }
        }
    }
    if cx.numel(x)? == 0 && mode != PadMode::Constant && cx.numel(y)? > 0 {
        return Err(cx.invalid("cannot pad an empty tensor in this mode"));
    }
    launch_copy(cx, "pad", x, y, &spec, fill_buf)?;
    Ok(Execution::Kernel)
}

// ==== DepthToSpace / SpaceToDepth ====

fn depth_to_space(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    let d = cx.dims(x)?;
    let bs = node.attr_int("blocksize", 0);
    if d.len() != 4 || bs <= 0 || d[1] % (bs * bs) as u64 != 0 {
        return Err(
            cx.invalid("DepthToSpace needs a 4-D input whose channels divide by blocksize²")
        );
    }
    let b = bs as u64;
    let (n, c, h, w) = (d[0], d[1], d[2], d[3]);
    let co = c / (b * b);
    let hw = (h * w) as i64;
    let crd = node.attr_str("mode") == Some("CRD");
    // Iterate the output as [N, C', H, b, W, b] (its row-major layout).
    let (si, sj, sc) = if crd {
        (b as i64 * hw, hw, (b * b) as i64 * hw)
    } else {
        (b as i64 * co as i64 * hw, co as i64 * hw, hw)
    };
    let a = |s: i64| (AxisMap::Affine { mul: 1, add: 0 }, s);
    let spec = CopySpec::dense(
        vec![n, co, h, b, w, b],
        vec![
            a((c * h * w) as i64),
            a(sc),
            a(w as i64),
            a(si),
            a(1),
            a(sj),
        ],
    );
    launch_copy(cx, "depth_to_space", x, y, &spec, None)?;
    Ok(Execution::Kernel)
}

fn space_to_depth(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    let d = cx.dims(x)?;
    let bs = node.attr_int("blocksize", 0);
    if d.len() != 4 || bs <= 0 || d[2] % bs as u64 != 0 || d[3] % bs as u64 != 0 {
        return Err(
            cx.invalid("SpaceToDepth needs a 4-D input whose spatial dims divide by blocksize")
        );
    }
    let b = bs as u64;
    let (n, c, h, w) = (d[0], d[1], d[2], d[3]);
    let a = |s: u64| (AxisMap::Affine { mul: 1, add: 0 }, s as i64);
    let spec = if node.attr_str("mode") == Some("CRD") {
        // Iterate the output as [N, C, b, b, H/b, W/b]: out channel = c*b*b + i*b + j.
        CopySpec::dense(
            vec![n, c, b, b, h / b, w / b],
            vec![a(c * h * w), a(h * w), a(w), a(1), a(b * w), a(b)],
        )
    } else {
        // DCR (the default): iterate the output as [N, b, b, C, H/b, W/b]: out channel = (i*b + j)*C + c.
        CopySpec::dense(
            vec![n, b, b, c, h / b, w / b],
            vec![a(c * h * w), a(w), a(1), a(h * w), a(b * w), a(b)],
        )
    };
    launch_copy(cx, "space_to_depth", x, y, &spec, None)?;
    Ok(Execution::Kernel)
}

// ==== Gather ====

/// Loads index `at` of an index buffer as i64.
fn load_index(b: &mut KernelBuilder, buf: tessera_kir::Buf, at: Val) -> Val {
    let v = b.load(buf, at, 1);
    b.cast(v, DType::I64, CastMode { saturate: false })
}

/// Gather along `axis` with runtime indices. Indices are checked in the kernel: negative ones
/// wrap once, as ONNX specifies; one still out of range stops the run with a data error
/// naming the node, `indices` and the value (a trap, see `LowerCx::trap_site`).
fn gather(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let data = operand(cx, node, 0)?;
    let ind = operand(cx, node, 1)?;
    let y = result(cx, node, 0)?;
    let d = cx.dims(data)?;
    let axis = norm_axis(cx, node.attr_int("axis", 0), d.len())?;
    let dtype = cx.dtype(data)?;
    let ni = cx.numel(ind)?;
    let outer: u64 = d[..axis].iter().product();
    let n = d[axis];
    let inner: u64 = d[axis + 1..].iter().product();
    let total = outer * ni * inner;
    if total != cx.numel(y)? {
        return Err(cx.invalid("result size does not match data and indices"));
    }
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let (db_, ib, yb) = (cx.buffer(data)?, cx.buffer(ind)?, cx.buffer(y)?);
    let code = cx.index_trap(node, "indices", &format!("axis {axis} of `data`"), n);
    let name = cx.kernel_name("gather");
    let mut b = KernelBuilder::new(name);
    let src = b.param("data", dtype, (outer * n * inner).max(1), Access::Read);
    let ibuf = b.param("indices", cx.dtype(ind)?, ni, Access::Read);
    let dst = b.param("y", dtype, total, Access::Write);
    let rows = outer * ni;
    let (_, chunk) = chunking(rows, (16384 / inner).max(1), dtype);
    for_each_item(&mut b, rows, chunk, |b, r| {
        let niv = b.index(ni as i64);
        let o = b.div(r, niv);
        let os = b.mul(o, niv);
        let q = b.sub(r, os);
        let idx = load_index(b, ibuf, q);
        let at = b.checked_index(idx, n, code);
        let on = b.index((n * inner) as i64);
        let obase = b.mul(o, on);
        let iv = b.index(inner as i64);
        let ioff = b.mul(at, iv);
        let sbase = b.add(obase, ioff);
        let dbase = b.mul(r, iv);
        b.range(0, inner as i64, |b, j| {
            let si = b.add(sbase, j);
            let v = b.load(src, si, 1);
            let di = b.add(dbase, j);
            b.store(dst, di, v);
        });
    });
    cx.launch(b.finish(), vec![db_, ib, yb]);
    Ok(Execution::Kernel)
}

// ==== GatherElements ====

fn gather_elements(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let data = operand(cx, node, 0)?;
    let ind = operand(cx, node, 1)?;
    let y = result(cx, node, 0)?;
    let d = cx.dims(data)?;
    let id = cx.dims(ind)?;
    if d.len() != id.len() {
        return Err(cx.invalid("data and indices must have the same rank"));
    }
    let axis = norm_axis(cx, node.attr_int("axis", 0), d.len())?;
    let dtype = cx.dtype(data)?;
    let total: u64 = id.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let dst_ = strides(&d);
    let (db_, ib, yb) = (cx.buffer(data)?, cx.buffer(ind)?, cx.buffer(y)?);
    let code = cx.index_trap(node, "indices", &format!("axis {axis} of `data`"), d[axis]);
    let name = cx.kernel_name("gather_elements");
    let mut b = KernelBuilder::new(name);
    let dlen: u64 = d.iter().product();
    let src = b.param("data", dtype, dlen.max(1), Access::Read);
    let ibuf = b.param("indices", cx.dtype(ind)?, total, Access::Read);
    let dst = b.param("y", dtype, total, Access::Write);
    let (_, chunk) = chunking(total, 16384, dtype);
    for_each_item(&mut b, total, chunk, |b, e| {
        let coords = unravel(b, e, &id);
        let idx = load_index(b, ibuf, e);
        let mut cs = coords.clone();
        cs[axis] = b.checked_index(idx, d[axis], code);
        let si = linear_index(b, &cs, &dst_);
        let v = b.load(src, si, 1);
        b.store(dst, e, v);
    });
    cx.launch(b.finish(), vec![db_, ib, yb]);
    Ok(Execution::Kernel)
}

// ==== GatherND ====

fn gather_nd(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let data = operand(cx, node, 0)?;
    let ind = operand(cx, node, 1)?;
    let y = result(cx, node, 0)?;
    let d = cx.dims(data)?;
    let id = cx.dims(ind)?;
    let bd = node.attr_int("batch_dims", 0);
    let q = id.len();
    if q == 0 || bd < 0 || bd as usize >= q || bd as usize > d.len() {
        return Err(cx.invalid("bad indices rank or batch_dims"));
    }
    let bd = bd as usize;
    let k = id[q - 1] as usize;
    if bd + k > d.len() {
        return Err(cx.invalid("index tuples are longer than data's rank"));
    }
    let dtype = cx.dtype(data)?;
    let slice: u64 = d[bd + k..].iter().product();
    let rows: u64 = id[..q - 1].iter().product();
    let per_batch: u64 = id[bd..q - 1].iter().product();
    let batch_stride: u64 = d[bd..].iter().product();
    let total = rows * slice;
    if total != cx.numel(y)? {
        return Err(cx.invalid("result size does not match data and indices"));
    }
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let dst_ = strides(&d);
    let (db_, ib, yb) = (cx.buffer(data)?, cx.buffer(ind)?, cx.buffer(y)?);
    let codes: Vec<u32> = (0..k)
        .map(|j| {
            cx.index_trap(
                node,
                "indices",
                &format!("axis {} of `data`", bd + j),
                d[bd + j],
            )
        })
        .collect();
    let name = cx.kernel_name("gather_nd");
    let mut b = KernelBuilder::new(name);
    let dlen: u64 = d.iter().product();
    let src = b.param("data", dtype, dlen.max(1), Access::Read);
    let ibuf = b.param(
        "indices",
        cx.dtype(ind)?,
        (rows * k as u64).max(1),
        Access::Read,
    );
    let dst = b.param("y", dtype, total, Access::Write);
    let (_, chunk) = chunking(rows, (16384 / slice).max(1), dtype);
    for_each_item(&mut b, rows, chunk, |b, r| {
        let pb = b.index(per_batch.max(1) as i64);
        let batch = b.div(r, pb);
        let bsv = b.index(batch_stride as i64);
        let mut sbase = b.mul(batch, bsv);
        for (j, &code) in codes.iter().enumerate() {
            let kk = b.index(k as i64);
            let rk = b.mul(r, kk);
            let jv = b.index(j as i64);
            let at = b.add(rk, jv);
            let idx = load_index(b, ibuf, at);
            let safe = b.checked_index(idx, d[bd + j], code);
            let sv = b.index(dst_[bd + j] as i64);
            let t = b.mul(safe, sv);
            sbase = b.add(sbase, t);
        }
        let sl = b.index(slice as i64);
        let dbase = b.mul(r, sl);
        b.range(0, slice as i64, |b, j| {
            let si = b.add(sbase, j);
            let v = b.load(src, si, 1);
            let di = b.add(dbase, j);
            b.store(dst, di, v);
        });
    });
    cx.launch(b.finish(), vec![db_, ib, yb]);
    Ok(Execution::Kernel)
}

// ==== Trilu ====

fn trilu(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    let d = cx.dims(x)?;
    if d.len() < 2 {
        return Err(cx.invalid("Trilu needs rank >= 2"));
    }
    let k = match node.input(1) {
        Some(_) => cx
            .const_ints(node, 1)?
            .and_then(|v| v.first().copied())
            .unwrap_or(0),
        None => 0,
    };
    let upper = node.attr_int("upper", 1) != 0;
    let dtype = cx.dtype(x)?;
    let total: u64 = d.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let (h, w) = (d[d.len() - 2], d[d.len() - 1]);
    let (sb, db) = (cx.buffer(x)?, cx.buffer(y)?);
    let name = cx.kernel_name("trilu");
    let mut b = KernelBuilder::new(name);
    let src = b.param("x", dtype, total, Access::Read);
    let dst = b.param("y", dtype, total, Access::Write);
    let rows = total / w;
    let (_, chunk) = chunking(rows, (16384 / w).max(1), dtype);
    for_each_item(&mut b, rows, chunk, |b, r| {
        let hv = b.index(h as i64);
        let i = b.binary(BinOp::Rem, r, hv);
        let wv = b.index(w as i64);
        let base = b.mul(r, wv);
        let kv = b.index(k);
        b.range(0, w as i64, |b, j| {
            let diff = b.sub(j, i);
            // Upper keeps j - i >= k; lower keeps j - i <= k.
            let keep = b.cmp(if upper { CmpOp::Ge } else { CmpOp::Le }, diff, kv);
            let at = b.add(base, j);
            let v = b.load(src, at, 1);
            let zero = b.constant(Ty::scalar(dtype), Scalar::Int(0));
            let o = b.select(keep, v, zero);
            b.store(dst, at, o);
        });
    });
    cx.launch(b.finish(), vec![sb, db]);
    Ok(Execution::Kernel)
}

// ==== OneHot ====

fn one_hot(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let ind = operand(cx, node, 0)?;
    let vals = operand(cx, node, 2)?;
    let y = result(cx, node, 0)?;
    let od = cx.dims(y)?;
    let depth = cx
        .konst(operand(cx, node, 1)?)
        .and_then(|t| t.get_f64(0))
        .ok_or_else(|| cx.unsupported("depth must be known at compile time"))?;
    let depth = depth as i64;
    let axis = norm_axis(cx, node.attr_int("axis", -1), od.len())?;
    if depth < 0 || od[axis] != depth as u64 || cx.numel(vals)? != 2 {
        return Err(cx.invalid("result shape does not match depth, or values is not [off, on]"));
    }
    let dtype = cx.dtype(y)?;
    let total: u64 = od.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let id = cx.dims(ind)?;
    let ist = strides(&id);
    let idt = cx.dtype(ind)?;
    let (ib, vb, yb) = (cx.buffer(ind)?, cx.buffer(vals)?, cx.buffer(y)?);
    let name = cx.kernel_name("one_hot");
    let mut b = KernelBuilder::new(name);
    let ibuf = b.param("indices", idt, cx.numel(ind)?.max(1), Access::Read);
    let vbuf = b.param("values", dtype, 2, Access::Read);
    let dst = b.param("y", dtype, total, Access::Write);
    let (_, chunk) = chunking(total, 16384, dtype);
    for_each_item(&mut b, total, chunk, |b, e| {
        let mut coords = unravel(b, e, &od);
        let d = coords.remove(axis);
        let at = linear_index(b, &coords, &ist);
        // Indices may be floats; ONNX casts them to integers (truncation).
        let raw = b.load(ibuf, at, 1);
        let idx = b.cast(raw, DType::I64, CastMode { saturate: false });
        let zero = b.index(0);
        let dv = b.index(depth);
        let neg = b.cmp(CmpOp::Lt, idx, zero);
        let plus = b.add(idx, dv);
        let w = b.select(neg, plus, idx);
        let hit = b.cmp(CmpOp::Eq, w, d);
        let one = b.index(1);
        let sel = b.select(hit, one, zero);
        let v = b.load(vbuf, sel, 1);
        b.store(dst, e, v);
    });
    cx.launch(b.finish(), vec![ib, vb, yb]);
    Ok(Execution::Kernel)
}

// ==== EyeLike ====

fn eye_like(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let y = result(cx, node, 0)?;
    let od = cx.dims(y)?;
    if od.len() != 2 {
        return Err(cx.invalid("EyeLike needs a 2-D input"));
    }
    let k = node.attr_int("k", 0);
    let dtype = cx.dtype(y)?;
    let total = od[0] * od[1];
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let yb = cx.buffer(y)?;
    let name = cx.kernel_name("eye_like");
    let mut b = KernelBuilder::new(name);
    let dst = b.param("y", dtype, total, Access::Write);
    let (_, chunk) = chunking(total, 16384, dtype);
    let w = od[1];
    for_each_item(&mut b, total, chunk, |b, e| {
        let wv = b.index(w as i64);
        let i = b.div(e, wv);
        let iw = b.mul(i, wv);
        let j = b.sub(e, iw);
        let diff = b.sub(j, i);
        let kv = b.index(k);
        let on = b.cmp(CmpOp::Eq, diff, kv);
        let one = b.constant(Ty::scalar(dtype), scalar_of(dtype, 1.0));
        let zero = b.constant(Ty::scalar(dtype), scalar_of(dtype, 0.0));
        let v = b.select(on, one, zero);
        b.store(dst, e, v);
    });
    cx.launch(b.finish(), vec![yb]);
    Ok(Execution::Kernel)
}

// ==== Shape / Size / Constant / ConstantOfShape / Range (when not folded) ====

/// The most elements a literal-storing kernel may hold; bigger constants must be folded.
const MAX_LITERAL: u64 = 4096;

/// Launches a kernel storing `values` into `v`'s buffer, one literal per element.
fn store_literals(cx: &mut LowerCx, v: ValueId, values: &[Scalar]) -> Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    if values.len() as u64 > MAX_LITERAL {
        return Err(cx.unsupported(format!(
            "a literal of {} elements that was not folded",
            values.len()
        )));
    }
    let dtype = cx.dtype(v)?;
    let vb = cx.buffer(v)?;
    let name = cx.kernel_name("literal");
    let mut b = KernelBuilder::new(name);
    let dst = b.param("y", dtype, values.len() as u64, Access::Write);
    for (i, &s) in values.iter().enumerate() {
        let c = b.constant(Ty::scalar(dtype), s);
        let at = b.index(i as i64);
        b.store(dst, at, c);
    }
    cx.launch(b.finish(), vec![vb]);
    Ok(())
}

/// Launches a kernel filling `v` with one literal.
pub(crate) fn fill_value(cx: &mut LowerCx, v: ValueId, value: Scalar) -> Result<()> {
    let dtype = cx.dtype(v)?;
    let total = cx.numel(v)?;
    if total == 0 {
        return Ok(());
    }
    let vb = cx.buffer(v)?;
    let name = cx.kernel_name("fill");
    let mut b = KernelBuilder::new(name);
    let dst = b.param("y", dtype, total, Access::Write);
    let (_, chunk) = chunking(total, 16384, dtype);
    for_each_item(&mut b, total, chunk, |b, e| {
        let c = b.constant(Ty::scalar(dtype), value);
        b.store(dst, e, c);
    });
    cx.launch(b.finish(), vec![vb]);
    Ok(())
}

fn literal_op(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let y = result(cx, node, 0)?;
    let values: Vec<Scalar> = match node.op {
        Op::Shape => {
            let d = cx.dims(operand(cx, node, 0)?)?;
            let r = d.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let s = clamp(node.attr_int("start", 0));
            let e = clamp(node.attr_int("end", r));
            d[s..e.max(s)]
                .iter()
                .map(|&x| Scalar::Int(x as i64))
                .collect()
        }
        Op::Size => vec![Scalar::Int(cx.numel(operand(cx, node, 0)?)? as i64)],
        _ => {
            let t = match node.attrs.iter().next() {
                Some((_, Attr::Tensor(t))) => t.clone(),
                Some((_, Attr::Float(f))) => Tensor::from_f32(vec![], &[*f]),
                Some((_, Attr::Floats(f))) => Tensor::from_f32(vec![f.len() as u64], f),
                Some((_, Attr::Int(i))) => Tensor::from_i64(vec![], &[*i]),
                Some((_, Attr::Ints(i))) => Tensor::from_i64(vec![i.len() as u64], i),
                _ => return Err(cx.unsupported("Constant of this kind (strings or no value)")),
            };
            (0..t.num_elements())
                .map(|i| tensor_scalar(&t, i).unwrap_or(Scalar::Int(0)))
                .collect()
        }
    };
    if values.len() as u64 != cx.numel(y)? {
        return Err(cx.invalid("result size does not match the value"));
    }
    store_literals(cx, y, &values)?;
    Ok(Execution::Kernel)
}

fn constant_of_shape(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let y = result(cx, node, 0)?;
    let dtype = cx.dtype(y)?;
    let value = match node.attr("value") {
        Some(Attr::Tensor(t)) => tensor_scalar(t, 0).unwrap_or(Scalar::Int(0)),
        _ => scalar_of(dtype, 0.0),
    };
    fill_value(cx, y, value)?;
    Ok(Execution::Kernel)
}

fn range(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let y = result(cx, node, 0)?;
    let dtype = cx.dtype(y)?;
    let get = |i: usize| -> Result<f64> {
        let v = operand(cx, node, i)?;
        cx.konst(v).and_then(|t| t.get_f64(0)).ok_or_else(|| {
            cx.unsupported(format!("Range operand {i} must be known at compile time"))
        })
    };
    let (start, delta) = (get(0)?, get(2)?);
    let total = cx.numel(y)?;
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let yb = cx.buffer(y)?;
    let name = cx.kernel_name("range");
    let mut b = KernelBuilder::new(name);
    let dst = b.param("y", dtype, total, Access::Write);
    let (_, chunk) = chunking(total, 16384, dtype);
    // Integers compute exactly in i64; floats in f64, rounded once to the result type.
    let wide = if dtype.is_float() {
        DType::F64
    } else {
        DType::I64
    };
    for_each_item(&mut b, total, chunk, |b, e| {
        let ei = b.cast(e, wide, CastMode { saturate: false });
        let d = b.constant(Ty::scalar(wide), scalar_of(wide, delta));
        let s = b.constant(Ty::scalar(wide), scalar_of(wide, start));
        let t = b.mul(ei, d);
        let v = b.add(t, s);
        let o = b.cast(v, dtype, CastMode { saturate: false });
        b.store(dst, e, o);
    });
    cx.launch(b.finish(), vec![yb]);
    Ok(Execution::Kernel)
}

#[cfg(test)]
mod tests {
    use crate::dense::testexec::*;
    use tessera_ir::{Attr, DType, Op, Tensor};

    fn iota(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32).collect()
    }

    /// numpy-style reference: out[c] = x[src(c)] over out dims.
    fn gather_ref(out: &[u64], f: impl Fn(&[u64]) -> Option<f32>) -> Vec<f32> {
        let n: u64 = out.iter().product();
        (0..n)
            .map(|mut e| {
                let mut c = vec![0; out.len()];
                for i in (0..out.len()).rev() {
                    c[i] = e % out[i];
                    e /= out[i];
                }
                f(&c).unwrap_or(0.0)
            })
            .collect()
    }

    fn run1(g: G, out: tessera_ir::ValueId) -> Vec<f32> {
        to_f32(&g.run(&[out], &desc(16)).unwrap()[0])
    }

    #[test]
    fn transpose_slice_expand_tile() {
        let x = iota(2 * 3 * 5);
        let mut g = G::default();
        let xv = g.input(DType::F32, &[2, 3, 5], f32_bytes(&x));
        let t = g.node(
            Op::Transpose,
            &[Some(xv)],
            &[(DType::F32, &[5, 2, 3])],
            &[("perm", Attr::Ints(vec![2, 0, 1]))],
        );
        let want = gather_ref(&[5, 2, 3], |c| {
            Some(x[(c[1] * 15 + c[2] * 5 + c[0]) as usize])
        });
        assert_eq!(run1(g, t[0]), want);

        // Slice with a negative step, clamped start and a negative axis.
        let mut g = G::default();
        let xv = g.input(DType::F32, &[2, 3, 5], f32_bytes(&x));
        let st = g.konst(Tensor::from_i64(vec![2], &[100, 0]));
        let en = g.konst(Tensor::from_i64(vec![2], &[-100, 2]));
        let ax = g.konst(Tensor::from_i64(vec![2], &[-1, 1]));
        let sp = g.konst(Tensor::from_i64(vec![2], &[-2, 1]));
        let s = g.node(
            Op::Slice,
            &[Some(xv), Some(st), Some(en), Some(ax), Some(sp)],
            &[(DType::F32, &[2, 2, 3])],
            &[],
        );
        let want = gather_ref(&[2, 2, 3], |c| {
            Some(x[(c[0] * 15 + c[1] * 5 + 4 - 2 * c[2]) as usize])
        });
        assert_eq!(run1(g, s[0]), want);

        let mut g = G::default();
        let xv = g.input(DType::F32, &[3, 1], f32_bytes(&iota(3)));
        let shape = g.konst(Tensor::from_i64(vec![3], &[2, 1, 6]));
        let e = g.node(
            Op::Expand,
            &[Some(xv), Some(shape)],
            &[(DType::F32, &[2, 3, 6])],
            &[],
        );
        assert_eq!(run1(g, e[0]), gather_ref(&[2, 3, 6], |c| Some(c[1] as f32)));

        let mut g = G::default();
        let xv = g.input(DType::F32, &[2, 3], f32_bytes(&iota(6)));
        let reps = g.konst(Tensor::from_i64(vec![2], &[2, 3]));
        let t = g.node(
            Op::Tile,
            &[Some(xv), Some(reps)],
            &[(DType::F32, &[4, 9])],
            &[],
        );
        assert_eq!(
            run1(g, t[0]),
            gather_ref(&[4, 9], |c| Some(((c[0] % 2) * 3 + c[1] % 3) as f32))
        );
    }

    #[test]
    fn concat_split_and_aliases() {
        let a = iota(6);
        let b: Vec<f32> = iota(4).iter().map(|v| v + 100.0).collect();
        let mut g = G::default();
        let av = g.input(DType::F32, &[2, 3], f32_bytes(&a));
        let bv = g.input(DType::F32, &[2, 2], f32_bytes(&b));
        let c = g.node(
            Op::Concat,
            &[Some(av), Some(bv)],
            &[(DType::F32, &[2, 5])],
            &[("axis", Attr::Int(-1))],
        );
        let parts = g.node(
            Op::Split,
            &[Some(c[0])],
            &[(DType::F32, &[2, 3]), (DType::F32, &[2, 2])],
            &[("axis", Attr::Int(1))],
        );
        let shp = g.konst(Tensor::from_i64(vec![1], &[-1]));
        let r = g.node(
            Op::Reshape,
            &[Some(parts[1]), Some(shp)],
            &[(DType::F32, &[4])],
            &[],
        );
        let got = g.run(&[c[0], parts[0], r[0]], &desc(16)).unwrap();
        assert_eq!(
            to_f32(&got[0]),
            vec![0., 1., 2., 100., 101., 3., 4., 5., 102., 103.]
        );
        assert_eq!(to_f32(&got[1]), a);
        assert_eq!(to_f32(&got[2]), b);
    }

    #[test]
    fn pad_modes_and_negative_pads() {
        let x = iota(3 * 4);
        let modes: [(&str, fn(i64, i64) -> Option<i64>); 4] = [
            ("constant", |i, n| (0..n).contains(&i).then_some(i)),
            ("edge", |i, n| Some(i.clamp(0, n - 1))),
            ("wrap", |i, n| Some(i.rem_euclid(n))),
            ("reflect", |i, n| {
                let p = 2 * (n - 1);
                let t = i.rem_euclid(p);
                Some(if t >= n { p - t } else { t })
            }),
        ];
        for (mode, map) in modes {
            let mut g = G::default();
            let xv = g.input(DType::F32, &[3, 4], f32_bytes(&x));
            // Pad rows by (2, 1) and crop one column at the front, add 3 at the back.
            let pads = g.konst(Tensor::from_i64(vec![4], &[2, -1, 1, 3]));
            let cv = g.konst(Tensor::from_f32(vec![], &[7.5]));
            let p = g.node(
                Op::Pad,
                &[Some(xv), Some(pads), Some(cv)],
                &[(DType::F32, &[6, 6])],
                &[("mode", Attr::String(mode.into()))],
            );
            let want = gather_ref(&[6, 6], |c| {
                let (i, j) = (map(c[0] as i64 - 2, 3), map(c[1] as i64 + 1, 4));
                Some(match (i, j) {
                    (Some(i), Some(j)) => x[(i * 4 + j) as usize],
                    _ => 7.5,
                })
            });
            assert_eq!(run1(g, p[0]), want, "pad mode {mode}");
        }
    }

    #[test]
    fn gathers_wrap_negative_indices_and_trap_out_of_range() {
        let x = iota(3 * 4);
        let gather = |idx: &[i64]| {
            let mut g = G::default();
            let xv = g.input(DType::F32, &[3, 4], f32_bytes(&x));
            let iv = g.input(DType::I64, &[2, 2], i64_bytes(idx));
            let o = g.node(
                Op::Gather,
                &[Some(xv), Some(iv)],
                &[(DType::F32, &[3, 2, 2])],
                &[("axis", Attr::Int(1))],
            );
            g.run(&o, &desc(16))
        };
        let want = gather_ref(&[3, 2, 2], |c| {
            let idx = [0i64, 3, 3, 0][(c[1] * 2 + c[2]) as usize];
            Some(x[(c[0] * 4) as usize + idx as usize])
        });
        assert_eq!(to_f32(&gather(&[0, -1, 3, -4]).unwrap()[0]), want);
        // An index still out of range after wrapping is a data error, never zeros.
        let e = gather(&[0, -1, 3, 9]).unwrap_err();
        assert!(e.contains("data check 0 failed on value 9"), "{e}");
        let e = gather(&[0, -5, 3, 1]).unwrap_err();
        assert!(e.contains("data check 0 failed on value -5"), "{e}");

        let mut g = G::default();
        let xv = g.input(DType::F32, &[3, 4], f32_bytes(&x));
        let iv = g.input(DType::I64, &[2, 4], i64_bytes(&[0, 1, 2, -1, 2, 0, 1, 1]));
        let o = g.node(
            Op::GatherElements,
            &[Some(xv), Some(iv)],
            &[(DType::F32, &[2, 4])],
            &[("axis", Attr::Int(0))],
        );
        let idx = [0i64, 1, 2, 2, 2, 0, 1, 1];
        let want: Vec<f32> = (0..8).map(|e| x[(idx[e] * 4) as usize + e % 4]).collect();
        assert_eq!(run1(g, o[0]), want);

        let mut g = G::default();
        let xv = g.input(DType::F32, &[3, 4], f32_bytes(&x));
        let iv = g.input(DType::I64, &[2, 1], i64_bytes(&[2, 0]));
        let o = g.node(
            Op::GatherND,
            &[Some(xv), Some(iv)],
            &[(DType::F32, &[2, 4])],
            &[],
        );
        assert_eq!(run1(g, o[0]), vec![8., 9., 10., 11., 0., 1., 2., 3.]);
    }

    #[test]
    fn depth_space_trilu_onehot_range_and_literals() {
        let x = iota(8 * 2 * 3);
        for mode in ["DCR", "CRD"] {
            let mut g = G::default();
            let xv = g.input(DType::F32, &[1, 8, 2, 3], f32_bytes(&x));
            let o = g.node(
                Op::DepthToSpace,
                &[Some(xv)],
                &[(DType::F32, &[1, 2, 4, 6])],
                &[
                    ("blocksize", Attr::Int(2)),
                    ("mode", Attr::String(mode.into())),
                ],
            );
            let want = gather_ref(&[1, 2, 4, 6], |c| {
                let (cc, h, w) = (c[1], c[2], c[3]);
                let (i, j) = (h % 2, w % 2);
                let ch = if mode == "DCR" {
                    (i * 2 + j) * 2 + cc
                } else {
                    cc * 4 + i * 2 + j
                };
                Some(x[(ch * 6 + h / 2 * 3 + w / 2) as usize])
            });
            let got = {
                let mut g2 = G::default();
                let xv2 = g2.input(DType::F32, &[1, 2, 4, 6], f32_bytes(&want));
                let back = g2.node(
                    Op::SpaceToDepth,
                    &[Some(xv2)],
                    &[(DType::F32, &[1, 8, 2, 3])],
                    &[("blocksize", Attr::Int(2))],
                );
                run1(g2, back[0])
            };
            assert_eq!(run1(g, o[0]), want, "DepthToSpace {mode}");
            if mode == "DCR" {
                assert_eq!(got, x, "SpaceToDepth inverts DCR");
            }
        }

        let mut g = G::default();
        let xv = g.input(DType::F32, &[3, 4], f32_bytes(&iota(12)));
        let k = g.konst(Tensor::from_i64(vec![], &[-1]));
        let o = g.node(
            Op::Trilu,
            &[Some(xv), Some(k)],
            &[(DType::F32, &[3, 4])],
            &[("upper", Attr::Int(0))],
        );
        assert_eq!(
            run1(g, o[0]),
            gather_ref(&[3, 4], |c| Some(if c[1] as i64 - c[0] as i64 <= -1 {
                (c[0] * 4 + c[1]) as f32
            } else {
                0.0
            }))
        );

        let mut g = G::default();
        let iv = g.input(DType::I64, &[3], i64_bytes(&[1, -1, 5]));
        let d = g.konst(Tensor::from_i64(vec![], &[3]));
        let vals = g.konst(Tensor::from_f32(vec![2], &[-1.0, 2.0]));
        let o = g.node(
            Op::OneHot,
            &[Some(iv), Some(d), Some(vals)],
            &[(DType::F32, &[3, 3])],
            &[("axis", Attr::Int(-1))],
        );
        assert_eq!(
            run1(g, o[0]),
            vec![-1., 2., -1., -1., -1., 2., -1., -1., -1.]
        );

        // Shape, Range and ConstantOfShape whose results were not folded.
        let mut g = G::default();
        let xv = g.input(DType::F32, &[2, 5], f32_bytes(&iota(10)));
        let s = g.node(Op::Shape, &[Some(xv)], &[(DType::I64, &[2])], &[]);
        let (a, l, dl) = (
            g.konst(Tensor::from_i64(vec![], &[10])),
            g.konst(Tensor::from_i64(vec![], &[1])),
            g.konst(Tensor::from_i64(vec![], &[-3])),
        );
        let r = g.node(
            Op::Range,
            &[Some(a), Some(l), Some(dl)],
            &[(DType::I64, &[3])],
            &[],
        );
        let c = g.node(
            Op::ConstantOfShape,
            &[Some(s[0])],
            &[(DType::I64, &[2, 5])],
            &[("value", Attr::Tensor(Tensor::from_i64(vec![1], &[4])))],
        );
        let got = g.run(&[s[0], r[0], c[0]], &desc(16)).unwrap();
        assert_eq!(to_i64(&got[0]), vec![2, 5]);
        assert_eq!(to_i64(&got[1]), vec![10, 7, 4]);
        assert_eq!(to_i64(&got[2]), vec![4; 10]);
    }

    #[test]
    fn sub_byte_and_bool_copies() {
        // Transpose an int4 tensor (packed two per byte).
        let vals: Vec<i8> = (0..12).map(|i| (i % 16) as i8 - 8).collect();
        let pack = |v: &[i8]| -> Vec<u8> {
            v.chunks(2)
                .map(|c| (c[0] as u8 & 15) | ((*c.get(1).unwrap_or(&0) as u8 & 15) << 4))
                .collect()
        };
        let mut g = G::default();
        let xv = g.input(DType::I4, &[3, 4], pack(&vals));
        let t = g.node(Op::Transpose, &[Some(xv)], &[(DType::I4, &[4, 3])], &[]);
        let got = g.run(&[t[0]], &desc(16)).unwrap();
        let want: Vec<i8> = (0..12).map(|e| vals[(e % 3) * 4 + e / 3]).collect();
        assert_eq!(got[0], pack(&want));

        let mut g = G::default();
        let xv = g.input(DType::F32, &[2, 2], f32_bytes(&iota(4)));
        let d = g.node(
            Op::Dropout,
            &[Some(xv)],
            &[(DType::F32, &[2, 2]), (DType::Bool, &[2, 2])],
            &[],
        );
        let got = g.run(&d, &desc(16)).unwrap();
        assert_eq!(to_f32(&got[0]), iota(4));
        assert_eq!(got[1], vec![1u8; 4]);
    }
}
