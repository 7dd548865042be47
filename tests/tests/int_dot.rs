//! 8-bit integer products end to end on the CPU targets with an integer dot product (host,
//! and llvm-x86_64 with the `llvm` feature): a FusedMatMul with u8 activations, i8 weights
//! and zero points on both (per-column for the weights) goes through `tile.dot` on weights
//! packed at compile time, and its results are bit for bit the exact integer sums — the same
//! as the interpreter's, which widens the operands to f32 (exact at these sizes).

use tessera_ir::{text, DType, Tensor};

/// Deterministic 8-bit values with both extremes mixed in.
fn bytes(n: usize, seed: u32, signed: bool) -> Vec<i64> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(3);
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let v = match i % 7 {
                0 => 0,
                1 => 255,
                _ => (s % 256) as i64,
            };
            if signed {
                v - 128
            } else {
                v
            }
        })
        .collect()
}

fn list(v: &[i64]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `y = scale · (x − zx)(w − zw) + bias`, ReLU'd when asked, for x `u8[batch.., m, k]`; with
/// `trans_b` the weights are held `[n, k]` (`transB = 1`, a Gemm's layout).
fn model(
    dims: &[u64],
    (k, n): (u64, u64),
    epilogue: bool,
    trans_b: bool,
) -> (String, Vec<i64>, i64, Vec<i64>) {
    let w = bytes((k * n) as usize, 11, true);
    let zw = bytes(n as usize, 12, true);
    let zx = 131;
    let xs = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let ys = dims[..dims.len() - 1]
        .iter()
        .map(|d| d.to_string())
        .chain([n.to_string()])
        .collect::<Vec<_>>()
        .join(",");
    let (extra, args, attr) = if epilogue {
        let bias: Vec<String> = (0..n).map(|j| format!("{:?}", bias_of(j))).collect();
        (
            format!(
                "  const %b = dense<f32[{n}]: [{}]>\n  const %s = dense<f32[]: [0.0078125]>\n",
                bias.join(", ")
            ),
            "%b, %zx, %zw, %s",
            if trans_b {
                " {activation = \"Relu\", transB = 1}"
            } else {
                " {activation = \"Relu\"}"
            },
        )
    } else if trans_b {
        (String::new(), "_, %zx, %zw", " {transB = 1}")
    } else {
        (String::new(), "_, %zx, %zw", "")
    };
    let (held, wdims) = if trans_b {
        let t: Vec<i64> = (0..k * n)
            .map(|e| w[((e % k) * n + e / k) as usize])
            .collect();
        (t, format!("{n},{k}"))
    } else {
        (w.clone(), format!("{k},{n}"))
    };
    let src = format!(
        "graph @g(%x: u8[{xs}]) -> (%y) {{
  const %w = dense<i8[{wdims}]: [{}]>
  const %zx = dense<u8[]: [{zx}]>
  const %zw = dense<i8[{n}]: [{}]>
{extra}  %y: f32[{ys}] = FusedMatMul(%x, %w, {args}){attr}
}}
",
        list(&held),
        list(&zw)
    );
    (src, w, zx, zw)
}

/// The bias of column `j` (exact in f32 and in its text form).
fn bias_of(j: u64) -> f32 {
    j as f32 * 0.5 - 9.25
}

fn targets() -> Vec<&'static str> {
    let mut t = vec!["interp", "host"];
    if cfg!(feature = "llvm") {
        t.push("llvm-x86_64");
    }
    t
}

#[test]
fn integer_matmul_with_zero_points_is_exact_on_every_cpu_target() {
    // K and N off every vector and group multiple; A with a batch dim folded into M.
    // The last two: B held transposed (a QDQ Gemm's weights after `qdq-matmul`).
    for (dims, n, epilogue, trans_b) in [
        (vec![5u64, 37], 19u64, false, false),
        (vec![2, 3, 64], 40, false, false),
        (vec![9, 37], 70, true, false),
        (vec![9, 37], 70, true, true),
        (vec![5, 40], 19, false, true),
    ] {
        let k = *dims.last().unwrap();
        let m: u64 = dims.iter().product::<u64>() / k;
        let (src, w, zx, zw) = model(&dims, (k, n), epilogue, trans_b);
        let mut g = text::parse(&src).unwrap_or_else(|e| panic!("parse: {e}\n{src}"));
        tessera_ir::infer_shapes(&mut g).unwrap_or_else(|e| panic!("infer: {e}"));
        let x = bytes((m * k) as usize, 5, false);
        let xt = Tensor::new(
            DType::U8,
            dims.clone(),
            x.iter().map(|&v| v as u8).collect(),
        );
        let want: Vec<f32> = (0..m * n)
            .map(|e| {
                let (i, j) = ((e / n) as usize, (e % n) as usize);
                let s: i64 = (0..k as usize)
                    .map(|l| (x[i * k as usize + l] - zx) * (w[l * n as usize + j] - zw[j]))
                    .sum();
                if epilogue {
                    (s as f32 * 0.0078125 + bias_of(j as u64)).max(0.0)
                } else {
                    s as f32
                }
            })
            .collect();
        for target in targets() {
            let c = tessera_driver::compile_graph_traced(&g, "test", target, &mut |_| {})
                .unwrap_or_else(|e| panic!("{target}: {e}"));
            let dot = c
                .kernels
                .iter()
                .any(|kk| tessera_kir::print_kernel(kk).contains("tile.dot"));
            assert_eq!(dot, target != "interp", "{target}: tile.dot used");
            let model = tessera_driver::load(c.artifact, target).unwrap();
            let out = model.run(&[xt.clone()]).unwrap();
            let got: Vec<f32> = out[0]
                .to_f64_vec()
                .unwrap()
                .iter()
                .map(|&v| v as f32)
                .collect();
            assert_eq!(got, want, "{target}: dims {dims:?}, n {n}");
        }
    }
}

#[test]
fn matmul_integer_with_zero_points_is_exact_on_every_cpu_target() {
    let (m, k, n) = (6u64, 45u64, 33u64);
    let (src, w, zx, zw) = model(&[m, k], (k, n), false, false);
    let src = src.replace("%y: f32[", "%y: i32[").replace(
        "FusedMatMul(%x, %w, _, %zx, %zw)",
        "MatMulInteger(%x, %w, %zx, %zw)",
    );
    let mut g = text::parse(&src).unwrap_or_else(|e| panic!("parse: {e}\n{src}"));
    tessera_ir::infer_shapes(&mut g).unwrap_or_else(|e| panic!("infer: {e}"));
    let x = bytes((m * k) as usize, 9, false);
    let xt = Tensor::new(DType::U8, vec![m, k], x.iter().map(|&v| v as u8).collect());
    let want: Vec<i64> = (0..m * n)
        .map(|e| {
            let (i, j) = ((e / n) as usize, (e % n) as usize);
            (0..k as usize)
                .map(|l| (x[i * k as usize + l] - zx) * (w[l * n as usize + j] - zw[j]))
                .sum()
        })
        .collect();
    for target in targets() {
        let c = tessera_driver::compile_graph_traced(&g, "test", target, &mut |_| {})
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        let dot = c
            .kernels
            .iter()
            .any(|kk| tessera_kir::print_kernel(kk).contains("tile.dot"));
        assert_eq!(dot, target != "interp", "{target}: tile.dot used");
        let out = tessera_driver::load(c.artifact, target)
            .unwrap()
            .run(&[xt.clone()])
            .unwrap();
        assert_eq!(out[0].to_i64_vec().unwrap(), want, "{target}");
    }
}
