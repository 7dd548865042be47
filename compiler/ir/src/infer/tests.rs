//! Unit tests for shape inference: one `check` per case, asserting the printed result type
//! or the error's kind and message.

use crate::testutil::{ints, B};
use crate::{Attr, Op, Tensor};

fn s(v: &str) -> Attr {
    Attr::String(v.to_string())
}

fn i(v: i64) -> Attr {
    Attr::Int(v)
}

/// Builds a one-node graph over inputs of the given types and returns the inferred type of
/// result `k`, or the error rendered as `kind: message`.
fn run(inputs: &[&str], op: Op, attrs: &[(&str, Attr)], k: usize, n_out: usize) -> String {
    let mut b = B::new();
    let ids: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(j, t)| Some(b.input(&format!("x{j}"), t)))
        .collect();
    let outs = b.node(op, &ids, n_out, attrs);
    match b.infer(outs[k]) {
        Ok(t) => t,
        Err(e) => format!("{}: {e}", e.kind()),
    }
}

fn one(inputs: &[&str], op: Op, attrs: &[(&str, Attr)]) -> String {
    run(inputs, op, attrs, 0, 1)
}

/// A node whose operands after the first are constants.
fn with_consts(
    input: &str,
    op: Op,
    consts: &[Option<Tensor>],
    attrs: &[(&str, Attr)],
    n_out: usize,
) -> Vec<String> {
    let mut b = B::new();
    let x = b.input("x", input);
    let mut ins = vec![Some(x)];
    for (j, c) in consts.iter().enumerate() {
        ins.push(c.clone().map(|t| b.konst(&format!("c{j}"), t)));
    }
    let outs = b.node(op, &ins, n_out, attrs);
    match crate::infer_shapes(&mut b.g) {
        Ok(()) => outs
            .iter()
            .map(|o| b.g.ty(*o).map(|t| t.to_string()).unwrap_or_default())
            .collect(),
        Err(e) => vec![format!("{}: {e}", e.kind())],
    }
}

fn t64(v: &[i64]) -> Option<Tensor> {
    Some(Tensor::from_i64(vec![v.len() as u64], v))
}

#[test]
fn broadcasting() {
    assert_eq!(one(&["f32[2,1,4]", "f32[3,1]"], Op::Add, &[]), "f32[2,3,4]");
    assert_eq!(one(&["f32[N,3]", "f32[1,3]"], Op::Mul, &[]), "f32[N,3]");
    assert_eq!(one(&["f32[N,1]", "f32[5]"], Op::Mul, &[]), "f32[N,5]");
    assert_eq!(one(&["f32[]", "f32[7]"], Op::Sub, &[]), "f32[7]");
    assert_eq!(one(&["i64[2,3]", "i64[3]"], Op::Less, &[]), "bool[2,3]");
    assert_eq!(
        one(&["bool[2,1]", "f16[3]", "f16[2,1]"], Op::Where, &[]),
        "f16[2,3]"
    );
    assert_eq!(
        one(&["f32[4]", "f32[2,1]", "f32[1]"], Op::Max, &[]),
        "f32[2,4]"
    );
    assert_eq!(one(&["f32[4]", "i32[4]"], Op::Pow, &[]), "f32[4]");
    assert_eq!(one(&["f32[4]"], Op::IsNaN, &[]), "bool[4]");
}

#[test]
fn broadcast_failure_names_node_and_operands() {
    assert_eq!(
        one(&["f32[2,3]", "f32[4]"], Op::Add, &[]),
        "broadcast: Add node \"n0\": cannot broadcast operand 0 (`A`: f32[2,3]) with operand 1 (`B`: f32[4]): dimension 3 vs 4"
    );
    assert_eq!(
        one(&["f32[2]", "i64[2]"], Op::Add, &[]),
        "shape-mismatch: Add node \"n0\": operand 0 (`A`: f32[2]) and operand 1 (`B`: i64[2]) must have the same dtype"
    );
}

#[test]
fn cast_uses_onnx_codes() {
    assert_eq!(one(&["f32[2]"], Op::Cast, &[("to", i(10))]), "f16[2]");
    assert_eq!(one(&["f32[2]"], Op::Cast, &[("to", i(16))]), "bf16[2]");
    assert_eq!(one(&["f32[2]"], Op::Cast, &[("to", i(22))]), "i4[2]");
    assert_eq!(
        one(&["f32[2]"], Op::Cast, &[("to", s("f8e5m2"))]),
        "f8e5m2[2]"
    );
    assert_eq!(
        one(&["f32[2]"], Op::Cast, &[("to", i(14))]),
        "bad-attr: attribute `to` of Cast node \"n0\" is 14, which is not a supported ONNX dtype code"
    );
}

#[test]
fn matmul_and_gemm() {
    assert_eq!(one(&["f32[2,3]", "f32[3,4]"], Op::MatMul, &[]), "f32[2,4]");
    assert_eq!(one(&["f32[3]", "f32[3,4]"], Op::MatMul, &[]), "f32[4]");
    assert_eq!(one(&["f32[2,3]", "f32[3]"], Op::MatMul, &[]), "f32[2]");
    assert_eq!(one(&["f32[3]", "f32[3]"], Op::MatMul, &[]), "f32[]");
    assert_eq!(
        one(&["f32[5,1,2,3]", "f32[4,3,6]"], Op::MatMul, &[]),
        "f32[5,4,2,6]"
    );
    assert_eq!(
        one(&["f32[B,S,64]", "f32[64,10]"], Op::MatMul, &[]),
        "f32[B,S,10]"
    );
    assert_eq!(
        one(&["i8[2,3]", "i8[3,4]"], Op::MatMulInteger, &[]),
        "i32[2,4]"
    );
    assert!(one(&["f32[2,3]", "f32[4,5]"], Op::MatMul, &[])
        .starts_with("shape-mismatch: MatMul node \"n0\": inner dimensions differ"));
    assert_eq!(
        one(
            &["f32[3,2]", "f32[4,3]", "f32[4]"],
            Op::Gemm,
            &[("transA", i(1)), ("transB", i(1))]
        ),
        "f32[2,4]"
    );
    assert!(one(
        &["f32[3,2]", "f32[3,4]", "f32[3]"],
        Op::Gemm,
        &[("transA", i(1))]
    )
    .contains("cannot be broadcast"));
}

#[test]
fn conv_output_sizes() {
    let conv = |x: &str, w: &str, attrs: &[(&str, Attr)]| one(&[x, w], Op::Conv, attrs);
    assert_eq!(
        conv("f32[1,3,32,32]", "f32[8,3,3,3]", &[]),
        "f32[1,8,30,30]"
    );
    assert_eq!(
        conv(
            "f32[1,3,32,32]",
            "f32[8,3,3,3]",
            &[("pads", ints(&[1, 1, 1, 1]))]
        ),
        "f32[1,8,32,32]"
    );
    assert_eq!(
        conv(
            "f32[1,3,32,32]",
            "f32[8,3,3,3]",
            &[("pads", ints(&[1, 1, 1, 1])), ("strides", ints(&[2, 2]))]
        ),
        "f32[1,8,16,16]"
    );
    assert_eq!(
        conv(
            "f32[1,3,7,7]",
            "f32[8,3,3,3]",
            &[("dilations", ints(&[2, 2]))]
        ),
        "f32[1,8,3,3]"
    );
    assert_eq!(
        conv(
            "f32[1,3,7,7]",
            "f32[8,3,3,3]",
            &[("auto_pad", s("SAME_UPPER")), ("strides", ints(&[2, 2]))]
        ),
        "f32[1,8,4,4]"
    );
    assert_eq!(
        conv(
            "f32[1,3,7,7]",
            "f32[8,3,3,3]",
            &[("auto_pad", s("SAME_LOWER"))]
        ),
        "f32[1,8,7,7]"
    );
    assert_eq!(
        conv(
            "f32[1,3,7,7]",
            "f32[8,3,3,3]",
            &[("auto_pad", s("VALID")), ("strides", ints(&[2, 2]))]
        ),
        "f32[1,8,3,3]"
    );
    assert_eq!(
        conv("f32[2,4,10]", "f32[6,2,3]", &[("group", i(2))]),
        "f32[2,6,8]"
    );
    assert_eq!(
        conv("f32[1,2,4,4,4]", "f32[3,2,2,2,2]", &[]),
        "f32[1,3,3,3,3]"
    );
    assert_eq!(
        conv("f32[N,3,H,8]", "f32[8,3,3,3]", &[]),
        "f32[N,8,n0_0_2,6]"
    );
    assert_eq!(
        conv("f32[1,4,8,8]", "f32[8,3,3,3]", &[]),
        "shape-mismatch: Conv node \"n0\": operand 0 (`X`: f32[1,4,8,8]) has 4 channels, but operand 1 (`W`: f32[8,3,3,3]) expects 3 x group 1"
    );
    assert_eq!(
        one(
            &["f32[1,2,3,3]", "f32[2,4,3,3]"],
            Op::ConvTranspose,
            &[("strides", ints(&[2, 2]))]
        ),
        "f32[1,4,7,7]"
    );
    assert_eq!(
        one(
            &["f32[1,2,3,3]", "f32[2,4,3,3]"],
            Op::ConvTranspose,
            &[
                ("strides", ints(&[3, 2])),
                ("output_padding", ints(&[1, 1])),
                ("pads", ints(&[1, 1, 1, 1]))
            ]
        ),
        "f32[1,4,8,6]"
    );
}

#[test]
fn pool_output_sizes() {
    let pool = |x: &str, attrs: &[(&str, Attr)]| one(&[x], Op::MaxPool, attrs);
    let k2 = ("kernel_shape", ints(&[2, 2]));
    let k3 = ("kernel_shape", ints(&[3, 3]));
    assert_eq!(
        pool("f32[1,3,32,32]", &[k2.clone(), ("strides", ints(&[2, 2]))]),
        "f32[1,3,16,16]"
    );
    assert_eq!(
        pool(
            "f32[1,1,5,5]",
            &[k3.clone(), ("strides", ints(&[2, 2])), ("ceil_mode", i(1))]
        ),
        "f32[1,1,2,2]"
    );
    assert_eq!(
        pool(
            "f32[1,1,4,4]",
            &[k3.clone(), ("strides", ints(&[2, 2])), ("ceil_mode", i(1))]
        ),
        "f32[1,1,2,2]"
    );
    assert_eq!(
        pool("f32[1,1,4,4]", &[k3.clone(), ("strides", ints(&[2, 2]))]),
        "f32[1,1,1,1]"
    );
    // The last window would start in the end padding, so ceil_mode drops it.
    assert_eq!(
        pool(
            "f32[1,1,2,2]",
            &[
                ("kernel_shape", ints(&[1, 1])),
                ("strides", ints(&[2, 2])),
                ("ceil_mode", i(1))
            ]
        ),
        "f32[1,1,1,1]"
    );
    assert_eq!(
        pool(
            "f32[1,1,5,5]",
            &[
                k3.clone(),
                ("auto_pad", s("SAME_UPPER")),
                ("strides", ints(&[2, 2]))
            ]
        ),
        "f32[1,1,3,3]"
    );
    assert_eq!(
        pool("f32[1,1,5,5]", &[k2.clone(), ("pads", ints(&[1, 1, 1, 1]))]),
        "f32[1,1,6,6]"
    );
    assert_eq!(
        run(
            &["f32[1,1,4,4]"],
            Op::MaxPool,
            std::slice::from_ref(&k2),
            1,
            2
        ),
        "i64[1,1,3,3]"
    );
    assert_eq!(
        one(
            &["f32[1,3,5,5]"],
            Op::AveragePool,
            &[k3.clone(), ("dilations", ints(&[2, 2]))]
        ),
        "f32[1,3,1,1]"
    );
    assert_eq!(
        one(&["f32[2,3,5,5]"], Op::GlobalAveragePool, &[]),
        "f32[2,3,1,1]"
    );
    assert_eq!(
        pool("f32[1,1,2,2]", &[k3]),
        "shape-mismatch: MaxPool node \"n0\": spatial dim 0 of operand 0 (`X`: f32[1,1,2,2]) is 2, smaller than the dilated kernel (3) plus padding"
    );
    assert_eq!(
        pool("f32[1,1,4,4]", &[]),
        "bad-attr: attribute `kernel_shape` of MaxPool node \"n0\" is required"
    );
}

#[test]
fn normalisations() {
    assert_eq!(
        run(
            &["f16[2,3,4]", "f16[4]"],
            Op::LayerNormalization,
            &[("axis", i(-1))],
            1,
            3
        ),
        "f32[2,3,1]"
    );
    assert_eq!(
        one(
            &["f32[2,3,4,4]", "f32[3]", "f32[3]", "f32[3]", "f32[3]"],
            Op::BatchNormalization,
            &[]
        ),
        "f32[2,3,4,4]"
    );
    assert_eq!(
        one(&["f32[2,3]"], Op::Softmax, &[("axis", i(1))]),
        "f32[2,3]"
    );
    assert!(one(&["f32[2,3]"], Op::Softmax, &[("axis", i(2))])
        .contains("axis 2 is out of range for rank 2"));
}

#[test]
fn reductions() {
    let r = |axes: Option<Tensor>, attrs: &[(&str, Attr)]| {
        with_consts("f32[2,3,4]", Op::ReduceSum, &[axes], attrs, 1)[0].clone()
    };
    assert_eq!(r(t64(&[1]), &[]), "f32[2,1,4]");
    assert_eq!(r(t64(&[-1, 0]), &[("keepdims", i(0))]), "f32[3]");
    assert_eq!(r(None, &[]), "f32[1,1,1]");
    assert_eq!(r(None, &[("keepdims", i(0))]), "f32[]");
    assert_eq!(r(t64(&[]), &[("noop_with_empty_axes", i(1))]), "f32[2,3,4]");
    assert_eq!(
        r(t64(&[3]), &[]),
        "shape-mismatch: ReduceSum node \"n0\": axis 3 is out of range for rank 3"
    );
    assert_eq!(
        one(
            &["f32[2,3,4]"],
            Op::ArgMax,
            &[("axis", i(1)), ("keepdims", i(0))]
        ),
        "i64[2,4]"
    );
    assert_eq!(
        one(&["f32[2,3,4]"], Op::ArgMin, &[("axis", i(-1))]),
        "i64[2,3,1]"
    );
    let k = Some(Tensor::from_i64(vec![1], &[2]));
    assert_eq!(
        with_consts("f32[3,5]", Op::TopK, &[k], &[], 2),
        vec!["f32[3,2]", "i64[3,2]"]
    );
}

#[test]
fn not_constant_operand_is_named() {
    let mut b = B::new();
    let x = b.input("x", "f32[2,3]");
    let shape = b.input("shape", "i64[2]");
    let mut g_node = b.node(Op::Reshape, &[Some(x), Some(shape)], 1, &[]);
    b.g.nodes[0].name = "r".into();
    let err = crate::infer_shapes(&mut b.g).unwrap_err();
    assert_eq!(
        err.to_string(),
        "operand 1 (`shape`) of Reshape node \"r\" must be known at compile time"
    );
    g_node.clear();
}

#[test]
fn reshape() {
    let r = |x: &str, shape: &[i64], attrs: &[(&str, Attr)]| {
        with_consts(x, Op::Reshape, &[t64(shape)], attrs, 1)[0].clone()
    };
    assert_eq!(r("f32[2,3,4]", &[0, -1], &[]), "f32[2,12]");
    assert_eq!(r("f32[2,3,4]", &[-1], &[]), "f32[24]");
    assert_eq!(r("f32[2,3,4]", &[4, 0, 2], &[]), "f32[4,3,2]");
    assert_eq!(r("f32[0,3]", &[3, 0], &[("allowzero", i(1))]), "f32[3,0]");
    assert_eq!(r("f32[N,3,4]", &[0, -1], &[]), "f32[N,12]");
    assert_eq!(r("f32[N,3,4]", &[-1, 4], &[]), "f32[3*N,4]");
    assert_eq!(r("f32[N,12]", &[0, 3, 4], &[]), "f32[N,3,4]");
    assert_eq!(
        r("f32[2,3]", &[4, -1], &[]),
        "shape-mismatch: Reshape node \"n0\": cannot reshape operand 0 (`data`: f32[2,3]) into [4, -1]"
    );
    assert_eq!(
        r("f32[2,3]", &[-1, -1], &[]),
        "bad-operand: operand 1 (`shape`) of Reshape node \"n0\" is [-1, -1]; at most one dimension may be -1"
    );
    assert_eq!(
        one(&["f32[2,3,4,5]"], Op::Flatten, &[("axis", i(2))]),
        "f32[6,20]"
    );
    assert_eq!(
        one(&["f32[2,3,4,5]"], Op::Flatten, &[("axis", i(0))]),
        "f32[1,120]"
    );
    assert_eq!(one(&["f32[N,3,4]"], Op::Flatten, &[]), "f32[N,12]");
}

#[test]
fn transpose_squeeze_unsqueeze() {
    assert_eq!(one(&["f32[2,3,4]"], Op::Transpose, &[]), "f32[4,3,2]");
    assert_eq!(
        one(
            &["f32[2,3,4]"],
            Op::Transpose,
            &[("perm", ints(&[1, 0, 2]))]
        ),
        "f32[3,2,4]"
    );
    assert!(one(
        &["f32[2,3,4]"],
        Op::Transpose,
        &[("perm", ints(&[1, 1, 2]))]
    )
    .contains("is not a permutation"));
    assert_eq!(
        with_consts("f32[1,3,1,4]", Op::Squeeze, &[None], &[], 1)[0],
        "f32[3,4]"
    );
    assert_eq!(
        with_consts("f32[1,3,1,4]", Op::Squeeze, &[t64(&[-2])], &[], 1)[0],
        "f32[1,3,4]"
    );
    assert!(
        with_consts("f32[1,3,1,4]", Op::Squeeze, &[t64(&[1])], &[], 1)[0]
            .contains("cannot squeeze axis 1")
    );
    assert_eq!(
        with_consts("f32[3,4]", Op::Unsqueeze, &[t64(&[0, -1])], &[], 1)[0],
        "f32[1,3,4,1]"
    );
    assert_eq!(
        with_consts("f32[3,4]", Op::Unsqueeze, &[t64(&[1, 3])], &[], 1)[0],
        "f32[3,1,4,1]"
    );
}

#[test]
fn concat_and_split() {
    assert_eq!(
        one(&["f32[2,3]", "f32[2,5]"], Op::Concat, &[("axis", i(-1))]),
        "f32[2,8]"
    );
    assert_eq!(
        one(&["f32[N,3]", "f32[2,3]"], Op::Concat, &[("axis", i(0))]),
        "f32[N+2,3]"
    );
    assert!(
        one(&["f32[2,3]", "f32[3,5]"], Op::Concat, &[("axis", i(1))])
            .contains("differs from operand 0 in dim 0")
    );
    assert_eq!(
        with_consts("f32[7,2]", Op::Split, &[None], &[("num_outputs", i(3))], 3),
        vec!["f32[3,2]", "f32[3,2]", "f32[1,2]"]
    );
    assert_eq!(
        with_consts("f32[2,6]", Op::Split, &[None], &[("axis", i(1))], 2),
        vec!["f32[2,3]", "f32[2,3]"]
    );
    assert_eq!(
        with_consts("f32[6]", Op::Split, &[t64(&[1, 5])], &[], 2),
        vec!["f32[1]", "f32[5]"]
    );
    assert!(with_consts("f32[6]", Op::Split, &[t64(&[1, 4])], &[], 2)[0]
        .contains("sums to 5, but axis 0 has 6"));
}

#[test]
fn slice() {
    let sl = |x: &str, c: &[Option<Tensor>]| with_consts(x, Op::Slice, c, &[], 1)[0].clone();
    assert_eq!(sl("f32[10,5]", &[t64(&[1, 0]), t64(&[3, 10])]), "f32[2,5]");
    assert_eq!(sl("f32[10]", &[t64(&[-3]), t64(&[i64::MAX])]), "f32[3]");
    assert_eq!(sl("f32[10]", &[t64(&[-100]), t64(&[100])]), "f32[10]");
    assert_eq!(
        sl("f32[10]", &[t64(&[0]), t64(&[10]), t64(&[0]), t64(&[3])]),
        "f32[4]"
    );
    assert_eq!(
        sl(
            "f32[10]",
            &[t64(&[-1]), t64(&[i64::MIN]), t64(&[0]), t64(&[-1])]
        ),
        "f32[10]"
    );
    assert_eq!(
        sl("f32[10]", &[t64(&[8]), t64(&[1]), t64(&[0]), t64(&[-3])]),
        "f32[3]"
    );
    assert_eq!(
        sl("f32[10,4]", &[t64(&[1]), t64(&[-1]), t64(&[-1])]),
        "f32[10,2]"
    );
    assert_eq!(sl("f32[10]", &[t64(&[5]), t64(&[2])]), "f32[0]");
    assert_eq!(sl("f32[N,4]", &[t64(&[0]), t64(&[i64::MAX])]), "f32[N,4]");
    assert!(sl("f32[10]", &[t64(&[0]), t64(&[5]), t64(&[0]), t64(&[0])])
        .contains("contains a zero step"));
}

#[test]
fn gather_expand_pad_tile() {
    assert_eq!(
        one(&["f32[5,4,3]", "i64[2,2]"], Op::Gather, &[("axis", i(1))]),
        "f32[5,2,2,3]"
    );
    assert_eq!(one(&["f32[5,4]", "i64[]"], Op::Gather, &[]), "f32[4]");
    assert_eq!(
        one(&["f32[2,3,4]", "i64[2,2]"], Op::GatherND, &[]),
        "f32[2,4]"
    );
    assert_eq!(
        with_consts("f32[3,1]", Op::Expand, &[t64(&[2, 1, 6])], &[], 1)[0],
        "f32[2,3,6]"
    );
    assert!(
        with_consts("f32[3,2]", Op::Expand, &[t64(&[3, 4])], &[], 1)[0]
            .starts_with("broadcast: Expand node")
    );
    assert_eq!(
        with_consts("f32[2,3]", Op::Pad, &[t64(&[1, 0, 2, 1])], &[], 1)[0],
        "f32[5,4]"
    );
    assert_eq!(
        with_consts(
            "f32[2,3]",
            Op::Pad,
            &[t64(&[1, 1]), None, t64(&[-1])],
            &[],
            1
        )[0],
        "f32[2,5]"
    );
    assert_eq!(
        with_consts("f32[2,3]", Op::Tile, &[t64(&[2, 3])], &[], 1)[0],
        "f32[4,9]"
    );
}

#[test]
fn meta_ops() {
    assert_eq!(one(&["f32[2,3,4]"], Op::Shape, &[]), "i64[3]");
    assert_eq!(
        one(&["f32[2,3,4]"], Op::Shape, &[("start", i(-2))]),
        "i64[2]"
    );
    assert_eq!(
        one(
            &["f32[2,3,4]"],
            Op::Shape,
            &[("start", i(1)), ("end", i(-1))]
        ),
        "i64[1]"
    );
    assert_eq!(one(&["f32[2,3,4]"], Op::Size, &[]), "i64[]");
    let mut b = B::new();
    let c = b.node1(
        Op::Constant,
        &[],
        &[("value_floats", Attr::Floats(vec![1.0, 2.0]))],
    );
    assert_eq!(b.infer(c).unwrap(), "f32[2]");
    let mut b = B::new();
    let sh = b.ints("shape", &[2, 3]);
    let c = b.node1(
        Op::ConstantOfShape,
        &[sh],
        &[("value", Attr::Tensor(Tensor::from_i64(vec![1], &[7])))],
    );
    assert_eq!(b.infer(c).unwrap(), "i64[2,3]");
    let range = |s: i64, l: i64, d: i64| {
        let mut b = B::new();
        let ids: Vec<_> = [s, l, d]
            .iter()
            .enumerate()
            .map(|(k, &v)| b.konst(&format!("r{k}"), Tensor::from_i64(vec![], &[v])))
            .collect();
        let r = b.node1(Op::Range, &ids, &[]);
        b.infer(r).unwrap_or_else(|e| e.to_string())
    };
    assert_eq!(range(0, 10, 3), "i64[4]");
    assert_eq!(range(10, 0, -3), "i64[4]");
    assert_eq!(range(10, 0, 3), "i64[0]");
    let mut b = B::new();
    let ids: Vec<_> = [1.0f32, 2.0, 0.3]
        .iter()
        .enumerate()
        .map(|(k, &v)| b.konst(&format!("r{k}"), Tensor::from_f32(vec![], &[v])))
        .collect();
    let r = b.node1(Op::Range, &ids, &[]);
    assert_eq!(b.infer(r).unwrap(), "f32[4]");
}

#[test]
fn quantization() {
    assert_eq!(one(&["f32[4]", "f32[]"], Op::QuantizeLinear, &[]), "u8[4]");
    assert_eq!(
        one(&["f32[4]", "f32[]", "i8[]"], Op::QuantizeLinear, &[]),
        "i8[4]"
    );
    assert_eq!(
        one(
            &["f32[4]", "f32[]"],
            Op::QuantizeLinear,
            &[("output_dtype", i(21))]
        ),
        "u4[4]"
    );
    assert_eq!(
        one(&["i8[4]", "f16[]", "i8[]"], Op::DequantizeLinear, &[]),
        "f16[4]"
    );
    assert_eq!(
        run(&["f32[4]"], Op::DynamicQuantizeLinear, &[], 1, 3),
        "f32[]"
    );
}

#[test]
fn resize_and_friends() {
    let rs = |c: &[Option<Tensor>], attrs: &[(&str, Attr)]| {
        with_consts("f32[1,3,4,6]", Op::Resize, c, attrs, 1)[0].clone()
    };
    let f = |v: &[f32]| Some(Tensor::from_f32(vec![v.len() as u64], v));
    assert_eq!(rs(&[None, f(&[1.0, 1.0, 2.0, 0.5])], &[]), "f32[1,3,8,3]");
    assert_eq!(rs(&[None, None, t64(&[1, 3, 5, 5])], &[]), "f32[1,3,5,5]");
    assert_eq!(
        rs(
            &[None, None, t64(&[8, 8])],
            &[
                ("axes", ints(&[2, 3])),
                ("keep_aspect_ratio_policy", s("not_larger"))
            ]
        ),
        "f32[1,3,5,8]"
    );
    assert_eq!(
        one(&["f32[1,8,2,3]"], Op::DepthToSpace, &[("blocksize", i(2))]),
        "f32[1,2,4,6]"
    );
    assert_eq!(
        one(&["f32[1,2,4,6]"], Op::SpaceToDepth, &[("blocksize", i(2))]),
        "f32[1,8,2,3]"
    );
    let oh = with_consts(
        "i64[2,3]",
        Op::OneHot,
        &[t64(&[5]), Some(Tensor::from_f32(vec![2], &[0.0, 1.0]))],
        &[("axis", i(1))],
        1,
    );
    assert_eq!(oh[0], "f32[2,5,3]");
    assert_eq!(run(&["f32[3,4]"], Op::Dropout, &[], 1, 2), "bool[3,4]");
}

#[test]
fn absurd_sizes_are_refused_before_allocation() {
    // 2^40 elements: a ConstantOfShape that would allocate 4 TiB.
    let mut b = B::new();
    let sh = b.ints("shape", &[1 << 20, 1 << 20]);
    let c = b.node1(Op::ConstantOfShape, &[sh], &[]);
    let err = b.infer(c).unwrap_err();
    assert_eq!(err.kind(), "too-large");
    assert_eq!(
        err.to_string(),
        "result 0 (%n0_0) of ConstantOfShape node \"n0\" would have shape [1048576,1048576], which exceeds the limit of 68719476736 elements"
    );
    // An input declared that large.
    let mut b = B::new();
    let x = b.input("x", "f32[1099511627776]");
    let y = b.node1(Op::Relu, &[x], &[]);
    assert_eq!(
        b.infer(y).unwrap_err().to_string(),
        "value %x would have shape [1099511627776], which exceeds the limit of 68719476736 elements"
    );
    // Products that overflow u64 are refused too.
    let mut b = B::new();
    let x = b.input("x", "f32[4294967296,4294967296,16]");
    let y = b.node1(Op::Relu, &[x], &[]);
    assert_eq!(b.infer(y).unwrap_err().kind(), "too-large");
}

#[test]
fn arity_and_attributes_checked() {
    assert_eq!(
        one(&["f32[2]"], Op::Add, &[]),
        "arity: Add node \"n0\" takes exactly 2 operands, but has 1"
    );
    assert_eq!(
        one(&["f32[2]"], Op::Relu, &[("alpha", Attr::Float(1.0))]),
        "unknown-attr: Relu node \"n0\" has unknown attribute `alpha` (known attributes of Relu: none)"
    );
}

#[test]
fn extreme_attributes_are_errors_not_panics() {
    let big = ints(&[i64::MAX, i64::MAX]);
    for (name, v) in [
        ("strides", big.clone()),
        ("dilations", big.clone()),
        ("pads", ints(&[i64::MAX; 4])),
        ("kernel_shape", big),
    ] {
        let r = one(
            &["f32[1,1,5,5]", "f32[1,1,3,3]"],
            Op::Conv,
            &[(name, v.clone())],
        );
        assert!(!r.is_empty());
        let _ = one(
            &["f32[1,1,5,5]"],
            Op::MaxPool,
            &[
                ("kernel_shape", ints(&[2, 2])),
                (name, v.clone()),
                ("ceil_mode", i(1)),
            ],
        );
        let _ = one(
            &["f32[1,1,5,5]", "f32[1,1,3,3]"],
            Op::ConvTranspose,
            &[(name, v)],
        );
    }
    let sl = with_consts(
        "f32[10]",
        Op::Slice,
        &[
            t64(&[i64::MIN]),
            t64(&[i64::MAX]),
            t64(&[0]),
            t64(&[i64::MIN]),
        ],
        &[],
        1,
    );
    assert_eq!(sl[0], "f32[0]");
    let sl = with_consts(
        "f32[10]",
        Op::Slice,
        &[
            t64(&[i64::MAX]),
            t64(&[i64::MIN]),
            t64(&[0]),
            t64(&[i64::MIN]),
        ],
        &[],
        1,
    );
    assert_eq!(sl[0], "f32[1]");
    assert!(one(
        &["f32[1,4,2,2]"],
        Op::DepthToSpace,
        &[("blocksize", i(1 << 40))]
    )
    .contains("not divisible"));
}

#[test]
fn space_to_depth_modes() {
    for mode in ["DCR", "CRD"] {
        let r = one(
            &["f32[1,2,4,6]"],
            Op::SpaceToDepth,
            &[("blocksize", i(2)), ("mode", s(mode))],
        );
        assert_eq!(r, "f32[1,8,2,3]");
    }
    assert_eq!(
        one(
            &["f32[1,2,4,6]"],
            Op::SpaceToDepth,
            &[("blocksize", i(2)), ("mode", s("XYZ"))]
        ),
        "bad-attr: attribute `mode` of SpaceToDepth node \"n0\" is `XYZ`; expected DCR or CRD"
    );
}
