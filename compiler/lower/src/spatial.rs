//! Lowerings of the spatial ops: Resize, ConvTranspose, ConvInteger, ScatterElements,
//! ScatterND, MaxUnpool, LRN, ReverseSequence, CenterCropPad, Col2Im, GridSample and
//! AffineGrid. One section per op.
//!
//! Most kernels are written in gather form: one work item per output element, which reads
//! what it needs with every index guarded. Scatters copy the data first and then apply the
//! updates in a kernel whose program instances never touch the same element (ScatterElements:
//! one instance per line along `axis`; ScatterND and MaxUnpool: one instance, in order, since
//! runtime indices may collide). Narrow floats are computed in f32, f64 in f64.

use crate::movement::{chunking, for_each_item, norm_axis, operand, result};
use crate::util::{linear_index, strides, unravel};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op, Tensor};
use tessera_kir::{
    Access, BinOp, Buf, BufferId, BufferKind, CastMode, CmpOp, Execution, KernelBuilder, MathFn,
    PlanBuffer, Scalar, Ty, UnOp, Val,
};

const NO_SAT: CastMode = CastMode { saturate: false };
/// Output elements per program instance for the gather-form kernels.
const CHUNK: u64 = 4096;

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    match node.op {
        Op::Resize => resize(cx, node),
        Op::ConvTranspose => conv_transpose(cx, node),
        Op::ConvInteger => conv_integer(cx, node),
        Op::ScatterElements => scatter_elements(cx, node),
        Op::ScatterND => scatter_nd(cx, node),
        Op::MaxUnpool => max_unpool(cx, node),
        Op::LRN => lrn(cx, node),
        Op::ReverseSequence => reverse_sequence(cx, node),
        Op::CenterCropPad => center_crop_pad(cx, node),
        Op::Col2Im => col2im(cx, node),
        Op::GridSample => grid_sample(cx, node),
        Op::AffineGrid => affine_grid(cx, node),
        op => Err(cx.unsupported(format!("no spatial lowering for op {op}"))),
    }
}

// ==== Shared helpers ====

/// The dtype arithmetic runs in for data stored as `d`: f64 natively, everything else in f32.
fn calc_dtype(d: DType) -> DType {
    if d == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Loads element `idx` of `buf` and converts it to `c`.
fn ld(b: &mut KernelBuilder, buf: Buf, idx: Val, c: DType) -> Val {
    let v = b.load(buf, idx, 1);
    b.cast(v, c, NO_SAT)
}

fn fc(b: &mut KernelBuilder, c: DType, v: f64) -> Val {
    b.const_num(Ty::scalar(c), v)
}

/// A constant buffer holding `t` (lookup tables computed at compile time). `t` must not be empty.
fn const_table(cx: &mut LowerCx, name: &str, t: Tensor) -> BufferId {
    cx.program.plan.consts.push(t.bytes.as_ref().clone());
    let k = cx.program.plan.consts.len() as u32 - 1;
    cx.program.plan.buffers.push(PlanBuffer {
        name: name.into(),
        dtype: t.dtype,
        dims: t.dims.clone(),
        kind: BufferKind::Const(k),
    });
    BufferId(cx.program.plan.buffers.len() as u32 - 1)
}

/// `lo <= v < hi` for index values.
fn in_range(b: &mut KernelBuilder, v: Val, lo: i64, hi: i64) -> Val {
    let l = b.index(lo);
    let h = b.index(hi);
    let ge = b.cmp(CmpOp::Ge, v, l);
    let lt = b.cmp(CmpOp::Lt, v, h);
    b.binary(BinOp::And, ge, lt)
}

/// A transposed (scatter-style) window tap: the input position `q` that output coordinate `o`
/// reads through kernel tap `k`, where `o + pad - k*dil = q*stride` must hold exactly with
/// `0 <= q < len`. Returns `q` (0 when there is none, so it is always safe to load) and
/// whether it exists. ConvTranspose and Col2Im both walk their windows this way.
fn transposed_tap(
    b: &mut KernelBuilder,
    o: Val,
    k: Val,
    pad: i64,
    dil: i64,
    stride: i64,
    len: i64,
) -> (Val, Val) {
    let pv = b.index(pad);
    let dv = b.index(dil);
    let kd = b.mul(k, dv);
    let t = b.add(o, pv);
    let num = b.sub(t, kd);
    let sv = b.index(stride);
    let q = b.div(num, sv);
    let qs = b.mul(q, sv);
    let zero = b.index(0);
    let exact = b.cmp(CmpOp::Eq, qs, num);
    let nonneg = b.cmp(CmpOp::Ge, num, zero);
    let inr = in_range(b, q, 0, len);
    let v1 = and(b, exact, nonneg);
    let valid = and(b, v1, inr);
    (b.select(valid, q, zero), valid)
}

fn and(b: &mut KernelBuilder, x: Val, y: Val) -> Val {
    b.binary(BinOp::And, x, y)
}

/// Loads an index operand element as i64.
fn ld_index(b: &mut KernelBuilder, buf: Buf, at: Val) -> Val {
    let v = b.load(buf, at, 1);
    b.cast(v, DType::I64, NO_SAT)
}

/// A string attribute, with a default.
fn attr_s<'a>(node: &'a Node, name: &str, default: &'a str) -> &'a str {
    node.attr_str(name).unwrap_or(default)
}

/// The compile-time float contents of operand `i` (`None` when absent or empty).
fn const_floats(cx: &LowerCx, node: &Node, i: usize) -> Result<Option<Vec<f64>>> {
    let Some(v) = node.input(i) else {
        return Ok(None);
    };
    let t = cx
        .konst(v)
        .ok_or_else(|| cx.unsupported(format!("operand {i} must be known at compile time")))?;
    let f = t
        .to_f64_vec()
        .ok_or_else(|| cx.invalid(format!("operand {i} is not numeric")))?;
    Ok(if f.is_empty() { None } else { Some(f) })
}

/// Window attributes (strides, pads, ...) beyond this magnitude are refused, so that index
/// arithmetic on them cannot overflow.
const ATTR_LIMIT: i64 = 1 << 20;

/// An ints attribute with `len` entries (`default` each when absent), each within
/// [`ATTR_LIMIT`].
fn ints_attr(cx: &LowerCx, node: &Node, name: &str, len: usize, default: i64) -> Result<Vec<i64>> {
    let v = match node.attr_ints(name) {
        None => vec![default; len],
        Some(v) if v.len() == len => v.to_vec(),
        Some(v) => return Err(cx.invalid(format!("`{name}` {v:?} must have {len} entries"))),
    };
    if v.iter().any(|x| x.abs() > ATTR_LIMIT) {
        return Err(cx.unsupported(format!("`{name}` {v:?}: values beyond {ATTR_LIMIT}")));
    }
    Ok(v)
}

/// Floor division for i64 (Python `//`).
fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b) - if b < 0 && a.rem_euclid(b) != 0 { 1 } else { 0 }
}

/// Emits `for e in 0..total` over output elements (chunked 1-D grid) and launches; `f` gets
/// the flat output index.
fn per_element(
    cx: &mut LowerCx,
    b: KernelBuilder,
    total: u64,
    out_dtype: DType,
    args: Vec<BufferId>,
    f: impl FnOnce(&mut KernelBuilder, Val),
) {
    let mut b = b;
    let (_, chunk) = chunking(total, CHUNK, out_dtype);
    for_each_item(&mut b, total, chunk, f);
    cx.launch(b.finish(), args);
}

// ==== Resize ====

#[derive(Clone, Copy, PartialEq)]
enum Interp {
    Nearest,
    Linear,
    Cubic,
}

/// Resize parameters for one axis: per output coordinate, `taps` (input index, weight)
/// pairs and whether the coordinate extrapolates (tf_crop_and_resize only).
struct AxisTaps {
    taps: usize,
    idx: Vec<i64>,
    w: Vec<f64>,
    ext: Vec<bool>,
}

struct ResizeCfg<'a> {
    interp: Interp,
    nearest_mode: &'a str,
    ctm: &'a str,
    cubic_a: f64,
    exclude_outside: bool,
    antialias: bool,
}

/// The interpolation coefficients for fractional position `ratio` (ONNX reference semantics).
fn resize_coeffs(cfg: &ResizeCfg, ratio: f64, scale: f64) -> std::result::Result<Vec<f64>, String> {
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    Ok(match cfg.interp {
        Interp::Nearest => {
            if ratio.fract() == 0.0 {
                vec![0.0, 1.0]
            } else {
                match cfg.nearest_mode {
                    "round_prefer_floor" => vec![b(ratio <= 0.5), b(ratio > 0.5)],
                    "round_prefer_ceil" => vec![b(ratio < 0.5), b(ratio >= 0.5)],
                    "floor" => vec![1.0, 0.0],
                    "ceil" => vec![0.0, 1.0],
                    m => return Err(format!("nearest_mode `{m}`")),
                }
            }
        }
        Interp::Linear if cfg.antialias => {
            let scale = scale.min(1.0);
            let start = (-1.0 / scale).floor() as i64 + 1;
            let footprint = 2 - 2 * start;
            let c: Vec<f64> = (start..start + footprint)
                .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                .collect();
            let s: f64 = c.iter().sum();
            c.iter().map(|v| v / s).collect()
        }
        Interp::Linear => vec![1.0 - ratio, ratio],
        Interp::Cubic if cfg.antialias => {
            let a = cfg.cubic_a;
            let scale = scale.min(1.0);
            let coeff = |x: f64| {
                let x = x.abs();
                let (x2, x3) = (x * x, x * x * x);
                if x <= 1.0 {
                    (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                } else if x < 2.0 {
                    a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                } else {
                    0.0
                }
            };
            let i_start = (-2.0 / scale).floor() as i64 + 1;
            let i_end = 2 - i_start;
            let c: Vec<f64> = (i_start..i_end)
                .map(|i| coeff(scale * (i as f64 - ratio)))
                .collect();
            let s: f64 = c.iter().sum();
            c.iter().map(|v| v / s).collect()
        }
        Interp::Cubic => {
            let a = cfg.cubic_a;
            let r = ratio;
            let q = 1.0 - r;
            vec![
                ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                ((a * (q + 1.0) - 5.0 * a) * (q + 1.0) + 8.0 * a) * (q + 1.0) - 4.0 * a,
            ]
        }
    })
}

/// The taps of one resized axis, following the ONNX reference implementation.
fn resize_axis(
    cfg: &ResizeCfg,
    input: u64,
    output: u64,
    scale: f64,
    roi: (f64, f64),
) -> std::result::Result<AxisTaps, String> {
    if cfg.antialias && scale < 1.0 / 4096.0 {
        return Err(format!("antialiasing with scale {scale} (too many taps)"));
    }
    let (iw, ow_int) = (input as f64, output as f64);
    let ow = scale * iw;
    let mut out = AxisTaps {
        taps: 0,
        idx: Vec::new(),
        w: Vec::new(),
        ext: Vec::new(),
    };
    for y in 0..output {
        let y = y as f64;
        let mut ext = false;
        let x = match cfg.ctm {
            "align_corners" => {
                if ow == 1.0 {
                    0.0
                } else {
                    y * (iw - 1.0) / (ow - 1.0)
                }
            }
            "asymmetric" => y / scale,
            "tf_crop_and_resize" => {
                let x = if ow == 1.0 {
                    (roi.1 - roi.0) * (iw - 1.0) / 2.0
                } else {
                    y * (roi.1 - roi.0) * (iw - 1.0) / (ow - 1.0)
                };
                let x = x + roi.0 * (iw - 1.0);
                ext = x < 0.0 || x > iw - 1.0;
                x
            }
            "pytorch_half_pixel" => {
                if ow == 1.0 {
                    -0.5
                } else {
                    (y + 0.5) / scale - 0.5
                }
            }
            "half_pixel" => (y + 0.5) / scale - 0.5,
            "half_pixel_symmetric" => {
                let adjustment = ow_int / ow;
                let offset = iw / 2.0 * (1.0 - adjustment);
                offset + (y + 0.5) / scale - 0.5
            }
            m => return Err(format!("coordinate_transformation_mode `{m}`")),
        };
        if !x.is_finite() {
            return Err(format!("a source coordinate that is not finite ({x})"));
        }
        let xi = x.floor();
        let ratio = if x == xi { 1.0 } else { x - xi };
        let mut c = resize_coeffs(cfg, ratio, scale)?;
        let n = c.len() as i64;
        let pad = (n + 1) / 2;
        let xp = x + pad as f64;
        let p = xp.floor();
        let frac = xp - p;
        let p = p as i64;
        let off = if n % 2 == 0 {
            if frac == 0.0 {
                -(n / 2)
            } else {
                -(n / 2) + 1
            }
        } else {
            let base = -((n - 1) / 2);
            if frac <= 0.5 {
                base
            } else {
                base + 1
            }
        };
        let start = p + off - pad;
        let idx: Vec<i64> = (0..n).map(|k| start + k).collect();
        if cfg.exclude_outside {
            for (k, &i) in idx.iter().enumerate() {
                if i < 0 || i >= input as i64 {
                    c[k] = 0.0;
                }
            }
            let s: f64 = c.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            for v in c.iter_mut() {
                *v /= s;
            }
        }
        let clamp = |i: i64| i.clamp(0, input as i64 - 1);
        if cfg.interp == Interp::Nearest {
            // One tap: the index whose coefficient is set.
            let k = c.iter().position(|&v| v != 0.0).unwrap_or(0);
            out.taps = 1;
            out.idx.push(clamp(idx[k]));
            out.w.push(1.0);
        } else {
            if out.taps != 0 && out.taps != c.len() {
                return Err("a varying number of taps".into());
            }
            out.taps = c.len();
            out.idx.extend(idx.iter().map(|&i| clamp(i)));
            out.w.extend(c);
        }
        out.ext.push(ext);
    }
    Ok(out)
}

fn resize(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = (operand(cx, node, 0)?, result(cx, node, 0)?);
    let (xd, yd) = (cx.dims(x)?, cx.dims(y)?);
    let r = xd.len();
    if yd.len() != r {
        return Err(cx.invalid("result rank differs from the input's"));
    }
    let dt = cx.dtype(x)?;
    let interp = match attr_s(node, "mode", "nearest") {
        "nearest" => Interp::Nearest,
        "linear" => Interp::Linear,
        "cubic" => Interp::Cubic,
        m => return Err(cx.invalid(format!("mode `{m}`; expected nearest, linear or cubic"))),
    };
    let cfg = ResizeCfg {
        interp,
        nearest_mode: attr_s(node, "nearest_mode", "round_prefer_floor"),
        ctm: attr_s(node, "coordinate_transformation_mode", "half_pixel"),
        cubic_a: node.attr_float("cubic_coeff_a", -0.75) as f64,
        exclude_outside: node.attr_int("exclude_outside", 0) != 0,
        antialias: node.attr_int("antialias", 0) != 0 && interp != Interp::Nearest,
    };
    let extrapolation = node.attr_float("extrapolation_value", 0.0) as f64;
    let axes: Vec<usize> = match node.attr_ints("axes") {
        Some(a) => a
            .iter()
            .map(|&v| norm_axis(cx, v, r))
            .collect::<Result<_>>()?,
        None => (0..r).collect(),
    };
    let na = axes.len();
    let roi = const_floats(cx, node, 1)?;
    let mut roi_full: Vec<(f64, f64)> = vec![(0.0, 1.0); r];
    if let Some(roi) = &roi {
        if roi.len() != 2 * na {
            return Err(cx.invalid(format!("roi has {} values for {na} axes", roi.len())));
        }
        for (k, &a) in axes.iter().enumerate() {
            roi_full[a] = (roi[k], roi[na + k]);
        }
    } else if cfg.ctm == "tf_crop_and_resize" {
        return Err(cx.invalid("tf_crop_and_resize needs a roi"));
    }
    let sizes = cx.const_ints(node, 3)?.filter(|v| !v.is_empty());
    let mut scale = vec![1.0f64; r];
    if let Some(sizes) = &sizes {
        if sizes.len() != na {
            return Err(cx.invalid(format!("sizes has {} values for {na} axes", sizes.len())));
        }
        for (k, &a) in axes.iter().enumerate() {
            scale[a] = if xd[a] == 0 {
                1.0
            } else {
                sizes[k] as f64 / xd[a] as f64
            };
        }
        let policy = attr_s(node, "keep_aspect_ratio_policy", "stretch");
        if policy != "stretch" {
            let it = axes.iter().map(|&a| scale[a]);
            let s = if policy == "not_larger" {
                it.fold(f64::INFINITY, f64::min)
            } else {
                it.fold(0.0, f64::max)
            };
            for &a in &axes {
                scale[a] = s;
            }
        }
    } else {
        let scales = const_floats(cx, node, 2)?
            .ok_or_else(|| cx.invalid("neither scales nor sizes is given"))?;
        if scales.len() != na {
            return Err(cx.invalid(format!("scales has {} values for {na} axes", scales.len())));
        }
        for (k, &a) in axes.iter().enumerate() {
            scale[a] = scales[k];
        }
    }
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    if xd.contains(&0) {
        return Err(cx.invalid("cannot resize an empty input to a non-empty result"));
    }
    if interp != Interp::Nearest && !(dt.is_float() || dt.is_int()) {
        return Err(cx.unsupported(format!(
            "{} interpolation on {dt}",
            attr_s(node, "mode", "")
        )));
    }
    // Per axis: identity (read the output coordinate) or a tap table.
    struct Act {
        axis: usize,
        taps: i64,
        off: i64,
        ext_off: i64,
    }
    let mut acts: Vec<Act> = Vec::new();
    let (mut idx_tab, mut w_tab, mut ext_tab) = (Vec::new(), Vec::new(), Vec::new());
    let mut any_ext = false;
    for a in 0..r {
        let identity = (scale[a] - 1.0).abs() <= 1e-9 * scale[a].abs().max(1.0)
            && yd[a] == xd[a]
            && (roi.is_none()
                || ((roi_full[a].0).abs() <= 1e-9 && (roi_full[a].1 - 1.0).abs() <= 1e-9));
        if identity {
            continue;
        }
        if !axes.contains(&a) {
            return Err(cx.invalid(format!("dim {a} is not resized but changes size")));
        }
        if !(scale[a] > 0.0 && scale[a].is_finite()) {
            return Err(cx.invalid(format!("scale {} for dim {a}", scale[a])));
        }
        if yd[a] > 1 << 24 {
            return Err(cx.unsupported(format!(
                "resizing dim {a} to {} (tap tables too large)",
                yd[a]
            )));
        }
        let t = resize_axis(&cfg, xd[a], yd[a], scale[a], roi_full[a])
            .map_err(|m| cx.unsupported(m))?;
        acts.push(Act {
            axis: a,
            taps: t.taps as i64,
            off: idx_tab.len() as i64,
            ext_off: ext_tab.len() as i64,
        });
        idx_tab.extend(t.idx);
        w_tab.extend(t.w.iter().map(|&v| v as f32));
        any_ext |= t.ext.iter().any(|&e| e);
        ext_tab.extend(t.ext.iter().map(|&e| e as i64));
    }
    let any_ext = any_ext && cfg.ctm == "tf_crop_and_resize";
    if idx_tab.is_empty() {
        idx_tab.push(0);
        w_tab.push(0.0);
    }
    let ib = const_table(
        cx,
        "resize_index",
        Tensor::from_i64(vec![idx_tab.len() as u64], &idx_tab),
    );
    let wb_ = const_table(
        cx,
        "resize_weight",
        Tensor::from_f32(vec![w_tab.len() as u64], &w_tab),
    );
    let eb = if any_ext {
        Some(const_table(
            cx,
            "resize_extrapolate",
            Tensor::from_i64(vec![ext_tab.len() as u64], &ext_tab),
        ))
    } else {
        None
    };
    let xs = strides(&xd);
    let mut b = KernelBuilder::new(cx.kernel_name("resize"));
    let xbuf = b.param("x", dt, xd.iter().product(), Access::Read);
    let ibuf = b.param("index", DType::I64, idx_tab.len() as u64, Access::Read);
    let wbuf = b.param("weight", DType::F32, w_tab.len() as u64, Access::Read);
    let ebuf = eb.map(|_| {
        b.param(
            "extrapolate",
            DType::I64,
            ext_tab.len() as u64,
            Access::Read,
        )
    });
    let ybuf = b.param("y", dt, total, Access::Write);
    let mut args = vec![cx.buffer(x)?, ib, wb_];
    args.extend(eb);
    args.push(cx.buffer(y)?);
    let c = calc_dtype(dt);
    per_element(cx, b, total, dt, args, |b, e| {
        let oc = unravel(b, e, &yd);
        // The base offset from identity dims.
        let mut base = b.index(0);
        for a in 0..r {
            if !acts.iter().any(|t| t.axis == a) {
                let s = b.index(xs[a] as i64);
                let t = b.mul(oc[a], s);
                base = b.add(base, t);
            }
        }
        let mut value = if interp == Interp::Nearest {
            let mut src = base;
            for t in &acts {
                let off = b.index(t.off);
                let pos = b.add(off, oc[t.axis]);
                let i = b.load(ibuf, pos, 1);
                let s = b.index(xs[t.axis] as i64);
                let d = b.mul(i, s);
                src = b.add(src, d);
            }
            b.load(xbuf, src, 1)
        } else {
            let one = fc(b, c, 1.0);
            let zero = fc(b, c, 0.0);
            let acc = taps_fold(
                b,
                &acts
                    .iter()
                    .map(|t| (t.axis, t.taps, t.off, xs[t.axis]))
                    .collect::<Vec<_>>(),
                &oc,
                base,
                one,
                zero,
                [xbuf, ibuf, wbuf],
                c,
            );
            b.cast(acc, dt, NO_SAT)
        };
        if let Some(ebuf) = ebuf {
            let mut any = b.constant(Ty::BOOL, Scalar::Int(0));
            for t in &acts {
                let off = b.index(t.ext_off);
                let pos = b.add(off, oc[t.axis]);
                let f = b.load(ebuf, pos, 1);
                let z = b.index(0);
                let nz = b.cmp(CmpOp::Ne, f, z);
                any = b.binary(BinOp::Or, any, nz);
            }
            let ev = b.const_num(Ty::scalar(dt), extrapolation);
            value = b.select(any, ev, value);
        }
        b.store(ybuf, e, value);
    });
    Ok(Execution::Kernel)
}

/// Nested loops over the taps of each resized axis `(axis, taps, table offset, input stride)`,
/// accumulating `weight product * x[src]` into `acc`.
#[allow(clippy::too_many_arguments)]
fn taps_fold(
    b: &mut KernelBuilder,
    acts: &[(usize, i64, i64, u64)],
    oc: &[Val],
    src: Val,
    w: Val,
    acc: Val,
    bufs: [Buf; 3],
    c: DType,
) -> Val {
    let [xbuf, ibuf, wbuf] = bufs;
    let Some(&(axis, taps, off, xs)) = acts.first() else {
        let xv = ld(b, xbuf, src, c);
        let p = b.mul(w, xv);
        return b.add(acc, p);
    };
    let tv = b.index(taps);
    let p0 = b.mul(oc[axis], tv);
    let ov = b.index(off);
    let p0 = b.add(p0, ov);
    let (lo, hi, one) = (b.index(0), b.index(taps), b.index(1));
    b.for_loop(lo, hi, one, &[acc], |b, t, car| {
        let pos = b.add(p0, t);
        let i = b.load(ibuf, pos, 1);
        let wt = ld(b, wbuf, pos, c);
        let sv = b.index(xs as i64);
        let d = b.mul(i, sv);
        let s2 = b.add(src, d);
        let w2 = b.mul(w, wt);
        vec![taps_fold(b, &acts[1..], oc, s2, w2, car[0], bufs, c)]
    })[0]
}

// ==== ConvTranspose ====

fn conv_transpose(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, wv, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        result(cx, node, 0)?,
    );
    let (xd, wd, yd) = (cx.dims(x)?, cx.dims(wv)?, cx.dims(y)?);
    if xd.len() < 3 || wd.len() != xd.len() || yd.len() != xd.len() {
        return Err(cx.invalid(format!("ConvTranspose needs X [N, C, ...] and W [C, M/group, ...] of equal rank; got {xd:?}, {wd:?}")));
    }
    let dt = cx.dtype(x)?;
    if !dt.is_float() || cx.dtype(wv)? != dt {
        return Err(cx.unsupported(format!("ConvTranspose on {dt}")));
    }
    let n = xd.len() - 2;
    let group = node.attr_int("group", 1);
    let (nb, ch) = (xd[0], xd[1]);
    if group <= 0
        || group > ATTR_LIMIT
        || ch % group as u64 != 0
        || wd[0] != ch
        || yd[1] != wd[1] * group as u64
        || yd[0] != nb
    {
        return Err(cx.invalid(format!(
            "channels do not agree with group {group}: X {xd:?}, W {wd:?}, Y {yd:?}"
        )));
    }
    let g = group as u64;
    let (cg, mg, mo) = (ch / g, wd[1], yd[1]);
    let kernel: Vec<u64> = wd[2..].to_vec();
    let list = |name: &str, len: usize, default: i64| ints_attr(cx, node, name, len, default);
    let st = list("strides", n, 1)?;
    let dil = list("dilations", n, 1)?;
    let out_pad = list("output_padding", n, 0)?;
    if st.iter().chain(&dil).any(|&v| v < 1) {
        return Err(cx.invalid("strides and dilations must be positive"));
    }
    let auto_pad = attr_s(node, "auto_pad", "NOTSET");
    // As the ONNX reference: explicit pads win; SAME_* derive them from the output shape;
    // otherwise no padding (a larger output_shape then just leaves zeros at the end).
    let pb: Vec<i64> = match node.attr_ints("pads") {
        Some(p) => {
            if p.len() != 2 * n {
                return Err(cx.invalid(format!("pads {p:?} must have {} entries", 2 * n)));
            }
            p[..n].to_vec()
        }
        None if matches!(auto_pad, "SAME_UPPER" | "SAME_LOWER") => {
            let os: Vec<i64> = match node.attr_ints("output_shape") {
                Some(os) if os.iter().any(|v| v.abs() > 1 << 40) => {
                    return Err(cx.invalid(format!("output_shape {os:?} is out of range")))
                }
                Some(os) => os[os.len().saturating_sub(n)..].to_vec(),
                None => (0..n).map(|i| xd[i + 2] as i64 * st[i]).collect(),
            };
            if os.len() != n {
                return Err(cx.invalid("output_shape does not give every spatial size"));
            }
            (0..n)
                .map(|i| {
                    let total = st[i] * (xd[i + 2] as i64 - 1)
                        + out_pad[i]
                        + (kernel[i] as i64 - 1) * dil[i]
                        + 1
                        - os[i];
                    if auto_pad == "SAME_UPPER" {
                        floor_div(total, 2)
                    } else {
                        total - floor_div(total, 2)
                    }
                })
                .collect()
        }
        None => vec![0; n],
    };
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let it: u64 = xd[2..].iter().product();
    let kt: u64 = kernel.iter().product();
    let ot: u64 = yd[2..].iter().product();
    let c = calc_dtype(dt);
    let bias = node.input(2);
    let mut args = vec![cx.buffer(x)?, cx.buffer(wv)?];
    if let Some(bv) = bias {
        if cx.numel(bv)? != mo {
            return Err(cx.invalid("bias must have M elements"));
        }
        args.push(cx.buffer(bv)?);
    }
    args.push(cx.buffer(y)?);
    let mut b = KernelBuilder::new(cx.kernel_name("conv_transpose"));
    let xb = b.param("x", dt, cx.numel(x)?.max(1), Access::Read);
    let wb = b.param("w", dt, cx.numel(wv)?.max(1), Access::Read);
    let bb = bias.map(|_| b.param("bias", dt, mo, Access::Read));
    let yb = b.param("y", dt, total, Access::Write);
    let ins: Vec<u64> = xd[2..].to_vec();
    let outs: Vec<u64> = yd[2..].to_vec();
    let ist = strides(&ins);
    per_element(cx, b, total, dt, args, |b, e| {
        let otv = b.index(ot as i64);
        let nm = b.div(e, otv);
        let nmo = b.mul(nm, otv);
        let o = b.sub(e, nmo);
        let mv = b.index(mo as i64);
        let nn = b.div(nm, mv);
        let nnm = b.mul(nn, mv);
        let m = b.sub(nm, nnm);
        let mgv = b.index(mg as i64);
        let gi = b.div(m, mgv);
        let gim = b.mul(gi, mgv);
        let ml = b.sub(m, gim);
        let oc = unravel(b, o, &outs);
        let init = match bb {
            Some(bb) => ld(b, bb, m, c),
            None => fc(b, c, 0.0),
        };
        // x channel base: (n*C + g*Cg) * It; w base: (g*Cg*Mg + ml) * Kt, channel stride Mg*Kt.
        let cv = b.index(ch as i64);
        let ncv = b.mul(nn, cv);
        let cgv = b.index(cg as i64);
        let gc = b.mul(gi, cgv);
        let c0 = b.add(ncv, gc);
        let itv = b.index(it as i64);
        let x_base = b.mul(c0, itv);
        let gcm = b.mul(gc, mgv);
        let wrow = b.add(gcm, ml);
        let ktv = b.index(kt as i64);
        let w_base = b.mul(wrow, ktv);
        let (k0, k1, one) = (b.index(0), b.index(kt as i64), b.index(1));
        let r = b.for_loop(k0, k1, one, &[init], |b, k, car| {
            let kc = unravel(b, k, &kernel);
            let mut ok = b.constant(Ty::BOOL, Scalar::Int(1));
            let mut xoff = b.index(0);
            for d in 0..n {
                let (safe, valid) =
                    transposed_tap(b, oc[d], kc[d], pb[d], dil[d], st[d], ins[d] as i64);
                ok = and(b, ok, valid);
                let sd = b.index(ist[d] as i64);
                let tt = b.mul(safe, sd);
                xoff = b.add(xoff, tt);
            }
            let xo = b.add(x_base, xoff);
            let wo = b.add(w_base, k);
            let (c0, c1) = (b.index(0), b.index(cg as i64));
            let sum = b.for_loop(c0, c1, one, &[car[0]], |b, ci, acc| {
                let xstep = b.mul(ci, itv);
                let xi = b.add(xo, xstep);
                let wstep_c = b.index((mg * kt) as i64);
                let wstep = b.mul(ci, wstep_c);
                let wi = b.add(wo, wstep);
                let xv = ld(b, xb, xi, c);
                let wv = ld(b, wb, wi, c);
                let p = b.mul(xv, wv);
                vec![b.add(acc[0], p)]
            });
            vec![b.select(ok, sum[0], car[0])]
        });
        let out = b.cast(r[0], dt, NO_SAT);
        b.store(yb, e, out);
    });
    Ok(Execution::Kernel)
}

// ==== ConvInteger ====

fn conv_integer(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, wv, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        result(cx, node, 0)?,
    );
    let (xd, wd, yd) = (cx.dims(x)?, cx.dims(wv)?, cx.dims(y)?);
    if xd.len() < 3 || wd.len() != xd.len() || yd.len() != xd.len() {
        return Err(cx.invalid(format!("ConvInteger needs X [N, C, ...] and W [M, C/group, ...] of equal rank; got {xd:?}, {wd:?}")));
    }
    let (xt, wt) = (cx.dtype(x)?, cx.dtype(wv)?);
    for t in [xt, wt] {
        if !matches!(t, DType::U8 | DType::I8) {
            return Err(cx.unsupported(format!("ConvInteger on {t}")));
        }
    }
    let n = xd.len() - 2;
    let group = node.attr_int("group", 1);
    let (nb, ch, mo) = (xd[0], xd[1], wd[0]);
    if group <= 0
        || group > ATTR_LIMIT
        || ch % group as u64 != 0
        || mo % group as u64 != 0
        || wd[1] * group as u64 != ch
        || yd[1] != mo
        || yd[0] != nb
    {
        return Err(cx.invalid(format!(
            "channels do not agree with group {group}: X {xd:?}, W {wd:?}"
        )));
    }
    let g = group as u64;
    let (cg, mg) = (ch / g, mo / g);
    let kernel: Vec<u64> = wd[2..].to_vec();
    let list = |name: &str, len: usize, default: i64| ints_attr(cx, node, name, len, default);
    let st = list("strides", n, 1)?;
    let dil = list("dilations", n, 1)?;
    if st.iter().chain(&dil).any(|&v| v < 1) {
        return Err(cx.invalid("strides and dilations must be positive"));
    }
    let pb: Vec<i64> = match attr_s(node, "auto_pad", "NOTSET") {
        "NOTSET" => list("pads", 2 * n, 0)?[..n].to_vec(),
        "VALID" => vec![0; n],
        m @ ("SAME_UPPER" | "SAME_LOWER") => (0..n)
            .map(|i| {
                let need = (yd[i + 2] as i64 - 1) * st[i] + (kernel[i] as i64 - 1) * dil[i] + 1;
                let total = (need - xd[i + 2] as i64).max(0);
                if m == "SAME_UPPER" {
                    total / 2
                } else {
                    total - total / 2
                }
            })
            .collect(),
        m => return Err(cx.invalid(format!("auto_pad `{m}`"))),
    };
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let xz = node.input(2);
    let wz = node.input(3);
    let mut args = vec![cx.buffer(x)?, cx.buffer(wv)?];
    let mut xz_len = 0;
    let mut wz_len = 0;
    if let Some(z) = xz {
        xz_len = cx.numel(z)?;
        if xz_len != 1 {
            return Err(cx.unsupported("a per-channel x_zero_point"));
        }
        args.push(cx.buffer(z)?);
    }
    if let Some(z) = wz {
        wz_len = cx.numel(z)?;
        if wz_len != 1 && wz_len != mo {
            return Err(cx.invalid(format!(
                "w_zero_point has {wz_len} values; expected 1 or {mo}"
            )));
        }
        args.push(cx.buffer(z)?);
    }
    args.push(cx.buffer(y)?);
    let mut b = KernelBuilder::new(cx.kernel_name("conv_integer"));
    let xb = b.param("x", xt, cx.numel(x)?.max(1), Access::Read);
    let wb = b.param("w", wt, cx.numel(wv)?.max(1), Access::Read);
    let xzb = xz.map(|z| {
        b.param(
            "x_zero_point",
            cx.dtype(z).unwrap_or(xt),
            xz_len,
            Access::Read,
        )
    });
    let wzb = wz.map(|z| {
        b.param(
            "w_zero_point",
            cx.dtype(z).unwrap_or(wt),
            wz_len,
            Access::Read,
        )
    });
    let yb = b.param("y", DType::I32, total, Access::Write);
    let ins: Vec<u64> = xd[2..].to_vec();
    let outs: Vec<u64> = yd[2..].to_vec();
    let ist = strides(&ins);
    let it: u64 = ins.iter().product();
    let kt: u64 = kernel.iter().product();
    let ot: u64 = outs.iter().product();
    let i32t = DType::I32;
    per_element(cx, b, total, DType::I32, args, |b, e| {
        let otv = b.index(ot as i64);
        let nm = b.div(e, otv);
        let nmo = b.mul(nm, otv);
        let o = b.sub(e, nmo);
        let mv = b.index(mo as i64);
        let nn = b.div(nm, mv);
        let nnm = b.mul(nn, mv);
        let m = b.sub(nm, nnm);
        let mgv = b.index(mg as i64);
        let gi = b.div(m, mgv);
        let oc = unravel(b, o, &outs);
        let zero_i = b.index(0);
        let xzv = match xzb {
            Some(z) => ld(b, z, zero_i, i32t),
            None => b.const_int(Ty::scalar(i32t), 0),
        };
        let wzv = match wzb {
            Some(z) => {
                let at = if wz_len == 1 { zero_i } else { m };
                ld(b, z, at, i32t)
            }
            None => b.const_int(Ty::scalar(i32t), 0),
        };
        let cv = b.index(ch as i64);
        let ncv = b.mul(nn, cv);
        let cgv = b.index(cg as i64);
        let gc = b.mul(gi, cgv);
        let c0 = b.add(ncv, gc);
        let itv = b.index(it as i64);
        let x_base = b.mul(c0, itv);
        let wrow = b.index((cg * kt) as i64);
        let w_base = b.mul(m, wrow);
        let init = b.const_int(Ty::scalar(i32t), 0);
        let (k0, k1, one) = (b.index(0), b.index(kt as i64), b.index(1));
        let r = b.for_loop(k0, k1, one, &[init], |b, k, car| {
            let kc = unravel(b, k, &kernel);
            let mut ok = b.constant(Ty::BOOL, Scalar::Int(1));
            let mut xoff = b.index(0);
            for d in 0..n {
                let sv = b.index(st[d]);
                let t = b.mul(oc[d], sv);
                let pv = b.index(pb[d]);
                let t = b.sub(t, pv);
                let dv = b.index(dil[d]);
                let kd = b.mul(kc[d], dv);
                let i = b.add(t, kd);
                let inr = in_range(b, i, 0, ins[d] as i64);
                ok = and(b, ok, inr);
                let zero = b.index(0);
                let safe = b.select(inr, i, zero);
                let sd = b.index(ist[d] as i64);
                let tt = b.mul(safe, sd);
                xoff = b.add(xoff, tt);
            }
            let xo = b.add(x_base, xoff);
            let wo = b.add(w_base, k);
            let (c0, c1) = (b.index(0), b.index(cg as i64));
            let sum = b.for_loop(c0, c1, one, &[car[0]], |b, ci, acc| {
                let xstep = b.mul(ci, itv);
                let xi = b.add(xo, xstep);
                let wstep_c = b.index(kt as i64);
                let wstep = b.mul(ci, wstep_c);
                let wi = b.add(wo, wstep);
                let xv = ld(b, xb, xi, i32t);
                let xv = b.sub(xv, xzv);
                let wv = ld(b, wb, wi, i32t);
                let wv = b.sub(wv, wzv);
                let p = b.mul(xv, wv);
                vec![b.add(acc[0], p)]
            });
            vec![b.select(ok, sum[0], car[0])]
        });
        b.store(yb, e, r[0]);
    });
    Ok(Execution::Kernel)
}

// ==== ScatterElements / ScatterND ====

#[derive(Clone, Copy)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

fn reduction(cx: &LowerCx, node: &Node) -> Result<Reduction> {
    Ok(match attr_s(node, "reduction", "none") {
        "none" => Reduction::None,
        "add" => Reduction::Add,
        "mul" => Reduction::Mul,
        "max" => Reduction::Max,
        "min" => Reduction::Min,
        r => {
            return Err(cx.invalid(format!(
                "reduction `{r}`; expected none, add, mul, max or min"
            )))
        }
    })
}

/// `out[at] = red(out[at], upd[from])`.
fn scatter_one(
    b: &mut KernelBuilder,
    red: Reduction,
    out: Buf,
    at: Val,
    upd: Buf,
    from: Val,
    dt: DType,
) {
    let u = b.load(upd, from, 1);
    let v = match red {
        Reduction::None => u,
        _ => {
            let c = if dt.is_low_precision_float() {
                DType::F32
            } else {
                dt
            };
            let o = b.load(out, at, 1);
            let (o, u) = (b.cast(o, c, NO_SAT), b.cast(u, c, NO_SAT));
            let r = match (red, dt) {
                (Reduction::Add, DType::Bool) => b.binary(BinOp::Or, o, u),
                (Reduction::Mul, DType::Bool) => b.binary(BinOp::And, o, u),
                (Reduction::Add, _) => b.add(o, u),
                (Reduction::Mul, _) => b.mul(o, u),
                (Reduction::Max, _) => b.max(o, u),
                _ => b.min(o, u),
            };
            b.cast(r, dt, NO_SAT)
        }
    };
    b.store(out, at, v);
}

fn scatter_elements(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (data, ind, upd, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        operand(cx, node, 2)?,
        result(cx, node, 0)?,
    );
    let (d, id, ud) = (cx.dims(data)?, cx.dims(ind)?, cx.dims(upd)?);
    if id != ud || id.len() != d.len() {
        return Err(cx.invalid(format!(
            "indices {id:?} and updates {ud:?} must have the same shape and data's rank"
        )));
    }
    let axis = norm_axis(cx, node.attr_int("axis", 0), d.len())?;
    for (k, (&i, &n)) in id.iter().zip(&d).enumerate() {
        if k != axis && i > n {
            return Err(cx.invalid(format!("indices {id:?} exceed data {d:?} on dim {k}")));
        }
    }
    let red = reduction(cx, node)?;
    let dt = cx.dtype(data)?;
    let (db, ib, ub, yb) = (
        cx.buffer(data)?,
        cx.buffer(ind)?,
        cx.buffer(upd)?,
        cx.buffer(y)?,
    );
    cx.copy(db, yb);
    let total: u64 = id.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    // One work item per line along `axis`: lines never share a target element.
    let mut line_dims = id.clone();
    let steps = line_dims[axis];
    line_dims[axis] = 1;
    let lines: u64 = line_dims.iter().product();
    let ust = strides(&id);
    let dst_ = strides(&d);
    let code = cx.index_trap(node, "indices", &format!("axis {axis} of `data`"), d[axis]);
    let mut b = KernelBuilder::new(cx.kernel_name("scatter_elements"));
    let ibuf = b.param("indices", cx.dtype(ind)?, total, Access::Read);
    let ubuf = b.param("updates", dt, total, Access::Read);
    let ybuf = b.param("y", dt, d.iter().product::<u64>().max(1), Access::ReadWrite);
    let (_, chunk) = chunking(lines, (CHUNK / steps.max(1)).max(1), dt);
    for_each_item(&mut b, lines, chunk, |b, l| {
        let lc = unravel(b, l, &line_dims);
        let ubase = linear_index(b, &lc, &ust);
        let ybase = linear_index(b, &lc, &dst_);
        b.range(0, steps as i64, |b, j| {
            let us = b.index(ust[axis] as i64);
            let uo = b.mul(j, us);
            let ui = b.add(ubase, uo);
            let idx = ld_index(b, ibuf, ui);
            let at = b.checked_index(idx, d[axis], code);
            let ds = b.index(dst_[axis] as i64);
            let yo = b.mul(at, ds);
            let yi = b.add(ybase, yo);
            scatter_one(b, red, ybuf, yi, ubuf, ui, dt);
        });
    });
    cx.launch(b.finish(), vec![ib, ub, yb]);
    Ok(Execution::Kernel)
}

fn scatter_nd(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (data, ind, upd, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        operand(cx, node, 2)?,
        result(cx, node, 0)?,
    );
    let (d, id, ud) = (cx.dims(data)?, cx.dims(ind)?, cx.dims(upd)?);
    let q = id.len();
    let k = *id
        .last()
        .ok_or_else(|| cx.invalid("indices must have rank >= 1"))? as usize;
    if q < 1 || k > d.len() {
        return Err(cx.invalid(format!("indices {id:?} do not fit data {d:?}")));
    }
    let mut want = id[..q - 1].to_vec();
    want.extend_from_slice(&d[k..]);
    if ud != want {
        return Err(cx.invalid(format!("updates have shape {ud:?}; expected {want:?}")));
    }
    let red = reduction(cx, node)?;
    let dt = cx.dtype(data)?;
    let (db, ib, ub, yb) = (
        cx.buffer(data)?,
        cx.buffer(ind)?,
        cx.buffer(upd)?,
        cx.buffer(y)?,
    );
    cx.copy(db, yb);
    let tuples: u64 = id[..q - 1].iter().product();
    let slice: u64 = d[k..].iter().product();
    if tuples == 0 || slice == 0 {
        return Ok(Execution::Kernel);
    }
    let dst_ = strides(&d);
    let codes: Vec<u32> = (0..k)
        .map(|j| cx.index_trap(node, "indices", &format!("axis {j} of `data`"), d[j]))
        .collect();
    let mut b = KernelBuilder::new(cx.kernel_name("scatter_nd"));
    let ibuf = b.param(
        "indices",
        cx.dtype(ind)?,
        (tuples * k as u64).max(1),
        Access::Read,
    );
    let ubuf = b.param("updates", dt, tuples * slice, Access::Read);
    let ybuf = b.param("y", dt, d.iter().product::<u64>().max(1), Access::ReadWrite);
    // Updates may hit the same element, so they apply in order, in one program instance.
    b.range(0, tuples as i64, |b, t| {
        let mut base = b.index(0);
        let kv = b.index(k as i64);
        let ib0 = b.mul(t, kv);
        for (j, &code) in codes.iter().enumerate() {
            let jv = b.index(j as i64);
            let at = b.add(ib0, jv);
            let idx = ld_index(b, ibuf, at);
            let safe = b.checked_index(idx, d[j], code);
            let sv = b.index(dst_[j] as i64);
            let o = b.mul(safe, sv);
            base = b.add(base, o);
        }
        let sl = b.index(slice as i64);
        let ubase = b.mul(t, sl);
        b.range(0, slice as i64, |b, r| {
            let yi = b.add(base, r);
            let ui = b.add(ubase, r);
            scatter_one(b, red, ybuf, yi, ubuf, ui, dt);
        });
    });
    cx.launch(b.finish(), vec![ib, ub, yb]);
    Ok(Execution::Kernel)
}

// ==== MaxUnpool ====

fn max_unpool(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, ind, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        result(cx, node, 0)?,
    );
    let (xd, id, yd) = (cx.dims(x)?, cx.dims(ind)?, cx.dims(y)?);
    if xd != id {
        return Err(cx.invalid(format!("X {xd:?} and I {id:?} must have the same shape")));
    }
    let dt = cx.dtype(x)?;
    let total: u64 = yd.iter().product();
    let n: u64 = xd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let (xb, ib, yb) = (cx.buffer(x)?, cx.buffer(ind)?, cx.buffer(y)?);
    // Zero the result, then scatter (one instance: indices may repeat).
    let mut b = KernelBuilder::new(cx.kernel_name("max_unpool_zero"));
    let ybuf = b.param("y", dt, total, Access::Write);
    per_element(cx, b, total, dt, vec![yb], |b, e| {
        let z = b.const_num(Ty::scalar(dt), 0.0);
        b.store(ybuf, e, z);
    });
    if n == 0 {
        return Ok(Execution::Kernel);
    }
    let mut b = KernelBuilder::new(cx.kernel_name("max_unpool"));
    let xbuf = b.param("x", dt, n, Access::Read);
    let ibuf = b.param("indices", cx.dtype(ind)?, n, Access::Read);
    let ybuf = b.param("y", dt, total, Access::ReadWrite);
    // Indices are flat over the shape the pooling implies (as MaxPool produces them), which
    // sits in the leading corner of the result when `output_shape` makes it larger (positions
    // outside a smaller result are skipped). An index outside that shape is a data error.
    let sd = xd.len().saturating_sub(2);
    if xd.len() < 3 || yd.len() != xd.len() || node.attr_ints("kernel_shape").is_none() {
        return Err(cx.invalid(
            "MaxUnpool needs X [N, C, spatial...], a result of the same rank and kernel_shape",
        ));
    }
    let kernel = ints_attr(cx, node, "kernel_shape", sd, 1)?;
    let st = ints_attr(cx, node, "strides", sd, 1)?;
    let pads = ints_attr(cx, node, "pads", 2 * sd, 0)?;
    let mut implied = xd[..2].to_vec();
    for i in 0..sd {
        let v = (xd[i + 2] as i64 - 1) * st[i] + kernel[i] - pads[i] - pads[i + sd];
        implied.push(v.max(0) as u64);
    }
    let itot: u64 = implied.iter().product();
    let yst = strides(&yd);
    let code = cx.trap_site(
        node,
        "I",
        format!(
            "not a position of the pooled input, which has {itot} (valid: 0 to {})",
            itot.saturating_sub(1)
        ),
    );
    b.range(0, n as i64, |b, i| {
        let idx = ld_index(b, ibuf, i);
        let safe = b.checked_below(idx, itot, code);
        let mut ok = b.constant(Ty::BOOL, Scalar::Int(1));
        let cs = unravel(b, safe, &implied);
        for (k, &c) in cs.iter().enumerate() {
            let inr = in_range(b, c, 0, yd[k] as i64);
            ok = and(b, ok, inr);
        }
        let at = linear_index(b, &cs, &yst);
        b.if_then(ok, |b| {
            let v = b.load(xbuf, i, 1);
            b.store(ybuf, at, v);
        });
    });
    cx.launch(b.finish(), vec![xb, ib, yb]);
    Ok(Execution::Kernel)
}

// ==== LRN ====

fn lrn(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = (operand(cx, node, 0)?, result(cx, node, 0)?);
    let xd = cx.dims(x)?;
    if xd.len() < 2 {
        return Err(cx.invalid("LRN needs an input of rank >= 2 (N, C, ...)"));
    }
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("LRN on {dt}")));
    }
    let size = node.attr_int("size", 0);
    if size < 1 {
        return Err(cx.invalid(format!("size {size} must be positive")));
    }
    let alpha = node.attr_float("alpha", 1e-4) as f64;
    let beta = node.attr_float("beta", 0.75) as f64;
    let bias = node.attr_float("bias", 1.0) as f64;
    let total: u64 = xd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let ch = xd[1] as i64;
    let inner: u64 = xd[2..].iter().product();
    let lo_off = (size - 1) / 2;
    let hi_off = size - 1 - lo_off;
    let c = calc_dtype(dt);
    let args = vec![cx.buffer(x)?, cx.buffer(y)?];
    let mut b = KernelBuilder::new(cx.kernel_name("lrn"));
    let xb = b.param("x", dt, total, Access::Read);
    let yb = b.param("y", dt, total, Access::Write);
    per_element(cx, b, total, dt, args, |b, e| {
        let inv = b.index(inner as i64);
        let chv = b.index(ch);
        let q = b.div(e, inv);
        let ci = b.binary(BinOp::Rem, q, chv);
        let lo0 = b.index(-lo_off);
        let lo = b.add(ci, lo0);
        let zero = b.index(0);
        let lo = b.max(lo, zero);
        let hi0 = b.index(hi_off + 1);
        let hi = b.add(ci, hi0);
        let hi = b.min(hi, chv);
        let one = b.index(1);
        let z = fc(b, c, 0.0);
        let s = b.for_loop(lo, hi, one, &[z], |b, k, acc| {
            let d = b.sub(k, ci);
            let dd = b.mul(d, inv);
            let at = b.add(e, dd);
            let v = ld(b, xb, at, c);
            let sq = b.mul(v, v);
            vec![b.add(acc[0], sq)]
        });
        let a = fc(b, c, alpha / size as f64);
        let t = b.mul(s[0], a);
        let bi = fc(b, c, bias);
        let t = b.add(t, bi);
        let be = fc(b, c, beta);
        let den = b.math(MathFn::Pow, &[t, be]);
        let v = ld(b, xb, e, c);
        let r = b.div(v, den);
        let r = b.cast(r, dt, NO_SAT);
        b.store(yb, e, r);
    });
    Ok(Execution::Kernel)
}

// ==== ReverseSequence ====

fn reverse_sequence(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, lens, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        result(cx, node, 0)?,
    );
    let xd = cx.dims(x)?;
    if xd.len() < 2 {
        return Err(cx.invalid("ReverseSequence needs an input of rank >= 2"));
    }
    let ba = norm_axis(cx, node.attr_int("batch_axis", 1), xd.len())?;
    let ta = norm_axis(cx, node.attr_int("time_axis", 0), xd.len())?;
    if ba == ta {
        return Err(cx.invalid("batch_axis and time_axis must differ"));
    }
    if cx.numel(lens)? != xd[ba] {
        return Err(cx.invalid(format!("sequence_lens must have {} values", xd[ba])));
    }
    let dt = cx.dtype(x)?;
    let total: u64 = xd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let xs = strides(&xd);
    let args = vec![cx.buffer(x)?, cx.buffer(lens)?, cx.buffer(y)?];
    let mut b = KernelBuilder::new(cx.kernel_name("reverse_sequence"));
    let xb = b.param("x", dt, total, Access::Read);
    let lb = b.param("sequence_lens", cx.dtype(lens)?, xd[ba], Access::Read);
    let yb = b.param("y", dt, total, Access::Write);
    let steps = xd[ta] as i64;
    per_element(cx, b, total, dt, args, |b, e| {
        let oc = unravel(b, e, &xd);
        let len = ld_index(b, lb, oc[ba]);
        let zero = b.index(0);
        let sv = b.index(steps);
        let len = b.max(len, zero);
        let len = b.min(len, sv);
        let t = oc[ta];
        let rev = b.cmp(CmpOp::Lt, t, len);
        let one = b.index(1);
        let l1 = b.sub(len, one);
        let rt = b.sub(l1, t);
        let src_t = b.select(rev, rt, t);
        let mut cs = oc.clone();
        cs[ta] = src_t;
        let si = linear_index(b, &cs, &xs);
        let v = b.load(xb, si, 1);
        b.store(yb, e, v);
    });
    Ok(Execution::Kernel)
}

// ==== CenterCropPad ====

fn center_crop_pad(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = (operand(cx, node, 0)?, result(cx, node, 0)?);
    let (xd, yd) = (cx.dims(x)?, cx.dims(y)?);
    if xd.len() != yd.len() {
        return Err(cx.invalid("result rank differs from the input's"));
    }
    let dt = cx.dtype(x)?;
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    // Per dim: output o reads input o + shift, where shift = crop start - pad start.
    let shift: Vec<i64> = xd
        .iter()
        .zip(&yd)
        .map(|(&i, &o)| {
            if i >= o {
                ((i - o) / 2) as i64
            } else {
                -(((o - i) / 2) as i64)
            }
        })
        .collect();
    let xs = strides(&xd);
    let n: u64 = xd.iter().product();
    let args = vec![cx.buffer(x)?, cx.buffer(y)?];
    let mut b = KernelBuilder::new(cx.kernel_name("center_crop_pad"));
    let xb = b.param("x", dt, n.max(1), Access::Read);
    let yb = b.param("y", dt, total, Access::Write);
    per_element(cx, b, total, dt, args, |b, e| {
        let oc = unravel(b, e, &yd);
        let mut ok = b.constant(Ty::BOOL, Scalar::Int(1));
        let mut cs = Vec::new();
        for (k, &o) in oc.iter().enumerate() {
            let sv = b.index(shift[k]);
            let i = b.add(o, sv);
            let inr = in_range(b, i, 0, xd[k] as i64);
            ok = and(b, ok, inr);
            let zero = b.index(0);
            cs.push(b.select(inr, i, zero));
        }
        let zero = b.const_num(Ty::scalar(dt), 0.0);
        let v = if n == 0 {
            zero
        } else {
            let si = linear_index(b, &cs, &xs);
            let v = b.load(xb, si, 1);
            b.select(ok, v, zero)
        };
        b.store(yb, e, v);
    });
    Ok(Execution::Kernel)
}

// ==== Col2Im ====

fn col2im(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = (operand(cx, node, 0)?, result(cx, node, 0)?);
    let (xd, yd) = (cx.dims(x)?, cx.dims(y)?);
    let block: Vec<u64> = cx
        .const_ints(node, 2)?
        .ok_or_else(|| cx.invalid("missing block_shape"))?
        .iter()
        .map(|&v| v.clamp(0, ATTR_LIMIT) as u64)
        .collect();
    let n = block.len();
    if xd.len() != 3 || yd.len() != n + 2 || n == 0 {
        return Err(cx.invalid(format!(
            "input {xd:?} and result {yd:?} do not fit a {n}-d block"
        )));
    }
    let img: Vec<u64> = yd[2..].to_vec();
    let list = |name: &str, len: usize, default: i64| ints_attr(cx, node, name, len, default);
    let st = list("strides", n, 1)?;
    let dil = list("dilations", n, 1)?;
    let pads = list("pads", 2 * n, 0)?;
    if st.iter().chain(&dil).any(|&v| v < 1) || pads.iter().any(|&p| p < 0) {
        return Err(cx.invalid("strides and dilations must be positive, pads non-negative"));
    }
    // Number of block positions per dim.
    let lens: Vec<i64> = (0..n)
        .map(|i| {
            (img[i] as i64 + pads[i] + pads[i + n] - dil[i] * (block[i] as i64 - 1) - 1) / st[i] + 1
        })
        .collect();
    let l: i64 = lens.iter().product();
    let kt: u64 = block
        .iter()
        .try_fold(1u64, |a, &v| a.checked_mul(v))
        .unwrap_or(u64::MAX);
    if kt == u64::MAX
        || lens.iter().any(|&v| v < 0)
        || xd[2] as i64 != l
        || xd[1] != yd[1].saturating_mul(kt)
        || xd[0] != yd[0]
    {
        return Err(cx.invalid(format!(
            "input {xd:?} does not match result {yd:?} with block {block:?}"
        )));
    }
    let dt = cx.dtype(x)?;
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let c = calc_dtype(dt);
    let it: u64 = img.iter().product();
    let lst = strides(&lens.iter().map(|&v| v as u64).collect::<Vec<_>>());
    let args = vec![cx.buffer(x)?, cx.buffer(y)?];
    let mut b = KernelBuilder::new(cx.kernel_name("col2im"));
    let xb = b.param("x", dt, xd.iter().product::<u64>().max(1), Access::Read);
    let yb = b.param("y", dt, total, Access::Write);
    per_element(cx, b, total, dt, args, |b, e| {
        let itv = b.index(it as i64);
        let nc = b.div(e, itv);
        let nci = b.mul(nc, itv);
        let o = b.sub(e, nci);
        let oc = unravel(b, o, &img);
        // Input row (n*C + c)*Kt + k, column l.
        let ktv = b.index(kt as i64);
        let row0 = b.mul(nc, ktv);
        let z = fc(b, c, 0.0);
        let (k0, k1, one) = (b.index(0), b.index(kt as i64), b.index(1));
        let r = b.for_loop(k0, k1, one, &[z], |b, k, car| {
            let kc = unravel(b, k, &block);
            let mut ok = b.constant(Ty::BOOL, Scalar::Int(1));
            let mut loff = b.index(0);
            for d in 0..n {
                let (safe, valid) =
                    transposed_tap(b, oc[d], kc[d], pads[d], dil[d], st[d], lens[d]);
                ok = and(b, ok, valid);
                let sd = b.index(lst[d] as i64);
                let tt = b.mul(safe, sd);
                loff = b.add(loff, tt);
            }
            let row = b.add(row0, k);
            let lv = b.index(l);
            let ro = b.mul(row, lv);
            let at = b.add(ro, loff);
            let v = ld(b, xb, at, c);
            let s = b.add(car[0], v);
            vec![b.select(ok, s, car[0])]
        });
        let out = b.cast(r[0], dt, NO_SAT);
        b.store(yb, e, out);
    });
    Ok(Execution::Kernel)
}

// ==== GridSample ====

/// Reflects `x` into `[lo, hi]` (ONNX reference `_gs_reflect`), in float arithmetic.
fn reflect(b: &mut KernelBuilder, x: Val, lo: f64, hi: f64, c: DType) -> Val {
    let rng = hi - lo;
    let (lov, hiv) = (fc(b, c, lo), fc(b, c, hi));
    if rng <= 0.0 {
        return lov;
    }
    let rv = fc(b, c, rng);
    let two = fc(b, c, 2.0);
    let below = b.cmp(CmpOp::Lt, x, lov);
    let above = b.cmp(CmpOp::Gt, x, hiv);
    // dx: distance past the nearer violated border.
    let d_lo = b.sub(lov, x);
    let d_hi = b.sub(x, hiv);
    let dx = b.select(below, d_lo, d_hi);
    let q = b.div(dx, rv);
    let nf = b.unary(UnOp::Trunc, q);
    let nr = b.mul(nf, rv);
    let r = b.sub(dx, nr);
    let half = b.div(nf, two);
    let hf = b.unary(UnOp::Floor, half);
    let h2 = b.mul(hf, two);
    let par = b.sub(nf, h2);
    let zero = fc(b, c, 0.0);
    let even = b.cmp(CmpOp::Eq, par, zero);
    let lo_r = b.add(lov, r);
    let hi_r = b.sub(hiv, r);
    // Below: even → lo + r, odd → hi - r. Above: even → hi - r, odd → lo + r.
    let from_below = b.select(even, lo_r, hi_r);
    let from_above = b.select(even, hi_r, lo_r);
    let t = b.select(above, from_above, x);
    b.select(below, from_below, t)
}

fn grid_sample(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, grid, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        result(cx, node, 0)?,
    );
    let (xd, gd, yd) = (cx.dims(x)?, cx.dims(grid)?, cx.dims(y)?);
    let r = xd.len();
    if r < 3 || gd.len() != r || gd[r - 1] != (r - 2) as u64 || yd.len() != r {
        return Err(cx.invalid(format!("X {xd:?} and grid {gd:?} do not fit GridSample")));
    }
    let sd = r - 2;
    let dt = cx.dtype(x)?;
    let gt = cx.dtype(grid)?;
    if !dt.is_float() || !gt.is_float() {
        return Err(cx.unsupported(format!("GridSample on {dt} with a {gt} grid")));
    }
    let mode = match attr_s(node, "mode", "linear") {
        "linear" | "bilinear" => Interp::Linear,
        "nearest" => Interp::Nearest,
        "cubic" | "bicubic" => Interp::Cubic,
        m => return Err(cx.invalid(format!("mode `{m}`"))),
    };
    let padding = attr_s(node, "padding_mode", "zeros").to_string();
    if !matches!(padding.as_str(), "zeros" | "border" | "reflection") {
        return Err(cx.invalid(format!("padding_mode `{padding}`")));
    }
    let align = node.attr_int("align_corners", 0) != 0;
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let sp: Vec<u64> = xd[2..].to_vec();
    if sp.contains(&0) {
        return Err(cx.invalid("cannot sample an empty input"));
    }
    let c = calc_dtype(dt);
    let out_sp: Vec<u64> = yd[2..].to_vec();
    let ot: u64 = out_sp.iter().product();
    let it: u64 = sp.iter().product();
    let ist = strides(&sp);
    let args = vec![cx.buffer(x)?, cx.buffer(grid)?, cx.buffer(y)?];
    let mut b = KernelBuilder::new(cx.kernel_name("grid_sample"));
    let xb = b.param("x", dt, xd.iter().product(), Access::Read);
    let gb = b.param("grid", gt, gd.iter().product::<u64>().max(1), Access::Read);
    let yb = b.param("y", dt, total, Access::Write);
    let chans = xd[1];
    per_element(cx, b, total, dt, args, |b, e| {
        let otv = b.index(ot as i64);
        let nc = b.div(e, otv);
        let nco = b.mul(nc, otv);
        let o = b.sub(e, nco);
        let cv = b.index(chans as i64);
        let nn = b.div(nc, cv);
        // Grid point: grid[n, o..., :] holds (x_W, y_H, [z_D]) in reverse dim order.
        let gpt = b.index((ot * sd as u64) as i64);
        let g0 = b.mul(nn, gpt);
        let sdv = b.index(sd as i64);
        let go = b.mul(o, sdv);
        let g0 = b.add(g0, go);
        let itv = b.index(it as i64);
        let x_base = b.mul(nc, itv);
        let mut coords = Vec::with_capacity(sd);
        for (d, &len) in sp.iter().enumerate() {
            let gi = b.index((sd - 1 - d) as i64);
            let at = b.add(g0, gi);
            let gv = ld(b, gb, at, c);
            let len = len as f64;
            let one = fc(b, c, 1.0);
            let t = b.add(gv, one);
            let mut xv = if align {
                let h = fc(b, c, (len - 1.0) / 2.0);
                b.mul(t, h)
            } else {
                let l = fc(b, c, len);
                let tl = b.mul(t, l);
                let m1 = b.sub(tl, one);
                let h = fc(b, c, 0.5);
                b.mul(m1, h)
            };
            if mode == Interp::Nearest {
                xv = b.unary(UnOp::Round, xv);
            }
            let (lo, hi) = if align {
                (0.0, len - 1.0)
            } else {
                (-0.5, len - 0.5)
            };
            match padding.as_str() {
                "border" => {
                    let (z, h) = (fc(b, c, 0.0), fc(b, c, len - 1.0));
                    let t = b.max(xv, z);
                    xv = b.min(t, h);
                }
                "reflection" => xv = reflect(b, xv, lo, hi, c),
                _ => {}
            }
            coords.push(xv);
        }
        // Taps per dim: nearest 1, linear 2, cubic 4, starting at floor(x) - (taps/2 - 1).
        let taps: i64 = match mode {
            Interp::Nearest => 1,
            Interp::Linear => 2,
            Interp::Cubic => 4,
        };
        let mut base = Vec::new();
        let mut coeffs: Vec<Vec<Val>> = Vec::new();
        for &xv in &coords {
            let f = b.unary(UnOp::Floor, xv);
            let fi = b.cast(f, DType::I64, NO_SAT);
            let t = b.sub(xv, f);
            let (start, cs) = match mode {
                Interp::Nearest => {
                    let one = fc(b, c, 1.0);
                    let xi = b.cast(xv, DType::I64, NO_SAT);
                    (xi, vec![one])
                }
                Interp::Linear => {
                    let one = fc(b, c, 1.0);
                    let w0 = b.sub(one, t);
                    (fi, vec![w0, t])
                }
                Interp::Cubic => {
                    let a = -0.75;
                    let one = fc(b, c, 1.0);
                    let mut ws = Vec::new();
                    // Distances 1+t, t, 1-t, 2-t.
                    let two = fc(b, c, 2.0);
                    let d0 = b.add(t, one);
                    let d2 = b.sub(one, t);
                    let d3 = b.sub(two, t);
                    for (k, dv) in [d0, t, d2, d3].into_iter().enumerate() {
                        let far = k == 0 || k == 3;
                        ws.push(cubic_w(b, dv, a, far, c));
                    }
                    let one_i = b.index(1);
                    (b.sub(fi, one_i), ws)
                }
            };
            base.push(start);
            coeffs.push(cs);
        }
        let z = fc(b, c, 0.0);
        let one_w = fc(b, c, 1.0);
        let zero_i = b.index(0);
        let yes = b_true(b);
        let g = GsCx {
            sp: &sp,
            ist: &ist,
            padding: &padding,
            lo_hi: align,
            taps,
            xb,
            x_base,
            c,
        };
        let acc = gs_fold(b, &g, &base, &coeffs, 0, zero_i, one_w, yes, z);
        let out = b.cast(acc, dt, NO_SAT);
        b.store(yb, e, out);
    });
    Ok(Execution::Kernel)
}

fn b_true(b: &mut KernelBuilder) -> Val {
    b.constant(Ty::BOOL, Scalar::Int(1))
}

/// Keys cubic weight for distance `d` (`far`: 1 < d < 2).
fn cubic_w(b: &mut KernelBuilder, d: Val, a: f64, far: bool, c: DType) -> Val {
    let d2 = b.mul(d, d);
    let d3 = b.mul(d2, d);
    if far {
        // a d^3 - 5a d^2 + 8a d - 4a
        let (ka, k5, k8, k4) = (
            fc(b, c, a),
            fc(b, c, -5.0 * a),
            fc(b, c, 8.0 * a),
            fc(b, c, -4.0 * a),
        );
        let t1 = b.mul(d3, ka);
        let t2 = b.mul(d2, k5);
        let t3 = b.mul(d, k8);
        let s = b.add(t1, t2);
        let s = b.add(s, t3);
        b.add(s, k4)
    } else {
        // (a+2) d^3 - (a+3) d^2 + 1
        let (k1, k2, one) = (fc(b, c, a + 2.0), fc(b, c, -(a + 3.0)), fc(b, c, 1.0));
        let t1 = b.mul(d3, k1);
        let t2 = b.mul(d2, k2);
        let s = b.add(t1, t2);
        b.add(s, one)
    }
}

struct GsCx<'a> {
    sp: &'a [u64],
    ist: &'a [u64],
    padding: &'a str,
    /// align_corners (decides the reflection borders).
    lo_hi: bool,
    taps: i64,
    xb: Buf,
    x_base: Val,
    c: DType,
}

/// Unrolled taps over every spatial dim; each tap's index goes through the padding mode.
#[allow(clippy::too_many_arguments)]
fn gs_fold(
    b: &mut KernelBuilder,
    g: &GsCx,
    base: &[Val],
    coeffs: &[Vec<Val>],
    d: usize,
    off: Val,
    w: Val,
    ok: Val,
    acc: Val,
) -> Val {
    if d == g.sp.len() {
        let at = b.add(g.x_base, off);
        let v = ld(b, g.xb, at, g.c);
        let p = b.mul(w, v);
        let s = b.add(acc, p);
        return b.select(ok, s, acc);
    }
    let mut acc = acc;
    let n = g.sp[d] as i64;
    for t in 0..g.taps {
        let tv = b.index(t);
        let i = b.add(base[d], tv);
        let (idx, good) = match g.padding {
            "zeros" => {
                let inr = in_range(b, i, 0, n);
                let zero = b.index(0);
                (b.select(inr, i, zero), inr)
            }
            "border" => {
                let zero = b.index(0);
                let hi = b.index(n - 1);
                let t = b.max(i, zero);
                (b.min(t, hi), b_true(b))
            }
            _ => {
                // Reflect the integer index (as a float) into the borders, then clamp for safety.
                let (lo, hi) = if g.lo_hi {
                    (0.0, n as f64 - 1.0)
                } else {
                    (-0.5, n as f64 - 0.5)
                };
                let f = b.cast(i, g.c, NO_SAT);
                let r = reflect(b, f, lo, hi, g.c);
                let ri = b.cast(r, DType::I64, NO_SAT);
                let zero = b.index(0);
                let hv = b.index(n - 1);
                let t = b.max(ri, zero);
                (b.min(t, hv), b_true(b))
            }
        };
        let sv = b.index(g.ist[d] as i64);
        let o = b.mul(idx, sv);
        let off2 = b.add(off, o);
        let w2 = b.mul(w, coeffs[d][t as usize]);
        let ok2 = and(b, ok, good);
        acc = gs_fold(b, g, base, coeffs, d + 1, off2, w2, ok2, acc);
    }
    acc
}

// ==== AffineGrid ====

fn affine_grid(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (theta, y) = (operand(cx, node, 0)?, result(cx, node, 0)?);
    let (td, yd) = (cx.dims(theta)?, cx.dims(y)?);
    let dt = cx.dtype(theta)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("AffineGrid on {dt}")));
    }
    // y: [N, (D,) H, W, sd]; theta: [N, sd, sd+1].
    let sd = yd.len().saturating_sub(2);
    if !(sd == 2 || sd == 3)
        || yd[yd.len() - 1] != sd as u64
        || td != [yd[0], sd as u64, sd as u64 + 1]
    {
        return Err(cx.invalid(format!("theta {td:?} does not fit result {yd:?}")));
    }
    let align = node.attr_int("align_corners", 0) != 0;
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let c = calc_dtype(dt);
    // Spatial sizes in dim order (D,) H, W; grid components are (x_W, y_H, z_D).
    let sizes: Vec<u64> = yd[1..yd.len() - 1].to_vec();
    let args = vec![cx.buffer(theta)?, cx.buffer(y)?];
    let mut b = KernelBuilder::new(cx.kernel_name("affine_grid"));
    let tb = b.param("theta", dt, td.iter().product(), Access::Read);
    let yb = b.param("grid", dt, total, Access::Write);
    per_element(cx, b, total, dt, args, |b, e| {
        let oc = unravel(b, e, &yd);
        let n = oc[0];
        let comp = oc[yd.len() - 1];
        // Base coordinate along each spatial dim, reversed to (x, y, z) order, plus 1.
        let mut base = Vec::new();
        for k in 0..sd {
            let dim = sd - 1 - k; // component k reads spatial dim `dim`
            let len = sizes[dim] as f64;
            let i = b.cast(oc[1 + dim], c, NO_SAT);
            let v = if align {
                if len <= 1.0 {
                    fc(b, c, 0.0)
                } else {
                    let s = fc(b, c, 2.0 / (len - 1.0));
                    let t = b.mul(i, s);
                    let one = fc(b, c, 1.0);
                    b.sub(t, one)
                }
            } else {
                // ((2i + 1) / len) - 1
                let s = fc(b, c, 2.0 / len);
                let t = b.mul(i, s);
                let o = fc(b, c, 1.0 / len - 1.0);
                b.add(t, o)
            };
            base.push(v);
        }
        base.push(fc(b, c, 1.0));
        let row_len = (sd + 1) as i64;
        let rows = b.index(sd as i64 * row_len);
        let t0 = b.mul(n, rows);
        let rl = b.index(row_len);
        let ro = b.mul(comp, rl);
        let t0 = b.add(t0, ro);
        let mut acc = fc(b, c, 0.0);
        for (j, &bv) in base.iter().enumerate() {
            let jv = b.index(j as i64);
            let at = b.add(t0, jv);
            let tv = ld(b, tb, at, c);
            let p = b.mul(tv, bv);
            acc = b.add(acc, p);
        }
        let out = b.cast(acc, dt, NO_SAT);
        b.store(yb, e, out);
    });
    Ok(Execution::Kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(interp: Interp, ctm: &'static str) -> ResizeCfg<'static> {
        ResizeCfg {
            interp,
            nearest_mode: "round_prefer_floor",
            ctm,
            cubic_a: -0.75,
            exclude_outside: false,
            antialias: false,
        }
    }

    #[test]
    fn linear_half_pixel_taps_clamp_at_the_edges() {
        // 2 -> 4: source coordinates -0.25, 0.25, 0.75, 1.25.
        let t = resize_axis(&cfg(Interp::Linear, "half_pixel"), 2, 4, 2.0, (0.0, 1.0)).unwrap();
        assert_eq!(t.taps, 2);
        assert_eq!(t.idx, vec![0, 0, 0, 1, 0, 1, 1, 1]);
        assert_eq!(t.w, vec![0.25, 0.75, 0.75, 0.25, 0.25, 0.75, 0.75, 0.25]);
    }

    #[test]
    fn nearest_and_extrapolation() {
        let t = resize_axis(&cfg(Interp::Nearest, "asymmetric"), 4, 2, 0.5, (0.0, 1.0)).unwrap();
        assert_eq!((t.taps, t.idx), (1, vec![0, 2]));
        let t = resize_axis(
            &cfg(Interp::Linear, "tf_crop_and_resize"),
            4,
            3,
            0.75,
            (-0.5, 1.0),
        )
        .unwrap();
        assert_eq!(t.ext, vec![true, false, false]);
        assert!(resize_axis(&cfg(Interp::Linear, "bogus"), 4, 3, 0.75, (0.0, 1.0)).is_err());
    }

    #[test]
    fn python_floor_division() {
        assert_eq!(
            (floor_div(-1, 2), floor_div(3, 2), floor_div(-4, 2)),
            (-1, 1, -2)
        );
    }
}
