//! Constant folding: which nodes are evaluated at compile time, and the bound on how much.
//!
//! What "known" means is the safety rule: a value is known if it is an initializer, a
//! `Constant`, the result of `Shape`/`Size` of a static shape (which read only types), an input
//! bound at compile time because it decides a shape, or a folded result of known values. A
//! runtime input's contents are never known, so nothing that reads them is folded.
//!
//! This crate decides *whether* a node folds ([`foldable`]); it does not compute ops. The
//! computation is injected as a [`ConstEval`]: the driver's implementation lowers the one node
//! with the normal lowering and runs it on the kernel-IR interpreter (the reference
//! semantics), so every op that has a lowering folds, with the semantics its kernels have.
//! Only the three nodes that read no tensor data are evaluated here, because inference needs
//! them even with no evaluator ([`NoEval`], e.g. in this crate's own tests): `Constant` (its
//! attribute), and `Shape`/`Size` of a static shape (the operand's type).
//!
//! The size bound (see [`foldable`]): a node folds when every present operand is known, it is
//! deterministic and not control flow, every result has a static shape, and
//! - its results are small (at most [`SMALL_BYTES`] in all, any dtype), or no larger in bytes
//!   than the known operands it consumes (a cast to a narrower format, a transpose or a
//!   quantization of a constant weight folds; a `ConstantOfShape`/`Expand`/`Tile` blow-up or a
//!   `DequantizeLinear` of a big weight does not);
//! - and the work stays bounded: operands and results together at most [`MAX_FOLD_ELEMENTS`]
//!   elements for ops whose work is linear in their data (elementwise, movement, quantization,
//!   reductions, meta ops), and result elements times operand elements at most [`MAX_FOLD_WORK`]
//!   for the rest (contractions, convolutions, …), whose work is a product.
//!
//! Start at [`eval_node`].

use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Attr, Graph, Node, TensorType};
use crate::infer::Cx;
use crate::op::{Family, Op};
use crate::tensor::Tensor;

type Result<T> = std::result::Result<T, IrError>;

/// Results up to this many bytes in all always fold (when their operands are known).
pub const SMALL_BYTES: u64 = 64 * 1024;
/// The most elements (operands and results together) a linear-work node folds over.
pub const MAX_FOLD_ELEMENTS: u64 = 1 << 24;
/// The most `result elements × operand elements` a node of another family folds.
pub const MAX_FOLD_WORK: u64 = 1 << 26;

/// Computes one node at compile time. [`eval_node`] calls it only for a node that
/// [`foldable`] accepts: every present operand of `node` is known in `g` (`Graph::konst`),
/// and `tys` are the node's inferred result types, all static.
///
/// `None` leaves the node to run time: the op has no lowering, or evaluating it failed (an
/// an index out of range, a trap), which the kernel then reports at run
/// time exactly as it would have without folding. An evaluator must return results of exactly
/// the types `tys`, and must be deterministic.
pub trait ConstEval: Send + Sync + std::fmt::Debug + std::panic::RefUnwindSafe {
    fn eval(&self, g: &Graph, node: &Node, tys: &[TensorType]) -> Option<Vec<Tensor>>;
}

/// The evaluator that evaluates nothing: only what this crate folds by itself (`Constant`,
/// `Shape`/`Size` of static shapes) is known. For graphs already folded, and for tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEval;

impl ConstEval for NoEval {
    fn eval(&self, _: &Graph, _: &Node, _: &[TensorType]) -> Option<Vec<Tensor>> {
        None
    }
}

/// Infers types (see [`crate::infer::infer_shapes_with`]), which also evaluates every
/// foldable node with `ev`, then removes the folded nodes; their results keep their contents
/// in [`crate::Value::konst`]. Returns how many nodes were removed.
pub fn fold_constants(g: &mut Graph, ev: &dyn ConstEval) -> Result<usize> {
    crate::infer::infer_shapes_with(g, ev)?;
    let mut folded = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        // Inference already evaluated every foldable node: a node is folded exactly when
        // all its results are known.
        let done = !node.outputs.is_empty() && node.outputs.iter().all(|o| g.konst(*o).is_some());
        folded.push(done);
    }
    let before = g.nodes.len();
    let mut it = folded.into_iter();
    g.nodes.retain(|_| !it.next().unwrap_or(false));
    Ok(before - g.nodes.len())
}

/// Ops never folded whatever their operands: random ops (their numbers are drawn at run time,
/// even when a seed makes them reproducible) and `Dropout`, which draws in training mode.
fn nondeterministic(op: Op) -> bool {
    matches!(
        op,
        Op::Dropout
            | Op::RandomUniform
            | Op::RandomNormal
            | Op::RandomUniformLike
            | Op::RandomNormalLike
            | Op::Bernoulli
            | Op::Multinomial
    )
}

/// Operand `i` of `op` is read only for its type (`CastLike`'s `target_type`), so it need not
/// be known for the node to fold; the evaluator must not read its contents.
pub fn reads_type_only(op: Op, i: usize) -> bool {
    matches!((op, i), (Op::CastLike, 1))
}

/// Whether `node` (with inferred result types `tys`) may be evaluated at compile time: the
/// safety rule and the size bound of the module documentation.
pub fn foldable(g: &Graph, node: &Node, tys: &[TensorType]) -> bool {
    if tys.is_empty()
        || nondeterministic(node.op)
        || crate::infer::control::is_control(node.op)
        || node.inputs.iter().flatten().next().is_none()
    {
        return false;
    }
    let (mut in_bytes, mut in_elems) = (0u64, 0u64);
    for (i, id) in node.inputs.iter().enumerate() {
        let Some(id) = id else { continue };
        if reads_type_only(node.op, i) {
            continue;
        }
        let Some(t) = g.konst(*id) else { return false };
        in_elems = in_elems.saturating_add(t.num_elements());
        in_bytes = in_bytes.saturating_add(t.bytes.len() as u64);
    }
    let (mut out_bytes, mut out_elems) = (0u64, 0u64);
    for t in tys {
        let Some(n) = t.shape.num_elements() else {
            return false;
        };
        if t.dtype == DType::String {
            // A string's size is not known before it is computed: small counts only.
            if n > 4096 {
                return false;
            }
            out_bytes = out_bytes.saturating_add(SMALL_BYTES);
        } else {
            out_bytes = out_bytes.saturating_add(t.dtype.storage_bytes(n));
        }
        out_elems = out_elems.saturating_add(n);
    }
    if out_bytes > SMALL_BYTES && out_bytes > in_bytes {
        return false;
    }
    let linear = matches!(
        node.op.family(),
        Family::Elementwise | Family::Movement | Family::Quant | Family::Reduce | Family::Meta
    );
    if linear {
        in_elems.saturating_add(out_elems) <= MAX_FOLD_ELEMENTS
    } else {
        out_elems.max(1).saturating_mul(in_elems.max(1)) <= MAX_FOLD_WORK
    }
}

/// Evaluates `node` at compile time if [`foldable`] accepts it (by `ev`, or here for the
/// data-free `Constant`, `Shape` and `Size`); `Ok(None)` if it does not fold. `tys` are the
/// node's inferred result types.
pub fn eval_node(
    g: &Graph,
    node: &Node,
    tys: &[TensorType],
    ev: &dyn ConstEval,
) -> Result<Option<Vec<Tensor>>> {
    let cx = Cx { g, node };
    match node.op {
        Op::Constant => return Ok(Some(vec![constant_value(node)?])),
        Op::Shape => {
            let t = cx.ty(0)?;
            let Some(dims) = t.shape.as_static() else {
                return Ok(None);
            };
            let (s, e) = crate::infer::meta::shape_range(&cx, dims.len())?;
            let v: Vec<i64> = dims[s..e].iter().map(|&d| d as i64).collect();
            return Ok(Some(vec![Tensor::from_i64(vec![v.len() as u64], &v)]));
        }
        Op::Size => {
            let Some(n) = cx.ty(0)?.shape.num_elements() else {
                return Ok(None);
            };
            return Ok(Some(vec![Tensor::from_i64(vec![], &[n as i64])]));
        }
        _ => {}
    }
    if !foldable(g, node, tys) {
        return Ok(None);
    }
    let Some(outs) = ev.eval(g, node, tys) else {
        return Ok(None);
    };
    // The evaluator's contract, checked: a result of another type would corrupt inference.
    let fits = outs.len() == tys.len()
        && outs.iter().zip(tys).all(|(t, ty)| {
            t.dtype == ty.dtype && ty.shape.as_static().is_some_and(|d| d == t.dims)
        });
    if !fits {
        return Err(IrError::Unsupported {
            node: node.label(),
            what: "the constant evaluator returned results of other types than inference gave"
                .into(),
        });
    }
    Ok(Some(outs))
}

pub use crate::numeric::encode_ints;

/// The tensor a `Constant` node produces, from whichever `value*` attribute it has.
pub fn constant_value(node: &Node) -> Result<Tensor> {
    let bad = |msg: String| IrError::BadAttr {
        node: node.label(),
        attr: "value".into(),
        msg,
    };
    if node.attrs.len() != 1 {
        let names: Vec<&str> = node.attrs.keys().map(|k| k.as_str()).collect();
        return Err(bad(format!(
            "(or one other value_* attribute) must be given exactly once; found {names:?}"
        )));
    }
    let Some((name, attr)) = node.attrs.iter().next() else {
        return Err(bad("is missing".into()));
    };
    let wrong = || IrError::BadAttr {
        node: node.label(),
        attr: name.clone(),
        msg: "has the wrong kind of value".into(),
    };
    Ok(match (name.as_str(), attr) {
        ("value", Attr::Tensor(t)) => t.clone(),
        ("value_float", Attr::Float(v)) => Tensor::from_f32(vec![], &[*v]),
        ("value_floats", Attr::Floats(v)) => Tensor::from_f32(vec![v.len() as u64], v),
        ("value_int", Attr::Int(v)) => Tensor::from_i64(vec![], &[*v]),
        ("value_ints", Attr::Ints(v)) => Tensor::from_i64(vec![v.len() as u64], v),
        ("value_string", Attr::String(s)) => Tensor::from_strings(vec![], vec![s.clone()]),
        ("value_strings", Attr::Strings(v)) => {
            Tensor::from_strings(vec![v.len() as u64], v.clone())
        }
        _ => return Err(wrong()),
    })
}

/// The one-element fill value of a `ConstantOfShape` node (f32 zero by default).
pub fn constant_of_shape_fill(node: &Node) -> Result<Tensor> {
    match node.attr("value") {
        None => Ok(Tensor::from_f32(vec![], &[0.0])),
        Some(Attr::Tensor(t)) if t.dims.iter().all(|&d| d == 1) => Ok(t.clone()),
        Some(_) => Err(IrError::BadAttr {
            node: node.label(),
            attr: "value".into(),
            msg: "must be a one-element tensor".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::B;

    /// An evaluator for these tests: it records what it is asked and answers zeros.
    #[derive(Debug, Default)]
    struct Spy(std::sync::Mutex<Vec<Op>>);

    impl ConstEval for Spy {
        fn eval(&self, _: &Graph, node: &Node, tys: &[TensorType]) -> Option<Vec<Tensor>> {
            self.0.lock().unwrap().push(node.op);
            let ty = tys.first()?;
            let dims = ty.shape.as_static()?;
            let n = ty.shape.num_elements()?;
            Some(vec![Tensor::new(
                ty.dtype,
                dims,
                vec![0; ty.dtype.storage_bytes(n) as usize],
            )])
        }
    }

    #[test]
    fn data_free_nodes_fold_without_an_evaluator() {
        let mut b = B::new();
        let x = b.input("x", "f32[2,3,4]");
        let sh = b.node1(Op::Shape, &[x], &[("start", Attr::Int(1))]);
        let sz = b.node1(Op::Size, &[x], &[]);
        let idx = b.ints("idx", &[0]);
        let g = b.node1(Op::Gather, &[sh, idx], &[]);
        b.g.outputs = vec![g, sz];
        assert_eq!(fold_constants(&mut b.g, &NoEval).unwrap(), 2);
        assert_eq!(b.g.konst(sh).unwrap().to_i64_vec(), Some(vec![3, 4]));
        assert_eq!(b.g.konst(sz).unwrap().to_i64_vec(), Some(vec![24]));
        assert!(b.g.konst(g).is_none(), "no evaluator computes Gather");
    }

    #[test]
    fn the_evaluator_sees_only_known_bounded_deterministic_nodes() {
        let mut b = B::new();
        let x = b.input("x", "f32[4]");
        let w = b.konst("w", Tensor::from_f32(vec![64, 64], &[1.0; 4096]));
        // Cast to a narrower float: 8 KiB out of 16 KiB in.
        let narrow = b.node1(Op::Cast, &[w], &[("to", Attr::Int(16))]);
        let runtime = b.node1(Op::Relu, &[x], &[]);
        let big = b.ints("big", &[1024, 1024]);
        let blowup = b.node1(Op::ConstantOfShape, &[big], &[]);
        let small = b.ints("small", &[2, 2]);
        let fill = b.node1(Op::ConstantOfShape, &[small], &[]);
        let ratio = b.konst("ratio", Tensor::from_f32(vec![], &[0.5]));
        let drop = b.node1(Op::Dropout, &[narrow, ratio], &[]);
        let p = b.konst("p", Tensor::from_f32(vec![4], &[0.5; 4]));
        let coin = b.node1(Op::Bernoulli, &[p], &[]);
        let like = b.node1(Op::RandomUniformLike, &[p], &[]);
        b.g.outputs = vec![narrow, runtime, blowup, fill, drop, coin, like];
        let spy = Spy::default();
        fold_constants(&mut b.g, &spy).unwrap();
        assert_eq!(*spy.0.lock().unwrap(), vec![Op::Cast, Op::ConstantOfShape]);
        assert!(b.g.konst(narrow).is_some() && b.g.konst(fill).is_some());
        assert!([runtime, blowup, drop]
            .iter()
            .all(|v| b.g.konst(*v).is_none()));
    }

    #[test]
    fn an_evaluator_answering_the_wrong_type_is_an_error() {
        #[derive(Debug)]
        struct Liar;
        impl ConstEval for Liar {
            fn eval(&self, _: &Graph, _: &Node, _: &[TensorType]) -> Option<Vec<Tensor>> {
                Some(vec![Tensor::from_i64(vec![1], &[7])])
            }
        }
        let mut b = B::new();
        let a = b.ints("a", &[1, 2]);
        let n = b.node1(Op::Neg, &[a], &[]);
        b.g.outputs = vec![n];
        let err = fold_constants(&mut b.g, &Liar).unwrap_err();
        assert!(
            err.to_string().contains("constant evaluator returned"),
            "{err}"
        );
    }

    #[test]
    fn sub_byte_and_bool_encoding() {
        assert_eq!(encode_ints(DType::I4, &[1, -1, 7]), vec![0xf1, 0x07]);
        assert_eq!(
            encode_ints(DType::U2, &[3, 0, 1, 2, 1]),
            vec![0b1001_0011, 0x01]
        );
        assert_eq!(encode_ints(DType::Bool, &[0, 5]), vec![0, 1]);
        assert_eq!(encode_ints(DType::I16, &[-2]), vec![0xfe, 0xff]);
    }
}
