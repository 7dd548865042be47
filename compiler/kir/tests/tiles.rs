//! Tests of the tile language: the interpreter runs tile kernels against Rust references,
//! `scalarize-tiles` (with default and with blocked options) gives the interpreter's results
//! back, the text format round-trips every tile instruction, and the verifier refuses
//! ill-formed tiles with messages that name the problem.

use half::f16;
use tessera_ir::DType;
use tessera_kir::passes::{has_tiles, scalarize_tiles, to_backend_subset, ScalarizeOptions};
use tessera_kir::*;

fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_of(bs: &[u8]) -> Vec<f32> {
    bs.chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Deterministic values in [-1, 1).
fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn run(k: &Kernel, args: &mut [Vec<u8>]) {
    let mut views: Vec<&mut [u8]> = args.iter_mut().map(|a| &mut a[..]).collect();
    run_kernel(k, &mut views)
        .unwrap_or_else(|e| panic!("kernel `{}` failed: {e}\n{}", k.name, print_kernel(k)));
}

/// `Y = relu(A · B + bias)` with A `m × k` (elements of `elem`), B `k × n`, tiles of
/// `tm × tn × tk` that need not divide the shapes.
fn gemm_kernel(elem: DType, (m, n, k): (u64, u64, u64), (tm, tn, tk): (u16, u16, u16)) -> Kernel {
    let mut b = KernelBuilder::new("gemm_bias_relu");
    let a = b.param("a", elem, m * k, Access::Read);
    let bb = b.param("b", elem, k * n, Access::Read);
    let bias = b.param("bias", DType::F32, n, Access::Read);
    let y = b.param("y", elem, m * n, Access::Write);
    b.set_grid(&[m.div_ceil(tm as u64), n.div_ceil(tn as u64)]);
    let (pi, pj) = (b.program_id(0), b.program_id(1));
    let (tmv, tnv) = (b.index(tm as i64), b.index(tn as i64));
    let i0 = b.mul(pi, tmv);
    let j0 = b.mul(pj, tnv);
    let zero = b.index(0);
    let acc0 = b.acc_tile(DType::F32, tm, tn, 0.0);
    let (lo, hi, step) = (b.index(0), b.index(k as i64), b.index(tk as i64));
    let acc = b.for_loop(lo, hi, step, &[acc0], |b, k0, acc| {
        let ta = b.tile_load(
            TileAt::row_major(a, zero, &[m, k], &[i0, k0]),
            tm,
            tk,
            Scalar::Float(0.0),
        );
        let tb = b.tile_load(
            TileAt::row_major(bb, zero, &[k, n], &[k0, j0]),
            tk,
            tn,
            Scalar::Float(0.0),
        );
        vec![b.tile_mma(ta, tb, acc[0])]
    })[0];
    let tbias = b.tile_load(
        TileAt::row_major(bias, zero, &[1, n], &[zero, j0]),
        1,
        tn,
        Scalar::Float(0.0),
    );
    let tbias = b.tile_broadcast(tbias, tm, tn);
    let s = b.add(acc, tbias);
    let z = b.const_tile(DType::F32, tm, tn, 0.0);
    let s = b.max(s, z);
    let s = b.cast(s, elem, CastMode { saturate: false });
    b.tile_store(TileAt::row_major(y, zero, &[m, n], &[i0, j0]), s);
    b.finish()
}

fn gemm_ref(a: &[f32], bm: &[f32], bias: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for l in 0..k {
                s += a[i * k + l] as f64 * bm[l * n + j] as f64;
            }
            y[i * n + j] = ((s as f32) + bias[j]).max(0.0);
        }
    }
    y
}

fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w}"
        );
    }
}

/// Runs an f32 gemm kernel (A, B, bias, Y) and returns Y's `len` elements.
fn run_f32_gemm(k: &Kernel, [a, b, bias]: [&[f32]; 3], len: u64) -> Vec<f32> {
    let mut args = vec![
        f32_bytes(a),
        f32_bytes(b),
        f32_bytes(bias),
        vec![0u8; (len * 4) as usize],
    ];
    run(k, &mut args);
    f32_of(&args[3])
}

fn blocked() -> ScalarizeOptions {
    ScalarizeOptions {
        vector_bytes: 16,
        blocked_f32_mma: true,
        blocked_i32_mma: false,
        block_rows: 2,
        block_vectors: 2,
        dot_block: (0, 0),
        l1_bytes: 0,
        k_unroll: 1,
        fma: false,
        in_place_operands: true,
        int_dot: 0,
        lane_reductions: true,
    }
}

#[test]
fn masked_f32_gemm_matches_reference_and_every_scalarization() {
    let (m, n, k) = (7u64, 10u64, 13u64);
    let kern = gemm_kernel(DType::F32, (m, n, k), (4, 8, 4));
    assert!(has_tiles(&kern));
    let a = data((m * k) as usize, 1);
    let bm = data((k * n) as usize, 2);
    let bias = data(n as usize, 3);
    let want = gemm_ref(&a, &bm, &bias, (m as usize, n as usize, k as usize));
    let outs: Vec<Vec<f32>> = [None, Some(ScalarizeOptions::default()), Some(blocked())]
        .iter()
        .map(|opts| {
            let mut kk = kern.clone();
            if let Some(o) = opts {
                scalarize_tiles(&mut kk, o).unwrap();
                assert!(
                    !has_tiles(&kk),
                    "scalarize-tiles left tiles:\n{}",
                    print_kernel(&kk)
                );
            }
            run_f32_gemm(&kk, [&a, &bm, &bias], m * n)
        })
        .collect();
    close(&outs[0], &want, 1e-5);
    // The default scalarization is exact: bit for bit the interpreter's tile semantics.
    assert_eq!(outs[0], outs[1]);
    close(&outs[2], &outs[0], 1e-6);
}

#[test]
fn paneled_b_tiles_match_the_reference() {
    // B tiles wider than one register block are kept in column panels: full panels and a
    // narrower last one (20 = 8 + 8 + 4, or 5 of 4), on tiles wholly in range and on the
    // masked edge tiles (n = 30, k = 13).
    let (m, n, k) = (7u64, 30u64, 13u64);
    let a = data((m * k) as usize, 7);
    let bm = data((k * n) as usize, 8);
    let bias = data(n as usize, 9);
    let want = gemm_ref(&a, &bm, &bias, (m as usize, n as usize, k as usize));
    for (tiles, nv) in [((4, 20, 4), 2), ((4, 20, 8), 1), ((8, 16, 16), 2)] {
        let mut kk = gemm_kernel(DType::F32, (m, n, k), tiles);
        let opts = ScalarizeOptions {
            block_vectors: nv,
            dot_block: (0, 0),
            l1_bytes: 0,
            k_unroll: 1,
            ..blocked()
        };
        scalarize_tiles(&mut kk, &opts).unwrap();
        close(&run_f32_gemm(&kk, [&a, &bm, &bias], m * n), &want, 1e-5);
    }
}

#[test]
fn operands_in_range_are_read_in_place() {
    // Tile multiples: every A and B tile lies in its view for every instance and k step, and
    // B's tiles are contiguous (one tile column), so the blocked expansion reads them where
    // they are (two local buffers fewer than when it copies them), with the same result.
    let (m, n, k) = (8u64, 8u64, 12u64);
    let kern = gemm_kernel(DType::F32, (m, n, k), (4, 8, 4));
    let a = data((m * k) as usize, 10);
    let bm = data((k * n) as usize, 11);
    let bias = data(n as usize, 12);
    let want = gemm_ref(&a, &bm, &bias, (m as usize, n as usize, k as usize));
    let locals = |o: &ScalarizeOptions| {
        let mut kk = kern.clone();
        scalarize_tiles(&mut kk, o).unwrap();
        let n = kk
            .bufs
            .iter()
            .filter(|b| b.name.starts_with("tile."))
            .count();
        (kk, n)
    };
    let (_, copied) = locals(&ScalarizeOptions {
        in_place_operands: false,
        ..blocked()
    });
    let (kk, blocked_locals) = locals(&blocked());
    assert_eq!(blocked_locals + 2, copied, "{}", print_kernel(&kk));
    close(&run_f32_gemm(&kk, [&a, &bm, &bias], m * n), &want, 1e-5);
}

#[test]
fn f16_gemm_widens_tiles_and_stays_exact() {
    let (m, n, k) = (9u64, 12u64, 20u64);
    let kern = gemm_kernel(DType::F16, (m, n, k), (8, 8, 8));
    let to_h = |xs: &[f32]| {
        xs.iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let of_h = |bs: &[u8]| {
        bs.chunks(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect::<Vec<f32>>()
    };
    let a = data((m * k) as usize, 4);
    let bm = data((k * n) as usize, 5);
    let bias = data(n as usize, 6);
    let (ah, bh) = (of_h(&to_h(&a)), of_h(&to_h(&bm)));
    let want = gemm_ref(&ah, &bh, &bias, (m as usize, n as usize, k as usize));
    let mut outs = Vec::new();
    for opts in [None, Some(blocked())] {
        let mut kk = kern.clone();
        if let Some(o) = opts {
            scalarize_tiles(&mut kk, &o).unwrap();
            // The A and B tiles are kept as f32.
            assert!(kk
                .bufs
                .iter()
                .any(|b| b.name.starts_with("tile.") && b.dtype == DType::F32));
            to_backend_subset(&mut kk).unwrap();
        }
        let mut args = vec![
            to_h(&a),
            to_h(&bm),
            f32_bytes(&bias),
            vec![0u8; (m * n * 2) as usize],
        ];
        run(&kk, &mut args);
        outs.push(of_h(&args[3]));
    }
    close(&outs[0], &want, 2e-3);
    // f16 products are exact in f32, so the blocked expansion is bit-exact here.
    assert_eq!(outs[0], outs[1]);
}

/// Row softmax of an `r × c` tile: reduce, broadcast, math, select on an index mask.
fn softmax_kernel(r: u64, c: u64) -> Kernel {
    let mut b = KernelBuilder::new("softmax");
    let x = b.param("x", DType::F32, r * c, Access::Read);
    let y = b.param("y", DType::F32, r * c, Access::Write);
    let (tr, tc) = (4u16, 8u16);
    b.set_grid(&[r.div_ceil(tr as u64)]);
    let p = b.program_id(0);
    let trv = b.index(tr as i64);
    let i0 = b.mul(p, trv);
    let zero = b.index(0);
    let t = b.tile_load(
        TileAt::row_major(x, zero, &[r, c], &[i0, zero]),
        tr,
        tc,
        Scalar::Float(f64::NEG_INFINITY),
    );
    let mx = b.tile_reduce(ReduceOp::Max, Axis::Rows, t);
    let mx = b.tile_broadcast(mx, tr, tc);
    let d = b.sub(t, mx);
    let e = b.math(MathFn::Exp, &[d]);
    // Zero the padded columns explicitly, through an index mask.
    let col = b.tile_index(Axis::Cols, tr, tc);
    let cv = b.index(c as i64);
    let cvt = b.splat_tile(cv, tr, tc);
    let inside = b.cmp(CmpOp::Lt, col, cvt);
    let zt = b.const_tile(DType::F32, tr, tc, 0.0);
    let e = b.select(inside, e, zt);
    let s = b.tile_reduce(ReduceOp::Add, Axis::Rows, e);
    let s = b.tile_broadcast(s, tr, tc);
    let o = b.div(e, s);
    b.tile_store(TileAt::row_major(y, zero, &[r, c], &[i0, zero]), o);
    b.finish()
}

#[test]
fn row_softmax_with_reductions_broadcasts_and_masks() {
    let (r, c) = (6u64, 5u64);
    let kern = softmax_kernel(r, c);
    let x = data((r * c) as usize, 7);
    let mut want = vec![0f32; (r * c) as usize];
    for i in 0..r as usize {
        let row = &x[i * c as usize..(i + 1) * c as usize];
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let s: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
        for j in 0..c as usize {
            want[i * c as usize + j] = (((row[j] - m) as f64).exp() / s) as f32;
        }
    }
    let mut outs = Vec::new();
    for scalarize in [false, true] {
        let mut kk = kern.clone();
        if scalarize {
            to_backend_subset(&mut kk).unwrap();
        }
        let mut args = vec![f32_bytes(&x), vec![0u8; (r * c * 4) as usize]];
        run(&kk, &mut args);
        outs.push(f32_of(&args[1]));
    }
    close(&outs[0], &want, 1e-6);
    close(&outs[1], &outs[0], 1e-6);
}

/// Copies a padded tile global → shared, transposes it through registers and stores it.
fn copy_transpose_kernel(r: u64, c: u64) -> Kernel {
    let mut b = KernelBuilder::new("copy_transpose");
    let x = b.param("x", DType::I32, r * c, Access::Read);
    let y = b.param("y", DType::I32, c * r, Access::Write);
    let s = b.local("stage", Space::Shared, DType::I32, 8 * 8);
    let zero = b.index(0);
    b.tile_copy(
        TileAt::row_major(x, zero, &[r, c], &[zero, zero]),
        TileAt::row_major(s, zero, &[8, 8], &[zero, zero]),
        8,
        8,
        Scalar::Int(-1),
    );
    b.barrier();
    let t = b.tile_load(
        TileAt::row_major(s, zero, &[8, 8], &[zero, zero]),
        8,
        8,
        Scalar::Int(0),
    );
    let tt = b.tile_transpose(t);
    b.tile_store(TileAt::row_major(y, zero, &[c, r], &[zero, zero]), tt);
    b.finish()
}

#[test]
fn copy_pads_and_transpose_swaps() {
    let (r, c) = (3u64, 5u64);
    let kern = copy_transpose_kernel(r, c);
    let x: Vec<i32> = (0..(r * c) as i32).collect();
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    for scalarize in [false, true] {
        let mut kk = kern.clone();
        if scalarize {
            to_backend_subset(&mut kk).unwrap();
        }
        let mut args = vec![xb.clone(), vec![0u8; (r * c * 4) as usize]];
        run(&kk, &mut args);
        let y: Vec<i32> = args[1]
            .chunks(4)
            .map(|ch| i32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]))
            .collect();
        for i in 0..c as usize {
            for j in 0..r as usize {
                assert_eq!(
                    y[i * r as usize + j],
                    x[j * c as usize + i],
                    "y[{i}][{j}] (scalarized: {scalarize})"
                );
            }
        }
    }
}

#[test]
fn every_tile_instruction_round_trips_through_text() {
    for k in [
        gemm_kernel(DType::F16, (9, 12, 20), (8, 8, 8)),
        softmax_kernel(6, 5),
        copy_transpose_kernel(3, 5),
    ] {
        let text = print_kernel(&k);
        let back = parse_kernel(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(print_kernel(&back), text);
        assert_eq!(back, k);
    }
    let text = print_kernel(&copy_transpose_kernel(3, 5));
    assert!(
        text.contains("tile.copy %x offset %0 dims [3, 5] strides [5, 1] at [%0, %0] -> %stage"),
        "{text}"
    );
    assert!(text.contains("barrier"), "{text}");
    assert!(text.contains(": tile<8x8xi32>"), "{text}");
}

fn verify_err(src: &str) -> String {
    match parse_kernel(src) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn verifier_refuses_ill_formed_tiles() {
    let head = "kernel @k(%a: global f32[64] read, %y: global f32[64] write) grid [] {\n  %0 = const 0 : i64\n";
    let e = verify_err(&format!(
        "{head}  %1 = tile.load %a offset %0 dims [8, 8] strides [8, 1] at [%0, %0] fill 0.0 : tile<4x4xf32>\n  %2 = tile.load %a offset %0 dims [8, 8] strides [8, 1] at [%0, %0] fill 0.0 : tile<3x4xf32>\n  %3 = const 0.0 : f32\n  %4 = splat %3 : tile<4x4xf32, acc>\n  %5 = tile.mma %1, %2, %4 : tile<4x4xf32, acc>\n}}\n"
    ));
    assert!(e.contains("shapes do not chain"), "{e}");
    let e = verify_err(&format!("{head}  %1 = tile.load %a offset %0 dims [8, 8] strides [8] at [%0, %0] fill 0.0 : tile<4x4xf32>\n}}\n"));
    assert!(e.contains("2 dims, 1 strides and 2 origin indices"), "{e}");
    let e = verify_err(&format!("{head}  %1 = tile.load %a offset %0 dims [8, 8] strides [8, 1] at [%0, %0] fill 0.0 : vec<4xf32>\n}}\n"));
    assert!(e.contains("not a tile"), "{e}");
    let e = verify_err(&format!("{head}  %1 = tile.load %a offset %0 dims [64] strides [1] at [%0] fill 0.0 : tile<2x4xf32>\n}}\n"));
    assert!(e.contains("rank 1, which holds 1-row tiles"), "{e}");
    let e = verify_err(&format!(
        "{head}  %1 = tile.load %a offset %0 dims [8, 8] strides [8, 1] at [%0, %0] fill 0.0 : tile<4x4xf32>\n  tile.store %1, %a offset %0 dims [8, 8] strides [8, 1] at [%0, %0]\n}}\n"
    ));
    assert!(e.contains("read-only parameter `a`"), "{e}");
    let e = verify_err(&format!(
        "{head}  %1 = tile.index rows : tile<300x300xi64>\n}}\n"
    ));
    assert!(e.contains("tiles hold at most 65536"), "{e}");
}

#[test]
fn interpreter_reports_in_range_elements_outside_the_buffer() {
    // The view claims 8 × 8 but the buffer holds 16 elements: an in-range lane past the end.
    let src = "kernel @k(%a: global f32[16] read, %y: global f32[64] write) grid [] {\n  %0 = const 0 : i64\n  %1 = tile.load %a offset %0 dims [8, 8] strides [8, 1] at [%0, %0] fill 0.0 : tile<4x4xf32>\n  tile.store %1, %y offset %0 dims [8, 8] strides [8, 1] at [%0, %0]\n}\n";
    let k = parse_kernel(src).unwrap();
    let mut a = vec![0u8; 64];
    let mut y = vec![0u8; 256];
    let e = run_kernel(&k, &mut [&mut a, &mut y])
        .unwrap_err()
        .to_string();
    assert!(e.contains("tile.load reads") && e.contains("`a`"), "{e}");
}

/// `Y = A · Bᵀ` with B stored `n × k` (a Gemm with transB): its tiles are read through a
/// transposed view, which the blocked expansion keeps transposed and multiplies as dot
/// products.
fn gemm_bt_kernel((m, n, k): (u64, u64, u64), (tm, tn, tk): (u16, u16, u16)) -> Kernel {
    let mut b = KernelBuilder::new("gemm_bt");
    let a = b.param("a", DType::F32, m * k, Access::Read);
    let bb = b.param("b", DType::F32, n * k, Access::Read);
    let y = b.param("y", DType::F32, m * n, Access::Write);
    b.set_grid(&[m.div_ceil(tm as u64), n.div_ceil(tn as u64)]);
    let (pi, pj) = (b.program_id(0), b.program_id(1));
    let (tmv, tnv) = (b.index(tm as i64), b.index(tn as i64));
    let i0 = b.mul(pi, tmv);
    let j0 = b.mul(pj, tnv);
    let zero = b.index(0);
    let acc0 = b.acc_tile(DType::F32, tm, tn, 0.0);
    let (lo, hi, step) = (b.index(0), b.index(k as i64), b.index(tk as i64));
    let acc = b.for_loop(lo, hi, step, &[acc0], |b, k0, acc| {
        let ta = b.tile_load(
            TileAt::row_major(a, zero, &[m, k], &[i0, k0]),
            tm,
            tk,
            Scalar::Float(0.0),
        );
        let bt_view = View {
            buf: bb,
            offset: zero,
            dims: vec![k, n],
            strides: vec![1, k as i64],
        };
        let tb = b.tile_load(
            TileAt {
                view: bt_view,
                origin: vec![k0, j0],
            },
            tk,
            tn,
            Scalar::Float(0.0),
        );
        vec![b.tile_mma(ta, tb, acc[0])]
    })[0];
    b.tile_store(TileAt::row_major(y, zero, &[m, n], &[i0, j0]), acc);
    b.finish()
}

#[test]
fn transposed_b_tiles_multiply_as_dot_products() {
    let (m, n, k) = (6u64, 11u64, 23u64);
    let kern = gemm_bt_kernel((m, n, k), (4, 8, 16));
    let a = data((m * k) as usize, 8);
    let bt = data((n * k) as usize, 9);
    let mut want = vec![0f32; (m * n) as usize];
    for i in 0..m as usize {
        for j in 0..n as usize {
            want[i * n as usize + j] = (0..k as usize)
                .map(|l| a[i * k as usize + l] as f64 * bt[j * k as usize + l] as f64)
                .sum::<f64>() as f32;
        }
    }
    for opts in [None, Some(ScalarizeOptions::default()), Some(blocked())] {
        let mut kk = kern.clone();
        if let Some(o) = opts {
            scalarize_tiles(&mut kk, &o).unwrap();
            to_backend_subset(&mut kk).unwrap();
        }
        if opts == Some(blocked()) {
            // The B tile buffer is 8 × 16 (transposed), read with vector loads.
            assert!(
                print_kernel(&kk).contains("reduce add"),
                "no dot-product form:\n{}",
                print_kernel(&kk)
            );
        }
        let mut args = vec![
            f32_bytes(&a),
            f32_bytes(&bt),
            vec![0u8; (m * n * 4) as usize],
        ];
        run(&kk, &mut args);
        close(&f32_of(&args[2]), &want, 1e-5);
    }
}

/// The worked kernel of docs/kernel-ir.md parses, verifies and computes its definition.
#[test]
fn the_manuals_worked_kernel_runs() {
    let doc = include_str!("../../../docs/kernel-ir.md");
    let start = doc
        .find("kernel @gemm_bias_relu")
        .expect("the manual has the worked kernel");
    let end = start + doc[start..].find("```").expect("a closed code block");
    let k = parse_kernel(&doc[start..end]).unwrap_or_else(|e| panic!("the manual's kernel: {e}"));
    let (m, n, kk) = (40usize, 24usize, 72usize);
    let to_h = |xs: &[f32]| {
        xs.iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let of_h = |bs: &[u8]| {
        bs.chunks(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect::<Vec<f32>>()
    };
    let (a, bm, bias) = (data(m * kk, 10), data(kk * n, 11), data(n, 12));
    let want = gemm_ref(&of_h(&to_h(&a)), &of_h(&to_h(&bm)), &bias, (m, n, kk));
    for scalarize in [false, true] {
        let mut kern = k.clone();
        if scalarize {
            scalarize_tiles(&mut kern, &blocked()).unwrap();
            to_backend_subset(&mut kern).unwrap();
        }
        let mut args = vec![to_h(&a), to_h(&bm), f32_bytes(&bias), vec![0u8; m * n * 2]];
        run(&kern, &mut args);
        close(&of_h(&args[3]), &want, 2e-3);
    }
}

/// `tile.reduce op axis` of an `rows × cols` tile of `x`, stored to `y`.
fn reduce_kernel(elem: DType, op: ReduceOp, axis: Axis, (rows, cols): (u16, u16)) -> Kernel {
    let mut b = KernelBuilder::new("reduce");
    let (r, c) = (rows as u64, cols as u64);
    let x = b.param("x", elem, r * c, Access::Read);
    let out = match axis {
        Axis::Rows => (rows, 1),
        Axis::Cols => (1, cols),
    };
    let y = b.param("y", elem, out.0 as u64 * out.1 as u64, Access::Write);
    let zero = b.index(0);
    let fill = if elem.is_float() {
        Scalar::Float(0.0)
    } else {
        Scalar::Int(0)
    };
    let t = b.tile_load(
        TileAt::row_major(x, zero, &[r, c], &[zero, zero]),
        rows,
        cols,
        fill,
    );
    let s = b.tile_reduce(op, axis, t);
    let dims = [out.0 as u64, out.1 as u64];
    b.tile_store(TileAt::row_major(y, zero, &dims, &[zero, zero]), s);
    b.finish()
}

#[test]
fn lane_reductions_match_the_ordered_walk() {
    // Widths below two vectors (the ordered walk), whole groups of four vectors, a group and
    // leftover vectors, and a scalar tail after the vectors (4 lanes of 16 bytes).
    for cols in [3u16, 8, 20, 37, 64] {
        let rows = 5u16;
        let n = rows as usize * cols as usize;
        let mut xs = data(n, cols as u32);
        // A NaN in row 1: min and max propagate it whatever the order.
        xs[cols as usize + 2] = f32::NAN;
        for op in [ReduceOp::Add, ReduceOp::Mul, ReduceOp::Min, ReduceOp::Max] {
            for axis in [Axis::Rows, Axis::Cols] {
                let kern = reduce_kernel(DType::F32, op, axis, (rows, cols));
                let len = if axis == Axis::Rows { rows } else { cols } as usize;
                let outs: Vec<Vec<f32>> = [None, Some(blocked())]
                    .iter()
                    .map(|o| {
                        let mut kk = kern.clone();
                        if let Some(o) = o {
                            scalarize_tiles(&mut kk, o).unwrap();
                            to_backend_subset(&mut kk).unwrap();
                        }
                        let mut args = vec![f32_bytes(&xs), vec![0u8; len * 4]];
                        run(&kk, &mut args);
                        f32_of(&args[1])
                    })
                    .collect();
                let what = format!("{op:?} {axis:?} of 5 x {cols}");
                let exact = axis == Axis::Cols || matches!(op, ReduceOp::Min | ReduceOp::Max);
                for (i, (g, w)) in outs[1].iter().zip(&outs[0]).enumerate() {
                    if w.is_nan() {
                        assert!(g.is_nan(), "{what}: element {i} is {g}, want NaN");
                    } else if exact {
                        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}");
                    } else {
                        assert!(
                            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                            "{what}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
    // Integer sums are exact in any order.
    let xs: Vec<i32> = (0..5 * 37).map(|i| (i * 7919 % 1000) - 500).collect();
    let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
    let kern = reduce_kernel(DType::I32, ReduceOp::Add, Axis::Rows, (5, 37));
    let mut kk = kern.clone();
    scalarize_tiles(&mut kk, &blocked()).unwrap();
    let outs: Vec<Vec<u8>> = [kern, kk]
        .iter()
        .map(|k| {
            let mut args = vec![bytes.clone(), vec![0u8; 5 * 4]];
            run(k, &mut args);
            args.pop().unwrap()
        })
        .collect();
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn fused_elementwise_runs_compute_what_the_one_by_one_rewrite_does() {
    // A softmax over rows with a per-column bias: runs of elementwise instructions with row
    // and column broadcasts, a `select` on a scalar, and a run value (`d`) read again after
    // the run (so it is stored) — widths of whole vectors (24) and not (13, the 1-D loop).
    for cols in [24u16, 13] {
        let rows = 5u16;
        let (r, c) = (rows as u64, cols as u64);
        let mut b = KernelBuilder::new("softmax_bias");
        let x = b.param("x", DType::F32, r * c, Access::Read);
        let bias = b.param("bias", DType::F32, c, Access::Read);
        let y = b.param("y", DType::F32, r * c, Access::Write);
        let z = b.param("z", DType::F32, r * c, Access::Write);
        let zero = b.index(0);
        let t = b.tile_load(
            TileAt::row_major(x, zero, &[r, c], &[zero, zero]),
            rows,
            cols,
            Scalar::Float(0.0),
        );
        let tb = b.tile_load(
            TileAt::row_major(bias, zero, &[1, c], &[zero, zero]),
            1,
            cols,
            Scalar::Float(0.0),
        );
        let m = b.tile_reduce(ReduceOp::Max, Axis::Rows, t);
        let mb = b.tile_broadcast(m, rows, cols);
        let bb = b.tile_broadcast(tb, rows, cols);
        let d = b.sub(t, mb);
        let d = b.add(d, bb);
        let e = b.math(MathFn::Exp, &[d]);
        let s = b.tile_reduce(ReduceOp::Add, Axis::Rows, e);
        let one = b.const_tile(DType::F32, rows, 1, 1.0);
        let inv = b.div(one, s);
        let ib = b.tile_broadcast(inv, rows, cols);
        let p = b.mul(e, ib);
        let flag = b.constant(Ty::BOOL, Scalar::Int(1));
        let p = b.select(flag, p, d);
        b.tile_store(TileAt::row_major(y, zero, &[r, c], &[zero, zero]), p);
        b.tile_store(TileAt::row_major(z, zero, &[r, c], &[zero, zero]), d);
        let kern = b.finish();
        let xs = data((r * c) as usize, 21);
        let bs = data(c as usize, 22);
        let opts = ScalarizeOptions {
            lane_reductions: false,
            ..blocked()
        };
        let outs: Vec<(Vec<u8>, Vec<u8>, usize)> = [ScalarizeOptions::default(), opts]
            .iter()
            .map(|o| {
                let mut kk = kern.clone();
                scalarize_tiles(&mut kk, o).unwrap();
                to_backend_subset(&mut kk).unwrap();
                let locals = kk
                    .bufs
                    .iter()
                    .filter(|b| b.name.starts_with("tile."))
                    .count();
                let n = (r * c * 4) as usize;
                let mut args = vec![f32_bytes(&xs), f32_bytes(&bs), vec![0u8; n], vec![0u8; n]];
                run(&kk, &mut args);
                (args[2].clone(), args[3].clone(), locals)
            })
            .collect();
        assert_eq!(outs[0].0, outs[1].0, "y, {cols} columns");
        assert_eq!(outs[0].1, outs[1].1, "z, {cols} columns");
        // The fused runs keep their values in registers: fewer tile buffers.
        assert!(
            outs[1].2 < outs[0].2,
            "{} locals fused, {} not",
            outs[1].2,
            outs[0].2
        );
    }
}
