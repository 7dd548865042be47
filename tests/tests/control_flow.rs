//! Control flow end to end: graphs with If, Loop and Scan, written in the graph-IR text format,
//! compiled for host and interp and run with conditions and trip counts chosen at run time.
//! Also the refusals: a loop-carried value that changes shape, and a loop that ends early
//! while its scan outputs were sized for the full trip count.

use tessera_ir::{text, DType, Tensor};
use tessera_runtime::RuntimeError;

const TARGETS: [&str; 2] = ["host", "interp"];

fn compile(src: &str, target: &str) -> tessera_runtime::Model {
    let mut g = text::parse(src).unwrap_or_else(|e| panic!("parse: {e}"));
    tessera_ir::fold_constants(&mut g, &tessera_driver::fold::InterpFolder::new())
        .unwrap_or_else(|e| panic!("fold: {e}"));
    tessera_ir::infer_shapes(&mut g).unwrap_or_else(|e| panic!("infer: {e}"));
    tessera_ir::verify(&g).unwrap_or_else(|e| panic!("verify: {e}"));
    let a = tessera_driver::compile_graph(&g, "test", target)
        .unwrap_or_else(|e| panic!("compile: {e}"));
    // Through the file format, as the CLI does.
    let a =
        tessera_runtime::Artifact::decode(&a.encode()).unwrap_or_else(|e| panic!("decode: {e}"));
    tessera_driver::load(a, target).unwrap_or_else(|e| panic!("load: {e}"))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_f64_vec()
        .expect("numeric")
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

fn flag(b: bool) -> Tensor {
    Tensor::new(DType::Bool, vec![], vec![b as u8])
}

/// An If on a run-time condition whose branches read an outer value (a capture).
const IF: &str = "graph @g(%c: bool[], %x: f32[3]) -> (%y) {
  %y = If(%c, %x) {captures = 1, else_branch = graph @e(%x) -> (%r) {
      %r = Neg(%x)
    }, then_branch = graph @t(%x) -> (%r) {
      %r = Relu(%x)
    }}
}
";

#[test]
fn if_takes_the_branch_the_condition_picks_at_run_time() {
    let x = Tensor::from_f32(vec![3], &[-1.0, 2.0, -3.0]);
    for target in TARGETS {
        let m = compile(IF, target);
        let y = m.run(&[flag(true), x.clone()]).unwrap();
        assert_eq!(f32s(&y[0]), vec![0.0, 2.0, 0.0], "{target}");
        let y = m.run(&[flag(false), x.clone()]).unwrap();
        assert_eq!(f32s(&y[0]), vec![1.0, -2.0, 3.0], "{target}");
    }
}

/// A Loop with a run-time trip count whose body holds an If (nested control flow): the first
/// two iterations add `x`, later ones multiply by it.
const LOOP_WITH_IF: &str = "graph @g(%m: i64[], %x: f32[2]) -> (%acc) {
  const %one = dense<f32[2]: [1.0, 1.0]>
  %acc = Loop(%m, _, %one, %x) {body = graph @b(%i: i64[], %cin: bool[], %a: f32[2], %x: f32[2]) -> (%cin, %next) {
      const %two = dense<i64[]: [2]>
      %small = Less(%i, %two)
      %next = If(%small, %a, %x) {captures = 2, else_branch = graph @e(%a, %x) -> (%r) {
          %r = Mul(%a, %x)
        }, then_branch = graph @t(%a, %x) -> (%r) {
          %r = Add(%a, %x)
        }}
    }, captures = 1}
}
";

#[test]
fn loop_runs_its_trip_count_and_nests_an_if() {
    let x = Tensor::from_f32(vec![2], &[1.0, 2.0]);
    let m_of = |m: i64| Tensor::from_i64(vec![], &[m]);
    for target in TARGETS {
        let model = compile(LOOP_WITH_IF, target);
        for (m, want) in [
            (0, vec![1.0, 1.0]),
            (1, vec![2.0, 3.0]),
            (2, vec![3.0, 5.0]),
            (4, vec![3.0, 20.0]),
        ] {
            let y = model.run(&[m_of(m), x.clone()]).unwrap();
            assert_eq!(f32s(&y[0]), want, "{target}, M = {m}");
        }
    }
}

/// A while-loop: no trip count; the body's condition stops it after three iterations.
const WHILE: &str = "graph @g(%x: f32[1]) -> (%acc) {
  const %zero = dense<f32[1]: [0.0]>
  const %go = dense<bool[]: [true]>
  %acc = Loop(_, %go, %zero, %x) {body = graph @b(%i: i64[], %cin: bool[], %a: f32[1], %x: f32[1]) -> (%more, %next) {
      const %two = dense<i64[]: [2]>
      %more = Less(%i, %two)
      %next = Add(%a, %x)
    }, captures = 1}
}
";

#[test]
fn loop_without_trip_count_stops_on_its_condition() {
    for target in TARGETS {
        let y = compile(WHILE, target)
            .run(&[Tensor::from_f32(vec![1], &[2.5])])
            .unwrap();
        assert_eq!(f32s(&y[0]), vec![7.5], "{target}");
    }
}

/// A Scan that runs backwards over its input: a suffix sum, plus the final state.
const SCAN_REVERSE: &str = "graph @g(%x: f32[4,2]) -> (%total, %sums) {
  const %zero = dense<f32[2]: [0.0, 0.0]>
  %total, %sums = Scan(%zero, %x) {body = graph @b(%s: f32[2], %row: f32[2]) -> (%n, %n2) {
      %n = Add(%s, %row)
      %n2 = Identity(%n)
    }, captures = 0, num_scan_inputs = 1, scan_input_directions = [1], scan_output_directions = [1]}
}
";

#[test]
fn scan_runs_in_reverse() {
    let x = Tensor::from_f32(vec![4, 2], &[1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]);
    for target in TARGETS {
        let y = compile(SCAN_REVERSE, target).run(&[x.clone()]).unwrap();
        assert_eq!(f32s(&y[0]), vec![10.0, 100.0], "{target}");
        assert_eq!(
            f32s(&y[1]),
            vec![10.0, 100.0, 9.0, 90.0, 7.0, 70.0, 4.0, 40.0],
            "{target}"
        );
        assert_eq!(y[1].dims, vec![4, 2]);
    }
}

#[test]
fn loop_carried_value_that_changes_shape_is_unsupported() {
    let src = "graph @g(%m: i64[], %x: f32[2]) -> (%acc) {
  %acc = Loop(%m, _, %x) {body = graph @b(%i: i64[], %cin: bool[], %a: f32[2]) -> (%cin, %grown) {
      %grown = Concat(%a, %a) {axis = 0}
    }, captures = 0}
}
";
    let mut g = text::parse(src).unwrap();
    let e = tessera_ir::infer_shapes(&mut g).unwrap_err();
    assert_eq!(e.kind(), "unsupported");
    assert!(
        e.to_string()
            .contains("loop-carried value 0 changes shape across iterations (f32[2] to f32[4])"),
        "{e}"
    );
}

#[test]
fn loop_that_ends_before_its_scan_outputs_are_full_is_a_run_time_error() {
    // Trip count 5 sizes the scan output; the condition input can stop the loop after one.
    let src = "graph @g(%go: bool[], %x: f32[1]) -> (%last, %all) {
  const %m = dense<i64[]: [5]>
  %last, %all = Loop(%m, %go, %x) {body = graph @b(%i: i64[], %cin: bool[], %a: f32[1]) -> (%stop, %n, %n2) {
      %stop = Not(%cin)
      %n = Neg(%a)
      %n2 = Identity(%n)
    }, captures = 0}
}
";
    let x = Tensor::from_f32(vec![1], &[1.0]);
    for target in TARGETS {
        let m = compile(src, target);
        let e = m.run(&[flag(true), x.clone()]).unwrap_err();
        assert!(matches!(e, RuntimeError::Execution(_)), "{e:?}");
        assert!(
            e.to_string().contains(
                "a loop ended after 1 iterations, but its scan output `all` was sized for 5"
            ),
            "{e}"
        );
    }
}

#[test]
fn subgraphs_round_trip_through_the_text_format() {
    let mut g = text::parse(LOOP_WITH_IF).unwrap();
    tessera_ir::infer_shapes(&mut g).unwrap();
    let printed = text::print(&g);
    let again = text::parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(text::print(&again), printed);
    assert!(
        printed.contains("%next: f32[2] = If(%small, %a, %x)"),
        "{printed}"
    );
}
