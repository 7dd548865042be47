//! Registry lines for shape changes, data movement, constants and shape queries.

use super::{
    axes_to_operand, ints_attr_to_operand, op, set_operand, take, take_float, take_ints, trim, up,
    Entry,
};
use crate::error::Result;
use crate::import::Ctx;
use tessera_ir::{Attr, Node, Op, Tensor};

pub(crate) const OPS: &[Entry] = &[
    up("Reshape", Op::Reshape, &[(5, reshape_shape_attr)]),
    op("Flatten", Op::Flatten),
    op("Transpose", Op::Transpose),
    up("Squeeze", Op::Squeeze, &[(13, axes_to_operand)]),
    up("Unsqueeze", Op::Unsqueeze, &[(13, axes_to_operand)]),
    up("Concat", Op::Concat, &[(4, concat_default_axis)]),
    up(
        "Split",
        Op::Split,
        &[(13, split_attr), (18, split_num_outputs)],
    ),
    up("Slice", Op::Slice, &[(10, slice_attrs)]),
    op("Gather", Op::Gather),
    op("GatherElements", Op::GatherElements),
    op("GatherND", Op::GatherND),
    op("ScatterElements", Op::ScatterElements),
    // Scatter (opset 9-10) is ScatterElements under its old name.
    op("Scatter", Op::ScatterElements),
    op("ScatterND", Op::ScatterND),
    op("Expand", Op::Expand),
    up("Pad", Op::Pad, &[(11, pad_attrs)]),
    up("Tile", Op::Tile, &[(6, tile_v1)]),
    op("Identity", Op::Identity),
    op("DepthToSpace", Op::DepthToSpace),
    op("SpaceToDepth", Op::SpaceToDepth),
    op("Trilu", Op::Trilu),
    op("OneHot", Op::OneHot),
    op("EyeLike", Op::EyeLike),
    up("Resize", Op::Resize, &[(11, resize_v10)]),
    // Upsample was deprecated in opset 10 in favour of Resize, which subsumes it.
    up("Upsample", Op::Resize, &[(i64::MAX, upsample)]),
    op("Shape", Op::Shape),
    op("Size", Op::Size),
    // The importer turns Constant nodes into constant values before upgrades run.
    op("Constant", Op::Constant),
    op("ConstantOfShape", Op::ConstantOfShape),
    op("Range", Op::Range),
    // added: spatial ops
    op("ReverseSequence", Op::ReverseSequence),
    op("CenterCropPad", Op::CenterCropPad),
    op("Col2Im", Op::Col2Im),
    up(
        "GridSample",
        Op::GridSample,
        &[(20, grid_sample_mode_names)],
    ),
    op("AffineGrid", Op::AffineGrid),
    // added: linear attention and quantized ops
    op("TensorScatter", Op::TensorScatter),
];

/// Opset < 5: the target shape was an attribute.
fn reshape_shape_attr(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    ints_attr_to_operand(ctx, &mut node, "shape", 1)?;
    Ok(vec![node])
}

/// Opset < 4: `axis` was optional with default 1.
fn concat_default_axis(_ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    node.attrs.entry("axis".into()).or_insert(Attr::Int(1));
    Ok(vec![node])
}

/// Opset < 13: `split` was an attribute (opset 1 also allowed it as operand 1).
fn split_attr(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    ints_attr_to_operand(ctx, &mut node, "split", 1)?;
    split_num_outputs(ctx, node)
}

/// Opset < 18: without `split`, the input was cut into as many equal parts as there are
/// results; opset 18 says so with `num_outputs`.
fn split_num_outputs(_ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    trim(&mut node);
    if node.input(1).is_none() && !node.attrs.contains_key("num_outputs") {
        node.attrs
            .insert("num_outputs".into(), Attr::Int(node.outputs.len() as i64));
    }
    Ok(vec![node])
}

/// Opset < 10: `starts`, `ends` and `axes` were attributes; they became operands 1-3.
fn slice_attrs(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    if !node.attrs.contains_key("starts") || !node.attrs.contains_key("ends") {
        return Err(ctx.bad(&node, "needs attributes `starts` and `ends`"));
    }
    ints_attr_to_operand(ctx, &mut node, "starts", 1)?;
    ints_attr_to_operand(ctx, &mut node, "ends", 2)?;
    ints_attr_to_operand(ctx, &mut node, "axes", 3)?;
    trim(&mut node);
    Ok(vec![node])
}

/// Opset < 11: `pads` (opset 1: `paddings`) and `value` were attributes; they became
/// operands 1 and 2.
fn pad_attrs(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    let pads = match take_ints(ctx, &mut node, "pads")? {
        Some(p) => p,
        None => take_ints(ctx, &mut node, "paddings")?
            .ok_or_else(|| ctx.bad(&node, "needs attribute `pads`"))?,
    };
    let value = take_float(ctx, &mut node, "value")?;
    let x = node
        .input(0)
        .ok_or_else(|| ctx.bad(&node, "missing input"))?;
    let p = ctx.ints("pads", &pads);
    set_operand(&mut node, 1, Some(p));
    if let Some(v) = value.filter(|&v| v != 0.0) {
        let c = ctx.scalar_like("pad_value", v as f64, x);
        set_operand(&mut node, 2, Some(c));
    }
    Ok(vec![node])
}

/// Opset 1 Tile took `tiles` and `axis` operands, a different contract from today's
/// `repeats`; too rare to be worth an upgrade.
fn tile_v1(ctx: &mut Ctx, node: Node) -> Result<Vec<Node>> {
    Err(ctx.unsupported(&node, "Tile with `tiles`/`axis` operands (opset 1)"))
}

/// The attributes that make Resize behave as Upsample and opset-10 Resize did: output
/// coordinate x maps to input x / scale, nearest takes the floor.
fn legacy_resize_attrs(ctx: &Ctx, node: &mut Node) -> Result<()> {
    let mode = match take(node, "mode") {
        None => "nearest".to_string(),
        Some(Attr::String(m)) if m == "nearest" => m,
        Some(Attr::String(m)) if m == "linear" || m == "bilinear" => "linear".to_string(),
        Some(Attr::String(m)) => return Err(ctx.unsupported(node, &format!("mode \"{m}\""))),
        Some(_) => return Err(ctx.bad(node, "attribute `mode` must be a string")),
    };
    node.attrs.insert("mode".into(), Attr::String(mode));
    node.attrs.insert(
        "coordinate_transformation_mode".into(),
        Attr::String("asymmetric".into()),
    );
    node.attrs
        .insert("nearest_mode".into(), Attr::String("floor".into()));
    Ok(())
}

/// Opset 10: operands were (X, scales); from 11 they are (X, roi, scales, sizes).
fn resize_v10(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    legacy_resize_attrs(ctx, &mut node)?;
    let scales = node.input(1);
    node.inputs = vec![node.input(0), None, scales];
    trim(&mut node);
    Ok(vec![node])
}

/// Upsample: opset 7-8 had `scales` as an attribute, 9 as operand 1. Both become Resize
/// with scales at operand 2.
fn upsample(ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    if ctx.opset < 7 {
        return Err(ctx.unsupported(&node, "Upsample with height_scale/width_scale (opset 1)"));
    }
    legacy_resize_attrs(ctx, &mut node)?;
    let scales = match take(&mut node, "scales") {
        Some(Attr::Floats(s)) => {
            let n = s.len() as u64;
            Some(ctx.konst("upsample_scales", Tensor::from_f32(vec![n], &s)))
        }
        Some(_) => return Err(ctx.bad(&node, "attribute `scales` must be a list of floats")),
        None => node.input(1),
    };
    if scales.is_none() {
        return Err(ctx.bad(&node, "needs `scales`"));
    }
    node.inputs = vec![node.input(0), None, scales];
    Ok(vec![node])
}

/// GridSample opset < 20: modes were named `bilinear` and `bicubic`.
fn grid_sample_mode_names(_ctx: &mut Ctx, mut node: Node) -> Result<Vec<Node>> {
    if let Some(Attr::String(m)) = node.attrs.get_mut("mode") {
        match m.as_str() {
            "bilinear" => *m = "linear".into(),
            "bicubic" => *m = "cubic".into(),
            _ => {}
        }
    }
    Ok(vec![node])
}
