//! Host ops end to end: string ops, and selections whose results come back with the size
//! produced (within the plan's capacity), on host and interp; a kernel that would consume such
//! a result is refused as unsupported, naming the value.

use tessera_ir::{text, DType, Tensor};

fn graph(src: &str) -> tessera_ir::Graph {
    let mut g = text::parse(src).unwrap_or_else(|e| panic!("parse: {e}"));
    tessera_ir::infer_shapes(&mut g).unwrap_or_else(|e| panic!("infer: {e}"));
    g
}

#[test]
fn nonzero_and_unique_return_the_size_the_data_gives() {
    let src = "graph @g(%x: f32[2,3]) -> (%nz, %u, %idx, %inv, %cnt) {
  %nz = NonZero(%x)
  %u, %idx, %inv, %cnt = Unique(%x) {sorted = 1}
}
";
    let g = graph(src);
    let x = Tensor::from_f32(vec![2, 3], &[0.0, 2.0, 2.0, 0.0, 5.0, 1.0]);
    for target in ["host", "interp"] {
        let a = tessera_driver::compile_graph(&g, "test", target).unwrap();
        let m = tessera_driver::load(a, target).unwrap();
        let out = m.run(&[x.clone()]).unwrap();
        assert_eq!(out[0].dims, vec![2, 4], "{target}");
        assert_eq!(out[0].to_i64_vec().unwrap(), vec![0, 0, 1, 1, 1, 2, 1, 2]);
        assert_eq!(out[1].dims, vec![4]);
        assert_eq!(out[1].to_f64_vec().unwrap(), vec![0.0, 1.0, 2.0, 5.0]);
        assert_eq!(out[2].to_i64_vec().unwrap(), vec![0, 5, 1, 4]);
        assert_eq!(out[3].to_i64_vec().unwrap(), vec![0, 2, 2, 0, 3, 1]);
        assert_eq!(out[4].to_i64_vec().unwrap(), vec![2, 1, 2, 1]);
        // A second run with other data gets its own sizes.
        let out = m
            .run(&[Tensor::new(DType::F32, vec![2, 3], vec![0; 24])])
            .unwrap();
        assert_eq!(out[0].dims, vec![2, 0], "{target}");
        assert_eq!(out[1].dims, vec![1]);
    }
}

#[test]
fn a_kernel_reading_a_run_time_sized_value_is_unsupported() {
    let g = graph("graph @g(%x: f32[4], %c: bool[4]) -> (%y) {\n  %s = Compress(%x, %c) {axis = 0}\n  %y = Relu(%s)\n}\n");
    let e = tessera_driver::compile_graph(&g, "test", "interp").unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    assert!(
        e.to_string().contains(
            "value `s` has a size known only at run time; only a graph output may have one"
        ),
        "{e}"
    );
}

#[test]
fn string_ops_run_on_the_host_with_strings_in_and_out() {
    let src = "graph @g(%a: string[2], %b: string[2]) -> (%cat, %eq, %m, %parts, %n) {
  const %tail = dense<string[1]: [\"!\"]>
  %ab = StringConcat(%a, %b)
  %cat = StringConcat(%ab, %tail)
  %eq = Equal(%a, %b)
  %m = RegexFullMatch(%a) {pattern = \"[a-z]+\"}
  %parts, %n = StringSplit(%cat) {delimiter = \"-\"}
}
";
    let g = graph(src);
    let s = |v: &[&str]| {
        Tensor::from_strings(
            vec![v.len() as u64],
            v.iter().map(|x| x.to_string()).collect(),
        )
    };
    for target in ["host", "interp"] {
        let a = tessera_driver::compile_graph(&g, "test", target).unwrap();
        let a = tessera_runtime::Artifact::decode(&a.encode()).unwrap();
        let m = tessera_driver::load(a, target).unwrap();
        let out = m.run(&[s(&["ab", "x-y"]), s(&["ab", "-z"])]).unwrap();
        assert_eq!(out[0].strings.as_slice(), ["abab!", "x-y-z!"], "{target}");
        assert_eq!(out[1].bytes.as_slice(), [1, 0]);
        assert_eq!(out[2].bytes.as_slice(), [1, 0]);
        assert_eq!(out[3].dims, vec![2, 3]);
        assert_eq!(out[3].strings.as_slice(), ["abab!", "", "", "x", "y", "z!"]);
        assert_eq!(out[4].to_i64_vec().unwrap(), vec![1, 3]);
    }
}

#[test]
fn an_invalid_regex_is_refused_at_compile_time() {
    let g = graph("graph @g(%a: string[1]) -> (%m) {\n  %m = RegexFullMatch(%a) {pattern = \"(unclosed\"}\n}\n");
    let e = tessera_driver::compile_graph(&g, "test", "interp").unwrap_err();
    assert!(!e.is_unsupported(), "{e}");
    assert!(
        e.to_string()
            .contains("RegexFullMatch node (unnamed): attribute `pattern` is not a valid regex"),
        "{e}"
    );
}
