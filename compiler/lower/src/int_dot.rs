//! 8-bit integer matrix products on CPUs with an integer dot product (the desc's `int_dot`:
//! i16 pairs, `pmaddwd`; or u8 × i8 quads, `vpdpbusd`). Start at [`fused_matmul`], the hook
//! FusedMatMul's lowering (`fused.rs`) calls first.
//!
//! Without it such a product is widened to the f32 product and runs at the f32 rate. Here it
//! accumulates in i32 with `tile.dot`, whose right operand is packed in groups of k. The
//! weights are a constant, so they are packed once, at compile time, with their zero point
//! already subtracted: `b'[k][j] = b[k][j] − zb[j]` (in [-255, 255], an i16; for quads `zb`
//! must be 0 so that `b'` stays the i8 the instruction reads). The activations' zero point
//! `za` is handled by algebra: `Σ_k (a − za)·b' = Σ_k a·b' − za·Σ_k b'`, with the column sums
//! `Σ_k b'` a second constant. Everything is exact in i32 (no overflow for K < 2^15); the
//! epilogue (the result type, the scale, the bias, the activation) is FusedMatMul's.
//!
//! The path is taken for FusedMatMul ([`fused_matmul`]) and MatMulInteger ([`matmul_integer`],
//! whose i32 result is the corrected accumulator) when B is a 2-D constant `[K, N]` (or `[N, K]`
//! with FusedMatMul's `transB`, a QDQ Gemm's weights, packed from that layout; A may have
//! any leading dims: they fold into M), A and B are `u8`/`i8`, B's zero point is a constant
//! (one or one per column) and A's is one value; anything else keeps the general tile program
//! of `contraction.rs`.

use crate::contraction::{mm_tiles, scale_tile};
use crate::fused::Activation;
use crate::movement::{operand, result};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node};
use tessera_kir::{Access, CastMode, KernelBuilder, Scalar, TileAt, View};

const NO_SAT: CastMode = CastMode { saturate: false };

/// The weights of an 8-bit product packed for a `dot` of groups of `g`: a `(K/g) × (N·g)`
/// row-major array of `dtype` (`b'[p·g+q][j]` at row `p`, column `j·g+q`, zeros past K), as
/// little-endian bytes, and the column sums `Σ_k b'[k][j]`.
#[derive(Debug, PartialEq)]
pub struct PackedWeights {
    pub g: u32,
    pub dtype: DType,
    pub rows: u64,
    pub data: Vec<u8>,
    pub col_sums: Vec<i64>,
}

/// Packs `b` (`k × n` values, row-major: `b(i)` is element `i`) minus the zero points `zb`
/// (one, or one per column) in groups of `g` (2 or 4) as `dtype` (i16 for pairs, i8 for
/// quads). `None` when a value does not fit `dtype`.
pub fn pack_weights(
    b: impl Fn(usize) -> i64,
    zb: &[i64],
    (k, n): (u64, u64),
    g: u32,
    dtype: DType,
) -> Option<PackedWeights> {
    let (lo, hi) = match dtype {
        DType::I16 => (i16::MIN as i64, i16::MAX as i64),
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        _ => return None,
    };
    let g64 = g as u64;
    let rows = k.div_ceil(g64);
    let width = (dtype.bits() / 8) as usize;
    let mut data = vec![0u8; (rows * n * g64) as usize * width];
    let mut col_sums = vec![0i64; n as usize];
    for kk in 0..k {
        for j in 0..n {
            let z = if zb.len() == 1 { zb[0] } else { zb[j as usize] };
            let v = b((kk * n + j) as usize) - z;
            if v < lo || v > hi {
                return None;
            }
            let (p, q) = (kk / g64, kk % g64);
            let at = (p * n * g64 + j * g64 + q) as usize * width;
            data[at..at + width].copy_from_slice(&(v as i16).to_le_bytes()[..width]);
            col_sums[j as usize] += v;
        }
    }
    Some(PackedWeights {
        g,
        dtype,
        rows,
        data,
        col_sums,
    })
}

/// Little-endian bytes of `vals` as `dtype` (i8, i16 or i32).
fn bytes_of(vals: &[i64], dtype: DType) -> Vec<u8> {
    let mut out = Vec::with_capacity(vals.len() * (dtype.bits() as usize / 8));
    for &v in vals {
        match dtype {
            DType::I8 => out.push(v as i8 as u8),
            DType::I16 => out.extend_from_slice(&(v as i16).to_le_bytes()),
            _ => out.extend_from_slice(&(v as i32).to_le_bytes()),
        }
    }
    out
}

/// Lowers FusedMatMul `node` through `tile.dot` when the target and the operands allow it
/// (see the module doc); `Ok(false)` leaves it to the general path.
pub(crate) fn fused_matmul(
    cx: &mut LowerCx,
    node: &Node,
    activation: Option<Activation>,
) -> Result<bool> {
    let ops = Operands {
        a_zp: node.input(3),
        b_zp: node.input(4),
        bias: node.input(2),
        scale: node.input(5),
        activation,
        trans_b: node.attr_int("transB", 0) != 0,
    };
    try_lower(cx, node, ops)
}

/// Lowers MatMulInteger `node` (an i32 result: the accumulator, less the zero-point term)
/// through `tile.dot` when the target and the operands allow it; `Ok(false)` leaves it to the
/// general path.
pub(crate) fn matmul_integer(cx: &mut LowerCx, node: &Node) -> Result<bool> {
    let ops = Operands {
        a_zp: node.input(2),
        b_zp: node.input(3),
        bias: None,
        scale: None,
        activation: None,
        trans_b: false,
    };
    try_lower(cx, node, ops)
}

/// Where a product's operands beyond A (0) and B (1) are: FusedMatMul's or MatMulInteger's.
struct Operands {
    a_zp: Option<tessera_ir::ValueId>,
    b_zp: Option<tessera_ir::ValueId>,
    bias: Option<tessera_ir::ValueId>,
    scale: Option<tessera_ir::ValueId>,
    activation: Option<Activation>,
    /// B is held `[N, K]` (a Gemm's weights): it is packed from that layout.
    trans_b: bool,
}

fn try_lower(cx: &mut LowerCx, node: &Node, ops: Operands) -> Result<bool> {
    let Operands {
        a_zp,
        b_zp,
        bias: bias_in,
        scale: scale_in,
        activation,
        trans_b,
    } = ops;
    let int_dot = cx.desc.int_dot;
    let (a, b, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        result(cx, node, 0)?,
    );
    let (at, bt, yt) = (cx.dtype(a)?, cx.dtype(b)?, cx.dtype(y)?);
    let byte = |t: DType| matches!(t, DType::I8 | DType::U8);
    if int_dot == 0 || !byte(at) || !byte(bt) || !(yt.is_float() || yt == DType::I32) {
        return Ok(false);
    }
    let Some(bw) = cx.konst(b) else {
        return Ok(false);
    };
    let (ad, bd) = (cx.dims(a)?, cx.dims(b)?);
    let (Some(&k), [r, c]) = (ad.last(), bd.as_slice()) else {
        return Ok(false);
    };
    let (k2, n) = if trans_b { (*c, *r) } else { (*r, *c) };
    if k != k2 || k == 0 || n == 0 || k >= 1 << 15 {
        return Ok(false);
    }
    let m = cx.numel(a)? / k;
    if m * n != cx.numel(y)? || m == 0 {
        return Ok(false);
    }
    // Zero points: B's a constant (one or per column), A's one value.
    let zb = match b_zp {
        Some(z) => match cx.konst(z).and_then(|t| t.to_i64_vec()) {
            Some(v) if v.len() == 1 || v.len() as u64 == n => v,
            _ => return Ok(false),
        },
        None => vec![0],
    };
    if let Some(z) = a_zp {
        if cx.numel(z)? != 1 || !byte(cx.dtype(z)?) {
            return Ok(false);
        }
    }
    if bw.bytes.len() as u64 != k * n {
        return Ok(false);
    }
    let signed = bt == DType::I8;
    // Element `i` of the row-major `k × n` operand, wherever B holds it.
    let bval = |i: usize| {
        let i = if trans_b {
            let (kk, j) = (i as u64 / n, i as u64 % n);
            (j * k + kk) as usize
        } else {
            i
        };
        let x = bw.bytes[i];
        if signed {
            x as i8 as i64
        } else {
            x as i64
        }
    };
    let quads = int_dot == 4 && at == DType::U8 && bt == DType::I8 && zb.iter().all(|&z| z == 0);
    let (g, pdt) = if quads {
        (4, DType::I8)
    } else {
        (2, DType::I16)
    };
    let Some(pw) = pack_weights(bval, &zb, (k, n), g, pdt) else {
        return Ok(false);
    };
    if let Some(c) = bias_in {
        if cx.numel(c)? != n || cx.dims(c)?.iter().rev().skip(1).any(|&d| d != 1) {
            return Err(cx.invalid(format!(
                "bias {:?} is not one value per column",
                cx.dims(c)?
            )));
        }
    }
    let scale = match scale_in {
        Some(s) => {
            let len = cx.numel(s)?;
            if len != 1 && len != n {
                return Err(cx.invalid(format!("scale of {len} elements (1 or {n})")));
            }
            Some((s, cx.dtype(s)?, len))
        }
        None => None,
    };

    // Buffers: A, the packed weights, [their column sums, A's zero point], [bias], [scale], Y.
    let name = cx.graph.value(b).name.clone();
    let rows = pw.rows;
    let bp = cx.const_buffer(
        &format!("{name}.packed{g}"),
        pdt,
        vec![rows, n * g as u64],
        pw.data,
    );
    let mut args = vec![cx.buffer(a)?, bp];
    let zp = match a_zp {
        Some(z) => {
            let sums = cx.const_buffer(
                &format!("{name}.colsums"),
                DType::I32,
                vec![n],
                bytes_of(&pw.col_sums, DType::I32),
            );
            args.push(sums);
            args.push(cx.buffer(z)?);
            Some(cx.dtype(z)?)
        }
        None => None,
    };
    let bias = match bias_in {
        Some(c) => {
            args.push(cx.buffer(c)?);
            Some(cx.dtype(c)?)
        }
        None => None,
    };
    if let Some((s, _, _)) = scale {
        args.push(cx.buffer(s)?);
    }
    args.push(cx.buffer(y)?);

    let (tm, tn, tk) = mm_tiles(cx.desc, at, bt, DType::I32, (m, n, k));
    // Whole groups per k step.
    let tk = (tk as u64).div_ceil(g as u64) * g as u64;
    let spec = DotSpec {
        name: cx.kernel_name(&node.op.name().to_ascii_lowercase()),
        a: (at, m * k),
        packed: (pdt, rows, g),
        y: (yt, m * n),
        mnk: (m, n, k),
        tiles: (tm, tn, tk as u16),
        zp,
        bias,
        scale: scale.map(|(_, d, l)| (d, l)),
        activation,
    };
    cx.launch(dot_kernel(&spec), args);
    Ok(true)
}

/// What [`dot_kernel`] builds.
struct DotSpec {
    name: String,
    a: (DType, u64),
    /// The packed weights' dtype, row count (K/g rounded up) and group size.
    packed: (DType, u64, u32),
    y: (DType, u64),
    mnk: (u64, u64, u64),
    tiles: (u16, u16, u16),
    /// A's zero point dtype (the column sums come with it).
    zp: Option<DType>,
    bias: Option<DType>,
    scale: Option<(DType, u64)>,
    activation: Option<Activation>,
}

/// The tile program: each instance owns a `tm × tn` tile of Y, walks K in steps of `tk`
/// (`tk/g` rows of the packed weights) with `tile.dot`, then applies the epilogue.
fn dot_kernel(s: &DotSpec) -> tessera_kir::Kernel {
    let (m, n, k) = s.mnk;
    let (tm, tn, tk) = s.tiles;
    let (pdt, prows, g) = s.packed;
    let g16 = g as u16;
    let mut kb = KernelBuilder::new(s.name.clone());
    let b = &mut kb;
    let abuf = b.param("a", s.a.0, s.a.1, Access::Read);
    let bbuf = b.param("b_packed", pdt, prows * n * g as u64, Access::Read);
    let zbufs = s.zp.map(|zd| {
        (
            b.param("b_col_sums", DType::I32, n, Access::Read),
            b.param("a_zero_point", zd, 1, Access::Read),
        )
    });
    let cbuf = s.bias.map(|d| b.param("bias", d, n, Access::Read));
    let sbuf = s
        .scale
        .map(|(d, len)| b.param("scale", d, len.max(1), Access::Read));
    let ybuf = b.param("y", s.y.0, s.y.1, Access::Write);
    b.set_grid(&[m.div_ceil(tm as u64), n.div_ceil(tn as u64)]);
    let (p0, p1) = (b.program_id(0), b.program_id(1));
    let (tmv, tnv) = (b.index(tm as i64), b.index(tn as i64));
    let i0 = b.mul(p0, tmv);
    let j0 = b.mul(p1, tnv);
    let zero = b.index(0);
    let gv = b.index(g as i64);
    let jg = b.mul(j0, gv);
    let view = |buf, dims: [u64; 2], strides: [i64; 2]| View {
        buf,
        offset: zero,
        dims: dims.to_vec(),
        strides: strides.to_vec(),
    };
    let av = view(abuf, [m, k], [k as i64, 1]);
    let ng = n * g as u64;
    let bv = view(bbuf, [prows, ng], [ng as i64, 1]);
    let acc0 = b.acc_tile(DType::I32, tm, tn, 0.0);
    let tp = tk / g16;
    let (lo, hi, step) = (b.index(0), b.index(prows as i64), b.index(tp as i64));
    let acc = b.for_loop(lo, hi, step, &[acc0], |b, p0, acc| {
        let k0 = b.mul(p0, gv);
        let ta = b.tile_load(
            TileAt {
                view: av.clone(),
                origin: vec![i0, k0],
            },
            tm,
            tk,
            Scalar::Int(0),
        );
        let tb = b.tile_load(
            TileAt {
                view: bv.clone(),
                origin: vec![p0, jg],
            },
            tp,
            tn * g16,
            Scalar::Int(0),
        );
        vec![b.tile_dot(ta, tb, acc[0])]
    })[0];

    // Epilogue: − za·Σ_k b', then (for a float Y) to f32, × scale, + bias, [activation], to Y's
    // type.
    let mut out = acc;
    if let Some((sums, zbuf)) = zbufs {
        let zt = b.tile_load(
            TileAt {
                view: view(zbuf, [1, 1], [0, 0]),
                origin: vec![zero, zero],
            },
            1,
            1,
            Scalar::Int(0),
        );
        let zt = b.cast(zt, DType::I32, NO_SAT);
        let zt = b.tile_broadcast(zt, tm, tn);
        let st = b.tile_load(
            TileAt {
                view: view(sums, [1, n], [0, 1]),
                origin: vec![zero, j0],
            },
            1,
            tn,
            Scalar::Int(0),
        );
        let st = b.tile_broadcast(st, tm, tn);
        let corr = b.mul(zt, st);
        out = b.sub(out, corr);
    }
    if s.y.0 == DType::I32 {
        b.tile_store(
            TileAt {
                view: view(ybuf, [m, n], [n as i64, 1]),
                origin: vec![i0, j0],
            },
            out,
        );
        return kb.finish();
    }
    let mut out = b.cast(out, DType::F32, NO_SAT);
    if let (Some((_, len)), Some(sb)) = (s.scale, sbuf) {
        let st = scale_tile(b, sb, len, j0, (tm, tn), DType::F32);
        out = b.mul(out, st);
    }
    if let (Some(cd), Some(cb)) = (s.bias, cbuf) {
        let fill = if cd.is_float() {
            Scalar::Float(0.0)
        } else {
            Scalar::Int(0)
        };
        let ct = b.tile_load(
            TileAt {
                view: view(cb, [1, n], [0, 1]),
                origin: vec![zero, j0],
            },
            1,
            tn,
            fill,
        );
        let ct = b.cast(ct, DType::F32, NO_SAT);
        let ct = b.tile_broadcast(ct, tm, tn);
        out = b.add(out, ct);
    }
    if let Some(act) = s.activation {
        out = act.apply(b, out);
    }
    let out = b.cast(out, s.y.0, NO_SAT);
    b.tile_store(
        TileAt {
            view: view(ybuf, [m, n], [n as i64, 1]),
            origin: vec![i0, j0],
        },
        out,
    );
    kb.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_pack_in_groups_with_zero_points_and_column_sums() {
        // b = [[1, 2], [3, 4], [5, 6]] (k = 3, n = 2), zb = [1, 2].
        let b = [1, 2, 3, 4, 5, 6];
        let p = pack_weights(|i| b[i], &[1, 2], (3, 2), 2, DType::I16).unwrap();
        assert_eq!(p.rows, 2);
        // Row 0: k 0..2 of column 0 then column 1; row 1: k 2 and padding.
        assert_eq!(p.data, bytes_of(&[0, 2, 0, 2, 4, 0, 4, 0], DType::I16));
        assert_eq!(p.col_sums, vec![6, 6]);
        // i8 quads refuse values that do not fit.
        assert!(pack_weights(|_| -128, &[1], (1, 1), 4, DType::I8).is_none());
        let q = pack_weights(|i| [-128, 5, 127, 0][i], &[0], (4, 1), 4, DType::I8).unwrap();
        assert_eq!(q.data, vec![0x80, 5, 0x7f, 0]);
        assert_eq!(bytes_of(&[-1, 2], DType::I16), vec![0xff, 0xff, 2, 0]);
    }
}
