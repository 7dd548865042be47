//! FusedMatMul, the optimizer's one-kernel matrix product (compiler/opt): `activation(scale ·
//! (A − a_zp)(B − b_zp) + bias)`. It is the matrix-product tile program of `contraction.rs`
//! with a longer epilogue: the bias is Gemm's C term, the scale and the activation are
//! [`FusedEpilogue`]. Integer operands accumulate in i32 where the target's `mma` table has the
//! pair, else in f32; the epilogue runs in f32.

use crate::contraction::{launch_matmul, CTerm, FusedEpilogue};
use crate::dense::matmul_spec;
use crate::movement::{operand, result};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node};
use tessera_kir::{Execution, KernelBuilder, MathFn, Val};

/// The activation a FusedMatMul applies to its result tile, named by its `activation`
/// attribute: the op it replaces (`Gelu` is the erf form, `GeluTanh` the tanh approximation).
/// Each computes exactly what the standalone op's kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    Relu,
    Gelu,
    GeluTanh,
    Sigmoid,
    Tanh,
}

impl Activation {
    pub const NAMES: [&'static str; 5] = ["Relu", "Gelu", "GeluTanh", "Sigmoid", "Tanh"];

    pub fn parse(name: &str) -> Option<Activation> {
        Some(match name {
            "Relu" => Activation::Relu,
            "Gelu" => Activation::Gelu,
            "GeluTanh" => Activation::GeluTanh,
            "Sigmoid" => Activation::Sigmoid,
            "Tanh" => Activation::Tanh,
            _ => return None,
        })
    }

    /// The activation of `x` (a tile, vector or scalar of the epilogue's float type).
    pub fn apply(self, b: &mut KernelBuilder, x: Val) -> Val {
        match self {
            Activation::Relu => {
                let z = crate::util::konst_like(b, x, 0.0);
                b.max(x, z)
            }
            Activation::Gelu => crate::elementwise::gelu(b, x, false),
            Activation::GeluTanh => crate::elementwise::gelu(b, x, true),
            Activation::Sigmoid => b.math(MathFn::Sigmoid, &[x]),
            Activation::Tanh => b.math(MathFn::Tanh, &[x]),
        }
    }
}

// ==== FusedMatMul ====

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let (a, b, y) = (
        operand(cx, node, 0)?,
        operand(cx, node, 1)?,
        result(cx, node, 0)?,
    );
    let (at, bt, yt) = (cx.dtype(a)?, cx.dtype(b)?, cx.dtype(y)?);
    let int = |t: DType| matches!(t, DType::I8 | DType::U8);
    // Integer products accumulate in i32 where the target's matrix unit has the pair; elsewhere
    // in f32 on the exact integer values (each product is exact, the sum rounds as an f32
    // product does), which runs at the target's f32 rate.
    let acc = if int(at) && int(bt) {
        if cx.desc.mma_pair(at, bt, DType::I32).is_some() {
            DType::I32
        } else {
            DType::F32
        }
    } else if at.is_float() && at.bits() >= 16 && bt.is_float() && bt.bits() >= 16 {
        DType::F32
    } else {
        return Err(cx.unsupported(format!("FusedMatMul on {at} x {bt}")));
    };
    if !yt.is_float() {
        return Err(cx.unsupported(format!("FusedMatMul with a {yt} result")));
    }
    let activation = match node.attr_str("activation").unwrap_or("") {
        "" => None,
        name => Some(Activation::parse(name).ok_or_else(|| {
            cx.unsupported(format!(
                "FusedMatMul activation `{name}` (known: {})",
                Activation::NAMES.join(", ")
            ))
        })?),
    };
    // Targets with an integer dot product: i32 accumulation on weights packed at compile time.
    if crate::int_dot::fused_matmul(cx, node, activation)? {
        return Ok(Execution::Kernel);
    }
    let zps = if int(at) && int(bt) {
        [node.input(3), node.input(4)]
    } else {
        [None, None]
    };
    let Some((mut spec, mut args)) = matmul_spec(cx, node, acc, zps)? else {
        return Ok(Execution::Kernel);
    };
    let n = spec.n;
    if let Some(c) = node.input(2) {
        if cx.numel(c)? != n || cx.dims(c)?.iter().rev().skip(1).any(|&d| d != 1) {
            return Err(cx.invalid(format!(
                "bias {:?} is not one value per column",
                cx.dims(c)?
            )));
        }
        spec.c = Some(CTerm {
            dtype: cx.dtype(c)?,
            len: n,
            rs: 0,
            cs: 1,
        });
        args.insert(2, cx.buffer(c)?);
    }
    let scale = match node.input(5) {
        Some(s) => {
            let len = cx.numel(s)?;
            if len != 1 && len != n {
                return Err(cx.invalid(format!("scale of {len} elements (1 or {n})")));
            }
            args.push(cx.buffer(s)?);
            Some((cx.dtype(s)?, len))
        }
        None => None,
    };
    spec.fused = Some(FusedEpilogue { scale, activation });
    spec.y.0 = yt;
    args.push(cx.buffer(y)?);
    launch_matmul(cx, &spec, args);
    Ok(Execution::Kernel)
}
