//! Registry lines for quantization ops.

use super::{op, Entry};
use tessera_ir::Op;

pub(crate) const OPS: &[Entry] = &[
    op("QuantizeLinear", Op::QuantizeLinear),
    op("DequantizeLinear", Op::DequantizeLinear),
    op("DynamicQuantizeLinear", Op::DynamicQuantizeLinear),
    // added: linear attention and quantized ops
    op("QLinearMatMul", Op::QLinearMatMul),
    op("QLinearConv", Op::QLinearConv),
];
