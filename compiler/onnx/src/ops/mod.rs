//! The ONNX op registry: one line per ONNX op type, mapping it to a graph-IR [`Op`] and, per
//! opset range, an upgrade function that rewrites older forms into the newest one (graph IR
//! only knows the newest semantics). Lines are grouped by family, one file each.
//!
//! An upgrade `(below, f)` applies when the model's opset is `< below`; the first matching
//! pair wins, so list them in ascending order. `f` handles the whole range below its bound
//! (it may call the next range's function after its own rewrite).

mod contrib;
pub(crate) mod control;
mod math;
mod nn;
mod optional;
mod quant;
mod random;
mod reduce;
mod select;
pub(crate) mod sequence;
mod shape;
mod spectral;
mod strings;

use crate::error::Result;
use crate::import::Ctx;
use tessera_ir::{Attr, Node, Op};

/// Rewrites a node built from an older opset into the newest form. Returns the nodes that
/// replace it (usually just the node itself); extra nodes that must come first go to
/// `ctx.pre`.
pub(crate) type Upgrade = fn(&mut Ctx, Node) -> Result<Vec<Node>>;

/// One registry line.
pub(crate) struct Entry {
    /// The ONNX domain: "" for the default domain (`ai.onnx`), else e.g. `ai.onnx.ml`.
    pub domain: &'static str,
    pub onnx: &'static str,
    pub op: Op,
    pub upgrades: &'static [(i64, Upgrade)],
}

/// A registry line with no upgrades.
pub(crate) const fn op(onnx: &'static str, op: Op) -> Entry {
    Entry {
        domain: "",
        onnx,
        op,
        upgrades: &[],
    }
}

/// A registry line with no upgrades for an op of a non-default domain.
pub(crate) const fn in_domain(domain: &'static str, onnx: &'static str, op: Op) -> Entry {
    Entry {
        domain,
        onnx,
        op,
        upgrades: &[],
    }
}

/// A registry line with upgrades.
pub(crate) const fn up(onnx: &'static str, op: Op, upgrades: &'static [(i64, Upgrade)]) -> Entry {
    Entry {
        domain: "",
        onnx,
        op,
        upgrades,
    }
}

/// The newest opset of each domain the registry knows, as in the pinned `onnx==1.23.2`
/// (`onnx.defs.onnx_opset_version()` and each domain's newest schema). A model importing a
/// newer opset of one of these domains is refused (see `OnnxError::NewerOpset`).
pub const NEWEST_OPSETS: &[(&str, i64)] = &[
    ("", 28),
    ("ai.onnx.ml", 5),
    ("ai.onnx.preview", 1),
    ("ai.onnx.preview.training", 1),
];

/// The newest opset the registry knows of `domain` ("" for the default domain), if it knows
/// the domain at all.
pub fn newest_opset(domain: &str) -> Option<i64> {
    NEWEST_OPSETS
        .iter()
        .find(|(d, _)| *d == domain)
        .map(|&(_, v)| v)
}

const FAMILIES: &[&[Entry]] = &[
    contrib::OPS,
    control::OPS,
    select::OPS,
    strings::OPS,
    optional::OPS,
    math::OPS,
    nn::OPS,
    reduce::OPS,
    shape::OPS,
    quant::OPS,
    random::OPS,
    spectral::OPS,
];

/// The registry line for an ONNX op type of `domain` ("" for the default domain).
pub(crate) fn lookup(domain: &str, op_type: &str) -> Option<&'static Entry> {
    FAMILIES
        .iter()
        .flat_map(|f| f.iter())
        .find(|e| e.domain == domain && e.onnx == op_type)
}

/// Every ONNX op type the frontend accepts, for documentation and tests.
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<_> = FAMILIES
        .iter()
        .flat_map(|f| f.iter())
        .filter(|e| e.domain.is_empty())
        .map(|e| e.onnx)
        .collect();
    v.sort_unstable();
    v
}

/// One registry line as documentation sees it: the ONNX domain ("" for the default) and op
/// type, the graph-IR op it becomes, and the opset bounds below which an older form is
/// upgraded at import (`i64::MAX` for a rewrite that applies at every opset).
#[derive(Clone, Debug)]
pub struct RegistryLine {
    pub domain: &'static str,
    pub onnx: &'static str,
    pub op: Op,
    pub upgrades_below: Vec<i64>,
}

/// Every registry line, sorted by domain and op type (for docs/ops.md and its test).
pub fn registry() -> Vec<RegistryLine> {
    let mut v: Vec<RegistryLine> = FAMILIES
        .iter()
        .flat_map(|f| f.iter())
        .map(|e| RegistryLine {
            domain: e.domain,
            onnx: e.onnx,
            op: e.op,
            upgrades_below: e.upgrades.iter().map(|(b, _)| *b).collect(),
        })
        .collect();
    v.sort_by(|a, b| (a.domain, a.onnx).cmp(&(b.domain, b.onnx)));
    v
}

// ---- helpers shared by the family files ----

/// Removes an attribute and returns it.
pub(crate) fn take(node: &mut Node, name: &str) -> Option<Attr> {
    node.attrs.remove(name)
}

/// Removes an `ints` attribute.
pub(crate) fn take_ints(ctx: &Ctx, node: &mut Node, name: &str) -> Result<Option<Vec<i64>>> {
    match take(node, name) {
        None => Ok(None),
        Some(Attr::Ints(v)) => Ok(Some(v)),
        Some(Attr::Int(v)) => Ok(Some(vec![v])),
        Some(_) => Err(ctx.bad(node, &format!("attribute `{name}` must be a list of ints"))),
    }
}

/// Removes a float attribute (an int is accepted too).
pub(crate) fn take_float(ctx: &Ctx, node: &mut Node, name: &str) -> Result<Option<f32>> {
    match take(node, name) {
        None => Ok(None),
        Some(Attr::Float(v)) => Ok(Some(v)),
        Some(Attr::Int(v)) => Ok(Some(v as f32)),
        Some(_) => Err(ctx.bad(node, &format!("attribute `{name}` must be a float"))),
    }
}

/// Puts `v` at operand position `k`, padding skipped optional positions with `None`.
pub(crate) fn set_operand(node: &mut Node, k: usize, v: Option<tessera_ir::ValueId>) {
    if node.inputs.len() <= k {
        node.inputs.resize(k + 1, None);
    }
    node.inputs[k] = v;
}

/// Drops trailing omitted operands, so arity checks see only what is there.
pub(crate) fn trim(node: &mut Node) {
    while matches!(node.inputs.last(), Some(None)) {
        node.inputs.pop();
    }
}

/// Moves an ints attribute to an i64 operand at position `k` (absent attribute: no operand).
pub(crate) fn ints_attr_to_operand(
    ctx: &mut Ctx,
    node: &mut Node,
    attr: &str,
    k: usize,
) -> Result<()> {
    if let Some(v) = take_ints(ctx, node, attr)? {
        if node.input(k).is_some() {
            return Err(ctx.bad(
                node,
                &format!("`{attr}` is given both as attribute and as operand {k}"),
            ));
        }
        let c = ctx.ints(attr, &v);
        set_operand(node, k, Some(c));
    }
    Ok(())
}

/// The common upgrade of Reduce*, Squeeze and Unsqueeze: the `axes` attribute became
/// operand 1.
pub(crate) fn axes_to_operand(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    ints_attr_to_operand(ctx, &mut node, "axes", 1)?;
    trim(&mut node);
    Ok(vec![node])
}

/// Drops attributes that older opsets had and that no longer carry meaning.
pub(crate) fn drop_attrs(node: &mut Node, names: &[&str]) {
    for n in names {
        node.attrs.remove(*n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_one_line_per_op_type() {
        let v = supported_ops();
        for w in v.windows(2) {
            assert_ne!(w[0], w[1], "duplicate registry line");
        }
    }
}
