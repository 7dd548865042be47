//! The constant folder end to end: `tessera_ir::fold` decides what folds, the driver's
//! `InterpFolder` computes it on the kernel-IR interpreter. Float chains fold, a folded result
//! equals the unfolded run's, the size bound keeps blow-ups as runtime ops, runtime data never
//! folds, and the casts `--precision bf16` puts on constant weights become constants.

use tessera_driver::fold::InterpFolder;
use tessera_ir::{text, DType, Graph, NoEval, Op, Tensor};

fn parse(src: &str) -> Graph {
    text::parse(src).unwrap_or_else(|e| panic!("parse: {e}"))
}

fn folded(src: &str) -> Graph {
    if std::env::var_os("FOLD_WHY").is_some() {
        why(src);
    }
    let mut g = parse(src);
    tessera_ir::fold_constants(&mut g, &InterpFolder::new()).unwrap_or_else(|e| panic!("{e}"));
    tessera_ir::verify(&g).unwrap();
    g
}

fn ops(g: &Graph) -> Vec<Op> {
    g.nodes.iter().map(|n| n.op).collect()
}

fn konst(g: &Graph, name: &str) -> Option<Tensor> {
    g.find_value(name).and_then(|v| g.konst(v).cloned())
}

fn run(g: &Graph, target: &str, inputs: &[Tensor]) -> Vec<Tensor> {
    let a = tessera_driver::compile_graph(g, "test", target).unwrap_or_else(|e| panic!("{e}"));
    let m = tessera_driver::load(a, target).unwrap();
    m.run(inputs).unwrap()
}

/// PyTorch's export of `F.pad` in float: `[1, 1, 2, 2]` and `ConstantOfShape` zeros →
/// `Concat` → pairs → reversed → transposed → flat → `Cast` to i64. The old evaluator refused
/// float movement past 64 elements and float `ConstantOfShape`; every op of it folds now.
#[test]
fn exported_float_pads_chain_folds_to_the_pad_operand() {
    let g = folded(
        "graph @pads(%x: f32[1,1,3,3]) -> (%y) {
  const %torch = dense<f32[4]: [1, 1, 2, 2]>
  const %four = dense<i64[1]: [4]>
  const %pair = dense<i64[2]: [-1, 2]>
  const %st = dense<i64[1]: [-1]>
  const %en = dense<i64[1]: [-9223372036854775807]>
  const %ax = dense<i64[1]: [0]>
  const %step = dense<i64[1]: [-1]>
  const %flat = dense<i64[1]: [-1]>
  %zeros = ConstantOfShape(%four) {value = dense<f32[1]: [0]>}
  %all = Concat(%torch, %zeros) {axis = 0}
  %p = Reshape(%all, %pair)
  %r = Slice(%p, %st, %en, %ax, %step)
  %t = Transpose(%r) {perm = [1, 0]}
  %f = Reshape(%t, %flat)
  %pads = Cast(%f) {to = \"i64\"}
  %y = Pad(%x, %pads) @\"pad\"
}
",
    );
    assert_eq!(ops(&g), vec![Op::Pad]);
    let pads = konst(&g, "pads").unwrap();
    assert_eq!(pads.dtype, DType::I64);
    assert_eq!(pads.to_i64_vec(), Some(vec![0, 0, 2, 1, 0, 0, 2, 1]));
    let y = g.find_value("y").unwrap();
    assert_eq!(g.ty(y).unwrap().to_string(), "f32[1,1,7,5]");
}

/// Exporters' shape subgraphs (`Shape → Gather → Unsqueeze → Concat → Reshape`) fold during
/// inference, so the `Reshape` sees a constant `shape`.
#[test]
fn shape_subgraphs_fold_during_inference() {
    let mut g = parse(
        "graph @s(%x: f32[2,3,4]) -> (%y) {
  const %idx = dense<i64[]: [0]>
  const %ax = dense<i64[1]: [0]>
  const %m1 = dense<i64[1]: [-1]>
  %sh = Shape(%x)
  %n = Gather(%sh, %idx)
  %n1 = Unsqueeze(%n, %ax)
  %cat = Concat(%n1, %m1) {axis = 0}
  %y = Reshape(%x, %cat)
}
",
    );
    tessera_ir::infer_shapes_with(&mut g, &InterpFolder::new()).unwrap();
    assert_eq!(konst(&g, "cat").unwrap().to_i64_vec(), Some(vec![2, -1]));
    let y = g.find_value("y").unwrap();
    assert_eq!(g.ty(y).unwrap().to_string(), "f32[2,12]");
    // Without an evaluator only the data-free `Shape` is known, so the shape is refused.
    let mut g = parse(&text::print(&parse(
        "graph @s(%x: f32[2,3,4]) -> (%y) {
  const %idx = dense<i64[]: [0]>
  %sh = Shape(%x)
  %n = Gather(%sh, %idx)
  %y = Reshape(%x, %n)
}
",
    )));
    let e = tessera_ir::infer_shapes_with(&mut g, &NoEval).unwrap_err();
    assert!(
        e.to_string().contains("must be known at compile time"),
        "{e}"
    );
}

/// Dense float work on constants (a 16x16 product, tanh, a reduction) folds, and the folded
/// graph computes what the unfolded one computes at run time, on the interpreter exactly.
#[test]
fn a_folded_result_equals_the_unfolded_run() {
    let vals = |k: f32| -> String {
        (0..256)
            .map(|i| format!("{}", ((i as f32) * 0.37 + k).sin()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let src = format!(
        "graph @d(%x: f32[16]) -> (%y) {{
  const %a = dense<f32[16,16]: [{}]>
  const %b = dense<f32[16,16]: [{}]>
  const %ax = dense<i64[1]: [0]>
  %m = MatMul(%a, %b)
  %t = Tanh(%m)
  %s = ReduceSum(%t, %ax) {{keepdims = 0}}
  %y = Add(%x, %s)
}}
",
        vals(0.0),
        vals(1.0)
    );
    let g = folded(&src);
    assert_eq!(
        ops(&g),
        vec![Op::Add],
        "everything but the runtime Add folds"
    );
    let mut unfolded = parse(&src);
    tessera_ir::infer_shapes(&mut unfolded).unwrap();
    assert_eq!(unfolded.nodes.len(), 4);
    let x = Tensor::from_f32(vec![16], &(0..16).map(|i| i as f32).collect::<Vec<_>>());
    let want = run(&unfolded, "interp", std::slice::from_ref(&x));
    assert_eq!(
        run(&g, "interp", std::slice::from_ref(&x))[0].bytes,
        want[0].bytes
    );
    // The host's kernels agree within rounding.
    let got = run(&g, "host", &[x])[0].to_f64_vec().unwrap();
    for (a, b) in got.iter().zip(want[0].to_f64_vec().unwrap()) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
}

/// The size bound: results up to 64 KiB fold, larger ones only when no larger than the
/// constants they consume. A 4 MiB `ConstantOfShape`, an `Expand` blow-up and a
/// `DequantizeLinear` of a big i8 weight stay runtime ops; narrowing and moving a big weight
/// fold.
#[test]
fn the_size_bound_keeps_blow_ups_at_run_time() {
    let n = 256 * 256;
    let w = (0..n)
        .map(|i| format!("{}", (i % 7) as f32 - 3.0))
        .collect::<Vec<_>>();
    let q = (0..n)
        .map(|i| format!("{}", (i % 5) as i64 - 2))
        .collect::<Vec<_>>();
    let src = format!(
        "graph @b(%x: f32[1024,1024]) -> (%y, %e, %dq, %h, %t, %small) {{
  const %big = dense<i64[2]: [1024, 1024]>
  const %two = dense<i64[2]: [2, 2]>
  const %one = dense<f32[1]: [1.5]>
  const %w = dense<f32[256,256]: [{}]>
  const %q = dense<i8[256,256]: [{}]>
  const %s = dense<f32[]: [0.5]>
  %c = ConstantOfShape(%big) {{value = dense<f32[1]: [2]>}}
  %y = Add(%x, %c)
  %e = Expand(%one, %big)
  %dq = DequantizeLinear(%q, %s)
  %h = Cast(%w) {{to = \"bf16\"}}
  %t = Transpose(%w) {{perm = [1, 0]}}
  %small = ConstantOfShape(%two) {{value = dense<f32[1]: [7]>}}
}}
",
        w.join(", "),
        q.join(", ")
    );
    let g = folded(&src);
    assert_eq!(
        ops(&g),
        vec![
            Op::ConstantOfShape,
            Op::Add,
            Op::Expand,
            Op::DequantizeLinear
        ]
    );
    let h = konst(&g, "h").unwrap();
    assert_eq!((h.dtype, h.dims.clone()), (DType::BF16, vec![256, 256]));
    assert_eq!(
        h.to_f64_vec().unwrap()[..8],
        [-3., -2., -1., 0., 1., 2., 3., -3.]
    );
    let t = konst(&g, "t").unwrap().to_f64_vec().unwrap();
    assert_eq!((t[1], t[256]), (-3. + (256 % 7) as f64, -2.));
    assert_eq!(konst(&g, "small").unwrap().to_f64_vec(), Some(vec![7.0; 4]));
}

/// Nothing that reads a runtime input folds, even mixed with constants, and a shape operand
/// computed from one is refused; a bound input is known.
#[test]
fn runtime_data_never_folds() {
    let src = "graph @r(%x: i64[2], %v: f32[3,4]) -> (%w, %c) {
  const %two = dense<i64[2]: [2, 2]>
  const %zero = dense<i64[2]: [0, 0]>
  %m = Mod(%x, %two)
  %e = Equal(%m, %zero)
  %sh = Shape(%v)
  %w = Where(%e, %sh, %two)
  %c = Cast(%x) {to = \"f32\"}
}
";
    let g = folded(src);
    assert_eq!(
        ops(&g),
        vec![Op::Mod, Op::Equal, Op::Where, Op::Cast],
        "only Shape folds"
    );
    let mut g = parse(
        "graph @r(%x: i64[2], %v: f32[3,4]) -> (%y) {
  const %one = dense<i64[2]: [1, 1]>
  %s = Add(%x, %one)
  %y = Expand(%v, %s) @\"y\"
}
",
    );
    let e = tessera_ir::fold_constants(&mut g, &InterpFolder::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "operand 1 (`shape`) of Expand node \"y\" must be known at compile time"
    );
    // Bound (its value given at compile time), the same input decides the shape.
    let x = g.find_value("x").unwrap();
    g.value_mut(x).konst = Some(Tensor::from_i64(vec![2], &[2, 0]));
    g.bound_inputs.push(x);
    tessera_ir::fold_constants(&mut g, &InterpFolder::new()).unwrap();
    let y = g.find_value("y").unwrap();
    assert_eq!(g.ty(y).unwrap().to_string(), "f32[3,4]");
}

/// The scale of an attention function body, `1 / sqrt(head_size)` cast like the runtime `q`:
/// `CastLike` reads only `q`'s dtype, so the chain folds to one f16 scalar while the `Mul` on
/// `q` stays. A float `Range` over known bounds folds too (it is small).
#[test]
fn scale_factors_fold_through_castlike_of_a_runtime_value() {
    let g = folded(
        "graph @a(%q: f16[1,2,3,8]) -> (%y, %r) {
  const %one = dense<f32[1]: [1]>
  const %zero = dense<f32[]: [0]>
  const %step = dense<f32[]: [0.5]>
  %hs = Shape(%q) {start = 3}
  %hf = Cast(%hs) {to = \"f32\"}
  %sq = Sqrt(%hf)
  %scale = Div(%one, %sq)
  %half = CastLike(%scale, %q)
  %y = Mul(%q, %half)
  %top = ReduceSum(%hf)
  %r = Range(%zero, %top, %step)
}
",
    );
    assert_eq!(ops(&g), vec![Op::Mul]);
    let h = konst(&g, "half").unwrap();
    assert_eq!(h.dtype, DType::F16);
    let v = h.to_f64_vec().unwrap();
    // f16 holds 1/sqrt(8) to within half a unit in the last place (2^-12 at this size).
    assert!(
        v.len() == 1 && (v[0] - 0.125f64.sqrt()).abs() <= 1.0 / 4096.0,
        "{v:?}"
    );
    let r = konst(&g, "r").unwrap().to_f64_vec().unwrap();
    assert_eq!(r.len(), 16);
    assert_eq!((r[0], r[15]), (0.0, 7.5));
}

/// The folder computes with the kernels' semantics: an integer division by zero folds to
/// what the unfolded kernel gives at run time. A node whose run traps (a Gather index out of
/// range) stays a runtime op, and the trap is reported when the model runs, as unfolded.
#[test]
fn evaluations_match_the_kernels_and_traps_stay_at_run_time() {
    let src = "graph @z(%x: i64[2]) -> (%d, %y) {
  const %a = dense<i64[2]: [7, -8]>
  const %z = dense<i64[2]: [2, 0]>
  %d = Div(%a, %z)
  %y = Add(%x, %a)
}
";
    let g = folded(src);
    assert_eq!(ops(&g), vec![Op::Add]);
    let mut unfolded = parse(src);
    tessera_ir::infer_shapes(&mut unfolded).unwrap();
    let x = Tensor::from_i64(vec![2], &[0, 0]);
    let want = run(&unfolded, "interp", std::slice::from_ref(&x));
    assert_eq!(konst(&g, "d").unwrap().bytes, want[0].bytes);
    assert_eq!(run(&g, "interp", &[x])[0].bytes, want[0].bytes);

    let g = folded(
        "graph @o(%x: f32[1]) -> (%y, %g) {
  const %data = dense<f32[2]: [1, 2]>
  const %idx = dense<i64[1]: [5]>
  %g = Gather(%data, %idx) @\"gather\"
  %y = Relu(%x)
}
",
    );
    assert_eq!(ops(&g), vec![Op::Gather, Op::Relu]);
    let a = tessera_driver::compile_graph(&g, "test", "interp").unwrap();
    let m = tessera_driver::load(a, "interp").unwrap();
    let e = m.run(&[Tensor::from_f32(vec![1], &[1.0])]).unwrap_err();
    assert!(e.to_string().contains("gather"), "{e}");
}

/// `--precision bf16` casts constant weights for the Cube unit; the pass after the optimizer
/// folds those casts, so the artifact holds bf16 weights and runs no cast kernel. (The weight
/// is larger than the e-graph analysis shows its folder, so this is the pass after it.)
#[test]
fn weight_casts_of_the_optimizer_become_constants() {
    let w = (0..128 * 128)
        .map(|i| format!("{}", ((i % 13) as f32 - 6.0) / 8.0))
        .collect::<Vec<_>>();
    let mut g = parse(&format!(
        "graph @m(%x: f32[64,128]) -> (%y) {{
  const %w = dense<f32[128,128]: [{}]>
  %y = MatMul(%x, %w)
}}
",
        w.join(", ")
    ));
    tessera_ir::infer_shapes(&mut g).unwrap();
    let opts = tessera_driver::CompileOptions {
        opt_level: tessera_driver::OptLevel::O2,
        precision: tessera_driver::Precision::Bf16,
        ..tessera_driver::CompileOptions::for_target("npu-sim")
    };
    let (out, report) = tessera_driver::optimize(&g, &opts).unwrap();
    assert!(report.changed, "the bf16 rules fire on npu-sim");
    let casts_of_consts = out
        .nodes
        .iter()
        .filter(|n| n.op == Op::Cast)
        .filter(|n| n.input(0).is_some_and(|v| out.konst(v).is_some()))
        .count();
    assert_eq!(casts_of_consts, 0, "{}", text::print(&out));
    let bf16_weight = out.values.iter().any(|v| {
        v.konst
            .as_ref()
            .is_some_and(|t| t.dtype == DType::BF16 && t.dims == [128, 128])
    });
    assert!(bf16_weight, "{}", text::print(&out));
}

/// Why each node of `src` that does not fold fails to evaluate (a debugging aid).
#[allow(dead_code)]
fn why(src: &str) {
    let mut g = parse(src);
    let f = InterpFolder::new();
    let _ = tessera_ir::infer_shapes_with(&mut g, &f);
    for n in &g.nodes {
        let tys: Vec<_> = n.outputs.iter().filter_map(|o| g.ty(*o).cloned()).collect();
        if n.outputs.iter().all(|o| g.konst(*o).is_some()) {
            continue;
        }
        let known = tessera_ir::fold::foldable(&g, n, &tys);
        eprintln!(
            "{} foldable={known}: {:?}",
            n.label(),
            f.evaluate(&g, n, &tys).err()
        );
    }
}
