//! FusedMatMul and FusedConv, the optimizer's one-kernel matrix products and convolutions
//! (compiler/opt). FusedMatMul is `activation(scale · (A − a_zp)(B − b_zp) + bias +
//! residual)`: the matrix-product tile program of `contraction.rs` with a longer epilogue (the
//! bias is Gemm's C term, the scale, residual and activation are [`FusedEpilogue`]). Integer
//! operands accumulate in i32 where the target's `mma` table has the pair, else in f32; the
//! epilogue runs in f32. FusedConv is `activation(Conv(X, W, B) + Z)`, with the same epilogue
//! where the Conv becomes a matrix product ([`conv`]). [`Tail`] decides where the residual and
//! activation run.

use crate::contraction::{launch_matmul, CTerm, FusedEpilogue};
use crate::dense::matmul_spec;
use crate::movement::{operand, result};
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, ValueId};
use tessera_kir::{BufferId, Execution, KernelBuilder, MathFn, Val};

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

    /// The `activation` attribute of fused op `node`, if any.
    pub fn of(cx: &LowerCx, node: &Node) -> Result<Option<Activation>> {
        match node.attr_str("activation").unwrap_or("") {
            "" => Ok(None),
            name => Activation::parse(name).map(Some).ok_or_else(|| {
                cx.unsupported(format!(
                    "{} activation `{name}` (known: {})",
                    node.op,
                    Activation::NAMES.join(", ")
                ))
            }),
        }
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
    let activation = Activation::of(cx, node)?;
    let residual = node.input(6);
    // Targets with an integer dot product: i32 accumulation on weights packed at compile time
    // (that path has no residual; the optimizer adds residuals only to float products).
    let trans_b = node.attr_int("transB", 0) != 0;
    if residual.is_none() && crate::int_dot::fused_matmul(cx, node, activation)? {
        return Ok(Execution::Kernel);
    }
    let zps = if int(at) && int(bt) {
        [node.input(3), node.input(4)]
    } else {
        [None, None]
    };
    let Some((mut spec, mut args)) = matmul_spec(cx, node, acc, zps, trans_b)? else {
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
    spec.y.0 = yt;
    let dims = cx.dims(y)?;
    let tail = Tail::new(cx, activation, residual, &dims)?;
    let residual = tail
        .in_kernel
        .then(|| tail.residual.as_ref().map(|r| r.dtype))
        .flatten();
    if let (Some(r), true) = (tail.residual.as_ref(), tail.in_kernel) {
        args.push(r.buffer);
    }
    spec.fused = Some(FusedEpilogue {
        scale,
        residual,
        activation: tail.kernel_activation(),
    });
    let yb = cx.buffer(y)?;
    let out = tail.product_output(cx, yb, yt, &dims);
    args.push(out);
    launch_matmul(cx, &spec, args)?;
    tail.finish(cx, out, yb, yt, &dims)?;
    Ok(Execution::Kernel)
}

/// The end of a fused op's epilogue (residual add, then activation) and where it runs: in the
/// product's tile program, or after it as one elementwise kernel. A target whose products run
/// on a matrix unit with a vector-unit buffer (npu-sim) places the product's epilogue next to
/// the accumulator, where only a ReLU stays in the matrix unit's schedule: there a
/// transcendental activation or a residual (another GM read) follows the product as its own
/// elementwise kernel, which streams through the vector unit. A CPU with 16 vector registers
/// or fewer also runs a transcendental activation after the product (see [`Tail::new`]).
#[derive(Clone)]
pub(crate) struct Tail {
    pub activation: Option<Activation>,
    pub residual: Option<crate::util::EwOperand>,
    /// Whether the tail runs in the product's kernel.
    pub in_kernel: bool,
}

impl Tail {
    pub fn new(
        cx: &mut LowerCx,
        activation: Option<Activation>,
        residual: Option<ValueId>,
        dims: &[u64],
    ) -> Result<Tail> {
        let residual = match residual {
            Some(z) => {
                let (zd, zt) = (cx.dims(z)?, cx.dtype(z)?);
                if zd != dims || !zt.is_float() {
                    return Err(cx.invalid(format!(
                        "residual {zt}{zd:?} is not a float tensor of the result's shape {dims:?}"
                    )));
                }
                Some(crate::util::EwOperand {
                    buffer: cx.buffer(z)?,
                    dtype: zt,
                    len: dims.iter().product(),
                    strides: crate::util::strides(dims),
                    block: None,
                })
            }
            None => None,
        };
        let npu = crate::rows::wants_row_tiles(cx);
        // A CPU with 16 vector registers or fewer (host's 128-bit Cranelift code) keeps only
        // a ReLU in the product's epilogue: a transcendental one (GELU, Sigmoid, Tanh) brings
        // polynomial constants that its code generator keeps live across the whole kernel,
        // where they push the register block's accumulators out to the stack. It follows as
        // one elementwise kernel instead, which costs one more pass over the result.
        let few_registers = cx
            .desc
            .cpu
            .as_ref()
            .is_some_and(|c| (1..=16).contains(&c.vector_registers));
        let relu_only = activation.is_none_or(|a| a == Activation::Relu);
        let in_kernel = if npu {
            residual.is_none() && relu_only
        } else {
            !few_registers || relu_only
        };
        Ok(Tail {
            activation,
            residual,
            in_kernel,
        })
    }

    /// The activation the product's own epilogue applies.
    pub fn kernel_activation(&self) -> Option<Activation> {
        self.activation.filter(|_| self.in_kernel)
    }

    /// Where the product writes: the result, or a scratch the tail kernel reads.
    pub fn product_output(
        &self,
        cx: &mut LowerCx,
        y: BufferId,
        yt: DType,
        dims: &[u64],
    ) -> BufferId {
        if self.in_kernel || (self.activation.is_none() && self.residual.is_none()) {
            y
        } else {
            cx.scratch("fused_pre_epilogue", yt, dims.to_vec())
        }
    }

    /// The tail kernel, when the tail does not run in the product's kernel: `y =
    /// activation(pre + residual)`.
    pub fn finish(
        &self,
        cx: &mut LowerCx,
        pre: BufferId,
        y: BufferId,
        yt: DType,
        dims: &[u64],
    ) -> Result<()> {
        if pre == y {
            return Ok(());
        }
        let mut operands = vec![crate::util::EwOperand {
            buffer: pre,
            dtype: yt,
            len: dims.iter().product(),
            strides: crate::util::strides(dims),
            block: None,
        }];
        operands.extend(self.residual.clone());
        let act = self.activation;
        crate::util::emit_elementwise(cx, "epilogue", &operands, y, yt, dims, &|b, v| {
            let x = if v.len() > 1 { b.add(v[0], v[1]) } else { v[0] };
            act.map_or(x, |a| a.apply(b, x))
        })
    }
}

// ==== FusedConv ====

/// FusedConv: `activation(Conv(X, W, B) + Z)`. The Conv is lowered as Conv is
/// (`dense::conv_with`); where it becomes the matrix-product tile program, the tail runs in
/// that program's epilogue, and otherwise (the direct Conv kernels, npu-sim's non-ReLU tails)
/// as one elementwise kernel after it.
pub fn conv(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let activation = Activation::of(cx, node)?;
    let y = result(cx, node, 0)?;
    let dims = cx.dims(y)?;
    let tail = Tail::new(cx, activation, node.input(3), &dims)?;
    crate::dense::conv_with(cx, node, Some(&tail))
}
