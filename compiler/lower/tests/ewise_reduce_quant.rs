//! End-to-end checks of the elementwise, reduction and quantization lowerings: build a
//! one-node graph by hand, lower it, run the plan's steps with the kernel-IR interpreter, and
//! compare with values computed here in Rust.

use std::collections::HashMap;
use tessera_ir::{Attr, Attrs, DType, Graph, Node, Op, Tensor, TensorType, ValueId};
use tessera_kir::{run_kernel, BufferKind, Program, Step};
use tessera_target::TargetDesc;

// ==== A tiny plan executor ====

fn desc(vector_bytes: u32) -> TargetDesc {
    TargetDesc {
        name: "test".into(),
        description: "test target".into(),
        isa: "kernel-ir".into(),
        launch: Default::default(),
        vector_bytes,
        dtypes: vec![],
        mma: Default::default(),
        matmul_tile: [32, 32, 32],
        memory: vec![],
        peak_ops_per_cycle: Default::default(),
        clock_ghz: 0.0,
        tolerance: Default::default(),
        ..Default::default()
    }
}

/// Runs `p` on `inputs` (raw bytes, graph input order) and returns the outputs' bytes.
fn execute(p: &Program, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let plan = &p.plan;
    let mut store: HashMap<u32, Vec<u8>> = HashMap::new();
    for (i, b) in plan.buffers.iter().enumerate() {
        let data = match &b.kind {
            BufferKind::Input(n) => inputs[*n as usize].clone(),
            BufferKind::Const(n) => plan.consts[*n as usize].clone(),
            BufferKind::Temp { .. } => vec![0u8; b.byte_len() as usize],
            BufferKind::Alias(_) => continue,
        };
        store.insert(i as u32, data);
    }
    for step in &plan.steps {
        match step {
            Step::Launch { kernel, args } => {
                let k = &p.kernels[*kernel as usize];
                let roots: Vec<u32> = args.iter().map(|&a| plan.root(a).0).collect();
                let mut taken: Vec<Vec<u8>> = roots
                    .iter()
                    .map(|r| store.remove(r).expect("buffer passed twice"))
                    .collect();
                let mut slices: Vec<&mut [u8]> =
                    taken.iter_mut().map(|v| v.as_mut_slice()).collect();
                run_kernel(k, &mut slices).unwrap_or_else(|e| panic!("{e}"));
                for (r, v) in roots.into_iter().zip(taken) {
                    store.insert(r, v);
                }
            }
            Step::Copy { src, dst } => {
                let s = store[&plan.root(*src).0].clone();
                store.insert(plan.root(*dst).0, s);
            }
            Step::If { .. } | Step::Loop(_) | Step::Host { .. } => {
                panic!("these lowerings make no control-flow or host steps")
            }
        }
    }
    plan.outputs
        .iter()
        .map(|o| store[&plan.root(o.buffer).0].clone())
        .collect()
}

/// A one-node graph under construction.
struct G {
    g: Graph,
    inputs: Vec<Vec<u8>>,
}

impl G {
    fn new() -> G {
        G {
            g: Graph::new("t"),
            inputs: Vec::new(),
        }
    }

    fn input(&mut self, dtype: DType, dims: &[u64], bytes: Vec<u8>) -> Option<ValueId> {
        let v = self.g.add_value(
            format!("in{}", self.inputs.len()),
            Some(TensorType::fixed(dtype, dims)),
        );
        self.g.inputs.push(v);
        self.inputs.push(bytes);
        Some(v)
    }

    fn konst(&mut self, t: Tensor) -> Option<ValueId> {
        let n = self.g.values.len();
        Some(self.g.add_const(format!("c{n}"), t))
    }

    fn run(
        mut self,
        op: Op,
        ins: Vec<Option<ValueId>>,
        attrs: Attrs,
        outs: &[(DType, &[u64])],
    ) -> Vec<Vec<u8>> {
        let outputs: Vec<ValueId> = outs
            .iter()
            .enumerate()
            .map(|(i, (d, dims))| {
                self.g
                    .add_value(format!("out{i}"), Some(TensorType::fixed(*d, dims)))
            })
            .collect();
        self.g.outputs = outputs.clone();
        self.g.nodes.push(Node {
            name: "n".into(),
            op,
            inputs: ins,
            outputs,
            attrs,
        });
        let mut results = Vec::new();
        for vb in [16, 0] {
            let p = tessera_lower::lower(&self.g, &desc(vb)).unwrap_or_else(|e| panic!("{e}"));
            results.push(execute(&p, &self.inputs));
        }
        // The vector and scalar forms of every kernel agree bit for bit.
        assert_eq!(results[0], results[1], "vector and scalar kernels differ");
        results.swap_remove(0)
    }
}

fn f32b(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn i32b(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn i64b(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn to_f32(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
fn to_i32(b: &[u8]) -> Vec<i32> {
    b.chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
fn to_i64(b: &[u8]) -> Vec<i64> {
    b.chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
fn attrs(list: &[(&str, Attr)]) -> Attrs {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-5 + 1e-4 * w.abs();
        assert!(ok, "element {i}: got {g}, want {w}");
    }
}

/// Deterministic pseudo-random floats in [-3, 3).
fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 6000) as f32 / 1000.0 - 3.0
        })
        .collect()
}

/// A unary f32 op on `x`, compared with `f`.
fn unary(op: Op, a: Attrs, x: &[f32], f: impl Fn(f32) -> f32) {
    let mut g = G::new();
    let i = g.input(DType::F32, &[x.len() as u64], f32b(x));
    let out = g.run(op, vec![i], a, &[(DType::F32, &[x.len() as u64])]);
    let want: Vec<f32> = x.iter().map(|&v| f(v)).collect();
    close(&to_f32(&out[0]), &want);
}

// ==== Elementwise ====

#[test]
fn add_broadcasts_both_ways() {
    let (a, b) = (data(6, 1), data(4, 2));
    let mut g = G::new();
    let x = g.input(DType::F32, &[2, 3, 1], f32b(&a));
    let y = g.input(DType::F32, &[4], f32b(&b));
    let out = g.run(
        Op::Add,
        vec![x, y],
        Attrs::new(),
        &[(DType::F32, &[2, 3, 4])],
    );
    let want: Vec<f32> = (0..24).map(|i| a[i / 4] + b[i % 4]).collect();
    close(&to_f32(&out[0]), &want);
}

#[test]
fn mul_by_scalar_spans_chunks_and_tail() {
    let n = 10003;
    let a = data(n, 3);
    let mut g = G::new();
    let x = g.input(DType::F32, &[n as u64], f32b(&a));
    let s = g.konst(Tensor::from_f32(vec![], &[2.5]));
    let out = g.run(
        Op::Mul,
        vec![x, s],
        Attrs::new(),
        &[(DType::F32, &[n as u64])],
    );
    let want: Vec<f32> = a.iter().map(|v| v * 2.5).collect();
    close(&to_f32(&out[0]), &want);
}

#[test]
fn int_div_truncates_and_mod_follows_divisor_or_dividend() {
    let a = [7, -7, 7, -7, 5, 0];
    let b = [2, 2, -2, -2, 5, 3];
    let run = |op: Op, at: Attrs| {
        let mut g = G::new();
        let x = g.input(DType::I32, &[6], i32b(&a));
        let y = g.input(DType::I32, &[6], i32b(&b));
        to_i32(&g.run(op, vec![x, y], at, &[(DType::I32, &[6])])[0])
    };
    assert_eq!(run(Op::Div, Attrs::new()), vec![3, -3, -3, 3, 1, 0]);
    assert_eq!(run(Op::Mod, Attrs::new()), vec![1, 1, -1, -1, 0, 0]);
    assert_eq!(
        run(Op::Mod, attrs(&[("fmod", Attr::Int(1))])),
        vec![1, -1, 1, -1, 0, 0]
    );
}

#[test]
fn float_mod_and_pow() {
    let a = [5.5f32, -5.5, 5.5, -5.5];
    let b = [2.0f32, 2.0, -2.0, -2.0];
    let mut g = G::new();
    let x = g.input(DType::F32, &[4], f32b(&a));
    let y = g.input(DType::F32, &[4], f32b(&b));
    let out = g.run(
        Op::Mod,
        vec![x, y],
        attrs(&[("fmod", Attr::Int(1))]),
        &[(DType::F32, &[4])],
    );
    close(&to_f32(&out[0]), &[1.5, -1.5, 1.5, -1.5]);
    // Int base, float exponent: the result keeps the base's type.
    let mut g = G::new();
    let x = g.input(DType::I64, &[3], i64b(&[2, 3, 4]));
    let y = g.input(DType::F32, &[3], f32b(&[3.0, 2.0, 0.5]));
    let out = g.run(Op::Pow, vec![x, y], Attrs::new(), &[(DType::I64, &[3])]);
    assert_eq!(to_i64(&out[0]), vec![8, 9, 2]);
}

#[test]
fn activations_match_their_formulas() {
    let x = data(37, 4);
    unary(Op::Relu, Attrs::new(), &x, |v| v.max(0.0));
    unary(Op::Sigmoid, Attrs::new(), &x, |v| 1.0 / (1.0 + (-v).exp()));
    unary(
        Op::LeakyRelu,
        attrs(&[("alpha", Attr::Float(0.1))]),
        &x,
        |v| if v < 0.0 { 0.1 * v } else { v },
    );
    unary(Op::Elu, Attrs::new(), &x, |v| {
        if v < 0.0 {
            v.exp() - 1.0
        } else {
            v
        }
    });
    unary(Op::Selu, Attrs::new(), &x, |v| {
        1.050_701
            * if v <= 0.0 {
                1.673_263_2 * v.exp() - 1.673_263_2
            } else {
                v
            }
    });
    unary(Op::Celu, attrs(&[("alpha", Attr::Float(2.0))]), &x, |v| {
        v.max(0.0) + (2.0 * ((v / 2.0).exp() - 1.0)).min(0.0)
    });
    unary(Op::Softplus, Attrs::new(), &x, |v| (v.exp() + 1.0).ln());
    unary(Op::Softsign, Attrs::new(), &x, |v| v / (1.0 + v.abs()));
    unary(Op::Mish, Attrs::new(), &x, |v| {
        v * (v.exp() + 1.0).ln().tanh()
    });
    unary(Op::HardSigmoid, Attrs::new(), &x, |v| {
        (0.2 * v + 0.5).clamp(0.0, 1.0)
    });
    unary(Op::HardSwish, Attrs::new(), &x, |v| {
        v * (v / 6.0 + 0.5).clamp(0.0, 1.0)
    });
    unary(Op::ThresholdedRelu, Attrs::new(), &x, |v| {
        if v > 1.0 {
            v
        } else {
            0.0
        }
    });
    unary(
        Op::Shrink,
        attrs(&[("bias", Attr::Float(0.5)), ("lambd", Attr::Float(1.0))]),
        &x,
        |v| {
            if v < -1.0 {
                v + 0.5
            } else if v > 1.0 {
                v - 0.5
            } else {
                0.0
            }
        },
    );
    let erf = |v: f32| libm_erf(v as f64) as f32;
    unary(Op::Gelu, Attrs::new(), &x, move |v| {
        0.5 * v * (1.0 + erf(v / 2f32.sqrt()))
    });
    unary(
        Op::Gelu,
        attrs(&[("approximate", Attr::String("tanh".into()))]),
        &x,
        |v| {
            0.5 * v
                * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh())
        },
    );
    unary(Op::Reciprocal, Attrs::new(), &[2.0, -4.0, 0.5], |v| 1.0 / v);
    unary(
        Op::Round,
        Attrs::new(),
        &[0.5, 1.5, 2.5, -0.5, -1.5, 2.4],
        |v| v.round_ties_even(),
    );
    unary(Op::Sign, Attrs::new(), &[-2.0, 0.0, 3.0, f32::NAN], |v| {
        if v.is_nan() {
            v
        } else if v == 0.0 {
            0.0
        } else {
            v.signum()
        }
    });
    unary(Op::Atanh, Attrs::new(), &[0.5, -0.25], |v| v.atanh());
}

/// erf by its series, good to f32 precision on the test range.
fn libm_erf(x: f64) -> f64 {
    let mut sum = 0.0f64;
    let mut term = x;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs().max(1e-300) && n < 200.0 {
        sum += term / (2.0 * n + 1.0);
        n += 1.0;
        term *= -x * x / n;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn where_compare_clip_and_nan_propagating_max() {
    let a = [1.0f32, f32::NAN, -3.0, 4.0];
    let b = [2.0f32, 0.0, -5.0];
    let mut g = G::new();
    let x = g.input(DType::F32, &[4, 1], f32b(&a));
    let y = g.input(DType::F32, &[3], f32b(&b));
    let out = g.run(Op::Max, vec![x, y], Attrs::new(), &[(DType::F32, &[4, 3])]);
    let want: Vec<f32> = (0..12)
        .map(|i| {
            if a[i / 3].is_nan() {
                f32::NAN
            } else {
                a[i / 3].max(b[i % 3])
            }
        })
        .collect();
    close(&to_f32(&out[0]), &want);

    let mut g = G::new();
    let x = g.input(DType::F32, &[4, 1], f32b(&a));
    let y = g.input(DType::F32, &[3], f32b(&b));
    let out = g.run(
        Op::LessOrEqual,
        vec![x, y],
        Attrs::new(),
        &[(DType::Bool, &[4, 3])],
    );
    let want: Vec<u8> = (0..12).map(|i| (a[i / 3] <= b[i % 3]) as u8).collect();
    assert_eq!(out[0], want);

    let mut g = G::new();
    let c = g.input(DType::Bool, &[3], vec![1, 0, 1]);
    let x = g.input(DType::F32, &[2, 3], f32b(&[1., 2., 3., 4., 5., 6.]));
    let y = g.konst(Tensor::from_f32(vec![], &[-1.0]));
    let out = g.run(
        Op::Where,
        vec![c, x, y],
        Attrs::new(),
        &[(DType::F32, &[2, 3])],
    );
    close(&to_f32(&out[0]), &[1., -1., 3., 4., -1., 6.]);

    // Clip with only a max bound.
    let mut g = G::new();
    let x = g.input(DType::F32, &[4], f32b(&[-9.0, 0.5, 2.0, 7.0]));
    let hi = g.konst(Tensor::from_f32(vec![], &[1.0]));
    let out = g.run(
        Op::Clip,
        vec![x, None, hi],
        Attrs::new(),
        &[(DType::F32, &[4])],
    );
    close(&to_f32(&out[0]), &[-9.0, 0.5, 1.0, 1.0]);
}

#[test]
fn f16_add_rounds_once_and_casts_saturate() {
    let a: Vec<half::f16> = [1.0f32, 2.5, 1000.0]
        .iter()
        .map(|&v| half::f16::from_f32(v))
        .collect();
    let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut g = G::new();
    let x = g.input(DType::F16, &[3], bytes.clone());
    let y = g.input(DType::F16, &[3], bytes);
    let out = g.run(Op::Add, vec![x, y], Attrs::new(), &[(DType::F16, &[3])]);
    let got: Vec<f32> = out[0]
        .chunks(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    assert_eq!(got, vec![2.0, 5.0, 2000.0]);

    // f32 -> f8e4m3fn saturates to 448 by default; -> i32 truncates; -> bool is != 0.
    let vals = [1000.0f32, -0.3, 2.7, 0.0];
    let cast = |to: DType| {
        let mut g = G::new();
        let x = g.input(DType::F32, &[4], f32b(&vals));
        g.run(
            Op::Cast,
            vec![x],
            attrs(&[("to", Attr::Int(to.to_onnx() as i64))]),
            &[(to, &[4])],
        )
        .remove(0)
    };
    assert_eq!(cast(DType::F8E4M3FN)[0], 0x7e);
    assert_eq!(to_i32(&cast(DType::I32)), vec![1000, 0, 2, 0]);
    assert_eq!(cast(DType::Bool), vec![1, 1, 1, 0]);
}

#[test]
fn bit_ops_and_isinf() {
    let mut g = G::new();
    let x = g.input(DType::U8, &[4], vec![1, 16, 255, 3]);
    let y = g.input(DType::U8, &[4], vec![1, 2, 8, 0]);
    let out = g.run(
        Op::BitShift,
        vec![x, y],
        attrs(&[("direction", Attr::String("LEFT".into()))]),
        &[(DType::U8, &[4])],
    );
    assert_eq!(out[0], vec![2, 64, 0, 3]);

    let mut g = G::new();
    let x = g.input(
        DType::F32,
        &[4],
        f32b(&[f32::INFINITY, f32::NEG_INFINITY, 1.0, f32::NAN]),
    );
    let out = g.run(
        Op::IsInf,
        vec![x],
        attrs(&[("detect_negative", Attr::Int(0))]),
        &[(DType::Bool, &[4])],
    );
    assert_eq!(out[0], vec![1, 0, 0, 0]);
}

// ==== Reductions ====

fn reduce_f32(
    op: Op,
    dims: &[u64],
    x: &[f32],
    axes: Option<&[i64]>,
    keep: i64,
    out_dims: &[u64],
) -> Vec<f32> {
    let mut g = G::new();
    let xi = g.input(DType::F32, dims, f32b(x));
    let ax = axes.map(|a| g.konst(Tensor::from_i64(vec![a.len() as u64], a)).unwrap());
    let out = g.run(
        op,
        vec![xi, ax],
        attrs(&[("keepdims", Attr::Int(keep))]),
        &[(DType::F32, out_dims)],
    );
    to_f32(&out[0])
}

#[test]
fn reductions_over_middle_and_all_axes() {
    let x = data(24, 5);
    let at = |i: usize, j: usize, k: usize| x[i * 12 + j * 4 + k];
    let sum1: Vec<f32> = (0..8)
        .map(|o| (0..3).map(|j| at(o / 4, j, o % 4)).sum())
        .collect();
    close(
        &reduce_f32(Op::ReduceSum, &[2, 3, 4], &x, Some(&[1]), 1, &[2, 1, 4]),
        &sum1,
    );
    close(
        &reduce_f32(Op::ReduceMean, &[2, 3, 4], &x, Some(&[-2]), 0, &[2, 4]),
        &sum1.iter().map(|s| s / 3.0).collect::<Vec<_>>(),
    );
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    close(
        &reduce_f32(Op::ReduceMax, &[2, 3, 4], &x, None, 0, &[]),
        &[max],
    );
    let lse: Vec<f32> = (0..2)
        .map(|i| (0..12).map(|r| x[i * 12 + r].exp()).sum::<f32>().ln())
        .collect();
    close(
        &reduce_f32(Op::ReduceLogSumExp, &[2, 3, 4], &x, Some(&[2, 1]), 0, &[2]),
        &lse,
    );
    let l2: Vec<f32> = (0..12)
        .map(|r| (x[r] * x[r] + x[12 + r] * x[12 + r]).sqrt())
        .collect();
    close(
        &reduce_f32(Op::ReduceL2, &[2, 3, 4], &x, Some(&[0]), 0, &[3, 4]),
        &l2,
    );
    // Empty reduction sets: sum 0, max -inf.
    close(
        &reduce_f32(Op::ReduceSum, &[2, 0, 4], &[], Some(&[1]), 1, &[2, 1, 4]),
        &[0.0; 8],
    );
    close(
        &reduce_f32(Op::ReduceMax, &[2, 0, 4], &[], Some(&[1]), 1, &[2, 1, 4]),
        &[f32::NEG_INFINITY; 8],
    );
    // No axes with noop_with_empty_axes: identity.
    let mut g = G::new();
    let xi = g.input(DType::F32, &[2, 3, 4], f32b(&x));
    let out = g.run(
        Op::ReduceSum,
        vec![xi],
        attrs(&[("noop_with_empty_axes", Attr::Int(1))]),
        &[(DType::F32, &[2, 3, 4])],
    );
    close(&to_f32(&out[0]), &x);
}

#[test]
fn argmax_ties_and_last_index() {
    let x = [1.0f32, 3.0, 3.0, 2.0, 5.0, 5.0];
    let run = |op: Op, last: i64| {
        let mut g = G::new();
        let xi = g.input(DType::F32, &[2, 3], f32b(&x));
        let at = attrs(&[
            ("axis", Attr::Int(1)),
            ("keepdims", Attr::Int(0)),
            ("select_last_index", Attr::Int(last)),
        ]);
        to_i64(&g.run(op, vec![xi], at, &[(DType::I64, &[2])])[0])
    };
    assert_eq!(run(Op::ArgMax, 0), vec![1, 1]);
    assert_eq!(run(Op::ArgMax, 1), vec![2, 2]);
    assert_eq!(run(Op::ArgMin, 0), vec![0, 0]);
}

#[test]
fn softmax_family_along_a_middle_axis() {
    let x = data(24, 6);
    let at = |i: usize, j: usize, k: usize| x[i * 12 + j * 4 + k];
    let mut soft = vec![0f32; 24];
    let mut logsoft = vec![0f32; 24];
    let mut hard = vec![0f32; 24];
    for i in 0..2 {
        for k in 0..4 {
            let m = (0..3)
                .map(|j| at(i, j, k))
                .fold(f32::NEG_INFINITY, f32::max);
            let s: f32 = (0..3).map(|j| (at(i, j, k) - m).exp()).sum();
            let arg = (0..3).find(|&j| at(i, j, k) == m).unwrap();
            for j in 0..3 {
                soft[i * 12 + j * 4 + k] = (at(i, j, k) - m).exp() / s;
                logsoft[i * 12 + j * 4 + k] = at(i, j, k) - m - s.ln();
                hard[i * 12 + j * 4 + k] = (j == arg) as u8 as f32;
            }
        }
    }
    for (op, want) in [
        (Op::Softmax, soft),
        (Op::LogSoftmax, logsoft),
        (Op::Hardmax, hard),
    ] {
        let mut g = G::new();
        let xi = g.input(DType::F32, &[2, 3, 4], f32b(&x));
        let out = g.run(
            op,
            vec![xi],
            attrs(&[("axis", Attr::Int(1))]),
            &[(DType::F32, &[2, 3, 4])],
        );
        close(&to_f32(&out[0]), &want);
    }
}

#[test]
fn cumsum_exclusive_reverse_and_topk() {
    let mut g = G::new();
    let xi = g.input(DType::F32, &[2, 3], f32b(&[1., 2., 3., 4., 5., 6.]));
    let ax = g.konst(Tensor::from_i64(vec![], &[1]));
    let at = attrs(&[("exclusive", Attr::Int(1)), ("reverse", Attr::Int(1))]);
    let out = g.run(Op::CumSum, vec![xi, ax], at, &[(DType::F32, &[2, 3])]);
    close(&to_f32(&out[0]), &[5., 3., 0., 11., 6., 0.]);

    let mut g = G::new();
    let xi = g.input(
        DType::F32,
        &[2, 5],
        f32b(&[3., 1., 4., 1., 5., 9., 2., 6., 5., 3.]),
    );
    let k = g.konst(Tensor::from_i64(vec![1], &[3]));
    let out = g.run(
        Op::TopK,
        vec![xi, k],
        Attrs::new(),
        &[(DType::F32, &[2, 3]), (DType::I64, &[2, 3])],
    );
    close(&to_f32(&out[0]), &[5., 4., 3., 9., 6., 5.]);
    assert_eq!(to_i64(&out[1]), vec![4, 2, 0, 0, 2, 3]);

    let mut g = G::new();
    let xi = g.input(DType::F32, &[5], f32b(&[3., 1., 4., 1., 5.]));
    let k = g.konst(Tensor::from_i64(vec![1], &[3]));
    let out = g.run(
        Op::TopK,
        vec![xi, k],
        attrs(&[("largest", Attr::Int(0))]),
        &[(DType::F32, &[3]), (DType::I64, &[3])],
    );
    close(&to_f32(&out[0]), &[1., 1., 3.]);
    assert_eq!(to_i64(&out[1]), vec![1, 3, 0]);
}

// ==== Quantization ====

#[test]
fn quantize_per_tensor_per_axis_and_blocked() {
    let x = [0.0f32, 2.0, 3.0, 1000.0, -254.0, 5.0];
    // Per tensor, u8 with zero point 128: round half to even, saturate.
    let mut g = G::new();
    let xi = g.input(DType::F32, &[2, 3], f32b(&x));
    let s = g.konst(Tensor::from_f32(vec![], &[2.0]));
    let z = g.konst(Tensor::new(DType::U8, vec![], vec![128]));
    let out = g.run(
        Op::QuantizeLinear,
        vec![xi, s, z],
        Attrs::new(),
        &[(DType::U8, &[2, 3])],
    );
    assert_eq!(out[0], vec![128, 129, 130, 255, 1, 130]);
    // Per axis 1, i8, no zero point... given as i8 zeros.
    let mut g = G::new();
    let xi = g.input(DType::F32, &[2, 3], f32b(&x));
    let s = g.konst(Tensor::from_f32(vec![3], &[1.0, 2.0, 4.0]));
    let z = g.konst(Tensor::new(DType::I8, vec![3], vec![0, 1, 0xff]));
    let out = g.run(
        Op::QuantizeLinear,
        vec![xi, s, z],
        attrs(&[("axis", Attr::Int(1))]),
        &[(DType::I8, &[2, 3])],
    );
    let got: Vec<i8> = out[0].iter().map(|&b| b as i8).collect();
    assert_eq!(got, vec![0, 2, 0, 127, -126, 0]);
    // Blocked along axis 1 with block 2: scales [2, 2].
    let mut g = G::new();
    let xi = g.input(DType::F32, &[2, 3], f32b(&x));
    let s = g.konst(Tensor::from_f32(vec![2, 2], &[1.0, 10.0, 2.0, 20.0]));
    let z = g.konst(Tensor::new(DType::U8, vec![2, 2], vec![0, 0, 0, 0]));
    let at = attrs(&[("axis", Attr::Int(1)), ("block_size", Attr::Int(2))]);
    let out = g.run(
        Op::QuantizeLinear,
        vec![xi, s, z],
        at,
        &[(DType::U8, &[2, 3])],
    );
    assert_eq!(out[0], vec![0, 2, 0, 255, 0, 0]);
}

#[test]
fn dequantize_and_dynamic_quantize() {
    let mut g = G::new();
    let xi = g.input(DType::U8, &[2, 2], vec![0, 10, 200, 255]);
    let s = g.konst(Tensor::from_f32(vec![2], &[0.5, 2.0]));
    let z = g.konst(Tensor::new(DType::U8, vec![2], vec![10, 0]));
    let out = g.run(
        Op::DequantizeLinear,
        vec![xi, s, z],
        attrs(&[("axis", Attr::Int(1))]),
        &[(DType::F32, &[2, 2])],
    );
    close(&to_f32(&out[0]), &[-5.0, 20.0, 95.0, 510.0]);

    let x = [0.0f32, 2.0, -3.0, -2.5, 1.34, 0.5];
    let mut g = G::new();
    let xi = g.input(DType::F32, &[6], f32b(&x));
    let out = g.run(
        Op::DynamicQuantizeLinear,
        vec![xi],
        Attrs::new(),
        &[(DType::U8, &[6]), (DType::F32, &[]), (DType::U8, &[])],
    );
    // The ONNX example: scale = 5 / 255, zero point round(3 / scale) = 153.
    let scale = 5.0f32 / 255.0;
    close(&to_f32(&out[1]), &[scale]);
    assert_eq!(out[2], vec![153]);
    let want: Vec<u8> = x
        .iter()
        .map(|v| ((v / scale).round_ties_even() + 153.0).clamp(0.0, 255.0) as u8)
        .collect();
    assert_eq!(out[0], want);
}

// ==== Kernel form and errors ====

/// Lowers a one-node graph without running it.
fn lower_only(
    op: Op,
    ins: &[(DType, &[u64])],
    out: (DType, &[u64]),
) -> Result<Program, tessera_lower::LowerError> {
    let mut g = Graph::new("t");
    let mut inputs = Vec::new();
    for (i, (d, dims)) in ins.iter().enumerate() {
        let v = g.add_value(format!("in{i}"), Some(TensorType::fixed(*d, dims)));
        g.inputs.push(v);
        inputs.push(Some(v));
    }
    let y = g.add_value("out", Some(TensorType::fixed(out.0, out.1)));
    g.outputs.push(y);
    g.nodes.push(Node {
        name: "n".into(),
        op,
        inputs,
        outputs: vec![y],
        attrs: Attrs::new(),
    });
    tessera_lower::lower(&g, &desc(16))
}

#[test]
fn same_shape_f32_uses_vectors_and_empty_tensors_launch_nothing() {
    let p = lower_only(
        Op::Add,
        &[(DType::F32, &[64]), (DType::F32, &[64])],
        (DType::F32, &[64]),
    )
    .unwrap();
    assert_eq!(p.kernels.len(), 1);
    assert!(
        p.kernels[0].vals.iter().any(|t| t.lanes == 4),
        "expected vec<4xf32> in the kernel"
    );
    let p = lower_only(
        Op::Add,
        &[(DType::F32, &[0, 3]), (DType::F32, &[3])],
        (DType::F32, &[0, 3]),
    )
    .unwrap();
    assert!(p.plan.steps.is_empty());
    assert_eq!(p.plan.outputs.len(), 1);
}

#[test]
fn bad_shapes_and_types_are_errors_not_panics() {
    assert!(lower_only(
        Op::Add,
        &[(DType::F32, &[2, 3]), (DType::F32, &[4])],
        (DType::F32, &[2, 3])
    )
    .is_err());
    assert!(lower_only(
        Op::Add,
        &[(DType::F32, &[3]), (DType::I32, &[3])],
        (DType::F32, &[3])
    )
    .is_err());
    assert!(lower_only(Op::Exp, &[(DType::I32, &[3])], (DType::I32, &[3])).is_err());
    assert!(lower_only(Op::Softmax, &[(DType::F32, &[2, 3])], (DType::F32, &[3, 2])).is_err());
    assert!(lower_only(Op::ReduceSum, &[(DType::F32, &[2, 3])], (DType::F32, &[5])).is_err());
    assert!(lower_only(Op::Cast, &[(DType::F32, &[2])], (DType::String, &[2])).is_err());
    assert!(lower_only(
        Op::DequantizeLinear,
        &[(DType::U8, &[2])],
        (DType::F32, &[2])
    )
    .is_err());
}
