//! Tests of the text format: round trips (print → parse → print is identical) on graphs
//! with every dtype, symbolic dims, every attribute kind, tensors and omitted operands;
//! snapshots of printed graphs; and parse errors with their positions.

use super::{parse, print};
use crate::testutil::{ints, B};
use crate::{Attr, DType, Graph, Op, Tensor};

/// Prints `g`, checks the round trip, and snapshots the text under `src/snapshots/`.
fn check(name: &str, g: &Graph) {
    let text = round_trip(g);
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, text);
    });
}

fn round_trip(g: &Graph) -> String {
    let text = print(g);
    let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(print(&back), text, "print -> parse -> print differs");
    text
}

fn mlp() -> Graph {
    let mut b = B::new();
    b.g.name = "mlp".into();
    let x = b.input("x", "f32[N,4]");
    let w = b.konst(
        "w",
        Tensor::from_f32(
            vec![4, 2],
            &[0.5, -1.0, 2.25, 1e-7, 3.0, f32::INFINITY, -0.0, 1e30],
        ),
    );
    let bias = b.konst("bias", Tensor::from_f32(vec![2], &[0.1, 0.2]));
    let y = b.node1(
        Op::Gemm,
        &[x, w, bias],
        &[("transB", Attr::Int(0)), ("alpha", Attr::Float(1.0))],
    );
    let r = b.node1(Op::Relu, &[y], &[]);
    let sm = b.node1(Op::Softmax, &[r], &[("axis", Attr::Int(-1))]);
    b.g.outputs.push(sm);
    crate::infer_shapes(&mut b.g).unwrap();
    b.g
}

#[test]
fn mlp_snapshot() {
    check("mlp", &mlp());
}

#[test]
fn attributes_of_every_kind_and_omitted_operands() {
    let mut b = B::new();
    b.g.name = "attrs and names".into();
    let x = b.input("input:0/weird \"name\"", "f32[batch,N*3,8]");
    let mx = b.input("max", "f32[]");
    let c = b.node(Op::Clip, &[Some(x), None, Some(mx)], 1, &[])[0];
    b.g.nodes[0].name = "/model/clip\t1".into();
    let t = b.node1(
        Op::Resize,
        &[c],
        &[
            ("mode", Attr::String("linear".into())),
            ("axes", ints(&[])),
            ("cubic_coeff_a", Attr::Float(-0.75)),
            ("extrapolation_value", Attr::Float(f32::NAN)),
            ("antialias", Attr::Int(0)),
        ],
    );
    let k = b.node1(
        Op::Constant,
        &[],
        &[(
            "value_strings",
            Attr::Strings(vec!["a".into(), "é\n\"q\"".into(), String::new()]),
        )],
    );
    let k2 = b.node1(
        Op::Constant,
        &[],
        &[(
            "value_floats",
            Attr::Floats(vec![1.0, -2.5e-8, f32::NEG_INFINITY]),
        )],
    );
    let k3 = b.node1(Op::Constant, &[], &[("value_floats", Attr::Floats(vec![]))]);
    let k4 = b.node1(
        Op::Constant,
        &[],
        &[("value_strings", Attr::Strings(vec![]))],
    );
    let k5 = b.node1(
        Op::Constant,
        &[],
        &[(
            "value",
            Attr::Tensor(Tensor::from_i64(vec![2, 1], &[3, -4])),
        )],
    );
    let outs = b.node(
        Op::Split,
        &[Some(t), None],
        2,
        &[("axis", Attr::Int(2)), ("num_outputs", Attr::Int(2))],
    );
    b.g.outputs = vec![outs[0], outs[1], k, k2, k3, k4, k5];
    check("attributes", &b.g);
}

#[test]
fn every_dtype_round_trips() {
    // Written as text, so the parser is exercised too; the text is already canonical.
    let mut text = String::from("graph @dtypes(");
    let params: Vec<String> = DType::ALL
        .iter()
        .map(|d| format!("%in_{d}: {d}[N,2]"))
        .collect();
    text.push_str(&params.join(", "));
    text.push_str(") -> () {\n");
    for d in DType::ALL {
        let elems = match d {
            DType::String => r#""s0", "", "\u{1}", "é", "\"q\"""#,
            DType::Bool => "true, false, false, true, true",
            d if d.is_float() => "1.0, -1.5, 0.0, 0.5, 6.0",
            d if d.is_signed_int() => "1, -1, 0, -2, 1",
            _ => "1, 3, 0, 2, 3",
        };
        text.push_str(&format!("  const %c_{d} = dense<{d}[5]: [{elems}]>\n"));
    }
    let big: String = "0000c03f".repeat(20);
    text.push_str(&format!("  const %big = dense_hex<f32[20]: \"{big}\">\n"));
    text.push_str("  const %nan_payload = dense_hex<f32[1]: \"0100c07f\">\n");
    text.push_str("  const %stray_bits = dense_hex<u4[1]: \"f1\">\n");
    text.push_str("  const %specials = dense<f64[5]: [nan, inf, -inf, -0.0, 1e-300]>\n");
    text.push_str("  const %scalar = dense<i64[]: [-9223372036854775808]>\n");
    text.push_str("  const %u64max = dense<u64[1]: [18446744073709551615]>\n");
    text.push_str("  const %empty = dense<f32[0,3]: []>\n");
    text.push_str("  const %typed: f32[K] = dense<f32[2]: [1.0, 2.0]>\n");
    text.push_str("  const %untyped: ? = dense<i8[]: [-128]>\n");
    text.push_str("}\n");
    let g = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(print(&g), text);
    assert_eq!(
        g.konst(g.find_value("c_i4").unwrap())
            .unwrap()
            .bytes
            .as_slice(),
        &[0xf1, 0xe0, 0x01]
    );
    assert_eq!(
        g.konst(g.find_value("c_f4e2m1").unwrap())
            .unwrap()
            .to_f64_vec()
            .unwrap(),
        vec![1.0, -1.5, 0.0, 0.5, 6.0]
    );
    check("dtypes", &g);
}

#[test]
fn parsed_graph_equals_the_original() {
    // Graphs built in the printer's order (inputs, constants, node results) come back equal.
    let g = mlp();
    assert_eq!(parse(&print(&g)).unwrap(), g);
}

#[test]
fn folded_and_bound_values_round_trip() {
    let mut b = B::new();
    b.g.name = "shapes".into();
    let x = b.input("x", "f32[2,3,4]");
    let s = b.input("target", "i64[2]");
    b.g.values[s.0 as usize].konst = Some(Tensor::from_i64(vec![2], &[6, 4]));
    b.g.bound_inputs.push(s);
    let sh = b.node1(Op::Shape, &[x], &[("start", Attr::Int(1))]);
    let r = b.node1(Op::Reshape, &[x, s], &[]);
    b.g.outputs = vec![r, sh];
    crate::infer_shapes(&mut b.g).unwrap();
    check("bound", &b.g);
    crate::fold_constants(&mut b.g, &crate::NoEval).unwrap();
    check("bound_folded", &b.g);
}

#[test]
fn cyclic_graphs_print_and_parse() {
    let text =
        "graph @c(%x: f32[2]) -> (%b) {\n  %a = Add(%x, %b) @\"a\"\n  %b = Relu(%a) @\"b\"\n}\n";
    let g = parse(text).unwrap();
    assert_eq!(print(&g), text);
    let err = crate::verify_structure(&g).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the graph has a cycle through Add node \"a\": Add node \"a\" -> Relu node \"b\" -> Add node \"a\""
    );
}

fn parse_err(text: &str) -> String {
    parse(text)
        .map(|_| "ok".to_string())
        .unwrap_or_else(|e| e.to_string())
}

#[test]
fn parse_errors_have_positions() {
    assert_eq!(
        parse_err("graph @g() -> () {\n  %a = Frobnicate()\n}"),
        "2:8: unknown op `Frobnicate`"
    );
    assert_eq!(
        parse_err("graph @g(%x: f99[2]) -> () {}"),
        "1:14: unknown dtype `f99`"
    );
    assert_eq!(
        parse_err("graph @g(%x: f32[2]) -> (%y) {\n}"),
        "1:26: undefined value %y"
    );
    assert_eq!(
        parse_err("graph @g(%x: f32[2]) -> () {\n  %z = Relu(%q)\n}"),
        "2:13: undefined value %q"
    );
    assert_eq!(
        parse_err("graph @g(%x: f32[2], %x: f32[2]) -> () {}"),
        "1:22: value %x is defined twice"
    );
    assert_eq!(
        parse_err("graph @g() -> () {\n  const %c = dense<i8[2]: [1, 300]>\n}"),
        "2:14: 300 is out of range for i8"
    );
    assert_eq!(
        parse_err("graph @g() -> () {\n  const %c = dense<f32[3]: [1.0]>\n}"),
        "2:14: the type f32[3] needs 3 elements, but the list has 1"
    );
    assert_eq!(
        parse_err("graph @g() -> () {"),
        "1:19: expected `}` at the end of the graph"
    );
    assert_eq!(parse_err("grph"), "1:1: expected `graph`");
    assert_eq!(
        parse_err("graph @g(%x: f32[2]) -> () {\n  %y = Relu(%x) {a = 1, a = 2}\n}"),
        "2:25: attribute `a` is given twice"
    );
}

#[test]
fn truncated_and_mangled_text_never_panics() {
    let text = print(&mlp())
        + &print(
            &parse(
                "graph @q(%\"a b\": u4[2]) -> () {\n  bind %\"a b\" = dense<u4[2]: [1, 15]>\n}\n",
            )
            .unwrap(),
        );
    for cut in 0..text.len() {
        if text.is_char_boundary(cut) {
            let _ = parse(&text[..cut]);
            let mut mangled = text.clone();
            mangled.replace_range(cut..cut, "\u{1}\"[<%");
            let _ = parse(&mangled);
        }
    }
}
