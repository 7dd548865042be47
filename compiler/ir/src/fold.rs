//! Constant folding of *shape computations only*. [`fold_constants`] evaluates `Constant`,
//! `Shape`, `Size`, small `ConstantOfShape` and integer `Range`, and the small integer
//! chains exporters emit to compute shapes (`Gather`, `Concat`, `Unsqueeze`, `Slice`,
//! `Cast`, integer arithmetic, `Equal`, `Where` … on tensors of at most [`SMALL`] elements
//! whose operands are all known). Dense float work is never folded, nor anything that reads
//! a runtime input's contents: the compiled kernels must do the real work.
//!
//! Start at [`eval_node`], which decides what is foldable and computes it.

use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Attr, Graph, Node, TensorType};
use crate::infer::Cx;
use crate::op::Op;
use crate::tensor::Tensor;

type Result<T> = std::result::Result<T, IrError>;

/// The largest tensor (in elements) the folder computes, operands and results alike.
pub const SMALL: u64 = 64;

/// Infers types (see [`crate::infer_shapes`]), which also evaluates every foldable node,
/// then removes the folded nodes; their results keep their contents in
/// [`crate::Value::konst`]. Returns how many nodes were removed.
pub fn fold_constants(g: &mut Graph) -> Result<usize> {
    crate::infer::infer_shapes(g)?;
    let mut folded = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        let tys: Option<Vec<TensorType>> = node.outputs.iter().map(|o| g.ty(*o).cloned()).collect();
        let done = match tys {
            Some(tys) => eval_node(g, node, &tys)?.is_some(),
            None => false,
        };
        folded.push(done);
    }
    let before = g.nodes.len();
    let mut it = folded.into_iter();
    g.nodes.retain(|_| !it.next().unwrap_or(false));
    Ok(before - g.nodes.len())
}

/// Evaluates `node` at compile time if it is a foldable shape computation whose operands
/// are known; `Ok(None)` if it is not foldable. `tys` are the node's inferred result types.
pub fn eval_node(g: &Graph, node: &Node, tys: &[TensorType]) -> Result<Option<Vec<Tensor>>> {
    let cx = Cx { g, node };
    let out_ty = match tys.first() {
        Some(t) => t,
        None => return Ok(None),
    };
    let small_out = out_ty.shape.num_elements().is_some_and(|n| n <= SMALL);
    match node.op {
        Op::Constant => return Ok(Some(vec![constant_value(node)?])),
        Op::Shape => {
            let t = cx.ty(0)?;
            let Some(dims) = t.shape.as_static() else { return Ok(None) };
            let (s, e) = crate::infer::meta::shape_range(&cx, dims.len())?;
            let v: Vec<i64> = dims[s..e].iter().map(|&d| d as i64).collect();
            return Ok(Some(vec![Tensor::from_i64(vec![v.len() as u64], &v)]));
        }
        Op::Size => {
            let Some(n) = cx.ty(0)?.shape.num_elements() else { return Ok(None) };
            return Ok(Some(vec![Tensor::from_i64(vec![], &[n as i64])]));
        }
        Op::ConstantOfShape => {
            if !small_out {
                return Ok(None);
            }
            let fill = constant_of_shape_fill(node)?;
            let dims = out_ty.shape.as_static().unwrap_or_default();
            let n = out_ty.shape.num_elements().unwrap_or(0) as usize;
            let t = if fill.dtype == DType::String {
                let s = fill.strings.first().cloned().unwrap_or_default();
                Tensor::from_strings(dims, vec![s; n])
            } else {
                let bits = fill.dtype.bits() as usize;
                // Sub-byte fills are repeated element by element; byte-sized ones by bytes.
                if bits >= 8 {
                    let w = bits / 8;
                    let one = fill.bytes.get(..w).map(|b| b.to_vec()).unwrap_or_else(|| vec![0; w]);
                    Tensor::new(fill.dtype, dims, one.repeat(n))
                } else {
                    let v = fill.get_i64(0).unwrap_or(0);
                    Tensor::new(fill.dtype, dims, encode_ints(fill.dtype, &vec![v; n]))
                }
            };
            return Ok(Some(vec![t]));
        }
        _ => {}
    }
    // Everything below is an integer chain: every present operand known and small, and
    // the result small and integer (or bool).
    if !small_out || !(out_ty.dtype.is_int() || out_ty.dtype == DType::Bool) || tys.len() != 1 {
        return Ok(None);
    }
    let foldable = matches!(
        node.op,
        Op::Gather
            | Op::Concat
            | Op::Unsqueeze
            | Op::Squeeze
            | Op::Reshape
            | Op::Flatten
            | Op::Identity
            | Op::Slice
            | Op::Cast
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Max
            | Op::Min
            | Op::Neg
            | Op::Abs
            | Op::Equal
            | Op::Where
            | Op::Range
    );
    if !foldable {
        return Ok(None);
    }
    let mut args: Vec<Option<IntTensor>> = Vec::with_capacity(node.inputs.len());
    for i in 0..node.inputs.len() {
        let Some(id) = cx.opt_id(i)? else {
            args.push(None);
            continue;
        };
        let Some(t) = g.konst(id) else { return Ok(None) };
        let n = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if n.is_none_or(|n| n > SMALL) {
            return Ok(None);
        }
        // Only Cast may read floats (exporters cast shapes through float and back).
        let int_like = t.dtype.is_int() || t.dtype == DType::Bool;
        let float_to_int = node.op == Op::Cast && t.dtype.is_float() && out_ty.dtype != DType::Bool;
        if !int_like && !float_to_int {
            return Ok(None);
        }
        let Some(vals) = t.to_i64_vec() else { return Ok(None) };
        args.push(Some(IntTensor { dims: t.dims.clone(), vals }));
    }
    let dims = out_ty.shape.as_static().unwrap_or_default();
    let vals = match eval_int(&cx, &args, &dims)? {
        Some(v) => v,
        None => return Ok(None),
    };
    if vals.len() as u64 != dims.iter().product::<u64>() {
        return Ok(None);
    }
    Ok(Some(vec![Tensor::new(out_ty.dtype, dims, encode_ints(out_ty.dtype, &vals))]))
}

/// A small known integer tensor, widened to i64.
struct IntTensor {
    dims: Vec<u64>,
    vals: Vec<i64>,
}

fn eval_int(cx: &Cx, args: &[Option<IntTensor>], out_dims: &[u64]) -> Result<Option<Vec<i64>>> {
    let arg = |i: usize| args.get(i).and_then(|a| a.as_ref());
    let Some(a) = arg(0) else { return Ok(None) };
    let n_out: u64 = out_dims.iter().product();
    Ok(Some(match cx.node.op {
        Op::Unsqueeze | Op::Squeeze | Op::Reshape | Op::Flatten | Op::Identity => a.vals.clone(),
        Op::Cast => {
            let to = cx.attr_dtype("to")?.unwrap_or(DType::I64);
            if to == DType::Bool {
                a.vals.iter().map(|&v| (v != 0) as i64).collect()
            } else {
                a.vals.clone()
            }
        }
        Op::Neg => a.vals.iter().map(|v| v.wrapping_neg()).collect(),
        Op::Abs => a.vals.iter().map(|v| v.wrapping_abs()).collect(),
        Op::Range => {
            let (s, d) =
                (a.vals.first().copied().unwrap_or(0), arg(2).and_then(|t| t.vals.first().copied()).unwrap_or(1));
            (0..n_out as i64).map(|i| s.wrapping_add(i.wrapping_mul(d))).collect()
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Max | Op::Min | Op::Equal | Op::Where => {
            let ins: Vec<&IntTensor> = args.iter().flatten().collect();
            let mut out = Vec::with_capacity(n_out as usize);
            for flat in 0..n_out {
                let idx = unravel(flat, out_dims);
                let v: Vec<i64> = ins
                    .iter()
                    .map(|t| t.vals.get(broadcast_index(&idx, &t.dims) as usize).copied().unwrap_or(0))
                    .collect();
                let r = match (cx.node.op, v.as_slice()) {
                    (Op::Add, [x, y]) => x.wrapping_add(*y),
                    (Op::Sub, [x, y]) => x.wrapping_sub(*y),
                    (Op::Mul, [x, y]) => x.wrapping_mul(*y),
                    // Division by zero is left to run time, where it is the kernel's business.
                    (Op::Div, [_, 0]) => return Ok(None),
                    (Op::Div, [x, y]) => x.wrapping_div(*y),
                    (Op::Equal, [x, y]) => (x == y) as i64,
                    (Op::Where, [c, x, y]) => {
                        if *c != 0 {
                            *x
                        } else {
                            *y
                        }
                    }
                    (Op::Max, vs) => vs.iter().copied().max().unwrap_or(0),
                    (Op::Min, vs) => vs.iter().copied().min().unwrap_or(0),
                    _ => return Ok(None),
                };
                out.push(r);
            }
            out
        }
        Op::Gather => {
            let Some(ind) = arg(1) else { return Ok(None) };
            let r = a.dims.len();
            let axis = cx.axis(cx.attr_int("axis", 0)?, r, "axis")?;
            let d = a.dims[axis];
            let outer: u64 = a.dims[..axis].iter().product();
            let inner: u64 = a.dims[axis + 1..].iter().product();
            let mut out = Vec::with_capacity(n_out as usize);
            for o in 0..outer {
                for &ix in &ind.vals {
                    let j = if ix < 0 { ix + d as i64 } else { ix };
                    if j < 0 || j as u64 >= d {
                        return Err(
                            cx.bad_operand(1, &format!("holds index {ix}, out of range for axis {axis} of size {d}"))
                        );
                    }
                    for k in 0..inner {
                        out.push(a.vals.get(((o * d + j as u64) * inner + k) as usize).copied().unwrap_or(0));
                    }
                }
            }
            out
        }
        Op::Concat => {
            let r = a.dims.len();
            let axis = cx.axis(cx.attr_int("axis", 0)?, r, "axis")?;
            let outer: u64 = a.dims[..axis].iter().product();
            let mut out = Vec::with_capacity(n_out as usize);
            for o in 0..outer {
                for t in args.iter().flatten() {
                    let chunk: u64 = t.dims.get(axis..).unwrap_or(&[]).iter().product();
                    let start = (o * chunk) as usize;
                    out.extend_from_slice(t.vals.get(start..start + chunk as usize).unwrap_or(&[]));
                }
            }
            out
        }
        Op::Slice => {
            let in_shape = crate::shape::Shape::from_static(&a.dims);
            let params = crate::infer::movement::slice_params(cx, &in_shape)?;
            let mut out = Vec::with_capacity(n_out as usize);
            for flat in 0..n_out {
                let idx = unravel(flat, out_dims);
                let src: Vec<u64> = idx
                    .iter()
                    .enumerate()
                    .map(|(ax, &i)| match params.get(ax).copied().flatten() {
                        Some(p) => p.start.wrapping_add((i as i64).wrapping_mul(p.step)) as u64,
                        None => i,
                    })
                    .collect();
                out.push(a.vals.get(ravel(&src, &a.dims) as usize).copied().unwrap_or(0));
            }
            out
        }
        _ => return Ok(None),
    }))
}

fn unravel(mut flat: u64, dims: &[u64]) -> Vec<u64> {
    let mut idx = vec![0; dims.len()];
    for (k, &d) in dims.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = flat % d;
            flat /= d;
        }
    }
    idx
}

fn ravel(idx: &[u64], dims: &[u64]) -> u64 {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// The flat index into a tensor of `dims` that numpy broadcasting reads for result index `idx`.
fn broadcast_index(idx: &[u64], dims: &[u64]) -> u64 {
    let off = idx.len().saturating_sub(dims.len());
    dims.iter().enumerate().fold(0, |acc, (k, &d)| {
        let i = if d == 1 { 0 } else { idx.get(k + off).copied().unwrap_or(0) };
        acc * d + i
    })
}

/// Packs integers into `dtype`'s storage, truncating to its width (as a C cast does).
pub fn encode_ints(dtype: DType, vals: &[i64]) -> Vec<u8> {
    let bits = dtype.bits() as usize;
    if dtype == DType::Bool {
        return vals.iter().map(|&v| (v != 0) as u8).collect();
    }
    if bits >= 8 {
        let w = bits / 8;
        return vals.iter().flat_map(|v| v.to_le_bytes().into_iter().take(w)).collect();
    }
    let mut out = vec![0u8; (vals.len() * bits).div_ceil(8)];
    let mask = (1u16 << bits) - 1;
    for (i, &v) in vals.iter().enumerate() {
        let bit = i * bits;
        if let Some(b) = out.get_mut(bit / 8) {
            *b |= (((v as u16) & mask) << (bit % 8)) as u8;
        }
    }
    out
}

/// The tensor a `Constant` node produces, from whichever `value*` attribute it has.
pub fn constant_value(node: &Node) -> Result<Tensor> {
    let bad = |msg: String| IrError::BadAttr { node: node.label(), attr: "value".into(), msg };
    if node.attrs.len() != 1 {
        let names: Vec<&str> = node.attrs.keys().map(|k| k.as_str()).collect();
        return Err(bad(format!("(or one other value_* attribute) must be given exactly once; found {names:?}")));
    }
    let Some((name, attr)) = node.attrs.iter().next() else { return Err(bad("is missing".into())) };
    let wrong =
        || IrError::BadAttr { node: node.label(), attr: name.clone(), msg: "has the wrong kind of value".into() };
    Ok(match (name.as_str(), attr) {
        ("value", Attr::Tensor(t)) => t.clone(),
        ("value_float", Attr::Float(v)) => Tensor::from_f32(vec![], &[*v]),
        ("value_floats", Attr::Floats(v)) => Tensor::from_f32(vec![v.len() as u64], v),
        ("value_int", Attr::Int(v)) => Tensor::from_i64(vec![], &[*v]),
        ("value_ints", Attr::Ints(v)) => Tensor::from_i64(vec![v.len() as u64], v),
        ("value_string", Attr::String(s)) => Tensor::from_strings(vec![], vec![s.clone()]),
        ("value_strings", Attr::Strings(v)) => Tensor::from_strings(vec![v.len() as u64], v.clone()),
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
    use crate::Attr;

    #[test]
    fn shape_chain_folds_and_nodes_are_removed() {
        let mut b = B::new();
        let x = b.input("x", "f32[2,3,4]");
        let sh = b.node1(Op::Shape, &[x], &[]);
        let idx = b.konst("idx", Tensor::from_i64(vec![1], &[0]));
        let n = b.node1(Op::Gather, &[sh, idx], &[]);
        let m1 = b.ints("m1", &[-1]);
        let cat = b.node1(Op::Concat, &[n, m1], &[("axis", Attr::Int(0))]);
        let prod = b.node1(Op::Mul, &[cat, cat], &[]);
        let r = b.node1(Op::Reshape, &[x, cat], &[]);
        let y = b.node1(Op::Relu, &[r], &[]);
        b.g.outputs = vec![y, prod];
        assert_eq!(fold_constants(&mut b.g).unwrap(), 4);
        let ops: Vec<Op> = b.g.nodes.iter().map(|n| n.op).collect();
        assert_eq!(ops, vec![Op::Reshape, Op::Relu]);
        assert_eq!(b.g.konst(prod).unwrap().to_i64_vec(), Some(vec![4, 1]));
        crate::verify(&b.g).unwrap();
    }

    #[test]
    fn dense_and_runtime_work_is_never_folded() {
        let mut b = B::new();
        let x = b.input("x", "i64[2]");
        let c = b.konst("c", Tensor::from_f32(vec![2], &[1.0, 2.0]));
        let fa = b.node1(Op::Add, &[c, c], &[]);
        let i = b.ints("i", &[1, 2]);
        let ra = b.node1(Op::Add, &[x, i], &[]);
        let big = b.ints("big", &[8, 9]);
        let cos = b.node1(Op::ConstantOfShape, &[big], &[]);
        let small = b.ints("small", &[2, 2]);
        let cos2 = b.node1(Op::ConstantOfShape, &[small], &[("value", Attr::Tensor(Tensor::from_i64(vec![1], &[7])))]);
        let zero = b.ints("zero", &[0, 1]);
        let div = b.node1(Op::Div, &[i, zero], &[]);
        b.g.outputs = vec![fa, ra, cos, cos2, div];
        assert_eq!(fold_constants(&mut b.g).unwrap(), 1);
        assert!(
            b.g.konst(fa).is_none() && b.g.konst(ra).is_none() && b.g.konst(cos).is_none() && b.g.konst(div).is_none()
        );
        assert_eq!(b.g.konst(cos2).unwrap().to_i64_vec(), Some(vec![7; 4]));
    }

    #[test]
    fn ranges_slices_and_casts() {
        let mut b = B::new();
        let s = b.konst("s", Tensor::from_i64(vec![], &[10]));
        let l = b.konst("l", Tensor::from_i64(vec![], &[0]));
        let d = b.konst("d", Tensor::from_i64(vec![], &[-3]));
        let r = b.node1(Op::Range, &[s, l, d], &[]);
        let st = b.ints("st", &[-1]);
        let en = b.ints("en", &[i64::MIN]);
        let ax = b.ints("ax", &[0]);
        let sp = b.ints("sp", &[-2]);
        let sl = b.node1(Op::Slice, &[r, st, en, ax, sp], &[]);
        let c = b.node1(Op::Cast, &[sl], &[("to", Attr::Int(6))]);
        let f = b.konst("f", Tensor::from_f32(vec![2], &[2.7, -1.5]));
        let fc = b.node1(Op::Cast, &[f], &[("to", Attr::Int(7))]);
        let fs = b.konst("fs", Tensor::from_f32(vec![], &[0.0]));
        let fl = b.konst("fl", Tensor::from_f32(vec![], &[3.0]));
        let fd = b.konst("fd", Tensor::from_f32(vec![], &[1.0]));
        let fr = b.node1(Op::Range, &[fs, fl, fd], &[]);
        b.g.outputs = vec![c, fc, fr];
        assert_eq!(fold_constants(&mut b.g).unwrap(), 4);
        assert_eq!(b.g.konst(r).unwrap().to_i64_vec(), Some(vec![10, 7, 4, 1]));
        assert_eq!(b.g.konst(sl).unwrap().to_i64_vec(), Some(vec![1, 7]));
        let ct = b.g.konst(c).unwrap();
        assert_eq!((ct.dtype, ct.to_i64_vec()), (DType::I32, Some(vec![1, 7])));
        assert_eq!(b.g.konst(fc).unwrap().to_i64_vec(), Some(vec![2, -1]));
        assert!(b.g.konst(fr).is_none(), "float Range is a kernel's work");
    }

    #[test]
    fn gather_index_out_of_range_is_an_error() {
        let mut b = B::new();
        let x = b.input("x", "f32[2,3]");
        let sh = b.node1(Op::Shape, &[x], &[]);
        let idx = b.ints("idx", &[5]);
        let g = b.node1(Op::Gather, &[sh, idx], &[]);
        b.g.outputs = vec![g];
        let err = fold_constants(&mut b.g).unwrap_err();
        assert_eq!(
            err.to_string(),
            "operand 1 (`indices`) of Gather node \"n1\" holds index 5, out of range for axis 0 of size 2"
        );
    }

    #[test]
    fn sub_byte_and_bool_encoding() {
        assert_eq!(encode_ints(DType::I4, &[1, -1, 7]), vec![0xf1, 0x07]);
        assert_eq!(encode_ints(DType::U2, &[3, 0, 1, 2, 1]), vec![0b1001_0011, 0x01]);
        assert_eq!(encode_ints(DType::Bool, &[0, 5]), vec![0, 1]);
        assert_eq!(encode_ints(DType::I16, &[-2]), vec![0xfe, 0xff]);
    }
}
