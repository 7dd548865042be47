//! Sequences known at compile time. Graph IR has no sequence values, so a sequence built inside
//! the graph is tracked at import as the list of tensors it holds, and each sequence op is
//! resolved into tensor ops: `SequenceAt` becomes `Identity` of the element, `SequenceLength` a
//! constant, `ConcatFromSequence` a `Concat` (after `Unsqueeze` with `new_axis`),
//! `SplitToSequence` a `Split` (plus `Squeeze` without `keepdims`). This needs the positions
//! known at import (initializers or `Constant`s) and static split counts; otherwise, and for
//! sequences as graph inputs or outputs or across subgraphs, the model is refused as unsupported.

use crate::error::{OnnxError, Result};
use crate::import::{node_desc, Builder};
use crate::proto::NodeProto;
use tessera_ir::{Attr, Attrs, Dim, Node, Op, Tensor, TensorType, ValueId};

/// Whether `op_type` (default domain) is a sequence op resolved here.
pub(crate) fn is_sequence_op(op_type: &str) -> bool {
    matches!(
        op_type,
        "SequenceEmpty"
            | "SequenceConstruct"
            | "SequenceInsert"
            | "SequenceErase"
            | "SequenceAt"
            | "SequenceLength"
            | "ConcatFromSequence"
            | "SplitToSequence"
    )
}

fn unsupported(np: &NodeProto, what: &str) -> OnnxError {
    OnnxError::UnsupportedFeature {
        at: node_desc(np),
        what: what.to_string(),
    }
}

/// The sequence operand `k`.
fn seq(b: &Builder, np: &NodeProto, k: usize) -> Result<Vec<ValueId>> {
    let name = np.input.get(k).filter(|n| !n.is_empty()).ok_or_else(|| {
        OnnxError::BadModel(format!("{}: operand {k} is required", node_desc(np)))
    })?;
    b.sequence(name).cloned().ok_or_else(|| {
        unsupported(
            np,
            &format!("operand \"{name}\" is not a sequence built in this graph"),
        )
    })
}

/// The tensor operand `k`, if present.
fn tensor(b: &Builder, np: &NodeProto, k: usize) -> Result<Option<ValueId>> {
    match np.input.get(k).filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(name) => b.lookup(name).map(Some).ok_or_else(|| {
            OnnxError::BadModel(format!(
                "{} reads \"{name}\", which nothing defines",
                node_desc(np)
            ))
        }),
    }
}

/// A position operand known at import, normalised against `len` (`len + 1` slots for insert).
fn position(b: &Builder, np: &NodeProto, k: usize, len: usize) -> Result<Option<usize>> {
    let Some(v) = tensor(b, np, k)? else {
        return Ok(None);
    };
    let p = b
        .graph
        .konst(v)
        .and_then(|t| t.to_i64_vec())
        .and_then(|v| v.first().copied());
    let p = p.ok_or_else(|| unsupported(np, "a sequence position not known at compile time"))?;
    let q = if p < 0 { p + len as i64 } else { p };
    if q < 0 || q as usize > len {
        return Err(OnnxError::BadModel(format!(
            "{}: position {p} is out of range for a sequence of {len}",
            node_desc(np)
        )));
    }
    Ok(Some(q as usize))
}

fn int_attr(np: &NodeProto, name: &str, default: i64) -> i64 {
    np.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.i)
}

/// Resolves one sequence op into `b`: a new sequence, or tensor nodes appended to the graph.
pub(crate) fn import(b: &mut Builder, np: &NodeProto) -> Result<()> {
    let out = np
        .output
        .first()
        .filter(|o| !o.is_empty())
        .cloned()
        .unwrap_or_default();
    let node = |op: Op, inputs: Vec<ValueId>, outputs: Vec<ValueId>, attrs: Attrs| Node {
        name: np.name.clone(),
        op,
        inputs: inputs.into_iter().map(Some).collect(),
        outputs,
        attrs,
    };
    match np.op_type.as_str() {
        "SequenceEmpty" => b.set_sequence(&out, Vec::new()),
        "SequenceConstruct" => {
            let items = (0..np.input.len())
                .map(|k| tensor(b, np, k).map(|v| v.into_iter()))
                .collect::<Result<Vec<_>>>()?;
            b.set_sequence(&out, items.into_iter().flatten().collect());
        }
        "SequenceInsert" => {
            let mut s = seq(b, np, 0)?;
            let t = tensor(b, np, 1)?.ok_or_else(|| {
                OnnxError::BadModel(format!("{}: no tensor to insert", node_desc(np)))
            })?;
            let at = position(b, np, 2, s.len())?.unwrap_or(s.len());
            s.insert(at, t);
            b.set_sequence(&out, s);
        }
        "SequenceErase" => {
            let mut s = seq(b, np, 0)?;
            if s.is_empty() {
                return Err(OnnxError::BadModel(format!(
                    "{}: erasing from an empty sequence",
                    node_desc(np)
                )));
            }
            let at = position(b, np, 1, s.len())?
                .unwrap_or(s.len() - 1)
                .min(s.len() - 1);
            s.remove(at);
            b.set_sequence(&out, s);
        }
        "SequenceAt" => {
            let s = seq(b, np, 0)?;
            let at = position(b, np, 1, s.len())?
                .filter(|&p| p < s.len())
                .ok_or_else(|| {
                    OnnxError::BadModel(format!("{}: position out of range", node_desc(np)))
                })?;
            let y = b
                .lookup(&out)
                .ok_or_else(|| OnnxError::BadModel(format!("{}: no result", node_desc(np))))?;
            b.graph
                .nodes
                .push(node(Op::Identity, vec![s[at]], vec![y], Attrs::new()));
        }
        "SequenceLength" => {
            let s = seq(b, np, 0)?;
            let y = b
                .lookup(&out)
                .ok_or_else(|| OnnxError::BadModel(format!("{}: no result", node_desc(np))))?;
            let v = b.graph.value_mut(y);
            v.ty = Some(TensorType::fixed(tessera_ir::DType::I64, &[]));
            v.konst = Some(Tensor::from_i64(vec![], &[s.len() as i64]));
        }
        "ConcatFromSequence" => {
            let s = seq(b, np, 0)?;
            if s.is_empty() {
                return Err(OnnxError::BadModel(format!(
                    "{}: concatenating an empty sequence",
                    node_desc(np)
                )));
            }
            let axis = int_attr(np, "axis", 0);
            let y = b
                .lookup(&out)
                .ok_or_else(|| OnnxError::BadModel(format!("{}: no result", node_desc(np))))?;
            let mut parts = s.clone();
            if int_attr(np, "new_axis", 0) != 0 {
                let axes = b.fresh_const("seq_axis", Tensor::from_i64(vec![1], &[axis]));
                parts = Vec::with_capacity(s.len());
                for &e in &s {
                    let u = b.fresh_value("seq_unsqueezed");
                    b.graph
                        .nodes
                        .push(node(Op::Unsqueeze, vec![e, axes], vec![u], Attrs::new()));
                    parts.push(u);
                }
            }
            b.graph.nodes.push(node(
                Op::Concat,
                parts,
                vec![y],
                Attrs::from([("axis".to_string(), Attr::Int(axis))]),
            ));
        }
        "SplitToSequence" => {
            let x = tensor(b, np, 0)?
                .ok_or_else(|| OnnxError::BadModel(format!("{}: no input", node_desc(np))))?;
            let axis = int_attr(np, "axis", 0);
            let keepdims = int_attr(np, "keepdims", 1) != 0;
            let split = tensor(b, np, 1)?;
            let ty = b.graph.ty(x).cloned();
            let dim = |ty: &Option<TensorType>| -> Option<u64> {
                let t = ty.as_ref()?;
                let a = if axis < 0 {
                    axis + t.shape.rank() as i64
                } else {
                    axis
                };
                match t.shape.0.get(usize::try_from(a).ok()?)? {
                    Dim::Fixed(d) => Some(*d),
                    Dim::Sym(_) => None,
                }
            };
            let (split_operand, count) = match split {
                None => {
                    let d = dim(&ty).ok_or_else(|| {
                        unsupported(np, "splitting along a dimension not known at import")
                    })?;
                    (None, d as usize)
                }
                Some(sv) => {
                    let st = b
                        .graph
                        .ty(sv)
                        .cloned()
                        .ok_or_else(|| unsupported(np, "a `split` operand of unknown shape"))?;
                    if st.shape.rank() == 1 {
                        let n = st.shape.num_elements().ok_or_else(|| {
                            unsupported(np, "a `split` operand of unknown length")
                        })?;
                        (Some(sv), n as usize)
                    } else {
                        // A scalar chunk size: equal chunks, the last one smaller.
                        let c = b
                            .graph
                            .konst(sv)
                            .and_then(|t| t.to_i64_vec())
                            .and_then(|v| v.first().copied());
                        let (Some(c), Some(d)) = (c, dim(&ty)) else {
                            return Err(unsupported(
                                np,
                                "a chunk size or dimension not known at import",
                            ));
                        };
                        if c <= 0 {
                            return Err(OnnxError::BadModel(format!(
                                "{}: chunk size {c}",
                                node_desc(np)
                            )));
                        }
                        let mut sizes = vec![c; (d as i64 / c) as usize];
                        if d as i64 % c != 0 {
                            sizes.push(d as i64 % c);
                        }
                        let n = sizes.len();
                        (
                            Some(b.fresh_const(
                                "seq_split",
                                Tensor::from_i64(vec![n as u64], &sizes),
                            )),
                            n,
                        )
                    }
                }
            };
            let parts: Vec<ValueId> = (0..count).map(|_| b.fresh_value("seq_part")).collect();
            let mut attrs = Attrs::from([("axis".to_string(), Attr::Int(axis))]);
            let mut inputs = vec![x];
            match split_operand {
                Some(s) => inputs.push(s),
                None => {
                    attrs.insert("num_outputs".into(), Attr::Int(count as i64));
                }
            }
            b.graph
                .nodes
                .push(node(Op::Split, inputs, parts.clone(), attrs));
            // `keepdims` applies only without `split`.
            let items = if !keepdims && split.is_none() {
                let axes = b.fresh_const("seq_axis", Tensor::from_i64(vec![1], &[axis]));
                let mut sq = Vec::with_capacity(count);
                for &p in &parts {
                    let q = b.fresh_value("seq_squeezed");
                    b.graph
                        .nodes
                        .push(node(Op::Squeeze, vec![p, axes], vec![q], Attrs::new()));
                    sq.push(q);
                }
                sq
            } else {
                parts
            };
            b.set_sequence(&out, items);
        }
        other => return Err(unsupported(np, &format!("sequence op {other}"))),
    }
    Ok(())
}
