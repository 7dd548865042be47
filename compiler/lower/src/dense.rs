//! Lowering of matrix products, convolutions, pooling and normalisations. One section per op.
//!
//! Start at [`lower`]. The matrix products share one tile program (`contraction.rs`): a grid
//! over output tiles whose shape comes from the target description, each a `tile.mma` loop
//! over K with masked tile loads. Convolution and
//! pooling share the window walk ([`window_ranges`], [`window_fold`]): for each output point,
//! the kernel computes the range of kernel taps that land inside the input, so the inner loops
//! carry no bounds checks. The normalisations share one row kernel ([`norm_kernel`]).

use crate::contraction::{
    conv_tiles, launch_matmul, launch_matmul_tiled, mm_tiles, CTerm, FusedEpilogue, MmSpec,
    ZeroPoint,
};
use crate::movement::{chunking, for_each_item, norm_axis, operand, result};
use crate::panels::constant_b;
use crate::util::{broadcast_strides, linear_index, strides, unravel};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op, ValueId};
use tessera_kir::{
    Access, BinOp, Buf, CastMode, CmpOp, Execution, Kernel, KernelBuilder, MathFn, Scalar, Ty,
    UnOp, Val,
};

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    match node.op {
        Op::MatMul => matmul(cx, node),
        Op::Gemm => gemm(cx, node),
        Op::MatMulInteger => matmul_integer(cx, node),
        Op::Conv => conv_with(cx, node, None),
        Op::MaxPool | Op::AveragePool | Op::LpPool => pool(cx, node, false),
        Op::GlobalAveragePool | Op::GlobalMaxPool | Op::GlobalLpPool => pool(cx, node, true),
        Op::BatchNormalization => batch_norm(cx, node),
        Op::LayerNormalization | Op::RMSNormalization => layer_norm(cx, node),
        Op::InstanceNormalization => instance_norm(cx, node),
        Op::GroupNormalization => group_norm(cx, node),
        Op::LpNormalization => lp_norm(cx, node),
        Op::MeanVarianceNormalization => mvn(cx, node),
        op => Err(cx.unsupported(format!("no lowering for op {op}"))),
    }
}

const NO_SAT: CastMode = CastMode { saturate: false };

/// The accumulator type for products and sums of `t`: narrow floats accumulate in f32.
fn acc_type(t: DType) -> DType {
    if t.is_low_precision_float() {
        DType::F32
    } else {
        t
    }
}

fn fconst(b: &mut KernelBuilder, ty: Ty, v: f64) -> Val {
    let s = if ty.elem.is_float() {
        Scalar::Float(v)
    } else {
        Scalar::Int(v as i64)
    };
    b.constant(ty, s)
}

/// `ceil(a / d)` clamped below at 0, for `d > 0` (a may be negative).
fn ceil_div_pos(b: &mut KernelBuilder, a: Val, d: i64) -> Val {
    let zero = b.index(0);
    let a0 = b.max(a, zero);
    let dm1 = b.index(d - 1);
    let t = b.add(a0, dm1);
    let dv = b.index(d);
    b.div(t, dv)
}

/// `base + i * stride` for index values.
fn offset(b: &mut KernelBuilder, base: Val, i: Val, stride: i64) -> Val {
    match stride {
        0 => base,
        1 => b.add(base, i),
        _ => {
            let sv = b.index(stride);
            let t = b.mul(i, sv);
            b.add(base, t)
        }
    }
}

/// `x + c` for an index value and a constant (`x` itself when `c` is 0).
fn add_const(b: &mut KernelBuilder, x: Val, c: i64) -> Val {
    if c == 0 {
        return x;
    }
    let cv = b.index(c);
    b.add(x, cv)
}

/// Loads `lanes` elements of an operand at `idx`, widened to the accumulator type.
fn load_acc(b: &mut KernelBuilder, buf: Buf, idx: Val, lanes: u64, acc: DType) -> Val {
    let x = b.load(buf, idx, lanes as u16);
    b.cast(x, acc, NO_SAT)
}

/// Numpy broadcasting of two batch shapes.
fn broadcast_batch(cx: &LowerCx, a: &[u64], b: &[u64]) -> Result<Vec<u64>> {
    let r = a.len().max(b.len());
    let mut out = vec![1; r];
    for i in 0..r {
        let x = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let y = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return Err(cx.invalid(format!("batch dims {a:?} and {b:?} do not broadcast")));
        };
    }
    Ok(out)
}

/// Lowers a (batched, broadcast) product of A and B read through numpy matmul rules.
fn lower_matmul_like(
    cx: &mut LowerCx,
    node: &Node,
    acc: DType,
    zps: [Option<ValueId>; 2],
) -> Result<Execution> {
    let Some((spec, mut args)) = matmul_spec(cx, node, acc, zps, false)? else {
        return Ok(Execution::Kernel);
    };
    args.push(cx.buffer(result(cx, node, 0)?)?);
    launch_matmul(cx, &spec, args)?;
    Ok(Execution::Kernel)
}

/// The tile program's spec of a (batched, broadcast) product of operands 0 and 1 of `node`,
/// with the zero points `zps`, and its arguments but Y (A, B, [zero points]); `None` when the
/// result is empty.
///
/// `trans_b` (FusedMatMul's `transB`): B holds its last two dims swapped (N × K, a Gemm's
/// `transB = 1` weights), read down its rows.
pub(crate) fn matmul_spec(
    cx: &mut LowerCx,
    node: &Node,
    acc: DType,
    zps: [Option<ValueId>; 2],
    trans_b: bool,
) -> Result<Option<(MmSpec, Vec<tessera_kir::BufferId>)>> {
    let (a, bv, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        result(cx, node, 0)?,
    );
    let (ad, bd) = (cx.dims(a)?, cx.dims(bv)?);
    if ad.is_empty() || bd.is_empty() {
        return Err(cx.invalid("MatMul operands must have rank >= 1"));
    }
    let a2 = if ad.len() == 1 {
        vec![1, ad[0]]
    } else {
        ad.clone()
    };
    if trans_b && bd.len() < 2 {
        return Err(cx.invalid("transB needs B of rank 2 or more"));
    }
    let mut b2 = if bd.len() == 1 {
        vec![bd[0], 1]
    } else {
        bd.clone()
    };
    if trans_b {
        let r = b2.len();
        b2.swap(r - 1, r - 2);
    }
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(cx.invalid(format!("inner dims differ: A {ad:?}, B {bd:?}")));
    }
    let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let batch = broadcast_batch(cx, ab, bb)?;
    let total: u64 = batch.iter().product::<u64>() * m * n;
    if total != cx.numel(y)? {
        return Err(cx.invalid("result size does not match the operands"));
    }
    if total == 0 {
        return Ok(None);
    }
    let a_bst: Vec<u64> = broadcast_strides(ab, &batch)
        .iter()
        .map(|s| s * m * k)
        .collect();
    let b_bst: Vec<u64> = broadcast_strides(bb, &batch)
        .iter()
        .map(|s| s * k * n)
        .collect();
    let mut spec = MmSpec {
        name: cx.kernel_name(&node.op.name().to_ascii_lowercase()),
        a: (cx.dtype(a)?, cx.numel(a)?),
        b: (cx.dtype(bv)?, cx.numel(bv)?),
        y: (cx.dtype(y)?, total),
        acc,
        batch,
        a_bst,
        b_bst,
        m,
        n,
        k,
        a_rs: k as i64,
        a_ks: 1,
        b_ks: if trans_b { 1 } else { n as i64 },
        b_ns: if trans_b { k as i64 } else { 1 },
        alpha: 1.0,
        beta: 1.0,
        c: None,
        a_zp: None,
        b_zp: None,
        fused: None,
        b_panels: None,
    };
    let mut zp_args = Vec::new();
    for (i, z) in zps.iter().enumerate() {
        let Some(z) = *z else { continue };
        let zl = cx.numel(z)?;
        let line = if i == 0 { m } else { n };
        let per_line = zl > 1;
        if per_line && zl != line {
            return Err(cx.unsupported(format!(
                "zero point of {zl} elements (only scalar or per row/column)"
            )));
        }
        let zp = ZeroPoint {
            dtype: cx.dtype(z)?,
            len: zl,
            per_line,
        };
        if zl == 0 {
            return Err(cx.invalid("empty zero point"));
        }
        if i == 0 {
            spec.a_zp = Some(zp);
        } else {
            spec.b_zp = Some(zp);
        }
        zp_args.push(cx.buffer(z)?);
    }
    let mut args = vec![cx.buffer(a)?, constant_b(cx, bv, &mut spec)?];
    args.extend(zp_args);
    Ok(Some((spec, args)))
}

// ==== MatMul ====

fn matmul(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let a = operand(cx, node, 0)?;
    let b = operand(cx, node, 1)?;
    let dt = cx.dtype(a)?;
    if cx.dtype(b)? != dt || !(dt.is_float() && dt.bits() >= 16 || dt.is_int()) {
        return Err(cx.unsupported(format!("MatMul on {dt} x {}", cx.dtype(b)?)));
    }
    lower_matmul_like(cx, node, acc_type(dt), [None, None])
}

// ==== MatMulInteger ====

fn matmul_integer(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let ok = |t: DType| matches!(t, DType::I8 | DType::U8);
    let (a, b) = (operand(cx, node, 0)?, operand(cx, node, 1)?);
    if !ok(cx.dtype(a)?) || !ok(cx.dtype(b)?) || cx.dtype(result(cx, node, 0)?)? != DType::I32 {
        return Err(cx.unsupported("MatMulInteger needs int8/uint8 operands and an int32 result"));
    }
    // A zero point known to be all zeros subtracts nothing: dropping it keeps the product on
    // the operands' own dtypes (the i8 x i8 -> i32 pair a matrix unit runs).
    let zero = |z: &ValueId| {
        cx.konst(*z)
            .and_then(|t| t.to_i64_vec())
            .is_some_and(|v| v.iter().all(|&x| x == 0))
    };
    let zp = |i: usize| node.input(i).filter(|z| !zero(z));
    let zps = [zp(2), zp(3)];
    // Targets with an integer dot product: the weights packed at compile time (`int_dot.rs`).
    if crate::int_dot::matmul_integer(cx, node)? {
        return Ok(Execution::Kernel);
    }
    lower_matmul_like(cx, node, DType::I32, zps)
}

// ==== Gemm ====

fn gemm(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (a, bv, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        result(cx, node, 0)?,
    );
    let (ad, bd) = (cx.dims(a)?, cx.dims(bv)?);
    if ad.len() != 2 || bd.len() != 2 {
        return Err(cx.invalid("Gemm operands must be 2-D"));
    }
    let (ta, tb) = (
        node.attr_int("transA", 0) != 0,
        node.attr_int("transB", 0) != 0,
    );
    let (m, k) = if ta { (ad[1], ad[0]) } else { (ad[0], ad[1]) };
    let (k2, n) = if tb { (bd[1], bd[0]) } else { (bd[0], bd[1]) };
    if k != k2 || cx.numel(y)? != m * n {
        return Err(cx.invalid(format!("shapes do not agree: A {ad:?}, B {bd:?}")));
    }
    let dt = cx.dtype(a)?;
    if cx.dtype(bv)? != dt || !(dt.is_float() && dt.bits() >= 16 || dt.is_int()) {
        return Err(cx.unsupported(format!("Gemm on {dt}")));
    }
    let acc = acc_type(dt);
    let (alpha, beta) = (
        node.attr_float("alpha", 1.0) as f64,
        node.attr_float("beta", 1.0) as f64,
    );
    if !acc.is_float() && (alpha.fract() != 0.0 || beta.fract() != 0.0) {
        return Err(cx.unsupported("integer Gemm with a fractional alpha or beta"));
    }
    if m * n == 0 {
        return Ok(Execution::Kernel);
    }
    // B's buffer (perhaps packed) is inserted once the spec is known.
    let mut args = vec![cx.buffer(a)?];
    let c = match node.input(2) {
        Some(c) => {
            let cd = cx.dims(c)?;
            if cd.len() > 2
                || cd
                    .iter()
                    .rev()
                    .zip([n, m])
                    .any(|(&d, want)| d != 1 && d != want)
            {
                return Err(cx.invalid(format!("C {cd:?} does not broadcast to [{m}, {n}]")));
            }
            let st = broadcast_strides(&cd, &[m, n]);
            args.push(cx.buffer(c)?);
            Some(CTerm {
                dtype: cx.dtype(c)?,
                len: cx.numel(c)?,
                rs: st[0] as i64,
                cs: st[1] as i64,
            })
        }
        None => None,
    };
    args.push(cx.buffer(y)?);
    let mut spec = MmSpec {
        name: cx.kernel_name("gemm"),
        a: (dt, m * k),
        b: (dt, k * n),
        y: (cx.dtype(y)?, m * n),
        acc,
        batch: vec![],
        a_bst: vec![],
        b_bst: vec![],
        m,
        n,
        k,
        a_rs: if ta { 1 } else { k as i64 },
        a_ks: if ta { m as i64 } else { 1 },
        b_ks: if tb { 1 } else { n as i64 },
        b_ns: if tb { k as i64 } else { 1 },
        alpha,
        beta,
        c,
        a_zp: None,
        b_zp: None,
        fused: None,
        b_panels: None,
    };
    args.insert(1, constant_b(cx, bv, &mut spec)?);
    launch_matmul(cx, &spec, args)?;
    Ok(Execution::Kernel)
}

// ==== Windows (shared by Conv and pooling) ====

/// The geometry of a sliding window over the spatial dims.
#[derive(Clone, Debug)]
struct Window {
    input: Vec<u64>,
    output: Vec<u64>,
    kernel: Vec<u64>,
    strides: Vec<u64>,
    dilations: Vec<u64>,
    pad_begin: Vec<i64>,
    pad_end: Vec<i64>,
}

/// Reads kernel_shape/strides/dilations/pads/auto_pad for spatial `input` → `output`.
fn window(
    cx: &LowerCx,
    node: &Node,
    input: &[u64],
    output: &[u64],
    kernel: Vec<u64>,
) -> Result<Window> {
    let r = input.len();
    let ints = |name: &str, default: u64| -> Result<Vec<u64>> {
        match node.attr_ints(name) {
            Some(v) if v.len() == r && v.iter().all(|&x| x > 0) => {
                Ok(v.iter().map(|&x| x as u64).collect())
            }
            Some(v) => Err(cx.invalid(format!("`{name}` {v:?} must have {r} positive entries"))),
            None => Ok(vec![default; r]),
        }
    };
    let strides = ints("strides", 1)?;
    let dilations = ints("dilations", 1)?;
    if output.len() != r || kernel.len() != r {
        return Err(cx.invalid("spatial ranks of input, output and kernel differ"));
    }
    let (mut pb, mut pe) = (vec![0i64; r], vec![0i64; r]);
    match node.attr_str("auto_pad").unwrap_or("NOTSET") {
        "NOTSET" => {
            if let Some(p) = node.attr_ints("pads") {
                if p.len() != 2 * r {
                    return Err(cx.invalid(format!("pads {p:?} must have {} entries", 2 * r)));
                }
                pb.copy_from_slice(&p[..r]);
                pe.copy_from_slice(&p[r..]);
            }
        }
        "VALID" => {}
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            for i in 0..r {
                let need = (output[i] as i64 - 1) * strides[i] as i64
                    + (kernel[i] as i64 - 1) * dilations[i] as i64
                    + 1;
                let total = (need - input[i] as i64).max(0);
                let small = total / 2;
                (pb[i], pe[i]) = if mode == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
        }
        other => return Err(cx.invalid(format!("auto_pad `{other}`"))),
    }
    Ok(Window {
        input: input.to_vec(),
        output: output.to_vec(),
        kernel,
        strides,
        dilations,
        pad_begin: pb,
        pad_end: pe,
    })
}

/// For output coordinates `oc`: per spatial dim, the first input coordinate of the window
/// (`start`, may be negative) and the tap range `lo..hi` that lands inside `0..extent`.
fn window_ranges(
    b: &mut KernelBuilder,
    w: &Window,
    oc: &[Val],
    extent: &[i64],
    shift: &[i64],
) -> Vec<(Val, Val, Val)> {
    let mut out = Vec::new();
    for i in 0..oc.len() {
        let s = b.index(w.strides[i] as i64);
        let t = b.mul(oc[i], s);
        let p = b.index(w.pad_begin[i] - shift[i]);
        let start = b.sub(t, p);
        let d = w.dilations[i] as i64;
        // lo = ceil(-start / d) clamped at 0; hi = floor((extent-1-start)/d) + 1 clamped to K.
        let zero = b.index(0);
        let neg = b.sub(zero, start);
        let lo = ceil_div_pos(b, neg, d);
        let e1 = b.index(extent[i] - 1);
        let room = b.sub(e1, start);
        let nonneg = b.cmp(CmpOp::Ge, room, zero);
        let dv = b.index(d);
        let q = b.div(room, dv);
        let one = b.index(1);
        let q1 = b.add(q, one);
        let hi0 = b.select(nonneg, q1, zero);
        let kv = b.index(w.kernel[i] as i64);
        let hi = b.min(hi0, kv);
        out.push((start, lo, hi));
    }
    out
}

/// Nested loops over the tap ranges carrying `init`; `body` gets the tap coordinates.
fn window_fold(
    b: &mut KernelBuilder,
    ranges: &[(Val, Val, Val)],
    taps: &mut Vec<Val>,
    init: Vec<Val>,
    body: &dyn Fn(&mut KernelBuilder, &[Val], &[Val]) -> Vec<Val>,
) -> Vec<Val> {
    let Some(&(_, lo, hi)) = ranges.first() else {
        return body(b, taps, &init);
    };
    let one = b.index(1);
    b.for_loop(lo, hi, one, &init, |b, k, carried| {
        taps.push(k);
        let r = window_fold(b, &ranges[1..], taps, carried.to_vec(), body);
        taps.pop();
        r
    })
}

/// The flat input offset of the taps: Σ (start_i + k_i·d_i) · stride_i.
fn tap_offset(
    b: &mut KernelBuilder,
    w: &Window,
    ranges: &[(Val, Val, Val)],
    taps: &[Val],
    base: Val,
    st: &[u64],
) -> Val {
    let mut idx = base;
    for i in 0..taps.len() {
        let dv = b.index(w.dilations[i] as i64);
        let kd = b.mul(taps[i], dv);
        let c = b.add(ranges[i].0, kd);
        idx = offset(b, idx, c, st[i] as i64);
    }
    idx
}

// ==== Conv ====

/// Conv, and the Conv of FusedConv with its `tail` (`fused.rs`): in the matrix product's
/// epilogue where the Conv becomes one, else one elementwise kernel after the direct kernels.
pub(crate) fn conv_with(
    cx: &mut LowerCx,
    node: &Node,
    tail: Option<&crate::fused::Tail>,
) -> Result<Execution> {
    let (x, wv, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        result(cx, node, 0)?,
    );
    let (xd, wd, yd) = (cx.dims(x)?, cx.dims(wv)?, cx.dims(y)?);
    if xd.len() < 3 || wd.len() != xd.len() || yd.len() != xd.len() {
        return Err(cx.invalid(format!(
            "Conv needs X [N, C, ...] and W [M, C/group, ...] of equal rank; got {xd:?}, {wd:?}"
        )));
    }
    let dt = cx.dtype(x)?;
    if !dt.is_float() || dt.bits() < 16 || cx.dtype(wv)? != dt {
        return Err(cx.unsupported(format!("Conv on {dt}")));
    }
    let group = node.attr_int("group", 1);
    let (nb, c, mo) = (xd[0], xd[1], wd[0]);
    if group <= 0
        || c % group as u64 != 0
        || mo % group as u64 != 0
        || wd[1] * group as u64 != c
        || yd[1] != mo
    {
        return Err(cx.invalid(format!(
            "channels do not agree with group {group}: X {xd:?}, W {wd:?}"
        )));
    }
    let g = group as u64;
    let kernel = wd[2..].to_vec();
    if let Some(ks) = node.attr_ints("kernel_shape") {
        if ks.iter().map(|&v| v as u64).collect::<Vec<_>>() != kernel {
            return Err(cx.invalid(format!("kernel_shape {ks:?} differs from W's {kernel:?}")));
        }
    }
    let w = window(cx, node, &xd[2..], &yd[2..], kernel)?;
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let (cg, mg) = (c / g, mo / g);
    let it: u64 = w.input.iter().product();
    let kt: u64 = w.kernel.iter().product();
    let ot: u64 = w.output.iter().product();
    let acc = acc_type(dt);
    let bias = node.input(2);
    let mut args = vec![cx.buffer(x)?, cx.buffer(wv)?];
    if let Some(bb) = bias {
        if cx.numel(bb)? != mo {
            return Err(cx.invalid("bias must have M elements"));
        }
        args.push(cx.buffer(bb)?);
    }
    let yb = cx.buffer(y)?;
    args.push(yb);
    if conv_as_matmul(cx, &w, [nb, c, mo, g], dt, &args, tail)? {
        return Ok(Execution::Kernel);
    }
    // The direct kernels have no epilogue: they write where the tail kernel reads.
    let yt = cx.dtype(y)?;
    let after = tail.map(|t| crate::fused::Tail {
        in_kernel: false,
        ..t.clone()
    });
    let out = match &after {
        Some(t) => t.product_output(cx, yb, yt, &yd),
        None => yb,
    };
    *args.last_mut().expect("y") = out;
    let finish = |cx: &mut LowerCx| -> Result<Execution> {
        if let Some(t) = &after {
            t.finish(cx, out, yb, yt, &yd)?;
        }
        Ok(Execution::Kernel)
    };
    if dt == DType::F32
        && cx.dtype(y)? == DType::F32
        && cx.desc.vector_bytes >= 16
        && w.input.len() == 2
        && mg > 0
    {
        let kern = conv_rows_f32(
            cx.kernel_name("conv"),
            &w,
            [nb, c, mo, g],
            bias.is_some(),
            [cx.numel(x)?, cx.numel(wv)?, total],
        );
        cx.launch(kern, args);
        return finish(cx);
    }
    let mut kb = KernelBuilder::new(cx.kernel_name("conv"));
    let b = &mut kb;
    let xb = b.param("x", dt, cx.numel(x)?.max(1), Access::Read);
    let wb = b.param("w", dt, cx.numel(wv)?.max(1), Access::Read);
    let bb = bias.map(|_| b.param("bias", dt, mo, Access::Read));
    let yb = b.param("y", cx.dtype(y)?, total, Access::Write);
    let chunk = (16384 / (cg * kt).max(1)).clamp(1, ot);
    b.set_grid(&[nb * mo, ot.div_ceil(chunk)]);
    let nm = b.program_id(0);
    let pid = b.program_id(1);
    let mv = b.index(mo as i64);
    let n = b.div(nm, mv);
    let nmul = b.mul(n, mv);
    let m = b.sub(nm, nmul);
    let mgv = b.index(mg as i64);
    let gi = b.div(m, mgv);
    // x_base = (n*C + g*Cg) * It; w_base = m * Cg * Kt; y_base = nm * Ot.
    let cvv = b.index(c as i64);
    let nc = b.mul(n, cvv);
    let cgv = b.index(cg as i64);
    let gc = b.mul(gi, cgv);
    let ch = b.add(nc, gc);
    let itv = b.index(it as i64);
    let x_base = b.mul(ch, itv);
    let wstride = b.index((cg * kt) as i64);
    let w_base = b.mul(m, wstride);
    let otv = b.index(ot as i64);
    let y_base = b.mul(nm, otv);
    let bias_v = match bb {
        Some(bb) => load_acc(b, bb, m, 1, acc),
        None => fconst(b, Ty::scalar(acc), 0.0),
    };
    let ist = strides(&w.input);
    let kst = strides(&w.kernel);
    let extent: Vec<i64> = w.input.iter().map(|&v| v as i64).collect();
    let chv = b.index(chunk as i64);
    let lo = b.mul(pid, chv);
    let hi0 = b.add(lo, chv);
    let hi = b.min(hi0, otv);
    let one = b.index(1);
    let wref = &w;
    b.for_loop(lo, hi, one, &[], |b, o, _| {
        let oc = unravel(b, o, &wref.output);
        let ranges = window_ranges(b, wref, &oc, &extent, &vec![0; oc.len()]);
        let (c0, c1) = (b.index(0), b.index(cg as i64));
        let r = b.for_loop(c0, c1, one, &[bias_v], |b, ci, acc_in| {
            let xc = offset(b, x_base, ci, it as i64);
            let wc = offset(b, w_base, ci, kt as i64);
            let body = |b: &mut KernelBuilder, taps: &[Val], carried: &[Val]| -> Vec<Val> {
                let xi = tap_offset(b, wref, &ranges, taps, xc, &ist);
                let wi = linear_index(b, taps, &kst);
                let wi = b.add(wc, wi);
                let xv = load_acc(b, xb, xi, 1, acc);
                let wv = load_acc(b, wb, wi, 1, acc);
                let p = b.mul(xv, wv);
                vec![b.add(carried[0], p)]
            };
            window_fold(b, &ranges, &mut Vec::new(), acc_in.to_vec(), &body)
        });
        let out = b.cast(r[0], wref_dtype(yb, b), NO_SAT);
        let yi = b.add(y_base, o);
        b.store(yb, yi, out);
        Vec::new()
    });
    cx.launch(kb.finish(), args);
    finish(cx)
}

/// Columns of the unfolded input (`im2col`) a Conv may materialise: beyond this the direct
/// kernels run instead (128 MiB of f32).
const MAX_COL_ELEMS: u64 = 1 << 25;

/// Lowers a 2-D Conv with one group as a matrix product, when that applies: per image,
/// `Y[M, OH·OW] = W[M, C·KH·KW] · col[C·KH·KW, OH·OW] + bias`, where `col` is the input
/// unfolded by an `im2col` kernel (zeros where a tap falls in the padding). A 1×1 Conv with
/// unit strides and no padding reads X itself as `col`. The product is the shared tile
/// program (`contraction.rs`), so it is register-blocked on CPUs and runs on a matrix unit
/// where the target has one. `args` are x, w, [bias], y. Returns whether it lowered the node;
/// the direct kernels take every other Conv (groups, 1-D and 3-D, f64, tiny reductions).
fn conv_as_matmul(
    cx: &mut LowerCx,
    w: &Window,
    [nb, c, mo, g]: [u64; 4],
    dt: DType,
    args: &[tessera_kir::BufferId],
    tail: Option<&crate::fused::Tail>,
) -> Result<bool> {
    if w.input.len() != 2 || g != 1 || !matches!(dt, DType::F32 | DType::F16 | DType::BF16) {
        return Ok(false);
    }
    let kt: u64 = w.kernel.iter().product();
    let ot: u64 = w.output.iter().product();
    let ck = c * kt;
    // Small reductions (a handful of taps of a few channels) are faster walked directly.
    if ck < 16 || mo < 4 || nb.saturating_mul(ck).saturating_mul(ot) > MAX_COL_ELEMS {
        return Ok(false);
    }
    let (xb, wb, yb) = (args[0], args[1], args[args.len() - 1]);
    let bias = (args.len() == 4).then(|| args[2]);
    let direct = kt == 1
        && w.strides.iter().all(|&s| s == 1)
        && w.pad_begin.iter().all(|&p| p == 0)
        && w.output == w.input;
    // On a CPU that packs constant B operands in panels, an unfolded f32 input is written in
    // the same panels by im2col itself ([`col_panels`]), and the product reads its tiles in
    // place instead of copying each one for every program and k step.
    let panels = (!direct)
        .then(|| col_panels(cx, dt, (mo, ot, ck)))
        .flatten();
    let col = if let Some(p) = panels {
        let tn = p.tiles.1 as u64;
        let col = cx.scratch("conv_col_panels", dt, vec![nb, p.count, p.depth, tn]);
        let kern = im2col_panels_kernel(cx.kernel_name("im2col"), w, [nb, c], dt, p);
        cx.launch(kern, vec![xb, col]);
        col
    } else if direct {
        xb
    } else {
        let col = cx.scratch("conv_col", dt, vec![nb, ck, ot]);
        // On a CPU (a register-blocked desc) the contiguous runs copy in f32 vectors.
        let lanes = match (dt, cx.desc.register_block()) {
            (DType::F32, Some(_)) => (cx.desc.vector_bytes / 4).max(1) as u16,
            _ => 1,
        };
        // Rows as runs where the backend has no loop vectorizer of its own (host: the stem's
        // im2col 11 -> 3 ms) and the rows are wide enough to pay for three loops.
        let runs = !cx.desc.loop_vectorizer() && w.output[1] >= 16;
        let kern = im2col_kernel(cx.kernel_name("im2col"), w, [nb, c], dt, (runs, lanes));
        cx.launch(kern, vec![xb, col]);
        col
    };
    let acc = acc_type(dt);
    let mut spec = MmSpec {
        name: cx.kernel_name("conv"),
        a: (dt, mo * ck),
        b: (dt, nb * ck * ot),
        y: (dt, nb * mo * ot),
        acc,
        batch: vec![nb],
        a_bst: vec![0],
        b_bst: vec![ck * ot],
        m: mo,
        n: ot,
        k: ck,
        a_rs: ck as i64,
        a_ks: 1,
        b_ks: ot as i64,
        b_ns: 1,
        alpha: 1.0,
        beta: 1.0,
        c: bias.map(|_| CTerm {
            dtype: dt,
            len: mo,
            rs: 1,
            cs: 0,
        }),
        a_zp: None,
        b_zp: None,
        fused: None,
        b_panels: None,
    };
    if let Some(p) = panels {
        let per_image = p.count * p.depth * p.tiles.1 as u64;
        spec.b = (dt, nb * per_image);
        spec.b_bst = vec![per_image];
        spec.b_panels = Some(p);
    }
    let mut mm_args = vec![wb, col];
    mm_args.extend(bias);
    let y_dims: Vec<u64> = [nb, mo]
        .into_iter()
        .chain(w.output.iter().copied())
        .collect();
    let mut out = yb;
    if let Some(t) = tail {
        let residual = t.residual.as_ref().filter(|_| t.in_kernel);
        spec.fused = Some(FusedEpilogue {
            scale: None,
            residual: residual.map(|r| r.dtype),
            activation: t.kernel_activation(),
        });
        mm_args.extend(residual.map(|r| r.buffer));
        out = t.product_output(cx, yb, dt, &y_dims);
    }
    mm_args.push(out);
    let tiles = match panels {
        Some(p) => p.tiles,
        None => conv_tiles(cx.desc, &spec),
    };
    launch_matmul_tiled(cx, &spec, tiles, mm_args)?;
    if let Some(t) = tail {
        t.finish(cx, out, yb, dt, &y_dims)?;
    }
    Ok(true)
}

/// Row `row` of a 2-D window's unfolded input, `(n·C + ci)·KH·KW + kh_i·KW + kw_i`: where its
/// input plane (n, ci) starts in x, and the input row and column that output (0, 0) reads,
/// `ih0` and `iw0` (output (o_h, o_w) reads `(o_h·sh + ih0, o_w·sw + iw0)` of the plane).
fn tap_at(b: &mut KernelBuilder, w: &Window, row: Val) -> (Val, Val, Val) {
    let ktv = b.index((w.kernel[0] * w.kernel[1]) as i64);
    let plane = b.div(row, ktv);
    let pk = b.mul(plane, ktv);
    let tap = b.sub(row, pk);
    let itv = b.index((w.input[0] * w.input[1]) as i64);
    let x_plane = b.mul(plane, itv);
    let kwv = b.index(w.kernel[1] as i64);
    let khi = b.div(tap, kwv);
    let kk = b.mul(khi, kwv);
    let kwi = b.sub(tap, kk);
    let dhv = b.index(w.dilations[0] as i64);
    let kh_off = b.mul(khi, dhv);
    let phv = b.index(w.pad_begin[0]);
    let ih0 = b.sub(kh_off, phv);
    let dwv = b.index(w.dilations[1] as i64);
    let kw_off = b.mul(kwi, dwv);
    let pwv = b.index(w.pad_begin[1]);
    (x_plane, ih0, b.sub(kw_off, pwv))
}

/// Output row `o_h` of an unfolded input, for a tap whose input rows start at `ih0` in the
/// plane at `x_plane`: whether its input row lies inside the image, and where it starts in x.
fn tap_row(b: &mut KernelBuilder, w: &Window, (x_plane, ih0): (Val, Val), o_h: Val) -> (Val, Val) {
    let (shv, ihv, iwv) = (
        b.index(w.strides[0] as i64),
        b.index(w.input[0] as i64),
        b.index(w.input[1] as i64),
    );
    let a = b.mul(o_h, shv);
    let i_h = b.add(a, ih0);
    let z = b.index(0);
    let ge = b.cmp(CmpOp::Ge, i_h, z);
    let lt = b.cmp(CmpOp::Lt, i_h, ihv);
    let row_ok = b.binary(BinOp::And, ge, lt);
    let xr = b.mul(i_h, iwv);
    (row_ok, b.add(x_plane, xr))
}

/// Zeros at `row + j` for `j` in `from..to`.
fn fill_zeros(b: &mut KernelBuilder, (buf, zero): (Buf, Val), row: Val, (from, to): (Val, Val)) {
    let one = b.index(1);
    b.for_loop(from, to, one, &[], |b, j, _| {
        let e = b.add(row, j);
        b.store(buf, e, zero);
        Vec::new()
    });
}

/// Output columns `o_w` in `from..to` of one row of an unfolded input, each testing its input
/// column (and the row's `row_ok`): `col[dst + o_w] = x[xrow + o_w·sw + iw0]`, or 0 outside.
fn tested_columns(
    b: &mut KernelBuilder,
    (xb, colb, dt): (Buf, Buf, DType),
    w: &Window,
    (row_ok, xrow, iw0): (Val, Val, Val),
    (from, to, dst): (Val, Val, Val),
) {
    let (one, swv, iwv) = (
        b.index(1),
        b.index(w.strides[1] as i64),
        b.index(w.input[1] as i64),
    );
    let zero = b.const_float(Ty::scalar(dt), 0.0);
    b.for_loop(from, to, one, &[], |b, o_w, _| {
        let a = b.mul(o_w, swv);
        let i_w = b.add(a, iw0);
        let z = b.index(0);
        let ge = b.cmp(CmpOp::Ge, i_w, z);
        let lt = b.cmp(CmpOp::Lt, i_w, iwv);
        let col_ok = b.binary(BinOp::And, ge, lt);
        let ok = b.binary(BinOp::And, row_ok, col_ok);
        let v = b.if_else(
            ok,
            &[Ty::scalar(dt)],
            |b| {
                let xi = b.add(xrow, i_w);
                vec![b.load(xb, xi, 1)]
            },
            |_| vec![zero],
        );
        let e = b.add(dst, o_w);
        b.store(colb, e, v[0]);
        Vec::new()
    });
}

/// The panel layout of a Conv's unfolded f32 input (`m × n` output, depth `k`) where the
/// target packs constant B operands in panels (`[cpu] constant_operand = "panels"`) and has a
/// register block: [`conv_tiles`]'s tile with its n side one panel, as wide as the
/// micro-kernel's block (or a few blocks, to fill a cache line), as `panels.rs` packs
/// weights. `None` where that does not apply, or where the last panel would be more than a
/// quarter padding.
fn col_panels(
    cx: &LowerCx,
    dt: DType,
    (m, n, k): (u64, u64, u64),
) -> Option<crate::panels::Panels> {
    // The panels kernel tests each element's bounds in runs that only a loop vectorizer makes
    // fast; host (Cranelift, 16-wide panels) measured slower with it: CNN convs 78 -> 98 ms,
    // im2col 12 -> 47 ms, where llvm-x86_64's convs went 26 -> 21 ms for 0.5 ms more im2col.
    let panels = cx.desc.constant_operand_layout() == tessera_target::OperandLayout::Panels;
    if dt != DType::F32 || !panels || !cx.desc.loop_vectorizer() {
        return None;
    }
    let width = crate::panels::panel_width(cx.desc)?;
    let count = n.div_ceil(width);
    if width > u16::MAX as u64 || (count * width - n) * 4 > n {
        return None;
    }
    let (tm, _, tk) = mm_tiles(cx.desc, dt, dt, dt, (m, n, k));
    let limit = tessera_kir::verify::MAX_TILE_ELEMS as u64;
    if width * tk as u64 > limit || tm as u64 * width > limit {
        return None;
    }
    Some(crate::panels::Panels {
        tiles: (tm, width as u16, tk),
        count,
        depth: k.div_ceil(tk as u64) * tk as u64,
    })
}

/// [`im2col_kernel`] writing the panels `p` describes: element (k, j) of image `n`'s unfolded
/// input at `((n·count + j / tn)·depth + k)·tn + j mod tn`, zeros in the rows past C·KH·KW and
/// in the last panel's columns past OH·OW. One program per panel, which it writes in order:
/// for each row k, the output rows the panel's columns cross, each a run of consecutive
/// columns (each element testing its bounds; the LLVM targets vectorise the run).
fn im2col_panels_kernel(
    name: String,
    w: &Window,
    [nb, c]: [u64; 2],
    dt: DType,
    p: crate::panels::Panels,
) -> Kernel {
    let (ih, iw) = (w.input[0] as i64, w.input[1] as i64);
    let (oh, ow) = (w.output[0] as i64, w.output[1] as i64);
    let (kh, kw) = (w.kernel[0] as i64, w.kernel[1] as i64);
    let ck = c as i64 * kh * kw;
    let (tn, depth, count) = (p.tiles.1 as i64, p.depth as i64, p.count as i64);
    let n_cols = oh * ow;
    let mut kb = KernelBuilder::new(name);
    let b = &mut kb;
    let xb = b.param("x", dt, nb * c * (ih * iw) as u64, Access::Read);
    let colb = b.param("col", dt, nb * (count * depth * tn) as u64, Access::Write);
    b.set_grid(&[nb * count as u64]);
    let r = b.program_id(0);
    let cv = b.index(count);
    let img = b.div(r, cv);
    let im = b.mul(img, cv);
    let q = b.sub(r, im);
    let size = b.index(depth * tn);
    let panel = b.mul(r, size);
    // The panel's columns j0..j_end (fewer than tn in the last one), on output rows
    // oh_a..=oh_b.
    let tnv = b.index(tn);
    let j0 = b.mul(q, tnv);
    let j_full = b.add(j0, tnv);
    let ncv = b.index(n_cols);
    let j_end = b.min(j_full, ncv);
    let valid = b.sub(j_end, j0);
    let owv = b.index(ow);
    let oh_a = b.div(j0, owv);
    let one = b.index(1);
    let j_last = b.sub(j_end, one);
    let oh_b = b.div(j_last, owv);
    let oh_end = b.add(oh_b, one);
    let zero = b.const_float(Ty::scalar(dt), 0.0);
    let fill = |b: &mut KernelBuilder, row: Val, from: Val, to: Val| {
        fill_zeros(b, (colb, zero), row, (from, to));
    };
    let (lo, dv, ckv) = (b.index(0), b.index(depth), b.index(ck));
    b.for_loop(lo, dv, one, &[], |b, kk, _| {
        let tnv = b.index(tn);
        let kr = b.mul(kk, tnv);
        let row = b.add(panel, kr);
        let real = b.cmp(CmpOp::Lt, kk, ckv);
        b.if_else(
            real,
            &[],
            |b| {
                // Row kk of image img is row img·C·KH·KW + kk of the whole unfolded input.
                let ckv = b.index(ck);
                let ib = b.mul(img, ckv);
                let grow = b.add(ib, kk);
                let (x_plane, ih0, iw0) = tap_at(b, w, grow);
                b.for_loop(oh_a, oh_end, one, &[], |b, o_h, _| {
                    let (row_ok, xrow) = tap_row(b, w, (x_plane, ih0), o_h);
                    // This output row's columns inside the panel, as o_w in [w_a, w_b); column
                    // o_w lands at `base + o_w`.
                    let (z, owv) = (b.index(0), b.index(ow));
                    let cr = b.mul(o_h, owv);
                    let s0 = b.sub(j0, cr);
                    let w_a = b.max(s0, z);
                    let s1 = b.sub(j_end, cr);
                    let w_b = b.min(s1, owv);
                    let base = b.sub(row, s0);
                    let cols = (xb, colb, dt);
                    tested_columns(b, cols, w, (row_ok, xrow, iw0), (w_a, w_b, base));
                    Vec::new()
                });
                fill(b, row, valid, tnv);
                Vec::new()
            },
            |b| {
                let z = b.index(0);
                fill(b, row, z, tnv);
                Vec::new()
            },
        );
        Vec::new()
    });
    kb.finish()
}

/// The `im2col` kernel of a 2-D window: `col[n, (c·KH + kh)·KW + kw, oh·OW + ow] =
/// x[n, c, oh·sh − ph + kh·dh, ow·sw − pw + kw·dw]`, or 0 where that falls outside the input.
/// One program per row of `col` (one tap of one channel); each output row is padding, or a
/// run of padding, the in-range columns (copied in vectors of `lanes` when the stride is 1)
/// and padding again, so no element tests its bounds (with `runs`; without, each element
/// tests its bounds: for rows narrower than 16, and for a backend whose loop vectorizer
/// makes vectors of that form itself, which measured faster on llvm-x86_64). Parameters x,
/// col.
fn im2col_kernel(
    name: String,
    w: &Window,
    [nb, c]: [u64; 2],
    dt: DType,
    (runs, lanes): (bool, u16),
) -> Kernel {
    let (ih, iw) = (w.input[0] as i64, w.input[1] as i64);
    let (oh, ow) = (w.output[0] as i64, w.output[1] as i64);
    let (kh, kw) = (w.kernel[0] as i64, w.kernel[1] as i64);
    let sw = w.strides[1] as i64;
    let rows = nb * c * (kh * kw) as u64;
    let mut kb = KernelBuilder::new(name);
    let b = &mut kb;
    let xb = b.param("x", dt, nb * c * (ih * iw) as u64, Access::Read);
    let colb = b.param("col", dt, rows * (oh * ow) as u64, Access::Write);
    b.set_grid(&[rows]);
    let row = b.program_id(0);
    let otv = b.index(oh * ow);
    let col_row = b.mul(row, otv);
    let (x_plane, ih0, iw0) = tap_at(b, w, row);
    let (lo, ohv, owv, one) = (b.index(0), b.index(oh), b.index(ow), b.index(1));
    // Output row `o_h`: whether its input row is inside the image, where that input row
    // starts in x, and where the output row starts in col.
    let row_at = |b: &mut KernelBuilder, o_h: Val| {
        let (row_ok, xrow) = tap_row(b, w, (x_plane, ih0), o_h);
        let owv = b.index(ow);
        let cr = b.mul(o_h, owv);
        (row_ok, xrow, b.add(col_row, cr))
    };
    if !runs {
        // A test per element: what a backend with a loop vectorizer turns into vectors itself,
        // and what costs less than three loops per row on narrow rows (a CNN's late layers).
        b.for_loop(lo, ohv, one, &[], |b, o_h, _| {
            let (row_ok, xrow, crow) = row_at(b, o_h);
            let z = b.index(0);
            tested_columns(b, (xb, colb, dt), w, (row_ok, xrow, iw0), (z, owv, crow));
            Vec::new()
        });
        return kb.finish();
    }
    // The output columns whose input column lies inside the row, for this tap: i_w = o_w·sw +
    // iw0 in [0, IW) for o_w in [w_lo, w_hi). Left of it and right of it is padding.
    let neg = b.sub(lo, iw0);
    let w_lo = ceil_div_pos(b, neg, sw);
    let w_lo = b.min(w_lo, owv);
    let iwv = b.index(iw);
    let right = b.sub(iwv, iw0);
    let w_hi = ceil_div_pos(b, right, sw);
    let w_hi = b.min(w_hi, owv);
    let w_hi = b.max(w_hi, w_lo);
    let l = lanes.max(1) as i64;
    let zero = b.const_float(Ty::scalar(dt), 0.0);
    let fill = |b: &mut KernelBuilder, row: Val, from: Val, to: Val| {
        fill_zeros(b, (colb, zero), row, (from, to));
    };
    b.for_loop(lo, ohv, one, &[], |b, o_h, _| {
        let (row_ok, xrow, crow) = row_at(b, o_h);
        b.if_else(
            row_ok,
            &[],
            |b| {
                let z = b.index(0);
                fill(b, crow, z, w_lo);
                // With unit stride the run is contiguous on both sides: whole vectors of
                // `lanes`, then single elements.
                let mut from = w_lo;
                if sw == 1 && l > 1 {
                    let n = b.sub(w_hi, w_lo);
                    let lv = b.index(l);
                    let q = b.div(n, lv);
                    let nv = b.mul(q, lv);
                    let end = b.add(w_lo, nv);
                    b.for_loop(w_lo, end, lv, &[], |b, o_w, _| {
                        let xi = b.add(xrow, o_w);
                        let xi = b.add(xi, iw0);
                        let v = b.load(xb, xi, l as u16);
                        let ci = b.add(crow, o_w);
                        b.store(colb, ci, v);
                        Vec::new()
                    });
                    from = end;
                }
                let one = b.index(1);
                let swv = b.index(sw);
                b.for_loop(from, w_hi, one, &[], |b, o_w, _| {
                    let a = b.mul(o_w, swv);
                    let i_w = b.add(a, iw0);
                    let xi = b.add(xrow, i_w);
                    let v = b.load(xb, xi, 1);
                    let ci = b.add(crow, o_w);
                    b.store(colb, ci, v);
                    Vec::new()
                });
                fill(b, crow, w_hi, owv);
                Vec::new()
            },
            |b| {
                let z = b.index(0);
                fill(b, crow, z, owv);
                Vec::new()
            },
        );
        Vec::new()
    });
    kb.finish()
}

/// The interior columns of a 2-D window (every W tap in bounds): `lo..hi`, as constants.
fn conv_interior(w: &Window) -> (i64, i64) {
    let pw = w.pad_begin[1];
    let lo = pw.max(0);
    let hi = (w.output[1] as i64).min(w.input[1] as i64 - w.kernel[1] as i64 + pw + 1);
    (lo, hi.max(lo))
}

/// Whether [`conv_rows_f32`] vectorises the interior columns: unit stride and dilation
/// along W, and at least 4 interior columns.
fn conv_rows_vec(w: &Window) -> bool {
    let (lo, hi) = conv_interior(w);
    w.strides[1] == 1 && w.dilations[1] == 1 && hi - lo >= 4
}

/// f32 2-D Conv. One instance per (image, block of `mb` output channels of one group, output
/// row). With unit stride and dilation along W, interior columns (every W tap in bounds) go 8
/// or 4 at a time in vec<4xf32> accumulators, one set per channel of the block, so each input
/// vector is reused by `mb` channels and no tap needs a bounds check (a last partial block is
/// recomputed overlapping the previous one, which writes the same values); border columns,
/// and every column otherwise, take the scalar window walk, still sharing each input load
/// among the block's channels. Every output is summed in the same order
/// as the generic path (bias, then input channels, then taps in order), so the results are
/// the same. Parameters: x, w, [bias], y.
fn conv_rows_f32(
    name: String,
    w: &Window,
    dims: [u64; 4],
    has_bias: bool,
    lens: [u64; 3],
) -> Kernel {
    let [nb, c, mo, g] = dims;
    let (cg, mg) = (c / g, mo / g);
    let mb: u64 = if mg % 4 == 0 {
        4
    } else if mg % 2 == 0 {
        2
    } else {
        1
    };
    let (ih_n, iw_n) = (w.input[0] as i64, w.input[1] as i64);
    let (oh_n, ow_n) = (w.output[0], w.output[1] as i64);
    let (kh_n, kw_n) = (w.kernel[0] as i64, w.kernel[1] as i64);
    let it = ih_n * iw_n;
    let kt = kh_n * kw_n;
    let ot = oh_n as i64 * ow_n;
    let pw = w.pad_begin[1];
    let dh = w.dilations[0] as i64;
    let (int_lo, int_hi) = conv_interior(w);
    let f32t = DType::F32;
    let mut kb = KernelBuilder::new(name);
    let b = &mut kb;
    let xb = b.param("x", f32t, lens[0].max(1), Access::Read);
    let wb = b.param("w", f32t, lens[1].max(1), Access::Read);
    let bb = has_bias.then(|| b.param("bias", f32t, mo, Access::Read));
    let yb = b.param("y", f32t, lens[2], Access::Write);
    let nblk = mo / mb;
    b.set_grid(&[nb * nblk, oh_n]);
    let p0 = b.program_id(0);
    let oh = b.program_id(1);
    let nbv = b.index(nblk as i64);
    let n = b.div(p0, nbv);
    let nmul = b.mul(n, nbv);
    let blk = b.sub(p0, nmul);
    let mbv = b.index(mb as i64);
    let m0 = b.mul(blk, mbv);
    let mgv = b.index(mg as i64);
    let gi = b.div(m0, mgv);
    // x_base = (n*C + g*Cg) * It.
    let cvv = b.index(c as i64);
    let nc = b.mul(n, cvv);
    let cgv = b.index(cg as i64);
    let gc = b.mul(gi, cgv);
    let ch = b.add(nc, gc);
    let itv = b.index(it);
    let x_base = b.mul(ch, itv);
    // Per channel j of the block: weights base, bias, and the output row's base.
    let mov = b.index(mo as i64);
    let nmo = b.mul(n, mov);
    let otv = b.index(ot);
    let owv = b.index(ow_n);
    let row_off = b.mul(oh, owv);
    let wstride = b.index(cg as i64 * kt);
    let mut w_bases = Vec::new();
    let mut biases = Vec::new();
    let mut y_rows = Vec::new();
    for j in 0..mb {
        let jv = b.index(j as i64);
        let m = b.add(m0, jv);
        w_bases.push(b.mul(m, wstride));
        biases.push(match bb {
            Some(bb) => b.load(bb, m, 1),
            None => fconst(b, Ty::scalar(f32t), 0.0),
        });
        let nm = b.add(nmo, m);
        let yb0 = b.mul(nm, otv);
        y_rows.push(b.add(yb0, row_off));
    }
    let extent = [ih_n, iw_n];
    let one = b.index(1);
    let ist = [iw_n as u64, 1];
    let kst = [kw_n as u64, 1];

    // Scalar columns ow in lo..hi: the generic window walk, all channels of the block at once.
    let scalar_cols = |b: &mut KernelBuilder, lo: i64, hi: i64| {
        if lo >= hi {
            return;
        }
        let (lov, hiv) = (b.index(lo), b.index(hi));
        b.for_loop(lov, hiv, one, &[], |b, ow, _| {
            let ranges = window_ranges(b, w, &[oh, ow], &extent, &[0, 0]);
            let (c0, c1) = (b.index(0), b.index(cg as i64));
            let r = b.for_loop(c0, c1, one, &biases, |b, ci, acc_in| {
                let xc = offset(b, x_base, ci, it);
                let wcs: Vec<Val> = w_bases.iter().map(|&wb0| offset(b, wb0, ci, kt)).collect();
                let body = |b: &mut KernelBuilder, taps: &[Val], carried: &[Val]| -> Vec<Val> {
                    let xi = tap_offset(b, w, &ranges, taps, xc, &ist);
                    let xv = b.load(xb, xi, 1);
                    let wi = linear_index(b, taps, &kst);
                    let mut out = Vec::new();
                    for j in 0..mb as usize {
                        let wij = b.add(wcs[j], wi);
                        let wv = b.load(wb, wij, 1);
                        let p = b.mul(xv, wv);
                        out.push(b.add(carried[j], p));
                    }
                    out
                };
                window_fold(b, &ranges, &mut Vec::new(), acc_in.to_vec(), &body)
            });
            for j in 0..mb as usize {
                let yi = b.add(y_rows[j], ow);
                b.store(yb, yi, r[j]);
            }
            Vec::new()
        });
    };

    // Interior H taps of this output row (the W taps of interior columns are all in bounds).
    let hr = window_ranges(b, w, &[oh], &extent[..1], &[0]);
    let (h_start, h_lo, h_hi) = hr[0];
    // `groups` vectors of 4 columns starting at ow0, for every channel of the block.
    let vec_block = |b: &mut KernelBuilder, ow0: Val, groups: usize| {
        let mut init = Vec::new();
        for &bias in &biases {
            let s = b.splat(bias, 4);
            for _ in 0..groups {
                init.push(s);
            }
        }
        let pwv = b.index(pw);
        let xcol = b.sub(ow0, pwv);
        let (c0, c1) = (b.index(0), b.index(cg as i64));
        let r = b.for_loop(c0, c1, one, &init, |b, ci, acc_ci| {
            let xc0 = offset(b, x_base, ci, it);
            let xc = b.add(xc0, xcol);
            let wcs: Vec<Val> = w_bases.iter().map(|&wb0| offset(b, wb0, ci, kt)).collect();
            b.for_loop(h_lo, h_hi, one, acc_ci, |b, kh, acc_h| {
                let dhv = b.index(dh);
                let khd = b.mul(kh, dhv);
                let ih = b.add(h_start, khd);
                let xrow = offset(b, xc, ih, iw_n);
                let wrows: Vec<Val> = wcs.iter().map(|&wc| offset(b, wc, kh, kw_n)).collect();
                let tap = |b: &mut KernelBuilder, kw: Val, acc: &[Val]| -> Vec<Val> {
                    let xi = b.add(xrow, kw);
                    let mut xs = Vec::new();
                    for gr in 0..groups {
                        let gv = b.index(4 * gr as i64);
                        let xig = b.add(xi, gv);
                        xs.push(b.load(xb, xig, 4));
                    }
                    let mut out = Vec::new();
                    for j in 0..mb as usize {
                        let wi = b.add(wrows[j], kw);
                        let ws = b.load(wb, wi, 1);
                        let wv = b.splat(ws, 4);
                        for gr in 0..groups {
                            let p = b.mul(xs[gr], wv);
                            out.push(b.add(acc[j * groups + gr], p));
                        }
                    }
                    out
                };
                if kw_n <= 7 {
                    let mut acc = acc_h.to_vec();
                    for kw in 0..kw_n {
                        let kv = b.index(kw);
                        acc = tap(b, kv, &acc);
                    }
                    acc
                } else {
                    let (k0, k1) = (b.index(0), b.index(kw_n));
                    b.for_loop(k0, k1, one, acc_h, |b, kw, acc| tap(b, kw, acc))
                }
            })
        });
        for j in 0..mb as usize {
            for gr in 0..groups {
                let gv = b.index(4 * gr as i64);
                let col = b.add(ow0, gv);
                let yi = b.add(y_rows[j], col);
                b.store(yb, yi, r[j * groups + gr]);
            }
        }
    };

    if !conv_rows_vec(w) {
        scalar_cols(b, 0, ow_n);
        return kb.finish();
    }
    scalar_cols(b, 0, int_lo);
    let n8 = (int_hi - int_lo) / 8;
    let end8 = int_lo + 8 * n8;
    if n8 > 0 {
        let (lo, hi, step) = (b.index(int_lo), b.index(end8), b.index(8));
        b.for_loop(lo, hi, step, &[], |b, ow0, _| {
            vec_block(b, ow0, 2);
            Vec::new()
        });
    }
    let mut end = end8;
    if int_hi - end >= 4 {
        let ow0 = b.index(end);
        vec_block(b, ow0, 1);
        end += 4;
    }
    if end < int_hi {
        let ow0 = b.index(int_hi - 4);
        vec_block(b, ow0, 1);
    }
    scalar_cols(b, int_hi, ow_n);
    kb.finish()
}

/// The element type of buffer `buf`.
fn wref_dtype(buf: Buf, b: &KernelBuilder) -> DType {
    b.buf_decl(buf).dtype
}

// ==== MaxPool / AveragePool / LpPool and their Global forms ====

/// The smallest value of `t`, as a literal (floats: -inf).
fn lowest(t: DType) -> Scalar {
    if t.is_float() {
        Scalar::Float(f64::NEG_INFINITY)
    } else if t.is_signed_int() {
        Scalar::Int(if t.bits() >= 64 {
            i64::MIN
        } else {
            -(1i64 << (t.bits() - 1))
        })
    } else {
        Scalar::Int(0)
    }
}

fn pool(cx: &mut LowerCx, node: &Node, global: bool) -> Result<Execution> {
    let (x, y) = (operand(cx, node, 0)?, result(cx, node, 0)?);
    let (xd, yd) = (cx.dims(x)?, cx.dims(y)?);
    if xd.len() < 3 || yd.len() != xd.len() || yd[..2] != xd[..2] {
        return Err(cx.invalid(format!(
            "pooling needs [N, C, ...] in and out; got {xd:?} -> {yd:?}"
        )));
    }
    let dt = cx.dtype(x)?;
    let kind = match node.op {
        Op::MaxPool | Op::GlobalMaxPool => 0,
        Op::AveragePool | Op::GlobalAveragePool => 1,
        _ => 2,
    };
    if kind != 0 && !dt.is_float() {
        return Err(cx.unsupported(format!("{} on {dt}", node.op)));
    }
    let r = xd.len() - 2;
    let w = if global {
        if yd[2..].iter().any(|&d| d != 1) {
            return Err(cx.invalid("global pooling output must have spatial dims 1"));
        }
        Window {
            input: xd[2..].to_vec(),
            output: yd[2..].to_vec(),
            kernel: xd[2..].to_vec(),
            strides: vec![1; r],
            dilations: vec![1; r],
            pad_begin: vec![0; r],
            pad_end: vec![0; r],
        }
    } else {
        let ks = node
            .attr_ints("kernel_shape")
            .ok_or_else(|| cx.invalid("missing kernel_shape"))?;
        if ks.len() != r || ks.iter().any(|&k| k <= 0) {
            return Err(cx.invalid(format!(
                "kernel_shape {ks:?} must have {r} positive entries"
            )));
        }
        window(
            cx,
            node,
            &xd[2..],
            &yd[2..],
            ks.iter().map(|&k| k as u64).collect(),
        )?
    };
    let count_include_pad = node.attr_int("count_include_pad", 0) != 0;
    let p = node.attr_int("p", 2) as f64;
    let indices = node.outputs.get(1).copied();
    if indices.is_some() && kind != 0 {
        return Err(cx.invalid("only MaxPool has an Indices result"));
    }
    let col_major = node.attr_int("storage_order", 0) != 0;
    let total: u64 = yd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let acc = acc_type(dt);
    let mut args = vec![cx.buffer(x)?, cx.buffer(y)?];
    if let Some(iv) = indices {
        args.push(cx.buffer(iv)?);
    }
    let it: u64 = w.input.iter().product();
    let ot: u64 = w.output.iter().product();
    let kt: u64 = w.kernel.iter().product();
    let planes = xd[0] * xd[1];
    let mut kb = KernelBuilder::new(cx.kernel_name(&node.op.name().to_ascii_lowercase()));
    let b = &mut kb;
    let xb = b.param("x", dt, cx.numel(x)?.max(1), Access::Read);
    let yb = b.param("y", cx.dtype(y)?, total, Access::Write);
    let ib = indices.map(|_| b.param("indices", DType::I64, total, Access::Write));
    // 2-D max/average pooling whose windows lie inside the input along W for most output
    // columns: whole output rows per instance, those columns with constant tap offsets.
    let interior = if indices.is_none() {
        pool_interior(&w, kind)
    } else {
        None
    };
    // On a backend with a loop vectorizer, max pooling's interior columns go one window row at
    // a time, each a loop over the columns folding into Y: loops it makes vectors of.
    let by_rows = kind == 0 && cx.desc.loop_vectorizer();
    let chunk = match interior {
        Some(_) => ((16384 / kt.max(1)) / w.output[1]).max(1).min(w.output[0]) * w.output[1],
        None => (16384 / kt.max(1)).clamp(1, ot),
    };
    b.set_grid(&[planes, ot.div_ceil(chunk)]);
    let plane = b.program_id(0);
    let pid = b.program_id(1);
    let itv = b.index(it as i64);
    let x_base = b.mul(plane, itv);
    let otv = b.index(ot as i64);
    let y_base = b.mul(plane, otv);
    let ist = strides(&w.input);
    // Column-major spatial strides for storage_order = 1.
    let mut cst = vec![1u64; r];
    for i in 1..r {
        cst[i] = cst[i - 1] * w.input[i - 1];
    }
    let extent: Vec<i64> = w.input.iter().map(|&v| v as i64).collect();
    let padded: Vec<i64> = (0..r)
        .map(|i| w.input[i] as i64 + w.pad_begin[i] + w.pad_end[i])
        .collect();
    let chv = b.index(chunk as i64);
    let lo = b.mul(pid, chv);
    let hi0 = b.add(lo, chv);
    let hi = b.min(hi0, otv);
    let one = b.index(1);
    let wref = &w;
    // One output point at flat spatial index `o`, with the window's tap ranges computed at run
    // time (any rank, padding, dilation).
    let point = |b: &mut KernelBuilder, o: Val| {
        let oc = unravel(b, o, &wref.output);
        let ranges = window_ranges(b, wref, &oc, &extent, &vec![0; r]);
        let sty = Ty::scalar(acc);
        let yi = b.add(y_base, o);
        match kind {
            0 => {
                let init = b.constant(sty, lowest(acc));
                let minus1 = b.index(-1);
                let body = |b: &mut KernelBuilder, taps: &[Val], carried: &[Val]| -> Vec<Val> {
                    let zero = b.index(0);
                    let sp = tap_offset(
                        b,
                        wref,
                        &ranges,
                        taps,
                        zero,
                        if col_major { &cst } else { &ist },
                    );
                    let xi = tap_offset(b, wref, &ranges, taps, x_base, &ist);
                    let v = load_acc(b, xb, xi, 1, acc);
                    let better = b.cmp(CmpOp::Gt, v, carried[0]);
                    let first = b.cmp(CmpOp::Lt, carried[1], zero);
                    let take = b.binary(BinOp::Or, better, first);
                    let nv = b.select(take, v, carried[0]);
                    let ni = b.select(take, sp, carried[1]);
                    vec![nv, ni]
                };
                let res = window_fold(b, &ranges, &mut Vec::new(), vec![init, minus1], &body);
                let out = b.cast(res[0], wref_dtype(yb, b), NO_SAT);
                b.store(yb, yi, out);
                if let Some(ib) = ib {
                    // Flat index into X: plane * It + spatial index (row- or column-major).
                    let pl = b.mul(plane, itv);
                    let flat = b.add(pl, res[1]);
                    b.store(ib, yi, flat);
                }
            }
            _ => {
                let zero = fconst(b, sty, 0.0);
                let pv = fconst(b, sty, p);
                let body = |b: &mut KernelBuilder, taps: &[Val], carried: &[Val]| -> Vec<Val> {
                    let xi = tap_offset(b, wref, &ranges, taps, x_base, &ist);
                    let v = load_acc(b, xb, xi, 1, acc);
                    let t = if kind == 1 {
                        v
                    } else if p == 2.0 {
                        b.mul(v, v)
                    } else if p == 1.0 {
                        b.unary(UnOp::Abs, v)
                    } else {
                        let a = b.unary(UnOp::Abs, v);
                        b.math(MathFn::Pow, &[a, pv])
                    };
                    vec![b.add(carried[0], t)]
                };
                let res = window_fold(b, &ranges, &mut Vec::new(), vec![zero], &body);
                let out = if kind == 1 {
                    // The divisor counts taps inside the input, or inside the padded input.
                    let cnt_ranges = if count_include_pad {
                        let shift: Vec<i64> = wref.pad_begin.clone();
                        window_ranges(b, wref, &oc, &padded, &shift)
                    } else {
                        ranges.clone()
                    };
                    let mut cnt = b.index(1);
                    for &(_, l, h) in &cnt_ranges {
                        let d = b.sub(h, l);
                        let z = b.index(0);
                        let d = b.max(d, z);
                        cnt = b.mul(cnt, d);
                    }
                    let cf = b.cast(cnt, acc, NO_SAT);
                    b.div(res[0], cf)
                } else if p == 2.0 {
                    b.unary(UnOp::Sqrt, res[0])
                } else if p == 1.0 {
                    res[0]
                } else {
                    let inv = fconst(b, sty, 1.0 / p);
                    b.math(MathFn::Pow, &[res[0], inv])
                };
                let out = b.cast(out, wref_dtype(yb, b), NO_SAT);
                b.store(yb, yi, out);
            }
        }
    };
    match interior {
        None => {
            b.for_loop(lo, hi, one, &[], |b, o, _| {
                point(b, o);
                Vec::new()
            });
        }
        Some((ow_lo, ow_hi)) => {
            let ow_n = w.output[1] as i64;
            let owv = b.index(ow_n);
            let row_lo = b.div(lo, owv);
            let row_hi = b.div(hi, owv);
            b.for_loop(row_lo, row_hi, one, &[], |b, oh, _| {
                let row = b.mul(oh, owv);
                let edge = |b: &mut KernelBuilder, from: i64, to: i64| {
                    let (f, t) = (b.index(from), b.index(to));
                    b.for_loop(f, t, one, &[], |b, ow, _| {
                        let o = b.add(row, ow);
                        point(b, o);
                        Vec::new()
                    });
                };
                edge(b, 0, ow_lo);
                let (f, t) = (b.index(ow_lo), b.index(ow_hi));
                let zero = b.index(0);
                let rh = window_ranges(b, wref, &[oh], &extent[..1], &[0]);
                let (start_h, lo_h, hi_h) = rh[0];
                if by_rows {
                    let rows = (start_h, lo_h, hi_h);
                    max_pool_rows(b, (xb, yb, acc), wref, (x_base, y_base, row), rows, (f, t));
                    edge(b, ow_hi, ow_n);
                    return Vec::new();
                }
                b.for_loop(f, t, one, &[], |b, ow, _| {
                    let sw = b.index(wref.strides[1] as i64);
                    let t0 = b.mul(ow, sw);
                    let start_w = add_const(b, t0, -wref.pad_begin[1]);
                    let row_base = b.add(x_base, start_w);
                    let tap = |b: &mut KernelBuilder, kh: Val, kw: u64| {
                        let ih = b.add(start_h, kh);
                        let xi = offset(b, row_base, ih, extent[1]);
                        let xi = add_const(b, xi, kw as i64);
                        load_acc(b, xb, xi, 1, acc)
                    };
                    let sty = Ty::scalar(acc);
                    let res = if kind == 0 {
                        // The first tap in range, or the lowest value when none is; then every
                        // tap in order, replacing only a smaller value (so the first tap's second
                        // visit changes nothing): the generic path's result, NaNs included.
                        let any = b.cmp(CmpOp::Lt, lo_h, hi_h);
                        let safe = b.select(any, lo_h, zero);
                        let first = tap(b, safe, 0);
                        let low = b.constant(sty, lowest(acc));
                        let init = b.select(any, first, low);
                        b.for_loop(lo_h, hi_h, one, &[init], |b, kh, cur| {
                            let mut m = cur[0];
                            for kw in 0..wref.kernel[1] {
                                let v = tap(b, kh, kw);
                                let better = b.cmp(CmpOp::Gt, v, m);
                                m = b.select(better, v, m);
                            }
                            vec![m]
                        })[0]
                    } else {
                        let z = fconst(b, sty, 0.0);
                        let sum = b.for_loop(lo_h, hi_h, one, &[z], |b, kh, cur| {
                            let mut acc_v = cur[0];
                            for kw in 0..wref.kernel[1] {
                                let v = tap(b, kh, kw);
                                acc_v = b.add(acc_v, v);
                            }
                            vec![acc_v]
                        })[0];
                        // Inside the input along W, the window counts its KW columns either way;
                        // along H, the taps inside the input or inside the padded input.
                        let (l, h) = if count_include_pad {
                            let pr =
                                window_ranges(b, wref, &[oh], &padded[..1], &wref.pad_begin[..1]);
                            (pr[0].1, pr[0].2)
                        } else {
                            (lo_h, hi_h)
                        };
                        let d = b.sub(h, l);
                        let d = b.max(d, zero);
                        let kw = b.index(wref.kernel[1] as i64);
                        let cnt = b.mul(d, kw);
                        let cf = b.cast(cnt, acc, NO_SAT);
                        b.div(sum, cf)
                    };
                    let o = b.add(row, ow);
                    let yi = b.add(y_base, o);
                    let out = b.cast(res, wref_dtype(yb, b), NO_SAT);
                    b.store(yb, yi, out);
                    Vec::new()
                });
                edge(b, ow_hi, ow_n);
                Vec::new()
            });
        }
    }
    cx.launch(kb.finish(), args);
    Ok(Execution::Kernel)
}

/// The interior columns `from..to` of one output row of a 2-D max pooling (every W tap in
/// bounds), one window row at a time: the first row in range writes each column's maximum of
/// its taps into Y, each later row folds its taps into Y's value, and with no row in range Y
/// gets the lowest value. The taps are visited in the order of the per-column walk (row by
/// row, W taps in order, each replacing only a smaller value), so the results are the same,
/// NaNs included; only the loops are exchanged, so that the innermost runs over the columns.
/// `row` is the output row's first flat index; `start_h, lo_h, hi_h` its H taps in range.
fn max_pool_rows(
    b: &mut KernelBuilder,
    (xb, yb, acc): (Buf, Buf, DType),
    w: &Window,
    (x_base, y_base, row): (Val, Val, Val),
    (start_h, lo_h, hi_h): (Val, Val, Val),
    (from, to): (Val, Val),
) {
    let one = b.index(1);
    let ydt = wref_dtype(yb, b);
    let iw = w.input[1] as i64;
    // Y's element for column `ow`, and the input row `kh`'s first tap of that column.
    let at = |b: &mut KernelBuilder, kh: Val, ow: Val| {
        let sw = b.index(w.strides[1] as i64);
        let t0 = b.mul(ow, sw);
        let start_w = add_const(b, t0, -w.pad_begin[1]);
        let row_base = b.add(x_base, start_w);
        let ih = b.add(start_h, kh);
        let o = b.add(row, ow);
        (offset(b, row_base, ih, iw), b.add(y_base, o))
    };
    let fold = |b: &mut KernelBuilder, xi: Val, first: u64, mut m: Val| {
        for kw in first..w.kernel[1] {
            let xk = add_const(b, xi, kw as i64);
            let v = load_acc(b, xb, xk, 1, acc);
            let better = b.cmp(CmpOp::Gt, v, m);
            m = b.select(better, v, m);
        }
        m
    };
    // One window row `kh` over the columns: the first row starts from its first tap, a later
    // one from Y's value.
    let row_pass = |b: &mut KernelBuilder, kh: Val, first_row: bool| {
        b.for_loop(from, to, one, &[], |b, ow, _| {
            let (xi, yi) = at(b, kh, ow);
            let (start, skip) = if first_row {
                (load_acc(b, xb, xi, 1, acc), 1)
            } else {
                (load_acc(b, yb, yi, 1, acc), 0)
            };
            let m = fold(b, xi, skip, start);
            let out = b.cast(m, ydt, NO_SAT);
            b.store(yb, yi, out);
            Vec::new()
        });
    };
    let any = b.cmp(CmpOp::Lt, lo_h, hi_h);
    b.if_else(
        any,
        &[],
        |b| {
            row_pass(b, lo_h, true);
            let next = b.add(lo_h, one);
            b.for_loop(next, hi_h, one, &[], |b, kh, _| {
                row_pass(b, kh, false);
                Vec::new()
            });
            Vec::new()
        },
        |b| {
            let low = b.constant(Ty::scalar(acc), lowest(acc));
            let out = b.cast(low, ydt, NO_SAT);
            b.for_loop(from, to, one, &[], |b, ow, _| {
                let o = b.add(row, ow);
                let yi = b.add(y_base, o);
                b.store(yb, yi, out);
                Vec::new()
            });
            Vec::new()
        },
    );
}

/// For 2-D max or average pooling without dilation: the output columns `lo..hi` whose
/// windows lie wholly inside the input along W (computed at compile time), when there are any.
/// Those columns need no per-point tap ranges along W.
fn pool_interior(w: &Window, kind: u8) -> Option<(i64, i64)> {
    if w.input.len() != 2 || kind > 1 || w.dilations.iter().any(|&d| d != 1) || w.kernel[1] > 16 {
        return None;
    }
    let (iw, kw, sw, pb) = (
        w.input[1] as i64,
        w.kernel[1] as i64,
        w.strides[1] as i64,
        w.pad_begin[1],
    );
    let ow = w.output[1] as i64;
    // start(ow) = ow·sw − pb ≥ 0 and start(ow) + kw ≤ iw.
    let lo = (pb.max(0) + sw - 1) / sw;
    let last = iw + pb - kw;
    if last < 0 {
        return None;
    }
    let hi = (last / sw + 1).min(ow);
    (lo < hi).then_some((lo, hi))
}

// ==== BatchNormalization ====

fn batch_norm(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    if node.attr_int("training_mode", 0) != 0 || node.outputs.len() > 1 {
        return Err(cx.unsupported("BatchNormalization in training mode"));
    }
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    let xd = cx.dims(x)?;
    if xd.len() < 2 {
        return Err(cx.invalid("BatchNormalization needs X of rank >= 2"));
    }
    let c = xd[1];
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("BatchNormalization on {dt}")));
    }
    let params: Vec<ValueId> = (1..5)
        .map(|i| operand(cx, node, i))
        .collect::<Result<_>>()?;
    for &p in &params {
        if cx.numel(p)? != c {
            return Err(cx.invalid("scale, B, mean and var must have C elements"));
        }
    }
    let total: u64 = xd.iter().product();
    if total == 0 {
        return Ok(Execution::Kernel);
    }
    let inner: u64 = xd[2..].iter().product();
    let eps = node.attr_float("epsilon", 1e-5) as f64;
    let acc = acc_type(dt);
    let mut args = vec![cx.buffer(x)?];
    for &p in &params {
        args.push(cx.buffer(p)?);
    }
    args.push(cx.buffer(y)?);
    let mut kb = KernelBuilder::new(cx.kernel_name("batch_norm"));
    let b = &mut kb;
    let xb = b.param("x", dt, total, Access::Read);
    let names = ["scale", "bias", "mean", "var"];
    let mut pb = Vec::new();
    for (i, &p) in params.iter().enumerate() {
        pb.push(b.param(names[i], cx.dtype(p)?, c, Access::Read));
    }
    let yb = b.param("y", cx.dtype(y)?, total, Access::Write);
    let rows = xd[0] * c;
    let (_, chunk) = chunking(rows, (16384 / inner.max(1)).max(1), dt);
    for_each_item(b, rows, chunk, |b, r| {
        let cv = b.index(c as i64);
        let ch = b.binary(BinOp::Rem, r, cv);
        let sc = load_acc(b, pb[0], ch, 1, acc);
        let bi = load_acc(b, pb[1], ch, 1, acc);
        let mean = load_acc(b, pb[2], ch, 1, acc);
        let var = load_acc(b, pb[3], ch, 1, acc);
        let e = fconst(b, Ty::scalar(acc), eps);
        let ve = b.add(var, e);
        let sd = b.unary(UnOp::Sqrt, ve);
        let iv = b.index(inner as i64);
        let base = b.mul(r, iv);
        b.range(0, inner as i64, |b, j| {
            let at = b.add(base, j);
            let xv = load_acc(b, xb, at, 1, acc);
            let d = b.sub(xv, mean);
            let q = b.div(d, sd);
            let s = b.mul(q, sc);
            let o = b.add(s, bi);
            let o = b.cast(o, wref_dtype(yb, b), NO_SAT);
            b.store(yb, at, o);
        });
    });
    cx.launch(kb.finish(), args);
    Ok(Execution::Kernel)
}

// ==== The normalisation row kernel ====

/// What a normalisation computes per row.
#[derive(Clone, Copy, Debug, PartialEq)]
enum NormKind {
    /// `(x - mean) / sqrt(var + eps) * scale + bias` (Layer/Instance/Group).
    Standard,
    /// `x / sqrt(mean(x²) + eps) * scale` (RMS).
    Rms,
    /// `x / ‖x‖_p` (LpNormalization, p = 1 or 2).
    Lp(u8),
    /// `(x - mean) / (sqrt(E[x²] - mean²) + eps)` (MeanVarianceNormalization).
    Mvn,
}

/// Where the scale (or bias) element for (row r, element j) lives:
/// `((r % r_mod) * r_mul) + ((j / j_div) % j_mod) * j_mul`, either term optional.
#[derive(Clone, Copy, Debug, Default)]
struct ParamMap {
    row: Option<(u64, u64)>,
    elem: Option<(u64, u64, u64)>,
}

/// The rows to normalise: row `r` starts at `linear(unravel(r, rows), row_st)` and element
/// `j` sits `linear(unravel(j, elems), elem_st)` further (contiguous rows skip the unravel).
#[derive(Clone, Debug)]
struct RowLayout {
    rows: Vec<u64>,
    row_st: Vec<u64>,
    elems: Vec<u64>,
    elem_st: Vec<u64>,
}

impl RowLayout {
    /// Rows of `len` contiguous elements, one after another.
    fn contiguous(rows: u64, len: u64) -> RowLayout {
        RowLayout {
            rows: vec![rows],
            row_st: vec![len],
            elems: vec![len],
            elem_st: vec![1],
        }
    }

    fn row_count(&self) -> u64 {
        self.rows.iter().product()
    }

    fn len(&self) -> u64 {
        self.elems.iter().product()
    }

    fn elem_offset(&self, b: &mut KernelBuilder, j: Val) -> Val {
        if self.elem_st == strides(&self.elems) {
            return j;
        }
        let c = unravel(b, j, &self.elems);
        linear_index(b, &c, &self.elem_st)
    }
}

struct NormSpec {
    name: String,
    kind: NormKind,
    layout: RowLayout,
    dtype: DType,
    total: u64,
    eps: f64,
    scale: Option<(DType, u64, ParamMap)>,
    bias: Option<(DType, u64, ParamMap)>,
    /// LayerNormalization's Mean and InvStdDev results: dtype of each.
    stats: Option<(DType, DType)>,
    /// The accumulation type.
    acc: DType,
}

/// Parameters: x, [scale], [bias], y, [mean, inv_std_dev].
fn norm_kernel(s: &NormSpec) -> Kernel {
    let mut kb = KernelBuilder::new(s.name.clone());
    let b = &mut kb;
    let xb = b.param("x", s.dtype, s.total, Access::Read);
    let sb = s
        .scale
        .map(|(d, l, _)| b.param("scale", d, l.max(1), Access::Read));
    let bb = s
        .bias
        .map(|(d, l, _)| b.param("bias", d, l.max(1), Access::Read));
    let yb = b.param("y", s.dtype, s.total, Access::Write);
    let rows = s.layout.row_count();
    let stat_bufs = s.stats.map(|(md, id)| {
        (
            b.param("mean", md, rows, Access::Write),
            b.param("inv_std_dev", id, rows, Access::Write),
        )
    });
    let len = s.layout.len();
    let acc = s.acc;
    let sty = Ty::scalar(acc);
    let (_, chunk) = chunking(rows, (8192 / len.max(1)).max(1), s.dtype);
    let lay = &s.layout;
    for_each_item(b, rows, chunk, |b, r| {
        let rc = unravel(b, r, &lay.rows);
        let base = linear_index(b, &rc, &lay.row_st);
        let load_x = |b: &mut KernelBuilder, j: Val| {
            let off = lay.elem_offset(b, j);
            let at = b.add(base, off);
            (at, load_acc(b, xb, at, 1, acc))
        };
        let zero = fconst(b, sty, 0.0);
        let n = fconst(b, sty, len as f64);
        // Pass 1: the sum (or sum of squares / absolute values).
        let s1 = b.range_fold(0, len as i64, &[zero, zero], |b, j, a| {
            let (_, x) = load_x(b, j);
            let sq = b.mul(x, x);
            let t = match s.kind {
                NormKind::Standard => vec![b.add(a[0], x), a[1]],
                NormKind::Mvn => vec![b.add(a[0], x), b.add(a[1], sq)],
                NormKind::Rms | NormKind::Lp(2) => vec![b.add(a[0], sq), a[1]],
                NormKind::Lp(_) => {
                    let ab = b.unary(UnOp::Abs, x);
                    vec![b.add(a[0], ab), a[1]]
                }
            };
            t
        });
        let eps = fconst(b, sty, s.eps);
        let onev = fconst(b, sty, 1.0);
        // (shift, mul): y = (x - shift) * mul, then scale and bias.
        let (shift, mul, inv_for_stats) = match s.kind {
            NormKind::Standard => {
                let mean = b.div(s1[0], n);
                let s2 = b.range_fold(0, len as i64, &[zero], |b, j, a| {
                    let (_, x) = load_x(b, j);
                    let d = b.sub(x, mean);
                    let sq = b.mul(d, d);
                    vec![b.add(a[0], sq)]
                });
                let var = b.div(s2[0], n);
                let ve = b.add(var, eps);
                let sd = b.unary(UnOp::Sqrt, ve);
                let inv = b.div(onev, sd);
                (mean, inv, Some((mean, inv)))
            }
            NormKind::Mvn => {
                let mean = b.div(s1[0], n);
                let ex2 = b.div(s1[1], n);
                let m2 = b.mul(mean, mean);
                let var = b.sub(ex2, m2);
                let sd = b.unary(UnOp::Sqrt, var);
                let de = b.add(sd, eps);
                let inv = b.div(onev, de);
                (mean, inv, None)
            }
            NormKind::Rms => {
                let ms = b.div(s1[0], n);
                let ve = b.add(ms, eps);
                let sd = b.unary(UnOp::Sqrt, ve);
                let inv = b.div(onev, sd);
                (zero, inv, None)
            }
            NormKind::Lp(p) => {
                let norm = if p == 2 {
                    b.unary(UnOp::Sqrt, s1[0])
                } else {
                    s1[0]
                };
                // A zero vector normalises to zeros (as ONNX's reference does), not to NaN.
                let is_zero = b.cmp(CmpOp::Eq, norm, zero);
                let safe = b.select(is_zero, onev, norm);
                let quotient = b.div(onev, safe);
                let inv = b.select(is_zero, zero, quotient);
                (zero, inv, None)
            }
        };
        if let (Some((mb, ib)), Some((mean, inv))) = (stat_bufs, inv_for_stats) {
            let md = b.buf_decl(mb).dtype;
            let id = b.buf_decl(ib).dtype;
            let mo = b.cast(mean, md, NO_SAT);
            b.store(mb, r, mo);
            let io = b.cast(inv, id, NO_SAT);
            b.store(ib, r, io);
        }
        let param = |b: &mut KernelBuilder, buf: Buf, map: ParamMap, j: Val| {
            let mut idx = b.index(0);
            if let Some((m, k)) = map.row {
                let mv = b.index(m as i64);
                let q = b.binary(BinOp::Rem, r, mv);
                idx = offset(b, idx, q, k as i64);
            }
            if let Some((d, m, k)) = map.elem {
                let dv = b.index(d as i64);
                let q = b.div(j, dv);
                let mv = b.index(m as i64);
                let q = b.binary(BinOp::Rem, q, mv);
                idx = offset(b, idx, q, k as i64);
            }
            load_acc(b, buf, idx, 1, acc)
        };
        b.range(0, len as i64, |b, j| {
            let (at, x) = load_x(b, j);
            let mut v = if matches!(s.kind, NormKind::Lp(_)) {
                // x / norm, as the reference divides.
                let norm = b.div(onev, mul);
                b.div(x, norm)
            } else {
                let d = b.sub(x, shift);
                b.mul(d, mul)
            };
            if let (Some(buf), Some((_, _, map))) = (sb, s.scale) {
                let sc = param(b, buf, map, j);
                v = b.mul(v, sc);
            }
            if let (Some(buf), Some((_, _, map))) = (bb, s.bias) {
                let bi = param(b, buf, map, j);
                v = b.add(v, bi);
            }
            let o = b.cast(v, s.dtype, NO_SAT);
            b.store(yb, at, o);
        });
    });
    kb.finish()
}

/// The computation type: f64 for f64 data, else f32.
fn norm_acc(dt: DType) -> DType {
    if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Launches `spec` on x, scale, bias, y and the optional stats results.
fn launch_norm(
    cx: &mut LowerCx,
    spec: NormSpec,
    x: ValueId,
    scale: Option<ValueId>,
    bias: Option<ValueId>,
    y: ValueId,
    stats: &[ValueId],
) -> Result<Execution> {
    if spec.total == 0 {
        return Ok(Execution::Kernel);
    }
    let mut args = vec![cx.buffer(x)?];
    for v in [scale, bias].into_iter().flatten() {
        args.push(cx.buffer(v)?);
    }
    args.push(cx.buffer(y)?);
    if spec.stats.is_some() {
        for &v in stats {
            args.push(cx.buffer(v)?);
        }
    }
    let k = norm_kernel(&spec);
    cx.launch(k, args);
    Ok(Execution::Kernel)
}

/// A parameter (scale or bias) broadcast over the trailing dims `norm`: its index is the
/// element index modulo its size, which is right when its dims are a suffix of `norm`'s
/// (leading 1s allowed).
fn suffix_param(cx: &LowerCx, v: ValueId, norm: &[u64]) -> Result<(DType, u64, ParamMap)> {
    let d = cx.dims(v)?;
    let trimmed: Vec<u64> = d.iter().copied().skip_while(|&x| x == 1).collect();
    let n = trimmed.len();
    if n > norm.len() || trimmed[..] != norm[norm.len() - n..] {
        return Err(cx.unsupported(format!(
            "parameter of shape {d:?} over normalised dims {norm:?}"
        )));
    }
    let len: u64 = trimmed.iter().product();
    let map = if len <= 1 {
        ParamMap::default()
    } else {
        ParamMap {
            row: None,
            elem: Some((1, len, 1)),
        }
    };
    Ok((cx.dtype(v)?, cx.numel(v)?, map))
}

// ==== LayerNormalization / RMSNormalization ====

fn layer_norm(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = operand(cx, node, 0)?;
    let y = result(cx, node, 0)?;
    let xd = cx.dims(x)?;
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("{} on {dt}", node.op)));
    }
    let axis = norm_axis(cx, node.attr_int("axis", -1), xd.len())?;
    let rms = node.op == Op::RMSNormalization;
    let norm = &xd[axis..];
    let scale = operand(cx, node, 1)?;
    let bias = if rms { None } else { node.input(2) };
    let rows: u64 = xd[..axis].iter().product();
    let len: u64 = norm.iter().product();
    let stats = if rms || node.outputs.len() < 2 {
        None
    } else {
        if node.outputs.len() != 3 {
            return Err(cx.unsupported("LayerNormalization with Mean but not InvStdDev"));
        }
        for &o in &node.outputs[1..] {
            if cx.numel(o)? != rows {
                return Err(cx.invalid("Mean and InvStdDev must have one element per row"));
            }
        }
        Some((cx.dtype(node.outputs[1])?, cx.dtype(node.outputs[2])?))
    };
    // One scale (and bias) value per element of the row, on a target with a vector-unit
    // buffer or a loop-vectorizing CPU code generator: a tile program of rows
    // (`rows::softmax_as_tiles` says why host keeps the scalar kernel).
    let per_elem = |cx: &LowerCx, v: ValueId| cx.numel(v).map(|n| n == len);
    if !rms
        && stats.is_none()
        && (crate::rows::wants_row_tiles(cx) || cx.desc.loop_vectorizer())
        && per_elem(cx, scale)?
        && bias.map_or(Ok(true), |b| per_elem(cx, b))?
    {
        let pdt = (cx.dtype(scale)?, bias.map(|b| cx.dtype(b)).transpose()?);
        let eps = node.attr_float("epsilon", 1e-5) as f64;
        if let Some(mut k) = crate::rows::layer_norm_kernel(String::new(), dt, pdt, rows, len, eps)
        {
            k.name = cx.kernel_name("layer_norm");
            let mut args = vec![cx.buffer(x)?, cx.buffer(scale)?];
            if let Some(b) = bias {
                args.push(cx.buffer(b)?);
            }
            args.push(cx.buffer(y)?);
            cx.launch(k, args);
            return Ok(Execution::Kernel);
        }
    }
    let spec = NormSpec {
        name: cx.kernel_name(if rms { "rms_norm" } else { "layer_norm" }),
        kind: if rms {
            NormKind::Rms
        } else {
            NormKind::Standard
        },
        layout: RowLayout::contiguous(rows, len),
        dtype: dt,
        total: rows * len,
        eps: node.attr_float("epsilon", 1e-5) as f64,
        scale: Some(suffix_param(cx, scale, norm)?),
        bias: bias.map(|b| suffix_param(cx, b, norm)).transpose()?,
        stats,
        acc: norm_acc(dt),
    };
    let outs = node.outputs.get(1..).unwrap_or(&[]).to_vec();
    launch_norm(cx, spec, x, Some(scale), bias, y, &outs)
}

// ==== InstanceNormalization ====

fn instance_norm(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, s, bi, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        operand(cx, node, 2)?,
        result(cx, node, 0)?,
    );
    let xd = cx.dims(x)?;
    let dt = cx.dtype(x)?;
    if xd.len() < 3 || !dt.is_float() || cx.numel(s)? != xd[1] || cx.numel(bi)? != xd[1] {
        return Err(
            cx.invalid("InstanceNormalization needs float X [N, C, ...] with C scales and biases")
        );
    }
    let len: u64 = xd[2..].iter().product();
    let rows = xd[0] * xd[1];
    let map = ParamMap {
        row: Some((xd[1], 1)),
        elem: None,
    };
    let spec = NormSpec {
        name: cx.kernel_name("instance_norm"),
        kind: NormKind::Standard,
        layout: RowLayout::contiguous(rows, len),
        dtype: dt,
        total: rows * len,
        eps: node.attr_float("epsilon", 1e-5) as f64,
        scale: Some((cx.dtype(s)?, xd[1], map)),
        bias: Some((cx.dtype(bi)?, xd[1], map)),
        stats: None,
        acc: norm_acc(dt),
    };
    launch_norm(cx, spec, x, Some(s), Some(bi), y, &[])
}

// ==== GroupNormalization ====

fn group_norm(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, s, bi, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        operand(cx, node, 2)?,
        result(cx, node, 0)?,
    );
    let xd = cx.dims(x)?;
    let dt = cx.dtype(x)?;
    let g = node.attr_int("num_groups", 0);
    if xd.len() < 2 || !dt.is_float() || g <= 0 || xd[1] % g as u64 != 0 {
        return Err(cx.invalid(
            "GroupNormalization needs float X [N, C, ...] with C divisible by num_groups",
        ));
    }
    let g = g as u64;
    let c = xd[1];
    let spatial: u64 = xd[2..].iter().product();
    let cg = c / g;
    let rows = xd[0] * g;
    let len = cg * spatial;
    let pmap = |cx: &LowerCx, v: ValueId| -> Result<(DType, u64, ParamMap)> {
        let n = cx.numel(v)?;
        // Opset 21 scales are per channel; opset 18 ones per group.
        let map = if n == c {
            ParamMap {
                row: Some((g, cg)),
                elem: Some((spatial.max(1), cg.max(1), 1)),
            }
        } else if n == g {
            ParamMap {
                row: Some((g, 1)),
                elem: None,
            }
        } else {
            return Err(cx.invalid(format!(
                "scale/bias of {n} elements for {c} channels in {g} groups"
            )));
        };
        Ok((cx.dtype(v)?, n, map))
    };
    let spec = NormSpec {
        name: cx.kernel_name("group_norm"),
        kind: NormKind::Standard,
        layout: RowLayout::contiguous(rows, len),
        dtype: dt,
        total: rows * len,
        eps: node.attr_float("epsilon", 1e-5) as f64,
        scale: Some(pmap(cx, s)?),
        bias: Some(pmap(cx, bi)?),
        stats: None,
        acc: norm_acc(dt),
    };
    launch_norm(cx, spec, x, Some(s), Some(bi), y, &[])
}

// ==== LpNormalization ====

fn lp_norm(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = (operand(cx, node, 0)?, result(cx, node, 0)?);
    let xd = cx.dims(x)?;
    let dt = cx.dtype(x)?;
    let p = node.attr_int("p", 2);
    if !dt.is_float() || !(p == 1 || p == 2) {
        return Err(cx.unsupported(format!("LpNormalization with p={p} on {dt}")));
    }
    let axis = norm_axis(cx, node.attr_int("axis", -1), xd.len())?;
    let outer: u64 = xd[..axis].iter().product();
    let n = xd.get(axis).copied().unwrap_or(1);
    let inner: u64 = xd.get(axis + 1..).map(|d| d.iter().product()).unwrap_or(1);
    let layout = RowLayout {
        rows: vec![outer, inner],
        row_st: vec![n * inner, 1],
        elems: vec![n],
        elem_st: vec![inner],
    };
    let spec = NormSpec {
        name: cx.kernel_name("lp_norm"),
        kind: NormKind::Lp(p as u8),
        layout,
        dtype: dt,
        total: outer * n * inner,
        eps: 0.0,
        scale: None,
        bias: None,
        stats: None,
        acc: norm_acc(dt),
    };
    launch_norm(cx, spec, x, None, None, y, &[])
}

// ==== MeanVarianceNormalization ====

fn mvn(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (x, y) = (operand(cx, node, 0)?, result(cx, node, 0)?);
    let xd = cx.dims(x)?;
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("MeanVarianceNormalization on {dt}")));
    }
    let axes: Vec<usize> = match node.attr_ints("axes") {
        Some(a) => a
            .iter()
            .map(|&a| norm_axis(cx, a, xd.len()))
            .collect::<Result<_>>()?,
        None => vec![0, 2, 3],
    };
    if axes.iter().any(|&a| a >= xd.len()) {
        return Err(cx.invalid(format!("axes {axes:?} out of range for rank {}", xd.len())));
    }
    let st = strides(&xd);
    let (mut rows, mut row_st, mut elems, mut elem_st) = (vec![], vec![], vec![], vec![]);
    for i in 0..xd.len() {
        if axes.contains(&i) {
            elems.push(xd[i]);
            elem_st.push(st[i]);
        } else {
            rows.push(xd[i]);
            row_st.push(st[i]);
        }
    }
    let total: u64 = xd.iter().product();
    let spec = NormSpec {
        name: cx.kernel_name("mean_variance_norm"),
        kind: NormKind::Mvn,
        layout: RowLayout {
            rows,
            row_st,
            elems,
            elem_st,
        },
        dtype: dt,
        total,
        eps: 1e-9,
        scale: None,
        bias: None,
        stats: None,
        acc: norm_acc(dt),
    };
    launch_norm(cx, spec, x, None, None, y, &[])
}

/// A tiny plan executor over the kernel-IR interpreter, for this crate's tests: it builds
/// graphs by hand, lowers them, runs every step and returns the outputs' bytes.
#[cfg(test)]
pub(crate) mod testexec {
    use std::collections::BTreeMap;
    use tessera_ir::{Attr, DType, Graph, Node, Op, Tensor, TensorType, ValueId};
    use tessera_kir::{BufferKind, Program, Step};
    use tessera_target::TargetDesc;

    /// A target description for tests: 4-lane vectors (or none) and small matmul tiles, so
    /// edge tiles are exercised.
    pub fn desc(vector_bytes: u32) -> TargetDesc {
        TargetDesc {
            name: "test".into(),
            description: "test".into(),
            isa: "kernel-ir".into(),
            launch: Default::default(),
            vector_bytes,
            dtypes: vec![],
            mma: Default::default(),
            matmul_tile: [4, 16, 64],
            memory: vec![],
            peak_ops_per_cycle: Default::default(),
            clock_ghz: 0.0,
            tolerance: Default::default(),
            ..Default::default()
        }
    }

    /// Builds a graph node by node.
    #[derive(Clone, Default)]
    pub struct G {
        pub g: Graph,
        feeds: Vec<Vec<u8>>,
    }

    impl G {
        pub fn input(&mut self, dtype: DType, dims: &[u64], bytes: Vec<u8>) -> ValueId {
            let v = self.g.add_value(
                format!("in{}", self.g.inputs.len()),
                Some(TensorType::fixed(dtype, dims)),
            );
            self.g.inputs.push(v);
            self.feeds.push(bytes);
            v
        }

        pub fn konst(&mut self, t: Tensor) -> ValueId {
            let n = self.g.values.len();
            self.g.add_const(format!("c{n}"), t)
        }

        pub fn node(
            &mut self,
            op: Op,
            inputs: &[Option<ValueId>],
            outs: &[(DType, &[u64])],
            attrs: &[(&str, Attr)],
        ) -> Vec<ValueId> {
            let outputs: Vec<ValueId> = outs
                .iter()
                .map(|(d, s)| {
                    let n = self.g.values.len();
                    self.g
                        .add_value(format!("v{n}"), Some(TensorType::fixed(*d, s)))
                })
                .collect();
            let attrs: BTreeMap<String, Attr> = attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            self.g.nodes.push(Node {
                name: format!("n{}", self.g.nodes.len()),
                op,
                inputs: inputs.to_vec(),
                outputs: outputs.clone(),
                attrs,
            });
            outputs
        }

        /// Lowers with `desc` and runs; returns each graph output's bytes (outputs = `outs`).
        pub fn run(mut self, outs: &[ValueId], desc: &TargetDesc) -> Result<Vec<Vec<u8>>, String> {
            self.g.outputs = outs.to_vec();
            let p = crate::lower(&self.g, desc).map_err(|e| e.to_string())?;
            exec(&p, &self.feeds)
        }
    }

    /// Runs a program's steps on the interpreter.
    pub fn exec(p: &Program, inputs: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
        let plan = &p.plan;
        // Storage per root buffer (temps get their own storage; slots are not shared here).
        let mut store: Vec<Vec<u8>> = plan
            .buffers
            .iter()
            .map(|b| match &b.kind {
                BufferKind::Input(i) => inputs[*i as usize].clone(),
                BufferKind::Const(c) => plan.consts[*c as usize].clone(),
                BufferKind::Temp { .. } => vec![0xA5; b.byte_len() as usize],
                BufferKind::Alias(_) => Vec::new(),
            })
            .collect();
        for step in &plan.steps {
            match step {
                Step::Launch { kernel, args } => {
                    let k = &p.kernels[*kernel as usize];
                    let mut bufs: Vec<Vec<u8>> = args
                        .iter()
                        .map(|a| {
                            let r = plan.root(*a).0 as usize;
                            let n = plan.buffer(*a).byte_len() as usize;
                            store[r][..n].to_vec()
                        })
                        .collect();
                    let mut refs: Vec<&mut [u8]> =
                        bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
                    tessera_kir::run_kernel(k, &mut refs)
                        .map_err(|e| format!("{e}\n{}", tessera_kir::print_kernel(k)))?;
                    for (a, b) in args.iter().zip(bufs) {
                        let r = plan.root(*a).0 as usize;
                        store[r][..b.len()].copy_from_slice(&b);
                    }
                }
                Step::Copy { src, dst } => {
                    let s = store[plan.root(*src).0 as usize].clone();
                    let d = plan.root(*dst).0 as usize;
                    store[d][..s.len()].copy_from_slice(&s);
                }
                Step::If { .. } | Step::Loop(_) | Step::Host { .. } => {
                    return Err(
                        "control-flow and host steps are not run by this test helper".into(),
                    )
                }
            }
        }
        Ok(plan
            .outputs
            .iter()
            .map(|o| {
                let n = plan.buffer(o.buffer).byte_len() as usize;
                store[plan.root(o.buffer).0 as usize][..n].to_vec()
            })
            .collect())
    }

    /// Deterministic pseudo-random values in [-1, 1).
    pub fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
            })
            .collect()
    }

    pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    pub fn to_f32(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn i64_bytes(v: &[i64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    pub fn to_i64(b: &[u8]) -> Vec<i64> {
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Asserts `got ≈ want` elementwise (f32 tolerance).
    pub fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok = (g - w).abs() <= 1e-4 + 1e-4 * w.abs() || (g.is_nan() && w.is_nan());
            assert!(ok, "{what}: element {i}: got {g}, want {w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testexec::*;
    use tessera_ir::{Attr, DType, Op, Tensor};

    /// Reference numpy matmul on f64 (dims already promoted to rank >= 2).
    fn ref_matmul(a: &[f32], ad: &[u64], b: &[f32], bd: &[u64]) -> (Vec<f32>, Vec<u64>) {
        let (m, k, n) = (ad[ad.len() - 2], ad[ad.len() - 1], bd[bd.len() - 1]);
        let (ab, bb) = (&ad[..ad.len() - 2], &bd[..bd.len() - 2]);
        let r = ab.len().max(bb.len());
        let pad = |d: &[u64]| -> Vec<u64> {
            std::iter::repeat(1)
                .take(r - d.len())
                .chain(d.iter().copied())
                .collect()
        };
        let (pa, pb) = (pad(ab), pad(bb));
        let batch: Vec<u64> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
        let nb: u64 = batch.iter().product();
        let mut out = Vec::new();
        for bi in 0..nb {
            let (mut rem, mut ao, mut bo) = (bi, 0u64, 0u64);
            let (mut sa, mut sb) = (1u64, 1u64);
            for i in (0..r).rev() {
                let c = rem % batch[i];
                rem /= batch[i];
                ao += if pa[i] == 1 { 0 } else { c * sa };
                bo += if pb[i] == 1 { 0 } else { c * sb };
                sa *= pa[i];
                sb *= pb[i];
            }
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0f64;
                    for kk in 0..k {
                        s += a[(ao * m * k + i * k + kk) as usize] as f64
                            * b[(bo * k * n + kk * n + j) as usize] as f64;
                    }
                    out.push(s as f32);
                }
            }
        }
        let mut od = batch;
        od.extend([m, n]);
        (out, od)
    }

    fn check_matmul(ad: &[u64], bd: &[u64], vb: u32) {
        check_matmul_b(ad, bd, vb, false)
    }

    /// A desc that packs constant B operands into panels (`panels.rs`), with the small test
    /// tiles of [`desc`].
    fn panels_desc(vector_bytes: u32) -> tessera_target::TargetDesc {
        tessera_target::TargetDesc {
            cpu: Some(tessera_target::CpuDesc {
                constant_operand: tessera_target::OperandLayout::Panels,
                ..Default::default()
            }),
            ..desc(vector_bytes)
        }
    }

    /// `check_matmul` with B an input, or (`const_b`) a constant packed into panels.
    fn check_matmul_b(ad: &[u64], bd: &[u64], vb: u32, const_b: bool) {
        let na: u64 = ad.iter().product();
        let nb: u64 = bd.iter().product();
        let (a, b) = (rand(na as usize, 1), rand(nb as usize, 2));
        let a2: Vec<u64> = if ad.len() == 1 {
            vec![1, ad[0]]
        } else {
            ad.to_vec()
        };
        let b2: Vec<u64> = if bd.len() == 1 {
            vec![bd[0], 1]
        } else {
            bd.to_vec()
        };
        let (want, mut od) = ref_matmul(&a, &a2, &b, &b2);
        if bd.len() == 1 {
            od.pop();
        }
        if ad.len() == 1 {
            let l = od.len();
            od.remove(l - if bd.len() == 1 { 1 } else { 2 });
        }
        let mut g = G::default();
        let x = g.input(DType::F32, ad, f32_bytes(&a));
        let (y, d) = if const_b {
            let y = g.konst(Tensor::from_f32(bd.to_vec(), &b));
            (y, panels_desc(vb))
        } else {
            (g.input(DType::F32, bd, f32_bytes(&b)), desc(vb))
        };
        let o = g.node(Op::MatMul, &[Some(x), Some(y)], &[(DType::F32, &od)], &[]);
        let p = crate::lower(&g.g, &d).unwrap();
        let packed = p.plan.buffers.iter().any(|b| b.name.ends_with(".panels"));
        assert_eq!(packed, const_b && b2[b2.len() - 1] > 1 && b2.len() == 2);
        let got = g.run(&o, &d).unwrap();
        close(
            &to_f32(&got[0]),
            &want,
            &format!("matmul {ad:?} x {bd:?} (vector_bytes {vb}, constant B {const_b})"),
        );
    }

    #[test]
    fn matmul_shapes_batches_and_vectors() {
        for vb in [16, 0] {
            check_matmul(&[1, 1], &[1, 1], vb);
            check_matmul(&[5, 7], &[7, 9], vb);
            check_matmul(&[13, 17], &[17, 35], vb);
            check_matmul(&[9, 40], &[40, 3], vb);
            check_matmul(&[2, 1, 5, 7], &[3, 7, 9], vb);
            check_matmul(&[7], &[7, 9], vb);
            check_matmul(&[5, 7], &[7], vb);
            check_matmul(&[7], &[7], vb);
            check_matmul(&[3, 6, 8], &[8, 20], vb);
            // k > 256: the k-blocked kernel (partial sums kept in Y).
            check_matmul(&[2, 5, 300], &[300, 19], vb);
        }
    }

    /// Gemm of `m × k × n` against a reference, with B an input, or (`const_b`) a constant
    /// packed into panels.
    #[allow(clippy::too_many_arguments)]
    fn check_gemm(
        (m, k, n): (u64, u64, u64),
        ta: bool,
        tb: bool,
        cd: Option<&[u64]>,
        alpha: f32,
        beta: f32,
        vb: u32,
        const_b: bool,
    ) {
        let a = rand((m * k) as usize, 3);
        let b = rand((k * n) as usize, 4);
        let ad = if ta { [k, m] } else { [m, k] };
        let bd = if tb { [n, k] } else { [k, n] };
        let ael = |i: u64, kk: u64| {
            if ta {
                a[(kk * m + i) as usize]
            } else {
                a[(i * k + kk) as usize]
            }
        };
        let bel = |kk: u64, j: u64| {
            if tb {
                b[(j * k + kk) as usize]
            } else {
                b[(kk * n + j) as usize]
            }
        };
        let cn: u64 = cd.map(|d| d.iter().product()).unwrap_or(0);
        let c = rand(cn as usize, 5);
        let mut want = Vec::new();
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for kk in 0..k {
                    s += ael(i, kk) as f64 * bel(kk, j) as f64;
                }
                let mut v = alpha as f64 * s;
                if let Some(cd) = cd {
                    let st = crate::util::broadcast_strides(cd, &[m, n]);
                    v += beta as f64 * c[(i * st[0] + j * st[1]) as usize] as f64;
                }
                want.push(v as f32);
            }
        }
        let mut g = G::default();
        let x = g.input(DType::F32, &ad, f32_bytes(&a));
        let (y, d) = if const_b {
            let y = g.konst(Tensor::from_f32(bd.to_vec(), &b));
            (y, panels_desc(vb))
        } else {
            (g.input(DType::F32, &bd, f32_bytes(&b)), desc(vb))
        };
        let cv = cd.map(|d| g.konst(Tensor::from_f32(d.to_vec(), &c)));
        let o = g.node(
            Op::Gemm,
            &[Some(x), Some(y), cv],
            &[(DType::F32, &[m, n])],
            &[
                ("transA", Attr::Int(ta as i64)),
                ("transB", Attr::Int(tb as i64)),
                ("alpha", Attr::Float(alpha)),
                ("beta", Attr::Float(beta)),
            ],
        );
        let got = g.run(&o, &d).unwrap();
        close(
            &to_f32(&got[0]),
            &want,
            &format!("gemm {m}x{k}x{n} tA={ta} tB={tb} C={cd:?} constant B {const_b}"),
        );
    }

    #[test]
    fn constant_b_packed_into_panels_matches() {
        for vb in [16, 0] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                // Edges in every dim (the test tiles are 4 x 16 x 64), k > 64 with an
                // uneven last step, and one tile.
                for (m, k, n) in [(6, 11, 19), (5, 130, 33), (4, 64, 16), (1, 3, 2)] {
                    check_gemm((m, k, n), ta, tb, Some(&[n]), 0.5, 2.0, vb, true);
                }
            }
            check_matmul_b(&[13, 17], &[17, 35], vb, true);
            check_matmul_b(&[2, 3, 6, 70], &[70, 20], vb, true);
            // Not packed: a batched B, and a vector B.
            check_matmul_b(&[2, 5, 7], &[2, 7, 9], vb, true);
            check_matmul_b(&[5, 7], &[7], vb, true);
        }
    }

    #[test]
    fn gemm_transposes_bias_and_scales() {
        for vb in [16, 0] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                check_gemm((6, 11, 19), ta, tb, Some(&[19]), 0.5, 2.0, vb, false);
                check_gemm((8, 32, 16), ta, tb, Some(&[8, 1]), 1.0, 1.0, vb, false);
                check_gemm((3, 3, 2), ta, tb, None, 1.0, 1.0, vb, false);
                check_gemm((5, 9, 7), ta, tb, Some(&[5, 7]), 1.5, -1.0, vb, false);
                check_gemm((4, 5, 3), ta, tb, Some(&[]), 1.0, 0.5, vb, false);
                check_gemm((7, 530, 10), ta, tb, Some(&[10]), 0.5, 2.0, vb, false);
            }
        }
    }

    #[test]
    fn matmul_f16_accumulates_in_f32_and_ints_are_exact() {
        let a = rand(6 * 10, 7);
        let b = rand(10 * 5, 8);
        let h = |v: &[f32]| -> Vec<u8> {
            v.iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect()
        };
        let ar: Vec<f32> = a.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect();
        let br: Vec<f32> = b.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect();
        let (want, _) = ref_matmul(&ar, &[6, 10], &br, &[10, 5]);
        let mut g = G::default();
        let x = g.input(DType::F16, &[6, 10], h(&a));
        let y = g.input(DType::F16, &[10, 5], h(&b));
        let o = g.node(
            Op::MatMul,
            &[Some(x), Some(y)],
            &[(DType::F16, &[6, 5])],
            &[],
        );
        let got = g.run(&o, &desc(16)).unwrap();
        let got: Vec<f32> = got[0]
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 2e-3 * (1.0 + w.abs()),
                "f16 matmul: {g} vs {w}"
            );
        }

        let ai: Vec<i64> = (0..12).map(|i| i * 7 - 30).collect();
        let bi: Vec<i64> = (0..20).map(|i| 11 - i * 3).collect();
        let mut g = G::default();
        let x = g.input(DType::I64, &[3, 4], i64_bytes(&ai));
        let y = g.input(DType::I64, &[4, 5], i64_bytes(&bi));
        let o = g.node(
            Op::MatMul,
            &[Some(x), Some(y)],
            &[(DType::I64, &[3, 5])],
            &[],
        );
        let got = to_i64(&g.run(&o, &desc(16)).unwrap()[0]);
        let want: Vec<i64> = (0..15)
            .map(|e| (0..4).map(|k| ai[e / 5 * 4 + k] * bi[k * 5 + e % 5]).sum())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn matmul_integer_subtracts_zero_points() {
        let a: Vec<u8> = (0..12).map(|i| (i * 21 % 256) as u8).collect();
        let b: Vec<u8> = (0..8).map(|i| (i * 37 % 256) as u8).collect();
        let mut g = G::default();
        let x = g.input(DType::U8, &[3, 4], a.clone());
        let y = g.input(DType::U8, &[4, 2], b.clone());
        let za = g.konst(Tensor::new(DType::U8, vec![], vec![12]));
        let zb = g.konst(Tensor::new(DType::U8, vec![2], vec![3, 200]));
        let o = g.node(
            Op::MatMulInteger,
            &[Some(x), Some(y), Some(za), Some(zb)],
            &[(DType::I32, &[3, 2])],
            &[],
        );
        let got = g.run(&o, &desc(16)).unwrap();
        let got: Vec<i32> = got[0]
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let zbv = [3i32, 200];
        let want: Vec<i32> = (0..6)
            .map(|e| {
                (0..4)
                    .map(|k| {
                        (a[e / 2 * 4 + k] as i32 - 12) * (b[k * 2 + e % 2] as i32 - zbv[e % 2])
                    })
                    .sum()
            })
            .collect();
        assert_eq!(got, want);
    }

    /// Reference N-d convolution (NCHW…), with explicit begin pads.
    #[allow(clippy::too_many_arguments)]
    fn ref_conv(
        x: &[f32],
        xd: &[u64],
        w: &[f32],
        wd: &[u64],
        bias: Option<&[f32]>,
        od: &[u64],
        s: &[u64],
        d: &[u64],
        pb: &[i64],
        group: u64,
    ) -> Vec<f32> {
        let r = xd.len() - 2;
        let (c, mo) = (xd[1], wd[0]);
        let (cg, mg) = (c / group, mo / group);
        let it: u64 = xd[2..].iter().product();
        let kt: u64 = wd[2..].iter().product();
        let ot: u64 = od[2..].iter().product();
        let unr = |mut f: u64, dims: &[u64]| -> Vec<u64> {
            let mut v = vec![0; dims.len()];
            for i in (0..dims.len()).rev() {
                v[i] = f % dims[i];
                f /= dims[i];
            }
            v
        };
        let mut out = Vec::new();
        for n in 0..xd[0] {
            for m in 0..mo {
                let g = m / mg;
                for o in 0..ot {
                    let oc = unr(o, &od[2..]);
                    let mut acc = bias.map(|b| b[m as usize] as f64).unwrap_or(0.0);
                    for ci in 0..cg {
                        for kf in 0..kt {
                            let kc = unr(kf, &wd[2..]);
                            let mut inside = true;
                            let mut xi = 0i64;
                            for i in 0..r {
                                let p =
                                    oc[i] as i64 * s[i] as i64 - pb[i] + kc[i] as i64 * d[i] as i64;
                                if p < 0 || p >= xd[2 + i] as i64 {
                                    inside = false;
                                }
                                xi = xi * xd[2 + i] as i64 + p;
                            }
                            if inside {
                                let xv = x[((n * c + g * cg + ci) * it) as usize + xi as usize];
                                let wv = w[((m * cg + ci) * kt + kf) as usize];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out.push(acc as f32);
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn check_conv(
        xd: &[u64],
        wd: &[u64],
        od: &[u64],
        s: &[u64],
        d: &[u64],
        pads: &[i64],
        group: u64,
        bias: bool,
        auto_pad: Option<&str>,
    ) {
        let nx: u64 = xd.iter().product();
        let nw: u64 = wd.iter().product();
        let x = rand(nx as usize, 11);
        let w = rand(nw as usize, 12);
        let bv = rand(wd[0] as usize, 13);
        let r = xd.len() - 2;
        let pb: Vec<i64> = match auto_pad {
            Some(mode) => (0..r)
                .map(|i| {
                    let need = (od[2 + i] as i64 - 1) * s[i] as i64
                        + (wd[2 + i] as i64 - 1) * d[i] as i64
                        + 1;
                    let t = (need - xd[2 + i] as i64).max(0);
                    if mode == "SAME_UPPER" {
                        t / 2
                    } else {
                        t - t / 2
                    }
                })
                .collect(),
            None => pads[..r].to_vec(),
        };
        let want = ref_conv(
            &x,
            xd,
            &w,
            wd,
            bias.then_some(&bv[..]),
            od,
            s,
            d,
            &pb,
            group,
        );
        let mut g = G::default();
        let xv = g.input(DType::F32, xd, f32_bytes(&x));
        let wv = g.konst(Tensor::from_f32(wd.to_vec(), &w));
        let bb = bias.then(|| g.konst(Tensor::from_f32(vec![wd[0]], &bv)));
        let mut attrs = vec![
            ("strides", Attr::Ints(s.iter().map(|&v| v as i64).collect())),
            (
                "dilations",
                Attr::Ints(d.iter().map(|&v| v as i64).collect()),
            ),
            ("group", Attr::Int(group as i64)),
        ];
        match auto_pad {
            Some(m) => attrs.push(("auto_pad", Attr::String(m.into()))),
            None => attrs.push(("pads", Attr::Ints(pads.to_vec()))),
        }
        let o = g.node(
            Op::Conv,
            &[Some(xv), Some(wv), bb],
            &[(DType::F32, od)],
            &attrs,
        );
        let got = g.run(&o, &desc(16)).unwrap();
        close(&to_f32(&got[0]), &want, &format!("conv {xd:?} * {wd:?}"));
    }

    #[test]
    fn conv_1d_2d_3d_groups_pads_strides_dilations() {
        check_conv(
            &[1, 2, 5, 5],
            &[3, 2, 3, 3],
            &[1, 3, 5, 5],
            &[1, 1],
            &[1, 1],
            &[1, 1, 1, 1],
            1,
            true,
            None,
        );
        check_conv(
            &[2, 4, 7, 6],
            &[6, 2, 3, 2],
            &[2, 6, 3, 4],
            &[2, 2],
            &[1, 2],
            &[1, 0, 0, 1],
            2,
            false,
            None,
        );
        check_conv(
            &[1, 3, 8, 8],
            &[3, 1, 3, 3],
            &[1, 3, 4, 4],
            &[2, 2],
            &[1, 1],
            &[],
            3,
            true,
            Some("SAME_UPPER"),
        );
        check_conv(
            &[1, 3, 8, 8],
            &[3, 1, 2, 2],
            &[1, 3, 4, 4],
            &[2, 2],
            &[1, 1],
            &[],
            3,
            true,
            Some("SAME_LOWER"),
        );
        check_conv(
            &[1, 2, 9],
            &[4, 2, 3],
            &[1, 4, 4],
            &[2],
            &[2],
            &[1, 2],
            1,
            true,
            None,
        );
        check_conv(
            &[1, 2, 4, 5, 3],
            &[2, 2, 2, 3, 2],
            &[1, 2, 3, 3, 2],
            &[1, 1, 1],
            &[1, 1, 1],
            &[0, 0, 0, 0, 0, 0],
            1,
            true,
            None,
        );
    }

    /// A Conv's product whose output pixels are fewer than one register block's width (here
    /// 8: 2 vectors of 4) has its lone n tile padded to the block when that pads at most a
    /// quarter of it (7 → 8), not otherwise (5, or a second n tile); the padded columns read
    /// zeros and are never stored, so the results match the reference.
    #[test]
    fn conv_product_pads_a_lone_narrow_tile_to_the_register_block() {
        use crate::contraction::{conv_tiles, MmSpec};
        let blocked = tessera_target::TargetDesc {
            cpu: Some(tessera_target::CpuDesc {
                register_block: [2, 2],
                ..Default::default()
            }),
            ..desc(16)
        };
        let spec = |n: u64| MmSpec {
            name: "conv".into(),
            a: (DType::F32, 4 * 18),
            b: (DType::F32, 18 * n),
            y: (DType::F32, 4 * n),
            acc: DType::F32,
            batch: vec![1],
            a_bst: vec![0],
            b_bst: vec![18 * n],
            m: 4,
            n,
            k: 18,
            a_rs: 18,
            a_ks: 1,
            b_ks: n as i64,
            b_ns: 1,
            alpha: 1.0,
            beta: 1.0,
            c: None,
            a_zp: None,
            b_zp: None,
            fused: None,
            b_panels: None,
        };
        assert_eq!(conv_tiles(&blocked, &spec(7)).1, 8);
        assert_eq!(conv_tiles(&blocked, &spec(5)).1, 5);
        assert_eq!(conv_tiles(&desc(16), &spec(7)).1, 7);
        // Outputs 1×7 (padded), 1×5 (kept) and 3×7 (21 columns, two n tiles of 16: kept).
        for (xd, od) in [
            ([1u64, 2, 3, 9], [1u64, 4, 1, 7]),
            ([1, 2, 3, 7], [1, 4, 1, 5]),
            ([1, 2, 5, 9], [1, 4, 3, 7]),
        ] {
            let wd = [4u64, 2, 3, 3];
            let x = rand(xd.iter().product::<u64>() as usize, 21);
            let w = rand(72, 22);
            let bv = rand(4, 23);
            let want = ref_conv(
                &x,
                &xd,
                &w,
                &wd,
                Some(&bv),
                &od,
                &[1, 1],
                &[1, 1],
                &[0, 0],
                1,
            );
            let mut g = G::default();
            let xv = g.input(DType::F32, &xd, f32_bytes(&x));
            let wv = g.konst(Tensor::from_f32(wd.to_vec(), &w));
            let bb = g.konst(Tensor::from_f32(vec![4], &bv));
            let o = g.node(
                Op::Conv,
                &[Some(xv), Some(wv), Some(bb)],
                &[(DType::F32, &od)],
                &[("pads", Attr::Ints(vec![0; 4]))],
            );
            let got = g.run(&o, &blocked).unwrap();
            close(&to_f32(&got[0]), &want, &format!("conv {xd:?} -> {od:?}"));
        }
    }

    #[test]
    fn conv_product_reads_im2col_panels() {
        // A CPU desc that packs B in panels and vectorises loops itself: im2col writes its
        // columns in 16-wide panels (4 lanes, a 2 × 2 block, 64-byte lines), with zero rows
        // past C·KH·KW (27 in steps of tk) and zero columns past the outputs; two images, a
        // stride of 1 and of 2, padding on every side.
        let pan = tessera_target::TargetDesc {
            cpu: Some(tessera_target::CpuDesc {
                constant_operand: tessera_target::OperandLayout::Panels,
                register_block: [2, 2],
                vector_registers: 16,
                loop_vectorizer: true,
                ..Default::default()
            }),
            // k steps of 14 over C·KH·KW = 27: one zero row of padding.
            matmul_tile: [4, 16, 16],
            ..desc(16)
        };
        for (xd, od, stride) in [
            ([2u64, 3, 8, 10], [2u64, 5, 8, 10], 1i64),
            ([2, 3, 12, 14], [2, 5, 6, 7], 2),
        ] {
            let wd = [5u64, 3, 3, 3];
            let x = rand(xd.iter().product::<u64>() as usize, 31);
            let w = rand(wd.iter().product::<u64>() as usize, 32);
            let bv = rand(5, 33);
            let s = stride as u64;
            let want = ref_conv(
                &x,
                &xd,
                &w,
                &wd,
                Some(&bv),
                &od,
                &[s, s],
                &[1, 1],
                &[1, 1],
                1,
            );
            let mut g = G::default();
            let xv = g.input(DType::F32, &xd, f32_bytes(&x));
            let wv = g.konst(Tensor::from_f32(wd.to_vec(), &w));
            let bb = g.konst(Tensor::from_f32(vec![5], &bv));
            let o = g.node(
                Op::Conv,
                &[Some(xv), Some(wv), Some(bb)],
                &[(DType::F32, &od)],
                &[
                    ("pads", Attr::Ints(vec![1; 4])),
                    ("strides", Attr::Ints(vec![stride; 2])),
                ],
            );
            let mut graph = g.g.clone();
            graph.outputs = o.clone();
            let prog = crate::lower(&graph, &pan).unwrap();
            assert!(
                prog.plan
                    .buffers
                    .iter()
                    .any(|b| b.name == "conv_col_panels"),
                "im2col writes panels for {xd:?}"
            );
            let got = g.run(&o, &pan).unwrap();
            close(
                &to_f32(&got[0]),
                &want,
                &format!("conv {xd:?} stride {stride}"),
            );
        }
    }

    /// 2-D f32 convs that take the vectorised row kernel (vector_bytes 16) give the same bits
    /// as the scalar generic path (vector_bytes 4), and match the reference.
    #[test]
    fn conv_rows_f32_same_bits_as_generic() {
        // (X, W, pads [t, l, b, r], strides, dilations, group, bias)
        type Case = ([u64; 4], [u64; 4], [i64; 4], [u64; 2], [u64; 2], u64, bool);
        let cases: [Case; 10] = [
            (
                [1, 4, 9, 11],
                [4, 2, 3, 3],
                [1, 1, 1, 1],
                [2, 2],
                [1, 1],
                2,
                true,
            ),
            (
                [1, 3, 8, 12],
                [5, 3, 2, 3],
                [0, 2, 1, 0],
                [1, 2],
                [2, 2],
                1,
                false,
            ),
            (
                [1, 2, 5, 5],
                [3, 2, 3, 3],
                [1, 1, 1, 1],
                [1, 1],
                [1, 1],
                1,
                true,
            ),
            (
                [1, 3, 6, 23],
                [8, 3, 3, 3],
                [1, 1, 1, 1],
                [1, 1],
                [1, 1],
                1,
                true,
            ),
            (
                [2, 4, 5, 13],
                [6, 2, 2, 5],
                [0, 2, 1, 1],
                [2, 1],
                [2, 1],
                2,
                false,
            ),
            (
                [1, 2, 4, 20],
                [2, 2, 1, 9],
                [0, 3, 0, 4],
                [1, 1],
                [1, 1],
                1,
                true,
            ),
            (
                [1, 8, 3, 12],
                [4, 8, 1, 1],
                [0, 0, 0, 0],
                [1, 1],
                [1, 1],
                1,
                false,
            ),
            (
                [1, 4, 7, 10],
                [4, 1, 3, 3],
                [1, 1, 1, 1],
                [1, 1],
                [1, 1],
                4,
                true,
            ),
            (
                [1, 3, 9, 16],
                [6, 3, 3, 3],
                [1, 0, 0, 2],
                [2, 1],
                [1, 1],
                1,
                true,
            ),
            (
                [1, 2, 8, 8],
                [4, 2, 7, 7],
                [3, 3, 3, 3],
                [1, 1],
                [1, 1],
                1,
                true,
            ),
        ];
        for (xd, wd, pads, s, d, group, bias) in cases {
            let oh = (xd[2] as i64 + pads[0] + pads[2] - ((wd[2] as i64 - 1) * d[0] as i64 + 1))
                / s[0] as i64
                + 1;
            let ow = (xd[3] as i64 + pads[1] + pads[3] - ((wd[3] as i64 - 1) * d[1] as i64 + 1))
                / s[1] as i64
                + 1;
            let od = [xd[0], wd[0], oh as u64, ow as u64];
            let x = rand(xd.iter().product::<u64>() as usize, 31);
            let w = rand(wd.iter().product::<u64>() as usize, 32);
            let bv = rand(wd[0] as usize, 33);
            let run = |vb: u32| {
                let mut g = G::default();
                let xv = g.input(DType::F32, &xd, f32_bytes(&x));
                let wv = g.konst(Tensor::from_f32(wd.to_vec(), &w));
                let bb = bias.then(|| g.konst(Tensor::from_f32(vec![wd[0]], &bv)));
                let attrs = vec![
                    ("strides", Attr::Ints(s.iter().map(|&v| v as i64).collect())),
                    (
                        "dilations",
                        Attr::Ints(d.iter().map(|&v| v as i64).collect()),
                    ),
                    ("group", Attr::Int(group as i64)),
                    ("pads", Attr::Ints(pads.to_vec())),
                ];
                let o = g.node(
                    Op::Conv,
                    &[Some(xv), Some(wv), bb],
                    &[(DType::F32, &od)],
                    &attrs,
                );
                to_f32(&g.run(&o, &desc(vb)).unwrap()[0])
            };
            let (fast, slow) = (run(16), run(4));
            let what = format!("conv {xd:?} * {wd:?} pads {pads:?}");
            assert_eq!(
                fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                slow.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{what}"
            );
            let want = ref_conv(
                &x,
                &xd,
                &w,
                &wd,
                bias.then_some(&bv[..]),
                &od,
                &s,
                &d,
                &pads[..2],
                group,
            );
            close(&fast, &want, &what);
        }
    }

    #[test]
    fn pooling_rows_with_interior_columns_match_the_reference() {
        // 3x3 windows, stride 2, padding 1 on every side: the first and last output columns
        // take the generic path, the others the interior one; NaNs check the tap order.
        let xd = [1u64, 3, 7, 9];
        let (oh_n, ow_n) = (4i64, 5i64);
        let mut x = rand(3 * 63, 5);
        x[10] = f32::NAN;
        x[63 + 2 * 9 + 4] = f32::NAN;
        for op in [Op::MaxPool, Op::AveragePool] {
            for cip in [0, 1] {
                let mut g = G::default();
                let xv = g.input(DType::F32, &xd, f32_bytes(&x));
                let mut attrs = vec![
                    ("kernel_shape", Attr::Ints(vec![3, 3])),
                    ("strides", Attr::Ints(vec![2, 2])),
                    ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                ];
                if op == Op::AveragePool {
                    attrs.push(("count_include_pad", Attr::Int(cip)));
                }
                let o = g.node(op, &[Some(xv)], &[(DType::F32, &[1, 3, 4, 5])], &attrs);
                let y = to_f32(&g.clone().run(&o, &desc(16)).unwrap()[0]);
                let mut want = vec![];
                for c in 0..3i64 {
                    for oh in 0..oh_n {
                        for ow in 0..ow_n {
                            let (mut best, mut first) = (f32::NEG_INFINITY, true);
                            let (mut s, mut n) = (0f32, 0);
                            for kh in 0..3 {
                                for kw in 0..3 {
                                    let (h, w) = (oh * 2 - 1 + kh, ow * 2 - 1 + kw);
                                    if !(0..7).contains(&h) || !(0..9).contains(&w) {
                                        continue;
                                    }
                                    let v = x[(c * 63 + h * 9 + w) as usize];
                                    if first || v > best {
                                        best = v;
                                    }
                                    first = false;
                                    s += v;
                                    n += 1;
                                }
                            }
                            want.push(if op == Op::MaxPool {
                                best
                            } else {
                                s / if cip == 1 { 9 } else { n } as f32
                            });
                        }
                    }
                }
                if op == Op::MaxPool {
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&y), bits(&want), "maxpool");
                    // A CPU with a loop vectorizer walks the interior a window row at a time
                    // (`max_pool_rows`): the same bits, NaNs included.
                    let vectorizing = tessera_target::TargetDesc {
                        cpu: Some(tessera_target::CpuDesc {
                            loop_vectorizer: true,
                            ..Default::default()
                        }),
                        ..desc(16)
                    };
                    let y = to_f32(&g.run(&o, &vectorizing).unwrap()[0]);
                    assert_eq!(bits(&y), bits(&want), "maxpool by window rows");
                    break;
                }
                close(&y, &want, &format!("avgpool count_include_pad={cip}"));
            }
        }
    }

    #[test]
    fn maxpool_with_indices_and_avgpool_padding_rules() {
        let xd = [1u64, 2, 5, 6];
        let x = rand(60, 21);
        let mut g = G::default();
        let xv = g.input(DType::F32, &xd, f32_bytes(&x));
        let outs = g.node(
            Op::MaxPool,
            &[Some(xv)],
            &[(DType::F32, &[1, 2, 3, 3]), (DType::I64, &[1, 2, 3, 3])],
            &[
                ("kernel_shape", Attr::Ints(vec![3, 2])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![1, 0, 1, 0])),
                ("storage_order", Attr::Int(1)),
            ],
        );
        let got = g.run(&outs, &desc(16)).unwrap();
        let (y, idx) = (to_f32(&got[0]), to_i64(&got[1]));
        let (mut wy, mut wi) = (vec![], vec![]);
        for c in 0..2 {
            for oh in 0..3i64 {
                for ow in 0..3i64 {
                    let (mut best, mut bi) = (f32::NEG_INFINITY, -1i64);
                    for kh in 0..3 {
                        for kw in 0..2 {
                            let (h, w) = (oh * 2 - 1 + kh, ow * 2 + kw);
                            if h < 0 || h >= 5 || w >= 6 {
                                continue;
                            }
                            let v = x[(c * 30 + h * 6 + w) as usize];
                            if v > best {
                                best = v;
                                bi = c * 30 + h + w * 5;
                            }
                        }
                    }
                    wy.push(best);
                    wi.push(bi);
                }
            }
        }
        close(&y, &wy, "maxpool");
        assert_eq!(idx, wi);

        for cip in [0, 1] {
            let mut g = G::default();
            let xv = g.input(DType::F32, &xd, f32_bytes(&x));
            // ceil_mode: the last window overhangs the right edge.
            let o = g.node(
                Op::AveragePool,
                &[Some(xv)],
                &[(DType::F32, &[1, 2, 3, 4])],
                &[
                    ("kernel_shape", Attr::Ints(vec![2, 3])),
                    ("strides", Attr::Ints(vec![2, 2])),
                    ("pads", Attr::Ints(vec![0, 1, 0, 1])),
                    ("count_include_pad", Attr::Int(cip)),
                    ("ceil_mode", Attr::Int(1)),
                ],
            );
            let y = to_f32(&g.run(&o, &desc(16)).unwrap()[0]);
            let mut want = vec![];
            for c in 0..2 {
                for oh in 0..3i64 {
                    for ow in 0..4i64 {
                        let (mut s, mut n, mut np) = (0f32, 0, 0);
                        for kh in 0..2 {
                            for kw in 0..3 {
                                let (h, w) = (oh * 2 + kh, ow * 2 - 1 + kw);
                                if h < 5 && (-1..7).contains(&w) {
                                    np += 1;
                                }
                                if h < 5 && (0..6).contains(&w) {
                                    s += x[(c * 30 + h * 6 + w) as usize];
                                    n += 1;
                                }
                            }
                        }
                        want.push(s / if cip == 1 { np } else { n } as f32);
                    }
                }
            }
            close(&y, &want, &format!("avgpool count_include_pad={cip}"));
        }

        let mut g = G::default();
        let xv = g.input(DType::F32, &xd, f32_bytes(&x));
        let a = g.node(
            Op::GlobalAveragePool,
            &[Some(xv)],
            &[(DType::F32, &[1, 2, 1, 1])],
            &[],
        );
        let m = g.node(
            Op::GlobalMaxPool,
            &[Some(xv)],
            &[(DType::F32, &[1, 2, 1, 1])],
            &[],
        );
        let got = g.run(&[a[0], m[0]], &desc(16)).unwrap();
        let avg: Vec<f32> = (0..2)
            .map(|c| x[c * 30..c * 30 + 30].iter().sum::<f32>() / 30.0)
            .collect();
        let mx: Vec<f32> = (0..2)
            .map(|c| {
                x[c * 30..c * 30 + 30]
                    .iter()
                    .cloned()
                    .fold(f32::MIN, f32::max)
            })
            .collect();
        close(&to_f32(&got[0]), &avg, "global average");
        close(&to_f32(&got[1]), &mx, "global max");
    }

    #[test]
    fn normalisations_match_their_formulas() {
        let xd = [2u64, 3, 4, 5];
        let x = rand(120, 31);
        let s3 = rand(3, 32);
        let b3 = rand(3, 33);
        let s20 = rand(20, 34);
        let b5 = rand(5, 35);
        let mut g = G::default();
        let xv = g.input(DType::F32, &xd, f32_bytes(&x));
        let (sc3, bi3) = (
            g.konst(Tensor::from_f32(vec![3], &s3)),
            g.konst(Tensor::from_f32(vec![3], &b3)),
        );
        let mean = g.konst(Tensor::from_f32(vec![3], &[0.1, -0.2, 0.3]));
        let var = g.konst(Tensor::from_f32(vec![3], &[0.5, 1.5, 2.0]));
        let bn = g.node(
            Op::BatchNormalization,
            &[Some(xv), Some(sc3), Some(bi3), Some(mean), Some(var)],
            &[(DType::F32, &xd)],
            &[("epsilon", Attr::Float(1e-3))],
        );
        let s20v = g.konst(Tensor::from_f32(vec![4, 5], &s20));
        let b5v = g.konst(Tensor::from_f32(vec![5], &b5));
        let ln = g.node(
            Op::LayerNormalization,
            &[Some(xv), Some(s20v), Some(b5v)],
            &[
                (DType::F32, &xd),
                (DType::F32, &[2, 3, 1, 1]),
                (DType::F32, &[2, 3, 1, 1]),
            ],
            &[("axis", Attr::Int(-2))],
        );
        let inn = g.node(
            Op::InstanceNormalization,
            &[Some(xv), Some(sc3), Some(bi3)],
            &[(DType::F32, &xd)],
            &[],
        );
        let lp = g.node(
            Op::LpNormalization,
            &[Some(xv)],
            &[(DType::F32, &xd)],
            &[("axis", Attr::Int(1))],
        );
        let outs = vec![bn[0], ln[0], ln[1], ln[2], inn[0], lp[0]];
        let got = g.run(&outs, &desc(16)).unwrap();
        let m = [0.1f32, -0.2, 0.3];
        let v = [0.5f32, 1.5, 2.0];
        let want_bn: Vec<f32> = (0..120)
            .map(|i| {
                let c = i / 20 % 3;
                (x[i] - m[c]) / (v[c] + 1e-3).sqrt() * s3[c] + b3[c]
            })
            .collect();
        close(&to_f32(&got[0]), &want_bn, "batchnorm");
        let (mut want_ln, mut wm, mut wi, mut want_in) = (vec![], vec![], vec![], vec![]);
        for r in 0..6 {
            let row = &x[r * 20..r * 20 + 20];
            let mu = row.iter().map(|&v| v as f64).sum::<f64>() / 20.0;
            let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / 20.0;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for j in 0..20 {
                want_ln
                    .push(((row[j] as f64 - mu) * inv * s20[j] as f64 + b5[j % 5] as f64) as f32);
                want_in.push(
                    ((row[j] as f64 - mu) * inv * s3[r % 3] as f64 + b3[r % 3] as f64) as f32,
                );
            }
            wm.push(mu as f32);
            wi.push(inv as f32);
        }
        close(&to_f32(&got[1]), &want_ln, "layernorm");
        close(&to_f32(&got[2]), &wm, "layernorm mean");
        close(&to_f32(&got[3]), &wi, "layernorm inv_std_dev");
        close(&to_f32(&got[4]), &want_in, "instancenorm");
        let want_lp: Vec<f32> = (0..120)
            .map(|i| {
                let (n, rest) = (i / 60, i % 20);
                let norm = (0..3)
                    .map(|c| x[n * 60 + c * 20 + rest].powi(2))
                    .sum::<f32>()
                    .sqrt();
                x[i] / norm
            })
            .collect();
        close(&to_f32(&got[5]), &want_lp, "lpnorm");
    }

    #[test]
    fn unsupported_uses_are_errors_not_panics() {
        let mut g = G::default();
        let xv = g.input(DType::F32, &[2, 3], f32_bytes(&rand(6, 1)));
        let yv = g.input(DType::F32, &[4, 5], f32_bytes(&rand(20, 1)));
        let o = g.node(
            Op::MatMul,
            &[Some(xv), Some(yv)],
            &[(DType::F32, &[2, 5])],
            &[],
        );
        let e = g.run(&o, &desc(16)).unwrap_err();
        assert!(e.contains("inner dims differ"), "{e}");
    }
}
