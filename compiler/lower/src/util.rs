//! Shared helpers for op lowerings: strides, broadcasting index arithmetic in kernel IR, and
//! the elementwise kernel skeleton most ops reuse.

use tessera_kir::{KernelBuilder, Val};

/// Row-major strides of `dims`, in elements.
pub fn strides(dims: &[u64]) -> Vec<u64> {
    let mut s = vec![1u64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Strides for reading an input of `in_dims` broadcast (numpy rules, right-aligned) to
/// `out_dims`: broadcast axes get stride 0. The result has `out_dims.len()` entries.
pub fn broadcast_strides(in_dims: &[u64], out_dims: &[u64]) -> Vec<u64> {
    let s = strides(in_dims);
    let off = out_dims.len() - in_dims.len();
    (0..out_dims.len())
        .map(|i| {
            if i < off || in_dims[i - off] == 1 {
                0
            } else {
                s[i - off]
            }
        })
        .collect()
}

/// Emits the flat index `sum(coord[i] * stride[i])`, skipping zero strides.
pub fn linear_index(b: &mut KernelBuilder, coords: &[Val], strides: &[u64]) -> Val {
    let mut acc: Option<Val> = None;
    for (&c, &s) in coords.iter().zip(strides) {
        if s == 0 {
            continue;
        }
        let term = if s == 1 {
            c
        } else {
            let sv = b.index(s as i64);
            b.mul(c, sv)
        };
        acc = Some(match acc {
            Some(a) => b.add(a, term),
            None => term,
        });
    }
    acc.unwrap_or_else(|| b.index(0))
}

/// Emits the coordinates of flat row-major index `flat` in a tensor of `dims`.
pub fn unravel(b: &mut KernelBuilder, flat: Val, dims: &[u64]) -> Vec<Val> {
    let st = strides(dims);
    let mut coords = Vec::with_capacity(dims.len());
    let mut rem = flat;
    for (i, &s) in st.iter().enumerate() {
        if i + 1 == dims.len() {
            coords.push(rem);
        } else {
            let sv = b.index(s as i64);
            let q = b.div(rem, sv);
            coords.push(q);
            let qs = b.mul(q, sv);
            rem = b.sub(rem, qs);
        }
    }
    coords
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_strides_right_align() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), vec![0, 1, 0]);
        assert_eq!(broadcast_strides(&[], &[2]), vec![0]);
    }
}

// =============================================================================================
// Shared helpers (elementwise / reduce / quant engineer): operand access maps and the generic
// elementwise kernel skeleton. Appended below the original helpers; keep new sections apart.
// =============================================================================================

use crate::{LowerCx, Result};
use std::collections::HashMap;
use tessera_ir::{DType, ValueId};
use tessera_kir::{Access, Buf, BufferId, CastMode};

/// Output elements handled by one program instance of an elementwise kernel. Large enough to
/// amortise per-instance overhead, small enough that the host backend can spread a big tensor
/// over threads. A multiple of every vector width we use, so only the last chunk has a tail.
pub const EW_CHUNK: u64 = 4096;

/// The f32 lanes of the vectors an elementwise kernel computes on: as many as the target's
/// widest vector holds (`vector_bytes`), a power of two from 1 to 16 (four 128-bit registers
/// on a chip with wider vectors: enough to fill a 512-bit unit, few enough that a long body's
/// values stay in registers).
pub fn f32_lanes(desc: &tessera_target::TargetDesc) -> u16 {
    let lanes = (desc.vector_bytes / 4).clamp(1, 16);
    // The largest power of two at most `lanes`.
    (1u16 << (15 - (lanes as u16).leading_zeros())).max(1)
}

/// How an elementwise kernel reads one operand at the coordinates of an output element.
#[derive(Clone, Debug)]
pub struct EwOperand {
    pub buffer: BufferId,
    pub dtype: DType,
    /// Elements in the buffer.
    pub len: u64,
    /// Element stride per output axis (0: broadcast along that axis).
    pub strides: Vec<u64>,
    /// Blocked access (blocked quantization): the coordinate along `axis` is divided by
    /// `block` before it is multiplied by that axis's stride.
    pub block: Option<(usize, u64)>,
}

impl EwOperand {
    /// Value `v` read with numpy broadcasting against an output of `out_dims`; an error if the
    /// shapes do not broadcast.
    pub fn broadcast(cx: &mut LowerCx, v: ValueId, out_dims: &[u64]) -> Result<EwOperand> {
        let dims = cx.dims(v)?;
        let ok = dims.len() <= out_dims.len()
            && dims
                .iter()
                .rev()
                .zip(out_dims.iter().rev())
                .all(|(&i, &o)| i == o || i == 1);
        if !ok {
            return Err(cx.invalid(format!(
                "operand `{}` of shape {:?} does not broadcast to the output shape {:?}",
                cx.graph.value(v).name,
                dims,
                out_dims
            )));
        }
        let dtype = cx.dtype(v)?;
        let buffer = cx.buffer(v)?;
        Ok(EwOperand {
            buffer,
            dtype,
            len: dims.iter().product(),
            strides: broadcast_strides(&dims, out_dims),
            block: None,
        })
    }

    /// Element 0 of `buffer`, whatever the output coordinates (a scalar computed by an earlier
    /// kernel, e.g. DynamicQuantizeLinear's scale).
    pub fn scalar(buffer: BufferId, dtype: DType, len: u64, rank: usize) -> EwOperand {
        EwOperand {
            buffer,
            dtype,
            len,
            strides: vec![0; rank],
            block: None,
        }
    }
}

/// The dtype arithmetic runs in for values stored as `d`: formats narrower than f32 are
/// computed in f32 (and rounded back once, at the store), everything else natively.
pub fn compute_dtype(d: DType) -> DType {
    if d.is_low_precision_float() {
        DType::F32
    } else {
        d
    }
}

/// Casts a narrow float value up to its compute dtype (exact: every narrow format is a
/// subset of f32).
pub fn widen(b: &mut KernelBuilder, v: Val) -> Val {
    let d = b.ty(v).elem;
    b.cast(v, compute_dtype(d), CastMode { saturate: false })
}

/// A constant of `like`'s type (and lane count) holding `v`: lets a body be written once for
/// scalars and vectors.
pub fn konst_like(b: &mut KernelBuilder, like: Val, v: f64) -> Val {
    let t = b.ty(like);
    if t.is_tile() {
        // A tile constant is a splat of a scalar one (the elementwise bodies then work on the
        // tiles of an epilogue, too).
        return b.const_tile(t.elem, t.rows, t.lanes, v);
    }
    b.const_num(t, v)
}

/// Merges adjacent output axes that every operand walks contiguously (or broadcasts along
/// both), and drops size-1 axes, so e.g. `[2,3,4,5] + [5]` indexes as `[24,5]`. Returns the
/// new dims and each operand's new strides. Blocked operands pin the axes as they are.
fn coalesce(dims: &[u64], strides: &[Vec<u64>]) -> (Vec<u64>, Vec<Vec<u64>>) {
    let mut out_dims: Vec<u64> = Vec::new();
    let mut out_strides: Vec<Vec<u64>> = vec![Vec::new(); strides.len()];
    for (ax, &d) in dims.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let mergeable = !out_dims.is_empty()
            && strides
                .iter()
                .zip(&out_strides)
                .all(|(s, os)| *os.last().unwrap_or(&0) == s[ax] * d);
        if mergeable {
            let last = out_dims.len() - 1;
            out_dims[last] *= d;
            for (s, os) in strides.iter().zip(out_strides.iter_mut()) {
                let l = os.len() - 1;
                os[l] = s[ax];
            }
        } else {
            out_dims.push(d);
            for (s, os) in strides.iter().zip(out_strides.iter_mut()) {
                os.push(s[ax]);
            }
        }
    }
    (out_dims, out_strides)
}

/// How the skeleton computes an operand's element index.
#[derive(Clone, Copy, PartialEq)]
enum IndexKind {
    /// Same layout as the output: the flat output index.
    Flat,
    /// Always element 0.
    Scalar,
    /// Through the output coordinates and strides.
    Strided,
}

/// Emits and launches the generic elementwise kernel: `out[i] = body(operands at i)` for every
/// output element `i` of `out_dims`.
///
/// The flat output range is split into chunks of [`EW_CHUNK`] over a 1-D grid (the last chunk
/// guarded with `min`). `body` gets each operand loaded and widened by [`widen`] and returns
/// the result, which is cast to `out_dtype` if its type differs. Bodies must be lane-generic
/// (no `if`, constants via [`konst_like`]): when every operand is f32 and either flat or
/// scalar, the kernel runs the body on `vec<4xf32>` with a scalar tail. An empty output
/// launches nothing.
pub fn emit_elementwise(
    cx: &mut LowerCx,
    name: &str,
    operands: &[EwOperand],
    out: BufferId,
    out_dtype: DType,
    out_dims: &[u64],
    body: &dyn Fn(&mut KernelBuilder, &[Val]) -> Val,
) -> Result<()> {
    let n: u64 = out_dims.iter().product();
    if n == 0 {
        return Ok(());
    }
    let blocked = operands.iter().any(|o| o.block.is_some());
    let all_strides: Vec<Vec<u64>> = operands.iter().map(|o| o.strides.clone()).collect();
    let (dims, strides) = if blocked {
        (out_dims.to_vec(), all_strides)
    } else {
        coalesce(out_dims, &all_strides)
    };
    let flat_strides = self::strides(&dims);
    let kinds: Vec<IndexKind> = operands
        .iter()
        .zip(&strides)
        .map(|(o, s)| {
            if o.block.is_none() && s.iter().all(|&x| x == 0) {
                IndexKind::Scalar
            } else if o.block.is_none() && *s == flat_strides {
                IndexKind::Flat
            } else {
                IndexKind::Strided
            }
        })
        .collect();

    let kname = cx.kernel_name(name);
    let mut b = KernelBuilder::new(kname);
    // One parameter per distinct buffer: `Add(x, x)` binds `x` once.
    let mut params: HashMap<BufferId, Buf> = HashMap::new();
    let mut args = Vec::new();
    let mut bufs = Vec::new();
    for (i, o) in operands.iter().enumerate() {
        let p = *params.entry(o.buffer).or_insert_with(|| {
            args.push(o.buffer);
            b.param(format!("in{i}"), o.dtype, o.len, Access::Read)
        });
        bufs.push(p);
    }
    let out_buf = b.param("out", out_dtype, n, Access::Write);
    args.push(out);

    let lanes = f32_lanes(cx.desc);
    let vectorize = lanes > 1
        && n >= lanes as u64
        && out_dtype == DType::F32
        && operands.iter().all(|o| o.dtype == DType::F32)
        && kinds.iter().all(|&k| k != IndexKind::Strided);

    b.set_grid(&[n.div_ceil(EW_CHUNK)]);
    let pid = b.program_id(0);
    let chunk = b.index(EW_CHUNK as i64);
    let start = b.mul(pid, chunk);
    let start_plus = b.add(start, chunk);
    let total = b.index(n as i64);
    let end = b.min(start_plus, total);

    // One element (or one vector of `l` elements) at flat index `i`.
    let emit_at = |b: &mut KernelBuilder, i: Val, l: u16| {
        let coords = if kinds.contains(&IndexKind::Strided) {
            unravel(b, i, &dims)
        } else {
            Vec::new()
        };
        let mut vals = Vec::with_capacity(operands.len());
        for (k, o) in operands.iter().enumerate() {
            let v = match kinds[k] {
                IndexKind::Flat => b.load(bufs[k], i, l),
                IndexKind::Scalar => {
                    let zero = b.index(0);
                    let s = b.load(bufs[k], zero, 1);
                    if l > 1 {
                        b.splat(s, l)
                    } else {
                        s
                    }
                }
                IndexKind::Strided => {
                    let mut cs = coords.clone();
                    if let Some((axis, block)) = o.block {
                        let bv = b.index(block as i64);
                        cs[axis] = b.div(cs[axis], bv);
                    }
                    let idx = linear_index(b, &cs, &strides[k]);
                    b.load(bufs[k], idx, 1)
                }
            };
            vals.push(widen(b, v));
        }
        let r = body(b, &vals);
        let r = b.cast(r, out_dtype, CastMode { saturate: false });
        b.store(out_buf, i, r);
    };

    let one = b.index(1);
    let scalar_from = if vectorize {
        // Whole vectors first, then a scalar tail (only the last chunk has one).
        let lv = b.index(lanes as i64);
        let len = b.sub(end, start);
        let whole = b.div(len, lv);
        let whole = b.mul(whole, lv);
        let vec_end = b.add(start, whole);
        b.for_loop(start, vec_end, lv, &[], |b, i, _| {
            emit_at(b, i, lanes);
            Vec::new()
        });
        vec_end
    } else {
        start
    };
    b.for_loop(scalar_from, end, one, &[], |b, i, _| {
        emit_at(b, i, 1);
        Vec::new()
    });
    cx.launch(b.finish(), args);
    Ok(())
}
