//! Host selections end to end: results whose size depends on the data come back with the size
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
        let out = m.run(&[Tensor::new(DType::F32, vec![2, 3], vec![0; 24])]).unwrap();
        assert_eq!(out[0].dims, vec![2, 0], "{target}");
        assert_eq!(out[1].dims, vec![1]);
    }
}

#[test]
fn a_kernel_reading_a_run_time_sized_value_is_unsupported() {
    let g = graph("graph @g(%x: f32[4], %c: bool[4]) -> (%y) {\n  %s = Compress(%x, %c) {axis = 0}\n  %y = Relu(%s)\n}\n");
    let e = tessera_driver::compile_graph(&g, "test", "interp").unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    assert!(e.to_string().contains("value `s` has a size known only at run time; only a graph output may have one"), "{e}");
}
