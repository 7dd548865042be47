//! Tests of the integer dot products: `dot` (i16 pairs and u8 × i8 quads) and `tile.dot` (a
//! product with a packed right operand) in the interpreter against Rust references, with the
//! extreme values where a CPU instruction could saturate; `scalarize-tiles`' expansions of
//! `tile.dot` (exact scalars, i16 pairs, u8 × i8 quads) bit for bit against the interpreter;
//! the text format round trip; and the verifier's refusals.

use tessera_ir::DType;
use tessera_kir::passes::{scalarize_tiles, to_backend_subset, ScalarizeOptions};
use tessera_kir::*;

fn run(k: &Kernel, args: &mut [Vec<u8>]) {
    let mut views: Vec<&mut [u8]> = args.iter_mut().map(|a| &mut a[..]).collect();
    run_kernel(k, &mut views)
        .unwrap_or_else(|e| panic!("kernel `{}` failed: {e}\n{}", k.name, print_kernel(k)));
}

fn i32_of(bs: &[u8]) -> Vec<i32> {
    bs.chunks(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bytes(vals: &[i64], d: DType) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in vals {
        match d.bits() {
            8 => out.push(v as u8),
            16 => out.extend_from_slice(&(v as i16).to_le_bytes()),
            _ => out.extend_from_slice(&(v as i32).to_le_bytes()),
        }
    }
    out
}

/// Deterministic values of `d` (8 or 16 bits) with its extremes mixed in.
fn ints(n: usize, d: DType, seed: u32) -> Vec<i64> {
    let (lo, hi) = match d {
        DType::I8 => (-128i64, 127i64),
        DType::U8 => (0, 255),
        DType::I16 => (-32768, 32767),
        _ => (0, 65535),
    };
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(7);
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            match i % 5 {
                0 => lo,
                1 => hi,
                _ => lo + (s as i64).rem_euclid(hi - lo + 1),
            }
        })
        .collect()
}

/// `y = dot(acc, a, b)` on one vector: acc `lanes` i32, a and b `g·lanes` of their dtypes.
fn dot_kernel(lanes: u16, g: u16, (ad, bd): (DType, DType)) -> Kernel {
    let mut b = KernelBuilder::new("dot");
    let acc = b.param("acc", DType::I32, lanes as u64, Access::Read);
    let a = b.param("a", ad, (lanes * g) as u64, Access::Read);
    let bb = b.param("b", bd, (lanes * g) as u64, Access::Read);
    let y = b.param("y", DType::I32, lanes as u64, Access::Write);
    let z = b.index(0);
    let x = b.load(acc, z, lanes);
    let va = b.load(a, z, lanes * g);
    let vb = b.load(bb, z, lanes * g);
    let r = b.dot(x, va, vb);
    b.store(y, z, r);
    b.finish()
}

#[test]
fn dot_sums_exact_products_per_group_and_wraps_in_i32() {
    for (g, ad, bd) in [
        (2u16, DType::I16, DType::I16),
        (4, DType::U8, DType::I8),
        (4, DType::I8, DType::I8),
        (2, DType::U16, DType::I16),
    ] {
        let lanes = 4u16;
        let n = (lanes * g) as usize;
        let mut a = ints(n, ad, 1);
        let mut bv = ints(n, bd, 2);
        // Lane 0: every product at its most negative (i16: 2 · (-32768)^2 = 2^31 wraps; u8 ×
        // i8: 4 · 255 · -128, past i16, where `vpmaddubsw` would saturate).
        for q in 0..g as usize {
            a[q] = if ad == DType::U8 || ad == DType::U16 {
                ad_max(ad)
            } else {
                ad_min(ad)
            };
            bv[q] = ad_min(bd);
        }
        let acc: Vec<i64> = vec![i32::MAX as i64, -5, 0, i32::MIN as i64];
        let k = dot_kernel(lanes, g, (ad, bd));
        verify(&k).unwrap();
        let mut args = vec![
            bytes(&acc, DType::I32),
            bytes(&a, ad),
            bytes(&bv, bd),
            vec![0u8; lanes as usize * 4],
        ];
        run(&k, &mut args);
        let want: Vec<i32> = (0..lanes as usize)
            .map(|l| {
                let mut s = acc[l] as i32;
                for q in 0..g as usize {
                    let i = l * g as usize + q;
                    s = s.wrapping_add((a[i] * bv[i]) as i32);
                }
                s
            })
            .collect();
        assert_eq!(i32_of(&args[3]), want, "{ad} x {bd} in groups of {g}");
    }
}

fn ad_min(d: DType) -> i64 {
    match d {
        DType::I8 => -128,
        DType::I16 => -32768,
        _ => 0,
    }
}

fn ad_max(d: DType) -> i64 {
    match d {
        DType::U8 => 255,
        _ => 65535,
    }
}

/// `Y[m×n] = A[m×k] · unpack(Bp)` through `tile.dot` in tiles of `tm × tn × tk` that need
/// not divide the shapes; Bp is `k/g × n·g` (k a multiple of g).
fn tile_dot_kernel(
    (ad, bd, g): (DType, DType, u64),
    (m, n, k): (u64, u64, u64),
    (tm, tn, tk): (u16, u16, u16),
) -> Kernel {
    let mut b = KernelBuilder::new("tile_dot");
    let a = b.param("a", ad, m * k, Access::Read);
    let bp = b.param("bp", bd, k * n, Access::Read);
    let y = b.param("y", DType::I32, m * n, Access::Write);
    b.set_grid(&[m.div_ceil(tm as u64), n.div_ceil(tn as u64)]);
    let (pi, pj) = (b.program_id(0), b.program_id(1));
    let (tmv, tnv) = (b.index(tm as i64), b.index(tn as i64));
    let i0 = b.mul(pi, tmv);
    let j0 = b.mul(pj, tnv);
    let gv = b.index(g as i64);
    let jg = b.mul(j0, gv);
    let zero = b.index(0);
    let acc0 = b.acc_tile(DType::I32, tm, tn, 0.0);
    let tp = tk / g as u16;
    let (lo, hi, step) = (b.index(0), b.index((k / g) as i64), b.index(tp as i64));
    let acc = b.for_loop(lo, hi, step, &[acc0], |b, p0, acc| {
        let k0 = b.mul(p0, gv);
        let ta = b.tile_load(
            TileAt::row_major(a, zero, &[m, k], &[i0, k0]),
            tm,
            tk,
            Scalar::Int(0),
        );
        let tb = b.tile_load(
            TileAt::row_major(bp, zero, &[k / g, n * g], &[p0, jg]),
            tp,
            tn * g as u16,
            Scalar::Int(0),
        );
        vec![b.tile_dot(ta, tb, acc[0])]
    })[0];
    b.tile_store(TileAt::row_major(y, zero, &[m, n], &[i0, j0]), acc);
    b.finish()
}

fn opts(int_dot: u32) -> ScalarizeOptions {
    ScalarizeOptions {
        vector_bytes: 16,
        blocked_f32_mma: true,
        blocked_i32_mma: true,
        block_rows: 3,
        block_vectors: 2,
        dot_block: (0, 0),
        l1_bytes: 0,
        k_unroll: 1,
        fma: false,
        in_place_operands: true,
        int_dot,
        lane_reductions: false,
    }
}

#[test]
fn tile_dot_is_the_product_of_the_unpacked_operand_in_every_expansion() {
    let (m, n, k) = (7u64, 13u64, 24u64);
    for (ad, bd, g) in [
        (DType::U8, DType::I16, 2u64),
        (DType::I8, DType::I16, 2),
        (DType::I16, DType::I16, 2),
        (DType::U8, DType::I8, 4),
        (DType::I8, DType::U8, 4),
    ] {
        // B values that fit what a packed weight holds: 8-bit ones minus a zero point.
        let b_elem = if bd == DType::I16 { DType::I8 } else { bd };
        let a = ints((m * k) as usize, ad, 3);
        let bu = ints((k * n) as usize, b_elem, 4); // unpacked, k × n
        let mut bp = vec![0i64; (k * n) as usize];
        for kk in 0..k {
            for j in 0..n {
                let v = bu[(kk * n + j) as usize] - if bd == DType::I16 { 100 } else { 0 };
                bp[((kk / g) * n * g + j * g + kk % g) as usize] = v;
            }
        }
        let unpacked: Vec<i64> = (0..k * n)
            .map(|e| bu[e as usize] - if bd == DType::I16 { 100 } else { 0 })
            .collect();
        let want: Vec<i32> = (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                (0..k).fold(0i32, |s, kk| {
                    s.wrapping_add(
                        (a[(i * k + kk) as usize] * unpacked[(kk * n + j) as usize]) as i32,
                    )
                })
            })
            .collect();
        let kern = tile_dot_kernel((ad, bd, g), (m, n, k), (4, 8, 8));
        verify(&kern).unwrap();
        let mut outs = Vec::new();
        for o in [
            None,
            Some(ScalarizeOptions::default()),
            Some(opts(2)),
            Some(opts(4)),
        ] {
            let mut kk = kern.clone();
            if let Some(o) = o {
                scalarize_tiles(&mut kk, &o).unwrap();
                to_backend_subset(&mut kk).unwrap();
                let uses_dot = print_kernel(&kk).contains("= dot ");
                let fits = matches!((o.int_dot, g, ad, bd), (2 | 4, 2, _, DType::I16))
                    || (o.int_dot == 4 && g == 4 && ad == DType::U8 && bd == DType::I8);
                assert_eq!(uses_dot, fits, "{ad} x {bd} /{g}, int_dot {}", o.int_dot);
            }
            let mut args = vec![
                bytes(&a, ad),
                bytes(&bp, bd),
                vec![0u8; (m * n * 4) as usize],
            ];
            run(&kk, &mut args);
            outs.push(i32_of(&args[2]));
        }
        for (i, o) in outs.iter().enumerate() {
            assert_eq!(o, &want, "{ad} x {bd} in groups of {g}, expansion {i}");
        }
    }
}

#[test]
fn dot_and_tile_dot_round_trip_through_text() {
    for k in [
        dot_kernel(4, 2, (DType::I16, DType::I16)),
        tile_dot_kernel((DType::U8, DType::I8, 4), (5, 6, 8), (4, 4, 8)),
    ] {
        let text = print_kernel(&k);
        assert!(text.contains("dot "), "{text}");
        let back = parse_kernel(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(print_kernel(&back), text);
        assert_eq!(back, k);
    }
}

/// A one-instruction `dot` of arbitrary (possibly ill-formed) types.
fn raw_dot(acc: Ty, a: Ty, b: Ty) -> Kernel {
    let mut k = KernelBuilder::new("bad_dot");
    let xb = k.param("acc", acc.elem, acc.lanes as u64, Access::Read);
    let ab = k.param("a", a.elem, a.lanes as u64, Access::Read);
    let bb = k.param("b", b.elem, b.lanes as u64, Access::Read);
    let z = k.index(0);
    let x = k.load(xb, z, acc.lanes);
    let va = k.load(ab, z, a.lanes);
    let vb = k.load(bb, z, b.lanes);
    k.dot(x, va, vb);
    k.finish()
}

#[test]
fn verifier_refuses_ill_formed_dots() {
    let refuse = |k: Kernel, want: &str| {
        let e = verify(&k).expect_err(want).to_string();
        assert!(e.contains(want), "{e}\n(wanted `{want}`)");
    };
    let v = Ty::vector;
    refuse(
        raw_dot(v(DType::F32, 4), v(DType::I16, 8), v(DType::I16, 8)),
        "dot accumulates into",
    );
    refuse(
        raw_dot(v(DType::I32, 4), v(DType::I16, 12), v(DType::I16, 12)),
        "2 or 4 times the accumulator's",
    );
    refuse(
        raw_dot(v(DType::I32, 4), v(DType::I16, 8), v(DType::I16, 16)),
        "the operands need the same lane count",
    );
    refuse(
        raw_dot(v(DType::I32, 4), v(DType::F32, 8), v(DType::I16, 8)),
        "expected a vector of i8, u8, i16 or u16",
    );
    verify(&raw_dot(
        v(DType::I32, 4),
        v(DType::U8, 16),
        v(DType::I8, 16),
    ))
    .unwrap();
    // tile.dot: a packed operand of 3 columns per output column, and an f32 accumulator.
    let tile_dot = |bcols: u16, acc: DType| {
        let mut k = KernelBuilder::new("bad_tile_dot");
        let a = k.const_tile(DType::U8, 2, 8, 1.0);
        let b = k.const_tile(DType::I8, 2, bcols, 1.0);
        let c = k.acc_tile(acc, 2, 4, 0.0);
        k.tile_dot(a, b, c);
        k.finish()
    };
    verify(&tile_dot(16, DType::I32)).unwrap();
    refuse(tile_dot(12, DType::I32), "expected b of (K/G) x (N*G)");
    refuse(tile_dot(16, DType::F32), "the accumulator i32");
}
