//! Low-precision rules: quantized products computed in integers, quantize/dequantize and cast
//! pairs that cancel, and f32 products run in f16 or bf16 with f32 accumulation where the
//! precision policy allows it.
//!
//! | rule | from | to | policy |
//! |---|---|---|---|
//! | `qdq-matmul` | `MatMul(DQ(a_q, sa, za), DQ(b_q, sb, zb))`, or the `FusedMatMul` of a QDQ Gemm (`gemm-matmul`: a bias, `transB` kept), u8/i8, per-tensor A, per-tensor or per-column B | `FusedMatMul(a_q, b_q, bias, za, zb, sa·sb)`: i32 accumulation, one scale | all |
//! | `dq-q` | `Q(DQ(x, s, z), s, z)` with the same parameters and dtype | `x` | all |
//! | `matmul-f16`, `matmul-bf16` | f32 `MatMul(a, b)`, `Gemm(a, b, c)` | `FusedMatMul(Cast(a), Cast(b))`, `Cast(Gemm(Cast(a), Cast(b), Cast(c)))`, f32 accumulation | `f16`, `bf16` |
//!
//! `qdq-matmul` computes `Σ (a−za)(b−zb)` on the integer values: exactly in i32 where the
//! target's `mma` table has the pair (no overflow for K below 2^15 at 8 bits), else in f32,
//! where each product is exact and only the sum rounds, and then scales once; the f32 product of
//! dequantized values rounds at every step. It changes results only by f32 rounding, so it runs
//! at every policy. Whether
//! the f16/bf16 product is chosen is the cost model's decision: it is cheap only on a target
//! whose `mma` table has the pair.

use super::{arg, dims, dtype, konst, nodes, ty, Expr, Rule};
use crate::analysis::EGraph;
use crate::Precision;
use egg::Id;
use std::sync::Arc;
use tessera_ir::{Attr, DType, Op, OpKey};

pub fn rules(precision: Precision) -> Vec<Arc<dyn Rule>> {
    let mut v: Vec<Arc<dyn Rule>> = vec![Arc::new(QdqMatMul), Arc::new(DqQ)];
    match precision {
        Precision::F16 => v.push(Arc::new(Narrow(DType::F16))),
        Precision::Bf16 => v.push(Arc::new(Narrow(DType::BF16))),
        Precision::Exact | Precision::Int8 => {}
    }
    v
}

fn same(eg: &EGraph, a: Option<Id>, b: Option<Id>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            eg.find(a) == eg.find(b)
                || matches!((konst(eg, a), konst(eg, b)), (Some(x), Some(y)) if x == y)
        }
        _ => false,
    }
}

fn is_q8(d: Option<DType>) -> bool {
    matches!(d, Some(DType::U8 | DType::I8))
}

fn numel(eg: &EGraph, id: Id) -> Option<u64> {
    ty(eg, id).and_then(|t| t.shape.num_elements())
}

// ==== qdq-matmul ====

struct QdqMatMul;

/// A per-tensor or per-axis DequantizeLinear at class `id`: (quantized, scale, zero point, axis).
fn dequantized(eg: &EGraph, id: Id) -> Option<(Id, Id, Option<Id>, i64)> {
    if dtype(eg, id) != Some(DType::F32) {
        return None;
    }
    let (k, ch) = nodes(eg, id, Op::DequantizeLinear).next()?;
    if k.attr_int("block_size", 0) != 0 || !is_q8(dtype(eg, ch[0])) {
        return None;
    }
    if dtype(eg, ch[1]) != Some(DType::F32) {
        return None;
    }
    let zp = arg(ch, eg, 2);
    if zp.is_some_and(|z| dtype(eg, z) != dtype(eg, ch[0])) {
        return None;
    }
    Some((ch[0], ch[1], zp, k.attr_int("axis", 1)))
}

impl Rule for QdqMatMul {
    fn name(&self) -> &'static str {
        "qdq-matmul"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        // A MatMul, or the float FusedMatMul that `gemm-matmul` and `matmul-bias` make (a
        // product and at most a bias: a Gemm's weights may stay transposed, `transB`).
        let plain = nodes(eg, id, Op::MatMul).map(|(_, ch)| (None, ch));
        let fused = nodes(eg, id, Op::FusedMatMul).filter(|(k, ch)| {
            k.attr_str("activation").is_none() && (3..ch.len()).all(|i| arg(ch, eg, i).is_none())
        });
        let products: Vec<(Option<&OpKey>, &[Id])> =
            plain.chain(fused.map(|(k, ch)| (Some(k), ch))).collect();
        for (key, ch) in products {
            let trans_b = key.is_some_and(|k| k.attr_int("transB", 0) != 0);
            let (Some((aq, sa, za, _)), Some((bq, sb, zb, axis))) =
                (dequantized(eg, ch[0]), dequantized(eg, ch[1]))
            else {
                continue;
            };
            let (Some(ad), Some(bd)) = (dims(eg, aq), dims(eg, bq)) else {
                continue;
            };
            if ad.len() < 2 || bd.len() != 2 {
                continue;
            }
            // B's columns are its rows when it is held transposed; a per-column scale then
            // runs along axis 0.
            let n = if trans_b { bd[0] } else { bd[1] };
            let per_tensor = |s: Option<Id>| s.is_none_or(|s| numel(eg, s) == Some(1));
            let per_column = |s: Option<Id>| {
                s.is_none_or(|s| {
                    numel(eg, s) == Some(1)
                        || (numel(eg, s) == Some(n) && dims(eg, s).is_some_and(|d| d.len() == 1))
                })
            };
            let b_axis_ok = if trans_b {
                axis == 0 || axis == -2
            } else {
                axis == 1 || axis == -1
            };
            if !per_tensor(Some(sa)) || !per_tensor(za) {
                continue;
            }
            let b_ok = (per_tensor(Some(sb)) && per_tensor(zb))
                || (b_axis_ok && per_column(Some(sb)) && per_column(zb));
            if !b_ok {
                continue;
            }
            // A zero point that is all zeros (symmetric quantization) is no zero point: the
            // product then skips the subtraction.
            let zero = |z: Id| {
                konst(eg, z)
                    .and_then(|t| t.to_i64_vec())
                    .is_some_and(|v| v.iter().all(|&x| x == 0))
            };
            let z = |z: Option<Id>| z.filter(|&z| !zero(z)).map_or(Expr::Absent, Expr::Class);
            let scale = Expr::op(Op::Mul, vec![Expr::Class(sa), Expr::Class(sb)]);
            let bias = key
                .and_then(|_| arg(ch, eg, 2))
                .map_or(Expr::Absent, Expr::Class);
            return vec![Expr::Node(
                key.cloned()
                    .unwrap_or_else(|| OpKey::plain(Op::FusedMatMul)),
                vec![Expr::Class(aq), Expr::Class(bq), bias, z(za), z(zb), scale],
            )];
        }
        vec![]
    }
}

// ==== dq-q ====

struct DqQ;

impl Rule for DqQ {
    fn name(&self) -> &'static str {
        "dq-q"
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        for (qk, qch) in nodes(eg, id, Op::QuantizeLinear) {
            for (dk, dch) in nodes(eg, qch[0], Op::DequantizeLinear) {
                let x = dch[0];
                let params = same(eg, Some(qch[1]), Some(dch[1]))
                    && same(eg, arg(qch, eg, 2), arg(dch, eg, 2))
                    && qk.attr_int("axis", 1) == dk.attr_int("axis", 1)
                    && qk.attr_int("block_size", 0) == dk.attr_int("block_size", 0);
                if params && ty(eg, x) == ty(eg, id) && eg.find(x) != eg.find(id) {
                    return vec![Expr::Class(x)];
                }
            }
        }
        vec![]
    }
}

// ==== matmul-f16, matmul-bf16 ====

struct Narrow(DType);

impl Rule for Narrow {
    fn name(&self) -> &'static str {
        if self.0 == DType::F16 {
            "matmul-f16"
        } else {
            "matmul-bf16"
        }
    }

    fn find(&self, eg: &EGraph, id: Id) -> Vec<Expr> {
        if dtype(eg, id) != Some(DType::F32) {
            return vec![];
        }
        let cast = |c: Id| {
            Expr::Node(
                // `to` as the ONNX dtype code, the form import writes and lowering reads.
                OpKey::with(Op::Cast, &[("to", Attr::Int(self.0.to_onnx() as i64))]),
                vec![Expr::Class(c)],
            )
        };
        let f32_matrix =
            |c: Id| ty(eg, c).is_some_and(|t| t.dtype == DType::F32 && t.shape.rank() >= 2);
        for (_, ch) in nodes(eg, id, Op::MatMul) {
            if f32_matrix(ch[0]) && f32_matrix(ch[1]) {
                return vec![Expr::Node(
                    OpKey::plain(Op::FusedMatMul),
                    vec![cast(ch[0]), cast(ch[1])],
                )];
            }
        }
        // Gemm keeps its dtype through the product, so its narrow form is cast back: the
        // result is rounded once to the narrow dtype (within the same bound).
        for (k, ch) in nodes(eg, id, Op::Gemm) {
            if f32_matrix(ch[0]) && f32_matrix(ch[1]) {
                let mut args = vec![cast(ch[0]), cast(ch[1])];
                if let Some(c) = arg(ch, eg, 2) {
                    args.push(cast(c));
                }
                let back = OpKey::with(Op::Cast, &[("to", Attr::Int(DType::F32.to_onnx() as i64))]);
                return vec![Expr::Node(back, vec![Expr::Node(k.clone(), args)])];
            }
        }
        for (k, ch) in nodes(eg, id, Op::FusedMatMul) {
            let plain = (3..6).all(|i| arg(ch, eg, i).is_none());
            if plain && f32_matrix(ch[0]) && f32_matrix(ch[1]) {
                let mut args = vec![cast(ch[0]), cast(ch[1])];
                args.extend(ch[2..].iter().map(|&c| Expr::Class(c)));
                return vec![Expr::Node(k.clone(), args)];
            }
        }
        vec![]
    }
}
