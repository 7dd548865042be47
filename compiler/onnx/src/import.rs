//! `ModelProto` -> graph IR. Decodes the model, turns initializers into constants, types
//! inputs, maps each node through the op registry ([`crate::ops`]) with its opset upgrade,
//! orders the nodes, binds compile-time inputs, and runs the graph-IR passes.

use crate::compat;
use crate::dtype::{dtype_from_onnx, onnx_code_name};
use crate::error::{OnnxError, Result};
use crate::ops;
use crate::proto::{
    attribute_proto::AttributeType, type_proto, ModelProto, NodeProto, ValueInfoProto,
};
use crate::tensor::{checked_dims, tensor_from_proto};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tessera_ir::{
    Attr, Attrs, DType, Dim, Graph, Node, Op, Shape, Tensor, TensorType, ValueId, MAX_ELEMENTS,
};

/// What the caller knows about the inputs at compile time.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Concrete shapes for graph inputs, overriding symbolic (or checking fixed) dims.
    pub input_shapes: BTreeMap<String, Vec<u64>>,
    /// Input values known at compile time. Every one gives its input a static shape; those
    /// that feed a shape-deciding operand (Reshape's `shape`, …) are also bound as constants
    /// and listed in [`Graph::bound_inputs`].
    pub bound_inputs: BTreeMap<String, Tensor>,
    /// Hand-written kernels bound to `(domain, op_type)`s the registry does not know (see
    /// `tessera_ir::custom`). A node of such an op becomes an `Op::Custom` node.
    pub custom_ops: Vec<tessera_ir::custom::CustomOp>,
    /// Accept an opset newer than the newest Tessera knows (for a known domain), treating the
    /// model as that newest opset. Off by default: such a model is refused with
    /// [`OnnxError::NewerOpset`]. [`newer_opsets`] lists what this option would override.
    pub allow_newer_opset: bool,
    /// Evaluates the nodes whose operands are all known at compile time (see
    /// `tessera_ir::fold`); the driver passes its interpreter-backed folder. `None` folds only
    /// `Constant` and the `Shape`/`Size` of static shapes, so a shape computed by any other
    /// op is refused as not known at compile time.
    pub folder: Option<std::sync::Arc<dyn tessera_ir::ConstEval>>,
}

/// An opset import newer than the newest one Tessera's registry knows for its domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewerOpset {
    /// "" for the default domain.
    pub domain: String,
    pub opset: i64,
    pub newest: i64,
}

impl std::fmt::Display for NewerOpset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the model imports opset {} of domain \"{}\", newer than the newest Tessera knows; it is treated as opset {}",
            self.opset,
            crate::error::domain_name(&self.domain),
            self.newest
        )
    }
}

/// The model's opset imports that are newer than the newest Tessera knows, for the domains it
/// knows (an unknown domain is refused per node, as unsupported).
pub fn newer_opsets(model: &ModelProto) -> Vec<NewerOpset> {
    model
        .opset_import
        .iter()
        .filter_map(|o| {
            let domain = if is_default_domain(&o.domain) {
                ""
            } else {
                o.domain.as_str()
            };
            let newest = ops::newest_opset(domain)?;
            (o.version > newest).then(|| NewerOpset {
                domain: domain.to_string(),
                opset: o.version,
                newest,
            })
        })
        .collect()
}

/// Imports an `.onnx` file. External data is resolved inside the file's folder.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<Graph> {
    let bytes = read_bounded(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let model = decode_model(&bytes, &path.display().to_string())?;
    import_model(&model, Some(dir), opts)
}

/// The largest protobuf file (model or `TensorProto`) Tessera reads: protobuf's own limit for
/// one message. A larger file is refused before it is read into memory. Everything prost
/// decodes (repeated fields, strings, bytes, nested messages) is then bounded by the bytes
/// present, so no declared size inside the file can make decoding allocate more than this.
pub const MAX_PROTO_BYTES: u64 = (2 << 30) - 1;

/// Reads a whole protobuf file, refusing one past [`MAX_PROTO_BYTES`] before reading it.
pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .map_err(|e| OnnxError::io(path, e))?
        .len();
    if len > MAX_PROTO_BYTES {
        return Err(OnnxError::BadModel(format!(
            "{}: {len} bytes, more than the {MAX_PROTO_BYTES} a protobuf message can hold",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| OnnxError::io(path, e))
}

/// Imports a serialized model. `model_dir` is where external data lives; `None` refuses
/// external data.
pub fn import_bytes(bytes: &[u8], model_dir: Option<&Path>, opts: &ImportOptions) -> Result<Graph> {
    let model = decode_model(bytes, "<model bytes>")?;
    import_model(&model, model_dir, opts)
}

/// Decodes a `ModelProto`; `file` names the source in errors.
pub fn decode_model(bytes: &[u8], file: &str) -> Result<ModelProto> {
    ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
        file: file.to_string(),
        reason: e.to_string(),
    })
}

/// Imports a decoded model.
pub fn import_model(
    model: &ModelProto,
    model_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Graph> {
    let gp = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::BadModel("the model has no graph".into()))?;
    if let Some(n) = newer_opsets(model).into_iter().next() {
        if !opts.allow_newer_opset {
            return Err(OnnxError::NewerOpset {
                domain: n.domain,
                opset: n.opset,
                newest: n.newest,
            });
        }
    }
    // With `allow_newer_opset`, a newer opset reads as the newest known one.
    let known = |d: &str, v: i64| ops::newest_opset(d).map_or(v, |newest| v.min(newest));
    // IR versions before 3 had no opset_import and meant opset 1 of the default domain.
    let opset = if model.opset_import.is_empty() {
        Some(1)
    } else {
        model
            .opset_import
            .iter()
            .find(|o| is_default_domain(&o.domain))
            .map(|o| known("", o.version))
    };
    let opsets = Opsets {
        default: opset,
        model,
        custom_ops: &opts.custom_ops,
    };

    let mut b = Builder::new(&gp.name);

    // ---- values: initializers, inputs, node results ----
    if let Some(sp) = gp.sparse_initializer.first() {
        let name = sp
            .values
            .as_ref()
            .map(|v| v.name.clone())
            .unwrap_or_default();
        return Err(OnnxError::UnsupportedFeature {
            at: format!("initializer \"{name}\""),
            what: "sparse initializers".into(),
        });
    }
    for tp in &gp.initializer {
        if tp.name.is_empty() {
            return Err(OnnxError::BadModel("an initializer has no name".into()));
        }
        let t = tensor_from_proto(tp, model_dir)?;
        let id = b.graph.add_const(tp.name.clone(), t);
        b.define(&tp.name, id, "an initializer")?;
    }
    for vi in &gp.input {
        // Older models list initializers as inputs too; they stay constants.
        if b.names.contains_key(&vi.name) {
            continue;
        }
        if vi.name.is_empty() {
            return Err(OnnxError::BadModel("a graph input has no name".into()));
        }
        let mut ty = b.value_type(vi, "graph input")?;
        if let Some(dims) = opts.input_shapes.get(&vi.name) {
            ty = Some(override_shape(&vi.name, ty, dims, "input_shapes")?);
        }
        if let Some(t) = opts.bound_inputs.get(&vi.name) {
            ty = Some(override_shape(
                &vi.name,
                ty.clone(),
                &t.dims,
                "bound_inputs",
            )?);
            if let Some(decl) = &ty {
                if decl.dtype != t.dtype {
                    return Err(OnnxError::BadModel(format!(
                        "bound value for input \"{}\" has dtype {}, but the model declares {}",
                        vi.name, t.dtype, decl.dtype
                    )));
                }
            }
        }
        let id = b.graph.add_value(vi.name.clone(), ty);
        b.define(&vi.name, id, "a graph input")?;
        b.graph.inputs.push(id);
    }
    for name in opts.input_shapes.keys().chain(opts.bound_inputs.keys()) {
        if !b
            .graph
            .inputs
            .iter()
            .any(|&i| b.graph.value(i).name == *name)
        {
            return Err(OnnxError::BadModel(format!(
                "the options name \"{name}\", which is not a runtime input of the graph"
            )));
        }
    }
    for np in &gp.node {
        for out in np.output.iter().filter(|o| !o.is_empty()) {
            let id = b.graph.add_value(out.clone(), None);
            b.define(out, id, &node_desc(np))?;
        }
    }
    // Declared types of intermediate values and outputs: a start for inference.
    for vi in gp.value_info.iter().chain(&gp.output) {
        if let Some(&id) = b.names.get(&vi.name) {
            if b.graph.value(id).ty.is_none() {
                if let Ok(Some(ty)) = b.value_type(vi, "value") {
                    b.graph.value_mut(id).ty = Some(ty);
                }
            }
        }
    }

    // ---- nodes ----
    import_nodes(&mut b, &gp.node, &opsets, model_dir)?;

    for vi in &gp.output {
        if b.sequence(&vi.name).is_some() {
            return Err(OnnxError::UnsupportedFeature {
                at: format!("graph output \"{}\"", vi.name),
                what: "sequence values".into(),
            });
        }
        let id = b.names.get(&vi.name).copied().ok_or_else(|| {
            OnnxError::BadModel(format!("graph output \"{}\" is never defined", vi.name))
        })?;
        b.graph.outputs.push(id);
    }

    let mut graph = b.graph;
    order_nodes(&mut graph)?;
    bind_inputs(&mut graph, opts);
    compat::run_passes(&mut graph, opts.folder.as_deref())?;
    Ok(graph)
}

/// The model's opset imports: the default domain's version and a lookup for the others.
pub(crate) struct Opsets<'m> {
    pub default: Option<i64>,
    pub model: &'m ModelProto,
    /// The caller's custom ops (`ImportOptions::custom_ops`).
    pub custom_ops: &'m [tessera_ir::custom::CustomOp],
}

impl Opsets<'_> {
    /// The imported version of a non-default domain (a newer one than known reads as the
    /// newest known, as for the default domain); 0 when it is not imported.
    pub fn of(&self, d: &str) -> i64 {
        self.model
            .opset_import
            .iter()
            .find(|o| o.domain == d)
            .map_or(0, |o| {
                ops::newest_opset(d).map_or(o.version, |newest| o.version.min(newest))
            })
    }
}

/// Maps each node through the registry into `b`'s graph (the top-level graph or a subgraph
/// body), applying its opset upgrade.
pub(crate) fn import_nodes(
    b: &mut Builder,
    nodes: &[NodeProto],
    opsets: &Opsets,
    model_dir: Option<&Path>,
) -> Result<()> {
    for np in nodes {
        let domain = if np.domain == "ai.onnx" {
            ""
        } else {
            np.domain.as_str()
        };
        let unsupported = |opset: i64| OnnxError::Unsupported {
            op_type: np.op_type.clone(),
            domain: domain.to_string(),
            opset,
            node: node_ref(np),
        };
        // A node of another domain needs that domain imported; its opset then selects the
        // upgrades of its registry line, as the default domain's does.
        let opset = if domain.is_empty() {
            opsets.default.ok_or_else(|| {
                OnnxError::BadModel(format!(
                    "{} uses the default domain, but the model imports no opset for it",
                    node_desc(np)
                ))
            })?
        } else {
            opsets.of(domain)
        };
        if domain.is_empty() && ops::sequence::is_sequence_op(&np.op_type) {
            ops::sequence::import(b, np)?;
            continue;
        }
        let custom = opsets
            .custom_ops
            .iter()
            .find(|c| c.domain == domain && c.op_type == np.op_type);
        let entry = match ops::lookup(domain, &np.op_type).filter(|_| opset > 0) {
            Some(e) => Some(e),
            None if custom.is_some() => None,
            None => return Err(unsupported(opset)),
        };
        let mut inputs = Vec::with_capacity(np.input.len());
        for name in &np.input {
            if name.is_empty() {
                inputs.push(None);
                continue;
            }
            let id = b.names.get(name).copied().ok_or_else(|| {
                OnnxError::BadModel(format!(
                    "{} reads \"{name}\", which no graph input, initializer or node defines",
                    node_desc(np)
                ))
            })?;
            inputs.push(Some(id));
        }
        // Unnamed optional results ("") still need a value so that positions are kept.
        let mut outputs = Vec::with_capacity(np.output.len());
        for (k, name) in np.output.iter().enumerate() {
            let id = match b.names.get(name.as_str()) {
                Some(&id) if !name.is_empty() => id,
                _ => {
                    let n = b.fresh_name(&format!("{}_unused{k}", np.name));
                    let id = b.graph.add_value(n.clone(), None);
                    b.names.insert(n, id);
                    id
                }
            };
            outputs.push(id);
        }
        let mut attrs = Attrs::new();
        if entry.is_some_and(|e| crate::ops::control::has_bodies(e.op)) {
            // Bodies are imported as closed subgraphs; the outer values they read become
            // trailing operands (see tessera_ir::infer::control).
            let captured =
                crate::ops::control::import_bodies(b, np, opsets, model_dir, &mut attrs)?;
            inputs.extend(captured.into_iter().map(Some));
        }
        for a in &np.attribute {
            if !attrs.contains_key(&a.name) {
                let v = convert_attr(a, np, model_dir)?;
                attrs.insert(a.name.clone(), v);
            }
        }
        // Opset 1-5 bookkeeping attribute with no meaning for inference.
        attrs.remove("consumed_inputs");

        if np.op_type == "Constant" {
            b.constant(np, &attrs, &outputs)?;
            continue;
        }
        let Some(entry) = entry else {
            // A custom op: its file decides everything; ONNX attributes have no meaning for it.
            let c = custom.expect("checked above: an op without a registry line is a custom op");
            if let Some(a) = attrs.keys().next() {
                return Err(OnnxError::BadModel(format!(
                    "{} has attribute `{a}`, but custom op {} takes no attributes",
                    node_desc(np),
                    c.op_type
                )));
            }
            let mut attrs = Attrs::new();
            attrs.insert("domain".into(), Attr::String(c.domain.clone()));
            attrs.insert("op_type".into(), Attr::String(c.op_type.clone()));
            attrs.insert("source".into(), Attr::String(c.source.clone()));
            b.graph.nodes.push(Node {
                name: np.name.clone(),
                op: Op::Custom,
                inputs,
                outputs,
                attrs,
            });
            continue;
        };
        let node = Node {
            name: np.name.clone(),
            op: entry.op,
            inputs,
            outputs,
            attrs,
        };
        let upgrade = entry
            .upgrades
            .iter()
            .find(|(below, _)| opset < *below)
            .map(|(_, f)| *f);
        let mut ctx = Ctx {
            b: &mut *b,
            opset,
            op_type: &np.op_type,
            pre: Vec::new(),
        };
        let node = match upgrade {
            Some(f) => f(&mut ctx, node)?,
            None => vec![node],
        };
        let pre = std::mem::take(&mut ctx.pre);
        b.graph.nodes.extend(pre);
        b.graph.nodes.extend(node);
    }
    Ok(())
}

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

/// The node's name, or for an unnamed node which result it defines.
fn node_ref(np: &NodeProto) -> String {
    if !np.name.is_empty() {
        return np.name.clone();
    }
    match np.output.iter().find(|o| !o.is_empty()) {
        Some(o) => format!("<unnamed, defining {o}>"),
        None => "<unnamed>".into(),
    }
}

/// `Add node "n"`, or for an unnamed node the first result it defines.
pub(crate) fn node_desc(np: &NodeProto) -> String {
    if !np.name.is_empty() {
        format!("{} node \"{}\"", np.op_type, np.name)
    } else {
        match np.output.iter().find(|o| !o.is_empty()) {
            Some(o) => format!("{} node (unnamed, defining \"{o}\")", np.op_type),
            None => format!("{} node (unnamed)", np.op_type),
        }
    }
}

/// Applies a caller-given shape to an input's declared type: ranks must agree and fixed
/// dims must match; symbolic ones become fixed.
fn override_shape(
    name: &str,
    ty: Option<TensorType>,
    dims: &[u64],
    source: &str,
) -> Result<TensorType> {
    let n = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS);
    if n.is_none() {
        return Err(OnnxError::BadModel(format!(
            "{source} gives input \"{name}\" shape {dims:?}, which exceeds the limit of {MAX_ELEMENTS} elements"
        )));
    }
    let Some(ty) = ty else {
        return Err(OnnxError::BadModel(format!(
            "input \"{name}\" has no declared element type"
        )));
    };
    if ty.shape.rank() != dims.len() {
        return Err(OnnxError::BadModel(format!(
            "{source} gives input \"{name}\" shape {dims:?}, but the model declares {}",
            ty.shape
        )));
    }
    for (d, &want) in ty.shape.0.iter().zip(dims) {
        if let Dim::Fixed(have) = d {
            if *have != want {
                return Err(OnnxError::BadModel(format!(
                    "{source} gives input \"{name}\" shape {dims:?}, but the model declares {}",
                    ty.shape
                )));
            }
        }
    }
    Ok(TensorType::fixed(ty.dtype, dims))
}

/// Binds inputs whose contents decide a shape to their compile-time values: those that
/// feed a shape-deciding operand (see `shape_operands`), directly or through a chain of
/// nodes (exporters compute shapes with `Cast`, `Concat`, `Gather` …; the IR folder then
/// evaluates the chain). The walk stops at `Shape` and `Size`, which read only types.
fn bind_inputs(graph: &mut Graph, opts: &ImportOptions) {
    if opts.bound_inputs.is_empty() {
        return;
    }
    let nv = graph.values.len();
    let mut producer: Vec<Option<usize>> = vec![None; nv];
    for (i, n) in graph.nodes.iter().enumerate() {
        for &o in &n.outputs {
            if let Some(p) = producer.get_mut(o.0 as usize) {
                *p = Some(i);
            }
        }
    }
    let mut decides_shape = vec![false; nv];
    let mut work: Vec<ValueId> = Vec::new();
    for n in &graph.nodes {
        for &k in compat::shape_operands(n.op) {
            if let Some(v) = n.input(k) {
                work.push(v);
            }
        }
    }
    while let Some(v) = work.pop() {
        let Some(seen) = decides_shape.get_mut(v.0 as usize) else {
            continue;
        };
        if std::mem::replace(seen, true) {
            continue;
        }
        if let Some(p) = producer[v.0 as usize] {
            let n = &graph.nodes[p];
            if !matches!(n.op, Op::Shape | Op::Size) {
                work.extend(n.inputs.iter().flatten().copied());
            }
        }
    }
    for &id in &graph.inputs.clone() {
        let Some(t) = opts.bound_inputs.get(&graph.value(id).name) else {
            continue;
        };
        if decides_shape[id.0 as usize] {
            graph.value_mut(id).konst = Some(t.clone());
            graph.bound_inputs.push(id);
        }
    }
}

/// Puts nodes in topological order (ONNX requires it, but models do not always comply),
/// and checks that every operand is defined by something. A cycle is reported with a node on
/// it and the path around it.
pub(crate) fn order_nodes(graph: &mut Graph) -> Result<()> {
    let nv = graph.values.len();
    let mut producer: Vec<Option<usize>> = vec![None; nv];
    for (i, n) in graph.nodes.iter().enumerate() {
        for &o in &n.outputs {
            if let Some(p) = producer.get_mut(o.0 as usize) {
                *p = Some(i);
            }
        }
    }
    let mut available = vec![false; nv];
    for &i in &graph.inputs {
        available[i.0 as usize] = true;
    }
    for (i, v) in graph.values.iter().enumerate() {
        if v.konst.is_some() {
            available[i] = true;
        }
    }
    // Every operand must come from an input, a constant or a node.
    for n in &graph.nodes {
        for &v in n.inputs.iter().flatten() {
            let k = v.0 as usize;
            if !available.get(k).copied().unwrap_or(false)
                && producer.get(k).copied().flatten().is_none()
            {
                return Err(OnnxError::BadModel(format!(
                    "{} reads \"{}\", which nothing produces (an output dropped as training-only?)",
                    n.label(),
                    graph.values.get(k).map_or("?", |v| v.name.as_str())
                )));
            }
        }
    }
    for &o in &graph.outputs {
        let k = o.0 as usize;
        if !available[k] && producer[k].is_none() {
            return Err(OnnxError::BadModel(format!(
                "graph output \"{}\" is not produced by any node",
                graph.value(o).name
            )));
        }
    }
    // Kahn's algorithm, stable: among ready nodes the earliest in file order goes first.
    let n = graph.nodes.len();
    let mut missing: Vec<usize> = vec![0; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in graph.nodes.iter().enumerate() {
        for &v in node.inputs.iter().flatten() {
            if let Some(p) = producer[v.0 as usize] {
                if !available[v.0 as usize] {
                    missing[i] += 1;
                    users[p].push(i);
                }
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| missing[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            missing[u] -= 1;
            if missing[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() < n {
        // Walk back through unfinished producers until a node repeats: that node is on a cycle.
        let start = (0..n).find(|&i| missing[i] > 0).unwrap_or(0);
        let mut path = vec![start];
        let mut cur = start;
        loop {
            let next = graph.nodes[cur]
                .inputs
                .iter()
                .flatten()
                .filter_map(|v| producer[v.0 as usize])
                .find(|&p| missing[p] > 0);
            let Some(next) = next else { break };
            if let Some(pos) = path.iter().position(|&p| p == next) {
                let cycle: Vec<String> = path[pos..]
                    .iter()
                    .rev()
                    .map(|&i| graph.nodes[i].label())
                    .collect();
                return Err(OnnxError::BadModel(format!(
                    "the graph has a cycle through {}: {}",
                    graph.nodes[next].label(),
                    cycle.join(" -> ")
                )));
            }
            path.push(next);
            cur = next;
        }
        return Err(OnnxError::BadModel(format!(
            "the graph has a cycle through {}",
            graph.nodes[start].label()
        )));
    }
    let mut old: Vec<Option<Node>> = std::mem::take(&mut graph.nodes)
        .into_iter()
        .map(Some)
        .collect();
    graph.nodes = order.into_iter().filter_map(|i| old[i].take()).collect();
    Ok(())
}

/// Converts one attribute. Graph-valued attributes (If/Loop bodies) and type protos are not
/// supported; those ops are refused before this is reached.
fn convert_attr(
    a: &crate::proto::AttributeProto,
    np: &NodeProto,
    dir: Option<&Path>,
) -> Result<Attr> {
    let unsupported = |what: &str| OnnxError::UnsupportedFeature {
        at: format!("attribute `{}` of {}", a.name, node_desc(np)),
        what: what.to_string(),
    };
    if !a.ref_attr_name.is_empty() {
        return Err(unsupported(
            "attribute references (only meaningful inside functions)",
        ));
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let ty = AttributeType::try_from(a.r#type).unwrap_or(AttributeType::Undefined);
    Ok(match ty {
        AttributeType::Float => Attr::Float(a.f),
        AttributeType::Int => Attr::Int(a.i),
        AttributeType::String => Attr::String(text(&a.s)),
        AttributeType::Tensor => match &a.t {
            Some(t) => Attr::Tensor(tensor_from_proto(t, dir)?),
            None => {
                return Err(OnnxError::BadModel(format!(
                    "attribute `{}` of {} has no tensor",
                    a.name,
                    node_desc(np)
                )))
            }
        },
        AttributeType::Floats => Attr::Floats(a.floats.clone()),
        AttributeType::Ints => Attr::Ints(a.ints.clone()),
        AttributeType::Strings => Attr::Strings(a.strings.iter().map(|s| text(s)).collect()),
        AttributeType::Graph | AttributeType::Graphs => {
            return Err(unsupported("graph-valued attributes of this op"))
        }
        AttributeType::SparseTensor | AttributeType::SparseTensors => {
            return Err(unsupported("sparse tensors"))
        }
        AttributeType::Tensors => return Err(unsupported("tensor-list attributes")),
        AttributeType::TypeProto | AttributeType::TypeProtos => {
            return Err(unsupported("type attributes"))
        }
        // Very old models leave `type` unset: infer it from which field holds data.
        AttributeType::Undefined => {
            if let Some(t) = &a.t {
                Attr::Tensor(tensor_from_proto(t, dir)?)
            } else if !a.floats.is_empty() {
                Attr::Floats(a.floats.clone())
            } else if !a.ints.is_empty() {
                Attr::Ints(a.ints.clone())
            } else if !a.strings.is_empty() {
                Attr::Strings(a.strings.iter().map(|s| text(s)).collect())
            } else if !a.s.is_empty() {
                Attr::String(text(&a.s))
            } else if a.f != 0.0 {
                Attr::Float(a.f)
            } else {
                Attr::Int(a.i)
            }
        }
    })
}

/// Graph under construction, plus the name table.
pub(crate) struct Builder {
    pub graph: Graph,
    names: HashMap<String, ValueId>,
    fresh: usize,
    /// Sequences built in this graph, as the tensors they hold (see `ops::sequence`).
    seqs: HashMap<String, Vec<ValueId>>,
}

impl Builder {
    pub(crate) fn new(name: &str) -> Builder {
        Builder {
            graph: Graph::new(name),
            names: HashMap::new(),
            fresh: 0,
            seqs: HashMap::new(),
        }
    }

    /// The tensors of sequence `name`, if it is one built in this graph.
    pub(crate) fn sequence(&self, name: &str) -> Option<&Vec<ValueId>> {
        self.seqs.get(name)
    }

    pub(crate) fn set_sequence(&mut self, name: &str, items: Vec<ValueId>) {
        self.seqs.insert(name.to_string(), items);
    }

    /// A fresh untyped value.
    pub(crate) fn fresh_value(&mut self, hint: &str) -> ValueId {
        let name = self.fresh_name(hint);
        let id = self.graph.add_value(name.clone(), None);
        self.names.insert(name, id);
        id
    }

    /// A fresh constant.
    pub(crate) fn fresh_const(&mut self, hint: &str, t: Tensor) -> ValueId {
        let name = self.fresh_name(hint);
        let id = self.graph.add_const(name.clone(), t);
        self.names.insert(name, id);
        id
    }

    /// The value a name refers to in this graph, if any.
    pub(crate) fn lookup(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    pub(crate) fn define(&mut self, name: &str, id: ValueId, by: &str) -> Result<()> {
        if self.names.insert(name.to_string(), id).is_some() {
            return Err(OnnxError::BadModel(format!(
                "value \"{name}\" is defined twice (again by {by})"
            )));
        }
        Ok(())
    }

    /// A value name not used by the model, derived from `hint`.
    pub(crate) fn fresh_name(&mut self, hint: &str) -> String {
        loop {
            self.fresh += 1;
            let name = format!("{hint}__{}", self.fresh);
            // The caller registers the name with its value right after.
            if !self.names.contains_key(&name) {
                return name;
            }
        }
    }

    /// The declared type of a value. `None` when the model leaves the type out; an error for
    /// non-tensor types (sequences, maps, optionals) and unknown element types.
    pub(crate) fn value_type(
        &mut self,
        vi: &ValueInfoProto,
        what: &str,
    ) -> Result<Option<TensorType>> {
        let unsupported = |w: String| OnnxError::UnsupportedFeature {
            at: format!("{what} \"{}\"", vi.name),
            what: w,
        };
        let Some(tp) = &vi.r#type else {
            return Ok(None);
        };
        let tt = match &tp.value {
            None => return Ok(None),
            Some(type_proto::Value::TensorType(t)) => t,
            Some(type_proto::Value::SequenceType(_)) => {
                return Err(unsupported("sequence types".into()))
            }
            Some(type_proto::Value::MapType(_)) => return Err(unsupported("map types".into())),
            Some(type_proto::Value::OptionalType(_)) => {
                return Err(unsupported("optional types".into()))
            }
            Some(type_proto::Value::SparseTensorType(_)) => {
                return Err(unsupported("sparse tensor types".into()))
            }
        };
        let dtype = match dtype_from_onnx(tt.elem_type) {
            Some(d) => d,
            None if tt.elem_type == 0 => return Ok(None),
            None => {
                return Err(unsupported(format!(
                    "element type {}",
                    onnx_code_name(tt.elem_type)
                )))
            }
        };
        let Some(shape) = &tt.shape else {
            // Unknown rank: graph IR needs a rank, so leave the type for inference.
            return Ok(None);
        };
        let mut dims = Vec::with_capacity(shape.dim.len().min(64));
        let mut fixed = Vec::new();
        for (k, d) in shape.dim.iter().enumerate() {
            use crate::proto::tensor_shape_proto::dimension::Value as DV;
            dims.push(match &d.value {
                // Old exporters wrote -1 for "dynamic": every peer reads it as a symbol.
                Some(DV::DimValue(-1)) => Dim::Sym(format!("unk_{}_{k}", self.fresh_sym())),
                Some(DV::DimValue(v)) => {
                    fixed.push(*v);
                    Dim::Fixed(u64::try_from(*v).map_err(|_| {
                        OnnxError::BadModel(format!(
                            "{what} \"{}\" has negative dimension {v}",
                            vi.name
                        ))
                    })?)
                }
                Some(DV::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                // A dimension with neither a number nor a name: a fresh symbol, unlike any other.
                _ => Dim::Sym(format!("unk_{}_{k}", self.fresh_sym())),
            });
        }
        // An absurd static shape is refused here, before anything could be sized from it.
        checked_dims(&fixed)
            .map_err(|m| OnnxError::BadModel(format!("{what} \"{}\": {m}", vi.name)))?;
        Ok(Some(TensorType::new(dtype, Shape(dims))))
    }

    fn fresh_sym(&mut self) -> usize {
        self.fresh += 1;
        self.fresh
    }

    /// A `Constant` node becomes a constant value.
    fn constant(&mut self, np: &NodeProto, attrs: &Attrs, outputs: &[ValueId]) -> Result<()> {
        let bad = |m: &str| OnnxError::BadModel(format!("{}: {m}", node_desc(np)));
        if attrs.len() != 1 {
            return Err(bad("a Constant needs exactly one value attribute"));
        }
        let t = match attrs.iter().next() {
            Some((k, v)) => match (k.as_str(), v) {
                ("value", Attr::Tensor(t)) => t.clone(),
                ("value_float", Attr::Float(f)) => Tensor::from_f32(vec![], &[*f]),
                ("value_floats", Attr::Floats(f)) => Tensor::from_f32(vec![f.len() as u64], f),
                ("value_int", Attr::Int(i)) => Tensor::from_i64(vec![], &[*i]),
                ("value_ints", Attr::Ints(i)) => Tensor::from_i64(vec![i.len() as u64], i),
                ("value_string", Attr::String(s)) => Tensor::from_strings(vec![], vec![s.clone()]),
                ("value_strings", Attr::Strings(s)) => {
                    Tensor::from_strings(vec![s.len() as u64], s.clone())
                }
                ("sparse_value", _) => {
                    return Err(OnnxError::UnsupportedFeature {
                        at: node_desc(np),
                        what: "sparse constants".into(),
                    })
                }
                (k, _) => return Err(bad(&format!("unexpected attribute `{k}`"))),
            },
            None => return Err(bad("no value")),
        };
        let &[out] = outputs else {
            return Err(bad("a Constant has exactly one result"));
        };
        let v = self.graph.value_mut(out);
        v.ty = Some(TensorType::fixed(t.dtype, &t.dims));
        v.konst = Some(t);
        Ok(())
    }
}

/// What an opset-upgrade function may use: the graph (to add constants and values), the
/// model's opset, and a list of nodes to place before the upgraded node.
pub(crate) struct Ctx<'a> {
    pub b: &'a mut Builder,
    pub opset: i64,
    pub op_type: &'a str,
    pub pre: Vec<Node>,
}

impl Ctx<'_> {
    /// A fresh intermediate value.
    pub fn tmp(&mut self, hint: &str) -> ValueId {
        let name = self.b.fresh_name(hint);
        let id = self.b.graph.add_value(name.clone(), None);
        self.b.names.insert(name, id);
        id
    }

    /// A constant value.
    pub fn konst(&mut self, hint: &str, t: Tensor) -> ValueId {
        let name = self.b.fresh_name(hint);
        let id = self.b.graph.add_const(name.clone(), t);
        self.b.names.insert(name, id);
        id
    }

    /// A 1-D i64 constant (axes, pads, starts …).
    pub fn ints(&mut self, hint: &str, v: &[i64]) -> ValueId {
        self.konst(hint, Tensor::from_i64(vec![v.len() as u64], v))
    }

    /// A scalar constant with the dtype of `like`. If that dtype is not known yet, an f32
    /// constant followed by a CastLike node (placed before the upgraded node).
    pub fn scalar_like(&mut self, hint: &str, v: f64, like: ValueId) -> ValueId {
        let dtype = self.b.graph.ty(like).map(|t| t.dtype);
        if let Some(t) = dtype.and_then(|d| scalar_tensor(d, v)) {
            return self.konst(hint, t);
        }
        let c = self.konst(hint, Tensor::from_f32(vec![], &[v as f32]));
        let out = self.tmp(hint);
        self.pre.push(Node {
            name: String::new(),
            op: Op::CastLike,
            inputs: vec![Some(c), Some(like)],
            outputs: vec![out],
            attrs: Attrs::new(),
        });
        out
    }

    /// The error for an old form that has no equivalent in graph IR.
    pub fn unsupported(&self, node: &Node, what: &str) -> OnnxError {
        OnnxError::UnsupportedFeature {
            at: format!("{} (opset {})", label(node, self.op_type), self.opset),
            what: what.to_string(),
        }
    }

    pub fn bad(&self, node: &Node, what: &str) -> OnnxError {
        OnnxError::BadModel(format!("{}: {what}", label(node, self.op_type)))
    }
}

fn label(node: &Node, op_type: &str) -> String {
    if node.name.is_empty() {
        format!("{op_type} node (unnamed)")
    } else {
        format!("{op_type} node \"{}\"", node.name)
    }
}

/// A 0-d tensor of `dtype` holding `v` (rounded as a cast would). `None` for strings.
pub(crate) fn scalar_tensor(dtype: DType, v: f64) -> Option<Tensor> {
    use DType::*;
    let bytes: Vec<u8> = match dtype {
        F64 => v.to_le_bytes().to_vec(),
        F32 => (v as f32).to_le_bytes().to_vec(),
        F16 => half::f16::from_f64(v).to_le_bytes().to_vec(),
        BF16 => half::bf16::from_f64(v).to_le_bytes().to_vec(),
        F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F4E2M1 => {
            let mf = tessera_ir::numeric::MiniFloat::of(dtype)?;
            vec![mf.encode(v as f32, true) as u8]
        }
        I64 => (v as i64).to_le_bytes().to_vec(),
        I32 => (v as i32).to_le_bytes().to_vec(),
        I16 => (v as i16).to_le_bytes().to_vec(),
        I8 => (v as i8).to_le_bytes().to_vec(),
        U64 => (v as u64).to_le_bytes().to_vec(),
        U32 => (v as u32).to_le_bytes().to_vec(),
        U16 => (v as u16).to_le_bytes().to_vec(),
        U8 => (v as u8).to_le_bytes().to_vec(),
        I4 | I2 | U4 | U2 => {
            let mask = (1u8 << dtype.bits()) - 1;
            vec![(v as i64 as u8) & mask]
        }
        Bool => vec![u8::from(v != 0.0)],
        String => return None,
    };
    Some(Tensor::new(dtype, vec![], bytes))
}

/// The names of a model file's runtime inputs (graph inputs that are not initializers), in
/// graph order: the order of `input_K.pb` files in ONNX test data. A runtime input of a
/// non-tensor type (sequence, map, optional, sparse tensor) is `UnsupportedFeature`, naming
/// the input: its test data is not a `TensorProto` either.
pub fn input_names(path: &Path) -> Result<Vec<String>> {
    let bytes = read_bounded(path)?;
    let model = decode_model(&bytes, &path.display().to_string())?;
    let gp = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::BadModel("the model has no graph".into()))?;
    let inits: std::collections::HashSet<&str> =
        gp.initializer.iter().map(|t| t.name.as_str()).collect();
    let runtime: Vec<&ValueInfoProto> = gp
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .collect();
    for vi in &runtime {
        let what = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::SequenceType(_)) => "sequence types",
            Some(type_proto::Value::MapType(_)) => "map types",
            Some(type_proto::Value::OptionalType(_)) => "optional types",
            Some(type_proto::Value::SparseTensorType(_)) => "sparse tensor types",
            Some(type_proto::Value::TensorType(_)) | None => continue,
        };
        return Err(OnnxError::UnsupportedFeature {
            at: format!("graph input \"{}\"", vi.name),
            what: what.into(),
        });
    }
    Ok(runtime.into_iter().map(|i| i.name.clone()).collect())
}
