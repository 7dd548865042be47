//! The optimizer's contracts: bounded runs that say which limit they hit, byte-identical
//! output, a rule's malformed intermediate reported as an error naming the rule, and one
//! e-graph extracted differently for two targets by their cost models.

use egg::Id;
use std::sync::Arc;
use tessera_opt::rules::{self, Expr, Rule};
use tessera_opt::{analysis::EGraph, Limits, OptError, OptLevel, OptOptions, Precision};
use tessera_target::TargetDesc;

fn target(name: &str) -> TargetDesc {
    let path = format!(
        "{}/../../targets/{name}/target.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    TargetDesc::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
}

fn graph(text: &str) -> tessera_ir::Graph {
    let mut g = tessera_ir::text::parse(text).unwrap();
    tessera_ir::infer_shapes(&mut g).unwrap();
    g
}

const CHAIN: &str = "graph @g(%x: f32[2,3]) -> (%y) {
  %a = Transpose(%x) {perm = [1, 0]}
  %b = Transpose(%a) {perm = [1, 0]}
  %c = Transpose(%b) {perm = [1, 0]}
  %d = Transpose(%c) {perm = [1, 0]}
  %y = Relu(%d)
}
";

fn opts(level: OptLevel, precision: Precision) -> OptOptions {
    OptOptions {
        level,
        precision,
        limits: None,
        folder: None,
    }
}

#[test]
fn output_is_byte_identical_across_runs() {
    let g = graph(CHAIN);
    let o = opts(OptLevel::O2, Precision::Exact);
    let a = tessera_opt::optimize(&g, &target("host"), &o).unwrap().0;
    let b = tessera_opt::optimize(&g, &target("host"), &o).unwrap().0;
    assert_eq!(tessera_ir::text::print(&a), tessera_ir::text::print(&b));
    assert!(tessera_ir::text::print(&a).contains("%y: f32[2,3] = Relu(%x)"));
}

#[test]
fn opt_level_0_returns_the_graph_unchanged() {
    let g = graph(CHAIN);
    let (out, r) =
        tessera_opt::optimize(&g, &target("host"), &opts(OptLevel::O0, Precision::Exact)).unwrap();
    assert_eq!(out, g);
    assert!(!r.changed);
    assert_eq!(r.stop, "not run");
}

#[test]
fn a_limit_hit_keeps_the_best_graph_and_is_reported() {
    let g = graph(CHAIN);
    let o = OptOptions {
        limits: Some(Limits {
            nodes: 100_000,
            iterations: 1,
            time: std::time::Duration::from_secs(10),
        }),
        ..opts(OptLevel::O2, Precision::Exact)
    };
    let (out, r) = tessera_opt::optimize(&g, &target("host"), &o).unwrap();
    assert_eq!(r.stop, "iteration limit (1)");
    tessera_ir::verify(&out).unwrap();
    let o = OptOptions {
        limits: Some(Limits {
            nodes: 1,
            iterations: 100,
            time: std::time::Duration::from_secs(10),
        }),
        ..o
    };
    let (_, r) = tessera_opt::optimize(&g, &target("host"), &o).unwrap();
    assert_eq!(r.stop, "node limit (1)");
}

/// Rewrites every Relu into a value of another shape: a bug the optimizer must catch.
struct BadRule;

impl Rule for BadRule {
    fn name(&self) -> &'static str {
        "bad-rule"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        rules::nodes(eg, id, tessera_ir::Op::Relu)
            .map(|(_, ch)| {
                Expr::Node(
                    tessera_ir::OpKey::with(
                        tessera_ir::Op::Transpose,
                        &[("perm", tessera_ir::Attr::Ints(vec![1, 0]))],
                    ),
                    vec![Expr::Class(ch[0])],
                )
            })
            .collect()
    }
}

#[test]
fn a_malformed_intermediate_is_an_error_naming_the_rule() {
    let g = graph(CHAIN);
    let e = tessera_opt::optimize_with(
        &g,
        &target("host"),
        &opts(OptLevel::O1, Precision::Exact),
        vec![Arc::new(BadRule)],
    )
    .unwrap_err();
    assert!(
        matches!(&e, OptError::Rule { rule, .. } if rule == "bad-rule"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "optimizer rule `bad-rule` built a malformed graph: built f32[3,2] for a value of type f32[2,3]"
    );
}

#[test]
fn host_and_npu_sim_extract_the_same_egraph_differently() {
    let g = graph(
        "graph @mm(%x: f32[64,256], %w: f32[256,128]) -> (%y) {
  %y = MatMul(%x, %w)
}
",
    );
    let o = opts(OptLevel::O2, Precision::Bf16);
    let (host, hr) = tessera_opt::optimize(&g, &target("host"), &o).unwrap();
    let (npu, nr) = tessera_opt::optimize(&g, &target("npu-sim"), &o).unwrap();
    // The same rules fired on both: the e-graphs are the same.
    assert_eq!(hr.fired, nr.fired);
    assert_eq!(hr.egraph_nodes, nr.egraph_nodes);
    let (host, npu) = (
        tessera_ir::text::print(&host),
        tessera_ir::text::print(&npu),
    );
    assert!(host.contains("= MatMul(%x, %w)"), "{host}");
    assert!(
        npu.contains("FusedMatMul") && npu.contains("bf16[64,256] = Cast(%x) {to = 16}"),
        "{npu}"
    );
}
