//! Shape and type inference: [`infer_shapes`] walks the nodes in order and fills
//! [`crate::Value::ty`] for every result, following the newest ONNX opset's semantics. One
//! file per op family (`elementwise.rs`, `dense.rs`, …); this file holds the walk, the
//! per-node context [`Cx`] and the helpers they share (broadcasting, axes, symbolic dims).
//!
//! Inference also evaluates the small integer "shape subgraphs" that exporters emit
//! (`Shape → Gather → Concat → Reshape`), through [`crate::fold::eval_node`], so that a
//! later `Reshape` sees its `shape` operand as a constant. The nodes stay in the graph;
//! [`crate::fold::fold_constants`] removes them.

pub mod control;
mod dense;
mod elementwise;
mod extra;
pub(crate) mod meta;
pub(crate) mod movement;
mod quant;
mod random;
mod reduce;
mod select;
pub mod seq;
mod spatial;
mod spectral;
#[cfg(test)]
mod tests;

use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Attr, Graph, Node, TensorType, ValueId};
use crate::op::{operand_name, Family, Op};
use crate::shape::{Dim, Shape, MAX_ELEMENTS};
use crate::tensor::Tensor;

type Result<T> = std::result::Result<T, IrError>;

/// Infers the type of every node result, in node order, and checks every static shape
/// against [`MAX_ELEMENTS`] before anything could be allocated for it.
///
/// Nodes must be topologically ordered (see [`crate::verify::topo_sort`]). Operands that
/// decide output shapes (see [`crate::op::shape_operands`]) must be known at compile time.
pub fn infer_shapes(g: &mut Graph) -> Result<()> {
    for v in &g.values {
        if let Some(ty) = &v.ty {
            check_size(&format!("value %{}", v.name), &ty.shape)?;
        }
    }
    for ni in 0..g.nodes.len() {
        let (tys, konsts) = if control::is_control(g.nodes[ni].op) {
            // Control flow types its bodies in place, so it needs the graph mutably.
            control::infer(g, ni)?
        } else {
            let node = &g.nodes[ni];
            let cx = Cx { g, node };
            let tys = infer_node(&cx)?;
            let konsts = crate::fold::eval_node(g, node, &tys)?;
            (tys, konsts)
        };
        let outs = g.nodes[ni].outputs.clone();
        for (k, (id, ty)) in outs.iter().zip(tys).enumerate() {
            let label = g.nodes[ni].label();
            let v = g
                .values
                .get_mut(id.0 as usize)
                .ok_or_else(|| IrError::Dangling {
                    user: format!("result {k} of {label}"),
                    value: id.to_string(),
                })?;
            v.ty = Some(ty);
            if let Some(ks) = &konsts {
                if let Some(t) = ks.get(k) {
                    v.konst = Some(t.clone());
                }
            }
        }
    }
    Ok(())
}

/// The inferred result types of one node (without touching the graph). Checks arity and
/// attribute names first, and the size of every static result.
pub fn infer_node_types(g: &Graph, node: &Node) -> Result<Vec<TensorType>> {
    infer_node(&Cx { g, node })
}

fn infer_node(cx: &Cx) -> Result<Vec<TensorType>> {
    crate::verify::check_node_signature(cx.node)?;
    let mut tys = match custom_infer(cx)
        .or_else(|| seq::infer(cx))
        .or_else(|| spatial::infer(cx))
        .or_else(|| extra::infer(cx))
        .or_else(|| spectral::infer(cx))
        .or_else(|| select::infer(cx))
        .or_else(|| random::infer(cx))
    {
        Some(r) => r?,
        None => match cx.node.op.family() {
            Family::Elementwise => elementwise::infer(cx)?,
            Family::Dense => dense::infer(cx)?,
            Family::Reduce => reduce::infer(cx)?,
            Family::Movement => movement::infer(cx)?,
            Family::Quant => quant::infer(cx)?,
            Family::Meta => meta::infer(cx)?,
            Family::Control => {
                return Err(IrError::Unsupported {
                    node: cx.label(),
                    what: "control flow is typed by `infer_shapes` only".into(),
                })
            }
        },
    };
    let n = cx.node.outputs.len();
    if tys.len() < n {
        return Err(IrError::Arity {
            node: cx.label(),
            what: "results",
            expected: format!("at most {}", tys.len()),
            got: n,
        });
    }
    tys.truncate(n);
    for (k, ty) in tys.iter().enumerate() {
        check_size(
            &format!("result {k} (%{}) of {}", cx.out_name(k), cx.label()),
            &ty.shape,
        )?;
    }
    Ok(tys)
}

/// A custom op's result types, from the signature in its `source` attribute.
fn custom_infer(cx: &Cx) -> Option<Result<Vec<TensorType>>> {
    if cx.node.op != Op::Custom {
        return None;
    }
    Some((|| {
        let src = match cx.node.attr("source") {
            Some(Attr::String(s)) => s,
            _ => return Err(cx.bad_attr("source", "must hold the custom op's file")),
        };
        let op = crate::custom::CustomOp::parse(src).map_err(|e| cx.bad_attr("source", e))?;
        let mut ins = Vec::new();
        for i in 0..cx.n_inputs() {
            let t = cx.ty(i)?;
            let dims = t
                .shape
                .as_static()
                .ok_or_else(|| cx.shape_err(format!("input {i} has symbolic shape {}", t.shape)))?;
            ins.push((t.dtype, dims));
        }
        let env = op
            .bind(&ins)
            .map_err(|e| cx.shape_err(format!("custom op {}: {e}", op.op_type)))?;
        op.output_types(&env)
            .map_err(|e| cx.shape_err(format!("custom op {}: {e}", op.op_type)))
    })())
}

/// Refuses a static shape with more than [`MAX_ELEMENTS`] elements (or one whose count
/// overflows). Symbolic shapes pass; they are checked again once their symbols are bound.
pub fn check_size(what: &str, shape: &Shape) -> Result<()> {
    let mut n: u64 = 1;
    for d in &shape.0 {
        if let Dim::Fixed(x) = d {
            n = n.saturating_mul(*x);
        }
    }
    // A zero anywhere makes the tensor empty, whatever the other dims are.
    let empty = shape.0.contains(&Dim::Fixed(0));
    if !empty && n > MAX_ELEMENTS {
        return Err(IrError::TooLarge {
            what: what.to_string(),
            shape: shape.to_string(),
            limit: MAX_ELEMENTS,
        });
    }
    Ok(())
}

/// The context of one node's inference: the graph (for operand types and constants) and
/// the node, with helpers that produce well-labelled errors.
pub(crate) struct Cx<'a> {
    pub g: &'a Graph,
    pub node: &'a Node,
}

impl<'a> Cx<'a> {
    pub fn op(&self) -> Op {
        self.node.op
    }

    pub fn label(&self) -> String {
        self.node.label()
    }

    pub fn operand(&self, i: usize) -> &'static str {
        operand_name(self.node.op, i)
    }

    pub fn n_inputs(&self) -> usize {
        self.node.inputs.len()
    }

    pub fn value_name(&self, id: ValueId) -> String {
        self.g
            .values
            .get(id.0 as usize)
            .map(|v| v.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    pub fn out_name(&self, k: usize) -> String {
        self.node
            .outputs
            .get(k)
            .map(|id| self.value_name(*id))
            .unwrap_or_else(|| format!("#{k}"))
    }

    /// The id of operand `i`, if present. An id out of range is a dangling reference.
    pub fn opt_id(&self, i: usize) -> Result<Option<ValueId>> {
        match self.node.input(i) {
            None => Ok(None),
            Some(id) if (id.0 as usize) < self.g.values.len() => Ok(Some(id)),
            Some(id) => Err(IrError::Dangling {
                user: format!("operand {i} (`{}`) of {}", self.operand(i), self.label()),
                value: id.to_string(),
            }),
        }
    }

    /// The type of operand `i`, if present.
    pub fn opt_ty(&self, i: usize) -> Result<Option<&'a TensorType>> {
        let Some(id) = self.opt_id(i)? else {
            return Ok(None);
        };
        match self.g.ty(id) {
            Some(t) => Ok(Some(t)),
            None => Err(IrError::UntypedOperand {
                node: self.label(),
                index: i,
                operand: self.operand(i).to_string(),
                value: self.value_name(id),
            }),
        }
    }

    /// The type of required operand `i`.
    pub fn ty(&self, i: usize) -> Result<&'a TensorType> {
        self.opt_ty(i)?.ok_or_else(|| self.missing(i))
    }

    pub fn missing(&self, i: usize) -> IrError {
        IrError::MissingOperand {
            node: self.label(),
            index: i,
            operand: self.operand(i).to_string(),
        }
    }

    /// The compile-time contents of operand `i`: `None` if omitted, an error if present but
    /// unknown.
    pub fn konst(&self, i: usize) -> Result<Option<&'a Tensor>> {
        let Some(id) = self.opt_id(i)? else {
            return Ok(None);
        };
        match self.g.konst(id) {
            Some(t) => Ok(Some(t)),
            None => Err(IrError::NotConstant {
                node: self.label(),
                index: i,
                operand: self.operand(i).to_string(),
            }),
        }
    }

    /// Operand `i`'s contents as integers (it must have an integer dtype).
    pub fn ints(&self, i: usize) -> Result<Option<Vec<i64>>> {
        let Some(t) = self.konst(i)? else {
            return Ok(None);
        };
        if !t.dtype.is_int() {
            return Err(IrError::UnsupportedDType {
                node: self.label(),
                dtype: t.dtype,
                what: format!(
                    "operand {i} (`{}`), which must hold integers",
                    self.operand(i)
                ),
            });
        }
        t.to_i64_vec()
            .map(Some)
            .ok_or_else(|| self.bad_operand(i, "has truncated contents"))
    }

    pub fn req_ints(&self, i: usize) -> Result<Vec<i64>> {
        self.ints(i)?.ok_or_else(|| self.missing(i))
    }

    /// Operand `i`'s contents as floats.
    pub fn floats(&self, i: usize) -> Result<Option<Vec<f64>>> {
        let Some(t) = self.konst(i)? else {
            return Ok(None);
        };
        t.to_f64_vec()
            .map(Some)
            .ok_or_else(|| self.bad_operand(i, "has contents that are not numbers"))
    }

    /// Operand `i`, which must hold one integer (a scalar or a 1-element tensor).
    pub fn req_scalar_int(&self, i: usize) -> Result<i64> {
        let v = self.req_ints(i)?;
        match v.as_slice() {
            [x] => Ok(*x),
            _ => Err(self.bad_operand(i, &format!("must hold exactly one value, not {}", v.len()))),
        }
    }

    pub fn bad_operand(&self, i: usize, msg: &str) -> IrError {
        IrError::BadOperand {
            node: self.label(),
            index: i,
            operand: self.operand(i).to_string(),
            msg: msg.to_string(),
        }
    }

    pub fn shape_err(&self, msg: impl Into<String>) -> IrError {
        IrError::ShapeMismatch {
            node: self.label(),
            msg: msg.into(),
        }
    }

    pub fn bad_attr(&self, attr: &str, msg: impl Into<String>) -> IrError {
        IrError::BadAttr {
            node: self.label(),
            attr: attr.to_string(),
            msg: msg.into(),
        }
    }

    pub fn symbolic(&self, what: &str, dim: &Dim) -> IrError {
        IrError::Symbolic {
            node: self.label(),
            what: what.to_string(),
            dim: dim.to_string(),
        }
    }

    pub fn dtype_err(&self, dtype: DType, what: impl Into<String>) -> IrError {
        IrError::UnsupportedDType {
            node: self.label(),
            dtype,
            what: what.into(),
        }
    }

    /// Describes operand `i` with its type: "operand 0 (`A`: f32[2,3])".
    pub fn describe(&self, i: usize) -> String {
        match self.opt_ty(i) {
            Ok(Some(t)) => format!("operand {i} (`{}`: {t})", self.operand(i)),
            _ => format!("operand {i} (`{}`)", self.operand(i)),
        }
    }

    // ---- attributes, strictly typed ----

    pub fn attr_int(&self, name: &str, default: i64) -> Result<i64> {
        match self.node.attr(name) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(_) => Err(self.bad_attr(name, "must be an integer")),
        }
    }

    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.node.attr(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(_) => Err(self.bad_attr(name, "must be a list of integers")),
        }
    }

    pub fn attr_str(&self, name: &str) -> Result<Option<&'a str>> {
        match self.node.attrs.get(name) {
            None => Ok(None),
            Some(Attr::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(self.bad_attr(name, "must be a string")),
        }
    }

    /// A dtype attribute: an ONNX `TensorProto.DataType` code, or a Tessera dtype name.
    /// `None` when absent (or 0, ONNX's "undefined").
    pub fn attr_dtype(&self, name: &str) -> Result<Option<DType>> {
        match self.node.attr(name) {
            None | Some(Attr::Int(0)) => Ok(None),
            Some(Attr::Int(code)) => i32::try_from(*code)
                .ok()
                .and_then(DType::from_onnx)
                .map(Some)
                .ok_or_else(|| {
                    self.bad_attr(
                        name,
                        format!("is {code}, which is not a supported ONNX dtype code"),
                    )
                }),
            Some(Attr::String(s)) => s
                .parse::<DType>()
                .map(Some)
                .map_err(|_| self.bad_attr(name, format!("names unknown dtype `{s}`"))),
            Some(_) => Err(self.bad_attr(name, "must be a dtype code")),
        }
    }

    /// Normalises an axis against `rank` (ONNX accepts `-rank..rank`).
    pub fn axis(&self, axis: i64, rank: usize, what: &str) -> Result<usize> {
        norm_axis(axis, rank)
            .ok_or_else(|| self.shape_err(format!("{what} {axis} is out of range for rank {rank}")))
    }

    /// Normalises a list of axes, refusing duplicates.
    pub fn axes(&self, axes: &[i64], rank: usize, what: &str) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(axes.len());
        for &a in axes {
            let n = self.axis(a, rank, what)?;
            if out.contains(&n) {
                return Err(self.shape_err(format!("{what} {a} is repeated")));
            }
            out.push(n);
        }
        Ok(out)
    }

    /// A fresh symbol for dimension `axis` of result `k`, whose size depends on a symbolic
    /// input in a way the IR does not track.
    pub fn fresh(&self, k: usize, axis: usize) -> Dim {
        Dim::Sym(format!("{}_{axis}", self.out_name(k)))
    }

    /// Numpy multidirectional broadcasting of the listed operands.
    pub fn broadcast(&self, operands: &[usize]) -> Result<Shape> {
        let mut acc: Option<(String, Shape)> = None;
        for &i in operands {
            let Some(t) = self.opt_ty(i)? else { continue };
            acc = Some(match acc {
                None => (self.describe(i), t.shape.clone()),
                Some((desc, s)) => {
                    let out =
                        broadcast_pair(&s, &t.shape).map_err(|(a, b)| IrError::Broadcast {
                            node: self.label(),
                            lhs: desc.clone(),
                            rhs: self.describe(i),
                            lhs_dim: a.to_string(),
                            rhs_dim: b.to_string(),
                        })?;
                    (format!("{desc} and {}", self.describe(i)), out)
                }
            });
        }
        Ok(acc.map(|(_, s)| s).unwrap_or_default())
    }
}

/// Normalises `axis` in `-rank..rank` to `0..rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// Broadcasts two shapes; on failure returns the two dims that clash. A symbol broadcast
/// with 1 stays the symbol; a symbol against a fixed size other than 1 takes that size (the
/// only size under which the model is valid); two different symbols keep the left one.
pub fn broadcast_pair(a: &Shape, b: &Shape) -> std::result::Result<Shape, (Dim, Dim)> {
    let r = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(r);
    for k in 0..r {
        let da = (k + a.rank())
            .checked_sub(r)
            .and_then(|i| a.0.get(i))
            .cloned()
            .unwrap_or(Dim::Fixed(1));
        let db = (k + b.rank())
            .checked_sub(r)
            .and_then(|i| b.0.get(i))
            .cloned()
            .unwrap_or(Dim::Fixed(1));
        let d = match (&da, &db) {
            (x, y) if x == y => x.clone(),
            (Dim::Fixed(1), y) => y.clone(),
            (x, Dim::Fixed(1)) => x.clone(),
            (Dim::Fixed(_), Dim::Fixed(_)) => return Err((da, db)),
            (Dim::Sym(_), Dim::Fixed(n)) | (Dim::Fixed(n), Dim::Sym(_)) => Dim::Fixed(*n),
            (Dim::Sym(_), Dim::Sym(_)) => da.clone(),
        };
        out.push(d);
    }
    Ok(Shape(out))
}

/// The product of two dims: exact when both are fixed (saturating, so an absurd product is
/// caught by the size check), else a symbolic product such as `N*3`.
pub fn dim_mul(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) => Dim::Fixed(x.saturating_mul(*y)),
        (Dim::Fixed(1), d) | (d, Dim::Fixed(1)) => d.clone(),
        (Dim::Fixed(0), _) | (_, Dim::Fixed(0)) => Dim::Fixed(0),
        _ => Dim::Sym(format!("{a}*{b}")),
    }
}

/// The product of a run of dims.
pub fn dims_product(dims: &[Dim]) -> Dim {
    dims.iter().fold(Dim::Fixed(1), |acc, d| dim_mul(&acc, d))
}

/// `a + b` for fixed dims, else a symbolic sum.
pub fn dim_add(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) => Dim::Fixed(x.saturating_add(*y)),
        (Dim::Fixed(0), d) | (d, Dim::Fixed(0)) => d.clone(),
        _ => Dim::Sym(format!("{a}+{b}")),
    }
}

/// A non-negative i64 as a fixed dim.
pub fn fixed(n: i64) -> Dim {
    Dim::Fixed(n.max(0) as u64)
}
