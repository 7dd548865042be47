//! The random ops end to end on host and interp: every run and every target draws the same
//! numbers for a seed, the numbers have the distribution asked for (moments and frequencies
//! over many draws, with bounds far outside sampling noise), different seeds give different
//! streams, and malformed nodes are refused with errors that name them.

use tessera_ir::{text, DType, Tensor};

fn graph(src: &str) -> tessera_ir::Graph {
    let mut g = text::parse(src).unwrap_or_else(|e| panic!("parse: {e}"));
    tessera_ir::infer_shapes(&mut g).unwrap_or_else(|e| panic!("infer: {e}"));
    g
}

/// The outputs of `src` on `target`, run twice (the two runs must agree).
fn run(src: &str, target: &str, inputs: &[Tensor]) -> Vec<Vec<f64>> {
    let g = graph(src);
    let a = tessera_driver::compile_graph(&g, "test", target).unwrap_or_else(|e| panic!("{e}"));
    let m = tessera_driver::load(a, target).unwrap();
    let first = m.run(inputs).unwrap();
    let again = m.run(inputs).unwrap();
    assert_eq!(first, again, "{target}: a second run drew other numbers");
    first.iter().map(|t| t.to_f64_vec().unwrap()).collect()
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n)
}

#[test]
fn uniform_and_normal_have_their_moments_and_agree_across_targets() {
    let src = "graph @g() -> (%u, %n) {
  %u = RandomUniform() {dtype = 1, shape = [200, 500], low = -1.0, high = 3.0, seed = 7.0}
  %n = RandomNormal() {dtype = 1, shape = [100000], mean = 2.0, scale = 0.5, seed = 7.0}
}
";
    let host = run(src, "host", &[]);
    let interp = run(src, "interp", &[]);
    // Uniform draws are exact arithmetic on the same bits: identical everywhere.
    assert_eq!(host[0], interp[0]);
    for (h, i) in host[1].iter().zip(&interp[1]) {
        assert!(
            (h - i).abs() <= 1e-5 * (1.0 + i.abs()),
            "normal: host {h} vs interp {i}"
        );
    }
    let u = &host[0];
    assert!(u.iter().all(|&x| (-1.0..3.0).contains(&x)));
    let (m, v) = mean_var(u);
    // Uniform on [-1, 3): mean 1, variance 16/12; 100k draws put both within ~1%.
    assert!((m - 1.0).abs() < 0.03, "uniform mean {m}");
    assert!((v - 16.0 / 12.0).abs() < 0.03, "uniform variance {v}");
    let (m, v) = mean_var(&host[1]);
    assert!((m - 2.0).abs() < 0.01, "normal mean {m}");
    assert!((v - 0.25).abs() < 0.01, "normal variance {v}");
    // Tails: about 4.6% of a normal lies beyond 2 sigma.
    let tail = host[1].iter().filter(|&&x| (x - 2.0).abs() > 1.0).count() as f64 / 1e5;
    assert!((tail - 0.0455).abs() < 0.005, "two-sigma tail {tail}");
}

#[test]
fn seeds_choose_the_stream() {
    let with = |seed: &str| {
        run(
            &format!("graph @g() -> (%u) {{\n  %u = RandomUniform() {{shape = [64]{seed}}}\n}}\n"),
            "interp",
            &[],
        )
        .remove(0)
    };
    let (a, b, a2) = (
        with(", seed = 1.0"),
        with(", seed = 2.0"),
        with(", seed = 1.0"),
    );
    assert_eq!(a, a2);
    assert_ne!(a, b);
    // Without a seed the stream is still fixed (derived from the node's name).
    assert_eq!(with(""), with(""));
}

#[test]
fn like_forms_bernoulli_and_multinomial() {
    let src = "graph @g(%x: f32[50000], %p: f64[50000], %logits: f32[2,4]) -> (%u, %b, %s) {
  %u = RandomUniformLike(%x) {seed = 3.0}
  %b = Bernoulli(%p) {seed = 5.0}
  %s = Multinomial(%logits) {sample_size = 40000, seed = 9.0}
}
";
    let x = Tensor::from_f32(vec![50000], &vec![0.0; 50000]);
    let probs: Vec<f64> = (0..50000)
        .map(|i| if i % 2 == 0 { 0.2 } else { 0.9 })
        .collect();
    let p = Tensor::new(
        DType::F64,
        vec![50000],
        probs.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let logits = Tensor::from_f32(vec![2, 4], &[0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, -30.0]);
    for target in ["host", "interp"] {
        let out = run(src, target, &[x.clone(), p.clone(), logits.clone()]);
        assert!(out[0].iter().all(|&v| (0.0..1.0).contains(&v)));
        let (m, _) = mean_var(&out[0]);
        assert!((m - 0.5).abs() < 0.01, "{target}: uniform-like mean {m}");
        // Bernoulli: 0/1 in the input's dtype, at each element's own rate.
        assert!(out[1].iter().all(|&v| v == 0.0 || v == 1.0));
        let rate = |parity: usize| {
            let hits: Vec<f64> = out[1].iter().skip(parity).step_by(2).copied().collect();
            hits.iter().sum::<f64>() / hits.len() as f64
        };
        assert!((rate(0) - 0.2).abs() < 0.015, "{target}: rate {}", rate(0));
        assert!((rate(1) - 0.9).abs() < 0.015, "{target}: rate {}", rate(1));
        // Multinomial: row 0 uniform over 4 classes; row 1 softmax(0, 1, 2, -30).
        let s = &out[2];
        assert_eq!(s.len(), 80000);
        let freq = |row: usize, class: f64| {
            s[row * 40000..(row + 1) * 40000]
                .iter()
                .filter(|&&c| c == class)
                .count() as f64
                / 40000.0
        };
        for c in 0..4 {
            assert!(
                (freq(0, c as f64) - 0.25).abs() < 0.015,
                "{target}: row 0 class {c}"
            );
        }
        let z: f64 = [0f64, 1.0, 2.0].iter().map(|v| v.exp()).sum();
        for c in 0..3 {
            let want = (c as f64).exp() / z;
            assert!(
                (freq(1, c as f64) - want).abs() < 0.015,
                "{target}: row 1 class {c}"
            );
        }
        assert_eq!(
            freq(1, 3.0),
            0.0,
            "{target}: a class of probability e^-32 was drawn"
        );
    }
}

#[test]
fn dropout_in_training_mode_masks_and_rescales() {
    // training_mode known at compile time (a constant) and decided at run time (an input).
    let src = "graph @g(%x: f32[20000], %t: bool[]) -> (%y, %m, %y2, %m2) {
  const %r = dense<f32[]: [0.25]>
  const %on = dense<bool[]: [true]>
  %y, %m = Dropout(%x, %r, %on) {seed = 1.0}
  %y2, %m2 = Dropout(%x, %r, %t) {seed = 1.0}
}
";
    let xs: Vec<f32> = (0..20000).map(|i| 1.0 + (i % 7) as f32).collect();
    let x = Tensor::from_f32(vec![20000], &xs);
    let on = Tensor::new(DType::Bool, vec![], vec![1]);
    let off = Tensor::new(DType::Bool, vec![], vec![0]);
    for target in ["host", "interp"] {
        let out = run(src, target, &[x.clone(), on.clone()]);
        let kept = out[1].iter().filter(|&&k| k != 0.0).count() as f64 / 20000.0;
        assert!((kept - 0.75).abs() < 0.015, "{target}: kept {kept}");
        for i in 0..20000 {
            let want = if out[1][i] != 0.0 {
                xs[i] as f64 / 0.75
            } else {
                0.0
            };
            assert!((out[0][i] - want).abs() < 1e-5, "{target}: y[{i}]");
        }
        // The run-time switch on gives the same draw; off gives y = x and an all-true mask.
        assert_eq!(out[2], out[0]);
        assert_eq!(out[3], out[1]);
        let out = run(src, target, &[x.clone(), off.clone()]);
        assert!(out[2].iter().zip(&xs).all(|(&y, &x)| y == x as f64));
        assert!(out[3].iter().all(|&k| k == 1.0));
    }
}

#[test]
fn malformed_random_nodes_are_refused_by_name() {
    let parse_infer = |src: &str| {
        let mut g = text::parse(src).unwrap();
        tessera_ir::infer_shapes(&mut g).unwrap_err().to_string()
    };
    let e = parse_infer("graph @g() -> (%u) {\n  %u = RandomUniform() {seed = 1.0}\n}\n");
    assert!(e.contains("RandomUniform") && e.contains("`shape`"), "{e}");
    let e = parse_infer(
        "graph @g(%l: f32[2,3]) -> (%s) {\n  %s = Multinomial(%l) {dtype = 3, sample_size = 4}\n}\n",
    );
    assert!(e.contains("Multinomial") && e.contains("i32 or i64"), "{e}");
    let e = parse_infer("graph @g(%p: i32[4]) -> (%b) {\n  %b = Bernoulli(%p)\n}\n");
    assert!(
        e.contains("Bernoulli") && e.contains("float probabilities"),
        "{e}"
    );
}
