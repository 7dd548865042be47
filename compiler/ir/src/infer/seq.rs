//! Inference for the sequence and attention ops: Attention, RotaryEmbedding, the losses
//! (NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss), CumProd, Swish, SwiGLU, Einsum, the
//! recurrent ops (RNN, GRU, LSTM), the window generators, Det and BitCast.
//!
//! [`infer`] answers `None` for ops that are not this file's, so the dispatcher can try it
//! before the per-family files.

use super::{dim_add, dim_mul, fixed, Cx, Result};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::Op;
use crate::shape::{Dim, Shape};

pub(super) fn infer(cx: &Cx) -> Option<Result<Vec<TensorType>>> {
    use Op::*;
    Some(match cx.op() {
        Attention => attention(cx),
        RotaryEmbedding | CumProd | Swish => same_as_input(cx),
        SwiGLU => swiglu(cx),
        NegativeLogLikelihoodLoss => loss(cx, false),
        SoftmaxCrossEntropyLoss => loss(cx, true),
        Einsum => einsum(cx),
        RNN | GRU | LSTM => recurrent(cx),
        BlackmanWindow | HannWindow | HammingWindow => window(cx),
        Det => det(cx),
        BitCast => bitcast(cx),
        _ => return None,
    })
}

fn same_as_input(cx: &Cx) -> Result<Vec<TensorType>> {
    Ok(vec![cx.ty(0)?.clone()])
}

fn float_input<'a>(cx: &Cx<'a>, i: usize) -> Result<&'a TensorType> {
    let t = cx.ty(i)?;
    if !t.dtype.is_float() {
        return Err(cx.dtype_err(
            t.dtype,
            format!("{}, which must be a float tensor", cx.describe(i)),
        ));
    }
    Ok(t)
}

fn swiglu(cx: &Cx) -> Result<Vec<TensorType>> {
    let a = float_input(cx, 0)?;
    let b = cx.ty(1)?;
    if a.shape != b.shape || a.dtype != b.dtype {
        return Err(cx.shape_err(format!(
            "{} and {} must have the same type",
            cx.describe(0),
            cx.describe(1)
        )));
    }
    Ok(vec![a.clone()])
}

/// `a / b` for dims: exact for fixed dims that divide, else a fresh symbol.
fn dim_div(cx: &Cx, a: &Dim, b: i64, what: &str, k: usize, axis: usize) -> Result<Dim> {
    if b <= 0 {
        return Err(cx.bad_attr(what, format!("must be positive, not {b}")));
    }
    match a {
        Dim::Fixed(x) if x % (b as u64) == 0 => Ok(Dim::Fixed(x / b as u64)),
        Dim::Fixed(x) => Err(cx.shape_err(format!(
            "hidden size {x} is not a multiple of `{what}` = {b}"
        ))),
        Dim::Sym(_) => Ok(cx.fresh(k, axis)),
    }
}

fn attention(cx: &Cx) -> Result<Vec<TensorType>> {
    let q = float_input(cx, 0)?;
    let k = cx.ty(1)?;
    let v = cx.ty(2)?;
    let r = q.shape.rank();
    if (r != 3 && r != 4) || k.shape.rank() != r || v.shape.rank() != r {
        return Err(cx.shape_err(format!(
            "Q, K and V must all be 3-D or all 4-D, not {}, {} and {}",
            q.shape, k.shape, v.shape
        )));
    }
    if k.dtype != q.dtype || v.dtype != q.dtype {
        return Err(cx.shape_err("Q, K and V must have the same dtype"));
    }
    let (qs, ks, vs) = (&q.shape.0, &k.shape.0, &v.shape.0);
    let batch = qs[0].clone();
    // (heads_q, seq_q, heads_kv, seq_kv, head_k, head_v), Y's shape.
    let (hq, sq, hkv, skv, hk, hv, y) = if r == 4 {
        let y = Shape(vec![
            batch.clone(),
            qs[1].clone(),
            qs[2].clone(),
            vs[3].clone(),
        ]);
        (
            qs[1].clone(),
            qs[2].clone(),
            ks[1].clone(),
            ks[2].clone(),
            ks[3].clone(),
            vs[3].clone(),
            y,
        )
    } else {
        let nq = cx.attr_int("q_num_heads", 0)?;
        let nkv = cx.attr_int("kv_num_heads", 0)?;
        if nq <= 0 || nkv <= 0 {
            return Err(cx.bad_attr(
                "q_num_heads",
                "3-D inputs need positive `q_num_heads` and `kv_num_heads`",
            ));
        }
        let hk = dim_div(cx, &ks[2], nkv, "kv_num_heads", 1, 3)?;
        let hv = dim_div(cx, &vs[2], nkv, "kv_num_heads", 2, 3)?;
        dim_div(cx, &qs[2], nq, "q_num_heads", 0, 2)?;
        let y = Shape(vec![batch.clone(), qs[1].clone(), dim_mul(&fixed(nq), &hv)]);
        (
            fixed(nq),
            qs[1].clone(),
            fixed(nkv),
            ks[1].clone(),
            hk,
            hv,
            y,
        )
    };
    let past = match cx.opt_ty(4)? {
        Some(p) => {
            if p.shape.rank() != 4 {
                return Err(cx.shape_err(format!("{} must be 4-D", cx.describe(4))));
            }
            p.shape.0[2].clone()
        }
        None => Dim::Fixed(0),
    };
    let total = dim_add(&past, &skv);
    let present_k = Shape(vec![batch.clone(), hkv.clone(), total.clone(), hk]);
    let present_v = Shape(vec![batch.clone(), hkv, total.clone(), hv]);
    let qk = Shape(vec![batch, hq, sq, total]);
    let dt = q.dtype;
    Ok(vec![
        TensorType::new(dt, y),
        TensorType::new(dt, present_k),
        TensorType::new(dt, present_v),
        TensorType::new(dt, qk),
    ])
}

fn loss(cx: &Cx, sce: bool) -> Result<Vec<TensorType>> {
    let x = float_input(cx, 0)?;
    let t = cx.ty(1)?;
    if !t.dtype.is_int() {
        return Err(cx.dtype_err(
            t.dtype,
            format!("{}, which must hold integer class indices", cx.describe(1)),
        ));
    }
    let r = x.shape.rank();
    if r < 2 || t.shape.rank() + 1 != r {
        return Err(cx.shape_err(format!(
            "{} must have shape (N, C, d...) and {} (N, d...)",
            cx.describe(0),
            cx.describe(1)
        )));
    }
    let mut tdims = x.shape.0.clone();
    tdims.remove(1);
    let reduction = cx.attr_str("reduction")?.unwrap_or("mean");
    let out = match reduction {
        "none" => Shape(tdims),
        "sum" | "mean" => Shape(vec![]),
        other => {
            return Err(cx.bad_attr(
                "reduction",
                format!("is \"{other}\", not none, sum or mean"),
            ))
        }
    };
    let mut v = vec![TensorType::new(x.dtype, out)];
    if sce {
        v.push(x.clone());
    }
    Ok(v)
}

/// Parses an einsum equation into (input terms, output term); `.` runs become `...`
/// markers (the char `*`). Letters only otherwise.
pub(crate) fn parse_einsum(eq: &str) -> Option<EinsumTerms> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let term = |s: &str| -> Option<Vec<char>> {
        let s = s.replace("...", "*");
        if s.chars().all(|c| c.is_ascii_alphabetic() || c == '*') && s.matches('*').count() <= 1 {
            Some(s.chars().collect())
        } else {
            None
        }
    };
    let ins: Option<Vec<Vec<char>>> = lhs.split(',').map(term).collect();
    let out = match rhs {
        Some(r) => Some(term(&r)?),
        None => None,
    };
    Some((ins?, out))
}

/// Parsed einsum terms: one letter list per input, and the explicit output if given.
type EinsumTerms = (Vec<Vec<char>>, Option<Vec<char>>);

/// What [`einsum_plan`] returns: the input terms, the output term, the broadcast dims the
/// ellipsis (`*`) stands for, and each named letter's size.
pub type EinsumPlan = (Vec<Vec<char>>, Vec<char>, Vec<Dim>, Vec<(char, Dim)>);

/// Plans an einsum: checks the equation against the operand shapes and works out the output
/// term (implicit mode included). Shared with lowering.
pub fn einsum_plan(eq: &str, shapes: &[Vec<Dim>]) -> std::result::Result<EinsumPlan, String> {
    let (ins, out) = parse_einsum(eq).ok_or_else(|| format!("cannot parse equation \"{eq}\""))?;
    if ins.len() != shapes.len() {
        return Err(format!(
            "equation has {} inputs but the node has {}",
            ins.len(),
            shapes.len()
        ));
    }
    let mut sizes: Vec<(char, Dim)> = Vec::new();
    let mut ell: Vec<Dim> = Vec::new();
    for (term, shape) in ins.iter().zip(shapes) {
        let named = term.iter().filter(|&&c| c != '*').count();
        let has_ell = term.contains(&'*');
        if shape.len() < named || (!has_ell && shape.len() != named) {
            return Err(format!(
                "term \"{}\" does not match rank {}",
                term.iter().collect::<String>(),
                shape.len()
            ));
        }
        let ell_rank = shape.len() - named;
        let mut pos = 0;
        for &c in term {
            if c == '*' {
                let dims = &shape[pos..pos + ell_rank];
                // Broadcast the ellipsis dims right-aligned.
                let n = ell.len().max(dims.len());
                let mut merged = vec![Dim::Fixed(1); n];
                for (k, m) in merged.iter_mut().enumerate() {
                    let a = (k + ell.len())
                        .checked_sub(n)
                        .map(|i| ell[i].clone())
                        .unwrap_or(Dim::Fixed(1));
                    let b = (k + dims.len())
                        .checked_sub(n)
                        .map(|i| dims[i].clone())
                        .unwrap_or(Dim::Fixed(1));
                    *m = if a == Dim::Fixed(1) { b } else { a };
                }
                ell = merged;
                pos += ell_rank;
            } else {
                let d = shape[pos].clone();
                match sizes.iter_mut().find(|(l, _)| *l == c) {
                    Some((_, s)) => {
                        if *s == Dim::Fixed(1) {
                            *s = d;
                        } else if d != Dim::Fixed(1) && *s != d {
                            return Err(format!("letter {c} has sizes {s} and {d}"));
                        }
                    }
                    None => sizes.push((c, d)),
                }
                pos += 1;
            }
        }
    }
    let out = match out {
        Some(o) => o,
        None => {
            // Implicit mode: ellipsis first, then the letters used once, alphabetically.
            let mut once: Vec<char> = sizes
                .iter()
                .map(|(c, _)| *c)
                .filter(|c| ins.iter().flatten().filter(|x| *x == c).count() == 1)
                .collect();
            once.sort_unstable();
            let mut o = if ins.iter().any(|t| t.contains(&'*')) {
                vec!['*']
            } else {
                vec![]
            };
            o.extend(once);
            o
        }
    };
    for &c in &out {
        if c != '*' && !sizes.iter().any(|(l, _)| *l == c) {
            return Err(format!("output letter {c} appears in no input"));
        }
    }
    Ok((ins, out, ell, sizes))
}

fn einsum(cx: &Cx) -> Result<Vec<TensorType>> {
    let eq = cx
        .attr_str("equation")?
        .ok_or_else(|| cx.bad_attr("equation", "is required"))?;
    let mut shapes = Vec::new();
    let dt = cx.ty(0)?.dtype;
    for i in 0..cx.n_inputs() {
        let t = cx.ty(i)?;
        if t.dtype != dt {
            return Err(cx.shape_err("all inputs must have the same dtype"));
        }
        shapes.push(t.shape.0.clone());
    }
    let (_, out, ell, sizes) = einsum_plan(eq, &shapes).map_err(|m| cx.bad_attr("equation", m))?;
    let mut dims = Vec::new();
    for c in out {
        if c == '*' {
            dims.extend(ell.iter().cloned());
        } else if let Some((_, d)) = sizes.iter().find(|(l, _)| *l == c) {
            dims.push(d.clone());
        }
    }
    Ok(vec![TensorType::new(dt, Shape(dims))])
}

fn recurrent(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = float_input(cx, 0)?;
    if x.shape.rank() != 3 {
        return Err(cx.shape_err(format!("{} must be 3-D", cx.describe(0))));
    }
    let layout = cx.attr_int("layout", 0)?;
    let (s, b) = match layout {
        0 => (x.shape.0[0].clone(), x.shape.0[1].clone()),
        1 => (x.shape.0[1].clone(), x.shape.0[0].clone()),
        l => return Err(cx.bad_attr("layout", format!("is {l}, not 0 or 1"))),
    };
    let dirs = match cx.attr_str("direction")?.unwrap_or("forward") {
        "forward" | "reverse" => 1,
        "bidirectional" => 2,
        d => return Err(cx.bad_attr("direction", format!("is \"{d}\""))),
    };
    let h = match cx.attr_int("hidden_size", 0)? {
        h if h > 0 => fixed(h),
        _ => {
            // Not given: R's last dim.
            let r = cx.ty(2)?;
            r.shape
                .0
                .get(2)
                .cloned()
                .ok_or_else(|| cx.shape_err("R must be 3-D"))?
        }
    };
    let d = fixed(dirs);
    let (y, yh) = if layout == 0 {
        (
            Shape(vec![s, d.clone(), b.clone(), h.clone()]),
            Shape(vec![d, b, h]),
        )
    } else {
        (
            Shape(vec![b.clone(), s, d.clone(), h.clone()]),
            Shape(vec![b, d, h]),
        )
    };
    let dt = x.dtype;
    Ok(vec![
        TensorType::new(dt, y),
        TensorType::new(dt, yh.clone()),
        TensorType::new(dt, yh),
    ])
}

fn window(cx: &Cx) -> Result<Vec<TensorType>> {
    let n = cx.req_scalar_int(0)?;
    if n < 0 {
        return Err(cx.bad_operand(0, &format!("is {n}; a window size cannot be negative")));
    }
    let code = cx.attr_int("output_datatype", 1)?;
    let dt = i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx)
        .ok_or_else(|| cx.bad_attr("output_datatype", format!("is {code}, not a dtype code")))?;
    Ok(vec![TensorType::new(dt, Shape(vec![fixed(n)]))])
}

fn det(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = float_input(cx, 0)?;
    let r = x.shape.rank();
    if r < 2 || x.shape.0[r - 1] != x.shape.0[r - 2] {
        return Err(cx.shape_err(format!("{} must be (..., M, M)", cx.describe(0))));
    }
    Ok(vec![TensorType::new(
        x.dtype,
        Shape(x.shape.0[..r - 2].to_vec()),
    )])
}

fn bitcast(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let to = cx
        .attr_dtype("to")?
        .ok_or_else(|| cx.bad_attr("to", "is required"))?;
    if to == DType::String || x.dtype == DType::String {
        return Err(cx.dtype_err(x.dtype, "BitCast to or from string"));
    }
    if to.bits() != x.dtype.bits() {
        return Err(cx.bad_attr(
            "to",
            format!(
                "{to} has a different bit width from the input's {}",
                x.dtype
            ),
        ));
    }
    Ok(vec![TensorType::new(to, x.shape.clone())])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_dims(v: &[u64]) -> Vec<Dim> {
        v.iter().map(|&d| Dim::Fixed(d)).collect()
    }

    #[test]
    fn einsum_explicit_and_implicit_outputs() {
        let (ins, out, _, sizes) = einsum_plan(
            "bij, bjk -> bik",
            &[fixed_dims(&[5, 2, 3]), fixed_dims(&[5, 3, 4])],
        )
        .unwrap();
        assert_eq!(ins.len(), 2);
        assert_eq!(out, vec!['b', 'i', 'k']);
        assert!(sizes.contains(&('j', Dim::Fixed(3))));
        // Implicit: letters used once, alphabetically.
        let (_, out, _, _) =
            einsum_plan("ij,jk", &[fixed_dims(&[2, 3]), fixed_dims(&[3, 4])]).unwrap();
        assert_eq!(out, vec!['i', 'k']);
        // Ellipsis broadcast dims come first in implicit mode.
        let (_, out, ell, _) = einsum_plan("...ii->...i", &[fixed_dims(&[3, 5, 5])]).unwrap();
        assert_eq!(out, vec!['*', 'i']);
        assert_eq!(ell, fixed_dims(&[3]));
    }

    #[test]
    fn einsum_rejects_bad_equations() {
        assert!(einsum_plan("ij,jk->il", &[fixed_dims(&[2, 3]), fixed_dims(&[3, 4])]).is_err());
        assert!(einsum_plan("ij->i", &[fixed_dims(&[2])]).is_err());
        assert!(einsum_plan("i1->i", &[fixed_dims(&[2, 2])]).is_err());
        assert!(einsum_plan("ij,jk->ik", &[fixed_dims(&[2, 3]), fixed_dims(&[4, 4])]).is_err());
    }
}
