//! Inference for the ops the plan runs on the host: selections whose result size depends on
//! the data (NonZero, Compress, Unique, NonMaxSuppression) and string ops (StringConcat,
//! RegexFullMatch, StringNormalizer, StringSplit, LabelEncoder). That size is a fresh symbolic dim; lowering gives such a result its
//! largest possible size and the runtime reports the size produced (see
//! `tessera_kir::HostOp`). Nothing is folded here: the inputs are run-time data.

use super::{dims_product, Cx, Result};
use crate::dtype::DType;
use crate::graph::{Attr, TensorType};
use crate::op::Op;
use crate::shape::{Dim, Shape};

pub(super) fn infer(cx: &Cx) -> Option<Result<Vec<TensorType>>> {
    Some(match cx.op() {
        Op::NonZero => nonzero(cx),
        Op::Compress => compress(cx),
        Op::Unique => unique(cx),
        Op::NonMaxSuppression => nms(cx),
        Op::StringConcat => strings_only(cx, &[0, 1])
            .and_then(|()| Ok(vec![TensorType::new(DType::String, cx.broadcast(&[0, 1])?)])),
        Op::RegexFullMatch => strings_only(cx, &[0])
            .and_then(|()| Ok(vec![TensorType::new(DType::Bool, cx.ty(0)?.shape.clone())])),
        Op::StringNormalizer => string_normalizer(cx),
        Op::StringSplit => string_split(cx),
        Op::LabelEncoder => label_encoder(cx),
        Op::TfIdfVectorizer => tfidf(cx),
        Op::TreeEnsemble => tree_ensemble(cx),
        _ => return None,
    })
}

fn nonzero(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let rank = x.shape.rank().max(1) as u64;
    Ok(vec![TensorType::new(
        DType::I64,
        Shape(vec![Dim::Fixed(rank), cx.fresh(0, 1)]),
    )])
}

/// The input's dims with the `axis` attribute's dim replaced by `count`, or `[count]` without
/// an axis (the flattened input).
fn along_axis(cx: &Cx, x: &TensorType, count: Dim) -> Result<Shape> {
    Ok(match cx.node.attr("axis") {
        None => Shape(vec![count]),
        Some(Attr::Int(a)) => {
            let a = cx.axis(*a, x.shape.rank(), "axis")?;
            let mut d = x.shape.0.clone();
            d[a] = count;
            Shape(d)
        }
        Some(_) => return Err(cx.bad_attr("axis", "must be an int")),
    })
}

fn compress(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let c = cx.ty(1)?;
    if c.dtype != DType::Bool || c.shape.rank() != 1 {
        return Err(cx.shape_err(format!("the condition must be a 1-D bool tensor, not {c}")));
    }
    Ok(vec![TensorType::new(
        x.dtype,
        along_axis(cx, x, cx.fresh(0, 0))?,
    )])
}

fn unique(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let count = cx.fresh(0, 0);
    let y = TensorType::new(x.dtype, along_axis(cx, x, count.clone())?);
    let scanned = match cx.node.attr("axis") {
        Some(Attr::Int(a)) => x.shape.0[cx.axis(*a, x.shape.rank(), "axis")?].clone(),
        _ => dims_product(&x.shape.0),
    };
    let list = |d: Dim| TensorType::new(DType::I64, Shape(vec![d]));
    Ok(vec![y, list(count.clone()), list(scanned), list(count)])
}

fn nms(cx: &Cx) -> Result<Vec<TensorType>> {
    let b = cx.ty(0)?;
    let s = cx.ty(1)?;
    if b.shape.rank() != 3 || s.shape.rank() != 3 {
        return Err(cx.shape_err(format!(
            "boxes must be [batch, boxes, 4] and scores [batch, classes, boxes], not {b} and {s}"
        )));
    }
    Ok(vec![TensorType::new(
        DType::I64,
        Shape(vec![cx.fresh(0, 0), Dim::Fixed(3)]),
    )])
}

fn strings_only(cx: &Cx, operands: &[usize]) -> Result<()> {
    for &i in operands {
        let t = cx.ty(i)?;
        if t.dtype != DType::String {
            return Err(cx.dtype_err(
                t.dtype,
                format!("operand {i} (a string tensor is expected)"),
            ));
        }
    }
    Ok(())
}

fn string_normalizer(cx: &Cx) -> Result<Vec<TensorType>> {
    strings_only(cx, &[0])?;
    let x = cx.ty(0)?;
    // Stopwords may remove elements: the count is known at run time only.
    let shape = match x.shape.0.as_slice() {
        [_] => Shape(vec![cx.fresh(0, 0)]),
        [Dim::Fixed(1), _] => Shape(vec![Dim::Fixed(1), cx.fresh(0, 1)]),
        _ => return Err(cx.shape_err(format!("the input must be [C] or [1, C], not {x}"))),
    };
    Ok(vec![TensorType::new(DType::String, shape)])
}

fn string_split(cx: &Cx) -> Result<Vec<TensorType>> {
    strings_only(cx, &[0])?;
    let x = cx.ty(0)?;
    let mut parts = x.shape.0.clone();
    parts.push(cx.fresh(0, x.shape.rank()));
    Ok(vec![
        TensorType::new(DType::String, Shape(parts)),
        TensorType::new(DType::I64, x.shape.clone()),
    ])
}

fn label_encoder(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let dtype = if cx.node.attr("values_strings").is_some() {
        DType::String
    } else if cx.node.attr("values_int64s").is_some() {
        DType::I64
    } else if cx.node.attr("values_floats").is_some() {
        DType::F32
    } else if let Some(Attr::Tensor(t)) = cx.node.attr("values_tensor") {
        t.dtype
    } else {
        return Err(cx.bad_attr(
            "values_*",
            "one of values_strings, values_int64s, values_floats, values_tensor is required",
        ));
    };
    Ok(vec![TensorType::new(dtype, x.shape.clone())])
}

fn tfidf(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let idx = cx.attr_ints("ngram_indexes")?.unwrap_or_default();
    let n = idx.iter().copied().max().map_or(0, |m| m.max(-1) + 1) as u64;
    let shape = match x.shape.0.as_slice() {
        [] | [_] => Shape(vec![Dim::Fixed(n)]),
        [b, _] => Shape(vec![b.clone(), Dim::Fixed(n)]),
        _ => return Err(cx.shape_err(format!("the input must be [C] or [B, C], not {x}"))),
    };
    Ok(vec![TensorType::new(DType::F32, shape)])
}

fn tree_ensemble(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    if !x.dtype.is_float() {
        return Err(cx.dtype_err(x.dtype, "the features"));
    }
    let n = cx.attr_int("n_targets", 1)?;
    let rows = match x.shape.0.as_slice() {
        [n, _] => n.clone(),
        [_] => Dim::Fixed(1),
        _ => return Err(cx.shape_err(format!("the features must be [N, F], not {x}"))),
    };
    Ok(vec![TensorType::new(
        x.dtype,
        Shape(vec![rows, Dim::Fixed(n.max(0) as u64)]),
    )])
}
