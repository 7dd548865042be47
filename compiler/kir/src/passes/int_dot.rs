//! `scalarize-tiles`' expansion of `tile.dot` (an integer product whose right operand is packed
//! in groups of k, see [`InstKind::TileDot`]). Start at [`expand`].
//!
//! Where the backend has an integer dot product of the tile's form
//! ([`ScalarizeOptions::int_dot`]: 2 for i16 pairs, `pmaddwd`; 4 for u8 × i8 quads,
//! `vpdpbusd`, which also has pairs), the product is register-blocked like the f32 one:
//! `block_rows` rows by `block_vectors` vectors of `i32` accumulators carried through the
//! groups of k; each step loads one vector of packed B (`G` k values for each of `L` columns),
//! broadcasts the group of A (its `G` values packed in one 32-bit word) to every lane and
//! accumulates with one `dot`. A is packed into those words once per tile (the `i16` pairs
//! or `u8` quads of each row, `m × k / G` words); B is already packed (lowering packs the
//! constant weights at compile time). Columns past the last whole vector, and every other form,
//! are computed exactly in scalars. Integer sums wrap in i32 whatever the order, so both ways
//! are bit-exact with the instruction's definition.

use super::tiles::{blocks, plus, ScalarizeOptions};
use crate::builder::KernelBuilder;
use crate::kernel::*;
use tessera_ir::DType;

/// The `dot` form that fits a product of `a` by packed `b` in groups of `g` on a backend whose
/// integer dot product has groups of `int_dot` (0: none): the element type A is packed to,
/// or `None` for the scalar expansion.
fn vector_form(int_dot: u32, g: u32, a: DType, b: DType) -> Option<DType> {
    match (g, a, b) {
        // i16 pairs: exact for every operand that fits i16.
        (2, DType::I8 | DType::U8 | DType::I16, DType::I16) if int_dot >= 2 => Some(DType::I16),
        // u8 × i8 quads (vpdpbusd's signedness).
        (4, DType::U8, DType::I8) if int_dot == 4 => Some(DType::U8),
        _ => None,
    }
}

/// `R += A · unpack(Bp)` on row-major buffers A (`m × k`, element `a`), Bp (`k/g × n·g`,
/// element `bt`) and R (`m × n`, i32). `apack` is a scratch buffer of `m · k/g` i32 words.
pub(super) fn expand(
    b: &mut KernelBuilder,
    (ab, bb, rb, apack): (Buf, Buf, Buf, Buf),
    (a, bt): (DType, DType),
    (m, n, k, g): (u32, u32, u32, u32),
    opts: &ScalarizeOptions,
) {
    let lanes = opts.vector_bytes / 4;
    let Some(de) = vector_form(opts.int_dot, g, a, bt).filter(|_| lanes >= 2) else {
        scalar_cols(b, (ab, bb, rb), (m, n, k, g), 0);
        return;
    };
    pack_a(b, (ab, apack), (m, k, g), (a, de), opts.vector_bytes);
    let (mr, nv) = (opts.block_rows.max(1), opts.block_vectors.max(1));
    let wide = nv * lanes;
    let n_wide = n / wide * wide;
    let n_vec = n_wide + (n - n_wide) / lanes * lanes;
    let dims = (n, k / g, g);
    blocks(b, m, mr, &|b, i0, rows| {
        blocks(b, n_wide, wide, &|b, j0, _| {
            micro(b, (apack, bb, rb), dims, (i0, rows), (j0, nv, lanes), de)
        });
        for j in (n_wide..n_vec).step_by(lanes as usize) {
            let j0 = b.index(j as i64);
            micro(b, (apack, bb, rb), dims, (i0, rows), (j0, 1, lanes), de);
        }
    });
    if n_vec < n {
        scalar_cols(b, (ab, bb, rb), (m, n, k, g), n_vec);
    }
}

/// Packs each group of `g` consecutive k values of A's rows, converted to `de` (i16 or u8),
/// into one i32 word: `ap[i·k/g + p]` holds `a[i][p·g + q]` in bits `q·w .. q·w + w`. A row
/// of `k = kp·g` elements is `kp` words, so the whole tile packs as one flat array: in vectors
/// of `vector_bytes` elements of A (converted to `de`, whose little-endian lanes are then the
/// words: a bitcast), and the rest group by group in scalars.
fn pack_a(
    b: &mut KernelBuilder,
    (ab, ap): (Buf, Buf),
    (m, k, g): (u32, u32, u32),
    (a, de): (DType, DType),
    vector_bytes: u32,
) {
    let total = m * k;
    let chunk = vector_bytes / (a.bits() / 8).max(1);
    let full = if chunk >= g && chunk % g == 0 {
        total / chunk * chunk
    } else {
        0
    };
    if full > 0 {
        let words = chunk / g;
        let (lo, hi, st) = (
            b.index(0),
            b.index((full / g) as i64),
            b.index(words as i64),
        );
        let gv = b.index(g as i64);
        b.for_loop(lo, hi, st, &[], |b, we, _| {
            let e = b.mul(we, gv);
            let x = b.load(ab, e, chunk as u16);
            let x = b.cast(x, de, NO_SAT);
            let w = b.bitcast(x, Ty::vector(DType::I32, words as u16));
            b.store(ap, we, w);
            Vec::new()
        });
    }
    if full == total {
        return;
    }
    let w = de.bits() as i64;
    let mask = b.constant(Ty::scalar(DType::I32), Scalar::Int((1i64 << w) - 1));
    let (lo, hi, one) = (
        b.index((full / g) as i64),
        b.index((total / g) as i64),
        b.index(1),
    );
    let gv = b.index(g as i64);
    b.for_loop(lo, hi, one, &[], |b, p, _| {
        let a0 = b.mul(p, gv);
        let mut word = b.constant(Ty::scalar(DType::I32), Scalar::Int(0));
        for q in 0..g {
            let e = plus(b, a0, q as i64);
            let x = b.load(ab, e, 1);
            let x = b.cast(x, DType::I32, NO_SAT);
            let x = b.binary(BinOp::And, x, mask);
            let x = if q == 0 {
                x
            } else {
                let s = b.constant(Ty::scalar(DType::I32), Scalar::Int(q as i64 * w));
                b.binary(BinOp::Shl, x, s)
            };
            word = b.binary(BinOp::Or, word, x);
        }
        b.store(ap, p, word);
        Vec::new()
    });
}

/// One register block: rows `i0..i0+rows`, columns `j0..j0+nv·lanes`, over the `kp` groups.
fn micro(
    b: &mut KernelBuilder,
    (ap, bb, rb): (Buf, Buf, Buf),
    (n, kp, g): (u32, u32, u32),
    (i0, rows): (Val, u32),
    (j0, nv, lanes): (Val, u32, u32),
    de: DType,
) {
    let l = lanes as u16;
    let nn = b.index(n as i64);
    let kpv = b.index(kp as i64);
    let mut r_at = Vec::new();
    let mut a_rows = Vec::new();
    for r in 0..rows {
        let i = plus(b, i0, r as i64);
        let ri = b.mul(i, nn);
        a_rows.push(b.mul(i, kpv));
        for v in 0..nv {
            let j = plus(b, j0, (v * lanes) as i64);
            r_at.push(b.add(ri, j));
        }
    }
    let init: Vec<Val> = r_at.iter().map(|&e| b.load(rb, e, l)).collect();
    let gv = b.index(g as i64);
    let ng = b.index((n * g) as i64);
    let jg = b.mul(j0, gv);
    let (lo, one) = (b.index(0), b.index(1));
    let a0 = a_rows[0];
    let accs = b.for_loop(lo, kpv, one, &init, |b, p, acc| {
        let brow = b.mul(p, ng);
        let b0 = b.add(brow, jg);
        let bv: Vec<Val> = (0..nv)
            .map(|v| {
                let e = plus(b, b0, (v * lanes * g) as i64);
                b.load(bb, e, (lanes * g) as u16)
            })
            .collect();
        let ak = b.add(a0, p);
        let mut next = Vec::with_capacity(acc.len());
        for r in 0..rows as usize {
            let e = plus(b, ak, r as i64 * kp as i64);
            let word = b.load(ap, e, 1);
            let ws = b.splat(word, l);
            let av = b.bitcast(ws, Ty::vector(de, (lanes * g) as u16));
            for v in 0..nv as usize {
                next.push(b.dot(acc[r * nv as usize + v], av, bv[v]));
            }
        }
        next
    });
    for (&e, &v) in r_at.iter().zip(accs.iter()) {
        b.store(rb, e, v);
    }
}

/// The exact scalar product for the columns `j_from..n`: `r[i][j] += Σ a[i][l] · bp[l/g][j·g +
/// l%g]`, in i32.
fn scalar_cols(
    b: &mut KernelBuilder,
    (ab, bb, rb): (Buf, Buf, Buf),
    (m, n, k, g): (u32, u32, u32, u32),
    j_from: u32,
) {
    let (lo, one) = (b.index(0), b.index(1));
    let mm = b.index(m as i64);
    let (jl, nn) = (b.index(j_from as i64), b.index(n as i64));
    let kk = b.index(k as i64);
    let (gv, ng) = (b.index(g as i64), b.index((n * g) as i64));
    let kp = b.index((k / g) as i64);
    b.for_loop(lo, mm, one, &[], |b, i, _| {
        let arow = b.mul(i, kk);
        let rrow = b.mul(i, nn);
        b.for_loop(jl, nn, one, &[], |b, j, _| {
            let e = b.add(rrow, j);
            let s0 = b.load(rb, e, 1);
            let jg = b.mul(j, gv);
            let lo = b.index(0);
            let s = b.for_loop(lo, kp, one, &[s0], |b, p, s| {
                let pg = b.mul(p, gv);
                let a0 = b.add(arow, pg);
                let brow = b.mul(p, ng);
                let b0 = b.add(brow, jg);
                let mut s = s[0];
                for q in 0..g as i64 {
                    let ea = plus(b, a0, q);
                    let x = b.load(ab, ea, 1);
                    let x = b.cast(x, DType::I32, NO_SAT);
                    let eb = plus(b, b0, q);
                    let y = b.load(bb, eb, 1);
                    let y = b.cast(y, DType::I32, NO_SAT);
                    let xy = b.mul(x, y);
                    s = b.add(s, xy);
                }
                vec![s]
            })[0];
            b.store(rb, e, s);
            Vec::new()
        });
        Vec::new()
    });
}

const NO_SAT: CastMode = CastMode { saturate: false };
