//! The malformed-input corpus owned by the frontend, plus external-data resolution. Every
//! case is built here (no committed binaries) and must give an `Err` with a message that
//! names the problem, never a panic.

mod common;

use common::*;
use tessera_onnx::proto::{
    tensor_proto::DataLocation, ModelProto, StringStringEntryProto, TensorProto,
};
use tessera_onnx::{import_bytes, import_file, ImportOptions, OnnxError};

fn err_of(m: &ModelProto) -> OnnxError {
    match import_bytes(&bytes(m), None, &ImportOptions::default()) {
        Ok(_) => panic!("import should have failed"),
        Err(e) => {
            // Shown with --nocapture: the corpus's messages, for review.
            eprintln!("corpus: {e}");
            e
        }
    }
}

fn relu_model() -> ModelProto {
    model(
        17,
        G {
            nodes: vec![node("Relu", "r", &["x"], &["y"], vec![])],
            inputs: vec![fixed("x", F32, &[2, 3])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    )
}

#[test]
fn truncated_protobuf() {
    let b = bytes(&relu_model());
    for cut in [b.len() - 1, b.len() / 2, 3] {
        let e = import_bytes(&b[..cut], None, &ImportOptions::default()).unwrap_err();
        eprintln!("corpus: {e}");
        assert!(matches!(e, OnnxError::Decode { .. }), "cut {cut}: {e}");
    }
    // A file names itself in the error.
    let dir = TempDir::new("trunc");
    let p = dir.path().join("cut.onnx");
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    let e = import_file(&p, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cut.onnx"), "{e}");
    // Garbage, and a missing file.
    assert!(import_bytes(&[0xff; 64], None, &ImportOptions::default()).is_err());
    let e = import_file(&dir.path().join("nope.onnx"), &ImportOptions::default()).unwrap_err();
    assert!(matches!(e, OnnxError::Io { .. }), "{e}");
}

#[test]
fn graph_with_a_cycle() {
    let e = err_of(&model(
        17,
        G {
            nodes: vec![
                node("Add", "a", &["x", "c"], &["b"], vec![]),
                node("Relu", "b_relu", &["b"], &["c"], vec![]),
            ],
            inputs: vec![fixed("x", F32, &[2])],
            outputs: vec![out("c")],
            inits: vec![],
        },
    ))
    .to_string();
    assert!(e.contains("cycle"), "{e}");
    assert!(e.contains("\"a\"") || e.contains("\"b_relu\""), "{e}");
}

#[test]
fn dangling_input_name() {
    let e = err_of(&model(
        17,
        G {
            nodes: vec![node("Add", "add1", &["x", "ghost"], &["y"], vec![])],
            inputs: vec![fixed("x", F32, &[2])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    ))
    .to_string();
    assert!(e.contains("ghost") && e.contains("add1"), "{e}");

    let e = err_of(&model(
        17,
        G {
            nodes: vec![node("Relu", "r", &["x"], &["y"], vec![])],
            inputs: vec![fixed("x", F32, &[2])],
            outputs: vec![out("not_there")],
            inits: vec![],
        },
    ))
    .to_string();
    assert!(e.contains("not_there"), "{e}");
}

#[test]
fn unknown_op_names_type_domain_opset_and_node() {
    let e = err_of(&model(
        17,
        G {
            nodes: vec![node("FrobnicateV2", "frob_7", &["x"], &["y"], vec![])],
            inputs: vec![fixed("x", F32, &[2])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    ));
    assert!(e.is_unsupported());
    let s = e.to_string();
    for part in ["FrobnicateV2", "domain \"\"", "opset 17", "frob_7"] {
        assert!(s.contains(part), "{s} lacks {part}");
    }

    assert!(s.contains("at node \"frob_7\""), "{s}");

    // An unnamed node is named by the result it defines.
    let e = err_of(&model(
        17,
        G {
            nodes: vec![node("FrobnicateV2", "", &["x"], &["frob_out"], vec![])],
            inputs: vec![fixed("x", F32, &[2])],
            outputs: vec![out("frob_out")],
            inits: vec![],
        },
    ));
    assert!(e.to_string().contains("frob_out"), "{e}");

    let mut m = relu_model();
    let g = m.graph.as_mut().unwrap();
    g.node[0].domain = "com.acme".into();
    m.opset_import
        .push(tessera_onnx::proto::OperatorSetIdProto {
            domain: "com.acme".into(),
            version: 3,
        });
    let e = err_of(&m);
    let s = e.to_string();
    assert!(e.is_unsupported());
    assert!(
        s.contains("Relu")
            && s.contains("com.acme")
            && s.contains("opset 3")
            && s.contains("\"r\""),
        "{s}"
    );

    // An If without its branches is a broken model, named as such.
    let e = err_of(&model(
        17,
        G {
            nodes: vec![node("If", "branch", &["x"], &["y"], vec![])],
            inputs: vec![fixed("x", 9, &[])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    ));
    assert!(!e.is_unsupported(), "{e}");
    assert!(
        e.to_string()
            .contains("attribute `then_branch` of If node \"branch\" must be a subgraph"),
        "{e}"
    );
}

#[test]
fn mismatched_shapes() {
    let e = err_of(&model(
        17,
        G {
            nodes: vec![node("Add", "add", &["a", "b"], &["y"], vec![])],
            inputs: vec![fixed("a", F32, &[2, 3]), fixed("b", F32, &[4, 5])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    ));
    assert!(matches!(e, OnnxError::Ir(_)), "{e}");
    assert!(!e.is_unsupported());
    let s = e.to_string();
    assert!(s.contains("add"), "{s}");
}

#[test]
fn absurd_dimension_is_refused_before_allocation() {
    // 2^40 elements declared by an initializer that holds no data: must fail on the dims,
    // not try to allocate 4 TiB.
    let big = TensorProto {
        name: "huge".into(),
        data_type: F32,
        dims: vec![1 << 20, 1 << 20],
        ..Default::default()
    };
    let e = err_of(&model(
        17,
        G {
            nodes: vec![node("Add", "add", &["x", "huge"], &["y"], vec![])],
            inputs: vec![fixed("x", F32, &[1])],
            outputs: vec![out("y")],
            inits: vec![big],
        },
    ))
    .to_string();
    assert!(e.contains("huge") && e.contains("limit"), "{e}");

    // The same in an input's declared shape.
    let e = err_of(&model(
        17,
        G {
            nodes: vec![node("Relu", "r", &["x"], &["y"], vec![])],
            inputs: vec![fixed("x", F32, &[1 << 20, 1 << 20])],
            outputs: vec![out("y")],
            inits: vec![],
        },
    ))
    .to_string();
    assert!(e.contains("\"x\"") && e.contains("limit"), "{e}");

    // Overflowing u64, and negative dims.
    let t = TensorProto {
        name: "ovf".into(),
        data_type: F32,
        dims: vec![i64::MAX, i64::MAX, 4],
        ..Default::default()
    };
    assert!(tessera_onnx::tensor_from_proto(&t, None).is_err());
    let t = TensorProto {
        name: "neg".into(),
        data_type: F32,
        dims: vec![-1],
        ..Default::default()
    };
    assert!(tessera_onnx::tensor_from_proto(&t, None)
        .unwrap_err()
        .to_string()
        .contains("neg"));

    // A result that would be huge: Expand to 2^40 elements.
    let e = err_of(&model(
        17,
        G {
            nodes: vec![node("Expand", "ex", &["x", "shape"], &["y"], vec![])],
            inputs: vec![fixed("x", F32, &[1])],
            outputs: vec![out("y")],
            inits: vec![i64_init("shape", &[2], &[1 << 20, 1 << 20])],
        },
    ))
    .to_string();
    assert!(e.contains("limit") || e.contains("exceed"), "{e}");
}

#[test]
fn element_count_mismatch_names_the_tensor() {
    let t = f32_init("w", &[2, 3], &[1., 2., 3., 4., 5.]);
    let e = tessera_onnx::tensor_from_proto(&t, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"w\"") && e.contains('6') && e.contains('5'),
        "{e}"
    );
    let t = TensorProto {
        name: "r".into(),
        data_type: F32,
        dims: vec![3],
        raw_data: vec![0; 11],
        ..Default::default()
    };
    let e = tessera_onnx::tensor_from_proto(&t, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"r\"") && e.contains("11"), "{e}");
}

// ---- external data ----

fn external(name: &str, location: &str, offset: Option<u64>, n: i64) -> TensorProto {
    let mut kv = vec![StringStringEntryProto {
        key: "location".into(),
        value: location.into(),
    }];
    if let Some(o) = offset {
        kv.push(StringStringEntryProto {
            key: "offset".into(),
            value: o.to_string(),
        });
        kv.push(StringStringEntryProto {
            key: "length".into(),
            value: (n * 4).to_string(),
        });
    }
    TensorProto {
        name: name.into(),
        data_type: F32,
        dims: vec![n],
        data_location: DataLocation::External as i32,
        external_data: kv,
        ..Default::default()
    }
}

fn ext_model(t: TensorProto) -> ModelProto {
    model(
        17,
        G {
            nodes: vec![node("Add", "add", &["x", "w"], &["y"], vec![])],
            inputs: vec![fixed("x", F32, &[4])],
            outputs: vec![out("y")],
            inits: vec![t],
        },
    )
}

fn write_model(dir: &std::path::Path, m: &ModelProto) -> std::path::PathBuf {
    let p = dir.join("model.onnx");
    std::fs::write(&p, bytes(m)).unwrap();
    p
}

#[test]
fn external_data_inside_the_folder_is_read() {
    let dir = TempDir::new("ext-ok");
    std::fs::create_dir_all(dir.path().join("weights")).unwrap();
    let mut data = vec![0xAAu8; 8]; // offset padding
    for v in [1.0f32, 2.0, 3.0, 4.0] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(dir.path().join("weights/w.bin"), &data).unwrap();
    let p = write_model(
        dir.path(),
        &ext_model(external("w", "weights/w.bin", Some(8), 4)),
    );
    let g = import_file(&p, &ImportOptions::default()).unwrap();
    let w = g.find_value("w").unwrap();
    assert_eq!(
        g.konst(w).unwrap().to_f64_vec().unwrap(),
        vec![1., 2., 3., 4.]
    );

    // Without offset/length the whole file is the tensor; `a/../` that stays inside is fine.
    std::fs::write(dir.path().join("w2.bin"), &data[8..]).unwrap();
    let p = write_model(
        dir.path(),
        &ext_model(external("w", "weights/../w2.bin", None, 4)),
    );
    assert!(import_file(&p, &ImportOptions::default()).is_ok());
}

#[test]
fn external_data_bad_paths_are_refused() {
    let outer = TempDir::new("ext-bad");
    let dir = outer.path().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(outer.path().join("secret.bin"), [0u8; 16]).unwrap();
    let abs = outer.path().join("secret.bin").display().to_string();

    let cases: Vec<(&str, String)> = vec![
        ("absolute", abs),
        ("dotdot", "../secret.bin".into()),
        ("dotdot-deep", "a/../../secret.bin".into()),
        ("missing", "nothing_here.bin".into()),
    ];
    for (what, loc) in cases {
        let p = write_model(&dir, &ext_model(external("w", &loc, None, 4)));
        let e = import_file(&p, &ImportOptions::default()).unwrap_err();
        assert!(matches!(e, OnnxError::ExternalData { .. }), "{what}: {e}");
        let s = e.to_string();
        eprintln!("corpus: {s}");
        assert!(s.contains("\"w\"") && s.contains(&loc), "{what}: {s}");
    }

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outer.path().join("secret.bin"), dir.join("link.bin")).unwrap();
        let p = write_model(&dir, &ext_model(external("w", "link.bin", None, 4)));
        let e = import_file(&p, &ImportOptions::default())
            .unwrap_err()
            .to_string();
        eprintln!("corpus: {e}");
        assert!(e.contains("link.bin") && e.contains("symbolic link"), "{e}");

        // A symlink that stays inside the folder is refused too, as onnx does.
        std::fs::write(dir.join("real.bin"), [0u8; 16]).unwrap();
        std::os::unix::fs::symlink(dir.join("real.bin"), dir.join("inner.bin")).unwrap();
        let p = write_model(&dir, &ext_model(external("w", "inner.bin", None, 4)));
        let e = import_file(&p, &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("inner.bin") && e.contains("symbolic link"),
            "{e}"
        );
        // And so is a symlinked folder on the way.
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/w.bin"), [0u8; 16]).unwrap();
        std::os::unix::fs::symlink(dir.join("sub"), dir.join("via")).unwrap();
        let p = write_model(&dir, &ext_model(external("w", "via/w.bin", None, 4)));
        let e = import_file(&p, &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("via") && e.contains("symbolic link"), "{e}");

        // A hard link to a file outside the folder cannot be told apart by path: any file
        // with a second name is refused.
        std::fs::hard_link(outer.path().join("secret.bin"), dir.join("hard.bin")).unwrap();
        let p = write_model(&dir, &ext_model(external("w", "hard.bin", None, 4)));
        let e = import_file(&p, &ImportOptions::default()).unwrap_err();
        assert!(matches!(e, OnnxError::ExternalData { .. }), "{e}");
        let e = e.to_string();
        eprintln!("corpus: {e}");
        assert!(e.contains("hard.bin") && e.contains("2 hard links"), "{e}");
    }

    // Length that does not match the dims, and a range past the end of the file.
    std::fs::write(dir.join("short.bin"), [0u8; 12]).unwrap();
    let p = write_model(&dir, &ext_model(external("w", "short.bin", None, 4)));
    assert!(import_file(&p, &ImportOptions::default())
        .unwrap_err()
        .to_string()
        .contains("16"));
    let p = write_model(&dir, &ext_model(external("w", "short.bin", Some(4), 4)));
    assert!(import_file(&p, &ImportOptions::default())
        .unwrap_err()
        .to_string()
        .contains("past the end"));

    // From bytes with no folder: external data cannot be resolved.
    let e = import_bytes(
        &bytes(&ext_model(external("w", "w.bin", None, 4))),
        None,
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, OnnxError::ExternalData { .. }), "{e}");
}

#[test]
fn newer_opsets_are_refused_unless_allowed() {
    let mut m = relu_model();
    m.opset_import[0].version = 999;
    let e = err_of(&m);
    assert!(
        matches!(e, OnnxError::NewerOpset { ref domain, opset: 999, newest: 28 } if domain.is_empty()),
        "{e}"
    );
    assert!(e.is_unsupported());
    assert!(
        e.to_string().contains("opset 999 of domain \"ai.onnx\""),
        "{e}"
    );
    assert_eq!(tessera_onnx::newer_opsets(&m).len(), 1);
    let allow = ImportOptions {
        allow_newer_opset: true,
        ..Default::default()
    };
    assert!(import_bytes(&bytes(&m), None, &allow).is_ok());

    // Any domain the registry knows is checked; the newest known opset itself is fine.
    let mut m = relu_model();
    m.opset_import
        .push(tessera_onnx::proto::OperatorSetIdProto {
            domain: "ai.onnx.ml".into(),
            version: 6,
        });
    let e = err_of(&m);
    assert!(
        e.to_string().contains("opset 6 of domain \"ai.onnx.ml\"") && e.to_string().contains("(5)"),
        "{e}"
    );
    m.opset_import[1].version = 5;
    m.opset_import[0].version = 28;
    assert!(import_bytes(&bytes(&m), None, &ImportOptions::default()).is_ok());
}

/// A one-node `com.microsoft` model of `op` on inputs `x` (f32 [5, 1, 4]) and `y`, whose
/// other operands are named but never defined unless they are graph inputs.
fn contrib_model(
    op: &str,
    inputs: &[&str],
    graph_inputs: Vec<tessera_onnx::proto::ValueInfoProto>,
) -> ModelProto {
    let mut n = node(op, "q7", inputs, &["out"], vec![a_int("hidden_size", 2)]);
    n.domain = "com.microsoft".into();
    let mut m = model(
        17,
        G {
            nodes: vec![n],
            inputs: graph_inputs,
            outputs: vec![out("out")],
            inits: vec![],
        },
    );
    m.opset_import
        .push(tessera_onnx::proto::OperatorSetIdProto {
            domain: "com.microsoft".into(),
            version: 1,
        });
    m
}

#[test]
fn quantized_contrib_ops_refuse_what_they_cannot_compute() {
    let ins = |names: &[&str]| names.iter().map(|n| fixed(n, F32, &[5, 1, 4])).collect();
    // DynamicQuantizeLSTM with sequence_lens: unsupported, naming the node and the operand.
    let names = [
        "x", "w", "r", "", "lens", "", "", "", "ws", "wz", "rs", "rz",
    ];
    let e = err_of(&contrib_model(
        "DynamicQuantizeLSTM",
        &names,
        ins(&["x", "w", "r", "lens", "ws", "wz", "rs", "rz"]),
    ));
    assert!(e.is_unsupported(), "{e}");
    let s = e.to_string();
    for part in ["DynamicQuantizeLSTM", "q7", "sequence_lens"] {
        assert!(s.contains(part), "{s} lacks {part}");
    }
    // W of a shape hidden_size does not imply: a bad model, naming the operand and shapes.
    let names = ["x", "w", "r", "", "", "", "", "", "ws", "wz", "rs", "rz"];
    let e = err_of(&contrib_model(
        "DynamicQuantizeLSTM",
        &names,
        ins(&["x", "w", "r", "ws", "wz", "rs", "rz"]),
    ));
    assert!(matches!(e, OnnxError::BadModel(_)), "{e}");
    let s = e.to_string();
    for part in ["q7", "operand 1 (`W`)", "[1, 4, 8]", "[5, 1, 4]"] {
        assert!(s.contains(part), "{s} lacks {part}");
    }
    // QGemm without its b_scale (operand 4): a bad model, naming the node and the operand.
    let e = err_of(&contrib_model(
        "QGemm",
        &["x", "s", "z", "w"],
        ins(&["x", "s", "z", "w"]),
    ));
    assert!(matches!(e, OnnxError::BadModel(_)), "{e}");
    let s = e.to_string();
    for part in ["QGemm", "q7", "operand 4 (`b_scale`)"] {
        assert!(s.contains(part), "{s} lacks {part}");
    }
    // A y_zero_point without y_scale is refused rather than guessed at.
    let names = ["x", "s", "z", "w", "s", "z", "", "", "z"];
    let e = err_of(&contrib_model("QGemm", &names, ins(&["x", "s", "z", "w"])));
    assert!(e.to_string().contains("without y_scale"), "{e}");
}
