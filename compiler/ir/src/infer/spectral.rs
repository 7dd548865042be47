//! Inference for the spectral ops (DFT, STFT, MelWeightMatrix), the optimizer steps of
//! `ai.onnx.preview.training` (Momentum, Adagrad, Adam) and the `ai.onnx.ml` ops Binarizer and
//! ArrayFeatureExtractor.
//!
//! [`infer`] answers `None` for ops that are not this file's, so the dispatcher can try it
//! before the per-family files.

use super::{fixed, Cx, Result};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::Op;
use crate::shape::{Dim, Shape};

pub(super) fn infer(cx: &Cx) -> Option<Result<Vec<TensorType>>> {
    use Op::*;
    Some(match cx.op() {
        DFT => dft(cx),
        STFT => stft(cx),
        MelWeightMatrix => mel(cx),
        Momentum | Adagrad | Adam => optimizer(cx),
        Binarizer => cx.ty(0).map(|t| vec![t.clone()]),
        ArrayFeatureExtractor => array_feature_extractor(cx),
        _ => return None,
    })
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

/// The transformed axis and length of a DFT node, given the input's dims along the axis.
fn dft_geometry(cx: &Cx, rank: usize, dims: &[Dim]) -> Result<(usize, Option<u64>)> {
    let axis = match cx.opt_id(2)? {
        Some(_) => cx.req_scalar_int(2)?,
        None => -2,
    };
    let r = rank as i64;
    // Python's `axis % rank`, then the last axis (the complex pair) is not a signal axis.
    let a = axis.rem_euclid(r.max(1));
    if axis < -r || axis >= r || a > r - 2 {
        return Err(cx.bad_operand(
            2,
            &format!("is {axis}, outside [-{r}, -2] and [0, {}]", r - 2),
        ));
    }
    let a = a as usize;
    let inverse = cx.attr_int("inverse", 0)? != 0;
    let onesided = cx.attr_int("onesided", 0)? != 0;
    let n = match cx.opt_id(1)? {
        Some(_) => {
            let n = cx.req_scalar_int(1)?;
            if n < 1 {
                return Err(cx.bad_operand(1, &format!("is {n}; the DFT length must be positive")));
            }
            Some(n as u64)
        }
        None => match &dims[a] {
            Dim::Fixed(l) if inverse && onesided => Some(2 * l.saturating_sub(1)),
            Dim::Fixed(l) => Some(*l),
            Dim::Sym(_) => None,
        },
    };
    Ok((a, n))
}

fn dft(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = float_input(cx, 0)?;
    let r = x.shape.rank();
    if r < 2 {
        return Err(cx.shape_err(format!("{} must have rank 2 or more", cx.describe(0))));
    }
    match x.shape.0[r - 1] {
        Dim::Fixed(1) | Dim::Fixed(2) => {}
        _ => {
            return Err(cx.shape_err(format!(
                "{} must end in a dim of 1 (real) or 2 (complex)",
                cx.describe(0)
            )))
        }
    }
    let (a, n) = dft_geometry(cx, r, &x.shape.0)?;
    let inverse = cx.attr_int("inverse", 0)? != 0;
    let onesided = cx.attr_int("onesided", 0)? != 0;
    let mut dims = x.shape.0.clone();
    dims[a] = match n {
        Some(n) if onesided && !inverse => Dim::Fixed(n / 2 + 1),
        Some(n) => Dim::Fixed(n),
        None => cx.fresh(0, a),
    };
    dims[r - 1] = Dim::Fixed(if inverse && onesided { 1 } else { 2 });
    Ok(vec![TensorType::new(x.dtype, Shape(dims))])
}

fn stft(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = float_input(cx, 0)?;
    if x.shape.rank() != 3 {
        return Err(cx.shape_err(format!(
            "{} must be [batch, length, 1 or 2]",
            cx.describe(0)
        )));
    }
    let step = cx.req_scalar_int(1)?;
    if step < 1 {
        return Err(cx.bad_operand(1, &format!("is {step}; the frame step must be positive")));
    }
    let window = match cx.opt_ty(2)? {
        Some(w) if w.shape.rank() == 1 => Some(w.shape.0[0].clone()),
        Some(_) => return Err(cx.shape_err(format!("{} must be 1-D", cx.describe(2)))),
        None => None,
    };
    let len = match cx.opt_id(3)? {
        Some(_) => Some(Dim::Fixed(cx.req_scalar_int(3)?.max(0) as u64)),
        None => window.clone(),
    };
    let len = len.unwrap_or_else(|| x.shape.0[1].clone());
    let onesided = cx.attr_int("onesided", 1)? != 0;
    let (frames, bins) = match (&x.shape.0[1], &len) {
        (Dim::Fixed(l), Dim::Fixed(n)) => {
            if *n < 1 || n > l {
                return Err(cx.shape_err(format!("frame length {n} must be in 1..={l}")));
            }
            (
                Dim::Fixed(1 + (l - n) / step as u64),
                Dim::Fixed(if onesided { n / 2 + 1 } else { *n }),
            )
        }
        _ => (cx.fresh(0, 1), cx.fresh(0, 2)),
    };
    Ok(vec![TensorType::new(
        x.dtype,
        Shape(vec![x.shape.0[0].clone(), frames, bins, Dim::Fixed(2)]),
    )])
}

fn mel(cx: &Cx) -> Result<Vec<TensorType>> {
    let bins = cx.req_scalar_int(0)?;
    let n = cx.req_scalar_int(1)?;
    if bins < 0 || n < 0 {
        return Err(cx.bad_operand(0, "num_mel_bins and dft_length must not be negative"));
    }
    let dt = cx.attr_dtype("output_datatype")?.unwrap_or(DType::F32);
    Ok(vec![TensorType::new(
        dt,
        Shape(vec![fixed(n / 2 + 1), fixed(bins)]),
    )])
}

/// The number of tensors an optimizer node updates, and how many per-tensor inputs each has
/// (X, G and the states).
pub fn optimizer_groups(op: Op, n_inputs: usize) -> Option<(usize, usize)> {
    let per = if op == Op::Adam { 4 } else { 3 };
    let rest = n_inputs.checked_sub(2)?;
    (rest > 0 && rest % per == 0).then_some((rest / per, per))
}

fn optimizer(cx: &Cx) -> Result<Vec<TensorType>> {
    let (n, per) = optimizer_groups(cx.op(), cx.n_inputs()).ok_or_else(|| {
        cx.shape_err(format!(
            "{} operands do not form R, T and whole groups of tensors",
            cx.n_inputs()
        ))
    })?;
    let mut out = Vec::with_capacity(n * (per - 1));
    for group in 0..per - 1 {
        for j in 0..n {
            // Results: X_new for each tensor, then each state in operand order (skipping G).
            let src = if group == 0 {
                2 + j
            } else {
                2 + (group + 1) * n + j
            };
            let x = float_input(cx, 2 + j)?;
            let s = cx.ty(src)?;
            if s.shape != x.shape {
                return Err(cx.shape_err(format!(
                    "{} must have the shape of {}",
                    cx.describe(src),
                    cx.describe(2 + j)
                )));
            }
            out.push(s.clone());
        }
    }
    Ok(out)
}

fn array_feature_extractor(cx: &Cx) -> Result<Vec<TensorType>> {
    let x = cx.ty(0)?;
    let y = cx.ty(1)?;
    if y.dtype != DType::I64 {
        return Err(cx.dtype_err(
            y.dtype,
            format!("{}, which must hold int64 indices", cx.describe(1)),
        ));
    }
    let count = super::dims_product(&y.shape.0);
    let mut dims = match x.shape.rank() {
        0 => return Err(cx.shape_err(format!("{} must have rank 1 or more", cx.describe(0)))),
        1 => vec![Dim::Fixed(1)],
        r => x.shape.0[..r - 1].to_vec(),
    };
    dims.push(count);
    Ok(vec![TensorType::new(x.dtype, Shape(dims))])
}

#[cfg(test)]
mod tests {
    use crate::testutil::B;
    use crate::{Attr, Op};

    /// A DFT over `x` with optional constant dft_length and axis; the printed result type or
    /// the error as `kind: message`.
    fn dft(x: &str, len: Option<i64>, axis: Option<i64>, attrs: &[(&str, Attr)]) -> String {
        let mut b = B::new();
        let xi = b.input("x", x);
        let l = len.map(|v| b.ints("len", &[v]));
        let a = axis.map(|v| b.ints("axis", &[v]));
        let y = b.node(Op::DFT, &[Some(xi), l, a], 1, attrs)[0];
        b.infer(y).unwrap_or_else(|e| format!("{}: {e}", e.kind()))
    }

    #[test]
    fn dft_shapes() {
        assert_eq!(dft("f32[1,10,10,1]", None, Some(1), &[]), "f32[1,10,10,2]");
        assert_eq!(
            dft("f32[1,10,10,1]", None, None, &[("onesided", Attr::Int(1))]),
            "f32[1,10,6,2]"
        );
        let irfft = [("inverse", Attr::Int(1)), ("onesided", Attr::Int(1))];
        assert_eq!(
            dft("f32[1,6,10,2]", None, Some(1), &irfft),
            "f32[1,10,10,1]"
        );
        assert_eq!(dft("f32[3,2]", Some(8), Some(-2), &[]), "f32[8,2]");
        let e = dft("f32[1,10,10,1]", None, Some(3), &[]);
        assert!(e.contains("outside [-4, -2] and [0, 2]"), "{e}");
        let e = dft("f32[4,3]", None, None, &[]);
        assert!(
            e.contains("must end in a dim of 1 (real) or 2 (complex)"),
            "{e}"
        );
    }

    #[test]
    fn optimizer_results_follow_their_tensors() {
        let mut b = B::new();
        let ins: Vec<_> = [
            "f32[]", "i64[]", "f32[1]", "f32[2]", "f32[1]", "f32[2]", "f32[1]", "f32[2]",
        ]
        .iter()
        .enumerate()
        .map(|(k, t)| Some(b.input(&format!("i{k}"), t)))
        .collect();
        let outs = b.node(Op::Momentum, &ins, 4, &[]);
        assert_eq!(b.infer(outs[1]).unwrap(), "f32[2]");
        assert_eq!(
            b.g.ty(outs[2]).map(|t| t.to_string()).unwrap_or_default(),
            "f32[1]"
        );
    }

    #[test]
    fn array_feature_extractor_keeps_leading_dims() {
        let mut b = B::new();
        let x = b.input("x", "f32[3,4]");
        let i = b.input("i", "i64[2]");
        let y = b.node1(Op::ArrayFeatureExtractor, &[x, i], &[]);
        assert_eq!(b.infer(y).unwrap(), "f32[3,2]");
    }
}
