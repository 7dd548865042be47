//! `tessera show`: one self-contained HTML page picturing what was compiled. For an ONNX model
//! it draws the graph as a DAG (op type, output shapes and dtypes on each node, coloured by how
//! the node runs: kernels, alias, host copy or folded) with the kernels each node became, and
//! lists every kernel's grid, tiles (local buffers and vector widths), parameters and code size.
//! For a `.tsa` artifact, which keeps the plan but not the graph, it draws the plan's steps
//! linked through the buffers they share. Graphviz `dot` lays the graph out (an SVG inlined in
//! the page); without `dot` the page keeps the tables and the DOT source.

use crate::pipeline::{compile_graph_traced, import, optimize, CompileOptions, Compiled};
use crate::DriverError;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use tessera_ir::Graph;
use tessera_kir::{BufferKind, Execution, Kernel, Space, Step};
use tessera_runtime::Artifact;

/// What one kernel looks like in the page.
struct KernelRow {
    name: String,
    node: String,
    grid: Option<Vec<u64>>,
    params: usize,
    param_bytes: u64,
    /// Local and shared buffers: the kernel's on-chip tiles.
    tiles: Vec<String>,
    /// Vector widths (lanes) the kernel computes with, beyond scalars.
    lanes: Vec<u16>,
    code_bytes: usize,
}

/// Compiles `model` for `opts.target` and renders its page.
pub fn show_model(model: &Path, opts: &CompileOptions) -> Result<String, DriverError> {
    let (graph, _) = optimize(&import(model, opts)?, opts)?;
    let compiled = compile_graph_traced(
        &graph,
        &model.display().to_string(),
        &opts.target,
        &mut |_| {},
    )?;
    let rows = kernel_rows_compiled(&graph, &compiled);
    let dot = graph_dot(&graph, &compiled, &rows);
    let title = format!("{} on {}", model.display(), opts.target);
    Ok(page(&title, &compiled.artifact, &dot, &rows, "graph"))
}

/// Renders the page of an artifact: its plan steps and kernels (the graph is not stored).
pub fn show_artifact(path: &Path, artifact: &Artifact) -> Result<String, DriverError> {
    let rows = kernel_rows_artifact(artifact);
    let dot = steps_dot(artifact, &rows);
    let title = format!(
        "{} ({}, compiled from {})",
        path.display(),
        artifact.target,
        artifact.source
    );
    Ok(page(&title, artifact, &dot, &rows, "plan"))
}

fn describe_kernel(k: &Kernel) -> (Vec<u64>, Vec<String>, Vec<u16>) {
    let tiles = k.bufs[k.num_params..]
        .iter()
        .filter(|b| b.space != Space::Global)
        .map(|b| format!("{} {}: {}×{}", b.space.name(), b.name, b.len, b.dtype))
        .collect();
    let mut lanes: Vec<u16> = k.vals.iter().map(|t| t.lanes).filter(|&l| l > 1).collect();
    lanes.sort_unstable();
    lanes.dedup();
    (k.grid.clone(), tiles, lanes)
}

fn kernel_rows_compiled(graph: &Graph, c: &Compiled) -> Vec<KernelRow> {
    let mut node_of = vec![String::new(); c.kernels.len()];
    for (n, span) in c.node_kernels.iter().enumerate() {
        for k in span.clone() {
            node_of[k] = graph.nodes[n].label();
        }
    }
    c.kernels
        .iter()
        .zip(&c.artifact.kernels)
        .zip(node_of)
        .map(|((k, stored), node)| {
            let (grid, tiles, lanes) = describe_kernel(k);
            KernelRow {
                name: k.name.clone(),
                node,
                grid: Some(grid),
                params: k.num_params,
                param_bytes: stored.param_bytes.iter().sum(),
                tiles,
                lanes,
                code_bytes: stored.blob.len(),
            }
        })
        .collect()
}

fn kernel_rows_artifact(a: &Artifact) -> Vec<KernelRow> {
    a.kernels
        .iter()
        .map(|stored| {
            // An interp blob is the kernel's text, so its grid and tiles can be shown; other
            // targets' blobs are machine code.
            let parsed = std::str::from_utf8(&stored.blob)
                .ok()
                .and_then(|t| tessera_kir::text::parse_kernel(t).ok());
            let (grid, tiles, lanes) = match &parsed {
                Some(k) => {
                    let (g, t, l) = describe_kernel(k);
                    (Some(g), t, l)
                }
                None => (None, Vec::new(), Vec::new()),
            };
            KernelRow {
                name: stored.name.clone(),
                node: String::new(),
                grid,
                params: stored.param_bytes.len(),
                param_bytes: stored.param_bytes.iter().sum(),
                tiles,
                lanes,
                code_bytes: stored.blob.len(),
            }
        })
        .collect()
}

/// Escapes text for a double-quoted DOT string.
fn dot_str(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn grid_text(g: &Option<Vec<u64>>) -> String {
    match g {
        Some(g) if !g.is_empty() => g
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×"),
        Some(_) => "1".into(),
        None => "—".into(),
    }
}

fn colour(how: Execution) -> &'static str {
    match how {
        Execution::Kernel => "#cfe2ff",
        Execution::Alias => "#e9ecef",
        Execution::Host => "#fff3cd",
        Execution::Folded => "#f8f9fa",
    }
}

const MAX_KERNELS_ON_NODE: usize = 4;

fn graph_dot(graph: &Graph, c: &Compiled, rows: &[KernelRow]) -> String {
    let mut d = String::from("digraph tessera {\n  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];\n  edge [color=\"#6c757d\", arrowsize=0.6];\n");
    let ty = |v: tessera_ir::ValueId| {
        let val = graph.value(v);
        val.ty
            .as_ref()
            .map(|t| format!("{} {}", t.dtype, t.shape))
            .unwrap_or_else(|| "?".into())
    };
    // Producer of every value: a graph input or a node output.
    let mut producer: BTreeMap<tessera_ir::ValueId, String> = BTreeMap::new();
    for (i, &v) in graph.inputs.iter().enumerate() {
        let id = format!("in{i}");
        let _ = writeln!(
            d,
            "  {id} [id=\"{id}\", shape=ellipse, fillcolor=\"#d1e7dd\", label=\"{}\\n{}\"];",
            dot_str(&graph.value(v).name),
            dot_str(&ty(v))
        );
        producer.insert(v, id);
    }
    for (n, node) in graph.nodes.iter().enumerate() {
        let id = format!("n{n}");
        let how = c
            .artifact
            .plan
            .nodes
            .get(n)
            .map(|r| r.how)
            .unwrap_or(Execution::Kernel);
        let mut label = node.op.name().to_string();
        if !node.name.is_empty() {
            let _ = write!(label, "\n\"{}\"", node.name);
        }
        for &o in &node.outputs {
            let _ = write!(label, "\n{}", ty(o));
        }
        let span = c.node_kernels.get(n).cloned().unwrap_or(0..0);
        for k in span.clone().take(MAX_KERNELS_ON_NODE) {
            let _ = write!(label, "\n▸ {} [{}]", rows[k].name, grid_text(&rows[k].grid));
        }
        if span.len() > MAX_KERNELS_ON_NODE {
            let _ = write!(label, "\n▸ … {} kernels in all", span.len());
        }
        if span.is_empty() {
            let _ = write!(label, "\n({})", how.name());
        }
        let tooltip = format!(
            "{} — runs as {}, {} kernel(s)",
            node.label(),
            how.name(),
            span.len()
        );
        let _ = writeln!(
            d,
            "  {id} [id=\"{id}\", fillcolor=\"{}\", label=\"{}\", tooltip=\"{}\"];",
            colour(how),
            dot_str(&label),
            dot_str(&tooltip)
        );
        for v in node.inputs.iter().flatten() {
            if let Some(p) = producer.get(v) {
                let _ = writeln!(d, "  {p} -> {id};");
            }
        }
        for &o in &node.outputs {
            producer.insert(o, id.clone());
        }
    }
    for (i, &v) in graph.outputs.iter().enumerate() {
        let id = format!("out{i}");
        let _ = writeln!(
            d,
            "  {id} [id=\"{id}\", shape=ellipse, fillcolor=\"#f8d7da\", label=\"{}\\n{}\"];",
            dot_str(&graph.value(v).name),
            dot_str(&ty(v))
        );
        if let Some(p) = producer.get(&v) {
            let _ = writeln!(d, "  {p} -> {id};");
        }
    }
    d.push_str("}\n");
    d
}

/// The plan's steps as a DAG: each step is linked to the next step that uses one of its
/// (non-constant) buffers. Without access modes in the artifact this over-approximates data
/// flow (two readers of one buffer are linked too), which the page says.
fn steps_dot(a: &Artifact, rows: &[KernelRow]) -> String {
    let plan = &a.plan;
    let mut d = String::from("digraph tessera {\n  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];\n  edge [color=\"#6c757d\", arrowsize=0.6];\n");
    let mut last: BTreeMap<u32, String> = BTreeMap::new();
    let io_label = |io: &tessera_kir::PlanIo| format!("{}\n{} {:?}", io.name, io.dtype, io.dims);
    for (i, io) in plan.inputs.iter().enumerate() {
        let id = format!("in{i}");
        let _ = writeln!(
            d,
            "  {id} [id=\"{id}\", shape=ellipse, fillcolor=\"#d1e7dd\", label=\"{}\"];",
            dot_str(&io_label(io))
        );
        last.insert(plan.root(io.buffer).0, id);
    }
    for (s, step) in plan.steps.iter().enumerate() {
        let id = format!("s{s}");
        let (label, args, fill) = match step {
            Step::Launch { kernel, args } => {
                let r = rows.get(*kernel as usize);
                let name = r.map(|r| r.name.clone()).unwrap_or_default();
                let grid = r.map(|r| grid_text(&r.grid)).unwrap_or_default();
                let bytes = r.map(|r| r.code_bytes).unwrap_or(0);
                (
                    format!("{name}\ngrid {grid}\n{bytes} B code"),
                    args.clone(),
                    colour(Execution::Kernel),
                )
            }
            Step::Copy { src, dst } => (
                "copy".to_string(),
                vec![*src, *dst],
                colour(Execution::Host),
            ),
            // Control flow and host ops are one box each, joined to every buffer they touch.
            other => {
                let mut used = Vec::new();
                other.buffers(&mut used);
                let what = match other {
                    Step::If { .. } => "if".to_string(),
                    Step::Loop(_) => "loop".to_string(),
                    Step::Host { op, .. } => format!("host: {op:?}").chars().take(40).collect(),
                    _ => String::new(),
                };
                (what, used, colour(Execution::Host))
            }
        };
        let _ = writeln!(
            d,
            "  {id} [id=\"{id}\", fillcolor=\"{fill}\", label=\"{}\"];",
            dot_str(&label)
        );
        let mut from: Vec<String> = Vec::new();
        for b in &args {
            let root = plan.root(*b);
            if matches!(plan.buffer(root).kind, BufferKind::Const(_)) {
                continue;
            }
            if let Some(p) = last.get(&root.0) {
                if !from.contains(p) {
                    from.push(p.clone());
                }
            }
            last.insert(root.0, id.clone());
        }
        for p in from {
            let _ = writeln!(d, "  {p} -> {id};");
        }
    }
    for (i, io) in plan.outputs.iter().enumerate() {
        let id = format!("out{i}");
        let _ = writeln!(
            d,
            "  {id} [id=\"{id}\", shape=ellipse, fillcolor=\"#f8d7da\", label=\"{}\"];",
            dot_str(&io_label(io))
        );
        if let Some(p) = last.get(&plan.root(io.buffer).0) {
            let _ = writeln!(d, "  {p} -> {id};");
        }
    }
    d.push_str("}\n");
    d
}

/// Lays `dot` out with Graphviz. `Ok(None)` when `dot` is not installed.
pub fn layout_svg(dot: &str) -> Result<Option<String>, DriverError> {
    let child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DriverError::Tool(format!("dot: {e}"))),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(dot.as_bytes())
            .map_err(|e| DriverError::Tool(format!("dot: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| DriverError::Tool(format!("dot: {e}")))?;
    if !out.status.success() {
        return Err(DriverError::Tool(format!(
            "dot failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let svg = String::from_utf8_lossy(&out.stdout);
    // Keep the <svg> element only: the XML prolog and doctype do not belong inside HTML.
    Ok(Some(svg[svg.find("<svg").unwrap_or(0)..].to_string()))
}

fn page(title: &str, a: &Artifact, dot: &str, rows: &[KernelRow], what: &str) -> String {
    let svg = layout_svg(dot);
    let mut p = String::new();
    let _ = write!(
        p,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tessera show: {t}</title>\n<style>\n\
         body {{ font-family: Helvetica, Arial, sans-serif; margin: 1.5em; color: #212529; }}\n\
         h1 {{ font-size: 1.3em; }} h2 {{ font-size: 1.1em; margin-top: 1.5em; }}\n\
         table {{ border-collapse: collapse; font-size: 0.85em; }} td, th {{ border: 1px solid #dee2e6; padding: 2px 8px; text-align: left; }}\n\
         th {{ background: #f1f3f5; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}\n\
         .legend span {{ display: inline-block; padding: 1px 8px; margin-right: 6px; border: 1px solid #adb5bd; border-radius: 4px; }}\n\
         #graph svg {{ max-width: 100%; height: auto; }} pre {{ background: #f8f9fa; padding: 1em; overflow: auto; }}\n\
         </style></head><body>\n<h1>tessera show: {t}</h1>\n",
        t = html(title)
    );
    let total_code: usize = rows.iter().map(|r| r.code_bytes).sum();
    let launches = a
        .plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Launch { .. }))
        .count();
    let _ = writeln!(
        p,
        "<p id=\"summary\">target <b>{}</b> · {} kernels · {} plan steps ({} launches) · {} bytes of code · {} buffers · fingerprint <code>{}</code></p>",
        html(&a.target),
        rows.len(),
        a.plan.steps.len(),
        launches,
        total_code,
        a.plan.buffers.len(),
        html(&a.fingerprint)
    );
    let _ = writeln!(
        p,
        "<p class=\"legend\"><span style=\"background:{}\">kernels</span><span style=\"background:{}\">alias (no work)</span><span style=\"background:{}\">host copy</span><span style=\"background:{}\">folded at compile time</span></p>",
        colour(Execution::Kernel),
        colour(Execution::Alias),
        colour(Execution::Host),
        colour(Execution::Folded)
    );
    if what == "plan" {
        p.push_str("<p>An artifact keeps the plan, not the graph: each box is a plan step, linked to the next step that uses one of its buffers (so two readers of a buffer are linked too). Show the <code>.onnx</code> for the graph.</p>\n");
    }
    let _ = writeln!(
        p,
        "<h2>{}</h2>\n<div id=\"graph\">",
        if what == "plan" { "Plan" } else { "Graph" }
    );
    match svg {
        Ok(Some(svg)) => p.push_str(&svg),
        Ok(None) => {
            let _ = write!(p, "<p><b>Graphviz <code>dot</code> is not installed</b> (Debian: <code>apt-get install graphviz</code>), so the graph is not drawn. Its DOT source:</p><pre>{}</pre>", html(dot));
        }
        Err(e) => {
            let _ = write!(
                p,
                "<p><b>Graphviz failed:</b> {}</p><pre>{}</pre>",
                html(&e.to_string()),
                html(dot)
            );
        }
    }
    p.push_str("</div>\n<h2>Kernels</h2>\n<table id=\"kernels\"><tr><th>#</th><th>kernel</th><th>from node</th><th>grid</th><th>tiles (local buffers)</th><th>vector lanes</th><th>params</th><th>param bytes</th><th>code bytes</th></tr>\n");
    for (i, r) in rows.iter().enumerate() {
        let lanes = if r.lanes.is_empty() {
            "scalar".to_string()
        } else {
            r.lanes
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let tiles = if r.tiles.is_empty() {
            "—".to_string()
        } else {
            r.tiles.join("<br>")
        };
        let tiles = if r.grid.is_none() {
            "(machine code)".to_string()
        } else {
            tiles
        };
        let _ = writeln!(
            p,
            "<tr><td class=\"num\">{i}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            html(&r.name),
            html(&r.node),
            grid_text(&r.grid),
            tiles,
            lanes,
            r.params,
            r.param_bytes,
            r.code_bytes
        );
    }
    p.push_str("</table>\n<h2>Nodes</h2>\n<table id=\"nodes\"><tr><th>node</th><th>op</th><th>runs as</th></tr>\n");
    for n in &a.plan.nodes {
        let _ = writeln!(
            p,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            html(&n.node),
            html(&n.op),
            n.how.name()
        );
    }
    p.push_str(
        "</table>\n<p>Cycle counts appear here for <code>npu-sim</code> once it has a code generator; optimizer rules once the optimizer exists.</p>\n</body></html>\n",
    );
    p
}
