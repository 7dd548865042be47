//! Import tests: initializers, types and symbols, bound inputs, and one test per opset
//! upgrade, each checking that graph IR sees the newest form of the op.

mod common;

use common::*;
use std::collections::BTreeMap;
use tessera_ir::{Attr, Dim, Graph, Node, Op, Tensor};
use tessera_onnx::{import_bytes, ImportOptions};

fn import(opset: i64, g: G) -> Graph {
    import_opts(opset, g, &folding())
}

/// Options that fold with the driver's folder, as the pipeline imports.
fn folding() -> ImportOptions {
    ImportOptions {
        folder: Some(tessera_driver::fold::InterpFolder::shared()),
        ..Default::default()
    }
}

fn import_opts(opset: i64, g: G, opts: &ImportOptions) -> Graph {
    match import_bytes(&bytes(&model(opset, g)), None, opts) {
        Ok(g) => g,
        Err(e) => panic!("import failed: {e}"),
    }
}

fn only(g: &Graph, op: Op) -> &Node {
    let v: Vec<_> = g.nodes.iter().filter(|n| n.op == op).collect();
    assert_eq!(
        v.len(),
        1,
        "expected one {op} node in {:?}",
        g.nodes.iter().map(|n| n.op).collect::<Vec<_>>()
    );
    v[0]
}

fn operand_ints(g: &Graph, n: &Node, k: usize) -> Vec<i64> {
    let id = n
        .input(k)
        .unwrap_or_else(|| panic!("{} has no operand {k}", n.label()));
    g.konst(id)
        .and_then(|t| t.to_i64_vec())
        .unwrap_or_else(|| panic!("operand {k} is not constant"))
}

fn out_dims(g: &Graph, k: usize) -> Vec<u64> {
    g.ty(g.outputs[k])
        .and_then(|t| t.shape.as_static())
        .expect("static output")
}

#[test]
fn initializers_are_constants_not_inputs() {
    let g = import(
        17,
        G {
            nodes: vec![node("Add", "add", &["x", "w"], &["y"], vec![])],
            // Older exporters list initializers as inputs too.
            inputs: vec![fixed("x", F32, &[2, 3]), fixed("w", F32, &[2, 3])],
            outputs: vec![out("y")],
            inits: vec![f32_init("w", &[2, 3], &[1., 2., 3., 4., 5., 6.])],
        },
    );
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.value(g.inputs[0]).name, "x");
    let w = g.find_value("w").unwrap();
    assert_eq!(
        g.konst(w).unwrap().to_f64_vec().unwrap(),
        vec![1., 2., 3., 4., 5., 6.]
    );
    assert_eq!(out_dims(&g, 0), vec![2, 3]);
    assert_eq!(g.nodes[0].name, "add");
}

#[test]
fn symbolic_dims_stay_symbolic_unless_overridden() {
    let gb = || G {
        nodes: vec![node("Relu", "r", &["x"], &["y"], vec![])],
        inputs: vec![vi("x", F32, &[D::S("N"), D::N(4)])],
        outputs: vec![out("y")],
        inits: vec![],
    };
    let g = import(17, gb());
    let ty = g.ty(g.inputs[0]).unwrap();
    assert_eq!(ty.shape.0, vec![Dim::Sym("N".into()), Dim::Fixed(4)]);

    let opts = ImportOptions {
        input_shapes: BTreeMap::from([("x".into(), vec![8, 4])]),
        ..folding()
    };
    let g = import_opts(17, gb(), &opts);
    assert_eq!(out_dims(&g, 0), vec![8, 4]);

    let bad = ImportOptions {
        input_shapes: BTreeMap::from([("x".into(), vec![8, 5])]),
        ..folding()
    };
    let err = import_bytes(&bytes(&model(17, gb())), None, &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"x\""), "{err}");
}

#[test]
fn bound_input_feeding_a_shape_operand_is_bound() {
    let gb = || G {
        nodes: vec![node("Reshape", "rs", &["x", "s"], &["y"], vec![])],
        inputs: vec![fixed("x", F32, &[2, 3]), vi("s", I64, &[D::N(2)])],
        outputs: vec![out("y")],
        inits: vec![],
    };
    let shape = Tensor::from_i64(vec![2], &[3, 2]);
    let opts = ImportOptions {
        bound_inputs: BTreeMap::from([
            ("s".into(), shape.clone()),
            ("x".into(), Tensor::from_f32(vec![2, 3], &[0.; 6])),
        ]),
        ..folding()
    };
    let g = import_opts(17, gb(), &opts);
    let s = g.find_value("s").unwrap();
    let x = g.find_value("x").unwrap();
    // Both stay runtime inputs; only `s` feeds a shape operand, so only it is bound.
    assert_eq!(g.inputs, vec![x, s]);
    assert_eq!(g.bound_inputs, vec![s]);
    assert_eq!(g.konst(s), Some(&shape));
    assert!(g.konst(x).is_none());
    assert_eq!(out_dims(&g, 0), vec![3, 2]);
}

#[test]
fn constant_nodes_become_constants() {
    let g = import(
        17,
        G {
            nodes: vec![
                node(
                    "Constant",
                    "c",
                    &[],
                    &["k"],
                    vec![a_tensor("value", f32_init("", &[3], &[1., 2., 3.]))],
                ),
                node(
                    "Constant",
                    "c2",
                    &[],
                    &["axes"],
                    vec![a_ints("value_ints", &[0])],
                ),
                node("Mul", "m", &["x", "k"], &["y"], vec![]),
                node("Unsqueeze", "u", &["y", "axes"], &["z"], vec![]),
            ],
            inputs: vec![fixed("x", F32, &[3])],
            outputs: vec![out("z")],
            inits: vec![],
        },
    );
    assert!(g.nodes.iter().all(|n| n.op != Op::Constant));
    assert_eq!(out_dims(&g, 0), vec![1, 3]);
}

#[test]
fn clip_before_11_moves_min_max_to_operands() {
    let g = import(
        6,
        G {
            nodes: vec![node(
                "Clip",
                "c",
                &["x"],
                &["y"],
                vec![a_float("min", -1.0), a_float("max", 2.5)],
            )],
            inputs: vec![fixed("x", F32, &[4])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    let n = only(&g, Op::Clip);
    assert!(n.attrs.is_empty());
    let min = g.konst(n.input(1).unwrap()).unwrap();
    let max = g.konst(n.input(2).unwrap()).unwrap();
    assert_eq!(min.to_f64_vec().unwrap(), vec![-1.0]);
    assert_eq!(max.to_f64_vec().unwrap(), vec![2.5]);
    assert_eq!(min.dtype, tessera_ir::DType::F32);
}

#[test]
fn clip_min_of_untyped_value_goes_through_castlike() {
    let g = import(
        6,
        G {
            nodes: vec![
                node("Relu", "r", &["x"], &["t"], vec![]),
                node("Clip", "c", &["t"], &["y"], vec![a_float("max", 6.0)]),
            ],
            inputs: vec![fixed(
                "x",
                tessera_onnx::dtype_to_onnx(tessera_ir::DType::F16),
                &[4],
            )],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    let n = only(&g, Op::Clip);
    assert!(n.input(1).is_none());
    let max = n.input(2).unwrap();
    assert_eq!(g.ty(max).unwrap().dtype, tessera_ir::DType::F16);
}

#[test]
fn reduce_axes_attribute_becomes_operand() {
    for (op, opset) in [
        ("ReduceSum", 12),
        ("ReduceMean", 17),
        ("ReduceMax", 13),
        ("ReduceL2", 11),
    ] {
        let g = import(
            opset,
            G {
                nodes: vec![node(
                    op,
                    "r",
                    &["x"],
                    &["y"],
                    vec![a_ints("axes", &[1]), a_int("keepdims", 0)],
                )],
                inputs: vec![fixed("x", F32, &[2, 3, 4])],
                outputs: vec![out("y")],
                inits: vec![],
            },
        );
        let n = only(&g, Op::from_name(op).unwrap());
        assert_eq!(operand_ints(&g, n, 1), vec![1], "{op}");
        assert!(!n.attrs.contains_key("axes"));
        assert_eq!(out_dims(&g, 0), vec![2, 4], "{op} opset {opset}");
    }
    // At opset 13 ReduceSum already takes axes as an operand; no axes means all axes.
    let g = import(
        13,
        G {
            nodes: vec![node(
                "ReduceSum",
                "r",
                &["x"],
                &["y"],
                vec![a_int("keepdims", 0)],
            )],
            inputs: vec![fixed("x", F32, &[2, 3])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    assert_eq!(out_dims(&g, 0), Vec::<u64>::new());
}

#[test]
fn squeeze_unsqueeze_axes_attribute_becomes_operand() {
    let g = import(
        11,
        G {
            nodes: vec![
                node(
                    "Unsqueeze",
                    "u",
                    &["x"],
                    &["t"],
                    vec![a_ints("axes", &[0, 3])],
                ),
                node("Squeeze", "s", &["t"], &["y"], vec![a_ints("axes", &[0])]),
            ],
            inputs: vec![fixed("x", F32, &[2, 3])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    assert_eq!(operand_ints(&g, only(&g, Op::Unsqueeze), 1), vec![0, 3]);
    assert_eq!(out_dims(&g, 0), vec![2, 3, 1]);
}

#[test]
fn split_attribute_becomes_operand_and_equal_split_gets_num_outputs() {
    let g = import(
        11,
        G {
            nodes: vec![node(
                "Split",
                "s",
                &["x"],
                &["a", "b"],
                vec![a_int("axis", 1), a_ints("split", &[1, 3])],
            )],
            inputs: vec![fixed("x", F32, &[2, 4])],
            outputs: vec![out("a"), out("b")],
            inits: vec![],
        },
    );
    assert_eq!(operand_ints(&g, only(&g, Op::Split), 1), vec![1, 3]);
    assert_eq!(out_dims(&g, 1), vec![2, 3]);

    let g = import(
        13,
        G {
            nodes: vec![node(
                "Split",
                "s",
                &["x"],
                &["a", "b"],
                vec![a_int("axis", 1)],
            )],
            inputs: vec![fixed("x", F32, &[2, 4])],
            outputs: vec![out("a"), out("b")],
            inits: vec![],
        },
    );
    assert_eq!(only(&g, Op::Split).attr("num_outputs"), Some(&Attr::Int(2)));
    assert_eq!(out_dims(&g, 0), vec![2, 2]);
}

#[test]
fn pad_before_11_moves_pads_and_value_to_operands() {
    let g = import(
        2,
        G {
            nodes: vec![node(
                "Pad",
                "p",
                &["x"],
                &["y"],
                vec![a_ints("pads", &[0, 1, 0, 2]), a_float("value", 1.5)],
            )],
            inputs: vec![fixed("x", F32, &[2, 3])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    let n = only(&g, Op::Pad);
    assert_eq!(operand_ints(&g, n, 1), vec![0, 1, 0, 2]);
    assert_eq!(
        g.konst(n.input(2).unwrap()).unwrap().to_f64_vec().unwrap(),
        vec![1.5]
    );
    assert_eq!(out_dims(&g, 0), vec![2, 6]);
}

#[test]
fn slice_before_10_moves_attributes_to_operands() {
    let g = import(
        9,
        G {
            nodes: vec![node(
                "Slice",
                "s",
                &["x"],
                &["y"],
                vec![
                    a_ints("starts", &[1]),
                    a_ints("ends", &[3]),
                    a_ints("axes", &[1]),
                ],
            )],
            inputs: vec![fixed("x", F32, &[2, 5])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    let n = only(&g, Op::Slice);
    assert_eq!(operand_ints(&g, n, 1), vec![1]);
    assert_eq!(operand_ints(&g, n, 2), vec![3]);
    assert_eq!(operand_ints(&g, n, 3), vec![1]);
    assert_eq!(out_dims(&g, 0), vec![2, 2]);
}

#[test]
fn upsample_becomes_resize_and_resize_10_moves_scales() {
    let g = import(
        9,
        G {
            nodes: vec![node(
                "Upsample",
                "u",
                &["x", "sc"],
                &["y"],
                vec![a_str("mode", "nearest")],
            )],
            inputs: vec![fixed("x", F32, &[1, 1, 2, 2])],
            outputs: vec![out("y")],
            inits: vec![f32_init("sc", &[4], &[1., 1., 2., 3.])],
        },
    );
    let n = only(&g, Op::Resize);
    assert!(n.input(1).is_none());
    assert!(n.input(2).is_some());
    assert_eq!(
        n.attr_str("coordinate_transformation_mode"),
        Some("asymmetric")
    );
    assert_eq!(out_dims(&g, 0), vec![1, 1, 4, 6]);

    let g = import(
        7,
        G {
            nodes: vec![node(
                "Upsample",
                "u",
                &["x"],
                &["y"],
                vec![a_floats("scales", &[1., 1., 2., 2.])],
            )],
            inputs: vec![fixed("x", F32, &[1, 1, 2, 2])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    assert_eq!(out_dims(&g, 0), vec![1, 1, 4, 4]);

    let g = import(
        10,
        G {
            nodes: vec![node(
                "Resize",
                "r",
                &["x", "sc"],
                &["y"],
                vec![a_str("mode", "linear")],
            )],
            inputs: vec![fixed("x", F32, &[1, 1, 2, 2])],
            outputs: vec![out("y")],
            inits: vec![f32_init("sc", &[4], &[1., 1., 2., 2.])],
        },
    );
    let n = only(&g, Op::Resize);
    assert!(n.input(1).is_none());
    assert_eq!(g.value(n.input(2).unwrap()).name, "sc");
    assert_eq!(out_dims(&g, 0), vec![1, 1, 4, 4]);
}

#[test]
fn batchnorm_legacy_attributes_are_dropped() {
    let g = import(
        7,
        G {
            nodes: vec![node(
                "BatchNormalization",
                "bn",
                &["x", "s", "b", "m", "v"],
                &["y"],
                vec![
                    a_int("spatial", 1),
                    a_float("epsilon", 1e-5),
                    a_float("momentum", 0.9),
                ],
            )],
            inputs: vec![fixed("x", F32, &[1, 2, 3])],
            outputs: vec![out("y")],
            inits: vec![
                f32_init("s", &[2], &[1., 1.]),
                f32_init("b", &[2], &[0., 0.]),
                f32_init("m", &[2], &[0., 0.]),
                f32_init("v", &[2], &[1., 1.]),
            ],
        },
    );
    let n = only(&g, Op::BatchNormalization);
    assert!(!n.attrs.contains_key("spatial"));
    assert_eq!(out_dims(&g, 0), vec![1, 2, 3]);
}

#[test]
fn dropout_ratio_attribute_becomes_operand() {
    let g = import(
        10,
        G {
            nodes: vec![node(
                "Dropout",
                "d",
                &["x"],
                &["y"],
                vec![a_float("ratio", 0.25)],
            )],
            inputs: vec![fixed("x", F32, &[3])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    let n = only(&g, Op::Dropout);
    assert_eq!(
        g.konst(n.input(1).unwrap()).unwrap().to_f64_vec().unwrap(),
        vec![0.25]
    );
}

#[test]
fn softmax_before_13_coerces_to_2d() {
    // axis 1 of a rank-3 input: flatten, normalise rows, reshape back.
    let g = import(
        11,
        G {
            nodes: vec![node("Softmax", "sm", &["x"], &["y"], vec![])],
            inputs: vec![fixed("x", F32, &[2, 3, 4])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    let n = only(&g, Op::Softmax);
    assert_eq!(n.attr("axis"), Some(&Attr::Int(1)));
    only(&g, Op::Flatten);
    only(&g, Op::Reshape);
    assert_eq!(out_dims(&g, 0), vec![2, 3, 4]);

    // On the last axis the semantics coincide: one node.
    for (op, ir) in [
        ("Softmax", Op::Softmax),
        ("LogSoftmax", Op::LogSoftmax),
        ("Hardmax", Op::Hardmax),
    ] {
        let g = import(
            11,
            G {
                nodes: vec![node(op, "sm", &["x"], &["y"], vec![a_int("axis", 2)])],
                inputs: vec![fixed("x", F32, &[2, 3, 4])],
                outputs: vec![out("y")],
                inits: vec![],
            },
        );
        assert_eq!(g.nodes.len(), 1, "{op}");
        assert_eq!(only(&g, ir).attr("axis"), Some(&Attr::Int(-1)));
    }
}

#[test]
fn cast_before_6_takes_a_type_name() {
    let g = import(
        5,
        G {
            nodes: vec![node(
                "Cast",
                "c",
                &["x"],
                &["y"],
                vec![a_str("to", "INT64")],
            )],
            inputs: vec![fixed("x", F32, &[3])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    assert_eq!(g.ty(g.outputs[0]).unwrap().dtype, tessera_ir::DType::I64);
}

#[test]
fn nodes_out_of_order_are_sorted() {
    let g = import(
        17,
        G {
            nodes: vec![
                node("Relu", "second", &["t"], &["y"], vec![]),
                node("Neg", "first", &["x"], &["t"], vec![]),
            ],
            inputs: vec![fixed("x", F32, &[3])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    assert_eq!(g.nodes[0].name, "first");
}

#[test]
fn import_file_reads_a_model_from_disk() {
    let dir = TempDir::new("file");
    let m = model(
        17,
        G {
            nodes: vec![node("Relu", "r", &["x"], &["y"], vec![])],
            inputs: vec![fixed("x", F32, &[3])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    let p = dir.path().join("m.onnx");
    std::fs::write(&p, bytes(&m)).unwrap();
    let g = tessera_onnx::import_file(&p, &folding()).unwrap();
    assert_eq!(g.nodes.len(), 1);
}

#[test]
fn input_names_refuses_non_tensor_runtime_inputs() {
    use tessera_onnx::proto::{type_proto, TypeProto, ValueInfoProto};
    let dir = TempDir::new("names");
    let p = dir.path().join("model.onnx");
    let g = || G {
        nodes: vec![node("Identity", "", &["x"], &["y"], vec![])],
        inputs: vec![fixed("x", F32, &[2])],
        outputs: vec![out("y")],
        inits: vec![],
    };
    std::fs::write(&p, bytes(&model(17, g()))).unwrap();
    assert_eq!(
        tessera_onnx::input_names(&p).unwrap(),
        vec!["x".to_string()]
    );

    let mut gs = g();
    let seq = TypeProto {
        value: Some(type_proto::Value::SequenceType(Box::new(
            type_proto::Sequence {
                elem_type: fixed("e", F32, &[2]).r#type.map(Box::new),
            },
        ))),
        denotation: String::new(),
    };
    gs.inputs.push(ValueInfoProto {
        name: "seq".into(),
        r#type: Some(seq),
        ..Default::default()
    });
    std::fs::write(&p, bytes(&model(17, gs))).unwrap();
    let e = tessera_onnx::input_names(&p).unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    assert_eq!(
        e.to_string(),
        "unsupported feature at graph input \"seq\": sequence types"
    );
}

#[test]
fn add_before_7_with_axis_aligns_b_at_that_axis() {
    // B of shape [3] at axis 1 of A [2, 3, 4]: B becomes [3, 1], which suffix-broadcasts alike.
    let g = import(
        6,
        G {
            nodes: vec![node(
                "Add",
                "add",
                &["a", "b"],
                &["y"],
                vec![a_int("broadcast", 1), a_int("axis", 1)],
            )],
            inputs: vec![fixed("a", F32, &[2, 3, 4]), fixed("b", F32, &[3])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    let add = only(&g, Op::Add);
    assert!(add.attrs.is_empty(), "{:?}", add.attrs);
    let b = add.input(1).unwrap();
    assert_eq!(g.ty(b).unwrap().shape.as_static().unwrap(), vec![3, 1]);
    assert_eq!(out_dims(&g, 0), vec![2, 3, 4]);
    assert_eq!(operand_ints(&g, only(&g, Op::Unsqueeze), 1), vec![1]);
}

#[test]
fn add_before_7_with_an_axis_outside_a_is_bad_input() {
    let err = import_bytes(
        &bytes(&model(
            6,
            G {
                nodes: vec![node(
                    "Add",
                    "add",
                    &["a", "b"],
                    &["y"],
                    vec![a_int("broadcast", 1), a_int("axis", 2)],
                )],
                inputs: vec![fixed("a", F32, &[2, 3]), fixed("b", F32, &[3])],
                outputs: vec![out("y")],
                inits: vec![],
            },
        )),
        None,
        &folding(),
    )
    .unwrap_err();
    assert!(
        matches!(err, tessera_onnx::OnnxError::BadModel(_)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("Add node \"add\": `axis` 2 does not place operand B"),
        "{err}"
    );
}

#[test]
fn prelu_before_7_has_a_per_channel_slope() {
    let g = import(
        6,
        G {
            nodes: vec![node("PRelu", "p", &["x", "s"], &["y"], vec![])],
            inputs: vec![fixed("x", F32, &[2, 3, 4, 5])],
            outputs: vec![out("y")],
            inits: vec![f32_init("s", &[3], &[0.1, 0.2, 0.3])],
        },
    );
    let p = only(&g, Op::PRelu);
    assert_eq!(
        g.ty(p.input(1).unwrap())
            .unwrap()
            .shape
            .as_static()
            .unwrap(),
        vec![3, 1, 1]
    );
    assert_eq!(out_dims(&g, 0), vec![2, 3, 4, 5]);
}

#[test]
fn dim_value_minus_one_is_symbolic() {
    let g = import(
        17,
        G {
            nodes: vec![node("Relu", "r", &["x"], &["y"], vec![])],
            inputs: vec![vi("x", F32, &[D::N(-1), D::N(4)])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    );
    let ty = g.ty(g.inputs[0]).unwrap();
    assert!(matches!(ty.shape.0[0], Dim::Sym(_)), "{ty}");
    assert_eq!(ty.shape.0[1], Dim::Fixed(4));
}

#[test]
fn sequences_built_in_the_graph_resolve_to_tensor_ops() {
    // [a, b] with c inserted at 1 is [a, c, b]; element 1 is c; ConcatFromSequence joins all.
    let g = import(
        17,
        G {
            nodes: vec![
                node("SequenceConstruct", "mk", &["a", "b"], &["s1"], vec![]),
                node(
                    "SequenceInsert",
                    "ins",
                    &["s1", "c", "one"],
                    &["s2"],
                    vec![],
                ),
                node("SequenceAt", "at", &["s2", "one"], &["y"], vec![]),
                node("SequenceLength", "len", &["s2"], &["n"], vec![]),
                node(
                    "ConcatFromSequence",
                    "cat",
                    &["s2"],
                    &["all"],
                    vec![a_int("axis", 0)],
                ),
            ],
            inputs: vec![
                fixed("a", F32, &[2]),
                fixed("b", F32, &[2]),
                fixed("c", F32, &[2]),
            ],
            outputs: vec![out("y"), out("n"), out("all")],
            inits: vec![i64_init("one", &[], &[1])],
        },
    );
    let id = only(&g, Op::Identity);
    assert_eq!(g.value(id.input(0).unwrap()).name, "c");
    assert_eq!(
        g.konst(g.outputs[1]).unwrap().to_i64_vec().unwrap(),
        vec![3]
    );
    let cat = only(&g, Op::Concat);
    let names: Vec<&str> = cat
        .inputs
        .iter()
        .map(|v| g.value(v.unwrap()).name.as_str())
        .collect();
    assert_eq!(names, ["a", "c", "b"]);
    assert_eq!(out_dims(&g, 2), vec![6]);
}

#[test]
fn a_sequence_graph_output_is_unsupported() {
    let err = import_bytes(
        &bytes(&model(
            17,
            G {
                nodes: vec![node("SequenceConstruct", "mk", &["a"], &["s"], vec![])],
                inputs: vec![fixed("a", F32, &[2])],
                outputs: vec![out("s")],
                inits: vec![],
            },
        )),
        None,
        &folding(),
    )
    .unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert_eq!(
        err.to_string(),
        "unsupported feature at graph output \"s\": sequence values"
    );
}

#[test]
fn exported_pad_amounts_fold_through_reshape_slice_transpose_cast() {
    // PyTorch's export of F.pad: [1, 1, 2, 2] + zeros → pairs → reversed → transposed → flat.
    let g = import(
        17,
        G {
            nodes: vec![
                node(
                    "Concat",
                    "cat",
                    &["torch_pads", "zeros"],
                    &["all"],
                    vec![a_int("axis", 0)],
                ),
                node("Reshape", "pairs", &["all", "pair_shape"], &["p"], vec![]),
                node(
                    "Slice",
                    "rev",
                    &["p", "st", "en", "ax", "step"],
                    &["r"],
                    vec![],
                ),
                node(
                    "Transpose",
                    "tr",
                    &["r"],
                    &["t"],
                    vec![a_ints("perm", &[1, 0])],
                ),
                node("Reshape", "flat", &["t", "flat_shape"], &["f"], vec![]),
                node("Cast", "cast", &["f"], &["pads"], vec![a_int("to", 7)]),
                node("Pad", "pad", &["x", "pads"], &["y"], vec![]),
            ],
            inputs: vec![fixed("x", F32, &[1, 1, 3, 3])],
            outputs: vec![out("y")],
            inits: vec![
                i64_init("torch_pads", &[4], &[1, 1, 2, 2]),
                i64_init("zeros", &[4], &[0, 0, 0, 0]),
                i64_init("pair_shape", &[2], &[-1, 2]),
                i64_init("st", &[1], &[-1]),
                i64_init("en", &[1], &[i64::MIN + 1]),
                i64_init("ax", &[1], &[0]),
                i64_init("step", &[1], &[-1]),
                i64_init("flat_shape", &[1], &[-1]),
            ],
        },
    );
    let pad = only(&g, Op::Pad);
    assert_eq!(operand_ints(&g, pad, 1), vec![0, 0, 2, 1, 0, 0, 2, 1]);
    assert_eq!(out_dims(&g, 0), vec![1, 1, 7, 5]);
}
