//! Compile-time packing of a matrix product's constant operand into panels: the one place
//! where lowering changes the layout of a constant. Start at [`constant_b`].
//!
//! A CPU target whose description asks for it (`[cpu] constant_operand = "panels"`) gets the
//! B operand of a MatMul/Gemm (the weights) laid out as `P[p][k][c] = B(k, p·tn + c)`, with
//! `p < ⌈N/tn⌉`, `k < K'` (K rounded up to the k step `tk`) and `c < tn`, zeros outside B.
//! Each `tk × tn` tile the product's tile program loads is then one contiguous block that
//! lies wholly in range, whether the graph held B transposed (`transB`) or not. On a CPU with
//! a `[cpu] register_block`, `tn` is the block's width: a tile is one panel, which the
//! register-blocked micro-kernel reads in place, in order.
//! Other targets (the interpreter, the NPUs, which place tiles in their own buffers) keep B
//! as the graph holds it: the decision is the description's.
//!
//! A 16-bit float B (f16, bf16) accumulated in f32 on a CPU with no matrix unit for the pair
//! (no `mma` entry: the product is computed in f32, each narrow tile widened as it loads) is
//! packed already widened to f32. Widening is exact, so the product is bit-identical, but it
//! is done once here instead of at every tile load of every program instance, and the f32
//! panels are read in place as an f32 product's are; only A (the activations) is still
//! widened at load. The panels take twice the bytes, which the product streams at the f32
//! rate; 8-bit floats would take four times and keep their own type.

use tessera_ir::numeric::load_as_f64;
use tessera_ir::{DType, ValueId};
use tessera_kir::BufferId;
use tessera_target::OperandLayout;

use crate::contraction::{mm_tiles, MmSpec};
use crate::{LowerCx, Result};

/// How a packed B is laid out: the product's tile shape (which fixed the panels) and the
/// panel count and padded depth.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Panels {
    pub tiles: (u16, u16, u16),
    /// ⌈N / tn⌉.
    pub count: u64,
    /// K rounded up to a multiple of tk.
    pub depth: u64,
}

/// The buffer the product `s` reads its B operand (graph value `b`) from: a packed copy
/// (and `s` updated to read panels) when the target asks for panels and B is a float
/// compile-time constant read the same way by every batch; B's own buffer otherwise.
pub(crate) fn constant_b(cx: &mut LowerCx, b: ValueId, s: &mut MmSpec) -> Result<BufferId> {
    let packable = cx.desc.constant_operand_layout() == OperandLayout::Panels
        && s.b.0.is_float()
        && s.b.0.bits() % 8 == 0
        && s.b.0 == s.a.0
        && s.b_zp.is_none()
        && s.b_bst.iter().all(|&st| st == 0)
        && s.n > 1;
    let Some(t) = cx.konst(b).filter(|_| packable) else {
        return cx.buffer(b);
    };
    let (m, n, k) = (s.m, s.n, s.k);
    let mut tiles = mm_tiles(cx.desc, s.a.0, s.b.0, s.acc, (m, n, k));
    // On a CPU with a register block, a tile is one panel as wide as the block, or as a few
    // blocks where one block's row is shorter than a cache line: the micro-kernel then reads
    // each tile of B in place, one contiguous panel streamed from memory (scalarize-tiles
    // reads in place what lies in range), and no tile is copied.
    if let Some(width) = panel_width(cx.desc) {
        if width > 1 && n >= width && width <= u16::MAX as u64 {
            tiles.1 = width as u16;
        }
    }
    let (tn, tk) = (tiles.1 as u64, tiles.2 as u64);
    let (count, depth) = (n.div_ceil(tn), k.div_ceil(tk) * tk);
    let width = (s.b.0.bits() / 8) as usize;
    let stored = stored_dtype(cx, s);
    let out_width = (stored.bits() / 8) as usize;
    let len = count * depth * tn;
    if t.bytes.len() as u64 != s.b.1 * width as u64 {
        return Err(cx.invalid(format!(
            "constant B `{}` holds {} bytes, not the {} its {} elements of {} take",
            cx.graph.value(b).name,
            t.bytes.len(),
            s.b.1 * width as u64,
            s.b.1,
            s.b.0
        )));
    }
    let mut out = vec![0u8; len as usize * out_width];
    // The innermost loop walks the source in order: along n for a row-major B, along k for a
    // transposed one.
    let transposed = s.b_ks == 1 && s.b_ns != 1;
    let from = s.b.0;
    let mut put = |p: u64, kk: u64, c: u64| {
        let src = (kk as i64 * s.b_ks + (p * tn + c) as i64 * s.b_ns) as u64;
        let d = ((p * depth + kk) * tn + c) as usize * out_width;
        if stored == from {
            let src = src as usize * width;
            out[d..d + width].copy_from_slice(&t.bytes[src..src + width]);
        } else {
            // f16/bf16 → f32: every value (NaN included) has an exact f32.
            let x = load_as_f64(from, &t.bytes, src).unwrap_or(f64::NAN) as f32;
            out[d..d + out_width].copy_from_slice(&x.to_le_bytes());
        }
    };
    for p in 0..count {
        let cols = tn.min(n - p * tn);
        if transposed {
            (0..cols).for_each(|c| (0..k).for_each(|kk| put(p, kk, c)));
        } else {
            (0..k).for_each(|kk| (0..cols).for_each(|c| put(p, kk, c)));
        }
    }
    let name = format!("{}.panels", cx.graph.value(b).name);
    let buf = cx.const_buffer(&name, stored, vec![count, depth, tn], out);
    s.b = (stored, len);
    s.b_panels = Some(Panels {
        tiles,
        count,
        depth,
    });
    Ok(buf)
}

/// The width of a panel on a CPU with a register block: the micro-kernel's block (vectors ×
/// f32 lanes), or as many blocks as fill one cache line.
pub(crate) fn panel_width(desc: &tessera_target::TargetDesc) -> Option<u64> {
    let (_, vectors) = desc.register_block()?;
    let block = vectors as u64 * (desc.vector_bytes as u64 / 4).max(1);
    let line = desc
        .memory_with_role(tessera_target::MemoryRole::Cache)
        .map_or(64, |m| m.align as u64);
    Some(block * (line / 4).div_ceil(block).max(1))
}

/// The dtype the panels of `s`'s B hold: f32 for a 16-bit float B that the target multiplies
/// in f32 (an f32 accumulator and no matrix unit for the pair in its `mma` table), B's own
/// otherwise.
fn stored_dtype(cx: &LowerCx, s: &MmSpec) -> DType {
    let pair = format!("{}x{}->{}", s.a.0, s.b.0, s.acc);
    let narrow = matches!(s.b.0, DType::F16 | DType::BF16);
    if narrow && s.acc == DType::F32 && !cx.desc.mma.contains_key(&pair) {
        DType::F32
    } else {
        s.b.0
    }
}

#[cfg(test)]
mod tests {
    use crate::dense::testexec::*;
    use tessera_ir::{DType, Op, Tensor};
    use tessera_target::{CpuDesc, OperandLayout, TargetDesc};

    /// f16/bf16 MatMul `[m, k] × [k, n]` with a constant B, lowered for `d`: the output bytes
    /// and the dtype B's panels hold (`None`: not packed).
    fn narrow_matmul(
        dt: DType,
        (m, k, n): (u64, u64, u64),
        d: &TargetDesc,
    ) -> (Vec<u8>, Option<DType>) {
        let enc = |v: &[f32]| -> Vec<u8> {
            v.iter()
                .flat_map(|&x| match dt {
                    DType::F16 => half::f16::from_f32(x).to_le_bytes(),
                    _ => half::bf16::from_f32(x).to_le_bytes(),
                })
                .collect()
        };
        let (a, b) = (rand((m * k) as usize, 3), rand((k * n) as usize, 4));
        let mut g = G::default();
        let x = g.input(dt, &[m, k], enc(&a));
        let y = g.konst(Tensor::new(dt, vec![k, n], enc(&b)));
        let o = g.node(Op::MatMul, &[Some(x), Some(y)], &[(dt, &[m, n])], &[]);
        let p = crate::lower(&g.g, d).unwrap();
        let panels = p.plan.buffers.iter().find(|b| b.name.ends_with(".panels"));
        let stored = panels.map(|b| b.dtype);
        (g.run(&o, d).unwrap().remove(0), stored)
    }

    fn cpu_desc() -> TargetDesc {
        TargetDesc {
            cpu: Some(CpuDesc {
                constant_operand: OperandLayout::Panels,
                ..Default::default()
            }),
            ..desc(16)
        }
    }

    #[test]
    fn narrow_constant_b_is_widened_exactly_where_products_run_in_f32() {
        for dt in [DType::F16, DType::BF16] {
            for shape in [(5, 40, 35), (9, 300, 19)] {
                let (plain, none) = narrow_matmul(dt, shape, &desc(16));
                assert_eq!(none, None);
                // No matrix unit: f32 panels, and the very same bits (products of 16-bit
                // floats are exact in f32, summed in the same order).
                let (widened, stored) = narrow_matmul(dt, shape, &cpu_desc());
                assert_eq!(stored, Some(DType::F32), "{dt} {shape:?}");
                assert_eq!(widened, plain, "{dt} {shape:?}");
                // A matrix unit for the pair multiplies B in its own type.
                let mut unit = cpu_desc();
                unit.mma.insert(format!("{dt}x{dt}->f32"), [1, 1, 1]);
                let (kept, stored) = narrow_matmul(dt, shape, &unit);
                assert_eq!(stored, Some(dt), "{dt} {shape:?}");
                assert_eq!(kept, plain, "{dt} {shape:?}");
            }
        }
    }
}
