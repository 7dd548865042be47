//! The tile program every matrix product lowers to (MatMul, Gemm, MatMulInteger and the
//! integer and QLinear forms built on them). Start at [`tile_matmul_kernel`]; the tile shape
//! comes from [`mm_tiles`], which reads only the target description.
//!
//! The kernel says *what*: each program instance owns one `tm × tn` tile of Y; it walks K in
//! steps of `tk`, loading masked tiles of A and B (padding with zeros, so no shape needs to be
//! a tile multiple), and accumulates with `tile.mma`; then it applies the epilogue (zero points
//! before the product; alpha, beta·C and the output cast after) on tiles and stores the tile,
//! masked. *How* a tile becomes registers, SIMD lanes or Cube instructions is each backend's
//! business: the host register-blocks `tile.mma` in `scalarize-tiles`, npu-sim places the tiles
//! in L0A/L0B/L0C.

use tessera_ir::DType;
use tessera_kir::{
    Access, Axis, Buf, CastMode, CmpOp, Kernel, KernelBuilder, Scalar, TileAt, Val, View,
};
use tessera_target::TargetDesc;

use crate::panels::Panels;
use crate::util::{linear_index, unravel};

const NO_SAT: CastMode = CastMode { saturate: false };

/// A zero point subtracted from an operand (MatMulInteger): one value, or one per row of A /
/// per column of B.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ZeroPoint {
    pub dtype: DType,
    pub len: u64,
    pub per_line: bool,
}

/// Gemm's C term: dtype, length and its broadcast strides over [M, N].
#[derive(Clone, Copy, Debug)]
pub(crate) struct CTerm {
    pub dtype: DType,
    pub len: u64,
    pub rs: i64,
    pub cs: i64,
}

/// Everything a matrix-product kernel needs: `Y[b, m, n] = alpha * Σ_k A(b,m,k) B(b,k,n) +
/// beta * C(m, n)`, where `A(b,m,k) = A[a_boff(b) + m*a_rs + k*a_ks]` and likewise for B.
#[derive(Clone, Debug)]
pub(crate) struct MmSpec {
    pub name: String,
    pub a: (DType, u64),
    pub b: (DType, u64),
    pub y: (DType, u64),
    pub acc: DType,
    /// Output batch dims, and A's and B's element strides per batch axis (0: broadcast).
    pub batch: Vec<u64>,
    pub a_bst: Vec<u64>,
    pub b_bst: Vec<u64>,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub a_rs: i64,
    pub a_ks: i64,
    pub b_ks: i64,
    pub b_ns: i64,
    pub alpha: f64,
    pub beta: f64,
    pub c: Option<CTerm>,
    pub a_zp: Option<ZeroPoint>,
    pub b_zp: Option<ZeroPoint>,
    /// FusedMatMul's epilogue (`fused.rs`); `None` for every other product.
    pub fused: Option<FusedEpilogue>,
    /// B packed into panels at compile time (`panels.rs`): B is then read as
    /// `[count][depth][tn]` (the strides above describe the graph's B, no longer read), with
    /// the tile shape the panels were cut for.
    pub b_panels: Option<Panels>,
}

/// What FusedMatMul (and FusedConv's product) adds after the product: the accumulator
/// converted to the result type and multiplied by a scale (one value, or one per column of Y),
/// the bias (the C term), a residual of Y's shape, then an activation.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FusedEpilogue {
    /// The scale's dtype and length (1 or N).
    pub scale: Option<(DType, u64)>,
    /// The residual's dtype: a tensor laid out as Y (row-major `m × n` per batch), added
    /// before the activation.
    pub residual: Option<DType>,
    pub activation: Option<crate::fused::Activation>,
}

/// The `(tm, tn, tk)` tile of a product of `a × b → acc` of size `m × n × k` on `desc`.
///
/// The base shape is the target's `matmul_tile`. Where its matrix unit runs the pair (its
/// `mma` table), each side is rounded up to a multiple of the unit's tile. Each side is then
/// clamped to the problem (rounded up to the unit's tile), so small products do not compute
/// padding; on a CPU the k and n sides are capped from its caches (below); and the tiles are
/// kept within the IR's tile size limit.
pub(crate) fn mm_tiles(
    desc: &TargetDesc,
    a: DType,
    b: DType,
    acc: DType,
    (m, n, k): (u64, u64, u64),
) -> (u16, u16, u16) {
    let unit = desc
        .mma
        .get(&format!("{a}x{b}->{acc}"))
        .copied()
        .unwrap_or([1, 1, 1]);
    let fit = |want: u32, dim: u64, u: u32| -> u64 {
        let u = u.max(1) as u64;
        let t = (want.max(1) as u64).div_ceil(u) * u;
        t.min(dim.max(1).div_ceil(u) * u).clamp(1, 256)
    };
    // K is split into steps of equal size (rounded up to the unit), so that the last step
    // does not multiply mostly padding: K = 576 in steps of 256 would compute 768.
    let even = |t: u64, dim: u64, u: u32| -> u64 {
        let u = u.max(1) as u64;
        let steps = dim.max(1).div_ceil(t);
        dim.max(1).div_ceil(steps).div_ceil(u) * u
    };
    let (mut tm, mut tn, mut tk) = (
        fit(desc.matmul_tile[0], m, unit[0]),
        fit(desc.matmul_tile[1], n, unit[1]),
        fit(desc.matmul_tile[2], k, unit[2]),
    );
    // Cache blocking on a CPU (a `[cpu]` register block and caches in the desc), for float
    // products: the k step is capped so that one B panel (tk rows of the register block's
    // width, held in f32) fits half the level-1 cache, where it stays while every block of A
    // rows passes it; and the n side so that the B tile fits half the last cache.
    if let (Some((_, vectors)), Some((l1, last))) = (desc.register_block(), desc.cache_bytes()) {
        if acc.is_float() && desc.mma.is_empty() {
            let row = vectors as u64 * desc.vector_bytes.max(4) as u64;
            let kmax = (l1 / 2 / row) / 16 * 16;
            tk = tk.min(kmax.max(16));
            let width = row / 4;
            let nmax = (last / 2 / (tk * 4)) / width * width;
            tn = tn.min(nmax.max(width));
        }
    }
    tk = even(tk, k, unit[2]);
    // Keep every tile (A: tm × tk, B: tk × tn, acc: tm × tn) within the IR's limit.
    let limit = tessera_kir::verify::MAX_TILE_ELEMS as u64;
    while tm * tk > limit || tk * tn > limit || tm * tn > limit {
        if tk >= tm.max(tn) && tk > unit[2] as u64 {
            tk = (tk / 2).max(1);
        } else if tm >= tn && tm > unit[0] as u64 {
            tm = (tm / 2).max(1);
        } else {
            tn = (tn / 2).max(1);
        }
    }
    (tm as u16, tn as u16, tk as u16)
}

/// The tile of a Conv's product (`W · col`, whose n side is the output pixels, often fewer
/// than one register block's width in the late layers of a CNN): [`mm_tiles`]'s tile, except
/// that on a CPU with a register block a lone n tile narrower than the block is widened to
/// one block when that pads at most a quarter of it. The masked loads fill the padding with
/// zeros, so the micro-kernel runs its full block instead of single vectors and columns
/// (N = 49 in a 64-wide block: ~25% faster measured on llvm-x86_64); wider or multi-tile n
/// sides are left as they are, because a masked B tile's copy then costs more than it gains.
pub(crate) fn conv_tiles(desc: &TargetDesc, s: &MmSpec) -> (u16, u16, u16) {
    let (tm, tn, tk) = mm_tiles(desc, s.a.0, s.b.0, s.acc, (s.m, s.n, s.k));
    let Some((_, vectors)) = desc.register_block() else {
        return (tm, tn, tk);
    };
    if !desc.mma.is_empty() || !s.acc.is_float() {
        return (tm, tn, tk);
    }
    let width = vectors as u64 * (desc.vector_bytes as u64 / 4).max(1);
    let n = tn as u64;
    let limit = tessera_kir::verify::MAX_TILE_ELEMS as u64;
    let fits = width * (tk as u64).max(tm as u64) <= limit && width <= u16::MAX as u64;
    if n == s.n && n < width && (width - n) * 4 <= width && fits {
        return (tm, width as u16, tk);
    }
    (tm, tn, tk)
}

/// Launches the tile program of `s` on `args` (in [`tile_matmul_kernel`]'s parameter order),
/// with the tile shape [`mm_tiles`] picks for the target.
pub(crate) fn launch_matmul(
    cx: &mut crate::LowerCx,
    s: &MmSpec,
    args: Vec<tessera_kir::BufferId>,
) -> crate::Result<()> {
    let tiles = match s.b_panels {
        Some(p) => p.tiles,
        None => mm_tiles(cx.desc, s.a.0, s.b.0, s.acc, (s.m, s.n, s.k)),
    };
    launch_matmul_tiled(cx, s, tiles, args)
}

/// [`launch_matmul`] with the tile shape given (a Conv's product takes [`conv_tiles`]).
pub(crate) fn launch_matmul_tiled(
    cx: &mut crate::LowerCx,
    s: &MmSpec,
    tiles: (u16, u16, u16),
    mut args: Vec<tessera_kir::BufferId>,
) -> crate::Result<()> {
    // A matrix unit with this integer pair multiplies the operands as they are; elsewhere they
    // are widened to the accumulator type first, so backends block the product as an f32 one.
    let pair = format!("{}x{}->{}", s.a.0, s.b.0, s.acc);
    let widen_ints = !cx.desc.mma.contains_key(&pair);
    let mut s = s.clone();
    // Without a matrix unit for the pair, narrow floats (f16, bf16, the float8s) are f32 inside
    // the product. A narrow A, which every column tile of the result loads again, a narrow C
    // term and a narrow residual are each widened once, by an elementwise kernel; a narrow
    // result is written in f32 and narrowed by another. The product kernel is then all f32,
    // and holds no conversion code or constants beside its register blocks. (Widening is
    // exact: every narrow float is an f32.) B's tiles are each loaded once; a constant B is
    // packed already widened (`panels.rs`).
    let narrow = |d: DType| d.is_float() && d.bits() < 32;
    let mut narrowed = None;
    if widen_ints && s.acc == DType::F32 {
        let widen = |cx: &mut crate::LowerCx, buffer, dtype, len| -> crate::Result<_> {
            let wide = cx.scratch("widened", DType::F32, vec![len]);
            convert(cx, "widen", (buffer, dtype), (wide, DType::F32), len)?;
            Ok(wide)
        };
        if narrow(s.a.0) && s.n > tiles.1 as u64 {
            args[0] = widen(cx, args[0], s.a.0, s.a.1)?;
            s.a.0 = DType::F32;
        }
        if let Some(c) = s.c.as_mut().filter(|c| narrow(c.dtype)) {
            args[2] = widen(cx, args[2], c.dtype, c.len)?;
            c.dtype = DType::F32;
        }
        let y_len = s.y.1;
        if let Some(f) = s.fused.as_mut() {
            if let Some(r) = f.residual.filter(|&r| narrow(r)) {
                let at = args.len() - 2;
                args[at] = widen(cx, args[at], r, y_len)?;
                f.residual = Some(DType::F32);
            }
        }
        if narrow(s.y.0) {
            let y = args.len() - 1;
            let y32 = cx.scratch("result_f32", DType::F32, vec![y_len]);
            narrowed = Some((y32, args[y], s.y.0));
            args[y] = y32;
            s.y.0 = DType::F32;
        }
    }
    cx.launch(tile_matmul_kernel(&s, tiles, widen_ints), args);
    if let Some((y32, y, dtype)) = narrowed {
        convert(cx, "narrow", (y32, DType::F32), (y, dtype), s.y.1)?;
    }
    Ok(())
}

/// Launches the elementwise kernel `name` that copies the `len` elements of `from` into `to`,
/// converting each between the two dtypes.
fn convert(
    cx: &mut crate::LowerCx,
    name: &str,
    (from, from_dtype): (tessera_kir::BufferId, DType),
    (to, to_dtype): (tessera_kir::BufferId, DType),
    len: u64,
) -> crate::Result<()> {
    let x = crate::util::EwOperand {
        buffer: from,
        dtype: from_dtype,
        len,
        strides: vec![1],
        block: None,
    };
    let same = |_: &mut KernelBuilder, v: &[Val]| v[0];
    crate::util::emit_elementwise(cx, name, &[x], to, to_dtype, &[len], &same)
}

/// The kernel's parameter order: A, B, [C], [A zero point], [B zero point], [scale],
/// [residual], Y.
pub(crate) fn tile_matmul_kernel(
    s: &MmSpec,
    (tm, tn, tk): (u16, u16, u16),
    widen_ints: bool,
) -> Kernel {
    let mut kb = KernelBuilder::new(s.name.clone());
    let b = &mut kb;
    let abuf = b.param("a", s.a.0, s.a.1.max(1), Access::Read);
    let bbuf = b.param("b", s.b.0, s.b.1.max(1), Access::Read);
    let cbuf =
        s.c.map(|c| b.param("c", c.dtype, c.len.max(1), Access::Read));
    let azb = s
        .a_zp
        .map(|z| b.param("a_zero_point", z.dtype, z.len.max(1), Access::Read));
    let bzb = s
        .b_zp
        .map(|z| b.param("b_zero_point", z.dtype, z.len.max(1), Access::Read));
    let scale = s.fused.and_then(|f| f.scale);
    let sbuf = scale.map(|(dt, len)| b.param("scale", dt, len.max(1), Access::Read));
    let rbuf = s
        .fused
        .and_then(|f| f.residual)
        .map(|dt| b.param("residual", dt, s.y.1.max(1), Access::Read));
    let ybuf = b.param("y", s.y.0, s.y.1, Access::Write);
    let batch_total: u64 = s.batch.iter().product();
    b.set_grid(&[
        batch_total,
        s.m.div_ceil(tm as u64),
        s.n.div_ceil(tn as u64),
    ]);

    let p0 = b.program_id(0);
    let coords = unravel(b, p0, &s.batch);
    let a_off = linear_index(b, &coords, &s.a_bst);
    let b_off = linear_index(b, &coords, &s.b_bst);
    let mn = b.index((s.m * s.n) as i64);
    let y_off = b.mul(p0, mn);
    let (p1, p2) = (b.program_id(1), b.program_id(2));
    let (tmv, tnv) = (b.index(tm as i64), b.index(tn as i64));
    let i0 = b.mul(p1, tmv);
    let j0 = b.mul(p2, tnv);
    let zero = b.index(0);

    let view = |buf: Buf, offset: Val, dims: [u64; 2], strides: [i64; 2]| View {
        buf,
        offset,
        dims: dims.to_vec(),
        strides: strides.to_vec(),
    };
    let av = view(abuf, a_off, [s.m, s.k], [s.a_rs, s.a_ks]);
    // B as the graph holds it, or (packed) as panels: the tile at (k0, j0) is panel
    // j0 / tn = p2, rows k0.., all of it in range.
    let (bv, b_origin) = match s.b_panels {
        Some(p) => {
            let tn = tn as u64;
            // Each batch's panels one after another (a packed constant has one set).
            let v = View {
                buf: bbuf,
                offset: b_off,
                dims: vec![p.count, p.depth, tn],
                strides: vec![(p.depth * tn) as i64, tn as i64, 1],
            };
            (v, Some(p2))
        }
        None => (view(bbuf, b_off, [s.k, s.n], [s.b_ks, s.b_ns]), None),
    };
    let afill = if s.a.0.is_float() {
        Scalar::Float(0.0)
    } else {
        Scalar::Int(0)
    };
    let bfill = if s.b.0.is_float() {
        Scalar::Float(0.0)
    } else {
        Scalar::Int(0)
    };

    // Zero points, as tiles of the accumulator type broadcast over the A and B tiles.
    let a_zp = s
        .a_zp
        .zip(azb)
        .map(|(z, buf)| zero_point_tile(b, z, buf, i0, (s.m, tm, tk), true, s.acc));
    let b_zp = s
        .b_zp
        .zip(bzb)
        .map(|(z, buf)| zero_point_tile(b, z, buf, j0, (s.n, tn, tk), false, s.acc));

    let acc0 = b.acc_tile(s.acc, tm, tn, 0.0);
    let (lo, hi, step) = (b.index(0), b.index(s.k as i64), b.index(tk as i64));
    let acc = b.for_loop(lo, hi, step, &[acc0], |b, k0, acc| {
        let mut ta = b.tile_load(
            TileAt {
                view: av.clone(),
                origin: vec![i0, k0],
            },
            tm,
            tk,
            afill,
        );
        let origin = match b_origin {
            Some(p) => vec![p, k0, zero],
            None => vec![k0, j0],
        };
        let mut tb = b.tile_load(
            TileAt {
                view: bv.clone(),
                origin,
            },
            tk,
            tn,
            bfill,
        );
        let int_operands = !s.a.0.is_float() || !s.b.0.is_float();
        if widen_ints
            && int_operands
            && (s.a.0 != s.acc || s.b.0 != s.acc)
            && a_zp.is_none()
            && b_zp.is_none()
        {
            // Integer operands in the accumulator type, so that backends can block the
            // product as they do f32 ones.
            ta = b.cast(ta, s.acc, NO_SAT);
            tb = b.cast(tb, s.acc, NO_SAT);
        } else if a_zp.is_some() || b_zp.is_some() {
            // (a - za)(b - zb) in the accumulator type; the padded k lanes of A are zeroed so
            // that the padding contributes nothing.
            ta = b.cast(ta, s.acc, NO_SAT);
            tb = b.cast(tb, s.acc, NO_SAT);
            if let Some(z) = a_zp {
                let t = b.sub(ta, z);
                ta = zero_beyond_k(b, t, Axis::Cols, k0, s.k);
            }
            if let Some(z) = b_zp {
                let t = b.sub(tb, z);
                tb = zero_beyond_k(b, t, Axis::Rows, k0, s.k);
            }
        }
        vec![b.tile_mma(ta, tb, acc[0])]
    })[0];

    // Epilogue: [the result type and the scale], alpha, beta·C, [the activation], the output
    // type.
    let mut out = acc;
    if let Some(f) = s.fused {
        if s.acc != s.y.0 {
            out = b.cast(out, s.y.0, NO_SAT);
        }
        if let (Some((_, len)), Some(sb)) = (f.scale, sbuf) {
            let st = scale_tile(b, sb, len, j0, (tm, tn), s.y.0);
            out = b.mul(out, st);
        }
    }
    let epi = b.ty(out).elem;
    if s.alpha != 1.0 {
        let a = b.const_tile(epi, tm, tn, s.alpha);
        out = b.mul(out, a);
    }
    if let (Some(c), Some(cb)) = (s.c, cbuf) {
        let cview = view(cb, zero, [s.m, s.n], [c.rs, c.cs]);
        let cfill = if c.dtype.is_float() {
            Scalar::Float(0.0)
        } else {
            Scalar::Int(0)
        };
        let mut ct = epilogue_operand(b, cview, (i0, j0), (tm, tn), cfill, epi);
        if s.beta != 1.0 {
            let bt = b.const_tile(epi, tm, tn, s.beta);
            ct = b.mul(ct, bt);
        }
        out = b.add(out, ct);
    }
    if let Some(rb) = rbuf {
        let rview = view(rb, y_off, [s.m, s.n], [s.n as i64, 1]);
        let rt = epilogue_operand(b, rview, (i0, j0), (tm, tn), Scalar::Float(0.0), epi);
        out = b.add(out, rt);
    }
    if let Some(act) = s.fused.and_then(|f| f.activation) {
        out = act.apply(b, out);
    }
    let out = b.cast(out, s.y.0, NO_SAT);
    let yview = view(ybuf, y_off, [s.m, s.n], [s.n as i64, 1]);
    b.tile_store(
        TileAt {
            view: yview,
            origin: vec![i0, j0],
        },
        out,
    );
    kb.finish()
}

/// The `tm × tn` tile of an epilogue operand laid out over the result (the C term, a
/// residual) at `origin`, in the epilogue's type `epi`; `fill` past the view's edges.
fn epilogue_operand(
    b: &mut KernelBuilder,
    view: View,
    (i0, j0): (Val, Val),
    (tm, tn): (u16, u16),
    fill: Scalar,
    epi: DType,
) -> Val {
    let t = b.tile_load(
        TileAt {
            view,
            origin: vec![i0, j0],
        },
        tm,
        tn,
        fill,
    );
    b.cast(t, epi, NO_SAT)
}

/// FusedMatMul's scale as a `tm × tn` tile of `dt`: one value, or the columns `j0..` of one
/// per column.
pub(crate) fn scale_tile(
    b: &mut KernelBuilder,
    buf: Buf,
    len: u64,
    j0: Val,
    (tm, tn): (u16, u16),
    dt: DType,
) -> Val {
    let zero = b.index(0);
    let (dims, strides, origin, cols) = if len > 1 {
        ([1, len], [0, 1], vec![zero, j0], tn)
    } else {
        ([1, 1], [0, 0], vec![zero, zero], 1)
    };
    let v = View {
        buf,
        offset: zero,
        dims: dims.to_vec(),
        strides: strides.to_vec(),
    };
    let t = b.tile_load(TileAt { view: v, origin }, 1, cols, Scalar::Float(0.0));
    let t = b.cast(t, dt, NO_SAT);
    b.tile_broadcast(t, tm, tn)
}

/// Tile `t` (of an operand whose k index runs along `axis` from `k0`) with the lanes at k >= `k`
/// set to zero: the padding a masked load read must add nothing once a zero point is
/// subtracted.
fn zero_beyond_k(b: &mut KernelBuilder, t: Val, axis: Axis, k0: Val, k: u64) -> Val {
    let ty = b.ty(t);
    let (rows, cols) = (ty.rows, ty.lanes);
    let idx = b.tile_index(axis, rows, cols);
    let k0t = b.splat_tile(k0, rows, cols);
    let kk = b.add(idx, k0t);
    let kv = b.index(k as i64);
    let kt = b.splat_tile(kv, rows, cols);
    let inside = b.cmp(CmpOp::Lt, kk, kt);
    let zt = b.const_tile(ty.elem, rows, cols, 0.0);
    b.select(inside, t, zt)
}

/// A zero point as a tile of `acc` broadcast over an A tile (`rows`: `tm × tk`, per row of A)
/// or a B tile (`tk × tn`, per column of B).
fn zero_point_tile(
    b: &mut KernelBuilder,
    z: ZeroPoint,
    buf: Buf,
    line0: Val,
    (lines, tl, tk): (u64, u16, u16),
    rows: bool,
    acc: DType,
) -> Val {
    let zero = b.index(0);
    let fill = if z.dtype.is_float() {
        Scalar::Float(0.0)
    } else {
        Scalar::Int(0)
    };
    let t = if z.per_line {
        // A column (for A's rows) or a row (for B's columns) of zero points.
        let (dims, origin, shape) = if rows {
            ([lines, 1], vec![line0, zero], (tl, 1))
        } else {
            ([1, lines], vec![zero, line0], (1, tl))
        };
        let strides = if rows { [1, 0] } else { [0, 1] };
        let v = View {
            buf,
            offset: zero,
            dims: dims.to_vec(),
            strides: strides.to_vec(),
        };
        b.tile_load(TileAt { view: v, origin }, shape.0, shape.1, fill)
    } else {
        let v = View {
            buf,
            offset: zero,
            dims: vec![1, 1],
            strides: vec![0, 0],
        };
        b.tile_load(
            TileAt {
                view: v,
                origin: vec![zero, zero],
            },
            1,
            1,
            fill,
        )
    };
    let t = b.cast(t, acc, NO_SAT);
    if rows {
        b.tile_broadcast(t, tl, tk)
    } else {
        b.tile_broadcast(t, tk, tl)
    }
}
