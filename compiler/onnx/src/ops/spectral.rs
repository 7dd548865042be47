//! Registry lines for the spectral ops (DFT, STFT, MelWeightMatrix), the optimizer steps of the
//! `ai.onnx.preview.training` domain and the `ai.onnx.ml` ops. Lines of a non-default domain
//! name their domain, so an op type is only accepted in the domain that defines it.

use super::{in_domain, op, set_operand, take, up, Entry};
use crate::error::Result;
use crate::import::Ctx;
use tessera_ir::{Attr, Node, Op};

const TRAINING: &str = "ai.onnx.preview.training";
const ML: &str = "ai.onnx.ml";
const PREVIEW: &str = "ai.onnx.preview";

pub(crate) const OPS: &[Entry] = &[
    up("DFT", Op::DFT, &[(20, dft_axis_attr)]),
    op("STFT", Op::STFT),
    op("MelWeightMatrix", Op::MelWeightMatrix),
    in_domain(TRAINING, "Momentum", Op::Momentum),
    in_domain(TRAINING, "Adagrad", Op::Adagrad),
    in_domain(TRAINING, "Adam", Op::Adam),
    in_domain(ML, "Binarizer", Op::Binarizer),
    in_domain(ML, "ArrayFeatureExtractor", Op::ArrayFeatureExtractor),
    // FlexAttention without modifier subgraphs is 4-D Attention; graph-valued `score_mod` and
    // `prob_mod` are refused when attributes are decoded.
    Entry {
        domain: PREVIEW,
        onnx: "FlexAttention",
        op: Op::Attention,
        upgrades: &[(i64::MAX, flex_attention)],
    },
];

/// FlexAttention's remaining attributes (`scale`, `softmax_precision`) mean what Attention's
/// do; only rank-4 inputs are allowed, which Attention reads without head-count attributes.
fn flex_attention(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    if let Some(name) = ["score_mod", "prob_mod"]
        .into_iter()
        .find(|a| node.attrs.contains_key(*a))
    {
        return Err(ctx.unsupported(&node, &format!("FlexAttention with `{name}`")));
    }
    if node.inputs.len() != 3 {
        return Err(ctx.bad(&node, "FlexAttention takes exactly Q, K and V"));
    }
    Ok(vec![node])
}

/// DFT-17 took `axis` as an attribute (default 1); DFT-20 takes it as operand 2.
fn dft_axis_attr(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    let axis = match take(&mut node, "axis") {
        None => 1,
        Some(Attr::Int(a)) => a,
        Some(_) => return Err(ctx.bad(&node, "attribute `axis` must be an integer")),
    };
    if node.input(2).is_some() {
        return Err(ctx.bad(&node, "DFT before opset 20 has no `axis` operand"));
    }
    let c = ctx.ints("axis", &[axis]);
    set_operand(&mut node, 2, Some(c));
    Ok(vec![node])
}

#[cfg(test)]
mod tests {
    use super::super::lookup;
    use super::{ML, PREVIEW, TRAINING};

    #[test]
    fn lines_are_found_only_in_their_domain() {
        assert!(lookup("", "DFT").is_some());
        assert!(lookup(ML, "Binarizer").is_some());
        assert!(lookup(TRAINING, "Adam").is_some());
        assert!(lookup(PREVIEW, "FlexAttention").is_some());
        assert!(lookup("", "Binarizer").is_none());
        assert!(lookup(ML, "DFT").is_none());
        assert!(lookup("com.example", "Adam").is_none());
    }
}
